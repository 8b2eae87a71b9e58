//! The object store: reference counting (measured), nested refs, spilling and
//! restoring, a full store, and the serialized task seam that worker processes use.

use std::time::Duration;

use prism::prelude::*;
use prism::task::{EncodedArg, TaskSpec};

/// Resident set size of this process in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[prism::remote]
fn make(n: usize) -> Vec<u8> {
    vec![7u8; n]
}

#[prism::remote]
fn length(v: &[u8]) -> usize {
    v.len()
}

#[test]
fn dropping_the_last_ref_frees_the_memory() {
    prism::init_with(prism::Config::default().num_cpus(2.0)).unwrap();
    let base = prism::store_stats().unwrap();
    let before = rss();
    let refs: Vec<_> = (0..4).map(|_| make::remote(64 << 20)).collect();
    assert_eq!(
        prism::get_all(
            &prism::get_all(&refs.iter().map(length::remote).collect::<Vec<_>>())
                .map(|v| v.into_iter().map(prism::put).collect::<Vec<_>>())
                .unwrap()
        )
        .unwrap(),
        vec![64 << 20; 4]
    );
    let held = rss();
    assert!(
        held > before + (200 << 20),
        "256 MiB of objects are resident: {before} -> {held}"
    );
    let stats = prism::store_stats().unwrap();
    assert!(stats.bytes_in_memory >= 256 << 20);
    let copy = refs[0].clone();
    drop(refs);
    // One clone keeps one object alive.
    let stats = prism::store_stats().unwrap();
    assert!(
        stats.bytes_in_memory >= 64 << 20 && stats.bytes_in_memory < 65 << 20,
        "{stats:?}"
    );
    drop(copy);
    let stats = prism::store_stats().unwrap();
    assert_eq!(stats.bytes_in_memory, base.bytes_in_memory);
    let after = rss();
    assert!(
        after < held - (200 << 20),
        "memory went back to the system: {held} -> {after}"
    );
    prism::shutdown();
}

#[test]
fn refs_nested_in_objects_are_counted() {
    prism::init_with(prism::Config::default().num_cpus(1.0)).unwrap();
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
    prism::shutdown();
}

#[test]
fn objects_past_the_cap_spill_to_disk_and_come_back() {
    let dir = std::env::temp_dir().join(format!("prism-spill-test-{}", std::process::id()));
    prism::init_with(
        prism::Config::default()
            .num_cpus(1.0)
            .object_store_memory(10 << 20)
            .spill_dir(&dir),
    )
    .unwrap();
    let refs: Vec<ObjectRef<Vec<u64>>> =
        (0..6u64).map(|i| prism::put(vec![i; 512 * 1024])).collect();
    let stats = prism::store_stats().unwrap();
    assert!(stats.spill_count >= 3, "{stats:?}");
    assert!(stats.bytes_in_memory <= 10 << 20, "{stats:?}");
    assert!(
        std::fs::read_dir(&dir).unwrap().count() >= 1,
        "spilled objects are files"
    );
    for (i, r) in refs.iter().enumerate() {
        let v = prism::get_arc(r).unwrap();
        assert_eq!((v.len(), v[1000]), (512 * 1024, i as u64));
    }
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

#[test]
fn a_store_that_cannot_make_room_says_so_with_sizes() {
    prism::init_with(
        prism::Config::default()
            .num_cpus(1.0)
            .object_store_memory(1 << 20)
            .spilling(false),
    )
    .unwrap();
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
    prism::shutdown();
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

#[test]
fn a_ref_that_outlives_its_object_reports_it_lost() {
    prism::init_with(prism::Config::default().num_cpus(1.0)).unwrap();
    let r = prism::put(5u32);
    let bytes = prism::object::encode(&r).unwrap();
    drop(r);
    let back: ObjectRef<u32> = prism::object::decode(&bytes).unwrap();
    assert!(matches!(
        prism::get_timeout(&back, Duration::from_secs(1)),
        Err(Error::ObjectLost(_))
    ));
    prism::shutdown();
}
