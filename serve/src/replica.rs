//! The [`Replica`] actor: one running copy of a deployment, wherever the runtime
//! placed it (this process embedded, any node's worker process on a cluster).
//!
//! It takes the calls of the routers directly: the ingress's, and the handles' of
//! other deployments. Its constructor never fails: a deployment whose `new` fails
//! keeps the reason, and [`Replica::ready`] reports it, so that the controller sees why.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::deployment::{guarded, lookup, Hosted};
use crate::directory::{self, Directory};
use crate::error::HttpError;

/// Where a replica runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaInfo {
    /// The node it runs on.
    pub node_id: String,
    /// Its process's id.
    pub pid: u32,
}

/// A request's answer, as it crosses back from a replica: the response's JSON bytes.
pub type Reply = Result<Vec<u8>, HttpError>;

/// One replica of a deployment. Started by the controller; not for direct use.
#[prism::actor]
pub struct Replica {
    deployment: String,
    hosted: Result<Box<dyn Hosted>, String>,
    /// The streams open on this replica, by id: the values their threads made, for
    /// `stream_next`.
    streams: Mutex<HashMap<u64, Arc<Mutex<Open>>>>,
    next_stream: AtomicU64,
}

/// Some of a stream's values, and whether it ended after them.
pub type Chunk = Result<(Vec<Vec<u8>>, bool), HttpError>;

/// An open stream: the values its thread made, in order, and the error that ended it
/// once the values before it are out.
struct Open {
    values: std::sync::mpsc::Receiver<Result<Vec<u8>, HttpError>>,
    failed: Option<HttpError>,
}

/// How many values a stream's thread may run ahead of its reader, and the most one
/// `stream_next` returns.
const AHEAD: usize = 64;

#[prism::actor]
impl Replica {
    /// Builds deployment `deployment`, of the registered type `class`, from its JSON
    /// config.
    pub fn new(deployment: String, class: String, config: String) -> Self {
        let hosted = lookup(&class).and_then(|r| (r.build)(&config).map(|e| e.0));
        Replica {
            deployment,
            hosted,
            streams: Mutex::default(),
            next_stream: AtomicU64::new(1),
        }
    }

    /// Takes the directory of the other deployments, then says where the replica
    /// runs, once it is built; why it could not be, otherwise.
    pub fn ready(&self, directory: Directory) -> Result<ReplicaInfo, String> {
        directory::adopt(directory);
        self.hosted.as_ref().map_err(|e| e.clone())?;
        let ctx = prism::context().map_err(|e| e.to_string())?;
        Ok(ReplicaInfo {
            node_id: ctx.node_id,
            pid: ctx.pid,
        })
    }

    /// Answers one request to `handler`.
    pub fn call(&self, handler: &str, body: &[u8]) -> Reply {
        self.hosted()?.call(handler, body)
    }

    /// Answers a batch of requests to `handler`, in order.
    pub fn call_batch(&self, handler: &str, bodies: &[Vec<u8>]) -> Vec<Reply> {
        match self.hosted() {
            Ok(h) => {
                let views: Vec<&[u8]> = bodies.iter().map(|b| b.as_slice()).collect();
                h.call_batch(handler, &views)
            }
            Err(e) => vec![Err(e); bodies.len()],
        }
    }

    /// Opens a stream of `handler` on `body`: its id, for `stream_next`. The
    /// handler's iterator runs on a thread of its own, a few values ahead of the
    /// reader at most.
    pub fn stream_open(&self, handler: &str, body: &[u8]) -> Result<u64, HttpError> {
        let mut items = self.hosted()?.open_stream(handler, body)?;
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Vec<u8>, HttpError>>(AHEAD);
        std::thread::Builder::new()
            .name(format!("prism-serve-stream-{id}"))
            .spawn(move || loop {
                let next = guarded("the stream", || items.next()).unwrap_or_else(|e| Some(Err(e)));
                let Some(next) = next else { break };
                let failed = next.is_err();
                // A reader that left (closed the stream) ends the thread.
                if tx.send(next).is_err() || failed {
                    break;
                }
            })
            .map_err(|e| HttpError::internal(format!("cannot start the stream: {e}")))?;
        let open = Open {
            values: rx,
            failed: None,
        };
        lock(&self.streams).insert(id, Arc::new(Mutex::new(open)));
        Ok(id)
    }

    /// The next values of stream `id`: at least one (waiting for it), and those made
    /// already; `true` once the stream has ended (it is then closed). A value that
    /// failed ends the stream with its error, after the values before it.
    pub fn stream_next(&self, id: u64) -> Chunk {
        let open = lock(&self.streams)
            .get(&id)
            .cloned()
            .ok_or_else(|| HttpError::not_found(format!("no stream {id} on this replica")))?;
        let mut open = lock(&open);
        if let Some(e) = open.failed.take() {
            lock(&self.streams).remove(&id);
            return Err(e);
        }
        let rx = &open.values;
        let mut out = Vec::new();
        let mut next = rx.recv().ok();
        loop {
            match next {
                Some(Ok(v)) => out.push(v),
                Some(Err(e)) if out.is_empty() => {
                    lock(&self.streams).remove(&id);
                    return Err(e);
                }
                // The values before the error first; the error on the next call.
                Some(Err(e)) => {
                    open.failed = Some(e);
                    return Ok((out, false));
                }
                None => {
                    lock(&self.streams).remove(&id);
                    return Ok((out, true));
                }
            }
            if out.len() >= AHEAD {
                return Ok((out, false));
            }
            next = match rx.try_recv() {
                Ok(v) => Some(v),
                Err(std::sync::mpsc::TryRecvError::Empty) => return Ok((out, false)),
                Err(std::sync::mpsc::TryRecvError::Disconnected) => None,
            };
        }
    }

    /// Closes stream `id` before its end (its client left): its thread ends after
    /// the value it is making.
    pub fn stream_close(&self, id: u64) {
        lock(&self.streams).remove(&id);
    }

    /// Applies a new user config (JSON).
    pub fn reconfigure(&self, config: &str) -> Result<(), String> {
        self.hosted().map_err(|e| e.message)?.reconfigure(config)
    }

    /// The deployment's own health check.
    pub fn check_health(&self) -> Result<(), String> {
        self.hosted().map_err(|e| e.message)?.check_health()
    }

    /// Where the other deployments' replicas are, for the handles this replica's
    /// handlers use.
    pub fn set_directory(&self, directory: Directory) {
        directory::adopt(directory);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Replica {
    fn hosted(&self) -> Result<&dyn Hosted, HttpError> {
        self.hosted.as_deref().map_err(|e| {
            HttpError::unavailable(format!(
                "a replica of {} did not start: {e}",
                self.deployment
            ))
        })
    }
}

/// The ingress of one node, in its worker process (`HttpOptions::every_node`):
/// started by the application, it serves the routes of the directory it is sent.
#[prism::actor]
pub struct NodeIngress;

#[prism::actor]
impl NodeIngress {
    /// An ingress not yet listening.
    pub fn new() -> Self {
        NodeIngress
    }

    /// Listens on `ip:port` and routes by `directory`: the bound address.
    pub fn listen(
        &self,
        ip: &str,
        port: u16,
        token: &str,
        directory: Directory,
    ) -> Result<String, String> {
        let at = crate::ingress::start_node_ingress(ip, port, token.to_string())?;
        directory::adopt(directory);
        directory::push_routes();
        Ok(at.to_string())
    }

    /// Takes a newer directory.
    pub fn set_directory(&self, directory: Directory) {
        directory::adopt(directory);
    }
}
