//! The client side of a cluster: a driver or a worker process connected to its node.
//! It submits tasks (their arguments resolved and encoded first) and receives results,
//! which land in the process's own object store as encoded bytes, decoded on `get` into
//! the type asked for. In a worker it also receives the tasks to run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::cluster::direct::{Direct, Reply};
use crate::cluster::head::{hex, message_name};
use crate::cluster::objects::{Location, Objects, Payload, SharedBytes};
use crate::cluster::owner::Owner;
use crate::cluster::wire::{self, JobInfo, Msg, Role};
use crate::error::{Error, Result};
use crate::object::{AnyValue, ObjectId, RefCount, Store};
use crate::task::{EncodedArg, TaskSpec};

/// What a worker does with a task the node sends it.
pub(crate) type RunHandler = Arc<dyn Fn(Delivery, Reply) + Send + Sync>;

/// What a node delivers to a worker.
pub(crate) enum Delivery {
    /// A task, possibly to run right after another, possibly on a driver's lease.
    Run(TaskSpec, Option<ObjectId>, Option<ObjectId>),
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
    shared: Arc<Owner>,
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
        crate::sched::stop_spinning();
        let stream = io.block_on(async {
            wire::connect(node, token, role.clone())
                .await
                .map(|(s, _)| s)
        })?;
        // The object server listens where this process meets its node: a worker on its
        // node's address, a driver on its own.
        let ip = match role {
            Role::Worker { .. } => stream.peer_addr(),
            _ => stream.local_addr(),
        }
        .map_err(|e| Error::io("reading the node connection's address", e))?
        .ip();
        let objects = Objects::bind(ip, token, store.clone(), &io, run.clone())?;
        let (r, w) = {
            let _guard = io.enter();
            stream.into_split()
        };
        let mut r = tokio::io::BufReader::with_capacity(wire::READ_BUFFER, r);
        let outbox = {
            let _guard = io.enter();
            wire::spawn_writer(w, node.to_string())
        };
        let shared = Arc::new(Owner {
            job,
            outbox: outbox.clone(),
            store: store.clone(),
            objects,
            books: Mutex::new(Default::default()),
            io: io.handle().clone(),
            token: token.to_string(),
            directs: Mutex::new(HashMap::new()),
            lease: Mutex::new(None),
            leases: matches!(role, Role::Driver),
        });
        let weak = Arc::downgrade(&shared);
        store.on_free(Box::new(move |id| {
            if let Some(shared) = weak.upgrade() {
                shared.freed(id);
            }
        }));
        let out = outbox;
        let is_worker = run.is_some();
        let reader = shared.clone();
        let (go, started) = tokio::sync::oneshot::channel::<()>();
        io.spawn(async move {
            // Nothing is read until the process is ready for it (a worker installs its
            // wait hook first, or its first tasks would wait without telling the node).
            if started.await.is_err() {
                return;
            }
            loop {
                match wire::read_msg::<_, Msg>(&mut r).await {
                    Ok(Msg::TaskDone { task_id, result }) => reader.done(task_id, result),
                    Ok(Msg::LeaseGranted { lease }) => reader.lease_granted(lease),
                    Ok(Msg::FreeObjects { ids, .. }) => reader.objects.free(&ids),
                    Ok(Msg::Release { task_id }) => {
                        if let Some(run) = &run {
                            run(Delivery::Release(task_id), Reply::Queue(out.clone()));
                        }
                    }
                    Ok(
                        m @ (Msg::CreateActor { .. }
                        | Msg::ActorCall { .. }
                        | Msg::KillActor { .. }),
                    ) => {
                        if let Some(run) = &run {
                            run(Delivery::Actor(m), Reply::Queue(out.clone()));
                        }
                    }
                    Ok(Msg::RunTask { spec, after, lease }) => match &run {
                        Some(run) => {
                            run(Delivery::Run(spec, after, lease), Reply::Queue(out.clone()))
                        }
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
            shared,
            go: Mutex::new(Some(go)),
            _io: io,
        })
    }

    /// The connection straight to the worker whose object server is at `address`,
    /// opened on first use; `then` receives it, or `None` if the worker cannot be
    /// reached (calls then go through the nodes).
    pub fn direct(&self, address: String, then: impl FnOnce(Option<Arc<Direct>>) + Send + 'static) {
        self.shared.direct(address, then)
    }

    /// Where this process serves objects (and, in a worker, direct actor calls).
    pub fn address(&self) -> &str {
        self.shared.objects.address()
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
        let _ = self.shared.outbox.send(msg);
    }

    /// Sends a task to the node, or straight to a leased worker; `deps` are the
    /// objects its arguments refer to.
    pub fn submit(&self, spec: TaskSpec, deps: Vec<Arc<RefCount>>) {
        let spec = Arc::new(spec);
        let lone = self.shared.track(&spec, deps);
        if lone && self.shared.send_on_lease(&spec) {
            return;
        }
        if self.shared.leases {
            self.shared.through_node();
        }
        self.send(Msg::SubmitTask {
            job: self.job,
            spec,
        });
    }

    /// A reference argument as it travels: inline if small, otherwise a reference to
    /// where it is kept (this process's object server, for objects it has).
    pub fn encode_ref(&self, id: ObjectId) -> Result<EncodedArg> {
        let shared = &self.shared;
        match shared.store.poll_value(id, None) {
            Some(Ok(v)) => {
                if let Some(loc) = v.downcast_ref::<Location>() {
                    return Ok(EncodedArg::Ref {
                        id,
                        at: loc.at.clone(),
                    });
                }
                // Decided by the size the store accounts, so that a large object is not
                // encoded here only to be encoded again when a worker pulls it.
                let size = shared.store.size(id).unwrap_or(0);
                if size <= crate::cluster::objects::INLINE_MAX as u64 {
                    return shared.store.encoded(id).map(EncodedArg::Inline);
                }
                shared.store.mark_exported(id);
                Ok(EncodedArg::Ref {
                    id,
                    at: shared.objects.address().to_string(),
                })
            }
            Some(Err(e)) => Err(e),
            None => Err(Error::ObjectLost(id)),
        }
    }

    /// The bytes of a task's reference argument: kept here, or pulled from `at`.
    pub fn fetch(&self, id: ObjectId, at: &str) -> Result<SharedBytes> {
        self.shared.objects.fetch(id, at)
    }

    /// A result made here, as it travels to its owner.
    pub fn payload(&self, id: ObjectId, result: Result<Vec<u8>>) -> Result<Payload> {
        result.map(|bytes| self.shared.objects.keep(id, bytes))
    }
}

/// The value of `id`, whose store entry is a [`Location`]: pulled from there (and kept
/// in the store in its place), or rebuilt from its lineage if it was lost.
pub(crate) fn materialize(id: ObjectId) -> Result<AnyValue> {
    let rt = crate::runtime::current()?;
    let client = rt.client().ok_or(Error::ObjectLost(id))?;
    client.shared.materialize(id)
}
