//! Who waits for an object, and how they are woken when it becomes final.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Instant;

use crate::error::Error;

/// Wakes a thread blocked in `get`/`wait` once enough of its objects became final (or
/// one failed). Completions below the target do not wake the thread, so a `get_all` of a
/// million refs sleeps through a million completions and wakes once.
pub(crate) struct Signal {
    state: Mutex<SignalState>,
    cv: Condvar,
    /// Set once the wait is over, for a waiter spinning before it sleeps.
    over: AtomicBool,
}

struct SignalState {
    events: u64,
    target: u64,
    failed: bool,
    /// A waiter sleeps on the condition variable (otherwise notifying skips the syscall).
    sleeping: bool,
}

impl Signal {
    /// A signal whose target is set later with [`Signal::set_target`].
    pub fn new() -> Arc<Signal> {
        Arc::new(Signal {
            state: Mutex::new(SignalState {
                events: 0,
                target: u64::MAX,
                failed: false,
                sleeping: false,
            }),
            cv: Condvar::new(),
            over: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, SignalState> {
        crate::sync::lock(&self.state)
    }

    fn notify(&self, failed: bool) {
        let mut st = self.lock();
        st.events += 1;
        st.failed |= failed;
        if st.events >= st.target || st.failed {
            self.over.store(true, Ordering::Release);
            if st.sleeping {
                self.cv.notify_all();
            }
        }
    }

    /// Wake the waiter once `target` objects became final.
    pub fn set_target(&self, target: u64) {
        let mut st = self.lock();
        st.target = target;
        if st.events >= st.target || st.failed {
            self.over.store(true, Ordering::Release);
        }
    }

    /// Whether the wait is over, without blocking: for a waiter that spins first.
    pub fn is_over(&self) -> bool {
        self.over.load(Ordering::Acquire)
    }

    /// Blocks until the target is reached, an object failed, or the deadline passed.
    /// Returns whether an object failed and whether the target was reached.
    pub fn wait(&self, deadline: Option<Instant>) -> (bool, bool) {
        let mut st = self.lock();
        st.sleeping = true;
        while st.events < st.target && !st.failed {
            match deadline {
                None => st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        break;
                    }
                    st = self
                        .cv
                        .wait_timeout(st, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
        st.sleeping = false;
        (st.failed, st.events >= st.target)
    }
}

/// Called when an argument of a waiting call becomes final, with its error if it failed.
pub(crate) type DependentFn = Arc<dyn Fn(Option<&Error>) + Send + Sync>;

/// Something to wake when an object becomes final.
pub(crate) enum Waiter {
    Signal(Arc<Signal>),
    Waker(Waker),
    /// A task waiting for this argument; called with the object's error if it failed.
    Dependent(DependentFn),
}

impl Waiter {
    pub(super) fn fire(self, failure: Option<&Error>) {
        match self {
            Waiter::Signal(s) => s.notify(failure.is_some()),
            Waiter::Waker(w) => w.wake(),
            Waiter::Dependent(f) => f(failure),
        }
    }

    pub(super) fn is_signal(&self, s: &Arc<Signal>) -> bool {
        matches!(self, Waiter::Signal(x) if Arc::ptr_eq(x, s))
    }
}

/// The waiters of one failed object and its error.
type Announcement = (Vec<Waiter>, Error);

thread_local! {
    /// Failures still to announce on this thread, while one is being announced.
    static FAILING: std::cell::RefCell<Option<Vec<Announcement>>> =
        const { std::cell::RefCell::new(None) };
}

/// Wakes the waiters of a failed object. A failure fails its dependents, which fail
/// theirs: announced from a queue rather than by recursion, so that a chain of a
/// million dependent tasks cannot overflow the stack.
pub(super) fn fire_failed(waiters: Vec<Waiter>, err: Error) {
    let nested = FAILING.with(|f| {
        let mut f = f.borrow_mut();
        match f.as_mut() {
            Some(queue) => {
                queue.push((waiters, err.clone()));
                true
            }
            None => {
                *f = Some(vec![(waiters, err.clone())]);
                false
            }
        }
    });
    if nested {
        return;
    }
    loop {
        let next = FAILING.with(|f| f.borrow_mut().as_mut().and_then(Vec::pop));
        let Some((waiters, err)) = next else { break };
        for w in waiters {
            w.fire(Some(&err));
        }
    }
    FAILING.with(|f| *f.borrow_mut() = None);
}
