//! Trial schedulers: after each result a trial reports, whether it goes on or stops.
//!
//! A trainable reports once per iteration (an epoch, say); the scheduler sees every
//! report of every trial and answers [`Decision::Continue`] or [`Decision::Stop`], so
//! that the budget goes to the promising trials. Three schedulers, as in Ray Tune:
//!
//! * [`Fifo`]: every trial runs to its end.
//! * [`Asha`]: asynchronous successive halving. Rungs sit at `grace_period`,
//!   `grace_period × reduction_factor`, ... below `max_t`; a trial reaching a rung
//!   goes on only if its result is in the top `1 / reduction_factor` of the results
//!   recorded at that rung so far (the cutoff is the `1 - 1/reduction_factor` quantile,
//!   interpolated linearly, as numpy's percentile does). A trial reaching `max_t` stops.
//! * [`MedianStopping`]: after `grace_period`, a trial whose best result so far is worse
//!   than the median of the other trials' running means up to the same iteration stops
//!   (once at least `min_samples` other trials have reported).

use std::collections::HashMap;

/// Which way a metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Higher is better (accuracy).
    #[default]
    Max,
    /// Lower is better (loss).
    Min,
}

impl Mode {
    /// The value with "higher is better" for both modes.
    pub fn signed(self, value: f64) -> f64 {
        match self {
            Mode::Max => value,
            Mode::Min => -value,
        }
    }
}

/// Whether a trial goes on after a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Run its next iteration.
    Continue,
    /// Stop it here.
    Stop,
}

/// Decides, result by result, which trials go on.
pub trait TrialScheduler: Send + Sync {
    /// Trial `trial` reported `value` (of the metric the scheduler was made for) after
    /// `iteration` iterations (counted from 1).
    fn on_result(&mut self, trial: usize, iteration: u64, value: f64) -> Decision;
}

/// Every trial runs to its end.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fifo;

impl TrialScheduler for Fifo {
    fn on_result(&mut self, _trial: usize, _iteration: u64, _value: f64) -> Decision {
        Decision::Continue
    }
}

/// Asynchronous successive halving (see the module's documentation).
///
/// ```
/// use prism_tune::schedule::{Asha, Decision, Mode, TrialScheduler};
/// let mut asha = Asha::new(Mode::Max, 100, 1, 2.0);
/// // Four trials reach the first rung, best first: the worse ones stop there.
/// let d: Vec<_> = [4.0, 3.0, 2.0, 1.0]
///     .iter()
///     .enumerate()
///     .map(|(trial, acc)| asha.on_result(trial, 1, *acc))
///     .collect();
/// assert_eq!(d, [Decision::Continue, Decision::Stop, Decision::Stop, Decision::Stop]);
/// ```
#[derive(Debug, Clone)]
pub struct Asha {
    mode: Mode,
    max_t: u64,
    reduction_factor: f64,
    /// The rungs' iterations, with the results recorded at each (higher is better).
    rungs: Vec<(u64, Vec<f64>)>,
}

impl Asha {
    /// ASHA for a metric of `mode`: trials stop at `max_t` iterations at the latest,
    /// the first rung is at `grace_period`, and each rung keeps the top
    /// `1 / reduction_factor` (`reduction_factor` > 1; Ray Tune's defaults are 100, 1
    /// and 4).
    pub fn new(mode: Mode, max_t: u64, grace_period: u64, reduction_factor: f64) -> Asha {
        let eta = reduction_factor.max(1.0 + f64::EPSILON);
        let mut rungs = Vec::new();
        let mut milestone = grace_period.max(1) as f64;
        while (milestone.round() as u64) < max_t {
            rungs.push((milestone.round() as u64, Vec::new()));
            milestone *= eta;
        }
        Asha {
            mode,
            max_t,
            reduction_factor: eta,
            rungs,
        }
    }

    /// The rungs' iterations.
    pub fn milestones(&self) -> Vec<u64> {
        self.rungs.iter().map(|(m, _)| *m).collect()
    }
}

