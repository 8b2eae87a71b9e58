//! Actors: ordering, handles passed around, names, kill, panics, concurrency, lifetime
//! and arguments. Every behaviour runs twice from one body (`both_modes!`): on the
//! embedded runtime, and as a driver of a two-node cluster whose actors live in worker
//! processes.

use std::sync::Barrier;
use std::time::Duration;

use prism::prelude::*;
use prism::testing::{wait_for, Mode, NodeSpec};

#[prism::actor]
pub struct Counter {
    count: i64,
}

#[prism::actor]
impl Counter {
    pub fn new(init: i64) -> Self {
        Counter { count: init }
    }

    pub fn increment(&mut self) -> i64 {
        self.count += 1;
        self.count
    }

    pub fn add(&mut self, by: i64) -> i64 {
        self.count += by;
        self.count
    }

    pub fn read(&self) -> i64 {
        self.count
    }

    pub fn fail(&mut self) -> i64 {
        self.count += 1000;
        panic!("method failed")
    }
}

#[prism::remote]
fn bump(counter: CounterHandle, times: usize) -> i64 {
    let refs: Vec<_> = (0..times).map(|_| counter.increment()).collect();
    *prism::get_all(&refs).unwrap().last().unwrap()
}

#[prism::remote]
fn slow_value(v: i64, ms: u64) -> i64 {
    std::thread::sleep(Duration::from_millis(ms));
    v
}

#[prism::actor]
pub struct Log {
    entries: Vec<(usize, usize)>,
}

#[prism::actor]
impl Log {
    pub fn new() -> Self {
        Log {
            entries: Vec::new(),
        }
    }

    pub fn push(&mut self, submitter: usize, seq: usize) {
        self.entries.push((submitter, seq));
    }

    pub fn entries(&self) -> Vec<(usize, usize)> {
        self.entries.clone()
    }
}

#[prism::actor]
pub struct Sleeper;

#[prism::actor]
impl Sleeper {
    pub fn new() -> Self {
        Sleeper
    }

    pub fn nap(&self, ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        ms
    }
}

static MEET: Barrier = Barrier::new(2);

#[prism::actor]
pub struct Meeting;

#[prism::actor]
impl Meeting {
    pub fn new() -> Self {
        Meeting
    }

    /// Returns once two calls are in it at the same time.
    pub fn meet(&self) -> bool {
        MEET.wait();
        true
    }
}

/// Notes the actors that ended (their state dropped), wherever they lived.
#[prism::actor]
pub struct Witness {
    ended: Vec<u32>,
}

#[prism::actor]
impl Witness {
    pub fn new() -> Self {
        Witness { ended: Vec::new() }
    }

    pub fn note(&mut self, id: u32) {
        self.ended.push(id);
    }

    pub fn ended(&self) -> Vec<u32> {
        self.ended.clone()
    }
}

#[prism::actor]
pub struct Tracked {
    id: u32,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Ok(w) = prism::get_actor::<Witness>("witness") {
            let _ = prism::get(&w.note(self.id));
        }
    }
}

#[prism::actor]
impl Tracked {
    pub fn new(id: u32) -> Self {
        if id == 99 {
            panic!("refusing id 99");
        }
        Tracked { id }
    }

    pub fn id(&self) -> u32 {
        self.id
    }
}

/// Waits until the witness saw `id` end.
fn ended(witness: &WitnessHandle, id: u32) {
    wait_for(
        || {
            prism::get(&witness.ended())
                .ok()?
                .contains(&id)
                .then_some(())
        },
        "the actor to end",
    )
    .unwrap();
}

/// Waits until `cpus` CPUs are free (on a cluster, as of the nodes' heartbeats).
fn cpus_free(cpus: f64) {
    wait_for(
        || (prism::available_resources().ok()?.get("CPU") == Some(&cpus)).then_some(()),
        "the CPUs to be free",
    )
    .unwrap();
}

/// Holds a tracked actor's handle for `ms`, calling it before and after.
#[prism::remote]
fn hold(t: TrackedHandle, ms: u64) -> (u32, u32) {
    let before = prism::get(&t.id()).unwrap();
    std::thread::sleep(Duration::from_millis(ms));
    (before, prism::get(&t.id()).unwrap())
}

#[prism::remote]
fn name_of(c: CounterHandle) -> Option<String> {
    c.name().map(str::to_string)
}

/// Reads a large object an actor method takes by reference.
#[prism::actor]
pub struct Reader;

#[prism::actor]
impl Reader {
    pub fn new() -> Self {
        Reader
    }

