//! Estimators the cross-validated search fits and scores, as scikit-learn's
//! `fit`/`predict`/`score`: a type built from a [`Config`], fitted on some rows of a
//! labelled data set and scored on others.
//!
//! The search runs every (candidate, fold) fit as a prism task, which on a cluster runs
//! in another process of the same program. A task names its estimator, and the process
//! running it finds the estimator's code under that name in a compile-time registry,
//! as prism finds remote functions: [`register_estimator!`](crate::register_estimator)
//! files a type there, once, next to its `impl Estimator`.
//!
//! ```
//! use prism_tune::datasets::Features;
//! use prism_tune::{Config, Estimator, TuneError};
//!
//! /// Predicts the class most frequent in the training rows, whatever the features.
//! struct Majority(usize);
//!
//! impl Estimator for Majority {
//!     fn fit(_x: &Features, y: &[usize], _config: &Config) -> Result<Self, TuneError> {
//!         let mut counts = std::collections::BTreeMap::new();
//!         for c in y {
//!             *counts.entry(*c).or_insert(0) += 1;
//!         }
//!         let best = counts.into_iter().max_by_key(|(_, n)| *n).map(|(c, _)| c);
//!         best.map(Majority).ok_or_else(|| TuneError::Data("no rows".into()))
//!     }
//!     fn predict(&self, x: &Features) -> Result<Vec<usize>, TuneError> {
//!         Ok(vec![self.0; x.rows()])
//!     }
//! }
//! prism_tune::register_estimator!(Majority);
//!
//! let x = [0.0_f32; 4];
//! let m = Majority::fit(&Features::new(&x, 1).unwrap(), &[1, 1, 0, 1], &Config::default()).unwrap();
//! assert_eq!(m.score(&Features::new(&x, 1).unwrap(), &[1, 0, 1, 1]).unwrap(), 0.75);
//! ```

use crate::datasets::{Features, Labelled};
use crate::space::Config;
use crate::TuneError;

/// A model the cross-validated search can fit and score.
pub trait Estimator: Sized + 'static {
    /// Fits a model with the hyperparameters of `config` on the rows `x` and their
    /// classes `y`. A parameter the model does not know, or one of the wrong type, is a
    /// [`TuneError::Config`].
    fn fit(x: &Features, y: &[usize], config: &Config) -> Result<Self, TuneError>;

    /// The class of each row of `x`.
    fn predict(&self, x: &Features) -> Result<Vec<usize>, TuneError>;

    /// The share of the rows of `x` predicted as `y` says (mean accuracy, as
    /// scikit-learn's classifiers score).
    fn score(&self, x: &Features, y: &[usize]) -> Result<f64, TuneError> {
        let predicted = self.predict(x)?;
        if predicted.len() != y.len() {
            return Err(TuneError::Data(format!(
                "{} predictions for {} rows",
                predicted.len(),
                y.len()
            )));
        }
        let right = predicted.iter().zip(y).filter(|(p, t)| p == t).count();
        Ok(right as f64 / y.len().max(1) as f64)
    }

    /// Checks a configuration before any fit is started, so that a bad candidate fails
    /// the search at once instead of in its tasks (the default accepts every one).
    fn check(_config: &Config) -> Result<(), TuneError> {
        Ok(())
    }
}

/// Fits `E` on fold `fold`'s training rows of `data` and scores it on the fold's test
/// rows.
pub fn score_fold<E: Estimator>(
    data: &Labelled,
    folds: &[(Vec<usize>, Vec<usize>)],
    config: &Config,
    fold: usize,
) -> Result<f64, TuneError> {
    let (train, test) = folds
        .get(fold)
        .ok_or_else(|| TuneError::Data(format!("no fold {fold} of {}", folds.len())))?;
    let (tr, te) = (data.select(train), data.select(test));
    let model = E::fit(&Features::new(&tr.x, tr.dims)?, &tr.y, config)?;
    model.score(&Features::new(&te.x, te.dims)?, &te.y)
}

/// A registered estimator: its name and how a task scores one fold with it. Made by
/// [`register_estimator!`](crate::register_estimator); not for direct use.
pub struct Registration {
    /// `std::any::type_name` of the estimator, the same in every process of a program.
    pub name: fn() -> &'static str,
    /// [`score_fold`] for the estimator.
    pub score_fold: ScoreFold,
}

/// How a task scores one fold: [`score_fold`] for one estimator.
pub type ScoreFold =
    fn(&Labelled, &[(Vec<usize>, Vec<usize>)], &Config, usize) -> Result<f64, TuneError>;

inventory::collect!(Registration);

impl crate::registry::Registered for Registration {
    const WHAT: (&'static str, &'static str, &'static str) =
        ("estimator", "register_estimator", "Estimator");

    fn name(&self) -> &'static str {
        (self.name)()
    }
}

/// The registration of the estimator named `name`.
pub(crate) fn lookup(name: &str) -> Result<&'static Registration, TuneError> {
    crate::registry::lookup(name)
}

/// Files an [`Estimator`] in the registry the cross-validated search's tasks find it
/// in. Once per type, at the top level of a module:
/// `prism_tune::register_estimator!(MyModel);`.
#[macro_export]
macro_rules! register_estimator {
    ($t:ty) => {
        $crate::__private::inventory::submit! {
            $crate::estimator::Registration {
                name: ::std::any::type_name::<$t>,
                score_fold: $crate::estimator::score_fold::<$t>,
            }
        }
    };
}
