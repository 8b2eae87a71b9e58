//! # prism-serve: model serving on prism
//!
//! Wrap a fitted model (or any type) in a [`Deployment`], deploy it with some
//! replicas, and call it over HTTP or from other deployments, in the spirit of Ray
//! Serve. Replicas are prism actors, so the same program serves from this process
//! (the embedded runtime) or from any node of a cluster.
//!
//! ```no_run
//! use prism_serve::{Deployment, DeploymentOptions, Handlers, HttpError, HttpOptions, Serve};
//! use serde::{Deserialize, Serialize};
//!
//! pub struct Doubler;
//! #[derive(Deserialize)] pub struct In { x: f64 }
//! #[derive(Serialize)] pub struct Out { y: f64 }
//!
//! impl Deployment for Doubler {
//!     type Config = ();
//!     fn new(_: ()) -> Result<Self, String> { Ok(Doubler) }
//!     fn handlers(h: &mut Handlers<Self>) { h.call(Doubler::double); }
//! }
//! impl Doubler {
//!     fn double(&self, i: In) -> Result<Out, HttpError> { Ok(Out { y: 2.0 * i.x }) }
//! }
//! prism_serve::register_deployment!(Doubler);
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     prism::init()?;
//!     let serve = Serve::start(HttpOptions::default())?;
//!     serve.deploy::<Doubler>(DeploymentOptions::new("double").num_replicas(2), ())?;
//!     // curl -d '{"x": 21}' http://127.0.0.1:8000/double  →  {"y":42.0}
//!     serve.wait();
//!     Ok(())
//! }
//! ```
//!
//! ## Design
//!
//! * **No proxy hop.** The ingress (axum on hyper) runs in the process that started
//!   [`Serve`]; each request's router sends it straight to a replica's actor, picked
//!   by the power of two choices on the requests in flight. Ray Serve's proxy actor,
//!   and the latency it adds, has no counterpart here.
//! * **Replicas are actors of one class.** [`register_deployment!`] files the user's
//!   type by name; a `Replica` actor builds it from its JSON config wherever the
//!   runtime places it. Handlers take `&self` and run side by side up to
//!   `max_ongoing_requests`; a config update takes the value's write lock.
//! * **JSON at the replica's edge.** Requests reach the replica as their JSON bytes
//!   and parse there, so a body that does not parse is a 400 naming the reason, and
//!   one encoding serves HTTP and [`DeploymentHandle`] calls in every mode.
//! * **Queues and batches in the router.** Requests wait in the router when every
//!   replica is full (bounded by `max_queued_requests`: past it, 503), and the
//!   autoscaler sees them. A batched handler's requests gather there and travel as
//!   one call that counts once against `max_ongoing_requests`, so batches fill.
//! * **A controller thread** keeps each deployment at its replicas: it replaces those
//!   that die or fail a health check, follows the autoscaler, drains before it stops
//!   one, and sends every replica the directory its handles route by.
//!
//! ## Layout
//!
//! * `deployment`: the [`Deployment`] trait, [`Handlers`], the registry.
//! * `options`: [`DeploymentOptions`], [`Autoscaling`], [`HttpOptions`].
//! * `replica`: the replica actor.
//! * `router`: routing, queueing and batching of one deployment's requests.
//! * `directory`: the routers of this process, and the directory replicas receive.
//! * `controller`: replicas toward their target; health checks; the autoscaler.
//! * `ingress`: the HTTP server.
//! * `handle`: [`DeploymentHandle`] and its [`Response`].
//! * `metrics`: the counters behind `/metrics`.
//! * `record`: the application's record in the session directory, for `prism serve`.
//! * `app`: [`Serve`], the running application.
//! * [`client`]: a minimal blocking HTTP client, for tests and examples.

mod app;
pub mod client;
mod controller;
mod deployment;
mod directory;
mod error;
mod handle;
mod ingress;
mod metrics;
mod options;
mod record;
mod replica;
mod router;

pub use app::Serve;
pub use controller::{DeploymentStatus, ReplicaState, ReplicaStatus};
pub use deployment::{BatchOptions, Deployment, HandlerKind, Handlers};
pub use directory::{Directory, Entry};
pub use error::{HttpError, Result, ServeError};
pub use handle::{DeploymentHandle, Response};
pub use options::{Autoscaling, DeploymentOptions, HttpOptions};
pub use replica::{
    Chunk, NodeIngress, NodeIngressHandle, Replica, ReplicaHandle, ReplicaInfo, Reply,
};

/// What the macros' expansions name. Not for direct use.
#[doc(hidden)]
pub mod __private {
    pub use crate::deployment::{build_entry, HostedEntry, Registration};
    pub use inventory;
}

/// The tokio runtime of this process's serving: the ingress, the routers' waits and
/// timers. Started on first use, with a thread per core.
pub(crate) fn tokio() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
            .thread_name("prism-serve")
            .enable_all()
            .build()
            .expect("the serving runtime starts")
    })
}
