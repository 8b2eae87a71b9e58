//! The `Trainer` end to end: a run on two workers, restarts from a checkpoint with the
//! epoch count kept (a worker's panic embedded, its process killed by PID on a
//! cluster), checkpoints kept by score in a run directory, the restore of a run whose
//! driver was killed, and the typed errors. Every behaviour runs embedded and as a
//! driver of a two-node cluster of real processes (`both_modes!`), where the workers
//! are spread over the two nodes and meet over TCP.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use prism::testing::{Mode as RunMode, NodeSpec, Session};
use prism::PlacementStrategy;
use prism_train::{
    register_loop, Mode, ReduceOp, RunConfig, ScalingConfig, TrainContext, TrainError, TrainLoop,
    Trainer, Transport,
};
use serde::{Deserialize, Serialize};

/// How the tally loop runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Plan {
    epochs: usize,
    /// Every how many epochs to checkpoint.
    every: usize,
    /// On the first attempt, rank 1 fails at the start of this epoch (1-based)...
    fail_at: Option<usize>,
    /// ...by writing its PID here and waiting to be killed, rather than panicking.
    pid_file: Option<String>,
    /// A nap per epoch, to give a test time to act.
    nap_ms: u64,
    /// Rank 0's pause between an epoch's all-reduce and its report: its report comes
    /// after a failing peer's end.
    lag_ms: u64,
}

impl Plan {
    fn epochs(epochs: usize) -> Plan {
        Plan {
            epochs,
            every: 1,
            fail_at: None,
            pid_file: None,
            nap_ms: 0,
            lag_ms: 0,
        }
    }
}

/// Every rank adds `rank + 1` to a running sum each epoch (through an all-reduce);
/// reports the epoch, the sum, the world size as the ranks counted it, the number of
/// distinct nodes the ranks run on, the attempt, a loss lowest at epoch 4, and whether
/// the all-reduces went through the processes' memory.
struct Tally;

impl TrainLoop for Tally {
    type Config = Plan;
    type Shard = ();

    fn train(ctx: &mut TrainContext, plan: Plan, _: ()) -> prism_train::Result<()> {
        let mut sum = match ctx.checkpoint() {
            Some(b) => f64::from_le_bytes(b.try_into().map_err(TrainError::from_loop)?),
            None => 0.0,
        };
        let node = prism::context()?.node_id;
        let nodes: std::collections::BTreeSet<Vec<u8>> = ctx
            .all_gather(&node.bytes().map(f32::from).collect::<Vec<_>>())?
            .into_iter()
            .map(|part| part.into_iter().map(|b| b as u8).collect())
            .collect();
        for epoch in ctx.start_epoch() + 1..=plan.epochs {
            if ctx.attempt() == 0 && ctx.rank() == 1 && plan.fail_at == Some(epoch) {
                match &plan.pid_file {
                    Some(path) => {
                        std::fs::write(path, std::process::id().to_string())
                            .map_err(TrainError::from_loop)?;
                        // Killed from outside well before this ends.
                        std::thread::sleep(Duration::from_secs(60));
                    }
                    None => panic!("rank 1 falls over at epoch {epoch}"),
                }
            }
            std::thread::sleep(Duration::from_millis(plan.nap_ms));
            let mut part = vec![ctx.rank() as f64 + 1.0, 1.0];
            ctx.all_reduce(&mut part, ReduceOp::Sum)?;
            sum += part[0];
            if ctx.rank() == 0 {
                std::thread::sleep(Duration::from_millis(plan.lag_ms));
            }
            let metrics = [
                ("epoch", epoch as f64),
                ("sum", sum),
                ("world", part[1]),
                ("nodes", nodes.len() as f64),
                ("attempt", ctx.attempt() as f64),
                ("loss", (epoch as f64 - 4.0).powi(2)),
                (
                    "host_memory",
                    f64::from(ctx.transport().contains("host memory")),
                ),
            ];
            let due = epoch % plan.every == 0;
            ctx.report(metrics, due.then(|| sum.to_le_bytes().to_vec()))?;
        }
        Ok(())
    }
}
register_loop!(Tally);

/// Three SGD steps of a small MLP on each rank's own batch, the gradient averaged
/// whole after the backward pass or in buckets during it (`Config` = bucketed);
/// reports the parameters' sum and the first parameters.
struct Buckets;

impl TrainLoop for Buckets {
    type Config = bool;
    type Shard = ();

