//! Actors: stateful workers addressed through handles.
//!
//! An actor is a value of a user type living in the runtime, with a mailbox. Method calls
//! return `ObjectRef`s at once and queue in the mailbox; the actor's runner takes them in
//! submission order. With `max_concurrency(1)` (the default) calls run one at a time, so
//! calls from one handle (and, in the embedded runtime, from all handles) run in the
//! order they were made. With `max_concurrency(n)` up to `n` calls run at once, `&self`
//! methods side by side and `&mut self` methods alone.
//!
//! A call whose arguments include refs waits for them at the head of the mailbox, so it
//! keeps its place in the order. A panicking method fails that call only; the actor and
//! its state survive. [`crate::kill`] fails queued and later calls with
//! [`Error::ActorDied`]. An unnamed actor ends when its last handle is dropped, after
//! its queued calls; a named actor lives until killed or until shutdown.
//!
//! Runners are ordinary jobs on the worker pool that hold no CPU: the resources an actor
//! asks for (`num_cpus`, `num_gpus`, ...) are reserved once, for its whole life.

mod registry;
mod remote;

pub(crate) use remote::{Host, RemoteActor};

pub use registry::{
    call as call_encoded, construct, lookup_class, lookup_method, ActorState, ClassRegistration,
    EncodedBody, EncodedClass, EncodedMethod, ExclusiveFn, MethodRegistration, SharedFn,
};

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::object::{ObjectId, ObjectRef};
use crate::runtime::{self, refs_of, Running, Runtime};
use crate::sched::{Demand, Grant, Job};
use crate::task::{Arg, LocalArgs, Output, TaskOptions};

/// The id of an actor.
///
/// ```
/// #[prism::actor]
/// pub struct Box1;
/// #[prism::actor]
/// impl Box1 { pub fn new() -> Self { Box1 } }
/// # prism::init().unwrap();
/// let a = Box1::remote();
/// assert!(a.id().to_string().starts_with("actor-"));
/// # prism::shutdown();
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ActorId(pub(crate) ObjectId);

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "actor-{}", self.0)
    }
}

impl fmt::Debug for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A type usable as an actor. Implemented by `#[prism::actor]` on the struct.
///
/// ```
/// #[prism::actor]
/// pub struct Greeter { greeting: String }
/// #[prism::actor]
/// impl Greeter {
///     pub fn new(greeting: String) -> Self { Greeter { greeting } }
///     pub fn greet(&self, name: &str) -> String { format!("{} {name}", self.greeting) }
/// }
/// use prism::Actor;
/// assert!(Greeter::CLASS.ends_with("Greeter"));
/// # prism::init().unwrap();
/// let g: GreeterHandle = Greeter::remote("hello");
/// assert_eq!(prism::get(&g.greet("ray")).unwrap(), "hello ray");
/// # prism::shutdown();
/// ```
pub trait Actor: Send + Sync + Sized + 'static {
    /// The generated handle type, with one method per actor method.
    type Handle: From<ActorHandle<Self>> + std::ops::Deref<Target = ActorHandle<Self>>;
    /// The stable name of the actor class, `module_path::Type`.
    const CLASS: &'static str;
}

/// Options of an actor: resources reserved for its life, a name, concurrency, restarts.
///
/// Every `Actor::options()` builder exposes these methods.
///
/// ```
/// let opts = prism::ActorOptions::default().name("cache").num_cpus(1.0).max_concurrency(4);
/// assert_eq!(opts, prism::ActorOptions::default().max_concurrency(4).num_cpus(1.0).name("cache"));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActorOptions {
    pub(crate) task: TaskOptions,
    pub(crate) name: Option<String>,
    pub(crate) max_concurrency: usize,
    pub(crate) max_restarts: u32,
}

impl Default for ActorOptions {
    fn default() -> Self {
        ActorOptions {
            task: TaskOptions::default().num_cpus(0.0).max_retries(0),
            name: None,
            max_concurrency: 1,
            max_restarts: 0,
        }
    }
}

