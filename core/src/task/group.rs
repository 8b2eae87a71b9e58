//! Placement groups as calls see them: a [`Bundle`] of resources, the
//! [`PlacementStrategy`] that spreads a group's bundles over nodes, and the renaming
//! that puts a call into a reserved bundle.
//!
//! A reserved bundle takes its amounts from its node's free resources and gives them
//! back to the node under names of its own: `pg:<group>:<bundle>:<resource>` for that
//! bundle alone and `pg:<group>:<resource>` for the group on that node (the sum of its
//! bundles there), plus a marker, `pg:<group>:<bundle>:bundle`, that every call in the
//! bundle asks a sliver of. A call in bundle `i` asks for the renamed amounts of both
//! names, a call in any bundle for the group's names only; the books, the pool and the
//! node daemons then need nothing new to keep calls inside their bundles, and a call of
//! a removed group can never fit again.

use serde::{Deserialize, Serialize};

use super::TaskOptions;
use crate::config::check_amount;
use crate::error::{Error, Result};
use crate::id::PlacementGroupId;

/// The resources of one bundle of a placement group: reserved together on one node.
///
/// ```
/// let b = prism::Bundle::new().cpus(2.0).resource("fpga", 1.0);
/// assert_eq!(b.amounts().unwrap(), vec![("CPU".to_string(), 2.0), ("fpga".to_string(), 1.0)]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Bundle {
    cpus: f64,
    gpus: f64,
    memory: u64,
    resources: Vec<(String, f64)>,
}

impl Bundle {
    /// An empty bundle; give it some resources.
    pub fn new() -> Bundle {
        Bundle::default()
    }

    /// CPUs (fractions allowed).
    pub fn cpus(mut self, n: f64) -> Bundle {
        self.cpus = n;
        self
    }

    /// GPUs (accounted as an amount: calls in the bundle share its GPUs by amount).
    pub fn gpus(mut self, n: f64) -> Bundle {
        self.gpus = n;
        self
    }

    /// Bytes of the `memory` resource.
    pub fn memory(mut self, bytes: u64) -> Bundle {
        self.memory = bytes;
        self
    }

    /// An amount of a custom resource.
    pub fn resource(mut self, name: impl Into<String>, amount: f64) -> Bundle {
        let name = name.into();
        self.resources.retain(|(n, _)| *n != name);
        self.resources.push((name, amount));
        self
    }

    /// The amounts per resource name (`CPU`, `GPU`, `memory`, custom names), the zero
    /// ones left out; fails on a negative or non-finite amount, a name that is reserved
    /// for placement groups, or an empty bundle.
    pub fn amounts(&self) -> Result<Vec<(String, f64)>> {
        check_amount("a bundle's CPUs", self.cpus)?;
        check_amount("a bundle's GPUs", self.gpus)?;
        let mut out = Vec::new();
        for (name, v) in [("CPU", self.cpus), ("GPU", self.gpus)] {
            if v > 0.0 {
                out.push((name.to_string(), v));
            }
        }
        if self.memory > 0 {
            out.push(("memory".to_string(), self.memory as f64));
        }
        for (name, v) in &self.resources {
            check_amount(name, *v)?;
            if name.starts_with(PREFIX) || matches!(name.as_str(), "CPU" | "GPU" | "memory") {
                return Err(Error::Config(format!(
                    "a bundle's custom resource cannot be named {name:?}"
                )));
            }
            if *v > 0.0 {
                out.push((name.clone(), *v));
            }
        }
        if out.is_empty() {
            return Err(Error::Config(
                "a bundle must ask for some resource (an empty bundle reserves nothing)".into(),
            ));
        }
        Ok(out)
    }
}

/// How a placement group's bundles are spread over nodes (Ray's four strategies). The
/// embedded runtime is one node: every strategy but `StrictSpread` of more than one
/// bundle places the whole group there.
///
/// ```
/// assert_eq!(prism::PlacementStrategy::default(), prism::PlacementStrategy::Pack);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PlacementStrategy {
    /// As few nodes as possible: one if it has room, else the bundles that do not fit
    /// there go to the next nodes.
    #[default]
    Pack,
    /// Over as many nodes as possible: each bundle on the node holding the fewest of
    /// the group's bundles that has room for it.
    Spread,
    /// All bundles on one node, or the group waits.
    StrictPack,
    /// Every bundle on a node of its own, or the group waits.
    StrictSpread,
}

/// The per-bundle marker every call in a bundle asks a sliver of ([`MARKER_PER_CALL`]).
const MARKER: &str = "bundle";
/// How much of a bundle's marker there is: at most this many over
/// [`MARKER_PER_CALL`] calls run in one bundle at once.
pub(crate) const MARKER_AMOUNT: f64 = 1000.0;
const MARKER_PER_CALL: f64 = 0.001;

