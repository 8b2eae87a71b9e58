//! The head: the cluster's control state. It knows the nodes (and whether they still
//! send heartbeats), the jobs and their executables (stored once, by content hash), the
//! named actors, and a small key-value store. Drivers register jobs here and are told
//! which node to submit to; nodes fetch executables from here; `prism status` asks
//! here. What must survive the head's process is written to its [`tables`] first.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::sync::lock;
use crate::wire::{self, JobInfo, Msg, NodeView, Role, WireError};

mod events;
mod groups;
mod jobs;
mod tables;
use tables::Tables;

/// The head's tables.
pub struct Head {
    token: String,
    executables: PathBuf,
    heartbeat_timeout: Duration,
    nodes: Mutex<HashMap<String, (NodeView, Instant)>>,
    /// Registration order, for a stable default node.
    node_order: Mutex<Vec<String>>,
    jobs: Mutex<Vec<JobInfo>>,
    kv: Mutex<HashMap<String, Vec<u8>>>,
    named_actors: Mutex<HashMap<String, wire::NamedActor>>,
    /// The durable copy of the tables above (nodes as they registered).
    tables: Arc<Tables>,
    /// Held from before a change is checked until memory has it after its commit, so
    /// that changes reach the database and memory in one order; reads take no part.
    writing: tokio::sync::Mutex<()>,
    /// The placement groups (in memory only).
    groups: Mutex<groups::Groups>,
    /// Held while a placement group is placed or removed, one at a time.
    placing: tokio::sync::Mutex<()>,
    /// What the nodes report of tasks and actors (in memory only).
    events: Mutex<events::Events>,
    /// Each node's workers and drivers, as its last heartbeat told (in memory only).
    processes: Mutex<HashMap<String, Vec<crate::state::ProcessView>>>,
    /// Where submitted jobs run, once the head runs them.
    job_home: Mutex<Option<jobs::JobHome>>,
    /// Submitted jobs, in the order submitted.
    submissions: Mutex<Vec<crate::state::JobSubmission>>,
    /// Submitted jobs asked to stop and not ended yet.
    stopping: Mutex<std::collections::HashSet<String>>,
}

impl Head {
    /// A head keeping executables under `executables`, and its tables in memory.
    pub fn new(token: String, executables: PathBuf, heartbeat_timeout: Duration) -> Arc<Head> {
        Arc::new(Head::with_tables(
            token,
            executables,
            heartbeat_timeout,
            Tables::in_memory(),
        ))
    }

    fn with_tables(
        token: String,
        executables: PathBuf,
        heartbeat_timeout: Duration,
        tables: Tables,
    ) -> Head {
        Head {
            token,
            executables,
            heartbeat_timeout,
            nodes: Mutex::new(HashMap::new()),
            node_order: Mutex::new(Vec::new()),
            jobs: Mutex::new(Vec::new()),
            kv: Mutex::new(HashMap::new()),
            named_actors: Mutex::new(HashMap::new()),
            tables: Arc::new(tables),
            writing: tokio::sync::Mutex::new(()),
            groups: Mutex::new(HashMap::new()),
            placing: tokio::sync::Mutex::new(()),
            events: Mutex::new(events::Events::new(
                crate::state::DEFAULT_TASK_RING,
                crate::state::DEFAULT_ACTOR_RING,
            )),
            processes: Mutex::new(HashMap::new()),
            job_home: Mutex::new(None),
            submissions: Mutex::new(Vec::new()),
            stopping: Mutex::new(Default::default()),
        }
    }

    /// Keeps the latest `tasks` task records and `actors` actor records per job (from
    /// now on; what was recorded before is let go).
    pub fn keep_events(&self, tasks: usize, actors: usize) {
        *lock(&self.events) = events::Events::new(tasks, actors);
    }

