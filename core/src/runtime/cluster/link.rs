//! The links of a cluster process: to its node, which every task, result and actor
//! message goes over, and to the head, which it asks questions on short connections.
//!
//! A driver whose node goes away keeps trying, for its reconnect window, to rejoin the
//! cluster: it asks the head which node to use now and connects there; the owner then
//! sends its tasks in flight again. Meanwhile, messages that are not tasks (tasks are
//! sent again from the owner's books) wait to be sent. If the window passes, the link
//! is lost: every pending object fails, and every later send fails, with
//! [`Error::ClusterUnreachable`], naming the head and how long the driver tried. The
//! head itself may go away and come back (it recovers its tables) without the link
//! noticing; questions to it are retried within the same window.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use crate::error::{Error, Result};
use crate::sync::{read, write};
use crate::wire::{self, Msg, Outbox, Role};

/// How long a question to the head may take (it commits some answers to disk first).
const ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a driver tries to reach its cluster again while it is gone.
const RETRY: Duration = Duration::from_millis(250);

/// The connection of this process to its node, with what it needs to rejoin.
pub(crate) struct Link {
    /// The job this process belongs to.
    pub job: u32,
    /// The head's address.
    pub head: String,
    token: String,
    /// How long a driver keeps trying to reach a cluster that went away.
    window: Duration,
    /// Read by every send; written only when the link goes down, comes back or is
    /// lost.
    state: RwLock<State>,
    /// A task is trying to reconnect.
    reconnecting: AtomicBool,
}

enum State {
    /// Connected to the node at `node`.
    Up { outbox: Outbox, node: String },
    /// The node went away at `since`; `held` waits to be sent on reconnecting.
    Down { since: Instant, held: Vec<Msg> },
    /// Gave up.
    Lost(Error),
}

impl Link {
    /// A link over the connection `outbox` to the node at `node`.
    pub fn new(
        job: u32,
        head: String,
        token: String,
        window: Duration,
        outbox: Outbox,
        node: String,
    ) -> Link {
        Link {
            job,
            head,
            token,
            window,
            state: RwLock::new(State::Up { outbox, node }),
            reconnecting: AtomicBool::new(false),
        }
    }

    /// The node this process is connected to (the home of the actors it starts), if
    /// the link is up.
    pub fn node(&self) -> Option<String> {
        match &*read(&self.state) {
            State::Up { node, .. } => Some(node.clone()),
            _ => None,
        }
    }

    /// Sends `msg` to the node. While the node is away, a task is dropped (the owner
    /// sends its tasks in flight again on reconnecting) and anything else waits;
    /// once the link is lost, it fails.
    pub fn send(&self, msg: Msg) -> Result<()> {
        let msg = match &*read(&self.state) {
            State::Up { outbox, .. } => match outbox.send(msg) {
                Ok(()) => return Ok(()),
                // The writer is gone: the reader sees the connection close too.
                Err(back) => back.0,
            },
            State::Lost(e) => return Err(e.clone()),
            State::Down { .. } => msg,
        };
        let mut st = write(&self.state);
        if let State::Up { .. } = &*st {
            *st = State::Down {
                since: Instant::now(),
                held: Vec::new(),
            };
        }
        match &mut *st {
            State::Down { held, .. } => {
                if !matches!(
                    msg,
                    Msg::SubmitTask { .. } | Msg::Lease { .. } | Msg::ReturnLease { .. }
                ) {
                    held.push(msg);
                }
                Ok(())
            }
            State::Lost(e) => Err(e.clone()),
            State::Up { .. } => Ok(()),
        }
    }

    /// The node connection closed: from now on messages wait. Returns whether the
    /// caller is to try to reconnect (no one else is, and the link is not lost).
    pub fn went_down(&self) -> bool {
        let mut st = write(&self.state);
        match &*st {
            State::Lost(_) => return false,
            State::Up { .. } => {
                *st = State::Down {
                    since: Instant::now(),
                    held: Vec::new(),
                }
            }
            State::Down { .. } => {}
        }
        !self.reconnecting.swap(true, Ordering::AcqRel)
    }

