//! `prism logs`: the log files of the cluster's daemons, submitted jobs and worker
//! processes, read from the daemon whose machine keeps them (each node serves its own
//! session's `logs` directory, and so does the head), once or followed as they grow.
//!
//! Daemons that share one session directory (a local cluster on one machine) answer
//! with the same files: those are listed and printed once.

use std::io::Write;
use std::time::Duration;

use clap::Args;
use prism::session::{LogFile, LogPart, MAX_LOG_READ};
use prism::wire::Msg;

use super::state::{ask_at, head_address, processes, unexpected};
use super::Res;

/// `prism logs`' options.
#[derive(Args)]
pub struct Logs {
    /// A log file to print, by the name `prism logs` lists.
    file: Option<String>,
    /// The head's address (default: the one recorded in the session).
    #[arg(long)]
    address: Option<String>,
    /// Only the files this node keeps (with `--job`: only its workers' logs).
    #[arg(long)]
    node: Option<String>,
    /// The logs of the worker process with this PID (`prism list workers` lists them).
    #[arg(long, value_name = "PID")]
    worker: Option<u32>,
    /// The logs of this job's worker processes, on every node.
    #[arg(long)]
    job: Option<u32>,
    /// Keep printing what the files get until interrupted.
    #[arg(long, short)]
    follow: bool,
    /// Print only each file's last LINES lines (0: all of it).
    #[arg(long, default_value_t = 100, value_name = "LINES")]
    tail: usize,
}

/// One log directory, as the daemons sharing it answered.
struct Source {
    /// The nodes (or `head`) that keep it.
    names: Vec<String>,
    /// The address of one of them, to read from.
    address: String,
    place: String,
    files: Vec<LogFile>,
}

impl Source {
    fn label(&self) -> String {
        self.names.join(",")
    }
}

/// The log directories of the head and the alive nodes (or of node `only`), each once.
fn sources(head: &str, only: Option<&str>) -> Res<Vec<Source>> {
    let nodes = match ask_at(head, &Msg::Status)? {
        Msg::ClusterView { nodes } => nodes,
        m => return Err(unexpected(&m)),
    };
    let mut daemons: Vec<(String, String)> = Vec::new();
    match only {
        Some(id) => {
            let n = nodes.iter().find(|n| n.node_id == id).ok_or_else(|| {
                format!("the head knows no node {id} (prism list nodes lists them)")
            })?;
            if !n.alive {
                return Err(format!("node {id} is dead: its logs cannot be read").into());
            }
            daemons.push((id.to_string(), n.address.clone()));
        }
        None => {
            daemons.push(("head".into(), head.to_string()));
            daemons.extend(
                nodes
                    .iter()
                    .filter(|n| n.alive)
                    .map(|n| (n.node_id.clone(), n.address.clone())),
            );
        }
    }
    let mut out: Vec<Source> = Vec::new();
    for (name, address) in daemons {
        let (place, files) = match ask_at(&address, &Msg::ListLogs) {
            Ok(Msg::LogFiles { place, files }) => (place, files),
            Ok(m) => return Err(unexpected(&m)),
            // A head started without a session keeps no logs; a node must answer.
            Err(_) if name == "head" => continue,
            Err(e) => return Err(format!("node {name}: {e}").into()),
        };
        match out.iter_mut().find(|s| s.place == place) {
            Some(s) => s.names.push(name),
            None => out.push(Source {
                names: vec![name],
                address,
                place,
                files,
            }),
        }
    }
    Ok(out)
}

