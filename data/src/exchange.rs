//! All-to-all operators: `repartition`, `random_shuffle`, `sort` and `map_groups`.
//!
//! Each is an exchange between two stages. The stage before it runs to the end, its
//! blocks kept in the object store where they were computed (spilled to disk by the
//! store only past its cap). Then:
//!
//! - `repartition(n)` cuts the blocks into `n` runs of (nearly) equal rows: no task
//!   moves data until a reducer reads its slices.
//! - `random_shuffle`, `sort` and `map_groups` run one partition task per block, which
//!   cuts it into one piece per output block (by a seeded random draw, by sampled key
//!   ranges, by a hash of the keys) and puts each piece into the store; one reduce task
//!   per output block then gathers its pieces and permutes, sorts, or calls the group
//!   function on each group.
//!
//! Reduce tasks are the next stage's read units: they are streamed with its window and
//! memory budget, and the next stage's operators run in the same task. The driver holds
//! one ref per partition task, never one per piece (Ray's shuffle keeps blocks × outputs
//! refs on the driver): each reduce task reads the partition results, lists of refs,
//! and pulls only its own piece of each, from where it was made.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use arrow::compute::{
    concat_batches, lexsort_to_indices, take_record_batch, SortColumn, SortOptions,
};
use arrow::datatypes::{Schema, SchemaRef};
use arrow::row::{RowConverter, Rows, SortField};
use prism::ObjectRef;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::block::Block;
use crate::error::{arrow_err, no_column, DataError, Result};
use crate::exec::Stored;
use crate::ops::{lookup, run_parts, Op, Output, Sink};

/// One key of a sort: a column and its direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SortKey {
    /// The column.
    pub column: String,
    /// Largest first.
    pub descending: bool,
}

impl SortKey {
    /// `column`, smallest first.
    pub fn asc(column: &str) -> SortKey {
        SortKey {
            column: column.to_string(),
            descending: false,
        }
    }

    /// `column`, largest first.
    pub fn desc(column: &str) -> SortKey {
        SortKey {
            column: column.to_string(),
            descending: true,
        }
    }

    fn options(&self) -> SortOptions {
        SortOptions {
            descending: self.descending,
            // Nulls sort as the smallest values, in either direction.
            nulls_first: !self.descending,
        }
    }
}

impl From<&str> for SortKey {
    fn from(column: &str) -> SortKey {
        SortKey::asc(column)
    }
}

/// An all-to-all step before a stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Exchange {
    /// `n` blocks of (nearly) equal rows, in order.
    Repartition(usize),
    /// The rows in a random order drawn from `seed`, in as many blocks as before.
    Shuffle { seed: u64 },
    /// The rows ordered by `keys`, in as many blocks as before.
    Sort { keys: Vec<SortKey> },
    /// The groups of `keys`, each given to the registered batch function `f`.
    Groups { keys: Vec<String>, f: String },
}

impl Exchange {
    /// The step as `stats()` and errors name it.
    pub(crate) fn describe(&self) -> String {
        match self {
            Exchange::Repartition(n) => format!("repartition({n})"),
            Exchange::Shuffle { seed } => format!("random_shuffle(seed = {seed})"),
            Exchange::Sort { keys } => {
                let keys: Vec<String> = keys
                    .iter()
                    .map(|k| {
                        if k.descending {
                            format!("{} desc", k.column)
                        } else {
                            k.column.clone()
                        }
                    })
                    .collect();
                format!("sort({})", keys.join(", "))
            }
            Exchange::Groups { keys, f } => format!(
                "map_groups({}; {})",
                keys.join(", "),
                f.rsplit("::").next().unwrap_or(f)
            ),
        }
    }
}

/// A run of rows of a block in the store.
#[derive(Clone, Serialize, Deserialize)]
pub struct Piece {
    block: ObjectRef<Block>,
    offset: usize,
    /// Rows, or all of the block's from `offset` on.
    len: Option<usize>,
}

/// The result of a partition task: one piece per output block, each put into the store
/// where the task ran.
type Partitioned = ObjectRef<Result<Vec<ObjectRef<Block>>>>;

/// What a reduce task does with its gathered rows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Reducer {
    /// Nothing: the rows in order.
    Concat,
    /// A random permutation drawn from the seed.
    Permute(u64),
    /// Sorted by the keys.
    Sort(Vec<SortKey>),
    /// Sorted by the keys, and the registered function called on each group.
    Groups {
        /// The group keys.
        keys: Vec<String>,
        /// The function's registered name.
        f: String,
    },
}

