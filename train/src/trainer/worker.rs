//! The worker side of a run: the [`TrainWorker`] actor each rank lives in, and the
//! [`TrainContext`] its train loop sees.
//!
//! A worker is opened before it runs: [`TrainWorker::open`] binds its ring listener
//! and says which process it lives in, so that the trainer can choose shared memory
//! (every rank in one process) or the TCP ring, and hand each rank its peers.
//! [`TrainWorker::run`] then runs the loop to its end, while the trainer drains rank
//! 0's reports with [`TrainWorker::drain`] beside it (the actor takes three calls at
//! once for this).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{lookup, Metrics};
use crate::collective::{
    Background, Communicator, Element, HostMemory, Pending, ReduceOp, RingListener,
};
use crate::{Result, TrainError};

/// Where a worker lives and where its ring listener waits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Names the worker's process: equal for ranks that share one.
    pub process: String,
    /// The process's id on its machine.
    pub pid: u32,
    /// The node the worker runs on.
    pub node_id: String,
    /// The ring listener's address, `ip:port`.
    pub address: String,
}

/// How a rank meets its peers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Link {
    /// Every rank is in this process: shared memory, in the group of this name.
    Shared(String),
    /// A ring of TCP connections: each rank's listener address, and the group's secret.
    Ring {
        /// `peers[i]` is rank `i`'s listener.
        peers: Vec<String>,
        /// Presented by every connection of the group.
        secret: u64,
        /// Whether the all-reduces may go through the processes' memory.
        host_memory: HostMemory,
    },
}

/// What a rank needs to run its part of an attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSetup {
    /// The train loop's registered name.
    pub name: String,
    /// Its configuration, postcard-encoded.
    #[serde(with = "serde_bytes")]
    pub config: Vec<u8>,
    /// This rank's shard, postcard-encoded.
    #[serde(with = "serde_bytes")]
    pub shard: Vec<u8>,
    /// This rank.
    pub rank: usize,
    /// The number of ranks.
    pub world: usize,
    /// How it meets its peers.
    pub link: Link,
    /// How long a collective waits for its peers.
    pub timeout: Duration,
    /// The checkpoint to resume from, and the iterations reported when it was made.
    pub resume: Option<(usize, serde_bytes::ByteBuf)>,
    /// Which attempt of the run this is, from 0.
    pub attempt: u32,
}

/// A report of rank 0, on its way to the trainer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The iterations reported so far, this one included.
    pub iteration: usize,
    /// Its metrics.
    pub metrics: Metrics,
    /// Its checkpoint, if it made one.
    pub checkpoint: Option<serde_bytes::ByteBuf>,
}

/// Names this process among all: its id and a number drawn once per process, so two
/// machines' processes with the same id differ.
fn process_token() -> &'static str {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| format!("{}-{:016x}", std::process::id(), super::random_u64()))
}

/// The IP address the node this process runs on is reached at (loopback embedded).
fn node_ip(node_id: &str) -> Result<String> {
    let nodes = prism::nodes()?;
    let address = nodes
        .iter()
        .find(|n| n.node_id == node_id)
        .map(|n| n.address.clone())
        .unwrap_or_default();
    Ok(match address.rsplit_once(':') {
        Some((ip, _)) if !ip.is_empty() => ip.trim_matches(['[', ']']).to_string(),
        _ => "127.0.0.1".to_string(),
    })
}

/// The actor a rank of a run lives in; made by the [`Trainer`](super::Trainer).
#[prism::actor]
pub struct TrainWorker {
    listener: Mutex<Option<RingListener>>,
    outbox: Arc<Mutex<Vec<Report>>>,
    stop: Arc<AtomicBool>,
}

