//! The life of a task on a node: taken from a client or a peer, placed by its strategy,
//! queued, started here (or pipelined behind a running task of its shape) or handed to
//! a peer, lending its CPUs while it waits, and finished, its result sent back the way
//! the task came.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::placement::{choose_peer, pipeline_slot, Placement};
use super::{InFlight, Node, Queued, State};
use crate::error::Error;
use crate::id::ObjectId;
use crate::sched::{Demand, Grant};
use crate::task::TaskSpec;
use crate::wire::Payload;
use crate::wire::{Msg, Outbox};

/// Tasks of a function whose runs (as this node sees them) take less than this are
/// pipelined up to [`DEEP_PIPELINE`] deep behind a running task; others one deep.
const SHORT_TASK: Duration = Duration::from_millis(2);

/// How many short tasks may wait in a worker behind one running task: enough to cover
/// a round trip to the node, few enough not to hoard work a peer could take.
const DEEP_PIPELINE: u32 = 8;

/// The owner id of lease ids (no process has it).
const LEASES: u32 = u32::MAX;

impl Node {
    /// A driver asks for a lease: resources for tasks of `options`' shape, held for it,
    /// and the job's worker here to send them to. Granted only for CPU-only demands that
    /// fit now, when nothing waits in the queue (a lease must not jump it) and the job's
    /// worker is ready; refused otherwise (the driver then goes through the node).
    pub(super) fn lease(
        self: &Arc<Self>,
        job: u32,
        options: &crate::task::TaskOptions,
        after: Option<ObjectId>,
        reply: Outbox,
    ) {
        let mut st = self.lock();
        // Asked along with a task still running here with the same demand: the task's
        // resources become the lease when it ends.
        let demand = Demand::of(options).ok();
        if let Some(route) = after.and_then(|t| st.in_flight.get_mut(&t)) {
            let same = route.grant.as_ref().map(|g| &g.demand) == demand.as_ref();
            if route.job == Some(job) && route.successor.is_none() && same && !route.lease {
                route.lease_to = Some(reply);
                return;
            }
        }
        let granted = demand.and_then(|demand| {
            let cpu_only = demand.gpu == 0 && demand.memory == 0 && demand.custom.is_empty();
            let ready = matches!(st.workers.get(&job), Some(super::Worker::Ready(_)));
            let address = st.worker_addresses.get(&job)?.clone();
            if !cpu_only || !ready || !st.queue.is_empty() || !st.available.fits(&demand) {
                return None;
            }
            let gpu_ids = st.available.take(&demand);
            st.running += 1;
            let id = ObjectId::new(LEASES, st.next_lease);
            st.next_lease += 1;
            let mut route = InFlight::new(reply.clone(), Some(job), None, "lease".into());
            route.grant = Some(Grant { demand, gpu_ids });
            route.lease = true;
            st.in_flight.insert(id, route);
            Some((id, address))
        });
        drop(st);
        let _ = reply.send(Msg::LeaseGranted { lease: granted });
    }

    /// A driver gave a lease back: its resources serve others again.
    pub(super) fn return_lease(self: &Arc<Self>, lease: ObjectId) {
        let mut st = self.lock();
        if !st.in_flight.get(&lease).is_some_and(|r| r.lease) {
            return;
        }
        if let Some(route) = st.in_flight.remove(&lease) {
            if let Some(grant) = route.grant {
                // A task on it may still wait (its Unblocked can come after the driver
                // returned the lease): take the lent CPUs back before giving all back.
                if route.blocked {
                    st.available.lend_cpu(grant.demand.cpu, false);
                }
                st.available.give(&grant);
                st.running -= 1;
            }
        }
        self.dispatch(&mut st);
    }

