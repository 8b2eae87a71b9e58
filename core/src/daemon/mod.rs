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

/// A daemon's answer to a request for its session's logs ([`Msg::ListLogs`] or
/// [`Msg::ReadLog`]), read from session `dir`; the head and the nodes answer alike.
pub(crate) fn log_answer(dir: &Path, request: Msg) -> Msg {
    let logs = dir.join("logs");
    match request {
        Msg::ListLogs => Msg::LogFiles {
            place: session::log_place(dir),
            files: session::list_logs(&logs),
        },
        Msg::ReadLog { file, offset, tail } => {
            match session::read_log(&logs, &file, offset, tail) {
                Ok(part) => Msg::LogRead { part },
                Err(e) => Msg::Failed {
                    reason: e.to_string(),
                },
            }
        }
        other => Msg::Failed {
            reason: format!("{} is not a request for logs", other.name()),
        },
    }
}
