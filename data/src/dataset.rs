//! [`Dataset`]: a lazy plan over blocks, run by the streaming executor when a sink asks
//! for its rows.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use crate::block::Block;
use crate::error::{DataError, Result};
use crate::exchange::{Exchange, SortKey};
use crate::exec::{
    blocks, default_window, put_all, stored, Input, Limited, StreamSpec, TaskStream,
};
use crate::expr::{Expr, Literal};
use crate::group::{Agg, GroupSpec};
use crate::ops::{add_sums, finish, name_of, BatchFn, FileFormat, Op, Output, Sink};
use crate::pool::{BatchMapper, MapperName};
use crate::source::{csv_units, json_units, parquet_units, range_units, Unit, CSV_CHUNK_BYTES};

/// Operators run in one pass, and the row limit that ends it.
#[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
struct Stage {
    /// An all-to-all step over every block of the stage before, first.
    exchange: Option<Exchange>,
    ops: Vec<Op>,
    limit: Option<u64>,
    /// Run in a pool of actors, the mapper first.
    pool: Option<crate::pool::PoolSpec>,
    /// The CPUs and GPUs each of the stage's tasks holds (default: one CPU).
    resources: Option<(f64, f64)>,
}

/// A dataset: a source and the transforms to run on its blocks, evaluated lazily.
///
/// Transforms return a new `Dataset` and run nothing; a sink (`count`, `sum`,
/// `collect`, `iter_batches`, `write_parquet`, ...) runs the plan, every block's
/// operators fused into one prism task, at most a window of tasks in flight.
///
/// ```
/// use prism_data::{col, lit, range};
/// prism::init_with(prism::Config::default().num_cpus(2.0))?;
/// let ds = range(1_000).filter(col("id").gt_eq(lit(500)));
/// assert_eq!(ds.count()?, 500);
/// assert_eq!(ds.sum("id")?, Some(prism_data::Literal::Int((500..1000).sum())));
/// prism::shutdown();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// A `Dataset` is plain data (its source's units or block refs and its operators), so it
/// can be passed to a task or an actor and run there.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct Dataset {
    inputs: Arc<Vec<Input>>,
    /// Datasets whose blocks follow `inputs` (a union), each run by its own plan.
    unions: Vec<Dataset>,
    schema: Option<SchemaRef>,
    stages: Vec<Stage>,
    /// A transform that could not be planned (reported by the sink).
    error: Option<DataError>,
    window: Option<usize>,
    budget: Option<u64>,
    /// The statistics of the last run, shared by this dataset's clones.
    #[serde(skip)]
    last_stats: Arc<std::sync::Mutex<crate::stats::Stats>>,
}

/// The integers `0..n` as an `Int64` column `id`, in blocks of about a million rows.
pub fn range(n: u64) -> Dataset {
    Dataset::of(
        range_units(n)
            .into_iter()
            .map(|u| Input::Unit(u, None))
            .collect(),
        None,
    )
}

/// A dataset reading `units`, each read task placed where its files are (see
/// `place`).
fn from_units(units: Vec<Unit>, schema: SchemaRef) -> Result<Dataset> {
    let nodes = crate::place::place(&units)?;
    Ok(Dataset::of(
        units
            .into_iter()
            .zip(nodes)
            .map(|(u, n)| Input::Unit(u, n))
            .collect(),
        Some(schema),
    ))
}

/// A dataset of these batches, put into the object store (all with one schema).
pub fn from_batches(batches: Vec<RecordBatch>) -> Result<Dataset> {
    let schema = batches.first().map(|b| b.schema());
    if let Some(s) = &schema {
        if let Some(b) = batches.iter().find(|b| b.schema().fields() != s.fields()) {
            return Err(DataError::SchemaMismatch {
                path: "a batch".into(),
                found: crate::source::describe(&b.schema()),
                first: "the first batch".into(),
                expected: crate::source::describe(s),
            });
        }
    }
    let inputs = batches
        .into_iter()
        .map(|b| Input::Block(prism::put(Block(b)), Default::default()))
        .collect();
    Ok(Dataset::of(inputs, schema))
}

/// The size of the actor pool of [`Dataset::map_batches_with`].
#[derive(Debug, Clone, Copy)]
pub struct ActorPool {
    /// Actors started at once (at least 1).
    pub min: usize,
    /// Actors at most.
    pub max: usize,
    /// CPUs each actor holds.
    pub cpus: f64,
}

impl ActorPool {
    /// From `min` to `max` actors of one CPU each.
    pub fn new(min: usize, max: usize) -> ActorPool {
        ActorPool {
            min,
            max,
            cpus: 1.0,
        }
    }

    /// Each actor holds `cpus` CPUs.
    pub fn cpus(mut self, cpus: f64) -> ActorPool {
        self.cpus = cpus;
        self
    }
}

