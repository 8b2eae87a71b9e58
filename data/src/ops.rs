//! Operators applied to each block, fused into the task that reads or receives it, and
//! the registry of user batch functions.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::error::{arrow_err, DataError, Result};
use crate::expr::{Expr, Literal};

/// A user function from one batch to another, as `map_batches` takes it.
pub type BatchFn = fn(RecordBatch) -> Result<RecordBatch>;

/// An entry of the batch-function registry. Made by
/// [`register_batch_fn!`](crate::register_batch_fn); not for direct use.
#[doc(hidden)]
pub struct BatchFnEntry {
    /// `module::function`.
    pub name: &'static str,
    /// The function.
    pub f: BatchFn,
}

inventory::collect!(BatchFnEntry);

/// Registers a batch function so that a task in any process can find it by name.
///
/// ```
/// use prism_data::arrow::array::RecordBatch;
/// fn identity(b: RecordBatch) -> prism_data::Result<RecordBatch> {
///     Ok(b)
/// }
/// prism_data::register_batch_fn!(identity);
/// ```
#[macro_export]
macro_rules! register_batch_fn {
    ($f:ident) => {
        $crate::__private::inventory::submit! {
            $crate::BatchFnEntry {
                name: concat!(module_path!(), "::", stringify!($f)),
                f: $f,
            }
        }
    };
}

/// The registered name of `f`.
pub(crate) fn name_of(f: BatchFn) -> Option<&'static str> {
    inventory::iter::<BatchFnEntry>
        .into_iter()
        .find(|e| e.f as usize == f as usize)
        .map(|e| e.name)
}

pub(crate) fn lookup(name: &str) -> Result<BatchFn> {
    inventory::iter::<BatchFnEntry>
        .into_iter()
        .find(|e| e.name == name)
        .map(|e| e.f)
        .ok_or_else(|| DataError::Unregistered(name.to_string()))
}

/// One operator on a block.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Op {
    /// A registered batch function, by name.
    MapBatches(String),
    /// A registered batch function called on slices of at most this many rows, the
    /// results put together.
    MapBatchesSized(String, usize),
    /// Keeps the rows where the predicate holds.
    Filter(Expr),
    /// Keeps these columns, in this order.
    Select(Vec<String>),
    /// Adds (or replaces) a column.
    WithColumn(String, Expr),
}

impl Op {
    /// The operator as `stats()` and errors name it.
    pub fn describe(&self) -> String {
        match self {
            Op::MapBatchesSized(name, rows) => {
                format!(
                    "map_batches({}, batch_size = {rows})",
                    name.rsplit("::").next().unwrap_or(name)
                )
            }
            Op::MapBatches(name) => {
                // Row functions are registered as `map:path`, `flat_map:path`, ...
                let (kind, path) = ["map", "filter_rows", "flat_map"]
                    .iter()
                    .find_map(|k| {
                        name.strip_prefix(k)
                            .and_then(|rest| rest.strip_prefix(':'))
                            .filter(|path| !path.starts_with(':'))
                            .map(|path| (*k, path))
                    })
                    .unwrap_or(("map_batches", name));
                format!("{kind}({})", path.rsplit("::").next().unwrap_or(path))
            }
            Op::Filter(e) => format!("filter({})", bare(e)),
            Op::Select(cols) => format!("select({})", cols.join(", ")),
            Op::WithColumn(name, e) => format!("with_column({name} = {})", bare(e)),
        }
    }

    /// An operator error of the unsized map as this operator's.
    fn rename(&self, e: DataError) -> DataError {
        match e {
            DataError::Operator { message, .. } => DataError::Operator {
                operator: self.describe(),
                message,
            },
            other => other,
        }
    }