    /// Takes a task from a client or a peer.
    pub(super) fn submit(self: &Arc<Self>, job: u32, spec: TaskSpec, reply: Outbox, pinned: bool) {
        let demand = match Demand::of(&spec.options) {
            Ok(d) => d,
            Err(e) => {
                let _ = reply.send(Msg::TaskDone {
                    task_id: spec.task_id,
                    result: Err(e),
                });
                return;
            }
        };
        let mut st = self.lock();
        // The owner sent it again: it rejoined through this node after the node it
        // first went through died, while a copy handed here from that node still runs
        // or waits. That copy answers the owner's new connection. Running it twice
        // would make the second copy take the first one's route, and with it the
        // resources it holds, which would then never come back.
        if let Some(route) = st.in_flight.get_mut(&spec.task_id) {
            if route.peer.is_none() {
                route.reply = reply;
                return;
            }
        }
        if let Some(queued) = st.queue.iter_mut().find(|q| q.spec.task_id == spec.task_id) {
            queued.reply = reply;
            return;
        }
        let q = Queued {
            job,
            spec,
            demand,
            reply,
            pinned,
        };
        self.admit(&mut st, q, 0);
        self.dispatch(&mut st);
    }

    /// Places a task by its strategy: to the queue here, or to the peer it names. A task
    /// that cannot be placed waits for the next views of the cluster (a node that just
    /// joined may not be in this node's view, or connected, yet) and fails with the
    /// reason once two fresh views (`views`) confirm it.
    pub(super) fn admit(self: &Arc<Self>, st: &mut State, mut q: Queued, views: u32) {
        let strategy = q.spec.options.scheduling.clone();
        let failure = match self.place(st, &strategy, &q.demand, q.pinned) {
            Placement::Here => {
                q.pinned = true;
                None
            }
            Placement::Default => self.feasible_somewhere(st, &q.demand, q.pinned).err(),
            Placement::Peer(peer) => match self.hand_to_peer(st, &peer, q) {
                None => return,
                Some(back) => {
                    q = back;
                    Some(Error::Cluster(format!("node {peer} cannot be reached")))
                }
            },
            Placement::Fail(e) => Some(e),
        };
        match failure {
            None => st.queue.push_back(q),
            Some(e) if views >= 2 => {
                let _ = q.reply.send(Msg::TaskDone {
                    task_id: q.spec.task_id,
                    result: Err(e),
                });
            }
            Some(_) => st.infeasible.push((q, views)),
        }
    }

    /// After a fresh view of the cluster: tasks that could not be placed try again (see
    /// [`Node::admit`]).
    pub(super) fn recheck_infeasible(self: &Arc<Self>, st: &mut State) {
        for (q, views) in std::mem::take(&mut st.infeasible) {
            self.admit(st, q, views + 1);
        }
        self.recheck_infeasible_actors(st);
    }

    /// Starts what can start: waiting actors and queued tasks that fit here, or that a
    /// peer has room for.
    pub(super) fn dispatch(self: &Arc<Self>, st: &mut State) {
        if !st.waiting_actors.is_empty() {
            self.place_actors(st);
        }
        while let Some(front) = st.queue.front() {
            // Locality: a task whose large argument is kept on a peer with an idle CPU
            // goes there, instead of pulling the argument here.
            if !front.pinned {
                if let Some(peer) = self.data_home(st, &front.spec) {
                    let idle = st.peers.get(&peer).is_some_and(|p| {
                        (p.outstanding as f64) < p.cpus
                            && p.total.check_feasible(&front.demand).is_ok()
                    });
                    if idle {
                        let Some(q) = st.queue.pop_front() else { break };
                        match self.hand_to_peer(st, &peer, q) {
                            None => continue,
                            Some(q) => st.queue.push_front(q),
                        }
                    }
                }
            }
            let Some(front) = st.queue.front() else { break };
            if st.available.fits(&front.demand) {
                let Some(q) = st.queue.pop_front() else { break };
                let gpu_ids = st.available.take(&q.demand);
                st.running += 1;
                let grant = Grant {
                    demand: q.demand.clone(),
                    gpu_ids,
                };
                self.start_here(st, q, Some(grant), None);
                continue;
            }
            // Queue it behind a task of its shape here (pipelining), or hand it to the
            // peer with room that has the fewest tasks per CPU, whichever is less loaded;
            // a peer with an idle CPU first.
            let short = st
                .run_times
                .get(&front.spec.function)
                .is_some_and(|t| *t < SHORT_TASK.as_secs_f64());
            let depth = if short { DEEP_PIPELINE } else { 1 };
            // A peer may hold as many as this node keeps in its worker (a running task
            // and a pipeline behind it), and more for the longer way results travel.
            let room = 2 * (depth + 1);
            let peer = if front.pinned {
                None
            } else {
                choose_peer(st, &front.demand, room)
            };
            let here_load = st.tasks_here as f64 / self.cpus.max(0.25);
            let here_first = match &peer {
                Some((_, load)) => *load >= 1.0 && here_load <= *load,
                None => true,
            };
            if here_first {
                if let Some(pred) = pipeline_slot(st, front.job, &front.demand, depth) {
                    self.pipeline(st, pred);
                    continue;
                }
            }
            let Some((peer_id, _)) = peer else {
                break;
            };
            let Some(q) = st.queue.pop_front() else { break };
            if let Some(q) = self.hand_to_peer(st, &peer_id, q) {
                st.queue.push_front(q);
                break;
            }
        }
    }

