//! The head's dashboard and REST API over real HTTP against a live local cluster of real
//! processes: the pages render what ran, jobs are submitted, read and stopped over
//! REST with the token, and every guard (token, Host, Origin, cross-site, content type,
//! files outside the logs) refuses what it must.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use prism::testing::{wait_for, LocalCluster, NodeSpec};
use serde_json::Value;

#[prism::remote]
fn square(x: i64) -> i64 {
    x * x
}

/// An HTTP answer: status, head (lower-cased) and body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Sends one request over its own connection; `headers` are whole lines.
fn http(address: &str, method: &str, path: &str, headers: &[&str], body: &str) -> Answer {
    let mut s = TcpStream::connect(address).expect("the dashboard accepts");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers
        .iter()
        .any(|h| h.to_ascii_lowercase().starts_with("host:"))
    {
        request += &format!("Host: {address}\r\n");
    }
    for h in headers {
        request += &format!("{h}\r\n");
    }
    request += &format!("Content-Length: {}\r\n\r\n{body}", body.len());
    s.write_all(request.as_bytes()).unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    let text = String::from_utf8_lossy(&reply).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head[9..12].parse().unwrap();
    let head = head.to_ascii_lowercase();
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Answer { status, head, body }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").expect("a chunk size");
        let n = usize::from_str_radix(size.trim(), 16).expect("a hex chunk size");
        if n == 0 {
            return out;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
}

#[test]
fn pages_and_the_rest_api_show_and_drive_the_cluster() {
    let cluster = LocalCluster::start_with(
        env!("CARGO_BIN_EXE_prism"),
        &[("127.0.0.2", NodeSpec::cpus(2.0))],
    )
    .unwrap();
    cluster.connect().unwrap();
    let refs: Vec<_> = (0..50).map(square::remote).collect();
    assert_eq!(prism::get_all(&refs).unwrap().iter().sum::<i64>(), 40425);
    let at = cluster.dashboard().unwrap();
    let node = cluster.nodes()[0].node_id.clone();

    // The API and the pages show the node and the job's finished tasks.
    let nodes = http(&at, "GET", "/api/nodes", &[], "").json();
    assert_eq!(nodes[0]["node_id"], node.as_str());
    wait_for(
        || {
            let t = http(&at, "GET", "/api/tasks?state=finished&limit=5", &[], "").json();
            (t["total"] == 50).then_some(())
        },
        "the head to record 50 finished tasks",
    )
    .unwrap();
    let t = http(&at, "GET", "/api/tasks?job=1&limit=5&offset=45", &[], "").json();
    assert_eq!(t["tasks"].as_array().unwrap().len(), 5);
    assert!(t["tasks"][0]["function"]
        .as_str()
        .unwrap()
        .ends_with("square"));
    let summary = http(&at, "GET", "/api/summary?job=1", &[], "").json();
    assert_eq!(summary["functions"][0]["counts"]["FINISHED"], 50);
    let overview = http(&at, "GET", "/", &[], "");
    assert_eq!(overview.status, 200);
    assert!(overview.head.contains("text/html"));
    assert!(overview.head.contains("content-security-policy"));
    assert!(overview.body.contains(&node), "{}", overview.body);
    assert!(overview.body.contains("id=\"job-1\""));
    let page = http(&at, "GET", "/tasks?job=1&state=FINISHED&page=1", &[], "").body;
    assert!(page.contains("Tasks 1–50 of 50"), "{page}");
    let job = http(&at, "GET", "/jobs/1", &[], "");
    assert!(job.body.contains("square"), "{}", job.body);
    assert_eq!(http(&at, "GET", "/jobs/99", &[], "").status, 404);
    assert_eq!(http(&at, "GET", "/tasks?state=done", &[], "").status, 400);
    assert_eq!(http(&at, "GET", "/api/tasks?bogus=1", &[], "").status, 400);
    assert_eq!(http(&at, "GET", "/nowhere", &[], "").status, 404);
    let metrics = http(&at, "GET", "/metrics", &[], "").body;
    assert!(metrics.contains("prism_nodes_alive 1"));

    // The timeline downloads as a Chrome trace with a span per task.
    let trace = http(&at, "GET", "/api/timeline?job=1", &[], "");
    assert!(trace.head.contains("attachment"));
    let events: Vec<Value> = serde_json::from_str(&trace.body).expect("the trace is JSON");
    assert_eq!(events.iter().filter(|e| e["ph"] == "X").count(), 50);

    // Changing something needs the token: submit, stop, and any other method.
    let bearer = format!("Authorization: Bearer {}", cluster.token);
    let json = "Content-Type: application/json";
    let job_body = r#"{"entrypoint": "echo started; sleep 60", "env": {"SECRET": "x"}}"#;
    for (method, path) in [
        ("POST", "/api/jobs"),
        ("POST", "/api/jobs/sub-1/stop"),
        ("DELETE", "/api/jobs/sub-1"),
        ("PUT", "/api/nodes"),
    ] {
        let a = http(&at, method, path, &[json], job_body);
        assert_eq!(a.status, 401, "{method} {path}: {}", a.body);
        assert!(a.head.contains("www-authenticate: bearer"));
        let wrong = http(
            &at,
            method,
            path,
            &[json, "X-Prism-Token: not-it"],
            job_body,
        );
        assert_eq!(wrong.status, 401, "{method} {path} with a wrong token");
    }
    assert!(http(&at, "GET", "/api/jobs", &[], "")
        .json()
        .as_array()
        .unwrap()
        .is_empty());

    // A page elsewhere cannot drive it, even with the token; nor can a rebound name.
    let evil_origin = http(
        &at,
        "POST",
        "/api/jobs",
        &[json, &bearer, "Origin: http://evil.example"],
        job_body,
    );
    assert_eq!(evil_origin.status, 403);
    let cross = http(
        &at,
        "POST",
        "/api/jobs",
        &[json, &bearer, "Sec-Fetch-Site: cross-site"],
        job_body,
    );
    assert_eq!(cross.status, 403);
    let rebound = http(
        &at,
        "GET",
        "/api/nodes",
        &["Host: rebound.evil.example:8265"],
        "",
    );
    assert_eq!(rebound.status, 403, "{}", rebound.body);
    let form = http(
        &at,
        "POST",
        "/api/jobs",
        &["Content-Type: text/plain", &bearer],
        job_body,
    );
    assert_eq!(form.status, 415);
    let malformed = http(&at, "POST", "/api/jobs", &[json, &bearer], "{\"entry\":");
    assert_eq!(malformed.status, 400);
    assert!(malformed.json()["error"]
        .as_str()
        .unwrap()
        .contains("not a job"));
    assert!(http(&at, "GET", "/api/jobs", &[], "")
        .json()
        .as_array()
        .unwrap()
        .is_empty());

    // With the token, from this origin: submitted, read, its log, stopped, ended.
    let same = format!("Origin: http://{at}");
    let submitted = http(&at, "POST", "/api/jobs", &[json, &bearer, &same], job_body);
    assert_eq!(submitted.status, 200, "{}", submitted.body);
    let sub = submitted.json();
    let id = sub["id"].as_str().unwrap().to_string();
    assert_eq!(sub["env_keys"][0], "SECRET");
    assert!(
        !submitted.body.contains("\"x\""),
        "env values are not shown"
    );
    let pid = sub["pid"].as_u64().unwrap() as u32;
    let status = http(&at, "GET", &format!("/api/jobs/{id}"), &[], "").json();
    assert_eq!(status["status"], "RUNNING");
    wait_for(
        || {
            let log = http(&at, "GET", &format!("/api/jobs/{id}/logs"), &[], "").json();
            log["data"]
                .as_str()
                .unwrap()
                .contains("started")
                .then_some(())
        },
        "the job's output",
    )
    .unwrap();
    assert_eq!(http(&at, "GET", "/api/jobs/sub-9", &[], "").status, 404);
    let stopped = http(&at, "POST", &format!("/api/jobs/{id}/stop"), &[&bearer], "").json();
    assert_eq!(stopped["status"], "STOPPED", "{stopped}");
    assert!(
        !prism::session::process_alive(pid),
        "the job's process ended"
    );

    // Logs: the session's files, and nothing outside them.
    let logs = http(&at, "GET", "/api/logs", &[], "").json();
    let names: Vec<&str> = logs
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert!(names.contains(&"job-sub-1.log"), "{names:?}");
    let tail = http(&at, "GET", "/api/logs/job-sub-1.log?tail=100", &[], "").json();
    assert!(tail["data"].as_str().unwrap().contains("started"));
    let secret = cluster.session().join("token");
    std::os::unix::fs::symlink(&secret, cluster.session().join("logs/token.log")).unwrap();
    for path in [
        "/api/logs/..%2Ftoken",
        "/api/logs/%2E%2E%2Ftoken",
        "/api/logs/%2Fetc%2Fpasswd",
        "/api/logs/../token",
        "/api/logs/token.log",
        "/logs/token.log",
        "/api/logs/.",
    ] {
        let a = http(&at, "GET", path, &[], "");
        assert!(
            a.status == 404 || a.status == 400,
            "{path}: {} {}",
            a.status,
            a.body
        );
        assert!(!a.body.contains(&cluster.token), "{path} leaked the token");
    }
    let listed = http(&at, "GET", "/api/logs", &[], "").body;
    assert!(
        !listed.contains("token.log"),
        "a symbolic link is not listed"
    );
    let log_page = http(&at, "GET", "/logs/job-sub-1.log", &[], "");
    assert!(log_page.body.contains("started"));
    prism::shutdown();
}

#[prism::remote]
fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Runs headless Chromium with `args` (a private profile under `dir`), ending it by its
/// PID if it has not ended in 60 s; what it printed.
fn chromium(dir: &std::path::Path, args: &[String]) -> String {
    let bin = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("the browser test needs Chromium: apt-get install -y chromium");
    let out = dir.join("chromium.out");
    let mut child = std::process::Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-dev-shm-usage",
            &format!("--user-data-dir={}", dir.join("chromium-profile").display()),
        ])
        .args(args)
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ended = wait_for(
        || child.try_wait().ok().flatten(),
        "chromium to render the page",
    );
    if ended.is_err() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("chromium did not end in time");
    }
    std::fs::read_to_string(out).unwrap()
}

