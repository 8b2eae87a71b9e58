//! The head's HTTP API (the "dashboard" port, 8265 by default, bound to 127.0.0.1 unless
//! told otherwise): the cluster's state as JSON for scripts and as Prometheus metrics
//! for monitoring. A small HTTP/1.1 server of its own, one request per connection: the
//! head needs no web framework for two read-only endpoints.
//!
//! * `GET /api/nodes`: every node the head knows, as `prism::nodes()` returns them
//!   (resources in total and available, running and queued tasks, what waits and why).
//! * `GET /metrics`: the same in the Prometheus text format.
//!
//! Anything else is answered with a JSON error and the right status; a request that is
//! not HTTP, or larger than 8 KiB, gets `400` and the connection closes.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::daemon::head::Head;
use crate::wire::NodeView;

/// The largest request head accepted.
const MAX_REQUEST: usize = 8 << 10;

/// Serves the API on `listener` until the process ends.
pub async fn serve(listener: TcpListener, head: Arc<Head>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let head = head.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &head).await {
                tracing::debug!(%peer, "dashboard: {e}");
            }
        });
    }
}

async fn answer(mut stream: TcpStream, head: &Head) -> std::io::Result<()> {
    let request = tokio::time::timeout(Duration::from_secs(5), read_head(&mut stream)).await;
    let (status, kind, body) = match request {
        Ok(Ok(Some(line))) => route(&line, &head.nodes()),
        _ => error(400, "not an HTTP request"),
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(reply.as_bytes()).await?;
    stream.shutdown().await
}

/// Reads a request's head and returns its first line; `None` if it is not one.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || buf.len() + n > MAX_REQUEST {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    Ok(text.lines().next().map(str::to_string))
}

/// The status line, content type and body answering a request line.
fn route(line: &str, nodes: &[NodeView]) -> (String, &'static str, String) {
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return error(400, "malformed request line");
    };
    if !version.starts_with("HTTP/1.") {
        return error(400, "not HTTP/1.x");
    }
    if method != "GET" {
        return error(405, "only GET is served");
    }
    let path = target.split('?').next().unwrap_or("");
    match path {
        "/api/nodes" => match serde_json::to_string_pretty(nodes) {
            Ok(json) => ("200 OK".into(), "application/json", json),
            Err(e) => error(500, &e.to_string()),
        },
        "/metrics" => ("200 OK".into(), "text/plain; version=0.0.4", metrics(nodes)),
        _ => error(404, "no such endpoint: try /api/nodes or /metrics"),
    }
}

fn error(code: u16, message: &str) -> (String, &'static str, String) {
    let reason = match code {
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Internal Server Error",
    };
    let body = serde_json::json!({ "error": message }).to_string();
    (format!("{code} {reason}"), "application/json", body)
}

/// The values of one gauge for a node, by resource name (empty for none).
type Values = fn(&NodeView) -> Vec<(String, f64)>;

/// The nodes as Prometheus metrics.
fn metrics(nodes: &[NodeView]) -> String {
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
    fn requests_are_routed_and_bad_ones_refused() {
        let nodes = [node()];
        assert!(route("GET /api/nodes HTTP/1.1", &nodes)
            .0
            .starts_with("200"));
        assert!(route("GET /metrics?x=1 HTTP/1.0", &nodes)
            .0
            .starts_with("200"));
        assert!(route("GET /nope HTTP/1.1", &nodes).0.starts_with("404"));
        assert!(route("POST /api/nodes HTTP/1.1", &nodes)
            .0
            .starts_with("405"));
        assert!(route("GET /api/nodes SPDY/3", &nodes).0.starts_with("400"));
        assert!(route("garbage", &nodes).0.starts_with("400"));
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
