//! Actors on a node: placing them where their resources are free, and routing calls
//! and kills to the worker (or peer) that hosts them.

use std::sync::Arc;

use super::placement::Placement;
use super::{ActorPlace, InFlight, Node, State};
use crate::error::Error;
use crate::id::ObjectId;
use crate::sched::{Capacity, Demand, Grant};
use crate::state::ActorEventKind;
use crate::task::EncodedArg;
use crate::wire::{ActorOp, Msg, Outbox};

/// An actor's creation as a node receives it.
pub(crate) struct Creation {
    pub job: u32,
    pub actor: ObjectId,
    pub class: String,
    pub args: Vec<EncodedArg>,
    pub options: crate::task::TaskOptions,
    pub max_restarts: u32,
    pub max_concurrency: u32,
    pub named: bool,
    pub gpu_ids: Vec<usize>,
}

impl Creation {
    /// The creation a `CreateActor` message carries.
    pub(super) fn from_msg(msg: Msg) -> Option<Creation> {
        match msg {
            Msg::CreateActor {
                job,
                actor,
                class,
                args,
                options,
                max_restarts,
                max_concurrency,
                named,
                gpu_ids,
            } => Some(Creation {
                job,
                actor,
                class,
                args,
                options,
                max_restarts,
                max_concurrency,
                named,
                gpu_ids,
            }),
            _ => None,
        }
    }

    fn into_msg(self) -> Msg {
        Msg::CreateActor {
            job: self.job,
            actor: self.actor,
            class: self.class,
            args: self.args,
            options: self.options,
            max_restarts: self.max_restarts,
            max_concurrency: self.max_concurrency,
            named: self.named,
            gpu_ids: self.gpu_ids,
        }
    }
}

/// An actor waiting for resources, here or on a peer.
pub(super) struct WaitingActor {
    pub create: Msg,
    pub actor: ObjectId,
    pub job: u32,
    pub class: String,
    pub demand: Demand,
    pub reply: Outbox,
    /// Came from a peer or its strategy named this node: placed here or nowhere.
    pub pinned: bool,
    /// The peer that placed it here, which decides about its restarts.
    pub home: Option<Outbox>,
    pub max_restarts: u32,
    /// Views of the cluster seen in a row in which no node could ever host it.
    pub views: u32,
}

impl Node {
    /// Places an actor: where its strategy says, else here if its resources are free,
    /// else on a peer with room (unless it came from a peer); if none has room now, it
    /// waits (with its calls) until one does. One that no node could ever host fails with
    /// [`Error::Infeasible`]. Its creation's outcome returns to `reply` as a `TaskDone`.
    pub(super) fn create_actor(self: &Arc<Self>, create: Creation, reply: Outbox, pinned: bool) {
        self.create_actor_after(create, reply, pinned, 0)
    }

    /// Creates the actors whose strategy named a node not (yet) in this node's view:
    /// a node that just joined reaches a peer's view with the next heartbeat.
    pub(super) fn retry_unplaced_actors(self: &Arc<Self>) {
        let unplaced = std::mem::take(&mut self.lock().unplaced_actors);
        for (create, reply, pinned, views) in unplaced {
            self.create_actor_after(create, reply, pinned, views + 1);
        }
    }