/// Options of [`Dataset::map_batches_with_options`], as Ray's `map_batches(fn,
/// batch_size=..., num_cpus=..., num_gpus=...)`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MapOptions {
    /// Rows per call of the function (default: a whole block per call).
    pub batch_size: Option<usize>,
    /// CPUs each task holds (default 1).
    pub num_cpus: f64,
    /// GPUs each task holds (default 0).
    pub num_gpus: f64,
}

impl Default for MapOptions {
    fn default() -> Self {
        MapOptions {
            batch_size: None,
            num_cpus: 1.0,
            num_gpus: 0.0,
        }
    }
}

impl MapOptions {
    /// Calls of at most `rows` rows.
    pub fn batch_size(mut self, rows: usize) -> MapOptions {
        self.batch_size = Some(rows);
        self
    }

    /// `cpus` CPUs per task.
    pub fn num_cpus(mut self, cpus: f64) -> MapOptions {
        self.num_cpus = cpus;
        self
    }

    /// `gpus` GPUs per task (accounted by the scheduler).
    pub fn num_gpus(mut self, gpus: f64) -> MapOptions {
        self.num_gpus = gpus;
        self
    }
}

/// Options of [`read_csv_with`].
#[derive(Debug, Clone)]
pub struct CsvOptions {
    /// Bytes of the file per read task (default 16 MiB). Ranges are cut at line ends,
    /// so a quoted value must not hold a line break.
    pub chunk_bytes: u64,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            chunk_bytes: CSV_CHUNK_BYTES,
        }
    }
}

/// The CSV files at `path` (a file, a directory of `.csv` files, or a `*` pattern),
/// with a header line; column types inferred from the first 1,000 rows.
pub fn read_csv(path: impl AsRef<Path>) -> Result<Dataset> {
    read_csv_with(path, CsvOptions::default())
}

/// [`read_csv`] with options.
pub fn read_csv_with(path: impl AsRef<Path>, options: CsvOptions) -> Result<Dataset> {
    let (schema, units) = csv_units(path.as_ref(), options.chunk_bytes)?;
    from_units(units, schema)
}

/// The newline-delimited JSON files at `path` (a file, a directory of `.json` files, or
/// a `*` pattern), an object per line; field types inferred from the first 1,000 lines
/// of each file. Read in ranges of 16 MiB cut at line ends.
pub fn read_json(path: impl AsRef<Path>) -> Result<Dataset> {
    let (schema, units) = json_units(path.as_ref(), CSV_CHUNK_BYTES)?;
    from_units(units, schema)
}

/// The lines of the text files at `path` (a file, a directory of `.txt` files, or a `*`
/// pattern) as a `Utf8` column `text`, one row per line (line ends removed), read in
/// ranges of 16 MiB cut at line ends.
pub fn read_text(path: impl AsRef<Path>) -> Result<Dataset> {
    let units = crate::source::text_units(path.as_ref(), CSV_CHUNK_BYTES)?;
    from_units(units, crate::source::text_schema())
}

/// The files at `path` (a file, every file of a directory, or a `*` pattern), one row
/// each: a `Utf8` column `path` and a `Binary` column `bytes` with the whole file. A read
/// task takes about 16 MiB of files.
pub fn read_binary_files(path: impl AsRef<Path>) -> Result<Dataset> {
    let units = crate::source::binary_units(path.as_ref(), CSV_CHUNK_BYTES)?;
    from_units(units, crate::source::binary_schema())
}

/// A dataset of rows of a serde type (a struct of numbers, strings, booleans, options
/// and nested values), its schema inferred from the first 1,000 rows, in blocks of
/// about a million rows put into the object store.
///
/// ```
/// #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
/// struct Row { name: String, score: f64 }
/// prism::init_with(prism::Config::default().num_cpus(2.0))?;
/// let rows = vec![Row { name: "a".into(), score: 1.5 }, Row { name: "b".into(), score: -2.0 }];
/// let ds = prism_data::from_rows(&rows)?;
/// let back: Vec<Row> = ds.iter_rows::<Row>()?.collect::<prism_data::Result<_>>()?;
/// assert_eq!(back, rows);
/// prism::shutdown();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn from_rows<T: serde::Serialize>(rows: &[T]) -> Result<Dataset> {
    let schema = crate::rows::infer(rows)?;
    let batches = rows
        .chunks(crate::source::RANGE_BLOCK_ROWS as usize)
        .map(|chunk| crate::rows::decode(chunk, &schema))
        .collect::<Result<Vec<_>>>()?;
    let mut ds = from_batches(batches)?;
    ds.schema = Some(schema);
    Ok(ds)
}

/// The Parquet files at `path` (a file, a directory of `.parquet` files, or a `*`
/// pattern), one read task per row group.
pub fn read_parquet(path: impl AsRef<Path>) -> Result<Dataset> {
    let (schema, units) = parquet_units(path.as_ref(), None)?;
    from_units(units, schema)
}

