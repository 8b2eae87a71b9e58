//! Where work goes: the strategies (default, spread, node affinity; a placement group's
//! calls arrive as node affinity), whether some node
//! could ever run a demand, which peer has room, which running task a short task can
//! be pipelined behind, and why waiting work waits (for `prism status`).

use super::{InFlight, Node, State};
use crate::error::Error;
use crate::id::ObjectId;
use crate::sched::{Demand, Grant};
use crate::task::group::PREFIX;
use crate::task::Strategy;
use crate::wire::PendingView;

/// Where a task's strategy sends it.
pub(super) enum Placement {
    /// Local first, then peers with room (see [`Node::dispatch`]).
    Default,
    /// Here, and nowhere else.
    Here,
    /// To this peer.
    Peer(String),
    /// Nowhere: the strategy cannot be met.
    Fail(Error),
}

impl Node {
    /// What waits here, grouped by function (or actor class) and demand, with why (at
    /// most 16 groups, counted over the first 10,000 waiting: a node may queue millions,
    /// and `queued` has the full count).
    pub(super) fn pending(&self, st: &State) -> Vec<PendingView> {
        // (is an actor, function or class, demand, pinned, count)
        let mut groups: Vec<(bool, &str, &Demand, bool, u32)> = Vec::new();
        let waiting = st
            .queue
            .iter()
            .chain(st.infeasible.iter().map(|(q, _)| q))
            .map(|q| (false, q.spec.function.as_str(), &q.demand, q.pinned))
            .chain(
                st.waiting_actors
                    .iter()
                    .map(|w| (true, w.class.as_str(), &w.demand, w.pinned)),
            )
            .take(10_000);
        for (actor, what, demand, pinned) in waiting {
            let same = groups
                .iter()
                .position(|g| g.0 == actor && g.1 == what && g.2 == demand);
            match same {
                Some(i) => groups[i].4 += 1,
                None if groups.len() < 16 => groups.push((actor, what, demand, pinned, 1)),
                None => {}
            }
        }
        groups
            .into_iter()
            .map(|(actor, what, demand, pinned, count)| PendingView {
                what: if actor {
                    format!("actor {what}")
                } else {
                    what.to_string()
                },
                count,
                demand: demand.describe(),
                reason: self.why_waiting(st, demand, pinned),
            })
            .collect()
    }

    /// Why work asking for `demand` cannot start now.
    pub(super) fn why_waiting(&self, st: &State, demand: &Demand, pinned: bool) -> String {
        let free = st.available.amounts();
        let total = st.total.amounts();
        let amount = |list: &[(String, f64)], name: &str| {
            list.iter()
                .find(|(n, _)| n == name)
                .map_or(0.0, |(_, v)| *v)
        };
        let short: Vec<String> = demand
            .describe()
            .into_iter()
            .filter(|(name, v)| amount(&free, name) < *v)
            .map(|(name, v)| {
                format!(
                    "{v} {name} asked, {} of {} free here",
                    amount(&free, &name),
                    amount(&total, &name)
                )
            })
            .collect();
        let here = if short.is_empty() {
            "waits its turn in the queue".to_string()
        } else {
            short.join(", ")
        };
        let elsewhere = if self.feasible_somewhere(st, demand, pinned).is_err() {
            "no live node could ever run it: it fails unless one that can joins"
        } else if pinned {
            "it must run on this node (its strategy or a peer placed it here)"
        } else if !st.peers.values().any(|p| p.view.alive) {
            "no other node is alive"
        } else {
            "no other node has room for it now"
        };
        format!("{here}; {elsewhere}")
    }

    /// `Ok` if this node, or (unless `pinned`) some live peer, could ever meet `demand`;
    /// this node's verdict otherwise.
    pub(super) fn feasible_somewhere(
        &self,
        st: &State,
        demand: &Demand,
        pinned: bool,
    ) -> Result<(), Error> {
        let here = st.total.check_feasible(demand);
        let elsewhere = !pinned
            && st
                .peers
                .values()
                .any(|p| p.view.alive && p.total.check_feasible(demand).is_ok());
        if elsewhere {
            Ok(())
        } else {
            here
        }
    }

