//! Placement groups as this process sees them: the groups it created or looked up,
//! whether each is ready (and on which node each bundle sits), and the calls waiting
//! for one to be ready.
//!
//! Embedded, the one node is the pool: a group is reserved in it at once if it fits,
//! else a thread tries again (1 ms, backing off to 20 ms) until it fits or is removed.
//! On a cluster the head places and reserves the group; a pending group is asked after
//! every 20 ms. A call placed in a group goes in as soon as the group is ready, its
//! resources renamed to the bundle's (see [`crate::task::group`]) and, on a cluster,
//! held to the bundle's node; a call of a group that was removed fails.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use super::{Backend, Runtime};
use crate::error::{Error, Result};
use crate::id::PlacementGroupId;
use crate::sched::{bundles, Demand, Grant};
use crate::sync::lock;
use crate::task::group::{group_prefix, in_bundle, reserved_resources};
use crate::task::{PlacementStrategy, Strategy, TaskOptions};
use crate::wire::{GroupPhase, Msg};

/// How often a cluster's pending group is asked after.
const POLL: Duration = Duration::from_millis(20);

/// The longest an embedded pending group waits between two tries.
const MAX_BACKOFF: Duration = Duration::from_millis(20);

/// A call waiting for its group: given where the group's bundles are, or why not.
type Waiter = Box<dyn FnOnce(Result<Vec<String>>) + Send>;

enum Phase {
    Pending,
    /// Ready: each bundle's node.
    Ready(Vec<String>),
    Failed(Error),
}

struct Entry {
    phase: Phase,
    /// What the embedded pool gave the bundles, for their removal.
    grants: Vec<Grant>,
    waiters: Vec<Waiter>,
    /// For calls in any bundle spread over nodes: the next bundle to use.
    turn: usize,
}

/// The placement groups this process knows.
#[derive(Default)]
pub(crate) struct Groups {
    table: Mutex<HashMap<PlacementGroupId, Entry>>,
    changed: Condvar,
}

impl Groups {
    /// Settles a pending `group` as ready on `nodes` (with what the pool gave its
    /// bundles) and runs the calls that waited for it; hands `grants` back if the
    /// group is no longer pending (removed meanwhile).
    fn ready(
        &self,
        group: PlacementGroupId,
        nodes: Vec<String>,
        grants: Vec<Grant>,
    ) -> std::result::Result<(), Vec<Grant>> {
        let waiters = {
            let mut table = lock(&self.table);
            match table.get_mut(&group) {
                Some(e) if matches!(e.phase, Phase::Pending) => {
                    e.phase = Phase::Ready(nodes.clone());
                    e.grants = grants;
                    std::mem::take(&mut e.waiters)
                }
                _ => return Err(grants),
            }
        };
        self.changed.notify_all();
        for w in waiters {
            w(Ok(nodes.clone()));
        }
        Ok(())
    }

    /// Fails `group` with `err` (known or not), and the calls that waited for it;
    /// returns what the pool gave its bundles, to be given back.
    fn fail(&self, group: PlacementGroupId, err: Error) -> Vec<Grant> {
        let (waiters, grants) = {
            let mut table = lock(&self.table);
            let e = table.entry(group).or_insert_with(|| entry(Phase::Pending));
            e.phase = Phase::Failed(err.clone());
            (
                std::mem::take(&mut e.waiters),
                std::mem::take(&mut e.grants),
            )
        };
        self.changed.notify_all();
        for w in waiters {
            w(Err(err.clone()));
        }
        grants
    }

    /// Fails every group still pending with [`Error::Shutdown`], so that the calls
    /// waiting for one (an actor's spawner too) return when the runtime stops.
    pub fn shut_down(&self) {
        let pending: Vec<PlacementGroupId> = lock(&self.table)
            .iter()
            .filter(|(_, e)| matches!(e.phase, Phase::Pending))
            .map(|(g, _)| *g)
            .collect();
        for group in pending {
            self.fail(group, Error::Shutdown);
        }
    }

    fn pending(&self, group: PlacementGroupId) -> bool {
        matches!(
            lock(&self.table).get(&group).map(|e| &e.phase),
            Some(Phase::Pending)
        )
    }
}

fn entry(phase: Phase) -> Entry {
    Entry {
        phase,
        grants: Vec::new(),
        waiters: Vec::new(),
        turn: 0,
    }
}

fn removed(group: PlacementGroupId) -> Error {
    Error::PlacementGroupRemoved(group.to_string())
}

