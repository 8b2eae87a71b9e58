//! The [`Trainer`]: a train loop run on `num_workers` worker actors as a gang, with
//! collectives among them, metrics and checkpoints reported per epoch, and restarts
//! from the latest checkpoint when a worker fails.
//!
//! A run goes in attempts. Each attempt reserves one bundle per worker in a placement
//! group ([`ScalingConfig`]: workers, resources per worker, strategy), starts a
//! [`TrainWorker`] in each, and gives each rank its shard and the checkpoint to
//! resume from. The ranks meet over shared memory when they share a process and over
//! a ring of TCP connections otherwise (whose all-reduces go through the workers'
//! memory when all are on one machine; [`Transport`]). The driver polls rank 0 for its reports,
//! records them (the run's history is rank 0's metrics, one entry per epoch), prints a
//! line per epoch on a terminal and hands checkpoints to a writer thread.
//!
//! When a worker fails (its loop errs or panics, its process dies), the others'
//! pending collectives fail at once ([`TrainError::PeerDied`]) and the attempt ends:
//! the trainer ends every worker and the group, and, up to
//! [`RunConfig::max_failures`] times, starts a new attempt from the latest checkpoint,
//! the history cut back to that checkpoint's epoch, so the epoch count goes on from it.
//! With a run directory ([`RunConfig::dir`]), [`Trainer::restore`] goes on with a run
//! whose driver was killed.
//!
//! ```
//! use prism_train::{register_loop, RunConfig, ScalingConfig, TrainContext, TrainLoop, Trainer};
//! use prism_train::{ReduceOp, Result};
//!
//! /// Every worker adds its rank to a running sum each epoch.
//! struct Count;
//!
//! impl TrainLoop for Count {
//!     type Config = usize; // epochs
//!     type Shard = ();
//!     fn train(ctx: &mut TrainContext, epochs: usize, _: ()) -> Result<()> {
//!         let mut sum = match ctx.checkpoint() {
//!             Some(bytes) => f64::from_le_bytes(bytes.try_into().unwrap()),
//!             None => 0.0,
//!         };
//!         for _ in ctx.start_epoch()..epochs {
//!             let mut part = vec![ctx.rank() as f64];
//!             ctx.all_reduce(&mut part, ReduceOp::Sum)?;
//!             sum += part[0];
//!             ctx.report([("sum", sum)], Some(sum.to_le_bytes().to_vec()))?;
//!         }
//!         Ok(())
//!     }
//! }
//! register_loop!(Count);
//!
//! prism::init_with(prism::Config::default().num_cpus(2.0)).unwrap();
//! let trainer = Trainer::<Count>::new(3, ScalingConfig::new(2)).run_config(RunConfig::quiet());
//! let result = trainer.fit().unwrap();
//! assert_eq!(result.history.len(), 3);
//! assert_eq!(result.metrics()["sum"], 3.0); // (0 + 1) three times
//! assert_eq!(result.checkpoint.unwrap().iteration, 3);
//! prism::shutdown();
//! ```

mod buckets;
mod config;
mod record;
mod store;
mod worker;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::marker::PhantomData;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::collective::HostMemory;
use crate::{Result, TrainError};
pub use buckets::GradientBuckets;
pub use config::{Mode, Progress, RunConfig, ScalingConfig, Transport};
use record::{Book, Line};
pub use record::{Checkpoint, TrainResult};
use store::RunStore;
pub use worker::{Endpoint, Link, Report, RunSetup, TrainContext, TrainWorker, TrainWorkerHandle};

/// One epoch's metrics, by name.
pub type Metrics = BTreeMap<String, f64>;

