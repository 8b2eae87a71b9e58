//! # prism: remote functions, actors and a shared object store, on every core
//!
//! prism runs plain Rust functions and structs as parallel tasks and actors, in the
//! spirit of Ray. Mark a function `#[prism::remote]` and call `f::remote(args..)`: it
//! returns an [`ObjectRef`] at once and runs on a pool of worker threads as soon as its
//! arguments are ready and its resources are free. Mark a struct and its impl
//! `#[prism::actor]` and `T::remote(args..)` starts it; the handle's methods queue calls
//! that run in order on the actor's state.
//!
//! ```
//! use prism::prelude::*;
//!
//! #[prism::remote]
//! fn add(x: i64, y: i64) -> i64 { x + y }
//!
//! #[prism::actor]
//! pub struct Counter { count: i64 }
//!
//! #[prism::actor]
//! impl Counter {
//!     pub fn new(init: i64) -> Self { Counter { count: init } }
//!     pub fn increment(&mut self) -> i64 { self.count += 1; self.count }
//! }
//!
//! fn main() -> prism::Result<()> {
//!     prism::init()?;
//!     let a = add::remote(1, 2);             // ObjectRef<i64>, returns at once
//!     let b = add::remote(&a, 10);           // a ref as an argument: resolved before b runs
//!     assert_eq!(prism::get(&b)?, 13);
//!     let c = Counter::remote(0);
//!     let n = c.increment();
//!     assert_eq!(prism::get(&n)?, 1);
//!     assert_eq!(add(2, 2), 4);              // still a plain function
//!     prism::shutdown();
//!     Ok(())
//! }
//! ```
//!
//! ## Design
//!
//! * **One runtime per process, two modes behind one seam.** [`init`] starts the
//!   embedded runtime (the whole system in this process), or, given a cluster's
//!   address ([`Config::address`], `PRISM_ADDRESS`), a driver of that cluster; in a
//!   process a node started as a worker it serves the node instead. The runtime holds
//!   a *backend*, an enum over the two modes, and is the one place that asks which
//!   mode runs: the API, tasks and actor handles call the runtime. Both modes share
//!   the object store, the thread pool, and the actor mailbox, so a behaviour works
//!   the same in each (the tests run every behaviour in both).
//! * **Values are shared, not copied.** Objects are held as `Arc<T>`; the local path
//!   never serializes. A parameter declared `&T`, `&[T]` or `&str` receives the shared
//!   value itself, so ten tasks reading one large object hold one copy of it; a worker
//!   process that pulled the object decodes it once and shares that copy among its
//!   tasks. [`get_arc`] hands the shared value out; [`get`] clones it once.
//! * **Serializable at the seams.** Every argument and result type must be
//!   `Serialize + DeserializeOwned + Send + Sync + 'static` ([`Value`]), checked at
//!   compile time, so a program that compiles here can run on a cluster. Each remote
//!   function, actor method and constructor is registered at compile time under a
//!   stable name with its body and its parameters' types: a worker process decodes
//!   the arguments it receives and runs the same body, by name; no code is shipped.
//!   Small values travel with the call; large ones, and objects, travel by reference
//!   and are pulled from where they are kept.
//! * **Blocking gives the CPU back.** A task blocked in [`get`] or [`wait`] returns its
//!   CPUs while it waits (to the pool, or on a cluster to its node), so nested tasks
//!   never deadlock, even on one CPU.
//! * **Failures are values.** A panic in a task becomes [`Error::TaskFailed`] with the
//!   function, the message and where it ran; dependents fail with the same cause. The
//!   runtime never goes down with a task. A driver that loses its cluster keeps trying
//!   for its reconnect window, then fails everything pending with
//!   [`Error::ClusterUnreachable`]; nothing waits forever.
//! * **Reference counting.** An object lives while some [`ObjectRef`] to it does: in
//!   the driver, in a queued task, or nested inside another object. An unnamed actor
//!   lives while some handle to it does, in any process.
//!
//! ## Layout
//!
//! The modules import one way down this list (a test reads the sources and fails on an
//! import upward, or on a daemon using the runtime, the API, actors or the store):
//!
//! * `api`: the free functions, actor handles and futures users touch.
//! * `runtime`: the mode dispatch; `runtime::embedded` (tasks on the pool, actors in
//!   mailboxes here) and `runtime::cluster` (Ray's "core worker": the owner of objects
//!   and their lineage, the links to the node and the head, the object server, direct
//!   connections to workers, the caller's side of remote actors, and in a worker the
//!   tasks and actors its node sends it); the mailbox both host actors in.
//! * [`daemon`] (beside the runtime, never importing it): the head, the node daemon
//!   and the head's HTTP API.
//! * [`wire`]: frames, the authenticated handshake, the messages, the environment of a
//!   worker process.
//! * `sched`: the resource books (shared with the node daemon) and the thread pool.
//! * [`actor`], [`task`]: options, registries, a task as it travels.
//! * [`object`]: references, the store (which keeps a placeholder for an object living
//!   elsewhere and never fetches), spilling.
//! * [`session`], errors, configuration, ids, locks.
//!
//! What must call upward goes through hooks set from above: the store tells the owner
//! an object was freed through a callback, deserialized references find the current
//! store through a slot the runtime fills, errors learn where code runs from a locator
//! the runtime installs.
//!
//! The trade-off: actor state must be `Send + Sync` (methods taking `&self` may run
//! side by side under `max_concurrency`), and owned parameters need `Clone` because an
//! argument that is still shared elsewhere is copied into the callee.

#![warn(missing_docs)]

mod api;
mod config;
pub mod daemon;
mod error;
mod id;
mod registry;
mod runtime;
mod sched;
pub mod session;
pub mod state;
mod sync;
#[cfg(feature = "testing")]
pub mod testing;
pub mod wire;

pub mod actor;
pub mod object;
pub mod task;

pub use actor::ActorOptions;
pub use api::{
    available_resources, block_on, cancel, cluster_resources, context, enter_if_worker, get,
    get_actor, get_all, get_all_arc, get_arc, get_timeout, init, init_with, is_initialized, kill,
    nodes, placement_group, put, put_arc, remove_placement_group, shutdown, store_stats, wait,
    Actor, ActorHandle, ObjectFuture, PlacementGroup, ReadyPending, RuntimeContext,
};
pub use config::Config;
pub use error::{Error, Result};
pub use id::{ActorId, ObjectId, PlacementGroupId};
pub use object::{ObjectRef, StoreStats, Value};
pub use prism_macros::{actor, remote};
pub use task::{Bundle, IntoArg, PlacementStrategy, Strategy, TaskOptions};
pub use wire::NodeView;

/// What most programs import: `use prism::prelude::*;`.
pub mod prelude {
    pub use crate::{ActorHandle, Error, IntoArg, ObjectRef, Result, Value};
    pub use std::time::Duration;
}

/// Re-exports for the generated code. Not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::api::{block_on, spawn, submit};
    pub use inventory;
    pub use serde;
}
