//! The node daemon, one per machine: it registers with the head and sends heartbeats,
//! accounts its resources, runs tasks in worker processes it starts and supervises, and
//! spills work to other nodes when its own resources are saturated.
//!
//! Placement is local first: a task that fits here runs here. One that does not waits in
//! the node's queue, from which it is handed to a peer node that has room (at most four
//! times the peer's CPUs outstanding, so the peer never idles between results and never
//! hoards the queue), or run here when resources free up. A task of the same shape as
//! one running here is sent to its worker to start right after it (pipelining), so no
//! round trip through the node separates consecutive tasks. A task received from a peer is never
//! passed on again. Results travel back the way the task came.
//!
//! Worker processes are the job's own executable, fetched from the head once by content
//! hash and cached, started with the environment that makes `prism::init()` enter
//! worker mode; one process per job, running its tasks on many threads.
//!
//! This module keeps the books and serves connections; `tasks` takes, places and
//! finishes tasks, `placement` decides where work goes and why it waits, `actors` places
//! and routes actors, `process` starts worker processes and relays their output,
//! `peers` keeps the links to the head and the other nodes.

mod actors;
mod bundles;
mod peers;
mod placement;
mod process;
mod tasks;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::process::Child;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};

use crate::config::Config;
use crate::error::Error;
use crate::id::{ObjectId, PlacementGroupId};
use crate::sched::{Capacity, Demand, Grant};
use crate::state::{ObjectCounts, ProcessKind, ProcessState, ProcessView};
use crate::task::TaskSpec;
use crate::wire::{self, Msg, NodeView, Outbox, Role, WireError};

/// How a node starts.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The head's address.
    pub head: String,
    /// The address to listen on (`ip:port`, port 0 for any).
    pub listen: String,
    /// Resources.
    pub config: Config,
    /// The session directory (logs, executable cache).
    pub session: PathBuf,
    /// The cluster token.
    pub token: String,
    /// How often to send heartbeats.
    pub heartbeat: Duration,
}

struct Queued {
    job: u32,
    spec: TaskSpec,
    demand: Demand,
    reply: Outbox,
    /// Came from a peer: run here, never pass on.
    pinned: bool,
}

/// A task, call or lease in flight through this node: where its answer goes, what it
/// holds here, and where it runs.
struct InFlight {
    reply: Outbox,
    /// Resources held here, for a task running on this node.
    grant: Option<Grant>,
    /// The job whose worker runs it, for a task running on this node.
    job: Option<u32>,
    /// The peer running it, for a task handed on.
    peer: Option<String>,
    function: String,
    /// The task sent to run right after this one, on its resources.
    successor: Option<ObjectId>,
    /// The task this one was sent to run right after.
    pred: Option<ObjectId>,
    /// The task waits in `get`/`wait` and lends its CPUs.
    blocked: bool,
    /// When it got its resources (its run time, as seen from here, starts).
    granted_at: Option<Instant>,
    /// A task sent to this node's worker (running, or pipelined behind one).
    task_here: bool,
    /// Resources a driver leased for tasks it sends straight to the worker.
    lease: bool,
    /// When the task ends, its resources become a lease for this driver.
    lease_to: Option<Outbox>,
}

impl InFlight {
    /// A route with no resources held yet.
    fn new(reply: Outbox, job: Option<u32>, peer: Option<String>, function: String) -> InFlight {
        InFlight {
            reply,
            grant: None,
            job,
            peer,
            function,
            successor: None,
            pred: None,
            blocked: false,
            granted_at: None,
            task_here: false,
            lease: false,
            lease_to: None,
        }
    }
}

enum Worker {
    /// The process is starting (the `start`-th started by this node); tasks wait for
    /// it to connect.
    Starting(u64, Vec<Msg>),
    Ready(Outbox),
}

struct Peer {
    view: NodeView,
    /// Its total resources, as last reported.
    total: Capacity,
    /// Its CPUs, as last reported.
    cpus: f64,
    outbox: Option<Outbox>,
    connecting: bool,
    outstanding: u32,
}

