//! The object plane of a cluster.
//!
//! A small result (at most [`INLINE_MAX`] encoded bytes) travels inline with its task's
//! completion to the process that owns it. A large one stays in the process that made it
//! (a job's worker on some node) and its owner receives a [`Location`]: the address of
//! that process's object server. Whoever reads the object pulls it from there: the owner
//! on `get`, or the worker of a task that takes it as an argument, which keeps the copy
//! for the job's later tasks on its node. Objects a driver `put` travel the same way: a
//! task argument larger than [`INLINE_MAX`] goes out as a reference to the driver's own
//! object server, so a value used by many tasks crosses the network once per node, not
//! once per task.
//!
//! A pull is one connection: the handshake (the cluster token, as everywhere), a
//! `PullObject` frame, then an `ObjectHeader` with the size and the bytes in raw chunks
//! of at most [`CHUNK`] bytes, each with its length: no encoding step and no copy besides
//! the socket's. Every chunk length is checked against the announced size.
//!
//! When the owner frees an object, it tells every node (`FreeObjects`), which tell the
//! job's workers to drop the copies they keep. When the process holding an object dies
//! with its node, a pull fails with [`Error::ObjectLost`] and the owner rebuilds the
//! object from its lineage (see `owner`).
//!
//! In a worker, the object server also takes the actor calls (and leased tasks) of
//! callers connected straight to it, and answers them on the same connection.

use std::any::TypeId;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::direct::{Reply, SocketWriter};
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::object::pin::{self, Pin};
use crate::object::{AnyValue, Codec, Encoded, Held, Location, RefCount, SharedBytes, Store};
use crate::sync::lock;
use crate::task::{EncodedArg, Output, Param, Source};
use crate::wire::{self, Msg, Payload, Role, WireError, CHUNK, INLINE_MAX};

/// How long a pull may go without a byte before the holder counts as gone.
const PULL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// What a worker does with a message a caller sends straight to it (an actor message
/// or a leased task), answering on `Reply`.
pub(crate) type CallHandler = Arc<dyn Fn(Msg, Reply) + Send + Sync>;

/// What freeing objects let go of here: the copies kept and the values decoded from
/// them, whose drops may run user code.
pub(crate) struct Freed {
    _copies: Vec<Kept>,
    _values: Vec<AnyValue>,
}

/// A result kept here for its owner, with what its encoding pinned.
struct Kept {
    _count: RefCount,
    _pins: Vec<Pin>,
}

/// This process's object server and the copies it keeps for others.
pub(crate) struct Objects {
    address: String,
    token: String,
    store: Arc<Store>,
    io: tokio::runtime::Handle,
    /// Results made here and copies pulled here, kept until their owner frees them.
    kept: Mutex<HashMap<ObjectId, Kept>>,
    /// Objects being pulled right now, so that concurrent readers pull once.
    pulling: Mutex<HashSet<ObjectId>>,
    pulled: Condvar,
    /// Arguments decoded from copies kept here, by object and type.
    decoded: Mutex<HashMap<(ObjectId, TypeId), AnyValue>>,
    /// Arguments being decoded right now, so that concurrent readers decode once.
    decoding: Mutex<HashSet<(ObjectId, TypeId)>>,
    decoded_one: Condvar,
    /// How a worker serves the callers connected straight to it.
    calls: OnceLock<CallHandler>,
}

