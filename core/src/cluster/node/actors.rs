//! Actors on a node: placing them where their resources are free, and routing calls
//! and kills to the worker (or peer) that hosts them.

use std::sync::Arc;

use super::{ActorPlace, Node, Placement, Route, State};
use crate::cluster::wire::{Msg, Outbox};
use crate::error::Error;
use crate::object::ObjectId;
use crate::sched::{Capacity, Grant};

/// An actor's creation as a node receives it.
pub(crate) struct Creation {
    pub job: u32,
    pub actor: ObjectId,
    pub class: String,
    pub args: Vec<Vec<u8>>,
    pub options: crate::task::TaskOptions,
    pub max_restarts: u32,
}

impl Creation {
    fn into_msg(self) -> Msg {
        Msg::CreateActor {
            job: self.job,
            actor: self.actor,
            class: self.class,
            args: self.args,
            options: self.options,
            max_restarts: self.max_restarts,
        }
    }
}

impl Node {
    /// Places an actor: where its strategy says, else here if its resources are free,
    /// else on a peer with room (unless it came from a peer). Its creation's outcome
    /// returns to `reply` as a `TaskDone`.
    pub(super) fn create_actor(self: &Arc<Self>, create: Creation, reply: Outbox, pinned: bool) {
        let (job, actor, class) = (create.job, create.actor, create.class.clone());
        let max_restarts = create.max_restarts;
        let refuse = |e: Error| {
            let _ = reply.send(Msg::TaskDone {
                task_id: actor,
                result: Err(e),
            });
        };
        let demand = match create.options.demand() {
            Ok(d) => d,
            Err(e) => return refuse(e),
        };
        let mut st = self.lock();
        let (pinned, chosen) =
            match self.place(&mut st, &create.options.scheduling, &demand, pinned) {
                Placement::Default => (pinned, None),
                Placement::Here => (true, None),
                Placement::Peer(id) => (pinned, Some(id)),
                Placement::Fail(e) => {
                    drop(st);
                    return refuse(e);
                }
            };
        let msg = create.into_msg();
        if chosen.is_none() && st.available.fits(&demand) {
            let gpu_ids = st.available.take(&demand);
            st.actors.insert(
                actor,
                ActorPlace::Local {
                    job,
                    grant: Grant { demand, gpu_ids },
                    restarts_left: max_restarts,
                    create: Box::new(msg.clone()),
                },
            );
            st.routes
                .insert(actor, Route::new(reply, Some(job), None, class));
            self.send_to_worker(&mut st, job, msg);
            return;
        }
        let peer = (!pinned)
            .then(|| {
                st.peers
                    .iter()
                    .find(|(id, p)| match &chosen {
                        Some(c) => *id == c,
                        None => {
                            p.view.alive
                                && p.outbox.is_some()
                                && Capacity::from_amounts(&p.view.available).fits(&demand)
                        }
                    })
                    .map(|(id, p)| (id.clone(), p.outbox.clone()))
            })
            .flatten();
        if let Some((peer_id, Some(out))) = peer {
            st.actors.insert(actor, ActorPlace::Peer(peer_id.clone()));
            st.routes
                .insert(actor, Route::new(reply, None, Some(peer_id), class));
            let _ = out.send(msg);
            return;
        }
        let err = match self.total.check_feasible(&demand) {
            Err(e)
                if !st.peers.values().any(|p| {
                    Capacity::from_amounts(&p.view.total)
                        .check_feasible(&demand)
                        .is_ok()
                }) =>
            {
                e
            }
            _ => Error::Cluster(format!(
                "no node has the free resources for actor {class} now"
            )),
        };
        st.actors.insert(actor, ActorPlace::Failed(err.clone()));
        drop(st);
        refuse(err);
    }

    /// Sends an actor call (with `reply` for its result) or a kill on towards the actor:
    /// to this node's worker, to the peer that hosts it, or to the node that placed it.
    pub(super) fn route_actor(self: &Arc<Self>, msg: Msg, reply: Option<Outbox>) {
        let (actor, call, home, method) = match &msg {
            Msg::ActorCall {
                actor,
                call,
                home,
                method,
                ..
            } => (*actor, Some(*call), home.clone(), method.clone()),
            Msg::KillActor { actor, home } => (*actor, None, home.clone(), String::new()),
            _ => return,
        };
        let fail = |e: Error| {
            if let (Some(call), Some(reply)) = (call, &reply) {
                let _ = reply.send(Msg::TaskDone {
                    task_id: call,
                    result: Err(e),
                });
            }
        };
        let mut st = self.lock();
        let peer_id = match st.actors.get(&actor) {
            Some(ActorPlace::Local { job, .. }) => {
                let job = *job;
                if let (Some(call), Some(reply)) = (call, reply) {
                    st.routes
                        .insert(call, Route::new(reply, Some(job), None, method));
                } else if let Some(ActorPlace::Local { grant, .. }) = st.actors.insert(
                    actor,
                    ActorPlace::Failed(Error::ActorDied {
                        actor: actor.to_string(),
                        reason: "killed with prism::kill".into(),
                    }),
                ) {
                    st.available.give(&grant);
                    self.dispatch(&mut st);
                }
                self.send_to_worker(&mut st, job, msg);
                return;
            }
            Some(ActorPlace::Failed(e)) => {
                let e = Error::ActorDied {
                    actor: actor.to_string(),
                    reason: e.to_string(),
                };
                drop(st);
                return fail(e);
            }
            Some(ActorPlace::Peer(id)) => Some(id.clone()),
            None if home != self.address => st
                .peers
                .iter()
                .find(|(_, p)| p.view.address == home)
                .map(|(id, _)| id.clone()),
            None => None,
        };
        let out = peer_id
            .as_ref()
            .and_then(|id| st.peers.get(id))
            .and_then(|p| p.outbox.clone());
        let (Some(peer_id), Some(out)) = (peer_id, out) else {
            drop(st);
            return fail(Error::ActorDied {
                actor: actor.to_string(),
                reason: "no node knows where it lives".into(),
            });
        };
        if let (Some(call), Some(reply)) = (call, reply) {
            if let Some(p) = st.peers.get_mut(&peer_id) {
                p.outstanding += 1;
            }
            st.routes
                .insert(call, Route::new(reply, None, Some(peer_id), method));
        }
        let _ = out.send(msg);
    }

    /// The job's worker here is gone, and with it its actors. With `restart`, those with
    /// restarts left stay placed here and their creations are returned, to be sent to the
    /// job's next worker; the others are dead and their resources return.
    pub(super) fn drop_actors(
        &self,
        st: &mut State,
        job: u32,
        reason: &str,
        restart: bool,
    ) -> Vec<Msg> {
        let mut restarts = Vec::new();
        let mut dead = Vec::new();
        for (id, place) in st.actors.iter_mut() {
            let ActorPlace::Local {
                job: j,
                restarts_left,
                create,
                ..
            } = place
            else {
                continue;
            };
            if *j != job {
                continue;
            }
            if restart && *restarts_left > 0 {
                *restarts_left -= 1;
                tracing::info!(actor = %id, left = *restarts_left, "node: restarting an actor whose worker died");
                restarts.push((**create).clone());
            } else {
                dead.push(*id);
            }
        }
        for id in dead {
            let dead = ActorPlace::Failed(Error::ActorDied {
                actor: id.to_string(),
                reason: reason.to_string(),
            });
            if let Some(ActorPlace::Local { grant, .. }) = st.actors.insert(id, dead) {
                st.available.give(&grant);
            }
        }
        restarts
    }
}
