//! prism-data end to end on real files written by the tests: every reader and writer,
//! each transform against a hand-computed result, backpressure, and the typed errors.
//! Every behaviour runs twice from one body (`both_modes!`): embedded, and as a driver
//! of a two-node cluster whose read and transform tasks run in worker processes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use prism::testing::NodeSpec;
use prism_data::arrow::array::{Array, Float64Array, Int64Array, RecordBatch, StringArray};
use prism_data::arrow::datatypes::{DataType, Field, Schema};
use prism_data::{col, lit, DataError, Literal};

fn double(b: RecordBatch) -> prism_data::Result<RecordBatch> {
    let id = b
        .column_by_name("id")
        .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
        .ok_or_else(|| DataError::Invalid("no Int64 id".into()))?;
    let doubled: Int64Array = id.iter().map(|v| v.map(|v| v * 2)).collect();
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
    Ok(RecordBatch::try_new(schema, vec![Arc::new(doubled)])?)
}
prism_data::register_batch_fn!(double);

fn explode(_: RecordBatch) -> prism_data::Result<RecordBatch> {
    panic!("the model fell over");
}
prism_data::register_batch_fn!(explode);

fn refuse(_: RecordBatch) -> prism_data::Result<RecordBatch> {
    Err(DataError::Invalid("refused on purpose".into()))
}
prism_data::register_batch_fn!(refuse);

/// Appends a line to the file its batch's `log` column names: one line per task started.
fn note_start(b: RecordBatch) -> prism_data::Result<RecordBatch> {
    use std::io::Write;
    let log = b
        .column_by_name("log")
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| DataError::Invalid("no log column".into()))?
        .value(0)
        .to_string();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|e| DataError::Invalid(e.to_string()))?;
    writeln!(f, "started").map_err(|e| DataError::Invalid(e.to_string()))?;
    Ok(b)
}
prism_data::register_batch_fn!(note_start);

fn not_registered(b: RecordBatch) -> prism_data::Result<RecordBatch> {
    Ok(b)
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Person {
    name: String,
    age: i64,
    score: Option<f64>,
}

/// A stateful mapper: `scaled = id * factor`, and which mapper made the row (`pid`:
/// the process id and a count of the mappers that process built).
struct Scale {
    factor: f64,
    me: i64,
}

static MAPPERS_BUILT: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

impl prism_data::BatchMapper for Scale {
    type Config = f64;

    fn new(factor: f64) -> prism_data::Result<Self> {
        if factor < 0.0 {
            return Err(DataError::Invalid(format!("a negative factor {factor}")));
        }
        let n = MAPPERS_BUILT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Scale {
            factor,
            me: std::process::id() as i64 * 1000 + n,
        })
    }

    fn map(&mut self, b: RecordBatch) -> prism_data::Result<RecordBatch> {
        let ids = ints(&b, "id");
        let scaled: Float64Array = ids.iter().map(|&i| i as f64 * self.factor).collect();
        let pid = Int64Array::from(vec![self.me; ids.len()]);
        let schema = Arc::new(Schema::new(vec![
            Field::new("scaled", DataType::Float64, false),
            Field::new("pid", DataType::Int64, false),
        ]));
        Ok(RecordBatch::try_new(
            schema,
            vec![Arc::new(scaled), Arc::new(pid)],
        )?)
    }
}
prism_data::register_batch_mapper!(Scale);

/// A trainer stand-in: reads its shard to the end.
#[prism::actor]
pub struct Reader {
    rows: u64,
}

#[prism::actor]
impl Reader {
    pub fn new() -> Self {
        Reader { rows: 0 }
    }

    /// Rows and the sum of `id` in the shard.
    pub fn consume(&mut self, shard: prism_data::DataShard) -> Result<(u64, i64), String> {
        let mut sum = 0;
        for b in shard {
            let b = b.map_err(|e| e.to_string())?;
            self.rows += b.num_rows() as u64;
            sum += ints(&b, "id").iter().sum::<i64>();
        }
        Ok((self.rows, sum))
    }
}

/// A directory of its own under the system's temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("prism-data-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Rows `id, x, k` with x = (id % 7) - 3 (as a float) and k = id % 5.
fn write_csv(path: &Path, rows: i64) {
    let mut s = String::from("id,x,k\n");
    for id in 0..rows {
        s.push_str(&format!("{id},{}.5,{}\n", id % 7 - 3, id % 5));
    }
    std::fs::write(path, s).expect("write csv");
}

fn ints(b: &RecordBatch, name: &str) -> Vec<i64> {
    let c = b.column_by_name(name).expect("column");
    c.as_any()
        .downcast_ref::<Int64Array>()
        .expect("Int64")
        .values()
        .to_vec()
}

/// One row per group: the key `k`, the group's rows `n` and the sum of its `x`.
fn summarize(b: RecordBatch) -> prism_data::Result<RecordBatch> {
    let k = ints(&b, "k");
    let x = ints(&b, "x");
    assert!(k.iter().all(|v| *v == k[0]), "a group of one key: {k:?}");
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("n", DataType::Int64, false),
        Field::new("total", DataType::Int64, false),
    ]));
    Ok(RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![k[0]])),
            Arc::new(Int64Array::from(vec![k.len() as i64])),
            Arc::new(Int64Array::from(vec![x.iter().sum::<i64>()])),
        ],
    )?)
}
prism_data::register_batch_fn!(summarize);

