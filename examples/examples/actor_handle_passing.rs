//! Ray's actor-handle tutorial: one `Counter` actor, its handle passed to four tasks that
//! each increment it ten times, while the driver reads the counter as it grows.
//!
//! `cargo run --release --example actor_handle_passing`

use std::time::{Duration, Instant};

use prism_examples::secs;

#[prism::actor]
pub struct Counter {
    value: u64,
}

#[prism::actor]
impl Counter {
    pub fn new() -> Self {
        Counter { value: 0 }
    }

    pub fn increment(&mut self) -> u64 {
        self.value += 1;
        self.value
    }

    pub fn value(&self) -> u64 {
        self.value
    }
}

/// Increments the counter `times` times, then waits for the last increment: calls from
/// one handle run in order, so all of this task's increments are applied when it
/// returns. (Without that wait, an increment could still be on its way when the driver
/// reads the counter: calls from different processes have no order between them.)
#[prism::remote]
fn incrementer(counter: CounterHandle, times: u32) -> u32 {
    let mut last = None;
    for _ in 0..times {
        std::thread::sleep(Duration::from_millis(50));
        last = Some(counter.increment());
    }
    if let Some(last) = last {
        prism::get(&last).expect("the counter answers");
    }
    times
}

fn main() -> prism::Result<()> {
    prism::init()?;
    let t = Instant::now();
    let counter = Counter::remote();
    let tasks: Vec<_> = (0..4)
        .map(|_| incrementer::remote(counter.clone(), 10))
        .collect();
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(200));
        println!("counter so far: {}", prism::get(&counter.value())?);
    }
    prism::get_all(&tasks)?;
    let last = prism::get(&counter.value())?;
    println!("final value: {last} after {:.3} s", secs(t));
    assert_eq!(last, 40);
    prism::shutdown();
    Ok(())
}
