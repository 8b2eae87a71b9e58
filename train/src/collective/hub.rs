//! The shared-memory transport: the ranks of a group in one process meet in a hub and
//! exchange `Arc`s of their buffers, round by round.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use super::{add_into, chunk_range, Element, ReduceOp};
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
    /// The part this rank reduced in its last all-reduce (an `Arc<Vec<T>>`), whose
    /// memory the next one reuses once every rank is done with it.
    spare: Option<Shared>,
}

/// Elements summed at a time: a block of the part stays in cache while every rank's
/// block is added into it.
const BLOCK: usize = 4096;

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
            spare: None,
        })
    }

    /// Puts `value` in this round and returns every rank's, in rank order, once all
    /// have put theirs. `what` names the collective, checked to be the same on all.
    fn exchange(&mut self, what: String, value: Shared) -> Result<Vec<Shared>> {
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
                round.taken += 1;
                if round.taken == world {
                    state.rounds.remove(&seq);
                }
                return Ok(all);
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

    fn typed<T: Element>(all: Vec<Shared>) -> Vec<Arc<Vec<T>>> {
        all.into_iter()
            .map(|v| {
                v.downcast::<Vec<T>>()
                    .expect("the round's name fixes the type")
            })
            .collect()
    }

    pub(super) fn all_reduce<T: Element>(&mut self, buf: &mut Vec<T>, op: ReduceOp) -> Result<()> {
        let world = self.hub.world;
        let len = buf.len();
        let what = format!("all_reduce({op:?}) of {len} {}", T::NAME);
        let own = Arc::new(std::mem::take(buf));
        let give_back = |own: Arc<Vec<T>>| Arc::try_unwrap(own).unwrap_or_else(|a| (*a).clone());
        let all = match self.exchange(what.clone(), own.clone()) {
            Ok(all) => Self::typed::<T>(all),
            Err(e) => {
                *buf = give_back(own);
                return Err(e);
            }
        };
        // The reduce-scatter: this rank's part of every buffer, summed. Every rank has
        // entered this collective, so none still reads the last one's part.
        let mine = chunk_range(len, world, self.rank);
        let mut part = self
            .spare
            .take()
            .and_then(|s| s.downcast::<Vec<T>>().ok())
            .and_then(|a| Arc::try_unwrap(a).ok())
            .unwrap_or_default();
        part.clear();
        part.extend_from_slice(&all[0][mine.clone()]);
        for (i, block) in part.chunks_mut(BLOCK).enumerate() {
            let at = mine.start + i * BLOCK;
            for other in &all[1..] {
                add_into(block, &other[at..at + block.len()]);
            }
        }
        if op == ReduceOp::Mean {
            let by = 1.0 / world as f64;
            part.iter_mut().for_each(|x| *x = x.scale(by));
        }
        drop(all);
        // The all-gather: every rank's reduced part, into this rank's own buffer.
        let part = Arc::new(part);
        self.spare = Some(part.clone());
        let parts = match self.exchange(format!("{what}, gather"), part) {
            Ok(parts) => Self::typed::<T>(parts),
            Err(e) => {
                *buf = give_back(own);
                return Err(e);
            }
        };
        // Every rank dropped its view of this buffer before it gave its part.
        let mut out = give_back(own);
        for (rank, part) in parts.iter().enumerate() {
            out[chunk_range(len, world, rank)].copy_from_slice(part);
        }
        *buf = out;
        Ok(())
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
