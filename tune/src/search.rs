//! Searchers: where the next trial's configuration comes from.
//!
//! A [`Searcher`] suggests configurations one at a time and hears how each scored, so
//! a model-based searcher can steer toward good regions; [`RandomSearch`] and
//! [`GridSearch`] ignore the scores. Both are seeded: the same seed gives the same
//! configurations in the same order.

use std::collections::VecDeque;

use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::sklearn::SklearnDraws;
use crate::space::{Config, Domain, Param, Space};
use crate::TuneError;

/// Where trials' configurations come from.
pub trait Searcher: Send {
    /// The next configuration to try, or `None` when the search has no more.
    fn suggest(&mut self) -> Option<Config>;

    /// How a suggested configuration scored (higher is better). The default ignores it.
    fn observe(&mut self, _config: &Config, _score: f64) {}
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
    left: usize,
}

/// Where a random search's randomness comes from.
enum Draws {
    Seeded(Box<StdRng>),
    Sklearn(SklearnDraws),
}

impl RandomSearch {
    /// A random search of `num_samples` configurations, seeded.
    pub fn new(space: &Space, num_samples: usize, seed: u64) -> Result<RandomSearch, TuneError> {
        space.check()?;
        Ok(RandomSearch {
            space: space.clone(),
            draws: Draws::Seeded(Box::new(StdRng::seed_from_u64(seed))),
            left: num_samples,
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
            left: num_samples,
        })
    }
}

impl Searcher for RandomSearch {
    fn suggest(&mut self) -> Option<Config> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        match &mut self.draws {
            Draws::Seeded(rng) => self.space.sample(rng.as_mut()).ok(),
            Draws::Sklearn(draws) => draws.sample(&self.space).ok(),
        }
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
}

impl GridSearch {
    /// The grid of `space`, repeated `num_samples` times, seeded.
    pub fn new(space: &Space, num_samples: usize, seed: u64) -> Result<GridSearch, TuneError> {
        space.check()?;
        let mut rng = StdRng::seed_from_u64(seed);
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
        Ok(GridSearch { configs })
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
        self.configs.pop_front()
    }
}
