//! prism-train: data-parallel training on prism.
//!
//! A user writes a train loop once ([`TrainLoop`]) and a [`Trainer`] runs it on
//! `num_workers` worker actors, started as a gang in a placement group, each with its
//! rank, the world size and its shard of the data. The loop computes gradients on its
//! shard, averages them over the workers with an all-reduce every step, and reports
//! each epoch's metrics (and a checkpoint) through its [`TrainContext`]; the trainer
//! keeps rank 0's history, writes checkpoints atomically into a run directory on a
//! thread of its own, and restarts the whole gang from the latest checkpoint when a
//! worker fails, the epoch count going on from it.
//!
//! The collectives ([`collective::Communicator`]) are `all_reduce` (sum, mean) of
//! `f32` and `f64` buffers, `broadcast`, `all_gather` and `barrier`, over shared
//! memory when the ranks share a process and over a ring of TCP connections when they
//! do not. They fail at once with a typed error when a peer dies, rather than waiting
//! out a timeout: a restart costs the epochs since the last checkpoint, not half an
//! hour of a hung ring.
//!
//! The models ([`model`]) are linear regression, softmax regression and a multi-layer
//! perceptron on ndarray over flat parameter and gradient buffers, with their own
//! gradients and plain SGD, so that a data-parallel step is a gradient, an all-reduce
//! and an update. With the feature `burn`, `prism_train::burn` adapts a burn module
//! (ndarray backend, autodiff) to the same step: its gradients averaged over the ranks,
//! then burn's optimizer.
#![warn(missing_docs)]

#[cfg(feature = "burn")]
pub mod burn;
pub mod collective;
pub mod error;
pub mod model;
pub mod trainer;

pub use collective::{Communicator, ReduceOp};
pub use error::{Result, TrainError};
pub use trainer::{
    Checkpoint, GradientBuckets, Metrics, Mode, Progress, RunConfig, ScalingConfig, TrainContext,
    TrainLoop, TrainResult, Trainer, Transport,
};

/// What the crate's macros name; not for direct use.
#[doc(hidden)]
pub mod __private {
    pub use inventory;
}