impl ActorOptions {
    /// CPUs reserved for the actor's life (default 0).
    pub fn num_cpus(mut self, n: f64) -> Self {
        self.task = self.task.num_cpus(n);
        self
    }
    /// GPUs reserved for the actor's life.
    pub fn num_gpus(mut self, n: f64) -> Self {
        self.task = self.task.num_gpus(n);
        self
    }
    /// Bytes of the `memory` resource reserved for the actor's life.
    pub fn memory(mut self, bytes: u64) -> Self {
        self.task = self.task.memory(bytes);
        self
    }
    /// An amount of a custom resource reserved for the actor's life.
    pub fn resource(mut self, name: impl Into<String>, amount: f64) -> Self {
        self.task = self.task.resource(name, amount);
        self
    }
    /// Replaces all custom resources.
    pub fn resources<K: Into<String>>(mut self, list: impl IntoIterator<Item = (K, f64)>) -> Self {
        self.task = self.task.resources(list);
        self
    }
    /// How many times a failed method call is retried (default 0).
    pub fn max_retries(mut self, n: u32) -> Self {
        self.task = self.task.max_retries(n);
        self
    }
    /// Retries method calls that panicked, too.
    pub fn retry_on_panic(mut self, yes: bool) -> Self {
        self.task = self.task.retry_on_panic(yes);
        self
    }
    /// Where the actor may be placed on a cluster.
    pub fn scheduling(mut self, strategy: crate::Strategy) -> Self {
        self.task = self.task.scheduling(strategy);
        self
    }
    /// Registers the actor under a name, to be found with [`crate::get_actor`].
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
    /// How many calls may run at once (default 1: one at a time, in order).
    pub fn max_concurrency(mut self, n: usize) -> Self {
        self.max_concurrency = n.max(1);
        self
    }
    /// How many times the actor is restarted if its process dies (cluster mode).
    pub fn max_restarts(mut self, n: u32) -> Self {
        self.max_restarts = n;
        self
    }
}

/// The body of an actor method, by receiver kind. Not for direct use.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub enum Method {
    /// A `&self` method.
    Shared(fn(&(dyn Any + Send + Sync), LocalArgs) -> Output),
    /// A `&mut self` method.
    Exclusive(fn(&mut (dyn Any + Send + Sync), LocalArgs) -> Output),
}

/// A constructor. Not for direct use.
#[doc(hidden)]
pub type Constructor = fn(LocalArgs) -> Box<dyn Any + Send + Sync>;

struct Call {
    out: ObjectId,
    name: &'static str,
    args: Vec<Arg>,
    method: Method,
}

enum Phase {
    Starting,
    Alive,
    Dead(Error),
}

struct Mailbox {
    queue: VecDeque<Call>,
    running: usize,
    phase: Phase,
    /// No handle is left: end once the queue is empty.
    retiring: bool,
}

/// One live actor.
pub(crate) struct ActorCell {
    id: ActorId,
    class: &'static str,
    name: Option<String>,
    max_concurrency: usize,
    state: RwLock<Option<Box<dyn Any + Send + Sync>>>,
    mailbox: Mutex<Mailbox>,
    grant: Mutex<Option<Grant>>,
    handles: AtomicUsize,
    rt: Weak<Runtime>,
}

