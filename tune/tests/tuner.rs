//! The Tuner on the embedded runtime with a trainable whose learning curves are known:
//! FIFO runs every trial to the end, ASHA stops the trials that are behind and keeps the
//! best, a failing trial is reported as failed, a report without the metric is an error,
//! and the results export to CSV and JSON.

use prism_tune::tuner::{Metrics, Reporter, SchedulerSpec, Status, TuneOptions, Tuner};
use prism_tune::{grid, Config, GridSearch, Mode, Space, TuneError};

/// Accuracy after `epoch` epochs: saturating towards `final` (a parameter).
#[prism::remote]
fn curve(config: Config, reporter: Reporter) -> Result<(), TuneError> {
    let fin = config.f64("final")?;
    if fin < 0.0 {
        return Err(TuneError::Config("a negative final accuracy".into()));
    }
    for epoch in 1..=27 {
        let acc = fin * (1.0 - (-(epoch as f64) / 4.0).exp());
        let metrics = Metrics::from([
            ("acc".to_string(), acc),
            ("epoch".to_string(), epoch as f64),
        ]);
        if !reporter.report(metrics)? {
            break;
        }
    }
    Ok(())
}

#[prism::remote]
fn forgetful(_config: Config, reporter: Reporter) -> Result<(), TuneError> {
    reporter.report(Metrics::from([("accuracy".to_string(), 1.0)]))?;
    Ok(())
}

fn finals() -> Space {
    let values: Vec<f64> = (0..27)
        .map(|i| 0.5 + 0.45 * ((i * 7) % 27) as f64 / 27.0)
        .collect();
    Space::new().add("final", grid(values))
}

#[test]
fn fifo_runs_every_trial_and_asha_stops_the_ones_behind() {
    prism::init_with(prism::Config::default().num_cpus(2.0)).unwrap();
    let run = |scheduler| {
        let options = TuneOptions::new("acc", Mode::Max)
            .max_concurrent(3)
            .scheduler(scheduler);
        let search = GridSearch::new(&finals(), 1, 0).unwrap();
        Tuner::new(Box::new(search), options)
            .run(curve::remote)
            .unwrap()
    };
    let fifo = run(SchedulerSpec::Fifo);
    assert_eq!(fifo.trials.len(), 27);
    assert!(fifo.trials.iter().all(|t| t.status == Status::Completed));
    assert_eq!(fifo.iterations(), 27 * 27);

    let asha = run(SchedulerSpec::Asha {
        max_t: 27,
        grace_period: 1,
        reduction_factor: 3.0,
    });
    let best = asha.best().unwrap();
    let fifo_best = fifo.best().unwrap();
    // The same best trial, run to the end, for a fraction of the epochs.
    assert_eq!(best.config, fifo_best.config);
    assert_eq!(best.history.len(), 27);
    assert!(
        asha.iterations() * 2 < fifo.iterations(),
        "{}",
        asha.iterations()
    );
    let stopped = asha
        .trials
        .iter()
        .filter(|t| t.status == Status::Stopped)
        .count();
    assert!(stopped >= 13, "{stopped} stopped");
    for t in &asha.trials {
        if t.status == Status::Stopped {
            assert!(
                [1, 3, 9].contains(&t.history.len()),
                "{:?}",
                t.history.len()
            );
        }
    }
    prism::shutdown();
}

#[test]
fn failures_and_missing_metrics_are_reported_and_results_export() {
    prism::init_with(prism::Config::default().num_cpus(2.0)).unwrap();
    let space = Space::new().add("final", grid([0.9, -1.0]));
    let options = TuneOptions::new("acc", Mode::Max);
    let grid = Tuner::new(
        Box::new(GridSearch::new(&space, 1, 0).unwrap()),
        options.clone(),
    )
    .run(curve::remote)
    .unwrap();
    assert_eq!(grid.trials.len(), 2);
    assert_eq!(grid.trials[0].status, Status::Completed);
    match &grid.trials[1].status {
        Status::Failed(why) => assert!(why.contains("negative"), "{why}"),
        other => panic!("{other:?}"),
    }
    let csv = grid.to_csv();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "trial,status,iterations,final,acc,epoch");
    assert!(lines[1].starts_with("0,completed,27,0.9,"), "{}", lines[1]);
    assert!(lines[2].starts_with("1,failed: "), "{}", lines[2]);
    let json = grid.to_json();
    assert_eq!(json["trials"][0]["history"].as_array().unwrap().len(), 27);
    assert_eq!(json["trials"][0]["config"]["final"], 0.9);

    // A trainable that reports another metric than the one asked for fails clearly.
    let grid = Tuner::new(Box::new(GridSearch::new(&space, 1, 0).unwrap()), options)
        .run(forgetful::remote)
        .unwrap();
    match &grid.trials[0].status {
        Status::Failed(why) => assert!(why.contains("reported no \"acc\""), "{why}"),
        other => panic!("{other:?}"),
    }
    prism::shutdown();
}

