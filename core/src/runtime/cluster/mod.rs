//! The cluster backend: this process as a driver or a worker of a cluster (Ray's "core
//! worker"). It owns the objects it creates and the lineage to rebuild them
//! (`owner`), talks to its node and the head (`link`), serves and pulls large objects
//! (`objects`), keeps direct connections to other workers (`direct`), sends actors
//! their messages (`actors`) and, in a worker, runs the tasks and hosts the actors its
//! node sends it (`worker`, `host`).
//!
//! Results land in this process's store: small ones as encoded bytes, decoded on `get`
//! into the type asked for; large ones as a placeholder for where they are kept,
//! fetched (`Cluster::fetch`) when read.

mod actors;
mod args;
mod direct;
mod host;
mod lease;
mod link;
mod objects;
mod owner;
mod worker;

pub(crate) use actors::RemoteActor;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::id::{ActorId, ObjectId};
use crate::object::{AnyValue, Location, Store};
use crate::sched::{Pool, Work};
use crate::state::ObjectCounts;
use crate::sync::lock;
use crate::task::{refs_of, Arg, RemoteFunction, TaskOptions, TaskSpec};
use crate::wire::{self, env, JobInfo, Msg, NodeView, Role};

use self::direct::Reply;
use self::link::Link;
use self::objects::Objects;
use self::owner::Owner;
use self::worker::Worker;
use super::{deps, ActorRef, Ids};

/// This process's part in a cluster.
pub(crate) struct Cluster {
    link: Arc<Link>,
    owner: Arc<Owner>,
    objects: Arc<Objects>,
    store: Arc<Store>,
    pool: Arc<Pool>,
    /// In a worker process: the tasks and actors its node sends it.
    worker: Option<Arc<Worker>>,
    /// The actors this process holds handles to, so that a handle deserialized here
    /// joins the family this process already counts.
    attached: Mutex<HashMap<ActorId, Weak<ActorRef>>>,
    /// Starts the node connection's reader; see [`Cluster::start`].
    go: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    /// The I/O threads, for as long as the process is part of the cluster.
    io: Mutex<Option<tokio::runtime::Runtime>>,
    io_handle: tokio::runtime::Handle,
}

fn io_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("prism-io")
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the I/O runtime", e))
}

/// The arguments a worker process of this program must be started with so that it
/// reaches the same `prism::init()`: the program's own, or, in a test binary, the
/// running test's exact name.
fn worker_args() -> Vec<String> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(test) = std::thread::current().name().filter(|n| *n != "main") {
        if !args.iter().any(|a| a == test) {
            args = vec![test.to_string(), "--exact".into(), "--nocapture".into()];
        }
    }
    args
}

/// Registers this program as a job with the head at `head` (uploading the executable
/// if the head does not have it); returns the job and the node to submit to.
async fn register_job(head: &str, token: &str) -> Result<(JobInfo, String)> {
    let exe_path = std::env::current_exe().map_err(|e| Error::io("finding this program", e))?;
    let exe = std::fs::read(&exe_path).map_err(|e| Error::io("reading this program", e))?;
    let hash = wire::executable_hash(&exe);
    let (mut s, _) = wire::connect(head, token, Role::Driver).await?;
    wire::write_msg(
        &mut s,
        &Msg::RegisterJob {
            hash: hash.clone(),
            size: exe.len() as u64,
            args: worker_args(),
            submission: std::env::var(env::SUBMISSION).ok(),
        },
    )
    .await?;
    let mut reply: Msg = wire::read_msg(&mut s).await?;
    if reply == Msg::NeedExecutable {
        let mut chunks = exe.chunks(wire::CHUNK).peekable();
        while let Some(c) = chunks.next() {
            wire::write_msg(
                &mut s,
                &Msg::ExecutableChunk {
                    hash: hash.clone(),
                    data: c.to_vec(),
                    last: chunks.peek().is_none(),
                },
            )
            .await?;
        }
        reply = wire::read_msg(&mut s).await?;
    }
    match reply {
        Msg::JobAccepted { job, node_address } => Ok((job, node_address)),
        Msg::Failed { reason } => Err(Error::Cluster(format!(
            "the head refused the job: {reason}"
        ))),
        other => Err(Error::Cluster(format!(
            "the head answered {}",
            other.name()
        ))),
    }
}

/// What a worker process is told by its node's environment.
pub(crate) struct WorkerEnv {
    pub node: String,
    pub token: String,
    pub job: u32,
    pub head: String,
}

