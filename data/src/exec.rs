//! The streaming executor: read and transform tasks submitted as the consumer pulls,
//! at most a window of them in flight, results taken in order.
//!
//! The window is the backpressure: a consumer that stops pulling stops new tasks, so a
//! pipeline holds at most `window` blocks beyond the one being consumed, whatever the
//! size of its input. A memory budget narrows the window to as many blocks as fit in
//! it, counting the bytes of the Arrow buffers of the largest block seen so far.
//! Every block's operators are fused into the one task that reads
//! (or receives) it.

use std::collections::VecDeque;

use prism::ObjectRef;

use crate::block::Block;
use crate::error::{DataError, Result};
use crate::ops::{required_columns, run_parts, Op, Output, Sink};
use crate::source::Unit;

/// Reads `unit`, runs `ops` on it, and hands the result to `sink`. A task.
#[prism::remote]
pub fn read_block(unit: Unit, ops: &[Op], sink: Sink) -> Result<Done> {
    timed(|| {
        let (schema, batches) = unit.read(
            required_columns(ops, &sink).as_deref(),
            &crate::prune::leading_filters(ops),
        )?;
        run_parts(ops, &sink, schema, batches)
    })
}

/// Runs `ops` on a block already in the object store, and hands the result to `sink`.
/// A task.
#[prism::remote]
pub fn transform_block(block: &Block, ops: &[Op], sink: Sink) -> Result<Done> {
    timed(|| run_parts(ops, &sink, block.schema(), vec![block.0.clone()]))
}

/// A task's output, with the time the task took to make it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Done {
    /// The output.
    pub output: Output,
    /// How long the task ran, in microseconds.
    pub micros: u64,
}

/// The output of `f`, timed.
pub(crate) fn timed(f: impl FnOnce() -> Result<Output>) -> Result<Done> {
    let start = std::time::Instant::now();
    let output = f()?;
    Ok(Done {
        output,
        micros: start.elapsed().as_micros() as u64,
    })
}

/// What must stay alive while a block is used in this process: the result of the task
/// that put it into the store where it ran (a ref made in a task reads as long as the
/// result it came in is alive).
#[derive(Clone, Default)]
pub struct Keep {
    _held: Option<std::sync::Arc<dyn std::any::Any + Send + Sync>>,
}

impl Keep {
    /// Keeps `what` alive.
    pub(crate) fn new(what: impl std::any::Any + Send + Sync) -> Keep {
        Keep {
            _held: Some(std::sync::Arc::new(what)),
        }
    }
}

impl std::fmt::Debug for Keep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keep")
    }
}

/// A remote function's options holding the CPUs and GPUs asked, if any (each function
/// has its own options type).
macro_rules! with_resources {
    ($options:expr, $resources:expr) => {
        match $resources {
            Some((cpus, gpus)) => $options.num_cpus(cpus).num_gpus(gpus),
            None => $options,
        }
    };
}

/// Where a task's block comes from.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub(crate) enum Input {
    /// Read from a source, on this node if one is named (the nodes that see its files).
    Unit(Unit, Option<String>),
    /// A block in the object store.
    Block(ObjectRef<Block>, #[serde(skip)] Keep),
    /// The pieces an exchange gathers into one block.
    Reduce(crate::exchange::ReduceUnit),
}

/// How many tasks a stream keeps in flight by default: two per CPU of the runtime.
pub(crate) fn default_window() -> usize {
    let cpus = prism::cluster_resources()
        .ok()
        .and_then(|r| r.get("CPU").copied())
        .unwrap_or(1.0);
    ((cpus * 2.0) as usize).max(2)
}

/// The memory budget of a stage when none is set: half of the object store's cap.
pub(crate) fn default_budget() -> u64 {
    prism::store_stats().map_or(u64::MAX, |s| s.capacity / 2)
}

/// The outputs of one stage's tasks, in input order.
pub(crate) struct TaskStream {
    inputs: Box<dyn Iterator<Item = Result<Input>> + Send>,
    ops: ObjectRef<Vec<Op>>,
    describe: String,
    sink: Sink,
    next_index: usize,
    window: usize,
    /// Bytes the blocks in flight may hold.
    budget: u64,
    /// One task at a time until a block's size is known (for a budget the user set).
    cautious: bool,
    /// The largest block seen, in bytes of Arrow buffers.
    largest: u64,
    /// The outputs asked for, each with the pool actor computing it (if a pool stage).
    pending: VecDeque<(Option<usize>, ObjectRef<Result<Done>>, Keep)>,
    stats: crate::stats::StageRecorder,
    /// The actors of a pool stage.
    pool: Option<crate::pool::Pool>,
    /// The CPUs and GPUs each task holds, if not one CPU.
    resources: Option<(f64, f64)>,
    done: bool,
}

