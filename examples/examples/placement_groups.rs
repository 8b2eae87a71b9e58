//! Ray's placement group walkthrough: reserve two one-CPU bundles as a gang, wait for
//! them, start an actor in one bundle and tasks in the other, see the reserved CPUs
//! leave the free pool, then remove the group and see them come back. A group that can
//! never fit is refused at once rather than waiting forever.
//!
//! `cargo run --release --example placement_groups`
//! (on a cluster: `PRISM_ADDRESS=auto` and the `SPREAD` strategy put the bundles on two
//! nodes)

use std::time::Duration;

use prism::{Bundle, PlacementStrategy};

#[prism::remote]
fn where_am_i() -> String {
    prism::context().expect("inside a task").node_id
}

#[prism::actor]
pub struct Pinned;

#[prism::actor]
impl Pinned {
    pub fn new() -> Self {
        Pinned
    }

    pub fn node(&self) -> String {
        prism::context().expect("inside an actor").node_id
    }
}

fn free_cpus() -> prism::Result<f64> {
    Ok(prism::available_resources()?
        .get("CPU")
        .copied()
        .unwrap_or(0.0))
}

fn main() -> prism::Result<()> {
    prism::init()?;
    println!("free CPUs before: {}", free_cpus()?);

    let pg = prism::placement_group(vec![Bundle::new().cpus(1.0); 2], PlacementStrategy::Spread)?;
    pg.wait(Duration::from_secs(30))?;
    let nodes = pg.bundle_nodes(Duration::ZERO)?;
    println!("group {} ready; bundle nodes: {nodes:?}", pg.id());
    if prism::nodes()?.iter().filter(|n| n.alive).count() >= 2 {
        assert_ne!(nodes[0], nodes[1], "SPREAD puts the bundles on two nodes");
    }
    // Heartbeats carry a cluster's books: give them a moment.
    std::thread::sleep(Duration::from_millis(300));
    println!("free CPUs with the group reserved: {}", free_cpus()?);

    let actor = Pinned::options()
        .num_cpus(1.0)
        .scheduling(pg.bundle(0))
        .remote();
    let on = prism::get(&actor.node())?;
    println!("actor in bundle 0 runs on {on}");
    assert_eq!(on, nodes[0]);
    let tasks: Vec<_> = (0..4)
        .map(|_| where_am_i::options().scheduling(pg.bundle(1)).remote())
        .collect();
    for ran in prism::get_all(&tasks)? {
        assert_eq!(ran, nodes[1]);
    }
    println!("4 tasks in bundle 1 ran on {}", nodes[1]);

    pg.remove()?;
    match prism::get(&actor.node()) {
        Err(e) => println!("after removal the actor is gone: {e}"),
        Ok(_) => println!("the actor's last call was already queued"),
    }
    std::thread::sleep(Duration::from_millis(300));
    println!("free CPUs after removal: {}", free_cpus()?);

    let total = prism::cluster_resources()?
        .get("CPU")
        .copied()
        .unwrap_or(0.0);
    match prism::placement_group(
        vec![Bundle::new().cpus(total + 1.0)],
        PlacementStrategy::Pack,
    ) {
        Err(e) => println!("refused at once: {e}"),
        Ok(_) => unreachable!("a bundle bigger than the cluster cannot be placed"),
    }
    prism::shutdown();
    Ok(())
}
