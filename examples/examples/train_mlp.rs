//! Workload T1: a multi-layer perceptron (256 → 512 ReLU → 10) trained data-parallel
//! on a synthetic classification set of 100,000 samples, on one worker and then on two,
//! as `../shared/bench/peers/train_peers.py` runs it in PyTorch, DDP and Ray Train.
//! Prints each run's seconds per epoch (median of epochs 2 to 4), samples per second
//! and training accuracy, and the two workers' speed-up over one.
//!
//! `cargo run --release --example train_mlp [-- --workers 2 --samples 100000 --epochs 4 --bucket VALUES]`

use prism_examples::t1::{self, T1Config};
use prism_train::RunConfig;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    prism::init()?;
    let workers: usize = prism_examples::flag("--workers")?.unwrap_or(2);
    let defaults = T1Config::default();
    let config = T1Config {
        samples: prism_examples::flag("--samples")?.unwrap_or(defaults.samples),
        epochs: prism_examples::flag("--epochs")?.unwrap_or(defaults.epochs),
        bucket: prism_examples::flag("--bucket")?,
        ..defaults
    };
    let mut runs = Vec::new();
    for n in [1, workers] {
        println!(
            "T1 on {n} worker(s), {} samples, {} epochs:",
            config.samples, config.epochs
        );
        let f = t1::run(&config, n, RunConfig::new())?;
        println!(
            "  {:.3} s per epoch, {:.0} samples/s, training accuracy {:.4}, fit {:.2} s",
            f.epoch_s_median, f.samples_per_s, f.train_acc, f.fit_s
        );
        let epochs: Vec<String> = f.epoch_s.iter().map(|s| format!("{s:.3}")).collect();
        println!(
            "  epochs: {} s (in all-reduces: {:.3} s)",
            epochs.join(", "),
            f.allreduce_s
        );
        runs.push(f);
    }
    println!(
        "{workers} workers: {:.2}x one worker's samples/s",
        runs[1].samples_per_s / runs[0].samples_per_s
    );
    prism::shutdown();
    Ok(())
}
