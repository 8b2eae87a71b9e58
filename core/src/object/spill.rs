//! Spilling: past the store's memory cap, the oldest large objects no one is reading
//! are written to the spill directory and read back when someone asks for them.

use std::sync::Arc;

use super::store::{Entry, Inner, Slot, Store};
use super::value::AnyValue;
use crate::error::{Error, Result};
use crate::id::ObjectId;

/// Objects at least this large are candidates for spilling; smaller ones stay in memory.
const SPILL_MIN_BYTES: u64 = 64 * 1024;

impl Store {
    /// The next position in the spill order, for an object large enough to spill.
    pub(super) fn stamp_if_large(&self, inner: &mut Inner, size: u64) -> Option<u64> {
        (size >= SPILL_MIN_BYTES).then(|| {
            inner.next_stamp += 1;
            inner.next_stamp
        })
    }

    /// Spills the oldest large objects no one is reading until `incoming` more bytes fit.
    pub(super) fn make_room(
        &self,
        inner: &mut Inner,
        incoming: u64,
        for_id: ObjectId,
    ) -> Result<()> {
        if inner.used + incoming <= self.capacity {
            return Ok(());
        }
        let full = |inner: &Inner, detail: &str| Error::ObjectStoreFull {
            needed: incoming,
            used: inner.used,
            capacity: self.capacity,
            detail: detail.to_string(),
        };
        if incoming > self.capacity {
            return Err(full(inner, "; the object alone is larger than the cap"));
        }
        let Some(dir) = &self.spill_dir else {
            return Err(full(inner, "; spilling is off"));
        };
        let candidates: Vec<(u64, ObjectId)> =
            inner.spillable.iter().map(|(s, id)| (*s, *id)).collect();
        for (stamp, id) in candidates {
            if inner.used + incoming <= self.capacity {
                break;
            }
            if id == for_id {
                continue;
            }
            let Some(entry) = inner.entries.get_mut(&id) else {
                continue;
            };
            let (Slot::Ready { value, size }, Some(codec)) = (&entry.slot, entry.codec) else {
                continue;
            };
            // A value some task is still reading would stay in memory anyway.
            if Arc::strong_count(value) > 1 {
                continue;
            }
            let size = *size;
            let bytes = (codec.encode)(value)?;
            let path = dir.join(format!("{id}.obj"));
            std::fs::write(&path, &bytes).map_err(|e| Error::io("spilling an object", e))?;
            entry.slot = Slot::Spilled { path, size };
            entry.stamp = None;
            inner.spillable.remove(&stamp);
            inner.used -= size;
            inner.spilled_bytes += size;
            inner.spilled_now += 1;
            inner.spilled_objects += 1;
            tracing::debug!(object = %id, size, "spilled");
        }
        if inner.used + incoming <= self.capacity {
            Ok(())
        } else {
            Err(full(inner, "; every other object is in use or small"))
        }
    }

    /// Reads a spilled object back into memory.
    pub(super) fn restore(&self, inner: &mut Inner, id: ObjectId) -> Result<AnyValue> {
        let (path, size, codec) = match inner.entries.get(&id) {
            Some(Entry {
                slot: Slot::Spilled { path, size },
                codec: Some(codec),
                ..
            }) => (path.clone(), *size, *codec),
            _ => return Err(Error::ObjectLost(id)),
        };
        self.make_room(inner, size, id)?;
        let bytes = std::fs::read(&path).map_err(|e| Error::io("restoring a spilled object", e))?;
        let value = (codec.decode)(&bytes)?;
        let _ = std::fs::remove_file(&path);
        let stamp = self.stamp_if_large(inner, size);
        if let Some(entry) = inner.entries.get_mut(&id) {
            entry.slot = Slot::Ready {
                value: value.clone(),
                size,
            };
            entry.stamp = stamp;
        }
        if let Some(s) = stamp {
            inner.spillable.insert(s, id);
        }
        inner.used += size;
        inner.spilled_bytes -= size;
        inner.spilled_now -= 1;
        inner.restored_objects += 1;
        tracing::debug!(object = %id, size, "restored");
        Ok(value)
    }
}