    /// The peer whose worker keeps the task's first large argument, if that is a peer
    /// (found by the object server's address, on the node's own address).
    fn data_home(&self, st: &State, spec: &TaskSpec) -> Option<String> {
        let at = spec.args.iter().find_map(|a| match a {
            crate::task::EncodedArg::Ref { at, .. } => Some(at.as_str()),
            _ => None,
        })?;
        let ip = |address: &str| address.rsplit_once(':').map(|(ip, _)| ip.to_string());
        let host = ip(at)?;
        if ip(&self.address).as_deref() == Some(host.as_str()) {
            return None;
        }
        let mut on_host = st
            .peers
            .iter()
            .filter(|(_, p)| p.view.alive && ip(&p.view.address).as_deref() == Some(host.as_str()));
        let (id, _) = on_host.next()?;
        // Several nodes on one address: no telling which one holds it.
        on_host.next().is_none().then(|| id.clone())
    }

    /// Sends a task to a connected peer, which runs it (and never passes it on); the
    /// task comes back if the peer is not connected.
    pub(super) fn hand_to_peer(&self, st: &mut State, peer_id: &str, q: Queued) -> Option<Queued> {
        let Some(peer) = st.peers.get_mut(peer_id) else {
            return Some(q);
        };
        let Some(out) = peer.outbox.clone() else {
            return Some(q);
        };
        peer.outstanding += 1;
        let route = InFlight::new(
            q.reply,
            None,
            Some(peer_id.to_string()),
            q.spec.function.clone(),
        );
        st.in_flight.insert(q.spec.task_id, route);
        let _ = out.send(Msg::SubmitTask {
            job: q.job,
            spec: Arc::new(q.spec),
        });
        None
    }

    /// Sends the queue's head to run right after `pred` on `pred`'s resources.
    pub(super) fn pipeline(self: &Arc<Self>, st: &mut State, pred: ObjectId) {
        let Some(q) = st.queue.pop_front() else {
            return;
        };
        if let Some(r) = st.in_flight.get_mut(&pred) {
            r.successor = Some(q.spec.task_id);
        }
        let id = q.spec.task_id;
        self.start_here(st, q, None, Some(pred));
        if let Some(r) = st.in_flight.get_mut(&id) {
            r.pred = Some(pred);
        }
    }

    /// Records `q` as running in its job's worker here (right after `after`, if given,
    /// on its resources) and sends it there.
    pub(super) fn start_here(
        self: &Arc<Self>,
        st: &mut State,
        q: Queued,
        grant: Option<Grant>,
        after: Option<ObjectId>,
    ) {
        let mut route = InFlight::new(q.reply, Some(q.job), None, q.spec.function.clone());
        route.granted_at = grant.as_ref().map(|_| Instant::now());
        let gpu_ids = grant.as_ref().map(|g| g.gpu_ids.clone());
        route.grant = grant;
        route.task_here = true;
        st.tasks_here += 1;
        st.in_flight.insert(q.spec.task_id, route);
        self.send_to_worker(
            st,
            q.job,
            Msg::RunTask {
                spec: q.spec,
                after,
                lease: None,
                gpu_ids,
            },
        );
    }