impl WorkerEnv {
    /// Reads the environment a node starts its workers with.
    pub fn read() -> Result<WorkerEnv> {
        let var = |name: &str| {
            std::env::var(name).map_err(|_| Error::Config(format!("{name} is not set")))
        };
        Ok(WorkerEnv {
            node: var(env::NODE)?,
            token: var(env::TOKEN)?,
            job: var(env::JOB)?
                .parse()
                .map_err(|_| Error::Config(format!("{} is not a job id", env::JOB)))?,
            head: std::env::var(env::HEAD).unwrap_or_default(),
        })
    }

    /// The runtime configuration the node's environment gives.
    pub fn config() -> Config {
        let mut config = Config::default();
        if let Some(cap) = std::env::var(env::STORE).ok().and_then(|v| v.parse().ok()) {
            config = config.object_store_memory(cap);
        }
        if let Some(dir) = std::env::var_os(env::SPILL) {
            config = config.spill_dir(dir);
        }
        config
    }
}

impl Cluster {
    /// Joins the cluster whose head is at `head` as a driver.
    pub fn driver(
        head: &str,
        token: &str,
        window: Duration,
        store: Arc<Store>,
        pool: Arc<Pool>,
    ) -> Result<Arc<Cluster>> {
        let io = io_runtime()?;
        let (job, node) = io.block_on(register_job(head, token))?;
        tracing::debug!(job = job.job, %node, "registered with the cluster");
        let cluster = Self::connect(
            io,
            head,
            &node,
            token,
            window,
            Role::Driver,
            job.job,
            store,
            pool,
        )?;
        cluster.start();
        Ok(cluster)
    }

    /// Connects a worker process to the node that started it; it reads what the node
    /// sends once [`Cluster::start`] is called.
    pub fn worker(env: &WorkerEnv, store: Arc<Store>, pool: Arc<Pool>) -> Result<Arc<Cluster>> {
        let io = io_runtime()?;
        let role = Role::Worker { job: env.job };
        let cluster = Self::connect(
            io,
            &env.head,
            &env.node,
            &env.token,
            Duration::ZERO,
            role,
            env.job,
            store,
            pool,
        )?;
        let _ = cluster.link.send(Msg::WorkerListening {
            address: cluster.objects.address().to_string(),
        });
        Ok(cluster)
    }

    #[allow(clippy::too_many_arguments)]
    fn connect(
        io: tokio::runtime::Runtime,
        head: &str,
        node: &str,
        token: &str,
        window: Duration,
        role: Role,
        job: u32,
        store: Arc<Store>,
        pool: Arc<Pool>,
    ) -> Result<Arc<Cluster>> {
        let stream = io.block_on(async {
            wire::connect(node, token, role.clone())
                .await
                .map(|(s, _)| s)
        })?;
        // The object server listens where this process meets its node: a worker on its
        // node's address, a driver on its own.
        let ip = match role {
            Role::Worker { .. } => stream.peer_addr(),
            _ => stream.local_addr(),
        }
        .map_err(|e| Error::io("reading the node connection's address", e))?
        .ip();
        let objects = Objects::bind(ip, token, store.clone(), &io)?;
        let (r, w) = {
            let _guard = io.enter();
            stream.into_split()
        };
        let outbox = {
            let _guard = io.enter();
            wire::spawn_writer(w, node.to_string())
        };
        let link = Arc::new(Link::new(
            job,
            head.to_string(),
            token.to_string(),
            window,
            outbox.clone(),
            node.to_string(),
        ));
        let owner = Arc::new(Owner {
            job,
            link: link.clone(),
            store: store.clone(),
            objects: objects.clone(),
            books: Mutex::new(Default::default()),
            io: io.handle().clone(),
            token: token.to_string(),
            directs: Mutex::new(HashMap::new()),
            lease: Mutex::new(None),
            leases: matches!(role, Role::Driver),
            pool: pool.clone(),
        });
        let freeing = Arc::downgrade(&owner);
        store.on_free(Box::new(move |id| {
            if let Some(owner) = freeing.upgrade() {
                owner.freed(id);
            }
        }));
        let worker = matches!(role, Role::Worker { .. })
            .then(|| Worker::new(pool.clone(), objects.clone(), link.clone()));
        let (go, started) = tokio::sync::oneshot::channel::<()>();
        let cluster = Arc::new(Cluster {
            link,
            owner,
            objects,
            store,
            pool,
            worker,
            attached: Mutex::new(HashMap::new()),
            go: Mutex::new(Some(go)),
            io_handle: io.handle().clone(),
            io: Mutex::new(Some(io)),
        });
        if let Some(w) = &cluster.worker {
            let w = w.clone();
            cluster
                .objects
                .take_calls(Arc::new(move |msg, reply| w.deliver(msg, reply)));
        }
        crate::state::start_recording();
        let flushing = Arc::downgrade(&cluster.link);
        let counted = Arc::downgrade(&cluster.store);
        cluster.io_handle.spawn(async move {
            let mut reported = None;
            loop {
                tokio::time::sleep(crate::state::FLUSH_EVERY).await;
                let (Some(link), Some(store)) = (flushing.upgrade(), counted.upgrade()) else {
                    return;
                };
                if link.lost().is_some() {
                    return;
                }
                flush_events(&link);
                report_objects(&link, job, &store, &mut reported);
            }
        });
        let reader = Arc::downgrade(&cluster);
        cluster.io_handle.spawn(async move {
            // Nothing is read until the process is ready for it.
            if started.await.is_err() {
                return;
            }
            read_node(reader, r, outbox).await;
        });
        Ok(cluster)
    }