/// The live actors of a runtime, by id and by name.
#[derive(Default)]
pub(crate) struct Directory {
    by_id: Mutex<HashMap<ActorId, Weak<ActorCell>>>,
    by_name: Mutex<HashMap<String, Arc<ActorCell>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Directory {
    fn find(&self, id: ActorId) -> Option<Arc<ActorCell>> {
        lock(&self.by_id).get(&id).and_then(Weak::upgrade)
    }

    pub fn shut_down(&self) {
        let cells: Vec<Arc<ActorCell>> = lock(&self.by_id)
            .drain()
            .filter_map(|(_, w)| w.upgrade())
            .collect();
        lock(&self.by_name).clear();
        for cell in cells {
            cell.die(Error::Shutdown);
        }
    }
}

/// Counts the handles of one actor; the last one dropped retires an unnamed actor.
struct HandleCount {
    target: Target,
}

/// Where the actor lives: in this process, or in a worker process of the cluster.
enum Target {
    Local(Arc<ActorCell>),
    Remote(Arc<RemoteActor>),
}

impl Drop for HandleCount {
    fn drop(&mut self) {
        if let Target::Local(cell) = &self.target {
            if cell.handles.fetch_sub(1, Ordering::AcqRel) == 1 && cell.name.is_none() {
                cell.retire();
            }
        }
    }
}

/// A handle as it travels: the id, the class and, for an actor on a cluster, the node
/// that placed it.
#[derive(Serialize, Deserialize)]
struct HandleWire {
    id: ActorId,
    class: String,
    home: Option<String>,
}

/// A handle on an actor of type `A`. The generated `<A>Handle` type wraps one and
/// dereferences to it, adding a method per actor method.
///
/// Handles are `Clone + Serialize`: they can be passed to tasks and to other actors.
///
/// ```
/// #[prism::actor]
/// pub struct Tally { n: u64 }
/// #[prism::actor]
/// impl Tally {
///     pub fn new() -> Self { Tally { n: 0 } }
///     pub fn bump(&mut self) -> u64 { self.n += 1; self.n }
/// }
/// #[prism::remote]
/// fn bump_twice(t: TallyHandle) -> u64 {
///     t.bump();
///     prism::get(&t.bump()).unwrap()
/// }
/// # prism::init().unwrap();
/// let t = Tally::remote();
/// assert_eq!(prism::get(&bump_twice::remote(t.clone())).unwrap(), 2);
/// # prism::shutdown();
/// ```
pub struct ActorHandle<A> {
    count: Arc<HandleCount>,
    _type: PhantomData<fn() -> A>,
}

impl<A> Clone for ActorHandle<A> {
    fn clone(&self) -> Self {
        ActorHandle {
            count: self.count.clone(),
            _type: PhantomData,
        }
    }
}

impl<A> fmt::Debug for ActorHandle<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.count.target {
            Target::Local(cell) => {
                write!(f, "ActorHandle({} {}", cell.class, cell.id)?;
                if let Some(n) = &cell.name {
                    write!(f, " {n:?}")?;
                }
            }
            Target::Remote(r) => write!(f, "ActorHandle({} {} at {}", r.class, r.id, r.home)?,
        }
        write!(f, ")")
    }
}

impl<A> Serialize for ActorHandle<A> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let wire = match &self.count.target {
            Target::Local(cell) => HandleWire {
                id: cell.id,
                class: cell.class.to_string(),
                home: None,
            },
            Target::Remote(r) => HandleWire {
                id: r.id,
                class: r.class.clone(),
                home: Some(r.home.clone()),
            },
        };
        wire.serialize(s)
    }
}

impl<'de, A> Deserialize<'de> for ActorHandle<A> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let wire = HandleWire::deserialize(d)?;
        let rt = runtime::current().map_err(D::Error::custom)?;
        if let (Some(home), Some(client)) = (wire.home, rt.client()) {
            let remote = RemoteActor::attach(&rt, client.clone(), wire.id, wire.class, home);
            return Ok(ActorHandle::from_target(Target::Remote(remote)));
        }
        let cell = rt
            .actors
            .find(wire.id)
            .ok_or_else(|| D::Error::custom(format!("{} no longer exists", wire.id)))?;
        Ok(ActorHandle::from_cell(cell))
    }
}

impl<A> ActorHandle<A> {
    fn from_cell(cell: Arc<ActorCell>) -> Self {
        cell.handles.fetch_add(1, Ordering::AcqRel);
        Self::from_target(Target::Local(cell))
    }

    fn from_target(target: Target) -> Self {
        ActorHandle {
            count: Arc::new(HandleCount { target }),
            _type: PhantomData,
        }
    }

    /// The actor's id.
    pub fn id(&self) -> ActorId {
        match &self.count.target {
            Target::Local(cell) => cell.id,
            Target::Remote(r) => r.id,
        }
    }

    /// The actor's name, if it was given one.
    pub fn name(&self) -> Option<&str> {
        match &self.count.target {
            Target::Local(cell) => cell.name.as_deref(),
            Target::Remote(_) => None,
        }
    }