/// How a partition task assigns each row to an output block.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Partitioner {
    /// At random, from the seed and the block's index.
    Random {
        /// The shuffle's seed.
        seed: u64,
        /// Output blocks.
        n: usize,
    },
    /// By the range of the sort keys between sampled bounds (in Arrow's row format).
    Range {
        /// The sort keys.
        keys: Vec<SortKey>,
        /// `n - 1` increasing bounds; a row equal to a bound goes after it.
        bounds: Vec<Vec<u8>>,
    },
    /// By a hash of the key columns.
    Hash {
        /// The keys.
        keys: Vec<String>,
        /// Output blocks.
        n: usize,
    },
}

/// The inputs of a reduce task: its pieces, what to do with them, and the schema of the
/// rows (for an output with no pieces).
#[derive(Clone, Serialize, Deserialize)]
pub struct ReduceUnit {
    /// Runs of stored blocks (a repartition's).
    pieces: Vec<Piece>,
    /// The results of the partition tasks, of which this unit takes piece `part` each.
    parts: Vec<Partitioned>,
    part: usize,
    reducer: Reducer,
    schema: Schema,
    /// What keeps the pieces in the store until the task has read them.
    #[serde(skip)]
    pub(crate) keep: crate::exec::Keep,
}

/// The key columns of `batch`, with their sort options.
fn key_rows(batch: &RecordBatch, keys: &[SortKey]) -> Result<Rows> {
    let schema = batch.schema();
    let mut fields = Vec::with_capacity(keys.len());
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(keys.len());
    for k in keys {
        let c = batch
            .column_by_name(&k.column)
            .ok_or_else(|| no_column(&k.column, &schema))?;
        fields.push(SortField::new_with_options(
            c.data_type().clone(),
            k.options(),
        ));
        cols.push(c.clone());
    }
    let converter = RowConverter::new(fields).map_err(arrow_err("sort keys"))?;
    converter
        .convert_columns(&cols)
        .map_err(arrow_err("sort keys"))
}

fn ascending(keys: &[String]) -> Vec<SortKey> {
    keys.iter().map(|k| SortKey::asc(k)).collect()
}

/// Up to `k` evenly spaced rows of the block's sort keys, in Arrow's row format. A task.
#[prism::remote]
pub fn sample_block(block: &Block, keys: Vec<SortKey>, k: usize) -> Result<Vec<Vec<u8>>> {
    let rows = block.num_rows();
    if rows == 0 {
        return Ok(Vec::new());
    }
    let encoded = key_rows(&block.0, &keys)?;
    let k = k.clamp(1, rows);
    Ok((0..k)
        .map(|i| encoded.row(i * rows / k).as_ref().to_vec())
        .collect())
}

/// Cuts the block into one piece per output block and puts each into the store. A task.
#[prism::remote]
pub fn partition_block(
    block: &Block,
    partitioner: Partitioner,
    index: usize,
) -> Result<Vec<ObjectRef<Block>>> {
    let batch = &block.0;
    let rows = batch.num_rows();
    let (n, target): (usize, Vec<u32>) = match &partitioner {
        Partitioner::Random { seed, n } => {
            let mut rng = rand::rngs::SmallRng::seed_from_u64(mix(*seed, index as u64));
            let n32 = (*n).max(1) as u32;
            (*n, (0..rows).map(|_| rng.gen_range(0..n32)).collect())
        }
        Partitioner::Range { keys, bounds } => {
            let encoded = key_rows(batch, keys)?;
            let target = (0..rows)
                .map(|r| {
                    let row = encoded.row(r);
                    bounds.partition_point(|b| b.as_slice() <= row.as_ref()) as u32
                })
                .collect();
            (bounds.len() + 1, target)
        }
        Partitioner::Hash { keys, n } => {
            use std::hash::{Hash, Hasher};
            let encoded = key_rows(batch, &ascending(keys))?;
            let target = (0..rows)
                .map(|r| {
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    encoded.row(r).as_ref().hash(&mut h);
                    (h.finish() % (*n).max(1) as u64) as u32
                })
                .collect();
            (*n, target)
        }
    };
    let mut indices: Vec<Vec<u32>> = vec![Vec::new(); n];
    for (row, t) in target.into_iter().enumerate() {
        indices[t as usize].push(row as u32);
    }
    indices
        .into_iter()
        .map(|ix| {
            let piece = take_record_batch(batch, &UInt32Array::from(ix))
                .map_err(arrow_err("partitioning a block"))?;
            Ok(prism::put(Block(piece)))
        })
        .collect()
}

