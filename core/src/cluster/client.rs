//! The client side of a cluster: a driver or a worker process connected to its node.
//! It submits tasks (their arguments resolved and encoded first) and receives results,
//! which land in the process's own object store as encoded bytes, decoded on `get` into
//! the type asked for. In a worker it also receives the tasks to run.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::cluster::head::{hex, message_name};
use crate::cluster::wire::{self, JobInfo, Msg, Outbox, Role};
use crate::error::{Error, Result};
use crate::object::{Codec, Encoded, ObjectId, Store};
use crate::task::TaskSpec;

/// What a worker does with a task the node sends it.
pub(crate) type RunHandler = Box<dyn Fn(TaskSpec, Option<(ObjectId, u32)>, Outbox) + Send + Sync>;

/// A connection to a node, with the I/O threads that serve it.
pub(crate) struct Client {
    /// The job this process belongs to.
    pub job: u32,
    outbox: Outbox,
    /// Keeps the I/O threads alive as long as the client.
    _io: tokio::runtime::Runtime,
}

fn io_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("prism-io")
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the I/O runtime", e))
}

/// The arguments a worker process of this program must be started with so that it
/// reaches the same `prism::init()`: the program's own, or, in a test binary, the
/// running test's exact name.
fn worker_args() -> Vec<String> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(test) = std::thread::current().name().filter(|n| *n != "main") {
        if !args.iter().any(|a| a == test) {
            args = vec![test.to_string(), "--exact".into(), "--nocapture".into()];
        }
    }
    args
}

impl Client {
    /// Registers this program as a job with the head (uploading the executable if the
    /// head does not have it) and connects to the node the head names.
    pub fn connect_driver(head: &str, token: &str, store: Arc<Store>) -> Result<Client> {
        let io = io_runtime()?;
        let exe_path = std::env::current_exe().map_err(|e| Error::io("finding this program", e))?;
        let exe = std::fs::read(&exe_path).map_err(|e| Error::io("reading this program", e))?;
        let hash = hex(&Sha256::digest(&exe));
        let (job, node) = io.block_on(async {
            let (mut s, _) = wire::connect(head, token, Role::Driver).await?;
            wire::write_msg(
                &mut s,
                &Msg::RegisterJob {
                    hash: hash.clone(),
                    size: exe.len() as u64,
                    args: worker_args(),
                },
            )
            .await?;
            let mut reply: Msg = wire::read_msg(&mut s).await?;
            if reply == Msg::NeedExecutable {
                let mut chunks = exe.chunks(wire::CHUNK).peekable();
                while let Some(c) = chunks.next() {
                    wire::write_msg(
                        &mut s,
                        &Msg::ExecutableChunk {
                            hash: hash.clone(),
                            data: c.to_vec(),
                            last: chunks.peek().is_none(),
                        },
                    )
                    .await?;
                }
                reply = wire::read_msg(&mut s).await?;
            }
            match reply {
                Msg::JobAccepted { job, node_address } => {
                    Ok::<(JobInfo, String), Error>((job, node_address))
                }
                Msg::Failed { reason } => Err(Error::Cluster(format!(
                    "the head refused the job: {reason}"
                ))),
                other => Err(Error::Cluster(format!(
                    "the head answered {}",
                    message_name(&other)
                ))),
            }
        })?;
        tracing::debug!(job = job.job, %node, "registered with the cluster");
        Self::connect_node(io, &node, token, Role::Driver, job.job, store, None)
    }

    /// Connects a worker process to the node that started it.
    pub fn connect_worker(
        node: &str,
        token: &str,
        job: u32,
        store: Arc<Store>,
        run: RunHandler,
    ) -> Result<Client> {
        Self::connect_node(
            io_runtime()?,
            node,
            token,
            Role::Worker { job },
            job,
            store,
            Some(run),
        )
    }

    fn connect_node(
        io: tokio::runtime::Runtime,
        node: &str,
        token: &str,
        role: Role,
        job: u32,
        store: Arc<Store>,
        run: Option<RunHandler>,
    ) -> Result<Client> {
        let stream =
            io.block_on(async { wire::connect(node, token, role).await.map(|(s, _)| s) })?;
        let (r, w) = {
            let _guard = io.enter();
            stream.into_split()
        };
        let mut r = tokio::io::BufReader::with_capacity(wire::READ_BUFFER, r);
        let outbox = {
            let _guard = io.enter();
            wire::spawn_writer(w, node.to_string())
        };
        let out = outbox.clone();
        let is_worker = run.is_some();
        io.spawn(async move {
            loop {
                match wire::read_msg::<_, Msg>(&mut r).await {
                    Ok(Msg::TaskDone { task_id, result }) => match result {
                        Ok(bytes) => {
                            let size = bytes.len() as u64;
                            store.complete(
                                task_id,
                                Arc::new(Encoded(bytes)),
                                size,
                                Codec::encoded(),
                            );
                        }
                        Err(e) => {
                            store.fail(task_id, e);
                        }
                    },
                    Ok(Msg::RunTask { spec, after }) => match &run {
                        Some(run) => run(spec, after, out.clone()),
                        None => tracing::warn!("a driver was sent a task to run"),
                    },
                    Ok(Msg::Failed { reason }) => {
                        tracing::warn!("the node refused a request: {reason}")
                    }
                    Ok(other) => {
                        tracing::warn!("unexpected {} from the node", message_name(&other))
                    }
                    Err(e) => {
                        tracing::info!("lost the node: {e}");
                        break;
                    }
                }
            }
            if is_worker {
                // A worker without its node has nothing left to do.
                std::process::exit(0);
            }
            store.fail_pending(Error::Cluster("the connection to the node was lost".into()));
        });
        Ok(Client {
            job,
            outbox,
            _io: io,
        })
    }

    /// Sends a message to the node.
    pub fn send(&self, msg: Msg) {
        let _ = self.outbox.send(msg);
    }

    /// Sends a task to the node.
    pub fn submit(&self, spec: TaskSpec) {
        let _ = self.outbox.send(Msg::SubmitTask {
            job: self.job,
            spec,
        });
    }
}