#[test]
fn a_browser_renders_the_nodes_and_a_running_job() {
    let cluster = LocalCluster::start_with(
        env!("CARGO_BIN_EXE_prism"),
        &[("127.0.0.2", NodeSpec::cpus(2.0))],
    )
    .unwrap();
    cluster.connect().unwrap();
    let done: Vec<_> = (0..20).map(square::remote).collect();
    prism::get_all(&done).unwrap();
    // This test process is the running job: one task still runs while the page loads.
    let running = nap::remote(20_000);
    let at = cluster.dashboard().unwrap();
    wait_for(
        || {
            let t = http(&at, "GET", "/api/drivers", &[], "").json();
            (t[0]["tasks"]["FINISHED"] == 20 && t[0]["tasks"]["RUNNING"] == 1).then_some(())
        },
        "the head to record 20 finished tasks and one running",
    )
    .unwrap();
    let node = cluster.nodes()[0].node_id.clone();
    let url = format!("http://{at}/");
    // The DOM after the page's script ran a refresh or two (virtual time).
    let dom = chromium(
        cluster.session(),
        &[
            "--virtual-time-budget=5000".into(),
            "--dump-dom".into(),
            url.clone(),
        ],
    );
    assert!(dom.contains(&node), "the node is shown: {dom}");
    let row = dom.split("id=\"job-1\"").nth(1).expect("the job's row");
    let row = &row[..row.find("</tr>").unwrap()];
    let cells: Vec<&str> = row
        .split("\">")
        .filter_map(|c| c.split('<').next())
        .filter(|c| !c.is_empty() && c.chars().all(|ch| ch.is_ascii_digit()))
        .collect();
    // PENDING, RUNNING, FINISHED, FAILED, actors alive, dropped.
    assert_eq!(
        cells,
        ["0", "1", "20", "0", "0", "0"],
        "the job's counts: {row}"
    );
    let live = dom.split("id=\"live\"").nth(1).unwrap_or("");
    assert!(
        live.contains(">live<") && !live.starts_with(" class=\"bad\""),
        "the refresh reached the head: {}",
        &live[..live.len().min(80)]
    );
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    std::fs::create_dir_all(&target).unwrap();
    let shot = target.join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        cluster.session(),
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,800".into(),
            "--hide-scrollbars".into(),
            url,
        ],
    );
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real screenshot"
    );
    prism::cancel(&running).ok();
    prism::shutdown();
}
