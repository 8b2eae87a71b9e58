//! Gradient buckets: the parts of a gradient gathered as a backward pass makes them
//! final, each bucket handed to the background all-reduce once it is full, so that the
//! last layers' gradients are averaged while the first layers' are still computed.

use std::ops::Range;

use super::TrainContext;
use crate::collective::{Pending, ReduceOp};
use crate::{Result, TrainError};

/// The buckets of one step's gradient; see the module's documentation.
///
/// ```no_run
/// # use prism_train::{TrainContext, model::Mlp, GradientBuckets};
/// # fn step(ctx: &mut TrainContext, mlp: &Mlp, x: ndarray::ArrayView2<f32>, y: &[u32], grads: &mut [f32]) -> prism_train::Result<()> {
/// let mut buckets = GradientBuckets::new(1 << 16);
/// mlp.loss_grad_buckets(x, y, grads, 1 << 16, &mut |range, part| buckets.add(ctx, range, part));
/// buckets.finish(ctx, grads)?; // grads now hold the mean over the ranks
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct GradientBuckets {
    size: usize,
    open: Vec<f32>,
    open_ranges: Vec<Range<usize>>,
    sent: Vec<Sent>,
    error: Option<TrainError>,
}

/// A bucket on its way: the parameters its values are of, in order, and its result.
#[derive(Debug)]
struct Sent {
    ranges: Vec<Range<usize>>,
    reduced: Pending<Vec<f32>>,
}

impl GradientBuckets {
    /// Buckets of at least `size` values (the last may be smaller).
    pub fn new(size: usize) -> GradientBuckets {
        GradientBuckets {
            size: size.max(1),
            open: Vec::new(),
            open_ranges: Vec::new(),
            sent: Vec::new(),
            error: None,
        }
    }

    /// Adds the final gradient `part` of the parameters `range`; a full bucket starts
    /// its all-reduce (mean) at once.
    pub fn add(&mut self, ctx: &mut TrainContext, range: Range<usize>, part: &[f32]) {
        self.open.extend_from_slice(part);
        self.open_ranges.push(range);
        if self.open.len() >= self.size {
            self.flush(ctx);
        }
    }

    fn flush(&mut self, ctx: &mut TrainContext) {
        if self.open_ranges.is_empty() || self.error.is_some() {
            return;
        }
        let values = std::mem::take(&mut self.open);
        match ctx.all_reduce_async(values, ReduceOp::Mean) {
            Ok(reduced) => self.sent.push(Sent {
                ranges: std::mem::take(&mut self.open_ranges),
                reduced,
            }),
            Err(e) => self.error = Some(e),
        }
    }

    /// Sends the last bucket, waits for all of them and writes the averaged gradient
    /// back into `grads`.
    pub fn finish(mut self, ctx: &mut TrainContext, grads: &mut [f32]) -> Result<()> {
        self.flush(ctx);
        if let Some(e) = self.error {
            return Err(e);
        }
        for sent in self.sent {
            let values = sent.reduced.wait()?;
            let mut at = 0;
            for r in sent.ranges {
                let n = r.len();
                grads[r].copy_from_slice(&values[at..at + n]);
                at += n;
            }
        }
        Ok(())
    }
}
