//! W9 measured as Ray's script measures Ray Serve: wrk, one thread, 8 connections, 10 s
//! after a 2 s warm-up, POSTing the first digit's features; and beside it the two
//! references the serving figures are judged by: a no-op handler through the ingress
//! and a bare axum hello-world, both GETs from the same wrk.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use prism_serve::{Deployment, Handlers, HttpError};

/// W9's wrk script: Ray's `w9_post.lua`, verbatim.
const POST_LUA: &str = r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("W9_BODY_FILE"), "r")
wrk.body = f:read("*a")
f:close()
"#;

/// What one wrk run measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WrkFigures {
    /// Requests per second.
    pub rps: f64,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
}

/// A deployment whose one handler does nothing: the ingress's own cost.
pub struct NoopDeployment;

impl Deployment for NoopDeployment {
    type Config = ();

    fn new(_: ()) -> Result<Self, String> {
        Ok(NoopDeployment)
    }

    fn handlers(h: &mut Handlers<Self>) {
        h.call(|_: &NoopDeployment, _: ()| Ok::<_, HttpError>(()));
    }
}
prism_serve::register_deployment!(NoopDeployment);

/// A wrk latency such as `715.00us`, `2.97ms` or `1.02s`, in milliseconds.
fn millis(s: &str) -> Option<f64> {
    let (num, scale) = if let Some(v) = s.strip_suffix("us") {
        (v, 1e-3)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1e3)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|v| v * scale)
}

/// A figure of wrk's output (`Requests/sec:`, or a latency percentile such as `99%`).
fn find(out: &str, label: &str) -> Option<String> {
    out.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        (words.next() == Some(label)).then(|| words.next().map(str::to_string))?
    })
}

/// Parses a wrk report run with `--latency`.
pub fn parse(out: &str) -> Option<WrkFigures> {
    Some(WrkFigures {
        rps: find(out, "Requests/sec:")?.parse().ok()?,
        p50_ms: millis(&find(out, "50%")?)?,
        p99_ms: millis(&find(out, "99%")?)?,
    })
}

/// Ray's `w9_serve.json` keeps wrk's latencies as text (`69.00ms`): in milliseconds.
pub fn ray_millis(v: &serde_json::Value) -> Option<f64> {
    v.as_f64().or_else(|| millis(v.as_str()?))
}

/// Where wrk's script and body live for a run.
pub struct Load {
    script: PathBuf,
    body: PathBuf,
}

impl Load {
    /// Writes W9's script and `body` under `dir`.
    pub fn new(dir: &Path, body: &str) -> std::io::Result<Load> {
        std::fs::create_dir_all(dir)?;
        let (script, body_file) = (dir.join("w9_post.lua"), dir.join("w9_body.json"));
        std::fs::write(&script, POST_LUA)?;
        std::fs::write(&body_file, body)?;
        Ok(Load {
            script,
            body: body_file,
        })
    }

    /// wrk with one thread and 8 connections on `url`: a POST of the body, or a GET
    /// when `post` is false; 2 s of warm-up, then `seconds` measured.
    pub fn run(&self, url: &str, post: bool, seconds: u32) -> Result<WrkFigures, String> {
        let wrk = |secs: u32| -> Result<String, String> {
            let mut c = Command::new("wrk");
            c.args(["-t1", "-c8", &format!("-d{secs}s"), "--latency"]);
            if post {
                c.arg("-s")
                    .arg(&self.script)
                    .env("W9_BODY_FILE", &self.body);
            }
            let out = c
                .arg(url)
                .output()
                .map_err(|e| format!("wrk does not run ({e}): apt-get install wrk"))?;
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            if !out.status.success() {
                return Err(format!(
                    "wrk failed: {text}{}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(text)
        };
        wrk(2)?;
        let out = wrk(seconds)?;
        if let Some(line) = out.lines().find(|l| l.contains("Non-2xx")) {
            return Err(format!("{url} answered errors under load: {line}\n{out}"));
        }
        parse(&out).ok_or_else(|| format!("wrk's report does not parse:\n{out}"))
    }
}

/// Serves a bare axum hello-world (`GET /` → `Hello, World!`) on its own multi-threaded
/// runtime, as axum's own example does; the address it listens on. It runs until the
/// process ends.
pub fn bare_axum() -> std::io::Result<SocketAddr> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let at = listener.local_addr()?;
    std::thread::spawn(move || {
        rt.block_on(async move {
            let app =
                axum::Router::new().route("/", axum::routing::get(|| async { "Hello, World!" }));
            let _ = axum::serve(listener, app).await;
        })
    });
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_reports_parse() {
        let out = "Running 10s test @ http://127.0.0.1:8123/digits\n  Latency Distribution\n     50%  715.00us\n     75%    0.88ms\n     99%    2.97ms\n  99965 requests in 10.01s, 11.34MB read\nRequests/sec:   9990.37\n";
        let f = parse(out).unwrap();
        assert_eq!((f.rps, f.p50_ms, f.p99_ms), (9990.37, 0.715, 2.97));
        assert_eq!(ray_millis(&serde_json::json!("1.02s")), Some(1020.0));
        assert_eq!(parse("garbage"), None);
    }
}