    /// Starts reading what the node sends (results, and tasks for a worker).
    pub fn start(&self) {
        if let Some(go) = lock(&self.go).take() {
            let _ = go.send(());
        }
    }

    /// Whether this process is a worker.
    pub fn is_worker(&self) -> bool {
        self.worker.is_some()
    }

    /// Runs `f` off the I/O threads after `delay`.
    pub fn later(self: &Arc<Self>, delay: Duration, f: impl FnOnce() + Send + 'static) {
        let pool = self.pool.clone();
        self.io_handle.spawn(async move {
            tokio::time::sleep(delay).await;
            off_io(&pool, f);
        });
    }

    /// Runs `f` now, or on a pool thread if this is an I/O thread (see [`off_io`]).
    pub fn off_io(&self, f: impl FnOnce() + Send + 'static) {
        off_io(&self.pool, f)
    }

    /// This process's job.
    pub fn job(&self) -> u32 {
        self.link.job
    }

    /// Asks the head a question (within the reconnect window if it is away).
    pub fn ask_head(&self, msg: Msg) -> Result<Msg> {
        if lock(&self.io).is_none() {
            return Err(Error::Shutdown);
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(Error::Cluster(
                "the head cannot be asked from an I/O thread".into(),
            ));
        }
        self.io_handle.block_on(self.link.ask_head(&msg))
    }

    /// Sends a task to the cluster once its reference arguments are ready: values and
    /// small objects inline, large objects as references to where they are kept.
    pub fn submit_task(
        self: &Arc<Self>,
        id: ObjectId,
        ids: Arc<Ids>,
        function: &'static RemoteFunction,
        args: Vec<Arg>,
        options: TaskOptions,
    ) {
        if let Some(e) = self.link.lost() {
            self.store.fail(id, e);
            return;
        }
        crate::state::submitted(id, self.link.job, function.name);
        let me = self.clone();
        deps::when_ready(refs_of(&args), move |ready| {
            let cluster = me.clone();
            me.off_io(move || {
                let sent = ready.and_then(|()| {
                    let encoded =
                        args::encode(&cluster.store, &cluster.objects, &args, || ids.next())?;
                    let spec = TaskSpec {
                        task_id: id,
                        function: function.name.to_string(),
                        args: encoded.args,
                        options,
                    };
                    Ok((spec, encoded.keep))
                });
                match sent {
                    Ok((spec, keep)) => cluster.owner.submit(spec, keep),
                    Err(e) => {
                        cluster.store.fail(id, e);
                    }
                }
            });
        });
    }

    /// The live handle family of `id` in this process, if there is one.
    pub fn attached(&self, id: ActorId) -> Option<Arc<ActorRef>> {
        lock(&self.attached).get(&id).and_then(Weak::upgrade)
    }

    /// Notes a handle family of this process, for [`Cluster::attached`].
    pub fn remember(&self, actor: &Arc<ActorRef>) {
        let mut attached = lock(&self.attached);
        if attached.len() >= 64 && attached.len().is_power_of_two() {
            attached.retain(|_, a| a.strong_count() > 0);
        }
        attached.insert(actor.id(), Arc::downgrade(actor));
    }

