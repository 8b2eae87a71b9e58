//! What users write: a [`Deployment`] type, its [`Handlers`], and the registry that
//! lets a replica in any process build it by name ([`register_deployment!`]).
//!
//! A replica holds the user's value behind a read-write lock: handlers take `&self`
//! and run side by side (up to `max_ongoing_requests`), a config update takes
//! `&mut self` once those in flight are done. Requests and responses cross the
//! replica's boundary as JSON bytes, so one body serves HTTP, handles and every mode.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::RwLock;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::HttpError;

/// A servable type: built from its config on each replica, answering through the
/// handlers it lists.
///
/// ```
/// use prism_serve::{Deployment, Handlers, HttpError};
/// use serde::{Deserialize, Serialize};
///
/// pub struct Greeter { greeting: String }
///
/// #[derive(Deserialize)]
/// pub struct Ask { name: String }
///
/// #[derive(Default, Serialize, Deserialize)]
/// pub struct GreeterConfig { greeting: Option<String> }
///
/// impl Deployment for Greeter {
///     type Config = GreeterConfig;
///     fn new(config: GreeterConfig) -> Result<Self, String> {
///         Ok(Greeter { greeting: config.greeting.unwrap_or_else(|| "hello".into()) })
///     }
///     fn handlers(h: &mut Handlers<Self>) {
///         h.call(Greeter::greet); // POST /<prefix>
///     }
///     fn reconfigure(&mut self, config: GreeterConfig) -> Result<(), String> {
///         if let Some(g) = config.greeting { self.greeting = g; }
///         Ok(())
///     }
/// }
///
/// impl Greeter {
///     fn greet(&self, ask: Ask) -> Result<String, HttpError> {
///         Ok(format!("{} {}", self.greeting, ask.name))
///     }
/// }
/// prism_serve::register_deployment!(Greeter);
/// ```
pub trait Deployment: Sized + Send + Sync + 'static {
    /// The user config: given to [`Deployment::new`] and, changed on running
    /// replicas, to [`Deployment::reconfigure`]. `()` when there is none.
    type Config: Serialize + DeserializeOwned + Default + Send + Sync + 'static;

    /// Builds one replica's value. An error is the replica's failure to start, shown
    /// in its deployment's status.
    fn new(config: Self::Config) -> Result<Self, String>;

    /// Lists the handlers: [`Handlers::call`] for the route prefix itself,
    /// [`Handlers::route`] for `prefix/name`, [`Handlers::batched`] for a handler that
    /// takes requests in batches.
    fn handlers(h: &mut Handlers<Self>);

    /// Takes a new user config without a restart, once the requests in flight on this
    /// replica are done. By default the config is refused: a deployment that takes
    /// updates says how.
    fn reconfigure(&mut self, config: Self::Config) -> Result<(), String> {
        let _ = config;
        Err(format!(
            "{} does not take config updates (it has no `reconfigure`)",
            std::any::type_name::<Self>()
        ))
    }

    /// Says whether this replica is well; an error (or no answer within the health
    /// check's timeout) replaces it.
    fn check_health(&self) -> Result<(), String> {
        Ok(())
    }
}

/// How a handler takes its requests.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum HandlerKind {
    /// One request per call.
    Single,
    /// Requests that arrive together, as one `Vec`.
    Batched(BatchOptions),
    /// One request answered by a stream of values, sent as they come.
    Stream,
}

/// When a batch is sent: once `max_batch_size` requests wait, or once the first of
/// them has waited `batch_wait_timeout`, whichever comes first.
///
/// ```
/// use std::time::Duration;
/// let b = prism_serve::BatchOptions::new(16).wait(Duration::from_millis(2));
/// assert_eq!((b.max_batch_size, b.batch_wait_timeout), (16, Duration::from_millis(2)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BatchOptions {
    /// The most requests in one batch (at least 1).
    pub max_batch_size: usize,
    /// How long the first request of a batch waits for others (default 10 ms, Ray's).
    pub batch_wait_timeout: Duration,
}

impl BatchOptions {
    /// Batches of up to `max_batch_size`, waiting the default 10 ms.
    pub fn new(max_batch_size: usize) -> Self {
        BatchOptions {
            max_batch_size: max_batch_size.max(1),
            batch_wait_timeout: Duration::from_millis(10),
        }
    }