    /// Connected again, to the node at `node`: sends what waited. Fails if the link was
    /// lost meanwhile.
    pub fn came_back(&self, outbox: Outbox, node: String) -> Result<()> {
        let mut st = write(&self.state);
        let held = match &mut *st {
            State::Down { held, .. } => std::mem::take(held),
            State::Lost(e) => return Err(e.clone()),
            State::Up { .. } => Vec::new(),
        };
        for m in held {
            let _ = outbox.send(m);
        }
        *st = State::Up { outbox, node };
        self.reconnecting.store(false, Ordering::Release);
        Ok(())
    }

    /// How long the link has been down, if it is.
    pub fn down_for(&self) -> Option<Duration> {
        match &*read(&self.state) {
            State::Down { since, .. } => Some(since.elapsed()),
            _ => None,
        }
    }

    /// Whether the reconnect window has passed for a link down for `down`.
    pub fn window_passed(&self, down: Duration) -> bool {
        down >= self.window
    }

    /// Gives up: every later send fails with the error returned.
    pub fn give_up(&self, reason: &str) -> Error {
        let mut st = write(&self.state);
        if let State::Lost(e) = &*st {
            return e.clone();
        }
        let waited = match &*st {
            State::Down { since, .. } => since.elapsed(),
            _ => Duration::ZERO,
        };
        let e = Error::ClusterUnreachable {
            head: self.head.clone(),
            waited,
            reason: reason.to_string(),
        };
        *st = State::Lost(e.clone());
        e
    }

    /// Why the link is lost, if it is.
    pub fn lost(&self) -> Option<Error> {
        match &*read(&self.state) {
            State::Lost(e) => Some(e.clone()),
            _ => None,
        }
    }

    /// Asks the head one question on a connection of its own. A head that cannot be
    /// reached is asked again until the reconnect window passes (it may be restarting);
    /// then the answer is [`Error::ClusterUnreachable`].
    pub async fn ask_head(&self, msg: &Msg) -> Result<Msg> {
        if let Some(e) = self.lost() {
            return Err(e);
        }
        let started = Instant::now();
        loop {
            match self.ask_head_once(msg).await {
                Ok(answer) => return Ok(answer),
                Err(e) if started.elapsed() + RETRY < self.window => {
                    tracing::debug!(head = %self.head, "the head does not answer ({e}); asking again");
                    tokio::time::sleep(RETRY).await;
                }
                Err(e) => {
                    return Err(Error::ClusterUnreachable {
                        head: self.head.clone(),
                        waited: started.elapsed(),
                        reason: e.to_string(),
                    })
                }
            }
        }
    }

    /// Asks the head once, giving it [`ASK_TIMEOUT`] to answer.
    pub async fn ask_head_once(&self, msg: &Msg) -> Result<Msg> {
        let exchange = async {
            let (mut s, _) = wire::connect(&self.head, &self.token, Role::Driver).await?;
            wire::write_msg(&mut s, msg).await?;
            wire::read_msg::<_, Msg>(&mut s).await
        };
        tokio::time::timeout(ASK_TIMEOUT, exchange)
            .await
            .map_err(|_| {
                Error::Cluster(format!(
                    "the head at {} did not answer in {ASK_TIMEOUT:?}",
                    self.head
                ))
            })?
            .map_err(Error::from)
    }

    /// Connects to the node at `node` as `role`.
    pub async fn connect_node(&self, node: &str, role: Role) -> Result<TcpStream> {
        let (s, _) = tokio::time::timeout(
            wire::HANDSHAKE_TIMEOUT,
            wire::connect(node, &self.token, role),
        )
        .await
        .map_err(|_| Error::Cluster(format!("the node at {node} did not answer")))??;
        Ok(s)
    }

    /// How often to try again while the cluster is away.
    pub fn retry_every() -> Duration {
        RETRY
    }
}
