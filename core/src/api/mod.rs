//! The free functions users call: start and stop the runtime, put and get objects, wait,
//! cancel, kill, find actors, and ask where the current code runs. They talk to the
//! runtime only, never to a mode.
//!
//! * `handle`: the actor handles users hold, and the entry points of the generated code.
//! * `future`: `.await` on an object reference.

mod future;
mod group;
mod handle;

pub use future::ObjectFuture;
pub use group::{placement_group, remove_placement_group, PlacementGroup};
#[doc(hidden)]
pub use handle::{spawn, submit};
pub use handle::{Actor, ActorHandle};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::id::{ActorId, ObjectId};
use crate::object::{self, Codec, ObjectRef, Signal, Store, StoreStats, Value};
use crate::runtime::{self, context, deps};
use crate::wire::NodeView;

/// Starts prism with the default [`Config`]: the embedded runtime on every core of this
/// machine, or a driver of the cluster `PRISM_ADDRESS` names.
///
/// A second `init` without [`shutdown`] fails with [`Error::AlreadyInitialized`].
///
/// ```
/// prism::init().unwrap();
/// assert!(matches!(prism::init(), Err(prism::Error::AlreadyInitialized)));
/// prism::shutdown();
/// ```
pub fn init() -> Result<()> {
    init_with(Config::default())
}

/// Starts prism with `config`: a driver of the cluster at [`Config::address`] (or
/// `PRISM_ADDRESS`) if one is given, the embedded runtime otherwise. In a process a
/// cluster node started as a worker, serves the node instead and never returns.
///
/// ```
/// prism::init_with(prism::Config::default().num_cpus(2.0).resource("fpga", 1.0)).unwrap();
/// assert_eq!(prism::cluster_resources().unwrap()["fpga"], 1.0);
/// prism::shutdown();
/// ```
pub fn init_with(config: Config) -> Result<()> {
    runtime::start(config)
}

/// In a process a cluster node started as a worker, serves the node and never returns;
/// anywhere else, returns at once. [`init`] calls it first; a program that starts a
/// cluster of its own before calling `init` (a test, a benchmark) calls it before
/// anything else, so that its worker processes do not start clusters too.
pub fn enter_if_worker() {
    runtime::enter_if_worker()
}

/// Stops the runtime: queued tasks are dropped, pending objects fail with
/// [`Error::Shutdown`], actors end. A later [`init`] starts afresh. Does nothing if the
/// runtime is not running.
pub fn shutdown() {
    runtime::stop()
}

/// Whether the runtime is running.
pub fn is_initialized() -> bool {
    runtime::current().is_ok()
}

/// Stores a value and returns a reference to it. The value is moved into the store,
/// not copied; tasks that take it by reference share it.
///
/// If the value does not fit even after spilling, reading the ref fails with
/// [`Error::ObjectStoreFull`].
///
/// ```
/// # prism::init().unwrap();
/// let r = prism::put(String::from("hello"));
/// assert_eq!(prism::get(&r).unwrap(), "hello");
/// # prism::shutdown();
/// ```
pub fn put<T: Value>(value: T) -> ObjectRef<T> {
    put_arc(Arc::new(value))
}

/// Stores a value that is already shared behind an `Arc`, without copying it.
pub fn put_arc<T: Value>(value: Arc<T>) -> ObjectRef<T> {
    let rt = match runtime::current() {
        Ok(rt) => rt,
        Err(e) => return ObjectRef::failed(ObjectId::new(0, 0), e),
    };
    let (id, r) = rt.new_object::<T>();
    let size = object::footprint(&*value);
    rt.store.complete(id, value, size, Codec::of::<T>());
    r
}

/// The value of a final object `id` of `store`, as a `T`: here, or fetched from where
/// it lives.
fn typed<T: Value>(store: &Store, id: ObjectId) -> Option<Result<Arc<T>>> {
    let held = match store.poll(id, None)? {
        Ok(held) => held,
        Err(e) => return Some(Err(e)),
    };
    let value = match held {
        object::Held::Here(v) => Ok(v),
        elsewhere => runtime::current().and_then(|rt| rt.value(id, elsewhere)),
    };
    Some(value.and_then(|v| object::downcast::<T>(id, v)))
}