fn group_fails(b: RecordBatch) -> prism_data::Result<RecordBatch> {
    if ints(&b, "k")[0] == 3 {
        return Err(DataError::Invalid("group 3 is cursed".into()));
    }
    Ok(b)
}
prism_data::register_batch_fn!(group_fails);

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Id {
    id: i64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Tagged {
    id: i64,
    tag: String,
}

fn tag(r: Id) -> Tagged {
    Tagged {
        id: r.id,
        tag: format!("#{}", r.id),
    }
}
prism_data::register_row_map!(tag: Id => Tagged);

fn divisible_by_three(r: &Id) -> bool {
    r.id % 3 == 0
}
prism_data::register_row_filter!(divisible_by_three: Id);

fn repeat(r: Id) -> Vec<Id> {
    let n = (r.id % 3) as usize;
    vec![r; n]
}
prism_data::register_row_flat_map!(repeat: Id => Id);

/// Tags each row with the size of the batch it was called on.
fn batch_rows(b: RecordBatch) -> prism_data::Result<RecordBatch> {
    let n = b.num_rows() as i64;
    let schema = Arc::new(Schema::new(vec![Field::new(
        "seen",
        DataType::Int64,
        false,
    )]));
    Ok(RecordBatch::try_new(
        schema,
        vec![Arc::new(Int64Array::from(vec![n; n as usize]))],
    )?)
}
prism_data::register_batch_fn!(batch_rows);

fn unregistered_row_fn(r: Id) -> Id {
    r
}

/// `k, x` blocks: `blocks` of `rows` rows each, `k` in `0..keys` and `x` scrambled.
fn keyed_blocks(blocks: i64, rows: i64, keys: i64) -> Vec<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("x", DataType::Int64, false),
    ]));
    (0..blocks)
        .map(|b| {
            let ids: Vec<i64> = (0..rows).map(|i| b * rows + i).collect();
            let k: Int64Array = ids.iter().map(|i| (i * 7919) % keys).collect();
            let x: Int64Array = ids.iter().map(|i| (i * 104_729) % 1000).collect();
            RecordBatch::try_new(schema.clone(), vec![Arc::new(k), Arc::new(x)]).unwrap()
        })
        .collect()
}

fn all_ints(batches: &[RecordBatch], name: &str) -> Vec<i64> {
    batches.iter().flat_map(|b| ints(b, name)).collect()
}

