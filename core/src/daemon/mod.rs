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

use std::path::Path;

use crate::session;
use crate::wire::Msg;

/// The answer to [`Msg::ListLogs`] of a daemon of session `dir`: its `logs` files.
pub(crate) fn log_files(dir: &Path) -> Msg {
    Msg::LogFiles {
        place: session::log_place(dir),
        files: session::list_logs(&dir.join("logs")),
    }
}

/// The answer to [`Msg::ReadLog`] of a daemon of session `dir`.
pub(crate) fn log_read(dir: &Path, file: &str, offset: Option<u64>, tail: Option<u64>) -> Msg {
    match session::read_log(&dir.join("logs"), file, offset, tail) {
        Ok(part) => Msg::LogRead { part },
        Err(e) => Msg::Failed {
            reason: e.to_string(),
        },
    }
}
