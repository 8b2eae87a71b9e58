//! The in-memory object store: values by id, their reference counts and who waits for
//! them. Spilling past the memory cap is in `spill`.
//!
//! An entry goes `Pending -> Ready | Elsewhere | Failed` exactly once; then `Ready <->
//! Spilled` may alternate, an `Elsewhere` placeholder may be filled with the pulled
//! value (`Ready`), and a lost object may be made `Pending` again to be rebuilt.
//! Waiters registered on a pending entry are woken once, when it becomes final,
//! outside the store's lock. Entries are removed when their reference count reaches
//! zero, whatever their state; a task finishing for a removed entry drops its result.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use super::signal::{fire_failed, Signal, Waiter};
use super::value::{AnyValue, Codec, Held};
use super::{Location, RefCount};
use crate::error::{Error, Result};
use crate::id::ObjectId;

pub(super) enum Slot {
    Pending(Vec<Waiter>),
    Ready { value: AnyValue, size: u64 },
    Spilled { path: PathBuf, size: u64 },
    Elsewhere(Location),
    Failed(Error),
}

pub(super) struct Entry {
    pub refs: usize,
    /// Other processes may hold copies: its freeing is announced (see [`Store::on_free`]).
    pub exported: bool,
    pub slot: Slot,
    pub codec: Option<Codec>,
    /// Position in the spill order, for large ready objects.
    pub stamp: Option<u64>,
}

pub(super) struct Inner {
    pub entries: HashMap<ObjectId, Entry>,
    /// Large ready objects by age: the spill candidates, oldest first.
    pub spillable: BTreeMap<u64, ObjectId>,
    pub next_stamp: u64,
    pub used: u64,
    pub spilled_bytes: u64,
    /// Objects spilled now (on disk, not read back).
    pub spilled_now: u64,
    pub spilled_objects: u64,
    pub restored_objects: u64,
    pulls: u64,
    bytes_pulled: u64,
    pull_time: std::time::Duration,
}

/// Counters of the object store, for tests, `prism status` and benches.
///
/// ```
/// # prism::init().unwrap();
/// let stats: prism::StoreStats = prism::store_stats().unwrap();
/// assert!(stats.bytes_in_memory <= stats.capacity);
/// # prism::shutdown();
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Objects alive (pending, in memory, spilled, elsewhere or failed).
    pub objects: usize,
    /// Bytes of values held in memory.
    pub bytes_in_memory: u64,
    /// Bytes of values currently spilled to disk.
    pub bytes_spilled: u64,
    /// Objects currently spilled to disk.
    pub objects_spilled: u64,
    /// How many times an object was spilled.
    pub spill_count: u64,
    /// How many objects this process pulled from other processes (cluster only).
    pub pulls: u64,
    /// The bytes of those pulls.
    pub bytes_pulled: u64,
    /// The time spent in those pulls, from connecting to the last byte.
    pub pull_time: std::time::Duration,
    /// How many times a spilled object was read back.
    pub restore_count: u64,
    /// The memory cap.
    pub capacity: u64,
}

impl From<StoreStats> for crate::state::ObjectCounts {
    fn from(s: StoreStats) -> crate::state::ObjectCounts {
        crate::state::ObjectCounts {
            objects: s.objects as u64,
            bytes_in_memory: s.bytes_in_memory,
            objects_spilled: s.objects_spilled,
            bytes_spilled: s.bytes_spilled,
            capacity: s.capacity,
        }
    }
}

/// The object store of one runtime.
pub(crate) struct Store {
    inner: Mutex<Inner>,
    pub(super) capacity: u64,
    pub(super) spill_dir: Option<PathBuf>,
    /// Told of every freed object marked exported, in a cluster process.
    on_free: OnceLock<FreeHook>,
}

/// What a cluster process does when an object others may hold copies of is freed.
pub(crate) type FreeHook = Box<dyn Fn(ObjectId) + Send + Sync>;

