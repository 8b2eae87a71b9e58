//! Actors on a cluster: the caller's side of an actor that lives in a worker process
//! ([`RemoteActor`]), and the hosting side inside that worker ([`Host`]).
//!
//! A caller queues its actor's creation and calls in one FIFO per handle target and
//! sends them in that order once their reference arguments are ready, so calls keep
//! their order even when an earlier one waits for an argument. The nodes route each
//! message to the node that placed the actor (its *home*, carried by serialized handles)
//! and on to the worker hosting it, which runs the calls one at a time, in order.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use crate::actor::registry::{self, ActorState};
use crate::actor::ActorId;
use crate::cluster::client::Client;
use crate::cluster::direct::{Direct, Reply};
use crate::cluster::objects::Payload;
use crate::cluster::wire::{Msg, NamedActor};
use crate::error::{Error, Result};
use crate::object::{Home, ObjectId, ObjectRef, RefCount, Waiter};
use crate::runtime::{self, refs_of, Runtime};
use crate::task::{Arg, ArgKind, TaskOptions};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

enum Outgoing {
    Create {
        options: TaskOptions,
        max_restarts: u32,
        args: Vec<Arg>,
    },
    Call {
        call: ObjectId,
        method: String,
        args: Vec<Arg>,
    },
}

impl Outgoing {
    fn args(&self) -> &[Arg] {
        match self {
            Outgoing::Create { args, .. } | Outgoing::Call { args, .. } => args,
        }
    }
}

#[derive(Default)]
struct Outbound {
    items: VecDeque<Outgoing>,
    /// A wait for the head's arguments is registered.
    waiting: bool,
    dead: Option<Error>,
    route: Route,
}

/// How calls reach the actor.
#[derive(Default)]
enum Route {
    /// Through the nodes: the node that placed it knows where it lives (and where it
    /// lives after a restart).
    #[default]
    Nodes,
    /// Held until the actor is created, then sent straight to its worker.
    Creating,
    /// Straight to the worker hosting it.
    Direct(Arc<Direct>),
}

/// An actor living in a worker process, as its callers see it.
pub(crate) struct RemoteActor {
    pub id: ActorId,
    pub class: String,
    /// The node that placed it.
    pub home: String,
    client: Arc<Client>,
    rt: Weak<Runtime>,
    out: Mutex<Outbound>,
    /// The creation's outcome (the worker's address), for the actor this process made.
    _created: Option<RefCount>,
}

impl RemoteActor {
    /// Starts an actor on the cluster.
    pub fn create(
        rt: &Arc<Runtime>,
        client: Arc<Client>,
        class: &str,
        options: TaskOptions,
        max_restarts: u32,
        args: Vec<Arg>,
        name: Option<String>,
    ) -> Arc<RemoteActor> {
        let id = rt.next_id();
        let created = rt.store.create(id);
        let actor = Arc::new(RemoteActor {
            id: ActorId(id),
            class: class.to_string(),
            home: client.node.clone(),
            client,
            rt: Arc::downgrade(rt),
            out: Mutex::new(Outbound {
                route: Route::Creating,
                ..Outbound::default()
            }),
            _created: Some(created),
        });
        if let Some(name) = name {
            let entry = NamedActor {
                actor: actor.id.0,
                class: class.to_string(),
                home: actor.home.clone(),
            };
            let registered = actor.client.ask_head(Msg::RegisterActor {
                name: name.clone(),
                entry,
            });
            let refusal = match registered {
                Ok(Msg::ActorFound { .. }) => None,
                Ok(Msg::Failed { reason }) => Some(Error::Config(format!(
                    "{reason}: use prism::get_actor to reach it"
                ))),
                Ok(_) => Some(Error::Cluster("the head answered out of turn".into())),
                Err(e) => Some(e),
            };
            if let Some(e) = refusal {
                lock(&actor.out).dead = Some(e);
                return actor;
            }
        }
        lock(&actor.out).items.push_back(Outgoing::Create {
            options,
            max_restarts,
            args,
        });
        actor.pump();
        let me = actor.clone();
        let created = Waiter::Dependent(Arc::new(move |failure: Option<&Error>| {
            me.created(failure.cloned())
        }));
        if let Some(outcome) = rt.store.poll_value(id, Some(created)) {
            actor.created(outcome.err());
        }
        actor
    }

