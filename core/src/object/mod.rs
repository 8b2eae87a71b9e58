//! Objects: the typed references users hold, and the store that keeps the values.
//!
//! An [`ObjectRef<T>`] is a cheap, clonable, serializable handle on a value that exists
//! (or will exist) in the object store. Every live `ObjectRef` counts as one reference;
//! when the last one is dropped — in the driver, in a task, or inside another object
//! that is itself freed — the store frees the value. Clones share one count, so cloning
//! is an atomic increment and nothing more.
//!
//! Values are kept as `Arc<T>` behind a type-erased pointer and never serialized on the
//! local path; only spilling to disk and sending to another process encode them. An
//! object that lives in another process is a placeholder ([`Location`]): the store
//! never fetches it. The runtime above pulls it and fills the entry in.

pub(crate) mod pin;
mod signal;
mod size;
mod spill;
mod store;
mod value;

use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, RwLock};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
pub use crate::id::ObjectId;

pub(crate) use signal::{Signal, Waiter};
pub(crate) use store::Store;
pub use store::StoreStats;
pub(crate) use value::{downcast, AnyValue, Codec, Encoded, Held};

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

/// Where an object that lives in another process is kept: the placeholder its owner's
/// store holds until someone reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Location {
    /// The object server of the process holding it.
    pub at: String,
    /// Its encoded size in bytes.
    pub size: u64,
}

/// Encoded bytes shared between the store and a task reading them.
pub type SharedBytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

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

impl RefCount {
    /// A reference to nothing, that reads as `err`.
    pub(crate) fn nowhere(id: ObjectId, err: Error) -> RefCount {
        RefCount {
            id,
            home: Home::Nowhere(err),
        }
    }

    /// The store keeping the object, or the error a read gives.
    pub(crate) fn store(&self) -> Result<&Arc<Store>> {
        match &self.home {
            Home::Store(s) => Ok(s),
            Home::Nowhere(e) => Err(e.clone()),
        }
    }
}

impl Drop for RefCount {
    fn drop(&mut self) {
        if let Home::Store(store) = &self.home {
            store.release(self.id);
        }
    }
}

/// The store references deserialized in this process attach to: the running runtime's,
/// set by the runtime when it starts and cleared when it stops.
static CURRENT: RwLock<Option<Arc<Store>>> = RwLock::new(None);

/// Makes `store` the one deserialized references attach to (`None`: no runtime, and
/// such references read as `err`).
pub(crate) fn set_current(store: Option<Arc<Store>>) {
    *crate::sync::write(&CURRENT) = store;
}

/// This process's object server, where other processes pull the objects held here
/// (`None`: embedded, where every ref is local).
static SERVER: RwLock<Option<String>> = RwLock::new(None);

/// Sets where other processes pull this process's objects from.
pub(crate) fn set_server(address: Option<String>) {
    *crate::sync::write(&SERVER) = address;
}

/// A reference to a value of type `T` in the object store: the result of a task, an
/// actor call or a [`crate::put`].
///
/// A ref nested inside a value (a task's argument or result, an actor's message)
/// travels with where its object is kept, and the process that receives it pulls the
/// value from there when it reads it. The object stays readable at least as long as the
/// value it travelled in: an argument until its task is done, a result until its owner
/// frees it. Keep the outer value (or another ref to the object) alive while the nested
/// ref is used.
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
        Self::from_count(Arc::new(RefCount::nowhere(id, err)))
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
    /// The id, and where the object is kept when the value is encoded for another
    /// process (then the object is pinned for as long as the encoded copy lives).
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let at = if pin::active() {
            let server = crate::sync::read(&SERVER).clone();
            match (server, self.count.store()) {
                (Some(server), Ok(store)) => {
                    let at = store.export_location(self.count.id, &server);
                    if at.is_some() {
                        pin::pin(Arc::new(ObjectRef::<()>::from_count(self.count.clone())));
                    }
                    at
                }
                _ => None,
            }
        } else {
            None
        };
        (self.count.id, at).serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for ObjectRef<T> {
    /// Re-acquires a counted reference in the current runtime. If the object no longer
    /// exists there, the ref yields [`Error::ObjectLost`] when read.
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (id, at) = <(ObjectId, Option<Location>)>::deserialize(d)?;
        let store = crate::sync::read(&CURRENT).clone();
        let count = match (store, at) {
            (Some(store), Some(at)) => store.reacquire_or_place(id, at),
            (Some(store), None) => store
                .reacquire(id)
                .unwrap_or_else(|| RefCount::nowhere(id, Error::ObjectLost(id))),
            (None, _) => RefCount::nowhere(id, Error::NotInitialized),
        };
        Ok(ObjectRef::from_count(Arc::new(count)))
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
