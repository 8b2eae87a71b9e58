//! scikit-learn's random draws, reproduced: the configurations that
//! `RandomizedSearchCV(random_state=seed)` (its `ParameterSampler`) would try, in the
//! same order, so that a search ported from scikit-learn scores exactly the candidates
//! it scored there, and the two can be compared candidate by candidate.
//!
//! scikit-learn draws from numpy's legacy `RandomState(seed)`, a Mersenne Twister
//! (MT19937) seeded with `init_genrand`, and for each configuration visits the
//! parameters in sorted order of their names: a scipy distribution draws with its
//! `rvs`, a list takes the element at `randint(len)`. [`SklearnDraws`] does the same
//! for the domains that have a scipy counterpart:
//!
//! | prism-tune | scikit-learn |
//! |---|---|
//! | `loguniform(a, b)` | `scipy.stats.loguniform(a, b)` |
//! | `uniform(a, b)` | `scipy.stats.uniform(a, b - a)` |
//! | `randint(a, b)` | `scipy.stats.randint(a, b)` |
//! | `choice([..])`, `grid([..])`, a constant | a list (a constant is a list of one) |
//!
//! `quniform` has no scipy counterpart and is refused, as is a space of lists alone,
//! which scikit-learn samples without replacement by another method.
//!
//! ```
//! use prism_tune::sklearn::SklearnDraws;
//! use prism_tune::{loguniform, Space};
//! // RandomizedSearchCV(SVC(), {"C": loguniform(1e-2, 1e3), "gamma": loguniform(1e-5, 1e-1)},
//! //                    random_state=0): its first candidate.
//! let space = Space::new()
//!     .add("C", loguniform(1e-2, 1e3))
//!     .add("gamma", loguniform(1e-5, 1e-1));
//! let first = SklearnDraws::new(0).sample(&space).unwrap();
//! assert!((first.f64("C").unwrap() - 5.547119471592121).abs() < 1e-12);
//! assert!((first.f64("gamma").unwrap() - 0.007257005721594277).abs() < 1e-15);
//! ```

use crate::space::{Config, Domain, Param, Space};
use crate::TuneError;

/// numpy's legacy Mersenne Twister (`numpy.random.RandomState`): the same 32-bit
/// numbers, doubles and bounded integers for the same seed.
#[derive(Clone)]
pub struct Mt19937 {
    state: Box<[u32; N]>,
    pos: usize,
    seed: u32,
    /// 32-bit numbers drawn so far.
    drawn: u64,
}

const N: usize = 624;
const M: usize = 397;