fn get_any<T: Value>(
    r: &ObjectRef<T>,
    deadline: Option<Instant>,
    timeout: Duration,
) -> Result<Arc<T>> {
    let store = r.count.store()?;
    let id = r.id();
    loop {
        if let Some(v) = typed::<T>(store, id) {
            return v;
        }
        if !deps::wait_settled(store, &[id], deadline) && store.is_pending(id) {
            return Err(Error::Timeout(timeout));
        }
    }
}

/// Waits for an object and returns a copy of its value (the store keeps its own).
///
/// ```
/// # prism::init().unwrap();
/// let r = prism::put(vec![1.5_f64, 2.5]);
/// assert_eq!(prism::get(&r).unwrap(), vec![1.5, 2.5]);
/// # prism::shutdown();
/// ```
pub fn get<T: Value + Clone>(r: &ObjectRef<T>) -> Result<T> {
    get_arc(r).map(|a| (*a).clone())
}

/// Waits for an object and shares it: no copy, whatever its size.
///
/// ```
/// # prism::init().unwrap();
/// let r = prism::put(vec![0u8; 1 << 20]);
/// let a = prism::get_arc(&r).unwrap();
/// let b = prism::get_arc(&r).unwrap();
/// assert!(std::sync::Arc::ptr_eq(&a, &b));
/// # prism::shutdown();
/// ```
pub fn get_arc<T: Value>(r: &ObjectRef<T>) -> Result<Arc<T>> {
    get_any(r, None, Duration::MAX)
}

/// Like [`get`], but fails with [`Error::Timeout`] after `timeout`.
pub fn get_timeout<T: Value + Clone>(r: &ObjectRef<T>, timeout: Duration) -> Result<T> {
    get_any(r, Some(Instant::now() + timeout), timeout).map(|a| (*a).clone())
}

/// Waits for all objects and returns their values in input order. Fails as soon as any
/// of them fails, without waiting for the others.
///
/// ```
/// # prism::init().unwrap();
/// let refs: Vec<_> = (0..4).map(prism::put).collect();
/// assert_eq!(prism::get_all(&refs).unwrap(), vec![0, 1, 2, 3]);
/// # prism::shutdown();
/// ```
pub fn get_all<T: Value + Clone>(refs: &[ObjectRef<T>]) -> Result<Vec<T>> {
    Ok(get_all_arc(refs)?
        .into_iter()
        .map(|a| (*a).clone())
        .collect())
}

/// Like [`get_all`], sharing the values instead of copying them.
pub fn get_all_arc<T: Value>(refs: &[ObjectRef<T>]) -> Result<Vec<Arc<T>>> {
    let Some(first) = refs.first() else {
        return Ok(Vec::new());
    };
    let store = first.count.store()?;
    let ids: Vec<ObjectId> = refs.iter().map(|r| r.id()).collect();
    for r in refs {
        r.count.store()?;
    }
    let signal = Signal::new();
    let pending = store.watch(&ids, &signal);
    if pending > 0 {
        signal.set_target(pending as u64);
        let (failed, _) = deps::wait_signal(&signal, None);
        if failed {
            store.unwatch(&ids, &signal);
            if let Some(e) = store.first_failure(&ids) {
                return Err(e);
            }
        }
    }
    let held = store.values(&ids);
    let mut out = Vec::with_capacity(ids.len());
    let mut rt = None;
    for (h, id) in held.into_iter().zip(&ids) {
        let v = match h? {
            object::Held::Here(v) => v,
            elsewhere => {
                if rt.is_none() {
                    rt = Some(runtime::current()?);
                }
                match &rt {
                    Some(rt) => rt.value(*id, elsewhere)?,
                    None => return Err(Error::NotInitialized),
                }
            }
        };
        out.push(object::downcast::<T>(*id, v)?);
    }
    Ok(out)
}

/// The `(ready, pending)` split returned by [`wait`].
pub type ReadyPending<T> = (Vec<ObjectRef<T>>, Vec<ObjectRef<T>>);