/// [`read_parquet`] of some columns only (in the files' order); the others are not read.
pub fn read_parquet_columns(path: impl AsRef<Path>, columns: &[&str]) -> Result<Dataset> {
    let cols = columns.iter().map(|c| c.to_string()).collect();
    let (schema, units) = parquet_units(path.as_ref(), Some(cols))?;
    from_units(units, schema)
}

impl Dataset {
    fn of(inputs: Vec<Input>, schema: Option<SchemaRef>) -> Dataset {
        Dataset {
            inputs: Arc::new(inputs),
            unions: Vec::new(),
            schema,
            stages: vec![Stage::default()],
            error: None,
            window: None,
            budget: None,
            last_stats: Arc::default(),
        }
    }

    /// The dataset with its own statistics (a transform's result is a new dataset).
    fn fresh(mut self) -> Dataset {
        self.last_stats = Arc::default();
        self
    }

    /// Starts a stage behind an all-to-all step.
    fn exchange(mut self, exchange: Exchange) -> Dataset {
        self = self.fresh();
        if matches!(exchange, Exchange::Groups { .. }) {
            self.schema = None;
        }
        self.stages.push(Stage {
            exchange: Some(exchange),
            ..Stage::default()
        });
        self
    }

    fn push(mut self, op: Op) -> Dataset {
        self = self.fresh();
        self.schema = None;
        if self.stages.last().is_some_and(|s| s.limit.is_some()) {
            self.stages.push(Stage::default());
        }
        if let Some(last) = self.stages.last_mut() {
            last.ops.push(op);
        }
        self
    }

    /// Runs `f` on every block. `f` must be registered with
    /// [`register_batch_fn!`](crate::register_batch_fn), so that a task in any process
    /// finds it.
    pub fn map_batches(mut self, f: BatchFn) -> Dataset {
        match name_of(f) {
            Some(name) => self.push(Op::MapBatches(name.to_string())),
            None => {
                self.error
                    .get_or_insert(DataError::Unregistered(format!("{f:p}")));
                self
            }
        }
    }

