//! Criterion benches of W1–W5 of the shared workload list, on the embedded runtime
//! (prism is started once with every core of the machine).
//!
//! `cargo bench -p prism-benches --bench runtime`

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use prism_benches::{noop, Noop};
use prism_examples::matrix::{add, multiply, random_matrix, Matrix};
use prism_examples::sleep::{sleep_for, SLEEPS};

fn w1_tasks(c: &mut Criterion) {
    let mut g = c.benchmark_group("w1_tasks");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("submit_then_get_1000", |b| {
        b.iter(|| {
            let refs: Vec<_> = (0..1000).map(|_| noop::remote()).collect();
            prism::get_all(&refs).unwrap()
        })
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("submit_and_get_one", |b| {
        b.iter(|| prism::get(&noop::remote()).unwrap())
    });
    g.finish();
}

fn w2_actor(c: &mut Criterion) {
    let a = Noop::remote();
    prism::get(&a.noop()).unwrap();
    let mut g = c.benchmark_group("w2_actor");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("call_then_get_1000", |b| {
        b.iter(|| {
            let refs: Vec<_> = (0..1000).map(|_| a.noop()).collect();
            prism::get_all(&refs).unwrap()
        })
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("call_and_get_one", |b| {
        b.iter(|| prism::get(&a.noop()).unwrap())
    });
    g.finish();
}

fn w3_objects(c: &mut Criterion) {
    let mut g = c.benchmark_group("w3_objects");
    g.throughput(Throughput::Elements(1));
    g.bench_function("put_small", |b| b.iter(|| prism::put(7i64)));
    let bytes = 100 * 1024 * 1024;
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("put_100MiB", |b| {
        b.iter_batched(
            || vec![1.0_f64; bytes / 8],
            prism::put,
            BatchSize::PerIteration,
        )
    });
    let big = prism::put(vec![1.0_f64; bytes / 8]);
    g.bench_function("get_arc_100MiB", |b| {
        b.iter(|| prism::get_arc(&big).unwrap())
    });
    g.bench_function("get_copy_100MiB", |b| b.iter(|| prism::get(&big).unwrap()));
    g.finish();
}

fn w4_sleep(c: &mut Criterion) {
    // The W4 sleeps scaled down a hundredfold: what is measured is how closely the
    // scheduler packs them, i.e. its overhead over the in-order bound (52 ms on 2 CPUs).
    let mut g = c.benchmark_group("w4_sleep");
    g.sample_size(10);
    g.bench_function("sixteen_sleeps_scaled_1_100", |b| {
        b.iter(|| {
            let refs: Vec<_> = SLEEPS
                .iter()
                .map(|&s| sleep_for::remote(s / 100.0))
                .collect();
            prism::get_all(&refs).unwrap()
        })
    });
    g.finish();
}

fn w5_matmul(c: &mut Criterion) {
    let mut g = c.benchmark_group("w5_matmul");
    g.sample_size(10);
    let a = Matrix::random_normal(1000, 1);
    let b = Matrix::random_normal(1000, 2);
    g.bench_function("product_1000_in_process", |bench| {
        bench.iter(|| a.matmul(&b))
    });
    g.bench_function("aggregation_in_tasks", |bench| {
        bench.iter(|| {
            let m: Vec<_> = (0..4).map(|s| random_matrix::remote(1000, s)).collect();
            let p1 = multiply::remote(&m[0], &m[1]);
            let p2 = multiply::remote(&m[2], &m[3]);
            prism::get_arc(&add::remote(&p1, &p2)).unwrap()
        })
    });
    g.finish();
}

fn runtime() -> Criterion {
    prism::init().expect("prism starts");
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = runtime();
    targets = w1_tasks, w2_actor, w3_objects, w4_sleep, w5_matmul
}
criterion_main!(benches);