    /// Sets how long the first request of a batch waits for others.
    pub fn wait(mut self, timeout: Duration) -> Self {
        self.batch_wait_timeout = timeout;
        self
    }
}

type Single<D> = Box<dyn Fn(&D, &[u8]) -> Result<Vec<u8>, HttpError> + Send + Sync>;
/// A stream's values, each its JSON bytes.
pub(crate) type Items = Box<dyn Iterator<Item = Result<Vec<u8>, HttpError>> + Send>;
type Streaming<D> = Box<dyn Fn(&D, &[u8]) -> Result<Items, HttpError> + Send + Sync>;
type Many<D> = Box<dyn Fn(&D, &[&[u8]]) -> Vec<Result<Vec<u8>, HttpError>> + Send + Sync>;

enum Body<D> {
    Single(Single<D>),
    Batched(Many<D>, BatchOptions),
    Stream(Streaming<D>),
}

/// The handlers of a deployment `D`, by name (`""` for the route prefix itself).
pub struct Handlers<D> {
    bodies: BTreeMap<String, Body<D>>,
}

fn decode<Req: DeserializeOwned>(body: &[u8]) -> Result<Req, HttpError> {
    // An empty body (a GET) reads as JSON `null`: fine for `()` and `Option`s.
    let body = if body.is_empty() { b"null" } else { body };
    serde_json::from_slice(body)
        .map_err(|e| HttpError::bad_request(format!("the request body does not parse: {e}")))
}

fn encode<Resp: Serialize>(resp: &Resp) -> Result<Vec<u8>, HttpError> {
    serde_json::to_vec(resp)
        .map_err(|e| HttpError::internal(format!("the response does not encode: {e}")))
}

impl<D: 'static> Handlers<D> {
    fn new() -> Self {
        Handlers {
            bodies: BTreeMap::new(),
        }
    }

    /// The handler of the route prefix itself (`POST /prefix`), and of handles'
    /// [`call`](crate::DeploymentHandle::call).
    pub fn call<Req, Resp, F>(&mut self, f: F) -> &mut Self
    where
        Req: DeserializeOwned + 'static,
        Resp: Serialize + 'static,
        F: Fn(&D, Req) -> Result<Resp, HttpError> + Send + Sync + 'static,
    {
        self.route("", f)
    }

    /// A named handler, at `prefix/name` over HTTP and
    /// [`DeploymentHandle::method`](crate::DeploymentHandle::method) from a handle.
    pub fn route<Req, Resp, F>(&mut self, name: &str, f: F) -> &mut Self
    where
        Req: DeserializeOwned + 'static,
        Resp: Serialize + 'static,
        F: Fn(&D, Req) -> Result<Resp, HttpError> + Send + Sync + 'static,
    {
        let body: Single<D> = Box::new(move |d, bytes| encode(&f(d, decode(bytes)?)?));
        self.bodies.insert(name.to_string(), Body::Single(body));
        self
    }

    /// A named handler (`""` for the prefix itself) that takes the requests that
    /// arrive together as one `Vec` and answers each, in order. A request whose body
    /// does not parse is answered 400 on its own; the others still form the batch.
    /// An error, or a `Vec` of the wrong length, fails the whole batch.
    pub fn batched<Req, Resp, F>(&mut self, name: &str, options: BatchOptions, f: F) -> &mut Self
    where
        Req: DeserializeOwned + 'static,
        Resp: Serialize + 'static,
        F: Fn(&D, Vec<Req>) -> Result<Vec<Resp>, HttpError> + Send + Sync + 'static,
    {
        let body: Many<D> = Box::new(move |d, bodies| {
            let mut out: Vec<Option<Result<Vec<u8>, HttpError>>> = vec![None; bodies.len()];
            let mut good = Vec::with_capacity(bodies.len());
            for (i, b) in bodies.iter().enumerate() {
                match decode::<Req>(b) {
                    Ok(r) => good.push((i, r)),
                    Err(e) => out[i] = Some(Err(e)),
                }
            }
            let (at, reqs): (Vec<usize>, Vec<Req>) = good.into_iter().unzip();
            let n = reqs.len();
            let answers = match f(d, reqs) {
                Ok(a) if a.len() == n => a.iter().map(encode).collect(),
                Ok(a) => {
                    let why = format!("the batched handler answered {} of {n} requests", a.len());
                    vec![Err(HttpError::internal(why)); n]
                }
                Err(e) => vec![Err(e); n],
            };
            for (i, a) in at.into_iter().zip(answers) {
                out[i] = Some(a);
            }
            out.into_iter()
                .map(|o| o.expect("every request answered"))
                .collect()
        });
        self.bodies
            .insert(name.to_string(), Body::Batched(body, options));
        self
    }

    /// A named handler (`""` for the prefix itself) whose answer is a stream: the
    /// iterator it returns is pulled on the replica and each value sent as it comes,
    /// over HTTP as one JSON line (`application/x-ndjson`) of a chunked response. The
    /// iterator owns what it reads (clone an `Arc` out of `&self`).
    pub fn stream<Req, Item, I, F>(&mut self, name: &str, f: F) -> &mut Self
    where
        Req: DeserializeOwned + 'static,
        Item: Serialize + 'static,
        I: Iterator<Item = Item> + Send + 'static,
        F: Fn(&D, Req) -> Result<I, HttpError> + Send + Sync + 'static,
    {
        let body: Streaming<D> = Box::new(move |d, bytes| {
            let items = f(d, decode(bytes)?)?;
            Ok(Box::new(items.map(|i| encode(&i))) as Items)
        });
        self.bodies.insert(name.to_string(), Body::Stream(body));
        self
    }

    /// Each handler's name and kind.
    pub(crate) fn kinds(&self) -> BTreeMap<String, HandlerKind> {
        self.bodies
            .iter()
            .map(|(name, b)| {
                let kind = match b {
                    Body::Single(_) => HandlerKind::Single,
                    Body::Batched(_, o) => HandlerKind::Batched(*o),
                    Body::Stream(_) => HandlerKind::Stream,
                };
                (name.clone(), kind)
            })
            .collect()
    }
}