impl Runtime {
    /// Creates a placement group of `bundles` (each its amounts) under `strategy`:
    /// reserved now if it fits, else pending; an error if it can never fit.
    pub fn create_group(
        self: &Arc<Self>,
        bundles: Vec<Vec<(String, f64)>>,
        strategy: PlacementStrategy,
    ) -> Result<PlacementGroupId> {
        let group = PlacementGroupId::from(self.next_id());
        match &self.backend {
            Backend::Embedded(_) => {
                let demands: Vec<Demand> =
                    bundles.iter().map(|b| Demand::from_amounts(b)).collect();
                let total = self.pool.total();
                bundles::place(
                    &demands,
                    strategy,
                    std::slice::from_ref(&total),
                    std::slice::from_ref(&total),
                )?;
                let asks: Vec<(Demand, Vec<(String, f64)>)> = demands
                    .into_iter()
                    .zip(&bundles)
                    .enumerate()
                    .map(|(i, (d, b))| (d, reserved_resources(group, i, b)))
                    .collect();
                lock(&self.groups.table).insert(group, entry(Phase::Pending));
                if !self.try_reserve(group, &asks) {
                    tracing::debug!(%group, "placement group waits for room");
                    let rt = Arc::downgrade(self);
                    std::thread::Builder::new()
                        .name("prism-group".into())
                        .spawn(move || retry_reserve(rt, group, asks))
                        .map_err(|e| Error::io("starting a placement group's thread", e))?;
                }
            }
            Backend::Cluster(c) => {
                let answer = c.ask_head(Msg::CreateGroup {
                    job: c.job(),
                    group,
                    bundles,
                    strategy,
                })?;
                let phase = group_state(answer)?;
                lock(&self.groups.table).insert(group, entry(Phase::Pending));
                self.take_phase(group, phase)?;
            }
        }
        Ok(group)
    }

    /// Embedded: reserves the group's bundles if they all fit now; `true` once the
    /// group needs no more tries (reserved, or removed meanwhile).
    fn try_reserve(&self, group: PlacementGroupId, asks: &[(Demand, Vec<(String, f64)>)]) -> bool {
        if !self.groups.pending(group) {
            return true;
        }
        let Some(grants) = self.pool.reserve_group(asks) else {
            return false;
        };
        let nodes = vec![self.node_id.clone(); asks.len()];
        if let Err(grants) = self.groups.ready(group, nodes, grants) {
            self.pool
                .remove_group(&grants, &group_prefix(group), &removed(group));
        }
        true
    }

    /// Cluster: takes what the head says of `group` into the table; a pending group is
    /// asked after until it is settled.
    fn take_phase(self: &Arc<Self>, group: PlacementGroupId, phase: GroupPhase) -> Result<()> {
        match phase {
            GroupPhase::Created { nodes } => {
                let _ = self.groups.ready(group, nodes, Vec::new());
            }
            GroupPhase::Removed => {
                self.groups.fail(group, removed(group));
            }
            GroupPhase::Pending => {
                let rt = Arc::downgrade(self);
                std::thread::Builder::new()
                    .name("prism-group".into())
                    .spawn(move || poll_head(rt, group))
                    .map_err(|e| Error::io("starting a placement group's thread", e))?;
            }
        }
        Ok(())
    }

    /// Each bundle's node once `group` is ready, waiting at most `timeout`; fails if
    /// the group was removed, or with [`Error::Timeout`].
    pub fn wait_group(
        self: &Arc<Self>,
        group: PlacementGroupId,
        timeout: Duration,
    ) -> Result<Vec<String>> {
        self.know_group(group)?;
        let deadline = Instant::now() + timeout;
        self.blocking(|| {
            let mut table = lock(&self.groups.table);
            loop {
                match table.get(&group).map(|e| &e.phase) {
                    Some(Phase::Ready(nodes)) => return Ok(nodes.clone()),
                    Some(Phase::Failed(e)) => return Err(e.clone()),
                    None => return Err(removed(group)),
                    Some(Phase::Pending) => {}
                }
                let wait = match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return Err(Error::Timeout(timeout)),
                };
                table = self
                    .groups
                    .changed
                    .wait_timeout(table, wait)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        })
    }

    /// Makes sure the table has `group`: a group another process created is looked up
    /// at the head (and asked after while pending).
    fn know_group(self: &Arc<Self>, group: PlacementGroupId) -> Result<()> {
        if lock(&self.groups.table).contains_key(&group) {
            return Ok(());
        }
        match &self.backend {
            Backend::Embedded(_) => Err(removed(group)),
            Backend::Cluster(c) => {
                let phase = group_state(c.ask_head(Msg::LookupGroup { group })?)?;
                let mut table = lock(&self.groups.table);
                if table.contains_key(&group) {
                    return Ok(());
                }
                table.insert(group, entry(Phase::Pending));
                drop(table);
                self.take_phase(group, phase)
            }
        }
    }

    /// Removes `group`: its bundles are freed, its waiting calls fail and its actors
    /// end.
    pub fn remove_group(self: &Arc<Self>, group: PlacementGroupId) -> Result<()> {
        let err = removed(group);
        match &self.backend {
            Backend::Embedded(e) => {
                if !lock(&self.groups.table).contains_key(&group) {
                    return Err(err);
                }
                let grants = self.groups.fail(group, err.clone());
                let prefix = group_prefix(group);
                self.pool.remove_group(&grants, &prefix, &err);
                e.actors.end_group(&prefix, &err);
            }
            Backend::Cluster(c) => {
                let answer = c.ask_head(Msg::RemoveGroup { group })?;
                group_state(answer)?;
                self.groups.fail(group, err);
            }
        }
        tracing::debug!(%group, "placement group removed");
        Ok(())
    }

