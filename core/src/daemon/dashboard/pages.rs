//! The dashboard's HTML pages, rendered on the server from maud templates: the
//! overview (nodes, resources, jobs, Serve deployments), a job's tasks, the task list
//! (paginated and filtered on the server), the actors, and the session's logs.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};

use super::{logs_dir, query, read_log, serve_status, ActorParams, App, LogParams, TaskParams};
use crate::session::list_logs;
use crate::state::{human_bytes, short_name, JobStatus, TaskState};

/// Task rows on one page of the task list.
const PER_PAGE: u64 = 100;

/// A whole page: the navigation, then `body` in the `<main>` the script refreshes.
fn layout(title: &str, body: Markup) -> Response {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "prism · " (title) }
                link rel="stylesheet" href="/static/style.css";
                script src="/static/app.js" defer {}
            }
            body {
                header {
                    a.brand href="/" { "prism" }
                    nav {
                        a href="/" { "Overview" }
                        a href="/nodes" { "Nodes" }
                        a href="/tasks" { "Tasks" }
                        a href="/actors" { "Actors" }
                        a href="/logs" { "Logs" }
                        a href="/api/timeline" { "Timeline" }
                    }
                    span #live { "live" }
                }
                main #main { h1 { (title) } (body) }
            }
        }
    };
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page.into_string(),
    )
        .into_response()
}

/// A page saying what went wrong, with the status to answer.
fn problem(status: StatusCode, message: &str) -> Response {
    let mut r = layout("Not here", html! { p.error { (message) } });
    *r.status_mut() = status;
    r
}

/// A page's answer to a bad query string.
fn bad_query(e: super::Refusal) -> Response {
    problem(e.status, &e.message)
}

fn clip(s: &str, n: usize) -> String {
    let one = s.replace('\n', " ");
    if one.chars().count() <= n {
        one
    } else {
        one.chars().take(n).collect::<String>() + "…"
    }
}

/// A resource's amount as people read it: bytes of memory in GiB, the rest as is.
fn amount(resource: &str, v: f64) -> String {
    if resource.contains("memory") {
        format!("{:.1} GiB", v / (1u64 << 30) as f64)
    } else {
        format!("{v}")
    }
}

fn duration(us: Option<u64>) -> String {
    match us {
        None => "-".into(),
        Some(us) if us < 1_000 => format!("{us} µs"),
        Some(us) if us < 1_000_000 => format!("{:.1} ms", us as f64 / 1e3),
        Some(us) => format!("{:.2} s", us as f64 / 1e6),
    }
}

fn counts(c: &[u64; 4]) -> Markup {
    html! {
        @for s in TaskState::ALL {
            td.num { a href={ "/tasks?state=" (s.name()) } { (c[s as usize]) } }
        }
    }
}

fn state_headers() -> Markup {
    html! { @for s in TaskState::ALL { th.num { (s.name()) } } }
}

