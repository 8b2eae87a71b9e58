//! Group-by aggregation: each task reduces its block to one row of partial statistics
//! per group, and the partials are merged where the result is asked for, so only
//! groups travel, never rows.
//!
//! Partial statistics per group and aggregated column are the count of non-null
//! values, their sum, minimum, maximum, mean and sum of squared deviations (merged
//! with Chan's formula, so `std` stays accurate on large groups).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, RecordBatch, UInt32Array, UInt64Array};
use arrow::compute::{cast, concat_batches, lexsort_to_indices, take, SortColumn};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::row::{RowConverter, SortField};
use serde::{Deserialize, Serialize};

use crate::error::{arrow_err, no_column, DataError, Result};

/// One aggregate of a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Agg {
    /// The group's rows: `count()`.
    Count,
    /// `sum(c)`, as `Float64`.
    Sum(String),
    /// `mean(c)`.
    Mean(String),
    /// `min(c)`, as `Float64`.
    Min(String),
    /// `max(c)`, as `Float64`.
    Max(String),
    /// The sample standard deviation (`n - 1` in the denominator): `std(c)`.
    Std(String),
}

impl Agg {
    /// `count()`.
    pub fn count() -> Agg {
        Agg::Count
    }
    /// `sum(column)`.
    pub fn sum(column: &str) -> Agg {
        Agg::Sum(column.into())
    }
    /// `mean(column)`.
    pub fn mean(column: &str) -> Agg {
        Agg::Mean(column.into())
    }
    /// `min(column)`.
    pub fn min(column: &str) -> Agg {
        Agg::Min(column.into())
    }
    /// `max(column)`.
    pub fn max(column: &str) -> Agg {
        Agg::Max(column.into())
    }
    /// `std(column)`.
    pub fn std(column: &str) -> Agg {
        Agg::Std(column.into())
    }

    fn column(&self) -> Option<&str> {
        match self {
            Agg::Count => None,
            Agg::Sum(c) | Agg::Mean(c) | Agg::Min(c) | Agg::Max(c) | Agg::Std(c) => Some(c),
        }
    }

    /// The output column's name, as Ray names it: `mean(x)`.
    pub fn name(&self) -> String {
        match self {
            Agg::Count => "count()".into(),
            Agg::Sum(c) => format!("sum({c})"),
            Agg::Mean(c) => format!("mean({c})"),
            Agg::Min(c) => format!("min({c})"),
            Agg::Max(c) => format!("max({c})"),
            Agg::Std(c) => format!("std({c})"),
        }
    }
}

/// What to group by and what to compute: the sink of a group-by's tasks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupSpec {
    /// The key columns.
    pub keys: Vec<String>,
    /// The aggregates.
    pub aggs: Vec<Agg>,
}

impl GroupSpec {
    /// The distinct columns aggregated.
    pub(crate) fn value_columns(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for c in self.aggs.iter().filter_map(Agg::column) {
            if !out.iter().any(|o| o == c) {
                out.push(c.to_string());
            }
        }
        out
    }

    /// Columns a source must read.
    pub(crate) fn needed(&self) -> Vec<String> {
        let mut n = self.keys.clone();
        n.extend(self.value_columns());
        n
    }
}

/// Partial statistics of one column in one group.
#[derive(Clone, Copy)]
struct Stats {
    n: f64,
    sum: f64,
    min: f64,
    max: f64,
    mean: f64,
    m2: f64,
}

impl Stats {
    const EMPTY: Stats = Stats {
        n: 0.0,
        sum: 0.0,
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
        mean: 0.0,
        m2: 0.0,
    };

    fn add(&mut self, v: f64) {
        self.n += 1.0;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        let d = v - self.mean;
        self.mean += d / self.n;
        self.m2 += d * (v - self.mean);
    }

    fn merge(&mut self, o: &Stats) {
        if o.n == 0.0 {
            return;
        }
        let n = self.n + o.n;
        let d = o.mean - self.mean;
        self.mean += d * o.n / n;
        self.m2 += o.m2 + d * d * self.n * o.n / n;
        self.n = n;
        self.sum += o.sum;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
    }
}

const PARTS: [&str; 6] = ["n", "sum", "min", "max", "mean", "m2"];

