//! The wire protocol between heads, nodes, drivers, workers and the CLI.
//!
//! A connection is a TCP stream of frames: a 4-byte big-endian length, then that many
//! bytes of one postcard-encoded message. The first frame each way is the handshake: the
//! connecting side sends a [`Hello`] (magic, protocol version, the cluster token, its
//! role); the accepting side answers [`Welcome`] or refuses and closes. After that both
//! sides exchange [`Msg`]s.
//!
//! Everything read from the network is checked: a frame longer than [`MAX_FRAME`], a
//! frame that does not decode, a wrong magic, version or token each end that one
//! connection with a logged reason, and nothing else.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::cluster::objects::Payload;
use crate::error::Error;
use crate::object::ObjectId;
use crate::task::TaskSpec;

/// The first bytes of every handshake.
pub const MAGIC: [u8; 4] = *b"PRSM";

/// The protocol version; peers of other versions are refused.
pub const PROTOCOL_VERSION: u32 = 2;

/// The largest frame accepted (512 MiB). Memory for a frame is taken as its bytes
/// arrive, not when its header announces them.
pub const MAX_FRAME: usize = 512 << 20;

/// Read buffer of a connection: many small frames arrive per system call.
pub const READ_BUFFER: usize = 64 << 10;

/// Size of the chunks executables travel in.
pub const CHUNK: usize = 4 << 20;

/// How long a peer has to complete the handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// What went wrong on a connection.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The socket failed.
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    /// A frame announced more than [`MAX_FRAME`] bytes.
    #[error("frame of {0} bytes is larger than the {MAX_FRAME}-byte limit")]
    Oversized(usize),
    /// A frame's bytes are not a message.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The handshake was refused or wrong.
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// The peer closed the connection.
    #[error("the peer closed the connection")]
    Closed,
}

impl From<WireError> for Error {
    fn from(e: WireError) -> Self {
        Error::Cluster(e.to_string())
    }
}

/// Who is connecting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Role {
    /// A node daemon registering with the head, or a node reaching a peer node.
    Node {
        /// The node's id.
        node_id: String,
    },
    /// A driver program (it owns the objects it creates).
    Driver,
    /// A worker process of a job, started by a node.
    Worker {
        /// The job it serves.
        job: u32,
    },
    /// The `prism` command line.
    Cli,
    /// A process pulling objects from another's object server.
    Objects,
    /// A process sending actor calls straight to the worker hosting the actor.
    Caller,
}

/// The first frame of a connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`MAGIC`].
    pub magic: [u8; 4],
    /// The sender's [`PROTOCOL_VERSION`].
    pub version: u32,
    /// The cluster token.
    pub token: String,
    /// Who connects.
    pub role: Role,
}

/// The answer to a [`Hello`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Welcome {
    /// Accepted; carries the id of the accepting daemon.
    Accepted {
        /// The accepting daemon's id (a node id, or `head`).
        daemon: String,
    },
    /// Refused, with the reason; the connection closes.
    Refused(String),
}

/// A node as the head and other nodes see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    /// The node's id.
    pub node_id: String,
    /// Where the node accepts connections.
    pub address: String,
    /// Total resources.
    pub total: Vec<(String, f64)>,
    /// Resources not in use, as last reported.
    pub available: Vec<(String, f64)>,
    /// Tasks waiting for resources on that node.
    pub queued: u32,
    /// Tasks running on that node.
    pub running: u32,
    /// Whether the node still sends heartbeats.
    pub alive: bool,
    /// What waits on that node for resources, and why.
    pub pending: Vec<PendingView>,
}

/// Work waiting on a node, grouped by what it is and what it asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingView {
    /// The function, or `actor <class>`.
    pub what: String,
    /// How many wait.
    pub count: u32,
    /// What each asks for.
    pub demand: Vec<(String, f64)>,
    /// Why they cannot be placed now.
    pub reason: String,
}

/// A named actor as the head records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedActor {
    /// The actor's id.
    pub actor: ObjectId,
    /// Its class's stable name.
    pub class: String,
    /// The node that placed it.
    pub home: String,
}

