//! Ray's actor tutorial: two `Counter` actors (starting at 0 and 100), each incremented
//! three times with a one-second sleep. Each actor runs its calls in order; the two
//! actors run side by side, so the whole takes about three seconds.
//!
//! `cargo run --release --example counter_actors`

use std::time::Instant;

use prism_examples::secs;
use prism_examples::sleep::SlowCounter;

fn main() -> prism::Result<()> {
    prism::init()?;
    let t = Instant::now();
    let counters = [SlowCounter::remote(0), SlowCounter::remote(100)];
    let refs: Vec<_> = counters
        .iter()
        .flat_map(|c| (0..3).map(move |_| c.increment(1.0)))
        .collect();
    let out = prism::get_all(&refs)?;
    println!("{out:?}");
    assert_eq!(out, vec![1, 2, 3, 101, 102, 103]);
    println!(
        "makespan including actor creation: {:.3} s (ideal 3 s)",
        secs(t)
    );
    prism::shutdown();
    Ok(())
}
