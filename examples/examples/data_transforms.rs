//! prism-data's all-to-all transforms, as in Ray Data's guides: a seeded
//! `random_shuffle`, a `sort` on two keys, `map_groups` centring a column within each
//! group, `union`, and a row `map` into serde types; then the statistics of the sort's
//! run, stage by stage.
//!
//! ```sh
//! cargo run --release --example data_transforms
//! ```

use std::sync::Arc;
use std::time::Instant;

use prism_data::arrow::array::{Array, Float64Array, Int64Array, RecordBatch};
use prism_data::arrow::datatypes::{DataType, Field, Schema};
use prism_data::{col, lit, Agg, CastTo, SortKey};

const ROWS: u64 = 2_000_000;

fn column<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> &'a T {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .unwrap_or_else(|| panic!("no column {name} of that type"))
}

/// One group's rows with `x` centred on the group's mean.
fn centre(b: RecordBatch) -> prism_data::Result<RecordBatch> {
    let x = column::<Float64Array>(&b, "x");
    let mean = x.values().iter().sum::<f64>() / x.len().max(1) as f64;
    let centred: Float64Array = x.values().iter().map(|v| v - mean).collect();
    let k = b
        .column_by_name("k")
        .cloned()
        .ok_or_else(|| prism_data::DataError::Invalid("no k".into()))?;
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", k.data_type().clone(), true),
        Field::new("x", DataType::Float64, false),
    ]));
    Ok(RecordBatch::try_new(schema, vec![k, Arc::new(centred)])?)
}
prism_data::register_batch_fn!(centre);

#[derive(serde::Deserialize)]
struct Raw {
    id: i64,
}

#[derive(serde::Serialize, serde::Deserialize, Debug)]
struct Labelled {
    id: i64,
    label: String,
}

fn label(r: Raw) -> Labelled {
    let label = if r.id % 2 == 0 { "even" } else { "odd" };
    Labelled {
        id: r.id,
        label: label.to_string(),
    }
}
prism_data::register_row_map!(label: Raw => Labelled);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    prism::init()?;
    // k = id mod 10, x = (id * 7919) mod 1000: a scrambled column to sort by.
    let base = prism_data::range(ROWS)
        .with_column("k", col("id").sub(col("id").div(lit(10)).mul(lit(10))))
        .with_column(
            "x",
            col("id")
                .mul(lit(7919))
                .sub(col("id").mul(lit(7919)).div(lit(1000)).mul(lit(1000)))
                .cast(CastTo::Float64),
        )
        .repartition(8);

    let t = Instant::now();
    let shuffled = base.clone().random_shuffle(42);
    let first: Vec<i64> = column::<Int64Array>(&shuffled.take(5)?[0], "id")
        .values()
        .to_vec();
    assert_eq!(shuffled.count()?, ROWS);
    assert_eq!(
        shuffled.sum("id")?,
        Some(prism_data::Literal::Int((0..ROWS as i64).sum()))
    );
    println!(
        "random_shuffle(seed 42): {ROWS} rows, the first ids {first:?} ({:.2} s)",
        t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let sorted = base.clone().sort([SortKey::asc("k"), SortKey::desc("x")]);
    let (mut last, mut rows) = ((i64::MIN, f64::INFINITY), 0u64);
    for b in sorted.iter_batches(100_000)? {
        let b = b?;
        let (k, x) = (
            column::<Int64Array>(&b, "k"),
            column::<Float64Array>(&b, "x"),
        );
        for i in 0..b.num_rows() {
            let row = (k.value(i), x.value(i));
            assert!(
                row.0 > last.0 || (row.0 == last.0 && row.1 <= last.1),
                "sorted"
            );
            last = row;
        }
        rows += b.num_rows() as u64;
    }
    assert_eq!(rows, ROWS);
    println!(
        "sort(k, x desc): {rows} rows in order, the last (k, x) = {last:?} ({:.2} s)",
        t.elapsed().as_secs_f64()
    );
    print!("{}", sorted.stats());

    let t = Instant::now();
    let centred = base.groupby(&["k"]).map_groups(centre);
    let means = centred
        .groupby(&["k"])
        .aggregate(&[Agg::count(), Agg::mean("x")])?;
    let m = column::<Float64Array>(&means, "mean(x)");
    assert_eq!(means.num_rows(), 10);
    assert!(
        m.values().iter().all(|v| v.abs() < 1e-9),
        "every group centred"
    );
    println!(
        "map_groups(centre) over 10 groups: every group's mean of x is now 0 ({:.2} s)",
        t.elapsed().as_secs_f64()
    );

    let rows: Vec<Labelled> = prism_data::range(3)
        .union(&[prism_data::range(2)])
        .map(label)
        .iter_rows()?
        .collect::<prism_data::Result<_>>()?;
    println!("union + map: {rows:?}");
    assert_eq!(rows.len(), 5);
    prism::shutdown();
    Ok(())
}