    /// Where this process serves its objects.
    pub fn object_address(&self) -> String {
        self.objects.address().to_string()
    }

    /// The value of `id`, kept at `at`: pulled into this process (or rebuilt if lost).
    pub fn fetch(&self, id: ObjectId, at: Location) -> Result<AnyValue> {
        self.owner.fetch(id, at)
    }

    /// The nodes the head knows.
    pub fn nodes(&self) -> Result<Vec<NodeView>> {
        match self.ask_head(Msg::Status)? {
            Msg::ClusterView { nodes } => Ok(nodes),
            other => Err(Error::Cluster(format!(
                "the head answered {} to a status request",
                other.name()
            ))),
        }
    }

    /// Runs `f`, a wait, telling the node that the running task lends its CPUs.
    pub fn blocking<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.worker {
            Some(w) => w.blocking(f),
            None => f(),
        }
    }

    /// Leaves the cluster: connections close, the I/O threads end without waiting. A
    /// driver first hands the head the events it has not sent yet (its node may see
    /// it leave before their flush).
    pub fn close(&self) {
        // Not from an I/O thread, which cannot wait for the answer: the events stay
        // in the buffer rather than being taken and dropped.
        let can_wait = tokio::runtime::Handle::try_current().is_err();
        if can_wait && !self.is_worker() && self.link.lost().is_none() {
            if let Some(batch) = crate::state::take() {
                let msg = Msg::Events { batch };
                // The timer is made inside the runtime, not on this thread.
                let last = async {
                    tokio::time::timeout(LAST_EVENTS, self.link.ask_head_once(&msg)).await
                };
                let _ = self.io_handle.block_on(last);
            }
        }
        if let Some(io) = lock(&self.io).take() {
            io.shutdown_background();
        }
    }
}

/// How long a leaving driver waits for the head to take its last events.
const LAST_EVENTS: Duration = Duration::from_secs(1);

/// Sends the events this process recorded since the last flush to its node.
fn flush_events(link: &Link) {
    if let Some(batch) = crate::state::take() {
        let _ = link.send(Msg::Events { batch });
    }
}

/// Tells the node what this process's store holds, if that changed since `reported`.
fn report_objects(link: &Link, job: u32, store: &Store, reported: &mut Option<ObjectCounts>) {
    let objects = ObjectCounts::from(store.stats());
    if *reported != Some(objects) {
        let pid = std::process::id();
        if link.send(Msg::ProcessObjects { job, pid, objects }).is_ok() {
            *reported = Some(objects);
        }
    }
}

/// Runs `f` now, or as work on `pool` if this is an I/O thread: nothing may block or
/// encode at length there (the results that make arguments ready arrive there), and a
/// pool thread is one that already exists, not a new one per call.
pub(crate) fn off_io(pool: &Arc<Pool>, f: impl FnOnce() + Send + 'static) {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    pool.submit(Work {
        demand: Default::default(),
        keep: false,
        run: Box::new(move |_| f()),
        abandon: None,
    });
}

/// Reads what the node sends, until the connection closes. A worker without its node
/// has nothing left to do and exits; a driver rejoins the cluster and reads on.
async fn read_node(
    cluster: Weak<Cluster>,
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut outbox: wire::Outbox,
) {
    loop {
        read_until_closed(&cluster, r, &outbox).await;
        let Some(c) = cluster.upgrade() else { return };
        if c.is_worker() {
            // A worker without its node has nothing left to do.
            std::process::exit(0);
        }
        if !c.link.went_down() {
            return;
        }
        drop(c);
        match rejoin(&cluster).await {
            Some((read, out)) => (r, outbox) = (read, out),
            None => return,
        }
    }
}