    /// Runs `f` on every row (read into `T`, the result made a row of the output;
    /// through JSON, so slower than [`Dataset::map_batches`]). `f` must be registered
    /// with [`register_row_map!`](crate::register_row_map).
    ///
    /// ```
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct In { id: i64 }
    /// #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    /// struct Out { id: i64, square: i64 }
    /// fn square(r: In) -> Out { Out { id: r.id, square: r.id * r.id } }
    /// prism_data::register_row_map!(square: In => Out);
    ///
    /// prism::init_with(prism::Config::default().num_cpus(2.0))?;
    /// let rows: Vec<Out> = prism_data::range(3).map(square).iter_rows()?.collect::<prism_data::Result<_>>()?;
    /// assert_eq!(rows[2], Out { id: 2, square: 4 });
    /// prism::shutdown();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map<T, U>(self, f: fn(T) -> U) -> Dataset {
        self.row_fn(f as usize, "register_row_map!")
    }

    /// Keeps the rows (read into `T`) for which `f` holds. `f` must be registered with
    /// [`register_row_filter!`](crate::register_row_filter).
    pub fn filter_rows<T>(self, f: fn(&T) -> bool) -> Dataset {
        self.row_fn(f as usize, "register_row_filter!")
    }

    /// Replaces every row (read into `T`) by the rows `f` returns for it. `f` must be
    /// registered with [`register_row_flat_map!`](crate::register_row_flat_map).
    pub fn flat_map<T, U>(self, f: fn(T) -> Vec<U>) -> Dataset {
        self.row_fn(f as usize, "register_row_flat_map!")
    }

    fn row_fn(self, addr: usize, register: &str) -> Dataset {
        match crate::rows::wrapper_of(addr).and_then(name_of) {
            Some(name) => self.push(Op::MapBatches(name.to_string())),
            None => self.fail(DataError::Unregistered(format!(
                "the row function at {addr:#x} (register it with {register})"
            ))),
        }
    }

    /// [`Dataset::map_batches`] with options: `f` called on slices of at most
    /// `batch_size` rows, and each task of its stage holding the CPUs and GPUs asked
    /// (the other operators of the stage run in the same tasks; a stage holds the most
    /// any of its maps asks).
    ///
    /// ```
    /// use prism_data::arrow::array::RecordBatch;
    /// fn rows_seen(b: RecordBatch) -> prism_data::Result<RecordBatch> {
    ///     assert!(b.num_rows() <= 1000);
    ///     Ok(b)
    /// }
    /// prism_data::register_batch_fn!(rows_seen);
    ///
    /// prism::init_with(prism::Config::default().num_cpus(2.0))?;
    /// let opts = prism_data::MapOptions::default().batch_size(1000).num_cpus(0.5);
    /// assert_eq!(prism_data::range(2500).map_batches_with_options(rows_seen, opts).count()?, 2500);
    /// prism::shutdown();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map_batches_with_options(self, f: BatchFn, options: MapOptions) -> Dataset {
        if options.batch_size == Some(0) {
            return self.fail(DataError::Invalid(
                "map_batches needs a batch_size of at least 1".into(),
            ));
        }
        if options.num_cpus < 0.0 || options.num_gpus < 0.0 {
            return self.fail(DataError::Invalid(format!(
                "map_batches asks for {} CPUs and {} GPUs per call",
                options.num_cpus, options.num_gpus
            )));
        }
        let Some(name) = name_of(f) else {
            return self.fail(DataError::Unregistered(format!("{f:p}")));
        };
        let op = match options.batch_size {
            Some(n) => Op::MapBatchesSized(name.to_string(), n),
            None => Op::MapBatches(name.to_string()),
        };
        let mut ds = self.push(op);
        if let Some(stage) = ds.stages.last_mut() {
            let (cpus, gpus) = stage.resources.unwrap_or((0.0, 0.0));
            stage.resources = Some((cpus.max(options.num_cpus), gpus.max(options.num_gpus)));
        }
        ds
    }

    /// Runs the mapper `M` (built from `config` once per actor) on every block, in a pool
    /// of `min..=max` actors of `cpus` CPUs each; the operators after it run in the same
    /// actor calls. The pool leaves one CPU to the tasks that feed it: it has at most
    /// `(CPUs - 1) / cpus` actors. `M` must be registered with
    /// [`register_batch_mapper!`](crate::register_batch_mapper).
    pub fn map_batches_with<M: BatchMapper + MapperName>(
        mut self,
        config: &M::Config,
        pool: ActorPool,
    ) -> Dataset {
        let config = match serde_json::to_vec(config) {
            Ok(c) => c,
            Err(e) => {
                self.error.get_or_insert(DataError::Invalid(format!(
                    "the configuration of {} does not serialize: {e}",
                    M::NAME
                )));
                return self;
            }
        };
        if pool.min == 0 || pool.max < pool.min {
            self.error.get_or_insert(DataError::Invalid(format!(
                "an actor pool of {}..={} actors",
                pool.min, pool.max
            )));
            return self;
        }
        self.schema = None;
        self = self.fresh();
        self.stages.push(Stage {
            exchange: None,
            ops: Vec::new(),
            limit: None,
            resources: None,
            pool: Some(crate::pool::PoolSpec {
                name: M::NAME.to_string(),
                config,
                min: pool.min,
                max: pool.max,
                cpus: pool.cpus,
            }),
        });
        self
    }

    /// Keeps the rows where `predicate` holds.
    pub fn filter(self, predicate: Expr) -> Dataset {
        self.push(Op::Filter(predicate))
    }

    /// Keeps the columns `columns`, in that order.
    pub fn select(self, columns: &[&str]) -> Dataset {
        self.push(Op::Select(columns.iter().map(|c| c.to_string()).collect()))
    }

    /// Adds the column `name` (or replaces it) with the values of `expr`.
    pub fn with_column(self, name: &str, expr: Expr) -> Dataset {
        self.push(Op::WithColumn(name.to_string(), expr))
    }

    /// The first `n` rows (in block order); later transforms run on those only.
    pub fn limit(mut self, n: u64) -> Dataset {
        self = self.fresh();
        if let Some(last) = self.stages.last_mut() {
            last.limit = Some(last.limit.map_or(n, |l| l.min(n)));
        }
        self
    }

    /// The rows in `n` blocks of (nearly) equal rows, in order. Every block of the plan
    /// so far is computed first (kept in the object store); each new block is then
    /// gathered from slices of them by the task that runs the operators after it.
    pub fn repartition(self, n: usize) -> Dataset {
        if n == 0 {
            return self.fail(DataError::Invalid(
                "repartition needs at least one block".into(),
            ));
        }
        self.exchange(Exchange::Repartition(n))
    }

    /// The rows in a random order drawn from `seed` (the same seed, the same order), in
    /// as many blocks as before: every block is cut into random pieces, one per output
    /// block, and each output block permutes the pieces it gathers.
    ///
    /// ```
    /// prism::init_with(prism::Config::default().num_cpus(2.0))?;
    /// let ids = |ds: &prism_data::Dataset| -> prism_data::Result<Vec<i64>> {
    ///     let mut v = Vec::new();
    ///     for b in ds.collect()? {
    ///         let c = b.column(0).as_any().downcast_ref::<prism_data::arrow::array::Int64Array>().unwrap();
    ///         v.extend(c.values().iter().copied());
    ///     }
    ///     Ok(v)
    /// };
    /// let shuffled = prism_data::range(1000).random_shuffle(7);
    /// let once = ids(&shuffled)?;
    /// assert_eq!(once, ids(&shuffled)?);
    /// assert_ne!(once, (0..1000).collect::<Vec<i64>>());
    /// let mut sorted = once.clone();
    /// sorted.sort();
    /// assert_eq!(sorted, (0..1000).collect::<Vec<i64>>());
    /// prism::shutdown();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn random_shuffle(self, seed: u64) -> Dataset {
        self.exchange(Exchange::Shuffle { seed })
    }

    /// The rows ordered by `keys` (the first key first; nulls smallest), in as many
    /// blocks as before, each block's rows following the last one's: the blocks are
    /// sampled for the keys' quantiles, cut at them, and each range sorted by one task.
    ///
    /// ```
    /// use prism_data::{col, lit, SortKey};
    /// prism::init_with(prism::Config::default().num_cpus(2.0))?;
    /// let ds = prism_data::range(10)
    ///     .with_column("odd", col("id").sub(col("id").div(lit(2)).mul(lit(2))))
    ///     .sort([SortKey::asc("odd"), SortKey::desc("id")]);
    /// let b = &ds.collect()?[0];
    /// let ids = b.column_by_name("id").unwrap();
    /// let ids = ids.as_any().downcast_ref::<prism_data::arrow::array::Int64Array>().unwrap();
    /// assert_eq!(ids.values().to_vec(), vec![8, 6, 4, 2, 0, 9, 7, 5, 3, 1]);
    /// prism::shutdown();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn sort<K: Into<SortKey>>(self, keys: impl IntoIterator<Item = K>) -> Dataset {
        let keys: Vec<SortKey> = keys.into_iter().map(Into::into).collect();
        if keys.is_empty() {
            return self.fail(DataError::Invalid("sort needs at least one key".into()));
        }
        self.exchange(Exchange::Sort { keys })
    }

    /// This dataset's rows, then those of each of `others` (in order; each runs its own
    /// plan). Their schemas must agree, which the sink checks.
    pub fn union(self, others: &[Dataset]) -> Dataset {
        let schema = self.schema.clone();
        let same = others
            .iter()
            .all(|o| o.schema.as_ref().map(|s| s.fields()) == schema.as_ref().map(|s| s.fields()));
        let mut base = if self.is_plain() {
            self
        } else {
            let mut base = Dataset::of(Vec::new(), None);
            base.window = self.window;
            base.budget = self.budget;
            base.unions.push(self);
            base
        };
        for o in others {
            if o.is_plain() && base.unions.is_empty() {
                Arc::make_mut(&mut base.inputs).extend(o.inputs.iter().cloned());
            } else {
                base.unions.push(o.clone());
            }
        }
        base.schema = if same { schema } else { None };
        base.fresh()
    }

    fn fail(mut self, e: DataError) -> Dataset {
        self.error.get_or_insert(e);
        self
    }

    /// At most `bytes` of blocks in flight per stage, counted in the bytes of the Arrow
    /// buffers of the largest block seen (at least one block is always in flight, and
    /// one at a time until the first is seen). The window still bounds the count.
    /// Without it, a stage's budget is half of the object store's memory cap.
    pub fn with_memory_budget(mut self, bytes: u64) -> Dataset {
        self.budget = Some(bytes);
        self
    }

    /// At most `window` tasks in flight (default: two per CPU of the runtime).
    pub fn with_window(mut self, window: usize) -> Dataset {
        self.window = Some(window.max(1));
        self
    }

    /// The read units or blocks the dataset starts from.
    pub fn num_inputs(&self) -> usize {
        self.inputs.len() + self.unions.iter().map(Dataset::num_inputs).sum::<usize>()
    }

    /// Whether the dataset is its inputs, untransformed.
    fn is_plain(&self) -> bool {
        self.unions.is_empty()
            && self.error.is_none()
            && self.stages.len() == 1
            && self.stages[0].ops.is_empty()
            && self.stages[0].limit.is_none()
            && self.stages[0].pool.is_none()
    }

    /// The inputs of the first stage: the source's, then each union's blocks.
    fn source(&self) -> Box<dyn Iterator<Item = Result<Input>> + Send> {
        let inputs = self.inputs.clone();
        let own = (0..inputs.len()).map(move |i| Ok(inputs[i].clone()));
        let unions = self.unions.clone().into_iter().flat_map(|u| {
            let blocks: Box<dyn Iterator<Item = Result<Input>> + Send> = match u.run(Sink::Store) {
                Ok(outputs) => Box::new(stored(outputs).map(|s| s.map(|s| s.input()))),
                Err(e) => Box::new(std::iter::once(Err(e))),
            };
            blocks
        });
        Box::new(own.chain(unions))
    }

    /// Runs the plan; the last stage's tasks end in `sink` unless it has a limit (then
    /// they return blocks, and `sink` runs here on the limited rows).
    pub(crate) fn run(
        &self,
        sink: Sink,
    ) -> Result<Box<dyn Iterator<Item = Result<Output>> + Send>> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if let Some(e) = self.unions.iter().find_map(|u| u.error.clone()) {
            return Err(e);
        }
        let window = self.window.unwrap_or_else(default_window);
        let recorder = crate::stats::Recorder::new(self.last_stats.clone());
        let mut total = self.unions.is_empty().then_some(self.inputs.len() as u64);
        let mut upstream = self.source();
        let last = self.stages.len() - 1;
        for (i, stage) in self.stages.iter().enumerate() {
            let limited = stage.limit.is_some();
            let stage_sink = match (i == last, limited) {
                (true, false) => sink.clone(),
                (_, true) => Sink::Collect,
                // Between stages, blocks stay in the store where they were made.
                (false, false) => Sink::Store,
            };
            let outputs = TaskStream::new(
                upstream,
                StreamSpec {
                    ops: &stage.ops,
                    sink: stage_sink,
                    window,
                    budget: self.budget,
                    pool: stage.pool.clone(),
                    resources: stage.resources,
                    exchange: stage.exchange.as_ref(),
                    total,
                },
                &recorder,
            );
            if stage.limit.is_some() {
                total = None;
            }
            if i == last {
                let Some(n) = stage.limit else {
                    return Ok(Box::new(outputs));
                };
                let sink = sink.clone();
                let mut index = 0;
                let limited = Limited {
                    inner: outputs,
                    remaining: n,
                };
                return Ok(Box::new(limited.map(move |b| {
                    let sink = sink.for_block(index);
                    index += 1;
                    finish(&sink, b?.0)
                })));
            }
            let kept = match stage.limit {
                Some(n) => put_all(Box::new(Limited {
                    inner: outputs,
                    remaining: n,
                })),
                None => stored(outputs),
            };
            upstream = match &self.stages[i + 1].exchange {
                Some(exchange) => {
                    // An all-to-all step needs every block of the stage before.
                    let all = kept.collect::<Result<Vec<_>>>()?;
                    let units = crate::exchange::plan(exchange, all)?;
                    total = Some(units.len() as u64);
                    Box::new(units.into_iter().map(|u| Ok(Input::Reduce(u))))
                }
                None => Box::new(kept.map(|s| s.map(|s| s.input()))),
            };
        }
        unreachable!("the loop returns at the last stage")
    }

    /// What the last run of this dataset (a sink called on it or a clone of it) did,
    /// stage by stage: blocks, rows, bytes, task and wall time, peak bytes in flight.
    /// Empty before a run; a run still going shows what it has done so far.
    ///
    /// ```
    /// use prism_data::{col, lit};
    /// prism::init_with(prism::Config::default().num_cpus(2.0))?;
    /// let ds = prism_data::range(3_000_000).filter(col("id").lt(lit(1000)));
    /// assert_eq!(ds.count()?, 1000);
    /// let stats = ds.stats();
    /// assert_eq!(stats.stages[0].blocks, 3);
    /// assert_eq!(stats.stages[0].rows, 1000);
    /// println!("{stats}");
    /// prism::shutdown();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> crate::stats::Stats {
        self.last_stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The number of rows.
    pub fn count(&self) -> Result<u64> {
        let mut n = 0;
        for out in self.run(Sink::Count)? {
            if let Output::Count(c) = out? {
                n += c;
            }
        }
        Ok(n)
    }

    /// The sum of the numeric column `column` (`None` if it has no non-null value):
    /// integers as [`Literal::Int`] (an overflow is an error), floats as
    /// [`Literal::Float`].
    pub fn sum(&self, column: &str) -> Result<Option<Literal>> {
        let mut total: Option<Literal> = None;
        for out in self.run(Sink::Sum(column.to_string()))? {
            let Output::Sum(Some(part)) = out? else {
                continue;
            };
            total = Some(add_sums(column, total, part)?);
        }
        Ok(total)
    }

    /// `n` datasets of (nearly) equal rows, in order: the plan is run and its blocks kept
    /// in the object store, cut where the shards meet (slices share the blocks' buffers).
    /// Shard sizes differ by at most one row.
    pub fn split(&self, n: usize) -> Result<Vec<Dataset>> {
        if n == 0 {
            return Err(DataError::Invalid("split needs at least one shard".into()));
        }
        let blocks: Vec<RecordBatch> = self.collect()?;
        let total: usize = blocks.iter().map(|b| b.num_rows()).sum();
        let bounds: Vec<usize> = (0..=n).map(|i| i * total / n).collect();
        split_at(blocks, &bounds, self.schema.clone())
    }

    /// A training and a test dataset: the last `test_fraction` of the rows (in order)
    /// are the test set, as Ray's `train_test_split(test_size, shuffle=False)`.
    pub fn train_test_split(&self, test_fraction: f64) -> Result<(Dataset, Dataset)> {
        if !(0.0..=1.0).contains(&test_fraction) {
            return Err(DataError::Invalid(format!(
                "a test fraction of {test_fraction}, not in 0..=1"
            )));
        }
        let blocks: Vec<RecordBatch> = self.collect()?;
        let total: usize = blocks.iter().map(|b| b.num_rows()).sum();
        let test = (total as f64 * test_fraction).round() as usize;
        let mut parts =
            split_at(blocks, &[0, total - test, total], self.schema.clone())?.into_iter();
        match (parts.next(), parts.next()) {
            (Some(train), Some(test)) => Ok((train, test)),
            _ => Err(DataError::Invalid("a split without two parts".into())),
        }
    }

    /// [`Dataset::train_test_split`] of the rows shuffled by `seed` first, as Ray's
    /// `train_test_split(test_size, shuffle=True, seed=seed)`.
    pub fn train_test_split_shuffled(
        &self,
        test_fraction: f64,
        seed: u64,
    ) -> Result<(Dataset, Dataset)> {
        self.clone()
            .random_shuffle(seed)
            .train_test_split(test_fraction)
    }

    /// The distinct values of `column`, sorted (nulls last), as Ray's `unique`: each
    /// task reduces its block to its distinct values, which are merged here.
    pub fn unique(&self, column: &str) -> Result<arrow::array::ArrayRef> {
        let t = self.groupby(&[column]).aggregate(&[Agg::count()])?;
        Ok(t.column(0).clone())
    }

    /// Groups the rows by the key columns `keys`, for [`GroupBy::aggregate`].
    pub fn groupby(&self, keys: &[&str]) -> GroupBy {
        GroupBy {
            ds: self.clone(),
            keys: keys.iter().map(|k| k.to_string()).collect(),
        }
    }

    /// The blocks as they are computed, in order, at most a window of tasks ahead.
    pub fn iter_blocks(&self) -> Result<impl Iterator<Item = Result<RecordBatch>> + Send> {
        Ok(blocks(self.run(Sink::Collect)?).map(|b| b.map(|b| b.0)))
    }

    /// Batches of `batch_size` rows (the last may be shorter), cut from the blocks as
    /// they are computed; slices share the blocks' buffers, only batches spanning two
    /// blocks are copied together.
    pub fn iter_batches(
        &self,
        batch_size: usize,
    ) -> Result<impl Iterator<Item = Result<RecordBatch>> + Send> {
        if batch_size == 0 {
            return Err(DataError::Invalid(
                "iter_batches needs a batch_size of at least 1".into(),
            ));
        }
        Ok(Rebatch {
            inner: Box::new(self.iter_blocks()?),
            batch_size,
            held: Vec::new(),
            held_rows: 0,
            done: false,
        })
    }

    /// The rows as values of a serde type, block by block as they are computed (each
    /// block converted through JSON: for reading results, not for speed).
    pub fn iter_rows<T: serde::de::DeserializeOwned>(
        &self,
    ) -> Result<impl Iterator<Item = Result<T>>> {
        Ok(self.iter_blocks()?.flat_map(|b| {
            let rows: Vec<Result<T>> = match b.and_then(|b| crate::rows::rows_of(&b)) {
                Ok(rows) => rows,
                Err(e) => vec![Err(e)],
            };
            rows
        }))
    }

    /// Every block, computed and gathered here.
    pub fn collect(&self) -> Result<Vec<RecordBatch>> {
        self.iter_blocks()?.collect()
    }

    /// The first `n` rows, as batches.
    pub fn take(&self, n: u64) -> Result<Vec<RecordBatch>> {
        self.clone().limit(n).collect()
    }

    /// The schema: the source's if no transform changed it, else that of the first
    /// block computed.
    pub fn schema(&self) -> Result<SchemaRef> {
        if let Some(s) = &self.schema {
            return Ok(s.clone());
        }
        match self.clone().limit(1).iter_blocks()?.next() {
            Some(b) => Ok(b?.schema()),
            None => Err(DataError::Invalid(
                "the dataset has no rows, so no schema".into(),
            )),
        }
    }

    /// Writes every block as one Parquet file in `dir` (created if missing), named
    /// `{run}-{index:06}.parquet` with a `run` new for each call, so that writes do not
    /// overwrite one another. Each file appears whole or not at all. Returns the files.
    pub fn write_parquet(&self, dir: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
        self.write(FileFormat::Parquet, dir.as_ref())
    }

    /// Like [`Dataset::write_parquet`], as newline-delimited JSON files.
    pub fn write_json(&self, dir: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
        self.write(FileFormat::Json, dir.as_ref())
    }

    /// Like [`Dataset::write_parquet`], as CSV files with a header line.
    pub fn write_csv(&self, dir: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
        self.write(FileFormat::Csv, dir.as_ref())
    }

    fn write(&self, format: FileFormat, dir: &Path) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir).map_err(crate::error::io_err(dir))?;
        let prefix = run_prefix();
        let mut files = Vec::new();
        for out in self.run(Sink::Write {
            format,
            dir: dir.to_path_buf(),
            prefix,
            index: 0,
        })? {
            if let Output::Written(path, _) = out? {
                files.push(path);
            }
        }
        Ok(files)
    }
}

