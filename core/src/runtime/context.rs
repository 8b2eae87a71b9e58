//! What the current thread runs: a task, an actor's method or constructor, or nothing
//! (the driver's own code), with the resources it holds; for [`crate::context`], for
//! errors that say where a panic happened, and for a worker telling its node that a
//! task waits.

use std::cell::RefCell;

use crate::id::{ActorId, ObjectId};
use crate::sched::Grant;

/// What the current thread is running.
#[derive(Clone)]
pub(crate) struct Running {
    pub task_id: Option<ObjectId>,
    pub actor_id: Option<ActorId>,
    pub function: &'static str,
    pub grant: Grant,
}

thread_local! {
    static RUNNING: RefCell<Option<Running>> = const { RefCell::new(None) };
}

/// Runs `f` as `running`.
pub(crate) fn with_running<R>(running: Running, f: impl FnOnce() -> R) -> R {
    let prev = RUNNING.with(|r| r.borrow_mut().replace(running));
    let out = f();
    RUNNING.with(|r| *r.borrow_mut() = prev);
    out
}

/// What the current thread runs, if anything.
pub(crate) fn running() -> Option<Running> {
    RUNNING.with(|r| r.borrow().clone())
}

/// The task the current thread runs, if it runs one.
pub(crate) fn running_task() -> Option<ObjectId> {
    RUNNING.with(|r| r.borrow().as_ref().and_then(|r| r.task_id))
}

/// Where the current thread is: worker thread, node and process. Installed as the
/// task layer's locator when a runtime starts.
pub(crate) fn location() -> String {
    let node = super::current()
        .map(|rt| rt.node_id.clone())
        .unwrap_or_default();
    match crate::sched::current_worker() {
        Some(w) => format!("worker {w} of node {node} (pid {})", std::process::id()),
        None => format!("the driver of node {node} (pid {})", std::process::id()),
    }
}
