//! Jobs submitted to the head (`prism job submit`): an entrypoint run on the head's
//! machine as a driver of the cluster, in a process group of its own, its output in
//! the session's `logs/job-<id>.log`.
//!
//! Each job is committed to the head's database when it is submitted and at each
//! change of status, so a restarted head lists it. A job still running when its head
//! died is watched again by its process id when the head comes back (it runs in its
//! own process group, so the head's death does not end it); its exit status is then
//! unknown, and its record says so. Stopping a job signals its whole process group
//! (SIGTERM, then SIGKILL after [`STOP_GRACE`]); its driver's worker processes end
//! with the driver, as every job's do.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use super::Head;
use crate::state::{now_us, JobRequest, JobStatus, JobSubmission, LogChunk};
use crate::sync::lock;
use crate::wire::{env, Msg};

/// How long a stopped job has after SIGTERM before its group gets SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// The most of a log sent in one answer.
const LOG_CHUNK: u64 = 256 << 10;

/// Where the head runs jobs: its own address (the drivers' `PRISM_ADDRESS`) and its
/// session directory.
#[derive(Debug, Clone)]
pub(super) struct JobHome {
    pub address: String,
    pub session: PathBuf,
}

impl Head {
    /// Runs submitted jobs from now on, as drivers of the head at `address`, with their
    /// output under `session`'s logs; watches again the jobs a previous head of this
    /// session left running.
    pub fn run_jobs(self: &Arc<Self>, address: String, session: PathBuf) {
        *lock(&self.job_home) = Some(JobHome { address, session });
        let left: Vec<JobSubmission> = lock(&self.submissions)
            .iter()
            .filter(|j| !j.status.ended())
            .cloned()
            .collect();
        for job in left {
            let head = self.clone();
            tokio::spawn(async move { head.adopt(job).await });
        }
    }

