//! The example programs, unchanged, as drivers of a two-node cluster on loopback: each
//! is run with `PRISM_ADDRESS` pointing at a local head and must exit successfully
//! (every example asserts its own results).

use std::path::PathBuf;
use std::process::Command;

use prism::testing::{sibling_prism_bin, LocalCluster};

fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(|p| p.parent()).unwrap();
    profile.join("examples").join(name)
}

fn run_on(cluster: &LocalCluster, name: &str) -> (String, String) {
    let out = Command::new(example(name))
        .env("PRISM_ADDRESS", &cluster.head)
        .env("PRISM_SESSION_DIR", &cluster.dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run example {name}: {e}"));
    assert!(
        out.status.success(),
        "example {name} failed on the cluster:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
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
