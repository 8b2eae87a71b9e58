//! The router of one deployment, in each process that sends it requests (the ingress,
//! a handle inside another deployment's replica): it knows the replicas, how many
//! requests each has in flight from here, and the requests that wait.
//!
//! A request goes to the less loaded of two replicas picked at random among those
//! below `max_ongoing_requests` (the power of two choices), straight to the replica's
//! actor: no proxy in between. When every replica is full it waits here, in order, up
//! to `max_queued_requests` (past it: 503). Requests to a batched handler gather here
//! until `max_batch_size` of them wait or the first has waited `batch_wait_timeout`,
//! then go to one replica as one call: a batch counts once against
//! `max_ongoing_requests`, so that the limit never keeps a batch from filling.

use std::collections::{BTreeMap, VecDeque};
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Instant;

use prism::ObjectFuture;

use tokio::sync::oneshot;

use crate::deployment::HandlerKind;
use crate::error::HttpError;
use crate::metrics::Metrics;
use crate::replica::{ReplicaHandle, Reply};

/// A request waiting for a replica.
struct Waiting {
    handler: String,
    body: Vec<u8>,
    reply: oneshot::Sender<Handoff>,
    since: Instant,
}

/// What a waiting request's [`Pending`] receives: the call it was sent as (it awaits
/// the answer itself), or its answer (a batch's, or a failure).
enum Handoff {
    Sent(u64, prism::ObjectRef<Reply>),
    Answered(Reply),
}

/// A request's answer to come, from [`Router::call`]. Sent at once when a replica was
/// free (the common case: the future awaits the replica's answer directly, with no
/// task or channel between), or after waiting in the router. Dropped before the answer
/// (a timeout, a client gone), it still frees its replica's slot when the answer comes.
pub(crate) struct Pending {
    router: Arc<Router>,
    since: Instant,
    state: PendingState,
}

enum PendingState {
    Queued(oneshot::Receiver<Handoff>),
    Sent(u64, ObjectFuture<Reply>),
    Done,
}

impl Future for Pending {
    type Output = Reply;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Reply> {
        let me = &mut *self;
        loop {
            match &mut me.state {
                PendingState::Queued(rx) => match Pin::new(rx).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(Handoff::Sent(id, answer))) => {
                        me.state = PendingState::Sent(id, answer.into_future());
                    }
                    Poll::Ready(Ok(Handoff::Answered(reply))) => {
                        me.state = PendingState::Done;
                        return Poll::Ready(reply);
                    }
                    Poll::Ready(Err(_)) => {
                        me.state = PendingState::Done;
                        return Poll::Ready(Err(HttpError::unavailable(format!(
                            "deployment {} stopped before it answered",
                            me.router.name
                        ))));
                    }
                },
                PendingState::Sent(id, answer) => {
                    let outcome = match Pin::new(answer).poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(o) => o,
                    };
                    let id = *id;
                    me.state = PendingState::Done;
                    let reply = me.router.finish(id, outcome, Some(me.since));
                    return Poll::Ready(reply);
                }
                PendingState::Done => {
                    return Poll::Ready(Err(HttpError::internal("polled after its answer")))
                }
            }
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let PendingState::Sent(id, answer) =
            std::mem::replace(&mut self.state, PendingState::Done)
        {
            let router = self.router.clone();
            crate::tokio().spawn(async move {
                let outcome = answer.await;
                let _ = router.finish(id, outcome, None);
            });
        }
    }
}

/// One replica as this router sees it.
struct Slot {
    id: u64,
    replica: ReplicaHandle,
    /// Requests (or batches) sent and not answered.
    ongoing: usize,
    /// Takes new requests (false while it drains before it stops).
    accepting: bool,
}

#[derive(Default)]
struct Batch {
    waiting: VecDeque<Waiting>,
    /// A wake-up is set for when the first waiting request's time is up.
    timer: bool,
}

