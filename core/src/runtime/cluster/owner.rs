//! What a process owns in a cluster: the tasks it submitted, kept until their results
//! arrive so that they can be sent again when a worker dies; the lineage of the objects
//! it owns that live in other processes, so that an object lost with its node is made
//! again by running its task again (recursively through lost arguments, within
//! `max_retries`); the fetching of objects that live elsewhere into its store; and the
//! announcement that an object was freed, so that its copies go.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::direct::{Direct, SocketWriter};
use super::lease::Lease;
use super::link::Link;
use super::objects::Objects;
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::object::pin::Pin;
use crate::object::{AnyValue, Codec, Encoded, Held, Location, Store, Waiter};
use crate::sched::Pool;
use crate::sync::lock;
use crate::task::{EncodedArg, TaskSpec};
use crate::wire::{self, Msg, Payload, Role};

/// What a process owns in a cluster, shared by its client and the connections'
/// readers: the tasks it submitted (to send them again), how to rebuild the objects it
/// owns (their lineage), and its object server.
pub(crate) struct Owner {
    pub job: u32,
    pub link: Arc<Link>,
    pub store: Arc<Store>,
    pub objects: Arc<Objects>,
    pub books: Mutex<Books>,
    /// The I/O runtime, for connections opened later.
    pub io: tokio::runtime::Handle,
    pub token: String,
    /// Connections straight to workers (actor calls, leased tasks), by address.
    pub directs: Mutex<HashMap<String, Arc<Direct>>>,
    /// The lease this driver holds or asked for (see [`Owner::send_on_lease`]).
    pub lease: Mutex<Option<Lease>>,
    /// Whether this process takes leases (drivers do; a worker's nested tasks go
    /// through its node, which lends the CPUs of a task that waits for them).
    pub leases: bool,
    /// The process's pool, where what answers let go of is dropped (user values).
    pub pool: Arc<Pool>,
}

/// The tasks this process submitted, kept to run them again.
#[derive(Default)]
pub(crate) struct Books {
    /// Submitted, without a result yet: sent again if their worker dies.
    inflight: HashMap<ObjectId, Submitted>,
    /// Finished, their result kept in another process: run again if it is lost.
    lineage: HashMap<ObjectId, Submitted>,
    /// The actor calls, counts and creations in flight: what they keep alive until
    /// answered, and whether they went through the node (and are lost with it).
    calls: HashMap<ObjectId, InFlightCall>,
}

/// An actor call (or count, or creation) waiting for its answer.
struct InFlightCall {
    _keep: Vec<Pin>,
    through_node: bool,
}

/// A submitted task, the attempts made, and what its arguments keep alive (as long as
/// the task may run again): the objects they refer to, what their encoding pinned.
struct Submitted {
    spec: Arc<TaskSpec>,
    attempts: u32,
    _keep: Vec<Pin>,
}

impl Owner {
    /// Records a task sent to the cluster; `keep` is what its arguments keep alive.
    /// Returns whether it is the only task in flight.
    pub fn track(&self, spec: &Arc<TaskSpec>, keep: Vec<Pin>) -> bool {
        let mut books = self.books();
        books.inflight.insert(
            spec.task_id,
            Submitted {
                spec: spec.clone(),
                attempts: 0,
                _keep: keep,
            },
        );
        books.inflight.len() == 1
    }

    /// Records an actor call (or count, or creation) in flight until `answer` arrives,
    /// with what it keeps alive meanwhile and whether it goes through the node.
    pub fn track_call(&self, answer: ObjectId, keep: Vec<Pin>, through_node: bool) {
        // A direct call that keeps nothing needs no record: its connection fails it
        // if it drops.
        if keep.is_empty() && !through_node {
            return;
        }
        self.books().calls.insert(
            answer,
            InFlightCall {
                _keep: keep,
                through_node,
            },
        );
    }

    /// The call `answer` goes through the node after all (its direct connection is
    /// gone, or it never had one).
    pub fn through_link(&self, answer: ObjectId) {
        self.books()
            .calls
            .entry(answer)
            .or_insert_with(|| InFlightCall {
                _keep: Vec::new(),
                through_node: true,
            })
            .through_node = true;
    }

