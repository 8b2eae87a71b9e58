//! Runtime configuration: how many CPUs and GPUs, which custom resources, how much
//! memory the object store may hold and where it spills.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};

/// How to start the runtime. Every field has a sane default: the machine's CPUs, no
/// GPUs, 30% of the machine's memory for objects, spilling under the system temp dir.
///
/// ```
/// let config = prism::Config::default()
///     .num_cpus(4.0)
///     .num_gpus(1.0)
///     .resource("fpga", 2.0)
///     .object_store_memory(256 << 20);
/// assert_eq!(config.cpus(), 4.0);
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) num_cpus: f64,
    pub(crate) num_gpus: f64,
    pub(crate) memory: Option<u64>,
    pub(crate) resources: BTreeMap<String, f64>,
    pub(crate) object_store_memory: Option<u64>,
    pub(crate) spill_dir: Option<PathBuf>,
    pub(crate) spilling: bool,
    pub(crate) address: Option<String>,
    pub(crate) token: Option<String>,
    pub(crate) reconnect_window: Option<Duration>,
}

/// The environment variable that sets [`Config::reconnect_window`], in seconds.
pub const ENV_RECONNECT_WINDOW: &str = "PRISM_RECONNECT_WINDOW_S";

/// How long a driver keeps trying to reach a cluster that went away, by default: Ray's
/// default too.
pub const DEFAULT_RECONNECT_WINDOW: Duration = Duration::from_secs(60);

impl Default for Config {
    fn default() -> Self {
        Config {
            num_cpus: std::thread::available_parallelism()
                .map(|n| n.get() as f64)
                .unwrap_or(1.0),
            num_gpus: 0.0,
            memory: None,
            resources: BTreeMap::new(),
            object_store_memory: None,
            spill_dir: None,
            spilling: true,
            address: None,
            token: None,
            reconnect_window: None,
        }
    }
}

impl Config {
    /// The number of CPUs tasks may use (fractions allowed). Default: the machine's.
    pub fn num_cpus(mut self, n: f64) -> Self {
        self.num_cpus = n;
        self
    }

    /// The number of GPUs to account for. Default: none.
    pub fn num_gpus(mut self, n: f64) -> Self {
        self.num_gpus = n;
        self
    }

    /// The `memory` resource in bytes that tasks may reserve. Default: the machine's memory.
    pub fn memory(mut self, bytes: u64) -> Self {
        self.memory = Some(bytes);
        self
    }

    /// Adds a custom resource, such as `("fpga", 2.0)`.
    pub fn resource(mut self, name: impl Into<String>, amount: f64) -> Self {
        self.resources.insert(name.into(), amount);
        self
    }

    /// The object store's memory cap in bytes. Past it, objects are spilled to disk.
    /// Default: 30% of the machine's memory.
    pub fn object_store_memory(mut self, bytes: u64) -> Self {
        self.object_store_memory = Some(bytes);
        self
    }

    /// The directory objects are spilled to. Default: a fresh directory under the system
    /// temp dir, removed at shutdown.
    pub fn spill_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spill_dir = Some(dir.into());
        self
    }

    /// Turns spilling on or off. Without spilling, a full store fails puts with
    /// [`Error::ObjectStoreFull`].
    pub fn spilling(mut self, on: bool) -> Self {
        self.spilling = on;
        self
    }

    /// Joins the cluster whose head is at `address` (`HOST:PORT`, or `auto` for the one
    /// recorded in this machine's session) instead of starting the embedded runtime.
    /// `PRISM_ADDRESS` does the same without code.
    pub fn address(mut self, address: impl Into<String>) -> Self {
        self.address = Some(address.into());
        self
    }

    /// The cluster token (default: `PRISM_TOKEN`, else the session's token file).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// How long a driver whose cluster went away (its node, or the head) keeps trying to
    /// reach it again before every pending and later operation fails with
    /// [`Error::ClusterUnreachable`]. Default: `PRISM_RECONNECT_WINDOW_S` seconds if set,
    /// else 60 s.
    ///
    /// ```
    /// use std::time::Duration;
    /// let c = prism::Config::default().reconnect_window(Duration::from_secs(5));
    /// assert_eq!(c.reconnect_window_or_default(), Duration::from_secs(5));
    /// ```
    pub fn reconnect_window(mut self, window: Duration) -> Self {
        self.reconnect_window = Some(window);
        self
    }

    /// The reconnect window this configuration gives: its own, else the environment's,
    /// else the default.
    pub fn reconnect_window_or_default(&self) -> Duration {
        self.reconnect_window
            .or_else(|| {
                std::env::var(ENV_RECONNECT_WINDOW)
                    .ok()
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .map(Duration::from_secs_f64)
            })
            .unwrap_or(DEFAULT_RECONNECT_WINDOW)
    }

    /// The number of CPUs this configuration gives.
    pub fn cpus(&self) -> f64 {
        self.num_cpus
    }

    pub(crate) fn validate(&self) -> Result<()> {
        check_amount("num_cpus", self.num_cpus)?;
        check_amount("num_gpus", self.num_gpus)?;
        for (name, &v) in &self.resources {
            check_amount(name, v)?;
        }
        if self.num_gpus.fract() != 0.0 {
            return Err(Error::Config(format!(
                "num_gpus must be a whole number of devices, got {}",
                self.num_gpus
            )));
        }
        Ok(())
    }

    pub(crate) fn store_capacity(&self) -> u64 {
        self.object_store_memory
            .unwrap_or_else(|| system_memory() / 10 * 3)
    }

    pub(crate) fn memory_resource(&self) -> u64 {
        self.memory.unwrap_or_else(system_memory)
    }
}

/// Fails unless `v` is a usable amount of a resource: finite and not negative.
pub(crate) fn check_amount(what: &str, v: f64) -> Result<()> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "{what} must be a finite amount >= 0, got {v}"
        )))
    }
}

/// The machine's total memory in bytes (from `/proc/meminfo`; 8 GiB where unknown).
pub(crate) fn system_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(8 << 30)
}
