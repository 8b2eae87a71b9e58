//! The cluster runtime: a head, one node daemon per machine, worker processes running
//! the user's own binary, and drivers. See the crate's design overview and the README's
//! "Run on a cluster" section.
//!
//! * [`wire`]: frames, the authenticated handshake, the messages.
//! * [`head`]: node membership, jobs and their executables, a small KV.
//! * [`dashboard`]: the head's HTTP API (nodes as JSON, Prometheus metrics).
//! * [`node`]: resources, worker processes, placement and spilling to peers.
//! * [`objects`]: large objects kept where they were made and pulled in chunks.
//! * [`worker`]: the mode `prism::init()` enters in a process a node started.
//! * [`session`]: the per-user directory of address, token, PIDs and logs.
//! * [`testing`]: a local cluster of real daemon processes, for tests and benches.

pub(crate) mod client;
pub mod dashboard;
pub(crate) mod direct;
pub mod head;
pub mod node;
pub mod objects;
pub(crate) mod owner;
pub mod session;
pub mod testing;
pub mod wire;
pub mod worker;

pub use objects::{Location, Payload, SharedBytes};
pub use worker::enter_if_worker;
