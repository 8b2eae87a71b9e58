//! Remote functions: arguments, options, errors, nesting, scheduling. Every behaviour
//! runs twice from one body (`both_modes!`): on the embedded runtime, and as a driver of
//! a two-node cluster of real processes. Each test runs in its own process under
//! nextest.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use prism::prelude::*;
use prism::testing::{wait_for, Mode, NodeSpec};

#[prism::remote]
fn add(x: i64, y: i64) -> i64 {
    x + y
}

#[prism::remote]
fn total(data: &[f64]) -> f64 {
    data.iter().sum()
}

/// Where the task's process keeps the argument it reads.
#[prism::remote]
fn address_of(data: &[f64]) -> (u32, usize) {
    (std::process::id(), data.as_ptr() as usize)
}

#[prism::remote]
fn shout(s: &str) -> String {
    s.to_uppercase()
}

#[prism::remote]
fn owned_len(v: Vec<u8>) -> usize {
    v.len()
}

#[prism::remote]
async fn async_double(x: u32) -> u32 {
    x * 2
}

#[prism::remote]
fn unit() {}

#[prism::remote(num_cpus = 2, max_retries = 0)]
fn needs_two() -> f64 {
    prism::context().unwrap().resources["CPU"]
}

#[prism::remote]
fn boom(msg: String) -> i64 {
    panic!("{msg}")
}

#[prism::remote]
fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[prism::remote]
fn fib(n: u64) -> u64 {
    if n < 2 {
        return n;
    }
    let a = fib::remote(n - 1);
    let b = fib::remote(n - 2);
    prism::get(&a).unwrap() + prism::get(&b).unwrap()
}

#[prism::remote]
fn to_i64(x: u64) -> i64 {
    x as i64
}

/// Reads a u64 ref as an i64 argument source via a conversion task.
trait AsI64 {
    fn untyped_u64(self) -> ObjectRef<i64>;
}

impl AsI64 for ObjectRef<u64> {
    fn untyped_u64(self) -> ObjectRef<i64> {
        to_i64::remote(self)
    }
}

#[test]
fn the_api_before_init_is_an_error() {
    assert_eq!(prism::get(&add::remote(1, 2)), Err(Error::NotInitialized));
    assert_eq!(prism::get(&prism::put(1u8)), Err(Error::NotInitialized));
    assert!(matches!(prism::nodes(), Err(Error::NotInitialized)));
    assert!(matches!(
        prism::cluster_resources(),
        Err(Error::NotInitialized)
    ));
}