/// What a replica's actor holds: the user's value and its handlers, typed away.
pub(crate) trait Hosted: Send + Sync {
    fn call(&self, handler: &str, body: &[u8]) -> Result<Vec<u8>, HttpError>;
    fn call_batch(&self, handler: &str, bodies: &[&[u8]]) -> Vec<Result<Vec<u8>, HttpError>>;
    fn open_stream(&self, handler: &str, body: &[u8]) -> Result<Items, HttpError>;
    fn reconfigure(&self, config: &str) -> Result<(), String>;
    fn check_health(&self) -> Result<(), String>;
}

struct Typed<D: Deployment> {
    value: RwLock<D>,
    handlers: Handlers<D>,
}

/// A panic's message.
pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

/// Runs `f`, a panic in it becoming a 500 that says `what` panicked and why.
pub(crate) fn guarded<R>(what: &str, f: impl FnOnce() -> R) -> Result<R, HttpError> {
    catch_unwind(AssertUnwindSafe(f))
        .map_err(|p| HttpError::internal(format!("{what} panicked: {}", panic_message(&*p))))
}

impl<D: Deployment> Typed<D> {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, D> {
        self.value.read().unwrap_or_else(|p| p.into_inner())
    }

    fn missing(&self, handler: &str) -> HttpError {
        let known: Vec<&str> = self.handlers.bodies.keys().map(|k| k.as_str()).collect();
        HttpError::not_found(format!(
            "{} has no handler {handler:?} (it has {known:?})",
            std::any::type_name::<D>()
        ))
    }
}

impl<D: Deployment> Hosted for Typed<D> {
    fn call(&self, handler: &str, body: &[u8]) -> Result<Vec<u8>, HttpError> {
        match self.handlers.bodies.get(handler) {
            Some(Body::Single(f)) => guarded("the handler", || f(&self.read(), body))?,
            Some(Body::Batched(f, _)) => {
                guarded("the handler", || f(&self.read(), &[body]))?.remove(0)
            }
            Some(Body::Stream(_)) => Err(HttpError::bad_request(format!(
                "handler {handler:?} answers with a stream: call it over HTTP"
            ))),
            None => Err(self.missing(handler)),
        }
    }

