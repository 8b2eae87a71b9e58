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
pub fn read_block(unit: Unit, ops: &[Op], sink: Sink) -> Result<Output> {
    let (schema, batches) = unit.read(
        required_columns(ops, &sink).as_deref(),
        &crate::prune::leading_filters(ops),
    )?;
    run_parts(ops, &sink, schema, batches)
}

/// Runs `ops` on a block already in the object store, and hands the result to `sink`.
/// A task.
#[prism::remote]
pub fn transform_block(block: &Block, ops: &[Op], sink: Sink) -> Result<Output> {
    run_parts(ops, &sink, block.schema(), vec![block.0.clone()])
}

/// Where a task's block comes from.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub(crate) enum Input {
    /// Read from a source.
    Unit(Unit),
    /// A block in the object store.
    Block(ObjectRef<Block>),
}

/// How many tasks a stream keeps in flight by default: two per CPU of the runtime.
pub(crate) fn default_window() -> usize {
    let cpus = prism::cluster_resources()
        .ok()
        .and_then(|r| r.get("CPU").copied())
        .unwrap_or(1.0);
    ((cpus * 2.0) as usize).max(2)
}

/// The outputs of one stage's tasks, in input order.
pub(crate) struct TaskStream {
    inputs: Box<dyn Iterator<Item = Result<Input>> + Send>,
    ops: ObjectRef<Vec<Op>>,
    describe: String,
    sink: Sink,
    next_index: usize,
    window: usize,
    /// Bytes the blocks in flight may hold, if bounded.
    budget: Option<u64>,
    /// The largest block seen, in bytes of Arrow buffers.
    largest: u64,
    /// The outputs asked for, each with the pool actor computing it (if a pool stage).
    pending: VecDeque<(Option<usize>, ObjectRef<Result<Output>>)>,
    /// The actors of a pool stage.
    pool: Option<crate::pool::Pool>,
    done: bool,
}

impl TaskStream {
    pub(crate) fn new(
        inputs: Box<dyn Iterator<Item = Result<Input>> + Send>,
        ops: &[Op],
        sink: Sink,
        window: usize,
        budget: Option<u64>,
        pool: Option<crate::pool::PoolSpec>,
    ) -> TaskStream {
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
        TaskStream {
            inputs,
            ops: prism::put(ops.to_vec()),
            describe,
            sink,
            next_index: 0,
            window: window.max(1),
            budget,
            largest: 0,
            pending: VecDeque::new(),
            pool: pool.map(crate::pool::Pool::new),
            done: false,
        }
    }

    /// The tasks that may be in flight: the window, fewer if the budget holds fewer of
    /// the largest block seen so far (but always one).
    fn room(&self) -> usize {
        match self.budget {
            Some(b) if self.largest > 0 => self.window.min((b / self.largest).max(1) as usize),
            // Until a block is seen its size is unknown: one at a time.
            Some(_) => 1,
            None => self.window,
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
                        (Input::Block(block), Some(pool)) => {
                            let (i, r) = pool.submit(&block, &self.ops, sink);
                            (Some(i), r)
                        }
                        (Input::Unit(unit), Some(_)) => {
                            // A pool stage follows a task stage: its inputs are blocks.
                            let _ = unit;
                            return Err(DataError::Invalid(
                                "a pool stage was given a read unit".into(),
                            ));
                        }
                        (Input::Unit(unit), None) => {
                            (None, read_block::remote(unit, &self.ops, sink))
                        }
                        (Input::Block(block), None) => {
                            (None, transform_block::remote(&block, &self.ops, sink))
                        }
                    };
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
        let (actor, r) = self.pending.pop_front()?;
        let answer = prism::get_arc(&r);
        if let (Some(i), Some(pool)) = (actor, &mut self.pool) {
            pool.done(i);
        }
        let out = match answer {
            Ok(out) => (*out).clone(),
            Err(prism::Error::TaskFailed { message, .. }) => Err(DataError::Operator {
                operator: self.describe.clone(),
                message,
            }),
            Err(e) => Err(e.into()),
        };
        if let Ok(Output::Block(b)) = &out {
            self.largest = self.largest.max(b.bytes() as u64);
        }
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

/// The inputs of the stage after `blocks`: each block put into the object store.
pub(crate) fn as_inputs(blocks: BlockIter) -> Box<dyn Iterator<Item = Result<Input>> + Send> {
    Box::new(blocks.map(|b| b.map(|b| Input::Block(prism::put(b)))))
}
