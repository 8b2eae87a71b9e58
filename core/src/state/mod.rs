//! What a cluster records of its work, for `prism list`, `prism summary`, `prism
//! timeline` and the dashboard: task events (submitted, started on a node's worker,
//! finished or failed with the error) and actor events (created, restarting, dead with
//! the cause).
//!
//! Recording stays off the task path's critical section: every cluster process (a
//! driver or a worker) appends its events to a buffer of its own, one uncontended lock
//! and a push, and sends the buffer to its node every [`FLUSH_EVERY`]; nodes pass what
//! they gathered to the head with their heartbeats. The head merges a task's events
//! into one [`TaskRecord`] and keeps, per job, the latest tasks and actors in rings of
//! a size the head is started with, counting what it let go: every list says how many
//! records were dropped, so that a missing task is never silent (Ray drops task records
//! past its limit without a word, ray#49896).
//!
//! A process whose buffer fills between two flushes (more than [`BUFFER_CAP`] events
//! in [`FLUSH_EVERY`]) counts what it could not keep, and that count reaches the head
//! too.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::id::ObjectId;
use crate::sync::lock;

mod processes;

pub use processes::{
    human_bytes, NodeProcesses, ObjectCounts, ProcessKind, ProcessState, ProcessView,
};

/// How often a process sends its events to its node.
pub const FLUSH_EVERY: Duration = Duration::from_millis(250);

/// Events a process keeps between two flushes at most.
pub const BUFFER_CAP: usize = 200_000;

/// Tasks the head keeps per job unless told otherwise.
pub const DEFAULT_TASK_RING: usize = 100_000;

/// Actors the head keeps per job unless told otherwise.
pub const DEFAULT_ACTOR_RING: usize = 10_000;

/// A task's state, in the order a task goes through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TaskState {
    /// Submitted, not yet started by a worker.
    Pending,
    /// Started on a worker.
    Running,
    /// Ended with a value.
    Finished,
    /// Ended with an error (a panic, a dead worker, a lost argument).
    Failed,
}

impl TaskState {
    /// Every state, in order.
    pub const ALL: [TaskState; 4] = [
        TaskState::Pending,
        TaskState::Running,
        TaskState::Finished,
        TaskState::Failed,
    ];

    /// The state's name as lists print it: `PENDING`, `RUNNING`, `FINISHED`, `FAILED`.
    pub fn name(self) -> &'static str {
        match self {
            TaskState::Pending => "PENDING",
            TaskState::Running => "RUNNING",
            TaskState::Finished => "FINISHED",
            TaskState::Failed => "FAILED",
        }
    }

    /// Whether the task has ended.
    pub fn ended(self) -> bool {
        matches!(self, TaskState::Finished | TaskState::Failed)
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TaskState {
    type Err = String;

    /// Reads a state's name, in any case.
    ///
    /// ```
    /// use prism::state::TaskState;
    /// assert_eq!("finished".parse::<TaskState>(), Ok(TaskState::Finished));
    /// assert!("done".parse::<TaskState>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<TaskState, String> {
        TaskState::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!("no task state {s:?}: one of PENDING, RUNNING, FINISHED, FAILED")
            })
    }
}

/// One thing that happened to a task, as a process records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEvent {
    /// The task.
    pub task_id: ObjectId,
    /// Its job.
    pub job: u32,
    /// When, in microseconds since the Unix epoch.
    pub at_us: u64,
    /// What happened.
    pub kind: TaskEventKind,
}

/// What happened to a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TaskEventKind {
    /// Its owner sent it to the cluster.
    Submitted {
        /// The function's stable name.
        function: String,
    },
    /// A worker started it.
    Started {
        /// The function's stable name.
        function: String,
        /// The node of the worker (filled in by the node the event passes).
        node: String,
        /// The worker's process id.
        pid: u32,
    },
    /// A worker ran it to its end (one event for its start and its end, `at_us` being
    /// the end: a task that ends between two flushes costs one event, not two).
    Ran {
        /// The function's stable name.
        function: String,
        /// The node of the worker (filled in by the head from the node that passed it).
        node: String,
        /// The worker's process id.
        pid: u32,
        /// When it started.
        started_us: u64,
        /// The error it failed with, if it did.
        error: Option<String>,
    },
    /// It returned.
    Finished,
    /// It failed, for good (a retried attempt does not count).
    Failed {
        /// The error.
        error: String,
    },
}