struct State {
    slots: Vec<Slot>,
    queue: VecDeque<Waiting>,
    batches: BTreeMap<String, Batch>,
    max_ongoing: usize,
    max_queued: Option<usize>,
    /// Replicas whose calls failed because the replica is gone, for the controller.
    dead: Vec<u64>,
    /// Why new requests are refused, once the deployment is deleted.
    closed: Option<String>,
    rng: u64,
}

impl State {
    /// Requests waiting for a replica, in the queue and in batches.
    fn queued(&self) -> usize {
        self.queue.len()
            + self
                .batches
                .values()
                .map(|b| b.waiting.len())
                .sum::<usize>()
    }
}

/// What `pump` decided to send, sent once the lock is released.
enum Dispatch {
    One(u64, ReplicaHandle, Waiting),
    Many(u64, ReplicaHandle, Vec<Waiting>),
}

/// The router of one deployment. See the module's documentation.
pub(crate) struct Router {
    pub(crate) name: String,
    pub(crate) kinds: BTreeMap<String, HandlerKind>,
    state: Mutex<State>,
    pub(crate) metrics: Metrics,
}

impl Router {
    /// A router with no replicas yet.
    pub(crate) fn new(
        name: &str,
        kinds: BTreeMap<String, HandlerKind>,
        max_ongoing: usize,
        max_queued: Option<usize>,
    ) -> Arc<Router> {
        let batches = kinds
            .iter()
            .filter(|(_, k)| matches!(k, HandlerKind::Batched(_)))
            .map(|(n, _)| (n.clone(), Batch::default()))
            .collect();
        Arc::new(Router {
            name: name.to_string(),
            kinds,
            state: Mutex::new(State {
                slots: Vec::new(),
                queue: VecDeque::new(),
                batches,
                max_ongoing: max_ongoing.max(1),
                max_queued,
                dead: Vec::new(),
                closed: None,
                rng: 0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id()),
            }),
            metrics: Metrics::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends a request to `handler` (its JSON body): its answer is the [`Pending`].
    /// Fails at once when the handler does not exist, the queue is full, or the
    /// deployment is gone.
    pub(crate) fn call(
        self: &Arc<Self>,
        handler: &str,
        body: Vec<u8>,
    ) -> Result<Pending, HttpError> {
        let Some(kind) = self.kinds.get(handler) else {
            let known: Vec<&String> = self.kinds.keys().collect();
            return Err(HttpError::not_found(format!(
                "deployment {} has no handler {handler:?} (it has {known:?})",
                self.name
            )));
        };
        if *kind == HandlerKind::Stream {
            return Err(HttpError::bad_request(format!(
                "handler {handler:?} of {} answers with a stream: call it over HTTP",
                self.name
            )));
        }
        let since = Instant::now();
        let mut st = self.lock();
        if let Some(why) = &st.closed {
            return Err(HttpError::unavailable(why.clone()));
        }
        // A replica is free and nothing waits before this request: send it now.
        if *kind == HandlerKind::Single && st.queue.is_empty() {
            if let Some(i) = pick(&mut st) {
                let slot = &mut st.slots[i];
                slot.ongoing += 1;
                let (id, replica) = (slot.id, slot.replica.clone());
                drop(st);
                let answer = replica.call(handler, body);
                return Ok(Pending {
                    router: self.clone(),
                    since,
                    state: PendingState::Sent(id, answer.into_future()),
                });
            }
        }
        if let Some(max) = st.max_queued {
            let queued = st.queued();
            if queued >= max {
                let why = format!(
                    "deployment {} is overloaded: {queued} requests wait (max_queued_requests {max})",
                    self.name
                );
                drop(st);
                self.metrics.answered(503, 0.0);
                return Err(HttpError::unavailable(why));
            }
        }
        let (tx, rx) = oneshot::channel();
        let waiting = Waiting {
            handler: handler.to_string(),
            body,
            reply: tx,
            since,
        };
        match kind {
            HandlerKind::Stream => unreachable!("refused above"),
            HandlerKind::Single => st.queue.push_back(waiting),
            HandlerKind::Batched(_) => st
                .batches
                .get_mut(handler)
                .expect("a batch per batched handler")
                .waiting
                .push_back(waiting),
        }
        self.pump(st);
        Ok(Pending {
            router: self.clone(),
            since,
            state: PendingState::Queued(rx),
        })
    }

    /// How `handler` takes its requests, if the deployment has it.
    pub(crate) fn kind(&self, handler: &str) -> Option<HandlerKind> {
        self.kinds.get(handler).copied()
    }

    /// A replica for a stream, held (counted in flight) until [`Router::end_stream`]:
    /// the least loaded one taking requests. A stream does not wait in the queue.
    pub(crate) fn start_stream(&self) -> Result<(u64, ReplicaHandle), HttpError> {
        let mut st = self.lock();
        if let Some(why) = &st.closed {
            return Err(HttpError::unavailable(why.clone()));
        }
        let slot = st
            .slots
            .iter_mut()
            .filter(|s| s.accepting)
            .min_by_key(|s| s.ongoing)
            .ok_or_else(|| {
                HttpError::unavailable(format!("deployment {} has no replica serving", self.name))
            })?;
        slot.ongoing += 1;
        Ok((slot.id, slot.replica.clone()))
    }

    /// A stream on replica `id`, started at `since`, ended with `status`.
    pub(crate) fn end_stream(self: &Arc<Self>, id: u64, status: u16, since: Instant) {
        self.count(status, since);
        self.done(id);
    }

    /// A sent request's outcome: counted (unless its caller left, and was answered
    /// otherwise), its slot freed, a gone replica noted.
    fn finish(
        self: &Arc<Self>,
        id: u64,
        outcome: prism::Result<Reply>,
        since: Option<Instant>,
    ) -> Reply {
        let reply = outcome.unwrap_or_else(|e| Err(self.failed(id, e)));
        if let Some(since) = since {
            self.count(status_of(&reply), since);
        }
        self.done(id);
        reply
    }

    /// Sends what can be sent now, then releases the lock and sends it.
    fn pump(self: &Arc<Self>, mut st: MutexGuard<'_, State>) {
        let mut sends = Vec::new();
        let now = Instant::now();
        loop {
            // A request whose caller gave up (its timeout, its connection) is dropped.
            while st.queue.front().is_some_and(|w| w.reply.is_closed()) {
                st.queue.pop_front();
            }
            if st.queue.is_empty() {
                break;
            }
            let Some(i) = pick(&mut st) else { break };
            let w = st.queue.pop_front().expect("not empty");
            let slot = &mut st.slots[i];
            slot.ongoing += 1;
            sends.push(Dispatch::One(slot.id, slot.replica.clone(), w));
        }
        let handlers: Vec<String> = st.batches.keys().cloned().collect();
        for handler in handlers {
            let HandlerKind::Batched(opts) = self.kinds[&handler] else {
                continue;
            };
            loop {
                let batch = st.batches.get_mut(&handler).expect("listed");
                batch.waiting.retain(|w| !w.reply.is_closed());
                let Some(first) = batch.waiting.front() else {
                    break;
                };
                let due = first.since + opts.batch_wait_timeout;
                if batch.waiting.len() < opts.max_batch_size && due > now {
                    if !batch.timer {
                        batch.timer = true;
                        let me = self.clone();
                        let handler = handler.clone();
                        crate::tokio().spawn(async move {
                            tokio::time::sleep_until(due.into()).await;
                            let mut st = me.lock();
                            if let Some(b) = st.batches.get_mut(&handler) {
                                b.timer = false;
                            }
                            me.pump(st);
                        });
                    }
                    break;
                }
                let Some(i) = pick(&mut st) else { break };
                let batch = st.batches.get_mut(&handler).expect("listed");
                let n = batch.waiting.len().min(opts.max_batch_size);
                let taken: Vec<Waiting> = batch.waiting.drain(..n).collect();
                let slot = &mut st.slots[i];
                slot.ongoing += 1;
                sends.push(Dispatch::Many(slot.id, slot.replica.clone(), taken));
            }
        }
        drop(st);
        for s in sends {
            self.send(s);
        }
    }

    fn send(self: &Arc<Self>, s: Dispatch) {
        let me = self.clone();
        match s {
            Dispatch::One(id, replica, w) => {
                let answer = replica.call(w.handler, w.body);
                if let Err(Handoff::Sent(id, answer)) = w.reply.send(Handoff::Sent(id, answer)) {
                    // Its caller left while it was sent: free the slot when it is done.
                    crate::tokio().spawn(async move {
                        let outcome = answer.await;
                        let _ = me.finish(id, outcome, None);
                    });
                }
            }
            Dispatch::Many(id, replica, ws) => {
                let handler = ws[0].handler.clone();
                let (bodies, rest): (Vec<Vec<u8>>, Vec<_>) =
                    ws.into_iter().map(|w| (w.body, (w.reply, w.since))).unzip();
                let n = bodies.len();
                me.metrics.batch(n);
                let answer = replica.call_batch(handler, bodies);
                crate::tokio().spawn(async move {
                    let replies = match answer.await {
                        Ok(r) if r.len() == n => r,
                        Ok(r) => vec![
                            Err(HttpError::internal(format!(
                                "a replica answered {} of a batch of {n}",
                                r.len()
                            )));
                            n
                        ],
                        Err(e) => vec![Err(me.failed(id, e)); n],
                    };
                    for ((tx, since), reply) in rest.into_iter().zip(replies) {
                        me.answer(tx, reply, since);
                    }
                    me.done(id);
                });
            }
        }
    }

    fn answer(&self, tx: oneshot::Sender<Handoff>, reply: Reply, since: Instant) {
        self.count(status_of(&reply), since);
        let _ = tx.send(Handoff::Answered(reply));
    }

    /// Counts an answer with `status` to a request that arrived at `since`.
    fn count(&self, status: u16, since: Instant) {
        self.metrics
            .answered(status, since.elapsed().as_secs_f64() * 1e3);
    }

    /// A call to replica `id` that failed in the runtime, as an HTTP error: the
    /// replica is gone (its process died, it was killed; noted for the controller) or
    /// the call itself failed.
    pub(crate) fn failed(&self, id: u64, e: prism::Error) -> HttpError {
        let gone = matches!(
            e,
            prism::Error::ActorDied { .. }
                | prism::Error::WorkerCrashed { .. }
                | prism::Error::ClusterUnreachable { .. }
                | prism::Error::Shutdown
        );
        if gone {
            let mut st = self.lock();
            if let Some(s) = st.slots.iter_mut().find(|s| s.id == id) {
                s.accepting = false;
            }
            if !st.dead.contains(&id) {
                st.dead.push(id);
            }
            HttpError::unavailable(format!(
                "the replica of {} serving this request is gone: {e}",
                self.name
            ))
        } else {
            HttpError::internal(format!("{e}"))
        }
    }

    fn done(self: &Arc<Self>, id: u64) {
        let mut st = self.lock();
        if let Some(s) = st.slots.iter_mut().find(|s| s.id == id) {
            s.ongoing -= 1;
        }
        self.pump(st);
    }

    /// Starts sending requests to a replica.
    pub(crate) fn add(self: &Arc<Self>, id: u64, replica: ReplicaHandle) {
        let mut st = self.lock();
        st.slots.push(Slot {
            id,
            replica,
            ongoing: 0,
            accepting: true,
        });
        self.pump(st);
    }

    /// Stops sending requests to a replica; it stays counted until [`Router::remove`].
    pub(crate) fn stop_sending(&self, id: u64) {
        if let Some(s) = self.lock().slots.iter_mut().find(|s| s.id == id) {
            s.accepting = false;
        }
    }

    /// Forgets a replica.
    pub(crate) fn remove(&self, id: u64) {
        let mut st = self.lock();
        st.slots.retain(|s| s.id != id);
        st.dead.retain(|d| *d != id);
    }

    /// Replaces the replica set with `replicas` (by id), keeping what is known of
    /// those that stay: what a handle's router does when the directory changes.
    pub(crate) fn set(self: &Arc<Self>, replicas: Vec<(u64, ReplicaHandle)>) {
        let mut st = self.lock();
        st.slots
            .retain(|s| replicas.iter().any(|(id, _)| *id == s.id));
        for (id, r) in replicas {
            if !st.slots.iter().any(|s| s.id == id) {
                st.slots.push(Slot {
                    id,
                    replica: r,
                    ongoing: 0,
                    accepting: true,
                });
            }
        }
        self.pump(st);
    }

    /// Requests in flight on a replica, from here.
    pub(crate) fn ongoing(&self, id: u64) -> usize {
        let st = self.lock();
        st.slots
            .iter()
            .find(|s| s.id == id)
            .map_or(0, |s| s.ongoing)
    }

    /// Requests in flight in all and waiting: the load the autoscaler reads.
    pub(crate) fn load(&self) -> (usize, usize) {
        let st = self.lock();
        (st.slots.iter().map(|s| s.ongoing).sum(), st.queued())
    }

    /// Replicas whose calls found them gone, since the last look.
    pub(crate) fn take_dead(&self) -> Vec<u64> {
        std::mem::take(&mut self.lock().dead)
    }

    /// Answers every waiting request with `err` (no replica can start).
    pub(crate) fn fail_waiting(&self, err: HttpError) {
        let mut st = self.lock();
        let mut all: Vec<Waiting> = st.queue.drain(..).collect();
        for b in st.batches.values_mut() {
            all.extend(b.waiting.drain(..));
        }
        drop(st);
        for w in all {
            self.answer(w.reply, Err(err.clone()), w.since);
        }
    }

    /// Refuses new requests with `why` and fails those waiting.
    pub(crate) fn close(&self, why: String) {
        self.lock().closed = Some(why.clone());
        self.fail_waiting(HttpError::unavailable(why));
    }

    /// Sets the per-replica and queue limits.
    pub(crate) fn limits(self: &Arc<Self>, max_ongoing: usize, max_queued: Option<usize>) {
        let mut st = self.lock();
        st.max_ongoing = max_ongoing.max(1);
        st.max_queued = max_queued;
        self.pump(st);
    }
}

/// The HTTP status of an answer.
fn status_of(reply: &Reply) -> u16 {
    reply.as_ref().map_or_else(|e| e.status, |_| 200)
}

/// The replica a request goes to: of two picked at random among those that take
/// requests and are below the limit, the one with fewer in flight.
fn pick(st: &mut State) -> Option<usize> {
    let max = st.max_ongoing;
    let open = |s: &Slot| s.accepting && s.ongoing < max;
    let n = st.slots.iter().filter(|s| open(s)).count();
    match n {
        0 => None,
        1 => st.slots.iter().position(open),
        _ => {
            let a = next(&mut st.rng) as usize % n;
            let mut b = next(&mut st.rng) as usize % (n - 1);
            if b >= a {
                b += 1;
            }
            let nth = |k: usize| {
                st.slots
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| open(s))
                    .nth(k)
                    .map(|(i, _)| i)
                    .expect("k < n")
            };
            let (a, b) = (nth(a), nth(b));
            Some(if st.slots[b].ongoing < st.slots[a].ongoing {
                b
            } else {
                a
            })
        }
    }
}

/// xorshift64*: enough randomness to pick replicas, without a dependency.
fn next(s: &mut u64) -> u64 {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    s.wrapping_mul(0x2545_F491_4F6C_DD1D)
}
