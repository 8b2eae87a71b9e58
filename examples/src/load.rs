//! A closed-loop HTTP load: `connections` keep-alive connections, each sending its
//! next request as soon as the last is answered, for a while; the answers counted and
//! their latencies' percentiles. What the serving examples check themselves with (the
//! W9 figures in `compare` come from wrk).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use prism_serve::client::Conn;

/// What a load saw.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadReport {
    /// Requests answered 200.
    pub ok: u64,
    /// Requests answered otherwise, or failed.
    pub errors: u64,
    /// Answers per second.
    pub rps: f64,
    /// Latency percentiles, in milliseconds.
    pub p50_ms: f64,
    /// The 99th percentile.
    pub p99_ms: f64,
}

/// POSTs `body` to `path` over `connections` connections for `duration`.
pub fn post_for(
    at: SocketAddr,
    path: &str,
    body: &str,
    connections: usize,
    duration: Duration,
) -> LoadReport {
    let started = Instant::now();
    let until = started + duration;
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let (path, body) = (path.to_string(), body.to_string());
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                let Ok(mut conn) = Conn::open(at) else {
                    return (latencies, 1);
                };
                while Instant::now() < until {
                    let t = Instant::now();
                    match conn.send("POST", &path, &body) {
                        Ok(a) if a.status == 200 => latencies.push(t.elapsed().as_secs_f64() * 1e3),
                        Ok(_) => errors += 1,
                        Err(_) => {
                            errors += 1;
                            match Conn::open(at) {
                                Ok(c) => conn = c,
                                Err(_) => break,
                            }
                        }
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (l, e) = w.join().unwrap_or_default();
        all.extend(l);
        errors += e;
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        if all.is_empty() {
            f64::NAN
        } else {
            all[((all.len() as f64 * p) as usize).min(all.len() - 1)]
        }
    };
    LoadReport {
        ok: all.len() as u64,
        errors,
        rps: all.len() as f64 / secs,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
    }
}
