//! The embedded runtime: one process owning an object store, a scheduler with its worker
//! pool, and the actor directory; the global slot `init` fills and `shutdown` empties;
//! and the life of one task from submission to result.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use crate::actor::Directory;
use crate::cluster::client::Client;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::object::{ObjectId, ObjectRef, RefCount, Store, Waiter};
use crate::sched::{Demand, Grant, Job, Scheduler};
use crate::task::{Arg, ArgKind, EncodedArg, LocalArgs, RemoteFunction, TaskOptions, TaskSpec};

/// The parts of a running runtime.
pub(crate) struct Runtime {
    pub store: Arc<Store>,
    pub sched: Arc<Scheduler>,
    pub actors: Directory,
    pub node_id: String,
    /// The id this process's objects carry (0 for the embedded runtime).
    owner: u32,
    next_seq: AtomicU64,
    /// The connection to the cluster, in a driver or a worker process.
    client: OnceLock<Arc<Client>>,
    /// A spill directory prism made itself, removed at shutdown.
    own_spill_dir: Option<PathBuf>,
}

static CURRENT: RwLock<Option<Arc<Runtime>>> = RwLock::new(None);

/// The running runtime, or [`Error::NotInitialized`].
pub(crate) fn current() -> Result<Arc<Runtime>> {
    CURRENT
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .ok_or(Error::NotInitialized)
}

/// Starts the embedded runtime and makes it current.
pub(crate) fn start(config: Config) -> Result<()> {
    let mut slot = CURRENT.write().unwrap_or_else(|e| e.into_inner());
    if slot.is_some() {
        return Err(Error::AlreadyInitialized);
    }
    *slot = Some(build(config, 0)?);
    Ok(())
}

/// Starts a runtime whose tasks run on the cluster at `address`: this process is a driver.
pub(crate) fn start_driver(config: Config, address: &str) -> Result<()> {
    let mut slot = CURRENT.write().unwrap_or_else(|e| e.into_inner());
    if slot.is_some() {
        return Err(Error::AlreadyInitialized);
    }
    let session = crate::cluster::session::dir();
    let head = if address == "auto" {
        crate::cluster::session::read_address(&session)?
    } else {
        address.to_string()
    };
    let token = match &config.token {
        Some(t) => t.clone(),
        None => crate::cluster::session::read_token(&session)?,
    };
    let rt = build(config, crate::cluster::session::random_u32())?;
    let client = Client::connect_driver(&head, &token, rt.store.clone())?;
    let _ = rt.client.set(Arc::new(client));
    *slot = Some(rt);
    Ok(())
}

/// Starts a local runtime for a worker process, current but not yet connected.
pub(crate) fn start_local(config: Config, owner: u32) -> Result<Arc<Runtime>> {
    let mut slot = CURRENT.write().unwrap_or_else(|e| e.into_inner());
    if slot.is_some() {
        return Err(Error::AlreadyInitialized);
    }
    let rt = build(config, owner)?;
    *slot = Some(rt.clone());
    Ok(rt)
}

/// Connects the current runtime to its node.
pub(crate) fn attach_client(client: Arc<Client>) {
    if let Ok(rt) = current() {
        let _ = rt.client.set(client);
    }
}

fn build(config: Config, owner: u32) -> Result<Arc<Runtime>> {
    config.validate()?;
    install_panic_hook();
    let node_id = std::env::var("PRISM_WORKER_NODE_ID").unwrap_or_else(|_| new_node_id());
    let (spill_dir, own_spill_dir) = match (&config.spill_dir, config.spilling) {
        (_, false) => (None, None),
        (Some(dir), true) => (Some(dir.clone()), None),
        (None, true) => {
            let dir =
                std::env::temp_dir().join(format!("prism-spill-{node_id}-{}", std::process::id()));
            (Some(dir.clone()), Some(dir))
        }
    };
    if let Some(dir) = &spill_dir {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("creating the spill directory", e))?;
    }
    let sched = Scheduler::new(&config);
    let rt = Runtime {
        store: Store::new(config.store_capacity(), spill_dir),
        sched,
        actors: Directory::default(),
        node_id,
        owner,
        next_seq: AtomicU64::new(1),
        client: OnceLock::new(),
        own_spill_dir,
    };
    tracing::debug!(node = %rt.node_id, cpus = config.num_cpus, "prism runtime started");
    Ok(Arc::new(rt))
}

