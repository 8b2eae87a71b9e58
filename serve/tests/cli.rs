//! `prism serve status` and `prism serve shutdown` against a running application, in
//! both modes: the CLI finds it through the record it leaves in the session
//! directory; a shutdown without the application's token is refused with 401.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{post, Conn, Echo, EchoConfig};
use prism::testing::{sibling_prism_bin, NodeSpec};
use prism_serve::{DeploymentOptions, HttpOptions, Serve};

fn prism_cli(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let bin = sibling_prism_bin().expect("the prism binary is built next to the tests");
    let out = Command::new(bin)
        .args(args)
        .env("PRISM_SESSION_DIR", dir)
        .env_remove("PRISM_SERVE_TOKEN")
        .output()
        .expect("the prism CLI runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

prism::both_modes! {
    fn the_cli_lists_and_stops_the_application(session, NodeSpec::cpus(2.0)) {
        let dir = std::env::temp_dir().join(format!("prism-serve-cli-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::env::set_var("PRISM_SESSION_DIR", &dir);
        let serve = Serve::start(HttpOptions::default().port(0)).unwrap();
        serve.deploy::<Echo>(DeploymentOptions::new("echo").num_replicas(2), EchoConfig::default()).unwrap();
        assert_eq!(post(serve.address(), "/echo", "5").status, 200);

        let (ok, out, err) = prism_cli(&dir, &["serve", "status"]);
        assert!(ok, "{err}");
        assert!(out.contains("echo") && out.contains("2/2") && out.contains("Running"), "{out}");
        let (ok, out, err) = prism_cli(&dir, &["serve", "status", "--format", "json"]);
        assert!(ok, "{err}");
        let all: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(all[0]["replicas"].as_array().unwrap().len(), 2);
        assert_eq!(all[0]["requests"], 1);

        // Without the token, or with a wrong one: 401, and nothing stops.
        let mut conn = Conn::open(serve.address());
        assert_eq!(conn.send("POST", "/-/shutdown", "").status, 401);
        let wrong = Command::new(sibling_prism_bin().unwrap())
            .args(["serve", "shutdown", "--url", &serve.url("")])
            .env("PRISM_SESSION_DIR", &dir)
            .env("PRISM_SERVE_TOKEN", "not-the-token")
            .output()
            .unwrap();
        assert!(!wrong.status.success());
        assert!(String::from_utf8_lossy(&wrong.stderr).contains("401"));
        assert_eq!(post(serve.address(), "/echo", "6").status, 200);
        let url = serve.url("");
        let (ok, _, err) = prism_cli(&dir, &["serve", "shutdown", "--url", &url]);
        assert!(ok, "the recorded token is found with --url too: {err}");

        // The application ends: its deployments drained, its ingress closed.
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(serve.address()).is_ok() {
            assert!(Instant::now() < deadline, "the ingress still listens");
            std::thread::sleep(Duration::from_millis(20));
        }
        serve.wait();
        assert!(serve.status().is_empty());
        assert!(!dir.join("serve.json").exists(), "the record is removed");
        let (ok, _, err) = prism_cli(&dir, &["serve", "status"]);
        assert!(!ok && err.contains("no serving application"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The head's dashboard shows the deployments of the application running on its
/// machine, asked of its ingress through the record it leaves in the session: on the
/// overview page and at `/api/serve`, and no longer once it stopped. Cluster only: the
/// embedded runtime has no head to serve a dashboard.
#[test]
fn the_dashboard_shows_the_running_deployments() {
    let session =
        prism::testing::Session::start(prism::testing::Mode::Cluster, NodeSpec::cpus(2.0));
    let cluster = session.cluster().expect("a cluster session");
    // The application records itself where the head looks: the cluster's session.
    std::env::set_var("PRISM_SESSION_DIR", cluster.session());
    let dashboard = format!("http://{}", cluster.dashboard().unwrap());
    let get = |path: &str| {
        prism::session::http_once(&dashboard, "GET", path, None, Duration::from_secs(10)).unwrap()
    };
    let (status, body) = get("/api/serve");
    assert_eq!(status, 200);
    let none: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        none["url"].is_null() && none["deployments"] == serde_json::json!([]),
        "{none}"
    );

    let serve = Serve::start(HttpOptions::default().port(0)).unwrap();
    let options = DeploymentOptions::new("echo").num_replicas(2);
    serve
        .deploy::<Echo>(options, EchoConfig::default())
        .unwrap();
    for body in ["1", "2", "3"] {
        assert_eq!(post(serve.address(), "/echo", body).status, 200);
    }
    let (status, body) = get("/api/serve");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["url"], serve.url(""), "{v}");
    let echo = &v["deployments"][0];
    assert_eq!(echo["name"], "echo", "{v}");
    assert_eq!(echo["replicas"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(echo["requests"], 3, "{v}");
    let (status, page) = get("/");
    assert_eq!(status, 200);
    let section = page
        .split("id=\"serve-table\"")
        .nth(1)
        .expect("the Serve table");
    assert!(page.contains(&serve.url("")), "{page}");
    for cell in [
        "<td>echo</td>",
        "<td class=\"num\">2/2</td>",
        "<td class=\"num\">3</td>",
    ] {
        assert!(section.contains(cell), "{cell} in {section}");
    }

    serve.shutdown();
    prism::testing::wait_for(
        || {
            get("/")
                .1
                .contains("No Serve application runs")
                .then_some(())
        },
        "the overview to drop the stopped application",
    )
    .unwrap();
}