    /// [`Node::create_actor`], `views` fresh views of the cluster after it first could
    /// not be placed: it fails only once two confirm it.
    fn create_actor_after(
        self: &Arc<Self>,
        create: Creation,
        reply: Outbox,
        pinned: bool,
        views: u32,
    ) {
        let (job, actor, class) = (create.job, create.actor, create.class.clone());
        let max_restarts = create.max_restarts;
        let refuse = |e: Error| {
            let _ = reply.send(Msg::TaskDone {
                task_id: actor,
                result: Err(e),
            });
        };
        let demand = match Demand::of(&create.options) {
            Ok(d) => d,
            Err(e) => return refuse(e),
        };
        let mut st = self.lock();
        let home = pinned.then(|| reply.clone());
        let pinned = match self.place(&mut st, &create.options.scheduling, &demand, pinned) {
            Placement::Default => pinned,
            Placement::Here => true,
            Placement::Peer(peer_id) => {
                if let Some(out) = st.peers.get_mut(&peer_id).and_then(|p| {
                    // The creation is outstanding there until its outcome comes back.
                    let out = p.outbox.clone()?;
                    p.outstanding += 1;
                    Some(out)
                }) {
                    let msg = create.into_msg();
                    let again = Box::new((msg.clone(), reply.clone()));
                    let place = ActorPlace::Peer {
                        node: peer_id.clone(),
                        again,
                    };
                    let earlier = st.actors.insert(actor, place);
                    st.in_flight
                        .insert(actor, InFlight::new(reply, None, Some(peer_id), class));
                    let _ = out.send(msg);
                    // Calls sent while it waited for its node to be known follow it.
                    if let Some(ActorPlace::Waiting(calls)) = earlier {
                        for (msg, reply) in calls {
                            self.route_locked(&mut st, msg, reply);
                        }
                    }
                    return;
                }
                pinned
            }
            Placement::Fail(_)
                if views < 2
                    && matches!(
                        create.options.scheduling,
                        crate::task::Strategy::NodeAffinity { .. }
                    ) =>
            {
                // Its calls wait for it meanwhile.
                st.actors
                    .entry(actor)
                    .or_insert_with(|| ActorPlace::Waiting(Vec::new()));
                st.unplaced_actors.push((create, reply, pinned, views));
                return;
            }
            Placement::Fail(e) => {
                if views > 0 {
                    let failed = ActorPlace::Failed(e.clone());
                    if let Some(ActorPlace::Waiting(calls)) = st.actors.insert(actor, failed) {
                        for (msg, reply) in calls {
                            self.route_locked(&mut st, msg, reply);
                        }
                    }
                }
                drop(st);
                return refuse(e);
            }
        };
        let queued = match st.actors.remove(&actor) {
            Some(ActorPlace::Waiting(calls)) => calls,
            _ => Vec::new(),
        };
        st.actors.insert(actor, ActorPlace::Waiting(queued));
        st.waiting_actors.push_back(WaitingActor {
            create: create.into_msg(),
            actor,
            job,
            class,
            demand,
            reply,
            pinned,
            home,
            max_restarts,
            views: 0,
        });
        self.place_actors(&mut st);
    }

    /// Fails the waiting actors that no node could host in two views of the cluster
    /// running (see `recheck_infeasible`), with their waiting calls.
    pub(super) fn recheck_infeasible_actors(self: &Arc<Self>, st: &mut State) {
        for mut w in std::mem::take(&mut st.waiting_actors) {
            let verdict = self.feasible_somewhere(st, &w.demand, w.pinned);
            match verdict {
                Err(e) if w.views >= 1 => {
                    let _ = w.reply.send(Msg::TaskDone {
                        task_id: w.actor,
                        result: Err(e.clone()),
                    });
                    let failed = ActorPlace::Failed(e);
                    if let Some(ActorPlace::Waiting(calls)) = st.actors.insert(w.actor, failed) {
                        for (msg, reply) in calls {
                            self.route_locked(st, msg, reply);
                        }
                    }
                }
                Err(_) => {
                    w.views += 1;
                    st.waiting_actors.push_back(w);
                }
                Ok(()) => {
                    w.views = 0;
                    st.waiting_actors.push_back(w);
                }
            }
        }
    }

