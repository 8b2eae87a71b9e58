//! Searchers: where the next trial's configuration comes from.
//!
//! A [`Searcher`] suggests configurations one at a time and hears how each scored, so
//! a model-based searcher can steer toward good regions; [`RandomSearch`] and
//! [`GridSearch`] ignore the scores. Both are seeded: the same seed gives the same
//! configurations in the same order.
//!
//! A searcher can say what state it is in ([`Searcher::state`]): what it has drawn and
//! learnt, as JSON. An experiment directory keeps it, so that a resumed run goes on
//! exactly where the interrupted one was, even when trials finished in another order
//! than they started.

use std::collections::VecDeque;

use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;
use serde_json::{json, Value};

use crate::sklearn::SklearnDraws;
use crate::space::{Config, Domain, Param, Space};
use crate::TuneError;

/// Where trials' configurations come from.
pub trait Searcher: Send {
    /// The next configuration to try, or `None` when the search has no more.
    fn suggest(&mut self) -> Option<Config>;

    /// How a suggested configuration scored (higher is better). The default ignores it.
    fn observe(&mut self, _config: &Config, _score: f64) {}

    /// What the searcher has drawn and learnt so far, for an experiment directory;
    /// `None` (the default) if it cannot say, and a resumed run then replays the
    /// recorded trials into a new searcher instead.
    fn state(&self) -> Option<Value> {
        None
    }

    /// Takes back a [`Searcher::state`] of a searcher built the same way (the same
    /// space and seed; the budget of configurations may differ: the resumed run's
    /// counts).
    fn restore(&mut self, _state: &Value) -> Result<(), TuneError> {
        Err(TuneError::Config("this searcher keeps no state".into()))
    }
}

/// A seeded random number generator whose position can be saved and restored (ChaCha12,
/// as rand's `StdRng`, so a seed draws the same numbers as `StdRng` would).
#[derive(Clone)]
pub(crate) struct SeededRng {
    seed: u64,
    pub(crate) rng: ChaCha12Rng,
}

impl SeededRng {
    pub(crate) fn new(seed: u64) -> SeededRng {
        SeededRng {
            seed,
            rng: ChaCha12Rng::seed_from_u64(seed),
        }
    }

    pub(crate) fn state(&self) -> Value {
        json!({"seed": self.seed, "word_pos": self.rng.get_word_pos().to_string()})
    }

    pub(crate) fn restore(&mut self, state: &Value) -> Result<(), TuneError> {
        let seed = state.get("seed").and_then(Value::as_u64);
        let pos = state
            .get("word_pos")
            .and_then(Value::as_str)
            .and_then(|p| p.parse::<u128>().ok());
        match (seed, pos) {
            (Some(seed), Some(pos)) if seed == self.seed => {
                self.rng.set_word_pos(pos);
                Ok(())
            }
            (Some(seed), Some(_)) => Err(TuneError::Config(format!(
                "the saved searcher was seeded with {seed}, this one with {}",
                self.seed
            ))),
            _ => Err(TuneError::Config(format!(
                "not a random generator's state: {state}"
            ))),
        }
    }
}

/// A number from a saved state, or an error naming it.
pub(crate) fn state_usize(state: &Value, key: &str) -> Result<usize, TuneError> {
    state
        .get(key)
        .and_then(Value::as_u64)
        .map(|n| n as usize)
        .ok_or_else(|| TuneError::Config(format!("no {key} in the searcher's state {state}")))
}

/// `num_samples` configurations drawn independently from a space.
///
/// ```
/// use prism_tune::{loguniform, RandomSearch, Searcher, Space};
/// let space = Space::new().add("lr", loguniform(1e-4, 1e-1));
/// let mut search = RandomSearch::new(&space, 3, 42).unwrap();
/// let first: Vec<_> = std::iter::from_fn(|| search.suggest()).collect();
/// assert_eq!(first.len(), 3);
/// let mut again = RandomSearch::new(&space, 3, 42).unwrap();
/// assert_eq!(again.suggest().as_ref(), first.first()); // same seed, same configurations
/// ```
pub struct RandomSearch {
    space: Space,
    draws: Draws,
    total: usize,
    drawn: usize,
}

/// Where a random search's randomness comes from.
enum Draws {
    Seeded(Box<SeededRng>),
    Sklearn(SklearnDraws),
}

impl RandomSearch {
    /// A random search of `num_samples` configurations, seeded.
    pub fn new(space: &Space, num_samples: usize, seed: u64) -> Result<RandomSearch, TuneError> {
        space.check()?;
        Ok(RandomSearch {
            space: space.clone(),
            draws: Draws::Seeded(Box::new(SeededRng::new(seed))),
            total: num_samples,
            drawn: 0,
        })
    }