    fn apply(&self, batch: RecordBatch) -> Result<RecordBatch> {
        match self {
            Op::MapBatches(name) => {
                let f = lookup(name)?;
                // A panic is the task's: prism reports it with the function's message.
                f(batch).map_err(|e| match e {
                    DataError::Operator { .. } => e,
                    other => DataError::Operator {
                        operator: self.describe(),
                        message: other.to_string(),
                    },
                })
            }
            Op::MapBatchesSized(name, rows) => {
                let rows = (*rows).max(1);
                let whole = Op::MapBatches(name.clone());
                if batch.num_rows() <= rows {
                    return whole.apply(batch).map_err(|e| self.rename(e));
                }
                let mut out = Vec::with_capacity(batch.num_rows().div_ceil(rows));
                for start in (0..batch.num_rows()).step_by(rows) {
                    let part = batch.slice(start, rows.min(batch.num_rows() - start));
                    out.push(whole.apply(part).map_err(|e| self.rename(e))?);
                }
                let schema = out[0].schema();
                arrow::compute::concat_batches(&schema, &out).map_err(arrow_err(self.describe()))
            }
            Op::Filter(e) => {
                let keep = e.evaluate_predicate(&batch)?;
                arrow::compute::filter_record_batch(&batch, &keep)
                    .map_err(arrow_err(self.describe()))
            }
            Op::Select(cols) => {
                let schema = batch.schema();
                let indices = cols
                    .iter()
                    .map(|c| {
                        schema
                            .index_of(c)
                            .map_err(|_| crate::error::no_column(c, &schema))
                    })
                    .collect::<Result<Vec<_>>>()?;
                batch.project(&indices).map_err(arrow_err(self.describe()))
            }
            Op::WithColumn(name, e) => {
                let values = e.evaluate(&batch)?;
                let schema = batch.schema();
                let mut fields: Vec<Arc<Field>> = schema.fields().iter().cloned().collect();
                let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
                let field = Arc::new(Field::new(name, values.data_type().clone(), true));
                match schema.index_of(name) {
                    Ok(i) => {
                        fields[i] = field;
                        columns[i] = values;
                    }
                    Err(_) => {
                        fields.push(field);
                        columns.push(values);
                    }
                }
                RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
                    .map_err(arrow_err(self.describe()))
            }
        }
    }
}

/// `e` without the parentheses around a whole binary expression.
fn bare(e: &Expr) -> String {
    let s = e.to_string();
    match e {
        Expr::Binary(..) => s[1..s.len() - 1].to_string(),
        _ => s,
    }
}

/// The columns a source must read for `ops` and `sink`, or `None` for all of them:
/// walked from the sink back, so that a count after a filter reads the filter's
/// columns only.
pub(crate) fn required_columns(ops: &[Op], sink: &Sink) -> Option<Vec<String>> {
    let mut needed: Option<Vec<String>> = match sink {
        Sink::Count => Some(Vec::new()),
        Sink::Sum(c) => Some(vec![c.clone()]),
        Sink::Aggregate(spec) => Some(spec.needed()),
        Sink::Collect | Sink::Store | Sink::Write { .. } => None,
    };
    let add = |needed: &mut Option<Vec<String>>, cols: Vec<String>| {
        if let Some(n) = needed {
            for c in cols {
                if !n.contains(&c) {
                    n.push(c);
                }
            }
        }
    };
    for op in ops.iter().rev() {
        match op {
            Op::MapBatches(_) | Op::MapBatchesSized(..) => needed = None,
            Op::Select(cols) => {
                if needed.is_none() {
                    needed = Some(cols.clone());
                }
            }
            Op::Filter(e) => add(&mut needed, e.columns()),
            Op::WithColumn(name, e) => {
                if let Some(n) = &mut needed {
                    n.retain(|c| c != name);
                }
                add(&mut needed, e.columns());
            }
        }
    }
    needed
}

/// Runs `ops` on `batch`, in order.
pub(crate) fn apply_all(ops: &[Op], mut batch: RecordBatch) -> Result<RecordBatch> {
    for op in ops {
        if is_nothing(&batch) {
            // A row function that made no rows made no schema either: nothing to do.
            break;
        }
        batch = op.apply(batch)?;
    }
    Ok(batch)
}

