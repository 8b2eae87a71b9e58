//! A CSV to Parquet ETL with prism-data, the Ray Data tutorial's first program: read
//! the W10 CSV (`id,x,y,k`), keep the rows with `x > 0`, group them by `k` with the
//! count and the means of `x` and `y`, write the filtered rows as Parquet, read the
//! files back and check them against the CSV.
//!
//! ```sh
//! cargo run --release --example data_csv_etl                   # a 200,000-row CSV it writes
//! cargo run --release --example data_csv_etl -- /tmp/w10.csv   # ../shared/bench/ray/w10_gen_csv.py's
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use prism_data::arrow::array::{Array, Float64Array, Int64Array, UInt64Array};
use prism_data::{col, lit, Agg, Literal};

/// A CSV of the W10 shape: `id`, `x` and `y` from a seeded generator, `k = id % 100`.
fn write_sample(path: &PathBuf, rows: i64) -> std::io::Result<()> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(w, "id,x,y,k")?;
    for id in 0..rows {
        let (x, y): (f64, f64) = (rng.gen_range(-3.0..3.0), rng.gen_range(-3.0..3.0));
        writeln!(w, "{id},{x:.6},{y:.6},{}", id % 100)?;
    }
    w.flush()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    prism::init()?;
    let work = std::env::temp_dir().join(format!("prism-data-csv-etl-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let csv = match std::env::args().nth(1) {
        Some(p) => PathBuf::from(p),
        None => {
            let p = work.join("w10_sample.csv");
            write_sample(&p, 200_000)?;
            p
        }
    };
    let t = Instant::now();
    let ds = prism_data::read_csv(&csv)?;
    println!(
        "{}: {} read tasks, schema {:?}",
        csv.display(),
        ds.num_inputs(),
        ds.schema()?
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect::<Vec<_>>()
    );
    let positive = ds.filter(col("x").gt(lit(0)));
    let rows = positive.count()?;
    println!(
        "rows with x > 0: {rows} ({:.2} s)",
        t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let groups =
        positive
            .groupby(&["k"])
            .aggregate(&[Agg::count(), Agg::mean("x"), Agg::mean("y")])?;
    println!(
        "group by k ({:.2} s), the first five groups:",
        t.elapsed().as_secs_f64()
    );
    let keys = groups
        .column_by_name("k")
        .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
        .ok_or("no k column")?;
    let counts = groups
        .column_by_name("count()")
        .and_then(|c| c.as_any().downcast_ref::<UInt64Array>())
        .ok_or("no count column")?;
    assert_eq!(
        counts.values().iter().sum::<u64>(),
        rows,
        "every row in one group"
    );
    let means = groups
        .column_by_name("mean(x)")
        .and_then(|c| c.as_any().downcast_ref::<Float64Array>())
        .ok_or("no mean(x) column")?;
    let y_means = groups
        .column_by_name("mean(y)")
        .and_then(|c| c.as_any().downcast_ref::<Float64Array>())
        .ok_or("no mean(y) column")?;
    println!(
        "{:>4} {:>8} {:>10} {:>10}",
        "k", "count()", "mean(x)", "mean(y)"
    );
    for i in 0..5.min(groups.num_rows()) {
        println!(
            "{:>4} {:>8} {:>10.6} {:>10.6}",
            keys.value(i),
            counts.value(i),
            means.value(i),
            y_means.value(i)
        );
    }
    assert!(
        means.values().iter().all(|&m| m > 0.0),
        "the mean of positive x is positive"
    );

    let t = Instant::now();
    let out = work.join("positive");
    let files = positive.write_parquet(&out)?;
    println!(
        "wrote {} Parquet files to {} ({:.2} s)",
        files.len(),
        out.display(),
        t.elapsed().as_secs_f64()
    );
    let back = prism_data::read_parquet(&out)?;
    assert_eq!(
        back.count()?,
        rows,
        "the Parquet files hold the filtered rows"
    );
    let (Some(Literal::Float(a)), Some(Literal::Float(b))) = (back.sum("x")?, positive.sum("x")?)
    else {
        return Err("x has no sum".into());
    };
    assert!(
        (a - b).abs() <= 1e-9 * b.abs(),
        "sum(x): {a} from Parquet, {b} from the CSV"
    );
    let ids: i64 = back
        .select(&["id"])
        .collect()?
        .iter()
        .map(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .map_or(0, |c| c.len() as i64)
        })
        .sum();
    assert_eq!(ids as u64, rows);
    println!("read back {rows} rows, sum(x) = {a:.3}: the same as the CSV's");
    std::fs::remove_dir_all(&work)?;
    prism::shutdown();
    Ok(())
}
