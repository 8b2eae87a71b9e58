//! Linear regression with a mean squared error: PyTorch's `nn.Linear(d, k)` with
//! `nn.MSELoss()`.

use ndarray::{Array2, ArrayView2};

use super::{Affine, Model};

/// `y = x W + b`, `W` of `inputs × outputs`, trained on the mean of `(ŷ - y)²` over
/// every sample and output. Parameters: `W` row-major, then `b`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Linear {
    layer: Affine,
}

impl Linear {
    /// A model with weights drawn as PyTorch does (uniform in ±1/√inputs) from `seed`,
    /// and zero biases.
    pub fn new(inputs: usize, outputs: usize, seed: u64) -> Linear {
        Linear {
            layer: Affine::new(inputs, outputs, seed),
        }
    }

    /// `x W + b` for a batch `x`.
    pub fn predict(&self, x: ArrayView2<'_, f32>) -> Array2<f32> {
        self.layer.apply(x)
    }
}

impl Model for Linear {
    /// The targets, `outputs` per sample, row-major.
    type Target = [f32];

    fn params(&self) -> &[f32] {
        &self.layer.params
    }

    fn params_mut(&mut self) -> &mut [f32] {
        &mut self.layer.params
    }

    fn loss_grad(&self, x: ArrayView2<'_, f32>, y: &[f32], grads: &mut [f32]) -> f32 {
        let (n, k) = (x.nrows(), self.layer.outputs);
        assert_eq!(y.len(), n * k, "{n} samples of {k} targets");
        let mut diff = self.predict(x);
        diff -= &ArrayView2::from_shape((n, k), y).expect("checked");
        let count = (n * k).max(1) as f32;
        let loss = diff.iter().map(|d| d * d).sum::<f32>() / count;
        diff *= 2.0 / count;
        self.layer.backward(x, &diff, grads);
        loss
    }
}
