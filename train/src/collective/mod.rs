//! Collectives among the workers of a group: `all_reduce` (sum or mean), `broadcast`,
//! `all_gather` and `barrier`, over buffers of `f32` or `f64`.
//!
//! A [`Communicator`] is one rank's end of a group of `world` ranks. Two transports
//! carry it, with the same operations and the same results:
//!
//! - **Shared memory** ([`Communicator::shared_memory`]), when every rank lives in one
//!   process (the embedded runtime). For an all-reduce the ranks lend each other their
//!   buffers: each rank sums its own `1/n` of every buffer (the reduce-scatter) and
//!   writes the sum straight into every buffer (the all-gather), block by block while
//!   the block is in cache. Every input is read once and every output written once,
//!   with no copy and no scratch buffer, and the ranks' results are the same bits.
//! - **A ring of TCP connections** ([`Communicator::tcp`]), rank `r` sending to `r + 1`
//!   and receiving from `r - 1`: the bandwidth-optimal ring all-reduce, a
//!   reduce-scatter then an all-gather, each rank sending `2(n-1)/n` of the buffer in
//!   pieces of [`PIECE_BYTES`] so that sending, receiving and adding overlap. A writer
//!   thread per rank sends while the rank receives. When every rank is on one machine
//!   (a probe at connect tells), the all-reduce instead goes through the processes'
//!   memory: each rank sums its `1/n` of all buffers with `process_vm_readv` and writes
//!   the sum back with `process_vm_writev`, the ring carrying only the buffers'
//!   addresses and two barriers ([`HostMemory`]).
//!
//! Every rank calls the same collectives in the same order. A collective fails, never
//! hangs: when a peer dies its connection closes (or its end of the shared group is
//! dropped) and every pending collective of every rank fails at once with
//! [`TrainError::PeerDied`]; a rank that calls a different collective, or the same one
//! with a different length, fails the group with [`TrainError::Mismatch`]; a wait past
//! the group's timeout fails with [`TrainError::Timeout`]. Once failed, a communicator
//! stays failed.

mod background;
mod hub;
mod ring;

use std::time::Duration;

pub use background::{Background, Pending};
pub use hub::SharedGroup;
pub use ring::{HostMemory, RingListener, PIECE_BYTES};

use crate::error::{Result, TrainError};

/// How an all-reduce combines the ranks' buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum ReduceOp {
    /// The element-wise sum.
    #[default]
    Sum,
    /// The element-wise mean: the sum divided by the number of ranks.
    Mean,
}

/// An element type the collectives carry: `f32` or `f64`, and no other (the trait is
/// sealed): types without padding whose every bit pattern is a value, so that a
/// transport may move them as plain bytes.
pub trait Element:
    sealed::Sealed + Copy + Send + Sync + Default + PartialEq + std::fmt::Debug + 'static
{
    /// The type's name, checked between ranks.
    const NAME: &'static str;
    /// Its size in bytes.
    const SIZE: usize;
    /// `a + b`.
    fn add(a: Self, b: Self) -> Self;
    /// `self * by`.
    fn scale(self, by: f64) -> Self;
    /// Appends `src` as little-endian bytes to `out`.
    fn write_le(src: &[Self], out: &mut Vec<u8>);
    /// Decodes `bytes` (little-endian) into `out`, one element per `SIZE` bytes.
    fn read_le(bytes: &[u8], out: &mut [Self]);
    /// Adds the elements in `bytes` (little-endian) into `into`.
    fn add_le(bytes: &[u8], into: &mut [Self]);
}

