//! Fault tolerance in prism-train: the seed's linear model trained on two workers, one
//! worker's process killed by PID part way. The other worker's all-reduce fails at once
//! (no timeout to wait out), the trainer restarts both workers from the latest
//! checkpoint, the epochs are counted on from it, and the run ends at the same loss as
//! an unbroken run.
//!
//! `cargo run --release --example train_fault`: on a two-node cluster of its own on
//! loopback (the workers must be processes apart from this one to be killed), or on a
//! running cluster with `PRISM_ADDRESS=auto`.

use std::path::Path;
use std::time::{Duration, Instant};

use prism_examples::linear::{fit, LinearConfig, Samples};
use prism_train::RunConfig;

/// Once the run in `run_dir` has checkpointed epoch `after`, kills the process of rank
/// 1 (whose PID it wrote into `pids`); the PID it killed.
fn kill_rank_one(run_dir: &Path, pids: &Path, after: usize) -> Result<u32, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let checkpoint = run_dir.join(format!("checkpoint_{after:06}"));
    while !checkpoint.exists() {
        if Instant::now() > deadline {
            return Err(format!("no checkpoint of epoch {after} within a minute"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let pid: u32 = std::fs::read_to_string(pids.join("rank1.pid"))
        .map_err(|e| format!("rank 1's PID: {e}"))?
        .trim()
        .parse()
        .map_err(|e| format!("rank 1's PID: {e}"))?;
    if pid == std::process::id() {
        return Err("rank 1 runs in this process: run on a cluster".into());
    }
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .map_err(|e| e.to_string())?;
    killed
        .success()
        .then_some(pid)
        .ok_or(format!("kill {pid} failed"))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A worker process of the cluster below serves tasks here and never returns.
    prism::enter_if_worker();
    let _cluster = match std::env::var("PRISM_ADDRESS") {
        Ok(_) => {
            prism::init()?;
            None
        }
        Err(_) => {
            let bin = prism::testing::sibling_prism_bin()
                .ok_or("no prism binary next to this one: `cargo build --release --bins` first")?;
            let cluster = prism::testing::LocalCluster::start(
                bin,
                &[("127.0.0.2", 1.0), ("127.0.0.3", 1.0)],
            )?;
            cluster.connect()?;
            Some(cluster)
        }
    };
    let data = Samples::generate(1000, 0);
    let scratch = std::env::temp_dir().join(format!("prism-train-fault-{}", std::process::id()));
    let (run_dir, pids) = (scratch.join("run"), scratch.join("pids"));
    std::fs::create_dir_all(&pids)?;
    let config = LinearConfig {
        epochs: 12,
        nap: Duration::from_millis(150),
        pid_dir: Some(pids.clone()),
        ..LinearConfig::default()
    };

    println!("an unbroken run:");
    let unbroken = fit(&data, &config, 2, RunConfig::new())?;

    println!("a run whose rank 1 is killed after epoch 4:");
    let killer = {
        let (run_dir, pids) = (run_dir.clone(), pids.clone());
        std::thread::spawn(move || kill_rank_one(&run_dir, &pids, 4))
    };
    let broken = fit(
        &data,
        &config,
        2,
        RunConfig::new().dir(&run_dir).max_failures(3),
    )?;
    let pid = killer.join().map_err(|_| "the killer panicked")??;
    println!(
        "killed rank 1 (pid {pid}); the run restarted {} time(s)",
        broken.failures
    );

    let (a, b) = (unbroken.metrics()["loss"], broken.metrics()["loss"]);
    println!("final loss: {a:.6} unbroken, {b:.6} with the kill");
    assert_eq!(broken.failures, 1, "one restart");
    assert_eq!(
        broken.history.len(),
        config.epochs,
        "every epoch counted once"
    );
    assert!((a - b).abs() <= 1e-3 * a, "the same end: {a} vs {b}");
    let _ = std::fs::remove_dir_all(&scratch);
    prism::shutdown();
    Ok(())
}