    /// The process, where it keeps the argument, and how many objects this process
    /// has pulled from others so far.
    pub fn inspect(&self, data: &[u8]) -> (u32, usize, u64) {
        let pulls = prism::store_stats().map(|s| s.pulls).unwrap_or(0);
        (std::process::id(), data.as_ptr() as usize, pulls)
    }
}

#[prism::remote]
fn fails_later(ms: u64) -> i64 {
    std::thread::sleep(Duration::from_millis(ms));
    panic!("no value for the constructor")
}

/// Starts a counter on `node` from inside a task and returns its handle.
#[prism::remote]
fn make_counter(node: String) -> CounterHandle {
    Counter::options()
        .scheduling(prism::Strategy::NodeAffinity {
            node_id: node,
            soft: false,
        })
        .remote(40)
}

/// Gets a counter made by a nested task (on the same node) and calls it.
#[prism::remote]
fn use_made_counter(node: String) -> i64 {
    let on = prism::Strategy::NodeAffinity {
        node_id: node.clone(),
        soft: false,
    };
    let made = make_counter::options().scheduling(on).remote(node);
    let c = prism::get(&made).unwrap();
    prism::get(&c.increment()).unwrap()
}

/// What an actor sees of the resources it holds.
#[prism::actor]
pub struct Holder;

#[prism::actor]
impl Holder {
    pub fn new() -> Self {
        Holder
    }

    pub fn held(&self) -> (f64, Vec<usize>) {
        let c = prism::context().unwrap();
        (c.resources.get("CPU").copied().unwrap_or(0.0), c.gpu_ids)
    }
}

