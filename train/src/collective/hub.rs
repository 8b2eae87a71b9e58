//! The shared-memory transport: the ranks of a group in one process meet in a hub and
//! exchange `Arc`s of their values, round by round. An all-reduce lends every rank's
//! buffer to the others for one window: each rank sums its `1/n` of all the buffers and
//! writes the sum back into all of them, so every input is read once and every output
//! written once, the least memory traffic an all-reduce of `n` separate buffers has.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use super::{chunk_range, Element, ReduceOp};
use crate::error::{Result, TrainError};

type Shared = Arc<dyn Any + Send + Sync>;

/// A group of ranks in this process, met under one name. Public only to name it in
/// docs; ranks reach it through [`Communicator::shared_memory`](super::Communicator::shared_memory).
pub struct SharedGroup {
    name: String,
    world: usize,
    state: Mutex<HubState>,
    moved: Condvar,
    /// Bumped whenever a round completes or the group fails: what a spinning rank
    /// watches without the lock.
    progress: AtomicU64,
    /// How long a rank spins before it sleeps on `moved`; see [`spin_budget`].
    spin: Duration,
}

#[derive(Default)]
struct HubState {
    /// Rounds in progress, by sequence number.
    rounds: HashMap<u64, Round>,
    /// Why the group failed, once it has.
    failed: Option<TrainError>,
    /// Ranks that joined.
    joined: Vec<bool>,
}

struct Round {
    what: String,
    values: Vec<Option<Shared>>,
    arrived: usize,
    taken: usize,
    /// The window the round opens, for the all-reduces that lend their buffers.
    window: Arc<WindowState>,
}

/// What every rank takes from a completed round.
struct Met {
    values: Vec<Shared>,
    window: Arc<WindowState>,
}

/// A rank's buffer, lent to the group for one all-reduce: where it starts and its
/// length in elements.
#[derive(Clone, Copy)]
struct Lent {
    addr: usize,
    len: usize,
}

/// The ranks still reducing in a lent window, and whether one of them panicked.
struct WindowState {
    open: AtomicUsize,
    broken: AtomicBool,
}

/// One rank's place in a lent window. Dropping it counts the rank out, even when its
/// reduce panicked; [`Window::close_and_wait`] returns once every rank is out, so no
/// rank gets its buffer back while another may still write into it.
struct Window<'a> {
    hub: &'a SharedGroup,
    state: Arc<WindowState>,
}

impl Window<'_> {
    /// Counts this rank out and waits for the others. The wait has no deadline because
    /// what it waits for cannot block: every rank in the window is summing memory.
    fn close_and_wait(self) -> Result<()> {
        let (hub, state) = (self.hub, self.state.clone());
        drop(self);
        let spin_until = Instant::now() + hub.spin;
        while state.open.load(Ordering::Acquire) != 0 && Instant::now() < spin_until {
            std::hint::spin_loop();
        }
        let mut st = hub.lock();
        while state.open.load(Ordering::Acquire) != 0 {
            st = hub
                .moved
                .wait_timeout(st, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        drop(st);
        if state.broken.load(Ordering::Acquire) {
            return Err(TrainError::PeerDied(format!(
                "a rank of group {} panicked in an all-reduce",
                hub.name
            )));
        }
        Ok(())
    }
}

impl Drop for Window<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.state.broken.store(true, Ordering::Release);
        }
        if self.state.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            let _st = self.hub.lock();
            self.hub.moved.notify_all();
        }
    }
}

/// How long the ranks of a group of `world` spin before they sleep: on a virtual
/// machine a sleeping core is woken in milliseconds, longer than the compute between
/// two steps' collectives, so a rank with a core of its own waits awake (up to
/// `PRISM_TRAIN_SPIN_US`, default 2 ms). Ranks that outnumber the cores never spin:
/// a spinning rank would keep the one it waits for off a core.
fn spin_budget(world: usize) -> Duration {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let us = std::env::var("PRISM_TRAIN_SPIN_US")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    if world <= cores {
        Duration::from_micros(us)
    } else {
        Duration::ZERO
    }
}

/// Groups some of whose ranks have not joined yet. A group leaves this table once all
/// have, so a rank that joins and leaves early cannot make a later one start afresh.
fn hubs() -> MutexGuard<'static, HashMap<String, Arc<SharedGroup>>> {
    static HUBS: OnceLock<Mutex<HashMap<String, Arc<SharedGroup>>>> = OnceLock::new();
    HUBS.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

impl SharedGroup {
    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fail(&self, st: &mut HubState, why: TrainError) {
        if st.failed.is_none() {
            st.failed = Some(why);
        }
        self.progress.fetch_add(1, Ordering::Release);
        self.moved.notify_all();
    }
}

