//! The burn adapter: a module's parameters through checkpoint bytes and back, its
//! gradients averaged over ranks against each rank's own, and a burn model trained
//! data-parallel by the `Trainer` on two workers (embedded, and on a two-node cluster
//! of real processes) ending where one worker ends.

use std::sync::atomic::{AtomicUsize, Ordering};

use prism::testing::NodeSpec;
use prism_train::burn::burn::backend::{Autodiff, NdArray};
use prism_train::burn::burn::nn::{Linear, LinearConfig};
use prism_train::burn::burn::optim::{GradientsParams, Optimizer, SgdConfig};
use prism_train::burn::burn::tensor::{Tensor, TensorData};
use prism_train::burn::{
    all_reduce_grads, broadcast_params, gradients, load, params, save, with_params,
};
use prism_train::{Communicator, RunConfig, ScalingConfig, TrainContext, TrainLoop, Trainer};

type B = Autodiff<NdArray>;

const FEATURES: usize = 4;

/// Rows `rank, rank + world, …` of 200 samples of `y = x·w + 0.5`, as tensors.
fn data(rank: usize, world: usize) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let device = Default::default();
    let rows: Vec<usize> = (rank..200).step_by(world).collect();
    let x: Vec<f32> = rows
        .iter()
        .flat_map(|&r| (0..FEATURES).map(move |j| ((r * 7 + j * 3) % 11) as f32 / 11.0 - 0.5))
        .collect();
    let w = [0.5f32, -1.0, 2.0, 0.25];
    let y: Vec<f32> = x
        .chunks(FEATURES)
        .map(|row| row.iter().zip(w).map(|(a, b)| a * b).sum::<f32>() + 0.5)
        .collect();
    let n = rows.len();
    (
        Tensor::from_data(TensorData::new(x, [n, FEATURES]), &device),
        Tensor::from_data(TensorData::new(y, [n, 1]), &device),
    )
}

fn mse(model: &Linear<B>, x: Tensor<B, 2>, y: Tensor<B, 2>) -> Tensor<B, 1> {
    (model.forward(x) - y).powi_scalar(2).mean()
}

#[test]
fn parameters_go_through_checkpoint_bytes_and_back() {
    let device = Default::default();
    let a: Linear<B> = LinearConfig::new(3, 2).init(&device);
    let b: Linear<B> = LinearConfig::new(3, 2).init(&device);
    assert_ne!(params(&a), params(&b));
    let b = load(b, &save(&a)).unwrap();
    assert_eq!(params(&a), params(&b));
    assert_eq!(params(&b).len(), 3 * 2 + 2);
    // Loaded parameters still take gradients.
    let (x, y) = (
        Tensor::<B, 2>::ones([5, 3], &device),
        Tensor::<B, 2>::zeros([5, 2], &device),
    );
    let loss = (b.forward(x) - y).powi_scalar(2).mean();
    let grads = GradientsParams::from_grads(loss.backward(), &b);
    assert_eq!(gradients(&b, &grads).len(), 8);
    assert!(
        load(b, &[0u8; 12]).is_err(),
        "three f32s for eight parameters"
    );
}

#[test]
fn gradients_are_averaged_over_the_ranks() {
    static GROUP: AtomicUsize = AtomicUsize::new(0);
    let name = format!("burn-{}", GROUP.fetch_add(1, Ordering::Relaxed));
    let ranks: Vec<_> = (0..2)
        .map(|rank| {
            let name = name.clone();
            std::thread::spawn(move || {
                let mut comm = Communicator::shared_memory(&name, rank, 2).unwrap();
                let device = Default::default();
                let model: Linear<B> = LinearConfig::new(FEATURES, 1).init(&device);
                let model = broadcast_params(&mut comm, model).unwrap();
                let (x, y) = data(rank, 2);
                let grads = GradientsParams::from_grads(mse(&model, x, y).backward(), &model);
                let own = gradients(&model, &grads);
                let mean = all_reduce_grads(&mut comm, &model, grads).unwrap();
                (params(&model), own, gradients(&model, &mean))
            })
        })
        .collect();
    let out: Vec<_> = ranks.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(out[0].0, out[1].0, "rank 0's parameters on both");
    for (_, _, mean) in &out {
        for (i, m) in mean.iter().enumerate() {
            let want = (out[0].1[i] + out[1].1[i]) / 2.0;
            assert!((m - want).abs() < 1e-6, "gradient {i}: {m} vs {want}");
        }
    }
}

/// Full-batch gradient descent on a burn `Linear`: each rank its rows, the gradients
/// averaged, burn's SGD taking the step. Reports the MSE over all ranks' rows.
struct BurnFit;

impl TrainLoop for BurnFit {
    type Config = usize;
    type Shard = ();

    fn train(ctx: &mut TrainContext, epochs: usize, _: ()) -> prism_train::Result<()> {
        let device = Default::default();
        let mut model: Linear<B> = LinearConfig::new(FEATURES, 1).init(&device);
        // From zeros, so that runs of different sizes start alike (burn's initialiser
        // draws from one random stream for the whole process).
        model = match ctx.checkpoint() {
            Some(bytes) => load(model, bytes)?,
            None => {
                let zeros = with_params(model, &[0.0; FEATURES + 1])?;
                broadcast_params(ctx.communicator()?, zeros)?
            }
        };
        let mut optim = SgdConfig::new().init();
        let (x, y) = data(ctx.rank(), ctx.world_size());
        for _ in ctx.start_epoch()..epochs {
            let loss = mse(&model, x.clone(), y.clone());
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            let grads = all_reduce_grads(ctx.communicator()?, &model, grads)?;
            model = optim.step(0.2, model, grads);
            let mut total = vec![mse(&model, x.clone(), y.clone()).into_scalar() as f64];
            ctx.all_reduce(&mut total, prism_train::ReduceOp::Mean)?;
            ctx.report([("loss", total[0])], Some(save(&model)))?;
        }
        Ok(())
    }
}
prism_train::register_loop!(BurnFit);

prism::both_modes! {
    /// Two workers (one per node on the cluster) end at the loss one worker ends at:
    /// their averaged gradient is the full batch's.
    fn a_burn_model_trains_data_parallel(session, NodeSpec::cpus(2.0)) {
        let fit = |n: usize| {
            let scaling = ScalingConfig::new(n).strategy(prism::PlacementStrategy::Spread);
            Trainer::<BurnFit>::new(60, scaling)
                .run_config(RunConfig::quiet())
                .fit()
                .unwrap()
        };
        let (one, two) = (fit(1), fit(2));
        let (a, b) = (one.metrics()["loss"], two.metrics()["loss"]);
        let first = one.history[0]["loss"];
        assert!(a < first / 10.0, "it learned: {first} -> {a}");
        assert!((a - b).abs() <= 1e-4 + 1e-3 * a, "one worker {a}, two {b}");
        assert_eq!(two.history.len(), 60);
    }
}
