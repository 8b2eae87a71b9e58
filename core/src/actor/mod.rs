//! Actors below the runtime: the options an actor is started with, the bodies the
//! attribute macro generates for its constructor and methods, and the registry of
//! actor classes and methods by stable name that worker processes host them from.
//!
//! The handles users hold are in the API above; the mailboxes that run the calls, in
//! the process that hosts the actor, are the runtime's.

mod registry;

pub use registry::{
    call as call_encoded, construct, lookup_class, lookup_method, ActorClass, ActorMethod,
    ActorState, ClassRegistration, MethodRegistration,
};

use std::any::Any;

use serde::{Deserialize, Serialize};

use crate::task::{LocalArgs, Output, TaskOptions};

/// Options of an actor: resources reserved for its life, a name, concurrency, restarts.
///
/// Every `Actor::options()` builder exposes these methods.
///
/// ```
/// let opts = prism::ActorOptions::default().name("cache").num_cpus(1.0).max_concurrency(4);
/// assert_eq!(opts, prism::ActorOptions::default().max_concurrency(4).num_cpus(1.0).name("cache"));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActorOptions {
    pub(crate) task: TaskOptions,
    pub(crate) name: Option<String>,
    pub(crate) max_concurrency: usize,
    pub(crate) max_restarts: u32,
}

impl Default for ActorOptions {
    fn default() -> Self {
        ActorOptions {
            task: TaskOptions::default().num_cpus(0.0).max_retries(0),
            name: None,
            max_concurrency: 1,
            max_restarts: 0,
        }
    }
}

impl ActorOptions {
    /// CPUs reserved for the actor's life (default 0).
    pub fn num_cpus(mut self, n: f64) -> Self {
        self.task = self.task.num_cpus(n);
        self
    }
    /// GPUs reserved for the actor's life.
    pub fn num_gpus(mut self, n: f64) -> Self {
        self.task = self.task.num_gpus(n);
        self
    }
    /// Bytes of the `memory` resource reserved for the actor's life.
    pub fn memory(mut self, bytes: u64) -> Self {
        self.task = self.task.memory(bytes);
        self
    }
    /// An amount of a custom resource reserved for the actor's life.
    pub fn resource(mut self, name: impl Into<String>, amount: f64) -> Self {
        self.task = self.task.resource(name, amount);
        self
    }
    /// Replaces all custom resources.
    pub fn resources<K: Into<String>>(mut self, list: impl IntoIterator<Item = (K, f64)>) -> Self {
        self.task = self.task.resources(list);
        self
    }
    /// How many times a failed method call is retried (default 0).
    pub fn max_retries(mut self, n: u32) -> Self {
        self.task = self.task.max_retries(n);
        self
    }
    /// Retries method calls that panicked, too.
    pub fn retry_on_panic(mut self, yes: bool) -> Self {
        self.task = self.task.retry_on_panic(yes);
        self
    }
    /// Where the actor may be placed on a cluster.
    pub fn scheduling(mut self, strategy: crate::Strategy) -> Self {
        self.task = self.task.scheduling(strategy);
        self
    }
    /// Registers the actor under a name, to be found with [`crate::get_actor`].
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
    /// How many calls may run at once (default 1: one at a time, in order).
    pub fn max_concurrency(mut self, n: usize) -> Self {
        self.max_concurrency = n.max(1);
        self
    }
    /// How many times the actor is restarted if its process dies (cluster mode).
    pub fn max_restarts(mut self, n: u32) -> Self {
        self.max_restarts = n;
        self
    }
}

/// The body of an actor method, by receiver kind. Not for direct use.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub enum Method {
    /// A `&self` method.
    Shared(fn(&(dyn Any + Send + Sync), LocalArgs) -> Output),
    /// A `&mut self` method.
    Exclusive(fn(&mut (dyn Any + Send + Sync), LocalArgs) -> Output),
}

/// A constructor. Not for direct use.
#[doc(hidden)]
pub type Constructor = fn(LocalArgs) -> Box<dyn Any + Send + Sync>;