/// Waits until `num_returns` of `refs` are final (ready or failed) or `timeout` passes.
/// Returns `(ready, pending)`, each in input order; `ready` holds at most `num_returns`.
///
/// ```
/// # prism::init().unwrap();
/// let refs: Vec<_> = (0..3).map(prism::put).collect();
/// let (ready, pending) = prism::wait(&refs, 2, None).unwrap();
/// assert_eq!((ready.len(), pending.len()), (2, 1));
/// # prism::shutdown();
/// ```
pub fn wait<T>(
    refs: &[ObjectRef<T>],
    num_returns: usize,
    timeout: Option<Duration>,
) -> Result<ReadyPending<T>> {
    let Some(first) = refs.first() else {
        return Ok((Vec::new(), Vec::new()));
    };
    let store = first.count.store()?;
    let want = num_returns.min(refs.len());
    let ids: Vec<ObjectId> = refs.iter().map(|r| r.id()).collect();
    let settled = |states: &[Option<Result<()>>]| states.iter().filter(|s| s.is_some()).count();
    let ready_now = settled(&store.states(&ids));
    if ready_now < want {
        let deadline = timeout.map(|t| Instant::now() + t);
        let signal = Signal::new();
        store.watch(&ids, &signal);
        // Count again now that the signal is in place, so no completion is missed.
        let ready_now = settled(&store.states(&ids));
        if ready_now < want {
            signal.set_target((want - ready_now) as u64);
            deps::wait_signal(&signal, deadline);
        }
        store.unwatch(&ids, &signal);
    }
    let states = store.states(&ids);
    let (mut ready, mut pending) = (Vec::new(), Vec::new());
    for (r, s) in refs.iter().zip(states) {
        if s.is_some() && ready.len() < want {
            ready.push(r.clone());
        } else {
            pending.push(r.clone());
        }
    }
    Ok((ready, pending))
}

/// Cancels the task producing `r` if it has not finished: a queued or waiting task never
/// runs, a running one has its result discarded. The ref (and every task depending on
/// it) then yields [`Error::Cancelled`]. Returns whether anything was cancelled.
///
/// ```
/// # prism::init().unwrap();
/// let r = prism::put(1);
/// assert!(!prism::cancel(&r).unwrap(), "a finished object cannot be cancelled");
/// # prism::shutdown();
/// ```
pub fn cancel<T>(r: &ObjectRef<T>) -> Result<bool> {
    let store = r.count.store()?;
    Ok(store.fail(r.id(), Error::Cancelled(r.id())))
}

/// Kills an actor: its queued and later calls fail with [`Error::ActorDied`]; a call
/// already running finishes first.
///
/// ```
/// #[prism::actor]
/// pub struct Idle;
/// #[prism::actor]
/// impl Idle {
///     pub fn new() -> Self { Idle }
///     pub fn ping(&self) -> u8 { 1 }
/// }
/// # prism::init().unwrap();
/// let a = Idle::remote();
/// prism::kill(&a);
/// assert!(matches!(prism::get(&a.ping()), Err(prism::Error::ActorDied { .. })));
/// # prism::shutdown();
/// ```
pub fn kill<A>(handle: &ActorHandle<A>) {
    handle.kill()
}

/// Finds a named actor of type `A`.
///
/// ```
/// #[prism::actor]
/// pub struct Store { n: u32 }
/// #[prism::actor]
/// impl Store {
///     pub fn new(n: u32) -> Self { Store { n } }
///     pub fn n(&self) -> u32 { self.n }
/// }
/// # prism::init().unwrap();
/// let _s = Store::options().name("store").remote(7u32);
/// let found = prism::get_actor::<Store>("store").unwrap();
/// assert_eq!(prism::get(&found.n()).unwrap(), 7);
/// # prism::shutdown();
/// ```
pub fn get_actor<A: Actor>(name: &str) -> Result<A::Handle> {
    let rt = runtime::current()?;
    let actor = rt.find_actor(name, A::CLASS)?;
    Ok(A::Handle::from(ActorHandle::from_ref(actor)))
}

/// Where the current code runs and what it was given; see [`context`].
///
/// ```
/// # prism::init().unwrap();
/// let here: prism::RuntimeContext = prism::context().unwrap();
/// assert_eq!(here.pid, std::process::id());
/// # prism::shutdown();
/// ```
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct RuntimeContext {
    /// The running task's id (its result's id); `None` in the driver and in actors.
    pub task_id: Option<ObjectId>,
    /// The actor whose method or constructor runs, if any.
    pub actor_id: Option<ActorId>,
    /// The stable name of the running function or actor method, if any.
    pub function: Option<String>,
    /// The worker (a pool thread) running the code; `None` in the driver.
    pub worker_id: Option<u32>,
    /// The node the code runs on.
    pub node_id: String,
    /// The operating-system process.
    pub pid: u32,
    /// The resources the running task holds, in natural units.
    pub resources: BTreeMap<String, f64>,
    /// The GPU ids the running task may use.
    pub gpu_ids: Vec<usize>,
}

