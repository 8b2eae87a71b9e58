//! The store's invariants: an object lives exactly as long as its references, under
//! random operations and under threads racing.

use super::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Create,
    /// Clone an existing handle (shares its count, as `ObjectRef::clone` does).
    Share(usize),
    /// Take a new count on an existing object (as deserializing a ref does).
    Reacquire(usize),
    Drop(usize),
    Complete(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::Create),
        any::<usize>().prop_map(Op::Share),
        any::<usize>().prop_map(Op::Reacquire),
        any::<usize>().prop_map(Op::Drop),
        any::<usize>().prop_map(Op::Complete),
    ]
}

fn value(n: usize) -> (AnyValue, u64, Codec) {
    (Arc::new(vec![0u8; n]), n as u64, Codec::of::<Vec<u8>>())
}

proptest! {
    /// An object exists exactly while some handle to it does, and the bytes the store
    /// accounts are exactly those of its live ready objects.
    #[test]
    fn objects_live_exactly_as_long_as_their_refs(ops in proptest::collection::vec(op(), 1..150)) {
        let store = Store::new(1 << 30, None);
        let mut handles: Vec<Arc<RefCount>> = Vec::new();
        let mut sizes: HashMap<ObjectId, u64> = HashMap::new();
        let mut next = 0u64;
        for op in ops {
            let pick = |i: usize| (!handles.is_empty()).then(|| i % handles.len());
            match op {
                Op::Create => {
                    next += 1;
                    handles.push(Arc::new(store.create(ObjectId::new(0, next))));
                }
                Op::Share(i) => if let Some(i) = pick(i) {
                    handles.push(handles[i].clone());
                },
                Op::Reacquire(i) => if let Some(i) = pick(i) {
                    let again = store.reacquire(handles[i].id).expect("a live handle keeps it");
                    handles.push(Arc::new(again));
                },
                Op::Drop(i) => if let Some(i) = pick(i) {
                    handles.swap_remove(i);
                },
                Op::Complete(i) => if let Some(i) = pick(i) {
                    let id = handles[i].id;
                    let n = (i % 7) * 100;
                    let (v, size, codec) = value(n);
                    if store.complete(id, v, size, codec) {
                        sizes.insert(id, size);
                    }
                },
            }
            let live: std::collections::HashSet<ObjectId> = handles.iter().map(|h| h.id).collect();
            let stats = store.stats();
            prop_assert_eq!(stats.objects, live.len());
            let expected: u64 = live.iter().filter_map(|id| sizes.get(id)).sum();
            prop_assert_eq!(stats.bytes_in_memory, expected);
            for id in &live {
                prop_assert!(!matches!(store.states(&[*id])[0], Some(Err(Error::ObjectLost(_)))));
            }
        }
        drop(handles);
        prop_assert_eq!(store.stats(), StoreStats { capacity: 1 << 30, ..StoreStats::default() });
    }
}

#[test]
fn concurrent_clones_and_drops_free_everything() {
    let store = Store::new(1 << 30, None);
    let roots: Vec<Arc<RefCount>> = (0..64)
        .map(|i| {
            let id = ObjectId::new(0, i);
            let r = Arc::new(store.create(id));
            let (v, size, codec) = value(10);
            store.complete(id, v, size, codec);
            r
        })
        .collect();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (store, roots) = (&store, &roots);
            s.spawn(move || {
                let mut held: Vec<Arc<RefCount>> = Vec::new();
                let mut x = t * 7919 + 1;
                for _ in 0..20_000 {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let k = (x >> 33) as usize;
                    match k % 3 {
                        0 => held.push(roots[k % roots.len()].clone()),
                        1 => {
                            let id = roots[k % roots.len()].id;
                            held.push(Arc::new(store.reacquire(id).expect("a root keeps it")));
                        }
                        _ if !held.is_empty() => {
                            held.swap_remove(k % held.len());
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    assert_eq!(store.stats().objects, 64);
    drop(roots);
    assert_eq!(store.stats().objects, 0);
    assert_eq!(store.stats().bytes_in_memory, 0);
}

/// The counts `prism list objects` shows: objects spilled now and their bytes, down
/// again when one is read back and when one is freed while on disk.
#[test]
fn spilled_counts_follow_spills_restores_and_frees() {
    let dir = std::env::temp_dir().join(format!("prism-spill-counts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = Store::new(300_000, Some(dir.clone()));
    let refs: Vec<RefCount> = (1..=3)
        .map(|i| {
            let r = store.create(ObjectId::new(0, i));
            let (v, n, c) = value(100_000);
            assert!(store.complete(r.id, v, n, c));
            r
        })
        .collect();
    assert_eq!(store.stats().objects_spilled, 0);
    // A fourth does not fit: the oldest goes to disk.
    let fourth = store.create(ObjectId::new(0, 4));
    let (v, n, c) = value(100_000);
    assert!(store.complete(fourth.id, v, n, c));
    let s = store.stats();
    assert_eq!((s.objects_spilled, s.bytes_spilled), (1, 100_000));
    assert!(s.bytes_in_memory <= 300_000);
    // Read back (and the next oldest spilled to make room).
    assert!(store.values(&[refs[0].id])[0].is_ok());
    let s = store.stats();
    assert_eq!(s.objects_spilled, s.spill_count - s.restore_count);
    assert_eq!(s.restore_count, 1);
    drop(refs);
    drop(fourth);
    let s = store.stats();
    assert_eq!((s.objects, s.objects_spilled, s.bytes_spilled), (0, 0, 0));
    let _ = std::fs::remove_dir_all(&dir);
}
