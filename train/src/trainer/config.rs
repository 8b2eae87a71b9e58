//! The options of a run: its workers ([`ScalingConfig`]) and what it keeps and how it
//! survives failures ([`RunConfig`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::collective::DEFAULT_TIMEOUT;

/// How the ranks of a run meet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Transport {
    /// Shared memory when every rank is in one process; otherwise a TCP ring, whose
    /// all-reduces go through the processes' memory when every rank is on one machine
    /// (see [`HostMemory`](crate::collective::HostMemory)).
    #[default]
    Auto,
    /// A TCP ring always, every byte over TCP, even within one process (to measure it,
    /// say).
    Tcp,
}

/// How many workers a run has and what each holds (Ray Train's `ScalingConfig`).
///
/// The workers hold their resources, in a placement group, for the whole run. Work
/// they wait on that runs outside the group, such as the read tasks of a prism-data
/// `DataShard`, needs resources the workers leave free: on a two-CPU machine, two
/// workers of half a CPU each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalingConfig {
    /// The number of workers (ranks).
    pub num_workers: usize,
    /// CPUs each worker holds (default 1).
    pub cpus_per_worker: f64,
    /// GPUs each worker holds (default 0).
    pub gpus_per_worker: f64,
    /// Custom resources each worker holds.
    pub resources_per_worker: BTreeMap<String, f64>,
    /// How the workers' bundles are spread over nodes (default PACK).
    pub strategy: prism::PlacementStrategy,
    /// How the ranks meet.
    pub transport: Transport,
}

impl ScalingConfig {
    /// `num_workers` workers of one CPU each, packed.
    pub fn new(num_workers: usize) -> ScalingConfig {
        ScalingConfig {
            num_workers,
            cpus_per_worker: 1.0,
            gpus_per_worker: 0.0,
            resources_per_worker: BTreeMap::new(),
            strategy: prism::PlacementStrategy::Pack,
            transport: Transport::Auto,
        }
    }

    /// CPUs per worker.
    pub fn cpus_per_worker(mut self, n: f64) -> Self {
        self.cpus_per_worker = n;
        self
    }

    /// GPUs per worker.
    pub fn gpus_per_worker(mut self, n: f64) -> Self {
        self.gpus_per_worker = n;
        self
    }

    /// A custom resource per worker.
    pub fn resource_per_worker(mut self, name: impl Into<String>, amount: f64) -> Self {
        self.resources_per_worker.insert(name.into(), amount);
        self
    }

    /// The placement strategy of the workers' bundles.
    pub fn strategy(mut self, strategy: prism::PlacementStrategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// How the ranks meet.
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    pub(super) fn bundle(&self) -> prism::Bundle {
        let mut b = prism::Bundle::new()
            .cpus(self.cpus_per_worker)
            .gpus(self.gpus_per_worker);
        for (k, v) in &self.resources_per_worker {
            b = b.resource(k.clone(), *v);
        }
        b
    }
}

/// Whether lower or higher scores are better.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Lower is better (a loss).
    #[default]
    Min,
    /// Higher is better (an accuracy).
    Max,
}

/// When the per-epoch progress line is printed (on standard error).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Progress {
    /// When standard error is a terminal.
    #[default]
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// What a run keeps and how it survives failures (Ray Train's `RunConfig`,
/// `CheckpointConfig` and `FailureConfig` in one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// The run directory, where checkpoints and the history are written; without one,
    /// checkpoints are kept in memory only (and a killed run cannot be restored).
    #[serde(skip)]
    pub dir: Option<PathBuf>,
    /// How many checkpoints to keep besides the latest (all if `None`): the best by
    /// `score_attribute`, or the newest without one.
    pub num_to_keep: Option<usize>,
    /// The metric that ranks checkpoints, and which way.
    pub score: Option<(String, Mode)>,
    /// How many times a failed attempt is restarted before the run fails (default 0).
    pub max_failures: u32,
    /// When to print a line per epoch.
    pub progress: Progress,
    /// How long a collective waits for a peer (default 30 minutes); a dead peer fails
    /// it at once, whatever this is.
    pub collective_timeout: Duration,
    /// How long to wait for the workers' resources (default 2 minutes).
    pub placement_timeout: Duration,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            dir: None,
            num_to_keep: None,
            score: None,
            max_failures: 0,
            progress: Progress::Auto,
            collective_timeout: DEFAULT_TIMEOUT,
            placement_timeout: Duration::from_secs(120),
        }
    }
}

impl RunConfig {
    /// The defaults: no run directory, every checkpoint kept, no restarts.
    pub fn new() -> RunConfig {
        RunConfig::default()
    }

    /// The defaults without the progress line.
    pub fn quiet() -> RunConfig {
        RunConfig::default().progress(Progress::Never)
    }

    /// Writes the run into `dir`.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Keeps `n` checkpoints besides the latest.
    pub fn num_to_keep(mut self, n: usize) -> Self {
        self.num_to_keep = Some(n);
        self
    }

    /// Ranks checkpoints by the metric `name`.
    pub fn score(mut self, name: impl Into<String>, mode: Mode) -> Self {
        self.score = Some((name.into(), mode));
        self
    }

    /// Restarts a failed attempt up to `n` times.
    pub fn max_failures(mut self, n: u32) -> Self {
        self.max_failures = n;
        self
    }

    /// When to print a line per epoch.
    pub fn progress(mut self, progress: Progress) -> Self {
        self.progress = progress;
        self
    }

    /// How long a collective waits for a live peer.
    pub fn collective_timeout(mut self, timeout: Duration) -> Self {
        self.collective_timeout = timeout;
        self
    }

    /// How long to wait for the workers' resources.
    pub fn placement_timeout(mut self, timeout: Duration) -> Self {
        self.placement_timeout = timeout;
        self
    }
}