struct State {
    /// What the node has in all: its configuration's, and its placement group bundles'
    /// own resources.
    total: Capacity,
    available: Capacity,
    /// The placement group bundles reserved here: by group, its job and what each
    /// bundle took from the node.
    bundles: HashMap<PlacementGroupId, (u32, Vec<Grant>)>,
    queue: VecDeque<Queued>,
    in_flight: HashMap<ObjectId, InFlight>,
    workers: HashMap<u32, Worker>,
    /// How many worker processes this node has started (numbering their starts).
    worker_starts: u64,
    /// Worker processes by job.
    children: HashMap<u32, Child>,
    /// When each job's worker process was started, in microseconds since the epoch.
    worker_started: HashMap<u32, u64>,
    /// What the object store of each job's worker and driver here holds, with its pid,
    /// as it last reported.
    process_objects: HashMap<(u32, ProcessKind), (u32, ObjectCounts)>,
    peers: HashMap<String, Peer>,
    running: u32,
    /// The connection of each job's driver, if it submits here.
    drivers: HashMap<u32, Outbox>,
    /// Where the actors placed by or living on this node are.
    actors: HashMap<ObjectId, ActorPlace>,
    /// The next turn of the `Spread` strategy.
    spread_turn: usize,
    /// Actors waiting for resources, in arrival order.
    waiting_actors: VecDeque<actors::WaitingActor>,
    /// Tasks no node in this node's view can run, with the views seen since.
    infeasible: Vec<(Queued, u32)>,
    /// Recent run time of each function's tasks here (a moving average, in seconds).
    run_times: HashMap<String, f64>,
    /// Tasks sent to this node's workers and not finished (running or pipelined).
    tasks_here: u32,
    /// Where each job's worker serves objects and leased tasks.
    worker_addresses: HashMap<u32, String>,
    /// The sequence number of the next lease.
    next_lease: u64,
    /// Actors whose strategy named a node this node did not know, with the views of the
    /// cluster seen since.
    unplaced_actors: Vec<(actors::Creation, Outbox, bool, u32)>,
}

/// Where an actor is, as a node knows it.
enum ActorPlace {
    /// In this node's worker of `job`, holding `grant` for its life; started again by
    /// `create` (at most `restarts_left` more times) if that worker dies.
    Local {
        job: u32,
        grant: Grant,
        restarts_left: u32,
        create: Box<Msg>,
        /// The peer that placed it here, told when it dies.
        home: Option<Outbox>,
    },
    /// On a peer node; with how to create it again (and where its creation's outcome
    /// goes) if it dies there.
    Peer {
        node: String,
        again: Box<(Msg, Outbox)>,
    },
    /// Waiting for resources, with the calls (and where their results go) sent to it
    /// meanwhile.
    Waiting(Vec<(Msg, Option<Outbox>)>),
    /// It could not be placed, or it died.
    Failed(Error),
}

/// A node daemon.
pub struct Node {
    id: String,
    address: String,
    options: NodeOptions,
    /// Its CPUs.
    cpus: f64,
    state: Mutex<State>,
    /// Task and actor events on their way to the head (with the next heartbeat).
    events: Mutex<HeldEvents>,
}

/// The events a node holds for the head: its own, and its processes' batches as they
/// came (the node does not decode them).
#[derive(Default)]
struct HeldEvents {
    own: crate::state::EventBatch,
    batches: VecDeque<crate::state::EncodedBatch>,
    bytes: usize,
}

/// Bytes of event batches a node holds for the head at most; past it they are counted
/// dropped.
const EVENT_BYTES_HELD: usize = 64 << 20;

/// How long a worker whose job ended has to send its last events before it is killed.
const LAST_FLUSH: Duration = Duration::from_millis(100);

/// Bytes of event batches sent with one heartbeat (the rest go with the next ones).
const EVENT_BYTES_PER_HEARTBEAT: usize = 8 << 20;

