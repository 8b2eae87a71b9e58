//! Resources and placement: what a task asks for, what the runtime has, and the pool of
//! worker threads that runs jobs once their resources are granted.
//!
//! Amounts are fixed-point (1/10,000 of a unit) so that fractional requests such as
//! `num_cpus(0.5)` add up exactly. Ready jobs wait in one FIFO queue per *resource shape*
//! (scheduling class): a job that cannot fit does not block a differently shaped job
//! behind it, and picking is O(number of shapes), not O(queued jobs).
//!
//! The pool grows a thread whenever a job fits and no thread is idle. A task blocked in
//! `get`/`wait` hands its CPUs back ([`blocking`]), so another thread can run the work it
//! waits for: nested tasks never deadlock, even with one CPU. When it wakes it takes its
//! CPUs back even if that oversubscribes for a moment; new jobs wait until the books
//! balance again.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::error::{Error, Result};

/// One unit of a resource in fixed point.
pub(crate) const UNIT: u64 = 10_000;

/// How long an idle thread, or a caller about to block, spins before sleeping: longer
/// than a small task's round trip, short enough to cost nothing measurable.
pub(crate) const SPIN: Duration = Duration::from_micros(50);

/// Whether this process spins before sleeping (see [`spin_until`]).
static SPINNING: AtomicBool = AtomicBool::new(true);

/// Turns spinning off for this process: in a cluster, what a thread waits for comes from
/// another process, later than a spin lasts, and the spin would take a core from the
/// daemons and workers sharing the machine.
pub(crate) fn stop_spinning() {
    SPINNING.store(false, Ordering::Relaxed);
}

/// Spins until `done` holds or `limit` passes (at once if spinning is off); returns
/// whether `done` held.
pub(crate) fn spin_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    if !SPINNING.load(Ordering::Relaxed) {
        return done();
    }
    let start = Instant::now();
    let mut i = 0u32;
    loop {
        if done() {
            return true;
        }
        i = i.wrapping_add(1);
        if i % 64 == 0 && start.elapsed() >= limit {
            return false;
        }
        std::hint::spin_loop();
    }
}

pub(crate) fn to_fixed(amount: f64) -> u64 {
    (amount * UNIT as f64).round().max(0.0) as u64
}

pub(crate) fn from_fixed(amount: u64) -> f64 {
    amount as f64 / UNIT as f64
}

/// What one task or actor asks for, in fixed point (memory in bytes).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub(crate) struct Demand {
    pub cpu: u64,
    pub gpu: u64,
    pub memory: u64,
    /// Sorted by name, so that equal demands hash equally.
    pub custom: Vec<(Arc<str>, u64)>,
}

impl Demand {
    /// Lists the demand as `(name, amount)` pairs in natural units.
    pub fn describe(&self) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        if self.cpu > 0 {
            out.push(("CPU".to_string(), from_fixed(self.cpu)));
        }
        if self.gpu > 0 {
            out.push(("GPU".to_string(), from_fixed(self.gpu)));
        }
        if self.memory > 0 {
            out.push(("memory".to_string(), self.memory as f64));
        }
        for (name, v) in &self.custom {
            out.push((name.to_string(), from_fixed(*v)));
        }
        out
    }
}

/// What a job was given: its demand and the ids of the GPUs it may use.
#[derive(Debug, Clone, Default)]
pub(crate) struct Grant {
    pub demand: Demand,
    pub gpu_ids: Vec<usize>,
}

/// A unit of work for the pool.
pub(crate) struct Job {
    pub demand: Demand,
    /// The grant outlives the job: its holder returns it with [`Scheduler::release`].
    pub keep: bool,
    pub run: Box<dyn FnOnce(&Grant) + Send>,
}

struct Class {
    demand: Demand,
    queue: VecDeque<Job>,
}

/// Amounts of each resource: what a node has, or has left.
#[derive(Debug, Clone)]
pub(crate) struct Capacity {
    cpu: i64,
    memory: i64,
    /// Remaining share of each GPU, by GPU id.
    gpus: Vec<u64>,
    custom: HashMap<Arc<str>, i64>,
}

