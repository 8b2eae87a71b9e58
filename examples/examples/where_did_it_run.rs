//! 10,000 tasks each report the worker and node that ran them; the driver counts them.
//! On the embedded runtime every task runs on this node, spread over its worker threads.
//!
//! `cargo run --release --example where_did_it_run`

use std::collections::BTreeMap;
use std::time::Instant;

use prism_examples::secs;

#[prism::remote]
fn where_am_i() -> (String, u32) {
    let ctx = prism::context().expect("inside a task");
    (ctx.node_id, ctx.worker_id.unwrap_or(u32::MAX))
}

fn main() -> prism::Result<()> {
    prism::init()?;
    let t = Instant::now();
    let refs: Vec<_> = (0..10_000).map(|_| where_am_i::remote()).collect();
    let places = prism::get_all(&refs)?;
    let elapsed = secs(t);
    let mut by_node: BTreeMap<&str, usize> = BTreeMap::new();
    let mut by_worker: BTreeMap<u32, usize> = BTreeMap::new();
    for (node, worker) in &places {
        *by_node.entry(node).or_default() += 1;
        *by_worker.entry(*worker).or_default() += 1;
    }
    for (node, n) in &by_node {
        println!("node {node}: {n} tasks");
    }
    for (worker, n) in &by_worker {
        println!("  worker {worker}: {n} tasks");
    }
    assert_eq!(by_node.values().sum::<usize>(), 10_000);
    println!("{:.0} tasks/s", 10_000.0 / elapsed);
    prism::shutdown();
    Ok(())
}
