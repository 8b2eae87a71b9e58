//! The cluster runtime with real processes on real sockets: a head and nodes on their
//! own loopback addresses, this test process as the driver, and worker processes that
//! are this very test binary re-run in worker mode. One scenario per test.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use prism::prelude::*;
use prism::testing::LocalCluster;

#[prism::remote]
fn where_am_i() -> String {
    prism::context().unwrap().node_id
}

#[prism::remote]
fn where_am_i_after(ms: u64) -> String {
    std::thread::sleep(Duration::from_millis(ms));
    prism::context().unwrap().node_id
}

#[prism::remote]
fn add(x: i64, y: i64) -> i64 {
    x + y
}

#[prism::remote]
fn boom() -> i64 {
    panic!("exploded on a worker")
}

#[prism::remote]
fn sum_squares(n: i64) -> i64 {
    // Nested tasks from inside a worker process.
    let refs: Vec<_> = (0..n).map(|i| add::remote(i * i, 0)).collect();
    prism::get_all(&refs).unwrap().iter().sum()
}

#[test]
fn where_did_it_run_on_two_nodes() {
    let cluster = LocalCluster::start(
        env!("CARGO_BIN_EXE_prism"),
        &[("127.0.0.2", 1.0), ("127.0.0.3", 1.0)],
    )
    .unwrap();
    cluster.connect().unwrap();
    // Tasks that take a millisecond each, sleeping: how they split between the nodes
    // then shows how the scheduler spreads them, not which node's worker the machine's
    // other load let onto a core (with instant tasks one CI run split 14% / 86%).
    let refs: Vec<_> = (0..2_000).map(|_| where_am_i_after::remote(1)).collect();
    let nodes = prism::get_all(&refs).unwrap();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for n in nodes {
        *counts.entry(n).or_default() += 1;
    }
    assert_eq!(counts.len(), 2, "{counts:?}");
    for (node, n) in &counts {
        assert!(*n >= 600, "node {node} ran only {n} of 2,000: {counts:?}");
    }
    // And instant tasks still reach both nodes.
    let refs: Vec<_> = (0..2_000).map(|_| where_am_i::remote()).collect();
    let nodes: std::collections::BTreeSet<String> =
        prism::get_all(&refs).unwrap().into_iter().collect();
    assert_eq!(nodes.len(), 2, "{nodes:?}");
}