/// A random number, different in each call and each process.
pub(crate) fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// A data-parallel training loop: what every worker runs, on its rank's shard.
pub trait TrainLoop: 'static {
    /// The loop's configuration (hyperparameters, epochs), the same on every worker;
    /// kept in the run directory for [`Trainer::restore`].
    type Config: prism::Value + Clone;
    /// One worker's part of the data (`()` for a loop that makes or loads its own).
    type Shard: prism::Value;

    /// Trains on this worker: resumes from `ctx.checkpoint()` if there is one, and
    /// reports each epoch's metrics (and checkpoints) with [`TrainContext::report`].
    fn train(ctx: &mut TrainContext, config: Self::Config, shard: Self::Shard) -> Result<()>;
}

/// A registered train loop: its name and how to run it. Made by
/// [`register_loop!`](crate::register_loop); not for direct use.
pub struct Registration {
    /// `std::any::type_name` of the loop.
    pub name: fn() -> &'static str,
    /// Decodes the configuration and shard and runs the loop.
    pub run: fn(&mut TrainContext, &[u8], &[u8]) -> Result<()>,
}

inventory::collect!(Registration);

/// Runs `T` on encoded arguments: what [`register_loop!`](crate::register_loop) files.
pub fn run_encoded<T: TrainLoop>(
    ctx: &mut TrainContext,
    config: &[u8],
    shard: &[u8],
) -> Result<()> {
    let decode = |what: &str, e: postcard::Error| {
        TrainError::Config(format!(
            "the {what} of {} does not decode: {e}",
            std::any::type_name::<T>()
        ))
    };
    let config = postcard::from_bytes(config).map_err(|e| decode("configuration", e))?;
    let shard = postcard::from_bytes(shard).map_err(|e| decode("shard", e))?;
    T::train(ctx, config, shard)
}

/// The registration of the loop named `name`, or an error saying how to file it.
fn lookup(name: &str) -> Result<&'static Registration> {
    inventory::iter::<Registration>
        .into_iter()
        .find(|r| (r.name)() == name)
        .ok_or_else(|| {
            TrainError::Config(format!(
                "the train loop {name} is not registered: add \
                 `prism_train::register_loop!(<its type>);` next to its impl TrainLoop"
            ))
        })
}

/// Files a [`TrainLoop`] in the registry its workers find it in, on any node. Once per
/// type, at the top level of a module: `prism_train::register_loop!(MyLoop);`.
#[macro_export]
macro_rules! register_loop {
    ($t:ty) => {
        $crate::__private::inventory::submit! {
            $crate::trainer::Registration {
                name: ::std::any::type_name::<$t>,
                run: $crate::trainer::run_encoded::<$t>,
            }
        }
    };
}

/// Runs a [`TrainLoop`] on a gang of workers; see the module's documentation.
pub struct Trainer<T: TrainLoop> {
    config: T::Config,
    scaling: ScalingConfig,
    run: RunConfig,
    /// One per worker, if given.
    shards: Option<Shards<T::Shard>>,
    /// What a restored run had: its history and checkpoints.
    restored: Option<(Vec<Metrics>, Vec<Checkpoint>)>,
    _loop: PhantomData<fn() -> T>,
}

/// The shards a trainer was given, encoded once for every attempt's workers.
struct Shards<S> {
    /// Kept as given, not only encoded: a shard that holds an actor handle (a
    /// `DataShard`'s coordinator) keeps its actor alive for the run.
    _given: Vec<S>,
    encoded: Vec<Vec<u8>>,
}

/// The run directory's manifest: what [`Trainer::restore`] needs to go on.
#[derive(Serialize, Deserialize)]
struct Manifest {
    train_loop: String,
    config: serde_json::Value,
    scaling: ScalingConfig,
    run: RunConfig,
}

impl<T: TrainLoop> Trainer<T> {
    /// A trainer of `T` with `config` on the workers `scaling` asks for.
    pub fn new(config: T::Config, scaling: ScalingConfig) -> Trainer<T> {
        Trainer {
            config,
            scaling,
            run: RunConfig::default(),
            shards: None,
            restored: None,
            _loop: PhantomData,
        }
    }

    /// With `run`'s run directory, checkpoint policy and failure budget.
    pub fn run_config(mut self, run: RunConfig) -> Self {
        self.run = run;
        self
    }

