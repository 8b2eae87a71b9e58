//! `prism job` against a live local cluster: an example submitted as a job runs as a
//! driver of the cluster with its output kept; a failing entrypoint's exit code and
//! output come back; a stopped job's processes all end, its driver's workers too; and
//! the jobs, their output and one still running survive a restart of the head.

use std::path::PathBuf;

use prism::testing::{sibling_prism_bin, wait_for, LocalCluster};
use serde_json::Value;

fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(|p| p.parent()).unwrap();
    profile.join("examples").join(name)
}

fn status(cluster: &LocalCluster, id: &str) -> Value {
    let (ok, out, err) = cluster.cli(&["job", "status", id, "--format", "json"]);
    assert!(ok, "prism job status {id}: {err}");
    serde_json::from_str::<Value>(&out).unwrap()[0].clone()
}

fn wait_status(cluster: &LocalCluster, id: &str, want: &str) -> Value {
    wait_for(
        || {
            let s = status(cluster, id);
            (s["status"] == want).then_some(s)
        },
        &format!("job {id} to be {want}"),
    )
    .unwrap()
}

fn alive(pid: u64) -> bool {
    u32::try_from(pid).is_ok_and(prism::session::process_alive)
}

#[test]
fn jobs_run_as_drivers_stop_whole_and_outlive_a_head_restart() {
    let bin = sibling_prism_bin().expect("the prism binary is built next to the tests");
    let mut cluster = LocalCluster::start(bin, &[("127.0.0.2", 1.0), ("127.0.0.3", 1.0)]).unwrap();
    let many = example("many_tasks");
    let many = many.to_str().unwrap();

    // A driver run as a job: its output kept, its tasks recorded under its cluster job.
    let (ok, out, err) = cluster.cli(&["job", "submit", "--no-wait", "--", many, "3000"]);
    assert!(ok, "{err}");
    let first = out.trim().to_string();
    assert_eq!(first, "sub-1");
    let (ok, logs, err) = cluster.cli(&["job", "logs", &first, "--follow"]);
    assert!(ok, "{err}");
    assert!(logs.contains("3000 tasks in"), "{logs}");
    let done = status(&cluster, &first);
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    assert_eq!(done["exit_code"], 0);
    let driver_job = done["driver_job"]
        .as_u64()
        .expect("its driver registered")
        .to_string();
    let recorded = wait_for(
        || {
            let (_, out, _) = cluster.cli(&[
                "list",
                "tasks",
                "--job",
                &driver_job,
                "--limit",
                "0",
                "--format",
                "json",
            ]);
            let v: Value = serde_json::from_str(&out).ok()?;
            (v["total"] == 3000).then_some(v)
        },
        "the job's 3000 tasks on the head",
    );
    assert!(recorded.is_ok());

    // A failing entrypoint, followed to its end: its output and exit code come back.
    let script = "echo to stdout; echo to stderr >&2; exit 3";
    let (ok, out, err) = cluster.cli(&["job", "submit", "--", "sh", "-c", script]);
    assert!(!ok, "a failed job fails the command");
    assert!(
        out.contains("to stdout") && out.contains("to stderr"),
        "{out}"
    );
    assert!(err.contains("sub-2 FAILED: exit code 3"), "{err}");

    // A long job, stopped: its process group and its driver's workers all end.
    let (ok, out, err) = cluster.cli(&["job", "submit", "--no-wait", "--", many, "100000000"]);
    assert!(ok, "{err}");
    let long = out.trim().to_string();
    let running = wait_status(&cluster, &long, "RUNNING");
    let pid = running["pid"].as_u64().unwrap();
    wait_for(
        || (!cluster.worker_pids().is_empty()).then_some(()),
        "the long job's workers",
    )
    .unwrap();
    let (ok, out, err) = cluster.cli(&["job", "stop", &long]);
    assert!(ok, "{err}");
    assert!(out.contains("STOPPED"), "{out}");
    assert!(!alive(pid), "the entrypoint {pid} still runs");
    wait_for(
        || cluster.worker_pids().is_empty().then_some(()),
        "the stopped job's workers to end",
    )
    .unwrap();

    // One running across a restart of the head, which watches it again.
    let (ok, out, err) = cluster.cli(&[
        "job",
        "submit",
        "--no-wait",
        "--",
        "sh",
        "-c",
        "sleep 2; echo slept",
    ]);
    assert!(ok, "{err}");
    let sleeper = out.trim().to_string();
    let sleeping = wait_status(&cluster, &sleeper, "RUNNING");
    cluster.restart_head(2).unwrap();
    let (ok, out, err) = cluster.cli(&["job", "list", "--format", "json"]);
    assert!(ok, "{err}");
    let jobs: Value = serde_json::from_str(&out).unwrap();
    let statuses: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses[..3], ["SUCCEEDED", "FAILED", "STOPPED"], "{jobs}");
    let after = wait_status(&cluster, &sleeper, "FAILED");
    assert!(!alive(sleeping["pid"].as_u64().unwrap()));
    let message = after["message"].as_str().unwrap_or_default();
    assert!(message.contains("exit status is unknown"), "{after}");
    let (ok, logs, _) = cluster.cli(&["job", "logs", &sleeper]);
    assert!(ok && logs.contains("slept"), "{logs}");
    let (ok, logs, _) = cluster.cli(&["job", "logs", &first]);
    assert!(
        ok && logs.contains("3000 tasks in"),
        "the first job's output outlived the head"
    );

    // Bad input: typed refusals, nothing recorded.
    let (ok, _, err) = cluster.cli(&[
        "job",
        "submit",
        "--working-dir",
        "/no/such/dir",
        "--",
        "true",
    ]);
    assert!(!ok && err.contains("does not exist"), "{err}");
    let (ok, _, err) = cluster.cli(&["job", "status", "sub-99"]);
    assert!(!ok && err.contains("no submitted job \"sub-99\""), "{err}");
    let (ok, _, err) = cluster.cli(&["job", "submit", "--env", "NOEQUALS", "--", "true"]);
    assert!(!ok && err.contains("KEY=VALUE"), "{err}");
    let (_, out, _) = cluster.cli(&["job", "list", "--format", "json"]);
    assert_eq!(
        serde_json::from_str::<Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        4
    );
}
