//! The `Tuner`: trials of a trainable run as prism tasks, at most `max_concurrent` at a
//! time, their configurations from a [`Searcher`], their fate decided result by result
//! by a [`TrialScheduler`].
//!
//! A trainable is a remote function of yours that takes its [`Config`] and a
//! [`Reporter`], and reports its metrics once per iteration (an epoch, say): `report`
//! answers whether to go on, so a trial that a scheduler stops ends at once. The
//! reports go to a small actor, the trials' controller, which holds the scheduler and
//! every trial's history; on a cluster the trials run on any node and still report to
//! it. The outcome is a [`ResultGrid`]: every trial's configuration, metrics history and
//! status, the best trial, and CSV or JSON export.
//!
//! ```
//! use prism_tune::tuner::{Metrics, Reporter, SchedulerSpec, TuneOptions, Tuner};
//! use prism_tune::{uniform, Mode, RandomSearch, Space, TuneError};
//!
//! #[prism::remote]
//! fn climb(config: prism_tune::Config, reporter: Reporter) -> Result<(), TuneError> {
//!     let rate = config.f64("rate")?;
//!     for epoch in 1..=10 {
//!         let score = rate * epoch as f64;
//!         if !reporter.report(Metrics::from([("score".to_string(), score)]))? {
//!             break; // the scheduler stopped this trial
//!         }
//!     }
//!     Ok(())
//! }
//!
//! prism::init().unwrap();
//! let space = Space::new().add("rate", uniform(0.0, 1.0));
//! let options = TuneOptions::new("score", Mode::Max).scheduler(SchedulerSpec::Asha {
//!     max_t: 10,
//!     grace_period: 1,
//!     reduction_factor: 3.0,
//! });
//! let mut tuner = Tuner::new(Box::new(RandomSearch::new(&space, 9, 0).unwrap()), options);
//! let grid = tuner.run(|config, reporter| climb::remote(config, reporter)).unwrap();
//! assert_eq!(grid.trials.len(), 9);
//! let best = grid.best().unwrap();
//! assert_eq!(best.history.len(), 10); // the best trial ran to the end
//! prism::shutdown();
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use prism::ObjectRef;
use serde::{Deserialize, Serialize};

use crate::display::{Board, Display};
use crate::experiment::{Journal, SavedSearcher};
use crate::schedule::{Asha, Decision, Fifo, MedianStopping, Mode, TrialScheduler};
use crate::search::Searcher;
use crate::space::Config;
use crate::TuneError;

/// What a trial reports: named numbers.
pub type Metrics = BTreeMap<String, f64>;

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

    /// Forgets a trial's reports, before it runs again after a failure.
    pub fn forget(&mut self, trial: usize) {
        self.history.remove(&trial);
        self.stopped.remove(&trial);
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

    /// A trial's reports and whether the scheduler stopped it.
    pub fn record(&self, trial: usize) -> (Vec<Metrics>, bool) {
        (
            self.history.get(&trial).cloned().unwrap_or_default(),
            self.stopped.contains(&trial),
        )
    }

    /// Replays a trial of an earlier run (from its experiment's journal), so that the
    /// scheduler's rungs hold its results as before.
    pub fn replay(&mut self, trial: usize, history: Vec<Metrics>, stopped: bool) {
        for (i, m) in history.iter().enumerate() {
            if let Some(v) = m.get(&self.metric) {
                self.scheduler.on_result(trial, i as u64 + 1, *v);
            }
        }
        self.history.insert(trial, history);
        if stopped {
            self.stopped.insert(trial);
        }
    }
}

/// What a trainable reports through: each report answers whether to go on.
#[derive(Clone, Serialize, Deserialize)]
pub struct Reporter {
    trial: usize,
    control: TrialControlHandle,
}

impl Reporter {
    /// Reports one iteration's metrics; `Ok(false)` when the trial should stop now.
    pub fn report(&self, metrics: Metrics) -> Result<bool, TuneError> {
        prism::get(&self.control.report(self.trial, metrics))
            .map_err(|e| TuneError::Runtime(e.to_string()))?
    }

    /// This trial's number.
    pub fn trial(&self) -> usize {
        self.trial
    }
}

