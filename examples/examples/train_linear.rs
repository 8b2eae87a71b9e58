//! The seed's linear model trained data-parallel with prism-train: each worker takes
//! its half of the 1,000 samples, every step the workers average their gradients with
//! an all-reduce and take the same SGD step. Run on one worker and then on two, the
//! two runs end at the same loss (their batches are the same samples, split in two).
//!
//! `cargo run --release --example train_linear [-- --workers 2 --epochs 20]`
//! (on a cluster, `PRISM_ADDRESS=auto` and the workers spread over its nodes)

use prism_examples::linear::{fit, LinearConfig, Samples};
use prism_train::RunConfig;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    prism::init()?;
    let workers: usize = prism_examples::flag("--workers")?.unwrap_or(2);
    let config = LinearConfig {
        epochs: prism_examples::flag("--epochs")?.unwrap_or(20),
        ..LinearConfig::default()
    };
    let data = Samples::generate(1000, 0);
    println!("one worker:");
    let one = fit(&data, &config, 1, RunConfig::new())?;
    println!("{workers} workers:");
    let many = fit(&data, &config, workers, RunConfig::new())?;
    let (a, b) = (one.metrics()["loss"], many.metrics()["loss"]);
    println!(
        "final loss: {a:.6} on one worker ({:.2} s), {b:.6} on {workers} ({:.2} s)",
        one.elapsed.as_secs_f64(),
        many.elapsed.as_secs_f64()
    );
    assert!(a < 0.02, "the model learned the data: loss {a}");
    // Two workers see the same batches as one (split in two), so the ends agree to
    // rounding; other counts split the batches otherwise, and still end within 2%.
    assert!((a - b).abs() <= 0.02 * a, "the same end: {a} vs {b}");
    prism::shutdown();
    Ok(())
}