struct State {
    available: Capacity,
    classes: Vec<Class>,
    class_of: HashMap<Demand, usize>,
    next_class: usize,
    idle: usize,
    /// Idle threads spinning on [`Scheduler::news`] instead of sleeping (at most one).
    spinning: usize,
    /// Threads spawned that have not reached their loop yet: they will pick work up, so
    /// they count as idle for the decision to spawn another.
    starting: usize,
    threads: usize,
    next_worker: u32,
    shutdown: bool,
}

/// Amounts per resource name, in natural units.
pub(crate) type Amounts = Vec<(String, f64)>;

/// The resource books and the worker pool.
pub(crate) struct Scheduler {
    /// What the node has in all; fixed for the runtime's life, so read without a lock.
    total: Capacity,
    state: Mutex<State>,
    wake: Condvar,
    /// Bumped when work arrives while a thread spins.
    news: AtomicU64,
    min_threads: usize,
}

/// Identity of the worker thread a job runs on.
#[derive(Clone)]
pub(crate) struct WorkerSlot {
    pub worker_id: u32,
    pub sched: Arc<Scheduler>,
}

thread_local! {
    static WORKER: RefCell<Option<WorkerSlot>> = const { RefCell::new(None) };
    /// The CPUs held by the job running on this thread, given back while it blocks.
    static HELD_CPU: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The worker id of the current thread, if it is a pool thread.
pub(crate) fn current_worker() -> Option<u32> {
    WORKER.with(|w| w.borrow().as_ref().map(|s| s.worker_id))
}

/// Called with `true` when a task of a worker process starts waiting and `false` when it
/// resumes, so that the node lends its CPUs meanwhile.
pub(crate) type BlockHook = Box<dyn Fn(bool) -> bool + Send + Sync>;

static BLOCK_HOOK: std::sync::OnceLock<BlockHook> = std::sync::OnceLock::new();

/// Installs the worker process's [`BlockHook`].
pub(crate) fn set_block_hook(hook: BlockHook) {
    let _ = BLOCK_HOOK.set(hook);
}

/// Runs `f`, a wait, with the current job's CPUs given back to the pool meanwhile.
pub(crate) fn blocking<R>(f: impl FnOnce() -> R) -> R {
    if let Some(hook) = BLOCK_HOOK.get() {
        if hook(true) {
            let out = f();
            hook(false);
            return out;
        }
    }
    let slot = WORKER.with(|w| w.borrow().clone());
    let held = HELD_CPU.with(|c| c.get());
    match slot {
        Some(slot) if held > 0 => {
            slot.sched.give_back_cpu(held);
            let out = f();
            slot.sched.take_cpu(held);
            out
        }
        _ => f(),
    }
}

impl Capacity {
    /// The total resources a configuration gives.
    pub fn from_config(config: &Config) -> Capacity {
        Capacity {
            cpu: to_fixed(config.num_cpus) as i64,
            memory: config.memory_resource() as i64,
            gpus: vec![UNIT; config.num_gpus as usize],
            custom: config
                .resources
                .iter()
                .map(|(k, v)| (Arc::from(k.as_str()), to_fixed(*v) as i64))
                .collect(),
        }
    }

    /// The amounts per resource name, in natural units.
    pub fn amounts(&self) -> Amounts {
        let mut v = vec![
            ("CPU".to_string(), self.cpu as f64 / UNIT as f64),
            (
                "GPU".to_string(),
                self.gpus.iter().sum::<u64>() as f64 / UNIT as f64,
            ),
            ("memory".to_string(), self.memory as f64),
        ];
        let mut custom: Vec<_> = self
            .custom
            .iter()
            .map(|(k, v)| (k.to_string(), *v as f64 / UNIT as f64))
            .collect();
        custom.sort_by(|a, b| a.0.cmp(&b.0));
        v.extend(custom);
        v
    }

    /// A total rebuilt from amounts in natural units (as nodes report them).
    pub fn from_amounts(amounts: &[(String, f64)]) -> Capacity {
        let mut c = Capacity {
            cpu: 0,
            memory: 0,
            gpus: Vec::new(),
            custom: HashMap::new(),
        };
        for (name, v) in amounts {
            match name.as_str() {
                "CPU" => c.cpu = to_fixed(*v) as i64,
                "GPU" => c.gpus = vec![UNIT; v.floor().max(0.0) as usize],
                "memory" => c.memory = *v as i64,
                other => {
                    c.custom.insert(Arc::from(other), to_fixed(*v) as i64);
                }
            }
        }
        c
    }

    /// Fails with [`Error::Infeasible`] if no amount of waiting could satisfy `d`.
    pub fn check_feasible(&self, d: &Demand) -> Result<()> {
        let t = self;
        let infeasible = |resource: &str, requested: f64, capacity: f64| {
            Err(Error::Infeasible {
                resource: resource.to_string(),
                requested,
                capacity,
            })
        };
        if d.cpu as i64 > t.cpu {
            return infeasible("CPU", from_fixed(d.cpu), from_fixed(t.cpu as u64));
        }
        let gpus = t.gpus.len() as f64;
        if from_fixed(d.gpu) > gpus || (d.gpu > UNIT && d.gpu % UNIT != 0) {
            return infeasible("GPU", from_fixed(d.gpu), gpus);
        }
        if d.memory as i64 > t.memory {
            return infeasible("memory", d.memory as f64, t.memory as f64);
        }
        for (name, v) in &d.custom {
            let have = t.custom.get(name).copied().unwrap_or(0);
            if *v as i64 > have {
                return infeasible(name, from_fixed(*v), from_fixed(have as u64));
            }
        }
        Ok(())
    }

    pub fn fits(&self, d: &Demand) -> bool {
        if d.cpu as i64 > self.cpu || d.memory as i64 > self.memory {
            return false;
        }
        for (name, v) in &d.custom {
            if self.custom.get(name).copied().unwrap_or(0) < *v as i64 {
                return false;
            }
        }
        self.place_gpus(d.gpu).is_some()
    }

    fn place_gpus(&self, gpu: u64) -> Option<Vec<usize>> {
        if gpu == 0 {
            return Some(Vec::new());
        }
        if gpu < UNIT {
            // A fraction shares one device: the fullest that still has room packs best.
            return self
                .gpus
                .iter()
                .enumerate()
                .filter(|(_, &free)| free >= gpu)
                .min_by_key(|(_, &free)| free)
                .map(|(i, _)| vec![i]);
        }
        let whole = (gpu / UNIT) as usize;
        let free: Vec<usize> = self
            .gpus
            .iter()
            .enumerate()
            .filter(|(_, &f)| f == UNIT)
            .map(|(i, _)| i)
            .take(whole)
            .collect();
        (free.len() == whole).then_some(free)
    }

    /// Lends (`lend = true`) or takes back CPUs of a running task that waits.
    pub fn lend_cpu(&mut self, cpu: u64, lend: bool) {
        if lend {
            self.cpu += cpu as i64;
        } else {
            self.cpu -= cpu as i64;
        }
    }

    pub fn take(&mut self, d: &Demand) -> Vec<usize> {
        let ids = self.place_gpus(d.gpu).unwrap_or_default();
        let per_gpu = if d.gpu < UNIT { d.gpu } else { UNIT };
        for &i in &ids {
            self.gpus[i] -= per_gpu;
        }
        self.cpu -= d.cpu as i64;
        self.memory -= d.memory as i64;
        for (name, v) in &d.custom {
            *self.custom.entry(name.clone()).or_insert(0) -= *v as i64;
        }
        ids
    }

    pub fn give(&mut self, g: &Grant) {
        let d = &g.demand;
        let per_gpu = if d.gpu < UNIT { d.gpu } else { UNIT };
        for &i in &g.gpu_ids {
            self.gpus[i] += per_gpu;
        }
        self.cpu += d.cpu as i64;
        self.memory += d.memory as i64;
        for (name, v) in &d.custom {
            *self.custom.entry(name.clone()).or_insert(0) += *v as i64;
        }
    }
}

impl State {
    fn pick(&mut self) -> Option<(Job, Grant)> {
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

impl Scheduler {
    pub fn new(config: &Config) -> Arc<Self> {
        let total = Capacity::from_config(config);
        Arc::new(Scheduler {
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
            total,
            min_threads: config.num_cpus.ceil().max(1.0) as usize,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fails with [`Error::Infeasible`] if no amount of waiting could satisfy `d`.
    pub fn check_feasible(&self, d: &Demand) -> Result<()> {
        self.total.check_feasible(d)
    }

    /// Queues a job; it runs once its demand fits.
    pub fn submit(self: &Arc<Self>, job: Job) {
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
        let sched = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("prism-worker-{worker_id}"))
            .spawn(move || sched.worker_loop(worker_id));
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
                sched: self.clone(),
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
            if !spun && st.spinning == 0 && SPINNING.load(Ordering::Relaxed) {
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

    /// Returns what a job with `keep` set held on to (an actor's lifetime resources).
    pub fn release(self: &Arc<Self>, grant: &Grant) {
        let mut st = self.lock();
        st.available.give(grant);
        self.dispatch(st);
    }

    fn give_back_cpu(self: &Arc<Self>, cpu: u64) {
        let mut st = self.lock();
        st.available.cpu += cpu as i64;
        self.dispatch(st);
    }

    fn take_cpu(&self, cpu: u64) {
        self.lock().available.cpu -= cpu as i64;
    }

    /// Stops the pool: idle threads exit, queued jobs are dropped.
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
        (self.total.amounts(), self.lock().available.amounts())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn capacity(cpu: f64, gpus: usize) -> Capacity {
        Capacity {
            cpu: to_fixed(cpu) as i64,
            memory: 1 << 30,
            gpus: vec![UNIT; gpus],
            custom: HashMap::from([(Arc::from("fpga"), to_fixed(2.0) as i64)]),
        }
    }

    #[test]
    fn fractional_cpus_add_up_exactly() {
        let mut c = capacity(1.0, 0);
        let d = Demand {
            cpu: to_fixed(0.1),
            ..Demand::default()
        };
        let mut grants = Vec::new();
        while c.fits(&d) {
            grants.push(Grant {
                gpu_ids: c.take(&d),
                demand: d.clone(),
            });
        }
        assert_eq!(grants.len(), 10);
        assert_eq!(c.cpu, 0);
    }

    #[test]
    fn whole_gpus_get_distinct_ids_and_fractions_share_one() {
        let mut c = capacity(4.0, 2);
        let two = Demand {
            gpu: 2 * UNIT,
            ..Demand::default()
        };
        let ids = c.take(&two);
        assert_eq!(ids, vec![0, 1]);
        assert!(!c.fits(&Demand {
            gpu: UNIT / 2,
            ..Demand::default()
        }));
        c.give(&Grant {
            demand: two,
            gpu_ids: ids,
        });
        let half = Demand {
            gpu: UNIT / 2,
            ..Demand::default()
        };
        let a = c.take(&half);
        let b = c.take(&half);
        assert_eq!(a, b, "two halves pack onto one device");
        assert_eq!(c.take(&half), vec![1]);
    }

    fn demand_strategy() -> impl Strategy<Value = Demand> {
        (0u64..3, 0u64..4, 0u64..3).prop_map(|(cpu_halves, gpu_quarters, fpga)| Demand {
            cpu: cpu_halves * UNIT / 2,
            gpu: gpu_quarters * UNIT / 4,
            memory: 0,
            custom: if fpga > 0 {
                vec![(Arc::from("fpga"), fpga * UNIT / 2)]
            } else {
                Vec::new()
            },
        })
    }

    proptest! {
        /// Whatever order grants are taken and returned in, the books never go below zero
        /// or above the total, and returning everything restores the total exactly.
        #[test]
        fn grants_balance(ops in proptest::collection::vec((demand_strategy(), any::<bool>()), 1..64)) {
            let total = capacity(2.0, 2);
            let mut c = total.clone();
            let mut held: Vec<Grant> = Vec::new();
            for (d, release) in ops {
                if release && !held.is_empty() {
                    let g = held.remove(0);
                    c.give(&g);
                } else if c.fits(&d) {
                    let ids = c.take(&d);
                    held.push(Grant { demand: d, gpu_ids: ids });
                }
                prop_assert!(c.cpu >= 0 && c.cpu <= total.cpu);
                prop_assert!(c.gpus.iter().all(|&g| g <= UNIT));
                prop_assert!(c.custom.values().all(|&v| v >= 0));
            }
            for g in held.drain(..) {
                c.give(&g);
            }
            prop_assert_eq!(c.cpu, total.cpu);
            prop_assert_eq!(&c.gpus, &total.gpus);
            prop_assert_eq!(&c.custom, &total.custom);
        }
    }
}