/// Like `curve`, and leaves a mark in `dir` for every run of a trial.
#[prism::remote]
fn marked(dir: String, config: Config, reporter: Reporter) -> Result<(), TuneError> {
    let fin = config.f64("final")?;
    let mark = std::path::Path::new(&dir).join(format!("{}-{}", reporter.trial(), fin));
    std::fs::write(&mark, b"ran").map_err(|e| TuneError::Runtime(e.to_string()))?;
    for epoch in 1..=5 {
        let acc = fin * epoch as f64 / 5.0;
        if !reporter.report(Metrics::from([("acc".to_string(), acc)]))? {
            break;
        }
    }
    Ok(())
}

/// A run of `marked` trials, two at a time, journalled in `exp`.
fn run_marked(
    search: Box<dyn prism_tune::Searcher>,
    exp: &std::path::Path,
    marks: &str,
) -> prism_tune::tuner::ResultGrid {
    let options = TuneOptions::new("acc", Mode::Max)
        .max_concurrent(2)
        .experiment_dir(exp);
    Tuner::new(search, options)
        .run(|c, r| marked::remote(marks.to_string(), c, r))
        .unwrap()
}

/// Cuts the journal in `exp` as a crash would have: only the first `finished` trials'
/// ends are kept, and `tail` (a line half written, say) follows.
fn cut_journal(exp: &std::path::Path, finished: usize, tail: &str) {
    let journal = exp.join("trials.jsonl");
    let text = std::fs::read_to_string(&journal).unwrap();
    let mut ends = 0;
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            let end = l.contains("\"finished\"");
            ends += end as usize;
            !(end && ends > finished)
        })
        .collect();
    std::fs::write(&journal, kept.join("\n") + "\n" + tail).unwrap();
}

/// A fresh scratch folder with an experiment directory and a folder of marks in it.
fn experiment(name: &str) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let root = std::env::temp_dir().join(format!("prism-tune-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (exp, marks) = (root.join("experiment"), root.join("marks"));
    std::fs::create_dir_all(&marks).unwrap();
    (root, exp, marks)
}

#[test]
fn an_interrupted_run_resumes_without_running_finished_trials_again() {
    prism::init_with(prism::Config::default().num_cpus(2.0)).unwrap();
    let (root, exp, marks) = experiment("resume");
    let marks_s = marks.to_string_lossy().to_string();
    let space = Space::new().add("final", prism_tune::uniform(0.0, 1.0));
    let tune = |n: usize| {
        let search = prism_tune::RandomSearch::new(&space, n, 7).unwrap();
        run_marked(Box::new(search), &exp, &marks_s)
    };
    let first = tune(6);
    assert_eq!(first.trials.len(), 6);
    let runs = || std::fs::read_dir(&marks).unwrap().count();
    assert_eq!(runs(), 6);

    // The whole run again: nothing runs, the same results come back.
    let again = tune(6);
    assert_eq!(runs(), 6);
    assert_eq!(again.trials, first.trials);

    // Cut the journal as a crash would have: the last two trials never finished, and
    // the last line is half written.
    cut_journal(&exp, 4, "{\"finished\": 5, \"sta");
    let resumed = tune(8);
    // Two trials ran again, two new ones ran, four were kept.
    assert_eq!(runs(), 6 + 2);
    assert_eq!(resumed.trials.len(), 8);
    let old: Vec<_> = first.trials.iter().map(|t| t.config.clone()).collect();
    let new: Vec<_> = resumed.trials.iter().map(|t| t.config.clone()).collect();
    assert_eq!(
        &new[..6],
        &old[..],
        "the seeded searcher continues where it was"
    );
    prism::shutdown();
    let _ = std::fs::remove_dir_all(&root);
}

/// Suggests `final` = 0.0, 0.1, 0.2, … up to `total` configurations, keeps how far it
/// got as its state, and counts the calls to `suggest` and to `observe`.
struct Counting {
    next: usize,
    total: usize,
    calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    heard: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl prism_tune::Searcher for Counting {
    fn suggest(&mut self) -> Option<Config> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        (self.next < self.total).then(|| {
            self.next += 1;
            Config::from_pairs([("final", ((self.next - 1) as f64 / 10.0).into())])
        })
    }

    fn observe(&mut self, _config: &Config, _score: f64) {
        self.heard.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    fn state(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({"next": self.next}))
    }

    fn restore(&mut self, state: &serde_json::Value) -> Result<(), TuneError> {
        self.next = state["next"].as_u64().unwrap() as usize;
        Ok(())
    }
}

#[test]
fn a_resumed_run_takes_the_searchers_state_back_instead_of_replaying() {
    prism::init_with(prism::Config::default().num_cpus(2.0)).unwrap();
    let (root, exp, marks) = experiment("state");
    let marks_s = marks.to_string_lossy().to_string();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let heard = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tune = |total: usize| {
        let search = Counting {
            next: 0,
            total,
            calls: calls.clone(),
            heard: heard.clone(),
        };
        run_marked(Box::new(search), &exp, &marks_s)
    };
    tune(6);
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(exp.join("searcher.json")).unwrap()).unwrap();
    assert_eq!(saved["suggested"], 6);
    assert_eq!(saved["state"]["next"], 6);
    assert_eq!(saved["observed"].as_array().unwrap().len(), 6);

    // Two trials lost their ends in a crash; the searcher's state is whole.
    cut_journal(&exp, 4, "");
    calls.store(0, std::sync::atomic::Ordering::SeqCst);
    heard.store(0, std::sync::atomic::Ordering::SeqCst);
    let resumed = tune(8);
    // Two new configurations and the end: no suggestion replayed for the six recorded.
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
    // It had heard all six before the crash: now only the two new trials, though the
    // two cut short ran again.
    assert_eq!(heard.load(std::sync::atomic::Ordering::SeqCst), 2);
    let finals: Vec<f64> = resumed
        .trials
        .iter()
        .map(|t| t.config.f64("final").unwrap())
        .collect();
    assert_eq!(finals, [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]);
    // Marks are per trial and configuration: the two cut short ran again over theirs,
    // and the two new ones left two more.
    assert_eq!(std::fs::read_dir(&marks).unwrap().count(), 8);
    prism::shutdown();
    let _ = std::fs::remove_dir_all(&root);
}

