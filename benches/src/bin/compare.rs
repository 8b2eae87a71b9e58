//! The `compare` harness: measures prism on the workloads W0–W10 (W9 with wrk), T1 (data-parallel
//! training) and ALLREDUCE of the shared workload list, exactly as the Ray scripts measure Ray, and prints one table (or JSON with the
//! keys of the workload list). Given the folder of the Ray scripts' JSON results, it
//! prints Ray's figure and the ratio beside each of ours.
//!
//! ```sh
//! cargo run --release -p prism-benches --bin compare              # the table
//! cargo run --release -p prism-benches --bin compare -- --json    # machine-readable
//! cargo run --release -p prism-benches --bin compare -- --ray DIR # beside Ray's figures
//! cargo run --release -p prism-benches --bin compare -- --only W1,W3
//! cargo build --release && cargo run --release -p prism-benches --bin compare -- --mode cluster
//! ```
//!
//! `--mode cluster` starts a head and two nodes of one CPU each on loopback addresses
//! (from the `prism` binary built next to this one), or uses the running cluster given
//! with `--address HOST:PORT`, and measures W0 (the CLI start of a head), W1 and W2
//! (together), W9 (the replica in a node's worker process), W11, W12 (a 1 GiB object moved between two nodes), W13 (a million
//! tasks in waves, and whether memory grows) and ALLREDUCE (among workers on the
//! nodes: through their memory when the nodes share a machine, and every byte over the
//! TCP ring) through it;
//! `--only` picks some of them there too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use prism_benches::allreduce::{self, AllReduceConfig};
use prism_benches::w9::{self, NoopDeployment};
use prism_benches::{median, noop, peak_rss, Noop};
use prism_examples::matrix::{add, chain_sum, multiply, random_matrix, tree_sum, Matrix};
use prism_examples::sleep::{func1, func2, sleep_for, SlowCounter, SLEEPS};
use prism_examples::t1::{self, T1Config, T1Figures};
use prism_train::ScalingConfig;
use serde_json::{json, Value as Json};

const REPS: usize = 3;

/// Measures one workload.
type Workload = fn() -> Vec<Figure>;

/// One measured figure.
struct Figure {
    key: &'static str,
    value: Json,
    unit: &'static str,
    /// Whether more is better (rates) or less (times).
    higher_is_better: bool,
}

fn figure(key: &'static str, value: f64, unit: &'static str) -> Figure {
    Figure {
        key,
        value: json!(value),
        unit,
        higher_is_better: unit.ends_with("/s") || unit == "GB/s" || unit == "acc",
    }
}

fn reps(mut f: impl FnMut() -> f64) -> f64 {
    median((0..REPS).map(|_| f()).collect())
}

fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

fn init(cpus: f64) {
    prism::init_with(prism::Config::default().num_cpus(cpus)).expect("prism starts");
}

/// W0 in a fresh process: `init` plus the first task's round trip.
fn w0_child() {
    let t = Instant::now();
    prism::init_with(prism::Config::default().num_cpus(2.0)).expect("prism starts");
    assert_eq!(prism::get(&noop::remote()).expect("first task"), 1);
    println!("{}", secs(t));
    prism::shutdown();
}

fn w0() -> Vec<Figure> {
    let exe = std::env::current_exe().expect("own path");
    let runs = (0..REPS)
        .map(|_| {
            let out = Command::new(&exe)
                .arg("--w0-child")
                .output()
                .expect("child runs");
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<f64>()
                .expect("child prints seconds")
        })
        .collect();
    vec![figure("W0_init_first_task_s", median(runs), "s")]
}

/// W1's two rates through the current runtime: 10,000 tasks submitted then got, and
/// 1,000 submitted and got one at a time.
fn task_rates() -> (f64, f64) {
    prism::get_all(&(0..200).map(|_| noop::remote()).collect::<Vec<_>>()).expect("warm-up");
    let async_rate = reps(|| {
        let t = Instant::now();
        let refs: Vec<_> = (0..10_000).map(|_| noop::remote()).collect();
        assert_eq!(
            prism::get_all(&refs).expect("tasks").iter().sum::<i64>(),
            10_000
        );
        10_000.0 / secs(t)
    });
    let sync_rate = reps(|| {
        let t = Instant::now();
        for _ in 0..1_000 {
            assert_eq!(prism::get(&noop::remote()).expect("task"), 1);
        }
        1_000.0 / secs(t)
    });
    (async_rate, sync_rate)
}

/// W2's two rates: calls of one actor's no-op method, in a burst and one at a time.
fn actor_rates() -> (f64, f64) {
    let a = Noop::remote();
    prism::get(&a.noop()).expect("the actor starts");
    let async_rate = reps(|| {
        let t = Instant::now();
        let refs: Vec<_> = (0..10_000).map(|_| a.noop()).collect();
        assert_eq!(
            prism::get_all(&refs).expect("calls").iter().sum::<i64>(),
            10_000
        );
        10_000.0 / secs(t)
    });
    let sync_rate = reps(|| {
        let t = Instant::now();
        for _ in 0..1_000 {
            assert_eq!(prism::get(&a.noop()).expect("call"), 1);
        }
        1_000.0 / secs(t)
    });
    (async_rate, sync_rate)
}

fn w1() -> Vec<Figure> {
    init(2.0);
    let (async_rate, sync_rate) = task_rates();
    prism::shutdown();
    vec![
        figure("W1_tasks_async_per_s", async_rate, "tasks/s"),
        figure("W1_tasks_sync_per_s", sync_rate, "tasks/s"),
    ]
}