/// The prefix of every placement group's resource names.
pub(crate) const PREFIX: &str = "pg:";

/// The prefix of every resource name of `group`.
pub(crate) fn group_prefix(group: PlacementGroupId) -> String {
    format!("{PREFIX}{}:", group.0)
}

/// Checks a group's bundles as they arrive (each its amounts): at least one bundle,
/// each asking for something, every amount finite and not negative, and no name of
/// the groups' own.
pub(crate) fn check_bundles(bundles: &[Vec<(String, f64)>]) -> Result<()> {
    if bundles.is_empty() {
        return Err(Error::Config(
            "a placement group needs at least one bundle".into(),
        ));
    }
    for (i, b) in bundles.iter().enumerate() {
        if b.iter().all(|(_, v)| *v == 0.0) {
            return Err(Error::Config(format!("bundle {i} asks for nothing")));
        }
        for (name, v) in b {
            check_amount(&format!("bundle {i}'s {name}"), *v)?;
            if name.starts_with(PREFIX) {
                return Err(Error::Config(format!(
                    "bundle {i} names {name:?}: names starting with {PREFIX:?} are the groups' own"
                )));
            }
        }
    }
    Ok(())
}

fn indexed(group: PlacementGroupId, bundle: usize, resource: &str) -> String {
    format!("pg:{}:{bundle}:{resource}", group.0)
}

fn wildcard(group: PlacementGroupId, resource: &str) -> String {
    format!("pg:{}:{resource}", group.0)
}

/// The resources the reserved bundle `index` of `group`, of `amounts`, adds to its node.
pub(crate) fn reserved_resources(
    group: PlacementGroupId,
    index: usize,
    amounts: &[(String, f64)],
) -> Vec<(String, f64)> {
    let mut out = Vec::with_capacity(2 * amounts.len() + 2);
    for (name, v) in amounts
        .iter()
        .map(|(n, v)| (n.as_str(), *v))
        .chain([(MARKER, MARKER_AMOUNT)])
    {
        out.push((indexed(group, index, name), v));
        out.push((wildcard(group, name), v));
    }
    out
}

/// The options of a call of `options` placed in `bundle` of `group` (any of its bundles
/// if `None`): its resources asked for under the bundle's names. The strategy is left
/// for the caller to set.
pub(crate) fn in_bundle(
    options: &TaskOptions,
    group: PlacementGroupId,
    bundle: Option<usize>,
) -> TaskOptions {
    let mut asked: Vec<(String, f64)> = Vec::new();
    let mut ask = |name: &str, v: f64| {
        if v > 0.0 {
            if let Some(i) = bundle {
                asked.push((indexed(group, i, name), v));
            }
            asked.push((wildcard(group, name), v));
        }
    };
    ask("CPU", options.num_cpus);
    ask("GPU", options.num_gpus);
    ask("memory", options.memory as f64);
    for (name, v) in &options.resources {
        ask(name, *v);
    }
    ask(MARKER, MARKER_PER_CALL);
    let mut placed = options.clone();
    placed.num_cpus = 0.0;
    placed.num_gpus = 0.0;
    placed.memory = 0;
    placed.resources = asked;
    placed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ObjectId;

    #[test]
    fn a_call_in_a_bundle_asks_for_the_bundles_names_of_what_it_needs() {
        let g = PlacementGroupId(ObjectId::new(1, 2));
        let o = TaskOptions::default().num_cpus(2.0).resource("fpga", 1.0);
        let placed = in_bundle(&o, g, Some(3));
        assert_eq!(placed.num_cpus, 0.0);
        let names: Vec<&str> = placed.resources.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "pg:00000001-000000000002:3:CPU",
                "pg:00000001-000000000002:CPU",
                "pg:00000001-000000000002:3:fpga",
                "pg:00000001-000000000002:fpga",
                "pg:00000001-000000000002:3:bundle",
                "pg:00000001-000000000002:bundle",
            ]
        );
        let anywhere = in_bundle(&o, g, None);
        assert_eq!(anywhere.resources.len(), 3);
        let reserved = reserved_resources(g, 3, &[("CPU".into(), 4.0)]);
        assert!(reserved
            .iter()
            .all(|(n, _)| n.starts_with(&group_prefix(g))));
        assert_eq!(reserved.len(), 4);
    }

    #[test]
    fn bundles_must_ask_for_something_real() {
        assert!(Bundle::new().amounts().is_err());
        assert!(Bundle::new().cpus(-1.0).amounts().is_err());
        assert!(Bundle::new().resource("pg:x", 1.0).amounts().is_err());
        assert_eq!(
            Bundle::new().cpus(1.0).memory(10).amounts().unwrap(),
            vec![("CPU".to_string(), 1.0), ("memory".to_string(), 10.0)]
        );
    }
}
