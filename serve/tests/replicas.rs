//! Replicas coming and going under load, over real HTTP: the autoscaler following the
//! load up to three replicas and back to one (both modes), and, on a two-node cluster
//! of real processes, a replica whose worker process is killed by PID being replaced
//! while requests keep being answered.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{post, Conn, Echo, EchoConfig};
use prism::testing::{Mode, NodeSpec};
use prism_serve::{Autoscaling, DeploymentOptions, HttpOptions, ReplicaState, Serve};

fn serving(serve: &Serve) -> Vec<(u64, u32)> {
    serve.status()[0]
        .replicas
        .iter()
        .filter(|r| r.state == ReplicaState::Running)
        .map(|r| (r.id, r.info.as_ref().map_or(0, |i| i.pid)))
        .collect()
}

/// Polls `f` every 20 ms for up to 30 s.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `connections` closed loops of `path` until `stop`: (answered 200, failed).
fn load(
    serve: &Serve,
    path: &'static str,
    body: &'static str,
    connections: usize,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<(u64, u64)>> {
    let at = serve.address();
    (0..connections)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0, 0);
                let mut conn = Conn::open(at);
                while !stop.load(Ordering::SeqCst) {
                    if conn.send("POST", path, body).status == 200 {
                        ok += 1;
                    } else {
                        failed += 1;
                    }
                }
                (ok, failed)
            })
        })
        .collect()
}

prism::both_modes! {
    /// Six connections on a 30 ms handler, two requests in flight per replica aimed
    /// at: three replicas; once the load stops, one.
    fn the_autoscaler_follows_the_load_up_and_down(session, NodeSpec::cpus(2.0)) {
        let serve = Serve::start(HttpOptions::default().port(0)).unwrap();
        let scaling = Autoscaling::new(1, 3)
            .target_ongoing_requests(2.0)
            .upscale_delay(Duration::from_millis(500))
            .downscale_delay(Duration::from_secs(1))
            .look_back(Duration::from_millis(200));
        let options = DeploymentOptions::new("a").autoscaling(scaling).max_ongoing_requests(2);
        serve.deploy::<Echo>(options, EchoConfig::default()).unwrap();
        assert_eq!(serving(&serve).len(), 1);
        let stop = Arc::new(AtomicBool::new(false));
        let loaders = load(&serve, "/a/sleep", "30", 6, stop.clone());
        eventually("three replicas serving", || serving(&serve).len() == 3);
        assert_eq!(serve.status()[0].target_replicas, 3);
        stop.store(true, Ordering::SeqCst);
        let mut failed = 0;
        for l in loaders {
            let (ok, f) = l.join().unwrap();
            assert!(ok > 0);
            failed += f;
        }
        assert_eq!(failed, 0, "no request failed while replicas were added");
        eventually("back to one replica", || {
            let s = &serve.status()[0];
            s.replicas.len() == 1 && s.target_replicas == 1
        });
        serve.shutdown();
    }
}

/// Two replicas, one per node (each holds more than half a node's CPUs), so in two
/// processes; one's worker process is killed by PID under load from two connections:
/// at most the requests in flight on it fail (one per connection), the controller
/// starts a replacement, and requests keep being answered.
#[test]
fn a_killed_replica_is_replaced_while_requests_are_answered() {
    let session = prism::testing::Session::start(Mode::Cluster, NodeSpec::cpus(2.0));
    let serve = Serve::start(HttpOptions::default().port(0)).unwrap();
    let options = DeploymentOptions::new("k")
        .num_replicas(2)
        .num_cpus(1.5)
        .health_check(Duration::from_millis(200), Duration::from_secs(5));
    serve
        .deploy::<Echo>(options, EchoConfig::default())
        .unwrap();
    let before = serving(&serve);
    assert_eq!(before.len(), 2);
    let victim = before[0].1;
    assert_ne!(victim, 0);
    assert_ne!(victim, before[1].1, "the replicas are in two processes");
    let stop = Arc::new(AtomicBool::new(false));
    let loaders = load(&serve, "/k/sleep", "5", 2, stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    let killed = std::process::Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let answered_after = AtomicU64::new(0);
    eventually(
        "two replicas serving again, none in the killed process",
        || {
            let now = serving(&serve);
            now.len() == 2 && now.iter().all(|(_, pid)| *pid != victim)
        },
    );
    // Requests are answered after the replacement.
    for _ in 0..10 {
        if post(serve.address(), "/k", "1").status == 200 {
            answered_after.fetch_add(1, Ordering::SeqCst);
        }
    }
    stop.store(true, Ordering::SeqCst);
    let (mut ok, mut failed) = (0, 0);
    for l in loaders {
        let (o, f) = l.join().unwrap();
        ok += o;
        failed += f;
    }
    assert!(ok > 0);
    assert!(
        failed <= 2,
        "{failed} requests failed; only those in flight on the killed replica may"
    );
    assert_eq!(answered_after.load(Ordering::SeqCst), 10);
    let status = &serve.status()[0];
    assert!(status.last_failure.is_some(), "{status:?}");
    serve.shutdown();
    drop(session);
}

prism::both_modes! {
    /// A deleted deployment's route goes at once, and its requests in flight are
    /// answered before its replica ends.
    fn delete_drains_the_requests_in_flight(session, NodeSpec::cpus(2.0)) {
        let serve = Serve::start(HttpOptions::default().port(0)).unwrap();
        serve.deploy::<Echo>(DeploymentOptions::new("d"), EchoConfig::default()).unwrap();
        let at = serve.address();
        let slow = std::thread::spawn(move || post(at, "/d/sleep", "500"));
        eventually("the request in flight", || {
            serve.status()[0].replicas.iter().any(|r| r.ongoing == 1)
        });
        let t = Instant::now();
        serve.delete("d").unwrap();
        let answered = slow.join().unwrap();
        assert_eq!((answered.status, answered.body.as_str()), (200, "500"));
        assert!(t.elapsed() >= Duration::from_millis(300), "delete waited for it");
        assert_eq!(post(at, "/d", "1").status, 404);
        assert!(serve.status().is_empty());
        serve.shutdown();
    }
}
