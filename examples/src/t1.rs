//! Workload T1 of the shared workload list: a data-parallel MLP on a synthetic
//! classification set, as `../shared/bench/peers/train_peers.py` runs it in PyTorch,
//! DDP and Ray Train.
//!
//! 100,000 samples of 256 standard-normal features; each label is the argmax of a
//! fixed random teacher (256 → 64 tanh → 10). The model is an MLP 256 → 512 ReLU → 10
//! with softmax cross-entropy and plain SGD (rate 0.05), batches of 256 per worker, 4
//! epochs, one thread per worker, each worker on its own half of the data (rows
//! `rank, rank + world, …`, as PyTorch's `DistributedSampler` without shuffling). Each
//! worker makes the data itself from the seed, as the peers' workers do, so only the
//! epochs are timed. The figures are the median seconds per epoch over epochs 2 to 4,
//! samples per second, and the training accuracy on all samples after the last epoch.

use std::time::Instant;

use ndarray::{s, Array2, Axis};
use prism_train::model::{self, sgd_step, Mlp, Model};
use prism_train::{
    GradientBuckets, ReduceOp, RunConfig, ScalingConfig, TrainContext, TrainLoop, Trainer,
};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

/// The features per sample.
pub const FEATURES: usize = 256;
/// The classes.
pub const CLASSES: usize = 10;
/// The model's hidden width.
pub const HIDDEN: usize = 512;

/// T1's knobs; [`T1Config::default`] is the workload as specified.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct T1Config {
    /// Samples in all (split over the workers).
    pub samples: usize,
    /// Epochs.
    pub epochs: usize,
    /// Samples per batch per worker.
    pub batch: usize,
    /// The SGD learning rate.
    pub rate: f32,
    /// Reduce the gradient in buckets of this many values, each while the next is
    /// computed, rather than whole after the backward pass.
    pub bucket: Option<usize>,
}

impl Default for T1Config {
    fn default() -> Self {
        T1Config {
            samples: 100_000,
            epochs: 4,
            batch: 256,
            rate: 0.05,
            bucket: None,
        }
    }
}

/// The data set: `samples × 256` standard-normal features (seed 0) and the teacher's
/// labels (its weights from seed 1).
pub fn data(samples: usize) -> (Array2<f32>, Vec<u32>) {
    let normal = |rows: usize, cols: usize, scale: f32, rng: &mut SmallRng| {
        Array2::from_shape_simple_fn((rows, cols), || {
            let v: f32 = StandardNormal.sample(rng);
            v * scale
        })
    };
    let x = normal(samples, FEATURES, 1.0, &mut SmallRng::seed_from_u64(0));
    let mut teacher = SmallRng::seed_from_u64(1);
    let w1 = normal(FEATURES, 64, 1.0 / (FEATURES as f32).sqrt(), &mut teacher);
    let w2 = normal(64, CLASSES, 1.0 / 8.0, &mut teacher);
    let hidden = x.dot(&w1).mapv(f32::tanh);
    let y = model::argmax_rows(&hidden.dot(&w2));
    (x, y)
}

/// The fraction of `labels` that `model` predicts, scored in blocks.
pub fn accuracy(model: &Mlp, x: &Array2<f32>, labels: &[u32]) -> f64 {
    let mut right = 0;
    for (start, block) in x.axis_chunks_iter(Axis(0), 8192).enumerate() {
        let at = start * 8192;
        let predicted = model.predict(block);
        right += predicted
            .iter()
            .zip(&labels[at..at + block.nrows()])
            .filter(|(p, l)| p == l)
            .count();
    }
    right as f64 / labels.len().max(1) as f64
}

/// T1's train loop: see the module's documentation. Each epoch reports `epoch_s` (the
/// epoch's seconds, the ranks in step at its end), the mean batch `loss` and
/// `allreduce_s` (the seconds rank 0 spent in the all-reduces, waiting for its peer
/// included); the last also `train_acc`. Every epoch leaves a checkpoint of the model.
pub struct T1;

impl TrainLoop for T1 {
    type Config = T1Config;
    type Shard = ();