    fn train(ctx: &mut TrainContext, bucketed: bool, _: ()) -> prism_train::Result<()> {
        use prism_train::model::{sgd_step, Mlp, Model};
        let rank = ctx.rank();
        let x = ndarray::Array2::from_shape_fn((16, 6), |(i, j)| {
            ((i * 7 + j * 3 + rank * 5) % 11) as f32 / 11.0 - 0.5
        });
        let y: Vec<u32> = (0..16).map(|i| ((i + rank) % 3) as u32).collect();
        let mlp_widths = [6, 20, 3];
        let mut mlp = Mlp::new(&mlp_widths, 4);
        let mut grads = vec![0.0; mlp.params().len()];
        for _ in 0..3 {
            if bucketed {
                let mut buckets = prism_train::GradientBuckets::new(16);
                let mut ready = |range, part: &[f32]| buckets.add(ctx, range, part);
                mlp.loss_grad_buckets(x.view(), &y, &mut grads, 16, &mut ready);
                buckets.finish(ctx, &mut grads)?;
            } else {
                mlp.loss_grad(x.view(), &y, &mut grads);
                ctx.all_reduce(&mut grads, ReduceOp::Mean)?;
            }
            sgd_step(mlp.params_mut(), &grads, 0.5);
        }
        let p = mlp.params();
        let sum: f64 = p.iter().map(|v| *v as f64).sum();
        ctx.report(
            [
                ("sum", sum),
                ("p0", p[0] as f64),
                ("last", p[p.len() - 1] as f64),
            ],
            None,
        )
    }
}
register_loop!(Buckets);

/// Each rank sums its shard; the ranks add their sums up.
struct Sharded;

impl TrainLoop for Sharded {
    type Config = ();
    type Shard = Vec<f64>;
    fn train(ctx: &mut TrainContext, _: (), shard: Vec<f64>) -> prism_train::Result<()> {
        let mut total = vec![shard.iter().sum::<f64>(), shard.len() as f64];
        ctx.all_reduce(&mut total, ReduceOp::Sum)?;
        ctx.report([("total", total[0]), ("rows", total[1])], None)
    }
}
register_loop!(Sharded);

/// A loop nobody registered.
struct Stray;

impl TrainLoop for Stray {
    type Config = ();
    type Shard = Vec<f32>;
    fn train(_: &mut TrainContext, _: (), _: Vec<f32>) -> prism_train::Result<()> {
        Ok(())
    }
}

/// A fresh directory for a test's run, removed by the guard.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("prism-train-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Two workers, spread: one per node on the cluster.
fn two_spread() -> ScalingConfig {
    ScalingConfig::new(2).strategy(PlacementStrategy::Spread)
}

fn column(history: &[prism_train::Metrics], name: &str) -> Vec<f64> {
    history.iter().map(|m| m[name]).collect()
}

fn checkpoint_dirs(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("checkpoint_"))
        .collect();
    names.sort();
    names
}