async fn read_until_closed(
    cluster: &Weak<Cluster>,
    r: tokio::net::tcp::OwnedReadHalf,
    outbox: &wire::Outbox,
) {
    let mut r = tokio::io::BufReader::with_capacity(wire::READ_BUFFER, r);
    loop {
        let msg = match wire::read_msg::<_, Msg>(&mut r).await {
            Ok(m) => m,
            Err(e) => {
                tracing::info!("lost the node: {e}");
                return;
            }
        };
        let Some(c) = cluster.upgrade() else { return };
        match msg {
            Msg::TaskDone { task_id, result } => c.owner.done(task_id, result),
            Msg::LeaseGranted { lease } => c.owner.lease_granted(lease),
            Msg::FreeObjects { ids, .. } => {
                let freed = c.objects.free(&ids);
                c.off_io(move || drop(freed));
            }
            Msg::Output { stderr, lines, .. } => {
                use std::io::Write;
                for line in lines {
                    if stderr {
                        let _ = writeln!(std::io::stderr(), "{line}");
                    } else {
                        let _ = writeln!(std::io::stdout(), "{line}");
                    }
                }
            }
            Msg::FlushEvents => flush_events(&c.link),
            Msg::Failed { reason } => tracing::warn!("the node refused a request: {reason}"),
            m @ (Msg::RunTask { .. }
            | Msg::Release { .. }
            | Msg::CreateActor { .. }
            | Msg::ToActor { .. }) => match &c.worker {
                Some(w) => w.deliver(m, Reply::Queue(outbox.clone())),
                None => tracing::warn!("a driver was sent {}", m.name()),
            },
            other => tracing::warn!("unexpected {} from the node", other.name()),
        }
    }
}

/// A driver lost its node: asks the head for a node to use now and connects there,
/// until the reconnect window passes. Then it gives up, and everything pending fails.
async fn rejoin(cluster: &Weak<Cluster>) -> Option<(tokio::net::tcp::OwnedReadHalf, wire::Outbox)> {
    let mut last = String::from("the connection to the node was lost");
    loop {
        let c = cluster.upgrade()?;
        let down = c.link.down_for().unwrap_or_default();
        if c.link.window_passed(down) {
            let err = c.link.give_up(&last);
            tracing::warn!("{err}");
            // Failing what waits runs its waiters, and dropping the books drops user
            // values: not on this I/O thread.
            let owner = c.owner.clone();
            c.off_io(move || owner.lost(&err));
            return None;
        }
        match try_rejoin(&c).await {
            Ok((node, r, outbox)) => {
                // What was in flight before the link came back (what is sent after goes
                // to the new node once).
                let (tasks, calls) = c.owner.in_flight();
                c.link.came_back(outbox.clone(), node.clone()).ok()?;
                tracing::info!(%node, "rejoined the cluster");
                let owner = c.owner.clone();
                c.off_io(move || owner.resubmit_all(tasks, calls, "the driver's node went away"));
                return Some((r, outbox));
            }
            Err(e) => {
                tracing::debug!("cannot rejoin the cluster yet: {e}");
                last = e.to_string();
            }
        }
        drop(c);
        tokio::time::sleep(Link::retry_every()).await;
    }
}

async fn try_rejoin(c: &Cluster) -> Result<(String, tokio::net::tcp::OwnedReadHalf, wire::Outbox)> {
    let node = match c
        .link
        .ask_head_once(&Msg::RejoinJob { job: c.link.job })
        .await?
    {
        Msg::JobAccepted { node_address, .. } => node_address,
        Msg::Failed { reason } => return Err(Error::Cluster(reason)),
        other => {
            return Err(Error::Cluster(format!(
                "the head answered {} to a rejoin",
                other.name()
            )))
        }
    };
    let stream = c.link.connect_node(&node, Role::Driver).await?;
    let (r, w) = stream.into_split();
    let outbox = wire::spawn_writer(w, node.clone());
    Ok((node, r, outbox))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread_name() -> String {
        std::thread::current().name().unwrap_or("").to_string()
    }

    #[test]
    fn work_handed_over_on_an_io_thread_runs_on_the_pool_and_elsewhere_at_once() {
        let pool = Pool::new(&Config::default().num_cpus(1.0), false);
        let io = io_runtime().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..100 {
            let tx = tx.clone();
            io.block_on(async { off_io(&pool, move || tx.send(thread_name()).unwrap()) });
        }
        let names: Vec<String> = (0..100)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        assert!(
            names.iter().all(|n| n.starts_with("prism-worker-")),
            "{names:?}"
        );
        let distinct: std::collections::BTreeSet<&String> = names.iter().collect();
        assert!(
            distinct.len() <= 4,
            "a few pool threads, not one per call: {distinct:?}"
        );
        let tx = tx.clone();
        off_io(&pool, move || tx.send(thread_name()).unwrap());
        assert_eq!(
            rx.recv().unwrap(),
            thread_name(),
            "off an I/O thread it runs at once"
        );
        pool.shutdown();
    }
}