    /// The actor's creation ended: calls go straight to its worker from now on, or fail
    /// with why it could not be created.
    fn created(self: &Arc<Self>, failure: Option<Error>) {
        let Some(rt) = self.rt.upgrade() else { return };
        if let Some(e) = failure {
            let err = match e {
                e @ Error::ActorDied { .. } => e,
                e => Error::ActorDied {
                    actor: format!("{} {}", self.class, self.id),
                    reason: e.to_string(),
                },
            };
            let mut out = lock(&self.out);
            out.dead = Some(err.clone());
            for item in out.items.drain(..) {
                if let Outgoing::Call { call, .. } = item {
                    rt.store.fail(call, err.clone());
                }
            }
            return;
        }
        let address = rt
            .store
            .encoded(self.id.0)
            .ok()
            .and_then(|b| crate::object::decode::<Option<String>>(&b).ok())
            .flatten();
        let Some(address) = address else {
            lock(&self.out).route = Route::Nodes;
            return self.pump();
        };
        let me = self.clone();
        self.client.direct(address, move |direct| {
            lock(&me.out).route = match direct {
                Some(d) => Route::Direct(d),
                None => Route::Nodes,
            };
            me.pump();
        });
    }

    /// A named actor, from the head.
    pub fn find(
        rt: &Arc<Runtime>,
        client: Arc<Client>,
        name: &str,
        class: &str,
    ) -> Result<Arc<RemoteActor>> {
        match client.ask_head(Msg::LookupActor {
            name: name.to_string(),
        })? {
            Msg::ActorFound { entry: Some(e) } if e.class == class => Ok(RemoteActor::attach(
                rt,
                client,
                ActorId(e.actor),
                e.class,
                e.home,
            )),
            Msg::ActorFound { entry: Some(e) } => Err(Error::ActorNotFound(format!(
                "{name} (it is a {}, not a {class})",
                e.class
            ))),
            _ => Err(Error::ActorNotFound(name.to_string())),
        }
    }

    /// A handle on an actor another process started (a deserialized handle).
    pub fn attach(
        rt: &Arc<Runtime>,
        client: Arc<Client>,
        id: ActorId,
        class: String,
        home: String,
    ) -> Arc<RemoteActor> {
        Arc::new(RemoteActor {
            id,
            class,
            home,
            client,
            rt: Arc::downgrade(rt),
            out: Mutex::new(Outbound::default()),
            _created: None,
        })
    }

