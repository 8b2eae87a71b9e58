//! The object store: reference counting (measured), nested refs, spilling and
//! restoring, a full store, and the serialized task seam that worker processes use.
//! Behaviours run twice from one body (`both_modes!`): embedded, and as a driver of a
//! two-node cluster whose large results stay in the workers that made them.

use std::time::Duration;

use prism::prelude::*;
use prism::task::{EncodedArg, TaskSpec};
use prism::testing::{wait_for, NodeSpec, Session};

#[prism::remote]
fn make(n: usize) -> Vec<u8> {
    vec![7u8; n]
}

#[prism::remote]
fn length(v: &[u8]) -> usize {
    v.len()
}

/// The object store bytes and the resident memory of the process this runs in.
/// Puts `count` vectors here and returns refs to them, nested in the result.
#[prism::remote]
fn put_here(count: u8, len: usize) -> Vec<ObjectRef<Vec<u8>>> {
    (0..count).map(|i| prism::put(vec![i; len])).collect()
}

/// Reads refs nested in the argument, wherever their objects are.
#[prism::remote]
fn sum_nested(refs: Vec<ObjectRef<Vec<u8>>>) -> Result<u64, String> {
    let mut total = 0;
    for r in &refs {
        let v = prism::get_arc(r).map_err(|e| e.to_string())?;
        total += v.iter().map(|&b| b as u64).sum::<u64>();
    }
    Ok(total)
}

#[prism::remote]
fn memory_here() -> (u32, u64, u64) {
    let s = prism::store_stats().unwrap();
    (
        std::process::id(),
        s.bytes_in_memory + s.bytes_spilled,
        rss(),
    )
}

/// Resident set size of this process in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Per process holding objects (this one, and each node's worker): its store's bytes
/// and its resident memory.
fn memory(session: &Session) -> Vec<(u32, u64, u64)> {
    let here = prism::store_stats().unwrap();
    let mut out = vec![(std::process::id(), here.bytes_in_memory, rss())];
    for node in prism::nodes().unwrap() {
        let on = prism::Strategy::NodeAffinity {
            node_id: node.node_id,
            soft: false,
        };
        let m = prism::get(&memory_here::options().scheduling(on).remote()).unwrap();
        if m.0 != std::process::id() {
            out.push(m);
        }
    }
    // This process, and on a cluster each node's worker too.
    let processes = if session.nodes() == 1 {
        1
    } else {
        1 + session.nodes()
    };
    assert_eq!(out.len(), processes, "{out:?}");
    out
}

fn store_bytes(m: &[(u32, u64, u64)]) -> u64 {
    m.iter().map(|(_, b, _)| b).sum()
}

fn rss_total(m: &[(u32, u64, u64)]) -> u64 {
    m.iter().map(|(_, _, r)| r).sum()
}

