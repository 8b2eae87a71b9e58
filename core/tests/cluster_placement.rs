//! Placement strategies on a real cluster: node affinity (hard and soft) and spread, and
//! the cluster-wide view of nodes and resources a driver gets.

use std::collections::BTreeMap;

use prism::prelude::*;
use prism::testing::LocalCluster;
use prism::Strategy;

#[prism::remote]
fn where_am_i() -> String {
    prism::context().unwrap().node_id
}

fn on(node_id: &str, soft: bool) -> Strategy {
    Strategy::NodeAffinity {
        node_id: node_id.to_string(),
        soft,
    }
}

fn counts(ids: Vec<String>) -> BTreeMap<String, usize> {
    let mut by_node = BTreeMap::new();
    for id in ids {
        *by_node.entry(id).or_default() += 1;
    }
    by_node
}

/// The CPUs node `id` has free in `views`.
fn free_cpus(views: &[prism::NodeView], id: &str) -> Option<f64> {
    let node = views.iter().find(|n| n.node_id == id)?;
    node.available
        .iter()
        .find(|(n, _)| n == "CPU")
        .map(|(_, v)| *v)
}

#[test]
fn affinity_pins_spread_alternates_and_resources_sum_over_nodes() {
    let cluster = LocalCluster::start(
        env!("CARGO_BIN_EXE_prism"),
        &[("127.0.0.2", 4.0), ("127.0.0.3", 4.0)],
    )
    .unwrap();
    cluster.connect().unwrap();
    let nodes = prism::nodes().unwrap();
    assert_eq!(nodes.len(), 2);
    assert_eq!(prism::cluster_resources().unwrap().get("CPU"), Some(&8.0));

    // Hard affinity: every task on the node named, both ways.
    for node in &nodes {
        let refs: Vec<_> = (0..40)
            .map(|_| {
                where_am_i::options()
                    .scheduling(on(&node.node_id, false))
                    .remote()
            })
            .collect();
        let ran = counts(prism::get_all(&refs).unwrap());
        assert_eq!(ran.get(&node.node_id), Some(&40), "{ran:?}");
    }

    // Spread: one batch alternates over the nodes, though the first has room for all
    // (a node out of room is passed over while another has some: 4 and 6 then).
    let refs: Vec<_> = (0..10)
        .map(|_| where_am_i::options().scheduling(Strategy::Spread).remote())
        .collect();
    let ran = counts(prism::get_all(&refs).unwrap());
    assert_eq!(ran.len(), 2, "{ran:?}");
    assert!(ran.values().all(|&n| (4..=6).contains(&n)), "{ran:?}");

    // A node full of long tasks is passed over while the other has room: spread tasks
    // do not queue behind them.
    let first = &nodes[0].node_id;
    let naps: Vec<_> = (0..4)
        .map(|_| nap::options().scheduling(on(first, false)).remote(2_000))
        .collect();
    // Every node's view says so, and that the second is idle (a peer learns a node's
    // load from its next heartbeat).
    let idle = &nodes[1].node_id;
    prism::testing::wait_for(
        || {
            nodes
                .iter()
                .all(|n| {
                    let views = cluster.view_from(&n.address);
                    free_cpus(&views, first) == Some(0.0) && free_cpus(&views, idle) == Some(4.0)
                })
                .then_some(())
        },
        "the naps to fill the first node",
    )
    .unwrap();
    let refs: Vec<_> = (0..4)
        .map(|_| where_am_i::options().scheduling(Strategy::Spread).remote())
        .collect();
    let ran = counts(prism::get_all(&refs).unwrap());
    assert_eq!(ran.get(&nodes[1].node_id), Some(&4), "{ran:?}");
    prism::get_all(&naps).unwrap();

    // A node that does not exist: hard fails with a typed error, soft runs anyway.
    let hard = where_am_i::options()
        .scheduling(on("no-such-node", false))
        .remote();
    match prism::get(&hard) {
        Err(Error::Infeasible { resource, .. }) => assert!(resource.contains("no-such-node")),
        other => panic!("expected Infeasible, got {other:?}"),
    }
    let soft = where_am_i::options()
        .scheduling(on("no-such-node", true))
        .remote();
    assert!(nodes
        .iter()
        .any(|n| n.node_id == prism::get(&soft).unwrap()));
}

