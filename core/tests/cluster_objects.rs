//! Large objects on a real cluster: kept where they were made, pulled in chunks by the
//! processes that read them, freed everywhere when their owner drops them, and rebuilt
//! from lineage when the node holding them dies.

use std::time::Duration;

use prism::prelude::*;
use prism::testing::{wait_for, LocalCluster};

/// `len` pseudo-random bytes from `seed`, with the node that made them.
#[prism::remote]
fn make(seed: u64, len: usize) -> (String, Vec<u8>) {
    let mut x = seed | 1;
    let bytes = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    (prism::context().unwrap().node_id, bytes)
}

/// The same bytes plus one more round: a large object made from a large object.
#[prism::remote]
fn grow(input: (String, Vec<u8>)) -> (String, Vec<u8>) {
    let mut bytes = input.1;
    bytes.extend_from_slice(&[7; 1000]);
    (prism::context().unwrap().node_id, bytes)
}

#[prism::remote]
fn checksum(input: (String, Vec<u8>)) -> (String, u64) {
    (prism::context().unwrap().node_id, fnv(&input.1))
}

#[prism::remote]
fn sum_put(data: Vec<u64>, add: u64) -> (String, u64) {
    (
        prism::context().unwrap().node_id,
        data.iter().sum::<u64>() + add,
    )
}