/// An actor's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ActorState {
    /// Placed, its constructor not yet run.
    Pending,
    /// Serving calls.
    Alive,
    /// Its process died; it is being started again.
    Restarting,
    /// Ended: killed, out of handles, or out of restarts.
    Dead,
}

impl ActorState {
    /// The state's name as lists print it.
    pub fn name(self) -> &'static str {
        match self {
            ActorState::Pending => "PENDING",
            ActorState::Alive => "ALIVE",
            ActorState::Restarting => "RESTARTING",
            ActorState::Dead => "DEAD",
        }
    }
}

impl std::fmt::Display for ActorState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ActorState {
    type Err = String;

    /// Reads a state's name, in any case.
    fn from_str(s: &str) -> Result<ActorState, String> {
        [
            ActorState::Pending,
            ActorState::Alive,
            ActorState::Restarting,
            ActorState::Dead,
        ]
        .into_iter()
        .find(|t| t.name().eq_ignore_ascii_case(s))
        .ok_or_else(|| format!("no actor state {s:?}: one of PENDING, ALIVE, RESTARTING, DEAD"))
    }
}

/// One thing that happened to an actor, as its node records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActorEvent {
    /// The actor.
    pub actor_id: ObjectId,
    /// Its job.
    pub job: u32,
    /// When, in microseconds since the Unix epoch.
    pub at_us: u64,
    /// What happened.
    pub kind: ActorEventKind,
}

/// What happened to an actor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ActorEventKind {
    /// Placed on a node, to be built in its job's worker there.
    Placed {
        /// Its class's stable name.
        class: String,
        /// The name it was given, if any.
        name: Option<String>,
        /// The node.
        node: String,
    },
    /// Its constructor ran.
    Alive {
        /// The worker's process id.
        pid: u32,
    },
    /// Its worker died and it is started again.
    Restarting {
        /// Why.
        reason: String,
    },
    /// It ended for good.
    Dead {
        /// Why.
        cause: String,
    },
}

/// What a process or node sends on: events, and how many it could not keep.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventBatch {
    /// Task events, in the order recorded.
    pub tasks: Vec<TaskEvent>,
    /// Actor events, in the order recorded.
    pub actors: Vec<ActorEvent>,
    /// Events dropped on the way, per job.
    pub dropped: Vec<(u32, u64)>,
}

impl EventBatch {
    /// Whether it carries nothing.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty() && self.actors.is_empty() && self.dropped.is_empty()
    }

    /// Appends `other`, keeping at most `cap` task events (the rest counted dropped).
    pub fn absorb(&mut self, other: EventBatch, cap: usize) {
        let room = cap.saturating_sub(self.tasks.len());
        let mut lost: BTreeMap<u32, u64> = self.dropped.drain(..).collect();
        for (job, n) in other.dropped {
            *lost.entry(job).or_default() += n;
        }
        for (i, ev) in other.tasks.into_iter().enumerate() {
            if i < room {
                self.tasks.push(ev);
            } else {
                *lost.entry(ev.job).or_default() += 1;
            }
        }
        self.actors.extend(other.actors);
        self.dropped = lost.into_iter().collect();
    }
}

/// An [`EventBatch`] as a process sends it: encoded once by the process and decoded
/// once by the head, so that the node between them only moves bytes. `counts` says how
/// many task events each job has in it, for a node that must drop it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EncodedBatch {
    /// Task events per job.
    pub counts: Vec<(u32, u64)>,
    /// The batch in prism's binary encoding (encoded as bytes, not as a sequence of
    /// numbers: a node and the head copy it, they do not walk it).
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

impl EncodedBatch {
    /// Encodes `batch`.
    pub fn encode(batch: &EventBatch) -> EncodedBatch {
        let mut counts: BTreeMap<u32, u64> = BTreeMap::new();
        for t in &batch.tasks {
            *counts.entry(t.job).or_default() += 1;
        }
        EncodedBatch {
            counts: counts.into_iter().collect(),
            bytes: postcard::to_allocvec(batch).unwrap_or_default(),
        }
    }

    /// The batch, or why its bytes are not one.
    pub fn decode(&self) -> Result<EventBatch, String> {
        postcard::from_bytes(&self.bytes)
            .map_err(|e| format!("an event batch does not decode: {e}"))
    }
}

