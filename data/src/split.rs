//! `streaming_split(n, equal)`: one dataset consumed by `n` readers at once (trainers,
//! one per worker), each pulling its shard from a coordinator actor that runs the plan.
//!
//! A reader asks the coordinator for its next block; the coordinator pulls from the
//! streaming executor as readers ask, so the pipeline runs at the pace of the readers
//! together, a window of tasks ahead. Without `equal`, a block goes to whichever reader
//! asks first. With `equal`, every block taken from the executor is cut into `n` equal
//! pieces, one queued for each reader (the last `< n` rows of the dataset are dropped),
//! so every shard gets the same number of rows; a reader that runs ahead makes the
//! coordinator queue pieces for the others rather than wait for them, so no shard can
//! block another.

use std::collections::VecDeque;
use std::sync::Mutex;

use arrow::array::RecordBatch;

use crate::block::Block;
use crate::dataset::Dataset;
use crate::error::{DataError, Result};
use crate::ops::{Output, Sink};

type Stream = Box<dyn Iterator<Item = Result<Output>> + Send>;

/// The coordinator of a streaming split: runs the plan, hands blocks to the readers.
#[prism::actor]
pub struct SplitCoordinator {
    dataset: Dataset,
    readers: usize,
    equal: bool,
    state: Mutex<SplitState>,
}

struct SplitState {
    stream: Option<Stream>,
    queues: Vec<VecDeque<Block>>,
    done: bool,
    failed: Option<DataError>,
    dropped: u64,
}

#[prism::actor]
impl SplitCoordinator {
    /// A coordinator of `readers` shards of `dataset`.
    pub fn new(dataset: Dataset, readers: usize, equal: bool) -> Self {
        SplitCoordinator {
            dataset,
            readers,
            equal,
            state: Mutex::new(SplitState {
                stream: None,
                queues: (0..readers).map(|_| VecDeque::new()).collect(),
                done: false,
                failed: None,
                dropped: 0,
            }),
        }
    }

    /// The next block of shard `reader`, `None` when the shard is done.
    pub fn next(&mut self, reader: usize) -> Result<Option<Block>> {
        if reader >= self.readers {
            return Err(DataError::Invalid(format!(
                "no shard {reader} of {}",
                self.readers
            )));
        }
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(e) = &state.failed {
                return Err(e.clone());
            }
            if let Some(b) = state.queues[reader].pop_front() {
                return Ok(Some(b));
            }
            if state.done {
                return Ok(None);
            }
            if state.stream.is_none() {
                state.stream = Some(self.dataset.run(Sink::Collect)?);
            }
            let next = state.stream.as_mut().and_then(|s| s.next());
            match next {
                None => {
                    state.done = true;
                    state.stream = None;
                }
                Some(Err(e)) => {
                    state.failed = Some(e.clone());
                    return Err(e);
                }
                Some(Ok(Output::Block(b))) if b.num_rows() == 0 => {}
                Some(Ok(Output::Block(b))) if !self.equal => return Ok(Some(b)),
                Some(Ok(Output::Block(b))) => {
                    let piece = b.num_rows() / self.readers;
                    for (i, q) in state.queues.iter_mut().enumerate() {
                        if piece > 0 {
                            q.push_back(Block(b.0.slice(i * piece, piece)));
                        }
                    }
                    if piece == 0 {
                        // Fewer rows than readers: carried into no shard, to keep them
                        // equal (only a block this small is affected).
                        state.dropped += b.num_rows() as u64;
                    } else {
                        state.dropped += (b.num_rows() - piece * self.readers) as u64;
                    }
                }
                Some(Ok(_)) => {
                    return Err(DataError::Invalid(
                        "a split's stage returned no block".into(),
                    ))
                }
            }
        }
    }

    /// Rows dropped so far to keep the shards equal.
    pub fn dropped(&self) -> u64 {
        self.state.lock().map_or(0, |s| s.dropped)
    }
}

/// One reader's shard of a [`Dataset::streaming_split`]: an iterator of its batches.
/// It can be sent to a task or an actor (it is a handle on the coordinator and a shard
/// number), and asks for the next block while the current one is consumed.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct DataShard {
    coordinator: SplitCoordinatorHandle,
    reader: usize,
    #[serde(skip)]
    ahead: Option<prism::ObjectRef<Result<Option<Block>>>>,
    #[serde(skip)]
    done: bool,
}

impl DataShard {
    /// The shard's number.
    pub fn index(&self) -> usize {
        self.reader
    }
}

impl Iterator for DataShard {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Result<RecordBatch>> {
        if self.done {
            return None;
        }
        let pending = self
            .ahead
            .take()
            .unwrap_or_else(|| self.coordinator.next(self.reader));
        let answer = prism::get_arc(&pending);
        match answer.as_deref() {
            Ok(Ok(Some(b))) => {
                // Ask for the next while this one is used.
                self.ahead = Some(self.coordinator.next(self.reader));
                Some(Ok(b.0.clone()))
            }
            Ok(Ok(None)) => {
                self.done = true;
                None
            }
            Ok(Err(e)) => {
                self.done = true;
                Some(Err(e.clone()))
            }
            Err(e) => {
                self.done = true;
                Some(Err(DataError::from(e.clone())))
            }
        }
    }
}

impl Dataset {
    /// `n` shards of the dataset for `n` readers at once, computed as they read (see
    /// the module's overview); with `equal`, every shard has the same number of rows.
    ///
    /// ```
    /// prism::init_with(prism::Config::default().num_cpus(2.0))?;
    /// let shards = prism_data::range(10_001).streaming_split(2, true)?;
    /// let rows: Vec<usize> = shards
    ///     .into_iter()
    ///     .map(|s| s.map(|b| b.map(|b| b.num_rows())).sum::<prism_data::Result<usize>>())
    ///     .collect::<prism_data::Result<_>>()?;
    /// assert_eq!(rows, vec![5000, 5000]);
    /// prism::shutdown();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn streaming_split(&self, n: usize, equal: bool) -> Result<Vec<DataShard>> {
        if n == 0 {
            return Err(DataError::Invalid(
                "streaming_split needs at least one shard".into(),
            ));
        }
        let coordinator = SplitCoordinator::options()
            .num_cpus(0.0)
            .remote(self.clone(), n, equal);
        Ok((0..n)
            .map(|reader| DataShard {
                coordinator: coordinator.clone(),
                reader,
                ahead: None,
                done: false,
            })
            .collect())
    }
}
