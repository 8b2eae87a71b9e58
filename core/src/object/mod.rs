//! Objects: their ids, the typed references users hold, and the store that keeps them.
//!
//! An [`ObjectRef<T>`] is a cheap, clonable, serializable handle on a value that exists
//! (or will exist) in the object store. Every live `ObjectRef` counts as one reference;
//! when the last one is dropped — in the driver, in a task, or inside another object
//! that is itself freed — the store frees the value. Clones share one count, so cloning
//! is an atomic increment and nothing more.
//!
//! The embedded runtime keeps values as `Arc<T>` behind a type-erased pointer and never
//! serializes them on its local path; only spilling to disk (and, later, the cluster
//! wire) encodes them.

mod size;
mod store;

use std::fmt;
use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

pub use store::StoreStats;
pub(crate) use store::{
    downcast as store_downcast, AnyValue, Codec, Encoded, Signal, Store, Waiter,
};

/// Values that can be task arguments, results or stored objects.
///
/// Every such type is `Serialize + DeserializeOwned + Send + Sync + 'static`, checked at
/// compile time in every mode: a program that compiles for the embedded runtime also
/// runs on a cluster. Implemented for every type that meets the bounds.
///
/// ```
/// fn storable<T: prism::Value>() {}
/// storable::<Vec<(String, f64)>>();
/// storable::<prism::ObjectRef<u8>>(); // refs nest inside values
/// ```
pub trait Value: Serialize + DeserializeOwned + Send + Sync + 'static {}

impl<T: Serialize + DeserializeOwned + Send + Sync + 'static> Value for T {}

/// The id of an object: the id of the process that owns it and a sequence number.
///
/// The result of a task has the task's own id.
///
/// ```
/// let id = prism::ObjectId::new(0, 42);
/// assert_eq!(id.to_string(), "00000000-00000000002a");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectId {
    owner: u32,
    seq: u64,
}

impl ObjectId {
    /// Makes an id from its owner (the driver is 0) and a sequence number.
    pub const fn new(owner: u32, seq: u64) -> Self {
        ObjectId { owner, seq }
    }

    /// The sequence number within the owner.
    pub const fn seq(&self) -> u64 {
        self.seq
    }

    /// The owning process.
    pub const fn owner(&self) -> u32 {
        self.owner
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}-{:012x}", self.owner, self.seq)
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// One counted reference to an object. Its drop is the reference count's decrement.
pub(crate) struct RefCount {
    pub(crate) id: ObjectId,
    pub(crate) home: Home,
}

/// Where a reference's object lives.
pub(crate) enum Home {
    Store(Arc<Store>),
    /// A reference made without a runtime; `get` returns this error.
    Nowhere(Error),
}

impl Drop for RefCount {
    fn drop(&mut self) {
        if let Home::Store(store) = &self.home {
            store.release(self.id);
        }
    }
}

/// A reference to a value of type `T` in the object store: the result of a task, an
/// actor call or a [`crate::put`].
///
/// `ObjectRef` is `Clone` (cheap), `Serialize` (so refs can be nested in values and passed
/// to tasks), `Debug` (shows the id) and `IntoFuture` (so async code can `.await` it).
///
/// ```
/// # fn main() -> prism::Result<()> {
/// prism::init()?;
/// let r: prism::ObjectRef<Vec<u32>> = prism::put(vec![1, 2, 3]);
/// let again = r.clone();
/// assert_eq!(prism::get(&again)?, vec![1, 2, 3]);
/// println!("{r:?}");
/// # prism::shutdown(); Ok(()) }
/// ```
pub struct ObjectRef<T> {
    pub(crate) count: Arc<RefCount>,
    _type: PhantomData<fn() -> T>,
}

impl<T> ObjectRef<T> {
    pub(crate) fn from_count(count: Arc<RefCount>) -> Self {
        ObjectRef {
            count,
            _type: PhantomData,
        }
    }

