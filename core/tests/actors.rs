//! Actors on the embedded runtime: ordering, handles passed around, names, kill, panics,
//! concurrency and lifetime.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::Duration;

use prism::prelude::*;

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

#[test]
fn calls_run_in_order_and_return_refs() {
    prism::init_with(prism::Config::default().num_cpus(2.0)).unwrap();
    let c = Counter::remote(10);
    let refs: Vec<_> = (0..100).map(|_| c.increment()).collect();
    assert_eq!(
        prism::get_all(&refs).unwrap(),
        (11..=110).collect::<Vec<_>>()
    );
    let r = prism::put(5i64);
    assert_eq!(prism::get(&c.add(&r)).unwrap(), 115);
    prism::shutdown();
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

#[test]
fn calls_from_each_submitter_stay_ordered_under_concurrency() {
    prism::init_with(prism::Config::default().num_cpus(2.0)).unwrap();
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
    prism::shutdown();
}

#[test]
fn handles_are_passed_to_tasks() {
    prism::init_with(prism::Config::default().num_cpus(2.0)).unwrap();
    let c = Counter::remote(0);
    let tasks: Vec<_> = (0..4).map(|_| bump::remote(c.clone(), 25)).collect();
    prism::get_all(&tasks).unwrap();
    assert_eq!(prism::get(&c.read()).unwrap(), 100);
    // A handle survives a round trip through bytes.
    let bytes = prism::object::encode(&c).unwrap();
    let back: CounterHandle = prism::object::decode(&bytes).unwrap();
    assert_eq!(prism::get(&back.increment()).unwrap(), 101);
    prism::shutdown();
}

#[test]
fn named_actors_are_found_by_name_and_type() {
    prism::init_with(prism::Config::default().num_cpus(1.0)).unwrap();
    let _c = Counter::options().name("global").remote(7);
    let found = prism::get_actor::<Counter>("global").unwrap();
    assert_eq!(prism::get(&found.increment()).unwrap(), 8);
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
    prism::shutdown();
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

#[test]
fn kill_fails_pending_and_later_calls() {
    prism::init_with(prism::Config::default().num_cpus(1.0)).unwrap();
    let s = Sleeper::remote();
    let running = s.nap(200);
    std::thread::sleep(Duration::from_millis(50));
    let queued = s.nap(1);
    prism::kill(&s);
    assert_eq!(
        prism::get(&running).unwrap(),
        200,
        "a running call finishes"
    );
    assert!(matches!(prism::get(&queued), Err(Error::ActorDied { .. })));
    assert!(matches!(
        prism::get(&s.nap(1)),
        Err(Error::ActorDied { .. })
    ));
    prism::shutdown();
}

#[test]
fn a_panicking_method_fails_alone() {
    prism::init_with(prism::Config::default().num_cpus(1.0)).unwrap();
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
    prism::shutdown();
}

static MEET: Barrier = Barrier::new(2);

#[prism::actor]
pub struct Meeting;

#[prism::actor]
impl Meeting {
    pub fn new() -> Self {
        Meeting
    }

    pub fn meet(&self) -> bool {
        MEET.wait();
        true
    }
}

#[test]
fn max_concurrency_runs_calls_side_by_side() {
    prism::init_with(prism::Config::default().num_cpus(1.0)).unwrap();
    let m = Meeting::options().max_concurrency(2).remote();
    let a = m.meet();
    let b = m.meet();
    assert!(prism::get_timeout(&a, Duration::from_secs(20)).unwrap());
    assert!(prism::get_timeout(&b, Duration::from_secs(20)).unwrap());
    prism::shutdown();
}

static DROPPED: AtomicUsize = AtomicUsize::new(0);
static BUILT: Mutex<Vec<u32>> = Mutex::new(Vec::new());

#[prism::actor]
pub struct Tracked {
    id: u32,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        DROPPED.fetch_add(1, Ordering::SeqCst);
    }
}

#[prism::actor]
impl Tracked {
    pub fn new(id: u32) -> Self {
        BUILT.lock().unwrap().push(id);
        if id == 99 {
            panic!("refusing id 99");
        }
        Tracked { id }
    }

    pub fn id(&self) -> u32 {
        self.id
    }
}

#[test]
fn actor_lifetime_resources_and_constructor_failure() {
    prism::init_with(prism::Config::default().num_cpus(2.0)).unwrap();
    let t = Tracked::options().num_cpus(1.0).remote(1);
    assert_eq!(prism::get(&t.id()).unwrap(), 1);
    assert_eq!(
        prism::available_resources().unwrap()["CPU"],
        1.0,
        "the actor holds its CPU"
    );
    drop(t);
    for _ in 0..200 {
        if DROPPED.load(Ordering::SeqCst) == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        DROPPED.load(Ordering::SeqCst),
        1,
        "the last handle dropped ends the actor"
    );
    for _ in 0..400 {
        if prism::available_resources().unwrap()["CPU"] == 2.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(prism::available_resources().unwrap()["CPU"], 2.0);

    let bad = Tracked::remote(99);
    match prism::get(&bad.id()).unwrap_err() {
        Error::ActorDied { reason, .. } => assert!(reason.contains("refusing id 99"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let infeasible = Tracked::options().num_gpus(1.0).remote(2);
    match prism::get(&infeasible.id()) {
        Err(Error::ActorDied { reason, .. }) => assert!(reason.contains("infeasible"), "{reason}"),
        other => panic!("{other:?}"),
    }
    prism::shutdown();
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
