//! The errors of prism-train.

/// What can go wrong in training and in the collectives among the workers.
#[derive(Debug, Clone, PartialEq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum TrainError {
    /// A peer of the group died or left it: its connection closed, or its end of the
    /// shared-memory group was dropped. Every pending collective of the group fails with
    /// this at once.
    #[error("collective failed: {0}")]
    PeerDied(String),
    /// The ranks called different collectives, or the same one with different lengths.
    #[error("collective mismatch: {0}")]
    Mismatch(String),
    /// A collective waited longer than its timeout for its peers.
    #[error("collective timed out: {0}")]
    Timeout(String),
    /// A bad argument or option.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An I/O failure: setting up the group's connections, or reading and writing a
    /// run directory.
    #[error("I/O error: {0}")]
    Io(String),
    /// The prism runtime failed a call the trainer made (a worker could not start, a
    /// placement group could never fit, a worker's process died).
    #[error("runtime error: {0}")]
    Runtime(String),
    /// The train loop failed on a worker, more times than the run's `max_failures`
    /// allows; the message is the last failure's.
    #[error("training failed after {failures} restart(s): {last}")]
    Failed {
        /// How many times the group was restarted before giving up.
        failures: u32,
        /// What the last attempt failed with.
        last: String,
    },
    /// The trainer stopped this worker (another worker failed, or the run ended).
    #[error("this worker was stopped by the trainer")]
    Stopped,
    /// The train loop itself failed (its own error, from [`TrainError::from_loop`]).
    #[error("train loop: {0}")]
    Loop(String),
}

impl TrainError {
    /// An error of the user's train loop, from anything that displays: for `?` on a
    /// loop's own errors, `.map_err(TrainError::from_loop)`.
    pub fn from_loop(e: impl std::fmt::Display) -> TrainError {
        TrainError::Loop(e.to_string())
    }
}

impl From<prism::Error> for TrainError {
    fn from(e: prism::Error) -> TrainError {
        TrainError::Runtime(e.to_string())
    }
}

/// prism-train's result type.
pub type Result<T> = std::result::Result<T, TrainError>;
