//! The deployments the tests serve.

#![allow(dead_code)]

use std::net::SocketAddr;

pub use prism_serve::client::Answer;

/// A keep-alive connection whose failures fail the test.
pub struct Conn(prism_serve::client::Conn);

impl Conn {
    pub fn open(at: SocketAddr) -> Conn {
        Conn(prism_serve::client::Conn::open(at).expect("connects to the ingress"))
    }

    pub fn send(&mut self, method: &str, path: &str, body: &str) -> Answer {
        self.0
            .send(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }
}

/// One request on a connection of its own.
pub fn post(at: SocketAddr, path: &str, body: &str) -> Answer {
    Conn::open(at).send("POST", path, body)
}

/// A GET on a connection of its own.
pub fn get(at: SocketAddr, path: &str) -> Answer {
    Conn::open(at).send("GET", path, "")
}

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use prism_serve::{BatchOptions, Deployment, DeploymentHandle, Handlers, HttpError};
use serde::{Deserialize, Serialize};

/// The test deployment: echoes, sleeps, panics, refuses, batches, reports its config
/// and the process it runs in, and can be made to fail its health check.
pub struct Echo {
    tag: String,
    sick: AtomicBool,
    /// Opened by `open_gate`; the `count` stream waits for it after its first value.
    gate: Arc<(Mutex<bool>, Condvar)>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EchoConfig {
    pub tag: String,
}

#[derive(Debug, Deserialize)]
pub struct Numbers {
    pub values: Vec<f64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Sum {
    pub sum: f64,
    pub batch: usize,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Whoami {
    pub tag: String,
    pub pid: u32,
    pub node_id: String,
}

impl Deployment for Echo {
    type Config = EchoConfig;

    fn new(config: EchoConfig) -> Result<Self, String> {
        if config.tag == "refuse" {
            return Err("told to refuse".into());
        }
        Ok(Echo {
            tag: config.tag,
            sick: AtomicBool::new(false),
            gate: Arc::default(),
        })
    }

    fn handlers(h: &mut Handlers<Self>) {
        h.call(|_: &Echo, v: serde_json::Value| Ok(v))
            .route("sum", |_: &Echo, n: Numbers| {
                Ok(Sum {
                    sum: n.values.iter().sum(),
                    batch: 1,
                })
            })
            .route("sleep", |_: &Echo, ms: u64| {
                std::thread::sleep(Duration::from_millis(ms));
                Ok(ms)
            })
            .route("panic", |_: &Echo, what: String| -> Result<(), HttpError> {
                panic!("asked to panic: {what}")
            })
            .route("teapot", |_: &Echo, _: ()| -> Result<(), HttpError> {
                Err(HttpError::new(418, "short and stout"))
            })
            .route("whoami", |e: &Echo, _: ()| {
                let ctx = prism::context().map_err(|e| e.to_string())?;
                Ok(Whoami {
                    tag: e.tag.clone(),
                    pid: ctx.pid,
                    node_id: ctx.node_id,
                })
            })
            .route("sicken", |e: &Echo, _: ()| {
                e.sick.store(true, Ordering::SeqCst);
                Ok(())
            })
            .route("open_gate", |e: &Echo, _: ()| {
                *e.gate.0.lock().unwrap() = true;
                e.gate.1.notify_all();
                Ok(())
            })
            .stream("count", |e: &Echo, n: u64| {
                let gate = e.gate.clone();
                Ok((0..n).inspect(move |i| {
                    if *i == 1 {
                        // After the first value: wait (up to 30 s) for the gate.
                        let (open, cv) = &*gate;
                        let guard = open.lock().unwrap();
                        let _ = cv.wait_timeout_while(guard, Duration::from_secs(30), |o| !*o);
                    }
                }))
            })
            .stream("explode", |_: &Echo, _: ()| {
                Ok((0..3).inspect(|i| assert!(*i < 1, "the stream broke at {i}")))
            })
            .batched(
                "sums",
                BatchOptions::new(4).wait(Duration::from_millis(200)),
                |_: &Echo, all: Vec<Numbers>| {
                    let n = all.len();
                    Ok(all
                        .into_iter()
                        .map(|x| Sum {
                            sum: x.values.iter().sum(),
                            batch: n,
                        })
                        .collect())
                },
            );
    }

    fn reconfigure(&mut self, config: EchoConfig) -> Result<(), String> {
        self.tag = config.tag;
        Ok(())
    }

    fn check_health(&self) -> Result<(), String> {
        if self.sick.load(Ordering::SeqCst) {
            Err("told it is sick".into())
        } else {
            Ok(())
        }
    }
}
prism_serve::register_deployment!(Echo);

/// A deployment that calls another: it doubles each value, then asks `echo` for the sum.
pub struct Pre {
    model: DeploymentHandle,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PreConfig {
    pub model: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Values {
    pub values: Vec<f64>,
}

impl Deployment for Pre {
    type Config = PreConfig;

    fn new(config: PreConfig) -> Result<Self, String> {
        Ok(Pre {
            model: DeploymentHandle::new(config.model).method("sum"),
        })
    }

    fn handlers(h: &mut Handlers<Self>) {
        h.call(|p: &Pre, v: Values| {
            let doubled = Values {
                values: v.values.iter().map(|x| 2.0 * x).collect(),
            };
            let sum: Sum = p.model.call(&doubled).get()?;
            Ok(sum)
        });
    }
}
prism_serve::register_deployment!(Pre);
