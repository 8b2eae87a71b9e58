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
//! This module keeps the books and places tasks; `actors` places and routes actors,
//! `process` starts worker processes and relays their output.

mod actors;
mod process;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::process::Child;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};

use crate::cluster::head::message_name;
use crate::cluster::objects::Payload;
use crate::cluster::wire::{self, Msg, NodeView, Outbox, PendingView, Role, WireError};
use crate::config::Config;
use crate::error::Error;
use crate::object::ObjectId;
use crate::sched::{Capacity, Demand, Grant};
use crate::task::{Strategy, TaskSpec};

/// Environment variables that put a process in worker mode.
pub const ENV_NODE: &str = "PRISM_WORKER_NODE";
/// The job a worker serves.
pub const ENV_JOB: &str = "PRISM_WORKER_JOB";
/// The cluster token, for workers.
pub const ENV_TOKEN: &str = "PRISM_TOKEN";
/// The head's address, for workers.
pub const ENV_HEAD: &str = "PRISM_WORKER_HEAD";
/// The object store cap of a worker: the node's `--object-store-memory`.
pub const ENV_STORE: &str = "PRISM_WORKER_OBJECT_STORE_MEMORY";
/// Where a worker spills objects; the node removes it when the worker ends.
pub const ENV_SPILL: &str = "PRISM_WORKER_SPILL_DIR";

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

struct Route {
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
}

impl Route {
    /// A route with no resources held yet.
    fn new(reply: Outbox, job: Option<u32>, peer: Option<String>, function: String) -> Route {
        Route {
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
        }
    }
}

/// Tasks of a function whose runs (as this node sees them) take less than this are
/// pipelined up to [`DEEP_PIPELINE`] deep behind a running task; others one deep.
const SHORT_TASK: Duration = Duration::from_millis(2);

/// How many short tasks may wait in a worker behind one running task: enough to cover
/// a round trip to the node, few enough not to hoard work a peer could take.
const DEEP_PIPELINE: u32 = 8;

enum Worker {
    /// The process is starting; tasks wait for it to connect.
    Starting(Vec<Msg>),
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
    available: Capacity,
    queue: VecDeque<Queued>,
    routes: HashMap<ObjectId, Route>,
    workers: HashMap<u32, Worker>,
    /// Worker processes by job.
    children: HashMap<u32, Child>,
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
}

