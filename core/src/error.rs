//! The one error type of prism.
//!
//! Every fallible operation returns [`Result<T>`]. Errors are `Clone` because one failure
//! can reach many callers: every dependent of a failed task and every `get` of its result
//! receives the same cause.

use serde::{Deserialize, Serialize};

use crate::id::ObjectId;

/// The result type of every fallible prism operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, typed so that callers can react to each case.
///
/// ```
/// let err = prism::Error::Infeasible {
///     resource: "GPU".into(),
///     requested: 2.0,
///     capacity: 0.0,
/// };
/// assert!(err.to_string().contains("GPU"));
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Error {
    /// The API was used before [`crate::init`] (or after [`crate::shutdown`]).
    #[error("prism is not initialised: call prism::init() first")]
    NotInitialized,

    /// [`crate::init`] was called while a runtime is already running.
    #[error("prism is already initialised: call prism::shutdown() before initialising again")]
    AlreadyInitialized,

    /// The configuration cannot be used.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A task or actor method panicked (or its function could not be run).
    #[error("task {function} failed on {location}: {message}")]
    TaskFailed {
        /// The stable name of the function or actor method.
        function: String,
        /// The panic message.
        message: String,
        /// Where it ran: worker, node and process.
        location: String,
    },

    /// The actor is gone: killed, or its last handle dropped, or its constructor failed.
    #[error("actor {actor} died: {reason}")]
    ActorDied {
        /// The actor's id (and name, if it has one).
        actor: String,
        /// Why it died.
        reason: String,
    },

    /// No live actor has this name.
    #[error("no actor named {0:?}")]
    ActorNotFound(String),

    /// The task producing this object was cancelled with [`crate::cancel`].
    #[error("object {0} was cancelled")]
    Cancelled(ObjectId),

    /// A `get` or `wait` with a timeout ran out of time.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),

    /// The object no longer exists and cannot be rebuilt.
    #[error("object {0} is lost")]
    ObjectLost(ObjectId),

    /// No configuration of this runtime could ever satisfy a resource request.
    #[error(
        "infeasible request: {requested} {resource} asked for, the runtime has {capacity} in total"
    )]
    Infeasible {
        /// The resource that cannot be met (`CPU`, `GPU`, `memory` or a custom name).
        resource: String,
        /// The amount asked for.
        requested: f64,
        /// The total amount the runtime has.
        capacity: f64,
    },

    /// A placement group could never be placed: no set of nodes could hold its bundles
    /// under its strategy, whatever ran elsewhere.
    #[error("infeasible placement group: {0}")]
    PlacementGroupInfeasible(String),

    /// The placement group was removed (or its job ended): calls placed in it fail.
    #[error("placement group {0} was removed")]
    PlacementGroupRemoved(String),

    /// The object store is full even after spilling to disk.
    #[error("object store full: an object of {needed} bytes does not fit ({used} of {capacity} bytes in use{detail})")]
    ObjectStoreFull {
        /// Size of the object being stored.
        needed: u64,
        /// Bytes held in memory when it failed.
        used: u64,
        /// The memory cap.
        capacity: u64,
        /// Why spilling could not make room.
        detail: String,
    },

    /// A value could not be encoded or decoded.
    #[error("serialization failed: {0}")]
    Serialization(String),

    /// No remote function or actor is registered under this name.
    #[error("no remote function registered as {0:?}: is the binary the same on every process?")]
    FunctionNotFound(String),

    /// A value had another type than the one asked for.
    #[error("type mismatch: object {object} holds a {actual}, not a {expected}")]
    TypeMismatch {
        /// The object read.
        object: ObjectId,
        /// The type asked for.
        expected: String,
        /// The type found.
        actual: String,
    },

    /// An I/O operation (spilling, restoring) failed.
    #[error("I/O error while {context}: {message}")]
    Io {
        /// What prism was doing.
        context: String,
        /// The operating system's message.
        message: String,
    },

    /// A cluster connection or daemon failed.
    #[error("cluster error: {0}")]
    Cluster(String),

    /// The worker process running the task died.
    #[error("the worker process running {function} died: {reason}")]
    WorkerCrashed {
        /// The function that was running.
        function: String,
        /// What is known of the death.
        reason: String,
    },

    /// The driver lost its cluster and could not reach it again within the reconnect
    /// window ([`crate::Config::reconnect_window`]): every pending and later operation
    /// fails with this.
    #[error("the cluster at {head} could not be reached for {waited:?}: {reason}")]
    ClusterUnreachable {
        /// The head's address.
        head: String,
        /// How long the driver kept trying.
        waited: std::time::Duration,
        /// What failed last.
        reason: String,
    },

    /// The runtime was shut down while the operation was under way.
    #[error("the runtime was shut down")]
    Shutdown,
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, err: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            message: err.to_string(),
        }
    }
}

impl From<postcard::Error> for Error {
    fn from(e: postcard::Error) -> Self {
        Error::Serialization(e.to_string())
    }
}
