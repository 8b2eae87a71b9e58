//! Placement groups: bundles of resources reserved together, all at once or not at
//! all, for a gang of tasks and actors (the workers of a training run, say) that must
//! start together.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::PlacementGroupId;
use crate::runtime;
use crate::task::group::check_bundles;
use crate::task::{Bundle, PlacementStrategy, Strategy};

/// A placement group: its bundles, reserved on the nodes its strategy chose (or
/// waiting for room). A handle is cheap to clone and can be passed to tasks and
/// actors, which may place their own calls in it.
///
/// ```
/// use prism::{Bundle, PlacementStrategy};
///
/// #[prism::remote]
/// fn where_am_i() -> String { prism::context().unwrap().node_id }
///
/// # prism::init_with(prism::Config::default().num_cpus(4.0)).unwrap();
/// let pg = prism::placement_group(vec![Bundle::new().cpus(1.0); 2], PlacementStrategy::Pack).unwrap();
/// pg.wait(std::time::Duration::from_secs(10)).unwrap();
/// // Two CPUs are reserved for the group now.
/// assert_eq!(prism::available_resources().unwrap()["CPU"], 2.0);
/// let node = where_am_i::options().scheduling(pg.bundle(0)).remote();
/// assert_eq!(prism::get(&node).unwrap(), prism::nodes().unwrap()[0].node_id);
/// pg.remove().unwrap();
/// assert_eq!(prism::available_resources().unwrap()["CPU"], 4.0);
/// # prism::shutdown();
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlacementGroup {
    id: PlacementGroupId,
    bundles: Vec<Bundle>,
    strategy: PlacementStrategy,
}

/// Reserves `bundles` under `strategy`, or starts waiting for room for them: returns
/// at once, before the group is ready (see [`PlacementGroup::wait`]). Fails with
/// [`Error::PlacementGroupInfeasible`] when no set of the runtime's nodes could ever
/// hold the group (a bundle bigger than every node, more `StrictSpread` bundles than
/// nodes), and with [`Error::Config`] for a bundle that asks for nothing or for a
/// negative amount.
///
/// ```
/// use prism::{Bundle, Error, PlacementStrategy};
/// # prism::init_with(prism::Config::default().num_cpus(2.0)).unwrap();
/// let too_big = prism::placement_group(vec![Bundle::new().cpus(3.0)], PlacementStrategy::Pack);
/// assert!(matches!(too_big, Err(Error::PlacementGroupInfeasible(_))));
/// # prism::shutdown();
/// ```
pub fn placement_group(
    bundles: Vec<Bundle>,
    strategy: PlacementStrategy,
) -> Result<PlacementGroup> {
    let rt = runtime::current()?;
    let amounts = bundles
        .iter()
        .map(Bundle::amounts)
        .collect::<Result<Vec<_>>>()?;
    check_bundles(&amounts)?;
    let id = rt.create_group(amounts, strategy)?;
    Ok(PlacementGroup {
        id,
        bundles,
        strategy,
    })
}

/// Removes the placement group `group` (see [`PlacementGroup::remove`]).
pub fn remove_placement_group(group: &PlacementGroup) -> Result<()> {
    group.remove()
}

impl PlacementGroup {
    /// The group's id.
    pub fn id(&self) -> PlacementGroupId {
        self.id
    }

    /// The bundles it asked for.
    pub fn bundles(&self) -> &[Bundle] {
        &self.bundles
    }

    /// How it spreads them.
    pub fn strategy(&self) -> PlacementStrategy {
        self.strategy
    }

    /// Waits until every bundle is reserved, at most `timeout`: fails with
    /// [`Error::Timeout`] if they are not by then (the group keeps waiting for room),
    /// and with [`Error::PlacementGroupRemoved`] if the group was removed.
    pub fn wait(&self, timeout: Duration) -> Result<()> {
        runtime::current()?.wait_group(self.id, timeout).map(|_| ())
    }

    /// Whether every bundle is reserved now.
    pub fn is_ready(&self) -> Result<bool> {
        match runtime::current()?.wait_group(self.id, Duration::ZERO) {
            Ok(_) => Ok(true),
            Err(Error::Timeout(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The node id of each bundle, in bundle order, once the group is ready (waiting at
    /// most `timeout` for that).
    pub fn bundle_nodes(&self, timeout: Duration) -> Result<Vec<String>> {
        runtime::current()?.wait_group(self.id, timeout)
    }

    /// The strategy that places a call in bundle `index`: its resources come out of
    /// that bundle's, on that bundle's node. A call placed before the group is ready
    /// waits for it (an actor's spawner waits too); one of a removed group fails with
    /// [`Error::PlacementGroupRemoved`]. An index past the last bundle fails the call
    /// with [`Error::Config`].
    pub fn bundle(&self, index: usize) -> Strategy {
        Strategy::PlacementGroup {
            group: self.id,
            bundle: Some(index),
        }
    }

    /// The strategy that places a call in any bundle of the group with room for it.
    pub fn any_bundle(&self) -> Strategy {
        Strategy::PlacementGroup {
            group: self.id,
            bundle: None,
        }
    }

    /// Removes the group: its bundles' resources are free again, its calls still
    /// waiting fail, its actors die and later calls placed in it fail, all with
    /// [`Error::PlacementGroupRemoved`]. Its running tasks finish.
    pub fn remove(&self) -> Result<()> {
        runtime::current()?.remove_group(self.id)
    }
}
