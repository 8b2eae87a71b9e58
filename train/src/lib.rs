//! prism-train: data-parallel training on prism.
//!
//! This first part is the collectives among a group of workers
//! ([`collective::Communicator`]): `all_reduce` (sum, mean) of `f32` and `f64`
//! buffers, `broadcast`, `all_gather` and `barrier`, over shared memory when the ranks
//! share a process and over a ring of TCP connections when they do not. They fail at
//! once with a typed error when a peer dies, rather than waiting out a timeout.
//!
//! The second is models over flat parameter and gradient buffers ([`model`]): linear
//! regression and softmax regression on ndarray, with their own gradients, and plain
//! SGD, so that a data-parallel step is a gradient, an all-reduce and an update.

pub mod collective;
pub mod error;
pub mod model;

pub use collective::{Communicator, ReduceOp};
pub use error::{Result, TrainError};