    /// Queues a method call. Not for direct use: the generated handle methods call it.
    #[doc(hidden)]
    pub fn call<R>(&self, name: &'static str, args: Vec<Arg>, method: Method) -> ObjectRef<R> {
        let cell = match &self.count.target {
            Target::Local(cell) => cell,
            Target::Remote(r) => return r.call(name, args),
        };
        let Some(rt) = cell.rt.upgrade() else {
            return ObjectRef::failed(cell.id.0, Error::Shutdown);
        };
        let (out, r) = rt.new_object::<R>();
        cell.enqueue(
            &rt,
            Call {
                out,
                name,
                args,
                method,
            },
        );
        r
    }

    pub(crate) fn kill(&self) {
        let cell = match &self.count.target {
            Target::Local(cell) => cell,
            Target::Remote(r) => return r.kill(),
        };
        cell.die(Error::ActorDied {
            actor: cell.describe(),
            reason: "killed with prism::kill".into(),
        });
    }
}

/// Starts an actor. Not for direct use: `A::remote(..)` and `A::options()..remote(..)`
/// call it.
#[doc(hidden)]
pub fn spawn<A: Actor>(options: ActorOptions, args: Vec<Arg>, construct: Constructor) -> A::Handle {
    let rt = match runtime::current() {
        Ok(rt) => rt,
        Err(e) => return A::Handle::from(ActorHandle::from_cell(ActorCell::dead::<A>(e))),
    };
    if let Some(client) = rt.client() {
        // On a cluster the actor lives in a worker process and its name with the head.
        let remote = RemoteActor::create(
            &rt,
            client.clone(),
            A::CLASS,
            options.task,
            options.max_restarts,
            args,
            options.name,
        );
        return A::Handle::from(ActorHandle::from_target(Target::Remote(remote)));
    }
    let id = ActorId(rt.next_id());
    let cell = Arc::new(ActorCell {
        id,
        class: A::CLASS,
        name: options.name.clone(),
        max_concurrency: options.max_concurrency,
        state: RwLock::new(None),
        mailbox: Mutex::new(Mailbox {
            queue: VecDeque::new(),
            running: 0,
            phase: Phase::Starting,
            retiring: false,
        }),
        grant: Mutex::new(None),
        handles: AtomicUsize::new(0),
        rt: Arc::downgrade(&rt),
    });
    let handle = ActorHandle::from_cell(cell.clone());
    if let Some(name) = &options.name {
        let mut names = lock(&rt.actors.by_name);
        if names.contains_key(name) {
            drop(names);
            cell.die(Error::Config(format!(
                "an actor named {name:?} already exists: use prism::get_actor to reach it"
            )));
            return A::Handle::from(handle);
        }
        names.insert(name.clone(), cell.clone());
    }
    lock(&rt.actors.by_id).insert(id, Arc::downgrade(&cell));
    let demand = match rt.feasible_demand(&options.task) {
        Ok(d) => d,
        Err(e) => {
            cell.die(e);
            return A::Handle::from(handle);
        }
    };
    let start = cell.clone();
    let rt2 = rt.clone();
    rt.when_ready(refs_of(&args), move |deps| match deps {
        Ok(()) => start.schedule_construction(&rt2, demand, args, construct),
        Err(e) => start.die(Error::ActorDied {
            actor: start.describe(),
            reason: format!("a constructor argument failed: {e}"),
        }),
    });
    A::Handle::from(handle)
}

/// Finds a named actor.
pub(crate) fn find_named<A: Actor>(name: &str) -> Result<A::Handle> {
    let rt = runtime::current()?;
    if let Some(client) = rt.client() {
        let remote = RemoteActor::find(&rt, client.clone(), name, A::CLASS)?;
        return Ok(A::Handle::from(ActorHandle::from_target(Target::Remote(
            remote,
        ))));
    }
    let cell = lock(&rt.actors.by_name)
        .get(name)
        .cloned()
        .ok_or_else(|| Error::ActorNotFound(name.to_string()))?;
    if cell.class != A::CLASS {
        return Err(Error::ActorNotFound(format!(
            "{name} (it is a {}, not a {})",
            cell.class,
            A::CLASS
        )));
    }
    Ok(A::Handle::from(ActorHandle::from_cell(cell)))
}