/// One rank's membership of a [`SharedGroup`]. Dropping it (the rank's loop ended or
/// panicked) fails the group for the others.
pub(super) struct Member {
    hub: Arc<SharedGroup>,
    rank: usize,
    seq: u64,
    timeout: Duration,
}

impl Member {
    pub(super) fn join(name: &str, rank: usize, world: usize, timeout: Duration) -> Result<Member> {
        let mut hubs = hubs();
        let hub = {
            match hubs.get(name).cloned() {
                Some(h) => h,
                None => {
                    let h = Arc::new(SharedGroup {
                        name: name.to_string(),
                        world,
                        state: Mutex::new(HubState {
                            joined: vec![false; world],
                            ..Default::default()
                        }),
                        moved: Condvar::new(),
                        progress: AtomicU64::new(0),
                        spin: spin_budget(world),
                    });
                    hubs.insert(name.to_string(), h.clone());
                    h
                }
            }
        };
        if hub.world != world {
            return Err(TrainError::Config(format!(
                "group {name} has {} ranks; rank {rank} joined it as one of {world}",
                hub.world
            )));
        }
        {
            let mut st = hub.lock();
            if let Some(e) = &st.failed {
                return Err(e.clone());
            }
            if std::mem::replace(&mut st.joined[rank], true) {
                return Err(TrainError::Config(format!(
                    "rank {rank} joined group {name} twice"
                )));
            }
            if st.joined.iter().all(|j| *j) {
                hubs.remove(name);
            }
        }
        drop(hubs);
        Ok(Member {
            hub,
            rank,
            seq: 0,
            timeout,
        })
    }