    /// A head whose tables (nodes, jobs, named actors, KV) are kept in the database
    /// `file` and read back from it when the head restarts. The nodes it knew count as
    /// not alive until they reconnect. Fails if `file` is not a head's database or
    /// another head has it open.
    pub fn persistent(
        token: String,
        executables: PathBuf,
        heartbeat_timeout: Duration,
        file: PathBuf,
    ) -> Result<Arc<Head>, crate::error::Error> {
        let tables = Tables::open(&file)?;
        let saved = tables.load()?;
        if saved != tables::Saved::default() {
            tracing::info!(
                nodes = saved.nodes.len(),
                jobs = saved.jobs.len(),
                actors = saved.named_actors.len(),
                keys = saved.kv.len(),
                "head: tables recovered"
            );
        }
        let head = Head::with_tables(token, executables, heartbeat_timeout, tables);
        let now = Instant::now();
        // Saved in the order they joined.
        *lock(&head.node_order) = saved.nodes.iter().map(|n| n.node_id.clone()).collect();
        *lock(&head.nodes) = saved
            .nodes
            .into_iter()
            .map(|n| (n.node_id.clone(), (n, now)))
            .collect();
        *lock(&head.jobs) = saved.jobs;
        *lock(&head.named_actors) = saved.named_actors.into_iter().collect();
        *lock(&head.kv) = saved.kv.into_iter().collect();
        *lock(&head.submissions) = saved.submissions;
        Ok(Arc::new(head))
    }

