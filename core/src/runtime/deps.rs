//! Waiting for objects: a call that runs once its reference arguments are final
//! ([`when_ready`]), and a thread that blocks until objects are final
//! ([`wait_settled`]), giving its CPUs back meanwhile.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::object::{RefCount, Signal, Store, Waiter};
use crate::sched::{spin_until, SPIN};
use crate::sync::lock;

type Continuation = Box<dyn FnOnce(Result<()>) + Send>;

/// Counts a call's unresolved arguments down to zero, or fails it at the first failure.
struct Gate {
    remaining: AtomicUsize,
    then: Mutex<Option<Continuation>>,
}

impl Gate {
    fn settle(&self, failure: Option<&Error>) {
        let fire = match failure {
            Some(e) => Some(Err(e.clone())),
            None if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 => Some(Ok(())),
            None => None,
        };
        if let Some(result) = fire {
            let then = lock(&self.then).take();
            if let Some(then) = then {
                then(result);
            }
        }
    }
}

/// Calls `then` once every object of `deps` is final: with `Ok` when all are ready (or
/// placed elsewhere), with the first failure otherwise. `then` runs on the thread that
/// made the last of them final (or on this one, if they all are already).
pub(crate) fn when_ready(deps: Vec<Arc<RefCount>>, then: impl FnOnce(Result<()>) + Send + 'static) {
    if deps.is_empty() {
        return then(Ok(()));
    }
    let gate = Arc::new(Gate {
        remaining: AtomicUsize::new(deps.len() + 1),
        then: Mutex::new(Some(Box::new(then))),
    });
    for dep in &deps {
        let store = match dep.store() {
            Ok(s) => s,
            Err(e) => {
                gate.settle(Some(&e));
                continue;
            }
        };
        let g = gate.clone();
        let waiter = Waiter::Dependent(Arc::new(move |failure| g.settle(failure)));
        match store.poll(dep.id, Some(waiter)) {
            None => {}
            Some(Ok(_)) => gate.settle(None),
            Some(Err(e)) => gate.settle(Some(&e)),
        }
    }
    gate.settle(None);
}

/// Blocks until every object of `ids` is final, one of them failed, or the deadline
/// passes, giving the caller's CPUs back while it waits. Returns whether all are final.
pub(crate) fn wait_settled(store: &Store, ids: &[ObjectId], deadline: Option<Instant>) -> bool {
    let signal = Signal::new();
    let pending = store.watch(ids, &signal);
    if pending == 0 {
        return true;
    }
    signal.set_target(pending as u64);
    let (_failed, done) = wait_signal(&signal, deadline);
    if !done {
        store.unwatch(ids, &signal);
    }
    done
}

/// Waits on `signal` as this process waits: spinning first where the pool spins (the
/// embedded runtime, where an answer often comes within microseconds), with the
/// current task's CPUs lent meanwhile. Returns whether an object failed and whether
/// the target was reached.
pub(crate) fn wait_signal(signal: &Signal, deadline: Option<Instant>) -> (bool, bool) {
    let rt = super::current().ok();
    let wait = || {
        if rt.as_ref().is_some_and(|rt| rt.pool.spins()) {
            spin_until(SPIN, || {
                signal.is_over() || deadline.is_some_and(|d| Instant::now() >= d)
            });
        }
        signal.wait(deadline)
    };
    match &rt {
        Some(rt) => rt.blocking(wait),
        None => wait(),
    }
}
