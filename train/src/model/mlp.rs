//! A multi-layer perceptron: dense layers with ReLU between them and a softmax
//! cross-entropy on the last, with its own backpropagation.

use std::ops::Range;

use ndarray::linalg::general_mat_mul;
use ndarray::{s, Array2, ArrayView2, ArrayViewMut2, Axis};

use super::softmax::{argmax_rows, softmax_cross_entropy};
use super::{dense, Affine, Model};

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

impl Mlp {
    /// [`Model::loss_grad`], calling `ready(range, &grads[range])` as each part of the
    /// gradient becomes final: last layer first, each layer's bias, then its weights
    /// in blocks of about `bucket` values (whole rows of `W`). A data-parallel loop
    /// starts reducing each part while the rest is computed (bucketing).
    pub fn loss_grad_buckets(
        &self,
        x: ArrayView2<'_, f32>,
        y: &[u32],
        grads: &mut [f32],
        bucket: usize,
        ready: &mut dyn FnMut(Range<usize>, &[f32]),
    ) -> f32 {
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
            let (i, o) = (*i, *o);
            let input = match l {
                0 => x.reborrow(),
                _ => outs[l - 1].view(),
            };
            let weights = range.start..range.start + i * o;
            let bias = weights.end..range.end;
            for (g, s) in grads[bias.clone()].iter_mut().zip(d.sum_axis(Axis(0))) {
                *g = s;
            }
            ready(bias.clone(), &grads[bias]);
            let rows = (bucket / o.max(1)).clamp(1, i.max(1));
            for r0 in (0..i).step_by(rows) {
                let r1 = (r0 + rows).min(i);
                let part = weights.start + r0 * o..weights.start + r1 * o;
                let mut gw = ArrayViewMut2::from_shape((r1 - r0, o), &mut grads[part.clone()])
                    .expect("sized");
                general_mat_mul(1.0, &input.slice(s![.., r0..r1]).t(), &d, 0.0, &mut gw);
                ready(part.clone(), &grads[part]);
            }
            if l > 0 {
                let w = ArrayView2::from_shape((i, o), &self.params[weights])
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
        self.loss_grad_buckets(x, y, grads, usize::MAX, &mut |_, _| {})
    }
}