impl Objects {
    /// Binds an object server on `ip` (any port) serving `store`, on the runtime `io`.
    /// Callers connecting straight to it are served once [`Objects::take_calls`] said
    /// how (in a worker); refused before.
    pub fn bind(
        ip: IpAddr,
        token: &str,
        store: Arc<Store>,
        io: &tokio::runtime::Runtime,
    ) -> Result<Arc<Objects>> {
        let listener = io
            .block_on(TcpListener::bind((ip, 0)))
            .map_err(|e| Error::io(format!("binding an object server on {ip}"), e))?;
        let address = listener
            .local_addr()
            .map_err(|e| Error::io("reading the object server's address", e))?
            .to_string();
        let objects = Arc::new(Objects {
            address,
            token: token.to_string(),
            store: store.clone(),
            io: io.handle().clone(),
            kept: Mutex::new(HashMap::new()),
            pulling: Mutex::new(HashSet::new()),
            pulled: Condvar::new(),
            decoded: Mutex::new(HashMap::new()),
            decoding: Mutex::new(HashSet::new()),
            decoded_one: Condvar::new(),
            calls: OnceLock::new(),
        });
        let token = token.to_string();
        let weak = Arc::downgrade(&objects);
        io.spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                };
                let Some(objects) = weak.upgrade() else {
                    return;
                };
                let (store, token) = (store.clone(), token.clone());
                let calls = objects.calls.get().cloned();
                drop(objects);
                tokio::spawn(async move {
                    if let Err(e) = serve(&store, stream, &token, calls).await {
                        tracing::info!(%peer, "object server: connection closed: {e}");
                    }
                });
            }
        });
        Ok(objects)
    }

    /// Where this process serves objects.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Serves the callers that connect straight here with `handler` (a worker does).
    pub fn take_calls(&self, handler: CallHandler) {
        let _ = self.calls.set(handler);
    }

    /// The result `id` made here, as it travels to its owner: inline if small; kept here
    /// (until the owner frees it) and located otherwise. A result whose encoding pinned
    /// something (an actor handle) is kept here with its pins whatever its size, so
    /// that what it refers to outlives it until its owner has read it. A result this
    /// process owns itself (a nested task or actor call that ran in the same worker)
    /// goes into its store as the value itself, as in the embedded runtime, and its
    /// answer carries nothing.
    pub fn keep(&self, id: ObjectId, out: Output) -> Result<Payload> {
        if self.store.has(id) {
            let size = out.size();
            self.store.complete(id, out.value, size, out.codec);
            return Ok(Payload::Inline(Vec::new()));
        }
        let (bytes, pins) = pin::collect(|| out.encode());
        let bytes = bytes?;
        if bytes.len() <= INLINE_MAX && pins.is_empty() {
            return Ok(Payload::Inline(bytes));
        }
        let size = bytes.len() as u64;
        let count = self
            .store
            .hold(id, Arc::new(Encoded(bytes)), size, Codec::encoded());
        lock(&self.kept).insert(
            id,
            Kept {
                _count: count,
                _pins: pins,
            },
        );
        Ok(Payload::Held(Location {
            at: self.address.clone(),
            size,
        }))
    }

    /// The owner freed these objects: drop the copies kept here.
    /// Returns what was kept, for the caller to drop where user code may run (the
    /// values' own drops).
    pub fn free(&self, ids: &[ObjectId]) -> Freed {
        let mut decoded = lock(&self.decoded);
        let copies: Vec<Kept> = {
            let mut kept = lock(&self.kept);
            ids.iter().filter_map(|id| kept.remove(id)).collect()
        };
        let gone: Vec<(ObjectId, TypeId)> = decoded
            .keys()
            .filter(|(id, _)| ids.contains(id))
            .copied()
            .collect();
        let values = gone.iter().filter_map(|k| decoded.remove(k)).collect();
        Freed {
            _copies: copies,
            _values: values,
        }
    }

    /// The value of an argument as it travelled, for the parameter it is for: decoded
    /// from inline bytes, or the referenced object's (see [`Objects::value`]).
    pub fn arg(&self, arg: &EncodedArg, param: &Param) -> Result<AnyValue> {
        match arg {
            EncodedArg::Inline(bytes) => param.value(Source::Bytes(bytes)),
            EncodedArg::Ref { id, at } => self.value(*id, at, param),
        }
    }

    /// The value of object `id` (kept at `at`) as the parameter's type: the object
    /// itself if this process has it as that type; else decoded from the copy kept
    /// here (pulled first if need be). For a parameter taken by reference, decoded once
    /// per process and type, however many tasks and calls read it, and kept until its
    /// owner frees it; for one taken by value, decoded for the call, which owns it.
    pub fn value(&self, id: ObjectId, at: &str, param: &Param) -> Result<AnyValue> {
        if !param.is_shared() {
            let kept = self.fetch(id, at)?;
            return param.value(Source::Kept(&kept));
        }
        let key = (id, param.type_id());
        loop {
            if let Some(v) = lock(&self.decoded).get(&key) {
                return Ok(v.clone());
            }
            {
                let mut decoding = lock(&self.decoding);
                if decoding.contains(&key) {
                    drop(self.decoded_one.wait(decoding));
                    continue;
                }
                decoding.insert(key);
            }
            let value = self.fetch(id, at).and_then(|kept| {
                if param.is_type_of(&kept) {
                    return Ok(kept);
                }
                let v = param.value(Source::Kept(&kept))?;
                // Kept for others only while the copy it was made from is kept here:
                // both go when the owner frees the object (`free` takes the decoded
                // values' lock first, so it cannot slip in between).
                let mut decoded = lock(&self.decoded);
                if lock(&self.kept).contains_key(&id) {
                    decoded.insert(key, v.clone());
                }
                Ok(v)
            });
            lock(&self.decoding).remove(&key);
            self.decoded_one.notify_all();
            return value;
        }
    }

    /// The value of `id` as this process keeps it for a task argument (its bytes as
    /// they arrived, or the value itself if it made it): the copy kept here, or pulled
    /// from `at` (once, however many tasks ask at the same time) and kept.
    pub fn fetch(&self, id: ObjectId, at: &str) -> Result<AnyValue> {
        loop {
            if let Some(value) = self.local(id) {
                return value;
            }
            {
                let mut pulling = lock(&self.pulling);
                if pulling.contains(&id) {
                    drop(self.pulled.wait(pulling));
                    continue;
                }
                pulling.insert(id);
            }
            let pulled = self.pull(id, at).map(|bytes| {
                let size = bytes.len() as u64;
                let value = Arc::new(Encoded(bytes));
                // Kept for the job's later tasks, unless this process owns the object
                // (its own entry decides how long it lives).
                if !self.store.has(id) {
                    let count = self.store.hold(id, value.clone(), size, Codec::encoded());
                    let kept = Kept {
                        _count: count,
                        _pins: Vec::new(),
                    };
                    lock(&self.kept).insert(id, kept);
                }
                value as AnyValue
            });
            lock(&self.pulling).remove(&id);
            self.pulled.notify_all();
            return pulled;
        }
    }

    /// The value of `id` if this process has it: a copy kept here, or an object it
    /// owns and holds itself.
    fn local(&self, id: ObjectId) -> Option<Result<AnyValue>> {
        if !self.store.has(id) {
            return None;
        }
        match self.store.poll(id, None)? {
            Ok(Held::Elsewhere(_)) => None,
            Ok(Held::Here(v)) => Some(Ok(v)),
            Err(e) => Some(Err(e)),
        }
    }

    /// Pulls `id` from the object server at `at`, blocking this (non-I/O) thread.
    pub fn pull(&self, id: ObjectId, at: &str) -> Result<Vec<u8>> {
        let started = std::time::Instant::now();
        let bytes = self.io.block_on(pull(at, &self.token, id))?;
        let took = started.elapsed();
        self.store.record_pull(bytes.len() as u64, took);
        tracing::debug!(%id, at, bytes = bytes.len(), secs = took.as_secs_f64(), "pulled an object");
        Ok(bytes)
    }
}

