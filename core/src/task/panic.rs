//! Running user code: a panic in a task, an actor method or a constructor becomes its
//! message (with where in the source it happened) instead of unwinding into the
//! runtime, and then an [`Error::TaskFailed`] saying which process, node and worker
//! thread it ran on.
//!
//! Where code runs is known to the runtime above, which tells this module how to say
//! it ([`set_locator`]) when it starts.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::sync::OnceLock;

use crate::error::Error;

thread_local! {
    static IN_TASK: Cell<bool> = const { Cell::new(false) };
    static PANIC_NOTE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Says where the current thread runs (worker, node, process), for errors.
pub(crate) type Locator = fn() -> String;

static LOCATOR: OnceLock<Locator> = OnceLock::new();

/// Sets how errors say where code ran (once per process; the runtime does it).
pub(crate) fn set_locator(locator: Locator) {
    let _ = LOCATOR.set(locator);
}

/// Where the current thread runs, as the runtime says it.
pub(crate) fn location() -> String {
    match LOCATOR.get() {
        Some(locate) => locate(),
        None => format!("pid {}", std::process::id()),
    }
}

/// The error of `function` having panicked with `message`, here.
pub(crate) fn failure(function: impl Into<String>, message: String) -> Error {
    Error::TaskFailed {
        function: function.into(),
        message,
        location: location(),
    }
}

/// Installs the panic hook that keeps a task's panic quiet (it is reported to whoever
/// reads the result) and notes where it happened. Once per process.
pub(crate) fn install_hook() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_TASK.with(|t| t.get()) {
                // A task's panic is its result, reported to whoever reads it; printing it
                // here too would put noise in every program that handles errors.
                let at = info
                    .location()
                    .map(|l| format!(" (at {}:{})", l.file(), l.line()))
                    .unwrap_or_default();
                PANIC_NOTE.with(|n| *n.borrow_mut() = Some(at));
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs `f`, turning a panic into its message (with the panic's source location).
pub(crate) fn catch<R>(f: impl FnOnce() -> R) -> std::result::Result<R, String> {
    let was = IN_TASK.with(|t| t.replace(true));
    // The runtime's own state is behind locks that tolerate poisoning; user state that a
    // panic leaves half-updated is the user's, as in Ray.
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    IN_TASK.with(|t| t.set(was));
    out.map_err(|payload| {
        let at = PANIC_NOTE
            .with(|n| n.borrow_mut().take())
            .unwrap_or_default();
        format!("{}{at}", message(&*payload))
    })
}

fn message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}
