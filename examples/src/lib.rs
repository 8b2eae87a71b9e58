//! Shared pieces of the example programs (and of the `compare` harness, which measures
//! the same workloads): the dense matrices of the matrix-multiply aggregation, the
//! sleeping-task workloads of Ray's tutorials, the data-parallel MLP of T1, and W9's
//! digits model as a deployment with a closed-loop HTTP load to check it with.
//!
//! The programs themselves are in `examples/`; run one with
//! `cargo run --release --example NAME`.

#![warn(missing_docs)]

pub mod digits;
pub mod linear;
pub mod load;
pub mod matrix;
pub mod sleep;
pub mod t1;

/// The value given after `--name` on this program's command line, parsed; `Ok(None)`
/// if the flag is not there, an error naming it if its value does not parse.
///
/// ```
/// let n: Option<usize> = prism_examples::flag("--n-iter").unwrap();
/// assert_eq!(n, None); // not on a doctest's command line
/// ```
pub fn flag<T: std::str::FromStr>(name: &str) -> Result<Option<T>, String>
where
    T::Err: std::fmt::Display,
{
    let args: Vec<String> = std::env::args().collect();
    let Some(at) = args.iter().position(|a| a == name) else {
        return Ok(None);
    };
    let value = args
        .get(at + 1)
        .ok_or_else(|| format!("{name} needs a value"))?;
    value
        .parse()
        .map(Some)
        .map_err(|e| format!("{name} {value}: {e}"))
}

/// Seconds since `t`, for printing.
pub fn secs(t: std::time::Instant) -> f64 {
    t.elapsed().as_secs_f64()
}
