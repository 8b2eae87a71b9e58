//! Per-deployment counters, kept by its router and rendered on `/metrics` in the
//! Prometheus text format: requests by status, a latency histogram, batch sizes, and
//! (read when rendered) replicas, requests in flight and queued.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Upper bounds of the latency buckets, in milliseconds.
const LATENCY_MS: [f64; 14] = [
    0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0, 30000.0,
];

/// Upper bounds of the batch-size buckets.
const BATCH: [f64; 8] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

/// A cumulative histogram over fixed bounds.
struct Histogram<const N: usize> {
    bounds: [f64; N],
    /// `counts[i]`: observations ≤ `bounds[i]` and above the bound before (the last:
    /// above all).
    counts: [AtomicU64; N],
    over: AtomicU64,
    /// The sum of observations, in thousandths.
    sum_milli: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    fn new(bounds: [f64; N]) -> Self {
        Histogram {
            bounds,
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            over: AtomicU64::new(0),
            sum_milli: AtomicU64::new(0),
        }
    }

    fn observe(&self, v: f64) {
        match self.bounds.iter().position(|b| v <= *b) {
            Some(i) => self.counts[i].fetch_add(1, Ordering::Relaxed),
            None => self.over.fetch_add(1, Ordering::Relaxed),
        };
        self.sum_milli
            .fetch_add((v * 1e3) as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut total = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            total += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {total}");
        }
        total += self.over.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {total}");
        let sum = self.sum_milli.load(Ordering::Relaxed) as f64 / 1e3;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {total}");
    }
}

/// The counters of one deployment.
pub(crate) struct Metrics {
    by_status: Mutex<BTreeMap<u16, u64>>,
    latency: Histogram<14>,
    batches: Histogram<8>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            by_status: Mutex::default(),
            latency: Histogram::new(LATENCY_MS),
            batches: Histogram::new(BATCH),
        }
    }
}

/// What is read live when the metrics are rendered.
pub(crate) struct Gauges {
    pub replicas: usize,
    pub ongoing: usize,
    pub queued: usize,
}

impl Metrics {
    /// A request answered with `status` after `ms` milliseconds.
    pub(crate) fn answered(&self, status: u16, ms: f64) {
        *self
            .by_status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(status)
            .or_default() += 1;
        if status != 503 {
            self.latency.observe(ms);
        }
    }

    /// A batch of `n` sent.
    pub(crate) fn batch(&self, n: usize) {
        self.batches.observe(n as f64);
    }

    /// Requests answered, and of those the ones that failed (status 400 and up).
    pub(crate) fn totals(&self) -> (u64, u64) {
        let m = self.by_status.lock().unwrap_or_else(|p| p.into_inner());
        let all = m.values().sum();
        let errors = m.iter().filter(|(s, _)| **s >= 400).map(|(_, n)| n).sum();
        (all, errors)
    }

    /// Appends this deployment's lines.
    pub(crate) fn render(&self, out: &mut String, deployment: &str, g: &Gauges) {
        let d = format!("deployment=\"{deployment}\"");
        for (status, n) in self
            .by_status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "prism_serve_requests_total{{{d},status=\"{status}\"}} {n}"
            );
        }
        let (_, errors) = self.totals();
        let _ = writeln!(out, "prism_serve_errors_total{{{d}}} {errors}");
        self.latency
            .render(out, "prism_serve_request_latency_ms", &d);
        self.batches.render(out, "prism_serve_batch_size", &d);
        let _ = writeln!(out, "prism_serve_replicas{{{d}}} {}", g.replicas);
        let _ = writeln!(out, "prism_serve_ongoing_requests{{{d}}} {}", g.ongoing);
        let _ = writeln!(out, "prism_serve_queued_requests{{{d}}} {}", g.queued);
    }
}

/// The `# HELP`/`# TYPE` header of the metrics page.
pub(crate) const HEADER: &str = "\
# HELP prism_serve_requests_total Requests answered, by HTTP status.
# TYPE prism_serve_requests_total counter
# HELP prism_serve_errors_total Requests answered with a status of 400 or above.
# TYPE prism_serve_errors_total counter
# HELP prism_serve_request_latency_ms Time from a request's arrival at the router to its answer.
# TYPE prism_serve_request_latency_ms histogram
# HELP prism_serve_batch_size Requests per batch sent to a batched handler.
# TYPE prism_serve_batch_size histogram
# HELP prism_serve_replicas Replicas serving.
# TYPE prism_serve_replicas gauge
# HELP prism_serve_ongoing_requests Requests in flight on replicas.
# TYPE prism_serve_ongoing_requests gauge
# HELP prism_serve_queued_requests Requests waiting for a replica.
# TYPE prism_serve_queued_requests gauge
";