    /// Places the waiting actors that fit now, here or on a peer with room, and sends
    /// the calls that waited for them on.
    pub(super) fn place_actors(self: &Arc<Self>, st: &mut State) {
        let waiting = std::mem::take(&mut st.waiting_actors);
        for w in waiting {
            let placed = if st.available.fits(&w.demand) {
                let gpu_ids = st.available.take(&w.demand);
                // The worker hosting it tells the actor which GPUs are its own.
                let create = match Creation::from_msg(w.create.clone()) {
                    Some(mut c) => {
                        c.gpu_ids = gpu_ids.clone();
                        c.into_msg()
                    }
                    None => w.create.clone(),
                };
                let w = WaitingActor { create, ..w };
                let grant = Grant {
                    demand: w.demand.clone(),
                    gpu_ids,
                };
                let placed = ActorEventKind::Placed {
                    class: w.class.clone(),
                    name: None,
                    node: self.id.clone(),
                };
                self.actor_event(w.actor, w.job, placed);
                st.in_flight
                    .insert(w.actor, InFlight::new(w.reply, Some(w.job), None, w.class));
                let local = ActorPlace::Local {
                    job: w.job,
                    grant,
                    // The peer that placed it restarts it, anywhere.
                    restarts_left: if w.home.is_some() { 0 } else { w.max_restarts },
                    create: Box::new(w.create.clone()),
                    home: w.home,
                };
                let calls = st.actors.insert(w.actor, local);
                self.send_to_worker(st, w.job, w.create);
                calls
            } else {
                let peer = (!w.pinned)
                    .then(|| {
                        st.peers.iter().find(|(_, p)| {
                            p.view.alive
                                && p.outbox.is_some()
                                && Capacity::from_amounts(&p.view.available).fits(&w.demand)
                        })
                    })
                    .flatten()
                    .and_then(|(id, p)| Some((id.clone(), p.outbox.clone()?)));
                match peer {
                    Some((peer_id, out)) => {
                        if let Some(p) = st.peers.get_mut(&peer_id) {
                            p.outstanding += 1;
                        }
                        let again = Box::new((w.create.clone(), w.reply.clone()));
                        st.in_flight.insert(
                            w.actor,
                            InFlight::new(w.reply, None, Some(peer_id.clone()), w.class),
                        );
                        let _ = out.send(w.create);
                        let place = ActorPlace::Peer {
                            node: peer_id,
                            again,
                        };
                        st.actors.insert(w.actor, place)
                    }
                    None => {
                        st.waiting_actors.push_back(w);
                        continue;
                    }
                }
            };
            if let Some(ActorPlace::Waiting(calls)) = placed {
                for (msg, reply) in calls {
                    self.route_locked(st, msg, reply);
                }
            }
        }
    }

    /// Sends an actor call (with `reply` for its result) or a kill on towards the actor:
    /// to this node's worker, to the peer that hosts it, or to the node that placed it.
    pub(super) fn route_actor(self: &Arc<Self>, msg: Msg, reply: Option<Outbox>) {
        let mut st = self.lock();
        self.route_locked(&mut st, msg, reply);
    }

    pub(super) fn route_locked(self: &Arc<Self>, st: &mut State, msg: Msg, reply: Option<Outbox>) {
        let Msg::ToActor { actor, home, op } = &msg else {
            return;
        };
        let (actor, home) = (*actor, home.clone());
        let answer = op.answer();
        let kill = matches!(op, ActorOp::Kill);
        let what = match op {
            ActorOp::Call { method, .. } => method.clone(),
            ActorOp::Retain { .. } => "retain".to_string(),
            ActorOp::Release | ActorOp::Kill => String::new(),
        };
        // Where the answer goes, if there is one and someone to send it to.
        let reply = answer.and(reply);
        let fail = |e: Error| {
            if let (Some(call), Some(reply)) = (answer, &reply) {
                let _ = reply.send(Msg::TaskDone {
                    task_id: call,
                    result: Err(e),
                });
            }
        };
        let killed = || {
            ActorPlace::Failed(Error::ActorDied {
                actor: actor.to_string(),
                reason: "killed with prism::kill".into(),
            })
        };
        let peer_id = match st.actors.get_mut(&actor) {
            Some(ActorPlace::Waiting(calls)) => {
                if !kill {
                    calls.push((msg, reply));
                    return;
                }
                st.waiting_actors.retain(|w| w.actor != actor);
                if let Some(ActorPlace::Waiting(calls)) = st.actors.insert(actor, killed()) {
                    for (msg, reply) in calls {
                        self.route_locked(st, msg, reply);
                    }
                }
                return;
            }
            Some(ActorPlace::Local { job, .. }) => {
                let job = *job;
                if let (Some(call), Some(reply)) = (answer, reply) {
                    st.in_flight
                        .insert(call, InFlight::new(reply, Some(job), None, what));
                } else if kill {
                    if let Some(ActorPlace::Local { grant, .. }) = st.actors.insert(actor, killed())
                    {
                        st.available.give(&grant);
                        self.dispatch(st);
                    }
                }
                self.send_to_worker(st, job, msg);
                return;
            }
            Some(ActorPlace::Failed(e)) => {
                return fail(Error::ActorDied {
                    actor: actor.to_string(),
                    reason: e.to_string(),
                });
            }
            Some(ActorPlace::Peer { node, .. }) => Some(node.clone()),
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
            return fail(Error::ActorDied {
                actor: actor.to_string(),
                reason: "no node knows where it lives".into(),
            });
        };
        if let (Some(call), Some(reply)) = (answer, reply) {
            if let Some(p) = st.peers.get_mut(&peer_id) {
                p.outstanding += 1;
            }
            st.in_flight
                .insert(call, InFlight::new(reply, None, Some(peer_id), what));
        }
        let _ = out.send(msg);
    }

