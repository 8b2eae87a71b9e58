//! Benchmarks of prism: criterion benches of the micro workloads (`benches/`) and the
//! `compare` harness (`src/bin/compare.rs`), which measures the workloads of the shared
//! workload list the same way the Ray scripts do, so the two can be put side by side.

#![warn(missing_docs)]

pub mod allreduce;
pub mod w9;

/// A no-op task returning 1: the unit of W1.
#[prism::remote]
pub fn noop() -> i64 {
    1
}

/// The actor of W2: one no-op method.
#[prism::actor]
pub struct Noop;

#[prism::actor]
impl Noop {
    /// A new actor.
    pub fn new() -> Self {
        Noop
    }

    /// Returns 1.
    pub fn noop(&self) -> i64 {
        1
    }
}

/// The median of some measurements.
///
/// ```
/// assert_eq!(prism_benches::median(vec![3.0, 1.0, 2.0]), 2.0);
/// ```
pub fn median(mut xs: Vec<f64>) -> f64 {
    assert!(!xs.is_empty(), "no measurements");
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// Peak resident set size of this process in bytes (`VmHWM`).
pub fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}
