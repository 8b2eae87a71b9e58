//! The actors a worker process hosts: each in a mailbox, the same as the embedded
//! runtime's, whose calls run on encoded arguments (fetched first when they are
//! references) and answer the caller on the path the call came: through the node, or
//! straight back on the caller's connection.
//!
//! The worker counts, per actor, the processes holding handles to it (see
//! `actors`): an unnamed actor whose count reaches zero ends after its queued calls,
//! and its node is told, so that its resources are free again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::direct::Reply;
use super::link::Link;
use super::objects::Objects;
use crate::actor::{lookup_class, lookup_method, ActorMethod, Method};
use crate::error::{Error, Result};
use crate::id::{ActorId, ObjectId};
use crate::sched::{Demand, Grant, Pool, Work};
use crate::sync::lock;
use crate::task::{EncodedArg, LocalArgs, Param};
use crate::wire::{ActorOp, Msg, Payload};

use super::super::mailbox::{Call, Mailbox, Receiver};

/// One hosted actor and the count of processes holding handles to it.
struct Hosted {
    mailbox: Arc<Mailbox<HostedCall>>,
    handles: AtomicU64,
    /// A named actor lives until killed, however its handles come and go.
    named: bool,
}

/// What a hosted actor is started with besides its class and arguments.
struct Shape {
    max_concurrency: u32,
    named: bool,
    /// What its node holds for it, which it sees as its own.
    grant: Grant,
}

/// The actors this worker process hosts.
pub(crate) struct Host {
    pool: Arc<Pool>,
    objects: Arc<Objects>,
    link: Arc<Link>,
    actors: Arc<Mutex<HashMap<ObjectId, Arc<Hosted>>>>,
}