/// The `q` quantile (0..=1) of `values`, interpolated linearly between ranks.
fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NEG_INFINITY;
    }
    v.sort_by(f64::total_cmp);
    let rank = q * (v.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (rank - lo as f64)
}

impl TrialScheduler for Asha {
    fn on_result(&mut self, _trial: usize, iteration: u64, value: f64) -> Decision {
        if iteration >= self.max_t {
            return Decision::Stop;
        }
        let signed = self.mode.signed(value);
        let keep = 1.0 - 1.0 / self.reduction_factor;
        match self.rungs.iter_mut().find(|(m, _)| *m == iteration) {
            Some((_, recorded)) => {
                recorded.push(signed);
                if signed < quantile(recorded, keep) {
                    Decision::Stop
                } else {
                    Decision::Continue
                }
            }
            None => Decision::Continue,
        }
    }
}

/// The median stopping rule (see the module's documentation).
///
/// ```
/// use prism_tune::schedule::{Decision, MedianStopping, Mode, TrialScheduler};
/// let mut rule = MedianStopping::new(Mode::Min, 2, 2);
/// for t in 1..=3 {
///     rule.on_result(0, t, 1.0); // two trials with low losses
///     rule.on_result(1, t, 2.0);
/// }
/// assert_eq!(rule.on_result(2, 1, 9.0), Decision::Continue); // within the grace period
/// assert_eq!(rule.on_result(2, 2, 9.0), Decision::Stop); // worse than the median
/// ```
#[derive(Debug, Clone)]
pub struct MedianStopping {
    mode: Mode,
    grace_period: u64,
    min_samples: usize,
    /// Each trial's results so far (higher is better), by iteration from 1.
    history: HashMap<usize, Vec<f64>>,
}

impl MedianStopping {
    /// The rule for a metric of `mode`, applied from `grace_period` iterations on and
    /// once `min_samples` other trials have reported (Ray Tune's defaults: 60 seconds
    /// of grace and 3 samples).
    pub fn new(mode: Mode, grace_period: u64, min_samples: usize) -> MedianStopping {
        MedianStopping {
            mode,
            grace_period,
            min_samples: min_samples.max(1),
            history: HashMap::new(),
        }
    }
}

impl TrialScheduler for MedianStopping {
    fn on_result(&mut self, trial: usize, iteration: u64, value: f64) -> Decision {
        let signed = self.mode.signed(value);
        let mine = self.history.entry(trial).or_default();
        mine.push(signed);
        let best = mine.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if iteration < self.grace_period {
            return Decision::Continue;
        }
        // Each other trial's mean over its results up to this iteration (all it has,
        // if it is not that far yet), as Ray Tune's rule does.
        let t = iteration as usize;
        let means: Vec<f64> = self
            .history
            .iter()
            .filter(|(id, h)| **id != trial && !h.is_empty())
            .map(|(_, h)| {
                let upto = &h[..t.min(h.len())];
                upto.iter().sum::<f64>() / upto.len() as f64
            })
            .collect();
        if means.len() < self.min_samples {
            return Decision::Continue;
        }
        if best < quantile(&means, 0.5) {
            Decision::Stop
        } else {
            Decision::Continue
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_like_numpy() {
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.5);
        assert_eq!(quantile(&[4.0, 1.0, 3.0], 0.5), 3.0);
        assert_eq!(quantile(&[1.0, 2.0], 0.75), 1.75);
        assert_eq!(quantile(&[5.0], 0.75), 5.0);
    }

    #[test]
    fn rungs_sit_at_grace_period_times_powers_of_the_factor() {
        assert_eq!(
            Asha::new(Mode::Max, 100, 1, 4.0).milestones(),
            [1, 4, 16, 64]
        );
        assert_eq!(Asha::new(Mode::Max, 27, 1, 3.0).milestones(), [1, 3, 9]);
        assert_eq!(Asha::new(Mode::Min, 10, 2, 2.0).milestones(), [2, 4, 8]);
    }
}
