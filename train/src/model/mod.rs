//! Models over flat parameter and gradient buffers: what the collectives average is
//! one `&[f32]` per model, whatever its layers.
//!
//! A [`Model`] keeps all its parameters in one buffer and writes the gradient of its
//! mean loss over a batch into a buffer of the same layout, so a data-parallel step is:
//! gradients on this rank's batch, an all-reduce (mean) of them, then [`sgd_step`].
//!
//! ```
//! use ndarray::Array2;
//! use prism_train::model::{sgd_step, Linear, Model};
//! // y = 2x + 1, learned by gradient descent.
//! let x = Array2::from_shape_fn((64, 1), |(i, _)| i as f32 / 64.0);
//! let y: Vec<f32> = x.iter().map(|v| 2.0 * v + 1.0).collect();
//! let mut m = Linear::new(1, 1, 0);
//! let mut g = vec![0.0; m.params().len()];
//! for _ in 0..2000 {
//!     m.loss_grad(x.view(), &y, &mut g);
//!     sgd_step(m.params_mut(), &g, 0.5);
//! }
//! assert!(m.loss(x.view(), &y) < 1e-4);
//! ```

mod linear;
mod mlp;
mod softmax;

use ndarray::{linalg::general_mat_mul, Array2, ArrayView1, ArrayView2, ArrayViewMut2, Axis};

pub use linear::Linear;
pub use mlp::Mlp;
pub use softmax::{argmax_rows, Softmax};

/// A model whose parameters live in one flat buffer; see the module's documentation.
pub trait Model: Send {
    /// What a batch's rows are compared with: values for a regression, class labels for
    /// a classifier.
    type Target: ?Sized;

    /// The parameters, in the model's own layout.
    fn params(&self) -> &[f32];

    /// The parameters, to update in place.
    fn params_mut(&mut self) -> &mut [f32];

    /// The mean loss over the batch `x` (one row per sample) against `y`, with its
    /// gradient with respect to the parameters written into `grads` (as long as
    /// `params()`).
    fn loss_grad(&self, x: ArrayView2<'_, f32>, y: &Self::Target, grads: &mut [f32]) -> f32;

    /// The mean loss over the batch, without its gradient.
    fn loss(&self, x: ArrayView2<'_, f32>, y: &Self::Target) -> f32 {
        let mut g = vec![0.0; self.params().len()];
        self.loss_grad(x, y, &mut g)
    }
}

/// Plain stochastic gradient descent: `params -= rate * grads`.
pub fn sgd_step(params: &mut [f32], grads: &[f32], rate: f32) {
    for (p, g) in params.iter_mut().zip(grads) {
        *p -= rate * g;
    }
}

/// A model's parameters as bytes (little-endian `f32`s): a checkpoint to report.
///
/// ```
/// use prism_train::model::{load, save, Linear, Model};
/// let trained = Linear::new(3, 1, 7);
/// let mut fresh = Linear::new(3, 1, 8);
/// load(&mut fresh, &save(&trained)).unwrap();
/// assert_eq!(fresh.params(), trained.params());
/// assert!(load(&mut fresh, &[0u8; 3]).is_err());
/// ```
pub fn save(model: &impl Model) -> Vec<u8> {
    f32_bytes(model.params())
}

/// Takes back parameters that [`save`] made, into a model of the same shape.
pub fn load(model: &mut impl Model, bytes: &[u8]) -> crate::Result<()> {
    let values = bytes_f32(bytes)?;
    let params = model.params_mut();
    if values.len() != params.len() {
        return Err(crate::TrainError::Config(format!(
            "a checkpoint of {} bytes for a model of {} parameters ({} bytes)",
            bytes.len(),
            params.len(),
            params.len() * 4
        )));
    }
    params.copy_from_slice(&values);
    Ok(())
}

/// `f32`s as checkpoint bytes, little-endian.
pub(crate) fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|p| p.to_le_bytes()).collect()
}

/// The `f32`s of bytes [`f32_bytes`] made.
pub(crate) fn bytes_f32(bytes: &[u8]) -> crate::Result<Vec<f32>> {
    if bytes.len() % 4 != 0 {
        return Err(crate::TrainError::Config(format!(
            "a checkpoint of {} bytes is not a whole number of f32s",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// Deterministic small initial weights: a uniform draw in `(-scale, scale)` from a
/// splitmix64 stream seeded with `seed`, so that every rank starts from the same model.
pub(crate) fn init_weights(n: usize, scale: f32, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            let u = (z >> 40) as f32 / (1u64 << 24) as f32; // [0, 1)
            (2.0 * u - 1.0) * scale
        })
        .collect()
}

/// A dense layer `x W + b` over a flat buffer: `W` (`inputs × outputs`, row-major),
/// then `b`. Weights start uniform in ±1/√inputs from a seed (as PyTorch draws them),
/// biases at zero.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Affine {
    pub(crate) inputs: usize,
    pub(crate) outputs: usize,
    pub(crate) params: Vec<f32>,
}

impl Affine {
    pub(crate) fn new(inputs: usize, outputs: usize, seed: u64) -> Affine {
        let mut params = init_weights(inputs * outputs, 1.0 / (inputs as f32).sqrt(), seed);
        params.resize(inputs * outputs + outputs, 0.0);
        Affine {
            inputs,
            outputs,
            params,
        }
    }

    /// `x W + b`.
    pub(crate) fn apply(&self, x: ArrayView2<'_, f32>) -> Array2<f32> {
        dense(&self.params, self.inputs, self.outputs, x)
    }

    /// Writes the gradient of the loss into `grads` (this layer's layout), given the
    /// batch `x` and the gradient `dout` of the loss with respect to `x W + b`.
    pub(crate) fn backward(&self, x: ArrayView2<'_, f32>, dout: &Array2<f32>, grads: &mut [f32]) {
        assert_eq!(grads.len(), self.params.len(), "a gradient per parameter");
        dense_grads(self.inputs, self.outputs, x, dout, grads);
    }
}

/// `x W + b` for a dense layer whose `W` (row-major) then `b` are `params`.
pub(crate) fn dense(
    params: &[f32],
    inputs: usize,
    outputs: usize,
    x: ArrayView2<'_, f32>,
) -> Array2<f32> {
    let (w, b) = params.split_at(inputs * outputs);
    let w = ArrayView2::from_shape((inputs, outputs), w).expect("a layer's weights");
    x.dot(&w) + ArrayView1::from(b)
}

/// The weights' and biases' gradients of a dense layer (into `grads`, its layout), from
/// its input `x` and the gradient `dout` with respect to its output.
pub(crate) fn dense_grads(
    inputs: usize,
    outputs: usize,
    x: ArrayView2<'_, f32>,
    dout: &Array2<f32>,
    grads: &mut [f32],
) {
    let (w, b) = grads.split_at_mut(inputs * outputs);
    let mut gw = ArrayViewMut2::from_shape((inputs, outputs), w).expect("sized");
    general_mat_mul(1.0, &x.t(), dout, 0.0, &mut gw);
    for (g, s) in b.iter_mut().zip(dout.sum_axis(Axis(0))) {
        *g = s;
    }
}
