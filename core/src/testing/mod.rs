//! The test harness (feature `testing`): a cluster of real daemon processes on this
//! machine, and behaviour tests that run the same body in both modes.
//!
//! [`LocalCluster`] starts a head and nodes from the `prism` binary, each node on its
//! own loopback address, in a session directory of their own, and ends them by PID when
//! dropped. [`Session`] starts a runtime for one test: the embedded runtime, or a driver
//! of a two-node [`LocalCluster`]. [`both_modes!`](crate::both_modes) writes one test
//! body twice over, once per mode:
//!
//! ```no_run
//! #[prism::remote]
//! fn add(x: i64, y: i64) -> i64 { x + y }
//!
//! prism::both_modes! {
//!     /// Tasks chain through refs.
//!     fn refs_chain(_session, prism::testing::NodeSpec::cpus(1.0)) {
//!         let a = add::remote(1, 2);
//!         assert_eq!(prism::get(&add::remote(&a, 10)).unwrap(), 13);
//!     }
//! }
//! # fn main() {}
//! ```
//!
//! In cluster mode the worker processes are the test binary itself, re-run with the
//! test's exact name: [`Session::start`] is the first thing such a process reaches, and
//! there it serves its node instead of starting a cluster.

mod cluster;

pub use cluster::{end_process, sibling_prism_bin, LocalCluster};

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long the harness waits for a daemon to come up, or for a condition.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// What went wrong in the harness itself (not in the code under test).
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A daemon or directory could not be set up.
    #[error("the test cluster could not start: {0}")]
    Start(String),
    /// A condition did not come true in time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// How long.
        after: Duration,
    },
}

