//! A task as it travels between processes, and its execution from bytes.

use serde::{Deserialize, Serialize};

use super::{LocalArgs, Output, Param, RemoteFunction, Source, TaskOptions};
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::object::{AnyValue, SharedBytes};

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

/// An argument of a [`TaskSpec`] or of an actor call as it travels.
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

/// Fetches the referenced arguments of a call (with `fetch`, given the object and
/// where it is) before it runs; the inline ones need nothing.
fn fetch_refs(
    args: &[EncodedArg],
    fetch: impl Fn(ObjectId, &str) -> Result<SharedBytes>,
) -> Result<Vec<Option<SharedBytes>>> {
    args.iter()
        .map(|a| match a {
            EncodedArg::Inline(_) => Ok(None),
            EncodedArg::Ref { id, at } => fetch(*id, at).map(Some),
        })
        .collect()
}

/// Every argument's bytes, by position: inline ones as they came, referenced ones as
/// [`fetch_refs`] fetched them.
fn arg_slices<'a>(args: &'a [EncodedArg], fetched: &'a [Option<SharedBytes>]) -> Vec<&'a [u8]> {
    args.iter()
        .zip(fetched)
        .map(|(a, f)| match (a, f) {
            (_, Some(bytes)) => (**bytes).as_ref(),
            (EncodedArg::Inline(b), None) => b.as_slice(),
            (EncodedArg::Ref { .. }, None) => &[],
        })
        .collect()
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

    /// Runs the task from bytes: finds the function by name, fetches referenced
    /// arguments with `fetch` (given the object and where it is), and returns the
    /// encoded result. A panic becomes [`Error::TaskFailed`].
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
        fetch: impl Fn(ObjectId, &str) -> Result<SharedBytes>,
    ) -> Result<Vec<u8>> {
        let fetched = fetch_refs(&self.args, fetch)?;
        let slices = arg_slices(&self.args, &fetched);
        let mut slices = slices.into_iter();
        self.run(|_, param| param.value(Source::Bytes(slices.next().unwrap_or(&[]))))?
            .encode()
    }

    /// The function this task runs.
    pub(crate) fn function(&self) -> Result<&'static RemoteFunction> {
        super::lookup(&self.function).ok_or_else(|| Error::FunctionNotFound(self.function.clone()))
    }

    /// Runs the task with each argument's value made by `value` (from the argument as
    /// it travelled and the parameter it is for), as a worker process does. A panic
    /// becomes [`Error::TaskFailed`] under the task's display name.
    pub(crate) fn run(
        &self,
        value: impl FnMut(&EncodedArg, &Param) -> Result<AnyValue>,
    ) -> Result<Output> {
        self.run_as(self.function()?, value)
    }

    /// Like [`TaskSpec::run`], with the task's function already found.
    pub(crate) fn run_as(
        &self,
        f: &RemoteFunction,
        mut value: impl FnMut(&EncodedArg, &Param) -> Result<AnyValue>,
    ) -> Result<Output> {
        let args = LocalArgs::build(f.params, &self.args, f.name, |a, p| value(a, p))?;
        super::panic::catch(|| (f.run_local)(args)).map_err(|message| {
            let function = self.options.name.as_ref().unwrap_or(&self.function);
            super::panic::failure(function.clone(), message)
        })
    }
}
