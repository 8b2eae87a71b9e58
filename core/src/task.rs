//! Tasks: what a remote call carries (its function, arguments and options), the
//! compile-time registry of remote functions by stable name, and the execution of one
//! task, locally with shared values or from bytes as a worker process does.
//!
//! `#[prism::remote]` registers every function twice over: `run_local` takes its
//! arguments as shared `Arc`s (the embedded runtime's path, no serialization), and
//! `run_encoded` takes them as bytes (the path of a worker process that received a
//! [`TaskSpec`] over the wire). Both are found by the function's stable name,
//! `module_path!()::name`, so code is never shipped, only names.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

use crate::config::check_amount;
use crate::error::{Error, Result};
use crate::object::{AnyValue, Codec, ObjectId, ObjectRef, RefCount, Value};
use crate::sched::{to_fixed, Demand};

/// Options of a remote call: resources, retries, a display name.
///
/// Every `f::options()` and `Actor::options()` builder exposes these same methods.
///
/// ```
/// let opts = prism::TaskOptions::default().num_cpus(0.5).num_gpus(1.0).resource("fpga", 1.0);
/// assert_eq!(opts.cpus(), 0.5);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskOptions {
    pub(crate) num_cpus: f64,
    pub(crate) num_gpus: f64,
    pub(crate) memory: u64,
    pub(crate) resources: Vec<(String, f64)>,
    pub(crate) max_retries: u32,
    pub(crate) retry_on_panic: bool,
    pub(crate) name: Option<String>,
    pub(crate) scheduling: Strategy,
}

/// Where a call may run on a cluster. The embedded runtime is one node and runs every
/// call there, whatever the strategy.
///
/// ```
/// use prism::Strategy;
/// let pinned = prism::TaskOptions::default().scheduling(Strategy::NodeAffinity {
///     node_id: "3f2a9c1e".into(),
///     soft: true,
/// });
/// let spread = prism::TaskOptions::default().scheduling(Strategy::Spread);
/// assert_ne!(pinned, spread);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub enum Strategy {
    /// The node the call is submitted to first; other nodes when it is saturated.
    #[default]
    Default,
    /// Over the live nodes that can run it, in turn: calls of one batch land on
    /// different nodes even when the first has room for all of them.
    Spread,
    /// On the node with this id (see [`crate::nodes`]). A hard affinity fails with
    /// [`Error::Infeasible`] when that node is gone or can never meet the demand; a soft
    /// one then runs the call wherever [`Strategy::Default`] would.
    NodeAffinity {
        /// The node's id.
        node_id: String,
        /// Whether another node may run it when this one cannot.
        soft: bool,
    },
}

impl Default for TaskOptions {
    fn default() -> Self {
        TaskOptions {
            num_cpus: 1.0,
            num_gpus: 0.0,
            memory: 0,
            resources: Vec::new(),
            max_retries: 3,
            retry_on_panic: false,
            name: None,
            scheduling: Strategy::Default,
        }
    }
}

impl TaskOptions {
    /// CPUs the call holds while it runs (fractions allowed; default 1 for tasks, 0 for
    /// actors).
    pub fn num_cpus(mut self, n: f64) -> Self {
        self.num_cpus = n;
        self
    }

    /// GPUs the call holds while it runs: a fraction of one device, or whole devices.
    pub fn num_gpus(mut self, n: f64) -> Self {
        self.num_gpus = n;
        self
    }

    /// Bytes of the `memory` resource the call reserves.
    pub fn memory(mut self, bytes: u64) -> Self {
        self.memory = bytes;
        self
    }

    /// An amount of a custom resource, such as `("fpga", 1.0)`.
    pub fn resource(mut self, name: impl Into<String>, amount: f64) -> Self {
        let name = name.into();
        self.resources.retain(|(n, _)| *n != name);
        self.resources.push((name, amount));
        self
    }

    /// Replaces all custom resources.
    pub fn resources<K: Into<String>>(mut self, list: impl IntoIterator<Item = (K, f64)>) -> Self {
        self.resources = list.into_iter().map(|(k, v)| (k.into(), v)).collect();
        self
    }

