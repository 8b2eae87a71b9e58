//! The compile-time registries of estimators and trainables: a task or actor on any
//! node receives a type's name and finds the type's code under it, as prism finds
//! remote functions. Each registry is an `inventory` collection filled by a macro
//! (`register_estimator!`, `register_trainable!`) next to the type's impl.

use crate::TuneError;

/// An entry of one of the registries.
pub(crate) trait Registered: inventory::Collect {
    /// What the registry holds ("estimator"), its macro and the trait its types have.
    const WHAT: (&'static str, &'static str, &'static str);
    /// The registered type's name (`std::any::type_name`).
    fn name(&self) -> &'static str;
}

/// The entry named `name`, or an error saying how to file it.
pub(crate) fn lookup<R: Registered>(name: &str) -> Result<&'static R, TuneError> {
    let (what, register, trait_name) = R::WHAT;
    inventory::iter::<R>
        .into_iter()
        .find(|r| r.name() == name)
        .ok_or_else(|| {
            TuneError::Config(format!(
                "the {what} {name} is not registered: add \
                 `prism_tune::{register}!(<its type>);` next to its impl {trait_name}"
            ))
        })
}