impl Store {
    pub fn new(capacity: u64, spill_dir: Option<PathBuf>) -> Arc<Store> {
        Arc::new(Store {
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                spillable: BTreeMap::new(),
                next_stamp: 0,
                used: 0,
                spilled_bytes: 0,
                spilled_now: 0,
                spilled_objects: 0,
                restored_objects: 0,
                pulls: 0,
                bytes_pulled: 0,
                pull_time: std::time::Duration::ZERO,
            }),
            capacity,
            spill_dir,
            on_free: OnceLock::new(),
        })
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        crate::sync::lock(&self.inner)
    }

    /// Creates a pending entry with one reference, returned.
    pub fn create(self: &Arc<Self>, id: ObjectId) -> RefCount {
        self.lock().entries.insert(
            id,
            Entry {
                refs: 1,
                exported: false,
                slot: Slot::Pending(Vec::new()),
                codec: None,
                stamp: None,
            },
        );
        RefCount {
            id,
            home: super::Home::Store(self.clone()),
        }
    }

    /// A new counted reference to an existing object, if it still exists.
    pub fn reacquire(self: &Arc<Self>, id: ObjectId) -> Option<RefCount> {
        let mut inner = self.lock();
        let e = inner.entries.get_mut(&id)?;
        e.refs += 1;
        Some(RefCount {
            id,
            home: super::Home::Store(self.clone()),
        })
    }

    /// A counted reference to `id`: the existing object if there is one, else a new
    /// placeholder for the value kept at `at` (a ref that travelled nested in a value).
    pub fn reacquire_or_place(self: &Arc<Self>, id: ObjectId, at: Location) -> RefCount {
        let mut inner = self.lock();
        if let Some(e) = inner.entries.get_mut(&id) {
            e.refs += 1;
        } else {
            inner.entries.insert(
                id,
                Entry {
                    refs: 1,
                    exported: false,
                    slot: Slot::Elsewhere(at),
                    codec: None,
                    stamp: None,
                },
            );
        }
        RefCount {
            id,
            home: super::Home::Store(self.clone()),
        }
    }

    /// Where another process can pull object `id` from, if it is final and not failed:
    /// `here` (this process's object server) for a value held here, in memory or
    /// spilled, whose freeing is then announced; its placeholder's location otherwise.
    pub fn export_location(&self, id: ObjectId, here: &str) -> Option<Location> {
        let mut inner = self.lock();
        let e = inner.entries.get_mut(&id)?;
        match &e.slot {
            Slot::Ready { size, .. } | Slot::Spilled { size, .. } => {
                let size = *size;
                e.exported = true;
                Some(Location {
                    at: here.to_string(),
                    size,
                })
            }
            Slot::Elsewhere(at) => Some(at.clone()),
            Slot::Pending(_) | Slot::Failed(_) => None,
        }
    }

    /// Drops one reference; frees the object at zero.
    pub fn release(&self, id: ObjectId) {
        let mut inner = self.lock();
        let Some(e) = inner.entries.get_mut(&id) else {
            return;
        };
        e.refs -= 1;
        if e.refs > 0 {
            return;
        }
        let Some(e) = inner.entries.remove(&id) else {
            return;
        };
        if let Some(stamp) = e.stamp {
            inner.spillable.remove(&stamp);
        }
        let exported = e.exported;
        let freed = match e.slot {
            Slot::Ready { value, size } => {
                inner.used -= size;
                Some(value)
            }
            Slot::Spilled { path, size } => {
                inner.spilled_bytes -= size;
                inner.spilled_now -= 1;
                let _ = std::fs::remove_file(&path);
                None
            }
            _ => None,
        };
        drop(inner);
        // The value's own drop (which may release nested refs) runs outside the lock.
        drop(freed);
        if exported {
            if let Some(hook) = self.on_free.get() {
                hook(id);
            }
        }
    }

    /// Counts a pull of `bytes` from another process that took `took`.
    pub fn record_pull(&self, bytes: u64, took: std::time::Duration) {
        let mut inner = self.lock();
        inner.pulls += 1;
        inner.bytes_pulled += bytes;
        inner.pull_time += took;
    }

    /// The size the store accounts for a final object here (its footprint, or its
    /// bytes).
    pub fn size(&self, id: ObjectId) -> Option<u64> {
        match self.lock().entries.get(&id).map(|e| &e.slot) {
            Some(Slot::Ready { size, .. }) | Some(Slot::Spilled { size, .. }) => Some(*size),
            _ => None,
        }
    }

    /// Whether the store has an entry for `id` (in any state).
    pub fn has(&self, id: ObjectId) -> bool {
        self.lock().entries.contains_key(&id)
    }

    /// Sets what to do when an exported object is freed (once per store).
    pub fn on_free(&self, hook: FreeHook) {
        let _ = self.on_free.set(hook);
    }

    /// Marks an object as having copies elsewhere, so that its freeing is announced.
    pub fn mark_exported(&self, id: ObjectId) {
        if let Some(e) = self.lock().entries.get_mut(&id) {
            e.exported = true;
        }
    }

    /// A counted reference to `id` holding `value`: the existing object if there is one
    /// (its value unchanged), a new ready one otherwise.
    pub fn hold(
        self: &Arc<Self>,
        id: ObjectId,
        value: AnyValue,
        size: u64,
        codec: Codec,
    ) -> RefCount {
        if let Some(count) = self.reacquire(id) {
            return count;
        }
        let count = self.create(id);
        self.complete(id, value, size, codec);
        count
    }

    /// Fills a placeholder with the value pulled from where it lives (bytes). Returns
    /// `false` if the entry is gone or no longer a placeholder, or the value does not
    /// fit (the caller then keeps its copy to itself).
    pub fn fill(&self, id: ObjectId, value: AnyValue, size: u64) -> bool {
        let mut inner = self.lock();
        if !matches!(
            inner.entries.get(&id).map(|e| &e.slot),
            Some(Slot::Elsewhere(_))
        ) {
            return false;
        }
        if let Err(e) = self.make_room(&mut inner, size, id) {
            tracing::debug!(%id, "keeping a pulled object out of the store: {e}");
            return false;
        }
        let stamp = self.stamp_if_large(&mut inner, size);
        let Some(entry) = inner.entries.get_mut(&id) else {
            return false;
        };
        entry.slot = Slot::Ready { value, size };
        entry.codec = Some(Codec::encoded());
        entry.stamp = stamp;
        inner.used += size;
        if let Some(s) = stamp {
            inner.spillable.insert(s, id);
        }
        true
    }

    /// Makes a final object pending again, to be rebuilt. Returns `false` if it is not
    /// final and present (already being rebuilt, failed or freed).
    pub fn reset(&self, id: ObjectId) -> bool {
        let mut inner = self.lock();
        let Some(entry) = inner.entries.get_mut(&id) else {
            return false;
        };
        let size = match &entry.slot {
            Slot::Ready { size, .. } => *size,
            Slot::Elsewhere(_) => 0,
            _ => return false,
        };
        let old = std::mem::replace(&mut entry.slot, Slot::Pending(Vec::new()));
        if let Some(s) = entry.stamp.take() {
            inner.spillable.remove(&s);
        }
        inner.used -= size;
        drop(inner);
        drop(old);
        true
    }

    /// Makes a pending object ready. Returns `false` if the object was freed or already
    /// final (cancelled), in which case the value is dropped.
    pub fn complete(&self, id: ObjectId, value: AnyValue, size: u64, codec: Codec) -> bool {
        let mut inner = self.lock();
        if let Err(e) = self.make_room(&mut inner, size, id) {
            drop(inner);
            return self.fail(id, e);
        }
        let stamp = self.stamp_if_large(&mut inner, size);
        let Some(entry) = inner.entries.get_mut(&id) else {
            return false;
        };
        if !matches!(entry.slot, Slot::Pending(_)) {
            return false;
        }
        let old = std::mem::replace(&mut entry.slot, Slot::Ready { value, size });
        entry.codec = Some(codec);
        entry.stamp = stamp;
        inner.used += size;
        if let Some(s) = stamp {
            inner.spillable.insert(s, id);
        }
        drop(inner);
        if let Slot::Pending(waiters) = old {
            for w in waiters {
                w.fire(None);
            }
        }
        true
    }

    /// Makes a pending object final as a placeholder for a value kept in another
    /// process. Returns `false` if it was freed or already final.
    pub fn place(&self, id: ObjectId, at: Location) -> bool {
        let mut inner = self.lock();
        let Some(entry) = inner.entries.get_mut(&id) else {
            return false;
        };
        if !matches!(entry.slot, Slot::Pending(_)) {
            return false;
        }
        let old = std::mem::replace(&mut entry.slot, Slot::Elsewhere(at));
        drop(inner);
        if let Slot::Pending(waiters) = old {
            for w in waiters {
                w.fire(None);
            }
        }
        true
    }

    /// Makes a pending object failed. Returns `false` if it was freed or already final.
    pub fn fail(&self, id: ObjectId, err: Error) -> bool {
        let mut inner = self.lock();
        let Some(entry) = inner.entries.get_mut(&id) else {
            return false;
        };
        if !matches!(entry.slot, Slot::Pending(_)) {
            return false;
        }
        let old = std::mem::replace(&mut entry.slot, Slot::Failed(err.clone()));
        drop(inner);
        if let Slot::Pending(waiters) = old {
            fire_failed(waiters, err);
        }
        true
    }

    /// What a final object holds, or its error; for a pending one registers `waiter`
    /// (if given) and returns `None`.
    pub fn poll(&self, id: ObjectId, waiter: Option<Waiter>) -> Option<Result<Held>> {
        let mut inner = self.lock();
        let Some(entry) = inner.entries.get_mut(&id) else {
            return Some(Err(Error::ObjectLost(id)));
        };
        match &mut entry.slot {
            Slot::Ready { value, .. } => Some(Ok(Held::Here(value.clone()))),
            Slot::Elsewhere(at) => Some(Ok(Held::Elsewhere(at.clone()))),
            Slot::Failed(e) => Some(Err(e.clone())),
            Slot::Pending(waiters) => {
                if let Some(w) = waiter {
                    waiters.push(w);
                }
                None
            }
            Slot::Spilled { .. } => Some(self.restore(&mut inner, id).map(Held::Here)),
        }
    }

    /// What final objects hold (or their errors), in input order; `ObjectLost` for
    /// pending ones.
    pub fn values(&self, ids: &[ObjectId]) -> Vec<Result<Held>> {
        let mut inner = self.lock();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let v = match inner.entries.get(id).map(|e| &e.slot) {
                Some(Slot::Ready { value, .. }) => Ok(Held::Here(value.clone())),
                Some(Slot::Elsewhere(at)) => Ok(Held::Elsewhere(at.clone())),
                Some(Slot::Failed(e)) => Err(e.clone()),
                Some(Slot::Spilled { .. }) => self.restore(&mut inner, *id).map(Held::Here),
                Some(Slot::Pending(_)) | None => Err(Error::ObjectLost(*id)),
            };
            out.push(v);
        }
        out
    }

    /// Whether the object exists and is not final yet.
    pub fn is_pending(&self, id: ObjectId) -> bool {
        matches!(
            self.lock().entries.get(&id).map(|e| &e.slot),
            Some(Slot::Pending(_))
        )
    }

    /// Whether the object was made final before its task ran: cancelled, or failed by
    /// a shutdown.
    pub fn is_cancelled(&self, id: ObjectId) -> bool {
        matches!(
            self.lock().entries.get(&id).map(|e| &e.slot),
            Some(Slot::Failed(_))
        )
    }

    /// Registers `signal` on every pending object of `ids`; returns how many were pending.
    pub fn watch(&self, ids: &[ObjectId], signal: &Arc<Signal>) -> usize {
        let mut inner = self.lock();
        let mut pending = 0;
        for id in ids {
            if let Some(Entry {
                slot: Slot::Pending(waiters),
                ..
            }) = inner.entries.get_mut(id)
            {
                waiters.push(Waiter::Signal(signal.clone()));
                pending += 1;
            }
        }
        pending
    }

    /// Removes `signal` from the objects of `ids` that are still pending.
    pub fn unwatch(&self, ids: &[ObjectId], signal: &Arc<Signal>) {
        let mut inner = self.lock();
        for id in ids {
            if let Some(Entry {
                slot: Slot::Pending(waiters),
                ..
            }) = inner.entries.get_mut(id)
            {
                waiters.retain(|w| !w.is_signal(signal));
            }
        }
    }

    /// For each id: `None` if pending, `Some(Ok(()))` if final, `Some(Err)` if failed.
    pub fn states(&self, ids: &[ObjectId]) -> Vec<Option<Result<()>>> {
        let inner = self.lock();
        ids.iter()
            .map(|id| match inner.entries.get(id).map(|e| &e.slot) {
                None => Some(Err(Error::ObjectLost(*id))),
                Some(Slot::Pending(_)) => None,
                Some(Slot::Failed(e)) => Some(Err(e.clone())),
                Some(_) => Some(Ok(())),
            })
            .collect()
    }

    /// The first failure among `ids`, in input order.
    pub fn first_failure(&self, ids: &[ObjectId]) -> Option<Error> {
        let inner = self.lock();
        ids.iter()
            .find_map(|id| match inner.entries.get(id).map(|e| &e.slot) {
                None => Some(Error::ObjectLost(*id)),
                Some(Slot::Failed(e)) => Some(e.clone()),
                _ => None,
            })
    }

    pub fn stats(&self) -> StoreStats {
        let inner = self.lock();
        StoreStats {
            objects: inner.entries.len(),
            bytes_in_memory: inner.used,
            bytes_spilled: inner.spilled_bytes,
            objects_spilled: inner.spilled_now,
            spill_count: inner.spilled_objects,
            restore_count: inner.restored_objects,
            pulls: inner.pulls,
            bytes_pulled: inner.bytes_pulled,
            pull_time: inner.pull_time,
            capacity: self.capacity,
        }
    }

    /// The encoded bytes of a final object held here, to send it to another process.
    /// A placeholder is [`Error::ObjectLost`] here: its bytes are elsewhere, and the
    /// caller reads where from [`Store::poll`].
    pub fn encoded(&self, id: ObjectId) -> Result<Vec<u8>> {
        let inner = self.lock();
        match inner.entries.get(&id) {
            Some(Entry {
                slot: Slot::Ready { value, .. },
                codec: Some(codec),
                ..
            }) => (codec.encode)(value),
            Some(Entry {
                slot: Slot::Spilled { path, .. },
                ..
            }) => {
                // Spilled bytes are the codec's encoding already.
                std::fs::read(path).map_err(|e| Error::io("reading a spilled object", e))
            }
            Some(Entry {
                slot: Slot::Failed(e),
                ..
            }) => Err(e.clone()),
            _ => Err(Error::ObjectLost(id)),
        }
    }

    /// Fails every pending object, so that nobody waits on a runtime that is gone.
    pub fn shut_down(&self) {
        self.fail_pending(Error::Shutdown)
    }

    /// Fails every pending object with `err`.
    pub fn fail_pending(&self, err: Error) {
        let ids: Vec<ObjectId> = {
            let inner = self.lock();
            inner
                .entries
                .iter()
                .filter(|(_, e)| matches!(e.slot, Slot::Pending(_)))
                .map(|(id, _)| *id)
                .collect()
        };
        for id in ids {
            self.fail(id, err.clone());
        }
    }
}

#[cfg(test)]
mod tests;
