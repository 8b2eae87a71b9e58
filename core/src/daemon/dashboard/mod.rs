//! The head's dashboard: a web page and a REST API on one port (8265 by default), served
//! by axum on the head's own thread.
//!
//! The page (`/`, `/nodes`, `/jobs/{job}`, `/tasks`, `/actors`, `/logs`) is HTML rendered on the
//! server from maud templates compiled into the binary, with one small script of ours
//! (no build step, nothing fetched from elsewhere) that re-renders the page's body every
//! two seconds. Lists are paginated on the server, so a page costs the same with a
//! hundred tasks recorded or a hundred thousand.
//!
//! The API, all JSON:
//!
//! * `GET /api/nodes`, `GET /metrics` (Prometheus text): the nodes and their load.
//! * `GET /api/drivers`: every driver job with its task counts by state.
//! * `GET /api/workers`: every node's worker processes and connected drivers, with
//!   their pids, log files and what their object stores hold (count, bytes, spilled).
//! * `GET /api/tasks?job=&state=&function=&offset=&limit=`, `GET /api/actors?job=&state=&limit=`,
//!   `GET /api/summary?job=`: the recorded tasks and actors, with what was dropped.
//! * `GET /api/timeline?job=`: a Chrome trace of the tasks, streamed page by page.
//! * `GET /api/jobs`, `POST /api/jobs` (`{"entrypoint": ["cmd", "arg"] | "shell line",
//!   "working_dir": "...", "env": {"K": "V"}}`), `GET /api/jobs/{id}`, `GET
//!   /api/jobs/{id}/logs?offset=`, `POST /api/jobs/{id}/stop`: submitted jobs, as
//!   `prism job` drives them.
//! * `GET /api/logs`, `GET /api/logs/{file}?offset=&tail=`: the session's log files.
//! * `GET /api/serve`: the deployments of the Serve application running on the head's
//!   machine, if one is.
//!
//! # Security
//!
//! Ray's dashboard turned job submission into remote code execution for whoever could
//! reach its port (CVE-2023-48022); this one is guarded in front of every route, not
//! route by route ([`guard`]):
//!
//! * it listens on 127.0.0.1 unless the head is told otherwise;
//! * every request that is not a `GET` or `HEAD` (submit, stop, and any method a route
//!   does not serve, `DELETE` included) needs the cluster token, as `Authorization:
//!   Bearer TOKEN` or `X-Prism-Token: TOKEN`, and gets `401` without it;
//! * the `Host` header must name an IP address, `localhost` or a host the head allows
//!   (`--dashboard-allow-host`), so that a DNS name rebound to 127.0.0.1 reaches
//!   nothing (`403`);
//! * a request with an `Origin` must come from this very origin, and one a browser
//!   marks `Sec-Fetch-Site: cross-site` is refused, so that no page elsewhere drives
//!   it (`403`);
//! * `POST` bodies must be JSON (`415` otherwise): a plain HTML form cannot send one;
//! * the only files it reads are the regular files directly in the session's `logs`
//!   directory, named without a path (no `..`, no `/`, no symbolic link).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;

use crate::daemon::head::Head;
use crate::session::{list_logs, LogError, LogPart};
use crate::state::{
    state_counts, ActorQuery, ActorState, JobRequest, JobSubmission, JobView, TaskPage, TaskQuery,
    TaskState, TraceLanes,
};
use crate::wire::Msg;

mod metrics;
mod pages;

/// The most task records one API page returns.
pub const MAX_PAGE: u64 = 10_000;

/// How the dashboard is served.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Host names, besides IP addresses and `localhost`, that a request's `Host` header
    /// may name (the names this head is reached by, when it listens beyond loopback).
    pub allowed_hosts: Vec<String>,
}

/// What every handler sees.
#[derive(Clone)]
struct App {
    head: Arc<Head>,
    options: Arc<Options>,
}

/// Serves the dashboard on `listener` until the process ends.
pub async fn serve(listener: TcpListener, head: Arc<Head>, options: Options) {
    if let Err(e) = axum::serve(listener, router(head, options)).await {
        tracing::warn!("dashboard: {e}");
    }
}

