//! `GET /metrics`: the nodes' resources and load in the Prometheus text format.

use std::fmt::Write as _;

use crate::wire::NodeView;

/// The values of one gauge for a node, by resource name (empty for none).
type Values = fn(&NodeView) -> Vec<(String, f64)>;

/// The nodes as Prometheus metrics.
pub(super) fn metrics(nodes: &[NodeView]) -> String {
    let mut out = String::new();
    let alive = nodes.iter().filter(|n| n.alive).count();
    let _ = writeln!(out, "# HELP prism_nodes_alive Nodes sending heartbeats.");
    let _ = writeln!(out, "# TYPE prism_nodes_alive gauge");
    let _ = writeln!(out, "prism_nodes_alive {alive}");
    let gauges: [(&str, &str, Values); 4] = [
        ("prism_resource_total", "Resources a node has.", |n| {
            n.total.clone()
        }),
        (
            "prism_resource_available",
            "Resources of a node not in use.",
            |n| n.available.clone(),
        ),
        ("prism_tasks_running", "Tasks running on a node.", |n| {
            vec![(String::new(), n.running as f64)]
        }),
        ("prism_tasks_queued", "Tasks waiting on a node.", |n| {
            vec![(String::new(), n.queued as f64)]
        }),
    ];
    for (name, help, values) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for n in nodes.iter().filter(|n| n.alive) {
            for (resource, v) in values(n) {
                let label = if resource.is_empty() {
                    format!("node=\"{}\"", n.node_id)
                } else {
                    format!("node=\"{}\",resource=\"{}\"", n.node_id, resource)
                };
                let _ = writeln!(out, "{name}{{{label}}} {v}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeView {
        NodeView {
            node_id: "abc".into(),
            address: "127.0.0.2:1".into(),
            total: vec![("CPU".into(), 2.0)],
            available: vec![("CPU".into(), 0.5)],
            queued: 3,
            running: 1,
            alive: true,
            pending: Vec::new(),
        }
    }

    #[test]
    fn metrics_name_every_node_and_resource() {
        let text = metrics(&[node()]);
        assert!(text.contains("prism_nodes_alive 1"));
        assert!(text.contains("prism_resource_total{node=\"abc\",resource=\"CPU\"} 2"));
        assert!(text.contains("prism_resource_available{node=\"abc\",resource=\"CPU\"} 0.5"));
        assert!(text.contains("prism_tasks_queued{node=\"abc\"} 3"));
    }
}
