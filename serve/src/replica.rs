//! The [`Replica`] actor: one running copy of a deployment, wherever the runtime
//! placed it (this process embedded, any node's worker process on a cluster).
//!
//! It takes the calls of the routers directly: the ingress's, and the handles' of
//! other deployments. Its constructor never fails: a deployment whose `new` fails
//! keeps the reason, and [`Replica::ready`] reports it, so that the controller sees why.

use serde::{Deserialize, Serialize};

use crate::deployment::{lookup, Hosted};
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
}

#[prism::actor]
impl Replica {
    /// Builds deployment `deployment`, of the registered type `class`, from its JSON
    /// config.
    pub fn new(deployment: String, class: String, config: String) -> Self {
        let hosted = lookup(&class).and_then(|r| (r.build)(&config).map(|e| e.0));
        Replica { deployment, hosted }
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