/// The dashboard's routes, behind its [`guard`].
pub fn router(head: Arc<Head>, options: Options) -> Router {
    let app = App {
        head,
        options: Arc::new(options),
    };
    Router::new()
        .route("/", get(pages::overview))
        .route("/jobs/{job}", get(pages::job))
        .route("/tasks", get(pages::tasks))
        .route("/actors", get(pages::actors))
        .route("/nodes", get(pages::nodes))
        .route("/logs", get(pages::logs))
        .route("/logs/{file}", get(pages::log))
        .route("/static/app.js", get(script))
        .route("/static/style.css", get(style))
        .route("/api/nodes", get(api_nodes))
        .route("/metrics", get(api_metrics))
        .route("/api/drivers", get(api_drivers))
        .route("/api/workers", get(api_workers))
        .route("/api/jobs", get(api_jobs).post(api_submit))
        .route("/api/jobs/{id}", get(api_job))
        .route("/api/jobs/{id}/logs", get(api_job_logs))
        .route("/api/jobs/{id}/stop", post(api_stop))
        .route("/api/tasks", get(api_tasks))
        .route("/api/actors", get(api_actors))
        .route("/api/summary", get(api_summary))
        .route("/api/timeline", get(api_timeline))
        .route("/api/logs", get(api_logs))
        .route("/api/logs/{file}", get(api_log))
        .route("/api/serve", get(api_serve))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

/// Refuses what must not reach a route (see the module's Security section), then marks
/// every answer as not to be framed, sniffed or cached.
async fn guard(State(app): State<App>, request: Request, next: Next) -> Response {
    if let Err(refused) = admit(&app, request.method(), request.headers()) {
        return refused.into_response();
    }
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'; form-action 'self'"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Whether a request may go on, and the answer refusing it if not.
fn admit(app: &App, method: &Method, headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "a request needs a Host header",
        ));
    };
    if !host_allowed(host, &app.options.allowed_hosts) {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            &format!(
                "the Host {host:?} is not this head's (a DNS name rebound to it?); \
                 start the head with --dashboard-allow-host NAME to reach it by a name"
            ),
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !same_origin(origin, host) {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                &format!("a page from {origin:?} cannot use this dashboard"),
            ));
        }
    }
    let cross_site = headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"));
    if cross_site {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "a cross-site request cannot use this dashboard",
        ));
    }
    if method == Method::GET || method == Method::HEAD {
        return Ok(());
    }
    match presented_token(headers) {
        Some(t) if app.head.token_is(t) => Ok(()),
        given => {
            let why = if given.is_some() {
                "the token is not this cluster's"
            } else {
                "a request that changes something needs the cluster's token \
                 (Authorization: Bearer TOKEN; it is in the session directory's token file)"
            };
            Err(Refusal::new(StatusCode::UNAUTHORIZED, why))
        }
    }
}

/// The token a request presents, if any.
fn presented_token(headers: &HeaderMap) -> Option<&str> {
    if let Some(t) = headers.get("x-prism-token") {
        return t.to_str().ok();
    }
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = auth.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Whether a `Host` header names this head: an IP address (`127.0.0.1:8265`,
/// `[::1]:8265`), `localhost`, or a name in `allowed`.
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, port)) if port.is_empty() || valid_port(port) => {
                return v6.parse::<std::net::Ipv6Addr>().is_ok();
            }
            _ => return false,
        },
        None => match host.rsplit_once(':') {
            Some((name, port)) if valid_port(port) => name,
            Some(_) => return false,
            None => host,
        },
    };
    name.parse::<IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
}

fn valid_port(port: &str) -> bool {
    port.strip_prefix(':')
        .unwrap_or(port)
        .parse::<u16>()
        .is_ok()
}

/// Whether `origin` is the origin of a page served by this very host.
fn same_origin(origin: &str, host: &str) -> bool {
    ["http://", "https://"].iter().any(|scheme| {
        origin
            .strip_prefix(scheme)
            .is_some_and(|rest| rest.eq_ignore_ascii_case(host))
    })
}

/// A JSON answer.
fn json_response(status: StatusCode, value: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            Bytes::from(body),
        )
            .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// Why a request is refused: its status and a message, answered as a JSON error (a
/// `401` with the `WWW-Authenticate` header naming the token it needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, message: &str) -> Refusal {
        Refusal {
            status,
            message: message.to_string(),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut r = error(self.status, &self.message);
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"prism\""),
            );
        }
        r
    }
}

/// A JSON error: `{"error": message}`.
fn error(status: StatusCode, message: &str) -> Response {
    json_response(status, &json!({ "error": message }))
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such page: see / for the dashboard and the API's /api/nodes, /api/jobs, /api/tasks",
    )
}

/// A query string's values, or the `400` that says what is wrong with it.
fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, Refusal> {
    q.map(|Query(t)| t)
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, &e.body_text()))
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("static/app.js"),
    )
        .into_response()
}