prism::both_modes! {
    /// A second init fails; after a shutdown, init starts afresh.
    fn init_twice_is_an_error_and_shutdown_starts_afresh(session, NodeSpec::cpus(1.0)) {
        assert_eq!(prism::init(), Err(Error::AlreadyInitialized));
        assert_eq!(prism::get(&add::remote(2, 2)), Ok(4));
        prism::shutdown();
        assert_eq!(prism::get(&add::remote(1, 1)), Err(Error::NotInitialized));
        session.init().unwrap();
        assert_eq!(prism::get(&add::remote(2, 3)), Ok(5));
    }

    fn arguments_by_value_by_ref_and_borrowed(session, NodeSpec::cpus(2.0)) {
        let a = add::remote(1, 2);
        let b = add::remote(&a, 10);
        let c = add::remote(a.clone(), b);
        assert_eq!(prism::get(&c).unwrap(), 16);
        let data = prism::put(vec![1.0, 2.0, 3.5]);
        assert_eq!(prism::get(&total::remote(&data)).unwrap(), 6.5);
        assert_eq!(prism::get(&total::remote(vec![1.0, 1.0])).unwrap(), 2.0);
        assert_eq!(prism::get(&total::remote(&[4.0, 4.0][..])).unwrap(), 8.0);
        assert_eq!(prism::get(&shout::remote("hi")).unwrap(), "HI");
        assert_eq!(
            prism::get(&shout::remote(String::from("yo"))).unwrap(),
            "YO"
        );
        assert_eq!(prism::get(&owned_len::remote(vec![0u8; 7])).unwrap(), 7);
        assert_eq!(
            prism::get(&owned_len::remote(Arc::new(vec![0u8; 3]))).unwrap(),
            3
        );
        assert_eq!(prism::get(&async_double::remote(21)).unwrap(), 42);
        prism::get(&unit::remote()).unwrap();
        // A value argument larger than travels inline reaches the task whole.
        assert_eq!(prism::get(&owned_len::remote(vec![1u8; 3 << 20])).unwrap(), 3 << 20);
        // Still a plain function.
        assert_eq!(add(20, 22), 42);
    }

    /// Ten tasks reading one large object hold one copy of it per process: the stored
    /// buffer itself where the object lives, one pulled copy in each other process.
    fn tasks_reading_one_object_share_one_copy(session, NodeSpec::cpus(2.0)) {
        let big = prism::put(vec![1.0_f64; 1 << 20]);
        let stored = prism::get_arc(&big).unwrap().as_ptr() as usize;
        let reads: Vec<_> = (0..10).map(|_| address_of::remote(&big)).collect();
        let mut by_process: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (pid, addr) in prism::get_all(&reads).unwrap() {
            by_process.entry(pid).or_default().push(addr);
        }
        for (pid, addrs) in &by_process {
            assert!(addrs.iter().all(|a| *a == addrs[0]), "one copy in {pid}: {addrs:?}");
            if *pid == std::process::id() {
                assert_eq!(addrs[0], stored, "the stored buffer itself");
            }
        }
        assert!(by_process.len() <= session.nodes(), "{by_process:?}");
        let bytes = prism::store_stats().unwrap().bytes_in_memory;
        assert!(
            bytes < 9 << 20,
            "one copy of 8 MiB is stored here, not eleven: {bytes}"
        );
    }

    fn options_and_attribute_defaults(session, NodeSpec::cpus(2.0)) {
        assert_eq!(prism::get(&needs_two::remote()).unwrap(), 2.0);
        let r = add::options().num_cpus(0.5).name("half").remote(1, 1);
        assert_eq!(prism::get(&r).unwrap(), 2);
    }

    fn a_panic_carries_function_message_and_location(session, NodeSpec::cpus(1.0)) {
        let err = prism::get(&boom::remote("kaput".to_string())).unwrap_err();
        match err {
            Error::TaskFailed {
                function,
                message,
                location,
            } => {
                assert!(function.ends_with("::boom"), "{function}");
                assert!(message.contains("kaput"), "{message}");
                assert!(message.contains("tasks.rs"), "{message}");
                assert!(location.contains("worker"), "{location}");
            }
            other => panic!("expected TaskFailed, got {other:?}"),
        }
        // A display name replaces the function's in errors.
        let named = boom::options().name("the bomb").remote("x".to_string());
        match prism::get(&named).unwrap_err() {
            Error::TaskFailed { function, .. } => assert_eq!(function, "the bomb"),
            other => panic!("{other:?}"),
        }
        // The runtime is still fine.
        assert_eq!(prism::get(&add::remote(1, 1)).unwrap(), 2);
    }

    fn a_failure_propagates_through_a_chain_with_its_cause(session, NodeSpec::cpus(2.0)) {
        let a = boom::remote("root cause".to_string());
        let b = add::remote(&a, 1);
        let c = add::remote(&b, 1);
        let d = add::remote(5, &c);
        for r in [&b, &c, &d] {
            match prism::get(r).unwrap_err() {
                Error::TaskFailed {
                    function, message, ..
                } => {
                    assert!(function.ends_with("::boom"));
                    assert!(message.contains("root cause"));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    fn a_failure_at_the_head_of_a_long_chain_fails_it_all_without_overflow(
        session,
        NodeSpec::cpus(1.0)
    ) {
        // The blocker outlives the test; the process (and the cluster) ends with it.
        let blocker = sleep_ms::remote(600_000);
        let head = add::remote(blocker.untyped_u64(), 0);
        let mut tail = head.clone();
        for _ in 0..200_000 {
            tail = add::remote(&tail, 1);
        }
        assert!(prism::cancel(&head).unwrap());
        assert_eq!(prism::get(&tail), Err(Error::Cancelled(head.id())));
    }

    fn get_all_fails_as_soon_as_one_fails(session, NodeSpec::cpus(2.0)) {
        let slow = sleep_ms::remote(30_000);
        let bad = boom::remote("early".to_string());
        let bad_i64 = add::remote(&bad, 0);
        let slow_i64 = add::remote(slow.clone().untyped_u64(), 0);
        let err = prism::get_all(&[bad_i64, slow_i64]).unwrap_err();
        assert!(matches!(err, Error::TaskFailed { .. }));
        let (ready, _) = prism::wait(&[slow], 1, Some(Duration::ZERO)).unwrap();
        assert!(
            ready.is_empty(),
            "get_all returned before the slow task finished"
        );
    }

    fn get_timeout_and_wait_keep_input_order(session, NodeSpec::cpus(2.0)) {
        let slow = sleep_ms::remote(5_000);
        assert_eq!(
            prism::get_timeout(&slow, Duration::from_millis(20)),
            Err(Error::Timeout(Duration::from_millis(20)))
        );
        let refs: Vec<ObjectRef<u64>> = vec![
            slow.clone(),
            prism::put(1),
            sleep_ms::remote(6_000),
            prism::put(3),
            prism::put(4),
        ];
        let (ready, pending) = prism::wait(&refs, 2, None).unwrap();
        assert_eq!(ready, vec![refs[1].clone(), refs[3].clone()]);
        assert_eq!(
            pending,
            vec![refs[0].clone(), refs[2].clone(), refs[4].clone()]
        );
        let (ready, pending) = prism::wait(&refs, 5, Some(Duration::from_millis(10))).unwrap();
        assert_eq!(
            ready,
            vec![refs[1].clone(), refs[3].clone(), refs[4].clone()]
        );
        assert_eq!(pending.len(), 2);
    }

    /// A task waiting in `get` lends its CPU: nested tasks never deadlock on one CPU.
    fn nested_gets_on_one_cpu_do_not_deadlock(session, NodeSpec::cpus(1.0)) {
        assert_eq!(
            prism::get_timeout(&fib::remote(13), Duration::from_secs(60)),
            Ok(233)
        );
    }

    fn cancel_drops_a_queued_task_and_its_dependents(session, NodeSpec::cpus(1.0)) {
        let blocker = sleep_ms::remote(300);
        let queued = sleep_ms::remote(1);
        let dependent = to_i64::remote(&queued);
        assert!(prism::cancel(&queued).unwrap());
        assert_eq!(prism::get(&queued), Err(Error::Cancelled(queued.id())));
        assert_eq!(prism::get(&dependent), Err(Error::Cancelled(queued.id())));
        assert_eq!(prism::get(&blocker).unwrap(), 300);
        assert!(
            !prism::cancel(&blocker).unwrap(),
            "finished work is not cancelled"
        );
    }

    fn infeasible_requests_fail_naming_the_resource(session, NodeSpec::cpus(2.0)) {
        let gpu = add::options().num_gpus(1.0).remote(1, 1);
        match prism::get_timeout(&gpu, Duration::from_secs(10)) {
            Err(Error::Infeasible { resource, .. }) => assert_eq!(resource, "GPU"),
            other => panic!("{other:?}"),
        }
        let cpus = add::options().num_cpus(3.0).remote(1, 1);
        assert!(
            matches!(prism::get_timeout(&cpus, Duration::from_secs(10)), Err(Error::Infeasible { resource, .. }) if resource == "CPU")
        );
        let custom = add::options().resource("tpu", 1.0).remote(1, 1);
        assert!(
            matches!(prism::get_timeout(&custom, Duration::from_secs(10)), Err(Error::Infeasible { resource, .. }) if resource == "tpu")
        );
        let negative = add::options().num_cpus(-1.0).remote(1, 1);
        assert!(matches!(prism::get(&negative), Err(Error::Config(_))));
    }

    /// A custom resource of one slot per node: at most one such task runs at a time
    /// on each node (and so in each process).
    fn custom_resources_bound_concurrency(session, NodeSpec::cpus(4.0).resource("slot", 1.0)) {
        let refs: Vec<_> = (0..6)
            .map(|_| {
                count_concurrency::options()
                    .resource("slot", 1.0)
                    .remote(20)
            })
            .collect();
        let seen = prism::get_all(&refs).unwrap();
        assert!(seen.iter().all(|n| *n == 1), "{seen:?}");
    }

    /// Two half-CPU tasks on a one-CPU node run side by side: both must be running to
    /// pass the barrier (a timeout here means they were serialised).
    fn fractional_cpus_run_side_by_side(session, NodeSpec::cpus(1.0)) {
        let here = session.on_first_node();
        let a = meet::options().num_cpus(0.5).scheduling(here.clone()).remote();
        let b = meet::options().num_cpus(0.5).scheduling(here).remote();
        assert!(prism::get_timeout(&a, Duration::from_secs(20)).unwrap());
        assert!(prism::get_timeout(&b, Duration::from_secs(20)).unwrap());
    }

    fn gpus_are_accounted_and_ids_handed_out(session, NodeSpec::cpus(4.0).gpus(2.0)) {
        let here = session.on_first_node();
        let refs: Vec<_> = (0..2)
            .map(|_| gpu_ids_held::options().scheduling(here.clone()).remote(100))
            .collect();
        let mut ids: Vec<usize> = prism::get_all(&refs).unwrap().concat();
        ids.sort();
        assert_eq!(
            ids,
            vec![0, 1],
            "two concurrent one-GPU tasks on one node get distinct devices"
        );
        let two = gpu_ids_held::options().num_gpus(2.0).remote(0);
        assert_eq!(prism::get(&two).unwrap(), vec![0, 1]);
        let half = gpu_ids_held::options().num_gpus(0.5).remote(0);
        assert_eq!(prism::get(&half).unwrap().len(), 1);
        // Resources come back just after the result is published (on a cluster, as
        // of the nodes' next heartbeat).
        let total = prism::cluster_resources().unwrap()["GPU"];
        assert_eq!(total, 2.0 * session.nodes() as f64);
        wait_for(
            || (prism::available_resources().unwrap()["GPU"] == total).then_some(()),
            "the GPUs to be free again",
        )
        .unwrap();
    }

    fn panics_are_retried_only_when_asked(session, NodeSpec::cpus(1.0)) {
        let attempts = Attempts::options().name("attempts").remote();
        assert!(matches!(
            prism::get(&flaky::remote()),
            Err(Error::TaskFailed { .. })
        ));
        assert_eq!(prism::get(&attempts.count()).unwrap(), 1, "no retry by default");
        let r = flaky::options()
            .retry_on_panic(true)
            .max_retries(3)
            .remote();
        assert_eq!(prism::get(&r).unwrap(), 2);
        prism::get(&attempts.reset()).unwrap();
        let r = flaky::options()
            .retry_on_panic(true)
            .max_retries(1)
            .remote();
        assert!(matches!(prism::get(&r), Err(Error::TaskFailed { .. })));
        assert_eq!(prism::get(&attempts.count()).unwrap(), 2, "one retry");
    }

    fn context_tells_task_worker_and_node(session, NodeSpec::cpus(2.0)) {
        let driver = prism::context().unwrap();
        assert_eq!(driver.task_id, None);
        assert_eq!(driver.worker_id, None);
        let r = whoami::remote();
        let ctx = prism::get(&r).unwrap();
        assert_eq!(ctx.task_id, Some(r.id()));
        assert!(ctx.worker_id.is_some());
        let nodes = prism::nodes().unwrap();
        assert!(nodes.iter().any(|n| n.node_id == ctx.node_id), "{nodes:?}");
        assert_eq!(ctx.resources["CPU"], 1.0);
        assert!(ctx.function.unwrap().ends_with("::whoami"));
        if session.mode() == Mode::Embedded {
            assert_eq!(ctx.node_id, driver.node_id, "one node");
        }
    }

    fn object_refs_can_be_awaited(session, NodeSpec::cpus(2.0)) {
        let r = add::remote(40, 2);
        let v = prism::block_on(async move { r.await });
        assert_eq!(v.unwrap(), 42);
    }
}

static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// How many tasks of this function run in this process, this one included.
#[prism::remote]
fn count_concurrency(ms: u64) -> usize {
    let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
    std::thread::sleep(Duration::from_millis(ms));
    RUNNING.fetch_sub(1, Ordering::SeqCst);
    now
}

static HALVES: Barrier = Barrier::new(2);

#[prism::remote]
fn meet() -> bool {
    HALVES.wait();
    true
}

#[prism::remote(num_gpus = 1)]
fn gpu_ids_held(ms: u64) -> Vec<usize> {
    std::thread::sleep(Duration::from_millis(ms));
    prism::context().unwrap().gpu_ids
}

/// Counts attempts across processes: a named actor every attempt reaches.
#[prism::actor]
pub struct Attempts {
    n: usize,
}

#[prism::actor]
impl Attempts {
    pub fn new() -> Self {
        Attempts { n: 0 }
    }

    pub fn take_turn(&mut self) -> usize {
        self.n += 1;
        self.n - 1
    }

    pub fn count(&self) -> usize {
        self.n
    }

    pub fn reset(&mut self) {
        self.n = 0;
    }
}

#[prism::remote]
fn flaky() -> usize {
    let attempts = prism::get_actor::<Attempts>("attempts").unwrap();
    let n = prism::get(&attempts.take_turn()).unwrap();
    if n < 2 {
        panic!("attempt {n} fails");
    }
    n
}

#[prism::remote]
fn whoami() -> prism::RuntimeContext {
    prism::context().unwrap()
}