    /// A job a previous head started: watched until its process is gone.
    async fn adopt(self: Arc<Self>, job: JobSubmission) {
        let message = match job.pid {
            Some(pid) if job.status == JobStatus::Running => {
                tracing::info!(job = %job.id, pid, "head: watching a job a previous head started");
                while crate::session::process_alive(pid) {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                "the head restarted while it ran: its exit status is unknown"
            }
            _ => "the head restarted before the job started",
        };
        let stopped = lock(&self.stopping).remove(&job.id);
        let status = if stopped {
            JobStatus::Stopped
        } else {
            JobStatus::Failed
        };
        self.job_ended(&job.id, status, None, Some(message.to_string()))
            .await;
    }

    /// Records and starts a job.
    pub(crate) async fn submit_job(self: &Arc<Self>, request: JobRequest) -> Msg {
        let Some(home) = lock(&self.job_home).clone() else {
            return failed("this head runs no jobs: it was started without a session");
        };
        if request.entrypoint.is_empty() || request.entrypoint[0].is_empty() {
            return failed("a job needs an entrypoint: prism job submit -- COMMAND [ARGS...]");
        }
        if let Some((k, _)) = request
            .env
            .iter()
            .find(|(k, _)| k.is_empty() || k.contains('=') || k.contains('\0'))
        {
            return failed(&format!("{k:?} is not an environment variable's name"));
        }
        let dir = match &request.working_dir {
            Some(d) => PathBuf::from(d),
            None => home.session.clone(),
        };
        if !dir.is_dir() {
            return failed(&format!(
                "the working directory {} does not exist on the head's machine",
                dir.display()
            ));
        }
        let _writing = self.writing.lock().await;
        let n = lock(&self.submissions).len() + 1;
        let id = format!("sub-{n}");
        let mut job = JobSubmission {
            id: id.clone(),
            request,
            status: JobStatus::Pending,
            pid: None,
            driver_job: None,
            submitted_us: now_us(),
            started_us: None,
            ended_us: None,
            exit_code: None,
            message: None,
            log: format!("job-{id}.log"),
        };
        let record = job.clone();
        if let Err(reason) = self
            .commit(move |t| t.put_submission(n as u32, &record))
            .await
        {
            return Msg::Failed { reason };
        }
        lock(&self.submissions).push(job.clone());
        let started = self.start(&home, &dir, &job);
        match started {
            Ok(child) => {
                job.status = JobStatus::Running;
                job.pid = Some(child.id());
                job.started_us = Some(now_us());
                tracing::info!(job = %id, pid = child.id(), "head: job started");
                self.watch(id.clone(), child);
            }
            Err(e) => {
                job.status = JobStatus::Failed;
                job.ended_us = Some(now_us());
                job.message = Some(format!("its entrypoint did not start: {e}"));
            }
        }
        let record = job.clone();
        // Memory has it even if the disk does not: the process runs either way.
        let _ = self
            .commit(move |t| t.put_submission(n as u32, &record))
            .await;
        self.replace(&job);
        Msg::Submission { job }
    }

    fn start(
        &self,
        home: &JobHome,
        dir: &std::path::Path,
        job: &JobSubmission,
    ) -> std::io::Result<std::process::Child> {
        use std::os::unix::process::CommandExt;
        let logs = home.session.join("logs");
        std::fs::create_dir_all(&logs)?;
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(logs.join(&job.log))?;
        let err = out.try_clone()?;
        let mut command = Command::new(&job.request.entrypoint[0]);
        command
            .args(&job.request.entrypoint[1..])
            .current_dir(dir)
            .envs(job.request.env.iter().map(|(k, v)| (k, v)))
            .env("PRISM_ADDRESS", &home.address)
            .env("PRISM_SESSION_DIR", &home.session)
            .env(env::SUBMISSION, &job.id)
            .env_remove(env::NODE)
            .env_remove(env::NODE_ID)
            .env_remove(env::JOB)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own group: stopped as a whole, and not ended with the head.
            .process_group(0);
        command.spawn()
    }

    /// Waits for a job's process on a thread of its own, then records how it ended.
    fn watch(self: &Arc<Self>, id: String, mut child: std::process::Child) {
        let head = self.clone();
        let io = tokio::runtime::Handle::current();
        std::thread::spawn(move || {
            let status = child.wait();
            io.spawn(async move {
                let stopped = lock(&head.stopping).remove(&id);
                let (status, code, message) = match status {
                    Ok(s) if stopped => (JobStatus::Stopped, s.code(), None),
                    Ok(s) if s.success() => (JobStatus::Succeeded, s.code(), None),
                    Ok(s) => {
                        use std::os::unix::process::ExitStatusExt;
                        let why = s.signal().map(|n| format!("ended by signal {n}"));
                        (JobStatus::Failed, s.code(), why)
                    }
                    Err(e) => (
                        JobStatus::Failed,
                        None,
                        Some(format!("lost its process: {e}")),
                    ),
                };
                head.job_ended(&id, status, code, message).await;
            });
        });
    }

    async fn job_ended(
        &self,
        id: &str,
        status: JobStatus,
        exit_code: Option<i32>,
        message: Option<String>,
    ) {
        let _writing = self.writing.lock().await;
        let Some((n, mut job)) = self.submission(id) else {
            return;
        };
        job.status = status;
        job.exit_code = exit_code;
        job.ended_us = Some(now_us());
        if message.is_some() {
            job.message = message;
        }
        tracing::info!(job = %id, status = %status, ?exit_code, "head: job ended");
        let record = job.clone();
        let _ = self.commit(move |t| t.put_submission(n, &record)).await;
        self.replace(&job);
    }

    /// A submitted job and its number.
    fn submission(&self, id: &str) -> Option<(u32, JobSubmission)> {
        lock(&self.submissions)
            .iter()
            .enumerate()
            .find(|(_, j)| j.id == id)
            .map(|(i, j)| (i as u32 + 1, j.clone()))
    }

    fn replace(&self, job: &JobSubmission) {
        if let Some(j) = lock(&self.submissions).iter_mut().find(|j| j.id == job.id) {
            *j = job.clone();
        }
    }

    /// A driver registered as submitted job `id`'s.
    pub(super) async fn driver_of(&self, id: &str, driver_job: u32) {
        let _writing = self.writing.lock().await;
        let Some((n, mut job)) = self.submission(id) else {
            return;
        };
        job.driver_job = Some(driver_job);
        let record = job.clone();
        let _ = self.commit(move |t| t.put_submission(n, &record)).await;
        self.replace(&job);
    }

    /// A submitted job's record.
    pub(crate) fn job_status(&self, id: &str) -> Msg {
        match self.submission(id) {
            Some((_, job)) => Msg::Submission { job },
            None => no_such_job(id),
        }
    }

    /// Every submitted job.
    pub(crate) fn submissions(&self) -> Msg {
        Msg::Submissions {
            jobs: lock(&self.submissions).clone(),
        }
    }

    /// Ends a job's process group: SIGTERM, then SIGKILL if it is still there after
    /// [`STOP_GRACE`]. Answers with its record once it ended (or as it stands after
    /// the grace and a little more).
    pub(crate) async fn stop_job(&self, id: &str) -> Msg {
        let Some((_, job)) = self.submission(id) else {
            return no_such_job(id);
        };
        let Some(pid) = job.pid.filter(|_| job.status == JobStatus::Running) else {
            return Msg::Submission { job };
        };
        lock(&self.stopping).insert(id.to_string());
        tracing::info!(job = %id, pid, "head: stopping a job");
        crate::session::signal_group(pid, libc::SIGTERM);
        let ended = |head: &Head| head.submission(id).is_some_and(|(_, j)| j.status.ended());
        let polls = STOP_GRACE.as_millis() / 20;
        for _ in 0..polls {
            if ended(self) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !ended(self) {
            crate::session::signal_group(pid, libc::SIGKILL);
            for _ in 0..100 {
                if ended(self) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        self.job_status(id)
    }

    /// A job's output from `offset`.
    pub(crate) fn job_logs(&self, id: &str, offset: u64) -> Msg {
        let Some((_, job)) = self.submission(id) else {
            return no_such_job(id);
        };
        let Some(home) = lock(&self.job_home).clone() else {
            return failed("this head runs no jobs");
        };
        // Read after the status: a job that had ended has all its output written.
        let ended = job.status.ended();
        let path = home.session.join("logs").join(&job.log);
        let data = match read_from(&path, offset) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return failed(&format!("cannot read the log of job {id}: {e}")),
        };
        let next = offset + data.len() as u64;
        let ended = ended && (data.len() as u64) < LOG_CHUNK;
        Msg::Log {
            chunk: LogChunk { data, next, ended },
        }
    }
}

fn read_from(path: &std::path::Path, offset: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut data = Vec::new();
    f.take(LOG_CHUNK).read_to_end(&mut data)?;
    Ok(data)
}

fn failed(reason: &str) -> Msg {
    Msg::Failed {
        reason: reason.to_string(),
    }
}

fn no_such_job(id: &str) -> Msg {
    failed(&format!(
        "no submitted job {id:?} (prism job list shows them)"
    ))
}
