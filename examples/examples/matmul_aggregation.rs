//! Matrix-multiply aggregation (W5): four random normal 1000×1000 matrices made in
//! tasks, two products in tasks, their sum in a task; then the sum of sixteen matrices by
//! a pairwise tree of tasks and by a linear chain.
//!
//! `cargo run --release --example matmul_aggregation`

use std::time::Instant;

use prism_examples::matrix::{add, chain_sum, multiply, random_matrix, tree_sum};
use prism_examples::secs;

const N: usize = 1000;

fn main() -> prism::Result<()> {
    prism::init()?;
    let t = Instant::now();
    let m: Vec<_> = (0..4).map(|s| random_matrix::remote(N, s)).collect();
    let p1 = multiply::remote(&m[0], &m[1]);
    let p2 = multiply::remote(&m[2], &m[3]);
    let sum = prism::get_arc(&add::remote(&p1, &p2))?;
    println!(
        "(A·B) + (C·D) of {N}×{N}: entry [0][0] = {:.4}, in {:.3} s",
        sum.get(0, 0),
        secs(t)
    );

    let sixteen: Vec<_> = (0..16).map(|s| random_matrix::remote(N, 100 + s)).collect();
    prism::get_all_arc(&sixteen)?;
    let t = Instant::now();
    let tree = prism::get_arc(&tree_sum(sixteen.clone()))?;
    let tree_s = secs(t);
    let t = Instant::now();
    let chain = prism::get_arc(&chain_sum(sixteen))?;
    let chain_s = secs(t);
    assert!((tree.total() - chain.total()).abs() < 1e-6 * tree.total().abs().max(1.0));
    println!("sum of 16: tree of tasks {tree_s:.3} s, chain of tasks {chain_s:.3} s");
    prism::shutdown();
    Ok(())
}
