//! What the store holds: values of any type behind a shared pointer, how each type is
//! encoded and decoded (for spilling and sending), values that arrived as bytes, and
//! what a final object holds.

use std::any::Any;
use std::sync::Arc;

use super::{Location, Value};
use crate::error::{Error, Result};
use crate::id::ObjectId;

/// A stored value, type-erased.
pub(crate) type AnyValue = Arc<dyn Any + Send + Sync>;

/// How to encode and decode one concrete type, for spilling and sending.
#[derive(Clone, Copy)]
pub(crate) struct Codec {
    pub encode: fn(&AnyValue) -> Result<Vec<u8>>,
    pub decode: fn(&[u8]) -> Result<AnyValue>,
}

/// A value as bytes, as it arrives from another process; decoded on `get` into the type
/// asked for.
pub(crate) struct Encoded(pub Vec<u8>);

impl AsRef<[u8]> for Encoded {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Codec {
    /// The codec of values that are already bytes.
    pub fn encoded() -> Codec {
        Codec {
            encode: |v| match v.downcast_ref::<Encoded>() {
                Some(e) => Ok(e.0.clone()),
                None => Err(Error::Serialization(
                    "stored value is not encoded bytes".into(),
                )),
            },
            decode: |b| Ok(Arc::new(Encoded(b.to_vec()))),
        }
    }

    /// The codec of values of type `T`.
    pub const fn of<T: Value>() -> Codec {
        Codec {
            encode: encode_as::<T>,
            decode: decode_as::<T>,
        }
    }
}

fn encode_as<T: Value>(v: &AnyValue) -> Result<Vec<u8>> {
    match v.downcast_ref::<T>() {
        Some(t) => super::encode(t),
        None => Err(Error::Serialization(format!(
            "stored value is not a {}",
            std::any::type_name::<T>()
        ))),
    }
}

fn decode_as<T: Value>(b: &[u8]) -> Result<AnyValue> {
    Ok(Arc::new(super::decode::<T>(b)?))
}

/// A final object as the store has it: its value, or where it lives.
pub(crate) enum Held {
    /// The value, in this process.
    Here(AnyValue),
    /// A placeholder: the value lives in another process.
    Elsewhere(Location),
}

/// Casts a value read from the store to its type, decoding it if it arrived as bytes.
pub(crate) fn downcast<T: Value>(id: ObjectId, v: AnyValue) -> Result<Arc<T>> {
    if let Some(e) = v.downcast_ref::<Encoded>() {
        return super::decode::<T>(&e.0).map(Arc::new);
    }
    v.downcast::<T>().map_err(|_| Error::TypeMismatch {
        object: id,
        expected: std::any::type_name::<T>().to_string(),
        actual: "another type".to_string(),
    })
}
