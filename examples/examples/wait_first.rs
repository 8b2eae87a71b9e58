//! `prism::wait`: process results in the order they finish, not the order submitted.
//!
//! Six tasks sleep different times; the driver waits for one at a time and prints each
//! as soon as it is ready.
//!
//! `cargo run --release --example wait_first`

use std::time::Instant;

use prism_examples::secs;
use prism_examples::sleep::sleep_for;

fn main() -> prism::Result<()> {
    prism::init_with(prism::Config::default().num_cpus(6.0))?;
    let t = Instant::now();
    let mut pending: Vec<_> = [0.6, 0.1, 0.5, 0.2, 0.4, 0.3]
        .into_iter()
        .map(sleep_for::remote)
        .collect();
    let mut order = Vec::new();
    while !pending.is_empty() {
        let (ready, rest) = prism::wait(&pending, 1, None)?;
        let v = prism::get(&ready[0])?;
        println!("{:.3} s: a task that slept {v} s is done", secs(t));
        order.push(v);
        pending = rest;
    }
    // With a CPU per task (the embedded runtime here) they finish shortest first; on
    // fewer CPUs (a small cluster) the shortest still comes back first.
    assert_eq!(order[0], 0.1);
    let mut sorted = order.clone();
    sorted.sort_by(f64::total_cmp);
    assert_eq!(sorted, vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6]);
    println!("all done in {:.3} s", secs(t));
    prism::shutdown();
    Ok(())
}
