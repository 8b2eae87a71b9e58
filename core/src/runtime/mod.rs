//! The process's runtime: its object store, its pool of worker threads, and its
//! backend, an enum over the two modes: embedded (the whole system in this process) or
//! cluster (this process as a driver or a worker of a cluster). This module is the one
//! place that asks which mode runs: the API, tasks and actor handles call the runtime,
//! and the runtime calls its backend.
//!
//! * `embedded`: tasks on the pool with shared values, actors in mailboxes here.
//! * `cluster`: the driver's and the worker's side of a cluster.
//! * `mailbox`: the actor mailbox both backends host actors in.
//! * `deps`: waiting for objects, and running a call once its arguments are ready.
//! * `context`: what the current thread runs.
//! * `groups`: the placement groups this process knows, and calls waiting for them.

pub(crate) mod cluster;
pub(crate) mod context;
pub(crate) mod deps;
pub(crate) mod embedded;
mod groups;
mod mailbox;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::actor::{ActorOptions, Constructor, Method};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::id::{ActorId, ObjectId};
use crate::object::{AnyValue, Held, Location, ObjectRef, Store};
use crate::sched::{Demand, Pool};
use crate::task::{Arg, RemoteFunction, Strategy, TaskOptions};
use crate::wire::NodeView;

use self::cluster::{Cluster, RemoteActor, WorkerEnv};
use self::embedded::actors::LocalHandle;
use self::embedded::Embedded;

/// The object ids this process gives out: its owner id and a sequence.
pub(crate) struct Ids {
    owner: u32,
    next: AtomicU64,
}

impl Ids {
    fn new(owner: u32) -> Ids {
        Ids {
            owner,
            next: AtomicU64::new(1),
        }
    }

    /// A fresh object id.
    pub fn next(&self) -> ObjectId {
        ObjectId::new(self.owner, self.next.fetch_add(1, Ordering::Relaxed))
    }
}

/// The mode the runtime runs in, and what it keeps for it.
pub(crate) enum Backend {
    /// Everything in this process.
    Embedded(Embedded),
    /// A driver or worker of a cluster.
    Cluster(Arc<Cluster>),
}

/// The parts of a running runtime.
pub(crate) struct Runtime {
    pub store: Arc<Store>,
    pub pool: Arc<Pool>,
    pub node_id: String,
    pub ids: Arc<Ids>,
    backend: Backend,
    /// A spill directory prism made itself, removed at shutdown.
    own_spill_dir: Option<PathBuf>,
    /// The placement groups this process created or looked up.
    groups: groups::Groups,
}

static CURRENT: RwLock<Option<Arc<Runtime>>> = RwLock::new(None);

/// The running runtime, or [`Error::NotInitialized`].
pub(crate) fn current() -> Result<Arc<Runtime>> {
    crate::sync::read(&CURRENT)
        .clone()
        .ok_or(Error::NotInitialized)
}

/// Starts the runtime `config` asks for and makes it current: a driver of the cluster
/// at `config`'s address (or `PRISM_ADDRESS`), else the embedded runtime. In a
/// process a node started as a worker, serves the node instead and never returns.
pub(crate) fn start(config: Config) -> Result<()> {
    enter_if_worker();
    let address = config.address.clone().or_else(|| {
        std::env::var("PRISM_ADDRESS")
            .ok()
            .filter(|a| !a.is_empty())
    });
    let mut slot = crate::sync::write(&CURRENT);
    if slot.is_some() {
        return Err(Error::AlreadyInitialized);
    }
    let rt = match address {
        None => {
            let parts = Parts::new(&config, 0, true)?;
            parts.into_runtime(Backend::Embedded(Embedded::new()))
        }
        Some(address) => {
            let session = crate::session::dir();
            let head = if address == "auto" {
                crate::session::read_address(&session)?
            } else {
                address
            };
            let token = match &config.token {
                Some(t) => t.clone(),
                None => crate::session::read_token(&session)?,
            };
            let parts = Parts::new(&config, crate::session::random_u32(), false)?;
            let cluster = Cluster::driver(
                &head,
                &token,
                config.reconnect_window_or_default(),
                parts.store.clone(),
                parts.pool.clone(),
            )?;
            parts.into_runtime(Backend::Cluster(cluster))
        }
    };
    crate::object::set_current(Some(rt.store.clone()));
    crate::object::set_server(rt.object_server());
    *slot = Some(rt);
    Ok(())
}

