//! Ray's first tutorial: sixteen tasks that only sleep, run in parallel.
//!
//! Prints the sequential time (the sum of the sleeps), the makespan on every core of
//! this machine, the best makespan any in-order scheduler could reach on that many
//! CPUs, and the ideal (total work spread perfectly).
//!
//! `cargo run --release --example sleep_tasks`

use std::time::Instant;

use prism_examples::secs;
use prism_examples::sleep::{fifo_makespan, sleep_for, SLEEPS};

fn main() -> prism::Result<()> {
    let t = Instant::now();
    prism::init()?;
    let cpus = prism::cluster_resources()?["CPU"];
    println!("prism started in {:.1} ms with {cpus} CPUs", secs(t) * 1e3);

    let sequential: f64 = SLEEPS.iter().sum();
    let t = Instant::now();
    let refs: Vec<_> = SLEEPS.iter().map(|&s| sleep_for::remote(s)).collect();
    let slept = prism::get_all(&refs)?;
    let makespan = secs(t);

    assert_eq!(slept, SLEEPS);
    println!("results: {slept:?}");
    println!("sequential time: {sequential:.2} s");
    println!(
        "makespan on {cpus} CPUs: {makespan:.3} s (in-order bound {:.2} s, ideal {:.2} s)",
        fifo_makespan(&SLEEPS, cpus as usize),
        sequential / cpus
    );
    println!("speed-up: {:.2}x", sequential / makespan);
    prism::shutdown();
    Ok(())
}
