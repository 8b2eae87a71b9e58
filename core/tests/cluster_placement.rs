//! Placement strategies on a real cluster: node affinity (hard and soft) and spread, and
//! the cluster-wide view of nodes and resources a driver gets.

use std::collections::BTreeMap;

use prism::cluster::testing::LocalCluster;
use prism::prelude::*;
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

#[test]
fn affinity_pins_spread_alternates_and_resources_sum_over_nodes() {
    let cluster = LocalCluster::start(
        env!("CARGO_BIN_EXE_prism"),
        &[("127.0.0.2", 4.0), ("127.0.0.3", 4.0)],
    );
    cluster.connect().unwrap();
    let nodes = prism::nodes().unwrap();
    assert_eq!(nodes.len(), 2);
    assert_eq!(prism::cluster_resources().get("CPU"), Some(&8.0));

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

    // Spread: one batch alternates over the nodes, though the first has room for all.
    let refs: Vec<_> = (0..10)
        .map(|_| where_am_i::options().scheduling(Strategy::Spread).remote())
        .collect();
    let ran = counts(prism::get_all(&refs).unwrap());
    assert_eq!(ran.values().copied().collect::<Vec<_>>(), vec![5, 5]);

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
