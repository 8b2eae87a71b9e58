//! Feeding trainers with prism-data, as Ray Data's `streaming_split` feeds Ray Train's
//! workers: a dataset with a transform is split into two equal shards, each consumed
//! by a trainer actor (here: a running mean of the features, one pass), while the read
//! and transform tasks run a window ahead of them.
//!
//! ```sh
//! cargo run --release --example data_for_training
//! ```

use std::time::Instant;

use prism_data::arrow::array::{Array, Float64Array, RecordBatch};
use prism_data::{col, lit, DataShard};

/// One pass over a shard: rows seen and the mean of `x`.
#[prism::actor]
pub struct Trainer {
    rank: usize,
}

#[prism::actor]
impl Trainer {
    pub fn new(rank: usize) -> Self {
        Trainer { rank }
    }

    /// Reads its shard to the end: (rank, rows, mean of x, batches).
    pub fn epoch(&mut self, shard: DataShard) -> Result<(usize, u64, f64, usize), String> {
        let (mut rows, mut sum, mut batches) = (0u64, 0.0, 0usize);
        for batch in shard {
            let batch: RecordBatch = batch.map_err(|e| e.to_string())?;
            let x = batch
                .column_by_name("x")
                .and_then(|c| c.as_any().downcast_ref::<Float64Array>())
                .ok_or("no x")?;
            rows += x.len() as u64;
            sum += x.values().iter().sum::<f64>();
            batches += 1;
        }
        Ok((self.rank, rows, sum / rows.max(1) as f64, batches))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    prism::init()?;
    let t = Instant::now();
    // A feature from the ids, centred: x = (id mod 1000) / 1000 - 0.4995.
    let ds = prism_data::range(4_000_003).with_column(
        "x",
        col("id")
            .sub(col("id").div(lit(1000)).mul(lit(1000)))
            .cast(prism_data::CastTo::Float64)
            .div(lit(1000.0))
            .sub(lit(0.4995)),
    );
    let shards = ds.streaming_split(2, true)?;
    let trainers: Vec<_> = (0..2).map(Trainer::remote).collect();
    let epochs: Vec<_> = trainers
        .iter()
        .zip(shards)
        .map(|(t, s)| t.epoch(s))
        .collect();
    let mut rows = Vec::new();
    for e in &epochs {
        let (rank, n, mean, batches) =
            prism::get(e)?.map_err(|e| format!("a trainer failed: {e}"))?;
        println!("trainer {rank}: {n} rows in {batches} batches, mean x {mean:+.6}");
        assert!(mean.abs() < 0.01, "x is centred");
        rows.push(n);
    }
    assert_eq!(rows[0], rows[1], "equal shards");
    println!(
        "two equal shards of {} rows ({} rows dropped to keep them equal) in {:.2} s",
        rows[0],
        4_000_003 - 2 * rows[0],
        t.elapsed().as_secs_f64()
    );
    prism::shutdown();
    Ok(())
}
