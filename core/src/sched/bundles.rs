//! Placing a placement group's bundles: which node takes each bundle under a
//! [`PlacementStrategy`], whether any set of nodes could ever hold the group, and the
//! books of a node that reserves bundles (their amounts taken from its free resources
//! and given back under the group's own names; see [`crate::task::group`]).
//!
//! Placement is all or nothing: [`place`] finds a node for every bundle against the
//! free amounts, or none; the embedded pool then reserves them under one lock, and the
//! head reserves them node by node, giving back what it took if one node refuses.

use super::books::{Capacity, Demand, Grant};
use crate::error::{Error, Result};
use crate::task::PlacementStrategy;

/// The most nodes-to-bundles assignments `StrictSpread` tries before giving up.
const SEARCH_LIMIT: usize = 100_000;

/// A node for every bundle (indices into `nodes`, one per bundle) such that each node
/// can take what it is given, under `strategy`; `None` if there is none.
pub(crate) fn assign(
    bundles: &[Demand],
    strategy: PlacementStrategy,
    nodes: &[Capacity],
) -> Option<Vec<usize>> {
    if bundles.is_empty() {
        return Some(Vec::new());
    }
    let mut room: Vec<Capacity> = nodes.to_vec();
    match strategy {
        PlacementStrategy::StrictPack => {
            let sum = Demand::sum(bundles);
            let node = (0..room.len()).find(|&n| room[n].fits(&sum))?;
            Some(vec![node; bundles.len()])
        }
        PlacementStrategy::Pack => {
            let sum = Demand::sum(bundles);
            if let Some(node) = (0..room.len()).find(|&n| room[n].fits(&sum)) {
                return Some(vec![node; bundles.len()]);
            }
            // Fill the nodes already used before opening another.
            let mut used: Vec<usize> = Vec::new();
            let mut out = Vec::with_capacity(bundles.len());
            for b in bundles {
                let node = used
                    .iter()
                    .copied()
                    .chain((0..room.len()).filter(|n| !used.contains(n)))
                    .find(|&n| room[n].fits(b))?;
                room[node].take(b);
                if !used.contains(&node) {
                    used.push(node);
                }
                out.push(node);
            }
            Some(out)
        }
        PlacementStrategy::Spread => {
            let mut count = vec![0usize; room.len()];
            let mut out = Vec::with_capacity(bundles.len());
            for b in bundles {
                let node = (0..room.len())
                    .filter(|&n| room[n].fits(b))
                    .min_by_key(|&n| count[n])?;
                room[node].take(b);
                count[node] += 1;
                out.push(node);
            }
            Some(out)
        }
        PlacementStrategy::StrictSpread => {
            if bundles.len() > room.len() {
                return None;
            }
            let mut out = Vec::with_capacity(bundles.len());
            let mut steps = 0;
            spread_apart(
                bundles,
                &room,
                &mut vec![false; room.len()],
                &mut out,
                &mut steps,
            )
            .then_some(out)
        }
    }
}

/// Backtracking: each bundle on a node no other bundle has, that has room for it.
fn spread_apart(
    bundles: &[Demand],
    room: &[Capacity],
    taken: &mut Vec<bool>,
    out: &mut Vec<usize>,
    steps: &mut usize,
) -> bool {
    let Some(b) = bundles.get(out.len()) else {
        return true;
    };
    for n in 0..room.len() {
        *steps += 1;
        if *steps > SEARCH_LIMIT {
            return false;
        }
        if taken[n] || !room[n].fits(b) {
            continue;
        }
        taken[n] = true;
        out.push(n);
        if spread_apart(bundles, room, taken, out, steps) {
            return true;
        }
        out.pop();
        taken[n] = false;
    }
    false
}

/// Where the bundles go now (`Some`) or must wait for room (`None`), judged against
/// each node's free amounts; fails with [`Error::PlacementGroupInfeasible`] when even
/// the nodes' totals could never hold the group.
pub(crate) fn place(
    bundles: &[Demand],
    strategy: PlacementStrategy,
    totals: &[Capacity],
    free: &[Capacity],
) -> Result<Option<Vec<usize>>> {
    if assign(bundles, strategy, totals).is_none() {
        return Err(infeasible(bundles, strategy, totals));
    }
    Ok(assign(bundles, strategy, free))
}

