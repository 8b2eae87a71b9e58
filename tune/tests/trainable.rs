//! Class trainables: each trial in an actor of its own, stepped until the scheduler stops
//! it; checkpoints every few steps, and a trial that fails goes on from the latest; a
//! step reporting `done` ends its trial; resources per trial bound how many run at once.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use prism_tune::display::Display;
use prism_tune::trainable::Trainable;
use prism_tune::tuner::{Metrics, SchedulerSpec, Status, TuneOptions, Tuner};
use prism_tune::{grid, Config, GridSearch, Mode, Space, TuneError};

/// Accuracy saturating towards `final` (as the function trainable of `tuner.rs`), one
/// step an epoch. With `fail_at`, its first run fails at that step (the test leaves
/// a mark in `dir` to tell the second run).
struct Curve {
    fin: f64,
    epoch: u64,
    fail_at: Option<u64>,
    done_at: Option<u64>,
    mark: PathBuf,
}

impl Trainable for Curve {
    fn setup(config: &Config) -> Result<Self, TuneError> {
        let dir = config.str("dir").unwrap_or("");
        let fin = config.f64("final")?;
        let mark = Path::new(dir).join(format!("setup-{fin}"));
        if !dir.is_empty() {
            let runs = std::fs::read_to_string(&mark).unwrap_or_default();
            std::fs::write(&mark, runs + "setup\n")
                .map_err(|e| TuneError::Runtime(e.to_string()))?;
        }
        let live = LIVE.fetch_add(1, Ordering::SeqCst) + 1;
        PEAK.fetch_max(live, Ordering::SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(5));
        Ok(Curve {
            fin,
            epoch: 0,
            fail_at: config
                .get("fail_at")
                .and_then(|p| p.as_i64())
                .map(|n| n as u64),
            done_at: config
                .get("done_at")
                .and_then(|p| p.as_i64())
                .map(|n| n as u64),
            mark,
        })
    }

    fn step(&mut self) -> Result<Metrics, TuneError> {
        self.epoch += 1;
        let runs = std::fs::read_to_string(&self.mark).unwrap_or_default();
        if Some(self.epoch) == self.fail_at && runs.lines().count() == 1 {
            return Err(TuneError::Runtime("the first run fails here".into()));
        }
        let acc = self.fin * (1.0 - (-(self.epoch as f64) / 4.0).exp());
        let done = self.done_at.is_some_and(|d| self.epoch >= d);
        Ok(Metrics::from([
            ("acc".to_string(), acc),
            ("epoch".to_string(), self.epoch as f64),
            ("done".to_string(), done as u8 as f64),
        ]))
    }

    fn save(&self) -> Result<Option<Vec<u8>>, TuneError> {
        Ok(Some(self.epoch.to_le_bytes().to_vec()))
    }

    fn restore(&mut self, checkpoint: &[u8]) -> Result<(), TuneError> {
        let bytes = checkpoint
            .try_into()
            .map_err(|_| TuneError::Data("8 bytes".into()))?;
        self.epoch = u64::from_le_bytes(bytes);
        let runs = std::fs::read_to_string(&self.mark).unwrap_or_default();
        std::fs::write(&self.mark, runs + &format!("restored {}\n", self.epoch))
            .map_err(|e| TuneError::Runtime(e.to_string()))
    }
}

impl Drop for Curve {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Trainables set up and not yet dropped (all trials run in this process), and the most
/// there were at once.
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

prism_tune::register_trainable!(Curve);

/// Not registered.
struct Stray;

impl Trainable for Stray {
    fn setup(_: &Config) -> Result<Self, TuneError> {
        Ok(Stray)
    }

