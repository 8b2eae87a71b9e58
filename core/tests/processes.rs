//! The cluster's processes against a live local cluster of real processes: `prism list
//! workers` and `prism list objects` show each node's worker processes and this test
//! process (the driver) with what their object stores hold, and `prism logs` reads the
//! workers' logs from the node that keeps them, one node here keeping its session (logs
//! included) in a directory of its own, as a node on another machine does.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prism::testing::{end_process, wait_for, LocalCluster, NodeSpec};
use serde_json::Value;

/// Prints `marker` to the worker's stdout and stderr.
#[prism::remote]
fn shout(marker: String) -> u32 {
    println!("{marker} on stdout");
    eprintln!("{marker} on stderr");
    std::process::id()
}

/// A value too large to travel inline: it stays in the worker that made it.
#[prism::remote]
fn big(bytes: usize) -> Vec<u8> {
    vec![7; bytes]
}

fn on(node_id: &str) -> prism::Strategy {
    prism::Strategy::NodeAffinity {
        node_id: node_id.to_string(),
        soft: false,
    }
}

/// The JSON `prism args... --format json` prints.
fn json(cluster: &LocalCluster, args: &[&str]) -> Value {
    cluster.cli_json(args)
}

/// `prism args...`'s output, which must succeed.
fn cli_ok(cluster: &LocalCluster, args: &[&str]) -> String {
    let (ok, out, err) = cluster.cli(args);
    assert!(ok, "prism {args:?} failed: {err}");
    out
}

const MIB: u64 = 1 << 20;