    /// Runs `go` with `options` placed in their group once it is ready (at once if it
    /// is, or if the call is in no group), or with why not.
    pub fn when_placed(
        self: &Arc<Self>,
        options: TaskOptions,
        go: impl FnOnce(Result<TaskOptions>) + Send + 'static,
    ) {
        let Strategy::PlacementGroup { group, bundle } = options.scheduling.clone() else {
            return go(Ok(options));
        };
        if let Err(e) = self.know_group(group) {
            return go(Err(e));
        }
        let rt = Arc::downgrade(self);
        let placed = move |nodes: Result<Vec<String>>| {
            let placed = match (nodes, rt.upgrade()) {
                (Ok(nodes), Some(rt)) => rt.place_in(&options, group, bundle, &nodes),
                (Err(e), _) => Err(e),
                (_, None) => Err(Error::Shutdown),
            };
            go(placed)
        };
        let mut table = lock(&self.groups.table);
        let Some(e) = table.get_mut(&group) else {
            drop(table);
            return placed(Err(removed(group)));
        };
        match &e.phase {
            Phase::Pending => e.waiters.push(Box::new(placed)),
            Phase::Ready(nodes) => {
                let nodes = nodes.clone();
                drop(table);
                placed(Ok(nodes))
            }
            Phase::Failed(err) => {
                let err = err.clone();
                drop(table);
                placed(Err(err))
            }
        }
    }

    /// The options of a call in `bundle` (any if `None`) of a ready group whose bundles
    /// are on `nodes`.
    fn place_in(
        &self,
        options: &TaskOptions,
        group: PlacementGroupId,
        bundle: Option<usize>,
        nodes: &[String],
    ) -> Result<TaskOptions> {
        if let Some(i) = bundle {
            if i >= nodes.len() {
                return Err(Error::Config(format!(
                    "placement group {group} has {} bundle(s): there is no bundle {i}",
                    nodes.len()
                )));
            }
        }
        let mut placed = in_bundle(options, group, bundle);
        if let Backend::Cluster(_) = &self.backend {
            let node = match bundle {
                Some(i) => nodes[i].clone(),
                None if nodes.iter().all(|n| *n == nodes[0]) => nodes[0].clone(),
                None => {
                    let mut table = lock(&self.groups.table);
                    let turn = table.get_mut(&group).map_or(0, |e| {
                        e.turn = e.turn.wrapping_add(1);
                        e.turn
                    });
                    nodes[turn % nodes.len()].clone()
                }
            };
            placed.scheduling = Strategy::NodeAffinity {
                node_id: node,
                soft: false,
            };
        } else {
            placed.scheduling = Strategy::Default;
        }
        Ok(placed)
    }
}

/// Embedded: tries a pending group's reservation until it holds, the group is removed
/// or the runtime is gone.
fn retry_reserve(
    rt: Weak<Runtime>,
    group: PlacementGroupId,
    asks: Vec<(Demand, Vec<(String, f64)>)>,
) {
    let mut pause = Duration::from_millis(1);
    loop {
        std::thread::sleep(pause);
        let Some(rt) = rt.upgrade() else { return };
        if rt.pool.is_shut_down() || rt.try_reserve(group, &asks) {
            return;
        }
        pause = (pause * 2).min(MAX_BACKOFF);
    }
}

/// Cluster: asks the head after a pending group until it is settled or the runtime is
/// gone.
fn poll_head(rt: Weak<Runtime>, group: PlacementGroupId) {
    loop {
        std::thread::sleep(POLL);
        let Some(rt) = rt.upgrade() else { return };
        let Backend::Cluster(c) = &rt.backend else {
            return;
        };
        if !rt.groups.pending(group) {
            return;
        }
        let answer = c.ask_head(Msg::LookupGroup { group });
        match answer.and_then(group_state) {
            Ok(GroupPhase::Pending) => {}
            Ok(GroupPhase::Created { nodes }) => {
                let _ = rt.groups.ready(group, nodes, Vec::new());
                return;
            }
            Ok(GroupPhase::Removed) => {
                rt.groups.fail(group, removed(group));
                return;
            }
            Err(Error::Shutdown) => return,
            Err(e) => {
                rt.groups.fail(group, e);
                return;
            }
        }
    }
}

/// The head's answer about a group.
fn group_state(answer: Msg) -> Result<GroupPhase> {
    match answer {
        Msg::GroupState { state } => state,
        Msg::Failed { reason } => Err(Error::Cluster(reason)),
        other => Err(Error::Cluster(format!(
            "the head answered {} about a placement group",
            other.name()
        ))),
    }
}