/// A dataset grouped by key columns: [`Dataset::groupby`].
pub struct GroupBy {
    ds: Dataset,
    keys: Vec<String>,
}

impl GroupBy {
    /// One row per group (sorted by the keys): the keys, then a column per aggregate,
    /// named as Ray names them (`count()`, `mean(x)`, ...). Every task reduces its
    /// block to the partial statistics of its groups; only those are gathered here.
    ///
    /// ```
    /// use prism_data::{range, col, lit, Agg};
    /// prism::init_with(prism::Config::default().num_cpus(2.0))?;
    /// let parity = range(10).with_column("odd", col("id").sub(col("id").div(lit(2)).mul(lit(2))));
    /// let t = parity.groupby(&["odd"]).aggregate(&[Agg::count(), Agg::sum("id")])?;
    /// assert_eq!(t.num_rows(), 2);
    /// prism::shutdown();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn aggregate(&self, aggs: &[Agg]) -> Result<RecordBatch> {
        if aggs.is_empty() {
            return Err(DataError::Invalid(
                "aggregate needs at least one aggregate".into(),
            ));
        }
        let spec = GroupSpec {
            keys: self.keys.clone(),
            aggs: aggs.to_vec(),
        };
        let mut partials = Vec::new();
        for out in self.ds.run(Sink::Aggregate(spec.clone()))? {
            if let Output::Block(b) = out? {
                if b.num_rows() > 0 {
                    partials.push(b.0);
                }
            }
        }
        if partials.is_empty() {
            return Err(DataError::Invalid(
                "groupby over a dataset with no rows".into(),
            ));
        }
        crate::group::finish(&crate::group::merge(&partials, &spec)?, &spec)
    }
}

