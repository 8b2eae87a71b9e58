//! Checkpoints: a trial that fails goes on from its latest checkpoint instead of from
//! the start, and a run whose process is killed mid-trial resumes that trial from the
//! checkpoint its experiment directory holds.

use std::path::{Path, PathBuf};

use prism_tune::display::Display;
use prism_tune::tuner::{Metrics, Reporter, Status, TuneOptions, Tuner};
use prism_tune::{grid, Config, GridSearch, Mode, Space, TuneError};

fn fail(e: impl std::fmt::Display) -> TuneError {
    TuneError::Runtime(e.to_string())
}

/// Appends the iteration this run of the trial starts from to `dir/starts-<trial>`.
fn note_start(dir: &str, reporter: &Reporter) -> Result<u64, TuneError> {
    let start = match reporter.checkpoint() {
        Some(bytes) => u64::from_le_bytes(bytes.try_into().map_err(fail)?),
        None => 0,
    };
    assert_eq!(
        start as usize,
        reporter.iteration(),
        "the checkpoint's iteration"
    );
    let file = Path::new(dir).join(format!("starts-{}", reporter.trial()));
    let mut starts = std::fs::read_to_string(&file).unwrap_or_default();
    starts.push_str(&format!("{start}\n"));
    std::fs::write(&file, starts).map_err(fail)?;
    Ok(start)
}

fn starts(dir: &Path, trial: usize) -> String {
    std::fs::read_to_string(dir.join(format!("starts-{trial}"))).unwrap_or_default()
}

/// Six epochs, a checkpoint (the epoch's number) with each report. `crash` says what
/// goes wrong on the first run of a trial, after its third epoch.
fn epochs(
    dir: &str,
    config: &Config,
    reporter: &Reporter,
    crash: impl Fn() -> Result<(), TuneError>,
) -> Result<(), TuneError> {
    let fin = config.f64("final")?;
    let start = note_start(dir, reporter)?;
    for epoch in start + 1..=6 {
        let metrics = Metrics::from([
            ("acc".to_string(), fin * epoch as f64 / 6.0),
            ("epoch".to_string(), epoch as f64),
        ]);
        if !reporter.report_checkpoint(metrics, epoch.to_le_bytes().to_vec())? {
            break;
        }
        if epoch == 3 && start == 0 {
            crash()?;
        }
    }
    Ok(())
}

/// Fails after its third epoch on its first run.
#[prism::remote]
fn flaky(dir: String, config: Config, reporter: Reporter) -> Result<(), TuneError> {
    epochs(&dir, &config, &reporter, || {
        Err(TuneError::Runtime("lost its GPU".into()))
    })
}

fn epochs_of(history: &[Metrics]) -> Vec<f64> {
    history.iter().map(|m| m["epoch"]).collect()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("prism-tune-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_failed_trial_goes_on_from_its_latest_checkpoint() {
    prism::init_with(prism::Config::default().num_cpus(2.0)).unwrap();
    let dir = scratch("retry");
    let dir_s = dir.to_string_lossy().to_string();
    let space = Space::new().add("final", grid([0.6, 0.9]));
    let options = TuneOptions::new("acc", Mode::Max)
        .max_retries(1)
        .display(Display::Quiet);
    let grid = Tuner::new(Box::new(GridSearch::new(&space, 1, 0).unwrap()), options)
        .run(|c, r| flaky::remote(dir_s.clone(), c, r))
        .unwrap();
    for t in &grid.trials {
        assert_eq!(t.status, Status::Completed);
        // Epochs 1–3 from the first run, 4–6 from the second: none twice.
        assert_eq!(epochs_of(&t.history), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(starts(&dir, t.id), "0\n3\n");
        let last = t.checkpoint.as_ref().unwrap();
        assert_eq!(
            (last.iteration, last.bytes.as_slice()),
            (6, &6u64.to_le_bytes()[..])
        );
    }
    prism::shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Aborts the whole process (as `kill -9` would) after trial 1's third epoch on its
/// first run, once the tuner has journalled that epoch's checkpoint.
#[prism::remote]
fn doomed(dir: String, config: Config, reporter: Reporter) -> Result<(), TuneError> {
    let trial = reporter.trial();
    let journal = Path::new(&dir).join("experiment/trials.jsonl");
    epochs(&dir, &config, &reporter, || {
        if trial == 1 {
            for _ in 0..1000 {
                let text = std::fs::read_to_string(&journal).unwrap_or_default();
                if text.contains(r#"{"checkpoint":1,"iteration":3"#) {
                    std::process::abort();
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            return Err(TuneError::Runtime(
                "the checkpoint was never journalled".into(),
            ));
        }
        Ok(())
    })
}

fn tune(experiment: &Path, marks: &str) -> prism_tune::tuner::ResultGrid {
    let space = Space::new().add("final", grid([0.5, 0.7, 0.9]));
    let options = TuneOptions::new("acc", Mode::Max)
        .max_concurrent(1)
        .experiment_dir(experiment)
        .display(Display::Quiet);
    let marks = marks.to_string();
    Tuner::new(Box::new(GridSearch::new(&space, 1, 0).unwrap()), options)
        .run(|c, r| doomed::remote(marks.clone(), c, r))
        .unwrap()
}

const CHILD: &str = "PRISM_TUNE_DOOMED_RUN";

#[test]
fn a_run_killed_mid_trial_resumes_it_from_its_checkpoint() {
    if let Ok(root) = std::env::var(CHILD) {
        // The doomed run, in a process of its own that dies in trial 1.
        prism::init_with(prism::Config::default().num_cpus(2.0)).unwrap();
        let root = PathBuf::from(root);
        tune(&root.join("experiment"), &root.to_string_lossy());
        unreachable!("the run was to be killed");
    }
    let root = scratch("killed");
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "a_run_killed_mid_trial_resumes_it_from_its_checkpoint",
            "--exact",
            "--nocapture",
        ])
        .env(CHILD, &root)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the doomed run was killed");
    assert_eq!(starts(&root, 1), "0\n");

    prism::init_with(prism::Config::default().num_cpus(2.0)).unwrap();
    let grid = tune(&root.join("experiment"), &root.to_string_lossy());
    assert_eq!(grid.trials.len(), 3);
    // Trial 0 finished before the kill and did not run again; trial 1 went on from its
    // third epoch's checkpoint; trial 2 started afresh.
    assert_eq!(starts(&root, 0), "0\n");
    assert_eq!(starts(&root, 1), "0\n3\n");
    assert_eq!(starts(&root, 2), "0\n");
    for t in &grid.trials {
        assert_eq!(t.status, Status::Completed, "trial {}", t.id);
        assert_eq!(
            epochs_of(&t.history),
            [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            "trial {}",
            t.id
        );
    }
    // Only each trial's latest checkpoint is kept.
    let mut kept: Vec<String> = std::fs::read_dir(root.join("experiment/checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    kept.sort();
    assert_eq!(kept, ["trial-0-6.bin", "trial-1-6.bin", "trial-2-6.bin"]);
    // The directory opens again (its journal names checkpoints since removed), and a
    // run of it runs nothing.
    let again = tune(&root.join("experiment"), &root.to_string_lossy());
    assert_eq!(again.trials, grid.trials);
    assert_eq!(starts(&root, 1), "0\n3\n");
    prism::shutdown();
    let _ = std::fs::remove_dir_all(&root);
}