fn w2() -> Vec<Figure> {
    init(2.0);
    let (async_rate, sync_rate) = actor_rates();
    prism::shutdown();
    vec![
        figure("W2_actor_async_calls_per_s", async_rate, "calls/s"),
        figure("W2_actor_sync_calls_per_s", sync_rate, "calls/s"),
    ]
}

fn w3() -> Vec<Figure> {
    init(2.0);
    let puts = reps(|| {
        let t = Instant::now();
        let refs: Vec<_> = (0..10_000i64).map(prism::put).collect();
        let dt = secs(t);
        drop(refs);
        10_000.0 / dt
    });
    let len = 100 * 1024 * 1024 / 8;
    let gb = (len * 8) as f64 / 1e9;
    let (mut put, mut put_copy, mut get, mut get_copy) = (vec![], vec![], vec![], vec![]);
    for _ in 0..REPS {
        let data: Vec<f64> = (0..len).map(|i| i as f64).collect();
        let t = Instant::now();
        let copy = prism::put(data.clone());
        put_copy.push(gb / secs(t));
        drop(copy);
        let t = Instant::now();
        let r = prism::put(data);
        put.push(gb / secs(t));
        let t = Instant::now();
        let shared = prism::get_arc(&r).expect("get");
        get.push(gb / secs(t));
        assert_eq!(shared[12345], 12345.0);
        let t = Instant::now();
        let owned = prism::get(&r).expect("get");
        get_copy.push(gb / secs(t));
        assert_eq!(owned.len(), len);
    }
    prism::shutdown();
    vec![
        figure("W3_small_put_per_s", puts, "puts/s"),
        figure("W3_100MiB_put_GBps", median(put), "GB/s"),
        figure("W3_100MiB_get_GBps", median(get), "GB/s"),
        figure("W3_100MiB_put_copy_GBps", median(put_copy), "GB/s"),
        figure("W3_100MiB_get_copy_GBps", median(get_copy), "GB/s"),
    ]
}

fn sleep_makespan(cpus: f64) -> f64 {
    init(cpus);
    let m = reps(|| {
        let t = Instant::now();
        let refs: Vec<_> = SLEEPS.iter().map(|&s| sleep_for::remote(s)).collect();
        assert_eq!(prism::get_all(&refs).expect("sleeps"), SLEEPS);
        secs(t)
    });
    prism::shutdown();
    m
}

fn w4() -> Vec<Figure> {
    vec![
        figure("W4_makespan_cpus2_s", sleep_makespan(2.0), "s"),
        figure("W4_makespan_cpus16_s", sleep_makespan(16.0), "s"),
    ]
}

fn w5() -> Vec<Figure> {
    const N: usize = 1000;
    let agg_in_process = reps(|| {
        let t = Instant::now();
        let m: Vec<_> = (0..4).map(|s| Matrix::random_normal(N, s)).collect();
        let out = m[0].matmul(&m[1]).add(&m[2].matmul(&m[3]));
        assert!(out.total().is_finite());
        secs(t)
    });
    init(2.0);
    let agg = reps(|| {
        let t = Instant::now();
        let m: Vec<_> = (0..4).map(|s| random_matrix::remote(N, s)).collect();
        let p1 = multiply::remote(&m[0], &m[1]);
        let p2 = multiply::remote(&m[2], &m[3]);
        let out = prism::get_arc(&add::remote(&p1, &p2)).expect("aggregation");
        assert!(out.total().is_finite());
        secs(t)
    });
    let tree = reps(|| {
        let t = Instant::now();
        let xs: Vec<_> = (0..16).map(|s| random_matrix::remote(N, s)).collect();
        prism::get_arc(&tree_sum(xs)).expect("tree");
        secs(t)
    });
    let chain = reps(|| {
        let t = Instant::now();
        let xs: Vec<_> = (0..16).map(|s| random_matrix::remote(N, s)).collect();
        prism::get_arc(&chain_sum(xs)).expect("chain");
        secs(t)
    });
    prism::shutdown();
    vec![
        figure("W5_matmul_agg_s", agg, "s"),
        figure("W5_matmul_agg_one_process_s", agg_in_process, "s"),
        figure("W5_tree_sum16_s", tree, "s"),
        figure("W5_chain_sum16_s", chain, "s"),
    ]
}

fn w6() -> Vec<Figure> {
    init(4.0);
    let m = reps(|| {
        let t = Instant::now();
        let refs: Vec<_> = (1..=4).map(|x| func2::remote(func1::remote(x))).collect();
        assert_eq!(prism::get_all(&refs).expect("chains"), vec![3, 5, 7, 9]);
        secs(t)
    });
    prism::shutdown();
    vec![figure("W6_makespan_s", m, "s")]
}

fn w7() -> Vec<Figure> {
    init(2.0);
    let m = reps(|| {
        let t = Instant::now();
        let cs = [SlowCounter::remote(0), SlowCounter::remote(0)];
        let refs: Vec<_> = cs
            .iter()
            .flat_map(|c| (0..3).map(move |_| c.increment(1.0)))
            .collect();
        assert_eq!(
            prism::get_all(&refs).expect("counters"),
            vec![1, 2, 3, 1, 2, 3]
        );
        let dt = secs(t);
        for c in &cs {
            prism::kill(c);
        }
        dt
    });
    prism::shutdown();
    vec![figure("W7_makespan_s", m, "s")]
}

