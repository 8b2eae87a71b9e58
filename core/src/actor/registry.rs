//! Actor classes and methods by stable name, for processes that receive them as bytes.
//!
//! `#[prism::actor]` registers, at compile time, each actor's constructor under the
//! class's stable name (`module_path::Type`) and each method under
//! `module_path::Type::method`, with entry points that take encoded arguments and
//! return the encoded result: a worker process hosts actors by name, as it runs tasks.

use std::any::Any;
use std::collections::HashMap;
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// The state of an actor, type-erased.
pub type ActorState = Box<dyn Any + Send + Sync>;

/// The entry point of a `&self` method: state, encoded arguments, encoded result.
pub type SharedFn = fn(&(dyn Any + Send + Sync), &[&[u8]]) -> Result<Vec<u8>>;

/// The entry point of a `&mut self` method.
pub type ExclusiveFn = fn(&mut (dyn Any + Send + Sync), &[&[u8]]) -> Result<Vec<u8>>;

/// A method's entry point, by receiver kind.
#[derive(Clone, Copy)]
pub enum EncodedBody {
    /// A `&self` method.
    Shared(SharedFn),
    /// A `&mut self` method.
    Exclusive(ExclusiveFn),
}

/// A registered actor method.
pub struct EncodedMethod {
    /// `module_path::Type::method`.
    pub name: &'static str,
    /// The entry point.
    pub body: EncodedBody,
}

/// A registered actor class.
pub struct EncodedClass {
    /// `module_path::Type`, the same as [`crate::Actor::CLASS`].
    pub name: &'static str,
    /// Runs the constructor `new` on encoded arguments.
    pub construct: fn(&[&[u8]]) -> Result<ActorState>,
}

/// An entry of the method registry. Not for direct use.
#[doc(hidden)]
pub struct MethodRegistration(pub &'static EncodedMethod);

/// An entry of the class registry. Not for direct use.
#[doc(hidden)]
pub struct ClassRegistration(pub &'static EncodedClass);

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
pub fn lookup_class(name: &str) -> Option<&'static EncodedClass> {
    crate::registry::lookup::<ClassRegistration>(name).map(|r| r.0)
}

/// Finds an actor method by its stable name, `module_path::Type::method`.
pub fn lookup_method(name: &str) -> Option<&'static EncodedMethod> {
    crate::registry::lookup::<MethodRegistration>(name).map(|r| r.0)
}

/// Builds an actor from its class name and encoded constructor arguments, as a worker
/// process hosting it does. A panic in the constructor becomes [`Error::TaskFailed`].
pub fn construct(class: &str, args: &[&[u8]]) -> Result<ActorState> {
    let c = lookup_class(class).ok_or_else(|| Error::FunctionNotFound(class.to_string()))?;
    crate::task::panic::catch(|| (c.construct)(args)).unwrap_or_else(|message| {
        Err(crate::task::panic::failure(
            format!("{class}::new"),
            message,
        ))
    })
}

/// Calls a method by name on an actor's state with encoded arguments; a panic becomes
/// [`Error::TaskFailed`].
pub fn call(state: &mut ActorState, method: &str, args: &[&[u8]]) -> Result<Vec<u8>> {
    let m = lookup_method(method).ok_or_else(|| Error::FunctionNotFound(method.to_string()))?;
    let outcome = crate::task::panic::catch(|| match m.body {
        EncodedBody::Shared(f) => f(&**state, args),
        EncodedBody::Exclusive(f) => f(&mut **state, args),
    });
    outcome.unwrap_or_else(|message| Err(crate::task::panic::failure(method, message)))
}
