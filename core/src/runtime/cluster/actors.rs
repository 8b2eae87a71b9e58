//! The caller's side of an actor that lives in a worker process of the cluster.
//!
//! A process queues what it sends an actor (its creation, calls, the counting of its
//! handles) in one FIFO per handle and sends it in that order once the reference
//! arguments are ready, so calls keep their order even when an earlier one waits for
//! an argument. Messages go straight to the worker hosting the actor once it is known
//! (from the answer to the creation, or to a handle's first count), through the nodes
//! otherwise: the node that placed the actor (its *home*, carried by serialized
//! handles) knows where it lives, also after a restart.
//!
//! Each process holding handles to an unnamed actor counts once at the worker hosting
//! it (the creating process from the start, others when they first attach a
//! deserialized handle) and tells it when its last handle goes; with no count left, the
//! actor ends after its queued calls. A handle serialized into a task's arguments pins
//! the sender's count until the task is done, and a process attaching a handle waits
//! for its count to be taken, so no actor ends while a handle to it travels.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use super::args;
use super::direct::Direct;
use super::link::Link;
use super::Cluster;
use crate::actor::ActorOptions;
use crate::error::{Error, Result};
use crate::id::{ActorId, ObjectId};
use crate::object::pin::Pin;
use crate::object::{ObjectRef, RefCount, Waiter};
use crate::sync::lock;
use crate::task::{refs_of, Arg};
use crate::wire::{ActorOp, Msg, NamedActor};

use super::super::{deps, Runtime};

/// How long a process attaching a handle waits for the hosting worker to count it.
const RETAIN_WAIT: Duration = Duration::from_secs(30);

enum Outgoing {
    Create {
        options: ActorOptions,
        args: Vec<Arg>,
    },
    Call {
        call: ObjectId,
        method: String,
        args: Vec<Arg>,
    },
    Retain {
        call: ObjectId,
    },
    Release,
}

impl Outgoing {
    fn args(&self) -> &[Arg] {
        match self {
            Outgoing::Create { args, .. } | Outgoing::Call { args, .. } => args,
            Outgoing::Retain { .. } | Outgoing::Release => &[],
        }
    }
}

/// How messages reach the actor.
enum CallPath {
    /// Through the nodes: the node that placed it knows where it lives (and where it
    /// lives after a restart).
    Nodes,
    /// Held until the actor's worker is known (its creation or this process's count is
    /// answered: those two go through the nodes), then sent straight there.
    Creating,
    /// Straight to the worker hosting it.
    Direct(Arc<Direct>),
}

struct Outbound {
    items: VecDeque<Outgoing>,
    /// A wait for the head's arguments is registered.
    waiting: bool,
    dead: Option<Error>,
    path: CallPath,
}

/// An actor living in a worker process, as a process holding handles to it sees it.
pub(crate) struct RemoteActor {
    pub id: ActorId,
    pub class: String,
    pub name: Option<String>,
    /// The node that placed it.
    pub home: String,
    cluster: Arc<Cluster>,
    rt: Weak<Runtime>,
    out: Mutex<Outbound>,
    /// The answer to the creation or to this process's count (the worker's address).
    _answer: RefCount,
    /// What the constructor's arguments keep alive: for as long as this process holds
    /// the actor, as its node may start it again from them.
    creation_keep: Mutex<Vec<Pin>>,
}

impl RemoteActor {
    fn new(
        rt: &Arc<Runtime>,
        cluster: &Arc<Cluster>,
        id: ActorId,
        class: String,
        name: Option<String>,
        home: String,
        answer: RefCount,
    ) -> Arc<RemoteActor> {
        Arc::new(RemoteActor {
            id,
            class,
            name,
            home,
            cluster: cluster.clone(),
            rt: Arc::downgrade(rt),
            out: Mutex::new(Outbound {
                items: VecDeque::new(),
                waiting: false,
                dead: None,
                path: CallPath::Creating,
            }),
            _answer: answer,
            creation_keep: Mutex::new(Vec::new()),
        })
    }

