//! The compile-time registries: remote functions, actor classes and actor methods are
//! filed with `inventory` under their stable names by the attribute macros, and found
//! by name in any process that runs the same binary. One index per registry, built on
//! first use, so that a worker finds each task's function with one hash lookup.

use std::collections::HashMap;
use std::sync::OnceLock;

/// An entry of one of the registries.
pub(crate) trait Registered: inventory::Collect + Sync {
    /// The entry's stable name.
    fn name(&self) -> &'static str;
    /// The index of this registry (one `static` per entry type).
    fn index() -> &'static OnceLock<HashMap<&'static str, &'static Self>>;
}

/// The entry filed under `name`.
pub(crate) fn lookup<R: Registered>(name: &str) -> Option<&'static R> {
    R::index()
        .get_or_init(|| {
            inventory::iter::<R>
                .into_iter()
                .map(|r| (r.name(), r))
                .collect()
        })
        .get(name)
        .copied()
}