/// What a task does with its block once the operators ran.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Sink {
    /// Returns it.
    Collect,
    /// Puts it into the object store where the task ran, and returns the ref (the
    /// blocks between stages stay where they were computed).
    Store,
    /// Returns its row count only.
    Count,
    /// Returns the sum of one column only.
    Sum(String),
    /// Returns one row of partial statistics per group.
    Aggregate(crate::group::GroupSpec),
    /// Writes it as one file `{dir}/{prefix}-{index:06}.{ext}` (through a temporary
    /// name) and returns the path and rows.
    Write {
        /// The file format.
        format: FileFormat,
        /// The directory.
        dir: std::path::PathBuf,
        /// The run's file-name prefix.
        prefix: String,
        /// This block's index.
        index: usize,
    },
}

/// A format blocks are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileFormat {
    /// Apache Parquet.
    Parquet,
    /// CSV with a header line.
    Csv,
    /// Newline-delimited JSON, an object per row.
    Json,
}

impl FileFormat {
    /// The file extension.
    pub fn extension(self) -> &'static str {
        match self {
            FileFormat::Parquet => "parquet",
            FileFormat::Csv => "csv",
            FileFormat::Json => "json",
        }
    }
}

impl Sink {
    /// The sink of block `index`: a write names its file by the index.
    pub(crate) fn for_block(&self, index: usize) -> Sink {
        match self {
            Sink::Write {
                format,
                dir,
                prefix,
                ..
            } => Sink::Write {
                format: *format,
                dir: dir.clone(),
                prefix: prefix.clone(),
                index,
            },
            other => other.clone(),
        }
    }
}

/// What a task returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Output {
    /// The block.
    Block(crate::block::Block),
    /// A row count.
    Count(u64),
    /// A column's sum (`None` for an empty or all-null block).
    Sum(Option<Literal>),
    /// A file written, with its rows.
    Written(std::path::PathBuf, u64),
    /// A block kept in the object store.
    Stored {
        /// The block.
        block: prism::ObjectRef<crate::block::Block>,
        /// Its rows.
        rows: u64,
        /// Its schema.
        schema: SchemaRef,
        /// The bytes of its Arrow buffers.
        bytes: u64,
        /// What keeps it in the store (set where the output is taken).
        #[serde(skip)]
        keep: crate::exec::Keep,
    },
}

impl Output {
    /// The rows and the bytes of Arrow buffers it stands for (the rows counted, for a
    /// count; no bytes but a block's).
    pub(crate) fn size(&self) -> (u64, u64) {
        match self {
            Output::Block(b) => (b.num_rows() as u64, b.bytes() as u64),
            Output::Stored { rows, bytes, .. } => (*rows, *bytes),
            Output::Count(n) => (*n, 0),
            Output::Written(_, rows) => (*rows, 0),
            Output::Sum(_) => (0, 0),
        }
    }
}

/// Runs `ops` on each of `batches` (of `schema`) and ends in `sink`: counts and sums
/// are taken batch by batch; a kept or written block is the batches put together.
pub(crate) fn run_parts(
    ops: &[Op],
    sink: &Sink,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
) -> Result<Output> {
    match sink {
        Sink::Count => {
            let mut rows = 0;
            for b in batches {
                rows += apply_all(ops, b)?.num_rows() as u64;
            }
            Ok(Output::Count(rows))
        }
        Sink::Sum(column) => {
            let mut total = None;
            for b in batches {
                if let Output::Sum(Some(part)) = finish(sink, apply_all(ops, b)?)? {
                    total = Some(add_sums(column, total, part)?);
                }
            }
            Ok(Output::Sum(total))
        }
        Sink::Aggregate(spec) => {
            let partials = batches
                .into_iter()
                .map(|b| crate::group::partial(&apply_all(ops, b)?, spec))
                .collect::<Result<Vec<_>>>()?;
            match partials.len() {
                0 => finish(sink, apply_all(ops, RecordBatch::new_empty(schema))?),
                1 => Ok(Output::Block(crate::block::Block(
                    partials
                        .into_iter()
                        .next()
                        .unwrap_or_else(|| unreachable!()),
                ))),
                _ => Ok(Output::Block(crate::block::Block(crate::group::merge(
                    &partials, spec,
                )?))),
            }
        }
        Sink::Collect | Sink::Store | Sink::Write { .. } => {
            let mut out = batches
                .into_iter()
                .map(|b| apply_all(ops, b))
                .collect::<Result<Vec<_>>>()?;
            if out.len() > 1 {
                if out.iter().any(|b| b.num_rows() > 0) {
                    out.retain(|b| b.num_rows() > 0);
                } else {
                    out.truncate(1);
                }
            }
            let batch = match out.len() {
                // The output's schema is what the operators make of an empty input.
                0 => apply_all(ops, RecordBatch::new_empty(schema))?,
                1 => out.pop().unwrap_or_else(|| unreachable!()),
                _ => {
                    let schema = out[0].schema();
                    arrow::compute::concat_batches(&schema, &out)
                        .map_err(arrow_err("combining a unit's batches"))?
                }
            };
            finish(sink, batch)
        }
    }
}