#[prism::remote]
fn nap(ms: u64) -> u64 {
    std::thread::sleep(std::time::Duration::from_millis(ms));
    ms
}

#[prism::actor]
pub struct Greeter {
    greeting: String,
}

#[prism::actor]
impl Greeter {
    pub fn new(greeting: String) -> Self {
        Greeter { greeting }
    }

    pub fn greet(&self, name: String) -> String {
        format!("{} {name}", self.greeting)
    }
}

#[test]
fn work_that_does_not_fit_waits_with_its_reason_and_runs_when_room_frees() {
    let cluster = LocalCluster::start(env!("CARGO_BIN_EXE_prism"), &[("127.0.0.2", 1.0)]).unwrap();
    cluster.connect().unwrap();
    let busy = nap::remote(1500);
    std::thread::sleep(std::time::Duration::from_millis(200));
    // Neither fits while the sleeper holds the node's one CPU: they wait, the actor with
    // its call. (A task of the sleeper's own shape would be queued in its worker right
    // behind it instead: placed, not waiting.)
    let greeter = Greeter::options().num_cpus(1.0).remote("hello".to_string());
    let hello = greeter.greet("prism".to_string());
    let after = nap::options().num_cpus(0.5).remote(1);
    let pending = prism::testing::wait_for(
        || {
            let nodes = prism::nodes().ok()?;
            let pending = nodes.first()?.pending.clone();
            (pending.len() == 2).then_some(pending)
        },
        "both to be reported pending",
    )
    .unwrap();
    for p in &pending {
        assert_eq!(p.count, 1);
        let cpus = p.demand[0].1;
        assert!(
            p.reason
                .contains(&format!("{cpus} CPU asked, 0 of 1 free here")),
            "{}",
            p.reason
        );
        assert!(p.reason.contains("no other node"), "{}", p.reason);
    }
    assert!(pending.iter().any(|p| p.what.ends_with("Greeter")));
    assert!(pending.iter().any(|p| p.what.ends_with("::nap")));
    // `prism status` shows the same.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_prism"))
        .arg("status")
        .env("PRISM_SESSION_DIR", &cluster.dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("pending: 1 x"), "{text}");
    assert!(text.contains("0 of 1 free here"), "{text}");

    // The sleeper ends: the actor takes the CPU for its life, and the task runs once the
    // actor is killed.
    assert_eq!(prism::get(&busy).unwrap(), 1500);
    assert_eq!(prism::get(&hello).unwrap(), "hello prism");
    prism::kill(&greeter);
    assert_eq!(prism::get(&after).unwrap(), 1);

    // An actor no node could ever host fails at once.
    let huge = Greeter::options().num_cpus(8.0).remote("hi".to_string());
    match prism::get(&huge.greet("x".to_string())) {
        Err(Error::ActorDied { reason, .. }) => assert!(reason.contains("infeasible"), "{reason}"),
        other => panic!("expected an infeasible actor, got {other:?}"),
    }
}

