//! The handles users hold on actors, and the entry points the attribute macros' code
//! calls to start tasks and actors.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::actor::{ActorOptions, Constructor, Method};
use crate::id::{ActorId, ObjectId};
use crate::object::{pin, ObjectRef};
use crate::runtime::{self, ActorRef, HandleWire};
use crate::task::{Arg, RemoteFunction, TaskOptions};

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

/// A handle on an actor of type `A`. The generated `<A>Handle` type wraps one and
/// dereferences to it, adding a method per actor method.
///
/// Handles are `Clone + Serialize`: they can be passed to tasks and to other actors.
/// An unnamed actor ends when the last handle to it is dropped, wherever the handles
/// went (after its queued calls); a named one lives until [`crate::kill`] or shutdown.
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
    actor: Arc<ActorRef>,
    _type: PhantomData<fn() -> A>,
}

impl<A> Clone for ActorHandle<A> {
    fn clone(&self) -> Self {
        ActorHandle {
            actor: self.actor.clone(),
            _type: PhantomData,
        }
    }
}

impl<A> fmt::Debug for ActorHandle<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = &self.actor;
        write!(f, "ActorHandle({} {}", a.class(), a.id())?;
        if let Some(n) = a.name() {
            write!(f, " {n:?}")?;
        }
        if let Some(home) = a.home() {
            write!(f, " at {home}")?;
        }
        write!(f, ")")
    }
}

impl<A> Serialize for ActorHandle<A> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        // The actor must not end before whoever decodes this copy has counted it.
        pin::pin(self.actor.clone());
        self.actor.to_wire().serialize(s)
    }
}

impl<'de, A> Deserialize<'de> for ActorHandle<A> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let wire = HandleWire::deserialize(d)?;
        let rt = runtime::current().map_err(D::Error::custom)?;
        let actor = rt.attach_actor(wire).map_err(D::Error::custom)?;
        Ok(ActorHandle::from_ref(actor))
    }
}

impl<A> ActorHandle<A> {
    pub(crate) fn from_ref(actor: Arc<ActorRef>) -> Self {
        ActorHandle {
            actor,
            _type: PhantomData,
        }
    }

    /// The actor's id.
    pub fn id(&self) -> ActorId {
        self.actor.id()
    }

    /// The actor's name, if it was given one.
    pub fn name(&self) -> Option<&str> {
        self.actor.name()
    }

    /// Queues a method call. Not for direct use: the generated handle methods call it.
    #[doc(hidden)]
    pub fn call<R>(&self, name: &'static str, args: Vec<Arg>, method: Method) -> ObjectRef<R> {
        self.actor.call(name, args, method)
    }

    pub(crate) fn kill(&self) {
        self.actor.kill()
    }
}

/// Starts an actor. Not for direct use: `A::remote(..)` and `A::options()..remote(..)`
/// call it.
#[doc(hidden)]
pub fn spawn<A: Actor>(options: ActorOptions, args: Vec<Arg>, construct: Constructor) -> A::Handle {
    let actor = match runtime::current() {
        Ok(rt) => rt.spawn_actor(A::CLASS, options, args, construct),
        Err(e) => Arc::new(runtime::unstarted_actor(e, A::CLASS)),
    };
    A::Handle::from(ActorHandle::from_ref(actor))
}

/// Submits a call of a registered function. Not for direct use: `f::remote(..)` calls it.
#[doc(hidden)]
pub fn submit<R>(
    function: &'static RemoteFunction,
    args: Vec<Arg>,
    options: TaskOptions,
) -> ObjectRef<R> {
    match runtime::current() {
        Ok(rt) => {
            let (id, r) = rt.new_object::<R>();
            rt.submit_task(id, function, args, options);
            r
        }
        Err(e) => ObjectRef::failed(ObjectId::new(0, 0), e),
    }
}