#[test]
fn workers_objects_and_logs_of_every_node() {
    let mut cluster = LocalCluster::start_with(
        env!("CARGO_BIN_EXE_prism"),
        &[("127.0.0.2", NodeSpec::cpus(1.0))],
    )
    .unwrap();
    let (_, elsewhere) = cluster
        .add_node_elsewhere("127.0.0.3", &NodeSpec::cpus(1.0))
        .unwrap();
    cluster.wait_nodes(2).unwrap();
    cluster.connect().unwrap();
    let nodes = cluster.nodes();
    let (a, b) = (nodes[0].node_id.clone(), nodes[1].node_id.clone());
    let pid_a = prism::get(&shout::options().scheduling(on(&a)).remote("marker-a")).unwrap();
    let pid_b = prism::get(&shout::options().scheduling(on(&b)).remote("marker-b")).unwrap();
    assert_ne!(pid_a, pid_b);
    // 8 MiB in this driver's store, 4 MiB in node b's worker's.
    let put = prism::put(vec![1u8; 8 << 20]);
    let held = big::options().scheduling(on(&b)).remote(4 << 20);
    let held = [held];
    prism::wait(&held, 1, Some(Duration::from_secs(30))).unwrap();

    // Workers: one per node, with their pids and log files; this driver too.
    let rows = wait_for(
        || {
            let v = json(&cluster, &["list", "workers"]);
            let rows = v.as_array()?.clone();
            let reported = rows.iter().all(|r| r["objects"].is_object());
            (rows.len() == 3 && reported).then_some(rows)
        },
        "both workers and the driver to be reported",
    )
    .unwrap();
    let row = |kind: &str, node: &str| {
        rows.iter()
            .find(|r| r["kind"] == kind && r["node_id"] == node)
            .unwrap_or_else(|| panic!("no {kind} on {node}: {rows:?}"))
            .clone()
    };
    let (wa, wb) = (row("WORKER", &a), row("WORKER", &b));
    assert_eq!(wa["pid"], pid_a);
    assert_eq!(wb["pid"], pid_b);
    for (w, node) in [(&wa, &a), (&wb, &b)] {
        assert_eq!(w["job"], 1);
        assert_eq!(w["state"], "ALIVE");
        assert!(w["started_us"].as_u64().unwrap() > 0);
        let logs: Vec<&str> = w["logs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        assert_eq!(
            logs,
            [
                format!("worker-{node}-job1.out"),
                format!("worker-{node}-job1.err")
            ]
        );
    }
    let pids = cluster.worker_pids();
    assert!(pids.contains(&pid_a) && pids.contains(&pid_b), "{pids:?}");
    let driver = rows.iter().find(|r| r["kind"] == "DRIVER").unwrap();
    assert_eq!(driver["pid"], std::process::id());
    let table = cli_ok(&cluster, &["list", "workers", "--node", &b]);
    assert!(
        table.contains(&pid_b.to_string()) && !table.contains(&pid_a.to_string()),
        "{table}"
    );

    // Objects: the driver's 8 MiB and the worker's 4 MiB, each on its node.
    let objects = wait_for(
        || {
            let v = json(&cluster, &["list", "objects"]);
            let on_b = v
                .as_array()?
                .iter()
                .find(|n| n["node_id"] == b.as_str())?
                .clone();
            (on_b["objects"]["bytes_in_memory"].as_u64()? >= 4 * MIB).then_some(v)
        },
        "node b's worker to report the value it keeps",
    )
    .unwrap();
    let in_memory: u64 = objects
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["objects"]["bytes_in_memory"].as_u64().unwrap())
        .sum();
    assert!(in_memory >= 12 * MIB, "{objects}");
    let driver_objects = objects
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|n| n["processes"].as_array().unwrap().clone())
        .find(|p| p["kind"] == "DRIVER")
        .unwrap();
    assert!(
        driver_objects["objects"]["bytes_in_memory"]
            .as_u64()
            .unwrap()
            >= 8 * MIB
    );
    assert!(driver_objects["objects"]["objects"].as_u64().unwrap() >= 2);
    assert_eq!(driver_objects["objects"]["objects_spilled"], 0);
    let table = cli_ok(&cluster, &["list", "objects"]);
    assert!(table.contains("(node)") && table.contains("MiB"), "{table}");
    // Freed: the worker's store lets the value go, and says so.
    drop(held);
    drop(put);
    wait_for(
        || {
            let v = json(&cluster, &["list", "objects", "--node", &b]);
            (v[0]["objects"]["bytes_in_memory"].as_u64()? < MIB).then_some(())
        },
        "node b's worker to report the value freed",
    )
    .unwrap();

    // Logs: node b's are in its own directory only, and node b serves them.
    let b_out = format!("worker-{b}-job1.out");
    assert!(elsewhere.join("logs").join(&b_out).exists());
    assert!(!cluster.session().join("logs").join(&b_out).exists());
    let listing = cli_ok(&cluster, &["logs"]);
    assert!(
        listing.contains(&b_out) && listing.contains(&format!("worker-{a}-job1.err")),
        "{listing}"
    );
    let job = cli_ok(&cluster, &["logs", "--job", "1"]);
    for marker in [
        "marker-a on stdout",
        "marker-a on stderr",
        "marker-b on stdout",
        "marker-b on stderr",
    ] {
        assert!(job.contains(marker), "{marker} in {job}");
    }
    let worker = cli_ok(&cluster, &["logs", "--worker", &pid_b.to_string()]);
    assert!(
        worker.contains("marker-b on stdout") && !worker.contains("marker-a"),
        "{worker}"
    );
    let one = cli_ok(&cluster, &["logs", "--node", &b, &b_out]);
    assert!(one.trim_end().ends_with("\nmarker-b on stdout"), "{one}");
    let only_b = cli_ok(&cluster, &["logs", "--job", "1", "--node", &b]);
    assert!(
        only_b.contains("marker-b") && !only_b.contains("marker-a"),
        "{only_b}"
    );

    // Nothing outside a node's logs is read, not even through a link placed there.
    std::os::unix::fs::symlink(
        elsewhere.join("token"),
        elsewhere.join("logs").join("token.log"),
    )
    .unwrap();
    let token = std::fs::read_to_string(elsewhere.join("token")).unwrap();
    for name in ["../token", "token.log", "..", ".", "/etc/passwd"] {
        let (ok, out, err) = cluster.cli(&["logs", "--node", &b, name]);
        assert!(!ok, "{name}: {out}");
        assert!(err.contains("no log file"), "{name}: {err}");
        assert!(!out.contains(token.trim()) && !err.contains(token.trim()));
    }
    assert!(!cli_ok(&cluster, &["logs", "--node", &b]).contains("token.log"));
    for (args, says) in [
        (vec!["logs", "--worker", "1"], "no worker process has pid 1"),
        (
            vec!["logs", "--node", "nosuchnode"],
            "knows no node nosuchnode",
        ),
        (vec!["logs", "--job", "99"], "no worker of job 99"),
        (vec!["logs", "--follow"], "--follow needs"),
        (
            vec!["list", "workers", "--node", "nosuchnode"],
            "knows no node",
        ),
    ] {
        let (ok, _, err) = cluster.cli(&args);
        assert!(!ok && err.contains(says), "{args:?}: {err}");
    }

    // --follow prints what a worker writes after it started.
    let mut follow = Command::new(env!("CARGO_BIN_EXE_prism"))
        .args([
            "logs",
            "--worker",
            &pid_a.to_string(),
            "--follow",
            "--tail",
            "1",
        ])
        .env("PRISM_SESSION_DIR", cluster.session())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let seen = Arc::new(Mutex::new(String::new()));
    let mut stdout = follow.stdout.take().unwrap();
    let into = seen.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    wait_for(
        || {
            seen.lock()
                .unwrap()
                .contains("marker-a on stderr")
                .then_some(())
        },
        "the follower to print the log's tail",
    )
    .unwrap();
    let again = shout::options().scheduling(on(&a)).remote("late-marker");
    assert_eq!(prism::get(&again).unwrap(), pid_a);
    let followed = wait_for(
        || {
            let s = seen.lock().unwrap();
            (s.contains("late-marker on stdout") && s.contains("late-marker on stderr"))
                .then(|| s.clone())
        },
        "the follower to print what came later",
    );
    end_process(&mut follow);
    reader.join().unwrap();
    followed.unwrap();
    let last = cli_ok(
        &cluster,
        &["logs", "--worker", &pid_a.to_string(), "--tail", "1"],
    );
    assert!(
        last.contains("late-marker on stdout") && !last.contains("marker-a"),
        "{last}"
    );

    // The dashboard's nodes page and its API show the same processes.
    let dashboard = format!("http://{}", cluster.dashboard().unwrap());
    let get = |path: &str| {
        prism::session::http_once(&dashboard, "GET", path, None, Duration::from_secs(10)).unwrap()
    };
    let (status, body) = get("/api/workers");
    assert_eq!(status, 200, "{body}");
    let api: Value = serde_json::from_str(&body).unwrap();
    let api_pids: Vec<u64> = api
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|n| n["processes"].as_array().unwrap().clone())
        .filter(|p| p["kind"] == "WORKER")
        .map(|p| p["pid"].as_u64().unwrap())
        .collect();
    assert!(
        api_pids.contains(&pid_a.into()) && api_pids.contains(&pid_b.into()),
        "{api}"
    );
    let (status, page) = get("/nodes");
    assert_eq!(status, 200);
    for want in [
        format!("node-{a}"),
        format!("node-{b}"),
        pid_a.to_string(),
        pid_b.to_string(),
        // a's logs are in the head's session: linked; b's are on its machine: named.
        format!("href=\"/logs/worker-{a}-job1.out\""),
        format!("prism logs --node {b} worker-{b}-job1.out"),
    ] {
        assert!(page.contains(&want), "{want} in {page}");
    }
    assert!(!page.contains(&format!("href=\"/logs/worker-{b}-job1.out\"")));
}
