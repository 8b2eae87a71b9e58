//! Worker processes of a node: fetching a job's executable (once, by content hash),
//! starting it in worker mode, and relaying what it prints to the job's driver.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::{Node, Worker};
use crate::error::Error;
use crate::wire::env;
use crate::wire::{self, JobInfo, Msg, Role};

/// Whether the worker of `job` is still the one started as `start`, not connected yet.
fn still_starting(st: &super::State, job: u32, start: u64) -> bool {
    matches!(st.workers.get(&job), Some(Worker::Starting(s, _)) if *s == start)
}

impl Node {
    /// Starts the worker process of `job` and waits until it connects. If it cannot be
    /// started, or exits before it connects (a program that does not call
    /// `prism::init()` first, or a binary other than the job's), everything waiting for
    /// it fails at once with the reason, instead of waiting forever.
    ///
    /// `start` numbers this start: a worker that connects and dies before this notices
    /// is followed by another start, whose work is not this one's to fail.
    pub(super) async fn start_worker(self: Arc<Self>, job: u32, start: u64) {
        let failure = match self.clone().spawn_worker(job, start).await {
            Err(e) => format!("cannot start a worker for job {job}: {e}"),
            Ok(false) => return,
            Ok(true) => match self.connected_or_exited(job, start).await {
                None => return,
                Some(status) => format!(
                    "the worker process of job {job} exited ({status}) before connecting to \
                     its node: the program must call prism::init() before anything else, and \
                     the executable must be the job's own (see {})",
                    self.options.session.join("logs").display()
                ),
            },
        };
        tracing::error!(job, "node: {failure}");
        let waiting = {
            let mut st = self.lock();
            let mine = still_starting(&st, job, start);
            match mine.then(|| st.workers.remove(&job)).flatten() {
                Some(Worker::Starting(_, w)) => w,
                _ => Vec::new(),
            }
        };
        for m in waiting {
            let id = match m {
                Msg::RunTask { spec, .. } => spec.task_id,
                Msg::CreateActor { actor, .. } => actor,
                Msg::ToActor { op, .. } => match op.answer() {
                    Some(call) => call,
                    None => continue,
                },
                _ => continue,
            };
            self.finished(id, Err(Error::Cluster(failure.clone())));
        }
    }

