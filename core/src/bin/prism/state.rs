//! `prism list`, `prism summary` and `prism timeline`: what the head recorded of the
//! cluster's jobs, tasks and actors, as a table, as JSON, or as a Chrome trace.

use std::io::Write;

use clap::{Args, Subcommand, ValueEnum};
use prism::session;
use prism::state::{
    human_bytes, short_name, state_counts, ActorQuery, ActorState, JobView, NodeProcesses,
    ObjectCounts, TaskPage, TaskQuery, TaskState, TraceLanes,
};
use prism::wire::{self, Msg, Role};
use serde_json::json;

use super::Res;

/// What `prism list` lists.
#[derive(Subcommand)]
pub enum ListCmd {
    /// The nodes, their resources and load.
    Nodes(Common),
    /// The jobs and their tasks by state.
    Jobs(Common),
    /// The recorded tasks, in the order first seen.
    Tasks(Filters),
    /// The recorded actors.
    Actors(Filters),
    /// What the object stores hold: count and bytes per process and node, spilled.
    Objects(Processes),
    /// The worker processes (and connected drivers) of each node, with their logs.
    Workers(Processes),
}

/// What `prism summary` summarises.
#[derive(Subcommand)]
pub enum SummaryCmd {
    /// Task counts by function and state.
    Tasks(Filters),
}

/// Options of every state command.
#[derive(Args, Clone)]
pub struct Common {
    /// The head's address (default: the one recorded in the session).
    #[arg(long)]
    address: Option<String>,
    /// How to print.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

/// Options of the commands that list records.
#[derive(Args, Clone)]
pub struct Filters {
    #[command(flatten)]
    common: Common,
    /// Only this job's.
    #[arg(long)]
    job: Option<u32>,
    /// Only those in this state (tasks: PENDING, RUNNING, FINISHED, FAILED; actors:
    /// PENDING, ALIVE, RESTARTING, DEAD).
    #[arg(long)]
    state: Option<String>,
    /// Only this function's tasks (its name, with or without its module path).
    #[arg(long)]
    function: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 100)]
    limit: u64,
}

/// Options of the commands that list processes.
#[derive(Args, Clone)]
pub struct Processes {
    #[command(flatten)]
    common: Common,
    /// Only this job's.
    #[arg(long)]
    job: Option<u32>,
    /// Only this node's.
    #[arg(long)]
    node: Option<String>,
}

/// `prism timeline`'s options.
#[derive(Args, Clone)]
pub struct Timeline {
    /// The head's address (default: the one recorded in the session).
    #[arg(long)]
    address: Option<String>,
    /// Only this job's tasks.
    #[arg(long)]
    job: Option<u32>,
    /// Where to write the trace (`-` for standard output).
    #[arg(short, long, default_value = "timeline.json")]
    output: String,
}

/// How a state command prints.
#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    /// Aligned columns, for people.
    Table,
    /// One JSON document, for scripts.
    Json,
}

/// Tasks asked of the head at once when a command pages through all of them.
const PAGE: u64 = 10_000;

/// The head's address: `address` if given, else the one recorded in the session.
pub fn head_address(address: &Option<String>) -> Res<String> {
    Ok(match address {
        Some(a) => a.clone(),
        None => session::read_address(&session::dir())?,
    })
}

/// Asks the head at `address` (or the session's) one question.
pub fn ask(address: &Option<String>, msg: &Msg) -> Res<Msg> {
    ask_at(&head_address(address)?, msg)
}

/// Asks the daemon (head or node) at `address` one question, with the session's token.
pub fn ask_at(address: &str, msg: &Msg) -> Res<Msg> {
    let token = session::read_token(&session::dir())?;
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let answer = io.block_on(async {
        let exchange = async {
            let (mut s, _) = wire::connect(address, &token, Role::Cli).await?;
            wire::write_msg(&mut s, msg).await?;
            wire::read_msg::<_, Msg>(&mut s).await
        };
        tokio::time::timeout(std::time::Duration::from_secs(30), exchange).await
    });
    match answer {
        Err(_) => Err(format!("{address} did not answer in 30 s").into()),
        Ok(Err(e)) => Err(format!("cannot ask {address}: {e}").into()),
        Ok(Ok(Msg::Failed { reason })) => Err(reason.into()),
        Ok(Ok(m)) => Ok(m),
    }
}

pub fn unexpected(m: &Msg) -> Box<dyn std::error::Error> {
    format!("the head answered {}", m.name()).into()
}

