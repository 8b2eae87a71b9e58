//! The TCP transport: rank `r` sends to rank `r + 1` and receives from rank `r - 1`,
//! over connections that open with the group's secret.
//!
//! When every rank runs on this machine and may read the others' memory (probed once,
//! when the ring connects), an all-reduce goes through the processes' memory instead:
//! the ranks tell each other where their buffers are, over the ring, and each sums its
//! `1/n` of all of them and writes the sum into all of them with `process_vm_readv`
//! and `process_vm_writev`, one kernel copy per byte where TCP makes two. The ring
//! still carries the headers and the two barriers around it.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{chunk_range, finish, Element, ReduceOp};
use crate::error::{Result, TrainError};

/// The most bytes sent as one piece: a segment travels in pieces so that the next rank
/// adds one while this one sends the next.
pub const PIECE_BYTES: usize = 1 << 20;

/// How many pieces may wait for the writer thread.
const QUEUED_PIECES: usize = 8;

const HELLO: &[u8; 4] = b"PRTR";

/// A rank's listener, bound before the ranks learn each other's addresses.
#[derive(Debug)]
pub struct RingListener {
    listener: TcpListener,
}

impl RingListener {
    /// Binds `ip` on a free port.
    pub fn bind(ip: &str) -> Result<RingListener> {
        let listener = TcpListener::bind((ip, 0))
            .map_err(|e| TrainError::Io(format!("cannot listen on {ip}: {e}")))?;
        Ok(RingListener { listener })
    }

    /// Where the other ranks reach it.
    pub fn address(&self) -> Result<String> {
        self.listener
            .local_addr()
            .map(|a| a.to_string())
            .map_err(|e| TrainError::Io(e.to_string()))
    }
}

pub(super) struct Ring {
    rank: usize,
    world: usize,
    /// To the writer thread, which sends to the next rank.
    send: Option<SyncSender<Vec<u8>>>,
    writer: Option<JoinHandle<()>>,
    /// What broke the writer, if anything did.
    write_error: Arc<Mutex<Option<String>>>,
    /// Pieces the writer has sent, back for their memory to be used again.
    sent: Receiver<Vec<u8>>,
    next: TcpStream,
    prev: TcpStream,
    seq: u64,
    failed: Option<TrainError>,
    scratch: Vec<u8>,
    /// Every rank's process id, when the all-reduces go through the processes' memory.
    same_host: Option<Vec<i32>>,
}

/// Whether a TCP ring may reduce through its peers' memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum HostMemory {
    /// Probe, when the ring connects, whether every rank is on this machine and may
    /// read the others' memory, and use it if so.
    #[default]
    Probe,
    /// Never: every byte goes over TCP.
    Off,
}

/// Bytes of a block reduced through the processes' memory: a block of the sum and one
/// peer's block stay in cache.
const LENT_BLOCK_BYTES: usize = 1 << 18;

fn io(what: &str, e: std::io::Error) -> TrainError {
    TrainError::Io(format!("{what}: {e}"))
}

fn hello(secret: u64, from: usize, world: usize) -> Vec<u8> {
    let mut h = HELLO.to_vec();
    h.extend_from_slice(&secret.to_le_bytes());
    h.extend_from_slice(&(from as u32).to_le_bytes());
    h.extend_from_slice(&(world as u32).to_le_bytes());
    h
}

