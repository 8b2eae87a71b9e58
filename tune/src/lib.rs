//! # prism-tune: parallel hyperparameter search on prism
//!
//! The pieces of a search, in the spirit of Ray Tune:
//!
//! * [`space`]: a [`Space`] of named parameters, each with a [`Domain`] (`uniform`,
//!   `loguniform`, `quniform`, `randint`, `choice`, `grid`, or a constant), and the
//!   [`Config`]s drawn from it, read with typed getters or into a struct with serde.
//! * [`search`]: [`Searcher`]s that suggest configurations and hear their scores:
//!   [`RandomSearch`] and [`GridSearch`] (a grid repeated `num_samples` times); and in
//!   [`tpe`], [`Tpe`], a model-based searcher that steers toward what scored well. A
//!   random search can also draw exactly what scikit-learn's `RandomizedSearchCV`
//!   draws for the same seed ([`sklearn`]), to compare the two candidate by candidate.
//! * [`schedule`]: [`TrialScheduler`]s that decide after each reported result whether a
//!   trial goes on: [`Fifo`], [`Asha`] and [`MedianStopping`].
//! * [`estimator`]: the [`Estimator`] trait (fit, predict, score) of the models the
//!   cross-validated search fits: [`svc`], a fast multi-class RBF support vector
//!   classifier (libsvm's method), a model of yours, or smartcore and linfa models
//!   through [`adapters`]; and [`datasets`]: the digits data set, and scikit-learn's
//!   stratified folds.
//! * [`cv`]: the cross-validated search of scikit-learn's `RandomizedSearchCV`, every
//!   (candidate, fold) fit a prism task on data put in the object store once.
//! * [`tuner`]: the [`Tuner`](tuner::Tuner): trials of a function trainable as prism
//!   tasks, or of a class trainable ([`trainable`]: setup, step, save, restore) each in
//!   an actor of its own, reporting each iteration (with a checkpoint, if they like)
//!   to a controller actor whose scheduler stops the ones behind; a failed trial runs
//!   again from its latest checkpoint; results as a grid with the best trial, CSV and
//!   JSON; an [`experiment`] directory that journals the trials, their checkpoints and
//!   the searcher's state, so that an interrupted run resumes where it was; a live
//!   trial table ([`display`]).
//!
//! Everything random takes a seed, so a search is reproducible.
//!
//! ```
//! use prism_tune::{choice, loguniform, RandomSearch, Searcher, Space};
//! let space = Space::new()
//!     .add("C", loguniform(1e-3, 1e3))
//!     .add("gamma", loguniform(1e-4, 1e0))
//!     .add("class_weight", choice(["none", "balanced"]));
//! let mut search = RandomSearch::new(&space, 30, 0).unwrap();
//! let mut n = 0;
//! while let Some(config) = search.suggest() {
//!     let (c, gamma) = (config.f64("C").unwrap(), config.f64("gamma").unwrap());
//!     search.observe(&config, -(c.ln().powi(2) + gamma.ln().powi(2))); // a score
//!     n += 1;
//! }
//! assert_eq!(n, 30);
//! ```

pub mod adapters;
pub mod cv;
pub mod datasets;
pub mod display;
pub mod estimator;
pub mod experiment;
mod registry;
pub mod schedule;
pub mod search;
pub mod sklearn;
pub mod space;
pub mod svc;
pub mod tpe;
pub mod trainable;
pub mod tuner;

pub use estimator::Estimator;
pub use schedule::{Asha, Decision, Fifo, MedianStopping, Mode, TrialScheduler};
pub use search::{GridSearch, RandomSearch, Searcher};
pub use space::{
    choice, grid, loguniform, quniform, randint, uniform, Config, Domain, Param, Space,
};
pub use tpe::Tpe;

#[doc(hidden)]
pub mod __private {
    pub use inventory;
}

/// What can go wrong in a search.
#[derive(Debug, Clone, PartialEq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum TuneError {
    /// A search space cannot be sampled (bad bounds, an empty list).
    #[error("invalid search space: {0}")]
    Space(String),
    /// A configuration lacks a parameter, or has it with another type.
    #[error("configuration: {0}")]
    Config(String),
    /// Training data or an estimator's parameters are unusable.
    #[error("data: {0}")]
    Data(String),
    /// The prism runtime failed a trial (not running, a task lost, a worker crashed).
    #[error("runtime: {0}")]
    Runtime(String),
}
