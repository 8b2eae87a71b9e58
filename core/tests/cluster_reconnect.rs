//! A driver whose cluster goes away: it rejoins through the head when its node dies and
//! another lives, waits for a head that restarts, and past its reconnect window fails
//! every pending and later operation with a typed error naming the head and how long
//! it waited, and still exits normally. These failures have no embedded counterpart:
//! one process has no cluster to lose.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use prism::prelude::*;
use prism::testing::{wait_for, LocalCluster};

#[prism::remote]
fn slow(x: u64, ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    x
}

#[prism::remote]
fn node_of() -> String {
    prism::context().unwrap().node_id
}

#[prism::actor]
pub struct Echo;

#[prism::actor]
impl Echo {
    pub fn new() -> Self {
        Echo
    }

    pub fn echo(&self, x: u64) -> u64 {
        x
    }
}

fn two_nodes() -> LocalCluster {
    LocalCluster::start(
        env!("CARGO_BIN_EXE_prism"),
        &[("127.0.0.2", 1.0), ("127.0.0.3", 1.0)],
    )
    .unwrap()
}

/// The daemon index of the node the driver submits to (the head gives a driver from
/// 127.0.0.1 the first node that joined: the first added).
const DRIVERS_NODE: usize = 1;

#[test]
fn a_driver_rejoins_through_the_head_when_its_node_dies() {
    let cluster = two_nodes();
    cluster.connect().unwrap();
    assert_eq!(prism::get(&slow::remote(1, 0)).unwrap(), 1);
    let pending: Vec<_> = (0..20).map(|i| slow::remote(i, 200)).collect();
    std::thread::sleep(Duration::from_millis(100));
    assert!(prism::session::signal(cluster.daemon_pid(DRIVERS_NODE), 9));
    // What was in flight is sent again through the node it rejoined.
    let results = prism::get_all(&pending).unwrap();
    assert_eq!(results, (0..20).collect::<Vec<_>>());
    let survivor = prism::get(&node_of::remote()).unwrap();
    let alive: Vec<String> = wait_for(
        || {
            let alive: Vec<String> = cluster
                .nodes()
                .into_iter()
                .filter(|n| n.alive)
                .map(|n| n.node_id)
                .collect();
            (alive.len() == 1).then_some(alive)
        },
        "the head to see one node left",
    )
    .unwrap();
    assert_eq!(alive, vec![survivor]);
}

#[test]
fn a_driver_waits_for_a_head_that_restarts_in_its_window() {
    let mut cluster = two_nodes();
    cluster.connect().unwrap();
    assert_eq!(prism::nodes().unwrap().len(), 2);
    cluster.kill_head();
    let asking = std::thread::spawn(prism::nodes);
    std::thread::sleep(Duration::from_millis(800));
    cluster.start_head_again().unwrap();
    let nodes = asking.join().unwrap().unwrap();
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    // Work never stopped: the nodes kept running it.
    assert_eq!(prism::get(&slow::remote(5, 0)).unwrap(), 5);
}

#[test]
fn cluster_resources_fail_when_the_head_cannot_be_reached() {
    let mut cluster = two_nodes();
    cluster
        .connect_with(prism::Config::default().reconnect_window(Duration::from_secs(1)))
        .unwrap();
    assert_eq!(prism::cluster_resources().unwrap()["CPU"], 2.0);
    cluster.kill_head();
    let t = Instant::now();
    match prism::cluster_resources() {
        Err(Error::ClusterUnreachable { head, waited, .. }) => {
            assert_eq!(head, cluster.head);
            assert!(waited >= Duration::from_millis(500), "{waited:?}");
        }
        other => panic!("a search sized from this would plan for nothing: {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(10));
}

#[test]
fn past_its_window_a_driver_fails_everything_with_a_typed_error() {
    let mut cluster = two_nodes();
    cluster
        .connect_with(prism::Config::default().reconnect_window(Duration::from_secs(2)))
        .unwrap();
    let echo = Echo::remote();
    assert_eq!(prism::get(&echo.echo(3)).unwrap(), 3);
    let pending = slow::remote(1, 60_000);
    std::thread::sleep(Duration::from_millis(200));
    let head = cluster.head.clone();
    cluster.kill_all();
    let t = Instant::now();
    let err = prism::get(&pending).unwrap_err();
    let waited = t.elapsed();
    match &err {
        Error::ClusterUnreachable {
            head: h, waited, ..
        } => {
            assert_eq!(*h, head);
            assert!(*waited >= Duration::from_secs(2), "{waited:?}");
        }
        other => panic!("expected ClusterUnreachable, got {other:?}"),
    }
    assert!(waited < Duration::from_secs(20), "gave up after {waited:?}");
    let message = err.to_string();
    assert!(message.contains(&head), "{message}");
    // Later submissions, actor calls, waits and questions fail at once.
    let t = Instant::now();
    assert!(matches!(
        prism::get(&slow::remote(2, 0)),
        Err(Error::ClusterUnreachable { .. })
    ));
    assert!(matches!(
        prism::get(&echo.echo(4)),
        Err(Error::ActorDied { .. } | Error::ClusterUnreachable { .. })
    ));
    let (ready, _) = prism::wait(&[slow::remote(3, 0)], 1, Some(Duration::from_secs(5))).unwrap();
    assert_eq!(ready.len(), 1, "a failed object is final");
    assert!(matches!(
        prism::nodes(),
        Err(Error::ClusterUnreachable { .. })
    ));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

/// Run by [`a_driver_whose_cluster_went_away_still_exits_normally`] in a process of its
/// own: a driver (of the cluster in `PRISM_ADDRESS`) that waits for a task while its
/// cluster goes away. Does nothing when run as an ordinary test.
#[test]
fn driver_child() {
    prism::enter_if_worker();
    if std::env::var_os("PRISM_TEST_DRIVER_CHILD").is_none() {
        return;
    }
    prism::init().unwrap();
    let pending = slow::remote(1, 60_000);
    println!("submitted");
    match prism::get(&pending) {
        Err(e @ Error::ClusterUnreachable { .. }) => println!("gave up: {e}"),
        other => panic!("expected ClusterUnreachable, got {other:?}"),
    }
}

#[test]
fn a_driver_whose_cluster_went_away_still_exits_normally() {
    let mut cluster = two_nodes();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["driver_child", "--exact", "--nocapture"])
        .env("PRISM_TEST_DRIVER_CHILD", "1")
        .env("PRISM_ADDRESS", &cluster.head)
        .env("PRISM_TOKEN", &cluster.token)
        .env("PRISM_RECONNECT_WINDOW_S", "2")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("submitted") {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
        seen.push_str(&line);
    }
    assert!(seen.contains("submitted"), "{seen}");
    std::thread::sleep(Duration::from_millis(300));
    cluster.kill_all();
    let t = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if t.elapsed() > Duration::from_secs(30) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the driver did not exit within 30 s of its cluster going away");
    };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert!(status.success(), "{status}: {seen}{rest}");
    assert!(
        rest.contains("gave up") && rest.contains(&cluster.head),
        "{rest}"
    );
}
