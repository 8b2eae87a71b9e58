//! The pool of worker threads that runs work once its resources are granted.
//!
//! Ready work waits in one FIFO queue per *resource shape* (scheduling class): work
//! that cannot fit does not block differently shaped work behind it, and picking is
//! O(number of shapes), not O(queued work).
//!
//! The pool grows a thread whenever work fits and no thread is idle. A task blocked in
//! `get`/`wait` hands its CPUs back ([`blocking`]), so another thread can run the work it
//! waits for: nested tasks never deadlock, even with one CPU. When it wakes it takes its
//! CPUs back even if that oversubscribes for a moment; new work waits until the books
//! balance again.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use super::books::{Amounts, Capacity, Demand, Grant};
use super::bundles;
use crate::config::Config;
use crate::error::{Error, Result};

/// How long an idle thread, or a caller about to block, spins before sleeping: longer
/// than a small task's round trip, short enough to cost nothing measurable.
pub(crate) const SPIN: Duration = Duration::from_micros(50);

/// Spins until `done` holds or `limit` passes; returns whether `done` held.
pub(crate) fn spin_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    let mut i = 0u32;
    loop {
        if done() {
            return true;
        }
        i = i.wrapping_add(1);
        if i % 64 == 0 {
            if start.elapsed() >= limit {
                return false;
            }
            // A thread that has work of its own (the one making ours, on a machine
            // with few cores) runs before the spin goes on.
            std::thread::yield_now();
        }
        std::hint::spin_loop();
    }
}

/// A unit of work for the pool.
pub(crate) struct Work {
    pub demand: Demand,
    /// The grant outlives the work: its holder returns it with [`Pool::release`].
    pub keep: bool,
    pub run: Box<dyn FnOnce(&Grant) + Send>,
    /// Called instead of `run` if the work can never run (its placement group was
    /// removed while it waited); dropped silently if `None`.
    pub abandon: Option<Box<dyn FnOnce(Error) + Send>>,
}

struct Class {
    demand: Demand,
    queue: VecDeque<Work>,
}

struct State {
    available: Capacity,
    classes: Vec<Class>,
    class_of: HashMap<Demand, usize>,
    next_class: usize,
    /// Threads asleep on the condition variable. One woken for a piece of work takes
    /// it and then hands what else fits to another (see `worker_loop`), so a wake-up
    /// that finds the same sleeper twice loses nothing.
    idle: usize,
    /// Idle threads spinning on [`Pool::news`] instead of sleeping (at most one).
    spinning: usize,
    /// Threads spawned that have not reached their loop yet: they will pick work up, so
    /// they count as idle for the decision to spawn another.
    starting: usize,
    threads: usize,
    next_worker: u32,
    shutdown: bool,
}

/// The resource books and the worker pool of one runtime.
pub(crate) struct Pool {
    /// What the node has in all: fixed but for the bundles of placement groups, so read
    /// far more often than written.
    total: RwLock<Capacity>,
    /// Whether idle threads (and callers about to block) spin before sleeping: in a
    /// cluster, what a thread waits for comes from another process, later than a spin
    /// lasts, and the spin would take a core from the daemons and workers sharing the
    /// machine.
    spins: bool,
    state: Mutex<State>,
    wake: Condvar,
    /// Bumped when work arrives while a thread spins.
    news: AtomicU64,
    min_threads: usize,
}

/// Identity of the worker thread work runs on.
#[derive(Clone)]
struct WorkerSlot {
    worker_id: u32,
    pool: Arc<Pool>,
}

