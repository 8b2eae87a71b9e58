//! The errors of prism-train.

/// What can go wrong in training and in the collectives among the workers.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
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
    /// An I/O failure setting up the group's connections.
    #[error("I/O error: {0}")]
    Io(String),
}

/// prism-train's result type.
pub type Result<T> = std::result::Result<T, TrainError>;