impl ActorCell {
    fn dead<A: Actor>(err: Error) -> Arc<ActorCell> {
        Arc::new(ActorCell {
            id: ActorId(ObjectId::new(0, 0)),
            class: A::CLASS,
            name: None,
            max_concurrency: 1,
            state: RwLock::new(None),
            mailbox: Mutex::new(Mailbox {
                queue: VecDeque::new(),
                running: 0,
                phase: Phase::Dead(err),
                retiring: false,
            }),
            grant: Mutex::new(None),
            handles: AtomicUsize::new(0),
            rt: Weak::new(),
        })
    }

    fn describe(&self) -> String {
        match &self.name {
            Some(n) => format!("{} {} ({n:?})", self.class, self.id),
            None => format!("{} {}", self.class, self.id),
        }
    }

    fn schedule_construction(
        self: &Arc<Self>,
        rt: &Arc<Runtime>,
        demand: Demand,
        mut args: Vec<Arg>,
        construct: Constructor,
    ) {
        let cell = self.clone();
        let rt2 = rt.clone();
        rt.sched.submit(Job {
            demand,
            keep: true,
            run: Box::new(move |grant| {
                *lock(&cell.grant) = Some(grant.clone());
                if matches!(lock(&cell.mailbox).phase, Phase::Dead(_)) {
                    cell.release_resources();
                    return;
                }
                let built = rt2.resolve(&mut args, true).and_then(|a| {
                    let running = cell.running(Self::CONSTRUCTOR, grant.clone());
                    runtime::with_running(running, || {
                        runtime::catch_task_panic(move || construct(a))
                    })
                    .map_err(|message| Error::ActorDied {
                        actor: cell.describe(),
                        reason: format!("its constructor panicked: {message}"),
                    })
                });
                match built {
                    Ok(state) => {
                        *cell.state.write().unwrap_or_else(|e| e.into_inner()) = Some(state);
                        let mut mb = lock(&cell.mailbox);
                        if matches!(mb.phase, Phase::Starting) {
                            mb.phase = Phase::Alive;
                        }
                        cell.start_runners(&rt2, mb);
                    }
                    Err(e) => cell.die(e),
                }
            }),
        });
    }

    const CONSTRUCTOR: &'static str = "constructor";

    fn running(&self, function: &'static str, grant: Grant) -> Running {
        Running {
            task_id: None,
            actor_id: Some(self.id),
            function,
            grant,
        }
    }

    fn enqueue(self: &Arc<Self>, rt: &Arc<Runtime>, call: Call) {
        let mut mb = lock(&self.mailbox);
        if let Phase::Dead(e) = &mb.phase {
            let e = e.clone();
            drop(mb);
            rt.store.fail(call.out, e);
            return;
        }
        mb.queue.push_back(call);
        self.start_runners(rt, mb);
    }

    /// Starts runners up to the concurrency limit while calls wait.
    fn start_runners(self: &Arc<Self>, rt: &Arc<Runtime>, mut mb: MutexGuard<'_, Mailbox>) {
        if !matches!(mb.phase, Phase::Alive) {
            return;
        }
        let mut starts = 0;
        while mb.running < self.max_concurrency && mb.running < mb.queue.len() {
            mb.running += 1;
            starts += 1;
        }
        if starts == 0 && mb.retiring && mb.running == 0 && mb.queue.is_empty() {
            drop(mb);
            self.end_quietly();
            return;
        }
        drop(mb);
        for _ in 0..starts {
            let cell = self.clone();
            let rt2 = rt.clone();
            rt.sched.submit(Job {
                demand: Demand::default(),
                keep: false,
                run: Box::new(move |_| cell.drain(&rt2)),
            });
        }
    }