prism::both_modes! {
    /// Four 64 MiB objects are resident where they are kept while refs to them live;
    /// one clone keeps one alive; when the last ref goes, the memory goes back.
    fn dropping_the_last_ref_frees_the_memory(session, NodeSpec::cpus(2.0)) {
        let base = memory(&session);
        let refs: Vec<_> = (0..4).map(|_| make::remote(64 << 20)).collect();
        let lens = prism::get_all(&refs.iter().map(length::remote).collect::<Vec<_>>()).unwrap();
        assert_eq!(lens, vec![64 << 20; 4]);
        let held = memory(&session);
        assert!(
            store_bytes(&held) >= store_bytes(&base) + (256 << 20),
            "256 MiB of objects are stored: {base:?} -> {held:?}"
        );
        assert!(
            rss_total(&held) > rss_total(&base) + (200 << 20),
            "and resident: {base:?} -> {held:?}"
        );
        let copy = refs[0].clone();
        drop(refs);
        // One clone keeps one object alive (its copies elsewhere go as their owner
        // tells them, soon after).
        let one = wait_for(
            || {
                let m = memory(&session);
                let extra = store_bytes(&m) - store_bytes(&base);
                // The object, and on a cluster perhaps a copy a reader pulled.
                (64 << 20..=2 * (64 << 20)).contains(&extra).then_some(m)
            },
            "three of the four objects to go",
        )
        .unwrap();
        drop(copy);
        // The store lets go first; the values it shared (a decoded copy a task read)
        // go a moment later, so the resident memory is watched too.
        let after = wait_for(
            || {
                let m = memory(&session);
                (store_bytes(&m) == store_bytes(&base)
                    && rss_total(&m) < rss_total(&one) - (32 << 20))
                    .then_some(m)
            },
            "the last object to go",
        )
        .unwrap();
        assert!(
            rss_total(&after) < rss_total(&one) - (32 << 20),
            "memory went back to the system: {one:?} -> {after:?}"
        );
    }

    fn refs_nested_in_objects_are_counted(session, NodeSpec::cpus(1.0)) {
        let base = prism::store_stats().unwrap().objects;
        let inner: Vec<ObjectRef<Vec<u8>>> = (0..3).map(|i| prism::put(vec![i; 1000])).collect();
        let outer = prism::put(inner.clone());
        drop(inner);
        assert_eq!(
            prism::store_stats().unwrap().objects,
            base + 4,
            "the outer object holds the inner ones"
        );
        let got = prism::get_arc(&outer).unwrap();
        assert_eq!(prism::get(&got[2]).unwrap()[0], 2);
        drop(got);
        drop(outer);
        assert_eq!(prism::store_stats().unwrap().objects, base);
    }

    fn objects_past_the_cap_spill_to_disk_and_come_back(
        session,
        NodeSpec::cpus(1.0),
        prism::Config::default()
            .object_store_memory(10 << 20)
            .spill_dir(spill_dir())
    ) {
        let dir = spill_dir();
        let refs: Vec<ObjectRef<Vec<u64>>> =
            (0..6u64).map(|i| prism::put(vec![i; 512 * 1024])).collect();
        let stats = prism::store_stats().unwrap();
        assert!(stats.spill_count >= 3, "{stats:?}");
        assert!(stats.bytes_in_memory <= 10 << 20, "{stats:?}");
        assert!(
            std::fs::read_dir(&dir).unwrap().count() >= 1,
            "spilled objects are files"
        );
        // Read here, and by a task (which reads it wherever it runs).
        for (i, r) in refs.iter().enumerate() {
            let v = prism::get_arc(r).unwrap();
            assert_eq!((v.len(), v[1000]), (512 * 1024, i as u64));
        }
        assert_eq!(prism::get(&sum_of::remote(&refs[0])).unwrap(), 0);
        assert_eq!(prism::get(&sum_of::remote(&refs[5])).unwrap(), 5 * 512 * 1024);
        assert!(prism::store_stats().unwrap().restore_count >= 3);
        drop(refs);
        assert_eq!(prism::store_stats().unwrap().bytes_spilled, 0);
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "freed objects leave no files"
        );
        prism::shutdown();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn a_store_that_cannot_make_room_says_so_with_sizes(
        session,
        NodeSpec::cpus(1.0),
        prism::Config::default().object_store_memory(1 << 20).spilling(false)
    ) {
        let small = prism::put(vec![1u8; 600 << 10]);
        let second = prism::put(vec![2u8; 600 << 10]);
        match prism::get(&second).unwrap_err() {
            Error::ObjectStoreFull {
                needed, capacity, ..
            } => {
                assert!(needed >= 600 << 10);
                assert_eq!(capacity, 1 << 20);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            prism::get(&small).unwrap().len(),
            600 << 10,
            "what was stored is kept"
        );
        let huge = prism::put(vec![0u8; 2 << 20]);
        let msg = prism::get(&huge).unwrap_err().to_string();
        assert!(msg.contains("larger than the cap"), "{msg}");
    }

    fn a_ref_that_outlives_its_object_reports_it_lost(session, NodeSpec::cpus(1.0)) {
        let r = prism::put(5u32);
        let bytes = prism::object::encode(&r).unwrap();
        drop(r);
        let back: ObjectRef<u32> = prism::object::decode(&bytes).unwrap();
        assert!(matches!(
            prism::get_timeout(&back, Duration::from_secs(1)),
            Err(Error::ObjectLost(_))
        ));
    }

    /// A ref made in a task and returned nested in its result reads in the driver and in
    /// another task, small or large, as long as the result that brought it is alive.
    fn refs_made_in_tasks_travel_nested_in_results_and_arguments(session, NodeSpec::cpus(2.0)) {
        for len in [10, 300_000] {
            let made = put_here::remote(3u8, len);
            let refs = prism::get(&made).unwrap();
            assert_eq!(prism::get_arc(&refs[2]).unwrap()[len - 1], 2);
            let total = prism::get(&sum_nested::remote(refs.clone())).unwrap().unwrap();
            assert_eq!(total, 3 * len as u64, "len {len}");
            // Driver-made refs nested in an argument read in the task too.
            let mine: Vec<ObjectRef<Vec<u8>>> = (0..2).map(|_| prism::put(vec![5u8; len])).collect();
            assert_eq!(prism::get(&sum_nested::remote(mine)).unwrap().unwrap(), 10 * len as u64);
            drop(refs);
            drop(made);
        }
    }
}

/// A spill directory of this test process's own.
fn spill_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("prism-spill-test-{}", std::process::id()))
}