    /// Waits until the worker of `job` started as `start` connects (`None`) or its
    /// process exits first (its exit status).
    async fn connected_or_exited(&self, job: u32, start: u64) -> Option<String> {
        loop {
            {
                let mut st = self.lock();
                if !still_starting(&st, job, start) {
                    return None;
                }
                let exited = match st.children.get_mut(&job).map(|c| c.try_wait()) {
                    Some(Ok(Some(status))) => Some(status.to_string()),
                    Some(Err(e)) => Some(e.to_string()),
                    None => Some("no process".into()),
                    Some(Ok(None)) => None,
                };
                if let Some(status) = exited {
                    st.children.remove(&job);
                    return Some(status);
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Spawns the worker process of `job` for start `start`; `Ok(false)` if the job
    /// ended (or another start took over) while it was being spawned, when the new
    /// process is ended at once: nothing else would end it.
    pub(super) async fn spawn_worker(self: Arc<Self>, job: u32, start: u64) -> Result<bool, Error> {
        let info = self.describe_job(job).await?;
        let exe = self.executable(&info.hash).await?;
        let logs = self.options.session.join("logs");
        let log = |kind: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(logs.join(format!("worker-{}-job{job}.{kind}", self.id)))
                .map_err(|e| Error::io("opening a worker log", e))
        };
        let mut child = Command::new(&exe)
            .args(&info.args)
            .env(env::NODE, &self.address)
            .env(env::JOB, job.to_string())
            .env(env::NODE_ID, &self.id)
            .env(env::STORE, self.options.config.store_capacity().to_string())
            .env(env::SPILL, self.spill_dir(job))
            .env(env::TOKEN, &self.options.token)
            .env(env::HEAD, &self.options.head)
            .env("PRISM_SESSION_DIR", &self.options.session)
            .env_remove("PRISM_ADDRESS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::io(format!("starting worker {}", exe.display()), e))?;
        tracing::info!(job, pid = child.id(), "node: worker started");
        let prefix = format!("(pid={}, node={})", child.id(), self.id);
        let streams: [(Option<Box<dyn std::io::Read + Send>>, bool); 2] = [
            (child.stdout.take().map(|s| Box::new(s) as _), false),
            (child.stderr.take().map(|s| Box::new(s) as _), true),
        ];
        for (stream, stderr) in streams {
            let (Some(stream), Ok(file)) = (stream, log(if stderr { "err" } else { "out" })) else {
                continue;
            };
            let node = self.clone();
            let (prefix, driver_node) = (prefix.clone(), info.driver_node.clone());
            std::thread::spawn(move || {
                node.relay_output(stream, file, stderr, job, &prefix, &driver_node)
            });
        }
        let mut st = self.lock();
        if !still_starting(&st, job, start) {
            drop(st);
            tracing::info!(
                job,
                pid = child.id(),
                "node: the job ended as its worker started; stopping it"
            );
            let _ = child.kill();
            let _ = child.wait();
            return Ok(false);
        }
        st.worker_started.insert(job, crate::state::now_us());
        if let Some(mut old) = st.children.insert(job, child) {
            // The job's previous worker, dead by now: reap it.
            let _ = old.try_wait();
        }
        Ok(true)
    }

    /// Copies a worker's output, line by line, to its log file and to the job's driver
    /// (through the driver's node, if that is another node).
    pub(super) fn relay_output(
        &self,
        stream: Box<dyn std::io::Read + Send>,
        mut file: std::fs::File,
        stderr: bool,
        job: u32,
        prefix: &str,
        driver_node: &str,
    ) {
        use std::io::{BufRead, Write};
        for line in std::io::BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(file, "{line}");
            let msg = Msg::Output {
                job,
                stderr,
                lines: vec![format!("{prefix} {line}")],
            };
            let st = self.lock();
            let target = if driver_node == self.address {
                st.drivers.get(&job).cloned()
            } else {
                st.peers
                    .values()
                    .find(|p| p.view.address == driver_node)
                    .and_then(|p| p.outbox.clone())
            };
            drop(st);
            if let Some(t) = target {
                let _ = t.send(msg);
            }
        }
    }

    pub(super) async fn head_request(&self, msg: Msg) -> Result<TcpStream, Error> {
        let role = Role::Node {
            node_id: self.id.clone(),
        };
        let (mut head, _) = wire::connect(&self.options.head, &self.options.token, role).await?;
        wire::write_msg(&mut head, &msg).await?;
        Ok(head)
    }

    pub(super) async fn describe_job(&self, job: u32) -> Result<JobInfo, Error> {
        let mut head = self.head_request(Msg::DescribeJob { job }).await?;
        match wire::read_msg(&mut head).await? {
            Msg::JobDescription { job: Some(info) } => Ok(info),
            _ => Err(Error::Cluster(format!("the head does not know job {job}"))),
        }
    }

    /// The path of a job's executable: the head's copy if it shares this machine's
    /// session, else this machine's cache, else fetched from the head into the cache.
    pub(super) async fn executable(&self, hash: &str) -> Result<PathBuf, Error> {
        let shared = self.options.session.join("executables").join(hash);
        if shared.exists() {
            return Ok(shared);
        }
        let cache = self.options.session.join("exe-cache");
        std::fs::create_dir_all(&cache)
            .map_err(|e| Error::io("creating the executable cache", e))?;
        let path = cache.join(hash);
        if path.exists() {
            return Ok(path);
        }
        let mut head = self
            .head_request(Msg::FetchExecutable {
                hash: hash.to_string(),
            })
            .await?;
        let tmp = cache.join(format!("{hash}.{}.part", self.id));
        let mut f = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| Error::io("caching an executable", e))?;
        loop {
            match wire::read_msg(&mut head).await? {
                Msg::ExecutableChunk { data, last, .. } => {
                    f.write_all(&data)
                        .await
                        .map_err(|e| Error::io("caching an executable", e))?;
                    if last {
                        break;
                    }
                }
                other => {
                    return Err(Error::Cluster(format!(
                        "fetching executable {hash}: got {}",
                        other.name()
                    )))
                }
            }
        }
        f.flush()
            .await
            .map_err(|e| Error::io("caching an executable", e))?;
        drop(f);
        let got = {
            let bytes = std::fs::read(&tmp).map_err(|e| Error::io("checking an executable", e))?;
            wire::executable_hash(&bytes)
        };
        if got != hash {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::Cluster(format!(
                "the executable fetched as {hash} has hash {got}: it is not the job's"
            )));
        }
        make_executable(&tmp)?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io("caching an executable", e))?;
        Ok(path)
    }
}

fn make_executable(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| Error::io("marking an executable", e))
}
