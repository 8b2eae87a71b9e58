//! The Ray Train seed's program: a linear model (`nn.Linear(10, 1)`, MSE, SGD) trained
//! epoch by epoch with a remote task that takes the weights and the data by ref and
//! returns new weights, `train_epoch(model_weight_id, dataloader_id, epoch)`. Each
//! epoch's weights stay in the object store; the driver only chains refs, and scores
//! each epoch's weights in a task of its own while the next epoch trains.
//!
//! `cargo run --release --example train_epoch_tasks [-- --epochs 20]`

use prism::ObjectRef;
use prism_examples::linear::{self, Samples};

/// One epoch of SGD over the data, from `weights`; the new weights.
#[prism::remote]
fn train_epoch(weights: Vec<f32>, data: Samples, epoch: usize) -> Vec<f32> {
    let _ = epoch; // the seed passes it for its logging
    linear::epoch(&weights, &data, 32, 0.05)
}

/// The mean squared error of `weights` on the data.
#[prism::remote]
fn evaluate(weights: Vec<f32>, data: Samples) -> f64 {
    linear::mse(&weights, &data)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    prism::init()?;
    let epochs: usize = prism_examples::flag("--epochs")?.unwrap_or(20);
    let data = prism::put(Samples::generate(1000, 0));
    // nn.Linear(10, 1)'s parameters: ten weights, then the bias.
    let mut weights: ObjectRef<Vec<f32>> = prism::put(vec![0.0f32; linear::FEATURES + 1]);
    let mut scores = Vec::new();
    for epoch in 0..epochs {
        weights = train_epoch::remote(&weights, &data, epoch);
        scores.push(evaluate::remote(&weights, &data));
    }
    for (epoch, loss) in prism::get_all(&scores)?.into_iter().enumerate() {
        println!("epoch {epoch:>2}: loss {loss:.5}");
    }
    let last = prism::get(&evaluate::remote(&weights, &data))?;
    // The targets carry noise of variance 0.01: the loss cannot go much below it.
    assert!(last < 0.02, "the model learned the data: loss {last}");
    println!("final loss {last:.5} after {epochs} epochs");
    prism::shutdown();
    Ok(())
}