/// A million no-op tasks submitted then got, in a fresh process so that its peak RSS is
/// its own.
/// W8: the SVM-on-digits search, 30 candidates × 5 folds on two CPUs in the embedded
/// runtime: random search drawing scikit-learn's candidates for `random_state=0` (the
/// ones Ray's joblib script scores), its wall time and best score put beside Ray's
/// joblib backend and beside Ray Tune (a random search of its own draws); and TPE
/// (seed 0), alone.
fn w8() -> Vec<Figure> {
    use prism_tune::cv::{self, Quiet};
    use prism_tune::svc::Svc;
    use prism_tune::{datasets, loguniform, RandomSearch, Space, Tpe};
    init(2.0);
    let data = datasets::digits();
    let space = Space::new()
        .add("C", loguniform(1e-2, 1e3))
        .add("gamma", loguniform(1e-5, 1e-1));
    let mut best = 0.0;
    let wall = reps(|| {
        let mut search = RandomSearch::sklearn(&space, 30, 0).expect("space");
        let r = cv::search::<Svc>(&data, &mut search, 5, 4, &mut Quiet).expect("search");
        best = r.best_score().expect("a best");
        r.elapsed.as_secs_f64()
    });
    let mut tpe_best = 0.0;
    let tpe_wall = reps(|| {
        let mut search = Tpe::new(&space, 30, 0).expect("space");
        let r = cv::search::<Svc>(&data, &mut search, 5, 4, &mut Quiet).expect("search");
        tpe_best = r.best_score().expect("a best");
        r.elapsed.as_secs_f64()
    });
    prism::shutdown();
    vec![
        figure("W8_wall_s", wall, "s"),
        figure("W8_best_score", best, "acc"),
        figure("W8_wall_vs_tune_s", wall, "s"),
        figure("W8_best_vs_tune_score", best, "acc"),
        figure("W8_tpe_wall_s", tpe_wall, "s"),
        figure("W8_tpe_best_score", tpe_best, "acc"),
    ]
}

/// `id * 2` for W10's `map_batches`.
fn double_id(
    b: prism_data::arrow::array::RecordBatch,
) -> prism_data::Result<prism_data::arrow::array::RecordBatch> {
    use prism_data::arrow::array::{Array, Int64Array, RecordBatch};
    use prism_data::arrow::compute::kernels::numeric::mul;
    let id = b
        .column_by_name("id")
        .ok_or_else(|| prism_data::DataError::Invalid("no id".into()))?;
    let two = Int64Array::new_scalar(2);
    let doubled = mul(id, &two)?;
    let _ = doubled.len();
    Ok(RecordBatch::try_new(b.schema(), vec![doubled])?)
}
prism_data::register_batch_fn!(double_id);

/// The W10 CSV: `ray/w10_gen_csv.py`'s file if it is there (Ray reads the same one),
/// else one of the same shape written here (id, x and y standard normal to 6 decimals,
/// k = id % 100; 7,000,000 rows).
fn w10_csv() -> PathBuf {
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};
    use std::io::Write;
    let path = std::env::temp_dir().join("w10.csv");
    if path.exists() {
        return path;
    }
    eprintln!("writing {} (7,000,000 rows) ...", path.display());
    let tmp = path.with_extension("csv.tmp");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp).expect("create the W10 CSV"));
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    writeln!(w, "\"id\",\"x\",\"y\",\"k\"").expect("write");
    for id in 0..7_000_000i64 {
        let x: f64 = StandardNormal.sample(&mut rng);
        let y: f64 = StandardNormal.sample(&mut rng);
        writeln!(w, "{id},{x:.6},{y:.6},{}", id % 100).expect("write");
    }
    w.flush().expect("write");
    drop(w);
    std::fs::rename(&tmp, &path).expect("rename the W10 CSV");
    path
}

/// W10: `range(10,000,000)` through `map_batches(id * 2)` and summed; the W10 CSV
/// read, filtered on `x > 0` and counted (rows read per second). Embedded, two CPUs.
fn w10() -> Vec<Figure> {
    use prism_data::{col, lit, Literal};
    let csv = w10_csv();
    init(2.0);
    const N: u64 = 10_000_000;
    let map = reps(|| {
        let t = Instant::now();
        let s = prism_data::range(N)
            .map_batches(double_id)
            .sum("id")
            .expect("W10 sum");
        let dt = secs(t);
        assert_eq!(s, Some(Literal::Int((N * (N - 1)) as i64)));
        N as f64 / dt
    });
    let rows = 7_000_000.0;
    let csv_rate = reps(|| {
        let t = Instant::now();
        let n = prism_data::read_csv(&csv)
            .expect("the W10 CSV")
            .filter(col("x").gt(lit(0)))
            .count()
            .expect("W10 count");
        let dt = secs(t);
        assert!(n > 3_000_000 && n < 4_000_000, "{n} rows with x > 0");
        rows / dt
    });
    // W10b: group by k, mean of x and y; the table written as Parquet (a file per
    // block), read back and x summed.
    let groupby = reps(|| {
        let t = Instant::now();
        let table = prism_data::read_csv(&csv)
            .expect("the W10 CSV")
            .groupby(&["k"])
            .aggregate(&[prism_data::Agg::mean("x"), prism_data::Agg::mean("y")])
            .expect("W10 groupby");
        let dt = secs(t);
        assert_eq!(table.num_rows(), 100);
        rows / dt
    });
    let dir = std::env::temp_dir().join(format!("prism-w10-parquet-{}", std::process::id()));
    let (mut write, mut read) = (Vec::new(), Vec::new());
    for _ in 0..REPS {
        let _ = std::fs::remove_dir_all(&dir);
        let t = Instant::now();
        let files = prism_data::read_csv(&csv)
            .expect("the W10 CSV")
            .write_parquet(&dir)
            .expect("W10 Parquet write");
        write.push(rows / secs(t));
        assert!(!files.is_empty());
        let t = Instant::now();
        let s = prism_data::read_parquet(&dir)
            .expect("the W10 Parquet files")
            .sum("x")
            .expect("W10 Parquet sum");
        read.push(rows / secs(t));
        assert!(matches!(s, Some(Literal::Float(_))));
    }
    let _ = std::fs::remove_dir_all(&dir);
    prism::shutdown();
    vec![
        figure("W10_map_batches_rows_per_s", map, "rows/s"),
        figure("W10_csv_rows_per_s", csv_rate, "rows/s"),
        figure("W10_groupby_rows_per_s", groupby, "rows/s"),
        figure("W10_parquet_write_rows_per_s", median(write), "rows/s"),
        figure("W10_parquet_read_rows_per_s", median(read), "rows/s"),
    ]
}