/// Tells the running task's (or actor's, or the driver's) ids and resources.
///
/// ```
/// #[prism::remote(num_gpus = 1)]
/// fn which_gpus() -> Vec<usize> { prism::context().unwrap().gpu_ids }
/// # prism::init_with(prism::Config::default().num_gpus(2.0)).unwrap();
/// assert_eq!(prism::get(&which_gpus::remote()).unwrap().len(), 1);
/// # prism::shutdown();
/// ```
pub fn context() -> Result<RuntimeContext> {
    let rt = runtime::current()?;
    let (task_id, actor_id, function, resources, gpu_ids) = match context::running() {
        Some(r) => (
            r.task_id,
            r.actor_id,
            Some(r.function.to_string()),
            r.grant.demand.describe().into_iter().collect(),
            r.grant.gpu_ids.clone(),
        ),
        None => (None, None, None, BTreeMap::new(), Vec::new()),
    };
    Ok(RuntimeContext {
        task_id,
        actor_id,
        function,
        worker_id: crate::sched::current_worker(),
        node_id: rt.node_id.clone(),
        pid: std::process::id(),
        resources,
        gpu_ids,
    })
}

/// The nodes of the runtime: on a cluster, every node the head knows, with its
/// resources in total and not in use (as of its last heartbeat); in the embedded runtime,
/// the one local node.
///
/// ```
/// # prism::init().unwrap();
/// let nodes = prism::nodes().unwrap();
/// assert_eq!(nodes.len(), 1);
/// assert!(nodes[0].alive);
/// # prism::shutdown();
/// ```
pub fn nodes() -> Result<Vec<NodeView>> {
    runtime::current()?.nodes()
}

/// Sums one side of the live nodes' resources.
fn summed(available: bool) -> Result<BTreeMap<String, f64>> {
    let mut sum = BTreeMap::new();
    for node in nodes()?.into_iter().filter(|n| n.alive) {
        let amounts = if available {
            node.available
        } else {
            node.total
        };
        for (name, v) in amounts {
            *sum.entry(name).or_insert(0.0) += v;
        }
    }
    Ok(sum)
}

/// The total resources of the live nodes, in natural units (`CPU`, `GPU`, `memory`,
/// custom). Fails if the cluster cannot say (its head is unreachable), rather than
/// answer for a cluster that is not there.
///
/// ```
/// # prism::init_with(prism::Config::default().num_cpus(3.0)).unwrap();
/// assert_eq!(prism::cluster_resources().unwrap()["CPU"], 3.0);
/// # prism::shutdown();
/// ```
pub fn cluster_resources() -> Result<BTreeMap<String, f64>> {
    summed(false)
}

/// The resources of the live nodes not held by running tasks and live actors.
pub fn available_resources() -> Result<BTreeMap<String, f64>> {
    summed(true)
}

/// Counters of the object store: objects alive, bytes in memory and spilled.
///
/// ```
/// # prism::init().unwrap();
/// let before = prism::store_stats().unwrap().objects;
/// let r = prism::put(vec![0u8; 1000]);
/// assert_eq!(prism::store_stats().unwrap().objects, before + 1);
/// drop(r);
/// assert_eq!(prism::store_stats().unwrap().objects, before);
/// # prism::shutdown();
/// ```
pub fn store_stats() -> Result<StoreStats> {
    Ok(runtime::current()?.store.stats())
}

/// Runs a future to completion on the current thread (the body of an `async fn` task
/// or actor method), lending the task's CPUs while it waits.
///
/// ```
/// # prism::init().unwrap();
/// let r = prism::put(5u8);
/// let v = prism::block_on(async { r.await });
/// assert_eq!(v.unwrap(), 5);
/// # prism::shutdown();
/// ```
pub fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    let rt = runtime::current().ok();
    loop {
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => match &rt {
                Some(rt) => rt.blocking(std::thread::park),
                None => std::thread::park(),
            },
        }
    }
}
