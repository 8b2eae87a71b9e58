//! A multi-layer perceptron: dense layers with ReLU between them and a softmax
//! cross-entropy on the last, with its own backpropagation.

use ndarray::{Array2, ArrayView2, Axis};

use super::softmax::{argmax_rows, softmax_cross_entropy};
use super::{dense, dense_grads, Affine, Model};

/// Dense layers of the given widths (`[inputs, hidden..., classes]`), ReLU after each
/// but the last, trained on the mean softmax cross-entropy of the labels. Parameters:
/// each layer's `W` (row-major) then `b`, first layer first.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Mlp {
    widths: Vec<usize>,
    params: Vec<f32>,
}

impl Mlp {
    /// A network of `widths` (at least an input and an output width), weights uniform
    /// in ±1/√fan-in drawn from `seed`, zero biases.
    pub fn new(widths: &[usize], seed: u64) -> Mlp {
        assert!(
            widths.len() >= 2,
            "an MLP needs an input and an output width"
        );
        let mut params = Vec::new();
        for (l, pair) in widths.windows(2).enumerate() {
            params.extend(Affine::new(pair[0], pair[1], seed ^ (l as u64) << 32).params);
        }
        Mlp {
            widths: widths.to_vec(),
            params,
        }
    }

    /// Where each layer's parameters start and end, with its widths.
    fn layers(&self) -> Vec<(std::ops::Range<usize>, usize, usize)> {
        let mut at = 0;
        self.widths
            .windows(2)
            .map(|p| {
                let n = p[0] * p[1] + p[1];
                at += n;
                (at - n..at, p[0], p[1])
            })
            .collect()
    }

    /// Each layer's output, after its ReLU for all but the last.
    fn forward(&self, x: ArrayView2<'_, f32>) -> Vec<Array2<f32>> {
        let layers = self.layers();
        let mut outs: Vec<Array2<f32>> = Vec::with_capacity(layers.len());
        for (l, (range, i, o)) in layers.iter().enumerate() {
            let p = &self.params[range.clone()];
            let mut out = match l {
                0 => dense(p, *i, *o, x),
                _ => dense(p, *i, *o, outs[l - 1].view()),
            };
            if l + 1 < layers.len() {
                out.mapv_inplace(|v| v.max(0.0));
            }
            outs.push(out);
        }
        outs
    }

    /// The class scores of a batch.
    pub fn scores(&self, x: ArrayView2<'_, f32>) -> Array2<f32> {
        self.forward(x).pop().expect("at least one layer")
    }

    /// The most likely class of each row.
    pub fn predict(&self, x: ArrayView2<'_, f32>) -> Vec<u32> {
        argmax_rows(&self.scores(x))
    }
}

impl Model for Mlp {
    /// One class label per sample, below the last width.
    type Target = [u32];

    fn params(&self) -> &[f32] {
        &self.params
    }

    fn params_mut(&mut self) -> &mut [f32] {
        &mut self.params
    }

    fn loss_grad(&self, x: ArrayView2<'_, f32>, y: &[u32], grads: &mut [f32]) -> f32 {
        let classes = *self.widths.last().expect("widths");
        assert_eq!(y.len(), x.nrows(), "a label per sample");
        assert!(
            y.iter().all(|&l| (l as usize) < classes),
            "labels below {classes}"
        );
        assert_eq!(grads.len(), self.params.len(), "a gradient per parameter");
        let mut outs = self.forward(x);
        let mut d = outs.pop().expect("at least one layer");
        let loss = softmax_cross_entropy(&mut d, y);
        for (mut row, &label) in d.axis_iter_mut(Axis(0)).zip(y) {
            row[label as usize] -= 1.0;
        }
        d /= x.nrows().max(1) as f32;
        // Backwards, last layer first: d is the gradient at the layer's output.
        let layers = self.layers();
        for (l, (range, i, o)) in layers.iter().enumerate().rev() {
            let g = &mut grads[range.clone()];
            match l {
                0 => dense_grads(*i, *o, x, &d, g),
                _ => dense_grads(*i, *o, outs[l - 1].view(), &d, g),
            }
            if l > 0 {
                let w = ArrayView2::from_shape(
                    (*i, *o),
                    &self.params[range.start..range.start + i * o],
                )
                .expect("a layer's weights");
                let mut back = d.dot(&w.t());
                // Through the ReLU: no gradient where its output was zero.
                back.zip_mut_with(&outs[l - 1], |g, &h| {
                    if h <= 0.0 {
                        *g = 0.0;
                    }
                });
                d = back;
            }
        }
        loss
    }
}