/// Runs `prism list ...`.
pub fn list(cmd: ListCmd) -> Res<()> {
    match cmd {
        ListCmd::Nodes(c) => nodes(&c),
        ListCmd::Jobs(c) => jobs(&c),
        ListCmd::Tasks(f) => tasks(&f),
        ListCmd::Actors(f) => actors(&f),
        ListCmd::Objects(p) => objects(&p),
        ListCmd::Workers(p) => workers(&p),
    }
}

fn nodes(c: &Common) -> Res<()> {
    let nodes = match ask(&c.address, &Msg::Status)? {
        Msg::ClusterView { nodes } => nodes,
        m => return Err(unexpected(&m)),
    };
    match c.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&nodes)?),
        Format::Table => {
            let get = |list: &[(String, f64)], k: &str| {
                list.iter().find(|(n, _)| n == k).map_or(0.0, |(_, v)| *v)
            };
            println!(
                "{:<10} {:<22} {:<6} {:>9} {:>9} {:>8} {:>7}",
                "NODE", "ADDRESS", "STATE", "CPU_USED", "CPU", "RUNNING", "QUEUED"
            );
            for n in &nodes {
                let total = get(&n.total, "CPU");
                println!(
                    "{:<10} {:<22} {:<6} {:>9} {:>9} {:>8} {:>7}",
                    n.node_id,
                    n.address,
                    if n.alive { "ALIVE" } else { "DEAD" },
                    total - get(&n.available, "CPU"),
                    total,
                    n.running,
                    n.queued
                );
            }
        }
    }
    Ok(())
}

fn jobs(c: &Common) -> Res<()> {
    let jobs = match ask(&c.address, &Msg::ListJobs)? {
        Msg::Jobs { jobs } => jobs,
        m => return Err(unexpected(&m)),
    };
    match c.format {
        Format::Json => {
            let rows: Vec<_> = jobs.iter().map(JobView::to_json).collect();
            println!("{}", serde_json::to_string_pretty(&rows)?);
        }
        Format::Table => {
            println!(
                "{:>5} {:<22} {:>8} {:>8} {:>9} {:>7} {:>7} {:>8}",
                "JOB",
                "DRIVER_NODE",
                "PENDING",
                "RUNNING",
                "FINISHED",
                "FAILED",
                "ACTORS",
                "DROPPED"
            );
            for j in &jobs {
                let [p, r, f, x] = j.tasks;
                println!(
                    "{:>5} {:<22} {p:>8} {r:>8} {f:>9} {x:>7} {:>7} {:>8}",
                    j.job, j.driver_node, j.actors_alive, j.dropped
                );
            }
        }
    }
    Ok(())
}

fn task_query(f: &Filters, offset: u64, limit: u64) -> Res<TaskQuery> {
    let state = f
        .state
        .as_deref()
        .map(str::parse::<TaskState>)
        .transpose()?;
    Ok(TaskQuery {
        job: f.job,
        state,
        function: f.function.clone(),
        offset,
        limit,
    })
}

fn page(address: &Option<String>, query: TaskQuery) -> Res<TaskPage> {
    match ask(address, &Msg::ListTasks { query })? {
        Msg::Tasks { page } => Ok(page),
        m => Err(unexpected(&m)),
    }
}

fn tasks(f: &Filters) -> Res<()> {
    let page = page(&f.common.address, task_query(f, 0, f.limit)?)?;
    match f.common.format {
        Format::Json => {
            let doc = page.to_json();
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        Format::Table => {
            println!(
                "{:<22} {:>4} {:<24} {:<8} {:<9} {:>7} {:>10}  ERROR",
                "TASK_ID", "JOB", "FUNCTION", "STATE", "NODE", "PID", "DURATION"
            );
            for t in &page.tasks {
                let duration = t
                    .duration_us()
                    .map_or(String::new(), |us| format!("{:.3} ms", us as f64 / 1e3));
                let error = t.error.as_deref().map_or(String::new(), one_line);
                println!(
                    "{:<22} {:>4} {:<24} {:<8} {:<9} {:>7} {:>10}  {error}",
                    t.task_id.to_string(),
                    t.job,
                    clip(short_name(&t.function), 24),
                    t.state.name(),
                    t.node.as_deref().unwrap_or("-"),
                    t.pid.map_or("-".to_string(), |p| p.to_string()),
                    duration,
                );
            }
            footer(page.tasks.len() as u64, page.total, page.dropped, "task");
        }
    }
    Ok(())
}

/// The line under a table: how many of how many, and what the head let go.
fn footer(shown: u64, total: u64, dropped: u64, what: &str) {
    let mut line = format!("{shown} of {total} {what}s");
    if shown < total {
        line.push_str(" (raise --limit for more)");
    }
    if dropped > 0 {
        line.push_str(&format!(
            "; {dropped} {what} records dropped (the head keeps the latest per job: see prism start --{what}-events)"
        ));
    }
    eprintln!("{line}");
}

fn one_line(s: &str) -> String {
    clip(s.lines().next().unwrap_or(""), 60)
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_string();
    }
    let mut out: String = s.chars().take(n - 1).collect();
    out.push('…');
    out
}