/// Spread tasks sent while no node has room wait for whichever node frees first. They
/// used to be dealt out in turn and pinned to the node dealt, so those dealt to a node
/// whose CPUs actors hold for good waited forever while the other node went idle (a
/// prism-data actor pool hung this way, its last read pinned behind its own actors).
#[test]
fn spread_tasks_without_room_anywhere_go_to_the_node_that_frees() {
    let cluster = LocalCluster::start(
        env!("CARGO_BIN_EXE_prism"),
        &[("127.0.0.2", 2.0), ("127.0.0.3", 2.0)],
    )
    .unwrap();
    cluster.connect().unwrap();
    let nodes = prism::nodes().unwrap();
    // The driver's node (it submits through it) and the other.
    let here = prism::get(&where_am_i::remote()).unwrap();
    let there = nodes
        .iter()
        .find(|n| n.node_id != here)
        .unwrap()
        .node_id
        .clone();
    let holders: Vec<_> = (0..2)
        .map(|i| {
            Greeter::options()
                .num_cpus(1.0)
                .scheduling(on(&here, false))
                .remote(format!("holder {i}"))
        })
        .collect();
    for h in &holders {
        prism::get(&h.greet("x".to_string())).unwrap();
    }
    let naps: Vec<_> = (0..2)
        .map(|_| nap::options().scheduling(on(&there, false)).remote(1_500))
        .collect();
    let address = |id: &str| {
        nodes
            .iter()
            .find(|n| n.node_id == id)
            .unwrap()
            .address
            .clone()
    };
    prism::testing::wait_for(
        || {
            let views = cluster.view_from(&address(&here));
            (free_cpus(&views, &here) == Some(0.0) && free_cpus(&views, &there) == Some(0.0))
                .then_some(())
        },
        "both nodes to be full in the driver's node's view",
    )
    .unwrap();
    let refs: Vec<_> = (0..4)
        .map(|_| where_am_i::options().scheduling(Strategy::Spread).remote())
        .collect();
    let ran: Vec<String> = refs
        .iter()
        .map(|r| prism::get_timeout(r, std::time::Duration::from_secs(30)).unwrap())
        .collect();
    assert_eq!(counts(ran).get(&there), Some(&4));
    prism::get_all(&naps).unwrap();
    for h in &holders {
        prism::kill(h);
    }
}

/// One HTTP exchange with the head's API: the status line and the body.
fn http(address: &str, request: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(address).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

#[test]
fn the_head_serves_nodes_and_metrics_over_http() {
    let cluster = LocalCluster::start(
        env!("CARGO_BIN_EXE_prism"),
        &[("127.0.0.2", 2.0), ("127.0.0.3", 1.0)],
    )
    .unwrap();
    let api = std::fs::read_to_string(cluster.dir.join("dashboard")).unwrap();
    assert!(api.starts_with("127.0.0.1:"), "bound to loopback: {api}");

    let get = |line: &str| {
        http(
            &api,
            &format!("{line}\r\nHost: {api}\r\nConnection: close\r\n\r\n"),
        )
    };
    let (status, body) = get("GET /api/nodes HTTP/1.1");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let nodes: serde_json::Value = serde_json::from_str(&body).unwrap();
    let nodes = nodes.as_array().unwrap();
    assert_eq!(nodes.len(), 2);
    let cpus: f64 = nodes
        .iter()
        .map(|n| {
            n["total"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r[0] == "CPU")
                .unwrap()[1]
                .as_f64()
                .unwrap()
        })
        .sum();
    assert_eq!(cpus, 3.0);

    let (status, body) = get("GET /metrics HTTP/1.1");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains("prism_nodes_alive 2"), "{body}");
    assert!(body.contains("resource=\"CPU\"} 2"), "{body}");

    assert!(get("GET /secret HTTP/1.1").0.contains("404"));
    // Changing something needs the token, whatever the method and route.
    assert!(get("DELETE /api/nodes HTTP/1.1").0.contains("401"));
    // A Host that is not this head's (a rebound DNS name) reaches nothing.
    let rebound = "GET /api/nodes HTTP/1.1\r\nHost: prism.example\r\nConnection: close\r\n\r\n";
    assert!(http(&api, rebound).0.contains("403"));
    assert!(http(&api, "\x16\x03\x01 not http at all\r\n\r\n")
        .0
        .contains("400"));
    // A bad request closes its own connection only.
    assert!(get("GET /api/nodes HTTP/1.0").0.ends_with(" 200 OK"));
}