    /// How many times a failed attempt is retried (default 3). System failures are
    /// always retried; panics only with [`TaskOptions::retry_on_panic`].
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// Retries attempts that panicked, too (default: no).
    pub fn retry_on_panic(mut self, yes: bool) -> Self {
        self.retry_on_panic = yes;
        self
    }

    /// A display name for the call, shown in errors and listings.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Where the call may run on a cluster (default: [`Strategy::Default`]).
    pub fn scheduling(mut self, strategy: Strategy) -> Self {
        self.scheduling = strategy;
        self
    }

    /// The CPUs asked for.
    pub fn cpus(&self) -> f64 {
        self.num_cpus
    }

    pub(crate) fn demand(&self) -> Result<Demand> {
        check_amount("num_cpus", self.num_cpus)?;
        check_amount("num_gpus", self.num_gpus)?;
        let mut custom = Vec::with_capacity(self.resources.len());
        for (k, v) in &self.resources {
            check_amount(k, *v)?;
            if *v > 0.0 {
                custom.push((Arc::from(k.as_str()), to_fixed(*v)));
            }
        }
        custom.sort();
        Ok(Demand {
            cpu: to_fixed(self.num_cpus),
            gpu: to_fixed(self.num_gpus),
            memory: self.memory,
            custom,
        })
    }
}

/// Generates the builder methods of a generated options type (a struct with an
/// `options: TaskOptions` field). Not for direct use.
#[doc(hidden)]
#[macro_export]
macro_rules! __option_methods {
    () => {
        /// CPUs the call holds while it runs (fractions allowed).
        pub fn num_cpus(mut self, n: f64) -> Self {
            self.options = self.options.num_cpus(n);
            self
        }
        /// GPUs the call holds while it runs.
        pub fn num_gpus(mut self, n: f64) -> Self {
            self.options = self.options.num_gpus(n);
            self
        }
        /// Bytes of the `memory` resource to reserve.
        pub fn memory(mut self, bytes: u64) -> Self {
            self.options = self.options.memory(bytes);
            self
        }
        /// An amount of a custom resource.
        pub fn resource(mut self, name: impl Into<String>, amount: f64) -> Self {
            self.options = self.options.resource(name, amount);
            self
        }
        /// Replaces all custom resources.
        pub fn resources<K: Into<String>>(
            mut self,
            list: impl IntoIterator<Item = (K, f64)>,
        ) -> Self {
            self.options = self.options.resources(list);
            self
        }
        /// How many times a failed attempt is retried.
        pub fn max_retries(mut self, n: u32) -> Self {
            self.options = self.options.max_retries(n);
            self
        }
        /// Retries attempts that panicked, too.
        pub fn retry_on_panic(mut self, yes: bool) -> Self {
            self.options = self.options.retry_on_panic(yes);
            self
        }
        /// A display name for the call.
        pub fn name(mut self, name: impl Into<String>) -> Self {
            self.options = self.options.name(name);
            self
        }
        /// Where the call may run on a cluster.
        pub fn scheduling(mut self, strategy: $crate::Strategy) -> Self {
            self.options = self.options.scheduling(strategy);
            self
        }
    };
}

/// One argument of a remote call: a value, or a reference resolved before the call runs.
pub struct Arg(pub(crate) ArgKind);

pub(crate) enum ArgKind {
    Value(AnyValue, Codec),
    Ref(Arc<RefCount>),
}

impl Arg {
    /// A value argument.
    pub fn value<T: Value>(v: T) -> Arg {
        Arg::shared(Arc::new(v))
    }

    /// A value argument already shared behind an `Arc`: not copied.
    pub fn shared<T: Value>(v: Arc<T>) -> Arg {
        Arg(ArgKind::Value(v, Codec::of::<T>()))
    }

    /// A reference argument: the call waits for the object and receives its value.
    pub fn reference<T>(r: &ObjectRef<T>) -> Arg {
        Arg(ArgKind::Ref(r.count.clone()))
    }
}