/// A batch of no rows and no columns: what a row function makes of rows it drops.
pub(crate) fn is_nothing(batch: &RecordBatch) -> bool {
    batch.num_rows() == 0 && batch.num_columns() == 0
}

/// The sum of two partial sums of `column`.
pub(crate) fn add_sums(column: &str, total: Option<Literal>, part: Literal) -> Result<Literal> {
    Ok(match (total, part) {
        (None, p) => p,
        (Some(Literal::Int(a)), Literal::Int(b)) => {
            Literal::Int(a.checked_add(b).ok_or_else(|| {
                DataError::Invalid(format!("sum({column}) overflows a 64-bit integer"))
            })?)
        }
        (Some(Literal::Float(a)), Literal::Float(b)) => Literal::Float(a + b),
        (Some(a), b) => {
            return Err(DataError::Invalid(format!(
                "sum({column}): {a:?} and {b:?} differ in type"
            )))
        }
    })
}

pub(crate) fn finish(sink: &Sink, batch: RecordBatch) -> Result<Output> {
    if is_nothing(&batch) {
        match sink {
            Sink::Sum(_) => return Ok(Output::Sum(None)),
            Sink::Aggregate(_) => return Ok(Output::Block(crate::block::Block(batch))),
            _ => {}
        }
    }
    match sink {
        Sink::Collect => Ok(Output::Block(crate::block::Block(batch))),
        Sink::Store => Ok(Output::Stored {
            rows: batch.num_rows() as u64,
            bytes: batch.get_array_memory_size() as u64,
            keep: Default::default(),
            schema: batch.schema(),
            block: prism::put(crate::block::Block(batch)),
        }),
        Sink::Count => Ok(Output::Count(batch.num_rows() as u64)),
        Sink::Aggregate(spec) => Ok(Output::Block(crate::block::Block(crate::group::partial(
            &batch, spec,
        )?))),
        Sink::Sum(column) => {
            let a = batch
                .column_by_name(column)
                .ok_or_else(|| crate::error::no_column(column, &batch.schema()))?;
            Ok(Output::Sum(sum_of(column, a)?))
        }
        Sink::Write {
            format,
            dir,
            prefix,
            index,
        } => {
            let path = dir.join(format!("{prefix}-{index:06}.{}", format.extension()));
            crate::write::file(*format, &path, &batch)?;
            Ok(Output::Written(path, batch.num_rows() as u64))
        }
    }
}

fn sum_of(column: &str, a: &ArrayRef) -> Result<Option<Literal>> {
    let ctx = || arrow_err(format!("sum({column})"));
    let dt = a.data_type();
    if dt.is_floating() {
        let f = arrow::compute::cast(a, &DataType::Float64).map_err(ctx())?;
        let f = f
            .as_any()
            .downcast_ref::<Float64Array>()
            .ok_or_else(|| DataError::Invalid("cast".into()))?;
        Ok(arrow::compute::sum(f).map(Literal::Float))
    } else if dt.is_integer() {
        let i = arrow::compute::cast(a, &DataType::Int64).map_err(ctx())?;
        let i = i
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| DataError::Invalid("cast".into()))?;
        Ok(arrow::compute::sum_checked(i)
            .map_err(ctx())?
            .map(Literal::Int))
    } else {
        Err(DataError::Invalid(format!(
            "sum({column}): a {dt} column has no sum"
        )))
    }
}
