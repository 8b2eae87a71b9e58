//! prism-data: datasets of Arrow record batches on prism, in the manner of Ray Data.
//!
//! ```
//! use prism_data::{col, lit, read_csv};
//! # let dir = std::env::temp_dir().join(format!("prism-data-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! # let path = dir.join("t.csv");
//! # std::fs::write(&path, "id,x\n0,1.5\n1,-2.0\n2,0.5\n")?;
//! prism::init_with(prism::Config::default().num_cpus(2.0))?;
//! let positive = read_csv(&path)?.filter(col("x").gt(lit(0))).count()?;
//! assert_eq!(positive, 2);
//! prism::shutdown();
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Design
//!
//! - **Blocks are Arrow record batches** ([`Block`]), built on arrow-rs and its compute
//!   kernels. In one process a block lives in prism's object store behind an `Arc` and
//!   every reader shares its buffers; between processes it travels as Arrow IPC bytes
//!   and is decoded into buffers pointing into the bytes received.
//! - **A dataset is a lazy plan** ([`Dataset`]): a source cut into read units (CSV byte
//!   ranges cut at line ends, Parquet row groups, runs of `range` ids, or blocks already
//!   in the store) and stages of operators. Nothing runs until a sink asks.
//! - **Operators are fused**: one prism task per unit reads it, runs every operator of
//!   the stage on it and ends in the sink's step (keep the block, count it, sum a
//!   column, reduce it to per-group partial statistics, write it), so a count over a
//!   CSV moves counts, not rows, and a group-by moves groups. `limit`, an actor pool
//!   and an all-to-all step end a stage; between stages, blocks stay in the object
//!   store of the process that made them and the next stage's tasks take them from
//!   there.
//! - **All-to-all steps** (`repartition`, `random_shuffle`, `sort`, `map_groups`) are
//!   exchanges: the blocks of the stage before are kept in the store (spilled by it
//!   past its cap), one partition task per block cuts it into a piece per output block
//!   (seeded draws, sampled key ranges, key hashes), and one reduce task per output
//!   block gathers its pieces, reduces them and runs the next stage's operators.
//! - **Row functions** (`map`, `filter_rows`, `flat_map`) over serde types are
//!   registered like batch functions and run as batch functions through JSON: a
//!   convenience; expressions and batch functions are the fast path.
//! - **Streaming with backpressure**: tasks are submitted as the consumer pulls, at
//!   most a window in flight (two per CPU by default), narrowed to the blocks that fit
//!   the memory budget (half of the object store's cap unless set), counted in the
//!   bytes of the Arrow buffers the largest block held; results are taken in order, so
//!   a pipeline over any amount of data holds a bounded number of blocks.
//! - **Seen as it runs**: [`Dataset::stats`] reports every stage's blocks, rows, bytes,
//!   task and wall time and peak bytes in flight; a progress bar per stage shows on a
//!   terminal (indicatif), a line per finished stage otherwise (`PRISM_DATA_PROGRESS`
//!   = `bars`, `lines` or `off` to choose).
//! - **User functions are registered**, like prism's remote functions:
//!   [`register_batch_fn!`] next to a `fn(RecordBatch) -> Result<RecordBatch>` lets a
//!   task in any process of the cluster find it by name. Expressions ([`col`], [`lit`])
//!   are plain data and need no registration.
//! - **Errors are typed and name what failed** ([`DataError`]): the file, the column,
//!   the operator. A file is written under a temporary name and renamed when whole.
//!
//! The same plan runs on prism's embedded runtime and on a cluster: read tasks spread
//! over the nodes that see their files (each node is asked which files it sees when the
//! source is planned), and a file no node sees is an error before anything runs.

mod block;
mod dataset;
mod error;
mod exchange;
mod exec;
mod expr;
mod group;
mod ops;
mod place;
mod pool;
mod prune;
mod rows;
mod source;
mod split;
mod stats;
mod write;

pub use block::Block;
pub use dataset::{
    from_batches, from_rows, range, read_binary_files, read_csv, read_csv_with, read_json,
    read_parquet, read_parquet_columns, read_text, ActorPool, CsvOptions, Dataset, GroupBy,
    MapOptions,
};
pub use error::{DataError, Result};
pub use exchange::SortKey;
pub use exec::{read_block, transform_block, Done};
pub use expr::{col, lit, BinOp, CastTo, Expr, Literal};
pub use group::{Agg, GroupSpec};
pub use ops::{BatchFn, BatchFnEntry, FileFormat, Op, Output, Sink};
pub use pool::{
    make_mapper, BatchMapper, DynMapper, MapperActor, MapperActorHandle, MapperEntry, MapperName,
};
pub use source::{Unit, CSV_CHUNK_BYTES, READ_BATCH_ROWS};
pub use split::{DataShard, SplitCoordinator, SplitCoordinatorHandle};
pub use stats::{StageStats, Stats};

/// The arrow crate prism-data is built on, for the types of batch functions.
pub use arrow;

#[doc(hidden)]
pub mod __private {
    pub use crate::rows::{filter_rows, flat_map_rows, map_rows, RowFnEntry};
    pub use inventory;
}
