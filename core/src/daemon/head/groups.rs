//! Placement groups at the head: which bundles a group asks for, and where they were
//! reserved. The head places a group against its view of the nodes (see
//! [`crate::sched::bundles::place`]), then asks each chosen node to reserve its bundles;
//! if one refuses (its books moved since its last heartbeat), the others give theirs
//! back and the group waits, tried again every [`RETRY`] until it fits or is removed.
//! A group that no set of the cluster's nodes could ever hold is refused at once.
//!
//! Attempts are serialized (one group placed at a time), so that two groups never
//! count the same free CPU. The table lives in memory: a restarted head forgets its
//! groups, while the nodes keep their bundles until the groups' jobs end.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::Head;
use crate::error::Error;
use crate::id::PlacementGroupId;
use crate::sched::{bundles, Capacity, Demand};
use crate::sync::lock;
use crate::task::group::check_bundles;
use crate::task::PlacementStrategy;
use crate::wire::{self, GroupPhase, Msg, Role};

/// How often a pending group is tried again.
const RETRY: Duration = Duration::from_millis(100);

/// How long a node has to answer a reservation.
const NODE_TIMEOUT: Duration = Duration::from_secs(5);

/// A group as the head keeps it.
pub(super) struct Group {
    job: u32,
    bundles: Vec<Vec<(String, f64)>>,
    strategy: PlacementStrategy,
    phase: GroupPhase,
}

/// The bundles one node is asked to reserve: each its index and amounts.
type Share = Vec<(usize, Vec<(String, f64)>)>;

/// The head's groups, by id.
pub(super) type Groups = HashMap<PlacementGroupId, Group>;

impl Head {
    /// Creates `group` (or answers where it stands, if it exists): reserved now,
    /// pending until nodes have room, or refused if it can never fit.
    pub(super) async fn create_group(
        self: &Arc<Self>,
        job: u32,
        group: PlacementGroupId,
        bundles: Vec<Vec<(String, f64)>>,
        strategy: PlacementStrategy,
    ) -> Msg {
        if let Some(g) = lock(&self.groups).get(&group) {
            return state(Ok(g.phase.clone()));
        }
        if let Err(e) = check_bundles(&bundles) {
            return state(Err(e));
        }
        let _placing = self.placing.lock().await;
        let demands: Vec<Demand> = bundles.iter().map(|b| Demand::from_amounts(b)).collect();
        let phase = match self
            .try_place(job, group, &bundles, &demands, strategy)
            .await
        {
            Ok(phase) => phase,
            Err(e) => {
                tracing::info!(%group, "head: placement group refused: {e}");
                return state(Err(e));
            }
        };
        let pending = phase == GroupPhase::Pending;
        lock(&self.groups).insert(
            group,
            Group {
                job,
                bundles,
                strategy,
                phase: phase.clone(),
            },
        );
        if pending {
            tracing::info!(%group, "head: placement group waits for room");
            let head = self.clone();
            tokio::spawn(async move { head.retry_group(group).await });
        }
        state(Ok(phase))
    }

    /// Where `group` stands; a group the head never saw fails.
    pub(super) fn lookup_group(&self, group: PlacementGroupId) -> Msg {
        match lock(&self.groups).get(&group) {
            Some(g) => state(Ok(g.phase.clone())),
            None => state(Err(unknown(group))),
        }
    }

    /// Removes `group`: its nodes give back its bundles (and end its actors).
    pub(super) async fn remove_group(&self, group: PlacementGroupId) -> Msg {
        let _placing = self.placing.lock().await;
        let nodes = match lock(&self.groups).get_mut(&group) {
            None => return state(Err(unknown(group))),
            Some(g) => match std::mem::replace(&mut g.phase, GroupPhase::Removed) {
                GroupPhase::Created { nodes } => nodes,
                _ => Vec::new(),
            },
        };
        let mut distinct = nodes;
        distinct.sort();
        distinct.dedup();
        for node in distinct {
            if let Err(e) = self.ask_node(&node, &Msg::ReturnBundles { group }).await {
                tracing::warn!(%group, %node, "head: a node did not give back its bundles: {e}");
            }
        }
        tracing::info!(%group, "head: placement group removed");
        state(Ok(GroupPhase::Removed))
    }

