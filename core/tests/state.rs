//! The state commands against a live local cluster of real processes: `prism list`,
//! `prism summary` and `prism timeline` show the tasks and actors this test process
//! (the driver) ran, with the nodes and worker processes that ran them, and the head's
//! rings keep their bound and count what they let go.

use std::collections::BTreeSet;

use prism::testing::{wait_for, LocalCluster, NodeSpec};
use serde_json::Value;

#[prism::remote]
fn add(x: i64, y: i64) -> i64 {
    x + y
}

#[prism::remote]
fn boom() -> i64 {
    panic!("exploded on a worker")
}

#[prism::actor]
struct Tally {
    n: i64,
}

#[prism::actor]
impl Tally {
    fn new() -> Self {
        Tally { n: 0 }
    }

    fn bump(&mut self) -> i64 {
        self.n += 1;
        self.n
    }
}

/// The JSON `prism args... --format json` prints.
fn json(cluster: &LocalCluster, args: &[&str]) -> Value {
    cluster.cli_json(args)
}

/// Waits until `prism list tasks --state finished` counts `n`.
fn wait_finished(cluster: &LocalCluster, n: u64) -> Value {
    wait_for(
        || {
            let v = json(
                cluster,
                &["list", "tasks", "--state", "finished", "--limit", "0"],
            );
            (v["total"] == n).then_some(v)
        },
        "the head to record the finished tasks",
    )
    .unwrap()
}

