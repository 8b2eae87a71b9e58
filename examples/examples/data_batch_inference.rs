//! Batch inference with prism-data, as Ray Data's `map_batches` with a model class: the
//! digits SVC of prism-tune, fitted once per actor of a pool, predicts every block of
//! the 1,797 digits (64 pixel columns and the label), and the predictions are checked
//! against the labels.
//!
//! ```sh
//! cargo run --release --example data_batch_inference
//! ```

use std::sync::Arc;
use std::time::Instant;

use prism_data::arrow::array::{Array, ArrayRef, Float32Array, Int64Array, RecordBatch};
use prism_data::arrow::datatypes::{DataType, Field, Schema};
use prism_data::{ActorPool, DataError};
use prism_tune::datasets::{digits, Features};
use prism_tune::svc::{Svc, SvcParams};

/// The model: an RBF SVC fitted on the digits when the actor starts.
struct DigitsModel {
    svc: Svc,
}

impl prism_data::BatchMapper for DigitsModel {
    /// `(C, gamma)`.
    type Config = (f64, f64);

    fn new((c, gamma): (f64, f64)) -> prism_data::Result<Self> {
        let d = digits();
        let x = Features::new(&d.x, d.dims).map_err(|e| DataError::Invalid(e.to_string()))?;
        let params = SvcParams {
            c,
            gamma,
            ..SvcParams::default()
        };
        let svc = Svc::fit(&x, &d.y, &params).map_err(|e| DataError::Invalid(e.to_string()))?;
        Ok(DigitsModel { svc })
    }

    /// Appends a `digit` column: the predicted class of each row's 64 pixels.
    fn map(&mut self, batch: RecordBatch) -> prism_data::Result<RecordBatch> {
        let pixels: Vec<&Float32Array> = (0..64)
            .map(|i| {
                batch
                    .column_by_name(&format!("p{i}"))
                    .and_then(|c| c.as_any().downcast_ref::<Float32Array>())
                    .ok_or_else(|| DataError::Invalid(format!("no Float32 column p{i}")))
            })
            .collect::<prism_data::Result<_>>()?;
        let mut rows = Vec::with_capacity(batch.num_rows() * 64);
        for r in 0..batch.num_rows() {
            rows.extend(pixels.iter().map(|p| p.value(r)));
        }
        let x = Features::new(&rows, 64).map_err(|e| DataError::Invalid(e.to_string()))?;
        let digit: Int64Array = self.svc.predict(&x).into_iter().map(|d| d as i64).collect();
        let mut fields: Vec<Field> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new("digit", DataType::Int64, false));
        let mut columns = batch.columns().to_vec();
        columns.push(Arc::new(digit));
        Ok(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?)
    }
}
prism_data::register_batch_mapper!(DigitsModel);

/// The digits as batches of `rows` rows: `p0..p63` and `label`.
fn digit_batches(rows: usize) -> Result<Vec<RecordBatch>, Box<dyn std::error::Error>> {
    let d = digits();
    let mut fields: Vec<Field> = (0..64)
        .map(|i| Field::new(format!("p{i}"), DataType::Float32, false))
        .collect();
    fields.push(Field::new("label", DataType::Int64, false));
    let schema = Arc::new(Schema::new(fields));
    let n = d.y.len();
    let mut out = Vec::new();
    for start in (0..n).step_by(rows) {
        let end = (start + rows).min(n);
        let mut columns: Vec<ArrayRef> = (0..64)
            .map(|i| {
                Arc::new(
                    (start..end)
                        .map(|r| d.x[r * 64 + i])
                        .collect::<Float32Array>(),
                ) as ArrayRef
            })
            .collect();
        columns.push(Arc::new(
            (start..end).map(|r| d.y[r] as i64).collect::<Int64Array>(),
        ));
        out.push(RecordBatch::try_new(schema.clone(), columns)?);
    }
    Ok(out)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    prism::init()?;
    let t = Instant::now();
    let ds = prism_data::from_batches(digit_batches(256)?)?;
    println!("{} blocks of digits", ds.num_inputs());
    let predicted = ds
        .map_batches_with::<DigitsModel>(&(1.0, 0.001), ActorPool::new(1, 2))
        .select(&["label", "digit"]);
    let (mut right, mut all) = (0usize, 0usize);
    for b in predicted.iter_blocks()? {
        let b = b?;
        let col = |name: &str| {
            b.column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned())
        };
        let (label, digit) = (
            col("label").ok_or("no label")?,
            col("digit").ok_or("no digit")?,
        );
        all += b.num_rows();
        right += label
            .values()
            .iter()
            .zip(digit.values())
            .filter(|(l, d)| l == d)
            .count();
    }
    let accuracy = right as f64 / all as f64;
    println!(
        "{all} digits predicted in {:.2} s, accuracy on the fitted data {accuracy:.4}",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(all, 1797);
    assert!(accuracy > 0.98, "accuracy {accuracy}");
    prism::shutdown();
    Ok(())
}
