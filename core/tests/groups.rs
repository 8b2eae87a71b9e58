//! Placement groups: bundles reserved all at once, calls and actors inside them, the
//! strategies over nodes, removal, groups that can never fit and groups that wait for
//! room. Every behaviour runs embedded and as a driver of a two-node cluster of real
//! processes (`both_modes!`); the spreading strategies need two nodes, so their test is
//! the cluster's alone.

use std::collections::BTreeSet;
use std::time::Duration;

use prism::prelude::*;
use prism::testing::{wait_for, Mode, NodeSpec};
use prism::{Bundle, PlacementGroup, PlacementStrategy};

const READY: Duration = Duration::from_secs(20);

#[prism::remote]
fn where_am_i() -> String {
    prism::context().unwrap().node_id
}

#[prism::remote]
fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Runs in a worker (on a cluster): places a call in the group it was handed.
#[prism::remote]
fn place_inside(pg: PlacementGroup) -> String {
    prism::get(&where_am_i::options().scheduling(pg.bundle(0)).remote()).unwrap()
}

#[prism::actor]
pub struct Resident {
    calls: u32,
}

#[prism::actor]
impl Resident {
    pub fn new() -> Self {
        Resident { calls: 0 }
    }

    pub fn node(&mut self) -> String {
        self.calls += 1;
        prism::context().unwrap().node_id
    }
}

fn cpus(n: f64) -> Bundle {
    Bundle::new().cpus(n)
}

/// The free CPUs over the live nodes, once they read `want` (a cluster's come with
/// heartbeats).
fn free_cpus_reach(want: f64) {
    wait_for(
        || {
            let free = prism::available_resources().ok()?.get("CPU").copied()?;
            (free == want).then_some(())
        },
        &format!("{want} free CPUs"),
    )
    .unwrap();
}

fn nodes_of(session: &prism::testing::Session) -> usize {
    match session.mode() {
        Mode::Embedded => 1,
        Mode::Cluster => 2,
    }
}