prism::both_modes! {
    fn calls_run_in_order_and_return_refs(session, NodeSpec::cpus(2.0)) {
        let c = Counter::remote(10);
        let refs: Vec<_> = (0..100).map(|_| c.increment()).collect();
        assert_eq!(
            prism::get_all(&refs).unwrap(),
            (11..=110).collect::<Vec<_>>()
        );
        let r = prism::put(5i64);
        assert_eq!(prism::get(&c.add(&r)).unwrap(), 115);
        // A ref argument that is not ready yet keeps its call's place in the order.
        let slow = slow_value::remote(100, 200);
        let a = c.add(&slow);
        let b = c.add(1);
        assert_eq!(prism::get(&b).unwrap(), 216);
        assert_eq!(prism::get(&a).unwrap(), 215);
    }

    fn calls_from_each_submitter_stay_ordered_under_concurrency(session, NodeSpec::cpus(2.0)) {
        let log = Log::remote();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let h = log.clone();
                std::thread::spawn(move || {
                    let refs: Vec<_> = (0..500).map(|i| h.push(t, i)).collect();
                    prism::get_all(&refs).unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let entries = prism::get(&log.entries()).unwrap();
        assert_eq!(entries.len(), 2000);
        for t in 0..4 {
            let seqs: Vec<usize> = entries.iter().filter(|e| e.0 == t).map(|e| e.1).collect();
            assert_eq!(
                seqs,
                (0..500).collect::<Vec<_>>(),
                "submitter {t} out of order"
            );
        }
    }

    fn handles_are_passed_to_tasks(session, NodeSpec::cpus(2.0)) {
        let c = Counter::remote(0);
        let tasks: Vec<_> = (0..4).map(|_| bump::remote(c.clone(), 25)).collect();
        prism::get_all(&tasks).unwrap();
        assert_eq!(prism::get(&c.read()).unwrap(), 100);
        // A handle survives a round trip through bytes.
        let bytes = prism::object::encode(&c).unwrap();
        let back: CounterHandle = prism::object::decode(&bytes).unwrap();
        assert_eq!(prism::get(&back.increment()).unwrap(), 101);
    }

    /// Named actors are found by name and type; a handle keeps its name, also where it
    /// travelled to.
    fn named_actors_are_found_by_name_and_type(session, NodeSpec::cpus(1.0)) {
        let c = Counter::options().name("global").remote(7);
        assert_eq!(c.name(), Some("global"));
        let found = prism::get_actor::<Counter>("global").unwrap();
        assert_eq!(found.name(), Some("global"));
        assert_eq!(prism::get(&found.increment()).unwrap(), 8);
        assert_eq!(
            prism::get(&name_of::remote(c.clone())).unwrap(),
            Some("global".to_string())
        );
        assert_eq!(prism::get(&name_of::remote(Counter::remote(0))).unwrap(), None);
        assert!(matches!(
            prism::get_actor::<Counter>("nope"),
            Err(Error::ActorNotFound(_))
        ));
        assert!(matches!(
            prism::get_actor::<Log>("global"),
            Err(Error::ActorNotFound(_))
        ));
        let dup = Counter::options().name("global").remote(0);
        assert!(matches!(prism::get(&dup.read()), Err(Error::Config(_))));
        prism::kill(&found);
        assert!(matches!(
            prism::get_actor::<Counter>("global"),
            Err(Error::ActorNotFound(_))
        ));
    }

    fn kill_fails_pending_and_later_calls(session, NodeSpec::cpus(1.0)) {
        let s = Sleeper::remote();
        prism::get(&s.nap(0)).unwrap();
        let running = s.nap(300);
        std::thread::sleep(Duration::from_millis(100));
        let queued = s.nap(1);
        prism::kill(&s);
        assert_eq!(
            prism::get(&running).unwrap(),
            300,
            "a running call finishes"
        );
        assert!(matches!(prism::get(&queued), Err(Error::ActorDied { .. })));
        assert!(matches!(
            prism::get(&s.nap(1)),
            Err(Error::ActorDied { .. })
        ));
    }

    fn a_panicking_method_fails_alone(session, NodeSpec::cpus(1.0)) {
        let c = Counter::remote(0);
        match prism::get(&c.fail()).unwrap_err() {
            Error::TaskFailed {
                function, message, ..
            } => {
                assert!(function.ends_with("Counter::fail"), "{function}");
                assert!(message.contains("method failed"));
            }
            other => panic!("{other:?}"),
        }
        // The state (including what the method did before panicking) survives, as in Ray.
        assert_eq!(prism::get(&c.increment()).unwrap(), 1001);
    }

    /// With `max_concurrency(2)`, two `&self` calls are in the actor at once: both must
    /// be there to pass the barrier (a timeout means they ran one after the other).
    fn max_concurrency_runs_calls_side_by_side(session, NodeSpec::cpus(1.0)) {
        let m = Meeting::options().max_concurrency(2).remote();
        let a = m.meet();
        // The second comes while the first runs (not queued with it before the actor
        // started): it needs a runner of its own.
        std::thread::sleep(Duration::from_millis(300));
        let b = m.meet();
        assert!(prism::get_timeout(&a, Duration::from_secs(20)).unwrap());
        assert!(prism::get_timeout(&b, Duration::from_secs(20)).unwrap());
    }

    /// An unnamed actor ends when its last handle is dropped: its state goes and its
    /// resources come back. A constructor that fails, or resources no node has, are
    /// typed errors.
    fn an_actor_ends_with_its_last_handle(session, NodeSpec::cpus(2.0)) {
        let witness = Witness::options().name("witness").remote();
        prism::get(&witness.ended()).unwrap();
        let total = prism::cluster_resources().unwrap()["CPU"];
        let t = Tracked::options().num_cpus(1.0).remote(1);
        assert_eq!(prism::get(&t.id()).unwrap(), 1);
        cpus_free(total - 1.0);
        drop(t);
        ended(&witness, 1);
        cpus_free(total);

        let bad = Tracked::remote(99);
        match prism::get(&bad.id()).unwrap_err() {
            Error::ActorDied { reason, .. } => {
                assert!(reason.contains("refusing id 99"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        let infeasible = Tracked::options().num_gpus(1.0).remote(2);
        match prism::get_timeout(&infeasible.id(), Duration::from_secs(10)) {
            Err(Error::ActorDied { reason, .. }) => assert!(reason.contains("infeasible"), "{reason}"),
            other => panic!("{other:?}"),
        }
        drop((bad, infeasible));
        cpus_free(total);
    }

    /// A handle given to a task keeps the actor alive for as long as the task holds
    /// it, though the creator dropped its own; then the actor ends.
    fn a_handle_passed_on_keeps_its_actor_alive(session, NodeSpec::cpus(2.0)) {
        let witness = Witness::options().name("witness").remote();
        prism::get(&witness.ended()).unwrap();
        let t = Tracked::remote(7);
        let held = hold::remote(t.clone(), 500);
        std::thread::sleep(Duration::from_millis(100));
        drop(t);
        assert_eq!(prism::get(&held).unwrap(), (7, 7), "called after its creator let go");
        ended(&witness, 7);
    }

    /// A call through a handle dropped at once still runs; then the actor ends.
    fn a_call_through_a_dropped_handle_still_runs(session, NodeSpec::cpus(2.0)) {
        let total = prism::cluster_resources().unwrap()["CPU"];
        let r = Counter::options().num_cpus(1.0).remote(0).increment();
        assert_eq!(prism::get_timeout(&r, Duration::from_secs(30)), Ok(1));
        cpus_free(total);
    }

    /// A constructor argument that fails after the actor was started fails its calls,
    /// now and later, without blocking them.
    fn a_constructor_argument_that_fails_later_fails_the_calls(session, NodeSpec::cpus(2.0)) {
        let x = fails_later::remote(200);
        let c = Counter::remote(&x);
        let first = c.increment();
        match prism::get_timeout(&first, Duration::from_secs(30)) {
            Err(Error::ActorDied { reason, .. }) => {
                assert!(reason.contains("constructor argument"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            prism::get_timeout(&c.increment(), Duration::from_secs(5)),
            Err(Error::ActorDied { .. })
        ));
    }

    /// A handle a task gets from a nested task on its node (which made the actor and
    /// dropped its own handle) works: the result carries the count with it.
    fn a_handle_returned_by_a_nested_task_works(session, NodeSpec::cpus(2.0)) {
        let node = session.first_node();
        let r = use_made_counter::options()
            .scheduling(session.on_first_node())
            .remote(node);
        assert_eq!(prism::get_timeout(&r, Duration::from_secs(30)), Ok(41));
    }

    /// An actor sees the resources it holds, GPUs included.
    fn an_actor_sees_what_it_holds(session, NodeSpec::cpus(2.0).gpus(1.0)) {
        let h = Holder::options().num_cpus(1.0).num_gpus(1.0).remote();
        assert_eq!(prism::get(&h.held()).unwrap(), (1.0, vec![0]));
    }

    /// A large object passed by reference to an actor method reaches it by reference:
    /// the stored value itself where it lives, pulled once into another process and
    /// shared there by every later call.
    fn a_large_argument_reaches_an_actor_by_reference(session, NodeSpec::cpus(1.0)) {
        let data = prism::put(vec![3u8; 4 << 20]);
        let stored = prism::get_arc(&data).unwrap().as_ptr() as usize;
        let reader = Reader::remote();
        let first = prism::get(&reader.inspect(&data)).unwrap();
        let second = prism::get(&reader.inspect(&data)).unwrap();
        assert_eq!(first.1, second.1, "both calls read one copy");
        if first.0 == std::process::id() {
            assert_eq!(session.mode(), Mode::Embedded);
            assert_eq!(first.1, stored, "the stored buffer itself");
        } else {
            assert_eq!(session.mode(), Mode::Cluster);
            assert_eq!(second.2, first.2, "pulled once, not again for the second call");
            assert!(first.2 >= 1, "pulled, not sent inline with the call");
        }
    }
}

#[test]
fn an_actor_is_built_and_called_by_name_from_bytes() {
    // What a worker process hosting an actor does: no handle, no runtime, only names
    // and encoded arguments.
    use prism::actor::{call_encoded, construct};
    use prism::object::{decode, encode};
    use prism::Actor;
    let class = Counter::CLASS;
    assert!(class.ends_with("actors::Counter"));
    let mut state = construct(class, &[&encode(&41i64).unwrap()]).unwrap();
    let inc = format!("{class}::increment");
    assert_eq!(
        decode::<i64>(&call_encoded(&mut state, &inc, &[]).unwrap()).unwrap(),
        42
    );
    let add = format!("{class}::add");
    let out = call_encoded(&mut state, &add, &[&encode(&8i64).unwrap()]).unwrap();
    assert_eq!(decode::<i64>(&out).unwrap(), 50);
    let read = format!("{class}::read");
    assert_eq!(
        decode::<i64>(&call_encoded(&mut state, &read, &[]).unwrap()).unwrap(),
        50
    );
    assert!(matches!(
        call_encoded(&mut state, &add, &[]),
        Err(Error::Serialization(_))
    ));
    assert!(matches!(
        call_encoded(&mut state, &format!("{class}::fail"), &[]),
        Err(Error::TaskFailed { .. })
    ));
    assert!(matches!(
        call_encoded(&mut state, "nope::X::y", &[]),
        Err(Error::FunctionNotFound(_))
    ));
    assert!(matches!(
        construct("nope::X", &[]),
        Err(Error::FunctionNotFound(_))
    ));
    assert!(matches!(
        construct(class, &[&[0xff; 11]]),
        Err(Error::Serialization(_))
    ));
}