    fn step(&mut self) -> Result<Metrics, TuneError> {
        Ok(Metrics::new())
    }
}

fn finals() -> Space {
    let values: Vec<f64> = (0..9).map(|i| 0.5 + 0.05 * ((i * 4) % 9) as f64).collect();
    Space::new().add("final", grid(values))
}

fn tuner(space: &Space, options: TuneOptions) -> Tuner {
    Tuner::new(
        Box::new(GridSearch::new(space, 1, 0).unwrap()),
        options.display(Display::Quiet),
    )
}

fn cpus_free() -> f64 {
    prism::available_resources()
        .unwrap()
        .get("CPU")
        .copied()
        .unwrap_or(0.0)
}

#[test]
fn class_trainables_run_in_actors_and_asha_stops_the_ones_behind() {
    prism::init_with(prism::Config::default().num_cpus(2.0)).unwrap();
    let fifo = tuner(
        &finals(),
        TuneOptions::new("acc", Mode::Max).stop_when("training_iteration", 9.0),
    )
    .run_trainable::<Curve>()
    .unwrap();
    assert_eq!(fifo.trials.len(), 9);
    assert!(fifo
        .trials
        .iter()
        .all(|t| t.status == Status::Completed && t.history.len() == 9));
    let asha = tuner(
        &finals(),
        TuneOptions::new("acc", Mode::Max).scheduler(SchedulerSpec::Asha {
            max_t: 9,
            grace_period: 1,
            reduction_factor: 3.0,
        }),
    )
    .run_trainable::<Curve>()
    .unwrap();
    let best = asha.best().unwrap();
    assert_eq!(best.config, fifo.best().unwrap().config);
    assert_eq!(best.history.len(), 9);
    assert!(
        asha.iterations() < fifo.iterations(),
        "{}",
        asha.iterations()
    );
    assert!(asha.trials.iter().any(|t| t.status == Status::Stopped));
    // Every trial's actor ended with its trial: the CPUs are free again (the last
    // actor's end is asynchronous, so within a bounded wait).
    let t = std::time::Instant::now();
    while cpus_free() < 2.0 && t.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(cpus_free(), 2.0);
    prism::shutdown();
}

#[test]
fn a_failed_class_trial_goes_on_from_its_latest_checkpoint() {
    prism::init_with(prism::Config::default().num_cpus(2.0)).unwrap();
    let dir = std::env::temp_dir().join(format!("prism-tune-class-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let space = Space::new()
        .add("final", grid([0.8]))
        .add("dir", dir.to_string_lossy().to_string())
        .add("fail_at", 5);
    let options = TuneOptions::new("acc", Mode::Max)
        .stop_when("training_iteration", 8.0)
        .checkpoint_every(2)
        .max_retries(1);
    let grid = tuner(&space, options).run_trainable::<Curve>().unwrap();
    let t = &grid.trials[0];
    assert_eq!(t.status, Status::Completed);
    // Steps 1–4 from the first run, which failed at step 5; the second run was set up
    // again, restored to step 4 (its latest checkpoint), and took steps 5–8.
    let epochs: Vec<f64> = t.history.iter().map(|m| m["epoch"]).collect();
    assert_eq!(epochs, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
    let log = std::fs::read_to_string(dir.join("setup-0.8")).unwrap();
    assert_eq!(log, "setup\nsetup\nrestored 4\n");
    assert_eq!(t.checkpoint.as_ref().unwrap().iteration, 8);
    prism::shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn done_ends_a_trial_and_resources_per_trial_bound_the_concurrency() {
    prism::init_with(prism::Config::default().num_cpus(2.0)).unwrap();
    let space = finals().add("done_at", 3);
    // One CPU a trial (the default) on two CPUs: two trials at a time.
    let ends = || TuneOptions::new("acc", Mode::Max).stop_when("done", 1.0);
    let grid = tuner(&space, ends()).run_trainable::<Curve>().unwrap();
    assert!(grid
        .trials
        .iter()
        .all(|t| t.status == Status::Completed && t.history.len() == 3));
    assert_eq!(PEAK.swap(0, Ordering::SeqCst), 2);
    // Two CPUs a trial: one at a time.
    let options = ends().resources_per_trial(2.0, 0.0);
    let grid = tuner(&space, options).run_trainable::<Curve>().unwrap();
    assert_eq!(grid.trials.len(), 9);
    assert_eq!(PEAK.load(Ordering::SeqCst), 1);
    // Not registered: a clear error before any trial starts.
    let err = tuner(&finals(), ends())
        .run_trainable::<Stray>()
        .unwrap_err();
    assert!(err.to_string().contains("register_trainable!"), "{err}");
    // Nothing to end a trial: refused, not run forever.
    let err = tuner(&finals(), TuneOptions::new("acc", Mode::Max))
        .run_trainable::<Curve>()
        .unwrap_err();
    assert!(err.to_string().contains("stop condition"), "{err}");
    prism::shutdown();
}
