//! An adapter for [burn](https://burn.dev) (feature `burn`, with burn's ndarray backend
//! and autodiff): train a burn module data-parallel in a prism-train loop.
//!
//! A burn step computes its gradients with `loss.backward()` and
//! `GradientsParams::from_grads`; [`all_reduce_grads`] averages them over the ranks
//! (one flat all-reduce of every parameter's gradient, in the module's own order), and
//! burn's optimizer takes the step, so every rank takes the same one. To start alike,
//! the ranks take rank 0's initial parameters with [`broadcast_params`]; [`save`] and
//! [`load`] turn a module's parameters into checkpoint bytes and back.
//!
//! ```no_run
//! use prism_train::burn::{all_reduce_grads, broadcast_params};
//! use prism_train::burn::burn::backend::{Autodiff, NdArray};
//! use prism_train::burn::burn::nn::{Linear, LinearConfig};
//! use prism_train::burn::burn::optim::{GradientsParams, Optimizer, SgdConfig};
//! use prism_train::burn::burn::tensor::Tensor;
//! # fn step(ctx: &mut prism_train::TrainContext, x: Tensor<Autodiff<NdArray>, 2>, y: Tensor<Autodiff<NdArray>, 2>) -> prism_train::Result<()> {
//! type B = Autodiff<NdArray>;
//! let device = Default::default();
//! let mut model: Linear<B> = LinearConfig::new(10, 1).init(&device);
//! model = broadcast_params(ctx.communicator()?, model)?;
//! let mut optim = SgdConfig::new().init();
//! let loss = (model.forward(x) - y).powi_scalar(2).mean();
//! let grads = GradientsParams::from_grads(loss.backward(), &model);
//! let grads = all_reduce_grads(ctx.communicator()?, &model, grads)?;
//! model = optim.step(0.05, model, grads);
//! # Ok(()) }
//! ```

pub use burn;

use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};

use crate::collective::Communicator;
use crate::{ReduceOp, Result, TrainError};

fn values<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .unwrap_or_default()
}

/// Every gradient of `grads` that belongs to a parameter of the module, in the
/// module's order, flat.
struct GatherGrads<'a> {
    grads: &'a GradientsParams,
    flat: Vec<f32>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GatherGrads<'_> {
    fn visit_float<const D: usize>(&mut self, id: ParamId, _: &Tensor<B, D>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(id) {
            self.flat.extend(values(g));
        }
    }
}

/// The gradients rebuilt, in the same order, from a flat buffer.
struct ScatterGrads<'a> {
    shapes: &'a GradientsParams,
    flat: &'a [f32],
    at: usize,
    out: GradientsParams,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for ScatterGrads<'_> {
    fn visit_float<const D: usize>(&mut self, id: ParamId, _: &Tensor<B, D>) {
        if let Some(g) = self.shapes.get::<B::InnerBackend, D>(id) {
            let shape = g.shape();
            let n = shape.num_elements();
            let part = self.flat[self.at..self.at + n].to_vec();
            self.at += n;
            let t = Tensor::<B::InnerBackend, D>::from_data(
                TensorData::new(part, shape.dims),
                &g.device(),
            );
            self.out.register(id, t);
        }
    }
}

/// A step's gradients of the module's parameters, in the module's order, flat: what
/// [`all_reduce_grads`] reduces.
pub fn gradients<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &GradientsParams,
) -> Vec<f32> {
    let mut gather = GatherGrads {
        grads,
        flat: Vec::new(),
    };
    module.visit(&mut gather);
    gather.flat
}

/// Averages a step's gradients over the ranks of `comm`: every rank passes its own
/// and gets the mean of all. The ranks must train the same architecture.
pub fn all_reduce_grads<B: AutodiffBackend, M: AutodiffModule<B>>(
    comm: &mut Communicator,
    module: &M,
    grads: GradientsParams,
) -> Result<GradientsParams> {
    let mut flat = gradients(module, &grads);
    comm.all_reduce(&mut flat, ReduceOp::Mean)?;
    let mut scatter = ScatterGrads {
        shapes: &grads,
        flat: &flat,
        at: 0,
        out: GradientsParams::new(),
    };
    module.visit(&mut scatter);
    Ok(scatter.out)
}

/// The module's float parameters, in its order, flat.
struct GatherParams {
    flat: Vec<f32>,
}

impl<B: Backend> ModuleVisitor<B> for GatherParams {
    fn visit_float<const D: usize>(&mut self, _: ParamId, tensor: &Tensor<B, D>) {
        self.flat.extend(values(tensor.clone()));
    }
}

/// The module's float parameters replaced, in its order, from a flat buffer.
struct ScatterParams<'a> {
    flat: &'a [f32],
    at: usize,
    short: bool,
}

impl<B: Backend> ModuleMapper<B> for ScatterParams<'_> {
    fn map_float<const D: usize>(&mut self, _: ParamId, tensor: Tensor<B, D>) -> Tensor<B, D> {
        let shape = tensor.shape();
        let n = shape.num_elements();
        if self.at + n > self.flat.len() {
            self.short = true;
            return tensor;
        }
        let part = self.flat[self.at..self.at + n].to_vec();
        self.at += n;
        let grad = tensor.is_require_grad();
        let t = Tensor::<B, D>::from_data(TensorData::new(part, shape.dims), &tensor.device());
        if grad {
            t.require_grad()
        } else {
            t
        }
    }
}

/// The module's float parameters, flat.
pub fn params<B: Backend, M: Module<B>>(module: &M) -> Vec<f32> {
    let mut gather = GatherParams { flat: Vec::new() };
    module.visit(&mut gather);
    gather.flat
}

/// The module with its float parameters taken from `flat` (as [`params`] gives them).
pub fn with_params<B: Backend, M: Module<B>>(module: M, flat: &[f32]) -> Result<M> {
    let mut scatter = ScatterParams {
        flat,
        at: 0,
        short: false,
    };
    let module = module.map(&mut scatter);
    if scatter.short || scatter.at != flat.len() {
        return Err(TrainError::Config(format!(
            "{} parameters for a module of {}",
            flat.len(),
            params(&module).len()
        )));
    }
    Ok(module)
}

/// Every rank's module with rank 0's parameters, so that all start from the same.
pub fn broadcast_params<B: Backend, M: Module<B>>(comm: &mut Communicator, module: M) -> Result<M> {
    let mut flat = params(&module);
    comm.broadcast(&mut flat, 0)?;
    with_params(module, &flat)
}

/// The module's parameters as checkpoint bytes (little-endian `f32`s).
pub fn save<B: Backend, M: Module<B>>(module: &M) -> Vec<u8> {
    crate::model::f32_bytes(&params(module))
}

/// The module with the parameters of a checkpoint [`save`] made.
pub fn load<B: Backend, M: Module<B>>(module: M, bytes: &[u8]) -> Result<M> {
    with_params(module, &crate::model::bytes_f32(bytes)?)
}