/// Fails on its first run (leaving a mark in `dir`), succeeds on the next.
#[prism::remote]
fn flaky(dir: String, config: Config, reporter: Reporter) -> Result<(), TuneError> {
    let mark = std::path::Path::new(&dir).join(format!("tried-{}", reporter.trial()));
    if !mark.exists() {
        std::fs::write(&mark, b"1").map_err(|e| TuneError::Runtime(e.to_string()))?;
        reporter.report(Metrics::from([("acc".to_string(), 0.0)]))?;
        return Err(TuneError::Runtime("a flaky failure".into()));
    }
    let fin = config.f64("final")?;
    for epoch in 1..=3 {
        reporter.report(Metrics::from([(
            "acc".to_string(),
            fin * epoch as f64 / 3.0,
        )]))?;
    }
    Ok(())
}

#[test]
fn stop_conditions_end_trials_and_failed_trials_run_again() {
    prism::init_with(prism::Config::default().num_cpus(2.0)).unwrap();
    let space = Space::new().add("final", grid([0.5, 0.9]));
    // Stop once the accuracy reaches 0.55, or after 5 reports.
    let options = TuneOptions::new("acc", Mode::Max)
        .stop_when("acc", 0.55)
        .stop_when("training_iteration", 5.0);
    let grid = Tuner::new(Box::new(GridSearch::new(&space, 1, 0).unwrap()), options)
        .run(curve::remote)
        .unwrap();
    for t in &grid.trials {
        assert_eq!(t.status, Status::Completed);
        let last = t.last("acc").unwrap();
        assert!(
            t.history.len() == 5 || last >= 0.55,
            "{} {last}",
            t.history.len()
        );
        assert!(t.history.len() <= 5);
    }
    // 0.9 x (1 - e^-1) = 0.569 at the fourth epoch; 0.5's curve never gets there.
    assert_eq!(grid.trials[1].history.len(), 4);
    assert_eq!(grid.trials[0].history.len(), 5);

    let dir = std::env::temp_dir().join(format!("prism-tune-flaky-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.to_string_lossy().to_string();
    let run = |retries| {
        let options = TuneOptions::new("acc", Mode::Max).max_retries(retries);
        Tuner::new(Box::new(GridSearch::new(&space, 1, 0).unwrap()), options)
            .run(|c, r| flaky::remote(d.clone(), c, r))
            .unwrap()
    };
    let retried = run(1);
    for t in &retried.trials {
        assert_eq!(t.status, Status::Completed);
        // The failed attempt's reports are forgotten: three epochs, none at 0.0.
        assert_eq!(t.history.len(), 3);
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let failed = run(0);
    assert!(failed
        .trials
        .iter()
        .all(|t| matches!(&t.status, Status::Failed(why) if why.contains("flaky"))));
    prism::shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
