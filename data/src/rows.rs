//! Row functions: `map`, `filter_rows` and `flat_map` over serde types.
//!
//! A row function is registered like a batch function
//! ([`register_row_map!`](crate::register_row_map) and its siblings), which wraps it in
//! a batch function: the block's rows are read into the input type, the function called
//! on each, and the results made into a block again, through JSON (Arrow's JSON writer
//! and decoder). Row functions are for convenience; batch functions and expressions are
//! the fast path.

use std::sync::Arc;

use arrow::array::{BooleanArray, RecordBatch};
use arrow::datatypes::{Schema, SchemaRef};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{DataError, Result};
use crate::ops::BatchFn;

/// An entry of the row-function registry. Made by the `register_row_*` macros; not for
/// direct use.
#[doc(hidden)]
pub struct RowFnEntry {
    /// The address of the user's function, to find the entry from it.
    pub addr: fn() -> usize,
    /// The batch function wrapping it (registered as a batch function too).
    pub batch: BatchFn,
}

inventory::collect!(RowFnEntry);

/// The batch function wrapping the row function at `addr`.
pub(crate) fn wrapper_of(addr: usize) -> Option<BatchFn> {
    inventory::iter::<RowFnEntry>
        .into_iter()
        .find(|e| (e.addr)() == addr)
        .map(|e| e.batch)
}

/// Registers a row function as a batch function named `{kind}:{path}`, and under its
/// address. The body of the `register_row_*` macros; not for direct use.
#[doc(hidden)]
#[macro_export]
macro_rules! __register_row_fn {
    ($kind:literal, $f:ident, $fty:ty, $body:ident, [$($t:ty),+]) => {
        const _: () = {
            fn __prism_row_fn(
                b: $crate::arrow::array::RecordBatch,
            ) -> $crate::Result<$crate::arrow::array::RecordBatch> {
                $crate::__private::$body::<$($t),+>(&b, $f)
            }
            $crate::__private::inventory::submit! {
                $crate::BatchFnEntry {
                    name: concat!($kind, ":", module_path!(), "::", stringify!($f)),
                    f: __prism_row_fn,
                }
            }
            $crate::__private::inventory::submit! {
                $crate::__private::RowFnEntry {
                    addr: || ($f as $fty) as usize,
                    batch: __prism_row_fn,
                }
            }
        };
    };
}

/// Registers `fn(In) -> Out` for [`Dataset::map`](crate::Dataset::map).
///
/// ```
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct In { id: i64 }
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Out { id: i64, square: i64 }
/// fn square(r: In) -> Out {
///     Out { id: r.id, square: r.id * r.id }
/// }
/// prism_data::register_row_map!(square: In => Out);
/// ```
#[macro_export]
macro_rules! register_row_map {
    ($f:ident : $in:ty => $out:ty) => {
        $crate::__register_row_fn!("map", $f, fn($in) -> $out, map_rows, [$in, $out]);
    };
}

/// Registers `fn(&In) -> bool` for [`Dataset::filter_rows`](crate::Dataset::filter_rows).
///
/// ```
/// #[derive(serde::Deserialize)]
/// struct Row { id: i64 }
/// fn even(r: &Row) -> bool {
///     r.id % 2 == 0
/// }
/// prism_data::register_row_filter!(even: Row);
/// ```
#[macro_export]
macro_rules! register_row_filter {
    ($f:ident : $in:ty) => {
        $crate::__register_row_fn!("filter_rows", $f, fn(&$in) -> bool, filter_rows, [$in]);
    };
}

/// Registers `fn(In) -> Vec<Out>` for [`Dataset::flat_map`](crate::Dataset::flat_map).
///
/// ```
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Line { text: String }
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Word { word: String }
/// fn words(l: Line) -> Vec<Word> {
///     l.text.split_whitespace().map(|w| Word { word: w.to_string() }).collect()
/// }
/// prism_data::register_row_flat_map!(words: Line => Word);
/// ```
#[macro_export]
macro_rules! register_row_flat_map {
    ($f:ident : $in:ty => $out:ty) => {
        $crate::__register_row_fn!(
            "flat_map",
            $f,
            fn($in) -> Vec<$out>,
            flat_map_rows,
            [$in, $out]
        );
    };
}

