//! Tasks that launch tasks: a task blocked in `get` gives its CPU back, so nesting
//! never deadlocks, even on one CPU.
//!
//! First a fan-out (one task starting four and summing their results), then recursive
//! Fibonacci with nested gets, run on a single CPU.
//!
//! `cargo run --release --example nested_tasks`

use std::time::Instant;

use prism_examples::secs;

#[prism::remote]
fn square(x: u64) -> u64 {
    x * x
}

#[prism::remote]
fn sum_of_squares(n: u64) -> u64 {
    let refs: Vec<_> = (0..n).map(square::remote).collect();
    prism::get_all(&refs).expect("inner tasks").iter().sum()
}

#[prism::remote]
fn fib(n: u64) -> u64 {
    if n < 2 {
        return n;
    }
    let a = fib::remote(n - 1);
    let b = fib::remote(n - 2);
    prism::get(&a).expect("fib(n-1)") + prism::get(&b).expect("fib(n-2)")
}

fn main() -> prism::Result<()> {
    prism::init_with(prism::Config::default().num_cpus(1.0))?;
    let t = Instant::now();
    let s = prism::get(&sum_of_squares::remote(4))?;
    println!("sum of squares below 4, computed by nested tasks: {s}");
    assert_eq!(s, 14);
    let f = prism::get(&fib::remote(15))?;
    println!(
        "fib(15) with nested gets on one CPU: {f} in {:.3} s",
        secs(t)
    );
    assert_eq!(f, 610);
    prism::shutdown();
    Ok(())
}