    /// One shard per worker, in rank order: rank `i` trains on `shards[i]`. A shard
    /// could be a prism-data `DataShard` from `Dataset::streaming_split`, or a shard
    /// made by hand. Shards are not kept in the run directory: give them again after
    /// [`Trainer::restore`].
    pub fn shards(mut self, shards: Vec<T::Shard>) -> Result<Self> {
        let encoded = shards
            .iter()
            .map(postcard::to_allocvec)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| TrainError::Config(format!("a shard does not encode: {e}")))?;
        self.shards = Some(Shards {
            _given: shards,
            encoded,
        });
        Ok(self)
    }

    /// Takes up the run in `dir` where it stopped (its driver killed, say): the same
    /// loop, configuration and options, resumed from its latest checkpoint with the
    /// history up to it.
    pub fn restore(dir: impl AsRef<Path>) -> Result<Trainer<T>> {
        let dir = dir.as_ref();
        let saved = store::read(dir)?;
        let manifest: Manifest = serde_json::from_value(saved.manifest)
            .map_err(|e| TrainError::Io(format!("the manifest of {}: {e}", dir.display())))?;
        let name = std::any::type_name::<T>();
        if manifest.train_loop != name {
            return Err(TrainError::Config(format!(
                "{} is a run of {}, not of {name}",
                dir.display(),
                manifest.train_loop
            )));
        }
        let config = serde_json::from_value(manifest.config)
            .map_err(|e| TrainError::Config(format!("the saved configuration: {e}")))?;
        let mut run = manifest.run;
        run.dir = Some(dir.to_path_buf());
        Ok(Trainer {
            config,
            scaling: manifest.scaling,
            run,
            shards: None,
            restored: Some((saved.history, saved.checkpoints)),
            _loop: PhantomData,
        })
    }

    /// Runs the loop to its end on every worker, restarting failed attempts up to
    /// `max_failures` times.
    pub fn fit(&self) -> Result<TrainResult> {
        let started = Instant::now();
        let name = std::any::type_name::<T>();
        lookup(name)?;
        let n = self.scaling.num_workers;
        if n == 0 {
            return Err(TrainError::Config("a run needs at least one worker".into()));
        }
        let shards = self.encoded_shards(n)?;
        let config = postcard::to_allocvec(&self.config)
            .map_err(|e| TrainError::Config(format!("the configuration does not encode: {e}")))?;
        let store = match &self.run.dir {
            Some(dir) => Some(self.open_store(dir, name)?),
            None => None,
        };
        let mut book = Book::new(&self.run, self.restored.clone());
        let mut progress = Line::new(self.run.progress);
        let run_id = format!("{:016x}", random_u64());
        let mut failures = 0;
        let setups = Setups {
            name,
            config,
            shards,
            timeout: self.run.collective_timeout,
        };
        loop {
            let attempt = Attempt {
                run: &self.run,
                scaling: &self.scaling,
                group_name: format!("prism-train/{run_id}/{failures}"),
            };
            match attempt.run(failures, &setups, &mut book, store.as_ref(), &mut progress) {
                Ok(()) => break,
                Err(Ended::Fatal(e)) => return Err(e),
                Err(Ended::Failed(e)) if failures < self.run.max_failures => {
                    failures += 1;
                    book.rewind(store.as_ref());
                    eprintln!(
                        "prism-train: a worker failed ({e}); restarting from epoch {} \
                         (restart {failures} of {})",
                        book.start(),
                        self.run.max_failures
                    );
                }
                Err(Ended::Failed(last)) => return Err(TrainError::Failed { failures, last }),
            }
        }
        let dir = store.as_ref().map(|s| s.dir().to_path_buf());
        if let Some(s) = store {
            s.finish()?;
        }
        Ok(TrainResult {
            checkpoint: book.latest().cloned(),
            history: book.history,
            checkpoints: book.kept,
            failures,
            dir,
            elapsed: started.elapsed(),
            score: self.run.score.clone(),
        })
    }

    fn encoded_shards(&self, n: usize) -> Result<Cow<'_, [Vec<u8>]>> {
        match &self.shards {
            Some(s) if s.encoded.len() == n => Ok(Cow::Borrowed(&s.encoded)),
            Some(s) => Err(TrainError::Config(format!(
                "{} shards for {n} workers: give one shard per worker",
                s.encoded.len()
            ))),
            None if std::any::TypeId::of::<T::Shard>() == std::any::TypeId::of::<()>() => {
                Ok(Cow::Owned(vec![Vec::new(); n]))
            }
            None => Err(TrainError::Config(format!(
                "{} trains on a shard per worker: give them with Trainer::shards",
                std::any::type_name::<T>()
            ))),
        }
    }

    fn open_store(&self, dir: &Path, name: &str) -> Result<RunStore> {
        if self.restored.is_none() && dir.join("trainer.json").exists() {
            return Err(TrainError::Config(format!(
                "{} already holds a run: go on with it with Trainer::restore, or choose \
                 another directory",
                dir.display()
            )));
        }
        let manifest = Manifest {
            train_loop: name.to_string(),
            config: serde_json::to_value(&self.config)
                .map_err(|e| TrainError::Config(format!("the configuration: {e}")))?,
            scaling: self.scaling.clone(),
            run: self.run.clone(),
        };
        let manifest = serde_json::to_value(&manifest)
            .map_err(|e| TrainError::Config(format!("the run's manifest: {e}")))?;
        RunStore::create(dir, &manifest)
    }
}