/// Bytes this task's worker process holds in its object store.
#[prism::remote]
fn held_bytes() -> u64 {
    let s = prism::store_stats().unwrap();
    s.bytes_in_memory + s.bytes_spilled
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// The id of the node listening on `ip`.
fn node_on(ip: &str) -> String {
    prism::nodes()
        .unwrap()
        .into_iter()
        .find(|n| n.address.starts_with(&format!("{ip}:")))
        .unwrap()
        .node_id
}

/// Two nodes, each with a custom resource naming it, so that tasks can be pinned.
fn two_pinnable_nodes() -> LocalCluster {
    let mut cluster = LocalCluster::start(env!("CARGO_BIN_EXE_prism"), &[]).unwrap();
    cluster
        .add_node("127.0.0.2", 2.0, Some(r#"{"a": 100}"#))
        .unwrap();
    cluster
        .add_node("127.0.0.3", 2.0, Some(r#"{"b": 100}"#))
        .unwrap();
    cluster.wait_nodes(2).unwrap();
    cluster.connect().unwrap();
    cluster
}

#[test]
fn large_objects_are_pulled_where_needed_and_freed_everywhere() {
    let _cluster = two_pinnable_nodes();
    let len = 3 << 20;
    let made = make::options().resource("a", 1.0).remote(11, len);
    // Read on the other node: the consumer's worker pulls it from the maker's.
    let (sum_node, sum) =
        prism::get(&checksum::options().resource("b", 1.0).remote(&made)).unwrap();
    // Read by the driver: pulled into this process.
    let (made_node, bytes) = prism::get(&made).unwrap();
    assert_eq!(bytes.len(), len);
    assert_eq!(sum, fnv(&bytes));
    assert_ne!(sum_node, made_node, "the consumer ran on the other node");

    // A large object this driver put travels to tasks on both nodes by reference.
    let data = prism::put((0..500_000u64).collect::<Vec<_>>());
    let expected: u64 = (0..500_000u64).sum();
    let refs: Vec<_> = (0..8u64)
        .map(|i| {
            let node = if i % 2 == 0 { "a" } else { "b" };
            sum_put::options().resource(node, 1.0).remote(&data, i)
        })
        .collect();
    let sums = prism::get_all(&refs).unwrap();
    for (i, (_, s)) in sums.iter().enumerate() {
        assert_eq!(*s, expected + i as u64);
    }
    let nodes: std::collections::BTreeSet<_> = sums.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(nodes.len(), 2);

    // Both workers keep copies; when the driver drops its refs, both let go.
    assert!(prism::get(&held_bytes::options().resource("a", 1.0).remote()).unwrap() >= len as u64);
    drop((made, data, refs));
    for node in ["a", "b"] {
        wait_for(
            || {
                let held = prism::get(&held_bytes::options().resource(node, 1.0).remote()).unwrap();
                (held == 0).then_some(())
            },
            "the workers to drop their copies",
        )
        .unwrap();
    }
}

#[test]
fn objects_lost_with_their_node_are_rebuilt_from_lineage() {
    let mut cluster =
        LocalCluster::start(env!("CARGO_BIN_EXE_prism"), &[("127.0.0.2", 1.0)]).unwrap();
    let doomed = cluster
        .add_node("127.0.0.3", 1.0, Some(r#"{"b": 100}"#))
        .unwrap();
    cluster.wait_nodes(2).unwrap();
    cluster.connect().unwrap();
    let on_b = || make::options().resource("b", 1.0);
    let first = on_b().remote(5, 1 << 20);
    let second = grow::options().resource("b", 1.0).remote(&first);
    let unretried = on_b().max_retries(0).remote(6, 1 << 20);
    let small = add_one::options().resource("b", 1.0).remote(41);
    prism::wait(
        &[first.untyped(), second.untyped(), unretried.untyped()],
        3,
        None,
    )
    .unwrap();
    let (doomed_id, _) = prism::get(&small).unwrap();

    // The node holding all three dies; another node that can run their tasks joins.
    assert!(prism::session::signal(cluster.daemon_pid(doomed), 9));
    wait_for(
        || (cluster.nodes().iter().filter(|n| n.alive).count() == 1).then_some(()),
        "the head to see the node gone",
    )
    .unwrap();
    cluster
        .add_node("127.0.0.4", 1.0, Some(r#"{"b": 100}"#))
        .unwrap();
    cluster.wait_nodes(2).unwrap();

    // `second` is rebuilt, and for that `first` too (its argument, lost as well).
    let (node, bytes) = prism::get_timeout(&second, Duration::from_secs(60)).unwrap();
    let mut expected = prism::get(&first).unwrap().1;
    expected.extend_from_slice(&[7; 1000]);
    assert_eq!(bytes, expected);
    assert_ne!(node, doomed_id, "made again on the new node");
    // A small result came back inline and was never lost.
    assert_eq!(prism::get(&small).unwrap(), (doomed_id, 42));
    // Without retries, the lost object stays lost: a typed error, not a hang.
    match prism::get_timeout(&unretried, Duration::from_secs(60)) {
        Err(Error::ObjectLost(id)) => assert_eq!(id, unretried.id()),
        other => panic!("expected ObjectLost, got {:?}", other.map(|v| v.1.len())),
    }
}

#[prism::remote]
fn add_one(x: i64) -> (String, i64) {
    (prism::context().unwrap().node_id, x + 1)
}

#[prism::actor]
pub struct Spot {
    n: i64,
}

#[prism::actor]
impl Spot {
    pub fn new(n: i64) -> Self {
        Spot { n }
    }

    pub fn add(&mut self, by: i64) -> i64 {
        self.n += by;
        self.n
    }

    pub fn node(&self) -> String {
        prism::context().unwrap().node_id
    }

    pub fn pid(&self) -> u32 {
        std::process::id()
    }
}

#[test]
fn an_actor_whose_node_dies_is_restarted_on_another() {
    let mut cluster =
        LocalCluster::start(env!("CARGO_BIN_EXE_prism"), &[("127.0.0.2", 1.0)]).unwrap();
    let doomed = cluster.add_node("127.0.0.3", 1.0, None).unwrap();
    cluster.wait_nodes(2).unwrap();
    cluster.connect().unwrap();
    let b = node_on("127.0.0.3");
    let spot = Spot::options()
        .max_restarts(1)
        .scheduling(prism::Strategy::NodeAffinity {
            node_id: b.clone(),
            soft: true,
        })
        .remote(10);
    assert_eq!(prism::get(&spot.node()).unwrap(), b);
    assert_eq!(prism::get(&spot.add(1)).unwrap(), 11);

    // Its whole node dies: the node that placed it creates it again on a live node.
    assert!(prism::session::signal(cluster.daemon_pid(doomed), 9));
    let moved = wait_for(
        || {
            prism::get_timeout(&spot.node(), Duration::from_secs(30))
                .ok()
                .filter(|n| *n != b)
        },
        "the actor to start again elsewhere",
    )
    .unwrap();
    assert_ne!(moved, b);
    // The constructor ran again: the state starts over.
    assert_eq!(prism::get(&spot.add(1)).unwrap(), 11);
}

/// A large result of a nested task, read by the task that submitted it.
#[prism::remote]
fn nested_big(len: usize) -> usize {
    let inner = make::remote(3, len);
    prism::get(&inner).unwrap().1.len()
}

#[test]
fn a_large_result_of_a_nested_task_in_the_same_worker_reaches_its_owner() {
    // One node with one CPU: the nested task runs in the very worker that waits for it.
    let cluster = LocalCluster::start(env!("CARGO_BIN_EXE_prism"), &[("127.0.0.2", 1.0)]).unwrap();
    cluster.connect().unwrap();
    let len = 1 << 20;
    assert_eq!(
        prism::get_timeout(&nested_big::remote(len), Duration::from_secs(60)),
        Ok(len)
    );
}

#[test]
fn an_actor_placed_on_a_peer_restarts_when_its_worker_dies() {
    let mut cluster =
        LocalCluster::start(env!("CARGO_BIN_EXE_prism"), &[("127.0.0.2", 1.0)]).unwrap();
    cluster.add_node("127.0.0.3", 1.0, None).unwrap();
    cluster.wait_nodes(2).unwrap();
    cluster.connect().unwrap();
    let b = node_on("127.0.0.3");
    let spot = Spot::options()
        .max_restarts(1)
        .scheduling(prism::Strategy::NodeAffinity {
            node_id: b.clone(),
            soft: false,
        })
        .remote(1);
    assert_eq!(prism::get(&spot.node()).unwrap(), b);
    assert_eq!(prism::get(&spot.add(1)).unwrap(), 2);
    let pid = prism::get(&spot.pid()).unwrap();
    // The worker on the peer dies: the node that placed the actor hears of it and
    // creates it again; its state starts over.
    assert!(prism::session::signal(pid, 9));
    let again = wait_for(
        || {
            prism::get_timeout(&spot.pid(), Duration::from_secs(30))
                .ok()
                .filter(|p| *p != pid)
        },
        "the actor to start again",
    )
    .unwrap();
    assert_ne!(again, pid);
    assert_eq!(prism::get(&spot.add(1)).unwrap(), 2);
}

#[test]
fn a_task_goes_to_the_node_that_keeps_its_large_argument() {
    let cluster = two_pinnable_nodes();
    let b = node_on("127.0.0.3");
    // Made on the second node; read by tasks that ask for nothing in particular.
    let made = make::options().resource("b", 1.0).remote(21, 4 << 20);
    prism::wait(std::slice::from_ref(&made), 1, None).unwrap();
    for _ in 0..3 {
        let (node, _) = prism::get(&checksum::remote(&made)).unwrap();
        assert_eq!(node, b, "ran where its argument is");
    }
    drop(cluster);
}