/// What one stage's stream runs, and how much of it at once.
pub(crate) struct StreamSpec<'a> {
    /// The operators of every task.
    pub ops: &'a [Op],
    /// What every task ends in.
    pub sink: Sink,
    /// Tasks in flight at most.
    pub window: usize,
    /// Bytes of blocks in flight at most (set by the user; else a default share).
    pub budget: Option<u64>,
    /// The actor pool the stage runs in, if any.
    pub pool: Option<crate::pool::PoolSpec>,
    /// The CPUs and GPUs each task holds, if not one CPU.
    pub resources: Option<(f64, f64)>,
    /// The all-to-all step that made the stage's inputs, if any (for its name).
    pub exchange: Option<&'a crate::exchange::Exchange>,
    /// The number of inputs, if known (for the progress bar).
    pub total: Option<u64>,
}

impl TaskStream {
    pub(crate) fn new(
        inputs: Box<dyn Iterator<Item = Result<Input>> + Send>,
        spec: StreamSpec<'_>,
        recorder: &crate::stats::Recorder,
    ) -> TaskStream {
        let StreamSpec {
            ops,
            sink,
            window,
            budget,
            pool,
            resources,
            exchange,
            total,
        } = spec;
        let describe = if let Some(p) = &pool {
            let mut parts = vec![format!(
                "map_batches({})",
                p.name.rsplit("::").next().unwrap_or(&p.name)
            )];
            parts.extend(ops.iter().map(Op::describe));
            parts.join(" -> ")
        } else if ops.is_empty() {
            "read".to_string()
        } else {
            ops.iter()
                .map(Op::describe)
                .collect::<Vec<_>>()
                .join(" -> ")
        };
        let describe = match exchange {
            Some(x) if ops.is_empty() => x.describe(),
            Some(x) => format!("{} -> {describe}", x.describe()),
            None => describe,
        };
        let stats = recorder.stage(&describe, total);
        TaskStream {
            stats,
            inputs,
            ops: prism::put(ops.to_vec()),
            describe,
            sink,
            next_index: 0,
            window: window.max(1),
            budget: budget.unwrap_or_else(default_budget),
            cautious: budget.is_some(),
            largest: 0,
            pending: VecDeque::new(),
            pool: pool.map(crate::pool::Pool::new),
            resources,
            done: false,
        }
    }

    /// The tasks that may be in flight: the window, fewer if the budget holds fewer of
    /// the largest block seen so far (but always one).
    fn room(&self) -> usize {
        if let Some(fit) = self.budget.checked_div(self.largest) {
            self.window.min(fit.max(1) as usize)
        } else if self.cautious {
            // Until a block is seen its size is unknown: one at a time.
            1
        } else {
            self.window
        }
    }

    fn fill(&mut self) -> Result<()> {
        while !self.done && self.pending.len() < self.room() {
            match self.inputs.next() {
                None => self.done = true,
                Some(input) => {
                    let sink = self.sink.for_block(self.next_index);
                    self.next_index += 1;
                    let entry = match (input?, &mut self.pool) {
                        (Input::Block(block, keep), Some(pool)) => {
                            let (i, r) = pool.submit(&block, &self.ops, sink);
                            (Some(i), r, keep)
                        }
                        (Input::Unit(..) | Input::Reduce(_), Some(_)) => {
                            // A pool stage follows a task stage: its inputs are blocks.
                            return Err(DataError::Invalid(
                                "a pool stage was given a read unit".into(),
                            ));
                        }
                        (Input::Reduce(unit), None) => {
                            let keep = unit.keep.clone();
                            (
                                None,
                                with_resources!(
                                    crate::exchange::reduce_block::options(),
                                    self.resources
                                )
                                .remote(unit, &self.ops, sink),
                                keep,
                            )
                        }
                        (Input::Unit(unit, node), None) => {
                            // Reads spread over the nodes, or go where their files are.
                            let strategy = match node {
                                Some(node_id) => prism::Strategy::NodeAffinity {
                                    node_id,
                                    soft: false,
                                },
                                None => prism::Strategy::Spread,
                            };
                            (
                                None,
                                with_resources!(read_block::options(), self.resources)
                                    .scheduling(strategy)
                                    .remote(unit, &self.ops, sink),
                                Keep::default(),
                            )
                        }
                        (Input::Block(block, keep), None) => (
                            None,
                            with_resources!(transform_block::options(), self.resources)
                                .remote(&block, &self.ops, sink),
                            keep,
                        ),
                    };
                    self.stats.submitted();
                    self.pending.push_back(entry);
                }
            }
        }
        Ok(())
    }
}