/// What every attempt's ranks are set up from.
struct Setups<'a> {
    name: &'static str,
    config: Vec<u8>,
    shards: Cow<'a, [Vec<u8>]>,
    timeout: Duration,
}

impl Setups<'_> {
    fn rank(&self, rank: usize, link: Link, attempt: u32, resume: Option<&Checkpoint>) -> RunSetup {
        RunSetup {
            name: self.name.to_string(),
            config: self.config.clone(),
            shard: self.shards[rank].clone(),
            rank,
            world: self.shards.len(),
            link,
            timeout: self.timeout,
            resume: resume.map(|c| (c.iteration, serde_bytes::ByteBuf::from(c.bytes.clone()))),
            attempt,
        }
    }
}

/// How an attempt ended, short of success.
enum Ended {
    /// Nothing a restart would mend (a loop that is not registered, a group that can
    /// never fit).
    Fatal(TrainError),
    /// A worker failed: a restart may go on.
    Failed(String),
}

/// One attempt of a run: a placement group and its workers, ended with it.
struct Attempt<'a> {
    run: &'a RunConfig,
    scaling: &'a ScalingConfig,
    group_name: String,
}

/// The workers of an attempt and their group, ended when dropped.
struct Gang {
    group: prism::PlacementGroup,
    workers: Vec<TrainWorkerHandle>,
}

impl Drop for Gang {
    fn drop(&mut self) {
        for w in &self.workers {
            let _ = w.stop();
            prism::kill(w);
        }
        let _ = self.group.remove();
    }
}

/// How often the driver looks at the workers.
const POLL: Duration = Duration::from_millis(20);

/// How long rank 0 has to hand over its reports before the attempt counts as failed.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the survivors of a failed attempt get to end, and to hand over their last
/// reports, before the gang is ended.
const FAILURE_GRACE: Duration = Duration::from_secs(2);