prism::both_modes! {
    /// Two workers all-reduce each epoch and rank 0's reports make the history; on the
    /// cluster the ranks are on two nodes.
    fn two_workers_train_and_report(session, NodeSpec::cpus(2.0)) {
        let result = Trainer::<Tally>::new(Plan::epochs(5), two_spread())
            .run_config(RunConfig::quiet())
            .fit()
            .unwrap();
        assert_eq!(column(&result.history, "epoch"), vec![1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(column(&result.history, "sum"), vec![3.0, 6.0, 9.0, 12.0, 15.0]);
        assert!(column(&result.history, "world").iter().all(|w| *w == 2.0));
        let nodes = result.history[0]["nodes"];
        assert_eq!(nodes, session.nodes() as f64, "one worker per node");
        // Embedded the ranks share a process; the cluster's two nodes share this
        // machine, so their ring reduces through the workers' memory.
        let host_memory = f64::from(session.mode() == RunMode::Cluster);
        assert_eq!(result.history[0]["host_memory"], host_memory);
        assert_eq!(result.failures, 0);
        let latest = result.checkpoint.unwrap();
        assert_eq!(latest.iteration, 5);
        assert_eq!(f64::from_le_bytes(latest.bytes.try_into().unwrap()), 15.0);
        assert_eq!(result.checkpoints.len(), 5);
        // The workers and their group are gone: every CPU is free again.
        prism::testing::wait_for(
            || (prism::available_resources().ok()?["CPU"] == 2.0 * session.nodes() as f64).then_some(()),
            "the workers' CPUs back",
        )
        .unwrap();
    }

    /// Gradients reduced in buckets on the communicator's thread, while the backward
    /// pass goes on, train the model as the whole gradient reduced after it does.
    fn bucketed_gradients_train_as_whole_ones(session, NodeSpec::cpus(2.0)) {
        let fit = |bucketed: bool, transport: Transport| {
            Trainer::<Buckets>::new(bucketed, two_spread().transport(transport))
                .run_config(RunConfig::quiet())
                .fit()
                .unwrap()
                .metrics()
        };
        let whole = fit(false, Transport::Auto);
        // Over every transport: every byte on a TCP ring too.
        for transport in [Transport::Auto, Transport::Tcp] {
            let bucketed = fit(true, transport);
            for key in ["sum", "p0", "last"] {
                let (a, b) = (whole[key], bucketed[key]);
                assert!((a - b).abs() <= 1e-5 * (1.0 + a.abs()), "{transport:?} {key}: {a} vs {b}");
            }
        }
    }

    /// Each worker trains on its own shard.
    fn each_worker_gets_its_shard(session, NodeSpec::cpus(2.0)) {
        let result = Trainer::<Sharded>::new((), two_spread())
            .shards(vec![vec![1.0, 2.0], vec![3.0]])
            .unwrap()
            .run_config(RunConfig::quiet())
            .fit()
            .unwrap();
        assert_eq!(result.metrics()["total"], 6.0);
        assert_eq!(result.metrics()["rows"], 3.0);
        assert!(result.checkpoint.is_none());
    }

    /// A worker fails at epoch 5 of 8 (its loop panics embedded; its process is
    /// killed by PID on the cluster): the other's collective fails at once, the gang
    /// restarts from the checkpoint of epoch 4, and the history goes on from epoch 5
    /// to the same end as an unbroken run. Rank 0 reports epoch 4 only after rank 1
    /// has failed, and that checkpoint still counts.
    fn failed_worker_restarts_from_its_checkpoint(session, NodeSpec::cpus(2.0)) {
        let scratch = Scratch::new("restart");
        let pid_file = scratch.0.join("rank1.pid");
        let cluster = session.mode() == RunMode::Cluster;
        let plan = Plan {
            fail_at: Some(5),
            every: 2,
            pid_file: cluster.then(|| pid_file.to_string_lossy().into_owned()),
            lag_ms: 100,
            ..Plan::epochs(8)
        };
        let killer = cluster.then(|| {
            let pid_file = pid_file.clone();
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(60);
                while Instant::now() < deadline {
                    if let Ok(pid) = std::fs::read_to_string(&pid_file) {
                        let status = std::process::Command::new("kill").args(["-9", &pid]).status();
                        return status.map(|s| s.success()).unwrap_or(false);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                false
            })
        });
        // A collective timeout far past the test's length: only the death can end
        // the survivor's wait in time.
        let run = RunConfig::quiet()
            .max_failures(2)
            .collective_timeout(Duration::from_secs(3600))
            .dir(scratch.0.join("run"));
        let started = Instant::now();
        let result = Trainer::<Tally>::new(plan, two_spread()).run_config(run).fit().unwrap();
        if let Some(k) = killer {
            assert!(k.join().unwrap(), "the worker's process was killed");
        }
        assert!(started.elapsed() < Duration::from_secs(120), "no wait on a dead peer");
        assert_eq!(result.failures, 1);
        assert_eq!(column(&result.history, "epoch"), (1..=8).map(f64::from).collect::<Vec<_>>());
        assert_eq!(
            column(&result.history, "attempt"),
            vec![0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]
        );
        assert_eq!(result.metrics()["sum"], 24.0, "the same end as an unbroken run");
        assert_eq!(
            checkpoint_dirs(&scratch.0.join("run")),
            ["checkpoint_000002", "checkpoint_000004", "checkpoint_000006", "checkpoint_000008"]
        );
    }

    /// With `num_to_keep` and a score, the best checkpoints and the latest stay, in
    /// memory and on disk; the best is the best by score.
    fn checkpoints_kept_by_score(session, NodeSpec::cpus(2.0)) {
        let scratch = Scratch::new("keep");
        let dir = scratch.0.join("run");
        let run = RunConfig::quiet().dir(&dir).num_to_keep(2).score("loss", Mode::Min);
        let result = Trainer::<Tally>::new(Plan::epochs(8), two_spread()).run_config(run).fit().unwrap();
        let kept: Vec<usize> = result.checkpoints.iter().map(|c| c.iteration).collect();
        // Losses by epoch: 9 4 1 0 1 4 9 16. Best: 4, then 5 (a tie with 3, the newer
        // wins), and the latest, 8.
        assert_eq!(kept, vec![4, 5, 8]);
        assert_eq!(result.best_checkpoint().unwrap().iteration, 4);
        assert_eq!(
            checkpoint_dirs(&dir),
            ["checkpoint_000004", "checkpoint_000005", "checkpoint_000008"]
        );
        let best = result.best_checkpoint().unwrap().path.clone().unwrap();
        assert_eq!(std::fs::read(best.join("checkpoint.bin")).unwrap(), 12.0f64.to_le_bytes());
    }

    /// A group that can never fit fails at once with a typed error; a run with too
    /// few shards or an unregistered loop is refused before it starts.
    fn bad_runs_are_refused(session, NodeSpec::cpus(2.0)) {
        let too_many = 2 * session.nodes() + 1;
        let err = Trainer::<Tally>::new(Plan::epochs(1), ScalingConfig::new(too_many))
            .run_config(RunConfig::quiet())
            .fit()
            .unwrap_err();
        assert!(matches!(&err, TrainError::Runtime(m) if m.contains("infeasible")), "{err}");

        let err = Trainer::<Stray>::new((), ScalingConfig::new(1)).fit().unwrap_err();
        assert!(matches!(&err, TrainError::Config(m) if m.contains("not registered")), "{err}");

        let err = Trainer::<Sharded>::new((), ScalingConfig::new(2))
            .shards(vec![vec![1.0]])
            .unwrap()
            .fit()
            .unwrap_err();
        assert!(matches!(&err, TrainError::Config(m) if m.contains("1 shards for 2 workers")), "{err}");

        let err = Trainer::<Sharded>::new((), ScalingConfig::new(2)).fit().unwrap_err();
        assert!(matches!(&err, TrainError::Config(m) if m.contains("Trainer::shards")), "{err}");

        let err = Trainer::<Tally>::new(Plan::epochs(1), ScalingConfig::new(0)).fit().unwrap_err();
        assert!(matches!(err, TrainError::Config(_)));
    }
}

/// A run directory that already holds a run is not overwritten; a directory without
/// one cannot be restored; a run of one loop cannot be restored as another.
#[test]
fn run_directories_are_checked() {
    let _session = Session::start(RunMode::Embedded, NodeSpec::cpus(2.0));
    let scratch = Scratch::new("dirs");
    let dir = scratch.0.join("run");
    let run = || RunConfig::quiet().dir(&dir);
    Trainer::<Tally>::new(Plan::epochs(2), ScalingConfig::new(1))
        .run_config(run())
        .fit()
        .unwrap();
    let err = Trainer::<Tally>::new(Plan::epochs(2), ScalingConfig::new(1))
        .run_config(run())
        .fit()
        .unwrap_err();
    assert!(
        matches!(&err, TrainError::Config(m) if m.contains("already holds a run")),
        "{err}"
    );
    let err = Trainer::<Tally>::restore(scratch.0.join("nothing"))
        .err()
        .unwrap();
    assert!(
        matches!(&err, TrainError::Io(m) if m.contains("not a run directory")),
        "{err}"
    );
    let err = Trainer::<Stray>::restore(&dir).err().unwrap();
    assert!(
        matches!(&err, TrainError::Config(m) if m.contains("not of")),
        "{err}"
    );
}

/// The variable that makes this test's own binary the driver to be killed.
const KILLED_DRIVER: &str = "PRISM_TRAIN_KILLED_DRIVER_DIR";

/// A run whose driver process is killed (by PID) mid-run is restored from its
/// directory and ends as an unbroken run would, the epochs counted on.
#[test]
fn restore_goes_on_with_a_killed_run() {
    let plan = Plan {
        nap_ms: 100,
        ..Plan::epochs(12)
    };
    if let Ok(dir) = std::env::var(KILLED_DRIVER) {
        // The child: the driver that is killed part way.
        let _session = Session::start(RunMode::Embedded, NodeSpec::cpus(2.0));
        let run = RunConfig::quiet().dir(dir);
        let _ = Trainer::<Tally>::new(plan, ScalingConfig::new(2))
            .run_config(run)
            .fit();
        std::process::exit(0);
    }
    let scratch = Scratch::new("killed");
    let dir = scratch.0.join("run");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "restore_goes_on_with_a_killed_run",
            "--exact",
            "--nocapture",
        ])
        .env(KILLED_DRIVER, &dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let reached = prism::testing::wait_for(
        || dir.join("checkpoint_000004").exists().then_some(()),
        "the killed run's fourth checkpoint",
    );
    let _ = child.kill();
    let _ = child.wait();
    reached.unwrap();
    let before = checkpoint_dirs(&dir);
    assert!(before.len() < 12, "killed before its end: {before:?}");

    let _session = Session::start(RunMode::Embedded, NodeSpec::cpus(2.0));
    let trainer = Trainer::<Tally>::restore(&dir).unwrap();
    let result = trainer.fit().unwrap();
    assert_eq!(
        column(&result.history, "epoch"),
        (1..=12).map(f64::from).collect::<Vec<_>>()
    );
    assert_eq!(
        result.metrics()["sum"],
        36.0,
        "the same end as an unbroken run"
    );
    assert_eq!(checkpoint_dirs(&dir).len(), 12);
}