fn million_child() {
    prism::init().expect("prism starts");
    let t = Instant::now();
    let refs: Vec<_> = (0..1_000_000).map(|_| noop::remote()).collect();
    let sum: i64 = prism::get_all(&refs).expect("tasks").iter().sum();
    assert_eq!(sum, 1_000_000);
    let dt = secs(t);
    println!("{}", json!({"s": dt, "peak_rss_bytes": peak_rss()}));
}

fn million() -> Vec<Figure> {
    let exe = std::env::current_exe().expect("own path");
    let out = Command::new(exe)
        .arg("--million-child")
        .output()
        .expect("child runs");
    let v: Json = serde_json::from_slice(&out.stdout).expect("child prints JSON");
    vec![
        figure("million_tasks_s", v["s"].as_f64().unwrap_or(f64::NAN), "s"),
        figure(
            "million_tasks_peak_rss_MiB",
            v["peak_rss_bytes"].as_f64().unwrap_or(f64::NAN) / (1 << 20) as f64,
            "MiB",
        ),
    ]
}

/// Ray's figure for one of our keys, from the JSON files the Ray scripts write.
fn ray_figure(dir: &Path, key: &str) -> Option<f64> {
    let read = |file: &str| -> Option<Json> {
        serde_json::from_str(&std::fs::read_to_string(dir.join(file)).ok()?).ok()
    };
    let (file, path): (&str, &[&str]) = match key {
        "W0_init_first_task_s" => ("w0_startup.json", &["median_init_plus_first_task_s"]),
        "W0_head_ready_s" => ("w0_startup.json", &["median_ray_start_s"]),
        "W11_tasks_per_s" => ("w11_cluster.json", &["median_tasks_per_s"]),
        "W1_tasks_async_per_s"
        | "W1_tasks_sync_per_s"
        | "W2_actor_async_calls_per_s"
        | "W2_actor_sync_calls_per_s"
        | "W3_small_put_per_s"
        | "W3_100MiB_put_GBps"
        | "W3_100MiB_get_GBps" => ("w1_w3_micro.json", &[]),
        "W4_makespan_cpus2_s" => ("w4_w6_w7_sleep.json", &["W4_makespan_cpus2", "median"]),
        "W4_makespan_cpus16_s" => ("w4_w6_w7_sleep.json", &["W4_makespan_cpus16", "median"]),
        "W6_makespan_s" => ("w4_w6_w7_sleep.json", &["W6_makespan", "median"]),
        "W7_makespan_s" => (
            "w4_w6_w7_sleep.json",
            &["W7_makespan_incl_actor_creation", "median"],
        ),
        "W5_matmul_agg_s" => ("w5_matmul.json", &["ray_matmul_agg", "median_s_excl_first"]),
        "W5_matmul_agg_one_process_s" => (
            "w5_matmul.json",
            &["numpy_matmul_agg", "median_s_excl_first"],
        ),
        "W5_tree_sum16_s" => ("w5_matmul.json", &["ray_tree_sum16", "median_s_excl_first"]),
        "W5_chain_sum16_s" => (
            "w5_matmul.json",
            &["ray_chain_sum16", "median_s_excl_first"],
        ),
        "W8_wall_s" => ("w8_svm_joblib.json", &["c_ray_backend", "wall_s"]),
        "W10_map_batches_rows_per_s" => ("w10_data.json", &["range_map_sum", "rows_per_s_median"]),
        "W10_csv_rows_per_s" => (
            "w10_data.json",
            &["csv_filter_count_expr", "rows_per_s_median"],
        ),
        "W8_best_score" => ("w8_svm_joblib.json", &["c_ray_backend", "best_score"]),
        "T1_epoch_s_2workers" => ("train_peers.json", &["ray_train", "epoch_s_median"]),
        "T1_samples_per_s_2workers" => ("train_peers.json", &["ray_train", "samples_per_s"]),
        "T1_train_acc" => ("train_peers.json", &["ray_train", "train_acc"]),
        "T1_fit_s_2workers" => ("train_peers.json", &["ray_train", "fit_wall_s"]),
        "W8_wall_vs_tune_s" => ("w8_svm_tune.json", &["tune_wall_s"]),
        "W8_best_vs_tune_score" => ("w8_svm_tune.json", &["best_acc"]),
        "W9_rps" => ("w9_serve.json", &["plain", "rps"]),
        "W9_p50_ms" => ("w9_serve.json", &["plain", "p50"]),
        "W9_p99_ms" => ("w9_serve.json", &["plain", "p99"]),
        "W9_batched_rps" => ("w9_serve.json", &["batched", "rps"]),
        "W9_batched_p50_ms" => ("w9_serve.json", &["batched", "p50"]),
        "W9_batched_p99_ms" => ("w9_serve.json", &["batched", "p99"]),
        _ => return None,
    };
    let doc = read(file)?;
    let mut v = &doc;
    if path.is_empty() {
        v = v.get(key)?.get("median")?;
    }
    for p in path {
        v = v.get(p)?;
    }
    // W9's latencies are wrk's text, `69.00ms`.
    w9::ray_millis(v)
}