/// A task as the head knows it: its events merged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The task's id (also its result's).
    pub task_id: ObjectId,
    /// Its job.
    pub job: u32,
    /// The function's stable name (empty while no event with it arrived).
    pub function: String,
    /// Where it stands.
    pub state: TaskState,
    /// The node of the worker that ran it, once started.
    pub node: Option<String>,
    /// The worker's process id, once started.
    pub pid: Option<u32>,
    /// When it was submitted (µs since the Unix epoch).
    pub submitted_us: Option<u64>,
    /// When it (last) started.
    pub started_us: Option<u64>,
    /// When it ended.
    pub ended_us: Option<u64>,
    /// How many times a worker started it.
    pub attempts: u32,
    /// The error it failed with.
    pub error: Option<String>,
}

impl TaskRecord {
    /// A record with nothing known but its id and job.
    pub fn new(task_id: ObjectId, job: u32) -> TaskRecord {
        TaskRecord {
            task_id,
            job,
            function: String::new(),
            state: TaskState::Pending,
            node: None,
            pid: None,
            submitted_us: None,
            started_us: None,
            ended_us: None,
            attempts: 0,
            error: None,
        }
    }

    /// Merges an event of this task. Events of one task may arrive out of order (its
    /// owner and its worker send theirs on different paths, and a retried attempt may
    /// run on another node): the latest attempt, by time, decides the state.
    pub fn apply(&mut self, at_us: u64, kind: TaskEventKind) {
        match kind {
            TaskEventKind::Submitted { function } => {
                self.submitted_us = Some(self.submitted_us.map_or(at_us, |s| s.min(at_us)));
                if self.function.is_empty() {
                    self.function = function;
                }
            }
            TaskEventKind::Started {
                function,
                node,
                pid,
            } => {
                self.attempts += 1;
                if self.function.is_empty() {
                    self.function = function;
                }
                if self.started_us.is_some_and(|s| s > at_us) {
                    return; // an earlier attempt's
                }
                self.started_us = Some(at_us);
                self.node = Some(node);
                self.pid = Some(pid);
                if self.ended_us.is_none_or(|e| e < at_us) {
                    // A new attempt: what ended before was an earlier one.
                    self.ended_us = None;
                    self.error = None;
                    self.state = TaskState::Running;
                }
            }
            TaskEventKind::Ran {
                function,
                node,
                pid,
                started_us,
                error,
            } => {
                let started = TaskEventKind::Started {
                    function,
                    node,
                    pid,
                };
                self.apply(started_us, started);
                let end = match error {
                    Some(error) => TaskEventKind::Failed { error },
                    None => TaskEventKind::Finished,
                };
                self.apply(at_us, end);
            }
            TaskEventKind::Finished | TaskEventKind::Failed { .. } => {
                let earlier_attempt = self.started_us.is_some_and(|s| s > at_us);
                if earlier_attempt || self.ended_us.is_some_and(|e| e > at_us) {
                    return;
                }
                self.ended_us = Some(at_us);
                match kind {
                    TaskEventKind::Failed { error } => {
                        self.state = TaskState::Failed;
                        self.error = Some(error);
                    }
                    _ => {
                        self.state = TaskState::Finished;
                        self.error = None;
                    }
                }
            }
        }
    }

    /// How long it ran, once ended.
    pub fn duration_us(&self) -> Option<u64> {
        Some(self.ended_us?.saturating_sub(self.started_us?))
    }
}

/// An actor as the head knows it: its events merged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActorRecord {
    /// The actor's id.
    pub actor_id: ObjectId,
    /// Its job.
    pub job: u32,
    /// Its class's stable name.
    pub class: String,
    /// The name it was given, if any.
    pub name: Option<String>,
    /// Where it stands.
    pub state: ActorState,
    /// The node it lives on (the latest, after a restart).
    pub node: Option<String>,
    /// Its worker's process id, once alive.
    pub pid: Option<u32>,
    /// How many times it was restarted.
    pub restarts: u32,
    /// When it was placed (µs since the Unix epoch).
    pub placed_us: Option<u64>,
    /// When it ended.
    pub ended_us: Option<u64>,
    /// Why it ended, or why it last restarted.
    pub cause: Option<String>,
}

impl ActorRecord {
    /// A record with nothing known but its id and job.
    pub fn new(actor_id: ObjectId, job: u32) -> ActorRecord {
        ActorRecord {
            actor_id,
            job,
            class: String::new(),
            name: None,
            state: ActorState::Pending,
            node: None,
            pid: None,
            restarts: 0,
            placed_us: None,
            ended_us: None,
            cause: None,
        }
    }