macro_rules! element {
    ($t:ty, $n:expr) => {
        impl Element for $t {
            const NAME: &'static str = $n;
            const SIZE: usize = std::mem::size_of::<$t>();
            fn add(a: Self, b: Self) -> Self {
                a + b
            }
            fn scale(self, by: f64) -> Self {
                (self as f64 * by) as $t
            }
            fn write_le(src: &[Self], out: &mut Vec<u8>) {
                let at = out.len();
                out.resize(at + src.len() * Self::SIZE, 0);
                for (o, x) in out[at..].chunks_exact_mut(Self::SIZE).zip(src) {
                    o.copy_from_slice(&x.to_le_bytes());
                }
            }
            fn read_le(bytes: &[u8], out: &mut [Self]) {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(Self::SIZE)) {
                    *o = <$t>::from_le_bytes(b.try_into().expect("chunks are SIZE long"));
                }
            }
            fn add_le(bytes: &[u8], into: &mut [Self]) {
                for (o, b) in into.iter_mut().zip(bytes.chunks_exact(Self::SIZE)) {
                    *o += <$t>::from_le_bytes(b.try_into().expect("chunks are SIZE long"));
                }
            }
        }
    };
}
element!(f32, "f32");
element!(f64, "f64");

mod sealed {
    /// Implemented for `f32` and `f64` only.
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// The part of a buffer of `len` elements that rank `rank` of `world` reduces: `len`
/// cut into `world` runs that differ in length by at most one.
pub fn chunk_range(len: usize, world: usize, rank: usize) -> std::ops::Range<usize> {
    let (base, extra) = (len / world, len % world);
    let start = rank * base + rank.min(extra);
    start..start + base + usize::from(rank < extra)
}

/// Turns a sum over `world` ranks into their mean, when `op` asks for it.
fn finish<T: Element>(sum: &mut [T], op: ReduceOp, world: usize) {
    if op == ReduceOp::Mean {
        let by = 1.0 / world as f64;
        sum.iter_mut().for_each(|x| *x = x.scale(by));
    }
}

/// What carries a group's collectives, as [`Communicator::transport`] names it: alone,
/// shared memory, a TCP ring, or a TCP ring whose all-reduces go through host memory.
pub const TRANSPORTS: [&str; 4] = [
    "alone",
    "shared memory",
    "tcp ring",
    "tcp ring, all-reduce in host memory",
];

/// How long a collective waits for its peers unless told otherwise: long enough for
/// any epoch of compute between two collectives, short of forever.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// One rank's end of a group; see the module's documentation.
pub struct Communicator {
    rank: usize,
    world: usize,
    transport: Transport,
}

enum Transport {
    Alone,
    Shared(hub::Member),
    Ring(Box<ring::Ring>),
}

impl Communicator {
    /// Rank `rank` of a group of `world` ranks in this process, met under `group` (a
    /// name unique to the group, say a run's id and attempt). Returns at once; the
    /// first collective waits for the others.
    ///
    /// ```
    /// use prism_train::collective::{Communicator, ReduceOp};
    /// let ranks: Vec<_> = (0..3)
    ///     .map(|rank| std::thread::spawn(move || {
    ///         let mut comm = Communicator::shared_memory("doc-example", rank, 3).unwrap();
    ///         let mut grads = vec![rank as f32; 5];
    ///         comm.all_reduce(&mut grads, ReduceOp::Sum).unwrap();
    ///         grads
    ///     }))
    ///     .collect();
    /// for r in ranks {
    ///     assert_eq!(r.join().unwrap(), vec![3.0; 5]); // 0 + 1 + 2
    /// }
    /// ```
    pub fn shared_memory(group: &str, rank: usize, world: usize) -> Result<Communicator> {
        Self::check(rank, world)?;
        let transport = if world == 1 {
            Transport::Alone
        } else {
            Transport::Shared(hub::Member::join(group, rank, world, DEFAULT_TIMEOUT)?)
        };
        Ok(Communicator {
            rank,
            world,
            transport,
        })
    }

    /// Rank `rank` of a ring of TCP connections: `peers[i]` is the address of rank
    /// `i`'s listener (`peers[rank]` is `listener`'s own), and `secret` is the group's,
    /// presented by every connection. Connects to the next rank and accepts the previous
    /// one, within `timeout`, which also bounds every later wait.
    ///
    /// When every rank turns out to be on this machine and allowed to read the others'
    /// memory, the all-reduces go through the processes' memory; see
    /// [`tcp_with`](Self::tcp_with) to keep every byte on TCP.
    pub fn tcp(
        rank: usize,
        listener: RingListener,
        peers: &[String],
        secret: u64,
        timeout: Duration,
    ) -> Result<Communicator> {
        Self::tcp_with(rank, listener, peers, secret, timeout, HostMemory::Probe)
    }