/// W0 for the CLI: `prism start --head` until it accepts work, then `prism stop`.
fn w0_head(bin: &Path) -> Vec<Figure> {
    let runs = (0..REPS)
        .map(|i| {
            let dir = std::env::temp_dir().join(format!("prism-w0-{}-{i}", std::process::id()));
            let cli = |args: &[&str]| {
                Command::new(bin)
                    .args(args)
                    .env("PRISM_SESSION_DIR", &dir)
                    .output()
                    .expect("the prism CLI runs")
            };
            let t = Instant::now();
            let out = cli(&["start", "--head", "--port", "0", "--num-cpus", "1"]);
            let ready = secs(t);
            assert!(
                out.status.success(),
                "prism start failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            cli(&["stop"]);
            let _ = std::fs::remove_dir_all(&dir);
            ready
        })
        .collect();
    vec![figure("W0_head_ready_s", median(runs), "s")]
}

#[prism::remote]
fn node_id() -> String {
    prism::context().expect("in a task").node_id
}

/// W1 and W2 through a cluster this process is a driver of.
fn cluster_w1_w2() -> Vec<Figure> {
    let (async_rate, sync_rate) = task_rates();
    let (actor_async, actor_sync) = actor_rates();
    vec![
        figure("W1_tasks_async_per_s", async_rate, "tasks/s"),
        figure("W1_tasks_sync_per_s", sync_rate, "tasks/s"),
        figure("W2_actor_async_calls_per_s", actor_async, "calls/s"),
        figure("W2_actor_sync_calls_per_s", actor_sync, "calls/s"),
    ]
}

/// W11: 10,000 tasks that return where they ran.
fn w11() -> Vec<Figure> {
    let mut counts = Vec::new();
    let w11 = reps(|| {
        let t = Instant::now();
        let refs: Vec<_> = (0..10_000).map(|_| node_id::remote()).collect();
        let ids = prism::get_all(&refs).expect("tasks");
        let rate = 10_000.0 / secs(t);
        let mut by_node: BTreeMap<String, usize> = BTreeMap::new();
        for id in ids {
            *by_node.entry(id).or_default() += 1;
        }
        counts = by_node.into_values().collect();
        rate
    });
    vec![
        figure("W11_tasks_per_s", w11, "tasks/s"),
        Figure {
            key: "W11_node_counts",
            value: json!(counts),
            unit: "tasks",
            higher_is_better: true,
        },
    ]
}

/// A byte buffer of `len` bytes (encoded as one block of bytes, not byte by byte).
#[prism::remote]
fn buffer(len: usize) -> serde_bytes::ByteBuf {
    serde_bytes::ByteBuf::from(vec![7u8; len])
}

/// The buffer's length, and the bytes and nanoseconds this worker has spent pulling
/// objects so far.
#[prism::remote]
fn buffer_len(b: serde_bytes::ByteBuf) -> (usize, u64, u64) {
    let s = prism::store_stats().expect("in a worker");
    (b.len(), s.bytes_pulled, s.pull_time.as_nanos() as u64)
}

/// W12: a 1 GiB object made on one node and read by a task on another. Two figures: the
/// pull between the nodes as the reading worker timed it (connecting to the last byte),
/// and the whole read from the reader's submission to its result (the pull, decoding
/// into the task's argument and the task's round trip).
fn w12() -> Vec<Figure> {
    const GIB: usize = 1 << 30;
    let nodes = prism::nodes().expect("the cluster's nodes");
    let [a, b] = [&nodes[0], &nodes[nodes.len() - 1]].map(|n| prism::Strategy::NodeAffinity {
        node_id: n.node_id.clone(),
        soft: false,
    });
    let (mut pulled, mut nanos) = (0, 0);
    let mut pull_rates = Vec::new();
    let end_to_end = reps(|| {
        let made = buffer::options().scheduling(a.clone()).remote(GIB);
        prism::wait(std::slice::from_ref(&made), 1, None).expect("made");
        let t = Instant::now();
        let read = buffer_len::options().scheduling(b.clone()).remote(&made);
        let (len, bytes, ns) = prism::get(&read).expect("read on the other node");
        let rate = GIB as f64 / secs(t) / 1e9;
        assert_eq!(len, GIB);
        pull_rates.push((bytes - pulled) as f64 / (ns - nanos) as f64);
        (pulled, nanos) = (bytes, ns);
        rate
    });
    vec![
        figure("W12_1GiB_pull_GB_per_s", median(pull_rates), "GB/s"),
        figure("W12_1GiB_read_GB_per_s", end_to_end, "GB/s"),
    ]
}

/// The other side of [`rtt_floor`]: echoes 64-byte messages until the socket closes.
fn echo_child(address: &str) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(address).expect("connects back");
    s.set_nodelay(true).expect("nodelay");
    let mut b = [0u8; 64];
    while s.read_exact(&mut b).is_ok() {
        if s.write_all(&b).is_err() {
            return;
        }
    }
}