#[test]
fn values_refs_errors_and_nested_tasks_cross_processes() {
    let cluster = LocalCluster::start(env!("CARGO_BIN_EXE_prism"), &[("127.0.0.2", 2.0)]).unwrap();
    cluster.connect().unwrap();
    let a = add::remote(1, 2);
    let b = add::remote(&a, 10);
    let big = prism::put(40i64);
    let c = add::remote(&big, &b);
    assert_eq!(prism::get(&c).unwrap(), 53);
    match prism::get(&boom::remote()).unwrap_err() {
        Error::TaskFailed {
            function,
            message,
            location,
        } => {
            assert!(function.ends_with("::boom"));
            assert!(message.contains("exploded on a worker"));
            assert!(
                !location.contains(&std::process::id().to_string()),
                "ran in another process: {location}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(prism::get(&sum_squares::remote(5)).unwrap(), 30);
    let infeasible = add::options().num_gpus(1.0).remote(1, 1);
    assert!(matches!(
        prism::get_timeout(&infeasible, Duration::from_secs(10)),
        Err(Error::Infeasible { .. })
    ));
}

#[test]
fn a_wrong_token_is_refused_and_the_daemon_keeps_serving() {
    let cluster = LocalCluster::start(env!("CARGO_BIN_EXE_prism"), &[("127.0.0.2", 1.0)]).unwrap();
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let refused = io.block_on(prism::wire::connect(
        &cluster.head,
        "not-the-token",
        prism::wire::Role::Driver,
    ));
    match refused {
        Err(e) => assert!(e.to_string().contains("wrong cluster token"), "{e}"),
        Ok(_) => panic!("a wrong token was accepted"),
    }
    let bad = prism::init_with(
        prism::Config::default()
            .address(&cluster.head)
            .token("nope"),
    );
    assert!(matches!(bad, Err(Error::Cluster(_))), "{bad:?}");
    cluster.connect().unwrap();
    assert_eq!(prism::get(&add::remote(2, 2)).unwrap(), 4);
}

#[test]
fn random_and_truncated_frames_leave_head_and_node_serving() {
    let cluster = LocalCluster::start(env!("CARGO_BIN_EXE_prism"), &[("127.0.0.2", 1.0)]).unwrap();
    let node = cluster.nodes()[0].address.clone();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..10_000u32 {
        let target = if i % 2 == 0 { &cluster.head } else { &node };
        let Ok(mut s) = TcpStream::connect(target) else {
            continue;
        };
        let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
        let len = (next() % 64) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        match i % 4 {
            // A frame header announcing more than is sent (truncated).
            0 => bytes.splice(0..0, 1000u32.to_be_bytes()).for_each(drop),
            // An absurd length.
            1 => bytes.splice(0..0, u32::MAX.to_be_bytes()).for_each(drop),
            // A well-formed frame of garbage.
            2 => bytes
                .splice(0..0, (len as u32).to_be_bytes())
                .for_each(drop),
            _ => {}
        }
        let _ = s.write_all(&bytes);
        if i % 500 == 0 {
            // Now and then, read what the daemon says before hanging up.
            let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
            let _ = s.read(&mut [0u8; 64]);
        }
    }
    assert_eq!(cluster.nodes().len(), 1, "the head still answers");
    cluster.connect().unwrap();
    assert_eq!(prism::get(&add::remote(20, 22)).unwrap(), 42);
}

/// The process ids recorded in a session, and whether each is still alive.
fn live(pids: &[u32]) -> Vec<u32> {
    pids.iter()
        .copied()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| !c.is_empty())
                .unwrap_or(false)
        })
        .collect()
}