/// The encoded bytes of a stored value, shared if it is stored encoded.
fn shared_bytes(store: &Store, id: ObjectId, v: AnyValue) -> Result<SharedBytes> {
    match v.downcast::<Encoded>() {
        Ok(e) => Ok(e),
        Err(_) => Ok(Arc::new(Encoded(store.encoded(id)?))),
    }
}

/// Serves one connection until the peer closes it: pulls, or (in a worker) the actor
/// messages and leased tasks of a caller that sends them straight here, answered on
/// the same connection.
async fn serve(
    store: &Store,
    mut stream: TcpStream,
    token: &str,
    calls: Option<CallHandler>,
) -> Result<(), WireError> {
    if wire::accept(&mut stream, token, "objects").await? == Role::Caller {
        let Some(handle) = calls else {
            return Err(WireError::Handshake(
                "actor calls go to worker processes".into(),
            ));
        };
        let (r, w) = stream.into_split();
        let mut r = tokio::io::BufReader::with_capacity(wire::READ_BUFFER, r);
        let reply = Reply::Socket(SocketWriter::new(w));
        loop {
            match wire::read_msg(&mut r).await? {
                m @ (Msg::ToActor { .. } | Msg::RunTask { .. }) => handle(m, reply.clone()),
                other => {
                    return Err(WireError::Malformed(format!(
                        "a caller cannot send {}",
                        other.name()
                    )))
                }
            }
        }
    }
    loop {
        let id = match wire::read_msg(&mut stream).await? {
            Msg::PullObject { id } => id,
            other => {
                return Err(WireError::Malformed(format!(
                    "an object server cannot serve {}",
                    other.name()
                )))
            }
        };
        let bytes = match store.poll(id, None) {
            Some(Ok(Held::Here(v))) => shared_bytes(store, id, v),
            Some(Err(e)) => Err(e),
            _ => Err(Error::ObjectLost(id)),
        };
        let size = bytes.as_ref().map(|b| (**b).as_ref().len() as u64);
        wire::write_msg(
            &mut stream,
            &Msg::ObjectHeader {
                id,
                size: size.map_err(|e| e.clone()),
            },
        )
        .await?;
        if let Ok(bytes) = bytes {
            for chunk in (*bytes).as_ref().chunks(CHUNK) {
                stream
                    .write_all(&(chunk.len() as u32).to_be_bytes())
                    .await?;
                stream.write_all(chunk).await?;
            }
            stream.flush().await?;
        }
    }
}

