//! Pins: what a value being encoded for another process refers to and must outlive the
//! encoded copy until the receiver has decoded it. An actor handle, serialized into a
//! task's arguments, pins its actor here so that the actor is not ended (its last
//! handle dropped in this process) before the task's process has counted its own copy.
//!
//! A serializer calls [`pin`] for what it refers to; code encoding for the wire wraps
//! the encoding in [`collect`] and keeps what was pinned for as long as the encoded copy
//! may still be decoded (a task until it is done, a result until it is freed).

use std::any::Any;
use std::cell::RefCell;
use std::sync::Arc;

/// Something kept alive for an encoded copy.
pub(crate) type Pin = Arc<dyn Any + Send + Sync>;

thread_local! {
    static PINS: RefCell<Option<Vec<Pin>>> = const { RefCell::new(None) };
}

/// Runs `encode` and returns what it pinned along with its output.
pub(crate) fn collect<R>(encode: impl FnOnce() -> R) -> (R, Vec<Pin>) {
    let outer = PINS.with(|p| p.borrow_mut().replace(Vec::new()));
    let out = encode();
    let pinned = PINS.with(|p| std::mem::replace(&mut *p.borrow_mut(), outer));
    (out, pinned.unwrap_or_default())
}

/// Whether an encoding for another process is under way on this thread.
pub(crate) fn active() -> bool {
    PINS.with(|p| p.borrow().is_some())
}

/// Pins `what` for the encoding under way on this thread (nothing outside [`collect`]:
/// a value encoded for this process only, or for spilling, pins nothing).
pub(crate) fn pin(what: Pin) {
    PINS.with(|p| {
        if let Some(pins) = p.borrow_mut().as_mut() {
            pins.push(what);
        }
    });
}