/// In a worker process, serves tasks until the node goes away and then exits; anywhere
/// else, returns at once.
pub(crate) fn enter_if_worker() {
    if !crate::wire::env::is_worker() {
        return;
    }
    if let Err(e) = serve_as_worker() {
        eprintln!("prism worker: {e}");
        std::process::exit(2);
    }
    // The node connection's reader exits the process when the node goes away.
    loop {
        std::thread::park();
    }
}

fn serve_as_worker() -> Result<()> {
    let env = WorkerEnv::read()?;
    let config = WorkerEnv::config();
    let mut slot = crate::sync::write(&CURRENT);
    if slot.is_some() {
        return Err(Error::AlreadyInitialized);
    }
    let parts = Parts::new(&config, crate::session::random_u32(), false)?;
    let cluster = Cluster::worker(&env, parts.store.clone(), parts.pool.clone())?;
    let rt = parts.into_runtime(Backend::Cluster(cluster.clone()));
    crate::object::set_current(Some(rt.store.clone()));
    crate::object::set_server(rt.object_server());
    *slot = Some(rt);
    drop(slot);
    cluster.start();
    Ok(())
}

/// The parts of a runtime every mode has.
struct Parts {
    store: Arc<Store>,
    pool: Arc<Pool>,
    node_id: String,
    owner: u32,
    own_spill_dir: Option<PathBuf>,
}

impl Parts {
    fn new(config: &Config, owner: u32, spins: bool) -> Result<Parts> {
        config.validate()?;
        crate::task::panic::install_hook();
        crate::task::panic::set_locator(context::location);
        let node_id = std::env::var(crate::wire::env::NODE_ID).unwrap_or_else(|_| new_node_id());
        let (spill_dir, own_spill_dir) = match (&config.spill_dir, config.spilling) {
            (_, false) => (None, None),
            (Some(dir), true) => (Some(dir.clone()), None),
            (None, true) => {
                let dir = std::env::temp_dir()
                    .join(format!("prism-spill-{node_id}-{}", std::process::id()));
                (Some(dir.clone()), Some(dir))
            }
        };
        if let Some(dir) = &spill_dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io("creating the spill directory", e))?;
        }
        Ok(Parts {
            store: Store::new(config.store_capacity(), spill_dir),
            pool: Pool::new(config, spins),
            node_id,
            owner,
            own_spill_dir,
        })
    }

    fn into_runtime(self, backend: Backend) -> Arc<Runtime> {
        tracing::debug!(node = %self.node_id, "prism runtime started");
        Arc::new(Runtime {
            store: self.store,
            pool: self.pool,
            node_id: self.node_id,
            ids: Arc::new(Ids::new(self.owner)),
            backend,
            own_spill_dir: self.own_spill_dir,
            groups: groups::Groups::default(),
        })
    }
}

/// Stops the runtime, if one runs.
pub(crate) fn stop() {
    let rt = crate::sync::write(&CURRENT).take();
    crate::object::set_current(None);
    crate::object::set_server(None);
    if let Some(rt) = rt {
        rt.pool.shutdown();
        rt.groups.shut_down();
        match &rt.backend {
            Backend::Embedded(e) => e.shut_down(),
            Backend::Cluster(c) => c.close(),
        }
        rt.store.shut_down();
        if let Some(dir) = &rt.own_spill_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        tracing::debug!(node = %rt.node_id, "prism runtime stopped");
    }
}