/// The floor under every synchronous figure of the cluster: the round trip of a 64-byte
/// message between two processes over loopback TCP with blocking sockets, no runtime.
/// A synchronous call through prism is at least one such round trip (two through the
/// nodes), plus the hand-offs between threads inside each process.
fn rtt_floor() -> Vec<Figure> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let address = listener.local_addr().expect("address").to_string();
    let exe = std::env::current_exe().expect("own path");
    let mut child = Command::new(exe)
        .args(["--echo-child", &address])
        .spawn()
        .expect("starts the echo process");
    let (mut s, _) = listener.accept().expect("the echo process connects");
    s.set_nodelay(true).expect("nodelay");
    let mut b = [0u8; 64];
    let rtt = reps(|| {
        let t = Instant::now();
        for _ in 0..10_000 {
            s.write_all(&b).expect("write");
            s.read_exact(&mut b).expect("read");
        }
        secs(t) / 10_000.0 * 1e6
    });
    drop(s);
    let _ = child.wait();
    vec![figure("RTT_two_processes_us", rtt, "us")]
}

/// The resident memory of a process and its descendants, in bytes.
fn tree_rss(root: u32) -> u64 {
    let field = |pid: u32, file: &str, key: &str| -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
        text.lines()
            .find(|l| l.starts_with(key))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let mut total = field(root, "status", "VmRSS:").unwrap_or(0) * 1024;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if field(pid, "status", "PPid:") == Some(root as u64) && pid != root {
            total += tree_rss(pid);
        }
    }
    total
}

/// W13: a million no-op tasks through the cluster in waves of 10,000 whose results are
/// dropped: the rate, and how much the memory of every process (this driver, the
/// daemons, the workers) grew from the tenth wave to the last. Nothing a finished task
/// leaves behind may accumulate.
fn w13(daemons: &[u32]) -> Vec<Figure> {
    let rss = || tree_rss(std::process::id()) + daemons.iter().map(|p| tree_rss(*p)).sum::<u64>();
    let t = Instant::now();
    let mut after_ten = 0;
    for wave in 0..100 {
        let refs: Vec<_> = (0..10_000).map(|_| noop::remote()).collect();
        let sum: i64 = prism::get_all(&refs).expect("tasks").iter().sum();
        assert_eq!(sum, 10_000);
        if wave == 9 {
            after_ten = rss();
        }
    }
    let rate = 1_000_000.0 / secs(t);
    let growth = rss().saturating_sub(after_ten) as f64 / (1 << 20) as f64;
    vec![
        figure("W13_million_tasks_per_s", rate, "tasks/s"),
        figure("W13_rss_growth_MiB", growth, "MiB"),
    ]
}

/// ALLREDUCE embedded: 100 MB of f32 among 4 one-CPU workers in this process (shared
/// memory), against the ring's bound with B from a memory copy; and among 2, each with
/// a core of its own here.
fn allreduce() -> Vec<Figure> {
    init(4.0);
    let link = allreduce::memcpy_bandwidth;
    let mut figures = allreduce_figures(ScalingConfig::new(4), link, FOUR);
    figures.extend(allreduce_figures(ScalingConfig::new(2), link, TWO));
    prism::shutdown();
    figures
}

/// ALLREDUCE on the cluster: 4 workers of half a CPU spread over the two nodes (a TCP
/// ring whose all-reduces go through the workers' memory, the nodes sharing this
/// machine), against the bound with B from one loopback TCP stream; the same with every
/// byte over TCP; and 2 workers, one per node.
fn cluster_allreduce() -> Vec<Figure> {
    let spread = |n: usize, cpus: f64| {
        ScalingConfig::new(n)
            .cpus_per_worker(cpus)
            .strategy(prism::PlacementStrategy::Spread)
    };
    let link = allreduce::loopback_tcp_bandwidth;
    let mut figures = allreduce_figures(spread(4, 0.5), link, FOUR);
    let tcp = spread(4, 0.5).transport(prism_train::Transport::Tcp);
    figures.extend(allreduce_figures(tcp, link, FOUR_TCP));
    figures.extend(allreduce_figures(spread(2, 1.0), link, TWO));
    figures
}