    /// Queues a call; its result arrives as the returned object.
    pub fn call<R>(self: &Arc<Self>, method: &str, args: Vec<Arg>) -> ObjectRef<R> {
        let Some(rt) = self.rt.upgrade() else {
            return ObjectRef::failed(self.id.0, Error::Shutdown);
        };
        let (call, r) = rt.new_object::<R>();
        let mut out = lock(&self.out);
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

    /// Ends the actor: calls not yet sent fail here, the rest where it lives.
    pub fn kill(&self) {
        let err = Error::ActorDied {
            actor: format!("{} {}", self.class, self.id),
            reason: "killed with prism::kill".into(),
        };
        let dropped: Vec<Outgoing> = {
            let mut out = lock(&self.out);
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
        self.client.send(Msg::KillActor {
            actor: self.id.0,
            home: self.home.clone(),
        });
        // Its name, if it has one, is free again.
        let _ = self
            .client
            .ask_head(Msg::UnregisterActor { actor: self.id.0 });
    }

    /// Sends queued messages in order while their arguments are ready.
    fn pump(self: &Arc<Self>) {
        // Encoding an argument may pull a large object, which blocks: never on an I/O
        // thread (a result arriving there can make an argument ready).
        if tokio::runtime::Handle::try_current().is_ok() {
            let me = self.clone();
            std::thread::spawn(move || me.pump());
            return;
        }
        let Some(rt) = self.rt.upgrade() else { return };
        let mut out = lock(&self.out);
        while let Some(head) = out.items.front() {
            if matches!(out.route, Route::Creating) && matches!(head, Outgoing::Call { .. }) {
                // Sent once the actor exists and its worker is known.
                return;
            }
            let pending: Vec<Arc<RefCount>> = refs_of(head.args())
                .into_iter()
                .filter(|c| match &c.home {
                    Home::Store(s) => s.states(&[c.id])[0].is_none(),
                    Home::Nowhere(_) => false,
                })
                .collect();
            if !pending.is_empty() {
                if !out.waiting {
                    out.waiting = true;
                    let me = self.clone();
                    drop(out);
                    rt.when_ready(pending, move |_| {
                        lock(&me.out).waiting = false;
                        me.pump();
                    });
                }
                return;
            }
            let Some(item) = out.items.pop_front() else {
                break;
            };
            // Sent under the lock: the order of the queue is the order on the wire.
            match item {
                Outgoing::Create {
                    options,
                    max_restarts,
                    args,
                } => match encode_args(&rt, &args) {
                    Ok(args) => self.client.send(Msg::CreateActor {
                        job: self.client.job,
                        actor: self.id.0,
                        class: self.class.clone(),
                        args,
                        options,
                        max_restarts,
                    }),
                    Err(e) => {
                        let err = Error::ActorDied {
                            actor: format!("{} {}", self.class, self.id),
                            reason: format!("a constructor argument failed: {e}"),
                        };
                        out.dead = Some(err.clone());
                        for item in out.items.drain(..) {
                            if let Outgoing::Call { call, .. } = item {
                                rt.store.fail(call, err.clone());
                            }
                        }
                    }
                },
                Outgoing::Call { call, method, args } => match encode_args(&rt, &args) {
                    Ok(args) => {
                        let mut msg = Msg::ActorCall {
                            actor: self.id.0,
                            call,
                            method,
                            args,
                            home: self.home.clone(),
                        };
                        if let Route::Direct(d) = &out.route {
                            match d.send(call, msg) {
                                None => continue,
                                // Its worker died: the nodes know where it lives now.
                                Some(back) => msg = back,
                            }
                            out.route = Route::Nodes;
                        }
                        self.client.send(msg);
                    }
                    Err(e) => {
                        rt.store.fail(call, e);
                    }
                },
            }
        }
    }
}

fn encode_args(rt: &Runtime, args: &[Arg]) -> Result<Vec<Vec<u8>>> {
    args.iter()
        .map(|a| match &a.0 {
            ArgKind::Value(v, codec) => (codec.encode)(v),
            ArgKind::Ref(c) => rt.store.encoded(c.id),
        })
        .collect()
}

struct Call {
    call: ObjectId,
    method: String,
    args: Vec<Vec<u8>>,
    reply: Reply,
}

#[derive(Default)]
struct Hosted {
    state: Option<ActorState>,
    dead: Option<Error>,
    queue: VecDeque<Call>,
    /// A runner (or the constructor) is at work.
    busy: bool,
}

/// The actors a worker process hosts.
pub(crate) struct Host {
    pool: Arc<Runtime>,
    actors: Mutex<HashMap<ObjectId, Arc<Mutex<Hosted>>>>,
}

impl Host {
    pub fn new(pool: Arc<Runtime>) -> Arc<Host> {
        Arc::new(Host {
            pool,
            actors: Mutex::new(HashMap::new()),
        })
    }

    /// Handles an actor message from the node.
    pub fn deliver(self: &Arc<Self>, msg: Msg, reply: Reply) {
        match msg {
            Msg::CreateActor {
                actor, class, args, ..
            } => {
                let hosted = Arc::new(Mutex::new(Hosted {
                    busy: true,
                    ..Hosted::default()
                }));
                lock(&self.actors).insert(actor, hosted.clone());
                let me = self.clone();
                self.run_on_pool(move || {
                    let built = runtime::catch_task_panic(|| registry::construct(&class, &args))
                        .unwrap_or_else(|message| {
                            Err(Error::TaskFailed {
                                function: format!("{class}::new"),
                                message,
                                location: runtime::location(),
                            })
                        });
                    let outcome = match built {
                        Ok(state) => {
                            lock(&hosted).state = Some(state);
                            // Where its caller can send the calls straight to.
                            let here = me.pool.client().map(|c| c.address().to_string());
                            crate::object::encode(&here)
                        }
                        Err(e) => {
                            let err = Error::ActorDied {
                                actor: format!("{class} {}", ActorId(actor)),
                                reason: format!("its constructor failed: {e}"),
                            };
                            lock(&hosted).dead = Some(err.clone());
                            Err(err)
                        }
                    };
                    reply.send(Msg::TaskDone {
                        task_id: actor,
                        result: outcome.map(Payload::Inline),
                    });
                    me.drain(actor, &hosted);
                });
            }
            Msg::ActorCall {
                actor,
                call,
                method,
                args,
                ..
            } => {
                let Some(hosted) = lock(&self.actors).get(&actor).cloned() else {
                    reply.send(Msg::TaskDone {
                        task_id: call,
                        result: Err(Error::ActorDied {
                            actor: ActorId(actor).to_string(),
                            reason: "no such actor in this worker".into(),
                        }),
                    });
                    return;
                };
                let mut h = lock(&hosted);
                h.queue.push_back(Call {
                    call,
                    method,
                    args,
                    reply,
                });
                if !h.busy {
                    h.busy = true;
                    drop(h);
                    let me = self.clone();
                    self.run_on_pool(move || me.drain(actor, &hosted));
                }
            }
            Msg::KillActor { actor, .. } => {
                if let Some(hosted) = lock(&self.actors).remove(&actor) {
                    let mut h = lock(&hosted);
                    h.dead = Some(Error::ActorDied {
                        actor: ActorId(actor).to_string(),
                        reason: "killed with prism::kill".into(),
                    });
                    if !h.busy {
                        h.state = None;
                        let err = h.dead.clone();
                        for c in h.queue.drain(..) {
                            c.reply.send(Msg::TaskDone {
                                task_id: c.call,
                                result: Err(err.clone().unwrap_or(Error::Shutdown)),
                            });
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn run_on_pool(&self, f: impl FnOnce() + Send + 'static) {
        self.pool.sched.submit(crate::sched::Job {
            demand: crate::sched::Demand::default(),
            keep: false,
            run: Box::new(move |_| f()),
        });
    }

    /// Runs queued calls in order until the queue is empty.
    fn drain(&self, actor: ObjectId, hosted: &Arc<Mutex<Hosted>>) {
        loop {
            let mut h = lock(hosted);
            let Some(c) = h.queue.pop_front() else {
                h.busy = false;
                return;
            };
            if let Some(e) = h.dead.clone() {
                h.state = None;
                drop(h);
                c.reply.send(Msg::TaskDone {
                    task_id: c.call,
                    result: Err(e),
                });
                continue;
            }
            let Some(mut state) = h.state.take() else {
                h.queue.push_front(c);
                h.busy = false;
                return;
            };
            drop(h);
            let running = runtime::Running {
                task_id: None,
                actor_id: Some(ActorId(actor)),
                function: registry::lookup_method(&c.method).map_or("?", |m| m.name),
                grant: Default::default(),
            };
            let result =
                runtime::with_running(running, || registry::call(&mut state, &c.method, &c.args));
            let mut h = lock(hosted);
            if h.dead.is_none() {
                h.state = Some(state);
            }
            drop(h);
            let result = match self.pool.client() {
                Some(client) => client.payload(c.call, result),
                None => result.map(Payload::Inline),
            };
            c.reply.send(Msg::TaskDone {
                task_id: c.call,
                result,
            });
        }
    }
}
