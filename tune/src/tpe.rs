//! A model-based searcher: the tree-structured Parzen estimator (TPE) of Bergstra et al.
//! (2011), as hyperopt and Optuna use it.
//!
//! The first `startup` configurations are drawn at random. After that, the results seen
//! so far are split into the best `gamma` fraction ("good") and the rest ("bad"), and
//! each parameter is modelled on its own by two densities: `l(x)` over the good results'
//! values and `g(x)` over the bad ones' (Gaussian kernels around each value, plus a wide
//! prior kernel; for `choice`/`grid`, smoothed frequencies). `candidates` values are
//! drawn from `l` and the one with the highest `l(x) / g(x)` is suggested: the value most
//! typical of good results and least typical of bad ones. Reals of a `loguniform` domain
//! are modelled on their logarithm, `quniform` and `randint` values are rounded back
//! onto their grid.

use rand::Rng;
use rand_chacha::ChaCha12Rng;
use serde_json::{json, Value};

use crate::search::{state_usize, Searcher, SeededRng};
use crate::space::{Config, Domain, Param, Space};
use crate::TuneError;

/// The TPE searcher (see the module's documentation).
///
/// ```
/// use prism_tune::{loguniform, Searcher, Space, Tpe};
/// let space = Space::new().add("lr", loguniform(1e-5, 1e0));
/// let mut tpe = Tpe::new(&space, 40, 0).unwrap();
/// let mut best = f64::NEG_INFINITY;
/// while let Some(config) = tpe.suggest() {
///     let lr = config.f64("lr").unwrap();
///     let score = -(lr.log10() + 2.0).powi(2); // best at lr = 0.01
///     best = best.max(score);
///     tpe.observe(&config, score);
/// }
/// assert!(best > -0.05);
/// ```
pub struct Tpe {
    space: Space,
    rng: SeededRng,
    total: usize,
    suggested: usize,
    startup: usize,
    gamma: f64,
    candidates: usize,
    observed: Vec<(Config, f64)>,
}

impl Tpe {
    /// TPE over `space` for `num_samples` configurations, seeded; 10 random start-up
    /// configurations, the best quarter counted as good, 24 candidates per parameter.
    pub fn new(space: &Space, num_samples: usize, seed: u64) -> Result<Tpe, TuneError> {
        space.check()?;
        Ok(Tpe {
            space: space.clone(),
            rng: SeededRng::new(seed),
            total: num_samples,
            suggested: 0,
            startup: 10,
            gamma: 0.25,
            candidates: 24,
            observed: Vec::new(),
        })
    }

    /// How many configurations are drawn at random before the model is used.
    pub fn startup(mut self, n: usize) -> Tpe {
        self.startup = n.max(2);
        self
    }

    /// One parameter's value from the model, given the good and bad values seen.
    fn suggest_param(&mut self, domain: &Domain, good: &[&Param], bad: &[&Param]) -> Param {
        match domain {
            Domain::Const(p) => p.clone(),
            Domain::Choice(values) | Domain::Grid(values) => {
                let weights = |seen: &[&Param]| -> Vec<f64> {
                    let n = seen.len() as f64 + values.len() as f64;
                    values
                        .iter()
                        .map(|v| (seen.iter().filter(|s| **s == v).count() as f64 + 1.0) / n)
                        .collect()
                };
                let (l, g) = (weights(good), weights(bad));
                let mut best = (f64::NEG_INFINITY, 0);
                for _ in 0..self.candidates {
                    let k = pick(&mut self.rng.rng, &l);
                    let ratio = l[k].ln() - g[k].ln();
                    if ratio > best.0 {
                        best = (ratio, k);
                    }
                }
                values[best.1].clone()
            }
            numeric => {
                let Some((lo, hi)) = bounds(numeric) else {
                    return numeric.sample(&mut self.rng.rng);
                };
                let to_x = |p: &&Param| p.as_f64().map(|v| internal(numeric, v));
                let good: Vec<f64> = good.iter().filter_map(to_x).collect();
                let bad: Vec<f64> = bad.iter().filter_map(to_x).collect();
                let (l, g) = (Parzen::new(&good, lo, hi), Parzen::new(&bad, lo, hi));
                let mut best = (f64::NEG_INFINITY, lo);
                for _ in 0..self.candidates {
                    let x = l.sample(&mut self.rng.rng);
                    let ratio = l.log_density(x) - g.log_density(x);
                    if ratio > best.0 {
                        best = (ratio, x);
                    }
                }
                external(numeric, best.1)
            }
        }
    }
}

impl Searcher for Tpe {
    fn suggest(&mut self) -> Option<Config> {
        if self.suggested >= self.total {
            return None;
        }
        self.suggested += 1;
        if self.observed.len() < self.startup {
            return self.space.sample(&mut self.rng.rng).ok();
        }
        let mut ranked: Vec<(Config, f64)> = self.observed.clone();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        let n_good =
            ((ranked.len() as f64 * self.gamma).ceil() as usize).clamp(1, ranked.len() - 1);
        let (good, bad) = ranked.split_at(n_good);
        let params = self.space.params().to_vec();
        let mut config = Config::default();
        for (name, domain) in &params {
            let values = |set: &[(Config, f64)]| -> Vec<Param> {
                set.iter()
                    .filter_map(|(c, _)| c.get(name).cloned())
                    .collect()
            };
            let (g, b) = (values(good), values(bad));
            let (g, b): (Vec<&Param>, Vec<&Param>) = (g.iter().collect(), b.iter().collect());
            let value = self.suggest_param(domain, &g, &b);
            config.0.insert(name.clone(), value);
        }
        Some(config)
    }