/// The keys of one all-reduce measurement: its seconds, the bound, the fraction of it
/// and (once per run) the link's bandwidth.
type AllReduceKeys = [&'static str; 4];

const FOUR: AllReduceKeys = [
    "ALLREDUCE_100MB_4workers_s",
    "ALLREDUCE_bound_s",
    "ALLREDUCE_fraction_of_bound",
    "ALLREDUCE_link_GBps",
];

const FOUR_TCP: AllReduceKeys = [
    "ALLREDUCE_tcp_100MB_4workers_s",
    "ALLREDUCE_tcp_bound_s",
    "ALLREDUCE_tcp_fraction_of_bound",
    "ALLREDUCE_tcp_link_GBps",
];

const TWO: AllReduceKeys = [
    "ALLREDUCE_100MB_2workers_s",
    "ALLREDUCE_2workers_bound_s",
    "ALLREDUCE_2workers_fraction_of_bound",
    "ALLREDUCE_2workers_link_GBps",
];

fn allreduce_figures(
    scaling: ScalingConfig,
    link: fn(usize) -> f64,
    [time, bound_key, fraction, link_key]: AllReduceKeys,
) -> Vec<Figure> {
    const LEN: usize = 25_000_000;
    let bytes = LEN * 4;
    let workers = scaling.num_workers;
    let config = AllReduceConfig { len: LEN, reps: 5 };
    let (seconds, transport) = allreduce::all_reduce_seconds(scaling, config);
    eprintln!("ALLREDUCE: {workers} workers over {transport}");
    let bandwidth = link(bytes);
    let bound = allreduce::ring_bound_s(workers, bytes as f64, bandwidth);
    vec![
        figure(time, seconds, "s"),
        figure(bound_key, bound, "s"),
        figure(link_key, bandwidth / 1e9, "GB/s"),
        figure(fraction, bound / seconds, "of bound"),
    ]
}

/// W9: the digits SVC behind the ingress, one replica, measured with wrk as Ray's
/// script measures Ray Serve; then the batched handler; then a no-op handler beside a
/// bare axum hello-world, both GETs, in turns three times each (medians).
fn w9() -> Vec<Figure> {
    init(2.0);
    let serve = prism_serve::Serve::start(prism_serve::HttpOptions::default().port(0))
        .expect("the ingress starts");
    let load = w9_load();
    let mut figures = w9_digits(&serve, &load);
    serve
        .deploy::<NoopDeployment>(prism_serve::DeploymentOptions::new("noop"), ())
        .expect("the no-op deploys");
    let axum_at = w9::bare_axum().expect("a bare axum server starts");
    // In turns, three times each, so that the machine's drift falls on both alike.
    let (mut noop, mut bare) = (Vec::new(), Vec::new());
    for _ in 0..REPS {
        noop.push(
            load.run(&serve.url("/noop"), false, 10)
                .expect("W9 no-op")
                .rps,
        );
        let axum_url = format!("http://{axum_at}/");
        bare.push(load.run(&axum_url, false, 10).expect("W9 bare axum").rps);
    }
    let (noop, bare) = (median(noop), median(bare));
    serve.shutdown();
    prism::shutdown();
    figures.extend([
        figure("W9_noop_rps", noop, "req/s"),
        figure("W9_bare_axum_rps", bare, "req/s"),
        figure("W9_noop_fraction_of_axum", noop / bare, "x"),
    ]);
    figures
}

fn w9_load() -> w9::Load {
    let (body, _) = prism_examples::digits::first_image_body();
    let dir = std::env::temp_dir().join(format!("prism-w9-{}", std::process::id()));
    w9::Load::new(&dir, &body).expect("wrk's script and body are written")
}

/// W9's digits deployment on `serve`, plain and batched.
fn w9_digits(serve: &prism_serve::Serve, load: &w9::Load) -> Vec<Figure> {
    use prism_examples::digits::{Digits, DigitsConfig};
    let options = prism_serve::DeploymentOptions::new("digits").max_ongoing_requests(8);
    serve
        .deploy::<Digits>(options, DigitsConfig::default())
        .expect("the digits deploy");
    let plain = load.run(&serve.url("/digits"), true, 10).expect("W9");
    let batched = load
        .run(&serve.url("/digits/batch"), true, 10)
        .expect("W9 batched");
    serve.delete("digits").expect("the digits stop");
    vec![
        figure("W9_rps", plain.rps, "req/s"),
        figure("W9_p50_ms", plain.p50_ms, "ms"),
        figure("W9_p99_ms", plain.p99_ms, "ms"),
        figure("W9_batched_rps", batched.rps, "req/s"),
        figure("W9_batched_p50_ms", batched.p50_ms, "ms"),
        figure("W9_batched_p99_ms", batched.p99_ms, "ms"),
    ]
}

/// W9 on the cluster: the replica in a node's worker process, the ingress here.
fn cluster_w9() -> Vec<Figure> {
    let serve = prism_serve::Serve::start(prism_serve::HttpOptions::default().port(0))
        .expect("the ingress starts");
    let figures = w9_digits(&serve, &w9_load());
    serve.shutdown();
    figures
}

/// T1: the data-parallel MLP on one worker and on two, run in turns three times each
/// (so that the machine's drift falls on both alike); medians.
fn t1() -> Vec<Figure> {
    let (steal0, started) = (stolen_s(), Instant::now());
    init(2.0);
    let config = T1Config::default();
    let (mut one, mut two) = (Vec::new(), Vec::new());
    for _ in 0..REPS {
        let quiet = prism_train::RunConfig::quiet();
        one.push(t1::run(&config, 1, quiet.clone()).expect("T1 on one worker"));
        two.push(t1::run(&config, 2, quiet).expect("T1 on two workers"));
    }
    prism::shutdown();
    // The share of the cores' time the host took for itself while T1 ran: the noise
    // its figures carry.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let steal = (stolen_s() - steal0) / (secs(started) * cores);
    let of = |runs: &[T1Figures], f: fn(&T1Figures) -> f64| median(runs.iter().map(f).collect());
    let epoch = |r: &T1Figures| r.epoch_s_median;
    let speedup = of(&one, epoch) / of(&two, epoch);
    vec![
        figure("T1_epoch_s_1worker", of(&one, epoch), "s"),
        figure("T1_epoch_s_2workers", of(&two, epoch), "s"),
        figure(
            "T1_samples_per_s_1worker",
            of(&one, |r| r.samples_per_s),
            "samples/s",
        ),
        figure(
            "T1_samples_per_s_2workers",
            of(&two, |r| r.samples_per_s),
            "samples/s",
        ),
        figure("T1_speedup_2workers", speedup, "x"),
        figure("T1_train_acc", of(&two, |r| r.train_acc), "acc"),
        figure("T1_train_acc_1worker", of(&one, |r| r.train_acc), "acc"),
        figure("T1_fit_s_2workers", of(&two, |r| r.fit_s), "s"),
        figure("T1_cpu_steal_fraction", steal, "of cores"),
    ]
}

/// Seconds of all cores' time stolen by the hypervisor so far (`/proc/stat`), 0 where
/// the kernel does not say.
fn stolen_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .and_then(|l| l.split_whitespace().nth(8))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    ticks / 100.0 // USER_HZ
}