/// Where a task's strategy sends it.
enum Placement {
    /// Local first, then peers with room (see [`Node::dispatch`]).
    Default,
    /// Here, and nowhere else.
    Here,
    /// To this peer.
    Peer(String),
    /// Nowhere: the strategy cannot be met.
    Fail(Error),
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
    },
    /// On a peer node.
    Peer(String),
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
    total: Capacity,
    /// Its CPUs.
    cpus: f64,
    state: Mutex<State>,
}

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
        let id = format!("{:08x}", crate::cluster::session::random_u32());
        let node = Arc::new(Node {
            id,
            address,
            total: total.clone(),
            cpus: options.config.num_cpus,
            state: Mutex::new(State {
                available: total,
                queue: VecDeque::new(),
                routes: HashMap::new(),
                workers: HashMap::new(),
                children: HashMap::new(),
                peers: HashMap::new(),
                running: 0,
                drivers: HashMap::new(),
                actors: HashMap::new(),
                spread_turn: 0,
                waiting_actors: VecDeque::new(),
                infeasible: Vec::new(),
                run_times: HashMap::new(),
                tasks_here: 0,
            }),
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
        self.state.lock().unwrap_or_else(|e| e.into_inner())
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
            total: self.total.amounts(),
            available: st.available.amounts(),
            queued: st.queue.len() as u32,
            running: st.running,
            alive: true,
            pending: self.pending(st),
        }
    }

    /// What waits here, grouped by function (or actor class) and demand, with why (at
    /// most 16 groups, counted over the first 10,000 waiting: a node may queue millions,
    /// and `queued` has the full count).
    fn pending(&self, st: &State) -> Vec<PendingView> {
        // (is an actor, function or class, demand, pinned, count)
        let mut groups: Vec<(bool, &str, &Demand, bool, u32)> = Vec::new();
        let waiting = st
            .queue
            .iter()
            .chain(st.infeasible.iter().map(|(q, _)| q))
            .map(|q| (false, q.spec.function.as_str(), &q.demand, q.pinned))
            .chain(
                st.waiting_actors
                    .iter()
                    .map(|w| (true, w.class.as_str(), &w.demand, w.pinned)),
            )
            .take(10_000);
        for (actor, what, demand, pinned) in waiting {
            let same = groups
                .iter()
                .position(|g| g.0 == actor && g.1 == what && g.2 == demand);
            match same {
                Some(i) => groups[i].4 += 1,
                None if groups.len() < 16 => groups.push((actor, what, demand, pinned, 1)),
                None => {}
            }
        }
        groups
            .into_iter()
            .map(|(actor, what, demand, pinned, count)| PendingView {
                what: if actor {
                    format!("actor {what}")
                } else {
                    what.to_string()
                },
                count,
                demand: demand.describe(),
                reason: self.why_waiting(st, demand, pinned),
            })
            .collect()
    }

    /// Why work asking for `demand` cannot start now.
    fn why_waiting(&self, st: &State, demand: &Demand, pinned: bool) -> String {
        let free = st.available.amounts();
        let total = self.total.amounts();
        let amount = |list: &[(String, f64)], name: &str| {
            list.iter()
                .find(|(n, _)| n == name)
                .map_or(0.0, |(_, v)| *v)
        };
        let short: Vec<String> = demand
            .describe()
            .into_iter()
            .filter(|(name, v)| amount(&free, name) < *v)
            .map(|(name, v)| {
                format!(
                    "{v} {name} asked, {} of {} free here",
                    amount(&free, &name),
                    amount(&total, &name)
                )
            })
            .collect();
        let here = if short.is_empty() {
            "waits its turn in the queue".to_string()
        } else {
            short.join(", ")
        };
        let elsewhere = if self.feasible_somewhere(st, demand, pinned).is_err() {
            "no live node could ever run it: it fails unless one that can joins"
        } else if pinned {
            "it must run on this node (its strategy or a peer placed it here)"
        } else if !st.peers.values().any(|p| p.view.alive) {
            "no other node is alive"
        } else {
            "no other node has room for it now"
        };
        format!("{here}; {elsewhere}")
    }

    async fn heartbeats(self: Arc<Self>) {
        loop {
            if let Err(e) = self.clone().heartbeat_session().await {
                tracing::warn!(node = %self.id, "node: lost the head ({e}); reconnecting");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn heartbeat_session(self: Arc<Self>) -> Result<(), WireError> {
        let role = Role::Node {
            node_id: self.id.clone(),
        };
        let (mut head, _) = wire::connect(&self.options.head, &self.options.token, role).await?;
        let me = self.view(&self.lock());
        wire::write_msg(&mut head, &Msg::RegisterNode { node: me }).await?;
        loop {
            match wire::read_msg(&mut head).await? {
                Msg::ClusterView { nodes } => self.update_peers(nodes),
                other => tracing::warn!("node: unexpected {} from the head", message_name(&other)),
            }
            tokio::time::sleep(self.options.heartbeat).await;
            let hb = {
                let st = self.lock();
                Msg::Heartbeat {
                    available: st.available.amounts(),
                    queued: st.queue.len() as u32,
                    running: st.running,
                    pending: self.pending(&st),
                }
            };
            wire::write_msg(&mut head, &hb).await?;
        }
    }

    fn update_peers(self: &Arc<Self>, nodes: Vec<NodeView>) {
        let mut connect = Vec::new();
        {
            let mut st = self.lock();
            for n in nodes {
                if n.node_id == self.id {
                    continue;
                }
                let peer = st.peers.entry(n.node_id.clone()).or_insert_with(|| Peer {
                    view: n.clone(),
                    total: Capacity::from_amounts(&n.total),
                    cpus: 0.0,
                    outbox: None,
                    connecting: false,
                    outstanding: 0,
                });
                if peer.view.total != n.total {
                    peer.total = Capacity::from_amounts(&n.total);
                }
                peer.cpus = n
                    .total
                    .iter()
                    .find(|(name, _)| name == "CPU")
                    .map_or(0.0, |(_, v)| *v);
                peer.view = n;
                if peer.view.alive && peer.outbox.is_none() && !peer.connecting {
                    peer.connecting = true;
                    connect.push((peer.view.node_id.clone(), peer.view.address.clone()));
                }
            }
            self.recheck_infeasible(&mut st);
            self.dispatch(&mut st);
        }
        for (id, address) in connect {
            tokio::spawn(self.clone().connect_peer(id, address));
        }
    }

    async fn connect_peer(self: Arc<Self>, peer_id: String, address: String) {
        let role = Role::Node {
            node_id: self.id.clone(),
        };
        let stream = match wire::connect(&address, &self.options.token, role).await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(peer = %peer_id, "node: cannot reach peer: {e}");
                if let Some(p) = self.lock().peers.get_mut(&peer_id) {
                    p.connecting = false;
                }
                return;
            }
        };
        let (r, w) = stream.into_split();
        let mut r = tokio::io::BufReader::with_capacity(wire::READ_BUFFER, r);
        let outbox = wire::spawn_writer(w, address.clone());
        {
            let mut st = self.lock();
            if let Some(p) = st.peers.get_mut(&peer_id) {
                p.outbox = Some(outbox);
                p.connecting = false;
            }
            self.dispatch(&mut st);
        }
        // Results of the tasks handed to this peer come back on this connection.
        loop {
            match wire::read_msg::<_, Msg>(&mut r).await {
                Ok(Msg::TaskDone { task_id, result }) => self.finished(task_id, result),
                Ok(other) => {
                    tracing::warn!("node: unexpected {} from a peer", message_name(&other))
                }
                Err(e) => {
                    tracing::info!(peer = %peer_id, "node: peer connection closed: {e}");
                    break;
                }
            }
        }
        let mut st = self.lock();
        if let Some(p) = st.peers.get_mut(&peer_id) {
            p.outbox = None;
        }
        // Tasks that were running there come back as failures of their worker.
        let lost: Vec<ObjectId> = st
            .routes
            .iter()
            .filter(|(_, r)| r.peer.as_deref() == Some(peer_id.as_str()))
            .map(|(id, _)| *id)
            .collect();
        drop(st);
        for id in lost {
            self.finished(
                id,
                Err(Error::WorkerCrashed {
                    function: String::new(),
                    reason: format!("node {peer_id} went away"),
                }),
            );
        }
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
        let result = loop {
            let msg: Msg = match wire::read_msg(&mut r).await {
                Ok(m) => m,
                Err(e) => break Err(e),
            };
            match (&role, msg) {
                (Role::Driver, Msg::SubmitTask { job, spec }) => {
                    if driver_job.is_none() {
                        self.lock().drivers.insert(job, outbox.clone());
                    }
                    driver_job = Some(job);
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
                (Role::Node { .. }, Msg::EndJob { job }) => self.end_job(job),
                (_, Msg::FreeObjects { job, ids }) => {
                    self.free_objects(job, ids, !matches!(role, Role::Node { .. }))
                }
                (Role::Node { .. }, Msg::Output { job, stderr, lines }) => {
                    let driver = self.lock().drivers.get(&job).cloned();
                    if let Some(d) = driver {
                        let _ = d.send(Msg::Output { job, stderr, lines });
                    }
                }
                (
                    _,
                    Msg::CreateActor {
                        job,
                        actor,
                        class,
                        args,
                        options,
                        max_restarts,
                    },
                ) => {
                    let pinned = matches!(role, Role::Node { .. });
                    let create = actors::Creation {
                        job,
                        actor,
                        class,
                        args,
                        options,
                        max_restarts,
                    };
                    self.create_actor(create, outbox.clone(), pinned)
                }
                (_, m @ Msg::ActorCall { .. }) => self.route_actor(m, Some(outbox.clone())),
                (_, m @ Msg::KillActor { .. }) => self.route_actor(m, None),
                (Role::Worker { .. }, Msg::Blocked { task_id }) => self.lend(task_id, true),
                (Role::Worker { .. }, Msg::Unblocked { task_id }) => self.lend(task_id, false),
                (_, Msg::Status) => {
                    let view = self.view(&self.lock());
                    let _ = outbox.send(Msg::ClusterView { nodes: vec![view] });
                }
                (role, other) => {
                    let _ = outbox.send(Msg::Failed {
                        reason: format!("a {role:?} cannot send {}", message_name(&other)),
                    });
                }
            }
        };
        if let Role::Worker { job } = role {
            self.worker_gone(job);
        }
        if let Some(job) = driver_job {
            self.end_job(job);
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

    /// The job's driver went away: drop its queued tasks and end its worker process.
    fn end_job(&self, job: u32) {
        let child = {
            let mut st = self.lock();
            st.queue.retain(|q| q.job != job || q.pinned);
            st.infeasible.retain(|(q, _)| q.job != job);
            st.waiting_actors.retain(|w| w.job != job);
            st.workers.remove(&job);
            st.drivers.remove(&job);
            self.drop_actors(&mut st, job, "its job ended", false);
            st.children.remove(&job)
        };
        if let Some(mut c) = child {
            tracing::info!(job, pid = c.id(), "node: job ended, stopping its worker");
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(self.spill_dir(job));
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

    /// Takes a task from a client or a peer.
    fn submit(self: &Arc<Self>, job: u32, spec: TaskSpec, reply: Outbox, pinned: bool) {
        let demand = match spec.options.demand() {
            Ok(d) => d,
            Err(e) => {
                let _ = reply.send(Msg::TaskDone {
                    task_id: spec.task_id,
                    result: Err(e),
                });
                return;
            }
        };
        let q = Queued {
            job,
            spec,
            demand,
            reply,
            pinned,
        };
        let mut st = self.lock();
        self.admit(&mut st, q, 0);
        self.dispatch(&mut st);
    }

    /// Places a task by its strategy: to the queue here, or to the peer it names. A task
    /// that cannot be placed waits for the next views of the cluster (a node that just
    /// joined may not be in this node's view, or connected, yet) and fails with the
    /// reason once two fresh views (`views`) confirm it.
    fn admit(self: &Arc<Self>, st: &mut State, mut q: Queued, views: u32) {
        let strategy = q.spec.options.scheduling.clone();
        let failure = match self.place(st, &strategy, &q.demand, q.pinned) {
            Placement::Here => {
                q.pinned = true;
                None
            }
            Placement::Default => self.feasible_somewhere(st, &q.demand, q.pinned).err(),
            Placement::Peer(peer) => match self.hand_to_peer(st, &peer, q) {
                None => return,
                Some(back) => {
                    q = back;
                    Some(Error::Cluster(format!("node {peer} cannot be reached")))
                }
            },
            Placement::Fail(e) => Some(e),
        };
        match failure {
            None => st.queue.push_back(q),
            Some(e) if views >= 2 => {
                let _ = q.reply.send(Msg::TaskDone {
                    task_id: q.spec.task_id,
                    result: Err(e),
                });
            }
            Some(_) => st.infeasible.push((q, views)),
        }
    }

    /// `Ok` if this node, or (unless `pinned`) some live peer, could ever meet `demand`;
    /// this node's verdict otherwise.
    fn feasible_somewhere(&self, st: &State, demand: &Demand, pinned: bool) -> Result<(), Error> {
        let here = self.total.check_feasible(demand);
        let elsewhere = !pinned
            && st
                .peers
                .values()
                .any(|p| p.view.alive && p.total.check_feasible(demand).is_ok());
        if elsewhere {
            Ok(())
        } else {
            here
        }
    }

    /// After a fresh view of the cluster: tasks that could not be placed try again (see
    /// [`Node::admit`]).
    fn recheck_infeasible(self: &Arc<Self>, st: &mut State) {
        for (q, views) in std::mem::take(&mut st.infeasible) {
            self.admit(st, q, views + 1);
        }
        self.recheck_infeasible_actors(st);
    }

    /// Starts what can start: waiting actors and queued tasks that fit here, or that a
    /// peer has room for.
    fn dispatch(self: &Arc<Self>, st: &mut State) {
        if !st.waiting_actors.is_empty() {
            self.place_actors(st);
        }
        while let Some(front) = st.queue.front() {
            if st.available.fits(&front.demand) {
                let Some(q) = st.queue.pop_front() else { break };
                let gpu_ids = st.available.take(&q.demand);
                st.running += 1;
                let grant = Grant {
                    demand: q.demand.clone(),
                    gpu_ids,
                };
                self.start_here(st, q, Some(grant), None);
                continue;
            }
            // Queue it behind a task of its shape here (pipelining), or hand it to the
            // peer with room that has the fewest tasks per CPU, whichever is less loaded;
            // a peer with an idle CPU first.
            let short = st
                .run_times
                .get(&front.spec.function)
                .is_some_and(|t| *t < SHORT_TASK.as_secs_f64());
            let depth = if short { DEEP_PIPELINE } else { 1 };
            // A peer may hold as many as this node keeps in its worker (a running task
            // and a pipeline behind it), and more for the longer way results travel.
            let room = 2 * (depth + 1);
            let peer = if front.pinned {
                None
            } else {
                choose_peer(st, &front.demand, room)
            };
            let here_load = st.tasks_here as f64 / self.cpus.max(0.25);
            let here_first = match &peer {
                Some((_, load)) => *load >= 1.0 && here_load <= *load,
                None => true,
            };
            if here_first {
                if let Some(pred) = pipeline_slot(st, front.job, &front.demand, depth) {
                    self.pipeline(st, pred);
                    continue;
                }
            }
            let Some((peer_id, _)) = peer else {
                break;
            };
            let Some(q) = st.queue.pop_front() else { break };
            if let Some(q) = self.hand_to_peer(st, &peer_id, q) {
                st.queue.push_front(q);
                break;
            }
        }
    }

    /// Sends a task to a connected peer, which runs it (and never passes it on); the
    /// task comes back if the peer is not connected.
    fn hand_to_peer(&self, st: &mut State, peer_id: &str, q: Queued) -> Option<Queued> {
        let Some(peer) = st.peers.get_mut(peer_id) else {
            return Some(q);
        };
        let Some(out) = peer.outbox.clone() else {
            return Some(q);
        };
        peer.outstanding += 1;
        let route = Route::new(
            q.reply,
            None,
            Some(peer_id.to_string()),
            q.spec.function.clone(),
        );
        st.routes.insert(q.spec.task_id, route);
        let _ = out.send(Msg::SubmitTask {
            job: q.job,
            spec: Arc::new(q.spec),
        });
        None
    }

    /// Where a task's strategy sends it, before load is considered. A task a peer handed
    /// here was placed there already.
    fn place(
        &self,
        st: &mut State,
        strategy: &Strategy,
        demand: &Demand,
        from_peer: bool,
    ) -> Placement {
        let live_peers = st
            .peers
            .iter()
            .filter(|(_, p)| p.view.alive && p.outbox.is_some());
        match strategy {
            _ if from_peer => Placement::Default,
            Strategy::Default => Placement::Default,
            Strategy::NodeAffinity { node_id, soft } => {
                let verdict = if *node_id == self.id {
                    self.total.check_feasible(demand).map(|()| Placement::Here)
                } else {
                    match live_peers.clone().find(|(id, _)| *id == node_id) {
                        Some((_, p)) => p
                            .total
                            .check_feasible(demand)
                            .map(|()| Placement::Peer(node_id.clone())),
                        None => Err(Error::Infeasible {
                            resource: format!("node:{node_id} (no such live node)"),
                            requested: 1.0,
                            capacity: 0.0,
                        }),
                    }
                };
                match verdict {
                    Ok(p) => p,
                    Err(_) if *soft => Placement::Default,
                    Err(e) => Placement::Fail(e),
                }
            }
            Strategy::Spread => {
                let mut nodes: Vec<String> = live_peers
                    .filter(|(_, p)| p.total.check_feasible(demand).is_ok())
                    .map(|(id, _)| id.clone())
                    .collect();
                if self.total.check_feasible(demand).is_ok() {
                    nodes.push(self.id.clone());
                }
                if nodes.is_empty() {
                    return Placement::Default;
                }
                nodes.sort();
                let pick = nodes.swap_remove(st.spread_turn % nodes.len());
                st.spread_turn += 1;
                if pick == self.id {
                    Placement::Here
                } else {
                    Placement::Peer(pick)
                }
            }
        }
    }

    /// Sends the queue's head to run right after `pred` on `pred`'s resources.
    fn pipeline(self: &Arc<Self>, st: &mut State, pred: ObjectId) {
        let Some(q) = st.queue.pop_front() else {
            return;
        };
        if let Some(r) = st.routes.get_mut(&pred) {
            r.successor = Some(q.spec.task_id);
        }
        let id = q.spec.task_id;
        self.start_here(st, q, None, Some(pred));
        if let Some(r) = st.routes.get_mut(&id) {
            r.pred = Some(pred);
        }
    }

    /// Records `q` as running in its job's worker here (right after `after`, if given,
    /// on its resources) and sends it there.
    fn start_here(
        self: &Arc<Self>,
        st: &mut State,
        q: Queued,
        grant: Option<Grant>,
        after: Option<ObjectId>,
    ) {
        let mut route = Route::new(q.reply, Some(q.job), None, q.spec.function.clone());
        route.granted_at = grant.as_ref().map(|_| Instant::now());
        route.grant = grant;
        route.task_here = true;
        st.tasks_here += 1;
        st.routes.insert(q.spec.task_id, route);
        self.send_to_worker(
            st,
            q.job,
            Msg::RunTask {
                spec: q.spec,
                after,
            },
        );
    }

    fn send_to_worker(self: &Arc<Self>, st: &mut State, job: u32, msg: Msg) {
        match st.workers.get_mut(&job) {
            Some(Worker::Ready(out)) => {
                let _ = out.send(msg);
            }
            Some(Worker::Starting(waiting)) => waiting.push(msg),
            None => {
                st.workers.insert(job, Worker::Starting(vec![msg]));
                tokio::spawn(self.clone().start_worker(job));
            }
        }
    }

    fn worker_connected(&self, job: u32, outbox: Outbox) {
        let mut st = self.lock();
        if let Some(Worker::Starting(waiting)) = st.workers.remove(&job) {
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
            let restarts = self.drop_actors(&mut st, job, "its worker process died", true);
            for create in restarts {
                self.send_to_worker(&mut st, job, create);
            }
            st.routes
                .iter()
                .filter(|(_, r)| r.job == Some(job))
                .map(|(id, _)| *id)
                .collect()
        };
        for id in lost {
            let function = self
                .lock()
                .routes
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

    /// A running task waits (`true`) or resumes (`false`): its CPUs serve others meanwhile.
    fn lend(self: &Arc<Self>, task_id: ObjectId, waiting: bool) {
        let mut st = self.lock();
        let Some(route) = st.routes.get_mut(&task_id) else {
            return;
        };
        let Some(cpu) = route.grant.as_ref().map(|g| g.demand.cpu) else {
            return;
        };
        route.blocked = waiting;
        let job = route.job;
        let successor = if waiting {
            route.successor.take()
        } else {
            None
        };
        st.available.lend_cpu(cpu, waiting);
        // The task queued right behind a waiting one starts now, on the CPUs the waiting
        // task lends; the worker starts it when told, so both sides agree on it.
        if let Some((next_id, next)) = successor.and_then(|s| st.routes.get_mut(&s).map(|r| (s, r)))
        {
            if next.grant.is_none() {
                let demand = Demand {
                    cpu,
                    ..Demand::default()
                };
                next.grant = Some(Grant {
                    demand,
                    gpu_ids: Vec::new(),
                });
                next.granted_at = Some(Instant::now());
                st.available.lend_cpu(cpu, false);
                st.running += 1;
                if let Some(job) = job {
                    self.send_to_worker(&mut st, job, Msg::Release { task_id: next_id });
                }
            }
        }
        if waiting {
            self.dispatch(&mut st);
        }
    }

    /// A task ended, here or at a peer: return its resources and pass the result back.
    fn finished(self: &Arc<Self>, task_id: ObjectId, result: Result<Payload, Error>) {
        let mut st = self.lock();
        let Some(route) = st.routes.remove(&task_id) else {
            return;
        };
        if route.task_here {
            st.tasks_here -= 1;
        }
        if let Some(at) = route.granted_at {
            let took = at.elapsed().as_secs_f64();
            st.run_times
                .entry(route.function.clone())
                .and_modify(|t| *t = 0.8 * *t + 0.2 * took)
                .or_insert(took);
        }
        match (
            route.grant,
            route.successor.and_then(|s| st.routes.get_mut(&s)),
        ) {
            // The successor was already sent to run right after this task: it inherits
            // the resources.
            (Some(grant), Some(next)) => {
                next.grant = Some(grant);
                next.granted_at = Some(Instant::now());
            }
            (Some(grant), None) => {
                st.available.give(&grant);
                st.running -= 1;
            }
            (None, _) => {}
        }
        if let Some(p) = route.peer.as_ref().and_then(|id| st.peers.get_mut(id)) {
            p.outstanding = p.outstanding.saturating_sub(1);
        }
        let _ = route.reply.send(Msg::TaskDone { task_id, result });
        self.dispatch(&mut st);
    }
}

/// The last task of a chain of `job` running here on exactly `demand` (a running task
/// and those sent to run right after it, fewer than `depth` of them): the next task of
/// that shape can be sent to run right after it.
/// Only tasks that ask for CPUs alone are pipelined, so that a task that waits can hand
/// its successor the CPUs it lends and nothing else is ever double-booked.
fn pipeline_slot(st: &State, job: u32, demand: &Demand, depth: u32) -> Option<ObjectId> {
    if demand.gpu > 0 || demand.memory > 0 || !demand.custom.is_empty() {
        return None;
    }
    // How many tasks wait ahead of `r` in its chain, and the resources the chain runs on.
    fn chain<'a>(st: &'a State, mut r: &'a Route, depth: u32) -> Option<(u32, &'a Grant)> {
        let mut ahead = 0;
        loop {
            if let Some(g) = &r.grant {
                return Some((ahead, g));
            }
            r = st.routes.get(&r.pred?)?;
            ahead += 1;
            if ahead > depth {
                return None;
            }
        }
    }
    st.routes
        .iter()
        .find(|(_, r)| {
            r.job == Some(job)
                && r.successor.is_none()
                && !r.blocked
                && chain(st, r, depth)
                    .is_some_and(|(ahead, g)| ahead < depth && g.demand == *demand)
        })
        .map(|(id, _)| *id)
}

/// A connected live peer that can run `demand` and has room for it (fewer tasks
/// outstanding there than `per_cpu` times its CPUs, at least `per_cpu`): the one with the
/// fewest tasks outstanding per CPU, and that number.
fn choose_peer(st: &State, demand: &Demand, per_cpu: u32) -> Option<(String, f64)> {
    st.peers
        .iter()
        .filter(|(_, p)| p.view.alive && p.outbox.is_some())
        .filter(|(_, p)| p.total.check_feasible(demand).is_ok())
        .filter_map(|(id, p)| {
            let per_task = (demand.cpu as f64 / crate::sched::UNIT as f64).max(0.25);
            let room = ((p.cpus / per_task) * per_cpu as f64).max(per_cpu as f64) as u32;
            (p.outstanding < room).then(|| (id, p.outstanding as f64 / p.cpus.max(0.25)))
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(id, load)| (id.clone(), load))
}