fn actors(f: &Filters) -> Res<()> {
    let state = f
        .state
        .as_deref()
        .map(str::parse::<ActorState>)
        .transpose()?;
    let query = ActorQuery {
        job: f.job,
        state,
        limit: f.limit,
    };
    let page = match ask(&f.common.address, &Msg::ListActors { query })? {
        Msg::Actors { page } => page,
        m => return Err(unexpected(&m)),
    };
    match f.common.format {
        Format::Json => {
            let doc = page.to_json();
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        Format::Table => {
            println!(
                "{:<28} {:>4} {:<24} {:<10} {:<9} {:>7} {:>8}  CAUSE",
                "ACTOR_ID", "JOB", "CLASS", "STATE", "NODE", "PID", "RESTARTS"
            );
            for a in &page.actors {
                println!(
                    "{:<28} {:>4} {:<24} {:<10} {:<9} {:>7} {:>8}  {}",
                    prism::ActorId::from(a.actor_id).to_string(),
                    a.job,
                    clip(short_name(&a.class), 24),
                    a.state.name(),
                    a.node.as_deref().unwrap_or("-"),
                    a.pid.map_or("-".to_string(), |p| p.to_string()),
                    a.restarts,
                    a.cause.as_deref().map_or(String::new(), one_line),
                );
            }
            footer(page.actors.len() as u64, page.total, page.dropped, "actor");
        }
    }
    Ok(())
}

/// Every node's processes the head heard of, narrowed to `p`'s job and node.
pub fn processes(
    address: &Option<String>,
    job: Option<u32>,
    node: Option<&str>,
) -> Res<Vec<NodeProcesses>> {
    let mut nodes = match ask(address, &Msg::ListProcesses)? {
        Msg::Processes { nodes } => nodes,
        m => return Err(unexpected(&m)),
    };
    if let Some(id) = node {
        nodes.retain(|n| n.node_id == id);
        if nodes.is_empty() {
            return Err(
                format!("the head knows no node {id} (prism list nodes lists them)").into(),
            );
        }
    }
    for n in &mut nodes {
        n.processes.retain(|p| job.is_none_or(|j| p.job == j));
    }
    Ok(nodes)
}

fn objects(p: &Processes) -> Res<()> {
    let nodes = processes(&p.common.address, p.job, p.node.as_deref())?;
    match p.common.format {
        Format::Json => {
            let rows: Vec<_> = nodes.iter().map(NodeProcesses::to_json).collect();
            println!("{}", serde_json::to_string_pretty(&rows)?);
        }
        Format::Table => {
            let row = |node: &str, job: String, kind: &str, pid: String, o: ObjectCounts| {
                println!(
                    "{node:<10} {job:>4} {kind:<7} {pid:>7} {:>9} {:>11} {:>8} {:>11} {:>11}",
                    o.objects,
                    human_bytes(o.bytes_in_memory),
                    o.objects_spilled,
                    human_bytes(o.bytes_spilled),
                    human_bytes(o.capacity),
                );
            };
            println!(
                "{:<10} {:>4} {:<7} {:>7} {:>9} {:>11} {:>8} {:>11} {:>11}",
                "NODE",
                "JOB",
                "PROCESS",
                "PID",
                "OBJECTS",
                "IN_MEMORY",
                "SPILLED",
                "SPILLED_B",
                "CAPACITY"
            );
            for n in &nodes {
                for p in &n.processes {
                    let Some(o) = p.objects else { continue };
                    let pid = p.pid.map_or("-".into(), |p| p.to_string());
                    row(&n.node_id, p.job.to_string(), p.kind.name(), pid, o);
                }
                let state = if n.alive { "(node)" } else { "(dead)" };
                row(&n.node_id, "all".into(), state, "-".into(), n.objects());
            }
        }
    }
    Ok(())
}

fn workers(p: &Processes) -> Res<()> {
    let nodes = processes(&p.common.address, p.job, p.node.as_deref())?;
    match p.common.format {
        Format::Json => {
            let rows: Vec<_> = nodes
                .iter()
                .flat_map(|n| {
                    n.processes.iter().map(|p| {
                        let mut v = p.to_json();
                        v["node_id"] = json!(n.node_id);
                        v
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&rows)?);
        }
        Format::Table => {
            println!(
                "{:<10} {:>4} {:<7} {:>7} {:<9} {:>9} {:>9}  LOGS",
                "NODE", "JOB", "PROCESS", "PID", "STATE", "UPTIME", "OBJECTS"
            );
            let now = prism::state::now_us();
            for n in &nodes {
                for p in &n.processes {
                    let uptime = p.started_us.map_or("-".into(), |s| {
                        format!("{:.1} s", now.saturating_sub(s) as f64 / 1e6)
                    });
                    println!(
                        "{:<10} {:>4} {:<7} {:>7} {:<9} {:>9} {:>9}  {}",
                        n.node_id,
                        p.job,
                        p.kind.name(),
                        p.pid.map_or("-".into(), |p| p.to_string()),
                        p.state.name(),
                        uptime,
                        p.objects.map_or("-".into(), |o| o.objects.to_string()),
                        p.logs.join(" "),
                    );
                }
            }
        }
    }
    Ok(())
}

/// Runs `prism summary ...`.
pub fn summary(cmd: SummaryCmd) -> Res<()> {
    let SummaryCmd::Tasks(f) = cmd;
    let summary = match ask(&f.common.address, &Msg::SummarizeTasks { job: f.job })? {
        Msg::TaskSummary { summary } => summary,
        m => return Err(unexpected(&m)),
    };
    match f.common.format {
        Format::Json => {
            let rows: Vec<_> = summary
                .functions
                .iter()
                .map(|(function, counts)| json!({"function": function, "states": state_counts(counts)}))
                .collect();
            let doc = json!({"functions": rows, "dropped": summary.dropped});
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        Format::Table => {
            println!(
                "{:<40} {:>9} {:>9} {:>9} {:>9} {:>9}",
                "FUNCTION", "PENDING", "RUNNING", "FINISHED", "FAILED", "TOTAL"
            );
            let mut all = [0u64; 4];
            for (function, counts) in &summary.functions {
                let [p, r, f, x] = *counts;
                for (a, c) in all.iter_mut().zip(counts) {
                    *a += c;
                }
                let name = if function.is_empty() {
                    "(not yet known)"
                } else {
                    function
                };
                println!(
                    "{:<40} {p:>9} {r:>9} {f:>9} {x:>9} {:>9}",
                    clip(name, 40),
                    p + r + f + x
                );
            }
            let [p, r, f, x] = all;
            println!(
                "{:<40} {p:>9} {r:>9} {f:>9} {x:>9} {:>9}",
                "(all)",
                p + r + f + x
            );
            if summary.dropped > 0 {
                eprintln!(
                    "{} task records dropped (the head keeps the latest per job)",
                    summary.dropped
                );
            }
        }
    }
    Ok(())
}

/// Runs `prism timeline`: every recorded task that started, as a Chrome trace (the
/// format Perfetto and chrome://tracing open), written page by page, so that neither
/// the head nor this process holds more than a page of tasks at once.
pub fn timeline(t: Timeline) -> Res<()> {
    let out: Box<dyn Write> = if t.output == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(
            std::fs::File::create(&t.output)
                .map_err(|e| format!("cannot write {}: {e}", t.output))?,
        )
    };
    let mut out = std::io::BufWriter::new(out);
    let mut lanes = TraceLanes::default();
    let mut offset = 0;
    out.write_all(TraceLanes::START)?;
    loop {
        let query = TaskQuery {
            job: t.job,
            offset,
            limit: PAGE,
            ..TaskQuery::default()
        };
        let page = page(&t.address, query)?;
        lanes.write(&page.tasks, &mut out)?;
        offset += page.tasks.len() as u64;
        if page.tasks.is_empty() || offset >= page.total {
            break;
        }
    }
    out.write_all(TraceLanes::END)?;
    out.flush()?;
    if t.output != "-" {
        eprintln!(
            "wrote {} task spans to {} (open it in https://ui.perfetto.dev or chrome://tracing)",
            lanes.spans(),
            t.output
        );
    }
    Ok(())
}
