//! The client side of a cluster: a driver or a worker process connected to its node.
//! It submits tasks (their arguments resolved and encoded first) and receives results,
//! which land in the process's own object store as encoded bytes, decoded on `get` into
//! the type asked for. In a worker it also receives the tasks to run.

use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::cluster::head::{hex, message_name};
use crate::cluster::wire::{self, JobInfo, Msg, Outbox, Role};
use crate::error::{Error, Result};
use crate::object::{Codec, Encoded, ObjectId, Store};
use crate::task::TaskSpec;

/// What a worker does with a task the node sends it.
pub(crate) type RunHandler = Box<dyn Fn(Delivery, Outbox) + Send + Sync>;

/// What a node delivers to a worker.
pub(crate) enum Delivery {
    /// A task, possibly to run right after another.
    Run(TaskSpec, Option<ObjectId>),
    /// Start a task queued behind another now.
    Release(ObjectId),
    /// Host, call or end an actor.
    Actor(Msg),
}

/// A connection to a node, with the I/O threads that serve it.
pub(crate) struct Client {
    /// The job this process belongs to.
    pub job: u32,
    /// The node this process is connected to (the home of the actors it starts).
    pub node: String,
    head: String,
    token: String,
    outbox: Outbox,
    /// Submitted tasks not yet finished, kept to be sent again if a worker dies.
    inflight: Arc<Inflight>,
    /// Starts the connection's reader; see [`Client::start`].
    go: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
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
        let client =
            Self::connect_node(io, head, &node, token, Role::Driver, job.job, store, None)?;
        client.start();
        Ok(client)
    }

    /// Connects a worker process to the node that started it.
    pub fn connect_worker(
        head: &str,
        node: &str,
        token: &str,
        job: u32,
        store: Arc<Store>,
        run: RunHandler,
    ) -> Result<Client> {
        Self::connect_node(
            io_runtime()?,
            head,
            node,
            token,
            Role::Worker { job },
            job,
            store,
            Some(run),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn connect_node(
        io: tokio::runtime::Runtime,
        head: &str,
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
        let inflight = Arc::new(Inflight::default());
        let tasks = inflight.clone();
        let (go, started) = tokio::sync::oneshot::channel::<()>();
        io.spawn(async move {
            // Nothing is read until the process is ready for it (a worker installs its
            // wait hook first, or its first tasks would wait without telling the node).
            if started.await.is_err() {
                return;
            }
            loop {
                match wire::read_msg::<_, Msg>(&mut r).await {
                    Ok(Msg::TaskDone { task_id, result }) => {
                        if let Some(retry) = tasks.settle(task_id, &result) {
                            tracing::info!(task = %task_id, attempt = retry.1, "retrying after a worker died");
                            let _ = out.send(Msg::SubmitTask { job, spec: retry.0 });
                            continue;
                        }
                        match result {
                            Ok(bytes) => {
                                let size = bytes.len() as u64;
                                store.complete(task_id, Arc::new(Encoded(bytes)), size, Codec::encoded());
                            }
                            Err(e) => {
                                store.fail(task_id, e);
                            }
                        }
                    }
                    Ok(Msg::Release { task_id }) => {
                        if let Some(run) = &run {
                            run(Delivery::Release(task_id), out.clone());
                        }
                    }
                    Ok(m @ (Msg::CreateActor { .. } | Msg::ActorCall { .. } | Msg::KillActor { .. })) => {
                        if let Some(run) = &run {
                            run(Delivery::Actor(m), out.clone());
                        }
                    }
                    Ok(Msg::RunTask { spec, after }) => match &run {
                        Some(run) => run(Delivery::Run(spec, after), out.clone()),
                        None => tracing::warn!("a driver was sent a task to run"),
                    },
                    Ok(Msg::Output { stderr, lines, .. }) => {
                        use std::io::Write;
                        for line in lines {
                            if stderr {
                                let _ = writeln!(std::io::stderr(), "{line}");
                            } else {
                                let _ = writeln!(std::io::stdout(), "{line}");
                            }
                        }
                    }
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
            node: node.to_string(),
            head: head.to_string(),
            token: token.to_string(),
            outbox,
            inflight,
            go: Mutex::new(Some(go)),
            _io: io,
        })
    }

    /// Starts reading what the node sends (results, and tasks for a worker).
    pub fn start(&self) {
        if let Some(go) = self.go.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = go.send(());
        }
    }

    /// Asks the head one question on a connection of its own.
    pub fn ask_head(&self, msg: Msg) -> Result<Msg> {
        self._io.block_on(async {
            let (mut s, _) = wire::connect(&self.head, &self.token, Role::Driver).await?;
            wire::write_msg(&mut s, &msg).await?;
            Ok(wire::read_msg(&mut s).await?)
        })
    }

    /// Sends a message to the node.
    pub fn send(&self, msg: Msg) {
        let _ = self.outbox.send(msg);
    }

    /// Sends a task to the node.
    pub fn submit(&self, spec: TaskSpec) {
        let spec = Arc::new(spec);
        self.inflight.track(&spec);
        let _ = self.outbox.send(Msg::SubmitTask {
            job: self.job,
            spec,
        });
    }
}

/// Tasks this process submitted and has no result for yet, with the attempts made.
#[derive(Default)]
struct Inflight {
    tasks: std::sync::Mutex<std::collections::HashMap<ObjectId, (Arc<TaskSpec>, u32)>>,
}

impl Inflight {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<ObjectId, (Arc<TaskSpec>, u32)>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn track(&self, spec: &Arc<TaskSpec>) {
        self.lock().insert(spec.task_id, (spec.clone(), 0));
    }

    /// Records a result. A task whose worker process or node died, with retries left, is
    /// returned to be submitted again (with its attempt number); anything else is done.
    fn settle(
        &self,
        id: ObjectId,
        result: &Result<Vec<u8>, Error>,
    ) -> Option<(Arc<TaskSpec>, u32)> {
        let mut tasks = self.lock();
        if matches!(result, Err(Error::WorkerCrashed { .. })) {
            if let Some((spec, attempts)) = tasks.get_mut(&id) {
                if *attempts < spec.options.max_retries {
                    *attempts += 1;
                    return Some((spec.clone(), *attempts));
                }
            }
        }
        tasks.remove(&id);
        None
    }
}
