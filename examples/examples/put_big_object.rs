//! `prism::put` of a big object: 100 MiB of `f64` stored once and read by ten tasks
//! in place. Tasks take `&[f64]`, so they receive the stored buffer itself: the store
//! holds one copy, not eleven.
//!
//! `cargo run --release --example put_big_object`

use std::sync::Arc;
use std::time::Instant;

use prism_examples::secs;

#[prism::remote]
fn partial_sum(data: &[f64], part: usize, parts: usize) -> f64 {
    let chunk = data.len().div_ceil(parts);
    data.iter().skip(part * chunk).take(chunk).sum()
}

fn main() -> prism::Result<()> {
    prism::init()?;
    let n = 100 * 1024 * 1024 / 8;
    let data: Vec<f64> = (0..n).map(|i| (i % 1000) as f64).collect();
    let expected: f64 = data.iter().sum();

    let t = Instant::now();
    let big = prism::put(data);
    let put_s = secs(t);
    let t = Instant::now();
    let shared: Arc<Vec<f64>> = prism::get_arc(&big)?;
    let get_s = secs(t);
    let gb = (n * 8) as f64 / 1e9;
    println!(
        "put 100 MiB in {:.3} ms ({:.0} GB/s)",
        put_s * 1e3,
        gb / put_s
    );
    println!(
        "get_arc in {:.3} ms (zero-copy, {:.0} GB/s)",
        get_s * 1e3,
        gb / get_s
    );

    let t = Instant::now();
    let parts = 10;
    let refs: Vec<_> = (0..parts)
        .map(|p| partial_sum::remote(&big, p, parts))
        .collect();
    let total: f64 = prism::get_all(&refs)?.iter().sum();
    println!("ten tasks summed it in place in {:.3} s: {total}", secs(t));
    assert_eq!(total, expected);
    let stats = prism::store_stats()?;
    println!(
        "object store: {} objects, {:.1} MiB in memory",
        stats.objects,
        stats.bytes_in_memory as f64 / (1 << 20) as f64
    );
    drop(shared);
    prism::shutdown();
    Ok(())
}