/// What can be passed where a remote function or method expects a `T`: a `T`, an
/// `Arc<T>`, or an `ObjectRef<T>` (owned or borrowed), plus `&str` for `String` and
/// `&[T]` for `Vec<T>`.
///
/// ```
/// #[prism::remote]
/// fn len(v: Vec<u8>) -> usize { v.len() }
/// # prism::init().unwrap();
/// let stored = prism::put(vec![1u8, 2, 3]);
/// let a = len::remote(vec![1u8]);                        // a value
/// let b = len::remote(&stored);                          // a borrowed ref
/// let c = len::remote(std::sync::Arc::new(vec![0u8; 2])); // a shared value, not copied
/// let d = len::remote(&[9u8, 9][..]);                     // a slice, copied into a Vec
/// assert_eq!(prism::get_all(&[a, b, c, d]).unwrap(), vec![1, 3, 2, 2]);
/// # prism::shutdown();
/// ```
pub trait IntoArg<T> {
    /// Turns `self` into an argument.
    fn into_arg(self) -> Arg;
}

impl<T: Value> IntoArg<T> for T {
    fn into_arg(self) -> Arg {
        Arg::value(self)
    }
}

impl<T: Value> IntoArg<T> for Arc<T> {
    fn into_arg(self) -> Arg {
        Arg::shared(self)
    }
}

impl<T: Value> IntoArg<T> for ObjectRef<T> {
    fn into_arg(self) -> Arg {
        Arg(ArgKind::Ref(self.count))
    }
}

impl<T: Value> IntoArg<T> for &ObjectRef<T> {
    fn into_arg(self) -> Arg {
        Arg::reference(self)
    }
}

impl IntoArg<String> for &str {
    fn into_arg(self) -> Arg {
        Arg::value(self.to_string())
    }
}

impl<T: Value + Clone> IntoArg<Vec<T>> for &[T] {
    fn into_arg(self) -> Arg {
        Arg::value(self.to_vec())
    }
}

/// The resolved arguments of a call on the local path: shared values, by position.
#[doc(hidden)]
pub struct LocalArgs {
    pub(crate) values: Vec<Option<AnyValue>>,
}

impl LocalArgs {
    /// The argument at `i` as an owned `T`: moved out if no one else holds it, cloned
    /// otherwise.
    pub fn owned<T: Value + Clone>(&mut self, i: usize) -> T {
        let v = self.values[i].take().expect("each argument is taken once");
        match v.downcast::<T>() {
            Ok(arc) => Arc::try_unwrap(arc).unwrap_or_else(|a| (*a).clone()),
            Err(_) => panic!(
                "argument {i} is not a {}: the caller and callee disagree on types",
                std::any::type_name::<T>()
            ),
        }
    }

    /// The argument at `i`, shared.
    pub fn shared<T: Value>(&mut self, i: usize) -> Arc<T> {
        let v = self.values[i].take().expect("each argument is taken once");
        v.downcast::<T>().unwrap_or_else(|_| {
            panic!(
                "argument {i} is not a {}: the caller and callee disagree on types",
                std::any::type_name::<T>()
            )
        })
    }
}

/// A value returned by a call, with what the store needs to account and spill it.
#[doc(hidden)]
pub struct Output {
    pub(crate) value: AnyValue,
    pub(crate) size: u64,
    pub(crate) codec: Codec,
}

impl Output {
    /// Wraps a returned value.
    pub fn new<T: Value>(v: T) -> Output {
        Output {
            size: crate::object::footprint(&v),
            value: Arc::new(v),
            codec: Codec::of::<T>(),
        }
    }
}

/// A remote function as the registry knows it.
#[doc(hidden)]
pub struct RemoteFunction {
    /// The stable name, `module_path::function`.
    pub name: &'static str,
    /// Runs with shared values (embedded runtime).
    pub run_local: fn(LocalArgs) -> Output,
    /// Runs with encoded arguments and returns the encoded result (worker processes).
    pub run_encoded: fn(&[&[u8]]) -> Result<Vec<u8>>,
}

/// An entry of the compile-time registry. Not for direct use.
#[doc(hidden)]
pub struct Registration(pub &'static RemoteFunction);

inventory::collect!(Registration);

/// Finds a remote function by its stable name.
///
/// ```
/// assert!(prism::task::lookup("no::such::function").is_none());
/// ```
pub fn lookup(name: &str) -> Option<&'static RemoteFunction> {
    static BY_NAME: OnceLock<HashMap<&'static str, &'static RemoteFunction>> = OnceLock::new();
    BY_NAME
        .get_or_init(|| {
            inventory::iter::<Registration>
                .into_iter()
                .map(|r| (r.0.name, r.0))
                .collect()
        })
        .get(name)
        .copied()
}

