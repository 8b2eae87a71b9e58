//! A pipeline over eight times its memory budget: 512 MB of ids generated, doubled by
//! a batch function and summed by a consumer that takes the blocks one by one, under a
//! 64 MiB budget. Prints the process's peak resident memory (from `/proc`), which stays
//! near the budget plus the runtime's own, however large the input.
//!
//! ```sh
//! cargo run --release --example data_bounded_memory
//! ```

use std::time::Instant;

use prism_data::arrow::array::{Array, Int64Array, RecordBatch};

fn double(b: RecordBatch) -> prism_data::Result<RecordBatch> {
    let two = Int64Array::new_scalar(2);
    let id = b
        .column_by_name("id")
        .ok_or_else(|| prism_data::DataError::Invalid("no id".into()))?;
    let doubled = prism_data::arrow::compute::kernels::numeric::mul(id, &two)?;
    Ok(RecordBatch::try_new(b.schema(), vec![doubled])?)
}
prism_data::register_batch_fn!(double);

/// A line of `/proc/self/status` in MiB.
fn status_mib(key: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    prism::init()?;
    const BUDGET: u64 = 64 << 20;
    const ROWS: u64 = 64_000_000; // 512 MB of Int64
    let before = status_mib("VmRSS:");
    let t = Instant::now();
    let mut sum: i64 = 0;
    let mut blocks = 0;
    for b in prism_data::range(ROWS)
        .map_batches(double)
        .with_memory_budget(BUDGET)
        .iter_blocks()?
    {
        let b = b?;
        let ids = b
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or("not Int64")?;
        sum += ids.values().iter().sum::<i64>();
        blocks += 1;
    }
    let n = ROWS as i64;
    assert_eq!(sum, n * (n - 1), "every row, doubled");
    let peak = status_mib("VmHWM:");
    println!(
        "{blocks} blocks, {:.0} MB of data under a {} MiB budget in {:.2} s: peak RSS {peak:.0} MiB (at start {before:.0} MiB)",
        ROWS as f64 * 8.0 / 1e6,
        BUDGET >> 20,
        t.elapsed().as_secs_f64()
    );
    let margin = 64.0;
    assert!(
        peak < (BUDGET >> 20) as f64 + margin,
        "peak RSS {peak:.0} MiB is over the budget plus {margin} MiB"
    );
    prism::shutdown();
    Ok(())
}