/// A registered job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobInfo {
    /// The job's id.
    pub job: u32,
    /// Content hash of the job's executable.
    pub hash: String,
    /// The arguments a worker process is started with.
    pub args: Vec<String>,
    /// The node the job's driver submits to: where its workers' output is sent.
    pub driver_node: String,
}

/// Every message after the handshake.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Msg {
    /// Node → head: join the cluster.
    RegisterNode {
        /// The node as it sees itself.
        node: NodeView,
    },
    /// Node → head: still alive, with current load.
    Heartbeat {
        /// Available resources.
        available: Vec<(String, f64)>,
        /// Tasks waiting for resources.
        queued: u32,
        /// Tasks running.
        running: u32,
        /// What waits for resources, and why.
        pending: Vec<PendingView>,
    },
    /// Head → node (answering a heartbeat) and head → CLI (answering `Status`).
    ClusterView {
        /// Every node the head knows.
        nodes: Vec<NodeView>,
    },
    /// Driver → head: register a job whose executable has this hash.
    RegisterJob {
        /// Content hash (sha256, hex) of the executable.
        hash: String,
        /// Size of the executable in bytes.
        size: u64,
        /// Arguments for worker processes.
        args: Vec<String>,
    },
    /// Head → driver: send the executable first.
    NeedExecutable,
    /// Driver → head, head → node: a piece of an executable.
    ExecutableChunk {
        /// The executable's hash.
        hash: String,
        /// Bytes of the piece.
        data: Vec<u8>,
        /// Whether this is the last piece.
        last: bool,
    },
    /// Head → driver: the job is registered; where to submit work.
    JobAccepted {
        /// The job.
        job: JobInfo,
        /// The node the driver should submit to.
        node_address: String,
    },
    /// Node → head: send me this executable.
    FetchExecutable {
        /// Its hash.
        hash: String,
    },
    /// Node → head: which job is this.
    DescribeJob {
        /// The job id.
        job: u32,
    },
    /// Head → node: a job's description.
    JobDescription {
        /// The job, if known.
        job: Option<JobInfo>,
    },
    /// Client → node, node → peer node: run this task.
    SubmitTask {
        /// The job it belongs to.
        job: u32,
        /// The task, shared with the submitter's record of it (kept to resend it if its
        /// worker dies) instead of copied, inline arguments and all.
        spec: std::sync::Arc<TaskSpec>,
    },
    /// Node → worker, or a driver holding a lease → the leased worker: run this task.
    RunTask {
        /// The task.
        spec: TaskSpec,
        /// Run it right after this task of the same worker ends, on its resources (the
        /// node pipelines tasks of one shape so that no round trip separates them),
        /// unless the node releases it earlier.
        after: Option<ObjectId>,
        /// The lease it runs on, for a task a driver sent straight to the worker: the
        /// node lends the lease's CPUs while the task waits.
        lease: Option<ObjectId>,
    },
    /// Driver → node: hold resources for tasks like this one and name the worker to send
    /// them to (a driver that submits one task at a time then needs one round trip per
    /// task, not two).
    Lease {
        /// The job.
        job: u32,
        /// The tasks' options (their demand).
        options: crate::task::TaskOptions,
        /// Grant it with this task's resources when the task ends (a driver asks along
        /// with the task it submits and waits for).
        after: Option<ObjectId>,
    },
    /// Node → driver: the lease and the worker's address, or `None` if the node has no
    /// room or no worker ready for it now.
    LeaseGranted {
        /// The lease's id and the worker's object server.
        lease: Option<(ObjectId, String)>,
    },
    /// Driver → node: the lease is no longer used; its resources go back.
    ReturnLease {
        /// The lease.
        lease: ObjectId,
    },
    /// Worker → node: where its object server listens (for leases).
    WorkerListening {
        /// The address.
        address: String,
    },
    /// Node → worker: start this task queued behind another now (the other waits and
    /// lends it its CPUs). Ignored if the task already started.
    Release {
        /// The queued task.
        task_id: ObjectId,
    },
    /// Worker → node, node → client or peer: a task finished.
    TaskDone {
        /// The task (and result object) id.
        task_id: ObjectId,
        /// The result (inline, or where it is kept), or why the task failed.
        result: Result<Payload, Error>,
    },
    /// Worker → node: the task waits in `get`/`wait`; lend its CPUs to others meanwhile.
    Blocked {
        /// The waiting task.
        task_id: ObjectId,
    },
    /// Worker → node: the task runs again and takes its CPUs back.
    Unblocked {
        /// The task.
        task_id: ObjectId,
    },
    /// Client → node → (peer node) → worker: start an actor. Its outcome comes back as a
    /// `TaskDone` for the actor's id (an empty result on success).
    CreateActor {
        /// The job it belongs to.
        job: u32,
        /// The actor's id.
        actor: ObjectId,
        /// The class's stable name.
        class: String,
        /// Encoded constructor arguments.
        args: Vec<Vec<u8>>,
        /// Resources held for the actor's life.
        options: crate::task::TaskOptions,
        /// How many times the node hosting it starts it again if its process dies.
        max_restarts: u32,
    },
    /// Client → node → … → the worker hosting the actor: call a method. The result comes
    /// back as a `TaskDone` for `call`.
    ActorCall {
        /// The actor.
        actor: ObjectId,
        /// The call's (and its result's) id.
        call: ObjectId,
        /// The method's stable name.
        method: String,
        /// Encoded arguments.
        args: Vec<Vec<u8>>,
        /// The node that placed the actor, which knows where it lives.
        home: String,
    },
    /// Client → … → the hosting worker: end the actor; queued and later calls fail.
    KillActor {
        /// The actor.
        actor: ObjectId,
        /// The node that placed it.
        home: String,
    },
    /// Worker output, node → driver node → driver: lines a job's worker printed,
    /// prefixed with where they were printed.
    Output {
        /// The job.
        job: u32,
        /// Whether the lines went to standard error.
        stderr: bool,
        /// The lines.
        lines: Vec<String>,
    },
    /// Node → the peer that placed an actor here: it died with its worker process.
    ActorGone {
        /// The actor.
        actor: ObjectId,
        /// Why.
        reason: String,
    },
    /// Node → peer node: a job's driver is gone; end its workers there too.
    EndJob {
        /// The job.
        job: u32,
    },
    /// Client → head: store a value under a key.
    KvPut {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
    },
    /// Client → head: read a key.
    KvGet {
        /// The key.
        key: String,
    },
    /// Head → client: a key's value.
    KvValue {
        /// The value, if the key exists.
        value: Option<Vec<u8>>,
    },
    /// Client → head: record a named actor (fails if the name is taken).
    RegisterActor {
        /// The name.
        name: String,
        /// Where to reach it.
        entry: NamedActor,
    },
    /// Client → head: forget the names of an actor (it was killed).
    UnregisterActor {
        /// The actor.
        actor: ObjectId,
    },
    /// Client → head: find a named actor.
    LookupActor {
        /// The name.
        name: String,
    },
    /// Head → client: the named actor, if there is one.
    ActorFound {
        /// Where to reach it.
        entry: Option<NamedActor>,
    },
    /// Client → node → peers → workers: the owner freed these objects; drop the copies
    /// kept for it.
    FreeObjects {
        /// The owner's job.
        job: u32,
        /// The objects.
        ids: Vec<ObjectId>,
    },
    /// Puller → object server: send this object.
    PullObject {
        /// The object.
        id: ObjectId,
    },
    /// Object server → puller: the object's size, followed by its bytes in raw chunks
    /// (each a 4-byte big-endian length and at most [`CHUNK`] bytes); or why it cannot be
    /// sent.
    ObjectHeader {
        /// The object.
        id: ObjectId,
        /// Its encoded size.
        size: Result<u64, Error>,
    },
    /// CLI → head: the cluster's state.
    Status,
    /// A request could not be served.
    Failed {
        /// Why.
        reason: String,
    },
}

