//! The compile-time registries of estimators and trainables: a task or actor on any
//! node receives a type's name and finds the type's code under it, as prism finds
//! remote functions. Each registry is an `inventory` collection filled by a macro
//! (`register_estimator!`, `register_trainable!`) next to the type's impl.

use crate::TuneError;

/// The entry of a compile-time registry named `name`, or an error saying how to file
/// it (the registries of estimators and of trainables).
pub(crate) fn find<R>(
    entries: impl Iterator<Item = (&'static str, R)>,
    name: &str,
    what: &str,
    register: &str,
    trait_name: &str,
) -> Result<R, TuneError> {
    let mut entries = entries;
    entries
        .find(|(n, _)| *n == name)
        .map(|(_, r)| r)
        .ok_or_else(|| {
            TuneError::Config(format!(
                "the {what} {name} is not registered: add \
                 `prism_tune::{register}!(<its type>);` next to its impl {trait_name}"
            ))
        })
}
