//! The options of a deployment and of the HTTP ingress, with Ray Serve's defaults where
//! Ray's are sound.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a deployment runs: its name and route, its replicas (a fixed number or
/// autoscaled), how much each takes at once, and how it is checked and stopped.
///
/// ```
/// use std::time::Duration;
/// use prism_serve::{Autoscaling, DeploymentOptions};
/// let o = DeploymentOptions::new("digits")
///     .route_prefix("/predict")
///     .autoscaling(Autoscaling::new(1, 4).target_ongoing_requests(2.0))
///     .max_ongoing_requests(8)
///     .max_queued_requests(100)
///     .num_cpus(1.0);
/// assert_eq!(o.route_prefix.as_deref(), Some("/predict"));
/// assert_eq!(o.autoscaling.unwrap().max_replicas, 4);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentOptions {
    /// The deployment's name, unique in the application.
    pub name: String,
    /// The HTTP route it answers under (default `/<name>`); `None` after
    /// [`no_route`](Self::no_route): reachable by handles only.
    pub route_prefix: Option<String>,
    /// The replicas to run when not autoscaled (default 1).
    pub num_replicas: usize,
    /// Replicas following the load, between bounds.
    pub autoscaling: Option<Autoscaling>,
    /// Requests (or batches) one replica takes at once (default 5, Ray's); more wait
    /// in the router, in order.
    pub max_ongoing_requests: usize,
    /// Requests that may wait for a replica; past it a request is answered 503
    /// (default: no limit).
    pub max_queued_requests: Option<usize>,
    /// CPUs each replica holds for its life (default 0).
    pub num_cpus: f64,
    /// GPUs each replica holds for its life.
    pub num_gpus: f64,
    /// Custom resources each replica holds.
    pub resources: BTreeMap<String, f64>,
    /// How often each replica's health is checked (default 10 s).
    pub health_check_period: Duration,
    /// How long a health check may take before it counts as failed (default 30 s).
    pub health_check_timeout: Duration,
    /// How long a stopped replica may take to finish its requests in flight before it
    /// is ended anyway (default 20 s).
    pub graceful_shutdown_timeout: Duration,
    /// How long a request may take, queue included, before it is answered 504
    /// (default: no limit).
    pub request_timeout: Option<Duration>,
}

impl DeploymentOptions {
    /// The defaults, under `name`, at `/<name>`.
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        DeploymentOptions {
            route_prefix: Some(format!("/{name}")),
            name,
            num_replicas: 1,
            autoscaling: None,
            max_ongoing_requests: 5,
            max_queued_requests: None,
            num_cpus: 0.0,
            num_gpus: 0.0,
            resources: BTreeMap::new(),
            health_check_period: Duration::from_secs(10),
            health_check_timeout: Duration::from_secs(30),
            graceful_shutdown_timeout: Duration::from_secs(20),
            request_timeout: None,
        }
    }

    /// Answers under this route prefix (`/` for the root).
    pub fn route_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.route_prefix = Some(prefix.into());
        self
    }

    /// Answers handles only, no HTTP route.
    pub fn no_route(mut self) -> Self {
        self.route_prefix = None;
        self
    }

    /// Runs `n` replicas.
    pub fn num_replicas(mut self, n: usize) -> Self {
        self.num_replicas = n;
        self.autoscaling = None;
        self
    }

    /// Scales the replicas with the load.
    pub fn autoscaling(mut self, a: Autoscaling) -> Self {
        self.autoscaling = Some(a);
        self
    }

    /// Requests (or batches) one replica takes at once.
    pub fn max_ongoing_requests(mut self, n: usize) -> Self {
        self.max_ongoing_requests = n.max(1);
        self
    }

    /// Requests that may wait; past it, 503.
    pub fn max_queued_requests(mut self, n: usize) -> Self {
        self.max_queued_requests = Some(n);
        self
    }

    /// CPUs per replica.
    pub fn num_cpus(mut self, n: f64) -> Self {
        self.num_cpus = n;
        self
    }

    /// GPUs per replica.
    pub fn num_gpus(mut self, n: f64) -> Self {
        self.num_gpus = n;
        self
    }

    /// An amount of a custom resource per replica.
    pub fn resource(mut self, name: impl Into<String>, amount: f64) -> Self {
        self.resources.insert(name.into(), amount);
        self
    }

    /// Checks each replica's health this often, failing a check that takes longer
    /// than `timeout`.
    pub fn health_check(mut self, period: Duration, timeout: Duration) -> Self {
        self.health_check_period = period;
        self.health_check_timeout = timeout;
        self
    }

    /// How long a stopping replica may finish its requests in flight.
    pub fn graceful_shutdown_timeout(mut self, t: Duration) -> Self {
        self.graceful_shutdown_timeout = t;
        self
    }

    /// Answers 504 to a request not answered within `t`.
    pub fn request_timeout(mut self, t: Duration) -> Self {
        self.request_timeout = Some(t);
        self
    }

    /// Why these options cannot run, if they cannot.
    pub(crate) fn check(&self) -> Result<(), String> {
        let name = &self.name;
        if name.is_empty() || name.contains(['/', ' ']) {
            return Err(format!(
                "a deployment's name must be non-empty, without '/' or spaces: {name:?}"
            ));
        }
        if let Some(p) = &self.route_prefix {
            if p.starts_with("/-") || p == "/metrics" || p.starts_with("/metrics/") {
                return Err(format!(
                    "deployment {name}: route prefix {p:?} is the ingress's own (/-/..., /metrics)"
                ));
            }
            if !p.starts_with('/') || (p.len() > 1 && p.ends_with('/')) {
                return Err(format!(
                    "deployment {name}: a route prefix starts with '/' and does not end with one: {p:?}"
                ));
            }
        }
        if let Some(a) = &self.autoscaling {
            if a.min_replicas > a.max_replicas || a.max_replicas == 0 {
                return Err(format!(
                    "deployment {name}: autoscaling needs 1 ≤ max_replicas and min_replicas ≤ max_replicas, not {}..{}",
                    a.min_replicas, a.max_replicas
                ));
            }
            if a.target_ongoing_requests.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
                return Err(format!(
                    "deployment {name}: target_ongoing_requests must be above 0, not {}",
                    a.target_ongoing_requests
                ));
            }
        }
        if self.num_cpus < 0.0 || self.num_gpus < 0.0 || self.resources.values().any(|v| *v < 0.0) {
            return Err(format!("deployment {name}: a resource amount is negative"));
        }
        Ok(())
    }
}