    /// Where a task's strategy sends it, before load is considered. A task a peer handed
    /// here was placed there already.
    pub(super) fn place(
        &self,
        st: &mut State,
        strategy: &Strategy,
        demand: &Demand,
        from_peer: bool,
    ) -> Placement {
        let live_peers = st
            .peers
            .iter()
            .filter(|(_, p)| p.view.alive && p.outbox.is_some());
        match strategy {
            _ if from_peer => Placement::Default,
            Strategy::Default => Placement::Default,
            Strategy::NodeAffinity { node_id, soft } => {
                let verdict = if *node_id == self.id {
                    st.total.check_feasible(demand).map(|()| Placement::Here)
                } else {
                    match live_peers.clone().find(|(id, _)| *id == node_id) {
                        // A call into a bundle there: the peer's books, not this node's
                        // last view of them, say whether the bundle is still there.
                        Some(_) if demand.asks_prefixed(PREFIX) => {
                            Ok(Placement::Peer(node_id.clone()))
                        }
                        Some((_, p)) => p
                            .total
                            .check_feasible(demand)
                            .map(|()| Placement::Peer(node_id.clone())),
                        None => Err(Error::Infeasible {
                            resource: format!("node:{node_id} (no such live node)"),
                            requested: 1.0,
                            capacity: 0.0,
                        }),
                    }
                };
                match verdict {
                    Ok(p) => p,
                    Err(_) if *soft => Placement::Default,
                    Err(e) => Placement::Fail(e),
                }
            }
            // The caller's runtime turns these into node affinity and bundle resources.
            Strategy::PlacementGroup { group, .. } => Placement::Fail(Error::Cluster(format!(
                "a call into placement group {group} reached a node unplaced"
            ))),
            Strategy::Spread => {
                let asked = demand.describe();
                let free_for = |free: &[(String, f64)]| {
                    asked.iter().all(|(name, v)| {
                        free.iter()
                            .find(|(n, _)| n == name)
                            .map_or(0.0, |(_, f)| *f)
                            >= *v
                    })
                };
                // In turn over the nodes that have room for it now (as last reported).
                // When none has, it waits here unpinned, for whichever node frees
                // first: pinned to a node chosen in turn, it could wait there forever
                // behind actors that hold the node's CPUs until the tasks' results come
                // in, while another node stood idle. Chosen here, it stays unpinned too,
                // for the same reason: the room it was chosen for may be gone by its
                // turn in the queue.
                let mut nodes: Vec<(String, bool)> = live_peers
                    .filter(|(_, p)| p.total.check_feasible(demand).is_ok())
                    .map(|(id, p)| (id.clone(), free_for(&p.view.available)))
                    .collect();
                if st.total.check_feasible(demand).is_ok() {
                    nodes.push((self.id.clone(), st.available.fits(demand)));
                }
                nodes.retain(|(_, room)| *room);
                if nodes.is_empty() {
                    return Placement::Default;
                }
                let mut nodes: Vec<String> = nodes.into_iter().map(|(id, _)| id).collect();
                nodes.sort();
                let pick = nodes.swap_remove(st.spread_turn % nodes.len());
                st.spread_turn += 1;
                if pick == self.id {
                    Placement::Default
                } else {
                    Placement::Peer(pick)
                }
            }
        }
    }
}

/// The last task of a chain of `job` running here on exactly `demand` (a running task
/// and those sent to run right after it, fewer than `depth` of them): the next task of
/// that shape can be sent to run right after it.
/// Only tasks that ask for CPUs alone are pipelined, so that a task that waits can hand
/// its successor the CPUs it lends and nothing else is ever double-booked.
pub(super) fn pipeline_slot(st: &State, job: u32, demand: &Demand, depth: u32) -> Option<ObjectId> {
    if demand.gpu > 0 || demand.memory > 0 || !demand.custom.is_empty() {
        return None;
    }
    // How many tasks wait ahead of `r` in its chain, and the resources the chain runs on.
    fn chain<'a>(st: &'a State, mut r: &'a InFlight, depth: u32) -> Option<(u32, &'a Grant)> {
        let mut ahead = 0;
        loop {
            if let Some(g) = &r.grant {
                return Some((ahead, g));
            }
            r = st.in_flight.get(&r.pred?)?;
            ahead += 1;
            if ahead > depth {
                return None;
            }
        }
    }
    st.in_flight
        .iter()
        .find(|(_, r)| {
            r.job == Some(job)
                && !r.lease
                && r.successor.is_none()
                && !r.blocked
                && chain(st, r, depth)
                    .is_some_and(|(ahead, g)| ahead < depth && g.demand == *demand)
        })
        .map(|(id, _)| *id)
}

/// A connected live peer that can run `demand` and has room for it (fewer tasks
/// outstanding there than `per_cpu` times its CPUs, at least `per_cpu`): the one with the
/// fewest tasks outstanding per CPU, and that number.
pub(super) fn choose_peer(st: &State, demand: &Demand, per_cpu: u32) -> Option<(String, f64)> {
    st.peers
        .iter()
        .filter(|(_, p)| p.view.alive && p.outbox.is_some())
        .filter(|(_, p)| p.total.check_feasible(demand).is_ok())
        .filter_map(|(id, p)| {
            let per_task = (demand.cpu as f64 / crate::sched::UNIT as f64).max(0.25);
            let room = ((p.cpus / per_task) * per_cpu as f64).max(per_cpu as f64) as u32;
            (p.outstanding < room).then(|| (id, p.outstanding as f64 / p.cpus.max(0.25)))
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(id, load)| (id.clone(), load))
}
