//! An interrupted search resumes where it stopped: this program starts itself as a child
//! process running a 12-trial search with an experiment directory, kills it outright
//! (SIGKILL, by its PID) once a few trials have finished, then runs the same search with
//! the same directory: the finished trials are taken from the journal, not run again.
//!
//! `cargo run --release --example tune_resume`

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use prism_tune::tuner::{Metrics, Reporter, ResultGrid, TuneOptions, Tuner};
use prism_tune::{loguniform, Config, Mode, RandomSearch, Space, TuneError};

/// A slow trainable: ten epochs of 40 ms, its score rising towards a value set by `lr`.
#[prism::remote]
fn slow(config: Config, reporter: Reporter) -> Result<(), TuneError> {
    let lr = config.f64("lr")?;
    let ceiling = 1.0 - (lr.log10() + 2.0).abs() / 4.0;
    for epoch in 1..=10 {
        std::thread::sleep(Duration::from_millis(40));
        let score = ceiling * epoch as f64 / 10.0;
        if !reporter.report(Metrics::from([("score".to_string(), score)]))? {
            break;
        }
    }
    Ok(())
}

fn search(dir: &std::path::Path) -> Result<ResultGrid, TuneError> {
    let space = Space::new().add("lr", loguniform(1e-4, 1.0));
    let options = TuneOptions::new("score", Mode::Max)
        .max_concurrent(2)
        .experiment_dir(dir);
    Tuner::new(Box::new(RandomSearch::new(&space, 12, 3)?), options).run(slow::remote)
}

fn finished(dir: &std::path::Path) -> usize {
    std::fs::read_to_string(dir.join("trials.jsonl"))
        .map(|t| t.lines().filter(|l| l.contains("\"finished\"")).count())
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    prism::init()?;
    if let Some(dir) = prism_examples::flag::<std::path::PathBuf>("--child")? {
        search(&dir)?;
        return Ok(());
    }
    let dir = std::env::temp_dir().join(format!("prism-tune-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--child", &dir.to_string_lossy()])
        .stdout(Stdio::null())
        .spawn()?;
    let t = Instant::now();
    while finished(&dir) < 4 && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(10));
    }
    // Killed outright by its PID, as a crash or `kill -9` would.
    child.kill()?;
    child.wait()?;
    let before = finished(&dir);
    println!(
        "interrupted the search after {before} of 12 trials had finished (pid {})",
        child.id()
    );

    let t = Instant::now();
    let grid = search(&dir)?;
    let best = grid.best().ok_or("no trial finished")?;
    println!(
        "resumed: {} trials in all, {before} taken from the journal, {} run now, in {:.2} s",
        grid.trials.len(),
        grid.trials.len() - before,
        t.elapsed().as_secs_f64()
    );
    println!(
        "best: {} with score {:.4}",
        best.config,
        best.last("score").unwrap_or(0.0)
    );
    let _ = std::fs::remove_dir_all(&dir);
    prism::shutdown();
    Ok(())
}