impl Mt19937 {
    /// The generator `RandomState(seed)` starts from.
    pub fn new(seed: u32) -> Mt19937 {
        let mut state = Box::new([0u32; N]);
        state[0] = seed;
        for i in 1..N {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Mt19937 {
            state,
            pos: N,
            seed,
            drawn: 0,
        }
    }

    /// The seed it started from and how many 32-bit numbers it has drawn since.
    pub fn position(&self) -> (u32, u64) {
        (self.seed, self.drawn)
    }

    /// The generator `RandomState(seed)` is after `drawn` 32-bit numbers.
    pub fn at(seed: u32, drawn: u64) -> Mt19937 {
        let mut r = Mt19937::new(seed);
        for _ in 0..drawn {
            r.next_u32();
        }
        r
    }

    fn twist(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        for i in 0..N {
            let y = (self.state[i] & UPPER) | (self.state[(i + 1) % N] & LOWER);
            let mut next = self.state[(i + M) % N] ^ (y >> 1);
            if y & 1 == 1 {
                next ^= 0x9908_b0df;
            }
            self.state[i] = next;
        }
        self.pos = 0;
    }

    /// The next 32-bit number.
    pub fn next_u32(&mut self) -> u32 {
        if self.pos >= N {
            self.twist();
        }
        let mut y = self.state[self.pos];
        self.pos += 1;
        self.drawn += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// A double in `[0, 1)` with 53 random bits, as `random_sample()`.
    pub fn random_sample(&mut self) -> f64 {
        let a = (self.next_u32() >> 5) as f64;
        let b = (self.next_u32() >> 6) as f64;
        (a * 67_108_864.0 + b) / 9_007_199_254_740_992.0
    }

    /// An integer in `[low, high)`, as `randint(low, high)`: masked rejection sampling
    /// of 32-bit numbers (ranges wider than 32 bits take two per draw).
    pub fn randint(&mut self, low: i64, high: i64) -> i64 {
        let range = (high as i128 - low as i128 - 1) as u64;
        if range == 0 {
            return low;
        }
        let mask = u64::MAX >> range.leading_zeros();
        let draw = loop {
            let v = if range <= u32::MAX as u64 {
                (self.next_u32() as u64) & mask
            } else {
                let hi = self.next_u32() as u64;
                let lo = self.next_u32() as u64;
                ((hi << 32) | lo) & mask
            };
            if v <= range {
                break v;
            }
        };
        (low as i128 + draw as i128) as i64
    }
}

/// Configurations drawn as scikit-learn's `ParameterSampler(random_state=seed)` draws
/// them; see the module's documentation.
#[derive(Clone)]
pub struct SklearnDraws {
    rng: Mt19937,
}

impl SklearnDraws {
    /// Draws as `random_state=seed` does.
    pub fn new(seed: u32) -> SklearnDraws {
        SklearnDraws {
            rng: Mt19937::new(seed),
        }
    }

    /// Where the draws are: the seed and how many numbers were drawn.
    pub fn state(&self) -> serde_json::Value {
        let (seed, drawn) = self.rng.position();
        serde_json::json!({"seed": seed, "drawn": drawn})
    }

    /// Goes back to a [`SklearnDraws::state`] of draws with the same seed.
    pub fn restore(&mut self, state: &serde_json::Value) -> Result<(), TuneError> {
        let number = |k: &str| state.get(k).and_then(serde_json::Value::as_u64);
        match (number("seed"), number("drawn")) {
            (Some(seed), Some(drawn)) if seed == self.rng.position().0 as u64 => {
                self.rng = Mt19937::at(seed as u32, drawn);
                Ok(())
            }
            _ => Err(TuneError::Config(format!(
                "not the state of scikit-learn draws seeded with {}: {state}",
                self.rng.position().0
            ))),
        }
    }

    /// Fails with [`TuneError::Space`] if scikit-learn would not draw `space` this way.
    pub fn check(space: &Space) -> Result<(), TuneError> {
        space.check()?;
        if let Some((name, _)) = space
            .params()
            .iter()
            .find(|(_, d)| matches!(d, Domain::QUniform { .. }))
        {
            return Err(TuneError::Space(format!(
                "parameter {name}: quniform has no scipy counterpart for scikit-learn's draws"
            )));
        }
        let listed =
            |d: &Domain| matches!(d, Domain::Choice(_) | Domain::Grid(_) | Domain::Const(_));
        if space.params().iter().all(|(_, d)| listed(d)) {
            return Err(TuneError::Space(
                "a space of lists alone is sampled without replacement by scikit-learn; \
                 use a GridSearch"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The next configuration.
    pub fn sample(&mut self, space: &Space) -> Result<Config, TuneError> {
        Self::check(space)?;
        let mut params: Vec<&(String, Domain)> = space.params().iter().collect();
        // Python sorts the names by code point, which is byte order in UTF-8.
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let mut config = Config::default();
        for (name, domain) in params {
            let value = match domain {
                Domain::LogUniform { low, high } => {
                    let (a, b) = (low.ln(), high.ln());
                    Param::Float((a + self.rng.random_sample() * (b - a)).exp())
                }
                Domain::Uniform { low, high } => {
                    Param::Float(self.rng.random_sample() * (high - low) + low)
                }
                Domain::RandInt { low, high } => Param::Int(self.rng.randint(*low, *high)),
                Domain::Choice(values) | Domain::Grid(values) => {
                    values[self.rng.randint(0, values.len() as i64) as usize].clone()
                }
                Domain::Const(p) => {
                    // A list of one: numpy draws nothing for `randint(1)`.
                    self.rng.randint(0, 1);
                    p.clone()
                }
                Domain::QUniform { .. } => unreachable!("refused by check"),
            };
            config.0.insert(name.clone(), value);
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{choice, loguniform, randint, uniform};

    // The reference values below were printed by numpy 2.4.6, scipy 1.17.1 and
    // scikit-learn 1.9.1.

    #[test]
    fn the_stream_is_numpys() {
        let mut r = Mt19937::new(0);
        assert_eq!(r.random_sample(), 0.5488135039273248);
        assert_eq!(r.random_sample(), 0.7151893663724195);
        assert_eq!(r.random_sample(), 0.6027633760716439);
        // RandomState(0).randint(2**31), twice.
        let mut r = Mt19937::new(0);
        assert_eq!(r.randint(0, 1 << 31), 209_652_396);
        assert_eq!(r.randint(0, 1 << 31), 398_764_591);
        // RandomState(12345): randint(7) ten times, then randint(3, 1000) five times.
        let mut r = Mt19937::new(12345);
        let small: Vec<i64> = (0..10).map(|_| r.randint(0, 7)).collect();
        assert_eq!(small, [2, 5, 5, 1, 4, 1, 6, 6, 5, 2]);
        let wide: Vec<i64> = (0..5).map(|_| r.randint(3, 1000)).collect();
        assert_eq!(wide, [544, 772, 121, 372, 318]);
        // RandomState(3): randint(0, 2**40) three times (two 32-bit draws each), then
        // randint(-5, 5) four times.
        let mut r = Mt19937::new(3);
        let huge: Vec<i64> = (0..3).map(|_| r.randint(0, 1 << 40)).collect();
        assert_eq!(huge, [455_570_294_424, 1_073_054_410_371, 790_795_084_744]);
        let signed: Vec<i64> = (0..4).map(|_| r.randint(-5, 5)).collect();
        assert_eq!(signed, [-5, 0, -2, 4]);
    }

    #[test]
    fn configurations_are_parameter_samplers() {
        // ParameterSampler({C: loguniform(1e-6, 1e6), gamma: loguniform(1e-8, 1e8),
        //   tol: loguniform(1e-4, 1e-1), class_weight: [None, "balanced"],
        //   depth: randint(2, 9), frac: uniform(0.25, 0.5)}, n_iter=3, random_state=7)
        let space = Space::new()
            .add("gamma", loguniform(1e-8, 1e8))
            .add("C", loguniform(1e-6, 1e6))
            .add("tol", loguniform(1e-4, 1e-1))
            .add("class_weight", choice(["none", "balanced"]))
            .add("depth", randint(2, 9))
            .add("frac", uniform(0.25, 0.75));
        let mut draws = SklearnDraws::new(7);
        let expected = [
            (
                8.235680168123277e-06,
                "balanced",
                8,
                0.46920461572044675,
                3762.2083700378807,
                0.08589512894663642,
            ),
            (
                2.8970130058196295,
                "none",
                3,
                0.28602556667988077,
                0.00019725302932237208,
                0.0031597120213268807,
            ),
            (
                141.50114478805298,
                "balanced",
                6,
                0.44647115493542083,
                615.583211504856,
                0.01039804804331547,
            ),
        ];
        for (c, weight, depth, frac, gamma, tol) in expected {
            let got = draws.sample(&space).unwrap();
            let close = |name: &str, want: f64| {
                let v = got.f64(name).unwrap();
                assert!(
                    (v - want).abs() <= want.abs() * 1e-13,
                    "{name}: {v} vs {want}"
                );
            };
            close("C", c);
            close("gamma", gamma);
            close("tol", tol);
            close("frac", frac);
            assert_eq!(got.str("class_weight").unwrap(), weight);
            assert_eq!(got.i64("depth").unwrap(), depth);
        }
    }

    #[test]
    fn spaces_without_a_scipy_counterpart_are_refused() {
        let q = Space::new().add("x", crate::quniform(0.0, 1.0, 0.1));
        assert!(matches!(
            SklearnDraws::new(0).sample(&q),
            Err(TuneError::Space(_))
        ));
        let lists = Space::new().add("k", choice([1, 2, 3]));
        assert!(matches!(
            SklearnDraws::new(0).sample(&lists),
            Err(TuneError::Space(_))
        ));
    }
}