    /// Merges an event of this actor. Its node and its worker send theirs on different
    /// paths; one placed again after it died (by the node that first placed it,
    /// elsewhere) lives again.
    pub fn apply(&mut self, at_us: u64, kind: ActorEventKind) {
        let after_end = self.ended_us.is_none_or(|e| e <= at_us);
        if self.state == ActorState::Dead && !matches!(kind, ActorEventKind::Placed { .. }) {
            return;
        }
        match kind {
            ActorEventKind::Placed { class, name, node } => {
                if self.state == ActorState::Dead {
                    if !after_end {
                        return;
                    }
                    self.restarts += 1;
                    self.ended_us = None;
                    self.state = ActorState::Pending;
                }
                self.class = class;
                self.name = name.or(self.name.take());
                self.node = Some(node);
                self.placed_us.get_or_insert(at_us);
            }
            ActorEventKind::Alive { pid } => {
                self.pid = Some(pid);
                self.state = ActorState::Alive;
            }
            ActorEventKind::Restarting { reason } => {
                self.restarts += 1;
                self.state = ActorState::Restarting;
                self.cause = Some(reason);
            }
            ActorEventKind::Dead { cause } => {
                self.state = ActorState::Dead;
                self.ended_us = Some(at_us);
                self.cause = Some(cause);
            }
        }
    }
}

/// Which tasks a list asks for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskQuery {
    /// Only this job's.
    pub job: Option<u32>,
    /// Only those in this state.
    pub state: Option<TaskState>,
    /// Only this function's (its stable name, or the part after the last `::`).
    pub function: Option<String>,
    /// Skip this many of those that match.
    pub offset: u64,
    /// At most this many.
    pub limit: u64,
}

impl TaskQuery {
    /// Whether `t` matches (offset and limit aside).
    pub fn matches(&self, t: &TaskRecord) -> bool {
        self.job.is_none_or(|j| j == t.job)
            && self.state.is_none_or(|s| s == t.state)
            && self
                .function
                .as_deref()
                .is_none_or(|f| t.function == f || short_name(&t.function) == f)
    }
}

/// The part of a stable name after its last `::`.
pub fn short_name(name: &str) -> &str {
    name.rsplit("::").next().unwrap_or(name)
}

/// A page of tasks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskPage {
    /// The tasks, in the order they were first recorded.
    pub tasks: Vec<TaskRecord>,
    /// How many match in all.
    pub total: u64,
    /// Task records the head let go (or never got) for the jobs asked about.
    pub dropped: u64,
}

/// Which actors a list asks for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ActorQuery {
    /// Only this job's.
    pub job: Option<u32>,
    /// Only those in this state.
    pub state: Option<ActorState>,
    /// At most this many.
    pub limit: u64,
}

/// A page of actors.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ActorPage {
    /// The actors, in the order they were placed.
    pub actors: Vec<ActorRecord>,
    /// How many match in all.
    pub total: u64,
    /// Actor records the head let go for the jobs asked about.
    pub dropped: u64,
}

/// Task counts by function and state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskSummary {
    /// Per function (stable name): counts in [`TaskState::ALL`]'s order.
    pub functions: Vec<(String, [u64; 4])>,
    /// Task records dropped for the jobs asked about.
    pub dropped: u64,
}

/// A job as the head lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    /// The job's id.
    pub job: u32,
    /// The node its driver submits to.
    pub driver_node: String,
    /// The arguments its workers start with.
    pub args: Vec<String>,
    /// Its recorded tasks per state, in [`TaskState::ALL`]'s order.
    pub tasks: [u64; 4],
    /// Its actors alive.
    pub actors_alive: u64,
    /// Its task records dropped.
    pub dropped: u64,
}

/// Where a submitted job (`prism job submit`) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JobStatus {
    /// Recorded, its process not started yet.
    Pending,
    /// Its entrypoint runs.
    Running,
    /// Its entrypoint exited with status 0.
    Succeeded,
    /// Its entrypoint exited otherwise, or could not start.
    Failed,
    /// Stopped on request (`prism job stop`): its processes were ended.
    Stopped,
}

impl JobStatus {
    /// The status's name as lists print it.
    pub fn name(self) -> &'static str {
        match self {
            JobStatus::Pending => "PENDING",
            JobStatus::Running => "RUNNING",
            JobStatus::Succeeded => "SUCCEEDED",
            JobStatus::Failed => "FAILED",
            JobStatus::Stopped => "STOPPED",
        }
    }

    /// Whether the job has ended.
    pub fn ended(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Stopped
        )
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What `prism job submit` asks the head to run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobRequest {
    /// The command and its arguments.
    pub entrypoint: Vec<String>,
    /// The directory it runs in, on the head's machine (default: the session's).
    pub working_dir: Option<String>,
    /// Environment variables it gets besides the head's address.
    pub env: Vec<(String, String)>,
}

