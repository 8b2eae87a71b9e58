//! The linear regression of the Ray Train seed: PyTorch's `nn.Linear(10, 1)` with MSE
//! and SGD on 1,000 samples of 10 features, here with prism-train's [`Linear`] model.
//! The programs `train_epoch_tasks` (one remote task per epoch), `train_linear`
//! (data-parallel on workers) and `train_fault` (a worker killed mid-run) share it.

use std::path::PathBuf;
use std::time::Duration;

use ndarray::{s, ArrayView2};
use prism_train::model::{self, sgd_step, Linear, Model};
use prism_train::{
    ReduceOp, RunConfig, ScalingConfig, TrainContext, TrainLoop, TrainResult, Trainer,
};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

/// The features per sample.
pub const FEATURES: usize = 10;

/// Samples in rows: `x` is `rows × FEATURES`, row-major.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Samples {
    /// The features.
    pub x: Vec<f32>,
    /// The targets, one per row.
    pub y: Vec<f32>,
}

impl Samples {
    /// `n` samples of standard-normal features and `y = x·w + b + 0.1·noise`, the
    /// weights fixed by the seed.
    pub fn generate(n: usize, seed: u64) -> Samples {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut normal = || -> f32 { StandardNormal.sample(&mut rng) };
        let w: Vec<f32> = (0..FEATURES).map(|_| normal()).collect();
        let b = normal();
        let mut x = Vec::with_capacity(n * FEATURES);
        let mut y = Vec::with_capacity(n);
        for _ in 0..n {
            let row: Vec<f32> = (0..FEATURES).map(|_| normal()).collect();
            y.push(row.iter().zip(&w).map(|(a, b)| a * b).sum::<f32>() + b + 0.1 * normal());
            x.extend(row);
        }
        Samples { x, y }
    }

    /// The rows.
    pub fn len(&self) -> usize {
        self.y.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    /// The features as a matrix.
    pub fn view(&self) -> ArrayView2<'_, f32> {
        ArrayView2::from_shape((self.len(), FEATURES), &self.x).expect("rows of FEATURES")
    }

    /// Rows `rank, rank + world, …`: one worker's part, as PyTorch's
    /// `DistributedSampler` without shuffling takes it. With the batch split evenly,
    /// the workers' batches together are the one-worker run's batches.
    pub fn shard(&self, rank: usize, world: usize) -> Samples {
        let rows: Vec<usize> = (rank..self.len()).step_by(world.max(1)).collect();
        Samples {
            x: rows
                .iter()
                .flat_map(|&r| self.x[r * FEATURES..(r + 1) * FEATURES].iter().copied())
                .collect(),
            y: rows.iter().map(|&r| self.y[r]).collect(),
        }
    }
}

/// One epoch of minibatch SGD over `data` in order; returns the model's new
/// parameters. What the seed's `train_epoch` task does.
pub fn epoch(params: &[f32], data: &Samples, batch: usize, rate: f32) -> Vec<f32> {
    let mut m = Linear::new(FEATURES, 1, 0);
    m.params_mut().copy_from_slice(params);
    let mut grads = vec![0.0; params.len()];
    let x = data.view();
    for at in (0..data.len()).step_by(batch.max(1)) {
        let end = (at + batch).min(data.len());
        m.loss_grad(x.slice(s![at..end, ..]), &data.y[at..end], &mut grads);
        sgd_step(m.params_mut(), &grads, rate);
    }
    m.params().to_vec()
}

/// The mean squared error of the parameters on `data`.
pub fn mse(params: &[f32], data: &Samples) -> f64 {
    let mut m = Linear::new(FEATURES, 1, 0);
    m.params_mut().copy_from_slice(params);
    m.loss(data.view(), &data.y) as f64
}

/// How a data-parallel run of the linear model goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearConfig {
    /// Epochs.
    pub epochs: usize,
    /// Samples per step over all workers (each worker takes its share).
    pub batch: usize,
    /// The SGD learning rate.
    pub rate: f32,
    /// A pause per epoch, so that a program has time to act mid-run.
    pub nap: Duration,
    /// Where each rank writes its process id (`rank<r>.pid`) when it starts.
    pub pid_dir: Option<PathBuf>,
}

impl Default for LinearConfig {
    fn default() -> Self {
        LinearConfig {
            epochs: 20,
            batch: 32,
            rate: 0.05,
            nap: Duration::ZERO,
            pid_dir: None,
        }
    }
}

/// The seed's model trained data-parallel: every step each worker takes the gradient
/// on its share of the batch, the workers average them with an all-reduce, and each
/// takes the same SGD step. Reports the `loss` (MSE over all workers' data) each
/// epoch, with a checkpoint of the weights.
pub struct LinearLoop;

impl TrainLoop for LinearLoop {
    type Config = LinearConfig;
    type Shard = Samples;

    fn train(ctx: &mut TrainContext, c: LinearConfig, data: Samples) -> prism_train::Result<()> {
        if let Some(dir) = &c.pid_dir {
            let path = dir.join(format!("rank{}.pid", ctx.rank()));
            std::fs::write(&path, std::process::id().to_string())
                .map_err(prism_train::TrainError::from_loop)?;
        }
        let mut m = Linear::new(FEATURES, 1, 0);
        if let Some(bytes) = ctx.checkpoint() {
            model::load(&mut m, bytes)?;
        }
        let batch = (c.batch / ctx.world_size()).max(1);
        let mut grads = vec![0.0; m.params().len()];
        let x = data.view();
        for _ in ctx.start_epoch()..c.epochs {
            std::thread::sleep(c.nap);
            for at in (0..data.len()).step_by(batch) {
                let end = (at + batch).min(data.len());
                m.loss_grad(x.slice(s![at..end, ..]), &data.y[at..end], &mut grads);
                ctx.all_reduce(&mut grads, ReduceOp::Mean)?;
                sgd_step(m.params_mut(), &grads, c.rate);
            }
            let mut sse = vec![
                m.loss(x, &data.y) as f64 * data.len() as f64,
                data.len() as f64,
            ];
            ctx.all_reduce(&mut sse, ReduceOp::Sum)?;
            ctx.report([("loss", sse[0] / sse[1])], Some(model::save(&m)))?;
        }
        Ok(())
    }
}
prism_train::register_loop!(LinearLoop);

/// Trains [`LinearLoop`] on `workers` workers, spread over the nodes, each on its
/// [`Samples::shard`] of `data`.
pub fn fit(
    data: &Samples,
    config: &LinearConfig,
    workers: usize,
    run: RunConfig,
) -> prism_train::Result<TrainResult> {
    let shards = (0..workers).map(|r| data.shard(r, workers)).collect();
    let scaling = ScalingConfig::new(workers).strategy(prism::PlacementStrategy::Spread);
    Trainer::<LinearLoop>::new(config.clone(), scaling)
        .shards(shards)?
        .run_config(run)
        .fit()
}