/// The group of every row of `batch` by `keys`, and the first row of every group.
fn group_rows(batch: &RecordBatch, keys: &[String]) -> Result<(Vec<u32>, Vec<u32>)> {
    let schema = batch.schema();
    let cols: Vec<ArrayRef> = keys
        .iter()
        .map(|k| {
            batch
                .column_by_name(k)
                .cloned()
                .ok_or_else(|| no_column(k, &schema))
        })
        .collect::<Result<_>>()?;
    let mut group_of = Vec::with_capacity(batch.num_rows());
    let mut first = Vec::new();
    // One integer key: hash the integers themselves.
    if let [c] = cols.as_slice() {
        if let Some(ints) = cast_int(c) {
            let mut index: HashMap<Option<i64>, u32> = HashMap::new();
            for (row, v) in ints.iter().enumerate() {
                let g = *index.entry(v).or_insert_with(|| {
                    first.push(row as u32);
                    (first.len() - 1) as u32
                });
                group_of.push(g);
            }
            return Ok((group_of, first));
        }
    }
    let fields = cols
        .iter()
        .map(|c| SortField::new(c.data_type().clone()))
        .collect();
    let converter = RowConverter::new(fields).map_err(arrow_err("groupby keys"))?;
    let rows = converter
        .convert_columns(&cols)
        .map_err(arrow_err("groupby keys"))?;
    let mut index: HashMap<&[u8], u32> = HashMap::new();
    for row in 0..batch.num_rows() {
        let key = rows.row(row);
        let g = *index.entry(key.data()).or_insert_with(|| {
            first.push(row as u32);
            (first.len() - 1) as u32
        });
        group_of.push(g);
    }
    Ok((group_of, first))
}

fn cast_int(c: &ArrayRef) -> Option<arrow::array::Int64Array> {
    if !c.data_type().is_integer() {
        return None;
    }
    let a = cast(c, &DataType::Int64).ok()?;
    a.as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .cloned()
}

fn f64_column(batch: &RecordBatch, name: &str) -> Result<Float64Array> {
    let c = batch
        .column_by_name(name)
        .ok_or_else(|| no_column(name, &batch.schema()))?;
    if !c.data_type().is_numeric() {
        return Err(DataError::Invalid(format!(
            "cannot aggregate the {} column {name}",
            c.data_type()
        )));
    }
    let f = cast(c, &DataType::Float64).map_err(arrow_err(format!("aggregating {name}")))?;
    f.as_any()
        .downcast_ref::<Float64Array>()
        .cloned()
        .ok_or_else(|| DataError::Invalid(format!("aggregating {name}")))
}