impl Node {
    /// Binds the node's listener; the node is then served by [`Node::run`].
    pub async fn bind(options: NodeOptions) -> Result<(Arc<Node>, TcpListener), Error> {
        let listener = TcpListener::bind(&options.listen)
            .await
            .map_err(|e| Error::io(format!("binding the node to {}", options.listen), e))?;
        let address = listener
            .local_addr()
            .map_err(|e| Error::io("reading the node's address", e))?
            .to_string();
        let total = Capacity::from_config(&options.config);
        let id = format!("{:08x}", crate::session::random_u32());
        let node = Arc::new(Node {
            id,
            address,
            cpus: options.config.num_cpus,
            state: Mutex::new(State {
                total: total.clone(),
                available: total,
                bundles: HashMap::new(),
                queue: VecDeque::new(),
                in_flight: HashMap::new(),
                workers: HashMap::new(),
                worker_starts: 0,
                children: HashMap::new(),
                worker_started: HashMap::new(),
                process_objects: HashMap::new(),
                peers: HashMap::new(),
                running: 0,
                drivers: HashMap::new(),
                actors: HashMap::new(),
                spread_turn: 0,
                waiting_actors: VecDeque::new(),
                infeasible: Vec::new(),
                run_times: HashMap::new(),
                tasks_here: 0,
                worker_addresses: HashMap::new(),
                next_lease: 1,
                unplaced_actors: Vec::new(),
            }),
            events: Mutex::new(Default::default()),
            options,
        });
        Ok((node, listener))
    }

    /// The node's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Where the node accepts connections.
    pub fn address(&self) -> &str {
        &self.address
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }

    /// Serves connections and keeps the head informed, forever.
    pub async fn run(self: Arc<Self>, listener: TcpListener) {
        tokio::spawn(self.clone().heartbeats());
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("node: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let node = self.clone();
            tokio::spawn(async move {
                if let Err(e) = node.connection(stream).await {
                    tracing::info!(%peer, "node: connection closed: {e}");
                }
            });
        }
    }

    /// Ends the worker processes this node started.
    pub fn kill_workers(&self) {
        let children = std::mem::take(&mut self.lock().children);
        for (job, mut c) in children {
            let _ = c.kill();
            let _ = c.wait();
            let _ = std::fs::remove_dir_all(self.spill_dir(job));
        }
    }

    /// Where the worker of `job` spills objects.
    fn spill_dir(&self, job: u32) -> PathBuf {
        self.options
            .session
            .join("spill")
            .join(format!("{}-job{job}", self.id))
    }

    fn view(&self, st: &State) -> NodeView {
        NodeView {
            node_id: self.id.clone(),
            address: self.address.clone(),
            total: st.total.amounts(),
            available: st.available.amounts(),
            queued: st.queue.len() as u32,
            running: st.running,
            alive: true,
            pending: self.pending(st),
        }
    }

    /// This node's live workers and its connected drivers, workers first, by job.
    fn processes(&self, st: &mut State) -> Vec<ProcessView> {
        let mut jobs: Vec<u32> = st
            .workers
            .keys()
            .chain(st.children.keys())
            .copied()
            .collect();
        jobs.sort_unstable();
        jobs.dedup();
        let mut out = Vec::new();
        for job in jobs {
            let pid = match st.children.get_mut(&job) {
                // An exited worker is not listed (its job's next task starts another).
                Some(c) => match c.try_wait() {
                    Ok(None) => Some(c.id()),
                    _ => continue,
                },
                None => None,
            };
            let state = match st.workers.get(&job) {
                Some(Worker::Starting(..)) => ProcessState::Starting,
                Some(Worker::Ready(_)) => ProcessState::Alive,
                None => ProcessState::Stopping,
            };
            let objects = st.process_objects.get(&(job, ProcessKind::Worker));
            out.push(ProcessView {
                job,
                kind: ProcessKind::Worker,
                pid: pid.or(objects.map(|o| o.0)),
                state,
                started_us: st.worker_started.get(&job).copied(),
                logs: ["out", "err"]
                    .map(|kind| format!("worker-{}-job{job}.{kind}", self.id))
                    .to_vec(),
                objects: objects.map(|o| o.1),
            });
        }
        let mut drivers: Vec<u32> = st.drivers.keys().copied().collect();
        drivers.extend(
            st.process_objects
                .keys()
                .filter(|(_, kind)| *kind == ProcessKind::Driver)
                .map(|(job, _)| *job),
        );
        drivers.sort_unstable();
        drivers.dedup();
        for job in drivers {
            let objects = st.process_objects.get(&(job, ProcessKind::Driver));
            out.push(ProcessView {
                job,
                kind: ProcessKind::Driver,
                pid: objects.map(|o| o.0),
                state: ProcessState::Alive,
                started_us: None,
                logs: Vec::new(),
                objects: objects.map(|o| o.1),
            });
        }
        out
    }

