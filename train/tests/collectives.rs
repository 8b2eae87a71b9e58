//! Every collective against a hand-computed result, for 1 to 5 ranks and odd lengths,
//! over both transports: shared memory, and a ring of real TCP connections on loopback
//! (each rank a thread here; the trainer's tests run ranks in separate processes).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::time::Duration;

use prism_train::collective::{Background, Communicator, HostMemory, RingListener};
use prism_train::{ReduceOp, TrainError};

#[derive(Clone, Copy, Debug)]
enum Via {
    SharedMemory,
    /// A TCP ring, every byte over TCP.
    Tcp,
    /// A TCP ring whose all-reduces go through the ranks' memory (`process_vm_readv`).
    HostMemory,
}

const VIAS: [Via; 3] = [Via::SharedMemory, Via::Tcp, Via::HostMemory];

const SECRET: u64 = 0x5eed_1234_abcd_0042;

/// Runs `body` on `world` ranks, one thread each, and returns their results in rank
/// order.
fn group<R: Send + 'static>(
    via: Via,
    world: usize,
    body: impl Fn(Communicator) -> R + Send + Sync + 'static,
) -> Vec<R> {
    static GROUPS: AtomicUsize = AtomicUsize::new(0);
    let name = format!("test-{}", GROUPS.fetch_add(1, Ordering::Relaxed));
    let body = Arc::new(body);
    let (tell, addresses) = mpsc::channel();
    let listeners: Vec<_> = (0..world)
        .map(|_| {
            let l = RingListener::bind("127.0.0.1").unwrap();
            tell.send(l.address().unwrap()).unwrap();
            l
        })
        .collect();
    let peers: Arc<Vec<String>> = Arc::new(addresses.try_iter().collect());
    let threads: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(rank, listener)| {
            let (body, peers, name) = (body.clone(), peers.clone(), name.clone());
            std::thread::spawn(move || {
                let comm = match via {
                    Via::SharedMemory => Communicator::shared_memory(&name, rank, world),
                    Via::Tcp => Communicator::tcp_with(
                        rank,
                        listener,
                        &peers,
                        SECRET,
                        Duration::from_secs(60),
                        HostMemory::Off,
                    ),
                    Via::HostMemory => {
                        Communicator::tcp(rank, listener, &peers, SECRET, Duration::from_secs(60))
                    }
                }
                .unwrap();
                let kind = format!("{comm:?}");
                match via {
                    Via::HostMemory if world > 1 => assert!(kind.contains("host memory"), "{kind}"),
                    _ => assert!(!kind.contains("host memory"), "{kind}"),
                }
                body(comm)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// Rank `r`'s element `i`: small integers and halves, so that sums are exact.
fn value(r: usize, i: usize) -> f64 {
    (r + 1) as f64 * 0.5 + (i % 1000) as f64
}

const LENGTHS: [usize; 6] = [0, 1, 2, 7, 1001, 300_007];

#[test]
fn all_reduce_sums_and_means_f32_and_f64_on_1_to_5_ranks() {
    for via in VIAS {
        for world in 1..=5 {
            for len in LENGTHS {
                let out = group(via, world, move |mut c| {
                    let r = c.rank();
                    let mut a: Vec<f64> = (0..len).map(|i| value(r, i)).collect();
                    c.all_reduce(&mut a, ReduceOp::Sum).unwrap();
                    let mut b: Vec<f32> = (0..len).map(|i| value(r, i) as f32).collect();
                    c.all_reduce(&mut b, ReduceOp::Mean).unwrap();
                    (a, b)
                });
                let sum: Vec<f64> = (0..len)
                    .map(|i| (0..world).map(|r| value(r, i)).sum())
                    .collect();
                for (rank, (a, b)) in out.iter().enumerate() {
                    assert_eq!(a, &sum, "{via:?}, {world} ranks, {len} long, rank {rank}");
                    for (i, x) in b.iter().enumerate() {
                        let want = (sum[i] / world as f64) as f32;
                        assert!(
                            (x - want).abs() <= want.abs() * 1e-6,
                            "{via:?}, {world} ranks, {len} long, rank {rank}, [{i}]: {x} vs {want}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn broadcast_all_gather_and_barrier_on_1_to_5_ranks() {
    for via in VIAS {
        for world in 1..=5 {
            for len in [0, 3, 300_007] {
                let out = group(via, world, move |mut c| {
                    let r = c.rank();
                    let root = world - 1;
                    // Non-roots start with the wrong length: they take the root's.
                    let mut b: Vec<f32> = if r == root {
                        (0..len).map(|i| value(r, i) as f32).collect()
                    } else {
                        vec![-1.0; r]
                    };
                    c.broadcast(&mut b, root).unwrap();
                    // Parts of different, odd lengths.
                    let part: Vec<f64> = (0..2 * r + 1).map(|i| value(r, i)).collect();
                    let gathered = c.all_gather(&part).unwrap();
                    c.barrier().unwrap();
                    (b, gathered)
                });
                let root = world - 1;
                let want_b: Vec<f32> = (0..len).map(|i| value(root, i) as f32).collect();
                let want_g: Vec<Vec<f64>> = (0..world)
                    .map(|r| (0..2 * r + 1).map(|i| value(r, i)).collect())
                    .collect();
                for (b, g) in &out {
                    assert_eq!(b, &want_b, "{via:?}, {world} ranks, {len} long");
                    assert_eq!(g, &want_g, "{via:?}, {world} ranks");
                }
            }
        }
    }
}

#[test]
fn a_peer_that_dies_fails_every_pending_collective_at_once() {
    for via in VIAS {
        let start = Arc::new(Barrier::new(3));
        let gate = start.clone();
        let out = group(via, 3, move |mut c| {
            let mut buf = vec![1f32; 1 << 20];
            c.all_reduce(&mut buf, ReduceOp::Sum).unwrap();
            gate.wait();
            if c.rank() == 1 {
                // Rank 1 dies: its end of the group goes without a word.
                drop(c);
                return Ok(Vec::new());
            }
            // The others wait in a collective that rank 1 never joins; the group's
            // timeout is a minute, so only the peer's death can end it.
            c.all_reduce(&mut buf, ReduceOp::Sum).map(|_| buf)
        });
        for (rank, r) in out.iter().enumerate() {
            if rank == 1 {
                continue;
            }
            match r {
                Err(TrainError::PeerDied(why)) => assert!(!why.is_empty()),
                other => panic!("{via:?}: rank {rank} got {other:?}, not PeerDied"),
            }
        }
    }
}

#[test]
fn a_buffer_survives_a_failed_collective_and_the_failure_sticks() {
    let mut zero = Communicator::shared_memory("survives", 0, 2).unwrap();
    let one = Communicator::shared_memory("survives", 1, 2).unwrap();
    drop(one);
    let mut buf = vec![7f64; 11];
    assert!(matches!(
        zero.all_reduce(&mut buf, ReduceOp::Sum),
        Err(TrainError::PeerDied(_))
    ));
    assert_eq!(buf, vec![7f64; 11]);
    assert!(matches!(zero.barrier(), Err(TrainError::PeerDied(_))));
    // A rank that joins a group already failed learns so at once.
    let early = Communicator::shared_memory("left-early", 1, 2).unwrap();
    drop(early);
    assert!(matches!(
        Communicator::shared_memory("left-early", 0, 2),
        Err(TrainError::PeerDied(_))
    ));
}

#[test]
fn ranks_calling_different_collectives_fail_with_a_mismatch() {
    for via in VIAS {
        let out = group(via, 2, |mut c| {
            if c.rank() == 0 {
                c.all_reduce(&mut vec![1f32; 10], ReduceOp::Sum)
            } else {
                c.all_reduce(&mut vec![1f32; 12], ReduceOp::Sum)
            }
        });
        assert!(
            out.iter()
                .any(|r| matches!(r, Err(TrainError::Mismatch(_)))),
            "{via:?}: {out:?}"
        );
        assert!(out.iter().all(|r| r.is_err()), "{via:?}: {out:?}");
    }
}

#[test]
fn a_connection_without_the_secret_is_turned_away() {
    let listeners: Vec<_> = (0..2)
        .map(|_| RingListener::bind("127.0.0.1").unwrap())
        .collect();
    let peers: Vec<String> = listeners.iter().map(|l| l.address().unwrap()).collect();
    // A stranger connects to rank 0 first and says the wrong thing.
    let mut stranger = std::net::TcpStream::connect(&peers[0]).unwrap();
    std::io::Write::write_all(&mut stranger, b"PRTR0000000000000000").unwrap();
    let threads: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(rank, l)| {
            let peers = peers.clone();
            std::thread::spawn(move || {
                let mut c =
                    Communicator::tcp(rank, l, &peers, SECRET, Duration::from_secs(30)).unwrap();
                let mut v = vec![rank as f32 + 1.0; 3];
                c.all_reduce(&mut v, ReduceOp::Sum).unwrap();
                v
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), vec![3.0; 3]);
    }
    drop(stranger);
}

#[test]
fn bad_ranks_are_refused() {
    assert!(matches!(
        Communicator::shared_memory("bad", 3, 3),
        Err(TrainError::Config(_))
    ));
    assert!(matches!(
        Communicator::shared_memory("bad", 0, 0),
        Err(TrainError::Config(_))
    ));
}

/// Collectives handed to a background thread run in order and give the same results;
/// a peer's death fails the queued ones too, and the communicator comes back after.
#[test]
fn background_collectives_run_in_order_and_fail_on_a_dead_peer() {
    for via in VIAS {
        let out = group(via, 3, move |c| {
            let r = c.rank();
            let bg = Background::start(c).unwrap();
            let a = bg.all_reduce(vec![r as f32; 1001], ReduceOp::Sum);
            let b = bg.all_reduce(vec![1.0f64; 7], ReduceOp::Mean);
            let (a, b) = (a.wait().unwrap(), b.wait().unwrap());
            let mut c = bg.finish().unwrap();
            c.barrier().unwrap();
            if r == 1 {
                drop(c);
                return (a, b, None);
            }
            let bg = Background::start(c).unwrap();
            let queued: Vec<_> = (0..3)
                .map(|_| bg.all_reduce(vec![0f32; 1 << 16], ReduceOp::Sum))
                .collect();
            let results: Vec<_> = queued.into_iter().map(|p| p.wait()).collect();
            (a, b, Some(results))
        });
        for (rank, (a, b, after)) in out.into_iter().enumerate() {
            assert_eq!(a, vec![3.0; 1001], "{via:?}");
            assert_eq!(b, vec![1.0; 7], "{via:?}");
            if rank == 1 {
                continue;
            }
            for r in after.unwrap() {
                assert!(
                    matches!(r, Err(TrainError::PeerDied(_))),
                    "{via:?}: rank {rank} got {r:?}"
                );
            }
        }
    }
}
