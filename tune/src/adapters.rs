//! Models of other Rust machine-learning crates as [`Estimator`]s, so that the
//! cross-validated search can search them.
//!
//! * [`Smartcore`]: any smartcore classifier (`SupervisedEstimator` on a `DenseMatrix<f64>`
//!   and `Vec<u32>` labels) whose parameters are serde types with a default, which is
//!   every one of smartcore's: a configuration's entries set the fields of the default
//!   parameters by name (`n_trees`, `max_depth`, `criterion`...), so an unknown name or
//!   a value of the wrong type is an error naming it.
//! * `Linfa` (with the `linfa` feature): a linfa model through `LinfaModel`, a small
//!   trait saying how a configuration becomes the model's hyperparameters; linfa-trees'
//!   `DecisionTree` implements it here.
//!
//! Register the adapted type once, as any estimator:
//!
//! ```
//! use prism_tune::adapters::Smartcore;
//! use smartcore::linalg::basic::matrix::DenseMatrix;
//! use smartcore::tree::decision_tree_classifier::{
//!     DecisionTreeClassifier, DecisionTreeClassifierParameters,
//! };
//!
//! /// smartcore's decision tree, searchable.
//! type Tree = Smartcore<
//!     DecisionTreeClassifier<f64, u32, DenseMatrix<f64>, Vec<u32>>,
//!     DecisionTreeClassifierParameters,
//! >;
//! prism_tune::register_estimator!(Tree);
//!
//! use prism_tune::datasets::Features;
//! use prism_tune::{Config, Estimator};
//! let x = [0.0_f32, 1.0, 2.0, 10.0, 11.0, 12.0];
//! let config = Config::from_pairs([("max_depth", 2.into())]);
//! let tree = Tree::fit(&Features::new(&x, 1).unwrap(), &[0, 0, 0, 1, 1, 1], &config).unwrap();
//! assert_eq!(tree.predict(&Features::new(&[1.5, 10.5], 1).unwrap()).unwrap(), [0, 1]);
//! assert!(Tree::check(&Config::from_pairs([("depth", 2.into())])).is_err()); // no such field
//! ```

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;
use smartcore::api::SupervisedEstimator;
use smartcore::linalg::basic::matrix::DenseMatrix;

use crate::datasets::Features;
use crate::estimator::Estimator;
use crate::space::{Config, Param};
use crate::TuneError;

/// A smartcore classifier `M` with parameters `P`, as an [`Estimator`]; see the
/// module's documentation.
pub struct Smartcore<M, P> {
    model: M,
    params: PhantomData<fn() -> P>,
}

impl<M, P> Smartcore<M, P> {
    /// The fitted smartcore model.
    pub fn model(&self) -> &M {
        &self.model
    }
}

impl<M, P> Estimator for Smartcore<M, P>
where
    M: SupervisedEstimator<DenseMatrix<f64>, Vec<u32>, P> + 'static,
    P: Default + Clone + Serialize + DeserializeOwned + 'static,
{
    fn fit(x: &Features, y: &[usize], config: &Config) -> Result<Self, TuneError> {
        let params: P = fields_from_config(config)?;
        let labels = y
            .iter()
            .map(|c| {
                u32::try_from(*c).map_err(|_| TuneError::Data(format!("class {c} is too large")))
            })
            .collect::<Result<Vec<u32>, _>>()?;
        let model = M::fit(&dense(x)?, &labels, params)
            .map_err(|e| TuneError::Data(format!("smartcore: {e}")))?;
        Ok(Smartcore {
            model,
            params: PhantomData,
        })
    }

    fn predict(&self, x: &Features) -> Result<Vec<usize>, TuneError> {
        let predicted = self
            .model
            .predict(&dense(x)?)
            .map_err(|e| TuneError::Data(format!("smartcore: {e}")))?;
        Ok(predicted.into_iter().map(|c| c as usize).collect())
    }

    fn check(config: &Config) -> Result<(), TuneError> {
        fields_from_config::<P>(config).map(|_| ())
    }
}

/// The rows of `x` as a smartcore matrix.
fn dense(x: &Features) -> Result<DenseMatrix<f64>, TuneError> {
    let values: Vec<f64> = x.data.iter().map(|v| *v as f64).collect();
    DenseMatrix::new(x.rows(), x.dims, values, false)
        .map_err(|e| TuneError::Data(format!("smartcore: {e}")))
}

/// `P`'s defaults with the fields `config` names set to its values. An integer field
/// takes a whole real (so `quniform` works for it).
fn fields_from_config<P: Default + Serialize + DeserializeOwned>(
    config: &Config,
) -> Result<P, TuneError> {
    let what = std::any::type_name::<P>();
    let mut fields = match serde_json::to_value(P::default()) {
        Ok(serde_json::Value::Object(fields)) => fields,
        _ => {
            return Err(TuneError::Config(format!(
                "{what} does not serialize as named fields"
            )))
        }
    };
    for (name, value) in &config.0 {
        let Some(default) = fields.get(name) else {
            let known: Vec<&String> = fields.keys().collect();
            return Err(TuneError::Config(format!(
                "{what} has no parameter {name} (it has {known:?})"
            )));
        };
        let value = match value {
            Param::Float(x) if default.is_u64() || default.is_i64() => {
                if x.fract() != 0.0 {
                    return Err(TuneError::Config(format!(
                        "parameter {name} of {what} is an integer, not {x}"
                    )));
                }
                serde_json::Value::from(*x as i64)
            }
            // An optional field (`None` by default) may be an integer one: a whole real
            // goes as an integer, which a real field takes as well.
            Param::Float(x) if default.is_null() && x.fract() == 0.0 && x.abs() < 9e15 => {
                serde_json::Value::from(*x as i64)
            }
            other => other.to_json(),
        };
        fields.insert(name.clone(), value);
    }
    serde_json::from_value(serde_json::Value::Object(fields))
        .map_err(|e| TuneError::Config(format!("{what}: {e} (in {config})")))
}