    async fn connection(self: Arc<Self>, mut stream: TcpStream) -> Result<(), WireError> {
        let role = wire::accept(&mut stream, &self.options.token, &self.id).await?;
        let (r, w) = stream.into_split();
        let mut r = tokio::io::BufReader::with_capacity(wire::READ_BUFFER, r);
        let outbox = wire::spawn_writer(w, format!("{role:?}"));
        if let Role::Worker { job } = role {
            self.worker_connected(job, outbox.clone());
        }
        // The job a driver connection runs: when the driver goes, so do its workers.
        let mut driver_job = None;
        // The job whose objects a driver connection reported.
        let mut reported = None;
        let result = loop {
            let msg: Msg = match wire::read_msg(&mut r).await {
                Ok(m) => m,
                Err(e) => break Err(e),
            };
            // A driver's job is known from its first message that names it: a task, a
            // lease or an actor (a driver may only ever create actors).
            if let (Role::Driver, None) = (&role, driver_job) {
                let job = match &msg {
                    Msg::SubmitTask { job, .. }
                    | Msg::Lease { job, .. }
                    | Msg::CreateActor { job, .. } => Some(*job),
                    _ => None,
                };
                if let Some(job) = job {
                    self.lock().drivers.insert(job, outbox.clone());
                    driver_job = Some(job);
                }
            }
            match (&role, msg) {
                (Role::Driver, Msg::SubmitTask { job, spec }) => {
                    self.submit(job, Arc::unwrap_or_clone(spec), outbox.clone(), false)
                }
                (Role::Worker { .. }, Msg::SubmitTask { job, spec }) => {
                    self.submit(job, Arc::unwrap_or_clone(spec), outbox.clone(), false)
                }
                (Role::Node { .. }, Msg::SubmitTask { job, spec }) => {
                    self.submit(job, Arc::unwrap_or_clone(spec), outbox.clone(), true)
                }
                (Role::Worker { .. }, Msg::TaskDone { task_id, result }) => {
                    self.finished(task_id, result)
                }
                (Role::Node { .. }, Msg::EndJob { job }) => self.end_job(job, Some(&outbox)),
                (
                    Role::Driver,
                    Msg::Lease {
                        job,
                        options,
                        after,
                    },
                ) => self.lease(job, &options, after, outbox.clone()),
                (Role::Driver, Msg::ReturnLease { lease }) => self.return_lease(lease),
                (Role::Worker { .. } | Role::Driver, Msg::Events { batch }) => self.gathered(batch),
                (Role::Worker { job }, Msg::ProcessObjects { pid, objects, .. }) => {
                    let key = (*job, ProcessKind::Worker);
                    self.lock().process_objects.insert(key, (pid, objects));
                }
                (Role::Driver, Msg::ProcessObjects { job, pid, objects }) => {
                    let key = (job, ProcessKind::Driver);
                    self.lock().process_objects.insert(key, (pid, objects));
                    reported = Some(job);
                }
                (Role::Cli, m @ (Msg::ListLogs | Msg::ReadLog { .. })) => {
                    let _ = outbox.send(crate::daemon::log_answer(&self.options.session, m));
                }
                (Role::Worker { job }, Msg::WorkerListening { address }) => {
                    self.lock().worker_addresses.insert(*job, address);
                }
                (Role::Node { .. }, Msg::ActorGone { actor, reason }) => {
                    self.actor_gone(actor, &reason)
                }
                (_, Msg::FreeObjects { job, ids }) => {
                    self.free_objects(job, ids, !matches!(role, Role::Node { .. }))
                }
                (Role::Node { .. }, Msg::Output { job, stderr, lines }) => {
                    let driver = self.lock().drivers.get(&job).cloned();
                    if let Some(d) = driver {
                        let _ = d.send(Msg::Output { job, stderr, lines });
                    }
                }
                (_, m @ Msg::CreateActor { .. }) => {
                    let pinned = matches!(role, Role::Node { .. });
                    if let Some(create) = actors::Creation::from_msg(m) {
                        self.create_actor(create, outbox.clone(), pinned)
                    }
                }
                (_, m @ Msg::ToActor { .. }) => self.route_actor(m, Some(outbox.clone())),
                (Role::Worker { .. } | Role::Node { .. }, Msg::ActorEnded { actor, reason }) => {
                    self.actor_ended(actor, &reason)
                }
                (Role::Worker { .. }, Msg::Blocked { task_id }) => self.lend(task_id, true),
                (Role::Worker { .. }, Msg::Unblocked { task_id }) => self.lend(task_id, false),
                (
                    Role::Head,
                    Msg::ReserveBundles {
                        job,
                        group,
                        bundles,
                    },
                ) => {
                    let _ = outbox.send(self.reserve_bundles(job, group, bundles));
                }
                (Role::Head, Msg::ReturnBundles { group }) => {
                    let _ = outbox.send(self.return_bundles(group));
                }
                (_, Msg::Status) => {
                    // Itself first, then the peers it reaches.
                    let st = self.lock();
                    let mut nodes = vec![self.view(&st)];
                    nodes.extend(
                        st.peers
                            .values()
                            .filter(|p| p.view.alive && p.outbox.is_some())
                            .map(|p| p.view.clone()),
                    );
                    drop(st);
                    let _ = outbox.send(Msg::ClusterView { nodes });
                }
                (role, other) => {
                    let _ = outbox.send(Msg::Failed {
                        reason: format!("a {role:?} cannot send {}", other.name()),
                    });
                }
            }
        };
        if let Role::Worker { job } = role {
            self.worker_gone(job);
        }
        if let Some(job) = reported {
            let key = (job, ProcessKind::Driver);
            self.lock().process_objects.remove(&key);
        }
        if let Some(job) = driver_job {
            self.end_job(job, None);
            let peers: Vec<Outbox> = self
                .lock()
                .peers
                .values()
                .filter_map(|p| p.outbox.clone())
                .collect();
            for p in peers {
                let _ = p.send(Msg::EndJob { job });
            }
        }
        result
    }