prism::both_modes! {
    /// A group takes its CPUs from the free pool while it lives; calls in a bundle run
    /// on its node; a call asking more than its bundle holds can never run; removal
    /// gives the CPUs back and fails later calls.
    fn bundles_hold_their_resources_until_removed(session, NodeSpec::cpus(4.0)) {
        let all = 4.0 * nodes_of(&session) as f64;
        let pg = prism::placement_group(vec![cpus(1.0), cpus(1.0)], PlacementStrategy::Pack)
            .unwrap();
        pg.wait(READY).unwrap();
        assert!(pg.is_ready().unwrap());
        free_cpus_reach(all - 2.0);
        let nodes = pg.bundle_nodes(READY).unwrap();
        assert_eq!(nodes.len(), 2);

        for (i, node) in nodes.iter().enumerate() {
            let refs: Vec<_> = (0..8)
                .map(|_| where_am_i::options().scheduling(pg.bundle(i)).remote())
                .collect();
            for ran in prism::get_all(&refs).unwrap() {
                assert_eq!(&ran, node);
            }
        }
        let any: Vec<_> = (0..8)
            .map(|_| where_am_i::options().scheduling(pg.any_bundle()).remote())
            .collect();
        for ran in prism::get_all(&any).unwrap() {
            assert!(nodes.contains(&ran), "{ran} is not one of {nodes:?}");
        }
        // A handle travels: a task places its own call in the group.
        let inner = place_inside::remote(pg.clone());
        assert_eq!(prism::get(&inner).unwrap(), nodes[0]);

        // Two CPUs do not fit in a one-CPU bundle, ever.
        let too_big = where_am_i::options().num_cpus(2.0).scheduling(pg.bundle(0)).remote();
        let err = prism::get_timeout(&too_big, READY).unwrap_err();
        assert!(matches!(err, Error::Infeasible { .. }), "{err}");
        // There is no bundle 2.
        let missing = where_am_i::options().scheduling(pg.bundle(2)).remote();
        let err = prism::get(&missing).unwrap_err();
        assert!(err.to_string().contains("no bundle 2"), "{err}");

        pg.remove().unwrap();
        free_cpus_reach(all);
        let late = where_am_i::options().scheduling(pg.bundle(0)).remote();
        let err = prism::get(&late).unwrap_err();
        assert!(matches!(err, Error::PlacementGroupRemoved(_)), "{err}");
        let err = pg.wait(READY).unwrap_err();
        assert!(matches!(err, Error::PlacementGroupRemoved(_)), "{err}");
    }

    /// An actor in a bundle lives on its node, holding the bundle's CPU; the group's
    /// removal ends it.
    fn an_actor_lives_in_its_bundle_and_ends_with_it(session, NodeSpec::cpus(2.0)) {
        let pg = prism::placement_group(vec![cpus(1.0), cpus(1.0)], PlacementStrategy::Spread)
            .unwrap();
        let nodes = pg.bundle_nodes(READY).unwrap();
        let actor = Resident::options()
            .num_cpus(1.0)
            .scheduling(pg.bundle(1))
            .remote();
        assert_eq!(prism::get(&actor.node()).unwrap(), nodes[1]);
        // The bundle's one CPU is the actor's: a task in that bundle waits for it.
        let queued = where_am_i::options().scheduling(pg.bundle(1)).remote();
        let waited = prism::get_timeout(&queued, Duration::from_millis(300));
        assert!(matches!(waited, Err(Error::Timeout(_))), "{waited:?}");

        pg.remove().unwrap();
        let err = prism::get(&queued).unwrap_err();
        assert!(matches!(err, Error::PlacementGroupRemoved(_)), "{err}");
        let ended = wait_for(
            || match prism::get(&actor.node()) {
                Err(e @ Error::ActorDied { .. }) => Some(e),
                _ => None,
            },
            "the actor to end with its group",
        );
        assert!(ended.is_ok(), "{ended:?}");
        free_cpus_reach(2.0 * nodes_of(&session) as f64);
    }

    /// Groups that no set of nodes could hold are refused at once, saying why.
    fn a_group_that_can_never_fit_is_refused(session, NodeSpec::cpus(4.0)) {
        let n = nodes_of(&session);
        let refused = [
            (vec![cpus(5.0)], PlacementStrategy::Pack),
            (vec![cpus(3.0), cpus(3.0)], PlacementStrategy::StrictPack),
            (vec![cpus(1.0); n + 1], PlacementStrategy::StrictSpread),
            (vec![Bundle::new().resource("fpga", 1.0)], PlacementStrategy::Spread),
        ];
        for (bundles, strategy) in refused {
            let err = prism::placement_group(bundles.clone(), strategy).unwrap_err();
            assert!(
                matches!(&err, Error::PlacementGroupInfeasible(why) if why.contains("no set of nodes")),
                "{bundles:?} {strategy:?}: {err}"
            );
        }
        let empty = prism::placement_group(vec![Bundle::new()], PlacementStrategy::Pack);
        assert!(matches!(empty, Err(Error::Config(_))), "{empty:?}");
        let none = prism::placement_group(vec![], PlacementStrategy::Pack);
        assert!(matches!(none, Err(Error::Config(_))), "{none:?}");
        let negative = prism::placement_group(vec![cpus(-1.0)], PlacementStrategy::Pack);
        assert!(matches!(negative, Err(Error::Config(_))), "{negative:?}");
        // Nothing was reserved by the refusals.
        free_cpus_reach(4.0 * n as f64);
    }

    /// A group without room waits (and so do calls placed in it) until room frees.
    fn a_pending_group_is_placed_once_room_frees(session, NodeSpec::cpus(2.0)) {
        let n = nodes_of(&session);
        let full = prism::placement_group(vec![cpus(2.0); n], PlacementStrategy::StrictSpread)
            .unwrap();
        full.wait(READY).unwrap();
        free_cpus_reach(0.0);
        let later = prism::placement_group(vec![cpus(1.0)], PlacementStrategy::Pack).unwrap();
        let waited = later.wait(Duration::from_millis(300));
        assert!(matches!(waited, Err(Error::Timeout(_))), "{waited:?}");
        assert!(!later.is_ready().unwrap());
        let queued = nap::options().scheduling(later.bundle(0)).remote(1);
        assert!(matches!(
            prism::get_timeout(&queued, Duration::from_millis(200)),
            Err(Error::Timeout(_))
        ));

        full.remove().unwrap();
        later.wait(READY).unwrap();
        assert_eq!(prism::get_timeout(&queued, READY).unwrap(), 1);
        later.remove().unwrap();
        free_cpus_reach(2.0 * n as f64);
    }

    /// An actor's spawner waits for its group; if the group is still pending when the
    /// runtime stops, the spawner returns (its actor fails) instead of waiting forever.
    fn a_spawner_waiting_for_a_pending_group_returns_at_shutdown(session, NodeSpec::cpus(1.0)) {
        let n = nodes_of(&session);
        let full = prism::placement_group(vec![cpus(1.0); n], PlacementStrategy::StrictSpread)
            .unwrap();
        full.wait(READY).unwrap();
        let later = prism::placement_group(vec![cpus(1.0)], PlacementStrategy::Pack).unwrap();
        let (spawned, returned) = std::sync::mpsc::channel();
        let spawner = std::thread::spawn(move || {
            let actor = Resident::options().scheduling(later.bundle(0)).remote();
            spawned.send(()).unwrap();
            prism::get(&actor.node())
        });
        assert!(returned.recv_timeout(Duration::from_millis(300)).is_err());
        prism::shutdown();
        returned
            .recv_timeout(READY)
            .expect("the spawner returns when the runtime stops");
        let called = spawner.join().unwrap();
        assert!(called.is_err(), "{called:?}");
    }

    /// Removing a group whose calls are running lets them finish; the group's CPUs
    /// are free again once they do.
    fn removal_lets_running_calls_finish(session, NodeSpec::cpus(2.0)) {
        let pg = prism::placement_group(vec![cpus(2.0)], PlacementStrategy::Pack).unwrap();
        pg.wait(READY).unwrap();
        let running = nap::options().scheduling(pg.bundle(0)).remote(500);
        std::thread::sleep(Duration::from_millis(100));
        pg.remove().unwrap();
        assert_eq!(prism::get_timeout(&running, READY).unwrap(), 500);
        free_cpus_reach(2.0 * nodes_of(&session) as f64);
    }
}