impl GroupBy {
    /// Calls `f` on every group (a batch of the group's rows, sorted by the keys) and
    /// keeps what it returns: the rows are hash-partitioned by the keys, so that each
    /// group meets in one task. `f` must be registered with
    /// [`register_batch_fn!`](crate::register_batch_fn), and return batches of one
    /// schema.
    pub fn map_groups(&self, f: BatchFn) -> Dataset {
        let ds = self.ds.clone();
        if self.keys.is_empty() {
            return ds.fail(DataError::Invalid(
                "map_groups needs at least one key".into(),
            ));
        }
        match name_of(f) {
            Some(name) => ds.exchange(Exchange::Groups {
                keys: self.keys.clone(),
                f: name.to_string(),
            }),
            None => ds.fail(DataError::Unregistered(format!("{f:p}"))),
        }
    }
}

/// Datasets of the rows `bounds[i]..bounds[i + 1]` of `blocks`, sliced without a copy.
fn split_at(
    blocks: Vec<RecordBatch>,
    bounds: &[usize],
    schema: Option<SchemaRef>,
) -> Result<Vec<Dataset>> {
    let mut out = Vec::new();
    for w in bounds.windows(2) {
        let (from, to) = (w[0], w[1]);
        let mut parts = Vec::new();
        let mut at = 0;
        for b in &blocks {
            let (start, end) = (at, at + b.num_rows());
            at = end;
            let (lo, hi) = (from.max(start), to.min(end));
            if lo < hi {
                parts.push(b.slice(lo - start, hi - lo));
            }
        }
        let mut ds = from_batches(parts)?;
        if ds.schema.is_none() {
            ds.schema = schema
                .clone()
                .or_else(|| blocks.first().map(|b| b.schema()));
        }
        out.push(ds);
    }
    Ok(out)
}

