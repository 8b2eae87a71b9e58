//! Search spaces and the configurations drawn from them.
//!
//! A [`Space`] names parameters and gives each a [`Domain`]: a distribution to sample
//! (`uniform`, `loguniform`, `quniform`, `randint`, `choice`), a list to enumerate
//! (`grid`), or a constant. A [`Config`] is one point of a space: named [`Param`] values
//! with typed getters, or the whole of it read into a struct of yours with serde.
//! Sampling takes the random number generator as an argument, so a seeded search is
//! reproducible.

use std::collections::BTreeMap;
use std::fmt;

use rand::Rng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::TuneError;

/// One parameter's value. (Encoded with its kind, so that it travels in prism's binary
/// encoding too; [`Config::to_json`] gives the plain JSON values.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Param {
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A real number.
    Float(f64),
    /// A string.
    Str(String),
}

impl Param {
    /// The value as a real, if it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Param::Float(x) => Some(*x),
            Param::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// The value as an integer, if it is one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Param::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The value as a string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Param::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl Param {
    /// The value as plain JSON.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Param::Bool(b) => (*b).into(),
            Param::Int(i) => (*i).into(),
            Param::Float(x) => serde_json::Number::from_f64(*x)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Param::Str(s) => s.clone().into(),
        }
    }
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Param::Bool(b) => write!(f, "{b}"),
            Param::Int(i) => write!(f, "{i}"),
            Param::Float(x) => write!(f, "{x}"),
            Param::Str(s) => write!(f, "{s}"),
        }
    }
}

impl From<f64> for Param {
    fn from(x: f64) -> Self {
        Param::Float(x)
    }
}

impl From<i64> for Param {
    fn from(i: i64) -> Self {
        Param::Int(i)
    }
}

impl From<i32> for Param {
    fn from(i: i32) -> Self {
        Param::Int(i.into())
    }
}

impl From<bool> for Param {
    fn from(b: bool) -> Self {
        Param::Bool(b)
    }
}

impl From<&str> for Param {
    fn from(s: &str) -> Self {
        Param::Str(s.to_string())
    }
}

impl From<String> for Param {
    fn from(s: String) -> Self {
        Param::Str(s)
    }
}

/// Where a parameter's values come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Domain {
    /// Reals uniform in `[low, high)`.
    Uniform {
        /// The lower bound.
        low: f64,
        /// The upper bound.
        high: f64,
    },
    /// Reals whose logarithm is uniform: `low` and `high` positive.
    LogUniform {
        /// The lower bound.
        low: f64,
        /// The upper bound.
        high: f64,
    },
    /// Reals uniform in `[low, high]`, rounded to a multiple of `q`.
    QUniform {
        /// The lower bound.
        low: f64,
        /// The upper bound.
        high: f64,
        /// The step.
        q: f64,
    },
    /// Integers uniform in `[low, high)` (as in Ray Tune, the upper bound is excluded).
    RandInt {
        /// The lower bound.
        low: i64,
        /// The upper bound, excluded.
        high: i64,
    },
    /// One of the values, each equally likely.
    Choice(Vec<Param>),
    /// Every one of the values in turn (a grid searcher enumerates them; sampled, each
    /// is equally likely).
    Grid(Vec<Param>),
    /// Always this value.
    Const(Param),
}

/// Reals uniform in `[low, high)`.
///
/// ```
/// use rand::SeedableRng;
/// let d = prism_tune::uniform(0.5, 1.5);
/// let x = d.sample(&mut rand::rngs::StdRng::seed_from_u64(1)).as_f64().unwrap();
/// assert!((0.5..1.5).contains(&x));
/// ```
pub fn uniform(low: f64, high: f64) -> Domain {
    Domain::Uniform { low, high }
}

/// Reals whose base-10 logarithm is uniform between those of `low` and `high`: the usual
/// domain of regularization constants and learning rates.
pub fn loguniform(low: f64, high: f64) -> Domain {
    Domain::LogUniform { low, high }
}

/// Reals uniform in `[low, high]`, rounded to a multiple of `q`.
pub fn quniform(low: f64, high: f64, q: f64) -> Domain {
    Domain::QUniform { low, high, q }
}

/// Integers uniform in `[low, high)`.
pub fn randint(low: i64, high: i64) -> Domain {
    Domain::RandInt { low, high }
}

/// One of `values`, each equally likely.
pub fn choice<P: Into<Param>>(values: impl IntoIterator<Item = P>) -> Domain {
    Domain::Choice(values.into_iter().map(Into::into).collect())
}

/// Every one of `values` in turn, with a grid searcher.
pub fn grid<P: Into<Param>>(values: impl IntoIterator<Item = P>) -> Domain {
    Domain::Grid(values.into_iter().map(Into::into).collect())
}

impl<P: Into<Param>> From<P> for Domain {
    fn from(p: P) -> Self {
        Domain::Const(p.into())
    }
}