/// `/`: nodes, resources in use, jobs and Serve deployments.
pub(super) async fn overview(State(app): State<App>) -> Response {
    let nodes = app.head.nodes();
    let drivers = app.head.jobs();
    let submissions = match app.head.submissions() {
        crate::wire::Msg::Submissions { jobs } => jobs,
        _ => Vec::new(),
    };
    let serve = serve_status(&app.head).await;
    let alive = nodes.iter().filter(|n| n.alive).count();
    let cpu = |v: &[(String, f64)]| {
        v.iter()
            .filter(|(r, _)| r == "CPU")
            .map(|(_, x)| x)
            .sum::<f64>()
    };
    let live = nodes.iter().filter(|n| n.alive);
    let total_cpu: f64 = live.clone().map(|n| cpu(&n.total)).sum();
    let used_cpu: f64 = live
        .clone()
        .map(|n| cpu(&n.total) - cpu(&n.available))
        .sum();
    let running: u64 = live.clone().map(|n| n.running as u64).sum();
    let queued: u64 = live.map(|n| n.queued as u64).sum();
    layout(
        "Overview",
        html! {
            section.cards {
                div.card #nodes-alive { b { (alive) "/" (nodes.len()) } span { "nodes alive" } }
                div.card { b { (used_cpu) "/" (total_cpu) } span { "CPUs in use" } }
                div.card { b { (running) } span { "tasks running" } }
                div.card { b { (queued) } span { "tasks queued" } }
                div.card { b { (drivers.len()) } span { "jobs" } }
            }
            h2 { "Nodes" }
            table #node-table {
                tr { th { "node" } th { "address" } th { "state" } th { "resources (in use / total)" }
                     th.num { "running" } th.num { "queued" } th { "waiting" } }
                @for n in &nodes {
                    tr.node {
                        td.mono { a href={ "/nodes#node-" (n.node_id) } { (n.node_id) } }
                        td.mono { (n.address) }
                        td { @if n.alive { span.ok { "ALIVE" } } @else { span.bad { "DEAD" } } }
                        td {
                            @for (r, total) in &n.total {
                                @let free = n.available.iter().find(|(a, _)| a == r).map_or(0.0, |(_, v)| *v);
                                span.res { (r) " " (amount(r, total - free)) "/" (amount(r, *total)) }
                            }
                        }
                        td.num { (n.running) }
                        td.num { (n.queued) }
                        td { @for p in n.pending.iter().take(3) { div.small { (clip(&format!("{p:?}"), 80)) } } }
                    }
                }
            }
            h2 { "Jobs" }
            table #job-table {
                tr { th { "job" } th { "driver node" } th { "program" } (state_headers()) th.num { "actors alive" } th.num { "dropped" } }
                @for j in drivers.iter().rev() {
                    tr.job #{ "job-" (j.job) } {
                        td { a href={ "/jobs/" (j.job) } { "job " (j.job) } }
                        td.mono { (j.driver_node) }
                        td.mono { (clip(&j.args.join(" "), 60)) }
                        @for s in TaskState::ALL {
                            td.num { a href={ "/tasks?job=" (j.job) "&state=" (s.name()) } { (j.tasks[s as usize]) } }
                        }
                        td.num { (j.actors_alive) }
                        td.num { (j.dropped) }
                    }
                }
            }
            @if !submissions.is_empty() {
                h2 { "Submitted jobs" }
                table #submission-table {
                    tr { th { "id" } th { "status" } th { "entrypoint" } th { "driver job" } th { "ran for" } th { "log" } }
                    @for s in submissions.iter().rev() {
                        tr {
                            td.mono { (s.id) }
                            td { span class=(status_class(s.status)) { (s.status.name()) } }
                            td.mono { (clip(&s.request.entrypoint.join(" "), 60)) }
                            td { @if let Some(j) = s.driver_job { a href={ "/jobs/" (j) } { "job " (j) } } @else { "-" } }
                            td { (duration(s.started_us.map(|b| s.ended_us.unwrap_or_else(crate::state::now_us).saturating_sub(b)))) }
                            td { a href={ "/logs/" (s.log) } { "log" } }
                        }
                        @if let Some(m) = &s.message { tr { td {} td colspan="5" .small { (m) } } }
                    }
                }
            }
            h2 { "Serve" }
            @match &serve {
                Some((url, deployments)) => {
                    p { "An application serves at " span.mono { (url) } "." }
                    table #serve-table {
                        tr { th { "deployment" } th { "route" } th.num { "replicas" } th.num { "queued" } th.num { "requests" } th.num { "errors" } }
                        @for d in deployments.as_array().into_iter().flatten() {
                            @let replicas = d["replicas"].as_array().map_or(0, |r| r.len());
                            tr {
                                td { (d["name"].as_str().unwrap_or("?")) }
                                td.mono { (d["route_prefix"].as_str().unwrap_or("-")) }
                                td.num { (replicas) "/" (d["target_replicas"]) }
                                td.num { (d["queued"]) }
                                td.num { (d["requests"]) }
                                td.num { (d["errors"]) }
                            }
                        }
                    }
                }
                None => { p.small { "No Serve application runs on the head's machine." } }
            }
        },
    )
}

fn status_class(s: JobStatus) -> &'static str {
    match s {
        JobStatus::Succeeded => "ok",
        JobStatus::Failed | JobStatus::Stopped => "bad",
        JobStatus::Pending | JobStatus::Running => "run",
    }
}

/// `/jobs/{job}`: a driver job's tasks by function and state, and its actors.
pub(super) async fn job(State(app): State<App>, UrlPath(job): UrlPath<String>) -> Response {
    let Some(j) = job
        .parse::<u32>()
        .ok()
        .and_then(|n| app.head.jobs().into_iter().find(|j| j.job == n))
    else {
        return problem(StatusCode::NOT_FOUND, &format!("no job {job:?}"));
    };
    let summary = app.head.task_summary(Some(j.job));
    let actors = app.head.actor_page(&crate::state::ActorQuery {
        job: Some(j.job),
        state: None,
        limit: 50,
    });
    layout(
        &format!("Job {}", j.job),
        html! {
            p { span.mono { (j.args.join(" ")) } " · driver on " span.mono { (j.driver_node) } }
            p {
                a href={ "/tasks?job=" (j.job) } { "its tasks" } " · "
                a href={ "/actors?job=" (j.job) } { "its actors" } " · "
                a href={ "/api/timeline?job=" (j.job) } { "its timeline (Chrome trace)" }
            }
            table #job-counts {
                tr { (state_headers()) th.num { "actors alive" } th.num { "dropped" } }
                tr { (counts(&j.tasks)) td.num { (j.actors_alive) } td.num { (j.dropped) } }
            }
            h2 { "Tasks by function" }
            table {
                tr { th { "function" } (state_headers()) }
                @for (f, c) in &summary.functions {
                    tr {
                        td.mono { a href={ "/tasks?job=" (j.job) "&function=" (f) } { (short_name(f)) } }
                        @for s in TaskState::ALL {
                            td.num { (c[s as usize]) }
                        }
                    }
                }
            }
            h2 { "Actors" }
            (actor_table(&actors))
        },
    )
}