/// The four strategies over two nodes: packed bundles share a node while it has room,
/// spread ones take a node each, strict ones or none.
#[test]
fn strategies_place_bundles_over_the_nodes() {
    let session = prism::testing::Session::start(Mode::Cluster, NodeSpec::cpus(4.0));
    let distinct = |pg: &PlacementGroup| {
        let nodes = pg.bundle_nodes(READY).unwrap();
        nodes.into_iter().collect::<BTreeSet<_>>().len()
    };
    let placed =
        |bundles: Vec<Bundle>, strategy| prism::placement_group(bundles, strategy).unwrap();

    let pack = placed(vec![cpus(1.0); 2], PlacementStrategy::Pack);
    assert_eq!(distinct(&pack), 1);
    let strict_pack = placed(vec![cpus(1.0); 2], PlacementStrategy::StrictPack);
    assert_eq!(distinct(&strict_pack), 1);
    pack.remove().unwrap();
    strict_pack.remove().unwrap();

    let spread = placed(vec![cpus(1.0); 2], PlacementStrategy::Spread);
    assert_eq!(distinct(&spread), 2);
    let strict_spread = placed(vec![cpus(1.0); 2], PlacementStrategy::StrictSpread);
    assert_eq!(distinct(&strict_spread), 2);
    // Three spread bundles on two nodes: two share one.
    let spread3 = placed(vec![cpus(1.0); 3], PlacementStrategy::Spread);
    assert_eq!(distinct(&spread3), 2);
    spread.remove().unwrap();
    strict_spread.remove().unwrap();
    spread3.remove().unwrap();

    // Packed bundles too big for one node spill onto the other.
    let big_pack = placed(vec![cpus(3.0); 2], PlacementStrategy::Pack);
    assert_eq!(distinct(&big_pack), 2);
    for (i, node) in big_pack.bundle_nodes(READY).unwrap().iter().enumerate() {
        let ran = where_am_i::options()
            .scheduling(big_pack.bundle(i))
            .remote();
        assert_eq!(&prism::get(&ran).unwrap(), node);
    }
    // Each node has one CPU left: a strict pack of two waits.
    let waits = placed(vec![cpus(1.0); 2], PlacementStrategy::StrictPack);
    assert!(matches!(
        waits.wait(Duration::from_millis(300)),
        Err(Error::Timeout(_))
    ));
    big_pack.remove().unwrap();
    waits.wait(READY).unwrap();
    assert_eq!(distinct(&waits), 1);
    waits.remove().unwrap();
    free_cpus_reach(8.0);
    drop(session);
}
