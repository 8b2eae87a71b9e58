//! Shared pieces of the example programs (and of the `compare` harness, which measures
//! the same workloads): the dense matrices of the matrix-multiply aggregation, and the
//! sleeping-task workloads of Ray's tutorials.
//!
//! The programs themselves are in `examples/`; run one with
//! `cargo run --release --example NAME`.

#![warn(missing_docs)]

pub mod matrix;
pub mod sleep;

/// Seconds since `t`, for printing.
pub fn secs(t: std::time::Instant) -> f64 {
    t.elapsed().as_secs_f64()
}