async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("static/style.css"),
    )
        .into_response()
}

async fn api_nodes(State(app): State<App>) -> Response {
    json_response(StatusCode::OK, &app.head.nodes())
}

/// Every node's workers and drivers with what their object stores hold.
async fn api_workers(State(app): State<App>) -> Response {
    let nodes: Vec<_> = app.head.processes().iter().map(|n| n.to_json()).collect();
    json_response(StatusCode::OK, &nodes)
}

async fn api_metrics(State(app): State<App>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics::metrics(&app.head.nodes()),
    )
        .into_response()
}

async fn api_drivers(State(app): State<App>) -> Response {
    let jobs: Vec<_> = app.head.jobs().iter().map(JobView::to_json).collect();
    json_response(StatusCode::OK, &jobs)
}

/// A task list's query string.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskParams {
    job: Option<u32>,
    state: Option<String>,
    function: Option<String>,
    offset: Option<u64>,
    limit: Option<u64>,
    /// The dashboard page's page number (from 1); the API takes `offset`.
    page: Option<u64>,
}

impl TaskParams {
    /// The query these ask for, `per_page` at a time.
    fn to_query(&self, per_page: u64) -> Result<TaskQuery, Refusal> {
        let state = match self.state.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => Some(
                s.parse::<TaskState>()
                    .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, &e))?,
            ),
            None => None,
        };
        let limit = self.limit.unwrap_or(per_page).min(MAX_PAGE);
        let offset = match (self.offset, self.page) {
            (Some(o), _) => o,
            (None, Some(p)) => p.saturating_sub(1).saturating_mul(limit),
            (None, None) => 0,
        };
        Ok(TaskQuery {
            job: self.job,
            state,
            function: self.function.clone().filter(|f| !f.is_empty()),
            offset,
            limit,
        })
    }
}

fn task_page_json(page: &TaskPage, query: &TaskQuery) -> serde_json::Value {
    let mut doc = page.to_json();
    doc["offset"] = json!(query.offset);
    doc
}

async fn api_tasks(
    State(app): State<App>,
    params: Result<Query<TaskParams>, QueryRejection>,
) -> Response {
    let q = match query(params).and_then(|p| p.to_query(100)) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    json_response(StatusCode::OK, &task_page_json(&app.head.task_page(&q), &q))
}

/// An actor list's query string.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActorParams {
    job: Option<u32>,
    state: Option<String>,
    limit: Option<u64>,
}

impl ActorParams {
    fn to_query(&self) -> Result<ActorQuery, Refusal> {
        let state = match self.state.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => Some(
                s.parse::<ActorState>()
                    .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, &e))?,
            ),
            None => None,
        };
        Ok(ActorQuery {
            job: self.job,
            state,
            limit: self.limit.unwrap_or(100).min(MAX_PAGE),
        })
    }
}

async fn api_actors(
    State(app): State<App>,
    params: Result<Query<ActorParams>, QueryRejection>,
) -> Response {
    let q = match query(params).and_then(|p| p.to_query()) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    json_response(StatusCode::OK, &app.head.actor_page(&q).to_json())
}

/// A query string naming at most a job.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobParam {
    job: Option<u32>,
}

async fn api_summary(
    State(app): State<App>,
    params: Result<Query<JobParam>, QueryRejection>,
) -> Response {
    let job = match query(params) {
        Ok(p) => p.job,
        Err(e) => return e.into_response(),
    };
    let s = app.head.task_summary(job);
    let functions: Vec<_> = s
        .functions
        .iter()
        .map(|(f, c)| json!({ "function": f, "counts": state_counts(c) }))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({ "functions": functions, "dropped": s.dropped }),
    )
}

