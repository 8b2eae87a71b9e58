//! prism-data feeding prism-train, as Ray Data's `streaming_split` feeds Ray Train's
//! workers: a dataset with a transform is split into one shard per worker, the shards
//! are the `Trainer`'s, and each worker reads its own while the read and transform
//! tasks run a window ahead. The workers fit `y = a·x + b` by least squares: each sums
//! `x`, `y`, `x²` and `xy` over its shard, one all-reduce adds the sums up, and every
//! worker solves the same normal equations.
//!
//! `cargo run --release --example train_on_data`
//! (on a cluster, `PRISM_ADDRESS=auto`: the shards are read on the workers' nodes)

use prism_data::arrow::array::{Array, Float64Array};
use prism_data::{col, lit, DataShard};
use prism_train::{
    ReduceOp, RunConfig, ScalingConfig, TrainContext, TrainError, TrainLoop, Trainer,
};

/// Least squares over the workers' shards.
struct LeastSquares;

impl TrainLoop for LeastSquares {
    type Config = ();
    type Shard = DataShard;

    fn train(ctx: &mut TrainContext, _: (), shard: DataShard) -> prism_train::Result<()> {
        // n, Σx, Σy, Σx², Σxy
        let mut sums = vec![0.0f64; 5];
        for batch in shard {
            let batch = batch.map_err(TrainError::from_loop)?;
            let column = |name: &str| {
                batch
                    .column_by_name(name)
                    .and_then(|c| c.as_any().downcast_ref::<Float64Array>())
                    .ok_or_else(|| TrainError::Loop(format!("no Float64 column {name}")))
            };
            let (x, y) = (column("x")?, column("y")?);
            for (x, y) in x.values().iter().zip(y.values()) {
                sums[0] += 1.0;
                sums[1] += x;
                sums[2] += y;
                sums[3] += x * x;
                sums[4] += x * y;
            }
        }
        let own = sums[0];
        ctx.all_reduce(&mut sums, ReduceOp::Sum)?;
        let [n, sx, sy, sxx, sxy] = [sums[0], sums[1], sums[2], sums[3], sums[4]];
        let a = (n * sxy - sx * sy) / (n * sxx - sx * sx);
        let b = (sy - a * sx) / n;
        ctx.report([("a", a), ("b", b), ("rows", n), ("rank0_rows", own)], None)
    }
}
prism_train::register_loop!(LeastSquares);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    prism::init()?;
    // x = (id mod 1000) / 1000, y = 3x + 1.
    let x = col("id")
        .sub(col("id").div(lit(1000)).mul(lit(1000)))
        .cast(prism_data::CastTo::Float64)
        .div(lit(1000.0));
    let ds = prism_data::range(1_000_000)
        .with_column("x", x)
        .with_column("y", col("x").mul(lit(3.0)).add(lit(1.0)));
    let shards = ds.streaming_split(2, true)?;
    // Half a CPU per worker: the dataset's read and transform tasks run outside the
    // workers' placement group, on what the workers leave free.
    let scaling = ScalingConfig::new(2).cpus_per_worker(0.5);
    let result = Trainer::<LeastSquares>::new((), scaling)
        .shards(shards)?
        .run_config(RunConfig::new())
        .fit()?;
    let m = result.metrics();
    println!(
        "fitted y = {:.6}·x + {:.6} on {} rows ({} on rank 0) in {:.2} s",
        m["a"],
        m["b"],
        m["rows"],
        m["rank0_rows"],
        result.elapsed.as_secs_f64()
    );
    assert!(
        (m["a"] - 3.0).abs() < 1e-6 && (m["b"] - 1.0).abs() < 1e-6,
        "{m:?}"
    );
    assert_eq!(m["rank0_rows"] * 2.0, m["rows"], "equal shards");
    prism::shutdown();
    Ok(())
}