    pub(crate) fn failed(id: ObjectId, err: Error) -> Self {
        Self::from_count(Arc::new(RefCount {
            id,
            home: Home::Nowhere(err),
        }))
    }

    /// The object's id.
    pub fn id(&self) -> ObjectId {
        self.count.id
    }

    /// Forgets the type, for lists of refs of different types.
    pub fn untyped(&self) -> ObjectRef<()> {
        ObjectRef::from_count(self.count.clone())
    }
}

impl<T> Clone for ObjectRef<T> {
    fn clone(&self) -> Self {
        Self::from_count(self.count.clone())
    }
}

impl<T> fmt::Debug for ObjectRef<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectRef({})", self.count.id)
    }
}

impl<T> PartialEq for ObjectRef<T> {
    fn eq(&self, other: &Self) -> bool {
        self.id() == other.id()
    }
}

impl<T> Eq for ObjectRef<T> {}

impl<T> std::hash::Hash for ObjectRef<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.id().hash(state)
    }
}

impl<T> Serialize for ObjectRef<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.count.id.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for ObjectRef<T> {
    /// Re-acquires a counted reference in the current runtime. If the object no longer
    /// exists there, the ref yields [`Error::ObjectLost`] when read.
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let id = ObjectId::deserialize(d)?;
        let count = match crate::runtime::current() {
            Ok(rt) => rt.store.reacquire(id).unwrap_or_else(|| RefCount {
                id,
                home: Home::Nowhere(Error::ObjectLost(id)),
            }),
            Err(e) => RefCount {
                id,
                home: Home::Nowhere(e),
            },
        };
        Ok(ObjectRef::from_count(Arc::new(count)))
    }
}

/// The future of an [`ObjectRef`]: resolves to the value (cloned out of the store) or
/// the object's error.
///
/// ```
/// # prism::init().unwrap();
/// let r = prism::put(5u8);
/// let v = prism::task::block_on(async { r.await });
/// assert_eq!(v.unwrap(), 5);
/// # prism::shutdown();
/// ```
pub struct ObjectFuture<T> {
    target: ObjectRef<T>,
    waiting: Option<std::task::Waker>,
}

impl<T: Value + Clone> Future for ObjectFuture<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let store = match &self.target.count.home {
            Home::Store(s) => s.clone(),
            Home::Nowhere(e) => return Poll::Ready(Err(e.clone())),
        };
        let id = self.target.id();
        let same_waker = self
            .waiting
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()));
        let waiter = (!same_waker).then(|| Waiter::Waker(cx.waker().clone()));
        match store.poll_value(id, waiter) {
            Some(Ok(v)) => Poll::Ready(store::downcast::<T>(id, v).map(|a| (*a).clone())),
            Some(Err(e)) => Poll::Ready(Err(e)),
            None => {
                if !same_waker {
                    self.waiting = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

impl<T: Value + Clone> IntoFuture for ObjectRef<T> {
    type Output = Result<T>;
    type IntoFuture = ObjectFuture<T>;

    fn into_future(self) -> ObjectFuture<T> {
        ObjectFuture {
            target: self,
            waiting: None,
        }
    }
}

/// The memory footprint of a value, the unit the store's memory cap is counted in.
pub(crate) fn footprint<T: Serialize>(value: &T) -> u64 {
    size::footprint(value)
}

/// Encodes a value for spilling or the wire.
///
/// ```
/// let bytes = prism::object::encode(&(1u8, "a")).unwrap();
/// let back: (u8, String) = prism::object::decode(&bytes).unwrap();
/// assert_eq!(back, (1, "a".to_string()));
/// ```
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    Ok(postcard::to_allocvec(value)?)
}

/// Decodes a value encoded with [`encode`]; malformed bytes are an error, not a panic.
///
/// ```
/// assert!(prism::object::decode::<String>(&[200]).is_err());
/// ```
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    Ok(postcard::from_bytes(bytes)?)
}