/// Pulls object `id` from the object server at `at`. A server that cannot be reached or
/// does not have the object is [`Error::ObjectLost`]; a server that breaks the protocol
/// is [`Error::Cluster`].
pub(crate) async fn pull(at: &str, token: &str, id: ObjectId) -> Result<Vec<u8>> {
    let lost = |why: String| {
        tracing::info!(%id, at, "cannot pull the object: {why}");
        Error::ObjectLost(id)
    };
    let (mut s, _) = tokio::time::timeout(
        wire::HANDSHAKE_TIMEOUT,
        wire::connect(at, token, Role::Objects),
    )
    .await
    .map_err(|_| lost("no answer in time".into()))?
    .map_err(|e| lost(e.to_string()))?;
    wire::write_msg(&mut s, &Msg::PullObject { id })
        .await
        .map_err(|e| lost(e.to_string()))?;
    let header = tokio::time::timeout(PULL_TIMEOUT, wire::read_msg(&mut s))
        .await
        .map_err(|_| lost(format!("no answer for {PULL_TIMEOUT:?}")))?;
    let size = match header.map_err(|e| lost(e.to_string()))? {
        Msg::ObjectHeader { id: got, size } if got == id => size?,
        other => {
            return Err(Error::Cluster(format!(
                "object server at {at} answered {} to a pull",
                other.name()
            )))
        }
    };
    let size = usize::try_from(size)
        .map_err(|_| Error::Cluster(format!("object of {size} bytes is too large here")))?;
    // The size comes from a peer with the cluster's token, but a wrong one must not
    // abort this process: nothing larger than the machine's memory is taken.
    if size as u64 > crate::config::system_memory() {
        return Err(Error::Cluster(format!(
            "object server at {at} announced {size} bytes, more than this machine's memory"
        )));
    }
    let mut buf = vec![0u8; size];
    let mut filled = 0;
    // A holder whose machine vanished without closing the connection must not make
    // the reader wait forever.
    let quiet = |what: &str| lost(format!("no data for {PULL_TIMEOUT:?} while reading {what}"));
    while filled < size {
        let mut len = [0u8; 4];
        tokio::time::timeout(PULL_TIMEOUT, s.read_exact(&mut len))
            .await
            .map_err(|_| quiet("a chunk's length"))?
            .map_err(|e| lost(e.to_string()))?;
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 || len > CHUNK || filled + len > size {
            return Err(Error::Cluster(format!(
                "object server at {at} sent a chunk of {len} bytes at offset {filled} of {size}"
            )));
        }
        tokio::time::timeout(PULL_TIMEOUT, s.read_exact(&mut buf[filled..filled + len]))
            .await
            .map_err(|_| quiet("a chunk"))?
            .map_err(|e| lost(e.to_string()))?;
        filled += len;
    }
    Ok(buf)
}