/// The options of a [`Tuner`].
#[derive(Debug, Clone, PartialEq)]
pub struct TuneOptions {
    /// The metric that ranks trials.
    pub metric: String,
    /// Which way it is better.
    pub mode: Mode,
    /// Trials running at once (default: the CPUs of the runtime).
    pub max_concurrent: Option<usize>,
    /// The scheduler (default: FIFO).
    pub scheduler: SchedulerSpec,
    /// Stop starting new trials after this long.
    pub time_budget: Option<Duration>,
    /// Where the trials' journal is kept; a run given the directory of an interrupted
    /// one resumes it (see [`crate::experiment`]).
    pub experiment_dir: Option<std::path::PathBuf>,
    /// How the run is shown (default: a live table on a terminal, lines otherwise).
    pub display: Display,
    /// A trial ends once one of these metrics reaches its value (`training_iteration`:
    /// its number of reports).
    pub stop_when: Vec<(String, f64)>,
    /// How many times a failed trial runs again, with the same configuration.
    pub max_retries: u32,
}

impl TuneOptions {
    /// Options ranking trials by `metric`.
    pub fn new(metric: &str, mode: Mode) -> TuneOptions {
        TuneOptions {
            metric: metric.to_string(),
            mode,
            max_concurrent: None,
            scheduler: SchedulerSpec::Fifo,
            time_budget: None,
            experiment_dir: None,
            display: Display::Auto,
            stop_when: Vec::new(),
            max_retries: 0,
        }
    }

    /// Ends a trial once `metric` reaches `value` (`training_iteration`: after that many
    /// reports), as Ray Tune's `stop={metric: value}`.
    pub fn stop_when(mut self, metric: &str, value: f64) -> Self {
        self.stop_when.push((metric.to_string(), value));
        self
    }

    /// Runs a failed trial again, up to `n` times.
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// How the run is shown.
    pub fn display(mut self, display: Display) -> Self {
        self.display = display;
        self
    }

    /// Keeps the trials' journal in `dir`, and resumes the run recorded there if any.
    pub fn experiment_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.experiment_dir = Some(dir.into());
        self
    }

    /// At most `n` trials at once.
    pub fn max_concurrent(mut self, n: usize) -> Self {
        self.max_concurrent = Some(n.max(1));
        self
    }

    /// The scheduler.
    pub fn scheduler(mut self, spec: SchedulerSpec) -> Self {
        self.scheduler = spec;
        self
    }

    /// No new trial starts after `budget`.
    pub fn time_budget(mut self, budget: Duration) -> Self {
        self.time_budget = Some(budget);
        self
    }
}

/// How a trial ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    /// It ran to its end.
    Completed,
    /// The scheduler stopped it.
    Stopped,
    /// It failed, with why.
    Failed(String),
}

impl std::fmt::Display for Status {
    /// `completed`, `stopped`, or `failed: ` and why (as the journal and exports write it).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Status::Completed => write!(f, "completed"),
            Status::Stopped => write!(f, "stopped"),
            Status::Failed(e) => write!(f, "failed: {e}"),
        }
    }
}

/// One trial's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    /// Its number, in the order started.
    pub id: usize,
    /// Its configuration.
    pub config: Config,
    /// Its reports, one per iteration.
    pub history: Vec<Metrics>,
    /// How it ended.
    pub status: Status,
}

impl Trial {
    /// Its last report of `metric`.
    pub fn last(&self, metric: &str) -> Option<f64> {
        self.history.last().and_then(|m| m.get(metric).copied())
    }
}

/// Every trial of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultGrid {
    /// The trials, by number.
    pub trials: Vec<Trial>,
    /// The metric that ranks them.
    pub metric: String,
    /// Which way it is better.
    pub mode: Mode,
    /// The run's wall time.
    pub elapsed: Duration,
}

impl ResultGrid {
    /// The trial whose last report of the metric is best.
    pub fn best(&self) -> Option<&Trial> {
        self.best_by(&self.metric, self.mode)
    }

    /// The trial whose last report of `metric` is best for `mode`.
    pub fn best_by(&self, metric: &str, mode: Mode) -> Option<&Trial> {
        self.trials
            .iter()
            .filter_map(|t| t.last(metric).map(|v| (t, mode.signed(v))))
            .fold(None, |best: Option<(&Trial, f64)>, (t, v)| match best {
                Some((_, b)) if b >= v => best,
                _ => Some((t, v)),
            })
            .map(|(t, _)| t)
    }

    /// Iterations run over all trials.
    pub fn iterations(&self) -> usize {
        self.trials.iter().map(|t| t.history.len()).sum()
    }