#[test]
fn cli_start_status_and_stop_leave_nothing_behind() {
    prism::enter_if_worker();
    let dir = std::env::temp_dir().join(format!("prism-cli-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_prism"))
            .args(args)
            .env("PRISM_SESSION_DIR", &dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "prism {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let started = cli(&["start", "--head", "--port", "0", "--num-cpus", "1"]);
    assert!(
        started.contains("prism head started at 127.0.0.1:"),
        "{started}"
    );
    let head = std::fs::read_to_string(dir.join("address")).unwrap();
    cli(&[
        "start",
        "--address",
        &head,
        "--num-cpus",
        "2",
        "--node-ip-address",
        "127.0.0.2",
    ]);
    let pids: Vec<u32> = prism::session::pids(&dir).iter().map(|(p, _)| *p).collect();
    assert_eq!(live(&pids).len(), 2);

    let status = common_wait(|| {
        let s = cli(&["status"]);
        s.contains(": 2 node(s)").then_some(s)
    });
    assert!(status.contains("127.0.0.2:"), "{status}");
    // Its output pipe closed before it prints (`prism status | head`): it ends
    // quietly, without a panic.
    let mut piped = std::process::Command::new(env!("CARGO_BIN_EXE_prism"))
        .arg("status")
        .env("PRISM_SESSION_DIR", &dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(piped.stdout.take());
    let out = piped.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");

    // A driver through PRISM_ADDRESS=auto: the head recorded in the session.
    let token = std::fs::read_to_string(dir.join("token")).unwrap();
    prism::init_with(prism::Config::default().address(&head).token(token)).unwrap();
    assert_eq!(prism::get(&add::remote(1, 1)).unwrap(), 2);
    prism::shutdown();

    let stopped = cli(&["stop"]);
    assert!(stopped.contains("stopped 2"), "{stopped}");
    assert!(
        live(&pids).is_empty(),
        "daemons still running: {:?}",
        live(&pids)
    );
    assert!(
        TcpStream::connect(&head).is_err(),
        "the head's port is still bound"
    );
    assert!(!dir.join("address").exists());
    let again = cli(&["stop"]);
    assert!(again.contains("stopped 0"), "{again}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn common_wait<T>(f: impl FnMut() -> Option<T>) -> T {
    prism::testing::wait_for(f, "the cluster").unwrap()
}

#[prism::remote]
fn fib(n: u64) -> u64 {
    if n < 2 {
        return n;
    }
    let a = fib::remote(n - 1);
    let b = fib::remote(n - 2);
    prism::get(&a).unwrap() + prism::get(&b).unwrap()
}

#[test]
fn nested_gets_on_one_cpu_nodes_do_not_deadlock() {
    // Waiting tasks lend their CPU, and tasks pipelined behind a task that starts to wait
    // are let go on both sides of the node-worker connection: a mistake here hangs.
    let cluster = LocalCluster::start(
        env!("CARGO_BIN_EXE_prism"),
        &[("127.0.0.2", 1.0), ("127.0.0.3", 1.0)],
    )
    .unwrap();
    cluster.connect().unwrap();
    for n in [10, 13] {
        let r = fib::remote(n);
        let expected = [55, 89, 144, 233][(n - 10) as usize];
        assert_eq!(
            prism::get_timeout(&r, Duration::from_secs(60)),
            Ok(expected)
        );
    }
}

#[prism::remote]
fn slow_square(x: u64, ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    x * x
}

#[test]
fn killing_a_worker_mid_job_loses_no_result() {
    let cluster = LocalCluster::start(
        env!("CARGO_BIN_EXE_prism"),
        &[("127.0.0.2", 1.0), ("127.0.0.3", 1.0)],
    )
    .unwrap();
    cluster.connect().unwrap();
    let refs: Vec<_> = (0..1000u64).map(|i| slow_square::remote(i, 2)).collect();
    // Let the job get going on both nodes, then kill one worker process outright.
    prism::get_timeout(&refs[100], Duration::from_secs(60)).unwrap();
    let pids = prism::testing::wait_for(
        || Some(cluster.worker_pids()).filter(|p| p.len() == 2),
        "two worker processes",
    )
    .unwrap();
    assert!(prism::session::signal(pids[0], 9));
    let squares = prism::get_all(&refs).unwrap();
    assert_eq!(squares, (0..1000u64).map(|i| i * i).collect::<Vec<_>>());
}

#[test]
fn a_dead_worker_without_retries_is_a_typed_error() {
    let cluster = LocalCluster::start(env!("CARGO_BIN_EXE_prism"), &[("127.0.0.2", 1.0)]).unwrap();
    cluster.connect().unwrap();
    let r = slow_square::options().max_retries(0).remote(3, 60_000);
    let pid =
        prism::testing::wait_for(|| cluster.worker_pids().first().copied(), "the worker").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(prism::session::signal(pid, 9));
    match prism::get_timeout(&r, Duration::from_secs(30)) {
        Err(Error::WorkerCrashed { function, .. }) => {
            assert!(function.ends_with("slow_square"), "{function}")
        }
        other => panic!("expected WorkerCrashed, got {other:?}"),
    }
    // The node starts a new worker for later tasks.
    assert_eq!(
        prism::get_timeout(&slow_square::remote(4, 0), Duration::from_secs(30)),
        Ok(16)
    );
}

#[test]
fn killing_a_node_daemon_mid_job_loses_no_result() {
    let mut cluster =
        LocalCluster::start(env!("CARGO_BIN_EXE_prism"), &[("127.0.0.2", 1.0)]).unwrap();
    let second = cluster.add_node("127.0.0.3", 1.0, None).unwrap();
    cluster.wait_nodes(2).unwrap();
    cluster.connect().unwrap();
    let refs: Vec<_> = (0..600u64).map(|i| slow_square::remote(i, 3)).collect();
    prism::get_timeout(&refs[50], Duration::from_secs(60)).unwrap();
    // The second node is not the driver's: tasks it holds come back as lost and run
    // again on the first; its orphaned worker exits when its node's socket closes.
    assert!(prism::session::signal(cluster.daemon_pid(second), 9));
    let squares = prism::get_all(&refs).unwrap();
    assert_eq!(squares, (0..600u64).map(|i| i * i).collect::<Vec<_>>());
    let alive = prism::testing::wait_for(
        || Some(cluster.nodes()).filter(|n| n.iter().filter(|v| v.alive).count() == 1),
        "the head to see the node gone",
    )
    .unwrap();
    assert_eq!(alive.iter().filter(|v| !v.alive).count(), 1);
}

#[prism::actor]
pub struct Tally {
    n: i64,
    pid: u32,
}

#[prism::actor]
impl Tally {
    pub fn new(start: i64) -> Self {
        if start < 0 {
            panic!("a tally cannot start below zero");
        }
        Tally {
            n: start,
            pid: std::process::id(),
        }
    }

    pub fn add(&mut self, by: i64) -> i64 {
        self.n += by;
        self.n
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }
}

#[prism::remote]
fn add_to(tally: TallyHandle, times: i64) -> i64 {
    let refs: Vec<_> = (0..times).map(|_| tally.add(1)).collect();
    *prism::get_all(&refs).unwrap().last().unwrap()
}

#[test]
fn actors_live_in_workers_keep_order_and_travel_to_tasks() {
    let cluster = LocalCluster::start(
        env!("CARGO_BIN_EXE_prism"),
        &[("127.0.0.2", 1.0), ("127.0.0.3", 1.0)],
    )
    .unwrap();
    cluster.connect().unwrap();
    let t = Tally::remote(10);
    let pid = prism::get_timeout(&t.pid(), Duration::from_secs(30)).unwrap();
    assert_ne!(
        pid,
        std::process::id(),
        "the actor lives in a worker process"
    );
    let refs: Vec<_> = (0..200).map(|_| t.add(1)).collect();
    assert_eq!(
        prism::get_all(&refs).unwrap(),
        (11..=210).collect::<Vec<_>>()
    );
    // A ref argument that is not ready yet keeps its call's place in the order.
    let slow = slow_square::remote(3, 200);
    let a = t.add(slow.untyped_i64());
    let b = t.add(1);
    assert_eq!(prism::get(&b).unwrap(), 220);
    assert_eq!(prism::get(&a).unwrap(), 219);
    // Handles passed to tasks on either node reach the same actor.
    let tasks: Vec<_> = (0..4).map(|_| add_to::remote(t.clone(), 25)).collect();
    prism::get_all(&tasks).unwrap();
    assert_eq!(prism::get(&t.add(0)).unwrap(), 320);
    prism::kill(&t);
    assert!(matches!(
        prism::get_timeout(&t.add(1), Duration::from_secs(30)),
        Err(Error::ActorDied { .. })
    ));
    let bad = Tally::remote(-1);
    match prism::get_timeout(&bad.add(1), Duration::from_secs(30)) {
        Err(Error::ActorDied { reason, .. }) => assert!(reason.contains("below zero"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_worker_that_exits_before_connecting_fails_its_work_at_once() {
    // What a program that does not call `prism::init()` first looks like to its node.
    if prism::wire::env::is_worker() {
        std::process::exit(3);
    }
    let cluster = LocalCluster::start(env!("CARGO_BIN_EXE_prism"), &[("127.0.0.2", 1.0)]).unwrap();
    cluster.connect().unwrap();
    let task = add::remote(1, 2);
    let actor = Tally::remote(1);
    for result in [
        prism::get_timeout(&task, Duration::from_secs(30)).map(|_| ()),
        prism::get_timeout(&actor.add(1), Duration::from_secs(30)).map(|_| ()),
    ] {
        match result {
            Err(Error::Cluster(reason)) | Err(Error::ActorDied { reason, .. }) => {
                assert!(reason.contains("exited"), "{reason}");
                assert!(reason.contains("prism::init()"), "{reason}");
            }
            other => panic!("expected a clear error, got {other:?}"),
        }
    }
}

#[test]
fn an_actor_is_restarted_up_to_max_restarts_then_dies() {
    let cluster = LocalCluster::start(env!("CARGO_BIN_EXE_prism"), &[("127.0.0.2", 1.0)]).unwrap();
    cluster.connect().unwrap();
    let t = Tally::options().max_restarts(1).remote(5);
    assert_eq!(prism::get(&t.add(1)).unwrap(), 6);
    let first = prism::get(&t.pid()).unwrap();

    // Its process dies: the node starts it again (the constructor runs again, so its
    // state starts over) and later calls reach the new instance.
    assert!(prism::session::signal(first, 9));
    let second = prism::testing::wait_for(
        || prism::get(&t.pid()).ok().filter(|p| *p != first),
        "the restarted actor",
    )
    .unwrap();
    assert_eq!(prism::get(&t.add(1)).unwrap(), 6);
    assert_eq!(prism::get(&t.add(1)).unwrap(), 7);

    // No restarts left: the second death is final, and calls fail with a typed error.
    assert!(prism::session::signal(second, 9));
    let err = prism::testing::wait_for(
        || match prism::get_timeout(&t.add(1), Duration::from_secs(30)) {
            Err(e @ Error::ActorDied { .. }) => Some(e),
            _ => None,
        },
        "the actor to be dead",
    )
    .unwrap();
    assert!(err.to_string().contains("worker process died"), "{err}");
}

trait AsI64 {
    fn untyped_i64(self) -> ObjectRef<i64>;
}

#[prism::remote]
fn to_i64(x: u64) -> i64 {
    x as i64
}

impl AsI64 for ObjectRef<u64> {
    fn untyped_i64(self) -> ObjectRef<i64> {
        to_i64::remote(self)
    }
}

#[prism::remote]
fn bump_named(name: String) -> i64 {
    let t = prism::get_actor::<Tally>(&name).unwrap();
    prism::get(&t.add(5)).unwrap()
}

#[test]
fn named_actors_are_found_cluster_wide() {
    let cluster = LocalCluster::start(
        env!("CARGO_BIN_EXE_prism"),
        &[("127.0.0.2", 1.0), ("127.0.0.3", 1.0)],
    )
    .unwrap();
    cluster.connect().unwrap();
    let t = Tally::options().name("shared").remote(0);
    let bumps: Vec<_> = (0..4).map(|_| bump_named::remote("shared")).collect();
    prism::get_all(&bumps).unwrap();
    assert_eq!(prism::get(&t.add(0)).unwrap(), 20);
    let found = prism::get_actor::<Tally>("shared").unwrap();
    assert_eq!(prism::get(&found.add(1)).unwrap(), 21);
    let dup = Tally::options().name("shared").remote(0);
    assert!(matches!(prism::get(&dup.add(1)), Err(Error::Config(_))));
    assert!(matches!(
        prism::get_actor::<Tally>("nobody"),
        Err(Error::ActorNotFound(_))
    ));
    prism::kill(&found);
    assert!(matches!(
        prism::get_actor::<Tally>("shared"),
        Err(Error::ActorNotFound(_))
    ));
}

#[test]
fn a_restarted_head_takes_the_cluster_back() {
    let mut cluster =
        LocalCluster::start(env!("CARGO_BIN_EXE_prism"), &[("127.0.0.2", 1.0)]).unwrap();
    // A node that leaves before the head restarts is still known to the new head, as
    // not alive.
    let gone = cluster.add_node("127.0.0.3", 1.0, None).unwrap();
    cluster.wait_nodes(2).unwrap();
    let gone_id = cluster
        .nodes()
        .into_iter()
        .find(|n| n.address.starts_with("127.0.0.3:"))
        .unwrap()
        .node_id;
    assert!(prism::session::signal(cluster.daemon_pid(gone), 9));
    prism::testing::wait_for(
        || (cluster.nodes().iter().filter(|n| n.alive).count() == 1).then_some(()),
        "the head to see the node leave",
    )
    .unwrap();
    cluster.connect().unwrap();
    let t = Tally::options().name("survivor").remote(1);
    assert_eq!(prism::get(&t.add(1)).unwrap(), 2);
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (head, token) = (cluster.head.clone(), cluster.token.clone());
    let kv = |msg: prism::wire::Msg| {
        io.block_on(async {
            let (mut s, _) = prism::wire::connect(&head, &token, prism::wire::Role::Cli)
                .await
                .unwrap();
            prism::wire::write_msg(&mut s, &msg).await.unwrap();
            prism::wire::read_msg::<_, prism::wire::Msg>(&mut s)
                .await
                .unwrap()
        })
    };
    kv(prism::wire::Msg::KvPut {
        key: "answer".into(),
        value: vec![42],
    });

    cluster.restart_head(1).unwrap();

    // The node reconnected, the name and the key are still there, the actor still runs.
    let nodes = cluster.nodes();
    assert_eq!(nodes.iter().filter(|n| n.alive).count(), 1, "{nodes:?}");
    assert!(
        nodes.iter().any(|n| n.node_id == gone_id && !n.alive),
        "{nodes:?}"
    );
    assert_eq!(
        kv(prism::wire::Msg::KvGet {
            key: "answer".into()
        }),
        prism::wire::Msg::KvValue {
            value: Some(vec![42])
        }
    );
    let found = prism::get_actor::<Tally>("survivor").unwrap();
    assert_eq!(prism::get(&found.add(1)).unwrap(), 3);
    assert_eq!(prism::get(&add::remote(1, 2)).unwrap(), 3);
}

#[test]
fn a_silent_node_is_declared_dead_after_the_timeout() {
    let mut cluster =
        LocalCluster::start(env!("CARGO_BIN_EXE_prism"), &[("127.0.0.2", 1.0)]).unwrap();
    let frozen = cluster.add_node("127.0.0.3", 1.0, None).unwrap();
    cluster.wait_nodes(2).unwrap();
    // A stopped process keeps its sockets open: only the missing heartbeats tell.
    assert!(prism::session::signal(
        cluster.daemon_pid(frozen),
        libc_sigstop()
    ));
    let view = prism::testing::wait_for(
        || Some(cluster.nodes()).filter(|n| n.iter().filter(|v| v.alive).count() == 1),
        "the head to declare the silent node dead",
    )
    .unwrap();
    assert_eq!(view.len(), 2);
    assert!(prism::session::signal(cluster.daemon_pid(frozen), 18));
}

fn libc_sigstop() -> i32 {
    19
}

#[test]
fn one_task_at_a_time_goes_straight_to_a_leased_worker_and_the_lease_comes_back() {
    let cluster = LocalCluster::start(env!("CARGO_BIN_EXE_prism"), &[("127.0.0.2", 1.0)]).unwrap();
    cluster.connect().unwrap();
    // Submit-and-wait, one at a time: after the first, tasks run on a lease.
    for i in 0..300 {
        assert_eq!(prism::get(&add::remote(i, 1)).unwrap(), i + 1);
    }
    // A task on the lease, then one through the node while it runs: the lease goes
    // back when the first ends, so the second (queued on the one CPU) runs too.
    let first = slow_square::remote(3, 100);
    let second = add::remote(1, 1);
    assert_eq!(prism::get_timeout(&second, Duration::from_secs(30)), Ok(2));
    assert_eq!(prism::get_timeout(&first, Duration::from_secs(30)), Ok(9));
    for i in 0..50 {
        assert_eq!(prism::get(&add::remote(i, 1)).unwrap(), i + 1);
    }
    // Nested tasks from a task on the lease: the lease's CPU is lent while it waits,
    // or the one-CPU node could never run them.
    assert_eq!(prism::get(&sum_squares::remote(20)).unwrap(), 2470);
    // Unused, the lease goes back: the node's CPU is free again.
    prism::testing::wait_for(
        || (prism::available_resources().unwrap().get("CPU") == Some(&1.0)).then_some(()),
        "the lease to be returned",
    )
    .unwrap();
    // The leased worker dies mid-task: the task is retried through the node.
    for i in 0..5 {
        assert_eq!(prism::get(&add::remote(i, 1)).unwrap(), i + 1);
    }
    let slow = slow_square::remote(7, 400);
    let pid =
        prism::testing::wait_for(|| cluster.worker_pids().first().copied(), "the worker").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(prism::session::signal(pid, 9));
    assert_eq!(prism::get_timeout(&slow, Duration::from_secs(30)), Ok(49));
}