    fn observe(&mut self, config: &Config, score: f64) {
        if score.is_finite() {
            self.observed.push((config.clone(), score));
        }
    }

    fn state(&self) -> Option<Value> {
        Some(json!({
            "suggested": self.suggested,
            "rng": self.rng.state(),
            "observed": self.observed,
        }))
    }

    fn restore(&mut self, state: &Value) -> Result<(), TuneError> {
        let suggested = state_usize(state, "suggested")?;
        let observed: Vec<(Config, f64)> =
            serde_json::from_value(state.get("observed").cloned().unwrap_or(Value::Null))
                .map_err(|e| TuneError::Config(format!("the TPE's saved results: {e}")))?;
        self.rng.restore(state.get("rng").unwrap_or(&Value::Null))?;
        self.suggested = suggested;
        self.observed = observed;
        Ok(())
    }
}

/// The bounds of a numeric domain in the space it is modelled in.
fn bounds(d: &Domain) -> Option<(f64, f64)> {
    match d {
        Domain::Uniform { low, high } | Domain::QUniform { low, high, .. } => Some((*low, *high)),
        Domain::LogUniform { low, high } => Some((low.log10(), high.log10())),
        Domain::RandInt { low, high } => Some((*low as f64 - 0.5, *high as f64 - 0.5)),
        _ => None,
    }
}

/// A value in the space it is modelled in.
fn internal(d: &Domain, v: f64) -> f64 {
    match d {
        Domain::LogUniform { .. } => v.max(f64::MIN_POSITIVE).log10(),
        _ => v,
    }
}

/// A modelled value back in its domain.
fn external(d: &Domain, x: f64) -> Param {
    match d {
        Domain::LogUniform { low, high } => Param::Float(10f64.powf(x).clamp(*low, *high)),
        Domain::QUniform { low, high, q } => Param::Float(((x / q).round() * q).clamp(*low, *high)),
        Domain::RandInt { low, high } => Param::Int((x.round() as i64).clamp(*low, *high - 1)),
        _ => Param::Float(x),
    }
}

/// Draws an index with probability proportional to `weights`.
fn pick(rng: &mut ChaCha12Rng, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut r = rng.gen::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if r < *w {
            return i;
        }
        r -= w;
    }
    weights.len() - 1
}

/// A mixture of Gaussian kernels on `[lo, hi]`: one per observed value, plus a prior
/// kernel over the whole interval, all weighted equally.
struct Parzen {
    mus: Vec<f64>,
    sigmas: Vec<f64>,
    lo: f64,
    hi: f64,
}

impl Parzen {
    fn new(points: &[f64], lo: f64, hi: f64) -> Parzen {
        let width = hi - lo;
        let mut mus: Vec<f64> = points.iter().map(|p| p.clamp(lo, hi)).collect();
        mus.push((lo + hi) / 2.0);
        mus.sort_by(f64::total_cmp);
        // Each kernel as wide as the larger gap to its neighbours (hyperopt's rule),
        // clipped so that no kernel is a spike or wider than the interval.
        let min_sigma = width / (mus.len() as f64 + 1.0).min(100.0);
        let sigmas = (0..mus.len())
            .map(|i| {
                let left = if i == 0 {
                    mus[i] - lo
                } else {
                    mus[i] - mus[i - 1]
                };
                let right = if i + 1 == mus.len() {
                    hi - mus[i]
                } else {
                    mus[i + 1] - mus[i]
                };
                left.max(right).clamp(min_sigma, width)
            })
            .collect::<Vec<f64>>();
        // The prior kernel spans the interval.
        let mut p = Parzen {
            mus,
            sigmas,
            lo,
            hi,
        };
        if let Some(i) = p.mus.iter().position(|m| *m == (lo + hi) / 2.0) {
            p.sigmas[i] = width;
        }
        p
    }

    fn sample(&self, rng: &mut ChaCha12Rng) -> f64 {
        let k = rng.gen_range(0..self.mus.len());
        for _ in 0..16 {
            // Box–Muller: one standard normal draw.
            let (u1, u2): (f64, f64) = (rng.gen::<f64>().max(1e-300), rng.gen());
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            let x = self.mus[k] + self.sigmas[k] * z;
            if (self.lo..=self.hi).contains(&x) {
                return x;
            }
        }
        self.mus[k].clamp(self.lo, self.hi)
    }

    fn log_density(&self, x: f64) -> f64 {
        let n = self.mus.len() as f64;
        let density: f64 = self
            .mus
            .iter()
            .zip(&self.sigmas)
            .map(|(m, s)| {
                let z = (x - m) / s;
                (-0.5 * z * z).exp() / (s * (std::f64::consts::TAU).sqrt())
            })
            .sum::<f64>()
            / n;
        density.max(1e-300).ln()
    }
}