    /// One row per trial: its number, status, iterations, parameters and last metrics.
    pub fn to_csv(&self) -> String {
        let params: BTreeSet<&String> =
            self.trials.iter().flat_map(|t| t.config.0.keys()).collect();
        let metrics: BTreeSet<&String> = self
            .trials
            .iter()
            .flat_map(|t| t.history.last().into_iter().flat_map(|m| m.keys()))
            .collect();
        let mut out = String::from("trial,status,iterations");
        for p in &params {
            let _ = write!(out, ",{}", csv_field(p));
        }
        for m in &metrics {
            let _ = write!(out, ",{}", csv_field(m));
        }
        out.push('\n');
        for t in &self.trials {
            let status = t.status.to_string();
            let _ = write!(out, "{},{},{}", t.id, csv_field(&status), t.history.len());
            for p in &params {
                let v = t.config.get(p).map(|v| v.to_string()).unwrap_or_default();
                let _ = write!(out, ",{}", csv_field(&v));
            }
            for m in &metrics {
                let v = t.last(m).map(|v| v.to_string()).unwrap_or_default();
                let _ = write!(out, ",{v}");
            }
            out.push('\n');
        }
        out
    }

    /// Every trial with its whole history, as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "metric": self.metric,
            "mode": if self.mode == Mode::Max { "max" } else { "min" },
            "elapsed_s": self.elapsed.as_secs_f64(),
            "trials": self.trials.iter().map(|t| serde_json::json!({
                "id": t.id,
                "config": t.config.to_json(),
                "status": t.status.to_string(),
                "history": t.history,
            })).collect::<Vec<_>>(),
        })
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Writes the searcher's state beside the journal, if it keeps one.
fn save_searcher(
    journal: &Journal,
    searcher: &dyn Searcher,
    suggested: usize,
    observed: &BTreeSet<usize>,
) -> Result<(), TuneError> {
    match searcher.state() {
        Some(state) => journal.save_searcher(&SavedSearcher {
            suggested,
            observed: observed.clone(),
            state,
        }),
        None => Ok(()),
    }
}

/// A trial's task: its trainable's outcome.
type TrialRun = ObjectRef<Result<(), TuneError>>;

/// Runs trials; see the module's documentation.
pub struct Tuner {
    searcher: Box<dyn Searcher>,
    options: TuneOptions,
}

impl Tuner {
    /// A tuner drawing configurations from `searcher`.
    pub fn new(searcher: Box<dyn Searcher>, options: TuneOptions) -> Tuner {
        Tuner { searcher, options }
    }

