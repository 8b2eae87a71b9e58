//! Placement group bundles on a node: reserved at the head's word (all the bundles it
//! asks for here, or none), and ended when the group is removed or its job ends. An
//! ended group's actors here are killed and its waiting work fails; its running tasks
//! finish, giving back nothing of a group that is gone.

use std::sync::Arc;

use super::{ActorPlace, Node, State};
use crate::error::Error;
use crate::id::PlacementGroupId;
use crate::sched::{bundles, Demand};
use crate::task::group::{group_prefix, reserved_resources};
use crate::wire::{ActorOp, Msg};

impl Node {
    /// Reserves `wanted` (bundle index and amounts) of `group` here if all fit now;
    /// answers with the node's new books, or `None` if they do not fit.
    pub(super) fn reserve_bundles(
        self: &Arc<Self>,
        job: u32,
        group: PlacementGroupId,
        wanted: Vec<(usize, Vec<(String, f64)>)>,
    ) -> Msg {
        let mut st = self.lock();
        let (mut total, mut free) = (st.total.clone(), st.available.clone());
        let mut grants = Vec::with_capacity(wanted.len());
        for (index, amounts) in &wanted {
            let demand = Demand::from_amounts(amounts);
            if !free.fits(&demand) {
                return Msg::Reserved { resources: None };
            }
            let reserved = reserved_resources(group, *index, amounts);
            grants.push(bundles::reserve(&mut total, &mut free, &demand, &reserved));
        }
        st.total = total;
        st.available = free;
        st.bundles
            .entry(group)
            .or_insert((job, Vec::new()))
            .1
            .extend(grants);
        tracing::info!(node = %self.id, %group, bundles = wanted.len(), "node: bundles reserved");
        self.recheck_infeasible(&mut st);
        self.dispatch(&mut st);
        Msg::Reserved {
            resources: Some((st.total.amounts(), st.available.amounts())),
        }
    }

    /// Ends `group`'s bundles here; answers with the node's new books.
    pub(super) fn return_bundles(self: &Arc<Self>, group: PlacementGroupId) -> Msg {
        let mut st = self.lock();
        self.end_group(
            &mut st,
            group,
            &format!("placement group {group} was removed"),
        );
        Msg::Reserved {
            resources: Some((st.total.amounts(), st.available.amounts())),
        }
    }

    /// Ends the bundles of `job`'s groups here (its driver is gone).
    pub(super) fn end_job_groups(self: &Arc<Self>, st: &mut State, job: u32) {
        let groups: Vec<PlacementGroupId> = st
            .bundles
            .iter()
            .filter(|(_, (j, _))| *j == job)
            .map(|(g, _)| *g)
            .collect();
        for g in groups {
            self.end_group(st, g, &format!("the job of placement group {g} ended"));
        }
    }

    fn end_group(self: &Arc<Self>, st: &mut State, group: PlacementGroupId, why: &str) {
        let prefix = group_prefix(group);
        if let Some((_, grants)) = st.bundles.remove(&group) {
            let (mut total, mut free) = (st.total.clone(), st.available.clone());
            bundles::unreserve(&mut total, &mut free, &grants, &prefix);
            st.total = total;
            st.available = free;
        }
        let in_group = |d: &Demand| d.asks_prefixed(&prefix);
        let removed = Error::PlacementGroupRemoved(group.to_string());
        // Waiting tasks fail now; running ones finish.
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut st.queue)
            .into_iter()
            .partition(|q| in_group(&q.demand));
        st.queue = kept.into();
        let (gone_too, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut st.infeasible)
            .into_iter()
            .partition(|(q, _)| in_group(&q.demand));
        st.infeasible = kept;
        for q in gone.into_iter().chain(gone_too.into_iter().map(|(q, _)| q)) {
            let _ = q.reply.send(Msg::TaskDone {
                task_id: q.spec.task_id,
                result: Err(removed.clone()),
            });
        }
        // Its actors, waiting or alive here, die.
        let died = |actor: &crate::id::ObjectId| Error::ActorDied {
            actor: actor.to_string(),
            reason: why.to_string(),
        };
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut st.waiting_actors)
            .into_iter()
            .partition(|w| in_group(&w.demand));
        st.waiting_actors = kept.into();
        for w in gone {
            let _ = w.reply.send(Msg::TaskDone {
                task_id: w.actor,
                result: Err(died(&w.actor)),
            });
            if let Some(ActorPlace::Waiting(calls)) = st
                .actors
                .insert(w.actor, ActorPlace::Failed(died(&w.actor)))
            {
                for (msg, reply) in calls {
                    self.route_locked(st, msg, reply);
                }
            }
        }
        let alive: Vec<(crate::id::ObjectId, u32)> = st
            .actors
            .iter()
            .filter_map(|(id, place)| match place {
                ActorPlace::Local { job, grant, .. } if in_group(&grant.demand) => {
                    Some((*id, *job))
                }
                _ => None,
            })
            .collect();
        for (actor, job) in alive {
            if let Some(ActorPlace::Local { grant, .. }) =
                st.actors.insert(actor, ActorPlace::Failed(died(&actor)))
            {
                st.available.give(&grant);
            }
            let kill = Msg::ToActor {
                actor,
                home: self.address.clone(),
                op: ActorOp::Kill,
            };
            self.send_to_worker(st, job, kill);
        }
        self.dispatch(st);
    }
}