pub(crate) fn stop() {
    let rt = CURRENT.write().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(rt) = rt {
        rt.sched.shutdown();
        rt.actors.shut_down();
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

impl Runtime {
    /// The connection to the cluster, in a driver or worker process.
    pub fn client(&self) -> Option<&Arc<Client>> {
        self.client.get()
    }

    pub fn next_id(&self) -> ObjectId {
        ObjectId::new(self.owner, self.next_seq.fetch_add(1, Ordering::Relaxed))
    }

    /// A new pending object and the first reference to it.
    pub fn new_object<T>(self: &Arc<Self>) -> (ObjectId, ObjectRef<T>) {
        let id = self.next_id();
        let count = self.store.create(id);
        (id, ObjectRef::from_count(Arc::new(count)))
    }

    /// The demand of `options`, if some configuration of this runtime can meet it.
    pub fn feasible_demand(&self, options: &TaskOptions) -> Result<Demand> {
        let d = options.demand()?;
        self.sched.check_feasible(&d)?;
        Ok(d)
    }

    /// Calls `then` once every object of `deps` is final: with `Ok` when all
    /// are ready, with the first failure otherwise.
    pub fn when_ready(
        self: &Arc<Self>,
        deps: Vec<Arc<RefCount>>,
        then: impl FnOnce(Result<()>) + Send + 'static,
    ) {
        if deps.is_empty() {
            return then(Ok(()));
        }
        let gate = Arc::new(Gate {
            remaining: AtomicUsize::new(deps.len() + 1),
            then: Mutex::new(Some(Box::new(then))),
        });
        for dep in &deps {
            let store = match &dep.home {
                crate::object::Home::Store(s) => s,
                crate::object::Home::Nowhere(e) => {
                    gate.settle(Some(e));
                    continue;
                }
            };
            let g = gate.clone();
            let waiter = Waiter::Dependent(Arc::new(move |failure| g.settle(failure)));
            match store.poll_value(dep.id, Some(waiter)) {
                None => {}
                Some(Ok(_)) => gate.settle(None),
                Some(Err(e)) => gate.settle(Some(&e)),
            }
        }
        gate.settle(None);
    }

    /// Submits a task of `function`; its result will be the object `id`.
    pub fn submit_task(
        self: &Arc<Self>,
        id: ObjectId,
        function: &'static RemoteFunction,
        args: Vec<Arg>,
        options: TaskOptions,
    ) {
        if let Some(client) = self.client.get() {
            return self.submit_to_cluster(client.clone(), id, function, args, options);
        }
        let demand = match self.feasible_demand(&options) {
            Ok(d) => d,
            Err(e) => {
                self.store.fail(id, e);
                return;
            }
        };
        let task = LocalTask {
            id,
            function,
            args,
            options,
            demand,
            attempt: 0,
        };
        let rt = self.clone();
        self.when_ready(refs_of(&task.args), move |deps| match deps {
            Ok(()) => rt.enqueue(task),
            Err(e) => {
                rt.store.fail(task.id, e);
            }
        });
    }

    /// Sends a task to the cluster once its reference arguments are ready: values and
    /// small objects inline, large objects as references to where they are kept.
    fn submit_to_cluster(
        self: &Arc<Self>,
        client: Arc<Client>,
        id: ObjectId,
        function: &'static RemoteFunction,
        args: Vec<Arg>,
        options: TaskOptions,
    ) {
        let rt = self.clone();
        let deps = refs_of(&args);
        self.when_ready(deps.clone(), move |ready| {
            let spec = ready.and_then(|()| {
                let args = args
                    .iter()
                    .map(|a| match &a.0 {
                        ArgKind::Value(v, codec) => (codec.encode)(v).map(EncodedArg::Inline),
                        ArgKind::Ref(c) => client.encode_ref(c.id),
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(TaskSpec {
                    task_id: id,
                    function: function.name.to_string(),
                    args,
                    options,
                })
            });
            match spec {
                Ok(spec) => client.submit(spec, deps),
                Err(e) => {
                    rt.store.fail(id, e);
                }
            }
        });
    }

    fn enqueue(self: &Arc<Self>, task: LocalTask) {
        let rt = self.clone();
        self.sched.submit(Job {
            demand: task.demand.clone(),
            keep: false,
            run: Box::new(move |grant| rt.run_task(task, grant)),
        });
    }

    /// Resolves the arguments of a call: shared values, reference arguments read from the
    /// store (all final by now). With `take`, the call's own copies are dropped so that a
    /// value passed by the caller reaches an owned parameter without a copy.
    pub fn resolve(&self, args: &mut Vec<Arg>, take: bool) -> Result<LocalArgs> {
        let mut values = Vec::with_capacity(args.len());
        for arg in args.iter() {
            match &arg.0 {
                ArgKind::Value(v, _) => values.push(Some(v.clone())),
                ArgKind::Ref(c) => match &c.home {
                    crate::object::Home::Store(s) => match s.poll_value(c.id, None) {
                        Some(Ok(v)) => values.push(Some(v)),
                        Some(Err(e)) => return Err(e),
                        None => return Err(Error::ObjectLost(c.id)),
                    },
                    crate::object::Home::Nowhere(e) => return Err(e.clone()),
                },
            }
        }
        if take {
            args.clear();
        }
        Ok(LocalArgs { values })
    }

    fn run_task(self: Arc<Self>, mut task: LocalTask, grant: &Grant) {
        if self.store.is_cancelled(task.id) {
            return;
        }
        let retry_left = task.options.retry_on_panic && task.attempt < task.options.max_retries;
        let args = match self.resolve(&mut task.args, !retry_left) {
            Ok(a) => a,
            Err(e) => {
                self.store.fail(task.id, e);
                return;
            }
        };
        let running = Running {
            task_id: Some(task.id),
            actor_id: None,
            function: task.function.name,
            grant: grant.clone(),
        };
        let f = task.function;
        let outcome = with_running(running, || catch_task_panic(move || (f.run_local)(args)));
        match outcome {
            Ok(out) => {
                self.store.complete(task.id, out.value, out.size, out.codec);
            }
            Err(message) if retry_left => {
                tracing::debug!(function = f.name, attempt = task.attempt, %message, "retrying after a panic");
                task.attempt += 1;
                self.enqueue(task);
            }
            Err(message) => {
                let function = task
                    .options
                    .name
                    .clone()
                    .unwrap_or_else(|| f.name.to_string());
                self.store.fail(
                    task.id,
                    Error::TaskFailed {
                        function,
                        message,
                        location: location(),
                    },
                );
            }
        }
    }
}

/// A task of the embedded runtime.
struct LocalTask {
    id: ObjectId,
    function: &'static RemoteFunction,
    args: Vec<Arg>,
    options: TaskOptions,
    demand: Demand,
    attempt: u32,
}

/// The reference arguments of a call, for dependency tracking.
pub(crate) fn refs_of(args: &[Arg]) -> Vec<Arc<RefCount>> {
    args.iter()
        .filter_map(|a| match &a.0 {
            ArgKind::Ref(c) => Some(c.clone()),
            ArgKind::Value(..) => None,
        })
        .collect()
}

type Continuation = Box<dyn FnOnce(Result<()>) + Send>;

/// Counts a call's unresolved arguments down to zero, or fails it at the first failure.
struct Gate {
    remaining: AtomicUsize,
    then: Mutex<Option<Continuation>>,
}

impl Gate {
    fn settle(&self, failure: Option<&Error>) {
        let fire = match failure {
            Some(e) => Some(Err(e.clone())),
            None if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 => Some(Ok(())),
            None => None,
        };
        if let Some(result) = fire {
            let then = self.then.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(then) = then {
                then(result);
            }
        }
    }
}

/// What the current thread is running, for [`crate::context`] and error locations.
#[derive(Clone)]
pub(crate) struct Running {
    pub task_id: Option<ObjectId>,
    pub actor_id: Option<crate::actor::ActorId>,
    pub function: &'static str,
    pub grant: Grant,
}

thread_local! {
    static RUNNING: RefCell<Option<Running>> = const { RefCell::new(None) };
    static IN_TASK: Cell<bool> = const { Cell::new(false) };
    static PANIC_NOTE: RefCell<Option<String>> = const { RefCell::new(None) };
}

pub(crate) fn with_running<R>(running: Running, f: impl FnOnce() -> R) -> R {
    let prev = RUNNING.with(|r| r.borrow_mut().replace(running));
    let out = f();
    RUNNING.with(|r| *r.borrow_mut() = prev);
    out
}

pub(crate) fn running() -> Option<Running> {
    RUNNING.with(|r| r.borrow().clone())
}

fn install_panic_hook() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_TASK.with(|t| t.get()) {
                // A task's panic is its result, reported to whoever reads it; printing it
                // here too would put noise in every program that handles errors.
                let at = info
                    .location()
                    .map(|l| format!(" (at {}:{})", l.file(), l.line()))
                    .unwrap_or_default();
                PANIC_NOTE.with(|n| *n.borrow_mut() = Some(at));
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs `f`, turning a panic into its message (with the panic's source location).
pub(crate) fn catch_task_panic<R>(f: impl FnOnce() -> R) -> std::result::Result<R, String> {
    let was = IN_TASK.with(|t| t.replace(true));
    // The runtime's own state is behind locks that tolerate poisoning; user state that a
    // panic leaves half-updated is the user's, as in Ray.
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    IN_TASK.with(|t| t.set(was));
    out.map_err(|payload| {
        let at = PANIC_NOTE
            .with(|n| n.borrow_mut().take())
            .unwrap_or_default();
        format!("{}{at}", panic_message(&*payload))
    })
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

/// Where the current thread is: worker, node and process.
pub(crate) fn location() -> String {
    let node = current().map(|rt| rt.node_id.clone()).unwrap_or_default();
    match crate::sched::current_worker() {
        Some(w) => format!("worker {w} of node {node} (pid {})", std::process::id()),
        None => format!("the driver of node {node} (pid {})", std::process::id()),
    }
}
