//! The all-reduce figure: 100 MB of `f32` summed among 4 workers of a prism-train run,
//! and the bandwidth bound it is held to, `2(n−1)/n · S / B`, with `B` measured on this
//! machine in the same sitting: a memory copy for ranks that share a process, a
//! loopback TCP stream for ranks that do not.

use std::io::{Read, Write};
use std::time::Instant;

use prism_train::collective::TRANSPORTS;
use prism_train::{ReduceOp, RunConfig, ScalingConfig, TrainContext, TrainLoop, Trainer};
use serde::{Deserialize, Serialize};

/// One all-reduce measurement's size and repetitions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllReduceConfig {
    /// `f32`s per buffer.
    pub len: usize,
    /// Timed all-reduces (after one untimed).
    pub reps: usize,
}

/// Each rank sums a buffer of its rank's value; rank 0 reports the median time of the
/// timed all-reduces, each started together after a barrier, as `seconds`, and what
/// carried them as `transport` (an index into `TRANSPORTS`), and checks the sum.
pub struct AllReduceBench;

impl TrainLoop for AllReduceBench {
    type Config = AllReduceConfig;
    type Shard = ();

    fn train(ctx: &mut TrainContext, c: AllReduceConfig, _: ()) -> prism_train::Result<()> {
        let n = ctx.world_size();
        let fill = ctx.rank() as f32;
        let mut buf = vec![fill; c.len];
        ctx.all_reduce(&mut buf, ReduceOp::Sum)?;
        let mut times = Vec::with_capacity(c.reps);
        for _ in 0..c.reps {
            buf.iter_mut().for_each(|v| *v = fill);
            ctx.barrier()?;
            let t = Instant::now();
            ctx.all_reduce(&mut buf, ReduceOp::Sum)?;
            times.push(t.elapsed().as_secs_f64());
        }
        let want = (n * (n - 1) / 2) as f32;
        if buf.first().is_some_and(|v| *v != want) || buf.last().is_some_and(|v| *v != want) {
            return Err(prism_train::TrainError::Loop(format!(
                "sum {} not {want}",
                buf[0]
            )));
        }
        let transport = TRANSPORTS
            .iter()
            .position(|t| *t == ctx.transport())
            .unwrap_or(TRANSPORTS.len()) as f64;
        ctx.report(
            [("seconds", crate::median(times)), ("transport", transport)],
            None,
        )
    }
}
prism_train::register_loop!(AllReduceBench);

/// The median seconds of an all-reduce of `len` `f32`s among `workers` ranks under
/// `scaling`'s placement, and what carried it.
pub fn all_reduce_seconds(scaling: ScalingConfig, config: AllReduceConfig) -> (f64, &'static str) {
    let result = Trainer::<AllReduceBench>::new(config, scaling)
        .run_config(RunConfig::quiet())
        .fit()
        .expect("the all-reduce run");
    let metrics = result.metrics();
    let transport = TRANSPORTS
        .get(metrics["transport"] as usize)
        .copied()
        .unwrap_or("unknown");
    (metrics["seconds"], transport)
}

/// Bytes per second of one memory copy of `bytes` (median of 5).
pub fn memcpy_bandwidth(bytes: usize) -> f64 {
    let src = vec![1u8; bytes];
    let mut dst = vec![0u8; bytes];
    dst.copy_from_slice(&src);
    let times = (0..5)
        .map(|_| {
            let t = Instant::now();
            dst.copy_from_slice(&src);
            std::hint::black_box(&dst);
            t.elapsed().as_secs_f64()
        })
        .collect();
    bytes as f64 / crate::median(times)
}

/// Bytes per second of one TCP stream over loopback sending `bytes` (median of 5).
pub fn loopback_tcp_bandwidth(bytes: usize) -> f64 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let at = listener.local_addr().expect("its address");
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("the sender");
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0usize;
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return total,
                Ok(k) => total += k,
            }
        }
    });
    let mut s = std::net::TcpStream::connect(at).expect("connects");
    let chunk = vec![7u8; 1 << 20];
    let mut send = |n: usize| {
        let mut left = n;
        while left > 0 {
            let k = left.min(chunk.len());
            s.write_all(&chunk[..k]).expect("sends");
            left -= k;
        }
    };
    send(bytes);
    let times = (0..5)
        .map(|_| {
            let t = Instant::now();
            send(bytes);
            t.elapsed().as_secs_f64()
        })
        .collect();
    drop(s);
    reader.join().expect("the reader");
    bytes as f64 / crate::median(times)
}

/// The ring's bandwidth bound for `workers` ranks reducing `bytes` over links of
/// `bandwidth` bytes per second: `2(n−1)/n · S / B`.
///
/// ```
/// assert_eq!(prism_benches::allreduce::ring_bound_s(4, 100e6, 1e9), 0.15);
/// ```
pub fn ring_bound_s(workers: usize, bytes: f64, bandwidth: f64) -> f64 {
    let n = workers as f64;
    2.0 * (n - 1.0) / n * bytes / bandwidth
}
