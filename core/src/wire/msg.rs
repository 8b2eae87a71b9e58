//! The messages of the protocol, and the records some of them carry.

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::id::{ObjectId, PlacementGroupId};
use crate::object::Location;
use crate::session::{LogFile, LogPart};
use crate::state::{
    ActorPage, ActorQuery, EncodedBatch, EventBatch, JobRequest, JobSubmission, JobView, LogChunk,
    NodeProcesses, ObjectCounts, ProcessView, TaskPage, TaskQuery, TaskSummary,
};
use crate::task::{EncodedArg, PlacementStrategy, TaskSpec};

/// A task's result as it travels back to its owner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Payload {
    /// The encoded value.
    Inline(Vec<u8>),
    /// The value stays where it was made; pull it from there.
    Held(Location),
}

/// What a message for an actor asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ActorOp {
    /// Call a method. The result comes back as a `TaskDone` for `call`.
    Call {
        /// The call's (and its result's) id.
        call: ObjectId,
        /// The method's stable name.
        method: String,
        /// The arguments, inline or by reference.
        args: Vec<EncodedArg>,
    },
    /// A process holds a handle to the actor from now on: count it. Answered with a
    /// `TaskDone` for `call` (an error if the actor is gone).
    Retain {
        /// The answer's id.
        call: ObjectId,
    },
    /// A process dropped its last handle to the actor. An unnamed actor whose handles
    /// are all gone ends once its queued calls are done.
    Release,
    /// End the actor: queued and later calls fail.
    Kill,
}

impl ActorOp {
    /// The id the answer to this comes back as, if it has one.
    pub fn answer(&self) -> Option<ObjectId> {
        match self {
            ActorOp::Call { call, .. } | ActorOp::Retain { call } => Some(*call),
            ActorOp::Release | ActorOp::Kill => None,
        }
    }
}

/// Amounts per resource name.
pub type Amounts = Vec<(String, f64)>;

/// Where a placement group stands, as the head keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum GroupPhase {
    /// Waiting for nodes with room for its bundles.
    Pending,
    /// Reserved: the node of each bundle, in bundle order.
    Created {
        /// The node ids.
        nodes: Vec<String>,
    },
    /// Removed (or its job ended).
    Removed,
}

/// A node as the head and other nodes see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    /// The node's id.
    pub node_id: String,
    /// Where the node accepts connections.
    pub address: String,
    /// Total resources.
    pub total: Vec<(String, f64)>,
    /// Resources not in use, as last reported.
    pub available: Vec<(String, f64)>,
    /// Tasks waiting for resources on that node.
    pub queued: u32,
    /// Tasks running on that node.
    pub running: u32,
    /// Whether the node still sends heartbeats.
    pub alive: bool,
    /// What waits on that node for resources, and why.
    pub pending: Vec<PendingView>,
}

/// Work waiting on a node, grouped by what it is and what it asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingView {
    /// The function, or `actor <class>`.
    pub what: String,
    /// How many wait.
    pub count: u32,
    /// What each asks for.
    pub demand: Vec<(String, f64)>,
    /// Why they cannot be placed now.
    pub reason: String,
}

/// A named actor as the head records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedActor {
    /// The actor's id.
    pub actor: ObjectId,
    /// Its class's stable name.
    pub class: String,
    /// The node that placed it.
    pub home: String,
}

/// A registered job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobInfo {
    /// The job's id.
    pub job: u32,
    /// Content hash of the job's executable.
    pub hash: String,
    /// The arguments a worker process is started with.
    pub args: Vec<String>,
    /// The node the job's driver submits to: where its workers' output is sent.
    pub driver_node: String,
}

