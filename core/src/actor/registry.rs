//! Actor classes and methods by stable name, for processes that receive them as bytes.
//!
//! `#[prism::actor]` registers, at compile time, each actor's constructor under the
//! class's stable name (`module_path::Type`) and each method under
//! `module_path::Type::method`, with entry points that take encoded arguments and
//! return the encoded result: a worker process hosts actors by name, as it runs tasks.

use std::any::Any;
use std::collections::HashMap;
use std::sync::OnceLock;

use super::{Constructor, Method};
use crate::error::{Error, Result};
use crate::task::{LocalArgs, Param, Source};

/// The state of an actor, type-erased.
pub type ActorState = Box<dyn Any + Send + Sync>;

/// A registered actor method.
pub struct ActorMethod {
    /// `module_path::Type::method`.
    pub name: &'static str,
    /// Its body, by receiver kind.
    pub body: Method,
    /// Its parameters: how a process that received the arguments as bytes makes the
    /// values the body takes.
    pub params: &'static [Param],
}

/// A registered actor class.
pub struct ActorClass {
    /// `module_path::Type`, the same as [`crate::Actor::CLASS`].
    pub name: &'static str,
    /// Runs the constructor `new`.
    pub construct: Constructor,
    /// The constructor's parameters.
    pub params: &'static [Param],
}

/// An entry of the method registry. Not for direct use.
#[doc(hidden)]
pub struct MethodRegistration(pub &'static ActorMethod);

/// An entry of the class registry. Not for direct use.
#[doc(hidden)]
pub struct ClassRegistration(pub &'static ActorClass);

inventory::collect!(MethodRegistration);
inventory::collect!(ClassRegistration);

impl crate::registry::Registered for ClassRegistration {
    fn name(&self) -> &'static str {
        self.0.name
    }

    fn index() -> &'static OnceLock<HashMap<&'static str, &'static Self>> {
        static INDEX: OnceLock<HashMap<&'static str, &'static ClassRegistration>> = OnceLock::new();
        &INDEX
    }
}

impl crate::registry::Registered for MethodRegistration {
    fn name(&self) -> &'static str {
        self.0.name
    }

    fn index() -> &'static OnceLock<HashMap<&'static str, &'static Self>> {
        static INDEX: OnceLock<HashMap<&'static str, &'static MethodRegistration>> =
            OnceLock::new();
        &INDEX
    }
}

/// Finds an actor class by its stable name.
///
/// ```
/// assert!(prism::actor::lookup_class("no::Such").is_none());
/// ```
pub fn lookup_class(name: &str) -> Option<&'static ActorClass> {
    crate::registry::lookup::<ClassRegistration>(name).map(|r| r.0)
}

/// Finds an actor method by its stable name, `module_path::Type::method`.
pub fn lookup_method(name: &str) -> Option<&'static ActorMethod> {
    crate::registry::lookup::<MethodRegistration>(name).map(|r| r.0)
}

/// Builds an actor from its class name and encoded constructor arguments, as a worker
/// process hosting it does. A panic in the constructor becomes [`Error::TaskFailed`].
pub fn construct(class: &str, args: &[&[u8]]) -> Result<ActorState> {
    let c = lookup_class(class).ok_or_else(|| Error::FunctionNotFound(class.to_string()))?;
    let args = LocalArgs::build(c.params, args, c.name, |b, p| p.value(Source::Bytes(b)))?;
    crate::task::panic::catch(|| (c.construct)(args))
        .map_err(|message| crate::task::panic::failure(format!("{class}::new"), message))
}

/// Calls a method by name on an actor's state with encoded arguments and returns the
/// encoded result; a panic becomes [`Error::TaskFailed`].
pub fn call(state: &mut ActorState, method: &str, args: &[&[u8]]) -> Result<Vec<u8>> {
    let m = lookup_method(method).ok_or_else(|| Error::FunctionNotFound(method.to_string()))?;
    let args = LocalArgs::build(m.params, args, m.name, |b, p| p.value(Source::Bytes(b)))?;
    let outcome = crate::task::panic::catch(|| match m.body {
        Method::Shared(f) => f(&**state, args),
        Method::Exclusive(f) => f(&mut **state, args),
    });
    outcome
        .map_err(|message| crate::task::panic::failure(method, message))?
        .encode()
}