/// A task as it travels between processes: the function's stable name, the arguments
/// (inline bytes or object ids), and the options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// The task's id, which is also the id of its result.
    pub task_id: ObjectId,
    /// The stable name of the function.
    pub function: String,
    /// The arguments, by position.
    pub args: Vec<EncodedArg>,
    /// Resources and retries.
    pub options: TaskOptions,
}

/// An argument of a [`TaskSpec`].
///
/// ```
/// let arg = prism::task::EncodedArg::inline(&42u32).unwrap();
/// assert_eq!(arg, prism::task::EncodedArg::Inline(vec![42]));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EncodedArg {
    /// The encoded value itself.
    Inline(Vec<u8>),
    /// An object to fetch before the call, from the object server at `at`.
    Ref {
        /// The object.
        id: ObjectId,
        /// The object server that has it.
        at: String,
    },
}

impl EncodedArg {
    /// Encodes a value argument.
    pub fn inline<T: Serialize>(v: &T) -> Result<Self> {
        Ok(EncodedArg::Inline(crate::object::encode(v)?))
    }
}

impl TaskSpec {
    /// Encodes the spec for the wire.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        crate::object::encode(self)
    }

    /// Decodes a spec received from the wire.
    pub fn from_bytes(bytes: &[u8]) -> Result<TaskSpec> {
        crate::object::decode(bytes)
    }

    /// Runs the task as a worker process does: finds the function by name, fetches
    /// referenced arguments with `fetch` (given the object and where it is), and returns
    /// the encoded result. A panic becomes [`Error::TaskFailed`].
    ///
    /// ```
    /// use prism::task::{EncodedArg, TaskSpec};
    /// let spec = TaskSpec {
    ///     task_id: prism::ObjectId::new(0, 1),
    ///     function: "nowhere::missing".into(),
    ///     args: vec![],
    ///     options: Default::default(),
    /// };
    /// let err = spec.execute(|_, _| unreachable!()).unwrap_err();
    /// assert!(matches!(err, prism::Error::FunctionNotFound(_)));
    /// ```
    pub fn execute(
        &self,
        fetch: impl Fn(ObjectId, &str) -> Result<crate::cluster::SharedBytes>,
    ) -> Result<Vec<u8>> {
        let f =
            lookup(&self.function).ok_or_else(|| Error::FunctionNotFound(self.function.clone()))?;
        let fetched = self
            .args
            .iter()
            .map(|a| match a {
                EncodedArg::Inline(_) => Ok(None),
                EncodedArg::Ref { id, at } => fetch(*id, at).map(Some),
            })
            .collect::<Result<Vec<_>>>()?;
        let args: Vec<&[u8]> = self
            .args
            .iter()
            .zip(&fetched)
            .map(|(a, f)| match (a, f) {
                (_, Some(bytes)) => (**bytes).as_ref(),
                (EncodedArg::Inline(b), None) => b.as_slice(),
                (EncodedArg::Ref { .. }, None) => &[],
            })
            .collect();
        match crate::runtime::catch_task_panic(|| (f.run_encoded)(&args)) {
            Ok(result) => result,
            Err(message) => Err(Error::TaskFailed {
                function: self.function.clone(),
                message,
                location: crate::runtime::location(),
            }),
        }
    }
}

/// Runs a future to completion on the current thread: the body of an `async fn` task.
#[doc(hidden)]
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
    loop {
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => crate::sched::blocking(std::thread::park),
        }
    }
}

/// Submits a call of a registered function. Not for direct use: `f::remote(..)` calls it.
#[doc(hidden)]
pub fn submit<R>(
    function: &'static RemoteFunction,
    args: Vec<Arg>,
    options: TaskOptions,
) -> ObjectRef<R> {
    match crate::runtime::current() {
        Ok(rt) => {
            let (id, r) = rt.new_object::<R>();
            rt.submit_task(id, function, args, options);
            r
        }
        Err(e) => ObjectRef::failed(ObjectId::new(0, 0), e),
    }
}