prism::both_modes! {
    fn range_map_batches_and_sum(session, NodeSpec::cpus(2.0)) {
        let n = 3_000_000u64; // three blocks
        let ds = prism_data::range(n).map_batches(double);
        assert_eq!(ds.num_inputs(), 3);
        assert_eq!(ds.count().unwrap(), n);
        let expect = (n as i64) * (n as i64 - 1);
        assert_eq!(ds.sum("id").unwrap(), Some(Literal::Int(expect)));
    }

    fn csv_is_read_in_ranges_cut_at_line_ends(session, NodeSpec::cpus(2.0)) {
        let dir = TempDir::new("csv-ranges");
        let path = dir.path("t.csv");
        write_csv(&path, 10_000);
        // Ranges of 1000 bytes: many, each cut in the middle of a line.
        let ds = prism_data::read_csv_with(&path, prism_data::CsvOptions { chunk_bytes: 1000 }).unwrap();
        assert!(ds.num_inputs() > 50, "{} ranges", ds.num_inputs());
        let batches = ds.collect().unwrap();
        let ids: Vec<i64> = batches.iter().flat_map(|b| ints(b, "id")).collect();
        assert_eq!(ids, (0..10_000).collect::<Vec<_>>(), "every line read once, in order");
        let positive = (0..10_000i64).filter(|id| id % 7 - 3 >= 0).count() as u64;
        assert_eq!(ds.clone().filter(col("x").gt(lit(0))).count().unwrap(), positive);
        let schema = ds.schema().unwrap();
        assert_eq!(schema.field_with_name("x").unwrap().data_type(), &DataType::Float64);
    }

    fn expressions_filter_select_and_add_columns(session, NodeSpec::cpus(2.0)) {
        let ds = prism_data::range(100)
            .with_column("y", col("id").mul(lit(3)).add(lit(1)))
            .filter(col("y").gt(lit(100)).and(col("id").lt(lit(60))))
            .select(&["y"]);
        let batches = ds.collect().unwrap();
        let ys: Vec<i64> = batches.iter().flat_map(|b| ints(b, "y")).collect();
        let expect: Vec<i64> = (0..100).map(|i| i * 3 + 1).filter(|&y| y > 100).filter(|y| (y - 1) / 3 < 60).collect();
        assert_eq!(ys, expect);
        assert_eq!(batches[0].num_columns(), 1);
        // An integer column against a float literal meets at Float64.
        assert_eq!(prism_data::range(10).filter(col("id").gt_eq(lit(4.5))).count().unwrap(), 5);
        let half = prism_data::range(4).with_column("h", col("id").cast(prism_data::CastTo::Float64).div(lit(2.0)));
        let h = half.collect().unwrap();
        let h = h[0].column_by_name("h").unwrap().as_any().downcast_ref::<Float64Array>().unwrap().values().to_vec();
        assert_eq!(h, vec![0.0, 0.5, 1.0, 1.5]);
    }

    fn limit_take_and_iter_batches(session, NodeSpec::cpus(2.0)) {
        let n = 2_500_000u64;
        let taken = prism_data::range(n).take(5).unwrap();
        assert_eq!(taken.iter().map(|b| b.num_rows()).sum::<usize>(), 5);
        // Transforms after a limit run on the limited rows only.
        let after = prism_data::range(n).limit(1_500_000).map_batches(double);
        assert_eq!(after.count().unwrap(), 1_500_000);
        assert_eq!(after.sum("id").unwrap(), Some(Literal::Int(1_500_000 * 1_499_999)));
        let sizes: Vec<usize> = prism_data::range(n)
            .iter_batches(400_000)
            .unwrap()
            .map(|b| b.unwrap().num_rows())
            .collect();
        assert_eq!(sizes.iter().sum::<usize>(), n as usize);
        assert!(sizes[..sizes.len() - 1].iter().all(|&s| s == 400_000), "{sizes:?}");
        assert_eq!(*sizes.last().unwrap(), n as usize % 400_000);
        // A window of one: still every block, in order.
        let ids: Vec<i64> = prism_data::range(n).with_window(1).collect().unwrap().iter().map(|b| ints(b, "id")[0]).collect();
        assert_eq!(ids, vec![0, 1 << 20, 2 << 20]);
    }

    fn parquet_written_and_read_back(session, NodeSpec::cpus(2.0)) {
        let dir = TempDir::new("parquet");
        let csv = dir.path("t.csv");
        write_csv(&csv, 20_000);
        let out = dir.path("out");
        let ds = prism_data::read_csv_with(&csv, prism_data::CsvOptions { chunk_bytes: 50_000 }).unwrap();
        let files = ds.write_parquet(&out).unwrap();
        assert_eq!(files.len(), ds.num_inputs());
        assert!(files.iter().all(|f| f.exists() && f.extension().is_some_and(|e| e == "parquet")));
        // A second write does not collide with the first.
        let again = ds.write_parquet(&out).unwrap();
        assert!(again.iter().all(|f| !files.contains(f)));
        let leftovers: Vec<_> = std::fs::read_dir(&out).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().ends_with(".tmp")).collect();
        assert!(leftovers.is_empty(), "no temporary files left");
        for f in again {
            std::fs::remove_file(f).unwrap();
        }
        let back = prism_data::read_parquet(&out).unwrap();
        assert_eq!(back.num_inputs(), files.len(), "one unit per row group");
        assert_eq!(back.count().unwrap(), 20_000);
        assert_eq!(back.sum("id").unwrap(), Some(Literal::Int((0..20_000).sum())));
        // A glob, and a projection that reads one column.
        let one = prism_data::read_parquet_columns(out.join("part-*.parquet"), &["k"]).unwrap();
        let b = one.collect().unwrap();
        assert_eq!(b[0].num_columns(), 1);
        assert_eq!(one.sum("k").unwrap(), Some(Literal::Int((0..20_000).map(|i| i % 5).sum())));
        // CSV out, and back in: the same rows.
        let csv_out = dir.path("csv_out");
        let written = back.write_csv(&csv_out).unwrap();
        assert!(written.iter().all(|f| f.extension().is_some_and(|e| e == "csv")));
        let again = prism_data::read_csv(&csv_out).unwrap();
        assert_eq!(again.count().unwrap(), 20_000);
        assert_eq!(again.sum("id").unwrap(), Some(Literal::Int((0..20_000).sum())));
        // from_batches, then the same path through the store.
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, false)])),
            vec![Arc::new(StringArray::from(vec!["a", "b", "c"]))],
        ).unwrap();
        let mem = prism_data::from_batches(vec![batch.clone(), batch]).unwrap();
        assert_eq!(mem.filter(col("s").not_eq(lit("b"))).count().unwrap(), 4);
    }

    /// A consumer that pulls slowly holds back the tasks: at most the window runs ahead
    /// of what it has taken, however many blocks the dataset has.
    fn a_slow_consumer_holds_back_the_tasks(session, NodeSpec::cpus(2.0)) {
        let dir = TempDir::new("backpressure");
        let log = dir.path("started.log");
        let schema = Arc::new(Schema::new(vec![Field::new("log", DataType::Utf8, false)]));
        let batches: Vec<RecordBatch> = (0..20)
            .map(|_| RecordBatch::try_new(schema.clone(), vec![Arc::new(StringArray::from(vec![log.to_str().unwrap(); 10]))]).unwrap())
            .collect();
        let window = 3;
        let ds = prism_data::from_batches(batches).unwrap().map_batches(note_start).with_window(window);
        let started = || std::fs::read_to_string(&log).map_or(0, |s| s.lines().count());
        let mut taken = 0;
        for b in ds.iter_blocks().unwrap() {
            b.unwrap();
            taken += 1;
            // Give the tasks time to run ahead if anything let them.
            std::thread::sleep(std::time::Duration::from_millis(20));
            let n = started();
            assert!(n <= taken + window, "{n} tasks started with {taken} blocks taken and a window of {window}");
        }
        assert_eq!(taken, 20);
        assert_eq!(started(), 20);
        // A budget smaller than a block: one task at a time, whatever the window.
        std::fs::remove_file(&log).unwrap();
        let tight = ds.clone().with_window(8).with_memory_budget(1);
        let mut taken = 0;
        for b in tight.iter_blocks().unwrap() {
            b.unwrap();
            taken += 1;
            std::thread::sleep(std::time::Duration::from_millis(20));
            let n = started();
            assert!(n <= taken + 1, "{n} tasks started with {taken} blocks taken under a one-block budget");
        }
        assert_eq!(started(), 20);
    }

    fn groupby_aggregates_over_several_blocks(session, NodeSpec::cpus(2.0)) {
        use prism_data::Agg;
        let n = 2_500_000i64; // three blocks
        let ds = prism_data::range(n as u64)
            .with_column("g", col("id").sub(col("id").div(lit(7)).mul(lit(7))))
            .with_column("v", col("id").cast(prism_data::CastTo::Float64).div(lit(1000.0)));
        let t = ds
            .groupby(&["g"])
            .aggregate(&[Agg::count(), Agg::sum("v"), Agg::mean("v"), Agg::min("v"), Agg::max("v"), Agg::std("v")])
            .unwrap();
        assert_eq!(t.num_rows(), 7);
        let f = |name: &str| t.column_by_name(name).unwrap().as_any().downcast_ref::<Float64Array>().unwrap().values().to_vec();
        let counts = t.column_by_name("count()").unwrap().as_any().downcast_ref::<prism_data::arrow::array::UInt64Array>().unwrap().values().to_vec();
        assert_eq!(ints(&t, "g"), (0..7).collect::<Vec<_>>(), "sorted by key");
        for (g, &count) in counts.iter().enumerate() {
            let vs: Vec<f64> = (0..n).filter(|i| i % 7 == g as i64).map(|i| i as f64 / 1000.0).collect();
            let m = vs.len() as f64;
            let mean = vs.iter().sum::<f64>() / m;
            let var = vs.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (m - 1.0);
            assert_eq!(count, vs.len() as u64);
            assert!((f("sum(v)")[g] - vs.iter().sum::<f64>()).abs() < 1e-6 * m);
            assert!((f("mean(v)")[g] - mean).abs() < 1e-9 * mean.abs(), "{} vs {mean}", f("mean(v)")[g]);
            assert_eq!(f("min(v)")[g], vs[0]);
            assert_eq!(f("max(v)")[g], *vs.last().unwrap());
            assert!((f("std(v)")[g] - var.sqrt()).abs() < 1e-9 * var.sqrt(), "{} vs {}", f("std(v)")[g], var.sqrt());
        }
        // String and integer keys together, from a CSV read in many ranges.
        let dir = TempDir::new("groupby");
        let path = dir.path("g.csv");
        let mut s = String::from("name,k,x\n");
        for i in 0..3000 {
            s.push_str(&format!("{},{},{}\n", ["ann", "bob", "cy"][i % 3], i % 2, i));
        }
        std::fs::write(&path, s).unwrap();
        let t = prism_data::read_csv_with(&path, prism_data::CsvOptions { chunk_bytes: 2000 })
            .unwrap()
            .groupby(&["name", "k"])
            .aggregate(&[Agg::count(), Agg::max("x")])
            .unwrap();
        assert_eq!(t.num_rows(), 6);
        let names = t.column_by_name("name").unwrap().as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(names.value(0), "ann");
        let counts = t.column_by_name("count()").unwrap().as_any().downcast_ref::<prism_data::arrow::array::UInt64Array>().unwrap();
        assert_eq!(counts.values().iter().sum::<u64>(), 3000);
        assert!(counts.values().iter().all(|&c| c == 500));
        assert!(matches!(prism_data::range(10).groupby(&["nope"]).aggregate(&[Agg::count()]), Err(DataError::ColumnNotFound { .. })));
    }

    /// A row group that a filter rules out on its statistics is never read: here its
    /// pages are overwritten with garbage, and the filtered read still succeeds.
    fn row_groups_are_skipped_on_their_statistics(session, NodeSpec::cpus(2.0)) {
        let dir = TempDir::new("prune");
        let out = dir.path("pq");
        let mut files = prism_data::range(3_500_000).write_parquet(&out).unwrap();
        files.sort();
        assert_eq!(files.len(), 4);
        // The last file holds ids 3,145,728.. : break its pages, keep its footer.
        let last = files.last().unwrap();
        let mut bytes = std::fs::read(last).unwrap();
        for b in &mut bytes[4..4 + 4096] {
            *b = 0xff;
        }
        std::fs::write(last, &bytes).unwrap();
        let ds = prism_data::read_parquet(&out).unwrap();
        assert!(matches!(ds.count(), Err(DataError::Parquet { .. })), "the broken file is found when read");
        assert_eq!(ds.clone().filter(col("id").lt(lit(1000))).count().unwrap(), 1000);
        assert_eq!(ds.clone().filter(lit(3_000_000).gt(col("id")).and(col("id").gt_eq(lit(2_000_000)))).count().unwrap(), 1_000_000);
        assert_eq!(ds.clone().filter(col("id").eq(lit(5.0))).count().unwrap(), 1);
        assert!(ds.filter(col("id").gt(lit(3_400_000))).count().is_err(), "a filter that needs the broken file reads it");
    }

    fn streaming_split_feeds_readers_in_other_actors(session, NodeSpec::cpus(2.0)) {
        let n = 2_500_001u64; // three blocks, an odd number of rows
        // Equal: the same rows in both shards, every row at most once.
        let shards = prism_data::range(n).streaming_split(2, true).unwrap();
        let readers: Vec<_> = (0..2).map(|_| Reader::remote()).collect();
        let refs: Vec<_> = readers.iter().zip(shards).map(|(r, s)| r.consume(s)).collect();
        let out: Vec<(u64, i64)> = refs.iter().map(|r| prism::get(r).unwrap().unwrap()).collect();
        assert_eq!(out[0].0, out[1].0, "equal shards");
        assert!(out[0].0 * 2 <= n && out[0].0 * 2 >= n - 3 * 2, "{out:?}");
        // Not equal: every row, once, whoever takes it.
        let shards = prism_data::range(n).streaming_split(2, false).unwrap();
        let readers: Vec<_> = (0..2).map(|_| Reader::remote()).collect();
        let refs: Vec<_> = readers.iter().zip(shards).map(|(r, s)| r.consume(s)).collect();
        let out: Vec<(u64, i64)> = refs.iter().map(|r| prism::get(r).unwrap().unwrap()).collect();
        assert_eq!(out.iter().map(|o| o.0).sum::<u64>(), n);
        assert_eq!(out.iter().map(|o| o.1).sum::<i64>(), (0..n as i64).sum::<i64>());
        // One reader done before the other starts: equal shards do not wait on each other.
        let mut shards = prism_data::range(n).streaming_split(2, true).unwrap();
        let second = shards.pop().unwrap();
        let first: u64 = shards.pop().unwrap().map(|b| b.unwrap().num_rows() as u64).sum();
        let later: u64 = second.map(|b| b.unwrap().num_rows() as u64).sum();
        assert_eq!(first, later);
        // A failing plan reaches every reader as an error.
        let bad = prism_data::range(10).map_batches(explode).streaming_split(2, false).unwrap();
        for mut s in bad {
            assert!(matches!(s.next(), Some(Err(DataError::Operator { .. }))));
        }
    }

    fn map_batches_in_an_actor_pool(session, NodeSpec::cpus(2.0)) {
        use prism_data::ActorPool;
        let n = 9_500_000u64; // ten blocks: more than the window, so reads go on beside the pool
        let ds = prism_data::range(n)
            .map_batches_with::<Scale>(&0.5, ActorPool::new(1, 2))
            .filter(col("scaled").gt_eq(lit(0.0)));
        assert_eq!(ds.count().unwrap(), n);
        let total = (0..n).map(|i| i as f64 * 0.5).sum::<f64>();
        match ds.sum("scaled").unwrap() {
            Some(Literal::Float(s)) => assert!((s - total).abs() < 1e-6 * total, "{s} vs {total}"),
            other => panic!("{other:?}"),
        }
        // Blocks in hand at every actor grow the pool to its max: two actors (of half a
        // CPU, so that two fit beside the CPU the pool leaves to the read tasks).
        let pids: std::collections::BTreeSet<i64> = prism_data::range(n)
            .map_batches_with::<Scale>(&1.0, ActorPool::new(1, 2).cpus(0.5))
            .select(&["pid"])
            .collect()
            .unwrap()
            .iter()
            .flat_map(|b| ints(b, "pid"))
            .collect();
        assert_eq!(pids.len(), 2, "two mappers: {pids:?}");
        let bad = prism_data::range(10).map_batches_with::<Scale>(&-1.0, ActorPool::new(1, 1)).count().unwrap_err();
        assert!(bad.to_string().contains("a negative factor"), "{bad}");
        assert!(matches!(prism_data::range(10).map_batches_with::<Scale>(&1.0, ActorPool::new(2, 1)).count(), Err(DataError::Invalid(_))));
    }

    fn split_and_train_test_split(session, NodeSpec::cpus(2.0)) {
        let n = 2_500_003u64;
        let shards = prism_data::range(n).split(3).unwrap();
        let counts: Vec<u64> = shards.iter().map(|s| s.count().unwrap()).collect();
        assert_eq!(counts.iter().sum::<u64>(), n);
        assert!(counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1, "{counts:?}");
        // In order: the second shard starts where the first ends.
        let first_of_second = ints(&shards[1].take(1).unwrap()[0], "id")[0];
        assert_eq!(first_of_second as u64, counts[0]);
        let (train, test) = prism_data::range(1000).filter(col("id").lt(lit(800))).train_test_split(0.25).unwrap();
        assert_eq!((train.count().unwrap(), test.count().unwrap()), (600, 200));
        assert_eq!(test.sum("id").unwrap(), Some(Literal::Int((600..800).sum())));
        assert!(matches!(prism_data::range(10).train_test_split(1.5), Err(DataError::Invalid(_))));
    }

    fn json_lines_and_serde_rows(session, NodeSpec::cpus(2.0)) {
        let people: Vec<Person> = (0..5000)
            .map(|i| Person { name: format!("p{i}"), age: i % 90, score: (i % 4 != 0).then_some(i as f64 / 2.0) })
            .collect();
        let ds = prism_data::from_rows(&people).unwrap();
        assert_eq!(ds.count().unwrap(), 5000);
        let back: Vec<Person> = ds.iter_rows().unwrap().collect::<prism_data::Result<_>>().unwrap();
        assert_eq!(back, people);
        let dir = TempDir::new("json");
        let out = dir.path("out");
        let files = ds.clone().filter(col("age").lt(lit(30))).write_json(&out).unwrap();
        assert!(files.iter().all(|f| f.extension().is_some_and(|e| e == "json")));
        let read = prism_data::read_json(&out).unwrap();
        let young: Vec<Person> = read.iter_rows().unwrap().collect::<prism_data::Result<_>>().unwrap();
        assert_eq!(young, people.iter().filter(|p| p.age < 30).cloned().collect::<Vec<_>>());
        assert_eq!(read.sum("age").unwrap(), Some(Literal::Int(people.iter().filter(|p| p.age < 30).map(|p| p.age).sum())));
        // A hand-written file, then the same with a bad line at the end.
        let path = dir.path("h.json");
        let mut s = String::new();
        for i in 0..2000 {
            s.push_str(&format!("{{\"a\": {i}, \"b\": \"x{i}\"}}\n"));
        }
        std::fs::write(&path, &s).unwrap();
        let many = prism_data::read_json(&path).unwrap();
        assert_eq!(many.sum("a").unwrap(), Some(Literal::Int((0..2000).sum())));
        s.push_str("{\"a\": 1, \"b\": oops}\n");
        std::fs::write(&path, &s).unwrap();
        let err = prism_data::read_json(&path).unwrap().count().unwrap_err();
        assert!(matches!(&err, DataError::Json { path, .. } if path.ends_with("h.json")), "{err}");
    }

    fn bad_input_gets_typed_errors(session, NodeSpec::cpus(2.0)) {
        let dir = TempDir::new("errors");
        let missing = dir.path("nope.csv");
        assert!(matches!(prism_data::read_csv(&missing), Err(DataError::NotFound { .. })));
        assert!(matches!(prism_data::read_parquet(dir.path("*.parquet")), Err(DataError::NotFound { .. })));

        let bad = dir.path("bad.csv");
        let mut s = String::from("id,x\n");
        for i in 0..2000 {
            s.push_str(&format!("{i},{i}.0\n"));
        }
        s.push_str("2000,not-a-number\n");
        std::fs::write(&bad, s).unwrap();
        let bad_ds = prism_data::read_csv_with(&bad, prism_data::CsvOptions { chunk_bytes: 4096 }).unwrap();
        // A count reads one column only: the bad value in `x` is not parsed.
        assert_eq!(bad_ds.count().unwrap(), 2001);
        let err = bad_ds.filter(col("x").gt(lit(0))).count().unwrap_err();
        match &err {
            DataError::Csv { path, message } => {
                assert!(path.ends_with("bad.csv"), "{err}");
                assert!(message.contains("not-a-number"), "{err}");
            }
            other => panic!("not a CSV error: {other}"),
        }

        // CSV files of one dataset whose headers differ.
        let csvs = dir.path("many");
        std::fs::create_dir_all(&csvs).unwrap();
        std::fs::write(csvs.join("a.csv"), "id,x\n1,2\n").unwrap();
        std::fs::write(csvs.join("b.csv"), "id,y\n1,2\n").unwrap();
        assert!(matches!(prism_data::read_csv(&csvs), Err(DataError::SchemaMismatch { .. })));

        let no_col = prism_data::range(10).filter(col("nope").gt(lit(1))).count().unwrap_err();
        assert!(matches!(&no_col, DataError::ColumnNotFound { column, available } if column == "nope" && available == &vec!["id".to_string()]), "{no_col}");
        assert!(matches!(prism_data::range(10).select(&["id", "zz"]).count(), Err(DataError::ColumnNotFound { .. })));

        let panicked = prism_data::range(10).map_batches(explode).count().unwrap_err();
        match &panicked {
            DataError::Operator { operator, message } => {
                assert_eq!(operator, "map_batches(explode)");
                assert!(message.contains("the model fell over"), "{panicked}");
            }
            other => panic!("not an operator error: {other}"),
        }
        let refused = prism_data::range(10).map_batches(refuse).count().unwrap_err();
        assert!(matches!(&refused, DataError::Operator { operator, message } if operator == "map_batches(refuse)" && message.contains("refused on purpose")), "{refused}");
        assert!(matches!(prism_data::range(10).map_batches(not_registered).count(), Err(DataError::Unregistered(_))));
        assert!(matches!(prism_data::range(10).iter_batches(0), Err(DataError::Invalid(_))));
    }

    fn sort_on_several_keys_over_several_blocks(session, NodeSpec::cpus(2.0)) {
        let input = keyed_blocks(6, 500, 4);
        let mut expected: Vec<(i64, i64)> = input.iter().flat_map(|b| ints(b, "k").into_iter().zip(ints(b, "x"))).collect();
        expected.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let ds = prism_data::from_batches(input).unwrap().sort([prism_data::SortKey::asc("k"), prism_data::SortKey::desc("x")]);
        let out = ds.collect().unwrap();
        assert_eq!(out.len(), 6, "as many blocks as before");
        assert!(out.iter().filter(|b| b.num_rows() > 0).count() >= 3, "the ranges spread over the blocks: {:?}", out.iter().map(|b| b.num_rows()).collect::<Vec<_>>());
        let got: Vec<(i64, i64)> = all_ints(&out, "k").into_iter().zip(all_ints(&out, "x")).collect();
        assert_eq!(got, expected);
        // Operators after the sort run in its reduce tasks; a sort on a column that is
        // not there names it.
        let top = prism_data::from_batches(keyed_blocks(3, 100, 4)).unwrap().sort(["x"]).filter(col("x").lt(lit(10))).collect().unwrap();
        let xs = all_ints(&top, "x");
        assert!(xs.windows(2).all(|w| w[0] <= w[1]) && xs.iter().all(|x| *x < 10) && !xs.is_empty(), "{xs:?}");
        let err = prism_data::range(10).sort(["nope"]).count().unwrap_err();
        assert!(matches!(&err, DataError::ColumnNotFound { column, .. } if column == "nope"), "{err}");
    }

    fn random_shuffle_repartition_and_union(session, NodeSpec::cpus(2.0)) {
        let input = keyed_blocks(4, 250, 10);
        let ds = prism_data::from_batches(input.clone()).unwrap();
        let original = all_ints(&input, "x");
        let once = all_ints(&ds.clone().random_shuffle(42).collect().unwrap(), "x");
        let again = all_ints(&ds.clone().random_shuffle(42).collect().unwrap(), "x");
        let other = all_ints(&ds.clone().random_shuffle(43).collect().unwrap(), "x");
        assert_eq!(once, again, "one seed, one order");
        assert_ne!(once, other, "another seed, another order");
        assert_ne!(once, original);
        let (mut a, mut b) = (once.clone(), original.clone());
        a.sort();
        b.sort();
        assert_eq!(a, b, "a permutation of the rows");

        let parts = ds.clone().repartition(3).collect().unwrap();
        assert_eq!(parts.iter().map(|b| b.num_rows()).collect::<Vec<_>>(), vec![333, 333, 334]);
        assert_eq!(all_ints(&parts, "x"), original, "repartition keeps the order");
        assert!(matches!(ds.clone().repartition(0).count(), Err(DataError::Invalid(_))));

        let mixed = prism_data::range(5)
            .union(&[prism_data::range(3).with_column("id", col("id").add(lit(100))), prism_data::range(2)])
            .filter(col("id").gt_eq(lit(1)));
        let ids: Vec<i64> = mixed.collect().unwrap().iter().flat_map(|b| ints(b, "id")).collect();
        assert_eq!(ids, vec![1, 2, 3, 4, 100, 101, 102, 1]);
        assert_eq!(mixed.num_inputs(), 3);

        let (train, test) = prism_data::range(1000).train_test_split_shuffled(0.25, 7).unwrap();
        let (mut tr, te) = (all_ints(&train.collect().unwrap(), "id"), all_ints(&test.collect().unwrap(), "id"));
        assert_eq!((tr.len(), te.len()), (750, 250));
        assert_ne!(te, (750..1000).collect::<Vec<i64>>(), "the test rows are drawn, not the last ones");
        tr.extend(te);
        tr.sort();
        assert_eq!(tr, (0..1000).collect::<Vec<i64>>());
    }

    fn map_groups_and_unique(session, NodeSpec::cpus(2.0)) {
        let input = keyed_blocks(5, 200, 7);
        let mut expected: std::collections::BTreeMap<i64, (i64, i64)> = Default::default();
        for b in &input {
            for (k, x) in ints(b, "k").into_iter().zip(ints(b, "x")) {
                let e = expected.entry(k).or_default();
                e.0 += 1;
                e.1 += x;
            }
        }
        let ds = prism_data::from_batches(input).unwrap();
        let groups = ds.groupby(&["k"]).map_groups(summarize).sort(["k"]).collect().unwrap();
        let got: std::collections::BTreeMap<i64, (i64, i64)> = all_ints(&groups, "k").into_iter().zip(all_ints(&groups, "n").into_iter().zip(all_ints(&groups, "total"))).collect();
        assert_eq!(got, expected);
        assert_eq!(all_ints(&groups, "k"), (0..7).collect::<Vec<i64>>(), "one row per group");

        let err = ds.groupby(&["k"]).map_groups(group_fails).count().unwrap_err();
        assert!(matches!(&err, DataError::Operator { operator, message } if operator == "map_groups(group_fails)" && message.contains("cursed")), "{err}");

        let unique = ds.unique("k").unwrap();
        let unique = unique.as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(unique.values().to_vec(), (0..7).collect::<Vec<i64>>());
    }

    fn row_functions_map_filter_and_flat_map(session, NodeSpec::cpus(2.0)) {
        let tagged: Vec<Tagged> = prism_data::range(5).map(tag).iter_rows().unwrap().collect::<prism_data::Result<_>>().unwrap();
        assert_eq!(tagged[3], Tagged { id: 3, tag: "#3".into() });
        assert_eq!(tagged.len(), 5);
        let kept = prism_data::range(10).filter_rows(divisible_by_three);
        assert_eq!(all_ints(&kept.collect().unwrap(), "id"), vec![0, 3, 6, 9]);
        assert_eq!(kept.schema().unwrap().field(0).name(), "id");
        let repeated = prism_data::range(6).flat_map(repeat);
        assert_eq!(all_ints(&repeated.collect().unwrap(), "id"), vec![1, 2, 2, 4, 5, 5]);
        // Rows a function drops entirely leave an empty block that sinks still read.
        let none = prism_data::range(3).filter(col("id").eq(lit(0))).flat_map(repeat);
        assert_eq!(none.count().unwrap(), 0);
        assert_eq!(none.sum("id").unwrap(), None);
        let err = prism_data::range(3).map(unregistered_row_fn).count().unwrap_err();
        assert!(matches!(&err, DataError::Unregistered(m) if m.contains("register_row_map!")), "{err}");
    }

    fn text_and_binary_files(session, NodeSpec::cpus(2.0)) {
        let dir = TempDir::new("text");
        let texts = dir.path("texts");
        std::fs::create_dir_all(&texts).unwrap();
        std::fs::write(texts.join("a.txt"), "the quick\nbrown fox\r\n\njumps\n").unwrap();
        std::fs::write(texts.join("b.txt"), "over the lazy dog").unwrap();
        std::fs::write(texts.join("skip.md"), "not a text file of the set").unwrap();
        let lines = prism_data::read_text(&texts).unwrap();
        let got: Vec<String> = lines.collect().unwrap().iter().flat_map(|b| {
            let c = b.column_by_name("text").unwrap().as_any().downcast_ref::<StringArray>().unwrap().clone();
            (0..c.len()).map(move |i| c.value(i).to_string())
        }).collect();
        assert_eq!(got, vec!["the quick", "brown fox", "", "jumps", "over the lazy dog"]);
        assert_eq!(lines.filter(col("text").not_eq(lit(""))).count().unwrap(), 4);

        let bins = dir.path("bins");
        std::fs::create_dir_all(&bins).unwrap();
        for i in 0..3u8 {
            std::fs::write(bins.join(format!("{i}.bin")), vec![i; 100 * (i as usize + 1)]).unwrap();
        }
        let files = prism_data::read_binary_files(&bins).unwrap();
        let blocks = files.collect().unwrap();
        let b = prism_data::arrow::compute::concat_batches(&blocks[0].schema(), &blocks).unwrap();
        let bytes = b.column_by_name("bytes").unwrap().as_any().downcast_ref::<prism_data::arrow::array::BinaryArray>().unwrap();
        let paths = b.column_by_name("path").unwrap().as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(bytes.len(), 3);
        for i in 0..3 {
            assert!(paths.value(i).ends_with(&format!("{i}.bin")));
            assert_eq!(bytes.value(i), vec![i as u8; 100 * (i + 1)].as_slice());
        }
        assert!(matches!(prism_data::read_text(dir.path("none.txt")), Err(DataError::NotFound { .. })));
        assert!(matches!(prism_data::read_binary_files(dir.path("empty-*")), Err(DataError::NotFound { .. })));
    }

    fn stats_report_every_stage(session, NodeSpec::cpus(2.0)) {
        let ds = prism_data::from_batches(keyed_blocks(4, 100, 3)).unwrap().filter(col("x").gt_eq(lit(0))).sort(["k"]).with_column("y", col("x").mul(lit(2)));
        assert!(ds.stats().stages.is_empty(), "nothing has run");
        assert_eq!(ds.count().unwrap(), 400);
        let stats = ds.stats();
        assert_eq!(stats.stages.len(), 2, "{stats}");
        assert_eq!(stats.stages[0].name, "filter(x >= 0)");
        assert_eq!((stats.stages[0].blocks, stats.stages[0].rows), (4, 400));
        assert!(stats.stages[0].bytes >= 400 * 16, "{stats}");
        assert!(stats.stages[0].peak_bytes > 0 && stats.stages[0].peak_bytes <= stats.stages[0].bytes, "{stats}");
        assert_eq!(stats.stages[1].name, "sort(k) -> with_column(y = x * 2)");
        assert_eq!((stats.stages[1].blocks, stats.stages[1].rows), (4, 400));
        assert!(stats.stages[1].wall_time > std::time::Duration::ZERO);
        assert!(stats.to_string().contains("stage 1 sort(k) -> with_column(y = x * 2): 4 blocks, 400 rows"), "{stats}");
        // A dataset made from it has its own.
        assert!(ds.clone().limit(3).stats().stages.is_empty());
    }

    fn map_batches_options_cut_batches_and_hold_resources(session, NodeSpec::cpus(2.0)) {
        let opts = prism_data::MapOptions::default().batch_size(300).num_cpus(0.5);
        let ds = prism_data::range(1000).map_batches_with_options(batch_rows, opts);
        let seen = all_ints(&ds.collect().unwrap(), "seen");
        assert_eq!(seen.len(), 1000);
        assert!(seen[..900].iter().all(|&n| n == 300) && seen[900..].iter().all(|&n| n == 100), "{:?}", &seen[895..905]);
        assert_eq!(ds.stats().stages[0].name, "map_batches(batch_rows, batch_size = 300)");
        // A call no node can hold fails with the scheduler's reason instead of waiting.
        let gpus = prism_data::range(10).map_batches_with_options(batch_rows, prism_data::MapOptions::default().num_gpus(1.0));
        let err = gpus.count().unwrap_err();
        assert!(err.to_string().to_lowercase().contains("gpu"), "{err}");
        // The same for a stage that takes blocks from the store (after a limit).
        let after_limit = prism_data::range(10).limit(5).map_batches_with_options(batch_rows, prism_data::MapOptions::default().num_gpus(1.0));
        let err = after_limit.count().unwrap_err();
        assert!(err.to_string().to_lowercase().contains("gpu"), "{err}");
        assert!(matches!(prism_data::range(1).map_batches_with_options(batch_rows, prism_data::MapOptions::default().batch_size(0)).count(), Err(DataError::Invalid(_))));
    }
}
