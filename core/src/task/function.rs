//! The registry of remote functions, filed at compile time by `#[prism::remote]`.

use std::collections::HashMap;
use std::sync::OnceLock;

use super::{LocalArgs, Output, Param};

/// A remote function as the registry knows it.
#[doc(hidden)]
pub struct RemoteFunction {
    /// The stable name, `module_path::function`.
    pub name: &'static str,
    /// Runs with shared argument values.
    pub run_local: fn(LocalArgs) -> Output,
    /// Its parameters: how a process that received the arguments as bytes makes the
    /// values `run_local` takes.
    pub params: &'static [Param],
}

/// An entry of the compile-time registry. Not for direct use.
#[doc(hidden)]
pub struct Registration(pub &'static RemoteFunction);

inventory::collect!(Registration);

impl crate::registry::Registered for Registration {
    fn name(&self) -> &'static str {
        self.0.name
    }

    fn index() -> &'static OnceLock<HashMap<&'static str, &'static Self>> {
        static INDEX: OnceLock<HashMap<&'static str, &'static Registration>> = OnceLock::new();
        &INDEX
    }
}

/// Finds a remote function by its stable name.
///
/// ```
/// assert!(prism::task::lookup("no::such::function").is_none());
/// ```
pub fn lookup(name: &str) -> Option<&'static RemoteFunction> {
    crate::registry::lookup::<Registration>(name).map(|r| r.0)
}
