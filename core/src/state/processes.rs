//! The processes of each node that keep objects, as the head last heard of them: every
//! job's worker and every driver connected to the node, each with its pid, its log
//! files and what its object store holds. Nodes send this with their heartbeats; it is
//! live state, not history, and is not kept across a head restart.

use serde::{Deserialize, Serialize};

/// What a process is to its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ProcessKind {
    /// A job's worker, started by the node.
    Worker,
    /// A job's driver, connected to the node.
    Driver,
}

impl ProcessKind {
    /// Its name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            ProcessKind::Worker => "WORKER",
            ProcessKind::Driver => "DRIVER",
        }
    }
}

/// Where a process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProcessState {
    /// Started, not yet connected to its node.
    Starting,
    /// Connected to its node.
    Alive,
    /// Its job ended; it is being stopped.
    Stopping,
}

impl ProcessState {
    /// Its name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            ProcessState::Starting => "STARTING",
            ProcessState::Alive => "ALIVE",
            ProcessState::Stopping => "STOPPING",
        }
    }
}

/// What one process's object store holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectCounts {
    /// Objects alive (in memory, spilled, pending, or kept elsewhere).
    pub objects: u64,
    /// Bytes of values in memory.
    pub bytes_in_memory: u64,
    /// Objects spilled to disk now.
    pub objects_spilled: u64,
    /// Bytes of those.
    pub bytes_spilled: u64,
    /// The store's memory cap (of a sum of processes: the largest cap among them, as
    /// each process has its own).
    pub capacity: u64,
}

impl ObjectCounts {
    /// The sum of two processes' counts (the larger of their caps).
    pub fn plus(self, o: ObjectCounts) -> ObjectCounts {
        ObjectCounts {
            objects: self.objects + o.objects,
            bytes_in_memory: self.bytes_in_memory + o.bytes_in_memory,
            objects_spilled: self.objects_spilled + o.objects_spilled,
            bytes_spilled: self.bytes_spilled + o.bytes_spilled,
            capacity: self.capacity.max(o.capacity),
        }
    }

    /// The counts as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "objects": self.objects,
            "bytes_in_memory": self.bytes_in_memory,
            "objects_spilled": self.objects_spilled,
            "bytes_spilled": self.bytes_spilled,
            "capacity": self.capacity,
        })
    }
}

/// One process of a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessView {
    /// The job it serves or drives.
    pub job: u32,
    /// A worker or a driver.
    pub kind: ProcessKind,
    /// Its process id on the node's machine, once known (a driver tells it with its
    /// first object report).
    pub pid: Option<u32>,
    /// Where it is in its life.
    pub state: ProcessState,
    /// When the node started it (workers), in microseconds since the Unix epoch.
    pub started_us: Option<u64>,
    /// Its log files in the node's session `logs` directory (workers; a driver's
    /// output goes where its user sent it).
    pub logs: Vec<String>,
    /// What its object store held at its last report, if it made one.
    pub objects: Option<ObjectCounts>,
}

impl ProcessView {
    /// The process as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "job": self.job,
            "kind": self.kind.name(),
            "pid": self.pid,
            "state": self.state.name(),
            "started_us": self.started_us,
            "logs": self.logs,
            "objects": self.objects.map(|o| o.to_json()),
        })
    }
}

/// A node's processes, as the head last heard of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeProcesses {
    /// The node's id.
    pub node_id: String,
    /// Whether the node still sends heartbeats (a dead node's processes are as it last
    /// reported them).
    pub alive: bool,
    /// Its processes, workers first, then by job.
    pub processes: Vec<ProcessView>,
}

impl NodeProcesses {
    /// What every process of the node holds, summed.
    pub fn objects(&self) -> ObjectCounts {
        self.processes
            .iter()
            .filter_map(|p| p.objects)
            .fold(ObjectCounts::default(), ObjectCounts::plus)
    }

    /// The node's processes as JSON, with its objects summed.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "node_id": self.node_id,
            "alive": self.alive,
            "objects": self.objects().to_json(),
            "processes": self.processes.iter().map(ProcessView::to_json).collect::<Vec<_>>(),
        })
    }
}

/// `n` bytes for people: in B, KiB, MiB or GiB.
///
/// ```
/// assert_eq!(prism::state::human_bytes(512), "512 B");
/// assert_eq!(prism::state::human_bytes(3 << 20), "3.0 MiB");
/// ```
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
