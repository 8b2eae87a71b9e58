//! The mailbox of one actor, in whichever process hosts it: the embedded runtime for its
//! actors, a worker process for the actors its node placed there. Both host actors
//! with this one implementation, so they behave the same.
//!
//! Calls queue in submission order; runners (zero-resource work on the pool: the
//! actor's resources are held once, for its life) take them from the head. With
//! `max_concurrency(1)` (the default) one runner runs calls one at a time, in order;
//! with `n`, up to `n` run at once, `&self` methods side by side (under a read lock of
//! the state) and `&mut self` methods alone (under its write lock).
//!
//! An actor is *starting* until its constructor returns, then *alive*, then *dead*
//! with a reason: killed (queued and later calls fail with it, a running call finishes
//! first), its constructor failed, or *retired*: no handle is left, so it ends once
//! its queued calls are done. When it is dead and no call runs, its state is dropped
//! and its `on_end` runs once (returning its resources, forgetting it).

use std::any::Any;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use crate::actor::ActorState;
use crate::error::{Error, Result};
use crate::id::ActorId;
use crate::sched::{Demand, Grant, Pool, Work};
use crate::sync::lock;

use super::context::{with_running, Running};

/// The state a call runs on, as its method's receiver asks.
pub(crate) enum Receiver<'a> {
    /// `&self`.
    Shared(&'a (dyn Any + Send + Sync)),
    /// `&mut self`.
    Exclusive(&'a mut (dyn Any + Send + Sync)),
}

/// One call in a mailbox: how it gets ready, runs, and reports its outcome.
pub(crate) trait Call: Send + 'static {
    /// What every call of the mailbox needs (where results go): kept once by the
    /// mailbox rather than by each call.
    type Context: Send + Sync + 'static;
    /// The method's stable name, for [`crate::context`] and errors.
    fn function(&self) -> &'static str;
    /// Whether the method takes `&mut self`.
    fn exclusive(&self) -> bool;
    /// Gets the call ready before it takes the state: waits for its reference
    /// arguments, reads them. An error fails the call.
    fn prepare(&mut self, ctx: &Self::Context) -> Result<()>;
    /// Runs the method on the state and reports the outcome.
    fn run(self, state: Receiver<'_>, ctx: &Self::Context);
    /// Reports `err` as the call's outcome without running it.
    fn fail(self, err: Error, ctx: &Self::Context);
}

enum Phase {
    Starting,
    Alive,
    Dead(Error),
}

struct Inbox<C> {
    queue: VecDeque<C>,
    /// Runners started and not ended.
    running: usize,
    /// Of those, the ones running a call (the others take the next from the queue).
    busy: usize,
    phase: Phase,
    /// No handle is left: end once the queue is empty.
    retiring: bool,
    /// `on_end` ran.
    ended: bool,
}

/// Runs once when the actor has ended, with why.
pub(crate) type OnEnd = Box<dyn FnOnce(&Error) + Send>;

/// One actor: its state and its mailbox.
pub(crate) struct Mailbox<C: Call> {
    id: ActorId,
    /// `class id` or `class id ("name")`, for errors.
    describe: String,
    max_concurrency: usize,
    state: RwLock<Option<ActorState>>,
    inbox: Mutex<Inbox<C>>,
    /// The resources the actor holds for its life (what the runners run with).
    grant: Mutex<Grant>,
    /// The grant the pool keeps for the actor, returned to it when the actor ends.
    kept: Mutex<Option<Grant>>,
    pool: Arc<Pool>,
    ctx: C::Context,
    on_end: Mutex<Option<OnEnd>>,
}

impl<C: Call> Mailbox<C> {
    /// A starting actor.
    pub fn new(
        id: ActorId,
        describe: String,
        max_concurrency: usize,
        pool: Arc<Pool>,
        ctx: C::Context,
        on_end: OnEnd,
    ) -> Arc<Self> {
        Arc::new(Mailbox {
            id,
            describe,
            max_concurrency: max_concurrency.max(1),
            state: RwLock::new(None),
            inbox: Mutex::new(Inbox {
                queue: VecDeque::new(),
                running: 0,
                busy: 0,
                phase: Phase::Starting,
                retiring: false,
                ended: false,
            }),
            grant: Mutex::new(Grant::default()),
            kept: Mutex::new(None),
            pool,
            ctx,
            on_end: Mutex::new(Some(on_end)),
        })
    }

    /// The actor's id.
    pub fn id(&self) -> ActorId {
        self.id
    }

    /// The actor, as errors name it.
    pub fn describe(&self) -> &str {
        &self.describe
    }

    fn inbox(&self) -> MutexGuard<'_, Inbox<C>> {
        lock(&self.inbox)
    }

    /// Whether the actor holds resources named with `prefix` (a placement group's).
    pub fn holds(&self, prefix: &str) -> bool {
        lock(&self.grant).demand.asks_prefixed(prefix)
    }

    /// Why the actor is dead, if it is.
    pub fn dead(&self) -> Option<Error> {
        match &self.inbox().phase {
            Phase::Dead(e) => Some(e.clone()),
            _ => None,
        }
    }

    /// Runs the constructor on the pool with `demand` (held for the actor's life if
    /// `keep`): the actor is alive when it returns a state, dead with its error if not.
    pub fn construct(
        self: &Arc<Self>,
        demand: Demand,
        keep: bool,
        construct: impl FnOnce(&Grant) -> Result<ActorState> + Send + 'static,
    ) {
        self.construct_with(demand, keep, None, construct)
    }

    /// Like [`Mailbox::construct`]; the actor sees `seen` as what it holds, if given
    /// (a worker's actor, whose resources its node holds), else what the pool granted.
    pub fn construct_with(
        self: &Arc<Self>,
        demand: Demand,
        keep: bool,
        seen: Option<Grant>,
        construct: impl FnOnce(&Grant) -> Result<ActorState> + Send + 'static,
    ) {
        let me = self.clone();
        let gone = self.clone();
        self.pool.submit(Work {
            demand,
            keep,
            abandon: Some(Box::new(move |e: Error| {
                gone.die(Error::ActorDied {
                    actor: gone.describe().to_string(),
                    reason: e.to_string(),
                })
            })),
            run: Box::new(move |pooled| {
                let grant = seen.as_ref().unwrap_or(pooled);
                *lock(&me.grant) = grant.clone();
                if keep {
                    *lock(&me.kept) = Some(pooled.clone());
                }
                if me.dead().is_some() {
                    // Killed while it waited for its resources.
                    me.end_if_idle();
                    return me.release_kept();
                }
                let running = Running {
                    task_id: None,
                    actor_id: Some(me.id),
                    function: "constructor",
                    grant: grant.clone(),
                };
                match with_running(running, || construct(grant)) {
                    Ok(state) => {
                        *crate::sync::write(&me.state) = Some(state);
                        let mut inbox = me.inbox();
                        if matches!(inbox.phase, Phase::Starting) {
                            inbox.phase = Phase::Alive;
                        }
                        me.start_runners(inbox);
                    }
                    Err(e) => me.die(e),
                }
            }),
        });
    }

    /// The resources the actor holds, once its constructor got them.
    pub fn grant(&self) -> Grant {
        lock(&self.grant).clone()
    }

    /// Queues a call (it fails at once if the actor is dead).
    pub fn enqueue(self: &Arc<Self>, call: C) {
        let mut inbox = self.inbox();
        if let Phase::Dead(e) = &inbox.phase {
            let e = e.clone();
            drop(inbox);
            return call.fail(e, &self.ctx);
        }
        inbox.queue.push_back(call);
        self.start_runners(inbox);
    }

    /// Starts runners up to the concurrency limit while calls wait.
    fn start_runners(self: &Arc<Self>, mut inbox: MutexGuard<'_, Inbox<C>>) {
        if !matches!(inbox.phase, Phase::Alive) {
            return;
        }
        // A runner between calls takes the next one; a busy one does not, so the
        // calls waiting need as many runners free as there are calls (up to the limit).
        let mut starts = 0;
        while inbox.running < self.max_concurrency && inbox.running - inbox.busy < inbox.queue.len()
        {
            inbox.running += 1;
            starts += 1;
        }
        if starts == 0 && inbox.retiring && inbox.running == 0 && inbox.queue.is_empty() {
            drop(inbox);
            return self.end(retired());
        }
        drop(inbox);
        for _ in 0..starts {
            let me = self.clone();
            self.pool.submit(Work {
                demand: Demand::default(),
                keep: false,
                run: Box::new(move |_| me.drain()),
                abandon: None,
            });
        }
    }

    /// A runner: takes calls from the head of the mailbox until it is empty.
    fn drain(self: &Arc<Self>) {
        let grant = self.grant();
        let mut ran = false;
        loop {
            let mut inbox = self.inbox();
            if ran {
                // The call before this one is done (counted here, under the lock this
                // takes anyway for the next).
                inbox.busy -= 1;
            }
            let next = match inbox.phase {
                Phase::Alive => inbox.queue.pop_front(),
                _ => None,
            };
            let Some(call) = next else {
                inbox.running -= 1;
                let finished = inbox.running == 0
                    && (matches!(inbox.phase, Phase::Dead(_))
                        || (inbox.retiring && inbox.queue.is_empty()));
                drop(inbox);
                if finished {
                    self.end(retired());
                }
                return;
            };
            inbox.busy += 1;
            ran = true;
            drop(inbox);
            self.run(call, &grant);
        }
    }

    fn run(&self, mut call: C, grant: &Grant) {
        if let Err(e) = call.prepare(&self.ctx) {
            return call.fail(e, &self.ctx);
        }
        let running = Running {
            task_id: None,
            actor_id: Some(self.id),
            function: call.function(),
            grant: grant.clone(),
        };
        with_running(running, || {
            if call.exclusive() {
                let mut state = crate::sync::write(&self.state);
                match state.as_deref_mut() {
                    Some(s) => call.run(Receiver::Exclusive(s), &self.ctx),
                    None => call.fail(self.stateless(), &self.ctx),
                }
            } else {
                let state = crate::sync::read(&self.state);
                match state.as_deref() {
                    Some(s) => call.run(Receiver::Shared(s), &self.ctx),
                    None => call.fail(self.stateless(), &self.ctx),
                }
            }
        })
    }

    fn stateless(&self) -> Error {
        Error::ActorDied {
            actor: self.describe.clone(),
            reason: "the actor has no state".into(),
        }
    }

    /// No handle is left: finish the queued calls, then end.
    pub fn retire(self: &Arc<Self>) {
        let mut inbox = self.inbox();
        inbox.retiring = true;
        let idle =
            inbox.running == 0 && inbox.queue.is_empty() && !matches!(inbox.phase, Phase::Starting);
        drop(inbox);
        if idle {
            self.end(retired());
        }
    }

    /// Kills the actor: queued and later calls fail with `err`; the state is dropped
    /// once no call runs.
    pub fn die(self: &Arc<Self>, err: Error) {
        let mut inbox = self.inbox();
        if matches!(inbox.phase, Phase::Dead(_)) {
            return;
        }
        inbox.phase = Phase::Dead(err.clone());
        let queued: Vec<C> = inbox.queue.drain(..).collect();
        drop(inbox);
        for call in queued {
            call.fail(err.clone(), &self.ctx);
        }
        self.end_if_idle();
    }

    fn end_if_idle(self: &Arc<Self>) {
        let idle = self.inbox().running == 0;
        if idle {
            self.end(retired());
        }
    }

    /// Drops the state and runs `on_end` (once). `reason` is why the actor is dead
    /// if it was not dead already.
    fn end(&self, reason: Error) {
        let state = crate::sync::write(&self.state).take();
        drop(state);
        let mut inbox = self.inbox();
        if inbox.ended {
            return;
        }
        inbox.ended = true;
        let why = match &inbox.phase {
            Phase::Dead(e) => e.clone(),
            _ => {
                let e = match reason {
                    Error::ActorDied { reason, .. } => Error::ActorDied {
                        actor: self.describe.clone(),
                        reason,
                    },
                    other => other,
                };
                inbox.phase = Phase::Dead(e.clone());
                e
            }
        };
        drop(inbox);
        if let Some(on_end) = lock(&self.on_end).take() {
            on_end(&why);
        }
        self.release_kept();
    }

    /// Returns the resources the pool keeps for the actor (once).
    fn release_kept(&self) {
        let kept = lock(&self.kept).take();
        if let Some(grant) = kept {
            self.pool.release(&grant);
        }
    }
}

/// Why an actor whose last handle went is dead (its name filled in by [`Mailbox::end`]).
fn retired() -> Error {
    Error::ActorDied {
        actor: String::new(),
        reason: "its last handle was dropped".into(),
    }
}
