//! A job to look at with the state commands: many short tasks of three functions, one
//! in a thousand failing, in waves, with the rate shown as it goes.
//!
//! ```sh
//! prism start --head
//! PRISM_ADDRESS=auto cargo run --release --example many_tasks -- 100000
//! prism summary tasks && prism list tasks --state failed --limit 5
//! ```
//!
//! Embedded it runs the same (and there is no head to ask afterwards).

use std::time::Instant;

#[prism::remote]
fn square(x: i64) -> i64 {
    x * x
}

#[prism::remote]
fn negate(x: i64) -> i64 {
    -x
}

#[prism::remote]
fn checked(x: i64) -> i64 {
    if x % 1000 == 999 {
        panic!("{x} is one of the one in a thousand that fail");
    }
    x
}

/// Tasks submitted before their results are taken.
const WAVE: i64 = 10_000;

fn main() -> prism::Result<()> {
    let n: i64 = match std::env::args().nth(1) {
        Some(a) => a
            .parse()
            .map_err(|e| prism::Error::Config(format!("the number of tasks {a:?}: {e}")))?,
        None => 30_000,
    };
    prism::init()?;
    let started = Instant::now();
    let (mut done, mut failed) = (0i64, 0i64);
    let mut start = 0;
    while start < n {
        let end = (start + WAVE).min(n);
        let refs: Vec<_> = (start..end)
            .map(|i| match i % 3 {
                0 => square::remote(i),
                1 => negate::remote(i),
                _ => checked::remote(i),
            })
            .collect();
        for r in &refs {
            match prism::get(r) {
                Ok(_) => done += 1,
                Err(_) => failed += 1,
            }
        }
        start = end;
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "{start} of {n} tasks, {failed} failed, {:.0} tasks/s",
            start as f64 / secs
        );
    }
    let expected_failures = (0..n).filter(|i| i % 3 == 2 && i % 1000 == 999).count() as i64;
    assert_eq!(
        failed, expected_failures,
        "the one in a thousand fail, no other"
    );
    assert_eq!(done + failed, n);
    println!(
        "{n} tasks in {:.2} s ({failed} failed as meant to)",
        started.elapsed().as_secs_f64()
    );
    prism::shutdown();
    Ok(())
}
