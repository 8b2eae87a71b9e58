//! The `prism` command line: start and stop the daemons of a cluster, and see its state.
//!
//! ```sh
//! prism start --head                      # a head (and a node) in the background
//! prism start --address 127.0.0.1:6379    # another node joins
//! prism status                            # nodes and their resources
//! prism list tasks --state failed         # what the head recorded (also: summary, timeline)
//! prism job submit -- ./my_driver --epochs 3   # a driver run on the head's machine
//! prism stop                              # ends the daemons this machine started
//! ```

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use prism::daemon::head::Head;
use prism::daemon::node::{Node, NodeOptions};
use prism::session;
use prism::wire::{self, Msg, Role};
use prism::Config;

mod job;
mod logs;
mod state;

#[derive(Parser)]
#[command(
    name = "prism",
    version,
    about = "Start, inspect and stop prism clusters"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Starts a head (`--head`) or a node joining a head (`--address`), in the background.
    Start(Start),
    /// Ends the daemons this machine started (by their recorded PIDs).
    Stop,
    /// Prints the cluster's nodes and their resources.
    Status {
        /// The head's address (default: the one recorded in the session).
        #[arg(long)]
        address: Option<String>,
    },
    /// Shows or stops the serving application (prism-serve) running on this machine.
    #[command(subcommand)]
    Serve(ServeCmd),
    /// Lists what the head knows: nodes, jobs, tasks, actors, objects or workers.
    #[command(subcommand)]
    List(state::ListCmd),
    /// Summarises the recorded tasks: counts by function and state.
    #[command(subcommand)]
    Summary(state::SummaryCmd),
    /// Writes the recorded tasks as a Chrome trace (for Perfetto or chrome://tracing).
    Timeline(state::Timeline),
    /// Submits, follows, lists and stops jobs run on the head's machine.
    #[command(subcommand)]
    Job(job::JobCmd),
    /// Lists the log files of the head and the nodes, or prints (and follows) one, a
    /// worker's or a job's workers'.
    Logs(logs::Logs),
}