/// Runs `prism logs`.
pub fn run(l: Logs) -> Res<()> {
    let head = head_address(&l.address)?;
    let (sources, picked): (Vec<Source>, Vec<(usize, String)>) = if let Some(pid) = l.worker {
        let nodes = processes(&Some(head.clone()), None, l.node.as_deref())?;
        let (node, logs) = nodes
            .iter()
            .find_map(|n| {
                n.processes
                    .iter()
                    .find(|p| p.pid == Some(pid) && !p.logs.is_empty())
                    .map(|p| (n.node_id.clone(), p.logs.clone()))
            })
            .ok_or_else(|| {
                format!("no worker process has pid {pid} (prism list workers lists them)")
            })?;
        let sources = sources(&head, Some(&node))?;
        let picked = pick(&sources, |f| logs.contains(&f.name));
        (sources, picked)
    } else if let Some(file) = &l.file {
        let sources = sources(&head, l.node.as_deref())?;
        let picked = pick(&sources, |f| &f.name == file);
        if picked.is_empty() {
            return Err(format!("no log file {file:?} (prism logs lists them)").into());
        }
        (sources, picked)
    } else if let Some(job) = l.job {
        let sources = sources(&head, l.node.as_deref())?;
        let node = l.node.clone();
        let picked = pick(&sources, |f| worker_log_of(&f.name, job, node.as_deref()));
        if picked.is_empty() {
            return Err(format!("no worker of job {job} wrote a log here").into());
        }
        (sources, picked)
    } else {
        if l.follow {
            return Err("--follow needs a file, --worker or --job".into());
        }
        let sources = sources(&head, l.node.as_deref())?;
        println!("{:<10} {:>11}  FILE", "KEPT_BY", "SIZE");
        for s in &sources {
            for f in &s.files {
                println!(
                    "{:<10} {:>11}  {}",
                    s.label(),
                    prism::state::human_bytes(f.size),
                    f.name
                );
            }
        }
        return Ok(());
    };
    let mut out = std::io::stdout().lock();
    let many = picked.len() > 1;
    let mut next = Vec::with_capacity(picked.len());
    for (i, name) in &picked {
        let s = &sources[*i];
        if many {
            writeln!(out, "==> {name} ({}) <==", s.label())?;
        }
        next.push(print_tail(&mut out, &s.address, name, l.tail)?);
        out.flush()?;
    }
    if !l.follow {
        return Ok(());
    }
    let mut last = None;
    loop {
        std::thread::sleep(Duration::from_millis(250));
        for (k, (i, name)) in picked.iter().enumerate() {
            let s = &sources[*i];
            let part = read(&s.address, name, Some(next[k]), None)
                .map_err(|e| format!("following {name} on {}: {e}", s.label()))?;
            // A file that shrank was started again: follow it from its start.
            if part.size < next[k] {
                next[k] = 0;
                continue;
            }
            if part.data.is_empty() {
                continue;
            }
            if many && last != Some(k) {
                writeln!(out, "\n==> {name} ({}) <==", s.label())?;
            }
            last = Some(k);
            out.write_all(&part.data)?;
            out.flush()?;
            next[k] = part.next();
        }
    }
}

/// The files of `sources` that `keep` picks, as (source, name).
fn pick(sources: &[Source], keep: impl Fn(&LogFile) -> bool) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, s) in sources.iter().enumerate() {
        out.extend(
            s.files
                .iter()
                .filter(|f| keep(f))
                .map(|f| (i, f.name.clone())),
        );
    }
    out
}

/// Whether `name` is a log of a worker of `job` (on `node`, if given):
/// `worker-<node>-job<job>.out` or `.err`.
fn worker_log_of(name: &str, job: u32, node: Option<&str>) -> bool {
    let Some(rest) = name.strip_prefix("worker-") else {
        return false;
    };
    let Some(stem) = rest
        .strip_suffix(".out")
        .or_else(|| rest.strip_suffix(".err"))
    else {
        return false;
    };
    match stem.rsplit_once("-job") {
        Some((n, j)) => j == job.to_string() && node.is_none_or(|want| want == n),
        None => false,
    }
}

fn read(address: &str, file: &str, offset: Option<u64>, tail: Option<u64>) -> Res<LogPart> {
    let msg = Msg::ReadLog {
        file: file.to_string(),
        offset,
        tail,
    };
    match ask_at(address, &msg)? {
        Msg::LogRead { part } => Ok(part),
        m => Err(unexpected(&m)),
    }
}

/// Prints the last `lines` lines of `file` (all of it for 0); returns its size then.
fn print_tail(out: &mut impl Write, address: &str, file: &str, lines: usize) -> Res<u64> {
    if lines == 0 {
        let mut offset = 0;
        loop {
            let part = read(address, file, Some(offset), None)?;
            out.write_all(&part.data)?;
            offset = part.next();
            if part.data.is_empty() || offset >= part.size {
                return Ok(offset);
            }
        }
    }
    let part = read(address, file, None, Some(MAX_LOG_READ))?;
    let data = &part.data;
    // The start of the last `lines` lines (a final newline ends the last, not starts one).
    let body = data.strip_suffix(b"\n").unwrap_or(data);
    let start = body
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, b)| **b == b'\n')
        .nth(lines - 1)
        .map_or(0, |(i, _)| i + 1);
    out.write_all(&data[start..])?;
    Ok(part.next())
}

#[cfg(test)]
mod tests {
    use super::worker_log_of;

    #[test]
    fn worker_logs_are_told_by_job_and_node() {
        assert!(worker_log_of("worker-9f57fa4f-job1.out", 1, None));
        assert!(worker_log_of(
            "worker-9f57fa4f-job1.err",
            1,
            Some("9f57fa4f")
        ));
        assert!(!worker_log_of(
            "worker-9f57fa4f-job1.err",
            1,
            Some("b29354b9")
        ));
        assert!(!worker_log_of("worker-9f57fa4f-job12.out", 1, None));
        assert!(!worker_log_of("worker-9f57fa4f-job1.log", 1, None));
        assert!(!worker_log_of("head-1733.err", 1, None));
    }
}
