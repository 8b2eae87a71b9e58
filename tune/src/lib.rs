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
//! * [`svc`]: a fast multi-class RBF support vector classifier (libsvm's method), and
//!   [`datasets`]: the digits data set it is searched on.
//! * [`cv`]: the cross-validated search of scikit-learn's `RandomizedSearchCV`, every
//!   (candidate, fold) fit a prism task on data put in the object store once.
//! * [`tuner`]: the [`Tuner`](tuner::Tuner): trials of your trainable as prism tasks,
//!   reporting each iteration to a controller actor whose scheduler stops the ones
//!   behind; results as a grid with the best trial, CSV and JSON; an [`experiment`]
//!   directory that journals the trials, so that an interrupted run resumes.
//!
//! Everything random takes a seed, so a search is reproducible.
//!
//! This crate is being built in stages. Here today: spaces, the random, grid and TPE
//! searchers, the trial schedulers, the SVC with the digits and scikit-learn's
//! stratified folds, the cross-validated search, and the Tuner with resumable experiment
//! directories, a live trial [`display`], stop conditions and retries of failed trials.
//! To come: adapters for linfa and smartcore estimators in the cross-validated search.
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
pub mod schedule;
pub mod search;
pub mod sklearn;
pub mod space;
pub mod svc;
pub mod tpe;
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