    /// Events from a process of this node: a worker's task starts get this node's id.
    fn gathered(&self, batch: crate::state::EncodedBatch) {
        let mut held = crate::sync::lock(&self.events);
        if held.bytes + batch.bytes.len() > EVENT_BYTES_HELD {
            // The head has not taken what is held: this batch is counted, not kept.
            let lost = crate::state::EventBatch {
                dropped: batch.counts,
                ..Default::default()
            };
            held.own.absorb(lost, 0);
            return;
        }
        held.bytes += batch.bytes.len();
        held.batches.push_back(batch);
    }

    /// Records what happened to an actor, now.
    fn actor_event(&self, actor_id: ObjectId, job: u32, kind: crate::state::ActorEventKind) {
        let ev = crate::state::ActorEvent {
            actor_id,
            job,
            at_us: crate::state::now_us(),
            kind,
        };
        crate::sync::lock(&self.events).own.actors.push(ev);
    }

    /// The events to send with the next heartbeat.
    fn events_for_head(&self) -> (crate::state::EventBatch, Vec<crate::state::EncodedBatch>) {
        let mut held = crate::sync::lock(&self.events);
        let mut batches = Vec::new();
        let mut bytes = 0;
        while let Some(b) = held.batches.front() {
            if bytes > 0 && bytes + b.bytes.len() > EVENT_BYTES_PER_HEARTBEAT {
                break;
            }
            bytes += b.bytes.len();
            batches.extend(held.batches.pop_front());
        }
        held.bytes -= bytes;
        (std::mem::take(&mut held.own), batches)
    }

