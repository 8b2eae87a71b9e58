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
//!
//! * `msg`: the messages ([`Msg`]) and the records they carry.
//! * [`env`]: what a node tells a worker process it starts, in its environment.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

pub mod env;
mod msg;

pub use msg::{ActorOp, GroupPhase, JobInfo, Msg, NamedActor, NodeView, Payload, PendingView};

use crate::error::Error;

/// The first bytes of every handshake.
pub const MAGIC: [u8; 4] = *b"PRSM";

/// The protocol version; peers of other versions are refused.
pub const PROTOCOL_VERSION: u32 = 3;

/// Results and arguments up to this many encoded bytes travel inline; larger ones are
/// pulled from where they are kept.
pub const INLINE_MAX: usize = 100 << 10;

/// The largest frame accepted (512 MiB). Memory for a frame is taken as its bytes
/// arrive, not when its header announces them.
pub const MAX_FRAME: usize = 512 << 20;

/// Read buffer of a connection: many small frames arrive per system call.
pub const READ_BUFFER: usize = 64 << 10;

/// Size of the chunks executables and pulled objects travel in.
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
    /// The head, reaching a node (to reserve or return placement group bundles).
    Head,
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

/// The content hash a job's executable is known by: sha256, in lowercase hex.
pub fn executable_hash(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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
        let id = crate::id::ObjectId::new(3, 99);
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
            Msg::ToActor {
                actor: id,
                home: "127.0.0.2:4000".into(),
                op: ActorOp::Call {
                    call: id,
                    method: "Counter::add".into(),
                    args: vec![
                        crate::task::EncodedArg::Inline(vec![1, 2, 3]),
                        crate::task::EncodedArg::Ref {
                            id,
                            at: "127.0.0.3:4001".into(),
                        },
                    ],
                },
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