    /// Runs every trial the searcher suggests: `launch` submits one (usually
    /// `|config, reporter| my_trainable::remote(config, reporter)`). Needs a running
    /// prism runtime.
    pub fn run(
        &mut self,
        mut launch: impl FnMut(Config, Reporter) -> TrialRun,
    ) -> Result<ResultGrid, TuneError> {
        let started = Instant::now();
        let runtime = |e: prism::Error| TuneError::Runtime(e.to_string());
        let opts = &self.options;
        let control = TrialControl::remote(
            opts.metric.clone(),
            opts.mode == Mode::Max,
            opts.scheduler.clone(),
            opts.stop_when.clone(),
        );
        let mut attempts: BTreeMap<usize, u32> = BTreeMap::new();
        let cpus = prism::cluster_resources()
            .get("CPU")
            .copied()
            .unwrap_or(1.0);
        let concurrent = opts.max_concurrent.unwrap_or((cpus as usize).max(1));
        let (mut journal, recorded, saved) = match &opts.experiment_dir {
            Some(dir) => {
                let (j, r, s) = Journal::open(dir)?;
                (Some(j), r, s)
            }
            None => (None, BTreeMap::new(), None),
        };
        // The searcher's saved state, if it takes it back; otherwise the recorded trials
        // are replayed into it below.
        let restored = saved.filter(|s| match self.searcher.restore(&s.state) {
            Ok(()) => true,
            Err(e) => {
                eprintln!("prism-tune: replaying the journal into the searcher instead of its saved state ({e})");
                false
            }
        });
        // The trials whose results the searcher has heard.
        let mut observed: BTreeSet<usize> = restored
            .as_ref()
            .map(|s| s.observed.clone())
            .unwrap_or_default();
        // Replay an interrupted run: finished trials are kept, not run again; trials
        // that started but never finished run again with their configurations.
        let mut trials: Vec<Trial> = Vec::new();
        let mut rerun: VecDeque<(usize, Config)> = VecDeque::new();
        for (id, rec) in &recorded {
            if restored.as_ref().is_none_or(|s| *id >= s.suggested) {
                let _ = self.searcher.suggest();
            }
            match &rec.outcome {
                Some((history, status)) => {
                    let stopped = *status == Status::Stopped;
                    prism::get(&control.replay(*id, history.clone(), stopped)).map_err(runtime)?;
                    let last = history.last().and_then(|m| m.get(&opts.metric).copied());
                    if let (Some(v), false) = (last, matches!(status, Status::Failed(_))) {
                        if observed.insert(*id) {
                            self.searcher.observe(&rec.config, opts.mode.signed(v));
                        }
                    }
                    trials.push(Trial {
                        id: *id,
                        config: rec.config.clone(),
                        history: history.clone(),
                        status: status.clone(),
                    });
                }
                None => rerun.push_back((*id, rec.config.clone())),
            }
        }
        let mut board = Board::new(&opts.metric, opts.mode, opts.display);
        for t in &trials {
            board.finished(t);
        }
        let mut running: Vec<(usize, Config, TrialRun)> = Vec::new();
        let mut next_id = recorded.keys().next_back().map_or(0, |id| id + 1);
        let mut exhausted = false;
        loop {
            let in_budget = opts.time_budget.is_none_or(|b| started.elapsed() < b);
            while in_budget && running.len() < concurrent {
                let (id, config) = match rerun.pop_front() {
                    Some(again) => again,
                    None if exhausted => break,
                    None => match self.searcher.suggest() {
                        Some(config) => {
                            next_id += 1;
                            if let Some(j) = journal.as_mut() {
                                j.started(next_id - 1, &config)?;
                                save_searcher(j, self.searcher.as_ref(), next_id, &observed)?;
                            }
                            (next_id - 1, config)
                        }
                        None => {
                            exhausted = true;
                            break;
                        }
                    },
                };
                let reporter = Reporter {
                    trial: id,
                    control: control.clone(),
                };
                board.started(id, &config);
                running.push((id, config.clone(), launch(config, reporter)));
            }
            if running.is_empty() {
                break;
            }
            let refs: Vec<_> = running.iter().map(|(_, _, r)| r.clone()).collect();
            // On a terminal, the table follows the running trials twice a second.
            let tick = board.live().then_some(Duration::from_millis(500));
            let (ready, _) = prism::wait(&refs, 1, tick).map_err(runtime)?;
            if ready.is_empty() {
                let ids: Vec<usize> = running.iter().map(|(id, _, _)| *id).collect();
                let latest = prism::get(&control.progress(ids)).map_err(runtime)?;
                board.progress(&latest);
                continue;
            }
            let done: BTreeSet<_> = ready.iter().map(|r| r.id()).collect();
            let (now, later): (Vec<_>, Vec<_>) = running
                .into_iter()
                .partition(|(_, _, r)| done.contains(&r.id()));
            running = later;
            for (id, config, result) in now {
                let failure = match prism::get(&result) {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(e) => Some(e.to_string()),
                };
                if let Some(e) = &failure {
                    let tries = attempts.entry(id).or_insert(0);
                    if *tries < opts.max_retries {
                        *tries += 1;
                        if !matches!(opts.display, Display::Quiet) {
                            eprintln!("trial {id} failed ({e}); running it again (retry {tries})");
                        }
                        prism::get(&control.forget(id)).map_err(runtime)?;
                        let reporter = Reporter {
                            trial: id,
                            control: control.clone(),
                        };
                        running.push((id, config.clone(), launch(config, reporter)));
                        continue;
                    }
                }
                let (history, stopped) = prism::get(&control.record(id)).map_err(runtime)?;
                let status = match failure {
                    Some(e) => Status::Failed(e),
                    None if stopped => Status::Stopped,
                    None => Status::Completed,
                };
                if status != Status::Completed && status != Status::Stopped {
                    // A failed trial tells the searcher nothing.
                } else if let Some(v) = history.last().and_then(|m| m.get(&opts.metric)) {
                    self.searcher.observe(&config, opts.mode.signed(*v));
                    observed.insert(id);
                }
                if let Some(j) = journal.as_mut() {
                    j.finished(id, &history, &status)?;
                    save_searcher(j, self.searcher.as_ref(), next_id, &observed)?;
                }
                let trial = Trial {
                    id,
                    config,
                    history,
                    status,
                };
                board.finished(&trial);
                trials.push(trial);
            }
        }
        prism::kill(&control);
        trials.sort_by_key(|t| t.id);
        Ok(ResultGrid {
            trials,
            metric: opts.metric.clone(),
            mode: opts.mode,
            elapsed: started.elapsed(),
        })
    }
}