impl Domain {
    /// Draws one value.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Param {
        match self {
            Domain::Uniform { low, high } => Param::Float(low + (high - low) * rng.gen::<f64>()),
            Domain::LogUniform { low, high } => {
                let (a, b) = (low.log10(), high.log10());
                Param::Float(
                    10f64
                        .powf(a + (b - a) * rng.gen::<f64>())
                        .clamp(*low, *high),
                )
            }
            Domain::QUniform { low, high, q } => {
                let x = low + (high - low) * rng.gen::<f64>();
                Param::Float(((x / q).round() * q).clamp(*low, *high))
            }
            Domain::RandInt { low, high } => Param::Int(rng.gen_range(*low..*high)),
            Domain::Choice(values) | Domain::Grid(values) => {
                values[rng.gen_range(0..values.len())].clone()
            }
            Domain::Const(p) => p.clone(),
        }
    }

    /// Why this domain cannot be sampled, if it cannot.
    fn problem(&self) -> Option<String> {
        let finite = |xs: &[f64]| xs.iter().all(|x| x.is_finite());
        match self {
            Domain::Uniform { low, high } if !finite(&[*low, *high]) || low >= high => {
                Some(format!("uniform({low}, {high}) needs finite low < high"))
            }
            Domain::LogUniform { low, high }
                if !finite(&[*low, *high]) || *low <= 0.0 || low >= high =>
            {
                Some(format!("loguniform({low}, {high}) needs 0 < low < high"))
            }
            Domain::QUniform { low, high, q }
                if !finite(&[*low, *high, *q]) || low >= high || *q <= 0.0 =>
            {
                Some(format!(
                    "quniform({low}, {high}, {q}) needs low < high and q > 0"
                ))
            }
            Domain::RandInt { low, high } if low >= high => {
                Some(format!("randint({low}, {high}) needs low < high"))
            }
            Domain::Choice(v) | Domain::Grid(v) if v.is_empty() => {
                Some("an empty list of values".into())
            }
            _ => None,
        }
    }
}

/// Named parameters and their domains, in the order they were added.
///
/// ```
/// use prism_tune::{choice, loguniform, Space};
/// use rand::SeedableRng;
/// let space = Space::new()
///     .add("C", loguniform(1e-6, 1e6))
///     .add("class_weight", choice(["none", "balanced"]))
///     .add("cache_mb", 200);
/// let config = space.sample(&mut rand::rngs::StdRng::seed_from_u64(7)).unwrap();
/// let c = config.f64("C").unwrap();
/// assert!((1e-6..=1e6).contains(&c));
/// assert_eq!(config.i64("cache_mb").unwrap(), 200);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Space {
    params: Vec<(String, Domain)>,
}

impl Space {
    /// An empty space.
    pub fn new() -> Space {
        Space::default()
    }

    /// Adds (or replaces) a parameter.
    pub fn add(mut self, name: impl Into<String>, domain: impl Into<Domain>) -> Space {
        let name = name.into();
        let domain = domain.into();
        match self.params.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = domain,
            None => self.params.push((name, domain)),
        }
        self
    }

    /// The parameters, in order.
    pub fn params(&self) -> &[(String, Domain)] {
        &self.params
    }

    /// Fails with [`TuneError::Space`] naming the first parameter whose domain cannot be
    /// sampled.
    pub fn check(&self) -> Result<(), TuneError> {
        match self
            .params
            .iter()
            .find_map(|(n, d)| d.problem().map(|p| (n, p)))
        {
            Some((name, problem)) => Err(TuneError::Space(format!("parameter {name}: {problem}"))),
            None => Ok(()),
        }
    }

    /// Draws one configuration (grid parameters included, uniformly).
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Result<Config, TuneError> {
        self.check()?;
        Ok(Config(
            self.params
                .iter()
                .map(|(n, d)| (n.clone(), d.sample(rng)))
                .collect(),
        ))
    }
}

/// One point of a space: parameter names and their values.
///
/// ```
/// #[derive(serde::Deserialize)]
/// struct Svm { c: f64, gamma: f64, kernel: String }
/// let config = prism_tune::Config::from_pairs([
///     ("c", 10.0.into()), ("gamma", 0.001.into()), ("kernel", "rbf".into()),
/// ]);
/// let svm: Svm = config.to_struct().unwrap();
/// assert_eq!((svm.c, svm.kernel.as_str()), (10.0, "rbf"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Config(pub BTreeMap<String, Param>);

impl Config {
    /// A configuration of these values.
    pub fn from_pairs<S: Into<String>>(pairs: impl IntoIterator<Item = (S, Param)>) -> Config {
        Config(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// A parameter's value, if the configuration has it.
    pub fn get(&self, name: &str) -> Option<&Param> {
        self.0.get(name)
    }

    fn need(&self, name: &str) -> Result<&Param, TuneError> {
        self.0
            .get(name)
            .ok_or_else(|| TuneError::Config(format!("no parameter {name} in {self}")))
    }

    fn wrong(&self, name: &str, wanted: &str) -> TuneError {
        TuneError::Config(format!("parameter {name} is not {wanted} in {self}"))
    }

    /// A real parameter (integers are read as reals).
    pub fn f64(&self, name: &str) -> Result<f64, TuneError> {
        match self.need(name)? {
            Param::Float(x) => Ok(*x),
            Param::Int(i) => Ok(*i as f64),
            _ => Err(self.wrong(name, "a number")),
        }
    }

    /// An integer parameter.
    pub fn i64(&self, name: &str) -> Result<i64, TuneError> {
        match self.need(name)? {
            Param::Int(i) => Ok(*i),
            _ => Err(self.wrong(name, "an integer")),
        }
    }

    /// A string parameter.
    pub fn str(&self, name: &str) -> Result<&str, TuneError> {
        match self.need(name)? {
            Param::Str(s) => Ok(s),
            _ => Err(self.wrong(name, "a string")),
        }
    }

    /// A boolean parameter.
    pub fn bool(&self, name: &str) -> Result<bool, TuneError> {
        match self.need(name)? {
            Param::Bool(b) => Ok(*b),
            _ => Err(self.wrong(name, "a boolean")),
        }
    }

    /// The configuration as a JSON object of plain values.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect(),
        )
    }

    /// The configuration read into a struct whose fields are its parameters.
    pub fn to_struct<T: DeserializeOwned>(&self) -> Result<T, TuneError> {
        serde_json::from_value(self.to_json())
            .map_err(|e| TuneError::Config(format!("{e} in {self}")))
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        write!(f, "{{{}}}", parts.join(", "))
    }
}