#[cfg(feature = "linfa")]
pub use self::linfa_models::{Dataset as LinfaDataset, Linfa, LinfaModel};

#[cfg(feature = "linfa")]
mod linfa_models {
    use linfa::prelude::{Fit, Predict};
    use linfa::{DatasetBase, ParamGuard};
    use linfa_trees::{DecisionTree, SplitQuality};
    use ndarray::{Array1, Array2};

    use super::*;

    /// Rows and their classes, as linfa takes them.
    pub type Dataset = DatasetBase<Array2<f64>, Array1<usize>>;

    /// A linfa model the search can fit: how a configuration becomes its
    /// hyperparameters, and the fit and prediction on linfa's arrays.
    pub trait LinfaModel: Sized + 'static {
        /// Fits on `dataset` with the hyperparameters of `config`.
        fn fit(dataset: &Dataset, config: &Config) -> Result<Self, TuneError>;
        /// The class of each row.
        fn predict(&self, records: &Array2<f64>) -> Vec<usize>;
        /// Checks a configuration before any fit (default: accept).
        fn check(_config: &Config) -> Result<(), TuneError> {
            Ok(())
        }
    }

    /// A linfa model as an [`Estimator`].
    ///
    /// ```
    /// use prism_tune::adapters::Linfa;
    /// use prism_tune::datasets::Features;
    /// use prism_tune::{Config, Estimator};
    ///
    /// type Tree = Linfa<linfa_trees::DecisionTree<f64, usize>>;
    /// prism_tune::register_estimator!(Tree);
    ///
    /// let x = [0.0_f32, 1.0, 2.0, 10.0, 11.0, 12.0];
    /// let config = Config::from_pairs([("max_depth", 3.into()), ("split_quality", "entropy".into())]);
    /// let tree = Tree::fit(&Features::new(&x, 1).unwrap(), &[0, 0, 0, 1, 1, 1], &config).unwrap();
    /// assert_eq!(tree.predict(&Features::new(&[1.5, 10.5], 1).unwrap()).unwrap(), [0, 1]);
    /// ```
    pub struct Linfa<M>(pub M);

    impl<M: LinfaModel> Estimator for Linfa<M> {
        fn fit(x: &Features, y: &[usize], config: &Config) -> Result<Self, TuneError> {
            let dataset = DatasetBase::new(records(x)?, Array1::from(y.to_vec()));
            M::fit(&dataset, config).map(Linfa)
        }

        fn predict(&self, x: &Features) -> Result<Vec<usize>, TuneError> {
            Ok(self.0.predict(&records(x)?))
        }

        fn check(config: &Config) -> Result<(), TuneError> {
            M::check(config)
        }
    }

    fn records(x: &Features) -> Result<Array2<f64>, TuneError> {
        Array2::from_shape_vec(
            (x.rows(), x.dims),
            x.data.iter().map(|v| *v as f64).collect(),
        )
        .map_err(|e| TuneError::Data(format!("linfa: {e}")))
    }

    /// linfa-trees' decision tree. Parameters (all optional): `max_depth` (an integer),
    /// `min_weight_split` and `min_weight_leaf` (reals), `min_impurity_decrease` (a
    /// real), `split_quality` (`"gini"` or `"entropy"`). linfa-trees 0.8 gives a leaf
    /// whose classes tie the one a `HashMap` lists last, so fits of trees cut short can
    /// differ between runs by such leaves.
    impl LinfaModel for DecisionTree<f64, usize> {
        fn fit(dataset: &Dataset, config: &Config) -> Result<Self, TuneError> {
            tree_params(config)?
                .fit(dataset)
                .map_err(|e| TuneError::Data(format!("linfa: {e}")))
        }

        fn predict(&self, records: &Array2<f64>) -> Vec<usize> {
            Predict::predict(self, records).to_vec()
        }

        fn check(config: &Config) -> Result<(), TuneError> {
            tree_params(config)?
                .check_ref()
                .map(|_| ())
                .map_err(|e| TuneError::Config(format!("linfa: {e}")))
        }
    }

    fn tree_params(
        config: &Config,
    ) -> Result<linfa_trees::DecisionTreeParams<f64, usize>, TuneError> {
        let mut p = DecisionTree::params();
        for name in config.0.keys() {
            p = match name.as_str() {
                "max_depth" => {
                    let d = config.i64(name)?;
                    let d = usize::try_from(d).map_err(|_| {
                        TuneError::Config(format!("max_depth must be ≥ 0, not {d}"))
                    })?;
                    p.max_depth(Some(d))
                }
                "min_weight_split" => p.min_weight_split(config.f64(name)? as f32),
                "min_weight_leaf" => p.min_weight_leaf(config.f64(name)? as f32),
                "min_impurity_decrease" => p.min_impurity_decrease(config.f64(name)?),
                "split_quality" => p.split_quality(match config.str(name)? {
                    "gini" => SplitQuality::Gini,
                    "entropy" => SplitQuality::Entropy,
                    other => {
                        return Err(TuneError::Config(format!(
                            "split_quality is \"gini\" or \"entropy\", not {other:?}"
                        )))
                    }
                }),
                other => {
                    return Err(TuneError::Config(format!(
                        "linfa's DecisionTree has no parameter {other} (it takes max_depth, \
                         min_weight_split, min_weight_leaf, min_impurity_decrease, split_quality)"
                    )))
                }
            };
        }
        Ok(p)
    }
}