/// Reads one frame; `Ok(None)` on a clean end of stream before a frame starts.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Vec<u8>>, WireError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_FRAME {
        return Err(WireError::Oversized(n));
    }
    let mut buf = Vec::with_capacity(n.min(1 << 20));
    (&mut *r).take(n as u64).read_to_end(&mut buf).await?;
    if buf.len() != n {
        return Err(WireError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(Some(buf))
}

/// Encodes a message into a frame (length prefix included).
pub fn frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, WireError> {
    let mut out = vec![0u8; 4];
    let out = postcard::to_extend(msg, std::mem::take(&mut out))
        .map_err(|e| WireError::Malformed(e.to_string()))?;
    let n = out.len() - 4;
    if n > MAX_FRAME {
        return Err(WireError::Oversized(n));
    }
    let mut out = out;
    out[..4].copy_from_slice(&(n as u32).to_be_bytes());
    Ok(out)
}

/// Decodes a frame's bytes.
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, WireError> {
    postcard::from_bytes(bytes).map_err(|e| WireError::Malformed(e.to_string()))
}

/// Writes one message as a frame.
pub async fn write_msg<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    msg: &T,
) -> Result<(), WireError> {
    w.write_all(&frame(msg)?).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one message; a clean end of stream is [`WireError::Closed`].
pub async fn read_msg<R: AsyncRead + Unpin, T: for<'de> Deserialize<'de>>(
    r: &mut R,
) -> Result<T, WireError> {
    match read_frame(r).await? {
        Some(bytes) => decode(&bytes),
        None => Err(WireError::Closed),
    }
}

/// Connects to a daemon and completes the handshake.
pub async fn connect(
    address: &str,
    token: &str,
    role: Role,
) -> Result<(TcpStream, String), WireError> {
    let mut stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let hello = Hello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        token: token.to_string(),
        role,
    };
    write_msg(&mut stream, &hello).await?;
    let welcome: Welcome = tokio::time::timeout(HANDSHAKE_TIMEOUT, read_msg(&mut stream))
        .await
        .map_err(|_| WireError::Handshake(format!("{address} did not answer the handshake")))??;
    match welcome {
        Welcome::Accepted { daemon } => Ok((stream, daemon)),
        Welcome::Refused(why) => Err(WireError::Handshake(format!("{address} refused: {why}"))),
    }
}

