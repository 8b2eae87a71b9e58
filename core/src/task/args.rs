//! What a caller passes to a remote call and what the function receives and returns,
//! on the local path (shared values, no serialization).

use std::any::{Any, TypeId};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::object::{AnyValue, Codec, Encoded, ObjectRef, RefCount, Value};

/// One argument of a remote call: a value, or a reference resolved before the call runs.
pub struct Arg(pub(crate) ArgKind);

pub(crate) enum ArgKind {
    /// A value, shared, with how to encode it for another process.
    Value(AnyValue, Codec),
    /// A reference, resolved before the call runs.
    Ref(Arc<RefCount>),
}

impl Arg {
    /// A value argument.
    pub fn value<T: Value>(v: T) -> Arg {
        Arg::shared(Arc::new(v))
    }

    /// A value argument already shared behind an `Arc`: not copied.
    pub fn shared<T: Value>(v: Arc<T>) -> Arg {
        Arg(ArgKind::Value(v, Codec::of::<T>()))
    }

    /// A reference argument: the call waits for the object and receives its value.
    pub fn reference<T>(r: &ObjectRef<T>) -> Arg {
        Arg(ArgKind::Ref(r.count.clone()))
    }
}

/// What can be passed where a remote function or method expects a `T`: a `T`, an
/// `Arc<T>`, or an `ObjectRef<T>` (owned or borrowed), plus `&str` for `String` and
/// `&[T]` for `Vec<T>`.
///
/// ```
/// #[prism::remote]
/// fn len(v: Vec<u8>) -> usize { v.len() }
/// # prism::init().unwrap();
/// let stored = prism::put(vec![1u8, 2, 3]);
/// let a = len::remote(vec![1u8]);                        // a value
/// let b = len::remote(&stored);                          // a borrowed ref
/// let c = len::remote(std::sync::Arc::new(vec![0u8; 2])); // a shared value, not copied
/// let d = len::remote(&[9u8, 9][..]);                     // a slice, copied into a Vec
/// assert_eq!(prism::get_all(&[a, b, c, d]).unwrap(), vec![1, 3, 2, 2]);
/// # prism::shutdown();
/// ```
pub trait IntoArg<T> {
    /// Turns `self` into an argument.
    fn into_arg(self) -> Arg;
}

impl<T: Value> IntoArg<T> for T {
    fn into_arg(self) -> Arg {
        Arg::value(self)
    }
}

impl<T: Value> IntoArg<T> for Arc<T> {
    fn into_arg(self) -> Arg {
        Arg::shared(self)
    }
}

impl<T: Value> IntoArg<T> for ObjectRef<T> {
    fn into_arg(self) -> Arg {
        Arg(ArgKind::Ref(self.count))
    }
}

impl<T: Value> IntoArg<T> for &ObjectRef<T> {
    fn into_arg(self) -> Arg {
        Arg::reference(self)
    }
}

impl IntoArg<String> for &str {
    fn into_arg(self) -> Arg {
        Arg::value(self.to_string())
    }
}

impl<T: Value + Clone> IntoArg<Vec<T>> for &[T] {
    fn into_arg(self) -> Arg {
        Arg::value(self.to_vec())
    }
}

/// The resolved arguments of a call on the local path: shared values, by position.
#[doc(hidden)]
pub struct LocalArgs {
    pub(crate) values: Vec<Option<AnyValue>>,
}

impl LocalArgs {
    /// The argument at `i` as an owned `T`: moved out if no one else holds it, cloned
    /// otherwise.
    pub fn owned<T: Value + Clone>(&mut self, i: usize) -> T {
        let v = self.values[i].take().expect("each argument is taken once");
        match v.downcast::<T>() {
            Ok(arc) => Arc::try_unwrap(arc).unwrap_or_else(|a| (*a).clone()),
            Err(_) => panic!(
                "argument {i} is not a {}: the caller and callee disagree on types",
                std::any::type_name::<T>()
            ),
        }
    }

    /// The argument at `i`, shared.
    pub fn shared<T: Value>(&mut self, i: usize) -> Arc<T> {
        let v = self.values[i].take().expect("each argument is taken once");
        v.downcast::<T>().unwrap_or_else(|_| {
            panic!(
                "argument {i} is not a {}: the caller and callee disagree on types",
                std::any::type_name::<T>()
            )
        })
    }
}