    /// [`tcp`](Self::tcp), with `memory` saying whether the all-reduces may go through
    /// the processes' memory when all ranks are on one machine.
    pub fn tcp_with(
        rank: usize,
        listener: RingListener,
        peers: &[String],
        secret: u64,
        timeout: Duration,
        memory: HostMemory,
    ) -> Result<Communicator> {
        let world = peers.len();
        Self::check(rank, world)?;
        let transport = if world == 1 {
            Transport::Alone
        } else {
            Transport::Ring(Box::new(ring::Ring::connect(
                rank, listener, peers, secret, timeout, memory,
            )?))
        };
        Ok(Communicator {
            rank,
            world,
            transport,
        })
    }

    fn check(rank: usize, world: usize) -> Result<()> {
        if world == 0 || rank >= world {
            return Err(TrainError::Config(format!(
                "rank {rank} of a group of {world}: a rank must be below the group's size"
            )));
        }
        Ok(())
    }

    /// This end's rank, `0..world`.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of ranks in the group.
    pub fn world(&self) -> usize {
        self.world
    }

    /// What carries the collectives: one of [`TRANSPORTS`].
    pub fn transport(&self) -> &'static str {
        TRANSPORTS[match &self.transport {
            Transport::Alone => 0,
            Transport::Shared(_) => 1,
            Transport::Ring(r) if r.uses_host_memory() => 3,
            Transport::Ring(_) => 2,
        }]
    }

    /// Combines every rank's `buf` (all of one length) element by element; each rank's
    /// `buf` holds the result after, in place. On an error before the ranks met it keeps
    /// what it held; after, parts of it may hold the result.
    pub fn all_reduce<T: Element>(&mut self, buf: &mut Vec<T>, op: ReduceOp) -> Result<()> {
        match &mut self.transport {
            Transport::Alone => Ok(()),
            Transport::Shared(m) => m.all_reduce(buf, op),
            Transport::Ring(r) => r.all_reduce(buf, op),
        }
    }

    /// Copies rank `root`'s `buf` into every rank's `buf` (resized to its length).
    pub fn broadcast<T: Element>(&mut self, buf: &mut Vec<T>, root: usize) -> Result<()> {
        if root >= self.world {
            return Err(TrainError::Config(format!(
                "broadcast from rank {root} in a group of {}",
                self.world
            )));
        }
        match &mut self.transport {
            Transport::Alone => Ok(()),
            Transport::Shared(m) => m.broadcast(buf, root),
            Transport::Ring(r) => r.broadcast(buf, root),
        }
    }

    /// Every rank's `part`, in rank order, on every rank. Parts may differ in length.
    pub fn all_gather<T: Element>(&mut self, part: &[T]) -> Result<Vec<Vec<T>>> {
        match &mut self.transport {
            Transport::Alone => Ok(vec![part.to_vec()]),
            Transport::Shared(m) => m.all_gather(part),
            Transport::Ring(r) => r.all_gather(part),
        }
    }

    /// Returns once every rank has called it.
    pub fn barrier(&mut self) -> Result<()> {
        let mut token = vec![0f32];
        self.all_reduce(&mut token, ReduceOp::Sum)
    }
}

impl std::fmt::Debug for Communicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Communicator(rank {} of {}, {})",
            self.rank,
            self.world,
            self.transport()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::chunk_range;

    #[test]
    fn chunks_cover_the_buffer_in_order() {
        for len in [0, 1, 5, 7, 100] {
            for world in 1..=5 {
                let mut next = 0;
                for r in 0..world {
                    let c = chunk_range(len, world, r);
                    assert_eq!(c.start, next);
                    assert!(c.len() == len / world || c.len() == len / world + 1);
                    next = c.end;
                }
                assert_eq!(next, len);
            }
        }
    }
}
