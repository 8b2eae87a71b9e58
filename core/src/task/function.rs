//! The registry of remote functions, filed at compile time by `#[prism::remote]`.

use std::collections::HashMap;
use std::sync::OnceLock;

use super::{LocalArgs, Output};
use crate::error::Result;

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