    /// Sends a task to the cluster, or fails it if the cluster is lost.
    pub fn send_task(&self, spec: Arc<TaskSpec>) {
        let id = spec.task_id;
        if let Err(e) = self.link.send(Msg::SubmitTask {
            job: self.job,
            spec,
        }) {
            let removed = self.books().inflight.remove(&id);
            drop(removed);
            self.store.fail(id, e);
        }
    }

    /// Sends a task through the node (or straight to a leased worker, for a lone task
    /// of a driver).
    pub fn submit(self: &Arc<Self>, spec: TaskSpec, keep: Vec<Pin>) {
        let spec = Arc::new(spec);
        let lone = self.track(&spec, keep);
        if lone && self.send_on_lease(&spec) {
            return;
        }
        if self.leases {
            self.through_node();
        }
        self.send_task(spec);
    }

    /// What was in flight when the link went down: the tasks, and the actor messages
    /// that went through the node.
    pub fn in_flight(&self) -> (Vec<ObjectId>, Vec<ObjectId>) {
        let books = self.books();
        let tasks = books.inflight.keys().copied().collect();
        let calls = books
            .calls
            .iter()
            .filter(|(_, c)| c.through_node)
            .map(|(id, _)| *id)
            .collect();
        (tasks, calls)
    }

    /// The node came back after the link was down: the tasks in flight then are sent
    /// again (a first attempt may be lost with the node), as a system failure would
    /// be, and the actor messages that went through it fail.
    pub fn resubmit_all(
        self: &Arc<Self>,
        tasks: Vec<ObjectId>,
        calls: Vec<ObjectId>,
        reason: &str,
    ) {
        *lock(&self.lease) = None;
        // Actor messages that went through the lost node will not be answered: their
        // actor may live on, but what they asked is unknown.
        for id in calls {
            self.done(
                id,
                Err(Error::ActorDied {
                    actor: String::new(),
                    reason: format!("{reason} with this call in flight"),
                }),
            );
        }
        for id in tasks {
            self.done(
                id,
                Err(Error::WorkerCrashed {
                    function: String::new(),
                    reason: reason.to_string(),
                }),
            );
        }
    }

    /// The cluster is lost: nothing in flight will be answered.
    pub fn lost(&self, err: &Error) {
        let books = std::mem::take(&mut *self.books());
        self.store.fail_pending(err.clone());
        drop(books);
    }