    fn open_stream(&self, handler: &str, body: &[u8]) -> Result<Items, HttpError> {
        match self.handlers.bodies.get(handler) {
            Some(Body::Stream(f)) => guarded("the handler", || f(&self.read(), body))?,
            Some(_) => Err(HttpError::bad_request(format!(
                "handler {handler:?} does not stream"
            ))),
            None => Err(self.missing(handler)),
        }
    }

    fn call_batch(&self, handler: &str, bodies: &[&[u8]]) -> Vec<Result<Vec<u8>, HttpError>> {
        let answers = match self.handlers.bodies.get(handler) {
            Some(Body::Batched(f, _)) => guarded("the handler", || f(&self.read(), bodies)),
            Some(Body::Stream(_)) => Err(HttpError::bad_request(format!(
                "handler {handler:?} answers with a stream, not in batches"
            ))),
            Some(Body::Single(f)) => {
                let d = self.read();
                Ok(bodies
                    .iter()
                    .map(|b| guarded("the handler", || f(&d, b)).and_then(|r| r))
                    .collect())
            }
            None => Err(self.missing(handler)),
        };
        answers.unwrap_or_else(|e| vec![Err(e); bodies.len()])
    }

    fn reconfigure(&self, config: &str) -> Result<(), String> {
        let config: D::Config = serde_json::from_str(config)
            .map_err(|e| format!("the user config does not parse: {e}"))?;
        let mut d = self.value.write().unwrap_or_else(|p| p.into_inner());
        guarded("reconfigure", || d.reconfigure(config))
            .map_err(|e| e.message)
            .and_then(|r| r)
    }

    fn check_health(&self) -> Result<(), String> {
        guarded("check_health", || self.read().check_health())
            .map_err(|e| e.message)
            .and_then(|r| r)
    }
}

/// Builds `D` on a replica from its JSON config. Not for direct use:
/// [`register_deployment!`] files it.
#[doc(hidden)]
pub fn build_entry<D: Deployment>(config: &str) -> Result<HostedEntry, String> {
    let config: D::Config =
        serde_json::from_str(config).map_err(|e| format!("the user config does not parse: {e}"))?;
    let value = guarded("new", || D::new(config))
        .map_err(|e| e.message)
        .and_then(|r| r)?;
    let mut handlers = Handlers::new();
    D::handlers(&mut handlers);
    Ok(HostedEntry(Box::new(Typed {
        value: RwLock::new(value),
        handlers,
    })))
}

/// `D`'s handlers' names and kinds, without building a `D`.
pub(crate) fn kinds<D: Deployment>() -> BTreeMap<String, HandlerKind> {
    let mut handlers = Handlers::<D>::new();
    D::handlers(&mut handlers);
    handlers.kinds()
}

/// One registered deployment type. Filed by [`register_deployment!`]; not for direct use.
#[doc(hidden)]
pub struct Registration {
    /// The type's name (`std::any::type_name`).
    pub name: fn() -> &'static str,
    /// Builds a replica's value from its JSON config.
    pub build: fn(&str) -> Result<HostedEntry, String>,
}

/// The registry's view of a built replica value. Not for direct use.
#[doc(hidden)]
pub struct HostedEntry(pub(crate) Box<dyn Hosted>);

inventory::collect!(Registration);

/// The registered deployment type of this name.
pub(crate) fn lookup(name: &str) -> Result<&'static Registration, String> {
    inventory::iter::<Registration>
        .into_iter()
        .find(|r| (r.name)() == name)
        .ok_or_else(|| {
            format!(
                "the deployment type {name} is not registered: add \
                 `prism_serve::register_deployment!(<its type>);` next to its impl Deployment"
            )
        })
}

/// Files a [`Deployment`] in the registry that replicas build it from, in any process.
/// Once per type, at the top level of a module: `prism_serve::register_deployment!(MyModel);`.
#[macro_export]
macro_rules! register_deployment {
    ($t:ty) => {
        $crate::__private::inventory::submit! {
            $crate::__private::Registration {
                name: ::std::any::type_name::<$t>,
                build: $crate::__private::build_entry::<$t>,
            }
        }
    };
}
