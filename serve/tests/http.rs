//! Serving over real HTTP on loopback, in both modes (`both_modes!`: embedded, and as
//! the driver of a two-node cluster of real processes whose replicas live in the
//! nodes' worker processes): each status code, keep-alive, batching, composition, a
//! user config update, a failing health check replacing its replica, metrics and
//! status, and the typed errors of `deploy`.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{get, post, Conn, Echo, EchoConfig, Pre, PreConfig};
use prism::testing::NodeSpec;
use prism_serve::{DeploymentOptions, HttpOptions, ReplicaState, Serve, ServeError};

fn start() -> Serve {
    Serve::start(HttpOptions::default().port(0)).expect("the ingress starts")
}

fn echo(serve: &Serve, options: DeploymentOptions, tag: &str) {
    let config = EchoConfig { tag: tag.into() };
    serve.deploy::<Echo>(options, config).expect("echo deploys");
}

/// Polls `f` every 20 ms for up to 30 s.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

prism::both_modes! {
    /// 200 with the handler's JSON, 400 with the parse error's reason, 404 for an
    /// unknown route or handler, 500 with a panic's message, a handler's own status,
    /// and two requests on one keep-alive connection.
    fn each_status_code_comes_from_its_cause(session, NodeSpec::cpus(2.0)) {
        let serve = start();
        echo(&serve, DeploymentOptions::new("echo"), "a");
        let at = serve.address();

        let ok = post(at, "/echo", r#"{"x":[1,2]}"#);
        assert_eq!((ok.status, ok.json()), (200, serde_json::json!({"x": [1, 2]})));

        let sum = post(at, "/echo/sum", r#"{"values":[1.5,2.5]}"#);
        assert_eq!(sum.status, 200);
        assert_eq!(sum.json()["sum"], 4.0);

        let bad = post(at, "/echo/sum", r#"{"values":"nope"}"#);
        assert_eq!(bad.status, 400, "{bad:?}");
        assert!(bad.json()["error"].as_str().unwrap().contains("does not parse"), "{bad:?}");
        let broken = post(at, "/echo/sum", "{not json");
        assert_eq!(broken.status, 400, "{broken:?}");

        assert_eq!(post(at, "/nowhere", "{}").status, 404);
        let no_handler = post(at, "/echo/nothing", "{}");
        assert_eq!(no_handler.status, 404);
        assert!(no_handler.body.contains("nothing"), "{no_handler:?}");

        let panicked = post(at, "/echo/panic", r#""on purpose""#);
        assert_eq!(panicked.status, 500);
        assert!(panicked.body.contains("asked to panic: on purpose"), "{panicked:?}");
        // The replica survives its handler's panic.
        assert_eq!(post(at, "/echo", "1").status, 200);

        assert_eq!(post(at, "/echo/teapot", "null").status, 418);

        let mut conn = Conn::open(at);
        for i in 0..3 {
            let a = conn.send("POST", "/echo", &i.to_string());
            assert_eq!((a.status, a.body), (200, i.to_string()));
        }
        assert_eq!(get(at, "/-/healthz").body, "ok");
        serve.shutdown();
    }

    /// Past `max_queued_requests` a request is answered 503 at once; past its
    /// `request_timeout`, 504; the others are answered.
    fn overload_is_503_and_slowness_504(session, NodeSpec::cpus(2.0)) {
        let serve = start();
        let options = DeploymentOptions::new("slow")
            .max_ongoing_requests(1)
            .max_queued_requests(1)
            .request_timeout(Duration::from_millis(1500));
        echo(&serve, options, "s");
        let at = serve.address();
        // One in flight for 600 ms, one queued behind it, a third refused.
        let first = std::thread::spawn(move || post(at, "/slow/sleep", "600"));
        eventually("the first request in flight", || {
            serve.status()[0].replicas.iter().any(|r| r.ongoing == 1)
        });
        let second = std::thread::spawn(move || post(at, "/slow/sleep", "10"));
        eventually("the second request queued", || serve.status()[0].queued == 1);
        let third = post(at, "/slow/sleep", "10");
        assert_eq!(third.status, 503, "{third:?}");
        assert!(third.body.contains("max_queued_requests"), "{third:?}");
        assert_eq!(first.join().unwrap().status, 200);
        assert_eq!(second.join().unwrap().status, 200);

        let late = post(at, "/slow/sleep", "3000");
        assert_eq!(late.status, 504, "{late:?}");
        serve.shutdown();
    }

    /// Requests that arrive together reach a batched handler as one batch, even with
    /// `max_ongoing_requests(1)`; a lone one goes after the batch wait.
    fn batches_fill_past_max_ongoing(session, NodeSpec::cpus(2.0)) {
        let serve = start();
        echo(&serve, DeploymentOptions::new("b").max_ongoing_requests(1), "b");
        let at = serve.address();
        let all: Vec<_> = (0..4)
            .map(|i| {
                std::thread::spawn(move || post(at, "/b/sums", &format!(r#"{{"values":[{i}]}}"#)))
            })
            .collect();
        let answers: Vec<_> = all.into_iter().map(|t| t.join().unwrap()).collect();
        for (i, a) in answers.iter().enumerate() {
            assert_eq!(a.status, 200, "{a:?}");
            assert_eq!(a.json()["sum"], i as f64);
        }
        let sizes: BTreeSet<u64> = answers.iter().map(|a| a.json()["batch"].as_u64().unwrap()).collect();
        assert_eq!(sizes, BTreeSet::from([4]), "{answers:?}");
        let lone = post(at, "/b/sums", r#"{"values":[7]}"#);
        assert_eq!(lone.json()["batch"], 1);
        // A body that does not parse fails alone.
        assert_eq!(post(at, "/b/sums", "[").status, 400);
        let metrics = get(at, "/metrics").body;
        assert!(metrics.contains("prism_serve_batch_size_count{deployment=\"b\"} 3"), "{metrics}");
        serve.shutdown();
    }

    /// A deployment calls another through a handle (in a replica, on any node), and
    /// the driver calls it through one too.
    fn a_deployment_calls_another(session, NodeSpec::cpus(2.0)) {
        let serve = start();
        echo(&serve, DeploymentOptions::new("model").no_route(), "m");
        let pre = PreConfig { model: "model".into() };
        serve.deploy::<Pre>(DeploymentOptions::new("pre").num_replicas(2), pre).unwrap();
        let at = serve.address();
        for _ in 0..4 {
            let a = post(at, "/pre", r#"{"values":[1,2,3]}"#);
            assert_eq!((a.status, a.json()["sum"].as_f64()), (200, Some(12.0)), "{a:?}");
        }
        // The model has no route of its own.
        assert_eq!(post(at, "/model", "{}").status, 404);
        let direct: common::Sum = serve
            .handle("model")
            .method("sum")
            .call(&common::Values { values: vec![1.0, 1.0] })
            .get()
            .unwrap();
        assert_eq!(direct.sum, 2.0);
        // A handle's wait is bounded when asked: 504 past it.
        let slow = serve.handle("model").method("sleep");
        let late = slow.call::<_, u64>(&1000).get_timeout(Duration::from_millis(100));
        assert_eq!(late.unwrap_err().status, 504);
        let in_time = slow.call::<_, u64>(&10).get_timeout(Duration::from_secs(20));
        assert_eq!(in_time.unwrap(), 10);
        serve.shutdown();
    }

    /// A new user config reaches the running replica without a restart; a failing
    /// health check replaces its replica while requests keep being answered.
    fn config_updates_and_health_checks(session, NodeSpec::cpus(2.0)) {
        let serve = start();
        let options = DeploymentOptions::new("h")
            .health_check(Duration::from_millis(100), Duration::from_secs(5));
        echo(&serve, options, "old");
        let at = serve.address();
        let before = post(at, "/h/whoami", "null").json();
        assert_eq!(before["tag"], "old");
        serve.reconfigure("h", &EchoConfig { tag: "new".into() }).unwrap();
        let after = post(at, "/h/whoami", "null").json();
        assert_eq!((after["tag"].clone(), after["pid"].clone()), ("new".into(), before["pid"].clone()));
        let first_id = serve.status()[0].replicas[0].id;

        assert_eq!(post(at, "/h/sicken", "null").status, 200);
        eventually("the sick replica replaced", || {
            let s = &serve.status()[0];
            s.replicas.iter().any(|r| r.id != first_id && r.state == ReplicaState::Running)
                && s.replicas.iter().all(|r| r.id != first_id)
        });
        let status = &serve.status()[0];
        assert!(status.last_failure.as_deref().unwrap_or("").contains("told it is sick"), "{status:?}");
        // The replacement was built with the new config.
        assert_eq!(post(at, "/h/whoami", "null").json()["tag"], "new");
        serve.shutdown();
    }

    /// A replica that cannot start fails `deploy` with its reason; a prefix taken
    /// twice and a bad option are typed errors; a redeploy changes the replica count.
    fn deploy_errors_are_typed(session, NodeSpec::cpus(2.0)) {
        let serve = start();
        let refused = serve.deploy::<Echo>(DeploymentOptions::new("r"), EchoConfig { tag: "refuse".into() });
        match refused {
            Err(ServeError::ReplicaFailed { deployment, reason }) => {
                assert_eq!(deployment, "r");
                assert!(reason.contains("told to refuse"), "{reason}");
            }
            other => panic!("expected ReplicaFailed, got {other:?}"),
        }
        assert!(serve.status().is_empty());
        echo(&serve, DeploymentOptions::new("one").route_prefix("/x"), "1");
        let twice = serve.deploy::<Echo>(DeploymentOptions::new("two").route_prefix("/x"), EchoConfig::default());
        assert!(matches!(twice, Err(ServeError::Config(ref m)) if m.contains("/x")), "{twice:?}");
        let bad = serve.deploy::<Echo>(DeploymentOptions::new("bad name"), EchoConfig::default());
        assert!(matches!(bad, Err(ServeError::Config(_))), "{bad:?}");

        echo(&serve, DeploymentOptions::new("one").route_prefix("/x").num_replicas(2), "1");
        assert_eq!(serve.status()[0].replicas.len(), 2);
        let pids: BTreeSet<String> = (0..20)
            .map(|_| post(serve.address(), "/x/whoami", "null").json()["pid"].to_string())
            .collect();
        assert!(!pids.is_empty());
        serve.delete("one").unwrap();
        assert_eq!(post(serve.address(), "/x", "1").status, 404);
        assert!(matches!(serve.delete("one"), Err(ServeError::NoDeployment(_))));
        serve.shutdown();
    }
}

prism::both_modes! {
    /// A streaming handler's values arrive as JSON lines while the handler still runs
    /// (the second waits for a gate the test opens after reading the first); a body
    /// that does not parse is a 400 before the stream; a panic mid-stream ends it with
    /// an error line.
    fn streamed_answers_arrive_as_they_are_made(session, NodeSpec::cpus(2.0)) {
        let serve = start();
        echo(&serve, DeploymentOptions::new("s"), "s");
        let at = serve.address();
        let mut conn = prism_serve::client::Conn::open(at).unwrap();
        let mut streamed = conn.stream("POST", "/s/count", "4").unwrap();
        assert_eq!(streamed.status, 200);
        let first = streamed.next_chunk().unwrap().unwrap();
        assert_eq!(first, b"0\n", "the first value comes before the handler ends");
        assert_eq!(post(at, "/s/open_gate", "null").status, 200);
        let mut rest = Vec::new();
        while let Some(chunk) = streamed.next_chunk().unwrap() {
            rest.extend(chunk);
        }
        assert_eq!(String::from_utf8(rest).unwrap(), "1\n2\n3\n");
        // The connection is kept alive after a stream.
        assert_eq!(conn.send("POST", "/s", "7").unwrap().body, "7");

        assert_eq!(post(at, "/s/count", "\"many\"").status, 400);
        let broke = post(at, "/s/explode", "null");
        assert_eq!(broke.status, 200);
        let lines: Vec<&str> = broke.body.lines().collect();
        assert_eq!(lines[0], "0");
        assert!(lines[1].contains("the stream broke at 1"), "{broke:?}");
        // A handle cannot take a stream: a typed error, not a hang.
        let via_handle = serve.handle("s").method("count").call::<_, u64>(&2).get();
        assert_eq!(via_handle.unwrap_err().status, 400);
        serve.shutdown();
    }
}

prism::both_modes! {
    /// Replicas that no node can hold fail `deploy` at once with the reason, rather
    /// than waiting for resources that never come.
    fn an_infeasible_replica_is_a_typed_error(session, NodeSpec::cpus(2.0)) {
        let serve = start();
        let options = DeploymentOptions::new("huge").num_cpus(64.0);
        let t = std::time::Instant::now();
        match serve.deploy::<Echo>(options, EchoConfig::default()) {
            Err(ServeError::ReplicaFailed { reason, .. }) => {
                assert!(reason.to_lowercase().contains("infeasible") || reason.contains("64"), "{reason}");
            }
            other => panic!("expected ReplicaFailed, got {other:?}"),
        }
        assert!(t.elapsed() < Duration::from_secs(60));
        assert!(serve.status().is_empty());
        serve.shutdown();
    }
}

/// With `every_node`, each node of a two-node cluster serves the routes too, on its
/// own address (127.0.0.2 and 127.0.0.3 here); once the application stops they
/// answer 404.
#[test]
fn every_node_serves_the_routes_on_its_own_address() {
    let _session =
        prism::testing::Session::start(prism::testing::Mode::Cluster, NodeSpec::cpus(2.0));
    let serve = Serve::start(HttpOptions::default().port(0).every_node(true)).unwrap();
    echo(&serve, DeploymentOptions::new("echo").num_replicas(2), "n");
    let nodes = serve.node_addresses();
    let ips: BTreeSet<String> = nodes.iter().map(|a| a.ip().to_string()).collect();
    assert_eq!(
        ips,
        BTreeSet::from(["127.0.0.2".to_string(), "127.0.0.3".to_string()])
    );
    for at in &nodes {
        assert_eq!(at.port(), serve.address().port());
        let at = *at;
        eventually("the node's ingress routes", || {
            post(at, "/echo", "3").status == 200
        });
        assert_eq!(
            post(at, "/echo/sum", r#"{"values":[1,2]}"#).json()["sum"],
            3.0
        );
        assert_eq!(post(at, "/echo/sum", "[").status, 400);
        // A node's ingress has no shutdown of its own: the application runs on.
        assert_eq!(post(at, "/-/shutdown", "").status, 404);
        assert_eq!(post(serve.address(), "/echo", "4").status, 200);
    }
    serve.shutdown();
    for at in nodes {
        assert_eq!(post(at, "/echo", "3").status, 404);
    }
}

/// Embedded there is one node, this process: `every_node` adds no ingress.
#[test]
fn every_node_embedded_is_the_one_ingress() {
    let _session =
        prism::testing::Session::start(prism::testing::Mode::Embedded, NodeSpec::cpus(2.0));
    let serve = Serve::start(HttpOptions::default().port(0).every_node(true)).unwrap();
    echo(&serve, DeploymentOptions::new("echo"), "e");
    assert!(serve.node_addresses().is_empty());
    assert_eq!(post(serve.address(), "/echo", "3").status, 200);
    serve.shutdown();
}
