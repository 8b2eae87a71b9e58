//! Ray's dependent-tasks tutorial: `func2(func1(x))` for x in 1..=4. Each function sleeps
//! a second; refs passed as arguments chain the tasks without a `get` in between, so the
//! four chains run side by side and finish in about two seconds.
//!
//! `cargo run --release --example dependent_tasks`

use std::time::Instant;

use prism_examples::secs;
use prism_examples::sleep::{func1, func2};

fn main() -> prism::Result<()> {
    prism::init_with(prism::Config::default().num_cpus(4.0))?;
    let t = Instant::now();
    let refs: Vec<_> = (1..=4).map(|x| func2::remote(func1::remote(x))).collect();
    let out = prism::get_all(&refs)?;
    println!("{out:?}");
    assert_eq!(out, vec![3, 5, 7, 9]);
    println!("makespan: {:.3} s (ideal 2 s, sequential 8 s)", secs(t));
    prism::shutdown();
    Ok(())
}