/// `/tasks`: the recorded tasks, a page at a time, filtered by job, state and function.
pub(super) async fn tasks(
    State(app): State<App>,
    params: Result<Query<TaskParams>, QueryRejection>,
) -> Response {
    let (p, q) = match query(params).and_then(|p| p.to_query(PER_PAGE).map(|q| (p, q))) {
        Ok(x) => x,
        Err(e) => return bad_query(e),
    };
    let page = app.head.task_page(&q);
    let number = q.offset / q.limit.max(1) + 1;
    let link = |to: u64| {
        let mut s = format!("/tasks?page={to}");
        if let Some(j) = q.job {
            s += &format!("&job={j}");
        }
        if let Some(st) = q.state {
            s += &format!("&state={}", st.name());
        }
        if let Some(f) = &q.function {
            s += &format!("&function={}", url_escape(f));
        }
        s
    };
    let last = page.total.div_ceil(q.limit.max(1)).max(1);
    layout(
        "Tasks",
        html! {
            form.filters method="get" action="/tasks" {
                label { "job " input type="number" name="job" min="1" value=[q.job]; }
                label { "state "
                    select name="state" {
                        option value="" { "any" }
                        @for s in TaskState::ALL {
                            option value=(s.name()) selected[q.state == Some(s)] { (s.name()) }
                        }
                    }
                }
                label { "function " input type="text" name="function" value=[p.function.as_deref()]; }
                button type="submit" { "Filter" }
            }
            p #task-count {
                @if page.total == 0 { "No tasks match." } @else {
                    "Tasks " (q.offset + 1) "–" (q.offset + page.tasks.len() as u64) " of " (page.total)
                }
                @if page.dropped > 0 { " · " span.bad { (page.dropped) " older records dropped" } }
            }
            (task_table(&page.tasks))
            nav.pages {
                @if number > 1 { a href=(link(number - 1)) { "← previous" } }
                span { "page " (number) " of " (last) }
                @if number < last { a href=(link(number + 1)) { "next →" } }
            }
        },
    )
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn task_table(tasks: &[crate::state::TaskRecord]) -> Markup {
    html! {
        table #task-table {
            tr { th { "task" } th.num { "job" } th { "function" } th { "state" } th { "node" }
                 th.num { "pid" } th.num { "attempts" } th.num { "duration" } th { "error" } }
            @for t in tasks {
                tr {
                    td.mono { (t.task_id) }
                    td.num { (t.job) }
                    td.mono { (short_name(&t.function)) }
                    td { span class=(task_class(t.state)) { (t.state.name()) } }
                    td.mono { (t.node.as_deref().map(|n| clip(n, 12)).unwrap_or_default()) }
                    td.num { (t.pid.map(|p| p.to_string()).unwrap_or_default()) }
                    td.num { (t.attempts) }
                    td.num { (duration(t.duration_us())) }
                    td.small { (t.error.as_deref().map(|e| clip(e, 100)).unwrap_or_default()) }
                }
            }
        }
    }
}

fn task_class(s: TaskState) -> &'static str {
    match s {
        TaskState::Finished => "ok",
        TaskState::Failed => "bad",
        TaskState::Pending | TaskState::Running => "run",
    }
}

fn actor_table(page: &crate::state::ActorPage) -> Markup {
    html! {
        p.small { (page.actors.len()) " of " (page.total) " actors"
            @if page.dropped > 0 { " · " span.bad { (page.dropped) " older records dropped" } } }
        table #actor-table {
            tr { th { "actor" } th.num { "job" } th { "class" } th { "state" } th { "node" }
                 th.num { "pid" } th.num { "restarts" } th { "cause" } }
            @for a in &page.actors {
                tr {
                    td.mono { (crate::id::ActorId::from(a.actor_id)) }
                    td.num { (a.job) }
                    td.mono { (short_name(&a.class)) }
                    td { (a.state.name()) }
                    td.mono { (a.node.as_deref().map(|n| clip(n, 12)).unwrap_or_default()) }
                    td.num { (a.pid.map(|p| p.to_string()).unwrap_or_default()) }
                    td.num { (a.restarts) }
                    td.small { (a.cause.as_deref().map(|c| clip(c, 100)).unwrap_or_default()) }
                }
            }
        }
    }
}

