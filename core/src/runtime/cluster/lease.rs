//! Leases: a driver that submits one task at a time and waits for it gets resources
//! held for it on its node and the worker to send such tasks to, so that each takes one
//! round trip between two processes instead of two. The lease goes back when unused
//! for a while, or as soon as work goes through the node (a burst needs the CPUs).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::direct::Direct;
use super::owner::Owner;
use crate::id::ObjectId;
use crate::sched::Demand;
use crate::sync::lock;
use crate::task::{EncodedArg, TaskSpec};
use crate::wire::Msg;

/// Resources a node holds for this driver's lone tasks, and the worker they go to.
pub(crate) enum Lease {
    /// Asked for; the node has not answered yet.
    Asked(Demand),
    /// Held.
    Held {
        id: ObjectId,
        demand: Demand,
        worker: Arc<Direct>,
        last_used: Instant,
        /// The task running on it (a lone task: at most one).
        running: Option<ObjectId>,
        /// Give it back as soon as that task ends: others went through the node.
        release: bool,
    },
}

/// A lease unused this long goes back to its node.
const LEASE_IDLE: Duration = Duration::from_millis(20);

impl Owner {
    /// Sends a lone task (nothing else in flight: a driver that submits and waits, one
    /// task at a time) straight to the worker of a lease for its demand: one round trip
    /// between two processes instead of two. Without such a lease, asks its node for
    /// one, for the next task, and returns `false`: this one goes through the node.
    /// Bursts always go through the nodes, which spread them.
    pub fn send_on_lease(self: &Arc<Self>, spec: &Arc<TaskSpec>) -> bool {
        if !self.leases {
            return false;
        }
        let Ok(demand) = Demand::of(&spec.options) else {
            return false;
        };
        if demand.gpu > 0 || demand.memory > 0 || !demand.custom.is_empty() {
            return false;
        }
        if spec.options.scheduling != crate::task::Strategy::Default {
            return false;
        }
        // A task with a large argument goes where the argument is: the node decides.
        if spec
            .args
            .iter()
            .any(|a| matches!(a, EncodedArg::Ref { .. }))
        {
            return false;
        }
        let mut lease = lock(&self.lease);
        match &mut *lease {
            Some(Lease::Held {
                id,
                demand: d,
                worker,
                last_used,
                running: running @ None,
                release: false,
            }) if *d == demand && !worker.is_closed() => {
                let msg = Msg::RunTask {
                    spec: (**spec).clone(),
                    after: None,
                    lease: Some(*id),
                    gpu_ids: None,
                };
                if worker.send(spec.task_id, msg).is_none() {
                    *last_used = Instant::now();
                    *running = Some(spec.task_id);
                    return true;
                }
                false
            }
            Some(Lease::Held { .. }) => false,
            Some(Lease::Asked(_)) => false,
            _ => {
                if let Some(Lease::Held { id, .. }) = lease.take() {
                    self.give_back(id);
                }
                *lease = Some(Lease::Asked(demand));
                // Asked along with this task: its resources become the lease when it
                // ends, if it ran on the node the lease is asked from.
                self.send_task(spec.clone());
                let _ = self.link.send(Msg::Lease {
                    job: self.job,
                    options: spec.options.clone(),
                    after: Some(spec.task_id),
                });
                true
            }
        }
    }

    /// Gives a lease back to the node.
    pub(super) fn give_back(&self, lease: ObjectId) {
        let _ = self.link.send(Msg::ReturnLease { lease });
    }

    /// A task goes through the node: a lease this driver holds would keep CPUs from it,
    /// so it goes back now, or as soon as the task on it ends.
    pub fn through_node(&self) {
        let mut lease = lock(&self.lease);
        if let Some(Lease::Held {
            id,
            running,
            release,
            ..
        }) = &mut *lease
        {
            if running.is_some() {
                *release = true;
            } else {
                let id = *id;
                *lease = None;
                drop(lease);
                self.give_back(id);
            }
        }
    }

    /// Task `id` ended: if it ran on the lease, the lease is free again (and goes back
    /// if it was asked to, or if other tasks wait for results).
    pub(super) fn lease_task_done(&self, id: ObjectId) {
        let mut lease = lock(&self.lease);
        let Some(Lease::Held {
            id: lease_id,
            running,
            release,
            ..
        }) = &mut *lease
        else {
            return;
        };
        if *running != Some(id) {
            return;
        }
        *running = None;
        let others = self.others_in_flight(Some(id));
        if *release || others {
            let lease_id = *lease_id;
            *lease = None;
            drop(lease);
            self.give_back(lease_id);
        }
    }

    /// The node answered a lease request.
    pub fn lease_granted(self: &Arc<Self>, granted: Option<(ObjectId, String)>) {
        let Some((id, address)) = granted else {
            *lock(&self.lease) = None;
            return;
        };
        if self.others_in_flight(None) {
            // Tasks went through the node meanwhile (a burst): they may need these CPUs.
            *lock(&self.lease) = None;
            return self.give_back(id);
        }
        let me = self.clone();
        self.direct(address, move |worker| {
            let mut lease = lock(&me.lease);
            match (&*lease, worker) {
                (Some(Lease::Asked(d)), Some(worker)) => {
                    let demand = d.clone();
                    *lease = Some(Lease::Held {
                        id,
                        demand,
                        worker,
                        last_used: Instant::now(),
                        running: None,
                        release: false,
                    });
                }
                _ => {
                    drop(lease);
                    me.give_back(id);
                    return;
                }
            }
            drop(lease);
            // Give it back once unused for a while: it holds CPUs others may need.
            let me2 = me.clone();
            me.io.spawn(async move {
                loop {
                    tokio::time::sleep(LEASE_IDLE / 2).await;
                    let mut lease = lock(&me2.lease);
                    match &*lease {
                        Some(Lease::Held {
                            id: held,
                            last_used,
                            running,
                            ..
                        }) if *held == id => {
                            if running.is_none() && last_used.elapsed() >= LEASE_IDLE {
                                *lease = None;
                                drop(lease);
                                me2.give_back(id);
                                return;
                            }
                        }
                        _ => return,
                    }
                }
            });
        });
    }
}
