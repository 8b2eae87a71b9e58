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
use crate::actor::{lookup_method, EncodedBody, EncodedMethod};
use crate::error::{Error, Result};
use crate::id::{ActorId, ObjectId};
use crate::object::pin;
use crate::object::SharedBytes;
use crate::sched::{Demand, Pool};
use crate::sync::lock;
use crate::task::{arg_slices, fetch_refs, EncodedArg};
use crate::wire::{ActorOp, Msg, Payload};

use super::super::mailbox::{Call, Mailbox, Receiver};

/// One hosted actor and the count of processes holding handles to it.
struct Hosted {
    mailbox: Arc<Mailbox<HostedCall>>,
    handles: AtomicU64,
    /// A named actor lives until killed, however its handles come and go.
    named: bool,
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
                max_concurrency,
                named,
                ..
            } => self.create(actor, class, args, max_concurrency, named, reply),
            Msg::ToActor { actor, op, .. } => self.to_actor(actor, op, reply),
            _ => {}
        }
    }

    fn create(
        self: &Arc<Self>,
        actor: ObjectId,
        class: String,
        args: Vec<EncodedArg>,
        max_concurrency: u32,
        named: bool,
        reply: Reply,
    ) {
        let id = ActorId::from(actor);
        let (link, actors) = (self.link.clone(), Arc::downgrade(&self.actors));
        let mailbox = Mailbox::new(
            id,
            format!("{class} {id}"),
            max_concurrency as usize,
            self.pool.clone(),
            Box::new(move |why: &Error| {
                if let Some(actors) = actors.upgrade() {
                    lock(&actors).remove(&actor);
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
        mailbox.construct(Demand::default(), false, move |_grant| {
            let built = fetch_refs(&args, |id, at| objects.fetch(id, at))
                .and_then(|fetched| crate::actor::construct(&class, &arg_slices(&args, &fetched)));
            let outcome = match &built {
                // Where its callers can send the messages straight to.
                Ok(_) => crate::object::encode(&Some(objects.address().to_string())),
                Err(e) => Err(Error::ActorDied {
                    actor: describe.clone(),
                    reason: format!("its constructor failed: {e}"),
                }),
            };
            reply.send(Msg::TaskDone {
                task_id: actor,
                result: outcome.clone().map(Payload::Inline),
            });
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
                    fetched: Vec::new(),
                    reply,
                    objects: self.objects.clone(),
                }),
                None => reply.send(Msg::TaskDone {
                    task_id: call,
                    result: Err(gone()),
                }),
            },
            ActorOp::Retain { call } => {
                let result = match hosted {
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
                        h.mailbox.retire();
                    }
                }
            }
            ActorOp::Kill => {
                let removed = lock(&self.actors).remove(&actor);
                if let Some(h) = removed {
                    h.mailbox.die(Error::ActorDied {
                        actor: h.mailbox.describe().to_string(),
                        reason: "killed with prism::kill".into(),
                    });
                }
            }
        }
    }
}

/// A call of a hosted actor: encoded arguments, the result to the caller.
pub(crate) struct HostedCall {
    call: ObjectId,
    method: String,
    entry: Option<&'static EncodedMethod>,
    args: Vec<EncodedArg>,
    fetched: Vec<Option<SharedBytes>>,
    reply: Reply,
    objects: Arc<Objects>,
}

impl Call for HostedCall {
    fn function(&self) -> &'static str {
        self.entry.map_or("?", |m| m.name)
    }

    fn exclusive(&self) -> bool {
        self.entry
            .is_some_and(|m| matches!(m.body, EncodedBody::Exclusive(_)))
    }

    fn prepare(&mut self) -> Result<()> {
        if self.entry.is_none() {
            return Err(Error::FunctionNotFound(self.method.clone()));
        }
        let objects = self.objects.clone();
        self.fetched = fetch_refs(&self.args, |id, at| objects.fetch(id, at))?;
        Ok(())
    }

    fn run(self, state: Receiver<'_>) {
        let Some(entry) = self.entry else {
            let missing = Error::FunctionNotFound(self.method.clone());
            return self.fail(missing);
        };
        let args = arg_slices(&self.args, &self.fetched);
        let (outcome, pins) = pin::collect(|| {
            crate::task::panic::catch(|| match (entry.body, state) {
                (EncodedBody::Shared(f), Receiver::Shared(s)) => f(s, &args),
                (EncodedBody::Shared(f), Receiver::Exclusive(s)) => f(&*s, &args),
                (EncodedBody::Exclusive(f), Receiver::Exclusive(s)) => f(s, &args),
                (EncodedBody::Exclusive(_), Receiver::Shared(_)) => Err(Error::Cluster(
                    "a `&mut self` method was given shared state".into(),
                )),
            })
        });
        let result = outcome
            .unwrap_or_else(|message| Err(crate::task::panic::failure(entry.name, message)))
            .map(|bytes| self.objects.keep(self.call, bytes, pins));
        self.reply.send(Msg::TaskDone {
            task_id: self.call,
            result,
        });
    }

    fn fail(self, err: Error) {
        self.reply.send(Msg::TaskDone {
            task_id: self.call,
            result: Err(err),
        });
    }
}