    /// An actor hosted here ended by itself (its last handle went): its resources come
    /// back, later messages for it fail with `reason`, and the peer that placed it (if
    /// one did) forgets it too.
    pub(super) fn actor_ended(self: &Arc<Self>, actor: ObjectId, reason: &str) {
        let mut st = self.lock();
        // Forgotten, not kept as a failure: actors that come and go (replicas, trial
        // workers) would fill the table. A message still on its way to it fails with
        // "no node knows where it lives".
        match st.actors.remove(&actor) {
            Some(ActorPlace::Local {
                grant, home, job, ..
            }) => {
                let cause = reason.to_string();
                self.actor_event(actor, job, ActorEventKind::Dead { cause });
                st.available.give(&grant);
                if let Some(home) = home {
                    let _ = home.send(Msg::ActorEnded {
                        actor,
                        reason: reason.to_string(),
                    });
                }
                self.dispatch(&mut st);
            }
            // Placed on a peer, which ended it: it is not to be restarted.
            Some(ActorPlace::Peer { .. }) | Some(ActorPlace::Failed(_)) | None => {}
            Some(other) => {
                st.actors.insert(actor, other);
            }
        }
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
                let reason = reason.to_string();
                self.actor_event(*id, job, ActorEventKind::Restarting { reason });
                tracing::info!(actor = %id, left = *restarts_left, "node: restarting an actor whose worker died");
                restarts.push(restarted((**create).clone()));
            } else {
                dead.push(*id);
            }
        }
        for id in dead {
            let cause = reason.to_string();
            self.actor_event(id, job, ActorEventKind::Dead { cause });
            let dead = ActorPlace::Failed(Error::ActorDied {
                actor: id.to_string(),
                reason: reason.to_string(),
            });
            if let Some(ActorPlace::Local { grant, home, .. }) = st.actors.insert(id, dead) {
                st.available.give(&grant);
                if let (true, Some(home)) = (restart, home) {
                    // The peer that placed it decides whether it starts again elsewhere.
                    let _ = home.send(Msg::ActorGone {
                        actor: id,
                        reason: reason.to_string(),
                    });
                }
            }
        }
        restarts
    }

    /// An actor this node placed on a peer died there, or with that peer: it is created
    /// again wherever it fits if it has restarts left (later calls wait for it), and is
    /// dead otherwise.
    pub(super) fn actor_gone(self: &Arc<Self>, actor: ObjectId, reason: &str) {
        let mut st = self.lock();
        let again = match st.actors.get(&actor) {
            Some(ActorPlace::Peer { again, .. }) => (**again).clone(),
            _ => return,
        };
        let (msg, reply) = again;
        match Creation::from_msg(msg) {
            Some(mut create) if create.max_restarts > 0 => {
                create.max_restarts -= 1;
                // The handles counted by the instance that died are not known to the new
                // one: it lives until killed or until its job ends.
                create.named = true;
                tracing::info!(%actor, left = create.max_restarts, "node: restarting an actor that died on a peer ({reason})");
                drop(st);
                self.create_actor(create, reply, false);
            }
            _ => {
                st.actors.insert(
                    actor,
                    ActorPlace::Failed(Error::ActorDied {
                        actor: actor.to_string(),
                        reason: reason.to_string(),
                    }),
                );
            }
        }
    }
}

/// The creation of an actor started again after its process died. The handles the dead
/// instance counted are not known to the new one, so it does not end by itself: it
/// lives until killed or until its job ends.
fn restarted(create: Msg) -> Msg {
    match Creation::from_msg(create.clone()) {
        Some(mut c) => {
            c.named = true;
            c.into_msg()
        }
        None => create,
    }
}