/// A job submitted to the head, as its database keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSubmission {
    /// Its id, `sub-N`.
    pub id: String,
    /// What was asked.
    pub request: JobRequest,
    /// Where it stands.
    pub status: JobStatus,
    /// Its entrypoint's process id (the leader of its process group), once started.
    pub pid: Option<u32>,
    /// The cluster job its driver registered, once it did.
    pub driver_job: Option<u32>,
    /// When it was submitted (µs since the Unix epoch).
    pub submitted_us: u64,
    /// When its process started.
    pub started_us: Option<u64>,
    /// When it ended.
    pub ended_us: Option<u64>,
    /// Its exit code, if it exited with one.
    pub exit_code: Option<i32>,
    /// Why it failed or stopped, when there is more to say than its exit code.
    pub message: Option<String>,
    /// Its output (stdout and stderr together), a file under the session's `logs/`.
    pub log: String,
}

/// A piece of a job's log.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LogChunk {
    /// The bytes from the offset asked for.
    pub data: Vec<u8>,
    /// The offset to ask for next.
    pub next: u64,
    /// The job had ended when this was read: nothing more will come after `data`.
    pub ended: bool,
}

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A task event as this process keeps it until the next flush (function names are
/// the registry's, not copied).
enum Local {
    Submitted(&'static str),
    Ran {
        function: &'static str,
        started_us: u64,
        error: Option<String>,
    },
    Failed(String),
}

/// Hashes task and actor ids: keys the runtime makes itself, an owner and a sequence
/// number, so a multiply per word spreads them (SipHash's resistance to chosen keys
/// buys nothing here, and was a tenth of the head's time under a stream of events).
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// A task running in this process, reported as started at a flush it is still running
/// at (most tasks end first, and cost one event for all their life).
struct Run {
    job: u32,
    function: &'static str,
    started_us: u64,
    reported: bool,
}

/// This process's events, waiting for the next flush.
struct Buffer {
    tasks: Vec<(ObjectId, u32, u64, Local)>,
    actors: Vec<ActorEvent>,
    dropped: BTreeMap<u32, u64>,
    running: Option<HashMap<ObjectId, Run, std::hash::BuildHasherDefault<IdHasher>>>,
}

static ON: AtomicBool = AtomicBool::new(false);
static BUFFER: Mutex<Buffer> = Mutex::new(Buffer {
    tasks: Vec::new(),
    actors: Vec::new(),
    dropped: BTreeMap::new(),
    running: None,
});

/// The environment variable that turns recording off in a process (`0` or `off`):
/// set on the daemons, it reaches their workers; set on a driver, its own events.
pub const EVENTS_ENV: &str = "PRISM_TASK_EVENTS";

/// Starts recording this process's task events (a cluster process does, unless
/// [`EVENTS_ENV`] says not to; the embedded runtime has no head to send them to).
pub(crate) fn start_recording() {
    let off = std::env::var(EVENTS_ENV).is_ok_and(|v| {
        v == "0" || v.eq_ignore_ascii_case("off") || v.eq_ignore_ascii_case("false")
    });
    ON.store(!off, Ordering::Release);
}

fn push(task_id: ObjectId, job: u32, at_us: u64, kind: Local) {
    let mut b = lock(&BUFFER);
    if b.tasks.len() >= BUFFER_CAP {
        *b.dropped.entry(job).or_default() += 1;
    } else {
        b.tasks.push((task_id, job, at_us, kind));
    }
}

/// Records that this process's owner sent `task_id` of `job`, a call of `function`.
#[inline]
pub(crate) fn submitted(task_id: ObjectId, job: u32, function: &'static str) {
    if ON.load(Ordering::Relaxed) {
        push(task_id, job, now_us(), Local::Submitted(function));
    }
}

/// Records that this process (a worker) starts `task_id`; returns when, for
/// [`ended`].
#[inline]
pub(crate) fn started(task_id: ObjectId, job: u32, function: &'static str) -> u64 {
    if !ON.load(Ordering::Relaxed) {
        return 0;
    }
    let started_us = now_us();
    let run = Run {
        job,
        function,
        started_us,
        reported: false,
    };
    lock(&BUFFER)
        .running
        .get_or_insert_with(Default::default)
        .insert(task_id, run);
    started_us
}

/// Records that `task_id`, started at `started_us`, ended (with `error` if it failed).
#[inline]
pub(crate) fn ended(
    task_id: ObjectId,
    job: u32,
    function: &'static str,
    started_us: u64,
    error: Option<String>,
) {
    if !ON.load(Ordering::Relaxed) {
        return;
    }
    let at_us = now_us();
    let mut b = lock(&BUFFER);
    if let Some(r) = b.running.as_mut() {
        r.remove(&task_id);
    }
    drop(b);
    let kind = Local::Ran {
        function,
        started_us,
        error,
    };
    push(task_id, job, at_us, kind);
}

/// Records that `task_id` failed for good where its worker could not say so (the
/// worker died).
pub(crate) fn failed(task_id: ObjectId, job: u32, error: String) {
    if ON.load(Ordering::Relaxed) {
        push(task_id, job, now_us(), Local::Failed(error));
    }
}

/// Records that actor `actor_id` of `job` went through `kind`, now.
pub(crate) fn record_actor(actor_id: ObjectId, job: u32, kind: ActorEventKind) {
    if !ON.load(Ordering::Relaxed) {
        return;
    }
    let at_us = now_us();
    lock(&BUFFER).actors.push(ActorEvent {
        actor_id,
        job,
        at_us,
        kind,
    });
}

/// What was recorded since the last call (and the tasks running now that were not
/// reported yet), encoded, if anything.
pub(crate) fn take() -> Option<EncodedBatch> {
    let (tasks, actors, dropped, running) = {
        let mut b = lock(&BUFFER);
        let mut running = Vec::new();
        for (id, r) in b.running.iter_mut().flatten() {
            if !r.reported {
                r.reported = true;
                running.push((*id, r.job, r.started_us, r.function));
            }
        }
        if b.tasks.is_empty() && b.actors.is_empty() && b.dropped.is_empty() && running.is_empty() {
            return None;
        }
        (
            std::mem::take(&mut b.tasks),
            std::mem::take(&mut b.actors),
            std::mem::take(&mut b.dropped),
            running,
        )
    };
    let pid = std::process::id();
    let mut batch = EventBatch {
        tasks: Vec::with_capacity(tasks.len() + running.len()),
        actors,
        dropped: dropped.into_iter().collect(),
    };
    for (task_id, job, at_us, function) in running {
        let kind = TaskEventKind::Started {
            function: function.to_string(),
            node: String::new(),
            pid,
        };
        batch.tasks.push(TaskEvent {
            task_id,
            job,
            at_us,
            kind,
        });
    }
    for (task_id, job, at_us, local) in tasks {
        let kind = match local {
            Local::Submitted(function) => TaskEventKind::Submitted {
                function: function.to_string(),
            },
            Local::Ran {
                function,
                started_us,
                error,
            } => TaskEventKind::Ran {
                function: function.to_string(),
                node: String::new(),
                pid,
                started_us,
                error,
            },
            Local::Failed(error) => TaskEventKind::Failed { error },
        };
        batch.tasks.push(TaskEvent {
            task_id,
            job,
            at_us,
            kind,
        });
    }
    Some(EncodedBatch::encode(&batch))
}

/// Fills in `node` where a worker's events leave it empty (the head knows which node
/// passed them on).
pub fn stamp_node(batch: &mut EventBatch, node_id: &str) {
    for ev in &mut batch.tasks {
        if let TaskEventKind::Started { node, .. } | TaskEventKind::Ran { node, .. } = &mut ev.kind
        {
            if node.is_empty() {
                node.push_str(node_id);
            }
        }
    }
}

impl TaskRecord {
    /// The record as JSON, its id as it prints (what `prism list tasks --format json`
    /// and the dashboard's `/api/tasks` show).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "task_id": self.task_id.to_string(),
            "job": self.job,
            "function": self.function,
            "state": self.state.name(),
            "node": self.node,
            "pid": self.pid,
            "attempts": self.attempts,
            "submitted_us": self.submitted_us,
            "started_us": self.started_us,
            "ended_us": self.ended_us,
            "duration_us": self.duration_us(),
            "error": self.error,
        })
    }
}