#[prism::actor]
impl TrainWorker {
    /// A worker with nothing to do yet.
    pub fn new() -> Self {
        TrainWorker {
            listener: Mutex::new(None),
            outbox: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Binds this worker's ring listener on its node's address and says where it is.
    pub fn open(&self) -> Result<Endpoint> {
        let context = prism::context()?;
        let listener = RingListener::bind(&node_ip(&context.node_id)?)?;
        let address = listener.address()?;
        *self.listener.lock().unwrap_or_else(|e| e.into_inner()) = Some(listener);
        Ok(Endpoint {
            process: process_token().to_string(),
            pid: context.pid,
            node_id: context.node_id,
            address,
        })
    }

    /// Runs the train loop of `setup` as its rank, to the loop's end.
    pub fn run(&self, setup: RunSetup) -> Result<()> {
        let registration = lookup(&setup.name)?;
        let comm = match &setup.link {
            Link::Shared(group) => Communicator::shared_memory(group, setup.rank, setup.world)?,
            Link::Ring {
                peers,
                secret,
                host_memory,
            } => {
                let listener = self
                    .listener
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                    .ok_or_else(|| {
                        TrainError::Config("the worker ran before it was opened".into())
                    })?;
                Communicator::tcp_with(
                    setup.rank,
                    listener,
                    peers,
                    *secret,
                    setup.timeout,
                    *host_memory,
                )?
            }
        };
        let cpus = prism::context()?
            .resources
            .get("CPU")
            .copied()
            .unwrap_or(1.0);
        let (start, checkpoint) = match setup.resume {
            Some((iteration, bytes)) => (iteration, Some(bytes.into_vec())),
            None => (0, None),
        };
        let mut ctx = TrainContext {
            rank: setup.rank,
            world: setup.world,
            transport: comm.transport(),
            comm: Comms::Direct(comm),
            cpus,
            attempt: setup.attempt,
            start,
            reported: start,
            checkpoint,
            outbox: (setup.rank == 0).then(|| self.outbox.clone()),
            stop: self.stop.clone(),
        };
        (registration.run)(&mut ctx, &setup.config, &setup.shard)
    }

    /// Rank 0's reports since the last drain, oldest first.
    pub fn drain(&self) -> Vec<Report> {
        std::mem::take(&mut *self.outbox.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Tells the loop to stop: its next report fails with [`TrainError::Stopped`].
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// What a rank's train loop sees: its rank among the world, the collectives among the
/// ranks, where to resume from, and where to report to.
///
/// A loop resumes from [`TrainContext::checkpoint`] when it has one (after a worker
/// failed, or when a run is restored) and counts its epochs on from
/// [`TrainContext::start_epoch`]; each call of [`TrainContext::report`] is one epoch
/// (one "training iteration") of the run's history.
pub struct TrainContext {
    transport: &'static str,
    rank: usize,
    world: usize,
    comm: Comms,
    cpus: f64,
    attempt: u32,
    start: usize,
    reported: usize,
    checkpoint: Option<Vec<u8>>,
    /// Rank 0's reports go here; the others' are not kept.
    outbox: Option<Arc<Mutex<Vec<Report>>>>,
    stop: Arc<AtomicBool>,
}

impl TrainContext {
    /// This worker's rank, `0..world_size()`.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of workers.
    pub fn world_size(&self) -> usize {
        self.world
    }

    /// What carries this run's collectives; see [`Communicator::transport`].
    pub fn transport(&self) -> &'static str {
        self.transport
    }

    /// The CPUs this worker holds: as many threads as it should compute on.
    pub fn cpus(&self) -> f64 {
        self.cpus
    }

    /// Which attempt of the run this is: 0, then one more after each restart.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The epochs already done: the iterations reported when the checkpoint this
    /// attempt resumes from was made, 0 on a fresh run.
    pub fn start_epoch(&self) -> usize {
        self.start
    }

    /// The bytes of the checkpoint to resume from, if any.
    pub fn checkpoint(&self) -> Option<&[u8]> {
        self.checkpoint.as_deref()
    }

    /// Ends an epoch: its metrics and, if given, a checkpoint of the model to resume
    /// from. Rank 0's reports make the run's history and checkpoints; every rank
    /// should report alike, the others' are dropped. Returns at once (the checkpoint
    /// is written by the trainer while the loop goes on), or fails with
    /// [`TrainError::Stopped`] once the trainer has stopped this attempt.
    pub fn report<K: Into<String>>(
        &mut self,
        metrics: impl IntoIterator<Item = (K, f64)>,
        checkpoint: Option<Vec<u8>>,
    ) -> Result<()> {
        if self.stop.load(Ordering::SeqCst) {
            return Err(TrainError::Stopped);
        }
        self.reported += 1;
        if let Some(outbox) = &self.outbox {
            let report = Report {
                iteration: self.reported,
                metrics: metrics.into_iter().map(|(k, v)| (k.into(), v)).collect(),
                checkpoint: checkpoint.map(serde_bytes::ByteBuf::from),
            };
            outbox
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(report);
        }
        Ok(())
    }

    /// Reduces `buf` over all ranks, in place on every rank
    /// ([`Communicator::all_reduce`]); on an error `buf` keeps what it held.
    pub fn all_reduce<T: Element>(&mut self, buf: &mut Vec<T>, op: ReduceOp) -> Result<()> {
        match &mut self.comm {
            Comms::Direct(c) => c.all_reduce(buf, op),
            Comms::Background(b) => {
                let mut moved = std::mem::take(buf);
                let (back, done) = b
                    .run(move |c| {
                        let done = c.all_reduce(&mut moved, op);
                        Ok((moved, done))
                    })
                    .wait()?;
                *buf = back;
                done
            }
            Comms::Moving => Err(TrainError::PeerDied("the communicator was lost".into())),
        }
    }

    /// Starts reducing `buf` over all ranks on the communicator's thread and returns at
    /// once: for bucketing, the gradients of one layer reduced while the next layer's
    /// are computed. Collectives run in the order they were called, the waited and the
    /// unwaited alike, on every rank.
    pub fn all_reduce_async<T: Element>(
        &mut self,
        buf: Vec<T>,
        op: ReduceOp,
    ) -> Result<Pending<Vec<T>>> {
        Ok(self.background()?.all_reduce(buf, op))
    }

    /// Gives every rank `root`'s `buf` ([`Communicator::broadcast`]).
    pub fn broadcast<T: Element>(&mut self, buf: &mut Vec<T>, root: usize) -> Result<()> {
        self.direct()?.broadcast(buf, root)
    }

    /// Every rank's `part`, in rank order ([`Communicator::all_gather`]).
    pub fn all_gather<T: Element>(&mut self, part: &[T]) -> Result<Vec<Vec<T>>> {
        self.direct()?.all_gather(part)
    }

    /// Returns once every rank has called it ([`Communicator::barrier`]).
    pub fn barrier(&mut self) -> Result<()> {
        self.direct()?.barrier()
    }

    /// The communicator itself, for collectives this context does not wrap (after
    /// the background collectives handed over so far have run).
    pub fn communicator(&mut self) -> Result<&mut Communicator> {
        self.direct()
    }

    fn direct(&mut self) -> Result<&mut Communicator> {
        if let Comms::Background(_) = self.comm {
            let Comms::Background(b) = std::mem::replace(&mut self.comm, Comms::Moving) else {
                unreachable!("matched above");
            };
            self.comm = Comms::Direct(b.finish()?);
        }
        match &mut self.comm {
            Comms::Direct(c) => Ok(c),
            _ => Err(TrainError::PeerDied("the communicator was lost".into())),
        }
    }

    fn background(&mut self) -> Result<&Background> {
        if let Comms::Direct(_) = self.comm {
            let Comms::Direct(c) = std::mem::replace(&mut self.comm, Comms::Moving) else {
                unreachable!("matched above");
            };
            self.comm = Comms::Background(Background::start(c)?);
        }
        match &self.comm {
            Comms::Background(b) => Ok(b),
            _ => Err(TrainError::PeerDied("the communicator was lost".into())),
        }
    }
}

/// Where a context's communicator is: in the loop's hands, or on its own thread once
/// a collective ran in the background.
enum Comms {
    Direct(Communicator),
    Background(Background),
    /// Between the two, or lost when the move failed.
    Moving,
}
