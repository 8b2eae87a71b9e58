//! The example programs, unchanged, as drivers of a two-node cluster on loopback: each
//! is run with `PRISM_ADDRESS` pointing at a local head and must exit successfully
//! (every example asserts its own results).

use std::path::PathBuf;
use std::process::Command;

use prism::testing::{sibling_prism_bin, wait_for, LocalCluster};

fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(|p| p.parent()).unwrap();
    profile.join("examples").join(name)
}

fn run_on(cluster: &LocalCluster, name: &str) -> (String, String) {
    run_with(Some(cluster), name, &[])
}

/// Runs example `name` with `args`, as a driver of `cluster` or (without one) on the
/// embedded runtime.
fn run_with(cluster: Option<&LocalCluster>, name: &str, args: &[&str]) -> (String, String) {
    let mut command = Command::new(example(name));
    command.args(args);
    if let Some(cluster) = cluster {
        command
            .env("PRISM_ADDRESS", &cluster.head)
            .env("PRISM_SESSION_DIR", &cluster.dir);
    }
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run example {name}: {e}"));
    assert!(
        out.status.success(),
        "example {name} failed (cluster: {}):\n{}\n{}",
        cluster.is_some(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if let Some(cluster) = cluster {
        // Its job's worker processes end with it, whatever it ran (an actor-only
        // driver's too).
        wait_for(
            || cluster.worker_pids().is_empty().then_some(()),
            &format!("the workers of example {name} to end"),
        )
        .unwrap();
    }
    (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn cluster() -> LocalCluster {
    let bin = sibling_prism_bin().expect("the prism binary is built next to the tests");
    LocalCluster::start(bin, &[("127.0.0.2", 1.0), ("127.0.0.3", 1.0)]).unwrap()
}

#[test]
fn task_examples_run_on_a_two_node_cluster() {
    let cluster = cluster();
    for name in [
        "square_tasks",
        "dependent_tasks",
        "nested_tasks",
        "wait_first",
        "matmul_aggregation",
        "where_did_it_run",
        "counter_actors",
        "actor_handle_passing",
        "tune_svm_digits",
        "tune_asha",
        "tune_estimators",
        "data_csv_etl",
        "data_for_training",
        "data_batch_inference",
        "data_transforms",
        "placement_groups",
    ] {
        run_on(&cluster, name);
    }
}

#[test]
fn sleep_tasks_runs_on_a_two_node_cluster() {
    run_on(&cluster(), "sleep_tasks");
}

#[test]
fn what_tasks_print_reaches_the_driver_with_where_it_ran() {
    let cluster = cluster();
    let (stdout, stderr) = run_on(&cluster, "task_output");
    for i in 0..4 {
        let line = stdout
            .lines()
            .find(|l| l.ends_with(&format!("task {i} says hello")))
            .unwrap_or_else(|| panic!("no output of task {i} in:\n{stdout}"));
        assert!(
            line.starts_with("(pid="),
            "not prefixed with where it ran: {line}"
        );
        assert!(
            stderr.contains(&format!("task {i} writes to stderr too")),
            "{stderr}"
        );
    }
    assert!(stdout.contains("4 tasks done"));
}

#[test]
fn put_big_object_runs_on_a_two_node_cluster() {
    // 100 MiB read by ten tasks: today each task's argument travels inline.
    run_on(&cluster(), "put_big_object");
}

/// The prism-train examples, embedded and as drivers of the cluster, where the two
/// workers are on the two nodes and meet over TCP, and `train_fault` kills a worker's
/// process of the cluster by PID. T1 runs small: its full size is a benchmark.
#[test]
fn train_examples_run_embedded_and_on_a_two_node_cluster() {
    let small_t1: &[&str] = &["--samples", "4000", "--epochs", "2"];
    let cluster = cluster();
    for c in [None, Some(&cluster)] {
        run_with(c, "train_epoch_tasks", &[]);
        let (out, _) = run_with(c, "train_linear", &[]);
        assert!(out.contains("final loss"), "{out}");
        let (out, _) = run_with(c, "train_on_data", &[]);
        assert!(out.contains("fitted y = 3.000000"), "{out}");
        let (out, _) = run_with(c, "train_mlp", small_t1);
        assert!(out.contains("2 workers:"), "{out}");
        // Embedded, it starts a two-node cluster of its own to kill a worker in.
        let (out, _) = run_with(c, "train_fault", &[]);
        assert!(out.contains("killed rank 1"), "{out}");
    }
}

/// The serving examples, embedded and as drivers of the cluster: there the replicas
/// live in the nodes' worker processes and the ingress in the example's own process.
/// Each checks its own answers (W9's digit, the batches' sizes, the composed
/// deployments' accuracy, the autoscaler's 1 → 3 → 1).
#[test]
fn serve_examples_run_embedded_and_on_a_two_node_cluster() {
    let cluster = cluster();
    for c in [None, Some(&cluster)] {
        let (out, _) = run_with(c, "serve_digits", &[]);
        assert!(out.contains("{\"digit\":0}"), "{out}");
        let (out, _) = run_with(c, "serve_batched", &[]);
        assert!(out.contains("requests each on average"), "{out}");
        let (out, _) = run_with(c, "serve_compose", &[]);
        assert!(out.contains("classified right"), "{out}");
        let (out, _) = run_with(c, "serve_autoscale", &[]);
        assert!(out.contains("the third replica served"), "{out}");
    }
}