    /// Commits a change to the tables on the blocking pool, so that the disk's sync
    /// does not hold up the daemon's thread (and everything else it serves). The
    /// change owns what it writes and hands it back for memory.
    async fn commit<R: Send + 'static>(
        &self,
        change: impl FnOnce(&Tables) -> Result<R, crate::error::Error> + Send + 'static,
    ) -> Result<R, String> {
        let tables = self.tables.clone();
        let done = tokio::task::spawn_blocking(move || change(&tables)).await;
        match done {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                tracing::error!("head: {e}");
                Err(format!("the head could not record it: {e}"))
            }
            Err(e) => Err(format!("the head could not record it: {e}")),
        }
    }

    /// Serves connections until the listener fails.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("head: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let head = self.clone();
            tokio::spawn(async move {
                if let Err(e) = head.connection(stream, peer).await {
                    tracing::info!(%peer, "head: connection closed: {e}");
                }
            });
        }
    }

    /// Every node the head knows, in the order they joined.
    pub fn nodes(&self) -> Vec<NodeView> {
        self.view()
    }

    /// Every node's workers and drivers, as its last heartbeat told, in the order the
    /// nodes joined.
    pub fn processes(&self) -> Vec<crate::state::NodeProcesses> {
        let nodes = self.view();
        let processes = lock(&self.processes);
        nodes
            .into_iter()
            .map(|n| crate::state::NodeProcesses {
                processes: processes.get(&n.node_id).cloned().unwrap_or_default(),
                node_id: n.node_id,
                alive: n.alive,
            })
            .collect()
    }

    fn view(&self) -> Vec<NodeView> {
        let nodes = lock(&self.nodes);
        let order = lock(&self.node_order);
        order
            .iter()
            .filter_map(|id| nodes.get(id))
            .map(|(v, seen)| {
                let mut v = v.clone();
                v.alive = v.alive && seen.elapsed() < self.heartbeat_timeout;
                v
            })
            .collect()
    }

    /// Takes in a node's events and its processes' batches (decoded here, off the
    /// nodes), stamping the node's id on its workers' events.
    fn absorb_events(
        &self,
        own: crate::state::EventBatch,
        batches: Vec<crate::state::EncodedBatch>,
        node: Option<&str>,
    ) {
        let mut decoded = Vec::with_capacity(batches.len());
        let mut lost = crate::state::EventBatch::default();
        for b in batches {
            match b.decode() {
                Ok(mut batch) => {
                    if let Some(node) = node {
                        crate::state::stamp_node(&mut batch, node);
                    }
                    decoded.push(batch);
                }
                Err(e) => {
                    tracing::warn!("head: {e}; its events are counted dropped");
                    lost.dropped.extend(b.counts);
                }
            }
        }
        let mut events = lock(&self.events);
        events.absorb(own);
        events.absorb(lost);
        for batch in decoded {
            events.absorb(batch);
        }
    }

    /// Every job, with its recorded task counts.
    pub fn jobs(&self) -> Vec<crate::state::JobView> {
        let jobs = lock(&self.jobs).clone();
        let events = lock(&self.events);
        jobs.into_iter()
            .map(|j| {
                let (tasks, actors_alive, dropped) = events.job_counts(j.job);
                crate::state::JobView {
                    job: j.job,
                    driver_node: j.driver_node,
                    args: j.args,
                    tasks,
                    actors_alive,
                    dropped,
                }
            })
            .collect()
    }

    /// Whether `token` is the cluster's (compared in constant time).
    pub(crate) fn token_is(&self, token: &str) -> bool {
        let (a, b) = (self.token.as_bytes(), token.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
    }

    /// The recorded tasks `query` asks for.
    pub(crate) fn task_page(&self, query: &crate::state::TaskQuery) -> crate::state::TaskPage {
        lock(&self.events).tasks(query)
    }

    /// The recorded actors `query` asks for.
    pub(crate) fn actor_page(&self, query: &crate::state::ActorQuery) -> crate::state::ActorPage {
        lock(&self.events).actors(query)
    }

    /// Task counts by function and state.
    pub(crate) fn task_summary(&self, job: Option<u32>) -> crate::state::TaskSummary {
        lock(&self.events).summary(job)
    }

    /// The session directory the head runs jobs in, once it runs them.
    pub(crate) fn session(&self) -> Option<PathBuf> {
        lock(&self.job_home).as_ref().map(|h| h.session.clone())
    }

    /// The node a driver connecting from `peer` should submit to: one on the same
    /// address if any, else the first alive node.
    fn node_for(&self, peer: &SocketAddr) -> Option<String> {
        let view = self.view();
        let ip = peer.ip().to_string();
        view.iter()
            .filter(|n| n.alive)
            .find(|n| n.address.rsplit_once(':').is_some_and(|(h, _)| h == ip))
            .or_else(|| view.iter().find(|n| n.alive))
            .map(|n| n.address.clone())
    }

    async fn connection(
        self: Arc<Self>,
        mut stream: TcpStream,
        peer: SocketAddr,
    ) -> Result<(), WireError> {
        let role = wire::accept(&mut stream, &self.token, "head").await?;
        let mut node_id = None;
        let result = loop {
            let msg: Msg = match wire::read_msg(&mut stream).await {
                Ok(m) => m,
                Err(e) => break Err(e),
            };
            let reply = match (&role, msg) {
                (Role::Node { node_id: id }, Msg::RegisterNode { mut node }) => {
                    node.alive = true;
                    node.node_id = id.clone();
                    tracing::info!(node = %id, address = %node.address, "head: node joined");
                    let _writing = self.writing.lock().await;
                    let seq = {
                        let order = lock(&self.node_order);
                        order.iter().position(|n| n == id).unwrap_or(order.len())
                    };
                    // Membership is live state: a node whose record cannot be written
                    // still joins, and the log says a restart would not list it.
                    let record = node.clone();
                    let _ = self.commit(move |t| t.put_node(seq as u64, &record)).await;
                    let mut order = lock(&self.node_order);
                    if !order.contains(id) {
                        order.push(id.clone());
                    }
                    drop(order);
                    lock(&self.nodes).insert(id.clone(), (node, Instant::now()));
                    node_id = Some(id.clone());
                    Msg::ClusterView { nodes: self.view() }
                }
                (
                    Role::Node { node_id: id },
                    Msg::Heartbeat {
                        available,
                        queued,
                        running,
                        pending,
                        events,
                        batches,
                        processes,
                    },
                ) => {
                    self.absorb_events(events, batches, Some(id));
                    lock(&self.processes).insert(id.clone(), processes);
                    if let Some((v, seen)) = lock(&self.nodes).get_mut(id) {
                        v.available = available;
                        v.pending = pending;
                        v.queued = queued;
                        v.running = running;
                        v.alive = true;
                        *seen = Instant::now();
                    }
                    Msg::ClusterView { nodes: self.view() }
                }
                (Role::Node { .. }, Msg::FetchExecutable { hash }) => {
                    self.send_executable(&mut stream, &hash).await?;
                    continue;
                }
                (Role::Node { .. }, Msg::DescribeJob { job }) => Msg::JobDescription {
                    job: lock(&self.jobs).iter().find(|j| j.job == job).cloned(),
                },
                (
                    Role::Driver,
                    Msg::RegisterJob {
                        hash,
                        size,
                        args,
                        submission,
                    },
                ) => {
                    let reply = self
                        .register_job(&mut stream, peer, hash, size, args)
                        .await?;
                    if let (Msg::JobAccepted { job, .. }, Some(id)) = (&reply, submission) {
                        self.driver_of(&id, job.job).await;
                    }
                    reply
                }
                (Role::Driver, Msg::RejoinJob { job }) => {
                    let known = lock(&self.jobs).iter().find(|j| j.job == job).cloned();
                    match (known, self.node_for(&peer)) {
                        (Some(job), Some(node_address)) => {
                            tracing::info!(job = job.job, %node_address, "head: a driver rejoins");
                            Msg::JobAccepted { job, node_address }
                        }
                        (None, _) => Msg::Failed {
                            reason: format!("the head does not know job {job}"),
                        },
                        (Some(_), None) => Msg::Failed {
                            reason: "the cluster has no live node to run work".into(),
                        },
                    }
                }
                (_, Msg::KvPut { key, value }) => {
                    let _writing = self.writing.lock().await;
                    match self
                        .commit(move |t| t.put_kv(&key, &value).map(|()| (key, value)))
                        .await
                    {
                        Ok((key, value)) => {
                            lock(&self.kv).insert(key, value);
                            Msg::KvValue { value: None }
                        }
                        Err(reason) => Msg::Failed { reason },
                    }
                }
                (_, Msg::KvGet { key }) => Msg::KvValue {
                    value: lock(&self.kv).get(&key).cloned(),
                },
                (_, Msg::Status) => Msg::ClusterView { nodes: self.view() },
                (Role::Driver, Msg::Events { batch }) => {
                    self.absorb_events(Default::default(), vec![batch], None);
                    Msg::KvValue { value: None }
                }
                (_, Msg::ListTasks { query }) => Msg::Tasks {
                    page: self.task_page(&query),
                },
                (_, Msg::ListActors { query }) => Msg::Actors {
                    page: self.actor_page(&query),
                },
                (_, Msg::SummarizeTasks { job }) => Msg::TaskSummary {
                    summary: self.task_summary(job),
                },
                (_, Msg::ListJobs) => Msg::Jobs { jobs: self.jobs() },
                (_, Msg::ListProcesses) => Msg::Processes {
                    nodes: self.processes(),
                },
                (Role::Cli, m @ (Msg::ListLogs | Msg::ReadLog { .. })) => match self.session() {
                    Some(dir) => crate::daemon::log_answer(&dir, m),
                    None => Msg::Failed {
                        reason: "this head keeps no logs".into(),
                    },
                },
                (Role::Cli, Msg::SubmitJob { request }) => self.submit_job(request).await,
                (Role::Cli, Msg::StopJob { id }) => self.stop_job(&id).await,
                (_, Msg::JobStatusOf { id }) => self.job_status(&id),
                (_, Msg::ListSubmissions) => self.submissions(),
                (_, Msg::JobLogs { id, offset }) => self.job_logs(&id, offset),
                (_, Msg::RegisterActor { name, entry }) => {
                    let _writing = self.writing.lock().await;
                    if lock(&self.named_actors).contains_key(&name) {
                        Msg::Failed {
                            reason: format!("an actor named {name:?} already exists"),
                        }
                    } else {
                        let stored =
                            move |t: &Tables| t.put_actor(&name, &entry).map(|()| (name, entry));
                        match self.commit(stored).await {
                            Ok((name, entry)) => {
                                lock(&self.named_actors).insert(name, entry.clone());
                                Msg::ActorFound { entry: Some(entry) }
                            }
                            Err(reason) => Msg::Failed { reason },
                        }
                    }
                }
                (_, Msg::UnregisterActor { actor }) => {
                    let _writing = self.writing.lock().await;
                    let names: Vec<String> = lock(&self.named_actors)
                        .iter()
                        .filter(|(_, e)| e.actor == actor)
                        .map(|(n, _)| n.clone())
                        .collect();
                    let written = if names.is_empty() {
                        Ok(())
                    } else {
                        self.commit(move |t| t.remove_actors(&names)).await
                    };
                    match written {
                        Ok(()) => {
                            lock(&self.named_actors).retain(|_, e| e.actor != actor);
                            Msg::ActorFound { entry: None }
                        }
                        Err(reason) => Msg::Failed { reason },
                    }
                }
                (_, Msg::LookupActor { name }) => Msg::ActorFound {
                    entry: lock(&self.named_actors).get(&name).cloned(),
                },
                (
                    _,
                    Msg::CreateGroup {
                        job,
                        group,
                        bundles,
                        strategy,
                    },
                ) => self.create_group(job, group, bundles, strategy).await,
                (_, Msg::LookupGroup { group }) => self.lookup_group(group),
                (_, Msg::RemoveGroup { group }) => self.remove_group(group).await,
                (role, other) => Msg::Failed {
                    reason: format!("a {role:?} cannot send {}", other.name()),
                },
            };
            if let Err(e) = wire::write_msg(&mut stream, &reply).await {
                break Err(e);
            }
        };
        if let Some(id) = node_id {
            if let Some((v, _)) = lock(&self.nodes).get_mut(&id) {
                v.alive = false;
            }
            tracing::info!(node = %id, "head: node left");
        }
        result
    }

    async fn register_job(
        &self,
        stream: &mut TcpStream,
        peer: SocketAddr,
        hash: String,
        size: u64,
        args: Vec<String>,
    ) -> Result<Msg, WireError> {
        if !valid_hash(&hash) {
            return Ok(Msg::Failed {
                reason: "an executable hash is 64 hex digits".into(),
            });
        }
        let path = self.executables.join(&hash);
        if !path.exists() {
            wire::write_msg(stream, &Msg::NeedExecutable).await?;
            let mut bytes = Vec::with_capacity(size.min(1 << 30) as usize);
            loop {
                match wire::read_msg(stream).await? {
                    Msg::ExecutableChunk {
                        hash: h,
                        data,
                        last,
                    } if h == hash => {
                        bytes.extend_from_slice(&data);
                        if bytes.len() as u64 > size {
                            return Ok(Msg::Failed {
                                reason: "the executable is larger than announced".into(),
                            });
                        }
                        if last {
                            break;
                        }
                    }
                    other => {
                        return Ok(Msg::Failed {
                            reason: format!("expected executable chunks, got {}", other.name()),
                        })
                    }
                }
            }
            let actual = wire::executable_hash(&bytes);
            if actual != hash {
                return Ok(Msg::Failed {
                    reason: format!("the executable's hash is {actual}, not {hash}"),
                });
            }
            let tmp = path.with_extension("part");
            let mut f = tokio::fs::File::create(&tmp).await?;
            f.write_all(&bytes).await?;
            f.flush().await?;
            drop(f);
            {
                use std::os::unix::fs::PermissionsExt;
                tokio::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).await?;
            }
            tokio::fs::rename(&tmp, &path).await?;
        }
        let Some(node_address) = self.node_for(&peer) else {
            return Ok(Msg::Failed {
                reason: "the cluster has no live node to run work".into(),
            });
        };
        let _writing = self.writing.lock().await;
        let job = JobInfo {
            job: lock(&self.jobs).len() as u32 + 1,
            hash,
            args,
            driver_node: node_address.clone(),
        };
        let job = match self.commit(move |t| t.put_job(&job).map(|()| job)).await {
            Ok(job) => job,
            Err(reason) => return Ok(Msg::Failed { reason }),
        };
        lock(&self.jobs).push(job.clone());
        tracing::info!(job = job.job, %node_address, "head: job registered");
        Ok(Msg::JobAccepted { job, node_address })
    }

    async fn send_executable(&self, stream: &mut TcpStream, hash: &str) -> Result<(), WireError> {
        let bytes = if valid_hash(hash) {
            tokio::fs::read(self.executables.join(hash)).await.ok()
        } else {
            None
        };
        let Some(bytes) = bytes else {
            return wire::write_msg(
                stream,
                &Msg::Failed {
                    reason: format!("no executable {hash}"),
                },
            )
            .await;
        };
        let mut chunks = bytes.chunks(wire::CHUNK).peekable();
        if chunks.peek().is_none() {
            return wire::write_msg(
                stream,
                &Msg::ExecutableChunk {
                    hash: hash.to_string(),
                    data: Vec::new(),
                    last: true,
                },
            )
            .await;
        }
        while let Some(c) = chunks.next() {
            let msg = Msg::ExecutableChunk {
                hash: hash.to_string(),
                data: c.to_vec(),
                last: chunks.peek().is_none(),
            };
            stream.write_all(&wire::frame(&msg)?).await?;
        }
        stream.flush().await?;
        Ok(())
    }
}

fn valid_hash(h: &str) -> bool {
    h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())
}