/// The rows of `batch` as `T`s, through JSON lines.
pub(crate) fn rows_of<T: DeserializeOwned>(batch: &RecordBatch) -> Result<Vec<Result<T>>> {
    let mut w = arrow::json::LineDelimitedWriter::new(Vec::new());
    w.write(batch)?;
    w.finish()?;
    let bytes = w.into_inner();
    Ok(bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_slice(l).map_err(|e| {
                DataError::Invalid(format!(
                    "a row does not read as {}: {e}",
                    std::any::type_name::<T>()
                ))
            })
        })
        .collect())
}

/// The rows of `batch` as `T`s, failing on the first that does not read.
fn all_rows<T: DeserializeOwned>(batch: &RecordBatch) -> Result<Vec<T>> {
    rows_of(batch)?.into_iter().collect()
}

/// A batch of `rows`, its schema inferred from the first 1,000 (an empty batch of no
/// columns for no rows).
pub(crate) fn batch_of<T: Serialize>(rows: &[T]) -> Result<RecordBatch> {
    if rows.is_empty() {
        return Ok(RecordBatch::new_empty(Arc::new(Schema::empty())));
    }
    decode(rows, &infer(rows)?)
}

/// The schema of `rows`, inferred from the first 1,000.
pub(crate) fn infer<T: Serialize>(rows: &[T]) -> Result<SchemaRef> {
    let sample = rows
        .iter()
        .take(1000)
        .map(|r| {
            serde_json::to_value(r)
                .map_err(|e| DataError::Invalid(format!("a row does not serialize: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(
        arrow::json::reader::infer_json_schema_from_iterator(sample.iter().map(Ok))
            .map_err(|e| DataError::Invalid(format!("no schema for these rows: {e}")))?,
    ))
}

/// A batch of `rows` of `schema`.
pub(crate) fn decode<T: Serialize>(rows: &[T], schema: &SchemaRef) -> Result<RecordBatch> {
    let mut decoder = arrow::json::ReaderBuilder::new(schema.clone())
        .with_batch_size(rows.len().max(1))
        .build_decoder()?;
    decoder.serialize(rows).map_err(|e| {
        DataError::Invalid(format!(
            "rows do not fit the schema {}: {e}",
            crate::source::describe(schema)
        ))
    })?;
    Ok(decoder
        .flush()?
        .unwrap_or_else(|| RecordBatch::new_empty(schema.clone())))
}

/// `f` on every row of `batch`. The body of a registered row map.
#[doc(hidden)]
pub fn map_rows<T: DeserializeOwned, U: Serialize>(
    batch: &RecordBatch,
    f: fn(T) -> U,
) -> Result<RecordBatch> {
    let out: Vec<U> = all_rows::<T>(batch)?.into_iter().map(f).collect();
    batch_of(&out)
}

/// The rows of `batch` for which `f` holds (the batch's columns, filtered). The body of
/// a registered row filter.
#[doc(hidden)]
pub fn filter_rows<T: DeserializeOwned>(
    batch: &RecordBatch,
    f: fn(&T) -> bool,
) -> Result<RecordBatch> {
    let keep: BooleanArray = all_rows::<T>(batch)?.iter().map(|r| Some(f(r))).collect();
    Ok(arrow::compute::filter_record_batch(batch, &keep)?)
}

/// The rows `f` makes of every row of `batch`, in order. The body of a registered row
/// flat map.
#[doc(hidden)]
pub fn flat_map_rows<T: DeserializeOwned, U: Serialize>(
    batch: &RecordBatch,
    f: fn(T) -> Vec<U>,
) -> Result<RecordBatch> {
    let out: Vec<U> = all_rows::<T>(batch)?.into_iter().flat_map(f).collect();
    batch_of(&out)
}