thread_local! {
    static WORKER: RefCell<Option<WorkerSlot>> = const { RefCell::new(None) };
    /// The CPUs held by the work running on this thread, given back while it blocks.
    static HELD_CPU: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The worker id of the current thread, if it is a pool thread.
pub(crate) fn current_worker() -> Option<u32> {
    WORKER.with(|w| w.borrow().as_ref().map(|s| s.worker_id))
}

/// Runs `f`, a wait, with the CPUs of the work running on this thread given back to
/// its pool meanwhile.
pub(crate) fn blocking<R>(f: impl FnOnce() -> R) -> R {
    let slot = WORKER.with(|w| w.borrow().clone());
    let held = HELD_CPU.with(|c| c.get());
    match slot {
        Some(slot) if held > 0 => {
            slot.pool.give_back_cpu(held);
            let out = f();
            slot.pool.take_cpu(held);
            out
        }
        _ => f(),
    }
}

impl State {
    fn pick(&mut self) -> Option<(Work, Grant)> {
        let n = self.classes.len();
        for k in 0..n {
            let i = (self.next_class + k) % n;
            let class = &mut self.classes[i];
            if class.queue.is_empty() || !self.available.fits(&class.demand) {
                continue;
            }
            let job = class.queue.pop_front()?;
            let gpu_ids = self.available.take(&job.demand);
            self.next_class = (i + 1) % n;
            let grant = Grant {
                demand: job.demand.clone(),
                gpu_ids,
            };
            return Some((job, grant));
        }
        None
    }

    fn has_fitting_work(&self) -> bool {
        self.classes
            .iter()
            .any(|c| !c.queue.is_empty() && self.available.fits(&c.demand))
    }
}

impl Pool {
    /// A pool with the resources of `config`, whose idle threads spin before sleeping
    /// if `spins`.
    pub fn new(config: &Config, spins: bool) -> Arc<Self> {
        let total = Capacity::from_config(config);
        Arc::new(Pool {
            spins,
            state: Mutex::new(State {
                available: total.clone(),
                classes: Vec::new(),
                class_of: HashMap::new(),
                next_class: 0,
                idle: 0,
                spinning: 0,
                starting: 0,
                threads: 0,
                next_worker: 0,
                shutdown: false,
            }),
            wake: Condvar::new(),
            news: AtomicU64::new(0),
            total: RwLock::new(total),
            min_threads: config.num_cpus.ceil().max(1.0) as usize,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }

    /// Whether this pool's threads, and callers about to block, spin before sleeping.
    pub fn spins(&self) -> bool {
        self.spins
    }

    /// Fails with [`Error::Infeasible`] if no amount of waiting could satisfy `d`.
    pub fn check_feasible(&self, d: &Demand) -> Result<()> {
        crate::sync::read(&self.total).check_feasible(d)
    }

    /// Whether the pool was shut down.
    pub fn is_shut_down(&self) -> bool {
        self.lock().shutdown
    }

    /// What the pool has in all (placement groups' bundles included).
    pub fn total(&self) -> Capacity {
        crate::sync::read(&self.total).clone()
    }

    /// Reserves every bundle of a placement group (each its demand, and the resources
    /// it adds under the group's names), all at once or, if they do not all fit now,
    /// none; returns what each took, for [`Pool::remove_group`].
    pub fn reserve_group(
        self: &Arc<Self>,
        bundles: &[(Demand, Vec<(String, f64)>)],
    ) -> Option<Vec<Grant>> {
        let mut st = self.lock();
        let mut free = st.available.clone();
        let mut total = self.total();
        let mut grants = Vec::with_capacity(bundles.len());
        for (demand, reserved) in bundles {
            if !free.fits(demand) {
                return None;
            }
            grants.push(bundles::reserve(&mut total, &mut free, demand, reserved));
        }
        st.available = free;
        *crate::sync::write(&self.total) = total;
        self.dispatch(st);
        Some(grants)
    }

    /// Ends a placement group: what its bundles took (`grants`) is free again, its
    /// resources (named with `prefix`) leave the books, and the work waiting for them
    /// is abandoned with `why`.
    pub fn remove_group(self: &Arc<Self>, grants: &[Grant], prefix: &str, why: &Error) {
        let mut st = self.lock();
        let mut abandoned = Vec::new();
        for c in &mut st.classes {
            if c.demand.asks_prefixed(prefix) {
                abandoned.extend(c.queue.drain(..).filter_map(|w| w.abandon));
            }
        }
        let mut total = self.total();
        bundles::unreserve(&mut total, &mut st.available, grants, prefix);
        *crate::sync::write(&self.total) = total;
        self.dispatch(st);
        for abandon in abandoned {
            abandon(why.clone());
        }
    }

    /// Queues work; it runs once its demand fits.
    pub fn submit(self: &Arc<Self>, job: Work) {
        let mut st = self.lock();
        if st.shutdown {
            return;
        }
        let idx = match st.class_of.get(&job.demand) {
            Some(&i) => i,
            None => {
                let i = st.classes.len();
                st.class_of.insert(job.demand.clone(), i);
                st.classes.push(Class {
                    demand: job.demand.clone(),
                    queue: VecDeque::new(),
                });
                i
            }
        };
        st.classes[idx].queue.push_back(job);
        self.dispatch(st);
    }

    /// Wakes an idle thread, or starts one, if queued work fits.
    fn dispatch(self: &Arc<Self>, mut st: MutexGuard<'_, State>) {
        if st.shutdown || !st.has_fitting_work() {
            return;
        }
        if st.spinning > 0 {
            // The spinning thread watches this counter and takes the work without a
            // system call on either side.
            self.news.fetch_add(1, Ordering::Release);
            return;
        }
        if st.idle > 0 {
            self.wake.notify_one();
            return;
        }
        if st.starting > 0 {
            return;
        }
        st.starting += 1;
        st.threads += 1;
        let worker_id = st.next_worker;
        st.next_worker += 1;
        drop(st);
        let pool = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("prism-worker-{worker_id}"))
            .spawn(move || pool.worker_loop(worker_id));
        if let Err(e) = spawned {
            tracing::error!("could not start a worker thread: {e}");
            let mut st = self.lock();
            st.threads -= 1;
            st.starting -= 1;
        }
    }

    fn worker_loop(self: Arc<Self>, worker_id: u32) {
        WORKER.with(|w| {
            *w.borrow_mut() = Some(WorkerSlot {
                worker_id,
                pool: self.clone(),
            })
        });
        let mut st = self.lock();
        st.starting -= 1;
        let mut spun = false;
        loop {
            if st.shutdown {
                break;
            }
            if let Some((job, grant)) = st.pick() {
                spun = false;
                // More fitting work goes to a sleeping or new thread now, not after this job.
                self.dispatch(st);
                HELD_CPU.with(|c| c.set(grant.demand.cpu));
                let keep = job.keep;
                (job.run)(&grant);
                HELD_CPU.with(|c| c.set(0));
                st = self.lock();
                if !keep {
                    st.available.give(&grant);
                }
                continue;
            }
            if !spun && st.spinning == 0 && self.spins {
                // One idle thread at a time spins briefly before sleeping: a caller
                // submitting one task at a time then hands it over without waking anyone.
                st.spinning += 1;
                let seen = self.news.load(Ordering::Acquire);
                drop(st);
                spin_until(SPIN, || self.news.load(Ordering::Acquire) != seen);
                st = self.lock();
                st.spinning -= 1;
                spun = true;
                continue;
            }
            spun = false;
            st.idle += 1;
            let (guard, timeout) = self
                .wake
                .wait_timeout(st, Duration::from_secs(30))
                .unwrap_or_else(|e| e.into_inner());
            st = guard;
            st.idle -= 1;
            if timeout.timed_out() && st.threads > self.min_threads && !st.has_fitting_work() {
                break;
            }
        }
        st.threads -= 1;
        drop(st);
        WORKER.with(|w| *w.borrow_mut() = None);
    }

    /// Returns what work with `keep` set held on to (an actor's lifetime resources).
    pub fn release(self: &Arc<Self>, grant: &Grant) {
        let mut st = self.lock();
        st.available.give(grant);
        self.dispatch(st);
    }

    fn give_back_cpu(self: &Arc<Self>, cpu: u64) {
        let mut st = self.lock();
        st.available.lend_cpu(cpu, true);
        self.dispatch(st);
    }

    fn take_cpu(&self, cpu: u64) {
        self.lock().available.lend_cpu(cpu, false);
    }

    /// Stops the pool: idle threads exit, queued work is dropped.
    pub fn shutdown(&self) {
        let mut st = self.lock();
        st.shutdown = true;
        for c in &mut st.classes {
            c.queue.clear();
        }
        self.wake.notify_all();
    }

    /// Total and available amounts per resource, in natural units.
    pub fn resources(&self) -> (Amounts, Amounts) {
        (self.total().amounts(), self.lock().available.amounts())
    }
}
