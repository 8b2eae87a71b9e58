//! What a node tells a worker process it starts, in its environment: where to connect,
//! which job it serves, and the node's settings for its object store. A process that
//! finds [`NODE`] set is a worker: `prism::init()` enters worker mode.

/// The address of the node that started the worker (and puts it in worker mode).
pub const NODE: &str = "PRISM_WORKER_NODE";
/// The id of that node.
pub const NODE_ID: &str = "PRISM_WORKER_NODE_ID";
/// The job the worker serves.
pub const JOB: &str = "PRISM_WORKER_JOB";
/// The cluster token.
pub const TOKEN: &str = "PRISM_TOKEN";
/// The head's address.
pub const HEAD: &str = "PRISM_WORKER_HEAD";
/// The worker's object store cap: the node's `--object-store-memory`.
pub const STORE: &str = "PRISM_WORKER_OBJECT_STORE_MEMORY";
/// Where the worker spills objects; the node removes it when the worker ends.
pub const SPILL: &str = "PRISM_WORKER_SPILL_DIR";

/// The id of the submitted job a driver runs as (set by the head on the entrypoint it
/// starts for `prism job submit`).
pub const SUBMISSION: &str = "PRISM_SUBMISSION_ID";

/// Whether this process was started by a node as a worker.
pub fn is_worker() -> bool {
    std::env::var_os(NODE).is_some()
}
