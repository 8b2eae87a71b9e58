//! The `Tuner`: trials of a trainable run as prism tasks, at most `max_concurrent` at a
//! time, their configurations from a [`Searcher`], their fate decided result by result
//! by a [`TrialScheduler`](crate::TrialScheduler).
//!
//! A trainable is a remote function of yours that takes its [`Config`] and a
//! [`Reporter`], and reports its metrics once per iteration (an epoch, say): `report`
//! answers whether to go on, so a trial that a scheduler stops ends at once. The
//! reports go to a small actor, the trials' controller, which holds the scheduler and
//! every trial's history; on a cluster the trials run on any node and still report to
//! it. A report may carry a checkpoint ([`Reporter::report_checkpoint`]): a trial that
//! fails and runs again ([`TuneOptions::max_retries`]), or that a resumed run runs
//! again, starts from its latest ([`Reporter::checkpoint`]). Or the trainable is a
//! type with `setup`, `step`, `save` and `restore` ([`crate::trainable`]), run by
//! [`Tuner::run_trainable`], each trial in an actor of its own. The outcome is a
//! [`ResultGrid`]: every trial's configuration, metrics history, status and latest
//! checkpoint, the best trial, and CSV or JSON export.
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
use std::time::{Duration, Instant};

use prism::ObjectRef;

use crate::display::{Board, Display};
use crate::experiment::{Journal, SavedSearcher};
use crate::schedule::Mode;
use crate::search::Searcher;
use crate::space::Config;
use crate::trainable::{self, Trainable, TrialRunner, TrialRunnerHandle};
use crate::TuneError;

mod control;
mod results;

pub use control::{Checkpoint, Reporter, SchedulerSpec, TrialControl, TrialControlHandle};
pub use results::{ResultGrid, Status, Trial};

