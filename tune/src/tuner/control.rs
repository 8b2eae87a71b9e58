//! The trials' controller, an actor that hears every report of every trial and asks the
//! scheduler whether the trial goes on, and the [`Reporter`] trainables report through.
//!
//! A report may carry a checkpoint: bytes of the trainable's own making (its weights,
//! say) from which it can go on. The controller keeps each trial's latest, the tuner
//! writes it to the experiment directory, and a trial that runs again (after a failure,
//! or in a resumed run) starts from it: [`Reporter::checkpoint`].

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::Metrics;
use crate::schedule::{Asha, Decision, Fifo, MedianStopping, Mode, TrialScheduler};
use crate::TuneError;

/// Which scheduler decides on the trials, built where the trials' controller lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub enum SchedulerSpec {
    /// Every trial runs to its end.
    #[default]
    Fifo,
    /// Asynchronous successive halving (see [`Asha`]).
    Asha {
        /// The most iterations a trial runs.
        max_t: u64,
        /// The first rung's iteration.
        grace_period: u64,
        /// Each rung keeps the top `1 / reduction_factor`.
        reduction_factor: f64,
    },
    /// The median stopping rule (see [`MedianStopping`]).
    Median {
        /// Iterations before the rule applies.
        grace_period: u64,
        /// Other trials needed before it applies.
        min_samples: usize,
    },
}

impl SchedulerSpec {
    fn build(&self, mode: Mode) -> Box<dyn TrialScheduler + Sync> {
        match self {
            SchedulerSpec::Fifo => Box::new(Fifo),
            SchedulerSpec::Asha {
                max_t,
                grace_period,
                reduction_factor,
            } => Box::new(Asha::new(mode, *max_t, *grace_period, *reduction_factor)),
            SchedulerSpec::Median {
                grace_period,
                min_samples,
            } => Box::new(MedianStopping::new(mode, *grace_period, *min_samples)),
        }
    }
}

/// The trials' controller: hears every report, asks the scheduler, keeps the history.
#[prism::actor]
pub struct TrialControl {
    metric: String,
    scheduler: Box<dyn TrialScheduler + Sync>,
    /// A trial stopped at this many iterations ran its full budget: it completed.
    max_t: Option<u64>,
    /// A trial ends (completed) once one of these metrics reaches its value.
    stop_when: Vec<(String, f64)>,
    history: BTreeMap<usize, Vec<Metrics>>,
    stopped: BTreeSet<usize>,
    /// Each trial's latest checkpoint.
    checkpoints: BTreeMap<usize, Checkpoint>,
    /// Trials whose latest checkpoint the tuner has not taken yet.
    untaken: BTreeSet<usize>,
}

/// A trial's checkpoint: the bytes it reported, after so many iterations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The iterations reported when it was made.
    pub iteration: usize,
    /// The trainable's bytes.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

#[prism::actor]
impl TrialControl {
    /// A controller for `metric` (higher is better if `maximize`) with a scheduler; a
    /// trial ends once one of `stop_when`'s metrics (or `training_iteration`, its count
    /// of reports) reaches its value.
    pub fn new(
        metric: String,
        maximize: bool,
        scheduler: SchedulerSpec,
        stop_when: Vec<(String, f64)>,
    ) -> Self {
        let mode = if maximize { Mode::Max } else { Mode::Min };
        let max_t = match &scheduler {
            SchedulerSpec::Asha { max_t, .. } => Some(*max_t),
            _ => None,
        };
        TrialControl {
            metric,
            max_t,
            stop_when,
            scheduler: scheduler.build(mode),
            history: BTreeMap::new(),
            stopped: BTreeSet::new(),
            checkpoints: BTreeMap::new(),
            untaken: BTreeSet::new(),
        }
    }

    /// Trial `trial` finished an iteration with `metrics`: whether it goes on. A report
    /// without the metric is an error, so a typo does not go unnoticed.
    pub fn report(&mut self, trial: usize, metrics: Metrics) -> Result<bool, TuneError> {
        let Some(value) = metrics.get(&self.metric).copied() else {
            return Err(TuneError::Config(format!(
                "trial {trial} reported no {:?} (it reported {:?})",
                self.metric,
                metrics.keys().collect::<Vec<_>>()
            )));
        };
        let history = self.history.entry(trial).or_default();
        history.push(metrics);
        let iteration = history.len() as u64;
        let reached = self.stop_when.iter().any(|(name, at)| {
            let v = match name.as_str() {
                "training_iteration" => Some(iteration as f64),
                _ => history.last().and_then(|m| m.get(name)).copied(),
            };
            v.is_some_and(|v| v >= *at)
        });
        let go_on = self.scheduler.on_result(trial, iteration, value) == Decision::Continue;
        if !go_on && !reached && self.max_t.is_none_or(|m| iteration < m) {
            self.stopped.insert(trial);
        }
        Ok(go_on && !reached)
    }

    /// Like [`TrialControl::report`], and keeps `checkpoint` as the trial's latest.
    pub fn report_checkpoint(
        &mut self,
        trial: usize,
        metrics: Metrics,
        checkpoint: serde_bytes::ByteBuf,
    ) -> Result<bool, TuneError> {
        let go_on = self.report(trial, metrics)?;
        self.keep_checkpoint(trial, checkpoint);
        Ok(go_on)
    }

