//! The daemons of a cluster: the head ([`head`]: membership, jobs and executables, named
//! actors, a small KV, persisted), the node daemon of each machine ([`node`]: resources,
//! worker processes, placement, spilling work to peers) and the head's HTTP API
//! ([`dashboard`]).
//!
//! Daemons speak the wire protocol and keep resource books; they never link the
//! runtime, the user API or actors (a layering test checks it). What they know of a
//! task is its spec: its function's name, its arguments as bytes or object ids, its
//! options.

pub mod dashboard;
pub mod head;
pub mod node;