#[test]
fn list_summary_and_timeline_show_what_ran_where() {
    let cluster = LocalCluster::start_with(
        env!("CARGO_BIN_EXE_prism"),
        &[
            ("127.0.0.2", NodeSpec::cpus(2.0)),
            ("127.0.0.3", NodeSpec::cpus(1.0)),
        ],
    )
    .unwrap();
    cluster.connect().unwrap();
    let node_ids: BTreeSet<String> = cluster.nodes().into_iter().map(|n| n.node_id).collect();
    // Some on each node, the rest wherever the scheduler puts them.
    let mut refs: Vec<_> = (0..160).map(|i| add::remote(i, 1)).collect();
    for node_id in &node_ids {
        let there = prism::Strategy::NodeAffinity {
            node_id: node_id.clone(),
            soft: false,
        };
        refs.extend((0..20).map(|i| add::options().scheduling(there.clone()).remote(i, 1)));
    }
    assert_eq!(prism::get_all(&refs).unwrap().len(), 200);
    let failed: Vec<_> = (0..3).map(|_| boom::remote()).collect();
    for f in &failed {
        assert!(prism::get(f).is_err());
    }
    let tally = Tally::remote();
    assert_eq!(prism::get(&tally.bump()).unwrap(), 1);

    // Each task's events come from its owner and from its worker, on their own paths.
    let all = wait_for(
        || {
            let v = json(&cluster, &["list", "tasks", "--limit", "1000"]);
            let complete = v["tasks"]
                .as_array()?
                .iter()
                .all(|t| t["submitted_us"].is_u64() && t["ended_us"].is_u64());
            (v["total"] == 203 && complete).then_some(v)
        },
        "every task's events",
    )
    .unwrap();
    assert_eq!(all["dropped"], 0);
    let tasks = all["tasks"].as_array().unwrap();
    let pids: BTreeSet<u64> = cluster.worker_pids().into_iter().map(u64::from).collect();
    for t in tasks {
        let node = t["node"].as_str().unwrap_or_default();
        assert!(
            node_ids.contains(node),
            "{t} ran on a node of the cluster: {node_ids:?}"
        );
        assert!(
            pids.contains(&t["pid"].as_u64().unwrap()),
            "{t}: workers {pids:?}"
        );
        assert!(t["submitted_us"].as_u64().unwrap() <= t["ended_us"].as_u64().unwrap());
        assert!(t["duration_us"].is_u64(), "{t}");
    }
    let ran_on: BTreeSet<&str> = tasks.iter().filter_map(|t| t["node"].as_str()).collect();
    assert_eq!(ran_on.len(), 2, "both nodes ran tasks: {ran_on:?}");

    let booms = json(&cluster, &["list", "tasks", "--function", "boom"]);
    assert_eq!(booms["total"], 3);
    for t in booms["tasks"].as_array().unwrap() {
        assert_eq!(t["state"], "FAILED");
        let error = t["error"].as_str().unwrap();
        assert!(error.contains("exploded on a worker"), "{error}");
    }
    let failed_only = json(&cluster, &["list", "tasks", "--state", "FAILED"]);
    assert_eq!(failed_only["total"], 3);

    // A table shows the limit's worth and says how many there are.
    let (ok, table, footer) = cluster.cli(&["list", "tasks", "--limit", "5"]);
    assert!(ok);
    assert_eq!(table.lines().count(), 6, "a header and five rows:\n{table}");
    assert!(table.lines().next().unwrap().starts_with("TASK_ID"));
    assert!(footer.contains("5 of 203 tasks"), "{footer}");

    let summary = json(&cluster, &["summary", "tasks"]);
    let functions = summary["functions"].as_array().unwrap();
    let of = |name: &str| {
        functions
            .iter()
            .find(|f| f["function"].as_str().unwrap().ends_with(name))
            .unwrap_or_else(|| panic!("{name} in {summary}"))["states"]
            .clone()
    };
    assert_eq!(of("::add")["FINISHED"], 200);
    assert_eq!(of("::boom")["FAILED"], 3);
    let (ok, table, _) = cluster.cli(&["summary", "tasks"]);
    assert!(ok && table.contains("(all)"), "{table}");

    let jobs = json(&cluster, &["list", "jobs"]);
    let job = &jobs.as_array().unwrap()[0];
    assert_eq!(job["tasks"]["FINISHED"], 200, "{jobs}");
    assert_eq!(job["tasks"]["FAILED"], 3);
    let nodes = json(&cluster, &["list", "nodes"]);
    assert_eq!(nodes.as_array().unwrap().len(), 2);

    let actors = wait_for(
        || {
            let v = json(&cluster, &["list", "actors", "--state", "alive"]);
            (v["total"] == 1).then_some(v)
        },
        "the actor to be listed alive",
    )
    .unwrap();
    let actor = &actors["actors"][0];
    assert!(
        actor["class"].as_str().unwrap().ends_with("Tally"),
        "{actor}"
    );
    assert!(node_ids.contains(actor["node"].as_str().unwrap()));
    drop(tally);
    let dead = wait_for(
        || {
            let v = json(&cluster, &["list", "actors", "--state", "dead"]);
            (v["total"] == 1).then_some(v)
        },
        "the dropped actor to be listed dead",
    )
    .unwrap();
    assert!(dead["actors"][0]["cause"].is_string(), "{dead}");

    // The timeline: valid JSON, one complete event per task that ran.
    let trace = cluster.session().join("trace.json");
    let (ok, _, err) = cluster.cli(&["timeline", "-o", trace.to_str().unwrap()]);
    assert!(ok, "{err}");
    let events: Value = serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).unwrap();
    let spans: Vec<&Value> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "X")
        .collect();
    assert_eq!(spans.len(), 203);
    assert!(spans
        .iter()
        .all(|e| e["ts"].is_u64() && e["dur"].is_u64() && e["tid"].is_u64()));
    let named: usize = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "M")
        .count();
    assert_eq!(named, 2, "one named process per worker");

    // Bad input is refused with the reason.
    let (ok, _, err) = cluster.cli(&["list", "tasks", "--state", "done"]);
    assert!(!ok && err.contains("no task state \"done\""), "{err}");

    // The driver's last tasks, done just before it leaves, are recorded too: it hands
    // the head its events as it goes, and its workers send theirs before they end.
    let last: Vec<_> = (0..50).map(|i| add::remote(i, 2)).collect();
    prism::get_all(&last).unwrap();
    prism::shutdown();
    wait_finished(&cluster, 250);
}

#[test]
fn the_head_keeps_its_bound_and_counts_what_it_drops() {
    let cluster = LocalCluster::start_with_head(
        env!("CARGO_BIN_EXE_prism"),
        &["--task-events", "50"],
        &[("127.0.0.2", NodeSpec::cpus(2.0))],
    )
    .unwrap();
    cluster.connect().unwrap();
    let refs: Vec<_> = (0..120).map(|i| add::remote(i, 1)).collect();
    prism::get_all(&refs).unwrap();
    let kept = wait_for(
        || {
            let v = json(&cluster, &["list", "tasks", "--limit", "1000"]);
            let finished = v["tasks"]
                .as_array()?
                .iter()
                .filter(|t| t["state"] == "FINISHED")
                .count();
            (v["dropped"] == 70 && finished == 50).then_some(v)
        },
        "the head to keep the latest 50 tasks",
    )
    .unwrap();
    assert_eq!(kept["total"], 50, "{kept}");
    let summary = json(&cluster, &["summary", "tasks"]);
    assert_eq!(summary["dropped"], 70);
    let (ok, _, footer) = cluster.cli(&["list", "tasks", "--limit", "10"]);
    assert!(ok);
    assert!(footer.contains("70 task records dropped"), "{footer}");
    let jobs = json(&cluster, &["list", "jobs"]);
    assert_eq!(jobs[0]["dropped"], 70);
    prism::shutdown();
}