    /// Keeps `checkpoint` as the trial's latest, made after the reports it has sent.
    pub fn keep_checkpoint(&mut self, trial: usize, checkpoint: serde_bytes::ByteBuf) {
        let iteration = self.history.get(&trial).map_or(0, Vec::len);
        self.checkpoints.insert(
            trial,
            Checkpoint {
                iteration,
                bytes: checkpoint.into_vec(),
            },
        );
        self.untaken.insert(trial);
    }

    /// The checkpoints made since the last call, each with the trial's reports up to
    /// it, for the experiment directory.
    pub fn take_checkpoints(&mut self) -> Vec<(usize, Checkpoint, Vec<Metrics>)> {
        let untaken = std::mem::take(&mut self.untaken);
        untaken
            .into_iter()
            .filter_map(|t| {
                let c = self.checkpoints.get(&t)?.clone();
                let history = self
                    .history
                    .get(&t)
                    .map_or(Vec::new(), |h| h[..c.iteration.min(h.len())].to_vec());
                Some((t, c, history))
            })
            .collect()
    }

    /// A trial is about to run again after a failure: its reports after its latest
    /// checkpoint are forgotten (all of them without one), and the checkpoint, if any,
    /// is what it starts from.
    pub fn restart(&mut self, trial: usize) -> Option<Checkpoint> {
        self.stopped.remove(&trial);
        let checkpoint = self.checkpoints.get(&trial).cloned();
        let keep = checkpoint.as_ref().map_or(0, |c| c.iteration);
        if let Some(h) = self.history.get_mut(&trial) {
            h.truncate(keep);
        }
        checkpoint
    }

    /// How far each of `trials` got: iterations and last report.
    pub fn progress(&self, trials: Vec<usize>) -> BTreeMap<usize, (usize, Option<Metrics>)> {
        trials
            .into_iter()
            .map(|t| {
                let h = self.history.get(&t);
                (
                    t,
                    (h.map_or(0, Vec::len), h.and_then(|h| h.last().cloned())),
                )
            })
            .collect()
    }

    /// A trial's reports, whether the scheduler stopped it, and its latest checkpoint.
    pub fn record(&self, trial: usize) -> (Vec<Metrics>, bool, Option<Checkpoint>) {
        (
            self.history.get(&trial).cloned().unwrap_or_default(),
            self.stopped.contains(&trial),
            self.checkpoints.get(&trial).cloned(),
        )
    }

    /// Replays a trial of an earlier run (from its experiment's journal), so that the
    /// scheduler's rungs hold its results as before: a finished one with how it ended,
    /// or one cut short with the checkpoint it goes on from (and its reports up to it).
    pub fn replay(
        &mut self,
        trial: usize,
        history: Vec<Metrics>,
        stopped: bool,
        checkpoint: Option<Checkpoint>,
    ) {
        for (i, m) in history.iter().enumerate() {
            if let Some(v) = m.get(&self.metric) {
                self.scheduler.on_result(trial, i as u64 + 1, *v);
            }
        }
        self.history.insert(trial, history);
        if stopped {
            self.stopped.insert(trial);
        }
        if let Some(c) = checkpoint {
            self.checkpoints.insert(trial, c);
        }
    }
}

/// What a trainable reports through: each report answers whether to go on.
#[derive(Clone, Serialize, Deserialize)]
pub struct Reporter {
    trial: usize,
    control: TrialControlHandle,
    /// The checkpoint this run of the trial starts from.
    from: Option<Checkpoint>,
}

impl Reporter {
    pub(super) fn new(trial: usize, control: TrialControlHandle, from: Option<Checkpoint>) -> Self {
        Reporter {
            trial,
            control,
            from,
        }
    }

    /// Reports one iteration's metrics; `Ok(false)` when the trial should stop now.
    pub fn report(&self, metrics: Metrics) -> Result<bool, TuneError> {
        prism::get(&self.control.report(self.trial, metrics))
            .map_err(|e| TuneError::Runtime(e.to_string()))?
    }

    /// Reports one iteration's metrics with a checkpoint to go on from, should the
    /// trial run again; `Ok(false)` when the trial should stop now.
    pub fn report_checkpoint(
        &self,
        metrics: Metrics,
        checkpoint: Vec<u8>,
    ) -> Result<bool, TuneError> {
        let bytes = serde_bytes::ByteBuf::from(checkpoint);
        prism::get(&self.control.report_checkpoint(self.trial, metrics, bytes))
            .map_err(|e| TuneError::Runtime(e.to_string()))?
    }

    /// Keeps a checkpoint of the trial's state after its last report, without a
    /// report of its own.
    pub(crate) fn keep_checkpoint(&self, checkpoint: Vec<u8>) -> Result<(), TuneError> {
        let bytes = serde_bytes::ByteBuf::from(checkpoint);
        prism::get(&self.control.keep_checkpoint(self.trial, bytes))
            .map_err(|e| TuneError::Runtime(e.to_string()))
    }

    /// The checkpoint this run of the trial starts from: the latest one it reported
    /// before it failed, or before the run it belongs to was interrupted; `None` on
    /// its first run. Its reports up to the checkpoint are kept, so the trial's next
    /// report is its iteration [`Reporter::iteration`] + 1.
    pub fn checkpoint(&self) -> Option<&[u8]> {
        self.from.as_ref().map(|c| c.bytes.as_slice())
    }

    /// The iterations this trial had reported when the checkpoint it starts from was
    /// made (0 without one).
    pub fn iteration(&self) -> usize {
        self.from.as_ref().map_or(0, |c| c.iteration)
    }

    /// This trial's number.
    pub fn trial(&self) -> usize {
        self.trial
    }
}