impl Ring {
    pub(super) fn connect(
        rank: usize,
        listener: RingListener,
        peers: &[String],
        secret: u64,
        timeout: Duration,
        memory: HostMemory,
    ) -> Result<Ring> {
        let world = peers.len();
        let deadline = Instant::now() + timeout;
        let to = &peers[(rank + 1) % world];
        let addr = to
            .to_socket_addrs()
            .map_err(|e| {
                io(
                    &format!("bad address of rank {}: {to}", (rank + 1) % world),
                    e,
                )
            })?
            .next()
            .ok_or_else(|| TrainError::Config(format!("no address in {to}")))?;
        // The next rank's listener is bound before the addresses are shared, so a
        // connection is accepted by its backlog even before it calls accept.
        let mut next = TcpStream::connect_timeout(&addr, timeout).map_err(|e| {
            io(
                &format!("cannot reach rank {} at {to}", (rank + 1) % world),
                e,
            )
        })?;
        next.write_all(&hello(secret, rank, world))
            .map_err(|e| io("cannot greet the next rank", e))?;
        let expect = hello(secret, (rank + world - 1) % world, world);
        let l = &listener.listener;
        l.set_nonblocking(true).map_err(|e| io("listener", e))?;
        let prev = loop {
            match l.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).map_err(|e| io("accepted", e))?;
                    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
                    let mut got = vec![0u8; expect.len()];
                    // A stranger or a wrong secret is turned away; the rank waits on.
                    if s.read_exact(&mut got).is_ok() && got == expect {
                        break s;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return Err(TrainError::Timeout(format!(
                            "rank {rank} waited {timeout:?} for rank {} to connect",
                            (rank + world - 1) % world
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(io("accept", e)),
            }
        };
        for s in [&next, &prev] {
            s.set_nodelay(true).ok();
        }
        prev.set_read_timeout(Some(timeout))
            .map_err(|e| io("prev", e))?;
        next.set_write_timeout(Some(timeout))
            .map_err(|e| io("next", e))?;
        let (send, queue) = sync_channel::<Vec<u8>>(QUEUED_PIECES);
        let write_error = Arc::new(Mutex::new(None));
        let mut out = next.try_clone().map_err(|e| io("next", e))?;
        let broke = write_error.clone();
        let (give_back, sent) = channel::<Vec<u8>>();
        let writer = std::thread::Builder::new()
            .name(format!("prism-train-ring-{rank}"))
            .spawn(move || {
                for piece in queue {
                    if let Err(e) = out.write_all(&piece) {
                        *broke.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                        let _ = out.shutdown(Shutdown::Both);
                        return;
                    }
                    let _ = give_back.send(piece);
                }
            })
            .map_err(|e| io("cannot start the ring's writer", e))?;
        let mut ring = Ring {
            rank,
            world,
            send: Some(send),
            writer: Some(writer),
            write_error,
            sent,
            next,
            prev,
            seq: 0,
            failed: None,
            scratch: Vec::new(),
            same_host: None,
        };
        if memory == HostMemory::Probe {
            ring.same_host = ring.probe_same_host(secret)?;
        }
        Ok(ring)
    }

    /// Whether the all-reduces go through the processes' memory.
    pub(super) fn uses_host_memory(&self) -> bool {
        self.same_host.is_some()
    }

    /// Every rank shows the others a random value in its memory; when every rank reads
    /// every other's value back through `process_vm_readv`, they are all on this
    /// machine, in one process namespace, and allowed to: the ranks' process ids.
    fn probe_same_host(&mut self, secret: u64) -> Result<Option<Vec<i32>>> {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(secret);
        h.write_usize(self.rank);
        let shown: Box<[u64; 2]> = Box::new([h.finish(), secret ^ h.finish().rotate_left(17)]);
        let pid = std::process::id();
        let mine = [
            u64::from(pid),
            shown.as_ptr() as usize as u64,
            shown[0],
            shown[1],
        ];
        let all = self.all_gather_u64(&mine)?;
        let readable = all.iter().enumerate().all(|(rank, p)| {
            rank == self.rank || {
                // The shown `u64`s, read as the bits of two `f64`s.
                let mut got = [0f64; 2];
                let read = i32::try_from(p[0])
                    .ok()
                    .and_then(|pid| process_memory::read(pid, p[1], &mut got).ok());
                read.is_some() && got[0].to_bits() == p[2] && got[1].to_bits() == p[3]
            }
        });
        // Every rank reads the same verdicts, so all decide alike; `shown` lives until
        // every rank has read it, since each gives its verdict after its reads.
        let verdicts = self.all_gather_u64(&[u64::from(readable)])?;
        drop(shown);
        if verdicts.iter().all(|v| v[0] == 1) {
            Ok(Some(all.iter().map(|p| p[0] as i32).collect()))
        } else {
            Ok(None)
        }
    }

    /// [`all_gather`](Self::all_gather) of `u64`s, carried as the bits of `f64`s.
    fn all_gather_u64(&mut self, part: &[u64]) -> Result<Vec<Vec<u64>>> {
        let bits: Vec<f64> = part.iter().map(|v| f64::from_bits(*v)).collect();
        Ok(self
            .all_gather(&bits)?
            .into_iter()
            .map(|p| p.into_iter().map(f64::to_bits).collect())
            .collect())
    }

    fn prev_rank(&self) -> usize {
        (self.rank + self.world - 1) % self.world
    }

    /// Fails the ring: both connections close, so the neighbours fail too, and theirs.
    fn fail(&mut self, why: TrainError) -> TrainError {
        let _ = self.next.shutdown(Shutdown::Both);
        let _ = self.prev.shutdown(Shutdown::Both);
        self.failed = Some(why.clone());
        why
    }

    fn check(&self) -> Result<()> {
        match &self.failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// An empty piece, with the memory of one already sent if there is one.
    fn piece(&self) -> Vec<u8> {
        match self.sent.try_recv() {
            Ok(mut p) => {
                p.clear();
                p
            }
            Err(_) => Vec::new(),
        }
    }

    fn push(&mut self, piece: Vec<u8>) -> Result<()> {
        let sent = self.send.as_ref().map(|s| s.send(piece).is_ok());
        if sent == Some(true) {
            return Ok(());
        }
        let why = self
            .write_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| "the writer stopped".into());
        let next = (self.rank + 1) % self.world;
        Err(self.fail(TrainError::PeerDied(format!(
            "rank {}: sending to rank {next} failed: {why}",
            self.rank
        ))))
    }

    /// Reads exactly `n` bytes from the previous rank into the scratch buffer.
    fn pull(&mut self, n: usize) -> Result<()> {
        self.scratch.resize(n, 0);
        if let Err(e) = self.prev.read_exact(&mut self.scratch) {
            let prev = self.prev_rank();
            let why = match e.kind() {
                ErrorKind::WouldBlock | ErrorKind::TimedOut => TrainError::Timeout(format!(
                    "rank {} waited past the group's timeout for rank {prev}",
                    self.rank
                )),
                _ => TrainError::PeerDied(format!(
                    "rank {}: the connection from rank {prev} failed: {e} (a peer died or \
                     left the group)",
                    self.rank
                )),
            };
            return Err(self.fail(why));
        }
        Ok(())
    }

    /// Sends this collective's header and checks the previous rank's against it.
    fn begin(&mut self, op: u8, dtype: &str, len: u64) -> Result<()> {
        self.check()?;
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(HELLO);
        h.push(op);
        h.extend_from_slice(&[dtype.as_bytes()[1], dtype.as_bytes()[2], 0]);
        h.extend_from_slice(&len.to_le_bytes());
        h.extend_from_slice(&self.seq.to_le_bytes());
        self.seq += 1;
        self.push(h.clone())?;
        self.pull(h.len())?;
        if self.scratch != h {
            let why = TrainError::Mismatch(format!(
                "collective {} of rank {}: rank {} called another collective or another length \
                 (op {op}, {len} {dtype} here)",
                self.seq - 1,
                self.rank,
                self.prev_rank()
            ));
            return Err(self.fail(why));
        }
        Ok(())
    }

    /// Sends segment `send` of `buf` and receives segment `recv`, piece by piece;
    /// each received piece goes to `take` with its place in `buf`.
    fn shift<T: Element>(
        &mut self,
        buf: &mut [T],
        send: std::ops::Range<usize>,
        recv: std::ops::Range<usize>,
        take: fn(&[u8], &mut [T]),
    ) -> Result<()> {
        let per = (PIECE_BYTES / T::SIZE).max(1);
        let (ns, nr) = (send.len().div_ceil(per), recv.len().div_ceil(per));
        for j in 0..ns.max(nr) {
            if j < ns {
                let a = send.start + j * per;
                let b = (a + per).min(send.end);
                let mut piece = self.piece();
                T::write_le(&buf[a..b], &mut piece);
                self.push(piece)?;
            }
            if j < nr {
                let a = recv.start + j * per;
                let b = (a + per).min(recv.end);
                self.pull((b - a) * T::SIZE)?;
                take(&self.scratch, &mut buf[a..b]);
            }
        }
        Ok(())
    }

    pub(super) fn all_reduce<T: Element>(&mut self, buf: &mut Vec<T>, op: ReduceOp) -> Result<()> {
        if self.same_host.is_some() {
            return self.all_reduce_lent(buf, op);
        }
        let (n, r, len) = (self.world, self.rank, buf.len());
        self.begin(1 + op as u8, T::NAME, len as u64)?;
        let seg = |i: usize| chunk_range(len, n, i % n);
        // The reduce-scatter: after it, this rank holds segment r + 1 summed.
        for k in 0..n - 1 {
            self.shift(buf, seg(r + n - k), seg(r + 2 * n - k - 1), T::add_le)?;
        }
        finish(&mut buf[seg(r + 1)], op, n);
        // The all-gather: the summed segments go round.
        for k in 0..n - 1 {
            self.shift(buf, seg(r + 1 + n - k), seg(r + n - k), T::read_le)?;
        }
        Ok(())
    }

    /// The all-reduce through the processes' memory; see the module's documentation.
    fn all_reduce_lent<T: Element>(&mut self, buf: &mut Vec<T>, op: ReduceOp) -> Result<()> {
        let (n, r, len) = (self.world, self.rank, buf.len());
        self.begin(1 + op as u8, T::NAME, len as u64)?;
        // Each rank's buffer, gathered: once a rank has them all, every rank has
        // entered this all-reduce with its input in place, and lent its buffer.
        let lent = self.all_gather_u64(&[buf.as_mut_ptr() as usize as u64, len as u64])?;
        if lent.iter().any(|l| l[1] != len as u64) {
            // Every rank sees the same lengths and gives up here, before any write.
            let why = TrainError::Mismatch(format!(
                "all_reduce of {len} {}: the ranks' lengths differ",
                T::NAME
            ));
            return Err(self.fail(why));
        }
        // Only this rank's part is borrowed while the others write into the rest.
        let mine = chunk_range(len, n, r);
        let start = mine.start;
        let reduced = self.reduce_lent(&mut buf[mine], start, op, &lent);
        // The second barrier: once passed, no rank writes into this one's buffer.
        let done = reduced.and_then(|()| self.all_gather_u64(&[]).map(drop));
        if let Err(e) = done {
            // A peer may still be writing into the lent buffer: it is never freed or
            // used again, and the caller gets a copy of it.
            let lent = std::mem::take(buf);
            *buf = lent.clone();
            std::mem::forget(lent);
            return Err(self.fail(e));
        }
        Ok(())
    }

    /// Sums this rank's part of every lent buffer (`own`, at element `start` of each)
    /// and writes the sum into all of them.
    fn reduce_lent<T: Element>(
        &self,
        own: &mut [T],
        start: usize,
        op: ReduceOp,
        lent: &[Vec<u64>],
    ) -> Result<()> {
        let (n, r) = (self.world, self.rank);
        let pids = self.same_host.as_deref().unwrap_or_default();
        let per = (LENT_BLOCK_BYTES / T::SIZE).max(1);
        let mut sum = vec![T::default(); per.min(own.len())];
        let mut got = sum.clone();
        let failed = |rank: usize, e: std::io::Error| {
            TrainError::PeerDied(format!(
                "rank {r}: the memory of rank {rank} (pid {}) is gone: {e}",
                pids[rank]
            ))
        };
        let mut at = 0;
        while at < own.len() {
            let m = per.min(own.len() - at);
            let (sum, got) = (&mut sum[..m], &mut got[..m]);
            let offset = ((start + at) * T::SIZE) as u64;
            for rank in 0..n {
                if rank == r {
                    let own = &own[at..at + m];
                    if rank == 0 {
                        sum.copy_from_slice(own);
                    } else {
                        sum.iter_mut()
                            .zip(own)
                            .for_each(|(s, x)| *s = T::add(*s, *x));
                    }
                    continue;
                }
                if rank == 0 {
                    process_memory::read(pids[rank], lent[rank][0] + offset, sum)
                        .map_err(|e| failed(rank, e))?;
                } else {
                    process_memory::read(pids[rank], lent[rank][0] + offset, got)
                        .map_err(|e| failed(rank, e))?;
                    sum.iter_mut()
                        .zip(&*got)
                        .for_each(|(s, x)| *s = T::add(*s, *x));
                }
            }
            finish(sum, op, n);
            own[at..at + m].copy_from_slice(sum);
            for rank in (0..n).filter(|k| *k != r) {
                process_memory::write(pids[rank], lent[rank][0] + offset, sum)
                    .map_err(|e| failed(rank, e))?;
            }
            at += m;
        }
        Ok(())
    }

    pub(super) fn broadcast<T: Element>(&mut self, buf: &mut Vec<T>, root: usize) -> Result<()> {
        let n = self.world;
        self.begin(8, T::NAME, root as u64)?;
        let dist = (self.rank + n - root) % n;
        let last = dist == n - 1;
        // The length first, then the pieces, each forwarded as it comes.
        let len = if dist == 0 {
            self.push((buf.len() as u64).to_le_bytes().to_vec())?;
            buf.len()
        } else {
            self.pull(8)?;
            let len = u64::from_le_bytes(self.scratch[..8].try_into().expect("8 bytes")) as usize;
            if !last {
                self.push(self.scratch.clone())?;
            }
            buf.clear();
            buf.resize(len, T::default());
            len
        };
        let per = (PIECE_BYTES / T::SIZE).max(1);
        for a in (0..len).step_by(per) {
            let b = (a + per).min(len);
            if dist == 0 {
                let mut piece = self.piece();
                T::write_le(&buf[a..b], &mut piece);
                self.push(piece)?;
            } else {
                self.pull((b - a) * T::SIZE)?;
                T::read_le(&self.scratch, &mut buf[a..b]);
                if !last {
                    let piece = std::mem::take(&mut self.scratch);
                    self.push(piece)?;
                }
            }
        }
        Ok(())
    }

    pub(super) fn all_gather<T: Element>(&mut self, part: &[T]) -> Result<Vec<Vec<T>>> {
        let (n, r) = (self.world, self.rank);
        self.begin(9, T::NAME, 0)?;
        let mut parts: Vec<Option<Vec<T>>> = vec![None; n];
        parts[r] = Some(part.to_vec());
        // Step k passes on part r - k and takes part r - k - 1.
        for k in 0..n - 1 {
            let give = parts[(r + n - k) % n]
                .as_ref()
                .expect("held since the last step");
            let mut frame = (give.len() as u64).to_le_bytes().to_vec();
            T::write_le(give, &mut frame);
            self.push(frame)?;
            self.pull(8)?;
            let len = u64::from_le_bytes(self.scratch[..8].try_into().expect("8 bytes")) as usize;
            self.pull(len * T::SIZE)?;
            let mut got = vec![T::default(); len];
            T::read_le(&self.scratch, &mut got);
            parts[(r + 2 * n - k - 1) % n] = Some(got);
        }
        Ok(parts
            .into_iter()
            .map(|p| p.expect("every part came"))
            .collect())
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // The queued pieces go out, then the connections close.
        drop(self.send.take());
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        let _ = self.next.shutdown(Shutdown::Both);
        let _ = self.prev.shutdown(Shutdown::Both);
    }
}

/// Copies between this process's memory and another's, by the kernel.
#[allow(unsafe_code)]
mod process_memory {
    use std::io::{Error, ErrorKind, Result};

    use super::Element;

    /// One `process_vm_readv` (`write == false`) or `process_vm_writev` call after
    /// another until all of `local` is moved; `Ok(0)` from the kernel is an error.
    #[cfg(target_os = "linux")]
    fn moved(pid: i32, addr: u64, local: *mut u8, len: usize, write: bool) -> Result<()> {
        let mut done = 0;
        while done < len {
            let here = libc::iovec {
                // SAFETY (of the pointer arithmetic): `done < len`, within `local`.
                iov_base: unsafe { local.add(done) }.cast(),
                iov_len: len - done,
            };
            let there = libc::iovec {
                iov_base: (addr as usize + done) as *mut libc::c_void,
                iov_len: len - done,
            };
            // SAFETY: `here` is `len - done` bytes of a live buffer this process owns
            // (borrowed mutably for a read); the kernel checks `there` against the
            // other process's mappings and fails the call if it is not mapped.
            let k = unsafe {
                if write {
                    libc::process_vm_writev(pid, &here, 1, &there, 1, 0)
                } else {
                    libc::process_vm_readv(pid, &here, 1, &there, 1, 0)
                }
            };
            match k {
                k if k > 0 => done += k as usize,
                0 => return Err(Error::new(ErrorKind::UnexpectedEof, "no byte moved")),
                _ => {
                    let e = Error::last_os_error();
                    if e.kind() != ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }

    #[cfg(not(target_os = "linux"))]
    fn moved(_: i32, _: u64, _: *mut u8, _: usize, _: bool) -> Result<()> {
        Err(Error::new(
            ErrorKind::Unsupported,
            "another process's memory is Linux-only",
        ))
    }

    /// Reads `into.len()` elements at `addr` of process `pid`. `T` is `f32` or `f64`
    /// (`Element` is sealed), so whatever bytes arrive make values.
    pub(super) fn read<T: Element>(pid: i32, addr: u64, into: &mut [T]) -> Result<()> {
        moved(
            pid,
            addr,
            into.as_mut_ptr().cast(),
            std::mem::size_of_val(into),
            false,
        )
    }

    /// Writes `from` at `addr` of process `pid`. `T` has no padding, so every byte
    /// written is initialised.
    pub(super) fn write<T: Element>(pid: i32, addr: u64, from: &[T]) -> Result<()> {
        // The kernel only reads `from` for a write.
        let len = std::mem::size_of_val(from);
        moved(pid, addr, from.as_ptr().cast::<u8>().cast_mut(), len, true)
    }
}
