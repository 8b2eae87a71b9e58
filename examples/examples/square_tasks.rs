//! The smallest Ray program: square ten numbers in ten tasks.
//!
//! `cargo run --release --example square_tasks`

#[prism::remote]
fn square(x: i64) -> i64 {
    x * x
}

fn main() -> prism::Result<()> {
    prism::init()?;
    let refs: Vec<_> = (0..10).map(square::remote).collect();
    let squares = prism::get_all(&refs)?;
    println!("{squares:?}");
    assert_eq!(squares, vec![0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
    prism::shutdown();
    Ok(())
}