impl ActorRecord {
    /// The record as JSON, its id as it prints.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "actor_id": crate::id::ActorId::from(self.actor_id).to_string(),
            "job": self.job,
            "class": self.class,
            "state": self.state.name(),
            "node": self.node,
            "pid": self.pid,
            "restarts": self.restarts,
            "placed_us": self.placed_us,
            "ended_us": self.ended_us,
            "cause": self.cause,
        })
    }
}

impl TaskPage {
    /// The page as JSON: its tasks, how many matched and how many were dropped.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "tasks": self.tasks.iter().map(TaskRecord::to_json).collect::<Vec<_>>(),
            "total": self.total,
            "dropped": self.dropped,
        })
    }
}

impl ActorPage {
    /// The page as JSON: its actors, how many matched and how many were dropped.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "actors": self.actors.iter().map(ActorRecord::to_json).collect::<Vec<_>>(),
            "total": self.total,
            "dropped": self.dropped,
        })
    }
}

/// Task counts by state's name: `{"PENDING": n, "RUNNING": n, "FINISHED": n, "FAILED": n}`.
pub fn state_counts(counts: &[u64; 4]) -> serde_json::Value {
    TaskState::ALL
        .iter()
        .zip(counts)
        .map(|(s, n)| (s.name().to_string(), serde_json::json!(n)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

impl JobView {
    /// The job as JSON (`prism list jobs --format json`, the dashboard's `/api/drivers`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "job": self.job,
            "driver_node": self.driver_node,
            "args": self.args,
            "tasks": state_counts(&self.tasks),
            "actors_alive": self.actors_alive,
            "dropped": self.dropped,
        })
    }
}