/// Gathers a reduce unit's pieces, reduces them, runs `ops` and ends in `sink`. A task.
#[prism::remote]
pub fn reduce_block(unit: ReduceUnit, ops: &[Op], sink: Sink) -> Result<crate::exec::Done> {
    crate::exec::timed(|| reduce_unit(unit, ops, &sink))
}

fn reduce_unit(unit: ReduceUnit, ops: &[Op], sink: &Sink) -> Result<Output> {
    let schema: SchemaRef = Arc::new(unit.schema);
    let mut pieces = unit.pieces;
    // A partition result is read here (a list of refs), then only this unit's piece.
    for r in &unit.parts {
        let all = prism::get_arc(r)?;
        let all = all.as_ref().as_ref().map_err(|e| e.clone())?;
        let block = all.get(unit.part).ok_or_else(|| {
            DataError::Invalid(format!(
                "a partition task made {} pieces, not more than {}",
                all.len(),
                unit.part
            ))
        })?;
        pieces.push(Piece {
            block: block.clone(),
            offset: 0,
            len: None,
        });
    }
    let mut parts = Vec::with_capacity(pieces.len());
    for p in &pieces {
        let block = prism::get_arc(&p.block)?;
        let b = &block.0;
        let len = p.len.unwrap_or(b.num_rows() - p.offset.min(b.num_rows()));
        if len > 0 {
            parts.push(b.slice(p.offset, len));
        }
    }
    let batch = match parts.len() {
        0 => RecordBatch::new_empty(schema.clone()),
        1 => parts.remove(0),
        _ => concat_batches(&parts[0].schema(), &parts).map_err(arrow_err("gathering pieces"))?,
    };
    let out = reduce(batch, &unit.reducer)?;
    run_parts(ops, sink, out.schema(), vec![out])
}

fn reduce(batch: RecordBatch, reducer: &Reducer) -> Result<RecordBatch> {
    match reducer {
        Reducer::Concat => Ok(batch),
        Reducer::Permute(seed) => {
            let mut order: Vec<u32> = (0..batch.num_rows() as u32).collect();
            let mut rng = rand::rngs::SmallRng::seed_from_u64(*seed);
            // Fisher-Yates.
            for i in (1..order.len()).rev() {
                order.swap(i, rng.gen_range(0..=i));
            }
            take_record_batch(&batch, &UInt32Array::from(order))
                .map_err(arrow_err("random_shuffle"))
        }
        Reducer::Sort(keys) => sort_batch(&batch, keys),
        Reducer::Groups { keys, f } => {
            let sorted = sort_batch(&batch, &ascending(keys))?;
            let rows = sorted.num_rows();
            if rows == 0 {
                return Ok(sorted);
            }
            let encoded = key_rows(&sorted, &ascending(keys))?;
            let func = lookup(f)?;
            let name = format!("map_groups({})", f.rsplit("::").next().unwrap_or(f));
            let mut outputs = Vec::new();
            let mut start = 0;
            for r in 1..=rows {
                if r == rows || encoded.row(r) != encoded.row(start) {
                    let group = sorted.slice(start, r - start);
                    let out = func(group).map_err(|e| match e {
                        DataError::Operator { .. } => e,
                        other => DataError::Operator {
                            operator: name.clone(),
                            message: other.to_string(),
                        },
                    })?;
                    outputs.push(out);
                    start = r;
                }
            }
            let schema = outputs[0].schema();
            if let Some(o) = outputs
                .iter()
                .find(|o| o.schema().fields() != schema.fields())
            {
                return Err(DataError::Operator {
                    operator: name,
                    message: format!(
                        "groups came back with different schemas: {} and {}",
                        crate::source::describe(&schema),
                        crate::source::describe(&o.schema())
                    ),
                });
            }
            concat_batches(&schema, &outputs).map_err(arrow_err(name))
        }
    }
}