    /// A running task waits (`true`) or resumes (`false`): its CPUs serve others meanwhile.
    pub(super) fn lend(self: &Arc<Self>, task_id: ObjectId, waiting: bool) {
        let mut st = self.lock();
        let Some(route) = st.in_flight.get_mut(&task_id) else {
            return;
        };
        let Some(cpu) = route.grant.as_ref().map(|g| g.demand.cpu) else {
            return;
        };
        route.blocked = waiting;
        let job = route.job;
        let successor = if waiting {
            route.successor.take()
        } else {
            None
        };
        st.available.lend_cpu(cpu, waiting);
        // The task queued right behind a waiting one starts now, on the CPUs the waiting
        // task lends; the worker starts it when told, so both sides agree on it.
        if let Some((next_id, next)) =
            successor.and_then(|s| st.in_flight.get_mut(&s).map(|r| (s, r)))
        {
            if next.grant.is_none() {
                let demand = Demand {
                    cpu,
                    ..Demand::default()
                };
                next.grant = Some(Grant {
                    demand,
                    gpu_ids: Vec::new(),
                });
                next.granted_at = Some(Instant::now());
                st.available.lend_cpu(cpu, false);
                st.running += 1;
                if let Some(job) = job {
                    self.send_to_worker(&mut st, job, Msg::Release { task_id: next_id });
                }
            }
        }
        if waiting {
            self.dispatch(&mut st);
        }
    }

    /// A task ended, here or at a peer: return its resources (or make them the lease a
    /// driver asked for) and pass the result back.
    pub(super) fn finished(self: &Arc<Self>, task_id: ObjectId, result: Result<Payload, Error>) {
        let mut st = self.lock();
        let Some(mut route) = st.in_flight.remove(&task_id) else {
            return;
        };
        if route.task_here {
            st.tasks_here -= 1;
        }
        if let Some(at) = route.granted_at {
            let took = at.elapsed().as_secs_f64();
            st.run_times
                .entry(route.function.clone())
                .and_modify(|t| *t = 0.8 * *t + 0.2 * took)
                .or_insert(took);
        }
        if let Some(to) = route.lease_to.take() {
            let address = route.job.and_then(|j| st.worker_addresses.get(&j).cloned());
            match (address, route.grant.take(), route.successor) {
                (Some(address), Some(grant), None) => {
                    // The driver hears of its lease right after the result, on the same
                    // connection, so its next task can go straight to the worker.
                    let id = ObjectId::new(LEASES, st.next_lease);
                    st.next_lease += 1;
                    let mut leased = InFlight::new(to.clone(), route.job, None, "lease".into());
                    leased.grant = Some(grant);
                    leased.lease = true;
                    st.in_flight.insert(id, leased);
                    let _ = route.reply.send(Msg::TaskDone { task_id, result });
                    let _ = to.send(Msg::LeaseGranted {
                        lease: Some((id, address)),
                    });
                    self.dispatch(&mut st);
                    return;
                }
                (_, grant, _) => {
                    route.grant = grant;
                    let _ = to.send(Msg::LeaseGranted { lease: None });
                }
            }
        }
        match (
            route.grant,
            route.successor.and_then(|s| st.in_flight.get_mut(&s)),
        ) {
            // The successor was already sent to run right after this task: it inherits
            // the resources.
            (Some(grant), Some(next)) => {
                next.grant = Some(grant);
                next.granted_at = Some(Instant::now());
            }
            (Some(grant), None) => {
                st.available.give(&grant);
                st.running -= 1;
            }
            (None, _) => {}
        }
        if let Some(p) = route.peer.as_ref().and_then(|id| st.peers.get_mut(id)) {
            p.outstanding = p.outstanding.saturating_sub(1);
        }
        let _ = route.reply.send(Msg::TaskDone { task_id, result });
        self.dispatch(&mut st);
    }
}