/// `/actors`: the recorded actors.
pub(super) async fn actors(
    State(app): State<App>,
    params: Result<Query<ActorParams>, QueryRejection>,
) -> Response {
    let q = match query(params).and_then(|p| p.to_query()) {
        Ok(q) => q,
        Err(e) => return bad_query(e),
    };
    layout("Actors", actor_table(&app.head.actor_page(&q)))
}

/// `/nodes`: each node with its worker processes and connected drivers, what their
/// object stores hold, and their logs.
pub(super) async fn nodes(State(app): State<App>) -> Response {
    let nodes = app.head.processes();
    // Logs kept in this head's session are linked; another machine's are named, with
    // the command that reads them.
    let here: std::collections::HashSet<String> = logs_dir(&app.head)
        .map(|d| list_logs(&d).into_iter().map(|f| f.name).collect())
        .unwrap_or_default();
    let now = crate::state::now_us();
    layout(
        "Nodes",
        html! {
            @for n in &nodes {
                @let o = n.objects();
                section.node id={ "node-" (n.node_id) } {
                    h2 { "Node " span.mono { (n.node_id) } " "
                        @if n.alive { span.ok { "ALIVE" } } @else { span.bad { "DEAD" } } }
                    p.small { (o.objects) " objects, " (human_bytes(o.bytes_in_memory)) " in memory, "
                        (o.objects_spilled) " spilled (" (human_bytes(o.bytes_spilled)) ")" }
                    table.process-table {
                        tr { th.num { "job" } th { "process" } th.num { "pid" } th { "state" } th.num { "uptime" }
                             th.num { "objects" } th.num { "in memory" } th.num { "spilled" } th { "logs" } }
                        @for p in &n.processes {
                            tr.process {
                                td.num { a href={ "/jobs/" (p.job) } { (p.job) } }
                                td { (p.kind.name()) }
                                td.num.mono { @if let Some(pid) = p.pid { (pid) } @else { "-" } }
                                td { (p.state.name()) }
                                td.num { (duration(p.started_us.map(|s| now.saturating_sub(s)))) }
                                @if let Some(o) = p.objects {
                                    td.num { (o.objects) }
                                    td.num { (human_bytes(o.bytes_in_memory)) }
                                    td.num { (o.objects_spilled) " · " (human_bytes(o.bytes_spilled)) }
                                } @else {
                                    td.num { "-" } td.num { "-" } td.num { "-" }
                                }
                                td.mono {
                                    @for f in &p.logs {
                                        @if here.contains(f) { a href={ "/logs/" (f) } { (f) } " " }
                                        @else { span title={ "prism logs --node " (n.node_id) " " (f) } { (f) } " " }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// `/logs`: the session's log files.
pub(super) async fn logs(State(app): State<App>) -> Response {
    let dir = match logs_dir(&app.head) {
        Ok(d) => d,
        Err(_) => return problem(StatusCode::NOT_FOUND, "this head keeps no logs"),
    };
    let files = list_logs(&dir);
    layout(
        "Logs",
        html! {
            table #log-table {
                tr { th { "file" } th.num { "bytes" } }
                @for f in &files {
                    tr { td.mono { a href={ "/logs/" (f.name) } { (f.name) } } td.num { (f.size) } }
                }
            }
        },
    )
}

/// `/logs/{file}`: the last 64 KiB of a log file.
pub(super) async fn log(State(app): State<App>, UrlPath(file): UrlPath<String>) -> Response {
    let part = logs_dir(&app.head).and_then(|d| read_log(&d, &file, &LogParams::default()));
    match part {
        Ok(part) => layout(
            &file,
            html! {
                p.small { "bytes " (part.offset) "–" (part.offset + part.data.len() as u64) " of " (part.size)
                    " · " a href={ "/api/logs/" (file) "?offset=0" } { "from the start (JSON)" } }
                pre.log { (String::from_utf8_lossy(&part.data)) }
            },
        ),
        Err(e) => problem(e.status, &e.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_escapes_read_well() {
        assert_eq!(duration(Some(12)), "12 µs");
        assert_eq!(duration(Some(1_500)), "1.5 ms");
        assert_eq!(duration(Some(2_500_000)), "2.50 s");
        assert_eq!(url_escape("a b&c"), "a%20b%26c");
        assert_eq!(clip("abcdef", 3), "abc…");
    }

    #[test]
    fn a_page_escapes_what_it_shows() {
        let r = html! { td { ("<script>alert(1)</script>") } }.into_string();
        assert!(!r.contains("<script>"));
    }
}
