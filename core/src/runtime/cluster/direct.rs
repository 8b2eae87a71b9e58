//! Actor calls sent straight to the worker process hosting the actor, and their results
//! sent straight back: one round trip between two processes per call, instead of two
//! through the nodes.
//!
//! On these connections the thread that has a message writes it to the socket itself
//! when the connection is idle (a caller's thread its call, a worker's pool thread its
//! result), so no I/O thread has to be woken for it: on a machine where waking a thread
//! costs about as much as the network hop, that is most of a synchronous call's
//! latency. Messages sent in quick succession are handed to the connection's writer
//! task instead, which batches them into few writes; frames never interleave.
//!
//! After a send, the process's I/O thread polls its sockets without sleeping for a
//! short while ([`Hot`]), so that the answer, or a synchronous caller's next call, is
//! read the moment it arrives instead of after the kernel wakes the thread: that wake
//! is most of a round trip between two processes on this kind of machine (a blocking
//! 64-byte ping-pong over loopback took 54 µs, 20 µs with one side polling).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::tcp::OwnedWriteHalf;

use crate::id::ObjectId;
use crate::sync::lock;
use crate::wire::{self, Msg, Outbox};

/// Sends closer together than this go to the writer task, to be batched.
const BURST: Duration = Duration::from_micros(30);

/// How long the I/O thread keeps polling without sleeping after a send (see [`Hot`]).
const HOT: Duration = Duration::from_micros(200);

/// Keeps this process's I/O thread polling its sockets, instead of sleeping in the
/// kernel, for a short while after a message went out on this direct connection (one
/// `Hot` per connection; those of idle connections sleep): the
/// answer (in a caller) or the next call (in a worker serving a synchronous caller)
/// usually follows within tens of microseconds, and waking a sleeping thread costs
/// about as much. The spinning task yields the core on every turn.
struct Hot {
    base: Instant,
    /// Nanoseconds after `base` until which the I/O thread polls.
    until: AtomicU64,
    wake: tokio::sync::Notify,
    closed: AtomicBool,
}

impl Hot {
    fn start() -> Arc<Hot> {
        let hot = Arc::new(Hot {
            base: Instant::now(),
            until: AtomicU64::new(0),
            wake: tokio::sync::Notify::new(),
            closed: AtomicBool::new(false),
        });
        let h = hot.clone();
        tokio::spawn(async move {
            loop {
                if h.closed.load(Ordering::Relaxed) {
                    return;
                }
                let notified = h.wake.notified();
                if h.now() >= h.until.load(Ordering::SeqCst) {
                    notified.await;
                    continue;
                }
                tokio::task::yield_now().await;
                std::thread::yield_now();
            }
        });
        hot
    }

    fn now(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    fn touch(&self) {
        let until = self.now() + HOT.as_nanos() as u64;
        let before = self.until.fetch_max(until, Ordering::SeqCst);
        // The window before this one is over (read after extending it): the spinner may
        // have seen it end and gone to sleep, so wake it. If it has not, it finds the
        // longer window when it next looks, and the wake-up is spent on one loop.
        if before <= self.now() {
            self.wake.notify_one();
        }
    }
}

/// The sending half of a direct connection, written by whichever thread sends.
pub(crate) struct SocketWriter {
    half: OwnedWriteHalf,
    state: Mutex<WriterState>,
    /// Wakes the writer task to drain the buffer.
    wake: Arc<tokio::sync::Notify>,
    hot: Arc<Hot>,
}

#[derive(Default)]
struct WriterState {
    buf: Vec<u8>,
    /// A thread or the writer task is writing; others only append to `buf`.
    writing: bool,
    closed: bool,
    last_send: Option<Instant>,
}

impl Drop for SocketWriter {
    fn drop(&mut self) {
        // The writer task ends when it finds the writer gone.
        self.wake.notify_one();
        self.hot.closed.store(true, Ordering::Relaxed);
        self.hot.wake.notify_one();
    }
}

impl SocketWriter {
    /// Wraps a connection's sending half; must be called inside the I/O runtime, which
    /// runs the writer task.
    pub fn new(half: OwnedWriteHalf) -> Arc<SocketWriter> {
        let wake = Arc::new(tokio::sync::Notify::new());
        let writer = Arc::new(SocketWriter {
            half,
            state: Mutex::new(WriterState::default()),
            wake: wake.clone(),
            hot: Hot::start(),
        });
        let weak = Arc::downgrade(&writer);
        tokio::spawn(async move {
            loop {
                wake.notified().await;
                let Some(w) = weak.upgrade() else { return };
                if w.drain().await.is_err() {
                    let mut st = lock(&w.state);
                    st.closed = true;
                    st.writing = false;
                    st.buf.clear();
                    return;
                }
            }
        });
        writer
    }