    fn out(&self) -> MutexGuard<'_, Outbound> {
        lock(&self.out)
    }

    fn describe(&self) -> String {
        match &self.name {
            Some(n) => format!("{} {} ({n:?})", self.class, self.id),
            None => format!("{} {}", self.class, self.id),
        }
    }

    /// Starts an actor on the cluster.
    pub fn create(
        rt: &Arc<Runtime>,
        cluster: &Arc<Cluster>,
        class: &str,
        options: ActorOptions,
        args: Vec<Arg>,
    ) -> Arc<RemoteActor> {
        let id = rt.next_id();
        let answer = rt.store.create(id);
        let home = cluster.link.node().unwrap_or_default();
        let actor = RemoteActor::new(
            rt,
            cluster,
            ActorId::from(id),
            class.to_string(),
            options.name.clone(),
            home,
            answer,
        );
        if let Some(name) = &options.name {
            let entry = NamedActor {
                actor: id,
                class: class.to_string(),
                home: actor.home.clone(),
            };
            let registered = cluster.ask_head(Msg::RegisterActor {
                name: name.clone(),
                entry,
            });
            let refusal = match registered {
                Ok(Msg::ActorFound { .. }) => None,
                Ok(Msg::Failed { reason }) => Some(Error::Config(format!(
                    "{reason}: use prism::get_actor to reach it"
                ))),
                Ok(other) => Some(Error::Cluster(format!(
                    "the head answered {} to a name's registration",
                    other.name()
                ))),
                Err(e) => Some(e),
            };
            if let Some(e) = refusal {
                actor.out().dead = Some(e);
                return actor;
            }
        }
        actor
            .out()
            .items
            .push_back(Outgoing::Create { options, args });
        actor.pump();
        actor.watch_answer(id);
        actor
    }

    /// A handle on an actor another process started (a deserialized handle, or a named
    /// actor found): counted at the worker hosting it before this returns (unless it is
    /// named), so that it cannot end while this process holds it.
    pub fn attach(
        rt: &Arc<Runtime>,
        cluster: &Arc<Cluster>,
        id: ActorId,
        class: String,
        name: Option<String>,
        home: String,
    ) -> Arc<RemoteActor> {
        let call = rt.next_id();
        let answer = rt.store.create(call);
        let named = name.is_some();
        let actor = RemoteActor::new(rt, cluster, id, class, name, home, answer);
        actor.out().items.push_back(Outgoing::Retain { call });
        actor.pump();
        actor.watch_answer(call);
        // On an I/O thread the answer cannot be waited for (it arrives there); a named
        // actor does not end by itself, so its count needs no wait.
        if !named && tokio::runtime::Handle::try_current().is_err() {
            let deadline = Instant::now() + RETAIN_WAIT;
            if !deps::wait_settled(&rt.store, &[call], Some(deadline)) {
                tracing::warn!(actor = %id, "the actor's worker did not count this handle in time");
            }
        }
        actor
    }

    /// A named actor, from the head.
    pub fn find(
        rt: &Arc<Runtime>,
        cluster: &Arc<Cluster>,
        name: &str,
        class: &str,
    ) -> Result<Arc<RemoteActor>> {
        match cluster.ask_head(Msg::LookupActor {
            name: name.to_string(),
        })? {
            Msg::ActorFound { entry: Some(e) } if e.class == class => Ok(RemoteActor::attach(
                rt,
                cluster,
                ActorId::from(e.actor),
                e.class,
                Some(name.to_string()),
                e.home,
            )),
            Msg::ActorFound { entry: Some(e) } => Err(Error::ActorNotFound(format!(
                "{name} (it is a {}, not a {class})",
                e.class
            ))),
            _ => Err(Error::ActorNotFound(name.to_string())),
        }
    }

    /// Watches for the answer `id` (to the creation or to this process's count).
    fn watch_answer(self: &Arc<Self>, id: ObjectId) {
        // Held strongly until the answer comes (or fails: the link lost, a shutdown),
        // so that what waits for it is sent even if every handle went meanwhile.
        let me = self.clone();
        let answered = Waiter::Dependent(Arc::new(move |failure: Option<&Error>| {
            me.answered(id, failure.cloned());
        }));
        let Some(rt) = self.rt.upgrade() else { return };
        if let Some(outcome) = rt.store.poll(id, Some(answered)) {
            self.answered(id, outcome.err());
        }
    }

    /// The worker hosting the actor answered: messages go straight to it from now on,
    /// or fail with why the actor is gone.
    fn answered(self: &Arc<Self>, id: ObjectId, failure: Option<Error>) {
        let Some(rt) = self.rt.upgrade() else { return };
        if let Some(e) = failure {
            let err = match e {
                e @ (Error::ActorDied { .. } | Error::Config(_)) => e,
                e => Error::ActorDied {
                    actor: self.describe(),
                    reason: e.to_string(),
                },
            };
            let dropped: Vec<Outgoing> = {
                let mut out = self.out();
                out.dead = Some(err.clone());
                out.items.drain(..).collect()
            };
            for item in dropped {
                if let Outgoing::Call { call, .. } = item {
                    rt.store.fail(call, err.clone());
                }
            }
            return;
        }
        let address = rt
            .store
            .encoded(id)
            .ok()
            .and_then(|b| crate::object::decode::<Option<String>>(&b).ok())
            .flatten();
        let Some(address) = address else {
            self.out().path = CallPath::Nodes;
            return self.pump_off_io();
        };
        let me = self.clone();
        self.cluster.owner.direct(address, move |direct| {
            me.out().path = match direct {
                Some(d) => CallPath::Direct(d),
                None => CallPath::Nodes,
            };
            me.pump_off_io();
        });
    }

    /// Queues a call; its result arrives as the returned object.
    pub fn call<R>(self: &Arc<Self>, method: &str, args: Vec<Arg>) -> ObjectRef<R> {
        let Some(rt) = self.rt.upgrade() else {
            return ObjectRef::failed(self.id.object(), Error::Shutdown);
        };
        let (call, r) = rt.new_object::<R>();
        let mut out = self.out();
        if let Some(e) = &out.dead {
            let e = e.clone();
            drop(out);
            rt.store.fail(call, e);
            return r;
        }
        out.items.push_back(Outgoing::Call {
            call,
            method: format!("{}::{method}", self.class),
            args,
        });
        drop(out);
        self.pump();
        r
    }

    /// This process's last handle went: the worker hosting the actor stops counting it.
    pub fn release(self: &Arc<Self>) {
        if self.name.is_some() {
            return;
        }
        let mut out = self.out();
        if out.dead.is_some() {
            return;
        }
        out.items.push_back(Outgoing::Release);
        drop(out);
        self.pump_off_io();
    }

    /// Ends the actor: calls not yet sent fail here, the rest where it lives.
    pub fn kill(&self) {
        let err = Error::ActorDied {
            actor: self.describe(),
            reason: "killed with prism::kill".into(),
        };
        let dropped: Vec<Outgoing> = {
            let mut out = self.out();
            out.dead = Some(err.clone());
            out.items.drain(..).collect()
        };
        if let Some(rt) = self.rt.upgrade() {
            for item in dropped {
                if let Outgoing::Call { call, .. } = item {
                    rt.store.fail(call, err.clone());
                }
            }
        }
        let _ = self.cluster.link.send(Msg::ToActor {
            actor: self.id.object(),
            home: self.home.clone(),
            op: ActorOp::Kill,
        });
        if self.name.is_some() {
            // Its name is free again.
            let _ = self.cluster.ask_head(Msg::UnregisterActor {
                actor: self.id.object(),
            });
        }
    }

    /// Pumps on a pool thread if this is an I/O thread (where encoding must not run:
    /// the results that make arguments ready arrive there).
    fn pump_off_io(self: &Arc<Self>) {
        let me = self.clone();
        self.cluster.off_io(move || me.pump());
    }

    /// Sends queued messages in order while their arguments are ready.
    fn pump(self: &Arc<Self>) {
        let Some(rt) = self.rt.upgrade() else { return };
        // Failures are reported once the queue is let go: reporting one wakes whoever
        // waits for it, which may be this very actor's queue.
        let mut failed: Vec<(ObjectId, Error)> = Vec::new();
        let mut out = self.out();
        while let Some(head) = out.items.front() {
            let asks = matches!(head, Outgoing::Create { .. } | Outgoing::Retain { .. });
            if matches!(out.path, CallPath::Creating) && !asks {
                // Sent once the actor's worker is known.
                break;
            }
            if matches!(head, Outgoing::Create { .. }) && self.cluster.link.node().is_none() {
                // The link is down: the creation goes to whichever node the driver
                // rejoins (its handles name that node), so it waits for it.
                let me = self.clone();
                self.cluster
                    .later(Link::retry_every(), move || me.pump_off_io());
                break;
            }
            let pending: Vec<Arc<RefCount>> = refs_of(head.args())
                .into_iter()
                .filter(|c| c.store().is_ok_and(|s| s.is_pending(c.id)))
                .collect();
            if !pending.is_empty() {
                if !out.waiting {
                    out.waiting = true;
                    let me = self.clone();
                    drop(out);
                    deps::when_ready(pending, move |_| {
                        me.out().waiting = false;
                        me.pump_off_io();
                    });
                    return self.report(failed);
                }
                break;
            }
            let Some(item) = out.items.pop_front() else {
                break;
            };
            // Sent under the lock: the order of the queue is the order on the wire.
            self.send(&rt, &mut out, item, &mut failed);
        }
        drop(out);
        self.report(failed);
    }

    /// Fails the calls (or the creation) that could not be sent.
    fn report(&self, failed: Vec<(ObjectId, Error)>) {
        for (id, e) in failed {
            self.cluster.owner.done(id, Err(e));
        }
    }

    fn send(
        &self,
        rt: &Arc<Runtime>,
        out: &mut Outbound,
        item: Outgoing,
        failed: &mut Vec<(ObjectId, Error)>,
    ) {
        let cluster = &self.cluster;
        let encode =
            |args: &[Arg]| args::encode(&rt.store, &cluster.objects, args, || rt.next_id());
        let (answer, op) = match item {
            Outgoing::Create { options, args } => {
                let sent = match encode(&args) {
                    Err(e) => Err(Error::ActorDied {
                        actor: self.describe(),
                        reason: format!("a constructor argument failed: {e}"),
                    }),
                    Ok(encoded) => {
                        *lock(&self.creation_keep) = encoded.keep;
                        cluster.owner.track_call(self.id.object(), Vec::new(), true);
                        cluster.link.send(Msg::CreateActor {
                            job: cluster.link.job,
                            actor: self.id.object(),
                            class: self.class.clone(),
                            args: encoded.args,
                            named: options.name.is_some(),
                            max_concurrency: options.max_concurrency as u32,
                            max_restarts: options.max_restarts,
                            options: options.task,
                            gpu_ids: Vec::new(),
                        })
                    }
                };
                if let Err(err) = sent {
                    out.dead = Some(err.clone());
                    for item in out.items.drain(..) {
                        if let Outgoing::Call { call, .. } = item {
                            failed.push((call, err.clone()));
                        }
                    }
                    failed.push((self.id.object(), err));
                }
                return;
            }
            Outgoing::Call { call, method, args } => match encode(&args) {
                Ok(encoded) => {
                    cluster.owner.track_call(call, encoded.keep, false);
                    let op = ActorOp::Call {
                        call,
                        method,
                        args: encoded.args,
                    };
                    (Some(call), op)
                }
                Err(e) => {
                    failed.push((call, e));
                    return;
                }
            },
            Outgoing::Retain { call } => {
                cluster.owner.track_call(call, Vec::new(), false);
                (Some(call), ActorOp::Retain { call })
            }
            Outgoing::Release => (None, ActorOp::Release),
        };
        let mut msg = Msg::ToActor {
            actor: self.id.object(),
            home: self.home.clone(),
            op,
        };
        if let CallPath::Direct(d) = &out.path {
            let back = match answer {
                Some(call) => d.send(call, msg),
                None => d.post(msg),
            };
            match back {
                None => return,
                // Its worker died: the nodes know where it lives now.
                Some(back) => msg = back,
            }
            out.path = CallPath::Nodes;
        }
        if let Some(call) = answer {
            // Through the node: answered there, or failed if the driver loses it.
            cluster.owner.through_link(call);
        }
        if let Err(e) = cluster.link.send(msg) {
            if let Some(call) = answer {
                failed.push((call, e));
            }
        }
    }
}