fn new_node_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mixed = (nanos as u64) ^ ((std::process::id() as u64) << 32);
    format!("{:016x}", mixed.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// A handle on an actor as it travels: the id, the class, the name and, for an actor
/// on a cluster, the node that placed it.
#[derive(Serialize, Deserialize)]
pub(crate) struct HandleWire {
    pub id: ActorId,
    pub class: String,
    pub name: Option<String>,
    pub home: Option<String>,
}

/// An actor as this process reaches it: one per family of cloned handles, counted where
/// the actor lives; dropping it is the handle family's end.
pub(crate) enum ActorRef {
    /// In this process.
    Local(LocalHandle),
    /// In a worker process of the cluster.
    Remote(Arc<RemoteActor>),
    /// Never started: there was no runtime. Calls fail with the error.
    Unstarted(Error, &'static str),
}

impl Drop for ActorRef {
    fn drop(&mut self) {
        if let ActorRef::Remote(r) = self {
            r.release();
        }
    }
}

impl ActorRef {
    /// The actor's id.
    pub fn id(&self) -> ActorId {
        match self {
            ActorRef::Local(h) => h.id(),
            ActorRef::Remote(r) => r.id,
            ActorRef::Unstarted(..) => ActorId::from(ObjectId::new(0, 0)),
        }
    }

    /// The actor's class.
    pub fn class(&self) -> &str {
        match self {
            ActorRef::Local(h) => h.class(),
            ActorRef::Remote(r) => &r.class,
            ActorRef::Unstarted(_, class) => class,
        }
    }

    /// The actor's name, if it was given one.
    pub fn name(&self) -> Option<&str> {
        match self {
            ActorRef::Local(h) => h.name(),
            ActorRef::Remote(r) => r.name.as_deref(),
            ActorRef::Unstarted(..) => None,
        }
    }

    /// Where the actor lives, for its `Debug` form: the node that placed it.
    pub fn home(&self) -> Option<&str> {
        match self {
            ActorRef::Remote(r) => Some(&r.home),
            _ => None,
        }
    }

    /// Queues a call of the method `name` (`method` is its body, for the embedded mode).
    pub fn call<R>(&self, name: &'static str, args: Vec<Arg>, method: Method) -> ObjectRef<R> {
        match self {
            ActorRef::Local(h) => h.call(name, args, method),
            ActorRef::Remote(r) => r.call(name, args),
            ActorRef::Unstarted(e, _) => ObjectRef::failed(ObjectId::new(0, 0), e.clone()),
        }
    }

    /// Kills the actor: queued and later calls fail with [`Error::ActorDied`].
    pub fn kill(&self) {
        match self {
            ActorRef::Local(h) => h.kill(),
            ActorRef::Remote(r) => r.kill(),
            ActorRef::Unstarted(..) => {}
        }
    }

    /// The handle as it travels.
    pub fn to_wire(&self) -> HandleWire {
        HandleWire {
            id: self.id(),
            class: self.class().to_string(),
            name: self.name().map(str::to_string),
            home: self.home().map(str::to_string),
        }
    }
}

/// An actor for code that has no runtime: every call fails with `err`.
pub(crate) fn unstarted_actor(err: Error, class: &'static str) -> ActorRef {
    ActorRef::Unstarted(err, class)
}

impl Runtime {
    /// A fresh object id of this process.
    pub fn next_id(&self) -> ObjectId {
        self.ids.next()
    }

    /// A new pending object and the first reference to it.
    pub fn new_object<T>(&self) -> (ObjectId, ObjectRef<T>) {
        let id = self.next_id();
        let count = self.store.create(id);
        (id, ObjectRef::from_count(Arc::new(count)))
    }

    /// The demand of `options`, if some configuration of this runtime can meet it.
    pub fn feasible_demand(&self, options: &TaskOptions) -> Result<Demand> {
        let d = Demand::of(options)?;
        self.pool.check_feasible(&d)?;
        Ok(d)
    }

    /// Submits a task of `function`; its result will be the object `id`.
    pub fn submit_task(
        self: &Arc<Self>,
        id: ObjectId,
        function: &'static RemoteFunction,
        args: Vec<Arg>,
        options: TaskOptions,
    ) {
        if let Strategy::PlacementGroup { .. } = options.scheduling {
            let rt = self.clone();
            return self.when_placed(options, move |placed| match placed {
                Ok(options) => rt.submit_task(id, function, args, options),
                Err(e) => {
                    rt.store.fail(id, e);
                }
            });
        }
        match &self.backend {
            Backend::Embedded(e) => e.submit_task(self, id, function, args, options),
            Backend::Cluster(c) => c.submit_task(id, self.ids.clone(), function, args, options),
        }
    }

    /// Starts an actor of `class`.
    pub fn spawn_actor(
        self: &Arc<Self>,
        class: &'static str,
        options: ActorOptions,
        args: Vec<Arg>,
        construct: Constructor,
    ) -> Arc<ActorRef> {
        let options = if let Strategy::PlacementGroup { .. } = options.task.scheduling {
            // The actor starts once its group is ready: its spawner waits for that.
            let (tx, rx) = std::sync::mpsc::channel();
            self.when_placed(options.task.clone(), move |placed| {
                let _ = tx.send(placed);
            });
            let placed = self.blocking(|| rx.recv().unwrap_or(Err(Error::Shutdown)));
            match placed {
                Ok(task) => ActorOptions { task, ..options },
                Err(e) => return Arc::new(unstarted_actor(e, class)),
            }
        } else {
            options
        };
        let actor = match &self.backend {
            Backend::Embedded(e) => ActorRef::Local(embedded::actors::spawn(
                self, &e.actors, class, options, args, construct,
            )),
            Backend::Cluster(c) => {
                let remote = RemoteActor::create(self, c, class, options, args);
                ActorRef::Remote(remote)
            }
        };
        let actor = Arc::new(actor);
        if let Backend::Cluster(c) = &self.backend {
            c.remember(&actor);
        }
        actor
    }

    /// The named actor `name`, if it is a `class`.
    pub fn find_actor(self: &Arc<Self>, name: &str, class: &str) -> Result<Arc<ActorRef>> {
        match &self.backend {
            Backend::Embedded(e) => {
                embedded::actors::find(&e.actors, name, class).map(|h| Arc::new(ActorRef::Local(h)))
            }
            Backend::Cluster(c) => {
                let remote = RemoteActor::find(self, c, name, class)?;
                let actor = Arc::new(ActorRef::Remote(remote));
                c.remember(&actor);
                Ok(actor)
            }
        }
    }

    /// A handle that travelled (deserialized), as this process reaches the actor.
    pub fn attach_actor(self: &Arc<Self>, wire: HandleWire) -> Result<Arc<ActorRef>> {
        match &self.backend {
            Backend::Embedded(e) => {
                embedded::actors::attach(&e.actors, wire.id).map(|h| Arc::new(ActorRef::Local(h)))
            }
            Backend::Cluster(c) => {
                if let Some(live) = c.attached(wire.id) {
                    return Ok(live);
                }
                let home = wire.home.ok_or_else(|| Error::ActorDied {
                    actor: wire.id.to_string(),
                    reason: "the handle was made by an embedded runtime".into(),
                })?;
                let remote = RemoteActor::attach(self, c, wire.id, wire.class, wire.name, home);
                let actor = Arc::new(ActorRef::Remote(remote));
                c.remember(&actor);
                Ok(actor)
            }
        }
    }

    /// Where other processes pull this process's objects from (a cluster's object
    /// server; none embedded).
    fn object_server(&self) -> Option<String> {
        match &self.backend {
            Backend::Embedded(_) => None,
            Backend::Cluster(c) => Some(c.object_address()),
        }
    }

    /// The value of a final object `id`: here, or fetched from where it lives.
    pub fn value(&self, id: ObjectId, held: Held) -> Result<AnyValue> {
        match held {
            Held::Here(v) => Ok(v),
            Held::Elsewhere(at) => self.fetch(id, at),
        }
    }

    fn fetch(&self, id: ObjectId, at: Location) -> Result<AnyValue> {
        match &self.backend {
            // Nothing here lives elsewhere.
            Backend::Embedded(_) => Err(Error::ObjectLost(id)),
            Backend::Cluster(c) => c.fetch(id, at),
        }
    }

    /// The nodes of the runtime: every node the head knows, or the one local node.
    pub fn nodes(&self) -> Result<Vec<NodeView>> {
        match &self.backend {
            Backend::Embedded(_) => {
                let (total, available) = self.pool.resources();
                Ok(vec![NodeView {
                    node_id: self.node_id.clone(),
                    address: String::new(),
                    total,
                    available,
                    queued: 0,
                    running: 0,
                    alive: true,
                    pending: Vec::new(),
                }])
            }
            Backend::Cluster(c) => c.nodes(),
        }
    }

    /// Runs `f`, a wait, with the CPUs of the task running on this thread lent to
    /// others meanwhile.
    pub fn blocking<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.backend {
            Backend::Embedded(_) => crate::sched::blocking(f),
            Backend::Cluster(c) => c.blocking(f),
        }
    }
}