/// A partial batch: the keys, `__rows`, and `{column}.{part}` for every value column.
fn partial_batch(
    batch: &RecordBatch,
    spec: &GroupSpec,
    first: &[u32],
    rows: Vec<f64>,
    stats: Vec<Vec<Stats>>,
) -> Result<RecordBatch> {
    let idx = UInt32Array::from(first.to_vec());
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    let schema = batch.schema();
    for k in &spec.keys {
        let c = batch
            .column_by_name(k)
            .ok_or_else(|| no_column(k, &schema))?;
        fields.push(Field::new(k, c.data_type().clone(), true));
        columns.push(take(c, &idx, None)?);
    }
    fields.push(Field::new("__rows", DataType::Float64, false));
    columns.push(Arc::new(Float64Array::from(rows)));
    for (c, per_group) in spec.value_columns().iter().zip(stats) {
        for part in PARTS {
            fields.push(Field::new(format!("{c}.{part}"), DataType::Float64, false));
            let values: Vec<f64> = per_group
                .iter()
                .map(|s| match part {
                    "n" => s.n,
                    "sum" => s.sum,
                    "min" => s.min,
                    "max" => s.max,
                    "mean" => s.mean,
                    _ => s.m2,
                })
                .collect();
            columns.push(Arc::new(Float64Array::from(values)));
        }
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// Reduces raw rows to one partial row per group.
pub(crate) fn partial(batch: &RecordBatch, spec: &GroupSpec) -> Result<RecordBatch> {
    let (group_of, first) = group_rows(batch, &spec.keys)?;
    let groups = first.len();
    let mut rows = vec![0.0; groups];
    for &g in &group_of {
        rows[g as usize] += 1.0;
    }
    let mut stats = Vec::new();
    for c in spec.value_columns() {
        let values = f64_column(batch, &c)?;
        let mut per = vec![Stats::EMPTY; groups];
        for (row, v) in values.iter().enumerate() {
            if let Some(v) = v {
                per[group_of[row] as usize].add(v);
            }
        }
        stats.push(per);
    }
    partial_batch(batch, spec, &first, rows, stats)
}

/// Merges partial batches into one partial row per group.
pub(crate) fn merge(partials: &[RecordBatch], spec: &GroupSpec) -> Result<RecordBatch> {
    let schema = match partials.first() {
        Some(p) => p.schema(),
        None => return Err(DataError::Invalid("nothing to merge".into())),
    };
    let all = concat_batches(&schema, partials)?;
    let (group_of, first) = group_rows(&all, &spec.keys)?;
    let groups = first.len();
    let part = |name: &str| -> Result<Float64Array> { f64_column(&all, name) };
    let mut rows = vec![0.0; groups];
    for (row, r) in part("__rows")?.values().iter().enumerate() {
        rows[group_of[row] as usize] += r;
    }
    let mut stats = Vec::new();
    for c in spec.value_columns() {
        let cols: Vec<Float64Array> = PARTS
            .iter()
            .map(|p| part(&format!("{c}.{p}")))
            .collect::<Result<_>>()?;
        let mut per = vec![Stats::EMPTY; groups];
        for row in 0..all.num_rows() {
            let s = Stats {
                n: cols[0].value(row),
                sum: cols[1].value(row),
                min: cols[2].value(row),
                max: cols[3].value(row),
                mean: cols[4].value(row),
                m2: cols[5].value(row),
            };
            per[group_of[row] as usize].merge(&s);
        }
        stats.push(per);
    }
    partial_batch(&all, spec, &first, rows, stats)
}

/// The final table of a merged partial: keys, then one column per aggregate, sorted by
/// the keys.
pub(crate) fn finish(merged: &RecordBatch, spec: &GroupSpec) -> Result<RecordBatch> {
    let get = |name: &str| f64_column(merged, name);
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    let schema = merged.schema();
    for k in &spec.keys {
        let c = merged
            .column_by_name(k)
            .ok_or_else(|| no_column(k, &schema))?;
        fields.push(Field::new(k, c.data_type().clone(), true));
        columns.push(c.clone());
    }
    for agg in &spec.aggs {
        let name = agg.name();
        match agg {
            Agg::Count => {
                let rows = get("__rows")?;
                fields.push(Field::new(name, DataType::UInt64, false));
                columns.push(Arc::new(
                    rows.values()
                        .iter()
                        .map(|&r| r as u64)
                        .collect::<UInt64Array>(),
                ));
            }
            Agg::Sum(c) | Agg::Mean(c) | Agg::Min(c) | Agg::Max(c) | Agg::Std(c) => {
                let n = get(&format!("{c}.n"))?;
                let v = |part: &str| get(&format!("{c}.{part}"));
                let out: Float64Array = match agg {
                    Agg::Sum(_) => v("sum")?.iter().collect(),
                    Agg::Mean(_) => zip_n(&n, &v("mean")?, |n, m| (n > 0.0).then_some(m)),
                    Agg::Min(_) => zip_n(&n, &v("min")?, |n, m| (n > 0.0).then_some(m)),
                    Agg::Max(_) => zip_n(&n, &v("max")?, |n, m| (n > 0.0).then_some(m)),
                    _ => zip_n(&n, &v("m2")?, |n, m2| {
                        (n > 1.0).then(|| (m2 / (n - 1.0)).sqrt())
                    }),
                };
                fields.push(Field::new(name, DataType::Float64, true));
                columns.push(Arc::new(out));
            }
        }
    }
    let table = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
    if spec.keys.is_empty() || table.num_rows() < 2 {
        return Ok(table);
    }
    let sort: Vec<SortColumn> = (0..spec.keys.len())
        .map(|i| SortColumn {
            values: table.column(i).clone(),
            options: None,
        })
        .collect();
    let order = lexsort_to_indices(&sort, None)?;
    let cols = table
        .columns()
        .iter()
        .map(|c| take(c, &order, None))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(table.schema(), cols)?)
}

fn zip_n(n: &Float64Array, v: &Float64Array, f: impl Fn(f64, f64) -> Option<f64>) -> Float64Array {
    n.values()
        .iter()
        .zip(v.values().iter())
        .map(|(&n, &v)| f(n, v))
        .collect()
}