/// Polls `f` every 10 ms until it returns a value, for up to [`PATIENCE`].
pub fn wait_for<T>(mut f: impl FnMut() -> Option<T>, what: &str) -> Result<T, HarnessError> {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if t.elapsed() >= PATIENCE {
            return Err(HarnessError::Timeout {
                what: what.to_string(),
                after: PATIENCE,
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Where a behaviour test runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The embedded runtime: one process.
    Embedded,
    /// A driver of a cluster of two nodes of real processes on loopback.
    Cluster,
}

/// What each node of a test's runtime offers. The embedded runtime is one such node;
/// a test cluster has two, each offering the same, so a test that asks for more than
/// one node has behaves the same in both modes.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSpec {
    /// CPUs.
    pub cpus: f64,
    /// GPUs (accounted, not used).
    pub gpus: f64,
    /// Custom resources.
    pub resources: BTreeMap<String, f64>,
    /// The object store's memory cap, in bytes.
    pub object_store_memory: Option<u64>,
}

impl NodeSpec {
    /// A node with `n` CPUs and nothing else.
    pub fn cpus(n: f64) -> NodeSpec {
        NodeSpec {
            cpus: n,
            gpus: 0.0,
            resources: BTreeMap::new(),
            object_store_memory: None,
        }
    }

    /// With `n` GPUs too.
    pub fn gpus(mut self, n: f64) -> NodeSpec {
        self.gpus = n;
        self
    }

    /// With an amount of a custom resource too.
    pub fn resource(mut self, name: &str, amount: f64) -> NodeSpec {
        self.resources.insert(name.to_string(), amount);
        self
    }

    /// With this object store cap.
    pub fn object_store_memory(mut self, bytes: u64) -> NodeSpec {
        self.object_store_memory = Some(bytes);
        self
    }

    /// The embedded runtime's configuration for this node.
    pub fn config(&self) -> crate::Config {
        let mut c = crate::Config::default()
            .num_cpus(self.cpus)
            .num_gpus(self.gpus);
        for (k, v) in &self.resources {
            c = c.resource(k.clone(), *v);
        }
        if let Some(cap) = self.object_store_memory {
            c = c.object_store_memory(cap);
        }
        c
    }
}

/// The runtime one test runs against, in one mode; ends it (and the cluster's
/// processes) when dropped.
pub struct Session {
    mode: Mode,
    spec: NodeSpec,
    config: crate::Config,
    cluster: Option<LocalCluster>,
}

/// The loopback addresses of a test cluster's two nodes.
pub const NODE_IPS: [&str; 2] = ["127.0.0.2", "127.0.0.3"];

impl Session {
    /// Starts the runtime of `mode` with nodes offering `spec`. Panics (failing the
    /// test) if the harness cannot start it, saying why.
    ///
    /// In a worker process of the test cluster this never returns: the process serves
    /// its node.
    pub fn start(mode: Mode, spec: NodeSpec) -> Session {
        Self::start_with(mode, spec, crate::Config::default())
    }

    /// Like [`Session::start`], with `config` for the driver (or for the embedded
    /// runtime, on top of `spec`'s resources).
    pub fn start_with(mode: Mode, spec: NodeSpec, config: crate::Config) -> Session {
        crate::enter_if_worker();
        let cluster = match mode {
            Mode::Embedded => None,
            Mode::Cluster => {
                let Some(bin) = sibling_prism_bin() else {
                    panic!(
                        "no prism binary next to the test binary: build it first \
                         (`cargo build --bins`)"
                    );
                };
                let nodes: Vec<(&str, NodeSpec)> =
                    NODE_IPS.iter().map(|ip| (*ip, spec.clone())).collect();
                match LocalCluster::start_with(bin, &nodes) {
                    Ok(c) => Some(c),
                    Err(e) => panic!("{e}"),
                }
            }
        };
        let session = Session {
            mode,
            spec,
            config,
            cluster,
        };
        if let Err(e) = session.init() {
            panic!("the {mode:?} runtime did not start: {e}");
        }
        session
    }

    /// Starts this session's runtime in this process (again, after a
    /// [`crate::shutdown`]): the embedded runtime with the spec's resources over the
    /// session's config, or a new driver of the test cluster.
    pub fn init(&self) -> crate::Result<()> {
        match &self.cluster {
            None => {
                let mut c = self.config.clone();
                c.num_cpus = self.spec.cpus;
                c.num_gpus = self.spec.gpus;
                for (k, v) in &self.spec.resources {
                    c = c.resource(k.clone(), *v);
                }
                if let Some(cap) = self.spec.object_store_memory {
                    c = c.object_store_memory(cap);
                }
                crate::init_with(c)
            }
            Some(cluster) => {
                let mut c = self.config.clone();
                if let (None, Some(cap)) = (c.object_store_memory, self.spec.object_store_memory) {
                    c = c.object_store_memory(cap);
                }
                cluster.connect_with(c)
            }
        }
    }

    /// The id of the runtime's first node: for pinning work to one node (and so to one
    /// process) in both modes.
    pub fn first_node(&self) -> String {
        match crate::nodes() {
            Ok(nodes) => nodes
                .into_iter()
                .find(|n| n.alive)
                .map(|n| n.node_id)
                .unwrap_or_default(),
            Err(e) => panic!("the runtime's nodes: {e}"),
        }
    }

    /// A strategy that runs work on the runtime's first node.
    pub fn on_first_node(&self) -> crate::Strategy {
        crate::Strategy::NodeAffinity {
            node_id: self.first_node(),
            soft: false,
        }
    }

    /// The mode the test runs in.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The test cluster, in cluster mode.
    pub fn cluster(&self) -> Option<&LocalCluster> {
        self.cluster.as_ref()
    }

    /// The test cluster, in cluster mode, to change it (kill a node, add one).
    pub fn cluster_mut(&mut self) -> Option<&mut LocalCluster> {
        self.cluster.as_mut()
    }

    /// How many nodes the runtime has: 1 embedded, 2 on the test cluster.
    pub fn nodes(&self) -> usize {
        match self.mode {
            Mode::Embedded => 1,
            Mode::Cluster => NODE_IPS.len(),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // A cluster ends its own runtime and daemons; the embedded runtime ends here.
        if self.cluster.is_none() {
            crate::shutdown();
        }
    }
}

/// Writes one behaviour test twice over: `<name>::embedded` on the embedded runtime and
/// `<name>::cluster` on a two-node test cluster of real processes, the same body, given
/// the [`Session`](crate::testing::Session) it runs in. The second argument is the
/// [`NodeSpec`](crate::testing::NodeSpec) of each node; an optional third, the driver's
/// [`Config`](crate::Config).
#[macro_export]
macro_rules! both_modes {
    ($(#[$meta:meta])* fn $name:ident($session:ident, $spec:expr $(, $config:expr)?) $body:block $($rest:tt)*) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[allow(unused_variables, unused_mut)]
            fn body(mut $session: $crate::testing::Session) $body

            #[test]
            fn embedded() {
                body($crate::both_modes!(@start Embedded, $spec $(, $config)?));
            }

            #[test]
            fn cluster() {
                body($crate::both_modes!(@start Cluster, $spec $(, $config)?));
            }
        }
        $crate::both_modes! { $($rest)* }
    };
    (@start $mode:ident, $spec:expr) => {
        $crate::testing::Session::start($crate::testing::Mode::$mode, $spec)
    };
    (@start $mode:ident, $spec:expr, $config:expr) => {
        $crate::testing::Session::start_with($crate::testing::Mode::$mode, $spec, $config)
    };
    () => {};
}