#[prism::remote]
fn sum_of(v: &[u64]) -> u64 {
    v.iter().sum()
}

#[prism::remote]
fn scale(v: &[f64], by: f64) -> Vec<f64> {
    v.iter().map(|x| x * by).collect()
}

#[test]
fn a_task_spec_travels_as_bytes_and_runs_by_name() {
    // What a worker process does: receive bytes, find the function by its stable name,
    // decode the arguments, run, encode the result. No runtime is needed for it.
    let stored = prism::object::encode(&vec![1.0_f64, 2.0, 3.0]).unwrap();
    let spec = TaskSpec {
        task_id: prism::ObjectId::new(0, 9),
        function: scale::NAME.to_string(),
        args: vec![
            EncodedArg::Ref {
                id: prism::ObjectId::new(0, 1),
                at: "127.0.0.1:9".into(),
            },
            EncodedArg::inline(&2.5_f64).unwrap(),
        ],
        options: prism::TaskOptions::default().num_cpus(0.5),
    };
    let wire = spec.to_bytes().unwrap();
    let received = TaskSpec::from_bytes(&wire).unwrap();
    assert_eq!(received, spec);
    let out = received
        .execute(|id, at| {
            assert_eq!((id, at), (prism::ObjectId::new(0, 1), "127.0.0.1:9"));
            Ok(std::sync::Arc::new(stored.clone()))
        })
        .unwrap();
    let result: Vec<f64> = prism::object::decode(&out).unwrap();
    assert_eq!(result, vec![2.5, 5.0, 7.5]);
    assert!(scale::NAME.ends_with("objects::scale"));

    let bad_arity = TaskSpec {
        args: vec![],
        ..spec.clone()
    };
    assert!(matches!(
        bad_arity.execute(|_, _| unreachable!()),
        Err(Error::Serialization(_))
    ));
    let garbage = TaskSpec {
        args: vec![
            EncodedArg::Inline(vec![0xff; 3]),
            EncodedArg::Inline(vec![]),
        ],
        ..spec
    };
    assert!(matches!(
        garbage.execute(|_, _| unreachable!()),
        Err(Error::Serialization(_))
    ));
    assert!(TaskSpec::from_bytes(&[1, 2, 3]).is_err());
}