/// Every message after the handshake.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Msg {
    /// Node → head: join the cluster.
    RegisterNode {
        /// The node as it sees itself.
        node: NodeView,
    },
    /// Node → head: still alive, with current load.
    Heartbeat {
        /// Available resources.
        available: Vec<(String, f64)>,
        /// Tasks waiting for resources.
        queued: u32,
        /// Tasks running.
        running: u32,
        /// What waits for resources, and why.
        pending: Vec<PendingView>,
        /// The node's own events (actors) and the counts of those it dropped.
        events: EventBatch,
        /// Its processes' event batches, passed on as they came.
        batches: Vec<EncodedBatch>,
        /// Its workers and connected drivers, with what their object stores hold.
        processes: Vec<ProcessView>,
    },
    /// Head → node (answering a heartbeat) and head → CLI (answering `Status`).
    ClusterView {
        /// Every node the head knows.
        nodes: Vec<NodeView>,
    },
    /// Driver → head: register a job whose executable has this hash.
    RegisterJob {
        /// Content hash (sha256, hex) of the executable.
        hash: String,
        /// Size of the executable in bytes.
        size: u64,
        /// Arguments for worker processes.
        args: Vec<String>,
        /// The submitted job (`prism job submit`) this driver runs as, if one.
        submission: Option<String>,
    },
    /// Head → driver: send the executable first.
    NeedExecutable,
    /// Driver → head, head → node: a piece of an executable.
    ExecutableChunk {
        /// The executable's hash.
        hash: String,
        /// Bytes of the piece.
        data: Vec<u8>,
        /// Whether this is the last piece.
        last: bool,
    },
    /// Head → driver: the job is registered; where to submit work.
    JobAccepted {
        /// The job.
        job: JobInfo,
        /// The node the driver should submit to.
        node_address: String,
    },
    /// Node → head: send me this executable.
    FetchExecutable {
        /// Its hash.
        hash: String,
    },
    /// Node → head: which job is this.
    DescribeJob {
        /// The job id.
        job: u32,
    },
    /// Head → node: a job's description.
    JobDescription {
        /// The job, if known.
        job: Option<JobInfo>,
    },
    /// Client → node, node → peer node: run this task.
    SubmitTask {
        /// The job it belongs to.
        job: u32,
        /// The task, shared with the submitter's record of it (kept to resend it if its
        /// worker dies) instead of copied, inline arguments and all.
        spec: std::sync::Arc<TaskSpec>,
    },
    /// Node → worker, or a driver holding a lease → the leased worker: run this task.
    RunTask {
        /// The task.
        spec: TaskSpec,
        /// Run it right after this task of the same worker ends, on its resources (the
        /// node pipelines tasks of one shape so that no round trip separates them),
        /// unless the node releases it earlier.
        after: Option<ObjectId>,
        /// The lease it runs on, for a task a driver sent straight to the worker: the
        /// node lends the lease's CPUs while the task waits.
        lease: Option<ObjectId>,
        /// The GPUs it may use, if the node granted its resources already (a task run
        /// right after another uses that one's).
        gpu_ids: Option<Vec<usize>>,
    },
    /// Driver → node: hold resources for tasks like this one and name the worker to send
    /// them to (a driver that submits one task at a time then needs one round trip per
    /// task, not two).
    Lease {
        /// The job.
        job: u32,
        /// The tasks' options (their demand).
        options: crate::task::TaskOptions,
        /// Grant it with this task's resources when the task ends (a driver asks along
        /// with the task it submits and waits for).
        after: Option<ObjectId>,
    },
    /// Node → driver: the lease and the worker's address, or `None` if the node has no
    /// room or no worker ready for it now.
    LeaseGranted {
        /// The lease's id and the worker's object server.
        lease: Option<(ObjectId, String)>,
    },
    /// Driver → node: the lease is no longer used; its resources go back.
    ReturnLease {
        /// The lease.
        lease: ObjectId,
    },
    /// Worker → node: where its object server listens (for leases).
    WorkerListening {
        /// The address.
        address: String,
    },
    /// Node → worker: start this task queued behind another now (the other waits and
    /// lends it its CPUs). Ignored if the task already started.
    Release {
        /// The queued task.
        task_id: ObjectId,
    },
    /// Worker → node, node → client or peer: a task (or an actor call, or an actor's
    /// creation) finished.
    TaskDone {
        /// The task (and result object) id.
        task_id: ObjectId,
        /// The result (inline, or where it is kept), or why the task failed.
        result: Result<Payload, Error>,
    },
    /// Worker → node: the task waits in `get`/`wait`; lend its CPUs to others meanwhile.
    Blocked {
        /// The waiting task.
        task_id: ObjectId,
    },
    /// Worker → node: the task runs again and takes its CPUs back.
    Unblocked {
        /// The task.
        task_id: ObjectId,
    },
    /// Client → node → (peer node) → worker: start an actor. Its outcome comes back as a
    /// `TaskDone` for the actor's id (the worker's address on success).
    CreateActor {
        /// The job it belongs to.
        job: u32,
        /// The actor's id.
        actor: ObjectId,
        /// The class's stable name.
        class: String,
        /// The constructor's arguments, inline or by reference.
        args: Vec<EncodedArg>,
        /// Resources held for the actor's life.
        options: crate::task::TaskOptions,
        /// How many times the node hosting it starts it again if its process dies.
        max_restarts: u32,
        /// How many calls may run at once.
        max_concurrency: u32,
        /// A named actor lives until killed; an unnamed one ends with its last handle.
        named: bool,
        /// The GPUs the node that hosts it granted it (set by that node).
        gpu_ids: Vec<usize>,
    },
    /// Client → node → … → the worker hosting the actor (or a caller → that worker,
    /// straight): something for an actor.
    ToActor {
        /// The actor.
        actor: ObjectId,
        /// The node that placed it, which knows where it lives.
        home: String,
        /// What for.
        op: ActorOp,
    },
    /// Worker → node: an actor it hosted ended by itself (its last handle went): its
    /// resources are free, and later messages for it fail with `reason`.
    ActorEnded {
        /// The actor.
        actor: ObjectId,
        /// Why it ended.
        reason: String,
    },
    /// Worker output, node → driver node → driver: lines a job's worker printed,
    /// prefixed with where they were printed.
    Output {
        /// The job.
        job: u32,
        /// Whether the lines went to standard error.
        stderr: bool,
        /// The lines.
        lines: Vec<String>,
    },
    /// Node → the peer that placed an actor here: it died with its worker process.
    ActorGone {
        /// The actor.
        actor: ObjectId,
        /// Why.
        reason: String,
    },
    /// Node → peer node: a job's driver is gone; end its workers there too.
    EndJob {
        /// The job.
        job: u32,
    },
    /// Driver → head: the driver lost its node; which node should it submit to now?
    /// Answered with `JobAccepted` (the same job) or `Failed`.
    RejoinJob {
        /// The driver's job.
        job: u32,
    },
    /// Client → head: store a value under a key.
    KvPut {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
    },
    /// Client → head: read a key.
    KvGet {
        /// The key.
        key: String,
    },
    /// Head → client: a key's value.
    KvValue {
        /// The value, if the key exists.
        value: Option<Vec<u8>>,
    },
    /// Client → head: record a named actor (fails if the name is taken).
    RegisterActor {
        /// The name.
        name: String,
        /// Where to reach it.
        entry: NamedActor,
    },
    /// Client → head: forget the names of an actor (it was killed).
    UnregisterActor {
        /// The actor.
        actor: ObjectId,
    },
    /// Client → head: find a named actor.
    LookupActor {
        /// The name.
        name: String,
    },
    /// Head → client: the named actor, if there is one.
    ActorFound {
        /// Where to reach it.
        entry: Option<NamedActor>,
    },
    /// Client → node → peers → workers: the owner freed these objects; drop the copies
    /// kept for it.
    FreeObjects {
        /// The owner's job.
        job: u32,
        /// The objects.
        ids: Vec<ObjectId>,
    },
    /// Puller → object server: send this object.
    PullObject {
        /// The object.
        id: ObjectId,
    },
    /// Object server → puller: the object's size, followed by its bytes in raw chunks
    /// (each a 4-byte big-endian length and at most [`CHUNK`] bytes); or why it cannot be
    /// sent.
    ObjectHeader {
        /// The object.
        id: ObjectId,
        /// Its encoded size.
        size: Result<u64, Error>,
    },
    /// Client → head: reserve a placement group's bundles (`bundles`, each its amounts)
    /// under `strategy`. Answered with `GroupState`: created, pending until nodes have
    /// room, or why it can never be placed.
    CreateGroup {
        /// The creator's job: the group ends with it.
        job: u32,
        /// The group.
        group: PlacementGroupId,
        /// Each bundle's amounts per resource name.
        bundles: Vec<Vec<(String, f64)>>,
        /// How to spread them.
        strategy: PlacementStrategy,
    },
    /// Client → head: where a placement group stands. Answered with `GroupState`.
    LookupGroup {
        /// The group.
        group: PlacementGroupId,
    },
    /// Client → head: remove a placement group, freeing its bundles. Answered with
    /// `GroupState`.
    RemoveGroup {
        /// The group.
        group: PlacementGroupId,
    },
    /// Head → client: where a placement group stands, or why it cannot be placed.
    GroupState {
        /// The state.
        state: Result<GroupPhase, Error>,
    },
    /// Head → node: reserve these bundles of a group here (all or none). Answered with
    /// `Reserved`.
    ReserveBundles {
        /// The group's job.
        job: u32,
        /// The group.
        group: PlacementGroupId,
        /// Each bundle's index in the group and its amounts.
        bundles: Vec<(usize, Vec<(String, f64)>)>,
    },
    /// Head → node: end a group's bundles here; its actors here end. Answered with
    /// `Reserved`.
    ReturnBundles {
        /// The group.
        group: PlacementGroupId,
    },
    /// Node → head: the node's total and free resources after a reservation or a
    /// return, or `None` if it had no room for the bundles.
    Reserved {
        /// The node's total and free resources, bundles' own included.
        resources: Option<(Amounts, Amounts)>,
    },
    /// CLI → head: the cluster's state.
    Status,
    /// Driver or worker → node: the events it recorded since its last flush; driver →
    /// head (answered with `KvValue { value: None }`): its last events, as it leaves.
    Events {
        /// The events.
        batch: EncodedBatch,
    },
    /// Node → worker: send the events recorded so far now (its job is ending).
    FlushEvents,
    /// Driver or worker → node: what this process's object store holds (sent when it
    /// changed, at most every flush of events).
    ProcessObjects {
        /// The job the process serves or drives.
        job: u32,
        /// Its process id.
        pid: u32,
        /// Its store's counts.
        objects: ObjectCounts,
    },
    /// CLI → head: every node's workers and drivers (answered with `Processes`).
    ListProcesses,
    /// Head → CLI: every node's processes, in the order the nodes joined.
    Processes {
        /// The nodes.
        nodes: Vec<NodeProcesses>,
    },
    /// CLI → node or head: the log files of its session (answered with `LogFiles`).
    ListLogs,
    /// Node or head → CLI: its session's log files.
    LogFiles {
        /// Names the directory they are in (its machine and path): nodes sharing a
        /// session answer with the same place, and the same files.
        place: String,
        /// The files, by name.
        files: Vec<LogFile>,
    },
    /// CLI → node or head: a part of one of its session's log files (answered with
    /// `LogRead`, or `Failed` if there is no such file).
    ReadLog {
        /// The file's name in the `logs` directory.
        file: String,
        /// Where to start, in bytes.
        offset: Option<u64>,
        /// Without an offset: how many of its last bytes to read.
        tail: Option<u64>,
    },
    /// Node or head → CLI: a part of a log file.
    LogRead {
        /// The part.
        part: LogPart,
    },
    /// CLI → head: the tasks `query` asks for (answered with `Tasks`).
    ListTasks {
        /// Which tasks.
        query: TaskQuery,
    },
    /// Head → CLI: a page of tasks.
    Tasks {
        /// The page.
        page: TaskPage,
    },
    /// CLI → head: the actors `query` asks for (answered with `Actors`).
    ListActors {
        /// Which actors.
        query: ActorQuery,
    },
    /// Head → CLI: a page of actors.
    Actors {
        /// The page.
        page: ActorPage,
    },
    /// CLI → head: task counts by function and state, of `job` or of every job.
    SummarizeTasks {
        /// The job, if one.
        job: Option<u32>,
    },
    /// Head → CLI: task counts.
    TaskSummary {
        /// The counts.
        summary: TaskSummary,
    },
    /// CLI → head: every job (answered with `Jobs`).
    ListJobs,
    /// Head → CLI: the jobs.
    Jobs {
        /// The jobs, in the order registered.
        jobs: Vec<JobView>,
    },
    /// CLI → head: run an entrypoint on the head's machine as a driver of the cluster
    /// (answered with `Submission`).
    SubmitJob {
        /// What to run.
        request: JobRequest,
    },
    /// CLI → head: a submitted job (answered with `Submission`).
    JobStatusOf {
        /// Its id.
        id: String,
    },
    /// CLI → head: end a submitted job's processes (answered with `Submission`).
    StopJob {
        /// Its id.
        id: String,
    },
    /// Head → CLI: a submitted job.
    Submission {
        /// The job.
        job: JobSubmission,
    },
    /// CLI → head: every submitted job (answered with `Submissions`).
    ListSubmissions,
    /// Head → CLI: the submitted jobs, in the order submitted.
    Submissions {
        /// The jobs.
        jobs: Vec<JobSubmission>,
    },
    /// CLI → head: a submitted job's output from `offset` (answered with `Log`).
    JobLogs {
        /// The job's id.
        id: String,
        /// Where to start, in bytes.
        offset: u64,
    },
    /// Head → CLI: a piece of a job's output.
    Log {
        /// The piece.
        chunk: LogChunk,
    },
    /// A request could not be served.
    Failed {
        /// Why.
        reason: String,
    },
}