/// A prefix no other write of this machine uses: the time in nanoseconds and the pid.
fn run_prefix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("part-{nanos:x}-{}", std::process::id())
}

struct Rebatch {
    inner: Box<dyn Iterator<Item = Result<RecordBatch>> + Send>,
    batch_size: usize,
    held: Vec<RecordBatch>,
    held_rows: usize,
    done: bool,
}

/// One batch of `parts` (not empty): the part itself if there is one, else a copy.
fn join(mut parts: Vec<RecordBatch>) -> Result<RecordBatch> {
    if parts.len() == 1 {
        return Ok(parts.remove(0));
    }
    let schema = parts[0].schema();
    Ok(arrow::compute::concat_batches(&schema, &parts)?)
}

impl Iterator for Rebatch {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Result<RecordBatch>> {
        loop {
            if self.held_rows >= self.batch_size {
                // Cut one batch from what is held.
                let mut need = self.batch_size;
                let mut parts = Vec::new();
                while need > 0 {
                    let b = self.held.remove(0);
                    if b.num_rows() <= need {
                        need -= b.num_rows();
                        parts.push(b);
                    } else {
                        parts.push(b.slice(0, need));
                        self.held.insert(0, b.slice(need, b.num_rows() - need));
                        need = 0;
                    }
                }
                self.held_rows -= self.batch_size;
                return Some(join(parts));
            }
            if self.done {
                if self.held_rows == 0 {
                    return None;
                }
                self.held_rows = 0;
                return Some(join(std::mem::take(&mut self.held)));
            }
            match self.inner.next() {
                Some(Ok(b)) if b.num_rows() > 0 => {
                    self.held_rows += b.num_rows();
                    self.held.push(b);
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    self.done = true;
                    self.held.clear();
                    self.held_rows = 0;
                    return Some(Err(e));
                }
                None => self.done = true,
            }
        }
    }
}
