//! Tasks: what a remote call carries (its function, arguments and options), the
//! compile-time registry of remote functions by stable name, and the execution of one
//! task from bytes, as a worker process does.
//!
//! `#[prism::remote]` registers every function twice over: `run_local` takes its
//! arguments as shared `Arc`s (the embedded runtime's path, no serialization), and
//! `run_encoded` takes them as bytes (the path of a worker process that received a
//! [`TaskSpec`] over the wire). Both are found by the function's stable name,
//! `module_path!()::name`, so code is never shipped, only names.
//!
//! * `args`: what a caller passes ([`Arg`], [`IntoArg`]) and what a function receives
//!   ([`LocalArgs`]) and returns ([`Output`]).
//! * `function`: the registry of remote functions.
//! * `spec`: a task as it travels ([`TaskSpec`]) and its execution from bytes.
//! * `panic`: running user code so that a panic becomes an error that says where.

mod args;
mod function;
pub(crate) mod group;
pub(crate) mod panic;
mod spec;

use serde::{Deserialize, Serialize};

pub(crate) use args::Source;
pub(crate) use args::{refs_of, ArgKind};
pub use args::{Arg, IntoArg, LocalArgs, Output, Param};
pub use function::{lookup, Registration, RemoteFunction};
pub use group::{Bundle, PlacementStrategy};
pub use spec::{EncodedArg, TaskSpec};

/// Options of a remote call: resources, retries, a display name.
///
/// Every `f::options()` and `Actor::options()` builder exposes these same methods.
///
/// ```
/// let opts = prism::TaskOptions::default().num_cpus(0.5).num_gpus(1.0).resource("fpga", 1.0);
/// assert_eq!(opts.cpus(), 0.5);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskOptions {
    pub(crate) num_cpus: f64,
    pub(crate) num_gpus: f64,
    pub(crate) memory: u64,
    pub(crate) resources: Vec<(String, f64)>,
    pub(crate) max_retries: u32,
    pub(crate) retry_on_panic: bool,
    pub(crate) name: Option<String>,
    pub(crate) scheduling: Strategy,
}

/// Where a call may run on a cluster. The embedded runtime is one node and runs every
/// call there, whatever the strategy.
///
/// ```
/// use prism::Strategy;
/// let pinned = prism::TaskOptions::default().scheduling(Strategy::NodeAffinity {
///     node_id: "3f2a9c1e".into(),
///     soft: true,
/// });
/// let spread = prism::TaskOptions::default().scheduling(Strategy::Spread);
/// assert_ne!(pinned, spread);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub enum Strategy {
    /// The node the call is submitted to first; other nodes when it is saturated.
    #[default]
    Default,
    /// Over the live nodes that can run it, in turn: calls of one batch land on
    /// different nodes even when the first has room for all of them. Nodes with room
    /// for the call now (as last reported) come first: a full node is passed over
    /// while another has room.
    Spread,
    /// On the node with this id (see [`crate::nodes`]). A hard affinity fails with
    /// [`Error::Infeasible`] when that node is gone or can never meet the demand; a soft
    /// one then runs the call wherever [`Strategy::Default`] would.
    NodeAffinity {
        /// The node's id.
        node_id: String,
        /// Whether another node may run it when this one cannot.
        soft: bool,
    },
    /// In a bundle of a placement group (see [`crate::PlacementGroup`]): `Some(i)` for
    /// bundle `i`, `None` for any bundle with room. The call's resources come out of the
    /// bundle's; a call submitted before the group is ready waits for it, and one of a
    /// removed group fails.
    PlacementGroup {
        /// The group.
        group: crate::id::PlacementGroupId,
        /// The bundle, or any.
        bundle: Option<usize>,
    },
}

impl Default for TaskOptions {
    fn default() -> Self {
        TaskOptions {
            num_cpus: 1.0,
            num_gpus: 0.0,
            memory: 0,
            resources: Vec::new(),
            max_retries: 3,
            retry_on_panic: false,
            name: None,
            scheduling: Strategy::Default,
        }
    }
}

impl TaskOptions {
    /// CPUs the call holds while it runs (fractions allowed; default 1 for tasks, 0 for
    /// actors).
    pub fn num_cpus(mut self, n: f64) -> Self {
        self.num_cpus = n;
        self
    }

    /// GPUs the call holds while it runs: a fraction of one device, or whole devices.
    pub fn num_gpus(mut self, n: f64) -> Self {
        self.num_gpus = n;
        self
    }

    /// Bytes of the `memory` resource the call reserves.
    pub fn memory(mut self, bytes: u64) -> Self {
        self.memory = bytes;
        self
    }

    /// An amount of a custom resource, such as `("fpga", 1.0)`.
    pub fn resource(mut self, name: impl Into<String>, amount: f64) -> Self {
        let name = name.into();
        self.resources.retain(|(n, _)| *n != name);
        self.resources.push((name, amount));
        self
    }

    /// Replaces all custom resources.
    pub fn resources<K: Into<String>>(mut self, list: impl IntoIterator<Item = (K, f64)>) -> Self {
        self.resources = list.into_iter().map(|(k, v)| (k.into(), v)).collect();
        self
    }

    /// How many times a failed attempt is retried (default 3). System failures are
    /// always retried; panics only with [`TaskOptions::retry_on_panic`].
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// Retries attempts that panicked, too (default: no).
    pub fn retry_on_panic(mut self, yes: bool) -> Self {
        self.retry_on_panic = yes;
        self
    }

    /// A display name for the call, shown in errors and listings.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Where the call may run on a cluster (default: [`Strategy::Default`]).
    pub fn scheduling(mut self, strategy: Strategy) -> Self {
        self.scheduling = strategy;
        self
    }

    /// The CPUs asked for.
    pub fn cpus(&self) -> f64 {
        self.num_cpus
    }
}

/// Generates the builder methods of a generated options type (a struct with an
/// `options: TaskOptions` field). Not for direct use.
#[doc(hidden)]
#[macro_export]
macro_rules! __option_methods {
    () => {
        /// CPUs the call holds while it runs (fractions allowed).
        pub fn num_cpus(mut self, n: f64) -> Self {
            self.options = self.options.num_cpus(n);
            self
        }
        /// GPUs the call holds while it runs.
        pub fn num_gpus(mut self, n: f64) -> Self {
            self.options = self.options.num_gpus(n);
            self
        }
        /// Bytes of the `memory` resource to reserve.
        pub fn memory(mut self, bytes: u64) -> Self {
            self.options = self.options.memory(bytes);
            self
        }
        /// An amount of a custom resource.
        pub fn resource(mut self, name: impl Into<String>, amount: f64) -> Self {
            self.options = self.options.resource(name, amount);
            self
        }
        /// Replaces all custom resources.
        pub fn resources<K: Into<String>>(
            mut self,
            list: impl IntoIterator<Item = (K, f64)>,
        ) -> Self {
            self.options = self.options.resources(list);
            self
        }
        /// How many times a failed attempt is retried.
        pub fn max_retries(mut self, n: u32) -> Self {
            self.options = self.options.max_retries(n);
            self
        }
        /// Retries attempts that panicked, too.
        pub fn retry_on_panic(mut self, yes: bool) -> Self {
            self.options = self.options.retry_on_panic(yes);
            self
        }
        /// A display name for the call.
        pub fn name(mut self, name: impl Into<String>) -> Self {
            self.options = self.options.name(name);
            self
        }
        /// Where the call may run on a cluster.
        pub fn scheduling(mut self, strategy: $crate::Strategy) -> Self {
            self.options = self.options.scheduling(strategy);
            self
        }
    };
}