fn infeasible(bundles: &[Demand], strategy: PlacementStrategy, totals: &[Capacity]) -> Error {
    let describe = |d: &Demand| {
        d.describe()
            .iter()
            .map(|(n, v)| format!("{v} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let asked: Vec<String> = bundles
        .iter()
        .map(|b| format!("{{{}}}", describe(b)))
        .collect();
    let nodes: Vec<String> = totals
        .iter()
        .map(|t| {
            let list: Vec<String> = t
                .amounts()
                .into_iter()
                .filter(|(_, v)| *v > 0.0)
                .map(|(n, v)| format!("{v} {n}"))
                .collect();
            format!("{{{}}}", list.join(", "))
        })
        .collect();
    Error::PlacementGroupInfeasible(format!(
        "no set of nodes could ever hold bundles {} under {strategy:?}: the {} node(s) have {} in total",
        asked.join(" "),
        totals.len(),
        nodes.join(" "),
    ))
}

/// Takes a bundle of `amounts` (its demand `demand`) out of `free`, and adds the
/// bundle's own resources (`reserved`) to both `total` and `free`; returns what was
/// taken, for [`unreserve`].
pub(crate) fn reserve(
    total: &mut Capacity,
    free: &mut Capacity,
    demand: &Demand,
    reserved: &[(String, f64)],
) -> Grant {
    let gpu_ids = free.take(demand);
    total.add(reserved);
    free.add(reserved);
    Grant {
        demand: demand.clone(),
        gpu_ids,
    }
}

/// Ends a group on a node: what its bundles took (`grants`) goes back to `free`, and
/// every resource named with `prefix` leaves both books, so that work of the group
/// still running gives nothing back to them and work still waiting can never fit.
pub(crate) fn unreserve(total: &mut Capacity, free: &mut Capacity, grants: &[Grant], prefix: &str) {
    for g in grants {
        free.give(g);
    }
    total.remove_prefixed(prefix);
    free.remove_prefixed(prefix);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::UNIT;

    fn node(cpus: u64) -> Capacity {
        Capacity::from_amounts(&[("CPU".into(), cpus as f64), ("memory".into(), 1e9)])
    }

    fn cpus(n: u64) -> Demand {
        Demand {
            cpu: n * UNIT,
            ..Demand::default()
        }
    }

    #[test]
    fn each_strategy_places_as_it_promises() {
        let nodes = [node(4), node(4), node(4)];
        let two = [cpus(2), cpus(2)];
        assert_eq!(
            assign(&two, PlacementStrategy::Pack, &nodes),
            Some(vec![0, 0])
        );
        assert_eq!(
            assign(&two, PlacementStrategy::StrictPack, &nodes),
            Some(vec![0, 0])
        );
        assert_eq!(
            assign(&two, PlacementStrategy::Spread, &nodes),
            Some(vec![0, 1])
        );
        assert_eq!(
            assign(&two, PlacementStrategy::StrictSpread, &nodes),
            Some(vec![0, 1])
        );
        // Pack overflows onto a second node; StrictPack cannot.
        let three = [cpus(2), cpus(2), cpus(3)];
        assert_eq!(
            assign(&three, PlacementStrategy::Pack, &nodes),
            Some(vec![0, 0, 1])
        );
        assert_eq!(assign(&three, PlacementStrategy::StrictPack, &nodes), None);
        // Spread reuses nodes once each has one; StrictSpread never does.
        let four = [cpus(1), cpus(1), cpus(1), cpus(1)];
        assert_eq!(
            assign(&four, PlacementStrategy::Spread, &nodes),
            Some(vec![0, 1, 2, 0])
        );
        assert_eq!(assign(&four, PlacementStrategy::StrictSpread, &nodes), None);
        // StrictSpread backtracks: the big bundle needs the big node.
        let uneven = [node(2), node(8)];
        assert_eq!(
            assign(
                &[cpus(2), cpus(6)],
                PlacementStrategy::StrictSpread,
                &uneven
            ),
            Some(vec![0, 1])
        );
        assert_eq!(
            assign(
                &[cpus(6), cpus(2)],
                PlacementStrategy::StrictSpread,
                &uneven
            ),
            Some(vec![1, 0])
        );
    }

    #[test]
    fn a_group_that_could_never_fit_says_so_and_one_that_must_wait_waits() {
        let totals = [node(4), node(4)];
        let err = place(&[cpus(5)], PlacementStrategy::Pack, &totals, &totals).unwrap_err();
        assert!(
            matches!(&err, Error::PlacementGroupInfeasible(m) if m.contains("5 CPU")),
            "{err}"
        );
        let three = [cpus(1), cpus(1), cpus(1)];
        assert!(place(&three, PlacementStrategy::StrictSpread, &totals, &totals).is_err());
        let busy = [node(1), node(0)];
        assert_eq!(
            place(&[cpus(2)], PlacementStrategy::Pack, &totals, &busy).unwrap(),
            None
        );
    }

    #[test]
    fn reserving_renames_and_removing_gives_everything_back() {
        let mut total = node(4);
        let mut free = total.clone();
        let reserved = vec![
            ("pg:g:0:CPU".to_string(), 2.0),
            ("pg:g:CPU".to_string(), 2.0),
        ];
        let grant = reserve(&mut total, &mut free, &cpus(2), &reserved);
        let inside = Demand::of(
            &crate::TaskOptions::default()
                .num_cpus(0.0)
                .resource("pg:g:0:CPU", 2.0),
        )
        .unwrap();
        assert!(free.fits(&inside));
        assert!(!free.fits(&cpus(3)));
        let running = Grant {
            gpu_ids: free.take(&inside),
            demand: inside.clone(),
        };
        unreserve(&mut total, &mut free, &[grant], "pg:g:");
        assert!(
            free.fits(&cpus(4)),
            "the bundle's CPUs are the node's again"
        );
        free.give(&running);
        assert!(
            total.check_feasible(&inside).is_err(),
            "the group's names are gone"
        );
        assert!(!free.fits(&inside));
    }
}