/// The body of a streamed answer: chunks a task sends as it makes them.
struct Chunks(tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl futures_core::Stream for Chunks {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// Task records the timeline takes from the head at a time.
const TIMELINE_PAGE: u64 = 5_000;

async fn api_timeline(
    State(app): State<App>,
    params: Result<Query<JobParam>, QueryRejection>,
) -> Response {
    let job = match query(params) {
        Ok(p) => p.job,
        Err(e) => return e.into_response(),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        let mut lanes = TraceLanes::default();
        let mut offset = 0;
        let _ = tx.send(Ok(Bytes::from_static(TraceLanes::START))).await;
        loop {
            let q = TaskQuery {
                job,
                offset,
                limit: TIMELINE_PAGE,
                ..TaskQuery::default()
            };
            let page = app.head.task_page(&q);
            let mut out = Vec::with_capacity(page.tasks.len() * 256);
            // Writing to a Vec does not fail.
            let _ = lanes.write(&page.tasks, &mut out);
            if tx.send(Ok(Bytes::from(out))).await.is_err() {
                return;
            }
            offset += page.tasks.len() as u64;
            if page.tasks.is_empty() || offset >= page.total {
                break;
            }
        }
        let _ = tx.send(Ok(Bytes::from_static(TraceLanes::END))).await;
    });
    let name = match job {
        Some(j) => format!("attachment; filename=\"prism-timeline-job{j}.json\""),
        None => "attachment; filename=\"prism-timeline.json\"".to_string(),
    };
    (
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (header::CONTENT_DISPOSITION, name),
        ],
        Body::from_stream(Chunks(rx)),
    )
        .into_response()
}

/// The head's answer about submitted jobs, as HTTP.
fn job_answer(msg: Msg) -> Response {
    match msg {
        Msg::Submission { job } => json_response(StatusCode::OK, &job.to_json()),
        Msg::Submissions { jobs } => json_response(
            StatusCode::OK,
            &jobs.iter().map(JobSubmission::to_json).collect::<Vec<_>>(),
        ),
        Msg::Log { chunk } => json_response(
            StatusCode::OK,
            &json!({
                "data": String::from_utf8_lossy(&chunk.data),
                "next": chunk.next,
                "ended": chunk.ended,
            }),
        ),
        Msg::Failed { reason } if reason.starts_with("no submitted job") => {
            error(StatusCode::NOT_FOUND, &reason)
        }
        Msg::Failed { reason } => error(StatusCode::BAD_REQUEST, &reason),
        other => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("the head answered {}", other.name()),
        ),
    }
}

async fn api_jobs(State(app): State<App>) -> Response {
    job_answer(app.head.submissions())
}

async fn api_job(State(app): State<App>, UrlPath(id): UrlPath<String>) -> Response {
    job_answer(app.head.job_status(&id))
}

/// A job's log's query string.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OffsetParam {
    offset: Option<u64>,
}

async fn api_job_logs(
    State(app): State<App>,
    UrlPath(id): UrlPath<String>,
    params: Result<Query<OffsetParam>, QueryRejection>,
) -> Response {
    match query(params) {
        Ok(p) => job_answer(app.head.job_logs(&id, p.offset.unwrap_or(0))),
        Err(e) => e.into_response(),
    }
}

async fn api_stop(State(app): State<App>, UrlPath(id): UrlPath<String>) -> Response {
    job_answer(app.head.stop_job(&id).await)
}

/// `POST /api/jobs`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitBody {
    entrypoint: Entrypoint,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

/// A command and its arguments, or one line for `/bin/sh -c` (as Ray's jobs take it).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Entrypoint {
    Argv(Vec<String>),
    Shell(String),
}

async fn api_submit(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    if !is_json {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a job is submitted as JSON (Content-Type: application/json)",
        );
    }
    let body: SubmitBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "not a job: {e} (send {{\"entrypoint\": [\"cmd\", \"arg\"], \
                     \"working_dir\": \"...\", \"env\": {{\"K\": \"V\"}}}})"
                ),
            )
        }
    };
    let entrypoint = match body.entrypoint {
        Entrypoint::Argv(argv) => argv,
        Entrypoint::Shell(line) => vec!["/bin/sh".into(), "-c".into(), line],
    };
    let request = JobRequest {
        entrypoint,
        working_dir: body.working_dir,
        env: body.env.into_iter().collect(),
    };
    job_answer(app.head.submit_job(request).await)
}

/// The session's log directory, or the `404` saying there is none.
fn logs_dir(head: &Head) -> Result<PathBuf, Refusal> {
    head.session()
        .map(|s| s.join("logs"))
        .ok_or_else(|| Refusal::new(StatusCode::NOT_FOUND, "this head keeps no logs"))
}

/// What part of a log to read: from `offset`, or else its last `tail` bytes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogParams {
    offset: Option<u64>,
    tail: Option<u64>,
}

/// Reads a part of log `name` in `dir`, refusing any name that is not a regular file
/// directly in it.
fn read_log(dir: &Path, name: &str, p: &LogParams) -> Result<LogPart, Refusal> {
    crate::session::read_log(dir, name, p.offset, p.tail).map_err(|e| match e {
        LogError::Missing(_) => Refusal::new(
            StatusCode::NOT_FOUND,
            &format!("{e} (GET /api/logs lists them)"),
        ),
        LogError::Unreadable(..) => Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    })
}