    /// The job's driver went away: drop its queued tasks and end its worker process.
    ///
    /// Tasks a peer handed here stay queued (the driver may have rejoined through
    /// another node, which hands them on), except those of the peer that says the job
    /// ended (`from`): their results have nowhere to go, and running them would start
    /// a worker for a job that is over, which nothing would end.
    fn end_job(self: &Arc<Self>, job: u32, from: Option<&Outbox>) {
        let child = {
            let mut st = self.lock();
            let from_ender = |q: &Queued| from.is_some_and(|o| q.reply.same_channel(o));
            st.queue
                .retain(|q| q.job != job || (q.pinned && !from_ender(q)));
            st.infeasible.retain(|(q, _)| q.job != job);
            st.waiting_actors.retain(|w| w.job != job);
            let worker = st.workers.remove(&job);
            st.drivers.remove(&job);
            st.worker_started.remove(&job);
            st.process_objects.remove(&(job, ProcessKind::Worker));
            self.end_job_groups(&mut st, job);
            self.drop_actors(&mut st, job, "its job ended", false);
            (st.children.remove(&job), worker)
        };
        let (child, worker) = child;
        let spill = self.spill_dir(job);
        let stop = move |c: Option<Child>| {
            if let Some(mut c) = c {
                tracing::info!(job, pid = c.id(), "node: job ended, stopping its worker");
                let _ = c.kill();
                let _ = c.wait();
            }
            let _ = std::fs::remove_dir_all(spill);
        };
        match (child, worker) {
            // The worker sends what it recorded of its last tasks first.
            (Some(c), Some(Worker::Ready(out))) if out.send(Msg::FlushEvents).is_ok() => {
                tokio::spawn(async move {
                    tokio::time::sleep(LAST_FLUSH).await;
                    stop(Some(c));
                });
            }
            (c, _) => stop(c),
        }
    }

    /// An owner freed objects: its job's worker here drops the copies it keeps, and so
    /// do the peers' (told when the news comes from a client, not from a peer).
    fn free_objects(&self, job: u32, ids: Vec<ObjectId>, tell_peers: bool) {
        let st = self.lock();
        let mut outboxes: Vec<&Outbox> = Vec::new();
        if let Some(Worker::Ready(out)) = st.workers.get(&job) {
            outboxes.push(out);
        }
        if tell_peers {
            outboxes.extend(st.peers.values().filter_map(|p| p.outbox.as_ref()));
        }
        for out in outboxes {
            let _ = out.send(Msg::FreeObjects {
                job,
                ids: ids.clone(),
            });
        }
    }

    fn send_to_worker(self: &Arc<Self>, st: &mut State, job: u32, msg: Msg) {
        match st.workers.get_mut(&job) {
            Some(Worker::Ready(out)) => {
                let _ = out.send(msg);
            }
            Some(Worker::Starting(_, waiting)) => waiting.push(msg),
            None => {
                st.worker_starts += 1;
                let start = st.worker_starts;
                st.workers.insert(job, Worker::Starting(start, vec![msg]));
                tokio::spawn(self.clone().start_worker(job, start));
            }
        }
    }

    fn worker_connected(&self, job: u32, outbox: Outbox) {
        let mut st = self.lock();
        if let Some(Worker::Starting(_, waiting)) = st.workers.remove(&job) {
            for m in waiting {
                let _ = outbox.send(m);
            }
        }
        st.workers.insert(job, Worker::Ready(outbox));
    }

    fn worker_gone(self: &Arc<Self>, job: u32) {
        // What it spilled died with it.
        let _ = std::fs::remove_dir_all(self.spill_dir(job));
        let lost: Vec<ObjectId> = {
            let mut st = self.lock();
            st.workers.remove(&job);
            st.process_objects.remove(&(job, ProcessKind::Worker));
            let restarts = self.drop_actors(&mut st, job, "its worker process died", true);
            for create in restarts {
                self.send_to_worker(&mut st, job, create);
            }
            st.in_flight
                .iter()
                .filter(|(_, r)| r.job == Some(job))
                .map(|(id, _)| *id)
                .collect()
        };
        for id in lost {
            let function = self
                .lock()
                .in_flight
                .get(&id)
                .map(|r| r.function.clone())
                .unwrap_or_default();
            self.finished(
                id,
                Err(Error::WorkerCrashed {
                    function,
                    reason: format!("the worker process of job {job} on node {} exited", self.id),
                }),
            );
        }
    }
}