/// `batch` ordered by `keys`.
pub(crate) fn sort_batch(batch: &RecordBatch, keys: &[SortKey]) -> Result<RecordBatch> {
    let schema = batch.schema();
    let columns = keys
        .iter()
        .map(|k| {
            Ok(SortColumn {
                values: batch
                    .column_by_name(&k.column)
                    .ok_or_else(|| no_column(&k.column, &schema))?
                    .clone(),
                options: Some(k.options()),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let order = lexsort_to_indices(&columns, None).map_err(arrow_err("sort"))?;
    take_record_batch(batch, &order).map_err(arrow_err("sort"))
}

/// A seed for block `index` of a shuffle seeded `seed` (splitmix64's finaliser).
fn mix(seed: u64, index: u64) -> u64 {
    let mut z = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Runs the exchange on the stored blocks of the stage before: the reduce units of the
/// stage after, one per output block.
pub(crate) fn plan(exchange: &Exchange, stored: Vec<Stored>) -> Result<Vec<ReduceUnit>> {
    let schema = stored
        .first()
        .map_or_else(|| Arc::new(Schema::empty()), |s| s.schema.clone());
    let unit = |pieces, reducer, keep| ReduceUnit {
        pieces,
        parts: Vec::new(),
        part: 0,
        reducer,
        schema: schema.as_ref().clone(),
        keep,
    };
    // One reduce unit per output block `i`, taking piece `i` of every partition result.
    let gather = |parts: &Vec<Partitioned>, n: usize, reducer: &dyn Fn(usize) -> Reducer| {
        let keep = crate::exec::Keep::new(parts.clone());
        (0..n)
            .map(|i| ReduceUnit {
                pieces: Vec::new(),
                parts: parts.clone(),
                part: i,
                reducer: reducer(i),
                schema: schema.as_ref().clone(),
                keep: keep.clone(),
            })
            .collect::<Vec<_>>()
    };
    let blocks = stored.len().max(1);
    match exchange {
        Exchange::Repartition(n) => {
            let n = (*n).max(1);
            let total: usize = stored.iter().map(|s| s.rows).sum();
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                let (from, to) = (i * total / n, (i + 1) * total / n);
                let mut pieces = Vec::new();
                let mut keep = Vec::new();
                let mut at = 0;
                for s in &stored {
                    let (start, end) = (at, at + s.rows);
                    at = end;
                    let (lo, hi) = (from.max(start), to.min(end));
                    if lo < hi {
                        pieces.push(Piece {
                            block: s.block.clone(),
                            offset: lo - start,
                            len: Some(hi - lo),
                        });
                        keep.push(s.keep.clone());
                    }
                }
                out.push(unit(pieces, Reducer::Concat, crate::exec::Keep::new(keep)));
            }
            Ok(out)
        }
        Exchange::Shuffle { seed } => {
            let parts = partition_all(
                &stored,
                Partitioner::Random {
                    seed: *seed,
                    n: blocks,
                },
            )?;
            Ok(gather(&parts, blocks, &|i| {
                Reducer::Permute(mix(!*seed, i as u64))
            }))
        }
        Exchange::Sort { keys } => {
            // 20 samples per block, as many blocks as outputs: bounds within a few per
            // cent of the true quantiles.
            let samples: Vec<ObjectRef<Result<Vec<Vec<u8>>>>> = stored
                .iter()
                .map(|s| sample_block::remote(&s.block, keys.clone(), 20))
                .collect();
            let mut all = Vec::new();
            for s in prism::get_all(&samples)? {
                all.extend(s?);
            }
            all.sort_unstable();
            let bounds: Vec<Vec<u8>> = (1..blocks)
                .filter_map(|i| all.get(i * all.len() / blocks).cloned())
                .collect();
            let n = bounds.len() + 1;
            let parts = partition_all(
                &stored,
                Partitioner::Range {
                    keys: keys.clone(),
                    bounds,
                },
            )?;
            Ok(gather(&parts, n, &|_| Reducer::Sort(keys.clone())))
        }
        Exchange::Groups { keys, f } => {
            let parts = partition_all(
                &stored,
                Partitioner::Hash {
                    keys: keys.clone(),
                    n: blocks,
                },
            )?;
            Ok(gather(&parts, blocks, &|_| Reducer::Groups {
                keys: keys.clone(),
                f: f.clone(),
            }))
        }
    }
}

/// Runs a partition task on every stored block and waits for them all (without
/// reading their results here: each reduce task reads them, then only its pieces, so
/// this process holds one ref per block, not one per piece).
fn partition_all(stored: &[Stored], partitioner: Partitioner) -> Result<Vec<Partitioned>> {
    let tasks: Vec<Partitioned> = stored
        .iter()
        .enumerate()
        .map(|(i, s)| partition_block::remote(&s.block, partitioner.clone(), i))
        .collect();
    // A ref travels with where its object is kept once it is final: wait for that.
    let (_, pending) = prism::wait(&tasks, tasks.len(), Some(PARTITION_TIMEOUT))?;
    if !pending.is_empty() {
        return Err(DataError::Runtime(format!(
            "{} of {} partition tasks not done after {PARTITION_TIMEOUT:?}",
            pending.len(),
            tasks.len()
        )));
    }
    Ok(tasks)
}

/// How long the partition tasks of an exchange may take in all.
const PARTITION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);
