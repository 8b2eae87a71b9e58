//! ASHA against FIFO on an iterative trainable: softmax regression on the digits,
//! trained by mini-batch SGD, reporting its validation accuracy after every epoch. The
//! same 24 configurations (learning rate, L2 penalty, batch size) run under both
//! schedulers; ASHA stops the trials that are behind at its rungs and reaches the same
//! best accuracy for a fraction of the epochs.
//!
//! `cargo run --release --example tune_asha`

use prism_tune::datasets::{digits, stratified_folds, Labelled};
use prism_tune::tuner::{Metrics, Reporter, ResultGrid, SchedulerSpec, TuneOptions, Tuner};
use prism_tune::{choice, loguniform, Config, Mode, RandomSearch, Space, TuneError};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

const EPOCHS: u64 = 30;
const CLASSES: usize = 10;

/// Class scores of one row: `W x + b`, with `W` stored class by class and the bias last.
fn scores(w: &[f64], x: &[f32]) -> [f64; CLASSES] {
    let d = x.len();
    let mut s = [0.0; CLASSES];
    for (k, sk) in s.iter_mut().enumerate() {
        let row = &w[k * (d + 1)..(k + 1) * (d + 1)];
        *sk = row[d]
            + row[..d]
                .iter()
                .zip(x)
                .map(|(a, b)| a * *b as f64 / 16.0)
                .sum::<f64>();
    }
    s
}

fn accuracy(w: &[f64], data: &Labelled) -> f64 {
    let d = data.dims;
    let right = (0..data.rows())
        .filter(|&i| {
            let s = scores(w, &data.x[i * d..(i + 1) * d]);
            let best = (0..CLASSES)
                .max_by(|a, b| s[*a].total_cmp(&s[*b]))
                .unwrap_or(0);
            best == data.y[i]
        })
        .count();
    right as f64 / data.rows() as f64
}

/// Softmax regression by mini-batch SGD, one report per epoch.
#[prism::remote]
fn sgd(split: &(Labelled, Labelled), config: Config, reporter: Reporter) -> Result<(), TuneError> {
    let (train, valid) = split;
    let lr = config.f64("lr")?;
    let l2 = config.f64("l2")?;
    let batch = config.i64("batch")? as usize;
    let d = train.dims;
    let mut w = vec![0.0; CLASSES * (d + 1)];
    let mut order: Vec<usize> = (0..train.rows()).collect();
    let mut rng = SmallRng::seed_from_u64(reporter.trial() as u64);
    for epoch in 1..=EPOCHS {
        order.shuffle(&mut rng);
        for chunk in order.chunks(batch) {
            let mut grad = vec![0.0; w.len()];
            for &i in chunk {
                let x = &train.x[i * d..(i + 1) * d];
                let s = scores(&w, x);
                let top = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|v| (v - top).exp()).collect();
                let z: f64 = e.iter().sum();
                for k in 0..CLASSES {
                    let p = e[k] / z - if train.y[i] == k { 1.0 } else { 0.0 };
                    let row = &mut grad[k * (d + 1)..(k + 1) * (d + 1)];
                    for (g, xv) in row[..d].iter_mut().zip(x) {
                        *g += p * *xv as f64 / 16.0;
                    }
                    row[d] += p;
                }
            }
            let n = chunk.len() as f64;
            for (wv, g) in w.iter_mut().zip(&grad) {
                *wv -= lr * (g / n + l2 * *wv);
            }
        }
        let metrics = Metrics::from([
            ("acc".to_string(), accuracy(&w, valid)),
            ("epoch".to_string(), epoch as f64),
        ]);
        if !reporter.report(metrics)? {
            break;
        }
    }
    Ok(())
}

fn run(split: &prism::ObjectRef<(Labelled, Labelled)>, scheduler: SchedulerSpec) -> ResultGrid {
    let space = Space::new()
        .add("lr", loguniform(1e-3, 1.0))
        .add("l2", loguniform(1e-6, 1e-1))
        .add("batch", choice([16, 32, 64, 128]));
    let search = RandomSearch::new(&space, 24, 0).expect("a valid space");
    let options = TuneOptions::new("acc", Mode::Max).scheduler(scheduler);
    Tuner::new(Box::new(search), options)
        .run(|config, reporter| sgd::remote(split, config, reporter))
        .expect("the trials run")
}

fn main() -> prism::Result<()> {
    prism::init()?;
    let data = digits();
    let (train, valid) = &stratified_folds(&data.y, 5)[0];
    let split = prism::put((data.select(train), data.select(valid)));
    println!(
        "softmax regression on the digits by SGD, 24 configurations, up to {EPOCHS} epochs each\n"
    );
    let fifo = run(&split, SchedulerSpec::Fifo);
    let asha = run(
        &split,
        SchedulerSpec::Asha {
            max_t: EPOCHS,
            grace_period: 2,
            reduction_factor: 3.0,
        },
    );
    for (name, grid) in [("FIFO", &fifo), ("ASHA", &asha)] {
        let best = grid.best().expect("a best trial");
        println!(
            "{name}: best validation accuracy {:.4} ({}), {} epochs in all, {:.2} s",
            best.last("acc").unwrap_or(0.0),
            best.config,
            grid.iterations(),
            grid.elapsed.as_secs_f64()
        );
    }
    let (f, a) = (
        fifo.best().and_then(|t| t.last("acc")),
        asha.best().and_then(|t| t.last("acc")),
    );
    if let (Some(f), Some(a)) = (f, a) {
        println!(
            "\nASHA: {:+.2} points of accuracy against FIFO, {:.0}% of its epochs",
            (a - f) * 100.0,
            100.0 * asha.iterations() as f64 / fifo.iterations() as f64
        );
    }
    prism::shutdown();
    Ok(())
}