    /// Tries a pending group every [`RETRY`] until it is placed or removed.
    async fn retry_group(self: Arc<Self>, group: PlacementGroupId) {
        loop {
            tokio::time::sleep(RETRY).await;
            let _placing = self.placing.lock().await;
            let (job, bundles, strategy) = match lock(&self.groups).get(&group) {
                Some(g) if g.phase == GroupPhase::Pending => (g.job, g.bundles.clone(), g.strategy),
                _ => return,
            };
            let demands: Vec<Demand> = bundles.iter().map(|b| Demand::from_amounts(b)).collect();
            // A group that no longer fits the nodes alive (one left) keeps waiting: the
            // node may come back, or another join.
            if let Ok(phase @ GroupPhase::Created { .. }) = self
                .try_place(job, group, &bundles, &demands, strategy)
                .await
            {
                tracing::info!(%group, "head: placement group placed");
                if let Some(g) = lock(&self.groups).get_mut(&group) {
                    g.phase = phase;
                }
                return;
            }
        }
    }

    /// One attempt: places the bundles against the view of the alive nodes and asks
    /// each chosen node to reserve its share. `Pending` if they do not fit now or a
    /// node refused (what others reserved is given back); an error if they never can.
    async fn try_place(
        &self,
        job: u32,
        group: PlacementGroupId,
        amounts: &[Vec<(String, f64)>],
        demands: &[Demand],
        strategy: PlacementStrategy,
    ) -> Result<GroupPhase, Error> {
        let alive: Vec<_> = self.view().into_iter().filter(|n| n.alive).collect();
        let totals: Vec<Capacity> = alive
            .iter()
            .map(|n| Capacity::from_amounts(&n.total))
            .collect();
        let free: Vec<Capacity> = alive
            .iter()
            .map(|n| Capacity::from_amounts(&n.available))
            .collect();
        let Some(chosen) = bundles::place(demands, strategy, &totals, &free)? else {
            return Ok(GroupPhase::Pending);
        };
        // Each chosen node (an index into `alive`) and its bundles.
        let mut per_node: Vec<(usize, Share)> = Vec::new();
        for (bundle, &n) in chosen.iter().enumerate() {
            let entry = match per_node.iter_mut().position(|(m, _)| *m == n) {
                Some(i) => &mut per_node[i].1,
                None => {
                    per_node.push((n, Vec::new()));
                    &mut per_node.last_mut().expect("just pushed").1
                }
            };
            entry.push((bundle, amounts[bundle].clone()));
        }
        let mut reserved = Vec::new();
        for (n, wanted) in per_node {
            let node = &alive[n];
            let ask = Msg::ReserveBundles {
                job,
                group,
                bundles: wanted,
            };
            match self.ask_node(&node.node_id, &ask).await {
                Ok(true) => reserved.push(node.node_id.clone()),
                Ok(false) => {
                    tracing::debug!(%group, node = %node.node_id, "head: a node had no room");
                    return self.give_back(group, reserved).await;
                }
                Err(e) => {
                    tracing::info!(%group, node = %node.node_id, "head: a node did not reserve: {e}");
                    return self.give_back(group, reserved).await;
                }
            }
        }
        Ok(GroupPhase::Created {
            nodes: chosen.iter().map(|&n| alive[n].node_id.clone()).collect(),
        })
    }

    async fn give_back(
        &self,
        group: PlacementGroupId,
        reserved: Vec<String>,
    ) -> Result<GroupPhase, Error> {
        for node in reserved {
            if let Err(e) = self.ask_node(&node, &Msg::ReturnBundles { group }).await {
                tracing::warn!(%group, %node, "head: a node did not give back its bundles: {e}");
            }
        }
        Ok(GroupPhase::Pending)
    }

    /// Sends a bundle request to the node `node_id` and takes its new books into the
    /// view; `false` if it had no room.
    async fn ask_node(&self, node_id: &str, msg: &Msg) -> Result<bool, String> {
        let address = lock(&self.nodes)
            .get(node_id)
            .map(|(v, _)| v.address.clone())
            .ok_or_else(|| format!("the head does not know node {node_id}"))?;
        let exchange = async {
            let (mut s, _) = wire::connect(&address, &self.token, Role::Head).await?;
            wire::write_msg(&mut s, msg).await?;
            wire::read_msg::<_, Msg>(&mut s).await
        };
        let answer = tokio::time::timeout(NODE_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("{address} did not answer in {NODE_TIMEOUT:?}"))?
            .map_err(|e| e.to_string())?;
        match answer {
            Msg::Reserved {
                resources: Some((total, available)),
            } => {
                if let Some((v, _)) = lock(&self.nodes).get_mut(node_id) {
                    v.total = total;
                    v.available = available;
                }
                Ok(true)
            }
            Msg::Reserved { resources: None } => Ok(false),
            Msg::Failed { reason } => Err(reason),
            other => Err(format!("expected Reserved, got {}", other.name())),
        }
    }
}

fn state(state: Result<GroupPhase, Error>) -> Msg {
    Msg::GroupState { state }
}

fn unknown(group: PlacementGroupId) -> Error {
    Error::PlacementGroupRemoved(format!("the head does not know placement group {group}"))
}