    /// Sends a message; `false` if the connection is closed.
    pub fn send(&self, msg: &Msg) -> bool {
        let bytes = match wire::frame(msg) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("dropping a message that cannot be framed: {e}");
                return true;
            }
        };
        let mut st = lock(&self.state);
        if st.closed {
            return false;
        }
        self.hot.touch();
        st.buf.extend_from_slice(&bytes);
        let now = Instant::now();
        let burst = st.last_send.is_some_and(|t| now - t < BURST);
        st.last_send = Some(now);
        if st.writing {
            return true;
        }
        st.writing = true;
        if burst {
            drop(st);
            self.wake.notify_one();
            return true;
        }
        // Idle: this thread writes what is buffered, without blocking.
        let pending = std::mem::take(&mut st.buf);
        drop(st);
        let written = match self.half.try_write(&pending) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(_) => {
                let mut st = lock(&self.state);
                st.closed = true;
                st.writing = false;
                return false;
            }
        };
        let mut st = lock(&self.state);
        if written < pending.len() {
            let mut rest = pending[written..].to_vec();
            rest.append(&mut st.buf);
            st.buf = rest;
        }
        if st.buf.is_empty() {
            st.writing = false;
        } else {
            // The rest, and what others appended meanwhile, goes with the writer task.
            drop(st);
            self.wake.notify_one();
        }
        true
    }

    /// Writes the buffer out until it is empty (the writer task's part).
    async fn drain(&self) -> std::io::Result<()> {
        loop {
            let pending = {
                let mut st = lock(&self.state);
                if st.buf.is_empty() {
                    st.writing = false;
                    return Ok(());
                }
                std::mem::take(&mut st.buf)
            };
            let mut off = 0;
            while off < pending.len() {
                self.half.writable().await?;
                match self.half.try_write(&pending[off..]) {
                    Ok(n) => off += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

/// Where a worker sends a task's or call's result: the queue of its node connection, or
/// the socket of a caller connected straight to it.
#[derive(Clone)]
pub(crate) enum Reply {
    /// Through the node.
    Queue(Outbox),
    /// Straight to the caller.
    Socket(Arc<SocketWriter>),
}

impl Reply {
    /// Sends a message (dropped if the connection is gone, as the caller is then too).
    pub fn send(&self, msg: Msg) {
        match self {
            Reply::Queue(out) => {
                let _ = out.send(msg);
            }
            Reply::Socket(w) => {
                w.send(&msg);
            }
        }
    }
}

/// A caller's connection straight to a worker process, for the calls of the actors it
/// hosts and the tasks of a lease.
pub(crate) struct Direct {
    writer: Arc<SocketWriter>,
    /// Calls sent and not answered yet: they fail if the connection drops.
    inflight: Mutex<HashSet<ObjectId>>,
    closed: AtomicBool,
}

impl Direct {
    /// A connection whose sending half is `writer`.
    pub fn new(writer: Arc<SocketWriter>) -> Direct {
        Direct {
            writer,
            inflight: Mutex::new(HashSet::new()),
            closed: AtomicBool::new(false),
        }
    }

    /// Sends a message that `call` answers; gives it back if the connection is gone.
    pub fn send(&self, call: ObjectId, msg: Msg) -> Option<Msg> {
        lock(&self.inflight).insert(call);
        // Checked after the insert: a connection that closes drains `inflight` after
        // setting `closed`, so no call is left without an answer.
        if self.closed.load(Ordering::SeqCst) || !self.writer.send(&msg) {
            lock(&self.inflight).remove(&call);
            return Some(msg);
        }
        None
    }

    /// Sends a message no answer comes back for; gives it back if the connection is
    /// gone.
    pub fn post(&self, msg: Msg) -> Option<Msg> {
        if self.closed.load(Ordering::SeqCst) || !self.writer.send(&msg) {
            return Some(msg);
        }
        None
    }

    /// A call was answered.
    pub fn answered(&self, call: ObjectId) {
        lock(&self.inflight).remove(&call);
    }

    /// The connection dropped: the calls it carried, now without an answer.
    pub fn close(&self) -> Vec<ObjectId> {
        self.closed.store(true, Ordering::SeqCst);
        lock(&self.inflight).drain().collect()
    }

    /// Whether the connection dropped.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}