impl Attempt<'_> {
    fn run(
        &self,
        attempt: u32,
        setups: &Setups<'_>,
        book: &mut Book,
        store: Option<&RunStore>,
        line: &mut Line,
    ) -> std::result::Result<(), Ended> {
        let failed = |e: prism::Error| Ended::Failed(e.to_string());
        let n = self.scaling.num_workers;
        let group = prism::placement_group(vec![self.scaling.bundle(); n], self.scaling.strategy)
            .map_err(|e| Ended::Fatal(e.into()))?;
        let wait = self.run.placement_timeout;
        if let Err(e) = group.wait(wait) {
            let _ = group.remove();
            return Err(Ended::Fatal(TrainError::Runtime(format!(
                "the {n} workers' resources were not free within {wait:?}: {e}"
            ))));
        }
        let workers = (0..n)
            .map(|i| {
                TrainWorker::options()
                    .num_cpus(self.scaling.cpus_per_worker)
                    .num_gpus(self.scaling.gpus_per_worker)
                    .resources(self.scaling.resources_per_worker.clone())
                    .scheduling(group.bundle(i))
                    .max_concurrency(3)
                    .remote()
            })
            .collect();
        let gang = Gang { group, workers };
        let mut endpoints = Vec::with_capacity(n);
        for w in &gang.workers {
            let opened = prism::get_timeout(&w.open(), wait).map_err(failed)?;
            endpoints.push(opened.map_err(|e| Ended::Failed(e.to_string()))?);
        }
        let one_process = endpoints.iter().all(|e| e.process == endpoints[0].process);
        let link = if one_process && self.scaling.transport == Transport::Auto {
            Link::Shared(self.group_name.clone())
        } else {
            Link::Ring {
                peers: endpoints.iter().map(|e| e.address.clone()).collect(),
                secret: random_u64(),
                host_memory: match self.scaling.transport {
                    Transport::Auto => HostMemory::Probe,
                    Transport::Tcp => HostMemory::Off,
                },
            }
        };
        let runs: Vec<_> = gang
            .workers
            .iter()
            .enumerate()
            .map(|(rank, w)| w.run(setups.rank(rank, link.clone(), attempt, book.latest())))
            .collect();
        let rank_of: BTreeMap<prism::ObjectId, usize> = runs
            .iter()
            .enumerate()
            .map(|(rank, r)| (r.id(), rank))
            .collect();
        let mut pending = runs;
        loop {
            let (ready, rest) = prism::wait(&pending, pending.len(), Some(POLL)).map_err(failed)?;
            pending = rest;
            // A drain is answered beside the running loop at once; a rank 0 that cannot
            // answer in this long (its process stopped, say) fails the attempt.
            let reports =
                prism::get_timeout(&gang.workers[0].drain(), DRAIN_TIMEOUT).map_err(failed)?;
            for r in reports {
                line.epoch(&r);
                book.record(r, store);
            }
            // The root cause over the echoes: a peer's death is what the others saw.
            let mut errors: Vec<(usize, TrainError)> = Vec::new();
            for r in &ready {
                let rank = rank_of[&r.id()];
                match prism::get(r) {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => errors.push((rank, e)),
                    Err(e) => errors.push((rank, e.into())),
                }
            }
            errors.sort_by_key(|(_, e)| matches!(e, TrainError::PeerDied(_) | TrainError::Stopped));
            if let Some((rank, e)) = errors.into_iter().next() {
                if let TrainError::Config(_) = e {
                    return Err(Ended::Fatal(e));
                }
                // Rank 0 may have finished an epoch (and reported its checkpoint) just
                // after the failed rank's end; its collectives now fail at once, so a
                // moment lets it end and its last reports count.
                let grace = Instant::now() + FAILURE_GRACE;
                while !pending.is_empty() && Instant::now() < grace {
                    match prism::wait(&pending, pending.len(), Some(POLL)) {
                        Ok((_, rest)) => pending = rest,
                        Err(_) => break,
                    }
                }
                if let Ok(reports) = prism::get_timeout(&gang.workers[0].drain(), FAILURE_GRACE) {
                    for r in reports {
                        line.epoch(&r);
                        book.record(r, store);
                    }
                }
                let at = &endpoints[rank];
                return Err(Ended::Failed(format!(
                    "rank {rank} (pid {} on node {}): {e}",
                    at.pid, at.node_id
                )));
            }
            if pending.is_empty() {
                return Ok(());
            }
        }
    }
}