impl JobSubmission {
    /// The submitted job as JSON: its environment's names, not their values (which may
    /// be secrets).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "status": self.status.name(),
            "entrypoint": self.request.entrypoint,
            "working_dir": self.request.working_dir,
            "env_keys": self.request.env.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            "pid": self.pid,
            "driver_job": self.driver_job,
            "submitted_us": self.submitted_us,
            "started_us": self.started_us,
            "ended_us": self.ended_us,
            "exit_code": self.exit_code,
            "message": self.message,
            "log": self.log,
        })
    }
}

/// A Chrome trace (the format Perfetto and chrome://tracing open) built a task at a
/// time, so that it can be written as a stream: one process per worker, and in it as
/// many rows ("threads") as tasks overlapped, each task on the first row free when it
/// started. `prism timeline` and the dashboard's `/api/timeline` write it.
#[derive(Default)]
pub struct TraceLanes {
    /// Per worker process: when each of its rows is free again.
    free_at: HashMap<u32, Vec<u64>>,
    spans: u64,
    /// Trace events written by [`TraceLanes::write`].
    written: u64,
}

impl TraceLanes {
    /// What a trace starts with, before the first [`TraceLanes::write`].
    pub const START: &'static [u8] = b"[";

    /// What a trace ends with, after the last [`TraceLanes::write`].
    pub const END: &'static [u8] = b"\n]\n";

    /// Writes the trace events of `tasks` (the next page of them) to `out`, one per
    /// line, separated from those written before.
    pub fn write(
        &mut self,
        tasks: &[TaskRecord],
        out: &mut impl std::io::Write,
    ) -> std::io::Result<()> {
        for t in tasks {
            for e in self.events(t).unwrap_or_default() {
                out.write_all(if self.written == 0 { b"\n" } else { b",\n" })?;
                serde_json::to_writer(&mut *out, &e)?;
                self.written += 1;
            }
        }
        Ok(())
    }

    /// The trace events of a task (a row's metadata first, if it opens one); `None` for
    /// a task that never started.
    pub fn events(&mut self, t: &TaskRecord) -> Option<Vec<serde_json::Value>> {
        let start = t.started_us?;
        let pid = t.pid?;
        let end = t.ended_us.unwrap_or(start).max(start);
        let mut events = Vec::new();
        let rows = self.free_at.entry(pid).or_insert_with(|| {
            events.push(serde_json::json!({
                "name": "process_name", "ph": "M", "pid": pid,
                "args": {"name": format!("worker {pid} on node {}", t.node.as_deref().unwrap_or("?"))},
            }));
            Vec::new()
        });
        let row = match rows.iter().position(|free| *free <= start) {
            Some(i) => i,
            None => {
                rows.push(0);
                rows.len() - 1
            }
        };
        rows[row] = end;
        self.spans += 1;
        events.push(serde_json::json!({
            "name": short_name(&t.function),
            "cat": "task",
            "ph": "X",
            "ts": start,
            "dur": end - start,
            "pid": pid,
            "tid": row,
            "args": {
                "task_id": t.task_id.to_string(),
                "function": t.function,
                "job": t.job,
                "state": t.state.name(),
                "error": t.error,
            },
        }));
        Some(events)
    }