/// Accepts a connection's handshake: checks magic, version and token, answers, and
/// returns the peer's role. A failed check answers `Refused` (when the peer can still be
/// answered) and returns the reason.
pub async fn accept(stream: &mut TcpStream, token: &str, daemon: &str) -> Result<Role, WireError> {
    let _ = stream.set_nodelay(true);
    let hello: Hello = tokio::time::timeout(HANDSHAKE_TIMEOUT, read_msg(stream))
        .await
        .map_err(|_| WireError::Handshake("no handshake in time".into()))??;
    let refusal = if hello.magic != MAGIC {
        Some("not a prism peer (bad magic)".to_string())
    } else if hello.version != PROTOCOL_VERSION {
        Some(format!(
            "protocol version {} is not {PROTOCOL_VERSION}",
            hello.version
        ))
    } else if !constant_time_eq(hello.token.as_bytes(), token.as_bytes()) {
        Some("wrong cluster token".to_string())
    } else {
        None
    };
    if let Some(why) = refusal {
        let _ = write_msg(stream, &Welcome::Refused(why.clone())).await;
        return Err(WireError::Handshake(why));
    }
    write_msg(
        stream,
        &Welcome::Accepted {
            daemon: daemon.to_string(),
        },
    )
    .await?;
    Ok(hello.role)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A sending half: messages queued here are written by one task, batched into as few
/// system calls as the queue allows.
pub type Outbox = mpsc::UnboundedSender<Msg>;

/// Spawns the writer task of a connection and returns its outbox.
pub fn spawn_writer<W: AsyncWrite + Unpin + Send + 'static>(w: W, peer: String) -> Outbox {
    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    tokio::spawn(async move {
        let mut w = BufWriter::with_capacity(64 << 10, w);
        while let Some(msg) = rx.recv().await {
            let mut next = Some(msg);
            while let Some(m) = next {
                let bytes = match frame(&m) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::error!(%peer, "dropping a message that cannot be framed: {e}");
                        next = rx.try_recv().ok();
                        continue;
                    }
                };
                if w.write_all(&bytes).await.is_err() {
                    return;
                }
                next = rx.try_recv().ok();
            }
            if w.flush().await.is_err() {
                return;
            }
        }
    });
    tx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_bytes_are_errors() {
        let msg = Msg::KvPut {
            key: "k".into(),
            value: vec![1, 2, 3],
        };
        let f = frame(&msg).unwrap();
        assert_eq!(
            u32::from_be_bytes(f[..4].try_into().unwrap()) as usize,
            f.len() - 4
        );
        assert_eq!(decode::<Msg>(&f[4..]).unwrap(), msg);
        assert!(decode::<Msg>(&[250, 1]).is_err());
        assert!(decode::<Msg>(&[]).is_err());
    }

    #[tokio::test]
    async fn oversized_and_truncated_frames_are_refused() {
        let mut big: &[u8] = &[0xff, 0xff, 0xff, 0xff, 0];
        assert!(matches!(
            read_frame(&mut big).await,
            Err(WireError::Oversized(_))
        ));
        let mut cut: &[u8] = &[0, 0, 0, 9, 1, 2];
        assert!(matches!(read_frame(&mut cut).await, Err(WireError::Io(_))));
        let mut empty: &[u8] = &[];
        assert!(read_frame(&mut empty).await.unwrap().is_none());
    }

    /// Valid frames of several shapes, to be mutated by the fuzz test below: random
    /// bytes alone rarely get past a message's first field.
    fn corpus() -> Vec<Vec<u8>> {
        let id = crate::object::ObjectId::new(3, 99);
        let node = NodeView {
            node_id: "n1".into(),
            address: "127.0.0.2:4000".into(),
            total: vec![("CPU".into(), 2.0), ("GPU".into(), 1.0)],
            available: vec![("CPU".into(), 0.5)],
            queued: 3,
            running: 1,
            alive: true,
            pending: vec![PendingView {
                what: "app::train".into(),
                count: 2,
                demand: vec![("CPU".into(), 2.0)],
                reason: "waits".into(),
            }],
        };
        let msgs = [
            Msg::RegisterNode { node: node.clone() },
            Msg::ClusterView {
                nodes: vec![node.clone(), node],
            },
            Msg::ActorCall {
                actor: id,
                call: id,
                method: "Counter::add".into(),
                args: vec![vec![1, 2, 3], Vec::new()],
                home: "127.0.0.2:4000".into(),
            },
            Msg::KvPut {
                key: "k".into(),
                value: vec![0; 40],
            },
            Msg::ObjectHeader {
                id,
                size: Ok(1 << 30),
            },
            Msg::Failed {
                reason: "no".into(),
            },
        ];
        let mut frames: Vec<Vec<u8>> = msgs.iter().map(|m| frame(m).unwrap()).collect();
        frames.push(
            frame(&Hello {
                magic: MAGIC,
                version: PROTOCOL_VERSION,
                token: "t".repeat(32),
                role: Role::Driver,
            })
            .unwrap(),
        );
        frames
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]
        /// Valid frames with bytes flipped, cut short, or grown: reading them never
        /// panics, and whatever decodes encodes again.
        #[test]
        fn mutated_frames_are_errors_or_messages_never_panics(
            pick in 0usize..7,
            flips in proptest::collection::vec((0usize..4096, proptest::num::u8::ANY), 0..6),
            cut in proptest::option::of(0usize..4096),
            tail in proptest::collection::vec(proptest::num::u8::ANY, 0..8),
        ) {
            let mut bytes = corpus()[pick].clone();
            for (at, x) in flips {
                let n = bytes.len();
                bytes[at % n] ^= x;
            }
            if let Some(c) = cut {
                bytes.truncate(c % (bytes.len() + 1));
            }
            bytes.extend(tail);
            let io = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let mut r: &[u8] = &bytes;
            while let Ok(Some(f)) = io.block_on(read_frame(&mut r)) {
                proptest::prop_assert!(f.len() <= MAX_FRAME);
                if let Ok(m) = decode::<Msg>(&f) {
                    proptest::prop_assert!(frame(&m).is_ok());
                }
                if let Ok(h) = decode::<Hello>(&f) {
                    proptest::prop_assert!(frame(&h).is_ok());
                }
            }
        }
    }

    #[test]
    fn random_bytes_never_panic_the_decoder() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for len in 0..2000usize {
            let bytes: Vec<u8> = (0..len % 97)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = decode::<Msg>(&bytes);
            let _ = decode::<Hello>(&bytes);
        }
    }
}