    /// A runner: takes calls from the head of the mailbox until it is empty.
    fn drain(self: &Arc<Self>, rt: &Arc<Runtime>) {
        let grant = lock(&self.grant).clone().unwrap_or_default();
        loop {
            let mut mb = lock(&self.mailbox);
            let next = match mb.phase {
                Phase::Alive => mb.queue.pop_front(),
                _ => None,
            };
            let call = match next {
                Some(call) => call,
                None => {
                    mb.running -= 1;
                    let finished = mb.running == 0
                        && (matches!(mb.phase, Phase::Dead(_))
                            || (mb.retiring && mb.queue.is_empty()));
                    drop(mb);
                    if finished {
                        self.end_quietly();
                    }
                    return;
                }
            };
            drop(mb);
            self.run_call(rt, call, &grant);
        }
    }

    fn run_call(&self, rt: &Arc<Runtime>, mut call: Call, grant: &Grant) {
        let deps: Vec<ObjectId> = refs_of(&call.args).iter().map(|c| c.id).collect();
        if !deps.is_empty() {
            crate::api::wait_settled(&rt.store, &deps, None);
        }
        let args = match rt.resolve(&mut call.args, true) {
            Ok(a) => a,
            Err(e) => {
                rt.store.fail(call.out, e);
                return;
            }
        };
        let running = self.running(call.name, grant.clone());
        let outcome = runtime::with_running(running, || match call.method {
            Method::Shared(f) => {
                let guard = self.state.read().unwrap_or_else(|e| e.into_inner());
                match guard.as_deref() {
                    Some(state) => runtime::catch_task_panic(|| f(state, args)),
                    None => Err("the actor has no state".to_string()),
                }
            }
            Method::Exclusive(f) => {
                let mut guard = self.state.write().unwrap_or_else(|e| e.into_inner());
                match guard.as_deref_mut() {
                    Some(state) => runtime::catch_task_panic(|| f(state, args)),
                    None => Err("the actor has no state".to_string()),
                }
            }
        });
        match outcome {
            Ok(out) => {
                rt.store.complete(call.out, out.value, out.size, out.codec);
            }
            Err(message) => {
                rt.store.fail(
                    call.out,
                    Error::TaskFailed {
                        function: format!("{}::{}", self.class, call.name),
                        message,
                        location: runtime::location(),
                    },
                );
            }
        }
    }

    /// No handle is left: finish the queued calls, then end.
    fn retire(self: &Arc<Self>) {
        let mut mb = lock(&self.mailbox);
        mb.retiring = true;
        let idle = mb.running == 0 && mb.queue.is_empty() && !matches!(mb.phase, Phase::Starting);
        drop(mb);
        if idle {
            self.end_quietly();
        }
    }

    /// Kills the actor: queued and later calls fail with `err`; the state is dropped once
    /// no call runs.
    fn die(self: &Arc<Self>, err: Error) {
        let mut mb = lock(&self.mailbox);
        if matches!(mb.phase, Phase::Dead(_)) {
            return;
        }
        mb.phase = Phase::Dead(err.clone());
        let queued: Vec<Call> = mb.queue.drain(..).collect();
        let idle = mb.running == 0;
        drop(mb);
        if let Some(rt) = self.rt.upgrade() {
            for call in queued {
                rt.store.fail(call.out, err.clone());
            }
            if let Some(name) = &self.name {
                let mut names = lock(&rt.actors.by_name);
                if names.get(name).is_some_and(|c| Arc::ptr_eq(c, self)) {
                    names.remove(name);
                }
            }
            lock(&rt.actors.by_id).remove(&self.id);
        }
        if idle {
            self.end_quietly();
        }
    }

    /// Drops the state and returns the actor's resources.
    fn end_quietly(&self) {
        let state = self.state.write().unwrap_or_else(|e| e.into_inner()).take();
        drop(state);
        let mut mb = lock(&self.mailbox);
        if !matches!(mb.phase, Phase::Dead(_)) {
            mb.phase = Phase::Dead(Error::ActorDied {
                actor: self.describe(),
                reason: "its last handle was dropped".into(),
            });
        }
        drop(mb);
        if let Some(rt) = self.rt.upgrade() {
            lock(&rt.actors.by_id).remove(&self.id);
        }
        self.release_resources();
    }

    fn release_resources(&self) {
        let grant = lock(&self.grant).take();
        if let (Some(grant), Some(rt)) = (grant, self.rt.upgrade()) {
            rt.sched.release(&grant);
        }
    }
}