    /// The connection straight to the worker whose object server is at `address`,
    /// opened on first use; `then` receives it, or `None` if the worker cannot be
    /// reached. When it drops, the tasks in flight on it count as crashed (and are
    /// retried through the nodes) and the actor calls fail.
    pub fn direct(
        self: &Arc<Self>,
        address: String,
        then: impl FnOnce(Option<Arc<Direct>>) + Send + 'static,
    ) {
        let open = lock(&self.directs)
            .get(&address)
            .filter(|d| !d.is_closed())
            .cloned();
        if let Some(d) = open {
            return then(Some(d));
        }
        let me = self.clone();
        self.io.spawn(async move {
            let connect = wire::connect(&address, &me.token, Role::Caller);
            let stream = match tokio::time::timeout(wire::HANDSHAKE_TIMEOUT, connect)
                .await
                .unwrap_or_else(|_| Err(wire::WireError::Handshake("no answer in time".into())))
            {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::info!(%address, "cannot reach a worker directly: {e}");
                    return then(None);
                }
            };
            let (r, w) = stream.into_split();
            let mut r = tokio::io::BufReader::with_capacity(wire::READ_BUFFER, r);
            let direct = Arc::new(Direct::new(SocketWriter::new(w)));
            lock(&me.directs).insert(address.clone(), direct.clone());
            then(Some(direct.clone()));
            loop {
                match wire::read_msg::<_, Msg>(&mut r).await {
                    Ok(Msg::TaskDone { task_id, result }) => {
                        direct.answered(task_id);
                        me.done(task_id, result);
                    }
                    Ok(other) => tracing::warn!("unexpected {} from a worker", other.name()),
                    Err(e) => {
                        tracing::info!(%address, "direct connection closed: {e}");
                        break;
                    }
                }
            }
            for id in direct.close() {
                let task = me.books().inflight.contains_key(&id);
                let failure = if task {
                    Error::WorkerCrashed {
                        function: String::new(),
                        reason: format!("the worker at {address} went away"),
                    }
                } else {
                    Error::ActorDied {
                        // The call's books do not keep which actor it went to; where
                        // it lived is known.
                        actor: format!("at {address}"),
                        reason: "its worker process died".into(),
                    }
                };
                me.done(id, Err(failure));
            }
        });
    }

    fn books(&self) -> MutexGuard<'_, Books> {
        lock(&self.books)
    }

    /// Whether tasks other than `except` are in flight.
    pub(super) fn others_in_flight(&self, except: Option<ObjectId>) -> bool {
        self.books().inflight.keys().any(|k| Some(*k) != except)
    }

    /// A task's result arrived.
    pub fn done(self: &Arc<Self>, id: ObjectId, result: Result<Payload>) {
        if self.leases {
            self.lease_task_done(id);
        }
        // What an answered call kept alive goes; a task's record stays for the
        // decisions below.
        let (answered, task) = {
            let mut books = self.books();
            let answered = books.calls.remove(&id);
            (
                answered,
                books
                    .inflight
                    .get(&id)
                    .map(|s| s.spec.options.retry_on_panic),
            )
        };
        drop(answered);
        match &result {
            Err(Error::WorkerCrashed { .. }) => {
                if let Some((spec, attempt)) = self.retry(id) {
                    tracing::info!(task = %id, attempt, "retrying after a worker died");
                    return self.send_task(spec);
                }
            }
            Err(Error::TaskFailed { .. }) if task == Some(true) => {
                if let Some((spec, attempt)) = self.retry(id) {
                    tracing::debug!(task = %id, attempt, "retrying after a panic");
                    return self.send_task(spec);
                }
            }
            Err(Error::ObjectLost(dep)) if *dep != id && task.is_some() => {
                return self.rebuild_then_rerun(id, *dep);
            }
            _ => {}
        }
        let mut submitted = self.books().inflight.remove(&id);
        match result {
            Ok(Payload::Inline(bytes)) => {
                let size = bytes.len() as u64;
                self.store
                    .complete(id, Arc::new(Encoded(bytes)), size, Codec::encoded());
            }
            Ok(Payload::Held(loc)) => {
                // Its freeing is announced, so that the copy kept for it is dropped.
                self.store.mark_exported(id);
                if let Some(s) = submitted.take() {
                    self.books().lineage.insert(id, s);
                }
                if !self.store.place(id, loc) {
                    // Freed before its result arrived.
                    self.freed(id);
                }
            }
            Err(e) => {
                // The worker records its own failures; a dead worker cannot.
                if task.is_some() && matches!(e, Error::WorkerCrashed { .. }) {
                    let error = e.to_string();
                    crate::state::failed(id, self.job, error);
                }
                self.store.fail(id, e);
            }
        }
        if submitted.as_ref().is_some_and(|s| !s._keep.is_empty()) {
            self.let_go(submitted);
        }
    }

    /// Drops what a finished task or call kept alive (objects, whose values' drops are
    /// user code) off the I/O thread it may have been answered on.
    fn let_go<T: Send + 'static>(&self, kept: T) {
        super::off_io(&self.pool, move || drop(kept));
    }

    /// The task and its next attempt number, if its worker died and it has retries left.
    fn retry(&self, id: ObjectId) -> Option<(Arc<TaskSpec>, u32)> {
        let mut books = self.books();
        let s = books.inflight.get_mut(&id)?;
        if s.attempts >= s.spec.options.max_retries {
            return None;
        }
        s.attempts += 1;
        Some((s.spec.clone(), s.attempts))
    }

    /// Task `id` could not read its argument `dep`, which was lost: rebuild `dep`, then
    /// run the task again with the argument's new place.
    fn rebuild_then_rerun(self: &Arc<Self>, id: ObjectId, dep: ObjectId) {
        // Each rerun counts as an attempt of the task, so that an argument that can
        // never be read ends in an error, not in reruns forever.
        if self.retry(id).is_none() {
            let removed = self.books().inflight.remove(&id);
            drop(removed);
            self.store.fail(id, Error::ObjectLost(dep));
            return;
        }
        if let Err(e) = self.recover(dep) {
            let removed = self.books().inflight.remove(&id);
            drop(removed);
            self.store.fail(id, e);
            return;
        }
        let me = self.clone();
        let fired = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let rerun = move |failure: Option<&Error>| {
            if fired.swap(true, std::sync::atomic::Ordering::AcqRel) {
                return;
            }
            if let Some(e) = failure {
                let removed = me.books().inflight.remove(&id);
                drop(removed);
                me.store.fail(id, e.clone());
                return;
            }
            let spec = {
                let mut books = me.books();
                let Some(s) = books.inflight.get_mut(&id) else {
                    return;
                };
                s.spec = Arc::new(me.relocated(&s.spec));
                s.spec.clone()
            };
            me.send_task(spec);
        };
        let rerun = Arc::new(rerun);
        match self.store.poll(dep, Some(Waiter::Dependent(rerun.clone()))) {
            None => {}
            Some(Ok(_)) => rerun(None),
            Some(Err(e)) => rerun(Some(&e)),
        }
    }

    /// Starts rebuilding the lost object `id` by running the task that made it again.
    /// `Ok` if it is being rebuilt (or was never lost); [`Error::ObjectLost`] if it has
    /// no lineage here or its task has no retries left.
    fn recover(&self, id: ObjectId) -> Result<()> {
        match self.store.poll(id, None) {
            None => return Ok(()),
            Some(Err(e)) => return Err(e),
            Some(Ok(Held::Here(_))) => return Ok(()),
            Some(Ok(Held::Elsewhere(_))) => {}
        }
        let mut books = self.books();
        let Some(s) = books.lineage.get(&id) else {
            return Err(Error::ObjectLost(id));
        };
        if s.attempts >= s.spec.options.max_retries {
            return Err(Error::ObjectLost(id));
        }
        if !self.store.reset(id) {
            return Ok(());
        }
        let Some(mut s) = books.lineage.remove(&id) else {
            return Err(Error::ObjectLost(id));
        };
        s.attempts += 1;
        s.spec = Arc::new(self.relocated(&s.spec));
        let spec = s.spec.clone();
        tracing::info!(object = %id, attempt = s.attempts, "rebuilding a lost object from its lineage");
        books.inflight.insert(id, s);
        drop(books);
        self.send_task(spec);
        Ok(())
    }

    /// `spec` with each reference argument pointing where its object is now.
    fn relocated(&self, spec: &TaskSpec) -> TaskSpec {
        let mut spec = spec.clone();
        for arg in &mut spec.args {
            if let EncodedArg::Ref { id, at } = arg {
                *at = match self.store.poll(*id, None) {
                    Some(Ok(Held::Elsewhere(loc))) => loc.at,
                    Some(Ok(Held::Here(_))) => self.objects.address().to_string(),
                    _ => continue,
                };
            }
        }
        spec
    }

    /// The value of `id`, whose store entry is a placeholder for where it lives:
    /// pulled from there (and kept in the store in its place), or rebuilt from its
    /// lineage if it was lost.
    pub fn fetch(&self, id: ObjectId, mut at: Location) -> Result<AnyValue> {
        loop {
            match self.objects.pull(id, &at.at) {
                Ok(bytes) => {
                    let size = bytes.len() as u64;
                    let value: AnyValue = Arc::new(Encoded(bytes));
                    self.store.fill(id, value.clone(), size);
                    return Ok(value);
                }
                Err(Error::ObjectLost(_)) => self.recover(id)?,
                Err(e) => return Err(e),
            }
            loop {
                match self.store.poll(id, None) {
                    Some(Ok(Held::Here(v))) => return Ok(v),
                    Some(Ok(Held::Elsewhere(loc))) => {
                        at = loc;
                        break;
                    }
                    Some(Err(e)) => return Err(e),
                    None => {
                        crate::runtime::deps::wait_settled(&self.store, &[id], None);
                    }
                }
            }
        }
    }

    /// An object whose copies live elsewhere was freed here: forget how to rebuild it and
    /// tell the nodes to drop the copies.
    pub fn freed(&self, id: ObjectId) {
        let lineage = self.books().lineage.remove(&id);
        drop(lineage);
        let _ = self.link.send(Msg::FreeObjects {
            job: self.job,
            ids: vec![id],
        });
    }
}