async fn api_logs(State(app): State<App>) -> Response {
    let dir = match logs_dir(&app.head) {
        Ok(d) => d,
        Err(e) => return e.into_response(),
    };
    let files: Vec<_> = list_logs(&dir)
        .into_iter()
        .map(|f| json!({ "name": f.name, "size": f.size }))
        .collect();
    json_response(StatusCode::OK, &files)
}

async fn api_log(
    State(app): State<App>,
    UrlPath(file): UrlPath<String>,
    params: Result<Query<LogParams>, QueryRejection>,
) -> Response {
    let part =
        query(params).and_then(|p| logs_dir(&app.head).and_then(|d| read_log(&d, &file, &p)));
    match part {
        Ok(part) => json_response(
            StatusCode::OK,
            &json!({
                "file": file,
                "offset": part.offset,
                "next": part.next(),
                "size": part.size,
                "data": String::from_utf8_lossy(&part.data),
            }),
        ),
        Err(e) => e.into_response(),
    }
}

/// The Serve application running on the head's machine, if any: its URL and its
/// deployments (what `prism serve status` shows), asked of its ingress.
async fn serve_status(head: &Head) -> Option<(String, serde_json::Value)> {
    let record = crate::session::serve_record(&head.session()?)?;
    if !crate::session::process_alive(record.pid?) {
        return None;
    }
    // An ingress listening on every address is asked on loopback.
    let url = record.url.replace("://0.0.0.0:", "://127.0.0.1:");
    let asked = tokio::task::spawn_blocking(move || {
        crate::session::http_once(&url, "GET", "/-/status", None, Duration::from_secs(2))
    });
    match asked.await {
        Ok(Ok((200, body))) => Some((record.url, serde_json::from_str(&body).ok()?)),
        _ => None,
    }
}

async fn api_serve(State(app): State<App>) -> Response {
    let body = match serve_status(&app.head).await {
        Some((url, deployments)) => json!({ "url": url, "deployments": deployments }),
        None => json!({ "url": null, "deployments": [] }),
    };
    json_response(StatusCode::OK, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::safe_log_name;

    #[test]
    fn hosts_are_addresses_localhost_or_allowed_names() {
        let allowed = vec!["head.internal".to_string()];
        for ok in [
            "127.0.0.1:8265",
            "127.0.0.1",
            "10.1.2.3:80",
            "[::1]:8265",
            "[::1]",
            "localhost:8265",
            "LOCALHOST",
            "head.internal:8265",
        ] {
            assert!(host_allowed(ok, &allowed), "{ok}");
        }
        for bad in [
            "evil.example:8265",
            "127.0.0.1.nip.io:8265",
            "localhost.evil.example",
            "[::1",
            "[::1]x",
            "127.0.0.1:99999",
            "",
            "head.internal.evil:80",
        ] {
            assert!(!host_allowed(bad, &allowed), "{bad}");
        }
    }

    #[test]
    fn origins_must_be_this_host() {
        assert!(same_origin("http://127.0.0.1:8265", "127.0.0.1:8265"));
        assert!(!same_origin("http://127.0.0.1:8266", "127.0.0.1:8265"));
        assert!(!same_origin("http://evil.example", "127.0.0.1:8265"));
        assert!(!same_origin("null", "127.0.0.1:8265"));
    }

    #[test]
    fn log_names_cannot_leave_the_directory() {
        for bad in [
            "",
            "..",
            "../token",
            "/etc/passwd",
            "a/b",
            ".hidden",
            "a\\b",
        ] {
            assert!(!safe_log_name(bad), "{bad:?}");
        }
        assert!(safe_log_name("job-sub-1.log"));
        assert!(safe_log_name("worker-abc-job1.err"));
    }

    #[test]
    fn task_params_page_and_cap() {
        let p = TaskParams {
            page: Some(3),
            ..TaskParams::default()
        };
        let q = p.to_query(100).map_err(|_| ()).unwrap();
        assert_eq!((q.offset, q.limit), (200, 100));
        let p = TaskParams {
            limit: Some(1 << 40),
            state: Some("failed".into()),
            ..TaskParams::default()
        };
        let q = p.to_query(100).map_err(|_| ()).unwrap();
        assert_eq!((q.limit, q.state), (MAX_PAGE, Some(TaskState::Failed)));
        let p = TaskParams {
            state: Some("done".into()),
            ..TaskParams::default()
        };
        assert!(p.to_query(100).is_err());
    }
}