impl Iterator for TaskStream {
    type Item = Result<Output>;

    fn next(&mut self) -> Option<Result<Output>> {
        if let Err(e) = self.fill() {
            self.done = true;
            self.pending.clear();
            return Some(Err(e));
        }
        let Some((actor, r, _keep)) = self.pending.pop_front() else {
            self.stats.finish();
            return None;
        };
        let answer = prism::get_arc(&r);
        if let (Some(i), Some(pool)) = (actor, &mut self.pool) {
            pool.done(i);
        }
        let out = match answer {
            Ok(done) => match &*done {
                Ok(d) => {
                    let (rows, bytes) = d.output.size();
                    self.stats.taken(
                        self.next_index,
                        rows,
                        bytes,
                        std::time::Duration::from_micros(d.micros),
                    );
                    self.largest = self.largest.max(bytes);
                    let mut out = d.output.clone();
                    if let Output::Stored { keep, .. } = &mut out {
                        // The block was put where the task ran: its result keeps it.
                        *keep = Keep::new(r.clone());
                    }
                    Ok(out)
                }
                Err(e) => Err(e.clone()),
            },
            Err(prism::Error::TaskFailed { message, .. }) => Err(DataError::Operator {
                operator: self.describe.clone(),
                message,
            }),
            Err(e) => Err(e.into()),
        };
        if out.is_err() {
            // The first failure ends the stream; what is in flight is dropped.
            self.done = true;
            self.pending.clear();
        }
        Some(out)
    }
}

/// The blocks of `outputs`, at most `limit` rows in all.
pub(crate) struct Limited<I> {
    pub inner: I,
    pub remaining: u64,
}

impl<I: Iterator<Item = Result<Output>>> Iterator for Limited<I> {
    type Item = Result<Block>;

    fn next(&mut self) -> Option<Result<Block>> {
        if self.remaining == 0 {
            return None;
        }
        match self.inner.next()? {
            Ok(Output::Block(b)) => {
                let rows = b.num_rows() as u64;
                if rows <= self.remaining {
                    self.remaining -= rows;
                    Some(Ok(b))
                } else {
                    let keep = self.remaining as usize;
                    self.remaining = 0;
                    Some(Ok(Block(b.0.slice(0, keep))))
                }
            }
            Ok(_) => Some(Err(DataError::Invalid(
                "a limited stage returned no block".into(),
            ))),
            Err(e) => Some(Err(e)),
        }
    }
}

/// Blocks of `outputs` that are all blocks.
pub(crate) fn blocks(
    outputs: impl Iterator<Item = Result<Output>>,
) -> impl Iterator<Item = Result<Block>> {
    outputs.map(|o| match o? {
        Output::Block(b) => Ok(b),
        _ => Err(DataError::Invalid("a stage returned no block".into())),
    })
}

/// Shares an iterator's items with a thread-safe owner.
pub(crate) type BlockIter = Box<dyn Iterator<Item = Result<Block>> + Send>;

/// A stream of blocks kept in the object store, with their rows and schemas.
pub(crate) type StoredIter = Box<dyn Iterator<Item = Result<Stored>> + Send>;

/// A block in the object store, with its rows, schema and what keeps it there.
#[derive(Clone)]
pub(crate) struct Stored {
    pub block: ObjectRef<Block>,
    pub rows: usize,
    pub schema: arrow::datatypes::SchemaRef,
    pub keep: Keep,
}

impl Stored {
    /// The input of a task that takes the block.
    pub(crate) fn input(self) -> Input {
        Input::Block(self.block, self.keep)
    }
}

/// Blocks computed here (a limited stage's), each put into the object store.
pub(crate) fn put_all(blocks: BlockIter) -> StoredIter {
    Box::new(blocks.map(|b| {
        b.map(|b| Stored {
            rows: b.num_rows(),
            schema: b.schema(),
            block: prism::put(b),
            keep: Keep::default(),
        })
    }))
}

/// The blocks a stage ending in [`Sink::Store`] kept.
pub(crate) fn stored(outputs: impl Iterator<Item = Result<Output>> + Send + 'static) -> StoredIter {
    Box::new(outputs.map(|o| match o? {
        Output::Stored {
            block,
            rows,
            schema,
            keep,
            ..
        } => Ok(Stored {
            block,
            rows: rows as usize,
            schema,
            keep,
        }),
        _ => Err(DataError::Invalid("a stage kept no block".into())),
    }))
}