    /// Puts `value` in this round and returns every rank's, in rank order, once all
    /// have put theirs. `what` names the collective, checked to be the same on all.
    fn exchange(&mut self, what: String, value: Shared) -> Result<Met> {
        let hub = self.hub.clone();
        let (world, seq) = (hub.world, self.seq);
        self.seq += 1;
        let mut st = hub.lock();
        if let Some(e) = &st.failed {
            return Err(e.clone());
        }
        let round = st.rounds.entry(seq).or_insert_with(|| Round {
            what: what.clone(),
            values: vec![None; world],
            arrived: 0,
            taken: 0,
            window: Arc::new(WindowState {
                open: AtomicUsize::new(world),
                broken: AtomicBool::new(false),
            }),
        });
        if round.what != what {
            let why = TrainError::Mismatch(format!(
                "collective {seq} of group {}: rank {} called {what}, another rank {}",
                hub.name, self.rank, round.what
            ));
            hub.fail(&mut st, why.clone());
            return Err(why);
        }
        round.values[self.rank] = Some(value);
        round.arrived += 1;
        if round.arrived == world {
            hub.progress.fetch_add(1, Ordering::Release);
            hub.moved.notify_all();
        }
        let deadline = Instant::now() + self.timeout;
        let mut spun = false;
        loop {
            // A round that completed is read even if the group failed since.
            let state = &mut *st;
            let round = state
                .rounds
                .get_mut(&seq)
                .expect("a round stays until all took it");
            let arrived = round.arrived;
            if arrived == world {
                let all = round
                    .values
                    .iter()
                    .map(|v| v.clone().expect("arrived"))
                    .collect();
                let window = round.window.clone();
                round.taken += 1;
                if round.taken == world {
                    state.rounds.remove(&seq);
                }
                return Ok(Met {
                    values: all,
                    window,
                });
            }
            if let Some(e) = &st.failed {
                return Err(e.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                let why = TrainError::Timeout(format!(
                    "rank {} of group {} waited {:?} in {what} for {} other rank(s)",
                    self.rank,
                    hub.name,
                    self.timeout,
                    world - arrived
                ));
                hub.fail(&mut st, why.clone());
                return Err(why);
            }
            if !spun && !hub.spin.is_zero() {
                // Spin (without the lock) for the round to complete, then look again.
                spun = true;
                let seen = hub.progress.load(Ordering::Acquire);
                drop(st);
                let until = now + hub.spin.min(deadline - now);
                while hub.progress.load(Ordering::Acquire) == seen && Instant::now() < until {
                    for _ in 0..64 {
                        std::hint::spin_loop();
                    }
                }
                st = hub.lock();
                continue;
            }
            st = hub
                .moved
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn typed<T: Element>(met: Met) -> Vec<Arc<Vec<T>>> {
        met.values
            .into_iter()
            .map(|v| {
                v.downcast::<Vec<T>>()
                    .expect("the round's name fixes the type")
            })
            .collect()
    }

    pub(super) fn all_reduce<T: Element>(&mut self, buf: &mut [T], op: ReduceOp) -> Result<()> {
        let world = self.hub.world;
        let len = buf.len();
        let what = format!("all_reduce({op:?}) of {len} {}", T::NAME);
        let lent = Arc::new(Lent {
            addr: buf.as_mut_ptr() as usize,
            len,
        });
        // Once this round completes, every rank's buffer holds its input and no rank
        // touches its own buffer until the window closes.
        let met = self.exchange(what.clone(), lent)?;
        let lent: Vec<Lent> = met
            .values
            .into_iter()
            .map(|v| {
                *v.downcast::<Lent>()
                    .expect("the round's name fixes the type")
            })
            .collect();
        if lent.iter().any(|l| l.len != len) {
            // Every rank sees the same lengths and gives up here, before any write.
            return Err(TrainError::Mismatch(format!(
                "{what}: the ranks' lengths differ"
            )));
        }
        let window = Window {
            hub: &self.hub,
            state: met.window,
        };
        let addrs: Vec<usize> = lent.iter().map(|l| l.addr).collect();
        let mine = chunk_range(len, world, self.rank);
        #[allow(unsafe_code)]
        // SAFETY: every address is the start of a live buffer of `len` elements: its
        // rank lent it in this round and waits in `close_and_wait` before it touches,
        // frees or moves it. The window closes only after every rank's reduce has
        // ended, even by a panic, because `window` counts its rank out when dropped.
        // The ranks' parts are disjoint, so no element is touched by two ranks.
        unsafe {
            lent_memory::reduce_in_place::<T>(&addrs, mine, op, world)
        };
        window.close_and_wait()
    }

    pub(super) fn broadcast<T: Element>(&mut self, buf: &mut Vec<T>, root: usize) -> Result<()> {
        let what = format!("broadcast from {root} of {}", T::NAME);
        let value: Arc<Vec<T>> = if self.rank == root {
            Arc::new(buf.clone())
        } else {
            Arc::new(Vec::new())
        };
        let all = Self::typed::<T>(self.exchange(what, value)?);
        if self.rank != root {
            buf.clear();
            buf.extend_from_slice(&all[root]);
        }
        Ok(())
    }

    pub(super) fn all_gather<T: Element>(&mut self, part: &[T]) -> Result<Vec<Vec<T>>> {
        let what = format!("all_gather of {}", T::NAME);
        let all = Self::typed::<T>(self.exchange(what, Arc::new(part.to_vec()))?);
        Ok(all.iter().map(|p| p.to_vec()).collect())
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let why = TrainError::PeerDied(format!(
            "rank {} of group {} left it{}",
            self.rank,
            self.hub.name,
            if std::thread::panicking() {
                " (its code panicked)"
            } else {
                ""
            }
        ));
        let mut st = self.hub.lock();
        self.hub.fail(&mut st, why);
    }
}

/// The one place the shared-memory transport touches memory through raw addresses.
#[allow(unsafe_code)]
mod lent_memory {
    use std::ops::Range;

    use super::super::{Element, ReduceOp};

    /// Elements summed at a time: a block of every buffer stays in cache between the
    /// read that sums it and the write of the sum into it.
    const BLOCK: usize = 4096;

    /// Sums elements `part` of the buffers at `addrs` and writes the sum (or the mean
    /// over `world`) into every one of them, in rank order, so that every rank gets the
    /// same bits.
    ///
    /// # Safety
    /// Each address is the start of a buffer of at least `part.end` elements of `T`
    /// that stays alive and that nothing else reads or writes in `part` during the
    /// call.
    pub(super) unsafe fn reduce_in_place<T: Element>(
        addrs: &[usize],
        part: Range<usize>,
        op: ReduceOp,
        world: usize,
    ) {
        let mut sum = vec![T::default(); BLOCK.min(part.len())];
        let mut at = part.start;
        while at < part.end {
            let n = BLOCK.min(part.end - at);
            let sum = &mut sum[..n];
            // SAFETY: `at + n <= part.end`, within every buffer, and only this call
            // touches these elements; each slice lives for one statement.
            let read =
                |addr: usize| unsafe { std::slice::from_raw_parts((addr as *const T).add(at), n) };
            sum.copy_from_slice(read(addrs[0]));
            for &addr in &addrs[1..] {
                for (s, x) in sum.iter_mut().zip(read(addr)) {
                    *s = T::add(*s, *x);
                }
            }
            super::super::finish(sum, op, world);
            for &addr in addrs {
                // SAFETY: as for `read`.
                unsafe { std::slice::from_raw_parts_mut((addr as *mut T).add(at), n) }
                    .copy_from_slice(sum);
            }
            at += n;
        }
    }
}