#[derive(Subcommand)]
enum ServeCmd {
    /// Lists the deployments, their replicas, the replicas' states and queues.
    Status {
        /// The ingress's URL (default: the one the application recorded in the session).
        #[arg(long)]
        url: Option<String>,
        /// `table` or `json`.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Drains every deployment and stops the application.
    Shutdown {
        /// The ingress's URL (default: the one the application recorded in the session).
        #[arg(long)]
        url: Option<String>,
    },
}

#[derive(Args, Clone)]
struct Start {
    /// Start a head node.
    #[arg(long, conflicts_with = "address")]
    head: bool,
    /// Join the head at HOST:PORT as a node.
    #[arg(long, required_unless_present = "head")]
    address: Option<String>,
    /// The head's port (0: any free port).
    #[arg(long, default_value_t = 6379)]
    port: u16,
    /// The address this machine's daemons listen on.
    #[arg(long, default_value = "127.0.0.1")]
    node_ip_address: String,
    /// CPUs this node offers (default: all of the machine's; 0 on a head: no node).
    #[arg(long)]
    num_cpus: Option<f64>,
    /// GPUs this node offers.
    #[arg(long, default_value_t = 0.0)]
    num_gpus: f64,
    /// Custom resources as JSON, such as '{"node1": 1}'.
    #[arg(long)]
    resources: Option<String>,
    /// The node's object store memory cap in bytes.
    #[arg(long)]
    object_store_memory: Option<u64>,
    /// On a head: the port of its dashboard and REST API; 0 for any.
    #[arg(long, default_value_t = 8265)]
    dashboard_port: u16,
    /// On a head: the address the dashboard listens on (127.0.0.1: this machine only).
    #[arg(long, default_value = "127.0.0.1")]
    dashboard_host: String,
    /// On a head: a host name the dashboard may be reached by besides IP addresses and
    /// `localhost` (requests naming any other host are refused, against DNS rebinding).
    #[arg(long)]
    dashboard_allow_host: Vec<String>,
    /// On a head: how long a node may stay silent before it counts as dead.
    #[arg(long, default_value_t = 3000)]
    node_timeout_ms: u64,
    /// On a head: the task records kept per job (the oldest go first, counted).
    #[arg(long, default_value_t = prism::state::DEFAULT_TASK_RING)]
    task_events: usize,
    /// On a head: the actor records kept per job.
    #[arg(long, default_value_t = prism::state::DEFAULT_ACTOR_RING)]
    actor_events: usize,
    /// Stay in the foreground.
    #[arg(long)]
    block: bool,
}

/// Lets a closed output pipe (`prism status | head`) end this process quietly, as it
/// ends other Unix tools, instead of a panic in `println!`. Only for the commands that
/// print and exit: the daemons keep ignoring the signal, so that a peer's closed
/// connection stays an error to handle.
#[allow(unsafe_code)]
fn die_quietly_on_closed_pipe() {
    // SAFETY: restoring a signal's default disposition at the start of `main`, before
    // any thread is started; no handler runs Rust code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() {
    let cli = Cli::parse();
    if !matches!(cli.command, Cmd::Start(_)) {
        die_quietly_on_closed_pipe();
    }
    let result = match cli.command {
        Cmd::Start(s) if s.block => run_blocking(s),
        Cmd::Start(s) => start_background(s),
        Cmd::Stop => stop(),
        Cmd::Status { address } => status(address),
        Cmd::Serve(ServeCmd::Status { url, format }) => serve_status(url, &format),
        Cmd::Serve(ServeCmd::Shutdown { url }) => serve_shutdown(url),
        Cmd::List(cmd) => state::list(cmd),
        Cmd::Summary(cmd) => state::summary(cmd),
        Cmd::Timeline(t) => state::timeline(t),
        Cmd::Job(cmd) => job::run(cmd),
        Cmd::Logs(l) => logs::run(l),
    };
    if let Err(e) = result {
        eprintln!("prism: {e}");
        std::process::exit(1);
    }
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn node_config(s: &Start) -> Res<Config> {
    let mut c = Config::default().num_gpus(s.num_gpus);
    if let Some(n) = s.num_cpus {
        c = c.num_cpus(n);
    }
    if let Some(b) = s.object_store_memory {
        c = c.object_store_memory(b);
    }
    if let Some(json) = &s.resources {
        let map: BTreeMap<String, f64> = serde_json::from_str(json)
            .map_err(|e| format!("--resources must be a JSON object of numbers: {e}"))?;
        for (k, v) in map {
            c = c.resource(k, v);
        }
    }
    Ok(c)
}

/// Re-runs this command with `--block` in the background and waits until it serves.
fn start_background(s: Start) -> Res<()> {
    let dir = session::dir();
    session::create(&dir)?;
    let role = if s.head { "head" } else { "node" };
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let log =
        |ext: &str| std::fs::File::create(dir.join("logs").join(format!("{role}-{stamp}.{ext}")));
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    args.push("--block".into());
    let mut child = {
        use std::os::unix::process::CommandExt;
        Command::new(std::env::current_exe()?)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log("out")?)
            .stderr(log("err")?)
            .process_group(0)
            .spawn()?
    };
    let pid = child.id();
    let pid_file = dir.join("pids").join(format!("{role}-{pid}"));
    let t = Instant::now();
    while !pid_file.exists() {
        if let Some(status) = child.try_wait()? {
            let err = std::fs::read_to_string(dir.join("logs").join(format!("{role}-{stamp}.err")))
                .unwrap_or_default();
            return Err(format!("the {role} exited at start ({status}): {}", err.trim()).into());
        }
        if t.elapsed() > Duration::from_secs(20) {
            return Err(format!(
                "the {role} did not come up within 20 s; see {}",
                dir.join("logs").display()
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let served = std::fs::read_to_string(&pid_file)?;
    if s.head {
        println!(
            "prism head started at {served} (pid {pid}, ready in {:.0} ms)",
            t.elapsed().as_secs_f64() * 1e3
        );
        println!();
        println!("  run a program on it:  PRISM_ADDRESS={served} cargo run --release --example where_did_it_run");
        println!("  add a node:           prism start --address {served}");
        println!("  see the cluster:      prism status");
        if let Ok(api) = std::fs::read_to_string(dir.join("dashboard")) {
            println!(
                "  its dashboard:        http://{api}   (REST: /api/jobs, /api/tasks, /metrics)"
            );
        }
        println!("  stop its daemons:     prism stop");
    } else {
        println!(
            "prism node started at {served} (pid {pid}), joined {}",
            s.address.unwrap_or_default()
        );
    }
    Ok(())
}

fn run_blocking(s: Start) -> Res<()> {
    init_logs();
    let dir = session::dir();
    session::create(&dir)?;
    // One thread serves every connection: a message then goes from one socket to
    // another without waking a second thread, and the cores stay with the tasks.
    let io = tokio::runtime::Builder::new_current_thread()
        .thread_name("prism-daemon")
        .enable_all()
        .build()?;
    io.block_on(async move {
        let config = node_config(&s)?;
        let (head_address, token) = if s.head {
            // A head restarted in the same session takes its tables and token back, so
            // that the nodes still running reconnect to it.
            let tables = dir.join("head.redb");
            let token = match (tables.exists(), session::read_token(&dir)) {
                (true, Ok(t)) => t,
                _ => session::new_token()?,
            };
            let listener = tokio::net::TcpListener::bind((s.node_ip_address.as_str(), s.port))
                .await
                .map_err(|e| format!("cannot listen on {}:{}: {e}", s.node_ip_address, s.port))?;
            let address = listener.local_addr()?.to_string();
            session::write_token(&dir, &token)?;
            let head = Head::persistent(
                token.clone(),
                dir.join("executables"),
                Duration::from_millis(s.node_timeout_ms),
                tables,
            )?;
            head.keep_events(s.task_events, s.actor_events);
            head.run_jobs(address.clone(), dir.clone());
            tokio::spawn(head.clone().serve(listener));
            // The HTTP API is a convenience: a head whose port is taken still serves.
            let _ = std::fs::remove_file(dir.join("dashboard"));
            match tokio::net::TcpListener::bind((s.dashboard_host.as_str(), s.dashboard_port)).await
            {
                Ok(l) => {
                    let at = l.local_addr()?.to_string();
                    tracing::info!(address = %at, "dashboard listening");
                    std::fs::write(dir.join("dashboard"), &at)?;
                    let options = prism::daemon::dashboard::Options {
                        allowed_hosts: s.dashboard_allow_host.clone(),
                    };
                    tokio::spawn(prism::daemon::dashboard::serve(l, head, options));
                }
                Err(e) => tracing::warn!(
                    "no dashboard API: cannot listen on {}:{}: {e}",
                    s.dashboard_host,
                    s.dashboard_port
                ),
            }
            (address, token)
        } else {
            let address = s.address.clone().unwrap_or_default();
            (address, session::read_token(&dir)?)
        };
        let run_node = !s.head || s.num_cpus.is_none_or(|n| n > 0.0);
        let mut node = None;
        if run_node {
            let options = NodeOptions {
                head: head_address.clone(),
                listen: format!("{}:0", s.node_ip_address),
                config,
                session: dir.clone(),
                token,
                heartbeat: Duration::from_millis(200),
            };
            let (n, listener) = Node::bind(options).await?;
            tracing::info!(node = n.id(), address = n.address(), "node listening");
            tokio::spawn(n.clone().run(listener));
            node = Some(n);
        }
        let (role, served) = if s.head {
            session::write_address(&dir, &head_address)?;
            ("head", head_address.clone())
        } else {
            (
                "node",
                node.as_ref()
                    .map(|n| n.address().to_string())
                    .unwrap_or_default(),
            )
        };
        let pid_file = session::write_pid(&dir, role, &served)?;
        wait_for_termination().await;
        if let Some(n) = &node {
            n.kill_workers();
        }
        let _ = std::fs::remove_file(&pid_file);
        if s.head && session::read_address(&dir).ok().as_deref() == Some(head_address.as_str()) {
            let _ = std::fs::remove_file(dir.join("address"));
            let _ = std::fs::remove_file(dir.join("dashboard"));
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    Ok(())
}

fn init_logs() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .init();
}

async fn wait_for_termination() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}

fn alive(pid: u32) -> bool {
    session::process_alive(pid)
}

fn is_our_daemon(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| c.split(|b| *b == 0).any(|arg| arg == b"--block"))
        .unwrap_or(false)
}

fn stop() -> Res<()> {
    let dir = session::dir();
    let daemons = session::pids(&dir);
    let mut stopped = 0;
    for (pid, file) in &daemons {
        if !is_our_daemon(*pid) {
            let _ = std::fs::remove_file(file);
            continue;
        }
        prism::session::signal(*pid, libc_signal::TERM);
        let t = Instant::now();
        while alive(*pid) && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        if alive(*pid) {
            prism::session::signal(*pid, libc_signal::KILL);
        }
        let _ = std::fs::remove_file(file);
        stopped += 1;
    }
    let _ = std::fs::remove_file(dir.join("address"));
    // A stopped cluster is over: a new head starts with fresh tables and token.
    let _ = std::fs::remove_file(dir.join("head.redb"));
    println!("stopped {stopped} prism daemon(s)");
    Ok(())
}

mod libc_signal {
    pub const TERM: i32 = 15;
    pub const KILL: i32 = 9;
}

fn status(address: Option<String>) -> Res<()> {
    let dir = session::dir();
    let address = match address {
        Some(a) => a,
        None => session::read_address(&dir)?,
    };
    let token = session::read_token(&dir)?;
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let nodes = io
        .block_on(async {
            let (mut s, _) = wire::connect(&address, &token, Role::Cli).await?;
            wire::write_msg(&mut s, &Msg::Status).await?;
            match wire::read_msg(&mut s).await? {
                Msg::ClusterView { nodes } => Ok(nodes),
                other => Err(format!("unexpected answer {other:?}").into()),
            }
        })
        .map_err(|e: Box<dyn std::error::Error>| e)?;
    println!(
        "cluster at {address}: {} node(s)",
        nodes.iter().filter(|n| n.alive).count()
    );
    println!(
        "{:<10} {:<22} {:<6} {:>14} {:>10} {:>8} {:>7}",
        "node", "address", "state", "CPU used/total", "GPU", "running", "queued"
    );
    for n in &nodes {
        let get = |list: &[(String, f64)], k: &str| {
            list.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| *v)
                .unwrap_or(0.0)
        };
        let cpu_total = get(&n.total, "CPU");
        let cpu_used = cpu_total - get(&n.available, "CPU");
        let gpu_total = get(&n.total, "GPU");
        let gpu_used = gpu_total - get(&n.available, "GPU");
        println!(
            "{:<10} {:<22} {:<6} {:>14} {:>10} {:>8} {:>7}",
            n.node_id,
            n.address,
            if n.alive { "alive" } else { "dead" },
            format!("{cpu_used}/{cpu_total}"),
            format!("{gpu_used}/{gpu_total}"),
            n.running,
            n.queued
        );
        let custom: Vec<String> = n
            .total
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "CPU" | "GPU" | "memory"))
            .map(|(k, v)| format!("{k}: {}/{v}", v - get(&n.available, k)))
            .collect();
        if !custom.is_empty() {
            println!("           custom: {}", custom.join(", "));
        }
        for p in &n.pending {
            let demand: Vec<String> = p.demand.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            println!(
                "           pending: {} x {} {{{}}}: {}",
                p.count,
                p.what,
                demand.join(", "),
                p.reason
            );
        }
    }
    Ok(())
}

/// The serving application's URL and token: given, or as it recorded them in the
/// session (`serve.json`); the token may come from `PRISM_SERVE_TOKEN`.
fn serve_target(url: Option<String>) -> Res<(String, Option<String>)> {
    let dir = session::dir();
    let record = session::serve_record(&dir);
    let token = std::env::var("PRISM_SERVE_TOKEN")
        .ok()
        .or_else(|| record.as_ref()?.token.clone());
    let url = match url {
        Some(u) => u,
        None => record.map(|r| r.url).ok_or_else(|| {
            format!(
                "no serving application recorded in {}: start one, or give --url",
                dir.join("serve.json").display()
            )
        })?,
    };
    Ok((url, token))
}

/// One request to the serving application at `url`: the status and body.
fn http(url: &str, method: &str, path: &str, token: Option<&str>) -> Res<(u16, String)> {
    session::http_once(url, method, path, token, Duration::from_secs(30))
        .map_err(|e| format!("cannot reach the serving application at {url}: {e}").into())
}

fn serve_status(url: Option<String>, format: &str) -> Res<()> {
    let (url, _) = serve_target(url)?;
    let (status, body) = http(&url, "GET", "/-/status", None)?;
    if status != 200 {
        return Err(format!("{url}/-/status answered {status}: {body}").into());
    }
    if format == "json" {
        println!("{body}");
        return Ok(());
    }
    if format != "table" {
        return Err(format!("--format is table or json, not {format:?}").into());
    }
    let all: Vec<serde_json::Value> = serde_json::from_str(&body)?;
    println!("serving at {url}: {} deployment(s)", all.len());
    println!(
        "{:<16} {:<14} {:>8} {:>7} {:>10} {:>8}",
        "deployment", "route", "replicas", "queued", "requests", "errors"
    );
    for d in &all {
        let replicas = d["replicas"].as_array().cloned().unwrap_or_default();
        let running = replicas.iter().filter(|r| r["state"] == "Running").count();
        println!(
            "{:<16} {:<14} {:>8} {:>7} {:>10} {:>8}",
            d["name"].as_str().unwrap_or("?"),
            d["route_prefix"].as_str().unwrap_or("-"),
            format!("{running}/{}", d["target_replicas"]),
            d["queued"],
            d["requests"],
            d["errors"]
        );
        for r in &replicas {
            let at = match r["info"].as_object() {
                Some(i) => format!(
                    "node {} pid {}",
                    i["node_id"].as_str().unwrap_or("?"),
                    i["pid"]
                ),
                None => "-".to_string(),
            };
            println!(
                "    replica {:<4} {:<9} {:<28} {} in flight",
                r["id"],
                r["state"].as_str().unwrap_or("?"),
                at,
                r["ongoing"]
            );
        }
        if let Some(f) = d["last_failure"].as_str() {
            println!("    last failure: {f}");
        }
    }
    Ok(())
}

fn serve_shutdown(url: Option<String>) -> Res<()> {
    let (url, token) = serve_target(url)?;
    let token = token.ok_or("no token for the serving application: set PRISM_SERVE_TOKEN")?;
    let (status, body) = http(&url, "POST", "/-/shutdown", Some(&token))?;
    if status != 200 {
        return Err(format!("{url} refused the shutdown ({status}): {body}").into());
    }
    println!("the serving application at {url} is shutting down");
    Ok(())
}