    fn train(ctx: &mut TrainContext, c: T1Config, _: ()) -> prism_train::Result<()> {
        let (x, y) = data(c.samples);
        let (rank, world) = (ctx.rank(), ctx.world_size());
        let rows: Vec<usize> = (rank..c.samples).step_by(world).collect();
        let xs = x.select(Axis(0), &rows);
        let ys: Vec<u32> = rows.iter().map(|&r| y[r]).collect();
        let mut mlp = Mlp::new(&[FEATURES, HIDDEN, CLASSES], 2);
        if let Some(bytes) = ctx.checkpoint() {
            model::load(&mut mlp, bytes)?;
        }
        let mut grads = vec![0.0f32; mlp.params().len()];
        for epoch in ctx.start_epoch()..c.epochs {
            let started = Instant::now();
            let (mut loss, mut batches) = (0.0, 0);
            let mut reducing = std::time::Duration::ZERO;
            for at in (0..rows.len()).step_by(c.batch.max(1)) {
                let end = (at + c.batch).min(rows.len());
                let (xb, yb) = (xs.slice(s![at..end, ..]), &ys[at..end]);
                batches += 1;
                match c.bucket {
                    Some(size) if world > 1 => {
                        let mut buckets = GradientBuckets::new(size);
                        let mut ready = |range, part: &[f32]| buckets.add(ctx, range, part);
                        loss += mlp.loss_grad_buckets(xb, yb, &mut grads, size, &mut ready) as f64;
                        buckets.finish(ctx, &mut grads)?;
                    }
                    _ => {
                        loss += mlp.loss_grad(xb, yb, &mut grads) as f64;
                        if world > 1 {
                            let t = Instant::now();
                            ctx.all_reduce(&mut grads, ReduceOp::Mean)?;
                            reducing += t.elapsed();
                        }
                    }
                }
                sgd_step(mlp.params_mut(), &grads, c.rate);
            }
            ctx.barrier()?;
            let mut metrics = vec![
                ("epoch_s", started.elapsed().as_secs_f64()),
                ("loss", loss / batches.max(1) as f64),
                ("allreduce_s", reducing.as_secs_f64()),
            ];
            if epoch + 1 == c.epochs && rank == 0 {
                metrics.push(("train_acc", accuracy(&mlp, &x, &y)));
            }
            ctx.report(metrics, Some(model::save(&mlp)))?;
        }
        Ok(())
    }
}
prism_train::register_loop!(T1);

/// What a run of T1 measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct T1Figures {
    /// The workers.
    pub workers: usize,
    /// Each epoch's seconds.
    pub epoch_s: Vec<f64>,
    /// The median over epochs 2 to the last (all of them if fewer than 2).
    pub epoch_s_median: f64,
    /// Samples (all workers') per second at the median epoch.
    pub samples_per_s: f64,
    /// The training accuracy after the last epoch.
    pub train_acc: f64,
    /// The whole `fit`, workers' start and data included.
    pub fit_s: f64,
    /// Rank 0's seconds in all-reduces at the median epoch.
    pub allreduce_s: f64,
}

/// Runs T1 on `workers` workers of one CPU each.
pub fn run(config: &T1Config, workers: usize, run: RunConfig) -> prism_train::Result<T1Figures> {
    let started = Instant::now();
    let result = Trainer::<T1>::new(config.clone(), ScalingConfig::new(workers))
        .run_config(run)
        .fit()?;
    let fit_s = started.elapsed().as_secs_f64();
    let epoch_s: Vec<f64> = result.history.iter().map(|m| m["epoch_s"]).collect();
    let mut timed: Vec<f64> = epoch_s.iter().skip(1).copied().collect();
    if timed.is_empty() {
        timed = epoch_s.clone();
    }
    timed.sort_by(f64::total_cmp);
    let epoch_s_median = timed.get(timed.len() / 2).copied().unwrap_or(f64::NAN);
    let allreduce_s = result
        .history
        .iter()
        .find(|m| m["epoch_s"] == epoch_s_median)
        .map_or(f64::NAN, |m| m["allreduce_s"]);
    Ok(T1Figures {
        workers,
        epoch_s_median,
        samples_per_s: config.samples as f64 / epoch_s_median,
        train_acc: result
            .metrics()
            .get("train_acc")
            .copied()
            .unwrap_or(f64::NAN),
        epoch_s,
        fit_s,
        allreduce_s,
    })
}