    /// The `num_samples` configurations scikit-learn's
    /// `RandomizedSearchCV(n_iter=num_samples, random_state=seed)` tries, in its order
    /// (see [`crate::sklearn`] for the domains it accepts).
    ///
    /// ```
    /// use prism_tune::{loguniform, RandomSearch, Searcher, Space};
    /// let space = Space::new().add("C", loguniform(1e-2, 1e3));
    /// let mut search = RandomSearch::sklearn(&space, 30, 0).unwrap();
    /// let c = search.suggest().unwrap().f64("C").unwrap();
    /// assert!((c - 5.547119471592121).abs() < 1e-12); // scipy's first draw for seed 0
    /// ```
    pub fn sklearn(
        space: &Space,
        num_samples: usize,
        seed: u32,
    ) -> Result<RandomSearch, TuneError> {
        SklearnDraws::check(space)?;
        Ok(RandomSearch {
            space: space.clone(),
            draws: Draws::Sklearn(SklearnDraws::new(seed)),
            total: num_samples,
            drawn: 0,
        })
    }
}

impl Searcher for RandomSearch {
    fn suggest(&mut self) -> Option<Config> {
        if self.drawn >= self.total {
            return None;
        }
        self.drawn += 1;
        match &mut self.draws {
            Draws::Seeded(r) => self.space.sample(&mut r.rng).ok(),
            Draws::Sklearn(draws) => draws.sample(&self.space).ok(),
        }
    }

    fn state(&self) -> Option<Value> {
        let draws = match &self.draws {
            Draws::Seeded(r) => r.state(),
            Draws::Sklearn(d) => d.state(),
        };
        Some(json!({"drawn": self.drawn, "draws": draws}))
    }

    /// Takes back the draws; the budget stays this searcher's, so a resumed run may
    /// be given more samples than the interrupted one.
    fn restore(&mut self, state: &Value) -> Result<(), TuneError> {
        let drawn = state_usize(state, "drawn")?;
        let draws = state.get("draws").unwrap_or(&Value::Null);
        match &mut self.draws {
            Draws::Seeded(r) => r.restore(draws)?,
            Draws::Sklearn(d) => d.restore(draws)?,
        }
        self.drawn = drawn;
        Ok(())
    }
}

/// Every combination of a space's `grid` parameters, the whole grid repeated
/// `num_samples` times (as Ray Tune does); the other parameters are drawn afresh for
/// each configuration. Without grid parameters, `num_samples` random configurations.
///
/// ```
/// use prism_tune::{grid, uniform, GridSearch, Searcher, Space};
/// let space = Space::new()
///     .add("depth", grid([2, 4, 8]))
///     .add("loss", grid(["l1", "l2"]))
///     .add("dropout", uniform(0.0, 0.5));
/// let mut search = GridSearch::new(&space, 2, 0).unwrap();
/// assert_eq!(search.len(), 12); // 3 × 2 combinations, twice
/// ```
pub struct GridSearch {
    configs: VecDeque<Config>,
    /// How many have been suggested.
    taken: usize,
}

impl GridSearch {
    /// The grid of `space`, repeated `num_samples` times, seeded.
    pub fn new(space: &Space, num_samples: usize, seed: u64) -> Result<GridSearch, TuneError> {
        space.check()?;
        let mut rng = ChaCha12Rng::seed_from_u64(seed);
        // The grid's combinations, the first grid parameter varying slowest.
        let mut combos: Vec<Vec<(String, Param)>> = vec![Vec::new()];
        for (name, domain) in space.params() {
            if let Domain::Grid(values) = domain {
                combos = combos
                    .into_iter()
                    .flat_map(|c| {
                        values.iter().map(move |v| {
                            let mut c = c.clone();
                            c.push((name.clone(), v.clone()));
                            c
                        })
                    })
                    .collect();
            }
        }
        let mut configs = VecDeque::with_capacity(combos.len() * num_samples);
        for _ in 0..num_samples {
            for combo in &combos {
                let mut config = space.sample(&mut rng)?;
                for (name, value) in combo {
                    config.0.insert(name.clone(), value.clone());
                }
                configs.push_back(config);
            }
        }
        Ok(GridSearch { configs, taken: 0 })
    }

    /// How many configurations are left.
    pub fn len(&self) -> usize {
        self.configs.len()
    }

    /// Whether none are left.
    pub fn is_empty(&self) -> bool {
        self.configs.is_empty()
    }
}

impl Searcher for GridSearch {
    fn suggest(&mut self) -> Option<Config> {
        let next = self.configs.pop_front();
        self.taken += next.is_some() as usize;
        next
    }

    fn state(&self) -> Option<Value> {
        Some(json!({"taken": self.taken}))
    }

    fn restore(&mut self, state: &Value) -> Result<(), TuneError> {
        let taken = state_usize(state, "taken")?;
        if taken < self.taken {
            return Err(TuneError::Config(format!(
                "the saved grid search had taken {taken}, this one {}",
                self.taken
            )));
        }
        for _ in self.taken..taken {
            self.suggest();
        }
        Ok(())
    }
}