/// What a trial reports: named numbers.
pub type Metrics = BTreeMap<String, f64>;

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
    /// How many times a failed trial runs again, with the same configuration (from its
    /// latest checkpoint, if it made one).
    pub max_retries: u32,
    /// CPUs each trial of a class trainable holds (default 1); a function trainable's
    /// trials ask for theirs in `launch`.
    pub trial_cpus: f64,
    /// GPUs each trial of a class trainable holds (default 0).
    pub trial_gpus: f64,
    /// A class trainable checkpoints every this many steps, and after its last one.
    pub checkpoint_every: Option<usize>,
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
            trial_cpus: 1.0,
            trial_gpus: 0.0,
            checkpoint_every: None,
        }
    }

    /// The resources each trial of a class trainable holds.
    pub fn resources_per_trial(mut self, cpus: f64, gpus: f64) -> Self {
        self.trial_cpus = cpus;
        self.trial_gpus = gpus;
        self
    }

    /// A class trainable saves a checkpoint every `steps` steps, and after its last.
    pub fn checkpoint_every(mut self, steps: usize) -> Self {
        self.checkpoint_every = Some(steps.max(1));
        self
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

/// How a run starts its trials.
trait Launch {
    /// Starts a trial.
    fn launch(&mut self, config: Config, reporter: Reporter) -> TrialRun;
    /// A run of a trial ended (its result is in).
    fn ended(&mut self, _run: &TrialRun) {}
    /// The CPUs a trial holds, which bound how many run at once unless the options
    /// say how many (a function trainable's: one, whatever `launch` asks for).
    fn trial_cpus(&self) -> f64 {
        1.0
    }
}

/// Trials of a function trainable: `launch` submits each.
struct Functions<F>(F);

impl<F: FnMut(Config, Reporter) -> TrialRun> Launch for Functions<F> {
    fn launch(&mut self, config: Config, reporter: Reporter) -> TrialRun {
        (self.0)(config, reporter)
    }
}

/// Trials of a class trainable, each in an actor that ends with the trial's run.
struct Actors {
    name: &'static str,
    cpus: f64,
    gpus: f64,
    every: Option<usize>,
    /// The actors of the runs in progress, by their result's id.
    running: BTreeMap<prism::ObjectId, TrialRunnerHandle>,
}

impl Launch for Actors {
    fn launch(&mut self, config: Config, reporter: Reporter) -> TrialRun {
        let runner = TrialRunner::options()
            .num_cpus(self.cpus)
            .num_gpus(self.gpus)
            .remote(self.name.to_string(), config);
        let run = runner.train(reporter, self.every);
        self.running.insert(run.id(), runner);
        run
    }

    fn ended(&mut self, run: &TrialRun) {
        // Its resources go back to the cluster for the next trial.
        if let Some(runner) = self.running.remove(&run.id()) {
            prism::kill(&runner);
        }
    }

    fn trial_cpus(&self) -> f64 {
        self.cpus
    }
}

/// Writes the checkpoints the trials reported since the last call to the experiment
/// directory.
fn keep_checkpoints(journal: &mut Journal, control: &TrialControlHandle) -> Result<(), TuneError> {
    let made =
        prism::get(&control.take_checkpoints()).map_err(|e| TuneError::Runtime(e.to_string()))?;
    for (id, checkpoint, history) in made {
        journal.checkpoint(id, &checkpoint, &history)?;
    }
    Ok(())
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
        launch: impl FnMut(Config, Reporter) -> TrialRun,
    ) -> Result<ResultGrid, TuneError> {
        self.run_with(&mut Functions(launch))
    }

    /// Runs every trial the searcher suggests with the class trainable `T`, each trial
    /// in an actor of its own holding [`TuneOptions::resources_per_trial`] (see
    /// [`crate::trainable`]). At most as many trials run at once as the cluster's
    /// CPUs allow, unless [`TuneOptions::max_concurrent`] says fewer. `T` must be
    /// registered, and the options must say when a trial ends (a stop condition, or
    /// ASHA's `max_t`). Needs a running prism runtime.
    pub fn run_trainable<T: Trainable>(&mut self) -> Result<ResultGrid, TuneError> {
        let name = std::any::type_name::<T>();
        trainable::lookup(name)?;
        // A trainable steps until told to stop: something must tell it.
        let bounded = !self.options.stop_when.is_empty()
            || matches!(self.options.scheduler, SchedulerSpec::Asha { .. });
        if !bounded {
            return Err(TuneError::Config(
                "a class trainable runs until its trial is stopped: give a stop condition \
                 (stop_when(\"training_iteration\", n), or stop_when(\"done\", 1.0) for a \
                 trainable that reports done) or an ASHA scheduler (its max_t)"
                    .into(),
            ));
        }
        let mut actors = Actors {
            name,
            cpus: self.options.trial_cpus,
            gpus: self.options.trial_gpus,
            every: self.options.checkpoint_every,
            running: BTreeMap::new(),
        };
        self.run_with(&mut actors)
    }

    fn run_with(&mut self, launch: &mut dyn Launch) -> Result<ResultGrid, TuneError> {
        let opts = &self.options;
        let control = TrialControl::remote(
            opts.metric.clone(),
            opts.mode == Mode::Max,
            opts.scheduler.clone(),
            opts.stop_when.clone(),
        );
        let mut running = Vec::new();
        let result = self.run_trials(launch, &control, &mut running);
        // However the run ended, the trials still running end with it: their actors go,
        // and so does the controller (a function trial's next report then fails).
        for (_, _, run) in &running {
            launch.ended(run);
        }
        prism::kill(&control);
        result
    }

    fn run_trials(
        &mut self,
        launch: &mut dyn Launch,
        control: &TrialControlHandle,
        running: &mut Vec<(usize, Config, TrialRun)>,
    ) -> Result<ResultGrid, TuneError> {
        let started = Instant::now();
        let runtime = |e: prism::Error| TuneError::Runtime(e.to_string());
        let opts = &self.options;
        let mut attempts: BTreeMap<usize, u32> = BTreeMap::new();
        // Sized from what the cluster has; a cluster that cannot say is an error, not
        // one CPU.
        let cpus = prism::cluster_resources()
            .map_err(runtime)?
            .get("CPU")
            .copied()
            .unwrap_or(0.0);
        let per_trial = launch.trial_cpus();
        let fit = if per_trial > 0.0 {
            cpus / per_trial
        } else {
            cpus
        };
        let concurrent = opts.max_concurrent.unwrap_or((fit.floor() as usize).max(1));
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
        // that started but never finished run again with their configurations, from
        // their latest checkpoint.
        let mut trials: Vec<Trial> = Vec::new();
        let mut rerun: VecDeque<(usize, Config, Option<Checkpoint>)> = VecDeque::new();
        for (id, rec) in &recorded {
            if restored.as_ref().is_none_or(|s| *id >= s.suggested) {
                let _ = self.searcher.suggest();
            }
            let checkpoint = rec.checkpoint.as_ref().map(|(c, _)| c.clone());
            match &rec.outcome {
                Some((history, status)) => {
                    let stopped = *status == Status::Stopped;
                    let replay = control.replay(*id, history.clone(), stopped, checkpoint.clone());
                    prism::get(&replay).map_err(runtime)?;
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
                        checkpoint,
                    });
                }
                None => {
                    if let Some((c, history)) = &rec.checkpoint {
                        let replay = control.replay(*id, history.clone(), false, Some(c.clone()));
                        prism::get(&replay).map_err(runtime)?;
                    }
                    rerun.push_back((*id, rec.config.clone(), checkpoint));
                }
            }
        }
        let mut board = Board::new(&opts.metric, opts.mode, opts.display);
        for t in &trials {
            board.finished(t);
        }
        let mut next_id = recorded.keys().next_back().map_or(0, |id| id + 1);
        let mut exhausted = false;
        loop {
            let in_budget = opts.time_budget.is_none_or(|b| started.elapsed() < b);
            while in_budget && running.len() < concurrent {
                let (id, config, from) = match rerun.pop_front() {
                    Some(again) => again,
                    None if exhausted => break,
                    None => match self.searcher.suggest() {
                        Some(config) => {
                            next_id += 1;
                            if let Some(j) = journal.as_mut() {
                                j.started(next_id - 1, &config)?;
                                save_searcher(j, self.searcher.as_ref(), next_id, &observed)?;
                            }
                            (next_id - 1, config, None)
                        }
                        None => {
                            exhausted = true;
                            break;
                        }
                    },
                };
                let reporter = Reporter::new(id, control.clone(), from);
                board.started(id, &config);
                running.push((id, config.clone(), launch.launch(config, reporter)));
            }
            if running.is_empty() {
                break;
            }
            let refs: Vec<_> = running.iter().map(|(_, _, r)| r.clone()).collect();
            // On a terminal, the table follows the running trials twice a second; with
            // an experiment directory, new checkpoints are written as often.
            let tick = (board.live() || journal.is_some()).then_some(Duration::from_millis(500));
            let (ready, _) = prism::wait(&refs, 1, tick).map_err(runtime)?;
            if let Some(j) = journal.as_mut() {
                keep_checkpoints(j, control)?;
            }
            if ready.is_empty() && board.live() {
                let ids: Vec<usize> = running.iter().map(|(id, _, _)| *id).collect();
                let latest = prism::get(&control.progress(ids)).map_err(runtime)?;
                board.progress(&latest);
            }
            if ready.is_empty() {
                continue;
            }
            let done: BTreeSet<_> = ready.iter().map(|r| r.id()).collect();
            let (now, later): (Vec<_>, Vec<_>) = std::mem::take(running)
                .into_iter()
                .partition(|(_, _, r)| done.contains(&r.id()));
            *running = later;
            for (_, _, result) in &now {
                launch.ended(result);
            }
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
                        let from = prism::get(&control.restart(id)).map_err(runtime)?;
                        let reporter = Reporter::new(id, control.clone(), from);
                        running.push((id, config.clone(), launch.launch(config, reporter)));
                        continue;
                    }
                }
                let (history, stopped, checkpoint) =
                    prism::get(&control.record(id)).map_err(runtime)?;
                let status = match failure {
                    Some(e) => Status::Failed(e),
                    None if stopped => Status::Stopped,
                    None => Status::Completed,
                };
                if status != Status::Completed && status != Status::Stopped {
                    // A failed trial tells the searcher nothing.
                } else if let Some(v) = history.last().and_then(|m| m.get(&opts.metric)) {
                    // A restored searcher may have heard it before a crash lost its end.
                    if observed.insert(id) {
                        self.searcher.observe(&config, opts.mode.signed(*v));
                    }
                }
                // Its checkpoints were taken after the wait: its run ended before that.
                if let Some(j) = journal.as_mut() {
                    j.finished(id, &history, &status)?;
                    save_searcher(j, self.searcher.as_ref(), next_id, &observed)?;
                }
                let trial = Trial {
                    id,
                    config,
                    history,
                    status,
                    checkpoint,
                };
                board.finished(&trial);
                trials.push(trial);
            }
        }
        trials.sort_by_key(|t| t.id);
        Ok(ResultGrid {
            trials,
            metric: opts.metric.clone(),
            mode: opts.mode,
            elapsed: started.elapsed(),
        })
    }
}