/// One parameter of a remote function, actor method or constructor: how a process that
/// received the argument as bytes (or keeps it in its store) makes the value the
/// function takes. Not for direct use: the attribute macros list them.
#[doc(hidden)]
pub struct Param {
    codec: Codec,
    type_id: fn() -> TypeId,
    type_name: fn() -> &'static str,
    /// Declared as a reference (`&T`): the function reads the value without owning it,
    /// so one decoded copy can serve every call in a process.
    shared: bool,
}

/// Where an argument comes from in a process that did not make it.
pub(crate) enum Source<'a> {
    /// Its encoded bytes.
    Bytes(&'a [u8]),
    /// A value this process's store keeps (bytes as they arrived, or decoded already).
    Kept(&'a AnyValue),
}

impl Param {
    /// A parameter of type `T` the function takes by value.
    pub const fn of<T: Value>() -> Param {
        Param {
            codec: Codec::of::<T>(),
            type_id: TypeId::of::<T>,
            type_name: std::any::type_name::<T>,
            shared: false,
        }
    }

    /// A parameter of type `T` the function takes by reference (`&T`, `&[U]`, `&str`).
    pub const fn shared<T: Value>() -> Param {
        Param {
            shared: true,
            ..Param::of::<T>()
        }
    }

    /// Whether the function only reads the value: a decoded copy can be shared.
    pub(crate) fn is_shared(&self) -> bool {
        self.shared
    }

    /// The value of the argument from `source`: decoded, or the kept value itself if
    /// it has the parameter's type already (shared, not copied).
    pub(crate) fn value(&self, source: Source<'_>) -> Result<AnyValue> {
        match source {
            Source::Bytes(b) => (self.codec.decode)(b),
            Source::Kept(v) if Any::type_id(&**v) == (self.type_id)() => Ok(v.clone()),
            Source::Kept(v) => match v.downcast_ref::<Encoded>() {
                Some(e) => (self.codec.decode)(&e.0),
                None => Err(Error::Serialization(format!(
                    "a kept value is not a {}",
                    (self.type_name)()
                ))),
            },
        }
    }

    /// Whether `v` is of this parameter's type (so that it can be kept for others).
    pub(crate) fn is_type_of(&self, v: &AnyValue) -> bool {
        Any::type_id(&**v) == (self.type_id)()
    }

    /// The type's id, for keeping decoded values by type.
    pub(crate) fn type_id(&self) -> TypeId {
        (self.type_id)()
    }
}

impl LocalArgs {
    /// The arguments of a call to `what` made from `args`, one `value` per parameter:
    /// a typed error if their count is not the parameters'.
    pub(crate) fn build<A>(
        params: &[Param],
        args: &[A],
        what: &str,
        mut value: impl FnMut(&A, &Param) -> Result<AnyValue>,
    ) -> Result<LocalArgs> {
        if args.len() != params.len() {
            return Err(Error::Serialization(format!(
                "{what} takes {} arguments, got {}",
                params.len(),
                args.len()
            )));
        }
        let values = args
            .iter()
            .zip(params)
            .map(|(a, p)| value(a, p).map(Some))
            .collect::<Result<Vec<_>>>()?;
        Ok(LocalArgs { values })
    }
}

/// A value returned by a call, with what the store needs to account and spill it.
#[doc(hidden)]
pub struct Output {
    pub(crate) value: AnyValue,
    pub(crate) codec: Codec,
    /// Its memory footprint, measured when it is stored here (a result sent to another
    /// process is encoded instead, and not walked twice).
    footprint: fn(&AnyValue) -> u64,
}

fn footprint_as<T: Value>(v: &AnyValue) -> u64 {
    v.downcast_ref::<T>().map_or(0, crate::object::footprint)
}

impl Output {
    /// The value encoded, to travel to another process.
    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        (self.codec.encode)(&self.value)
    }

    /// The value's memory footprint, the unit the store's cap counts.
    pub(crate) fn size(&self) -> u64 {
        (self.footprint)(&self.value)
    }

    /// Wraps a returned value.
    pub fn new<T: Value>(v: T) -> Output {
        Output {
            value: Arc::new(v),
            codec: Codec::of::<T>(),
            footprint: footprint_as::<T>,
        }
    }
}

/// The reference arguments of a call, for dependency tracking.
pub(crate) fn refs_of(args: &[Arg]) -> Vec<Arc<RefCount>> {
    args.iter()
        .filter_map(|a| match &a.0 {
            ArgKind::Ref(c) => Some(c.clone()),
            ArgKind::Value(..) => None,
        })
        .collect()
}