    /// The task spans written so far.
    pub fn spans(&self) -> u64 {
        self.spans
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> ObjectId {
        ObjectId::new(1, n)
    }

    #[test]
    fn a_tasks_events_merge_in_any_order() {
        let started = TaskEventKind::Started {
            function: "m::f".into(),
            node: "n1".into(),
            pid: 7,
        };
        let mut in_order = TaskRecord::new(id(1), 1);
        in_order.apply(
            10,
            TaskEventKind::Submitted {
                function: "m::f".into(),
            },
        );
        in_order.apply(20, started.clone());
        in_order.apply(35, TaskEventKind::Finished);
        let mut late_submit = TaskRecord::new(id(1), 1);
        late_submit.apply(20, started);
        late_submit.apply(35, TaskEventKind::Finished);
        late_submit.apply(
            10,
            TaskEventKind::Submitted {
                function: "m::f".into(),
            },
        );
        assert_eq!(in_order, late_submit);
        // One event for a start and an end merges as the two would.
        let mut ran = TaskRecord::new(id(1), 1);
        ran.apply(
            35,
            TaskEventKind::Ran {
                function: "m::f".into(),
                node: "n1".into(),
                pid: 7,
                started_us: 20,
                error: None,
            },
        );
        ran.apply(
            10,
            TaskEventKind::Submitted {
                function: "m::f".into(),
            },
        );
        assert_eq!(ran, in_order);
        assert_eq!(in_order.state, TaskState::Finished);
        assert_eq!(in_order.duration_us(), Some(15));
        assert_eq!(in_order.node.as_deref(), Some("n1"));
    }

    #[test]
    fn the_latest_attempt_decides_and_a_failure_keeps_its_error() {
        let start = |t: &mut TaskRecord, at, node: &str| {
            let function = "m::f".into();
            let (node, pid) = (node.into(), 1);
            t.apply(
                at,
                TaskEventKind::Started {
                    function,
                    node,
                    pid,
                },
            );
        };
        let fail = |t: &mut TaskRecord, at| {
            let error = "boom".into();
            t.apply(at, TaskEventKind::Failed { error });
        };
        let mut t = TaskRecord::new(id(2), 1);
        start(&mut t, 1, "a");
        fail(&mut t, 5);
        t.apply(4, TaskEventKind::Finished);
        assert_eq!(
            (t.state, t.error.as_deref()),
            (TaskState::Failed, Some("boom"))
        );
        // Retried on another node, whose events come first.
        let mut retried = TaskRecord::new(id(2), 1);
        start(&mut retried, 10, "b");
        retried.apply(12, TaskEventKind::Finished);
        start(&mut retried, 1, "a");
        fail(&mut retried, 5);
        assert_eq!(retried.state, TaskState::Finished);
        assert_eq!((retried.attempts, retried.node.as_deref()), (2, Some("b")));
        assert_eq!(retried.error, None);
        // The same events in order.
        start(&mut t, 10, "b");
        assert_eq!((t.state, t.error.as_deref()), (TaskState::Running, None));
        t.apply(12, TaskEventKind::Finished);
        assert_eq!(t, retried);
    }

    #[test]
    fn batches_cap_their_task_events_and_count_the_rest() {
        let ev = |n| TaskEvent {
            task_id: id(n),
            job: 3,
            at_us: n,
            kind: TaskEventKind::Finished,
        };
        let mut b = EventBatch::default();
        b.absorb(
            EventBatch {
                tasks: (0..5).map(ev).collect(),
                actors: Vec::new(),
                dropped: vec![(3, 2)],
            },
            3,
        );
        assert_eq!(b.tasks.len(), 3);
        assert_eq!(b.dropped, vec![(3, 4)]);
        let encoded = EncodedBatch::encode(&b);
        assert_eq!(encoded.counts, vec![(3, 3)]);
        assert_eq!(encoded.decode().unwrap(), b);
        let broken = EncodedBatch {
            bytes: vec![0xff; 3],
            ..encoded
        };
        assert!(broken.decode().is_err());
    }

    #[test]
    fn queries_match_by_job_state_and_short_name() {
        let mut t = TaskRecord::new(id(3), 2);
        t.function = "app::stats::square".into();
        let q = |job, state, function: Option<&str>| TaskQuery {
            job,
            state,
            function: function.map(str::to_string),
            offset: 0,
            limit: 10,
        };
        assert!(q(Some(2), Some(TaskState::Pending), Some("square")).matches(&t));
        assert!(q(None, None, Some("app::stats::square")).matches(&t));
        assert!(!q(Some(1), None, None).matches(&t));
        assert!(!q(None, Some(TaskState::Running), None).matches(&t));
        assert!(!q(None, None, Some("cube")).matches(&t));
    }
}
