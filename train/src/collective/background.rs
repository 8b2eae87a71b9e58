//! Collectives in the background: a [`Communicator`] moved onto a thread of its own,
//! which runs the collectives handed to it one after another, in the order they were
//! handed, while the caller goes on computing. This is what bucketing needs: the
//! gradients of the last layers are reduced while the first layers' are computed.
//!
//! Every rank hands over the same collectives in the same order, as with a
//! communicator used directly; each call returns a [`Pending`] to wait on.
//!
//! ```
//! use prism_train::collective::{Background, Communicator, ReduceOp};
//! let ranks: Vec<_> = (0..2)
//!     .map(|rank| std::thread::spawn(move || {
//!         let comm = Communicator::shared_memory("background-doc", rank, 2).unwrap();
//!         let bg = Background::start(comm).unwrap();
//!         let first = bg.all_reduce(vec![1.0f32; 3], ReduceOp::Sum);   // both queued,
//!         let second = bg.all_reduce(vec![rank as f64], ReduceOp::Sum); // run in order
//!         (first.wait().unwrap(), second.wait().unwrap())
//!     }))
//!     .collect();
//! for r in ranks {
//!     assert_eq!(r.join().unwrap(), (vec![2.0; 3], vec![1.0]));
//! }
//! ```

use std::sync::mpsc::{channel, sync_channel, Receiver, Sender};
use std::thread::JoinHandle;

use super::{Communicator, Element, ReduceOp};
use crate::error::{Result, TrainError};

type Job = Box<dyn FnOnce(&mut Communicator) + Send>;

/// A communicator on a thread of its own; see the module's documentation.
pub struct Background {
    rank: usize,
    world: usize,
    jobs: Option<Sender<Job>>,
    thread: Option<JoinHandle<Communicator>>,
}

/// A collective handed to a [`Background`], to wait on for its result.
#[must_use = "a collective's result is only known by waiting on it"]
pub struct Pending<R> {
    result: Receiver<Result<R>>,
}

impl<R> Pending<R> {
    /// Waits for the collective; its result (the reduced buffer, say).
    pub fn wait(self) -> Result<R> {
        self.result.recv().unwrap_or_else(|_| {
            Err(TrainError::PeerDied(
                "the communicator's thread ended before this collective ran".into(),
            ))
        })
    }
}

impl Background {
    /// Moves `comm` onto a thread of its own.
    pub fn start(comm: Communicator) -> Result<Background> {
        let (rank, world) = (comm.rank(), comm.world());
        let (jobs, queue) = channel::<Job>();
        let thread = std::thread::Builder::new()
            .name(format!("prism-train-comm-{rank}"))
            .spawn(move || {
                let mut comm = comm;
                for job in queue {
                    job(&mut comm);
                }
                comm
            })
            .map_err(|e| TrainError::Io(format!("cannot start the communicator's thread: {e}")))?;
        Ok(Background {
            rank,
            world,
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// This end's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of ranks.
    pub fn world(&self) -> usize {
        self.world
    }

    /// Hands `f` to the communicator's thread, after everything handed before.
    pub fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Communicator) -> Result<R> + Send + 'static,
    ) -> Pending<R> {
        let (done, result) = sync_channel(1);
        let job: Job = Box::new(move |comm| {
            let _ = done.send(f(comm));
        });
        if let Some(jobs) = &self.jobs {
            // If the thread is gone, `done` is dropped with the job and `wait` says so.
            let _ = jobs.send(job);
        }
        Pending { result }
    }

    /// [`Communicator::all_reduce`] of `buf`, in the background: the reduced buffer.
    pub fn all_reduce<T: Element>(&self, buf: Vec<T>, op: ReduceOp) -> Pending<Vec<T>> {
        self.run(move |comm| {
            let mut buf = buf;
            comm.all_reduce(&mut buf, op).map(|()| buf)
        })
    }

    /// Waits for everything handed over and takes the communicator back.
    pub fn finish(mut self) -> Result<Communicator> {
        self.jobs = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(comm)) => Ok(comm),
            _ => Err(TrainError::PeerDied(
                "the communicator's thread panicked".into(),
            )),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for Background {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Background(rank {} of {})", self.rank, self.world)
    }
}

impl<R> std::fmt::Debug for Pending<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pending")
    }
}
