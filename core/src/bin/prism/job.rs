//! `prism job`: run an entrypoint on the head's machine as a driver of the cluster, and
//! follow, list or stop what was submitted.

use std::io::Write;
use std::time::Duration;

use clap::{Args, Subcommand};
use prism::state::{JobRequest, JobStatus, JobSubmission};
use prism::wire::Msg;

use super::state::{ask, Format};
use super::Res;

/// `prism job ...`.
#[derive(Subcommand)]
pub enum JobCmd {
    /// Runs `-- COMMAND [ARGS...]` on the head's machine as a driver of the cluster;
    /// follows its output until it ends unless `--no-wait`.
    Submit(Submit),
    /// Shows a submitted job.
    Status(One),
    /// Prints a submitted job's output.
    Logs(Logs),
    /// Ends a submitted job's processes.
    Stop(One),
    /// Lists the submitted jobs.
    List(Listing),
}

/// `prism job submit`'s options.
#[derive(Args)]
pub struct Submit {
    /// The head's address (default: the one recorded in the session).
    #[arg(long)]
    address: Option<String>,
    /// The directory the entrypoint runs in, on the head's machine (default: this one).
    #[arg(long)]
    working_dir: Option<String>,
    /// An environment variable for the entrypoint, `KEY=VALUE` (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Print the job's id and return at once.
    #[arg(long)]
    no_wait: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    entrypoint: Vec<String>,
}

/// Options naming one job.
#[derive(Args)]
pub struct One {
    /// The job's id (`sub-N`).
    id: String,
    /// The head's address (default: the one recorded in the session).
    #[arg(long)]
    address: Option<String>,
    /// How to print.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

/// `prism job logs`' options.
#[derive(Args)]
pub struct Logs {
    /// The job's id (`sub-N`).
    id: String,
    /// The head's address (default: the one recorded in the session).
    #[arg(long)]
    address: Option<String>,
    /// Keep printing what it writes until it ends.
    #[arg(long, short)]
    follow: bool,
}

/// `prism job list`'s options.
#[derive(Args)]
pub struct Listing {
    /// The head's address (default: the one recorded in the session).
    #[arg(long)]
    address: Option<String>,
    /// How to print.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

/// How often a follower asks for more output.
const FOLLOW_EVERY: Duration = Duration::from_millis(100);

/// Runs `prism job ...`.
pub fn run(cmd: JobCmd) -> Res<()> {
    match cmd {
        JobCmd::Submit(s) => submit(s),
        JobCmd::Status(o) => {
            let job = one(&o.address, Msg::JobStatusOf { id: o.id })?;
            print_jobs(&[job], o.format)
        }
        JobCmd::Stop(o) => {
            let job = one(&o.address, Msg::StopJob { id: o.id })?;
            print_jobs(&[job], o.format)
        }
        JobCmd::Logs(l) => {
            follow(&l.address, &l.id, l.follow)?;
            Ok(())
        }
        JobCmd::List(l) => match ask(&l.address, &Msg::ListSubmissions)? {
            Msg::Submissions { jobs } => print_jobs(&jobs, l.format),
            m => Err(format!("the head answered {}", m.name()).into()),
        },
    }
}

fn one(address: &Option<String>, msg: Msg) -> Res<JobSubmission> {
    match ask(address, &msg)? {
        Msg::Submission { job } => Ok(job),
        m => Err(format!("the head answered {}", m.name()).into()),
    }
}

fn submit(s: Submit) -> Res<()> {
    let env = s
        .env
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(format!("--env {kv:?}: expected KEY=VALUE")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let working_dir = match s.working_dir {
        Some(d) => Some(std::fs::canonicalize(&d).map_or(d, |p| p.display().to_string())),
        None => std::env::current_dir()
            .ok()
            .map(|p| p.display().to_string()),
    };
    let request = JobRequest {
        entrypoint: s.entrypoint,
        working_dir,
        env,
    };
    let job = one(&s.address, Msg::SubmitJob { request })?;
    eprintln!("job {} submitted ({})", job.id, job.status);
    if s.no_wait {
        println!("{}", job.id);
        return Ok(());
    }
    let job = follow(&s.address, &job.id, true)?;
    eprintln!("job {} {}{}", job.id, job.status, detail(&job));
    if job.status != JobStatus::Succeeded {
        std::process::exit(1);
    }
    Ok(())
}

/// Prints a job's output (to its end with `follow`); returns its record as it stands
/// after.
fn follow(address: &Option<String>, id: &str, follow: bool) -> Res<JobSubmission> {
    let mut offset = 0;
    let mut out = std::io::stdout().lock();
    loop {
        let chunk = match ask(
            address,
            &Msg::JobLogs {
                id: id.to_string(),
                offset,
            },
        )? {
            Msg::Log { chunk } => chunk,
            m => return Err(format!("the head answered {}", m.name()).into()),
        };
        out.write_all(&chunk.data)?;
        out.flush()?;
        offset = chunk.next;
        if chunk.ended || (!follow && chunk.data.is_empty()) {
            break;
        }
        if chunk.data.is_empty() {
            std::thread::sleep(FOLLOW_EVERY);
        }
    }
    one(address, Msg::JobStatusOf { id: id.to_string() })
}

fn detail(job: &JobSubmission) -> String {
    let mut parts = Vec::new();
    if let Some(code) = job.exit_code {
        parts.push(format!("exit code {code}"));
    }
    if let Some(m) = &job.message {
        parts.push(m.clone());
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(": {}", parts.join("; "))
    }
}

fn print_jobs(jobs: &[JobSubmission], format: Format) -> Res<()> {
    match format {
        Format::Json => {
            let rows: Vec<_> = jobs.iter().map(JobSubmission::to_json).collect();
            println!("{}", serde_json::to_string_pretty(&rows)?);
        }
        Format::Table => {
            println!(
                "{:<8} {:<10} {:>7} {:>4} {:>9}  ENTRYPOINT",
                "ID", "STATUS", "PID", "JOB", "SECONDS"
            );
            for j in jobs {
                let secs = match (j.started_us, j.ended_us) {
                    (Some(s), Some(e)) => format!("{:.1}", e.saturating_sub(s) as f64 / 1e6),
                    (Some(s), None) => {
                        format!(
                            "{:.1}",
                            prism::state::now_us().saturating_sub(s) as f64 / 1e6
                        )
                    }
                    _ => "-".into(),
                };
                println!(
                    "{:<8} {:<10} {:>7} {:>4} {:>9}  {}{}",
                    j.id,
                    j.status.name(),
                    j.pid.map_or("-".into(), |p| p.to_string()),
                    j.driver_job.map_or("-".into(), |p| p.to_string()),
                    secs,
                    j.request.entrypoint.join(" "),
                    detail(j)
                );
            }
        }
    }
    Ok(())
}
