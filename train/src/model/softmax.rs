//! Softmax regression: a linear layer into class scores, with the softmax
//! cross-entropy of the labels.

use ndarray::{Array2, ArrayView2, Axis};

use super::{Affine, Model};

/// Class scores `x W + b`, `W` of `inputs × classes`, trained on the mean softmax
/// cross-entropy of the labels. Parameters: `W` row-major, then `b`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Softmax {
    layer: Affine,
}

/// Turns each row of scores into probabilities in place, and returns the mean
/// cross-entropy of `labels`.
pub(crate) fn softmax_cross_entropy(scores: &mut Array2<f32>, labels: &[u32]) -> f32 {
    let mut total = 0.0f64;
    for (mut row, &label) in scores.axis_iter_mut(Axis(0)).zip(labels) {
        let max = row.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        row.mapv_inplace(|v| (v - max).exp());
        let sum: f32 = row.sum();
        row /= sum;
        total -= (row[label as usize].max(f32::MIN_POSITIVE) as f64).ln();
    }
    (total / labels.len().max(1) as f64) as f32
}

impl Softmax {
    /// A model with weights uniform in ±1/√inputs drawn from `seed`, and zero biases.
    pub fn new(inputs: usize, classes: usize, seed: u64) -> Softmax {
        Softmax {
            layer: Affine::new(inputs, classes, seed),
        }
    }

    /// The class scores of a batch.
    pub fn scores(&self, x: ArrayView2<'_, f32>) -> Array2<f32> {
        self.layer.apply(x)
    }

    /// The most likely class of each row.
    pub fn predict(&self, x: ArrayView2<'_, f32>) -> Vec<u32> {
        argmax_rows(&self.scores(x))
    }
}

/// The index of each row's largest value (the first of equals): the predicted class of
/// each row of scores.
///
/// ```
/// let scores = ndarray::arr2(&[[0.1, 0.7, 0.2], [3.0, -1.0, 3.0]]);
/// assert_eq!(prism_train::model::argmax_rows(&scores), vec![1, 0]);
/// ```
pub fn argmax_rows(scores: &Array2<f32>) -> Vec<u32> {
    scores
        .axis_iter(Axis(0))
        .map(|row| {
            let mut best = 0;
            for (i, v) in row.iter().enumerate() {
                if *v > row[best] {
                    best = i;
                }
            }
            best as u32
        })
        .collect()
}

impl Model for Softmax {
    /// One class label per sample, below `classes`.
    type Target = [u32];

    fn params(&self) -> &[f32] {
        &self.layer.params
    }

    fn params_mut(&mut self) -> &mut [f32] {
        &mut self.layer.params
    }

    fn loss_grad(&self, x: ArrayView2<'_, f32>, y: &[u32], grads: &mut [f32]) -> f32 {
        let (n, c) = (x.nrows(), self.layer.outputs);
        assert_eq!(y.len(), n, "a label per sample");
        assert!(y.iter().all(|&l| (l as usize) < c), "labels below {c}");
        let mut p = self.scores(x);
        let loss = softmax_cross_entropy(&mut p, y);
        // d loss / d scores = (softmax - one-hot) / n.
        for (mut row, &label) in p.axis_iter_mut(Axis(0)).zip(y) {
            row[label as usize] -= 1.0;
        }
        p /= n.max(1) as f32;
        self.layer.backward(x, &p, grads);
        loss
    }
}
