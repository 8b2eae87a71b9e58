//! The models' gradients against central finite differences of their losses.

use ndarray::Array2;
use prism_train::model::{sgd_step, Linear, Model, Softmax};

fn batch(n: usize, d: usize, seed: u32) -> Array2<f32> {
    Array2::from_shape_fn((n, d), |(i, j)| {
        (((i * 31 + j * 17 + seed as usize * 7) % 23) as f32 - 11.0) / 7.0
    })
}

fn check<M: Model + Clone>(model: &M, x: &Array2<f32>, y: &M::Target) {
    let mut grads = vec![0.0; model.params().len()];
    model.loss_grad(x.view(), y, &mut grads);
    // Small enough not to step over a ReLU's kink, large for f32 rounding.
    let eps = 2e-3f32;
    for (i, grad) in grads.iter().enumerate() {
        let (mut up, mut down) = (model.clone(), model.clone());
        up.params_mut()[i] += eps;
        down.params_mut()[i] -= eps;
        let numeric = (up.loss(x.view(), y) - down.loss(x.view(), y)) / (2.0 * eps);
        let tolerance = 2e-3 + 2e-2 * numeric.abs();
        assert!(
            (grad - numeric).abs() <= tolerance,
            "parameter {i}: gradient {grad} vs finite difference {numeric}"
        );
    }
}

#[test]
fn linear_regression_gradients_match_finite_differences() {
    let x = batch(9, 4, 1);
    let y: Vec<f32> = batch(9, 3, 2).iter().copied().collect();
    let mut m = Linear::new(4, 3, 7);
    // Biases away from zero, so their gradients are tested off the starting point.
    let n = m.params().len();
    m.params_mut()[n - 3..].copy_from_slice(&[0.3, -0.2, 0.1]);
    check(&m, &x, &y[..]);
}

#[test]
fn softmax_regression_gradients_match_finite_differences() {
    let x = batch(11, 5, 3);
    let y: Vec<u32> = (0..11).map(|i| (i * 7 % 4) as u32).collect();
    let mut m = Softmax::new(5, 4, 9);
    let n = m.params().len();
    m.params_mut()[n - 4..].copy_from_slice(&[0.5, -0.5, 0.2, 0.0]);
    check(&m, &x, &y[..]);
}

#[test]
fn softmax_regression_learns_a_separable_set() {
    // The class is the index of the largest of the first three features.
    let x = batch(120, 6, 5);
    let y: Vec<u32> = x
        .rows()
        .into_iter()
        .map(|r| (0..3).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap() as u32)
        .collect();
    let mut m = Softmax::new(6, 3, 1);
    let mut g = vec![0.0; m.params().len()];
    let first = m.loss(x.view(), &y);
    for _ in 0..500 {
        m.loss_grad(x.view(), &y, &mut g);
        sgd_step(m.params_mut(), &g, 0.5);
    }
    let right = m
        .predict(x.view())
        .iter()
        .zip(&y)
        .filter(|(p, t)| p == t)
        .count();
    assert!(m.loss(x.view(), &y) < first / 4.0);
    assert!(right >= 110, "{right} of 120 right");
}

#[test]
fn the_same_seed_gives_every_rank_the_same_model() {
    assert_eq!(Linear::new(10, 1, 3), Linear::new(10, 1, 3));
    assert_ne!(Linear::new(10, 1, 3), Linear::new(10, 1, 4));
    let w = Linear::new(10, 1, 3);
    let bound = 1.0 / 10f32.sqrt();
    assert!(w.params()[..10].iter().all(|p| p.abs() < bound));
}

#[test]
fn mlp_gradients_match_finite_differences() {
    let x = batch(7, 5, 4);
    let y: Vec<u32> = (0..7).map(|i| (i * 5 % 3) as u32).collect();
    let mut m = prism_train::model::Mlp::new(&[5, 6, 4, 3], 2);
    // Nonzero biases, so that hidden units sit on both sides of the ReLU.
    let n = m.params().len();
    for (i, p) in m.params_mut().iter_mut().enumerate().skip(n - 3) {
        *p = 0.1 * i as f32 % 0.7;
    }
    check(&m, &x, &y[..]);
}

/// The bucketed backward pass gives the same gradient as the whole one, hands every
/// parameter's gradient over exactly once, last layer first, and each part is final
/// when handed over.
#[test]
fn mlp_buckets_cover_the_gradient_once_last_layer_first() {
    let m = prism_train::model::Mlp::new(&[5, 7, 4, 3], 11);
    let x = batch(9, 5, 4);
    let y: Vec<u32> = (0..9).map(|i| (i % 3) as u32).collect();
    let mut whole = vec![0.0; m.params().len()];
    let loss = m.loss_grad(x.view(), &y, &mut whole);
    let mut bucketed = vec![0.0; m.params().len()];
    let mut seen = vec![0u32; m.params().len()];
    let mut starts = Vec::new();
    let mut handed = Vec::new();
    let loss_b = m.loss_grad_buckets(x.view(), &y, &mut bucketed, 8, &mut |range, part| {
        for i in range.clone() {
            seen[i] += 1;
        }
        starts.push(range.start);
        handed.push((range, part.to_vec()));
    });
    assert_eq!(loss, loss_b);
    let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(u, v)| (u - v).abs() <= 1e-6);
    assert!(close(&whole, &bucketed), "{whole:?} vs {bucketed:?}");
    assert!(seen.iter().all(|&k| k == 1), "each gradient once: {seen:?}");
    // Parts as handed over are the final gradient.
    for (range, part) in handed {
        assert!(close(&whole[range], &part));
    }
    // Layers: 5x7+7 = 42, 7x4+4 = 32, 4x3+3 = 15; the last layer (from 74) first.
    assert!(
        starts[0] >= 74 && starts.last().copied().unwrap() < 42,
        "{starts:?}"
    );
    assert!(
        starts.len() > 6,
        "small buckets split the layers: {starts:?}"
    );
}