/// Replicas that follow the load: the controller keeps
/// `ceil(load / target_ongoing_requests)` of them, between the bounds, where the load
/// is the requests in flight plus those queued, averaged over `look_back`. A change
/// happens only once it has been wanted for its delay, so that a burst does not make
/// the count swing.
///
/// ```
/// use std::time::Duration;
/// let a = prism_serve::Autoscaling::new(1, 3).upscale_delay(Duration::from_secs(1));
/// assert_eq!((a.min_replicas, a.max_replicas, a.upscale_delay), (1, 3, Duration::from_secs(1)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Autoscaling {
    /// The fewest replicas (at least 1: a deployment does not scale to zero).
    pub min_replicas: usize,
    /// The most replicas.
    pub max_replicas: usize,
    /// The requests in flight (or queued) per replica the count aims at (default 2, Ray's).
    pub target_ongoing_requests: f64,
    /// How long more replicas must be wanted before they are started (default 30 s).
    pub upscale_delay: Duration,
    /// How long fewer replicas must be wanted before some stop (default 600 s).
    pub downscale_delay: Duration,
    /// The window the load is averaged over (default 30 s).
    pub look_back: Duration,
}

impl Autoscaling {
    /// Between `min` and `max` replicas, with Ray's defaults otherwise.
    pub fn new(min: usize, max: usize) -> Self {
        Autoscaling {
            min_replicas: min.max(1),
            max_replicas: max,
            target_ongoing_requests: 2.0,
            upscale_delay: Duration::from_secs(30),
            downscale_delay: Duration::from_secs(600),
            look_back: Duration::from_secs(30),
        }
    }

    /// The requests in flight per replica aimed at.
    pub fn target_ongoing_requests(mut self, n: f64) -> Self {
        self.target_ongoing_requests = n;
        self
    }

    /// How long more replicas must be wanted before they start.
    pub fn upscale_delay(mut self, d: Duration) -> Self {
        self.upscale_delay = d;
        self
    }

    /// How long fewer replicas must be wanted before some stop.
    pub fn downscale_delay(mut self, d: Duration) -> Self {
        self.downscale_delay = d;
        self
    }

    /// The window the load is averaged over.
    pub fn look_back(mut self, d: Duration) -> Self {
        self.look_back = d;
        self
    }
}

/// Where the HTTP ingress listens.
///
/// ```
/// let o = prism_serve::HttpOptions::default().port(0);
/// assert_eq!(o.address.ip().to_string(), "127.0.0.1");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpOptions {
    /// The address to bind (default `127.0.0.1:8000`; port 0 picks a free one).
    pub address: SocketAddr,
    /// On a cluster, an ingress on every node too, on the node's own address and this
    /// ingress's port (default off). Embedded there is one node: this process.
    pub every_node: bool,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            address: SocketAddr::from(([127, 0, 0, 1], 8000)),
            every_node: false,
        }
    }
}

impl HttpOptions {
    /// Binds this address (`0.0.0.0:8000` to take requests from other machines).
    pub fn address(mut self, address: SocketAddr) -> Self {
        self.address = address;
        self
    }

    /// Also serves from every node of a cluster, on the node's address.
    pub fn every_node(mut self, yes: bool) -> Self {
        self.every_node = yes;
        self
    }

    /// Binds this port on the address's IP.
    pub fn port(mut self, port: u16) -> Self {
        self.address.set_port(port);
        self
    }
}