impl Host {
    pub fn new(pool: Arc<Pool>, objects: Arc<Objects>, link: Arc<Link>) -> Arc<Host> {
        Arc::new(Host {
            pool,
            objects,
            link,
            actors: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// Runs `f` on the pool, holding nothing of it.
    fn on_pool(&self, f: impl FnOnce() + Send + 'static) {
        self.pool.submit(Work {
            demand: Demand::default(),
            keep: false,
            run: Box::new(move |_| f()),
            abandon: None,
        });
    }

    fn find(&self, actor: ObjectId) -> Option<Arc<Hosted>> {
        lock(&self.actors).get(&actor).cloned()
    }

    /// Handles an actor message, answering on `reply`.
    pub fn deliver(self: &Arc<Self>, msg: Msg, reply: Reply) {
        match msg {
            Msg::CreateActor {
                actor,
                class,
                args,
                options,
                max_concurrency,
                named,
                gpu_ids,
                ..
            } => {
                // What the node holds for the actor, as the actor sees it.
                let grant = Grant {
                    demand: Demand::of(&options).unwrap_or_default(),
                    gpu_ids,
                };
                let shape = Shape {
                    max_concurrency,
                    named,
                    grant,
                };
                self.create(actor, class, args, shape, reply)
            }
            Msg::ToActor { actor, op, .. } => self.to_actor(actor, op, reply),
            _ => {}
        }
    }

    fn create(
        self: &Arc<Self>,
        actor: ObjectId,
        class: String,
        args: Vec<EncodedArg>,
        shape: Shape,
        reply: Reply,
    ) {
        let Shape {
            max_concurrency,
            named,
            grant,
        } = shape;
        let id = ActorId::from(actor);
        let (link, actors) = (self.link.clone(), Arc::downgrade(&self.actors));
        let job = link.job;
        // The creation is answered once: by the constructor, or by the end of an actor
        // killed before its constructor ran.
        let answer = Arc::new(Mutex::new(Some(reply)));
        let unanswered = answer.clone();
        let mailbox = Mailbox::new(
            id,
            format!("{class} {id}"),
            max_concurrency as usize,
            self.pool.clone(),
            self.objects.clone(),
            Box::new(move |why: &Error| {
                if let Some(actors) = actors.upgrade() {
                    lock(&actors).remove(&actor);
                }
                if let Some(reply) = lock(&unanswered).take() {
                    reply.send(Msg::TaskDone {
                        task_id: actor,
                        result: Err(why.clone()),
                    });
                }
                // The node frees what it holds for the actor (a killed actor's, it
                // freed already).
                let _ = link.send(Msg::ActorEnded {
                    actor,
                    reason: match why {
                        Error::ActorDied { reason, .. } => reason.clone(),
                        other => other.to_string(),
                    },
                });
            }),
        );
        let hosted = Arc::new(Hosted {
            mailbox: mailbox.clone(),
            // The process that created it holds handles from the start.
            handles: AtomicU64::new(1),
            named,
        });
        lock(&self.actors).insert(actor, hosted);
        let objects = self.objects.clone();
        let describe = mailbox.describe().to_string();
        // The node holds the actor's resources: its constructor and calls run here
        // without taking any from this process's pool.
        mailbox.construct_with(Demand::default(), false, Some(grant), move |_grant| {
            let built = lookup_class(&class)
                .ok_or_else(|| Error::FunctionNotFound(class.clone()))
                .and_then(|c| {
                    let args = resolve(&objects, &args, c.params, c.name)?;
                    crate::task::panic::catch(|| (c.construct)(args)).map_err(|message| {
                        crate::task::panic::failure(format!("{class}::new"), message)
                    })
                });
            let outcome = match &built {
                // Where its callers can send the messages straight to.
                Ok(_) => crate::object::encode(&Some(objects.address().to_string())),
                Err(e) => Err(Error::ActorDied {
                    actor: describe.clone(),
                    reason: format!("its constructor failed: {e}"),
                }),
            };
            if outcome.is_ok() {
                let alive = crate::state::ActorEventKind::Alive {
                    pid: std::process::id(),
                };
                crate::state::record_actor(actor, job, alive);
            }
            if let Some(reply) = lock(&answer).take() {
                reply.send(Msg::TaskDone {
                    task_id: actor,
                    result: outcome.clone().map(Payload::Inline),
                });
            }
            match outcome {
                Ok(_) => built,
                Err(e) => Err(e),
            }
        });
    }

    fn to_actor(self: &Arc<Self>, actor: ObjectId, op: ActorOp, reply: Reply) {
        let hosted = self.find(actor);
        let gone = || Error::ActorDied {
            actor: ActorId::from(actor).to_string(),
            reason: "no such actor in this worker".into(),
        };
        match op {
            ActorOp::Call { call, method, args } => match hosted {
                Some(h) => h.mailbox.enqueue(HostedCall {
                    call,
                    entry: lookup_method(&method),
                    method,
                    args,
                    resolved: None,
                    reply,
                }),
                None => reply.send(Msg::TaskDone {
                    task_id: call,
                    result: Err(gone()),
                }),
            },
            ActorOp::Retain { call } => {
                let result = match hosted {
                    Some(h) if !h.named && h.handles.load(Ordering::Acquire) == 0 => {
                        Err(Error::ActorDied {
                            actor: h.mailbox.describe().to_string(),
                            reason: "its last handle was dropped".into(),
                        })
                    }
                    Some(h) => match h.mailbox.dead() {
                        Some(e) => Err(e),
                        None => {
                            h.handles.fetch_add(1, Ordering::AcqRel);
                            crate::object::encode(&Some(self.objects.address().to_string()))
                                .map(Payload::Inline)
                        }
                    },
                    None => Err(gone()),
                };
                reply.send(Msg::TaskDone {
                    task_id: call,
                    result,
                });
            }
            ActorOp::Release => {
                if let Some(h) = hosted {
                    let before = h.handles.fetch_sub(1, Ordering::AcqRel);
                    if before == 1 && !h.named {
                        // Ending drops the state, whose own drop is user code: not on
                        // the I/O thread this arrives on.
                        self.on_pool(move || h.mailbox.retire());
                    }
                }
            }
            ActorOp::Kill => {
                let removed = lock(&self.actors).remove(&actor);
                if let Some(h) = removed {
                    self.on_pool(move || {
                        h.mailbox.die(Error::ActorDied {
                            actor: h.mailbox.describe().to_string(),
                            reason: "killed with prism::kill".into(),
                        })
                    });
                }
            }
        }
    }
}

/// The values of a call's arguments as they travelled, for its parameters: referenced
/// objects pulled and decoded once per process.
fn resolve(
    objects: &Objects,
    args: &[EncodedArg],
    params: &[Param],
    what: &str,
) -> Result<LocalArgs> {
    LocalArgs::build(params, args, what, |a, p| objects.arg(a, p))
}

/// A call of a hosted actor: arguments as they travelled, the result to the caller.
pub(crate) struct HostedCall {
    call: ObjectId,
    method: String,
    entry: Option<&'static ActorMethod>,
    args: Vec<EncodedArg>,
    resolved: Option<LocalArgs>,
    reply: Reply,
}

impl Call for HostedCall {
    /// Where the arguments are fetched from and the results kept.
    type Context = Arc<Objects>;

    fn function(&self) -> &'static str {
        self.entry.map_or("?", |m| m.name)
    }

    fn exclusive(&self) -> bool {
        self.entry
            .is_some_and(|m| matches!(m.body, Method::Exclusive(_)))
    }

    fn prepare(&mut self, objects: &Arc<Objects>) -> Result<()> {
        let entry = self
            .entry
            .ok_or_else(|| Error::FunctionNotFound(self.method.clone()))?;
        self.resolved = Some(resolve(objects, &self.args, entry.params, entry.name)?);
        Ok(())
    }

    fn run(self, state: Receiver<'_>, objects: &Arc<Objects>) {
        let (Some(entry), Some(args)) = (self.entry, self.resolved) else {
            let missing = Error::FunctionNotFound(self.method.clone());
            self.reply.send(Msg::TaskDone {
                task_id: self.call,
                result: Err(missing),
            });
            return;
        };
        let outcome = crate::task::panic::catch(|| match (entry.body, state) {
            (Method::Shared(f), Receiver::Shared(s)) => Ok(f(s, args)),
            (Method::Shared(f), Receiver::Exclusive(s)) => Ok(f(&*s, args)),
            (Method::Exclusive(f), Receiver::Exclusive(s)) => Ok(f(s, args)),
            (Method::Exclusive(_), Receiver::Shared(_)) => Err(Error::ActorDied {
                actor: ActorId::from(self.call).to_string(),
                reason: "a `&mut self` method was given shared state".into(),
            }),
        });
        let result = outcome
            .unwrap_or_else(|message| Err(crate::task::panic::failure(entry.name, message)))
            .and_then(|out| objects.keep(self.call, out));
        self.reply.send(Msg::TaskDone {
            task_id: self.call,
            result,
        });
    }

    fn fail(self, err: Error, _objects: &Arc<Objects>) {
        self.reply.send(Msg::TaskDone {
            task_id: self.call,
            result: Err(err),
        });
    }
}