/// The cluster workloads, those of `only` if given.
fn cluster_mode(address: Option<String>, only: Option<&[String]>) -> Vec<Figure> {
    let bin = prism::testing::sibling_prism_bin()
        .expect("the prism binary next to this one: run `cargo build --release` first");
    let wanted = |name: &str| only.is_none_or(|o| o.iter().any(|w| w == name));
    let mut figures = rtt_floor();
    if wanted("W0") {
        figures.extend(w0_head(&bin));
    }
    let _cluster;
    let mut daemons = Vec::new();
    match address {
        Some(a) => {
            prism::init_with(prism::Config::default().address(a)).expect("joins the cluster")
        }
        None => {
            let c = prism::testing::LocalCluster::start(
                &bin,
                &[("127.0.0.2", 1.0), ("127.0.0.3", 1.0)],
            )
            .expect("the local cluster starts");
            c.connect().expect("joins the local cluster");
            daemons = (0..3).map(|i| c.daemon_pid(i)).collect();
            _cluster = c;
        }
    }
    let workloads: [(&str, Workload); 5] = [
        ("W1", cluster_w1_w2),
        ("W9", cluster_w9),
        ("W11", w11),
        ("W12", w12),
        ("ALLREDUCE", cluster_allreduce),
    ];
    for (name, run) in workloads {
        if wanted(name) || (name == "W1" && wanted("W2")) {
            figures.extend(run());
        }
    }
    if wanted("W13") {
        figures.extend(w13(&daemons));
    }
    prism::shutdown();
    figures
}

fn main() {
    // In a worker process of the cluster mode this serves tasks and never returns.
    prism::enter_if_worker();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--w0-child") {
        return w0_child();
    }
    if args.iter().any(|a| a == "--million-child") {
        return million_child();
    }
    if let Some(i) = args.iter().position(|a| a == "--echo-child") {
        return echo_child(args.get(i + 1).map_or("", String::as_str));
    }
    let as_json = args.iter().any(|a| a == "--json");
    let value_of = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let ray_dir = value_of("--ray").map(PathBuf::from);
    let only: Option<Vec<String>> =
        value_of("--only").map(|s| s.split(',').map(|w| w.trim().to_uppercase()).collect());
    let workloads: [(&str, Workload); 14] = [
        ("W0", w0),
        ("W1", w1),
        ("W2", w2),
        ("W3", w3),
        ("W4", w4),
        ("W5", w5),
        ("W6", w6),
        ("W7", w7),
        ("W8", w8),
        ("W9", w9),
        ("W10", w10),
        ("MILLION", million),
        ("T1", t1),
        ("ALLREDUCE", allreduce),
    ];
    let mut figures = Vec::new();
    let cluster = value_of("--mode").as_deref() == Some("cluster");
    if cluster {
        figures = cluster_mode(value_of("--address"), only.as_deref());
    }
    // The embedded workloads, every one asked for (all without `--only`).
    for (name, run) in workloads.into_iter().filter(|_| !cluster) {
        if only.as_ref().is_some_and(|o| !o.iter().any(|w| w == name)) {
            continue;
        }
        if !as_json {
            eprintln!("measuring {name} ...");
        }
        figures.extend(run());
    }
    if as_json {
        let map: BTreeMap<&str, &Json> = figures.iter().map(|f| (f.key, &f.value)).collect();
        println!("{}", serde_json::to_string_pretty(&map).expect("JSON"));
        return;
    }
    println!(
        "{:<30} {:>14} {:<8} {:>12} {:>10}",
        "figure", "prism", "unit", "ray", "prism/ray"
    );
    for f in &figures {
        let Some(ours) = f.value.as_f64() else {
            println!("{:<30} {:>14} {:<8}", f.key, f.value.to_string(), f.unit);
            continue;
        };
        let theirs = ray_dir.as_deref().and_then(|d| ray_figure(d, f.key));
        let (ray_col, ratio_col) = match theirs {
            Some(r) => {
                let better = if f.higher_is_better {
                    ours / r
                } else {
                    r / ours
                };
                (format!("{r:.4}"), format!("{better:.1}x"))
            }
            None => ("-".into(), "-".into()),
        };
        println!(
            "{:<30} {:>14.4} {:<8} {:>12} {:>10}",
            f.key, ours, f.unit, ray_col, ratio_col
        );
    }
    if ray_dir.is_some() {
        println!("(prism/ray: how many times better prism is; rates divided, times inverted)");
    }
}