impl Msg {
    /// The message's kind, for logs and errors: without formatting its contents (a
    /// chunk of an object is megabytes).
    pub fn name(&self) -> &'static str {
        match self {
            Msg::RegisterNode { .. } => "RegisterNode",
            Msg::Heartbeat { .. } => "Heartbeat",
            Msg::ClusterView { .. } => "ClusterView",
            Msg::RegisterJob { .. } => "RegisterJob",
            Msg::NeedExecutable => "NeedExecutable",
            Msg::ExecutableChunk { .. } => "ExecutableChunk",
            Msg::JobAccepted { .. } => "JobAccepted",
            Msg::FetchExecutable { .. } => "FetchExecutable",
            Msg::DescribeJob { .. } => "DescribeJob",
            Msg::JobDescription { .. } => "JobDescription",
            Msg::SubmitTask { .. } => "SubmitTask",
            Msg::RunTask { .. } => "RunTask",
            Msg::Lease { .. } => "Lease",
            Msg::LeaseGranted { .. } => "LeaseGranted",
            Msg::ReturnLease { .. } => "ReturnLease",
            Msg::WorkerListening { .. } => "WorkerListening",
            Msg::Release { .. } => "Release",
            Msg::TaskDone { .. } => "TaskDone",
            Msg::Blocked { .. } => "Blocked",
            Msg::Unblocked { .. } => "Unblocked",
            Msg::CreateActor { .. } => "CreateActor",
            Msg::ToActor { .. } => "ToActor",
            Msg::ActorEnded { .. } => "ActorEnded",
            Msg::Output { .. } => "Output",
            Msg::ActorGone { .. } => "ActorGone",
            Msg::EndJob { .. } => "EndJob",
            Msg::RejoinJob { .. } => "RejoinJob",
            Msg::KvPut { .. } => "KvPut",
            Msg::KvGet { .. } => "KvGet",
            Msg::KvValue { .. } => "KvValue",
            Msg::RegisterActor { .. } => "RegisterActor",
            Msg::UnregisterActor { .. } => "UnregisterActor",
            Msg::LookupActor { .. } => "LookupActor",
            Msg::ActorFound { .. } => "ActorFound",
            Msg::FreeObjects { .. } => "FreeObjects",
            Msg::PullObject { .. } => "PullObject",
            Msg::ObjectHeader { .. } => "ObjectHeader",
            Msg::CreateGroup { .. } => "CreateGroup",
            Msg::LookupGroup { .. } => "LookupGroup",
            Msg::RemoveGroup { .. } => "RemoveGroup",
            Msg::GroupState { .. } => "GroupState",
            Msg::ReserveBundles { .. } => "ReserveBundles",
            Msg::ReturnBundles { .. } => "ReturnBundles",
            Msg::Reserved { .. } => "Reserved",
            Msg::Status => "Status",
            Msg::Events { .. } => "Events",
            Msg::FlushEvents => "FlushEvents",
            Msg::ProcessObjects { .. } => "ProcessObjects",
            Msg::ListProcesses => "ListProcesses",
            Msg::Processes { .. } => "Processes",
            Msg::ListLogs => "ListLogs",
            Msg::LogFiles { .. } => "LogFiles",
            Msg::ReadLog { .. } => "ReadLog",
            Msg::LogRead { .. } => "LogRead",
            Msg::ListTasks { .. } => "ListTasks",
            Msg::Tasks { .. } => "Tasks",
            Msg::ListActors { .. } => "ListActors",
            Msg::Actors { .. } => "Actors",
            Msg::SummarizeTasks { .. } => "SummarizeTasks",
            Msg::TaskSummary { .. } => "TaskSummary",
            Msg::ListJobs => "ListJobs",
            Msg::Jobs { .. } => "Jobs",
            Msg::SubmitJob { .. } => "SubmitJob",
            Msg::JobStatusOf { .. } => "JobStatusOf",
            Msg::StopJob { .. } => "StopJob",
            Msg::Submission { .. } => "Submission",
            Msg::ListSubmissions => "ListSubmissions",
            Msg::Submissions { .. } => "Submissions",
            Msg::JobLogs { .. } => "JobLogs",
            Msg::Log { .. } => "Log",
            Msg::Failed { .. } => "Failed",
        }
    }
}
