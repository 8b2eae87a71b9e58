//! The ids every layer names: of objects (and the tasks that make them), of actors and
//! of placement groups.
//!
//! They sit below everything else so that the error type, the wire protocol and the
//! daemons can name an object or an actor without depending on the object store.

use std::fmt;

use serde::{Deserialize, Serialize};

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
    /// Makes an id from its owner (the embedded runtime is 0) and a sequence number.
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

/// The id of an actor. An actor's id is drawn from its owner's object ids, so that the
/// outcome of its creation can travel as the result of a task would.
///
/// ```
/// let id = prism::ActorId::from(prism::ObjectId::new(7, 1));
/// assert_eq!(id.to_string(), "actor-00000007-000000000001");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ActorId(pub(crate) ObjectId);

impl ActorId {
    /// The object id the actor's id is drawn from.
    pub const fn object(&self) -> ObjectId {
        self.0
    }
}

impl From<ObjectId> for ActorId {
    fn from(id: ObjectId) -> Self {
        ActorId(id)
    }
}

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "actor-{}", self.0)
    }
}

impl fmt::Debug for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The id of a placement group, drawn from its creator's object ids like an actor's.
///
/// ```
/// let id = prism::PlacementGroupId::from(prism::ObjectId::new(7, 1));
/// assert_eq!(id.to_string(), "pg-00000007-000000000001");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PlacementGroupId(pub(crate) ObjectId);

impl From<ObjectId> for PlacementGroupId {
    fn from(id: ObjectId) -> Self {
        PlacementGroupId(id)
    }
}

impl fmt::Display for PlacementGroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pg-{}", self.0)
    }
}

impl fmt::Debug for PlacementGroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
