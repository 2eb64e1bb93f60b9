//! The io_uring backend (Linux, the `io-uring` crate).
//!
//! # Ring setup
//!
//! Flags are tried best first and fall back on `EINVAL` (a kernel that does
//! not know one): `SINGLE_ISSUER | DEFER_TASKRUN | TASKRUN_FLAG` (measured
//! ~20% better than no flags; completions are posted only when the loop
//! thread enters the kernel, and `TASKRUN_FLAG` tells us when it should),
//! then `COOP_TASKRUN | TASKRUN_FLAG`, then none. Never `SQPOLL`. The
//! completion queue is sized at 16 times the submission queue; with
//! `IORING_FEAT_NODROP` an overflowing completion queue loses nothing: the
//! kernel keeps the excess and we flush it (an enter with `GETEVENTS`) until
//! the overflow flag clears. A full submission queue is submitted and the
//! push retried; completions reaped to make room are kept for the next wait.
//!
//! # Turns that do nothing stay in user space
//!
//! `wait` with a zero timeout enters the kernel only if entries are queued,
//! the kernel flagged pending task work, or the completion queue overflowed;
//! otherwise it reads the shared completion ring and returns.
//!
//! # Ownership
//!
//! Every in-flight operation has an entry in a slab (key = user_data, with a
//! generation so a late cancel never hits a newer operation). The entry owns
//! the buffer, path, address or statx record whose heap address was given
//! to the kernel; the entry is removed, and its buffer handed back, only
//! when the operation's final completion (no `IORING_CQE_F_MORE`) has been
//! reaped. On drop every operation is cancelled and the ring drained for up
//! to two seconds; if the kernel still holds something then, it is leaked,
//! never freed under the kernel.
//!
//! # Multishot and provided buffers
//!
//! Multishot accept is used when the kernel has it; the probe is the
//! presence of `IORING_OP_SOCKET` (5.19, the release of multishot accept
//! and provided-buffer rings), and an `EINVAL` from a multishot request
//! turns the feature off and re-arms single-shot. `recv_multi` uses a
//! provided-buffer ring (`IORING_REGISTER_PBUF_RING`, group 0) of 256
//! buffers of 16 KiB when it can be registered and the kernel has
//! multishot recv (probed by `IORING_OP_SEND_ZC`, 6.0). A buffer the kernel
//! filled is handed to the caller and its buffer id refilled (from buffers
//! given back with `recycle`, else a fresh allocation while the lending
//! budget of `sys::MultiBufs` allows), published once per turn. When the
//! ring runs dry a multishot recv ends with `ENOBUFS`; such receives are
//! parked and re-armed only as many as the ring holds buffers for, never all
//! at once whenever any buffer returns (which was seen to cause storms of
//! `ENOBUFS` completions). Once registered, the ring stays registered until
//! drop, also when an `EINVAL` turns multishot recv off.
//!
//! Not on Unix domain sockets: there the kernel's multishot recv was seen
//! (6.18) to deliver every byte but never the end of stream once more than
//! its 32 retries' worth of buffers waited (the request is requeued and the
//! peer's shutdown does not wake it again); liburing's issue 1549 reports
//! the end lost on AF_UNIX even after one small send. A `recv_multi` on an
//! AF_UNIX socket (one `getsockopt(SO_DOMAIN)` at submission) runs as
//! `read_multi`'s single-shot rounds, which see the end.
//!
//! # Readiness watches (`poll_multi`)
//!
//! `Op::poll_multi` is a single-shot `POLL_ADD` re-armed after each
//! completion, not a multishot poll (`IORING_POLL_ADD_MULTI`, 5.13):
//! measured on 6.18, a multishot poll posts one completion per wake-up of
//! the file (a pipe with three unread bytes: one completion, then none
//! until the next write), and `IORING_POLL_ADD_LEVEL` with `MULTI` is
//! refused (`EINVAL`); the watch is level-triggered, as libuv's `uv_poll`.
//! The re-armed poll goes in with the next wait, after the caller has
//! handled the completion, and the kernel checks the file's state when it
//! arms it. Two quirks of io_uring's poll are handled in `poll_mask` and
//! `confirm_priority`: a wake-up is matched without `EPOLLPRI` (so priority
//! is armed with `POLLRDBAND` too), and the result is the wake-up's key
//! (a socket's ordinary data claims `EPOLLPRI`; such a claim is checked
//! with `poll(2)`).
//!
//! # read_file on direct descriptors
//!
//! `Op::read_file` opens into a slot of a fixed-file table (256 slots,
//! registered sparse on the first `read_file`) when one is free and the
//! kernel has `IORING_OP_FIXED_FD_INSTALL` (6.8): the open, both reads and
//! the close then skip the descriptor table and the per-call file lookup
//! (W8 measured about 5% faster). A slot is handed out again only once its
//! open failed or its close was reaped. A file that goes on past the buffer
//! gets an ordinary descriptor for the caller (install, hard-linked to the
//! slot's close). With no free slot, no table, or `EVENTIDE_URING_NO_DIRECT`
//! set, the file takes an ordinary descriptor, as before.

use super::slab::{Key, Slab, Tokened};
use super::uring_probe::{self as kprobe, Opcodes, Release};
use super::{MULTI_BUF_SIZE, MultiBufs, Notify, WakeShared, close_fd};
use crate::op::{OpKind, SendBytes, cancelled};
use crate::uring_ext::UringInfo;
use crate::{Completion, FileOps, FileStat, Interest, Op, ReadFileStep, Token, UringConfig};
use io_uring::{IoUring, Probe, cqueue, opcode, squeue, types};
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Completion queue entries per submission queue entry.
const CQ_PER_SQ: u32 = 16;
/// user_data with this bit set belongs to the backend itself.
const INTERNAL: u64 = 1 << 63;
const UD_WAKE: u64 = INTERNAL | 1;
const UD_IGNORE: u64 = INTERNAL | 2;
/// The timeout request of a timed wait on a kernel without `EXT_ARG`.
const UD_TIMEOUT: u64 = INTERNAL | 3;
/// The cancel-by-descriptor test request at setup.
const UD_PROBE: u64 = INTERNAL | 4;
const BGID: u16 = 0;
/// user_data bits 60-62: which step of an `Op::read_file` a completion is
/// for (0 for every other operation; slab keys never use these bits).
const STEP_SHIFT: u32 = 60;
const STEP_MASK: u64 = 7 << STEP_SHIFT;
const STEP_READ: u64 = 1;
const STEP_PROBE: u64 = 2;
const STEP_CLOSE: u64 = 3;
const STEP_INSTALL: u64 = 4;
/// Slots of the fixed-file table `read_file` opens into (registered on the
/// first one). More files in flight at once take ordinary descriptors.
const DIRECT_SLOTS: u32 = 256;
/// The environment variable naming file operations to answer `EINVAL`, as
/// a kernel without them does when its probe did not say so (testing and
/// diagnosis of a caller's fallback).
const EINVAL_ENV: &str = "EVENTIDE_URING_FILE_OPS_EINVAL";
const PBUF_ENTRIES: u16 = 256;

/// An operation in flight: the caller's token and the operation.
///
/// 48 bytes (56 with its slab slot): what each operation's own data needs
/// is in its `OpKind` variant (connect's address, statx's record, a
/// receive round's buffer; the rare large ones boxed), and the cancelled
/// mark is the slab's. An idle connection's receive costs that, plus its
/// bucket in the slab's token index.
#[derive(Debug)]
struct Inflight {
    token: Token,
    kind: OpKind,
}

// What W10 counts per idle connection (see above); a new variant that
// grows `OpKind` past 40 bytes belongs in a box.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(size_of::<Inflight>() <= 48);

impl Tokened for Inflight {
    fn token(&self) -> Token {
        self.token
    }
}

/// The provided-buffer ring: entries shared with the kernel, and the
/// buffers they point to, by buffer id.
///
/// Ground rules (what keeps the kernel's view sound):
/// 1. A buffer id is either *in the ring* (`bufs[bid]` holds the buffer the
///    kernel may write; the kernel owns its bytes) or *empty* (listed in
///    `empty`, no buffer). Only the kernel moves an id from the first state
///    to the second (a completion naming it); only `add` moves it back.
/// 2. So at most `PBUF_ENTRIES` ids are ever in the ring, and `add` never
///    overwrites an entry the kernel has not consumed yet.
/// 3. The ring memory and every buffer in it stay allocated until the group
///    is unregistered with nothing in flight (or are leaked, never freed,
///    when that cannot be established).
#[derive(Debug)]
struct BufRing {
    base: *mut u8,
    layout: std::alloc::Layout,
    bufs: Vec<Option<Vec<u8>>>,
    /// Buffer ids with no buffer, to be refilled.
    empty: Vec<u16>,
    tail: u16,
    /// Buffers added since the last publish.
    unpublished: u16,
    /// Buffers published and not yet named by a completion (an upper
    /// bound on what the kernel can still pick from).
    avail: u16,
}

impl BufRing {
    fn entry_count(&self) -> u16 {
        PBUF_ENTRIES
    }

    /// Puts `buf` into the ring under the empty id `bid` (visible to the
    /// kernel after `publish`).
    fn add(&mut self, bid: u16, mut buf: Vec<u8>) {
        debug_assert!(
            self.bufs[usize::from(bid)].is_none(),
            "buffer id {bid} is in the ring"
        );
        buf.clear();
        let slot = usize::from(self.tail.wrapping_add(self.unpublished) & (self.entry_count() - 1));
        let addr = buf.as_mut_ptr() as u64;
        let len = clamp(buf.capacity());
        self.bufs[usize::from(bid)] = Some(buf);
        // SAFETY: `slot < PBUF_ENTRIES`, so the 16-byte entry lies inside the
        // ring allocation (which is 8-aligned). By ground rule 2 the kernel
        // has consumed whatever this slot held, and it reads entries only up
        // to the published tail, which this one is beyond until `publish`.
        // The u16 at offset 12 is `bid`; offset 14 (entry 0's tail) is not
        // touched.
        unsafe {
            let e = self.base.add(slot * 16);
            e.cast::<u64>().write(addr);
            e.add(8).cast::<u32>().write(len);
            e.add(12).cast::<u16>().write(bid);
        }
        self.unpublished += 1;
    }

    /// Takes the buffer the kernel filled under `bid` out of the ring; the
    /// id is empty from now on.
    fn take(&mut self, bid: u16) -> Option<Vec<u8>> {
        let b = self.bufs.get_mut(usize::from(bid))?.take()?;
        self.empty.push(bid);
        self.avail = self.avail.saturating_sub(1);
        Some(b)
    }

    /// Makes the added buffers visible to the kernel; returns how many.
    fn publish(&mut self) -> u16 {
        let n = self.unpublished;
        if n > 0 {
            self.tail = self.tail.wrapping_add(n);
            self.unpublished = 0;
            self.avail += n;
            // SAFETY: the tail is the u16 at offset 14 of the ring (the
            // `resv` field of entry 0, as the kernel's `io_uring_buf_ring`
            // lays it out), suitably aligned; the kernel reads it
            // concurrently, hence the atomic release store, which also
            // orders the entry writes before it.
            unsafe {
                let tail = &*self.base.add(14).cast::<std::sync::atomic::AtomicU16>();
                tail.store(self.tail, std::sync::atomic::Ordering::Release);
            }
        }
        n
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: `base` was allocated with `layout`; the owner drops the
        // ring only after the kernel let go of it (unregistered, or the
        // ring torn down with nothing in flight).
        unsafe { std::alloc::dealloc(self.base, self.layout) };
    }
}

/// The io_uring backend.
pub(crate) struct Uring {
    ring: IoUring,
    ops: Slab<Inflight>,
    wake: Arc<WakeShared>,
    wake_fd: RawFd,
    wake_buf: Box<u64>,
    wake_armed: bool,
    info: UringInfo,
    /// The provided-buffer ring. Once registered it stays registered until
    /// drop, even if multishot recv is turned off (`info.multishot_recv`),
    /// because receives in flight may hold its buffers.
    pbuf: Option<BufRing>,
    /// `recv_multi` operations not in the kernel, waiting for buffers: ended
    /// with ENOBUFS (provided buffers) or found no round buffer (single-shot).
    starved: VecDeque<Key>,
    bufs: MultiBufs,
    /// Completion entries reaped while making room in the submission queue.
    reaped: Vec<(u64, i32, u32)>,
    /// File operations submitted to the kernel; the others are refused.
    file_ops: FileOps,
    /// File operations answered `EINVAL` at once (`EINVAL_ENV`).
    einval_ops: FileOps,
    /// The fixed-file table `read_file` opens into.
    direct: DirectFiles,
    /// How many times each descriptor number has been closed through
    /// `Op::close` (indexed by number, wrapping). An operation the backend
    /// re-arms by itself (`accept_multi`, `recv_multi`) records the count
    /// at submission; once it differs, the number may name another file,
    /// and the operation ends instead of being re-armed (see `rearm`).
    closes: Vec<u32>,
}

/// The fixed-file table of `read_file`'s direct descriptors.
#[derive(Debug)]
enum DirectFiles {
    /// Not registered yet: the first `read_file` does it.
    Untried,
    /// Not available (the kernel lacks `IORING_OP_FIXED_FD_INSTALL`,
    /// registering failed, or `UringConfig::direct_descriptors` off): ordinary descriptors.
    Unavailable,
    /// Registered; the slots free now. A slot is free again only once
    /// its open failed or its close was reaped, so an open never lands on
    /// a slot the kernel still uses.
    Free(Vec<u32>),
}

impl std::fmt::Debug for Uring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uring")
            .field("info", &self.info)
            .field("in_flight", &self.ops.len())
            .finish()
    }
}

fn setup(limit: Option<Release>, sq_entries: u32) -> io::Result<(IoUring, bool, bool)> {
    let attempts: [(bool, bool); 3] = [(true, false), (false, true), (false, false)];
    let mut last = None;
    for (defer, coop) in attempts {
        if (defer && !kprobe::allowed(limit, kprobe::DEFER_TASKRUN_SINCE))
            || (coop && !kprobe::allowed(limit, kprobe::COOP_TASKRUN_SINCE))
        {
            continue;
        }
        let mut b = IoUring::builder();
        b.setup_cqsize(sq_entries.saturating_mul(CQ_PER_SQ))
            .setup_clamp();
        if defer {
            b.setup_single_issuer()
                .setup_defer_taskrun()
                .setup_taskrun_flag();
        }
        if coop {
            b.setup_coop_taskrun().setup_taskrun_flag();
        }
        match b.build(sq_entries) {
            Ok(ring) => return Ok((ring, defer, coop)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = Some(e),
            Err(e) => return Err(explain(e)),
        }
    }
    Err(explain(
        last.unwrap_or_else(|| io::ErrorKind::Unsupported.into()),
    ))
}

/// Whether the kernel cancels by descriptor (`IORING_ASYNC_CANCEL_FD` with
/// `_ALL`, 5.19), which has no feature bit: one such cancel on a descriptor
/// nothing waits on answers `ENOENT` where the kernel knows the flags and
/// `EINVAL` where it does not.
fn probe_cancel_by_fd(ring: &mut IoUring) -> io::Result<bool> {
    // SAFETY: eventfd takes no pointers.
    let efd = unsafe { syscall!(eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK)) }?;
    // SAFETY: `efd` is a new descriptor nobody else owns.
    let efd = unsafe { OwnedFd::from_raw_fd(efd) };
    let sqe = opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fd(efd.as_raw_fd())).all())
        .build()
        .user_data(UD_PROBE);
    // SAFETY: the entry holds no pointers.
    unsafe { ring.submission().push(&sqe) }
        .map_err(|_| io::Error::other("the new ring's submission queue is full"))?;
    ring.submit_and_wait(1)?;
    let mut answer = None;
    for cqe in ring.completion() {
        if cqe.user_data() == UD_PROBE {
            answer = Some(cqe.result());
        }
    }
    Ok(matches!(answer, Some(r) if r != -libc::EINVAL))
}

/// Adds what the system says about io_uring to a setup error.
fn explain(e: io::Error) -> io::Error {
    let why = match e.raw_os_error() {
        Some(libc::ENOSYS) => "io_uring_setup is not implemented by this kernel".to_owned(),
        Some(libc::EPERM) | Some(libc::EACCES) => {
            match std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
                Ok(v) if v.trim() != "0" => {
                    format!(
                        "io_uring is disabled by sysctl kernel.io_uring_disabled={}",
                        v.trim()
                    )
                }
                _ => {
                    "io_uring_setup was refused (a seccomp profile, as container runtimes install, \
                      or a security module)"
                        .to_owned()
                }
            }
        }
        Some(libc::ENOMEM) => {
            "io_uring_setup could not lock memory for the rings (RLIMIT_MEMLOCK)".to_owned()
        }
        _ => "io_uring_setup failed".to_owned(),
    };
    io::Error::new(e.kind(), format!("{why}: {e}"))
}

impl Uring {
    /// A ring set up as `config` says (already narrowed by the
    /// environment: see `UringConfig::with_env`); the test hooks
    /// `EVENTIDE_URING_AS_KERNEL` and `EVENTIDE_URING_FILE_OPS_EINVAL` are
    /// read here.
    pub(crate) fn new(config: &UringConfig) -> io::Result<Uring> {
        let limit = kprobe::as_kernel()?;
        let (mut ring, defer, coop) = setup(limit, config.sq_entries)?;
        kprobe::log_limit(limit);
        let mut probe = Probe::new();
        if let Err(e) = ring.submitter().register_probe(&mut probe) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "io_uring cannot tell which operations it has \
                     (IORING_REGISTER_PROBE, kernel 5.6+): {e}"
                ),
            ));
        }
        if !kprobe::allowed(limit, Release(5, 6)) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring cannot tell which operations it has \
                 (IORING_REGISTER_PROBE, kernel 5.6+; acting as an older kernel)",
            ));
        }
        let opcodes = Opcodes::from_probe(&probe, limit);
        let ext_arg =
            ring.params().is_feature_ext_arg() && kprobe::allowed(limit, kprobe::EXT_ARG_SINCE);
        if let Some(name) = opcodes.missing_required(ext_arg) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("io_uring lacks IORING_OP_{name}, which the backend needs"),
            ));
        }
        if !ring.params().is_feature_nodrop() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring may drop completions on this kernel (no IORING_FEAT_NODROP, 5.5+)",
            ));
        }
        let cancel_by_fd =
            kprobe::allowed(limit, kprobe::CANCEL_FD_SINCE) && probe_cancel_by_fd(&mut ring)?;
        let multishot_accept = opcodes.has(opcode::Socket::CODE);
        let multishot_recv_kernel = opcodes.has(opcode::SendZc::CODE);
        let file_ops = {
            let codes = [
                (opcode::OpenAt::CODE, FileOps::OPENAT),
                (opcode::Read::CODE, FileOps::READ),
                (opcode::Write::CODE, FileOps::WRITE),
                (opcode::Statx::CODE, FileOps::STATX),
                (opcode::Fsync::CODE, FileOps::FSYNC),
                (opcode::UnlinkAt::CODE, FileOps::UNLINKAT),
                (opcode::RenameAt::CODE, FileOps::RENAMEAT),
                (opcode::MkDirAt::CODE, FileOps::MKDIRAT),
                (opcode::Close::CODE, FileOps::CLOSE),
            ];
            codes
                .iter()
                .filter(|(code, _)| opcodes.has(*code))
                .fold(FileOps::NONE, |set, (_, ops)| set.union(*ops))
        };
        let file_ops = file_ops.intersection(config.file_ops);
        let direct = if opcodes.has(opcode::FixedFdInstall::CODE) && config.direct_descriptors {
            DirectFiles::Untried
        } else {
            DirectFiles::Unavailable
        };
        let einval_ops = env_ops(EINVAL_ENV)?.unwrap_or(FileOps::NONE);
        let no_pbuf = !config.provided_buffers;
        // SAFETY: eventfd takes no pointers.
        let efd = unsafe { syscall!(eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK)) }?;
        // SAFETY: `efd` is a new descriptor nobody else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(efd) };
        let wake = Arc::new(WakeShared::new(Notify::EventFd(owned)));
        let mut u = Uring {
            info: UringInfo {
                sq_entries: ring.params().sq_entries(),
                cq_entries: ring.params().cq_entries(),
                defer_taskrun: defer,
                coop_taskrun: coop,
                multishot_accept,
                multishot_recv: false,
                provided_buffer_size: MULTI_BUF_SIZE,
                provided_buffers: 0,
                direct_files: 0,
                ext_arg,
                cancel_by_fd,
                shutdown_op: opcodes.has(opcode::Shutdown::CODE),
                as_kernel: limit.map(|r| (r.0, r.1)),
            },
            ring,
            ops: Slab::new(),
            wake,
            wake_fd: efd,
            wake_buf: Box::new(0),
            wake_armed: false,
            pbuf: None,
            starved: VecDeque::new(),
            bufs: MultiBufs::default(),
            reaped: Vec::new(),
            file_ops,
            einval_ops,
            direct,
            closes: Vec::new(),
        };
        if multishot_recv_kernel && !no_pbuf {
            u.pbuf = u.register_pbuf();
        }
        u.info.multishot_recv = u.pbuf.is_some();
        u.info.provided_buffers = if u.pbuf.is_some() { PBUF_ENTRIES } else { 0 };
        Ok(u)
    }

    fn register_pbuf(&mut self) -> Option<BufRing> {
        let layout =
            std::alloc::Layout::from_size_align(usize::from(PBUF_ENTRIES) * 16, 4096).ok()?;
        // SAFETY: the layout has a non-zero size.
        let base = unsafe { std::alloc::alloc_zeroed(layout) };
        if base.is_null() {
            return None;
        }
        let mut br = BufRing {
            base,
            layout,
            bufs: (0..PBUF_ENTRIES).map(|_| None).collect(),
            empty: Vec::new(),
            tail: 0,
            unpublished: 0,
            avail: 0,
        };
        // SAFETY: `base` points to PBUF_ENTRIES zeroed, page-aligned entries
        // that stay allocated until the BufRing is dropped, which `Drop for
        // Uring` does only after unregistering the group with nothing in
        // flight (otherwise it leaks the ring); on failure here the kernel
        // did not take it.
        let r = unsafe {
            self.ring
                .submitter()
                .register_buf_ring_with_flags(base as u64, PBUF_ENTRIES, BGID, 0)
        };
        if r.is_err() {
            return None;
        }
        for bid in 0..PBUF_ENTRIES {
            br.add(bid, Vec::with_capacity(MULTI_BUF_SIZE));
        }
        br.publish();
        Some(br)
    }

    /// A free slot of the direct-descriptor table (registering the table
    /// on first use), or `None`: the file takes an ordinary descriptor.
    fn take_direct_slot(&mut self) -> Option<u32> {
        if let DirectFiles::Untried = self.direct {
            self.direct = match self.ring.submitter().register_files_sparse(DIRECT_SLOTS) {
                Ok(()) => {
                    self.info.direct_files = DIRECT_SLOTS;
                    DirectFiles::Free((0..DIRECT_SLOTS).rev().collect())
                }
                Err(error) => {
                    log::debug!(
                        "eventide-reactor: no direct descriptors for read_file                          (registering {DIRECT_SLOTS} slots: {error})"
                    );
                    DirectFiles::Unavailable
                }
            };
        }
        match &mut self.direct {
            DirectFiles::Free(free) => free.pop(),
            _ => None,
        }
    }

    /// Gives a direct-descriptor slot back (its open failed, or its close
    /// was reaped).
    fn free_direct_slot(&mut self, slot: u32) {
        if let DirectFiles::Free(free) = &mut self.direct {
            free.push(slot);
        }
    }

    pub(crate) fn info(&self) -> UringInfo {
        self.info
    }

    pub(crate) fn notifier(&self) -> Arc<WakeShared> {
        self.wake.clone()
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.ops.len()
    }

    pub(crate) fn recycle(&mut self, buf: Vec<u8>) {
        self.bufs.give_back(buf);
    }

    pub(crate) fn multi_bufs(&mut self) -> &mut MultiBufs {
        &mut self.bufs
    }

    pub(crate) fn file_ops(&self) -> FileOps {
        self.file_ops
    }

    pub(crate) fn restrict_file_ops(&mut self, keep: FileOps) {
        self.file_ops = self.file_ops.intersection(keep);
    }

    /// Queues one entry, submitting first when the queue is full.
    fn push(&mut self, sqe: &squeue::Entry) {
        self.push_all(std::slice::from_ref(sqe));
    }

    /// Queues entries that must stay together (a link), making room first.
    fn push_all(&mut self, sqes: &[squeue::Entry]) {
        loop {
            // SAFETY: every pointer in these entries refers to memory owned
            // by an in-flight slab entry (or the backend itself) that stays
            // alive and in place until the entry's completion is reaped.
            if unsafe { self.ring.submission().push_multiple(sqes) }.is_ok() {
                return;
            }
            self.make_room();
        }
    }

    fn make_room(&mut self) {
        match self.ring.submit() {
            Ok(_) => {}
            // Completion backlog: take completions out so the kernel can go on.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN)) => {
                self.drain_cq()
            }
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => panic!("io_uring submit failed: {e}"),
        }
    }

    fn drain_cq(&mut self) {
        for cqe in self.ring.completion() {
            self.reaped
                .push((cqe.user_data(), cqe.result(), cqe.flags()));
        }
    }

    pub(crate) fn submit(
        &mut self,
        token: Token,
        op: Op,
        out: &mut VecDeque<Completion>,
    ) -> Result<(), (io::Error, Op)> {
        if self.ops.contains_token(token) {
            return Err((io::ErrorKind::AlreadyExists.into(), op));
        }
        let needed = op.file_ops_needed();
        if !self.file_ops.contains(needed) {
            return Err((io::ErrorKind::Unsupported.into(), op));
        }
        if !needed.intersection(self.einval_ops).is_empty() {
            let einval = Err(io::Error::from_raw_os_error(libc::EINVAL));
            let step = matches!(op.kind, OpKind::ReadFile(_)).then_some(ReadFileStep::Open);
            let (buf, path) = op.into_parts();
            let mut c = Completion::new(token, einval).with_buf(buf);
            c.step = step;
            c.path = path;
            out.push_back(c);
            return Ok(());
        }
        if let OpKind::ReadFile(rf) = &op.kind
            && rf.buf.capacity() - rf.buf.len() < 2
        {
            let error = io::Error::new(
                io::ErrorKind::InvalidInput,
                "read_file needs at least 2 bytes of spare capacity",
            );
            return Err((error, op));
        }
        if let OpKind::Shutdown { fd, how } = op.kind
            && !self.info.shutdown_op
        {
            // Before 5.11: the system call, at once (it does not block).
            // SAFETY: shutdown takes no pointers; a bad fd is an error result.
            let r = unsafe { syscall!(shutdown(fd, how.how())) };
            out.push_back(Completion::new(token, r.map(|_| 0)));
            return Ok(());
        }
        if let OpKind::Close { fd } = op.kind {
            // Parked receives are not in the kernel, so the cancel-by-fd
            // linked to the close would miss them: they end here. From now
            // on no operation submitted before this close is re-armed on
            // the number (a completion already posted but not yet reaped
            // would otherwise re-arm it on the number's next owner).
            self.cancel_starved(Some(fd), out);
            if let Ok(i) = usize::try_from(fd) {
                if i >= self.closes.len() {
                    self.closes.resize(i + 1, 0);
                }
                self.closes[i] = self.closes[i].wrapping_add(1);
            }
        }
        let mut kind = op.kind;
        if let OpKind::RecvMulti {
            fd,
            read: read @ false,
            ..
        } = &mut kind
            && self.info.multishot_recv
            && self.pbuf.is_some()
            && is_unix_socket(*fd)
        {
            // The kernel's multishot recv loses the end of stream on
            // AF_UNIX (see the module's docs): single-shot `read(2)`
            // rounds instead, which deliver it.
            *read = true;
        }
        match &mut kind {
            OpKind::Statx { stat, .. } => *stat = Some(FileStat::zeroed()),
            OpKind::ReadFile(rf) => rf.slot = self.take_direct_slot(),
            OpKind::AcceptMulti { fd, epoch }
            | OpKind::RecvMulti { fd, epoch, .. }
            | OpKind::PollMulti { fd, epoch, .. } => {
                *epoch = self.closes_of(*fd);
            }
            _ => {}
        }
        let entry = Inflight { token, kind };
        let key = self.ops.insert(token, entry);
        self.arm(key);
        Ok(())
    }

    /// Builds and queues the submission(s) for the entry under `key`.
    fn arm(&mut self, key: Key) {
        let ud = key.to_u64();
        let multishot_accept = self.info.multishot_accept;
        let pbuf = self.info.multishot_recv && self.pbuf.is_some();
        if let Some(Inflight {
            kind: OpKind::RecvMulti {
                round_buf, read, ..
            },
            ..
        }) = self.ops.get_mut(key)
            && (!pbuf || *read)
            && round_buf.is_none()
        {
            let got = if *read {
                self.bufs.get_read()
            } else {
                self.bufs.get()
            };
            match got {
                Some(b) => *round_buf = Some(b),
                None => {
                    // Lending budget spent: wait for recycled buffers.
                    self.starved.push_back(key);
                    return;
                }
            }
        }
        let Some(e) = self.ops.get_mut(key) else {
            return;
        };
        if let OpKind::Close { fd } = e.kind {
            let close = opcode::Close::new(types::Fd(fd)).build().user_data(ud);
            if self.info.cancel_by_fd {
                // Cancel what is in flight on the descriptor, then close it
                // whatever the cancel found (a hard link survives failure).
                let cancel =
                    opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fd(fd)).all())
                        .build()
                        .flags(squeue::Flags::IO_HARDLINK)
                        .user_data(UD_IGNORE);
                self.push_all(&[cancel, close]);
            } else {
                // Before 5.19: cancel each operation on the descriptor by
                // its user_data, then close. The kernel takes entries in
                // order, so the cancels run first.
                for other in self.ops.keys() {
                    let on_fd = match self.ops.get(other).map(|e| &e.kind) {
                        Some(OpKind::Close { .. }) | None => false,
                        Some(kind) => kind.fd() == Some(fd),
                    };
                    if on_fd {
                        self.push_cancels(other);
                    }
                }
                self.push(&close);
            }
            return;
        }
        let sock_flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        let sqe = match &mut e.kind {
            OpKind::Accept { fd } => {
                opcode::Accept::new(types::Fd(*fd), std::ptr::null_mut(), std::ptr::null_mut())
                    .flags(sock_flags)
                    .build()
            }
            OpKind::AcceptMulti { fd, .. } if multishot_accept => {
                opcode::AcceptMulti::new(types::Fd(*fd))
                    .flags(sock_flags)
                    .build()
            }
            OpKind::AcceptMulti { fd, .. } => {
                opcode::Accept::new(types::Fd(*fd), std::ptr::null_mut(), std::ptr::null_mut())
                    .flags(sock_flags)
                    .build()
            }
            OpKind::Connect { fd, addr } => {
                opcode::Connect::new(types::Fd(*fd), addr.as_ptr().cast(), addr.len()).build()
            }
            OpKind::Recv { fd, buf } => {
                let spare = buf.spare_capacity_mut();
                opcode::Recv::new(
                    types::Fd(*fd),
                    spare.as_mut_ptr().cast(),
                    clamp(spare.len()),
                )
                .build()
            }
            OpKind::RecvMulti {
                fd, read: false, ..
            } if pbuf => opcode::RecvMulti::new(types::Fd(*fd), BGID).build(),
            // `Op::read_multi`: a round of `read(2)` at the current position
            // (offset -1), for descriptors that are not sockets.
            OpKind::RecvMulti {
                fd,
                round_buf,
                read: true,
                ..
            } => {
                let b = round_buf.as_mut().expect("a round buffer was just set");
                let spare = b.spare_capacity_mut();
                opcode::Read::new(
                    types::Fd(*fd),
                    spare.as_mut_ptr().cast(),
                    clamp(spare.len()),
                )
                .offset(u64::MAX)
                .build()
            }
            OpKind::RecvMulti { fd, round_buf, .. } => {
                let b = round_buf.as_mut().expect("a round buffer was just set");
                let spare = b.spare_capacity_mut();
                opcode::Recv::new(
                    types::Fd(*fd),
                    spare.as_mut_ptr().cast(),
                    clamp(spare.len()),
                )
                .build()
            }
            // `Op::write_from`: `write(2)` at the current position.
            OpKind::Send {
                fd,
                buf,
                from,
                write: true,
            } => {
                let bytes = buf.as_slice();
                let data = &bytes[(*from).min(bytes.len())..];
                opcode::Write::new(types::Fd(*fd), data.as_ptr(), clamp(data.len()))
                    .offset(u64::MAX)
                    .build()
            }
            OpKind::Send { fd, buf, from, .. } => {
                let bytes = buf.as_slice();
                let data = &bytes[(*from).min(bytes.len())..];
                opcode::Send::new(types::Fd(*fd), data.as_ptr(), clamp(data.len()))
                    .flags(libc::MSG_NOSIGNAL)
                    .build()
            }
            OpKind::Shutdown { fd, how } => {
                opcode::Shutdown::new(types::Fd(*fd), how.how()).build()
            }
            OpKind::Close { .. } => unreachable!("close is armed above"),
            OpKind::Poll { fd, interest } => {
                let mut mask = 0;
                if interest.is_readable() {
                    mask |= libc::POLLIN as u32;
                }
                if interest.is_writable() {
                    mask |= libc::POLLOUT as u32;
                }
                opcode::PollAdd::new(types::Fd(*fd), mask).build()
            }
            // Single-shot, re-armed after each completion (see
            // `Op::poll_multi`: multishot poll is edge-triggered).
            OpKind::PollMulti { fd, interest, .. } => {
                opcode::PollAdd::new(types::Fd(*fd), poll_mask(*interest)).build()
            }
            OpKind::OpenAt {
                dir,
                path,
                flags,
                mode,
            } => opcode::OpenAt::new(types::Fd(*dir), path.as_ptr())
                .flags(*flags)
                .mode(*mode)
                .build(),
            OpKind::ReadAt { fd, buf, offset } => {
                let spare = buf.spare_capacity_mut();
                opcode::Read::new(
                    types::Fd(*fd),
                    spare.as_mut_ptr().cast(),
                    clamp(spare.len()),
                )
                .offset(*offset)
                .build()
            }
            OpKind::WriteAt { fd, buf, offset } => {
                opcode::Write::new(types::Fd(*fd), buf.as_ptr(), clamp(buf.len()))
                    .offset(*offset)
                    .build()
            }
            OpKind::Statx {
                dir,
                path,
                flags,
                stat,
            } => {
                let st = stat.as_mut().expect("statx owns its record");
                let p: *mut FileStat = &mut **st;
                opcode::Statx::new(types::Fd(*dir), path.as_ptr(), p.cast())
                    .flags(*flags)
                    .mask(libc::STATX_BASIC_STATS)
                    .build()
            }
            OpKind::Fsync { fd, data_only } => {
                let f = if *data_only {
                    types::FsyncFlags::DATASYNC
                } else {
                    types::FsyncFlags::empty()
                };
                opcode::Fsync::new(types::Fd(*fd)).flags(f).build()
            }
            OpKind::UnlinkAt { dir, path, flags } => {
                opcode::UnlinkAt::new(types::Fd(*dir), path.as_ptr())
                    .flags(*flags)
                    .build()
            }
            OpKind::RenameAt(r) => opcode::RenameAt::new(
                types::Fd(r.old_dir),
                r.old.as_ptr(),
                types::Fd(r.new_dir),
                r.new.as_ptr(),
            )
            .flags(r.flags)
            .build(),
            OpKind::MkdirAt { dir, path, mode } => {
                opcode::MkDirAt::new(types::Fd(*dir), path.as_ptr())
                    .mode(*mode)
                    .build()
            }
            OpKind::ReadFile(rf) => {
                let open = opcode::OpenAt::new(types::Fd(rf.dir), rf.path.as_ptr());
                match rf.slot.map(types::DestinationSlot::try_from_slot_target) {
                    // A direct descriptor is never inherited: O_CLOEXEC
                    // does not apply (the kernel refuses it).
                    Some(Ok(slot)) => open.flags(libc::O_RDONLY).file_index(Some(slot)).build(),
                    _ => {
                        // (Every slot below DIRECT_SLOTS converts.)
                        rf.slot = None;
                        open.flags(libc::O_RDONLY | libc::O_CLOEXEC).build()
                    }
                }
            }
        };
        self.push(&sqe.user_data(ud));
    }

    /// How many times `fd` has been closed through `Op::close`.
    fn closes_of(&self, fd: RawFd) -> u32 {
        usize::try_from(fd)
            .ok()
            .and_then(|i| self.closes.get(i))
            .copied()
            .unwrap_or(0)
    }

    /// Whether the entry under `key` may be re-armed: it is not cancelled,
    /// and its descriptor has not been closed since it was submitted.
    fn may_rearm(&self, key: Key) -> bool {
        if self.ops.is_cancelled(key) {
            return false;
        }
        match self.ops.get(key).map(|e| &e.kind) {
            Some(
                OpKind::AcceptMulti { fd, epoch }
                | OpKind::RecvMulti { fd, epoch, .. }
                | OpKind::PollMulti { fd, epoch, .. },
            ) => self.closes_of(*fd) == *epoch,
            Some(_) => true,
            None => false,
        }
    }

    /// Submits the entry under `key` again (a multishot operation the
    /// kernel ended, a single-shot round, a parked receive), or, when it
    /// was cancelled or its descriptor closed meanwhile, ends it with
    /// `ECANCELED`: a close ends everything on its descriptor, and nothing
    /// is ever started on the number's next owner.
    fn rearm(&mut self, key: Key, out: &mut VecDeque<Completion>) {
        if self.may_rearm(key) {
            self.arm(key);
        } else {
            self.finish(key, Err(cancelled()), None, out);
        }
    }

    /// Ends the parked receives on `fd` (all of them for `None`) with
    /// `ECANCELED`; they hold no kernel state.
    fn cancel_starved(&mut self, fd: Option<RawFd>, out: &mut VecDeque<Completion>) {
        let mut i = 0;
        while i < self.starved.len() {
            let key = self.starved[i];
            let on_fd = match self.ops.get_mut(key).map(|e| &e.kind) {
                Some(OpKind::RecvMulti { fd: f, .. }) => fd.is_none_or(|fd| fd == *f),
                _ => true, // stale: drop it from the queue
            };
            if on_fd {
                self.starved.remove(i);
                self.finish(key, Err(cancelled()), None, out);
            } else {
                i += 1;
            }
        }
    }

    pub(crate) fn cancel(&mut self, token: Token, out: &mut VecDeque<Completion>) -> bool {
        let Some(key) = self.ops.key_of(token) else {
            return false;
        };
        if self.ops.mark_cancelled(key) {
            return true;
        }
        if let Some(pos) = self.starved.iter().position(|k| *k == key) {
            // Parked (not in the kernel): it ends here.
            self.starved.remove(pos);
            self.finish(key, Err(cancelled()), None, out);
            return true;
        }
        self.push_cancels(key);
        true
    }

    /// Asks the kernel to end what runs for the entry under `key`: its one
    /// submission, or the steps of a read_file in flight (a close is let
    /// finish).
    fn push_cancels(&mut self, key: Key) {
        let steps: &[u64] = match self.ops.get_mut(key).map(|e| &e.kind) {
            Some(OpKind::ReadFile(rf)) => match rf.step {
                ReadFileStep::Open => &[0],
                ReadFileStep::Read => &[STEP_READ, STEP_PROBE],
                ReadFileStep::Close => &[],
            },
            _ => &[0],
        };
        for &step in steps {
            let sqe = opcode::AsyncCancel::new(ud_of(key, step))
                .build()
                .user_data(UD_IGNORE);
            self.push(&sqe);
        }
    }

    /// One completion of an `Op::read_file`: the open, either read, the
    /// close, or (direct descriptors) the install of an ordinary descriptor.
    /// Moves the entry on to its next step, or finishes it.
    fn on_read_file(&mut self, key: Key, step: u64, res: i32, out: &mut VecDeque<Completion>) {
        match step {
            0 => self.read_file_opened(key, res, out),
            STEP_READ | STEP_PROBE => self.read_file_read(key, step, res, out),
            STEP_INSTALL => self.read_file_installed(key, res),
            _ => self.read_file_closed(key, res, out),
        }
    }

    /// The read_file entry under `key`, and whether it was cancelled.
    fn read_file_state(&mut self, key: Key) -> Option<(&mut crate::op::ReadFile, bool)> {
        let was_cancelled = self.ops.is_cancelled(key);
        match self.ops.get_mut(key) {
            Some(Inflight {
                kind: OpKind::ReadFile(rf),
                ..
            }) => Some((&mut **rf, was_cancelled)),
            _ => None,
        }
    }

    /// The open completed: queue the two reads (or end).
    fn read_file_opened(&mut self, key: Key, res: i32, out: &mut VecDeque<Completion>) {
        let Some((rf, was_cancelled)) = self.read_file_state(key) else {
            return;
        };
        // An ordinary open gives the descriptor; a direct one, 0.
        let opened = match (raw_result(res), rf.slot) {
            (Err(error), _) => {
                return self.finish_read_file(key, Err(error), None, ReadFileStep::Open, out);
            }
            (Ok(n), None) if was_cancelled => {
                close_fd(n as RawFd);
                return self.finish_read_file(key, Err(cancelled()), None, ReadFileStep::Open, out);
            }
            (Ok(_), Some(k)) if was_cancelled => {
                // Opened into the slot after all: close it first.
                rf.outcome = Some(-libc::ECANCELED);
                rf.step = ReadFileStep::Close;
                let close = close_sqe_for(Some(k), -1).user_data(ud_of(key, STEP_CLOSE));
                return self.push(&close);
            }
            (Ok(n), None) => n as RawFd,
            (Ok(_), Some(_)) => -1,
        };
        rf.fd = opened;
        rf.step = ReadFileStep::Read;
        let spare = rf.buf.capacity() - rf.buf.len();
        rf.probe = (spare / 8).clamp(1, 4096);
        rf.ask = spare - rf.probe;
        let base = rf.buf.spare_capacity_mut().as_mut_ptr().cast::<u8>();
        // SAFETY: `ask < spare`, so `base + ask` and the probe's range
        // `ask..spare` lie inside the spare capacity.
        let probe_at = unsafe { base.add(rf.ask) };
        let (ask, probe) = (clamp(rf.ask), clamp(rf.probe));
        // Offset -1: the file position (both reads then also work on
        // pipes); a short first read breaks a plain link, so the probe
        // hangs on a hard one and always runs. The first read takes only
        // what is there at once (RWF_NOWAIT: no retry in the kernel, which
        // for a regular file would look for the end itself; the probe does
        // that, once).
        let (read, probe_read) = match rf.slot {
            Some(k) => (
                opcode::Read::new(types::Fixed(k), base, ask),
                opcode::Read::new(types::Fixed(k), probe_at, probe),
            ),
            None => (
                opcode::Read::new(types::Fd(opened), base, ask),
                opcode::Read::new(types::Fd(opened), probe_at, probe),
            ),
        };
        let read = read
            .offset(u64::MAX)
            .rw_flags(libc::RWF_NOWAIT)
            .build()
            .flags(squeue::Flags::IO_HARDLINK)
            .user_data(ud_of(key, STEP_READ));
        let probe_read = probe_read
            .offset(u64::MAX)
            .build()
            .user_data(ud_of(key, STEP_PROBE));
        self.push_all(&[read, probe_read]);
    }

    /// One of the two reads completed; once both have: the file ended
    /// (close it), failed (close it), or goes on (hand it over).
    fn read_file_read(&mut self, key: Key, step: u64, res: i32, out: &mut VecDeque<Completion>) {
        let Some((rf, was_cancelled)) = self.read_file_state(key) else {
            return;
        };
        if step == STEP_READ {
            rf.first = Some(res);
        } else {
            rf.second = Some(res);
        }
        let (Some(r1), Some(r2)) = (rf.first, rf.second) else {
            // The other read is still to come. A cancel cannot reach a
            // linked request before it starts, and the probe starts once
            // the first read ends (the hard link): cancel it now that it
            // runs.
            if was_cancelled && step == STEP_READ {
                let sqe = opcode::AsyncCancel::new(ud_of(key, STEP_PROBE))
                    .build()
                    .user_data(UD_IGNORE);
                self.push(&sqe);
            }
            return;
        };
        // The first read does not wait (RWF_NOWAIT): what is not cached yet
        // (EAGAIN), or a file that cannot say so (EOPNOTSUPP: directories,
        // /proc), it leaves to the probe, which reads at the same position
        // and waits.
        let r1 = if r1 == -libc::EAGAIN || r1 == -libc::EOPNOTSUPP {
            0
        } else {
            r1
        };
        let done = if was_cancelled {
            -libc::ECANCELED
        } else if r1 < 0 {
            r1
        } else if r2 < 0 {
            r2
        } else {
            let n = (r1 as usize).min(rf.ask);
            let m = (r2 as usize).min(rf.probe);
            let len = rf.buf.len();
            if m > 0 && n < rf.ask {
                // The probe's bytes follow the first read's.
                let ask = rf.ask;
                rf.buf.spare_capacity_mut().copy_within(ask..ask + m, n);
            }
            // SAFETY: the kernel initialised `n` bytes at the start of the
            // spare capacity and `m` at `ask`, which now follow them.
            unsafe { rf.buf.set_len(len + n + m) };
            if m > 0 {
                return self.read_file_goes_on(key, n + m, out);
            }
            n as i32
        };
        rf.outcome = Some(done);
        rf.step = ReadFileStep::Close;
        let close = close_sqe_for(rf.slot, std::mem::replace(&mut rf.fd, -1));
        self.push(&close.user_data(ud_of(key, STEP_CLOSE)));
    }

    /// The probe found more than the buffer holds: the caller reads on,
    /// with an ordinary descriptor. A direct one is installed as one (it
    /// shares the file and its position), then its slot closed whatever
    /// the install did (a hard link survives failure).
    fn read_file_goes_on(&mut self, key: Key, total: usize, out: &mut VecDeque<Completion>) {
        let Some((rf, _)) = self.read_file_state(key) else {
            return;
        };
        let Some(k) = rf.slot else {
            let open = std::mem::replace(&mut rf.fd, -1);
            return self.finish_read_file(key, Ok(total), Some(open), ReadFileStep::Read, out);
        };
        rf.handoff = Some(total);
        rf.step = ReadFileStep::Close;
        let install = opcode::FixedFdInstall::new(types::Fixed(k), 0)
            .build()
            .flags(squeue::Flags::IO_HARDLINK)
            .user_data(ud_of(key, STEP_INSTALL));
        let close = close_sqe_for(Some(k), -1).user_data(ud_of(key, STEP_CLOSE));
        self.push_all(&[install, close]);
    }

    /// The install of a direct descriptor as an ordinary one completed;
    /// the slot's close follows. Keeps what the install gave.
    fn read_file_installed(&mut self, key: Key, res: i32) {
        let Some((rf, was_cancelled)) = self.read_file_state(key) else {
            return;
        };
        if res >= 0 && was_cancelled {
            close_fd(res);
            rf.outcome = Some(-libc::ECANCELED);
        } else if res >= 0 {
            rf.fd = res;
        } else {
            rf.outcome = Some(res);
        }
    }

    /// The close completed: the caller's one completion.
    fn read_file_closed(&mut self, key: Key, res: i32, out: &mut VecDeque<Completion>) {
        let Some((rf, _)) = self.read_file_state(key) else {
            return;
        };
        if let Some(total) = rf.handoff.take() {
            // Direct, going on: the installed descriptor is the caller's; a
            // failed install (EMFILE...) is an error of the open, as it
            // would have been without the slot.
            let installed = std::mem::replace(&mut rf.fd, -1);
            let (result, file, step) = match rf.outcome.take() {
                Some(err) => (raw_result(err), None, ReadFileStep::Open),
                None if installed >= 0 => (Ok(total), Some(installed), ReadFileStep::Read),
                None => (
                    Err(io::Error::other(
                        "read_file: the install gave no descriptor",
                    )),
                    None,
                    ReadFileStep::Open,
                ),
            };
            return self.finish_read_file(key, result, file, step, out);
        }
        let (done, step) = match rf.outcome.take() {
            Some(n) if n >= 0 && res < 0 => (raw_result(res), ReadFileStep::Close),
            Some(n) if n >= 0 => (raw_result(n), ReadFileStep::Close),
            Some(err) => (raw_result(err), ReadFileStep::Read),
            None => (
                Err(io::Error::other("read_file closed twice")),
                ReadFileStep::Close,
            ),
        };
        self.finish_read_file(key, done, None, step, out);
    }

    /// Removes a read_file entry and queues its final completion. Its
    /// direct-descriptor slot, if it had one, is free again: every path
    /// here comes after the slot's close was reaped or its open failed.
    fn finish_read_file(
        &mut self,
        key: Key,
        result: io::Result<usize>,
        file: Option<RawFd>,
        step: ReadFileStep,
        out: &mut VecDeque<Completion>,
    ) {
        if let Some(Inflight {
            kind: OpKind::ReadFile(rf),
            ..
        }) = self.ops.get_mut(key)
            && let Some(k) = rf.slot.take()
        {
            self.free_direct_slot(k);
        }
        if let Some(mut c) = self.take_completion(key, result, None) {
            c.file = file;
            c.step = Some(step);
            out.push_back(c);
        }
    }

    /// Submits and waits for one completion, at most `t`: with the wait's
    /// timeout argument (`EXT_ARG`, 5.11), else with a `TIMEOUT` request
    /// that ends at the first completion or at `t`, whichever comes first
    /// (so none is left behind to wake a later wait).
    fn enter_for(&mut self, t: Duration) -> io::Result<usize> {
        let ts = types::Timespec::from(t);
        if self.info.ext_arg {
            let args = types::SubmitArgs::new().timespec(&ts);
            return self.ring.submitter().submit_with_args(1, &args);
        }
        // The kernel copies the timespec while preparing the request, which
        // happens inside this submit: `ts` outlives that.
        let sqe = opcode::Timeout::new(&ts)
            .count(1)
            .build()
            .user_data(UD_TIMEOUT);
        self.push(&sqe);
        self.ring.submit_and_wait(1)
    }

    fn arm_wake(&mut self) {
        if !self.wake_armed {
            self.wake_armed = true;
            let p: *mut u64 = &mut *self.wake_buf;
            let sqe = opcode::Read::new(types::Fd(self.wake_fd), p.cast(), 8)
                .build()
                .user_data(UD_WAKE);
            self.push(&sqe);
        }
    }

    pub(crate) fn wait(
        &mut self,
        timeout: Option<Duration>,
        out: &mut VecDeque<Completion>,
    ) -> io::Result<()> {
        // Buffers recycled since the last turn go back to the kernel first.
        self.refill(out);
        self.arm_wake();
        let busy = !out.is_empty() || !self.reaped.is_empty() || !self.ring.completion().is_empty();
        let timeout = if busy { Some(Duration::ZERO) } else { timeout };
        let r = match timeout {
            Some(Duration::ZERO) => {
                let sq = self.ring.submission();
                if sq.is_empty() && !sq.taskrun() && !sq.cq_overflow() {
                    Ok(0)
                } else {
                    drop(sq);
                    self.ring.submit()
                }
            }
            Some(t) => self.enter_for(t),
            None => self.ring.submit_and_wait(1),
        };
        match r {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)
                ) => {}
            Err(e) => return Err(e),
        }
        self.wake.reset();
        self.reap(out);
        Ok(())
    }

    /// Takes every completion out of the ring (flushing an overflow backlog)
    /// and turns them into caller completions.
    fn reap(&mut self, out: &mut VecDeque<Completion>) {
        loop {
            self.drain_cq();
            // Handling a completion may push entries, and a full submission
            // queue then drains more completions into `reaped`: loop until
            // none is left, so none is dropped.
            while !self.reaped.is_empty() {
                let mut batch = std::mem::take(&mut self.reaped);
                for &(ud, res, flags) in &batch {
                    self.on_cqe(ud, res, flags, out);
                }
                batch.clear();
                if self.reaped.is_empty() {
                    self.reaped = batch;
                }
            }
            if !self.ring.submission().cq_overflow() {
                break;
            }
            // Completions wait in the kernel's overflow list: flush them.
            let _ = self.ring.submit();
        }
        self.refill(out);
    }

    /// Refills the emptied provided-buffer slots (within the lending
    /// budget), publishes them, and re-arms as many starved receives as
    /// there are buffers for: never all of them whenever any buffer returns.
    fn refill(&mut self, out: &mut VecDeque<Completion>) {
        let mut budget = 0;
        if let Some(br) = self.pbuf.as_mut() {
            while let Some(&bid) = br.empty.last() {
                let Some(b) = self.bufs.get() else { break };
                br.empty.pop();
                br.add(bid, b);
            }
            br.publish();
            if self.info.multishot_recv {
                budget = usize::from(br.avail);
            }
        }
        if !self.info.multishot_recv {
            budget = self.bufs.available();
        }
        for _ in 0..budget.min(self.starved.len()) {
            if let Some(key) = self.starved.pop_front() {
                self.rearm(key, out);
            }
        }
    }

    fn on_cqe(&mut self, ud: u64, res: i32, flags: u32, out: &mut VecDeque<Completion>) {
        if ud == UD_WAKE {
            self.wake_armed = false;
            return;
        }
        if ud & INTERNAL != 0 {
            return;
        }
        let step = (ud & STEP_MASK) >> STEP_SHIFT;
        let key = Key::from_u64(ud & !STEP_MASK);
        let more = cqueue::more(flags);
        let multishot_accept = self.info.multishot_accept;
        let was_cancelled = self.ops.is_cancelled(key);
        let Some(e) = self.ops.get_mut(key) else {
            // Not ours any more: give a provided buffer back to the ring.
            self.return_pbuf(flags);
            return;
        };
        let result = if res < 0 {
            Err(io::Error::from_raw_os_error(-res))
        } else {
            Ok(res as usize)
        };
        let token = e.token;
        match &mut e.kind {
            OpKind::Accept { .. } | OpKind::OpenAt { .. } => {
                let result = own_fd(result, was_cancelled);
                self.finish(key, result, None, out);
            }
            OpKind::AcceptMulti { .. } => {
                if res == -libc::EINVAL && multishot_accept && !more && !was_cancelled {
                    // The kernel does not know multishot accept after all.
                    self.info.multishot_accept = false;
                    self.rearm(key, out);
                    return;
                }
                let result = own_fd(result, was_cancelled);
                match result {
                    Ok(fd) => {
                        let mut c = Completion::new(token, Ok(fd));
                        c.more = true;
                        out.push_back(c);
                        if !more {
                            self.rearm(key, out);
                        }
                    }
                    Err(_) if more => {}
                    // As a watch's: a cancel not by us is re-armed (or ends
                    // it, if it was ours or the descriptor is closed).
                    Err(err) if err.raw_os_error() == Some(libc::ECANCELED) => self.rearm(key, out),
                    Err(err) => self.finish(key, Err(err), None, out),
                }
            }
            OpKind::Recv { buf, .. } | OpKind::ReadAt { buf, .. } => {
                if let Ok(n) = result {
                    // SAFETY: the kernel initialised `n` bytes of the spare
                    // capacity this operation was given.
                    unsafe { buf.set_len(buf.len() + n) };
                }
                self.finish(key, result, None, out);
            }
            OpKind::RecvMulti { .. } => self.on_recv_multi(key, result, flags, more, out),
            OpKind::ReadFile(_) => self.on_read_file(key, step, res, out),
            OpKind::Poll { interest, .. } => {
                let result = result.map(|m| usize::from(readiness(m as i16, *interest).bits()));
                self.finish(key, result, None, out);
            }
            OpKind::PollMulti { fd, interest, .. } => match result {
                Ok(mask) if !was_cancelled => {
                    let mut mask = mask as u32;
                    if mask & PRI_EVENTS != 0 {
                        mask = confirm_priority(*fd, mask);
                    }
                    let got = watch_readiness(mask, *interest);
                    if !got.is_empty() {
                        let mut c = Completion::new(token, Ok(usize::from(got.bits())));
                        c.more = true;
                        out.push_back(c);
                    }
                    // Submitted with the next wait, after the caller has
                    // handled this one: the poll then sees the condition
                    // as it is (level-triggered).
                    self.rearm(key, out);
                }
                Ok(_) => self.finish(key, Err(cancelled()), None, out),
                // Not by us (the close of a duplicate: a close cancels by
                // open file): armed again while its descriptor is open.
                Err(err) if err.raw_os_error() == Some(libc::ECANCELED) => self.rearm(key, out),
                Err(err) => self.finish(key, Err(err), None, out),
            },
            _ => self.finish(key, result, None, out),
        }
    }

    fn on_recv_multi(
        &mut self,
        key: Key,
        result: io::Result<usize>,
        flags: u32,
        more: bool,
        out: &mut VecDeque<Completion>,
    ) {
        let Some(e) = self.ops.get_mut(key) else {
            return;
        };
        let token = e.token;
        let read = matches!(e.kind, OpKind::RecvMulti { read: true, .. });
        // Where the bytes are: a provided buffer, or this round's own buffer.
        let buf = match (cqueue::buffer_select(flags), &mut e.kind) {
            (Some(bid), _) => self.pbuf.as_mut().and_then(|br| br.take(bid)),
            (None, OpKind::RecvMulti { round_buf, .. }) => round_buf.take(),
            (None, _) => None,
        };
        match result {
            Ok(0) => {
                if let Some(b) = buf {
                    self.bufs.keep(b);
                }
                if more {
                    return;
                }
                self.finish(key, Ok(0), None, out);
            }
            Ok(n) => {
                let Some(mut b) = buf else {
                    // Unreachable with a sane kernel (the CQE names a buffer
                    // id the ring holds, or the round buffer is set): fail
                    // the operation rather than panic in the reactor.
                    if !more {
                        let err = io::Error::other("recv completion without its buffer");
                        self.finish(key, Err(err), None, out);
                    }
                    return;
                };
                // SAFETY: the buffer was given to the kernel empty with its
                // whole capacity, and the kernel reports it initialised the
                // first `n` bytes (n <= capacity).
                unsafe { b.set_len(n.min(b.capacity())) };
                self.bufs.lend();
                let mut c = Completion::new(token, Ok(n)).with_buf(Some(b));
                c.more = true;
                out.push_back(c);
                if !more {
                    self.rearm(key, out);
                }
            }
            Err(err) => {
                if let Some(b) = buf {
                    self.bufs.keep(b);
                }
                if more {
                    return;
                }
                let code = err.raw_os_error();
                if !self.may_rearm(key) {
                    self.finish(key, Err(cancelled()), None, out);
                } else if code == Some(libc::ENOBUFS) {
                    // Parked until buffers are published (see `refill`).
                    self.starved.push_back(key);
                } else if code == Some(libc::EINVAL) && self.info.multishot_recv && !read {
                    // Multishot recv refused: single-shot rounds from now on.
                    // The buffer ring stays registered (other receives may
                    // hold its buffers) and is freed at drop.
                    self.info.multishot_recv = false;
                    self.info.provided_buffers = 0;
                    self.rearm(key, out);
                } else {
                    self.finish(key, Err(err), None, out);
                }
            }
        }
    }

    /// A completion for an operation that is gone: its provided buffer, if
    /// it names one, goes back to the ring.
    fn return_pbuf(&mut self, flags: u32) {
        if let Some(bid) = cqueue::buffer_select(flags)
            && let Some(b) = self.pbuf.as_mut().and_then(|br| br.take(bid))
        {
            self.bufs.keep(b);
        }
    }

    /// Removes the entry and queues its final completion.
    fn finish(
        &mut self,
        key: Key,
        result: io::Result<usize>,
        buf: Option<Vec<u8>>,
        out: &mut VecDeque<Completion>,
    ) {
        if let Some(c) = self.take_completion(key, result, buf) {
            out.push_back(c);
        }
    }

    /// Removes the entry and makes its final completion: `buf`, else the
    /// operation's own buffer; statx's record on success. A single-shot
    /// receive round's buffer goes back to the pool of buffers.
    fn take_completion(
        &mut self,
        key: Key,
        result: io::Result<usize>,
        buf: Option<Vec<u8>>,
    ) -> Option<Completion> {
        let e = self.ops.take(key)?;
        if let OpKind::Send {
            buf: SendBytes::Vec(own),
            ..
        } = e.kind
        {
            // The most common final completion (a stream's send): its
            // buffer back, nothing else to hand over.
            return Some(Completion::new(e.token, result).with_buf(Some(buf.unwrap_or(own))));
        }
        let mut kind = e.kind;
        let stat = match &mut kind {
            OpKind::Statx { stat, .. } if result.is_ok() => stat.take(),
            _ => None,
        };
        if let OpKind::RecvMulti {
            round_buf: Some(b), ..
        } = &mut kind
        {
            self.bufs.keep(std::mem::take(b));
        }
        let owner = kind.take_owner();
        let (own_buf, path) = Op { kind }.into_parts();
        let mut c = Completion::new(e.token, result)
            .with_buf(buf.or(own_buf))
            .with_owner(owner);
        c.stat = stat;
        c.path = path;
        Some(c)
    }
}

/// Whether `fd` is a Unix domain socket (`SO_DOMAIN` is `AF_UNIX`); false
/// for anything else, and when the question fails.
fn is_unix_socket(fd: RawFd) -> bool {
    let mut domain: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `domain` and `len` are live locals of the sizes the call is
    // told; a bad descriptor is an error result, not undefined behaviour.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_DOMAIN,
            (&raw mut domain).cast(),
            &raw mut len,
        )
    };
    rc == 0 && domain == libc::AF_UNIX
}

/// A CQE result as an `io::Result`: `-errno` is the error.
fn raw_result(res: i32) -> io::Result<usize> {
    if res < 0 {
        Err(io::Error::from_raw_os_error(-res))
    } else {
        Ok(res as usize)
    }
}

/// The user_data of `step` of the read_file under `key`.
/// The close of the direct descriptor in `slot`, else of `fd`.
fn close_sqe_for(slot: Option<u32>, fd: RawFd) -> squeue::Entry {
    match slot {
        Some(k) => opcode::Close::new(types::Fixed(k)).build(),
        None => opcode::Close::new(types::Fd(fd)).build(),
    }
}

fn ud_of(key: Key, step: u64) -> u64 {
    key.to_u64() | (step << STEP_SHIFT)
}

/// A file operation set from the environment variable `name`; `None` when
/// unset or empty; an error naming the variable for a list that does not
/// parse.
fn env_ops(name: &'static str) -> io::Result<Option<FileOps>> {
    let Some(value) = kprobe::env_value(name)? else {
        return Ok(None);
    };
    match FileOps::parse(&value) {
        Ok(ops) => {
            log::info!("eventide-reactor: {name}={value}: {ops:?}");
            Ok(Some(ops))
        }
        Err(word) => Err(kprobe::bad_value(
            name,
            &value,
            &format!("a list of file operations (none, all, openat, ...); {word:?} is not one"),
        )),
    }
}

/// An fd a completion produced: the caller's, unless it cancelled the
/// operation, in which case the fd is closed and the result is ECANCELED.
fn own_fd(result: io::Result<usize>, was_cancelled: bool) -> io::Result<usize> {
    match result {
        Ok(fd) if was_cancelled => {
            close_fd(fd as i32);
            Err(cancelled())
        }
        r => r,
    }
}

fn readiness(revents: i16, interest: Interest) -> Interest {
    let mut bits = 0;
    let rd = libc::POLLIN | libc::POLLHUP | libc::POLLERR | libc::POLLRDHUP;
    let wr = libc::POLLOUT | libc::POLLHUP | libc::POLLERR;
    if revents & rd != 0 {
        bits |= Interest::READABLE.bits();
    }
    if revents & wr != 0 {
        bits |= Interest::WRITABLE.bits();
    }
    Interest::from_bits(bits & interest.bits())
}

/// What a priority watch is armed for and told of: `POLLPRI`, and
/// `POLLRDBAND` beside it (see `poll_mask`).
const PRI_EVENTS: u32 = (libc::POLLPRI | libc::POLLRDBAND) as u16 as u32;

/// A poll's result that claims priority data, checked with `poll(2)`: the
/// kernel's io_uring poll reports the wake-up's key, and a socket's every
/// wake-up for ordinary data carries `EPOLLPRI` and `EPOLLRDBAND`; what the
/// descriptor really has is what `poll(2)` finds (a system call only for
/// watches that ask for priority data, which are rare).
fn confirm_priority(fd: RawFd, mask: u32) -> u32 {
    let mut p = libc::pollfd {
        fd,
        events: (mask & 0xffff) as i16,
        revents: 0,
    };
    // SAFETY: `p` is one valid pollfd, alive for the call; a zero timeout
    // does not block; a descriptor that is not open is reported in
    // `revents` (POLLNVAL), not an error.
    match unsafe { syscall!(poll(&raw mut p, 1, 0)) } {
        Ok(_) => u32::from(p.revents as u16),
        Err(_) => mask,
    }
}

/// A `poll_multi` watch's interest as `poll(2)` events. Priority is asked
/// for as `POLLPRI | POLLRDBAND`: io_uring leaves `EPOLLPRI` out when it
/// matches a wake-up's key against what a poll waits for (it adds it to
/// every internal poll), so a poll for `POLLPRI` alone is never woken by a
/// socket's urgent data; `POLLRDBAND` is in that wake-up's key.
fn poll_mask(interest: Interest) -> u32 {
    let mut mask = 0;
    if interest.is_readable() {
        mask |= libc::POLLIN;
    }
    if interest.is_writable() {
        mask |= libc::POLLOUT;
    }
    if interest.is_priority() {
        mask |= libc::POLLPRI | libc::POLLRDBAND;
    }
    if interest.is_disconnect() {
        mask |= libc::POLLRDHUP;
    }
    mask as u16 as u32
}

/// What of a watch's `interest` the kernel's `revents` say is ready; a
/// hang-up or an error alone counts as all of it (as libuv's `uv__io_poll`
/// does), so that the caller's call meets it.
fn watch_readiness(revents: u32, interest: Interest) -> Interest {
    let has = |bit: i16| revents & (bit as u16 as u32) != 0;
    let mut got = Interest::NONE;
    if has(libc::POLLIN) {
        got = got | Interest::READABLE;
    }
    if has(libc::POLLOUT) {
        got = got | Interest::WRITABLE;
    }
    if has(libc::POLLPRI) || has(libc::POLLRDBAND) {
        got = got | Interest::PRIORITY;
    }
    if has(libc::POLLRDHUP) {
        got = got | Interest::DISCONNECT;
    }
    if has(libc::POLLHUP) || has(libc::POLLERR) {
        got = got | interest;
    }
    got.intersection(interest)
}

fn clamp(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

impl Drop for Uring {
    fn drop(&mut self) {
        // 1. Parked receives hold nothing the kernel sees: they end at once.
        //    Then ask the kernel to end everything in flight (the wake read
        //    too).
        let mut sink = VecDeque::new();
        self.cancel_starved(None, &mut sink);
        for key in self.ops.keys() {
            self.ops.mark_cancelled(key);
            self.push_cancels(key);
        }
        if self.wake_armed {
            let sqe = opcode::AsyncCancel::new(UD_WAKE)
                .build()
                .user_data(UD_IGNORE);
            self.push(&sqe);
        }
        // 2. Reap until nothing is in flight, for at most two seconds. Late
        //    accepts and opens are closed by `own_fd` (entries are marked
        //    cancelled); buffers are freed with their completions.
        let deadline = Instant::now() + Duration::from_secs(2);
        while (self.ops.len() > 0 || self.wake_armed) && Instant::now() < deadline {
            let _ = self.enter_for(Duration::from_millis(20));
            self.reap(&mut sink);
            sink.clear();
        }
        // 3. Whatever the kernel still holds is leaked, not freed under it.
        if self.ops.len() > 0 || self.wake_armed {
            log::error!(
                "eventide-reactor: {} io_uring operations did not end within 2 s of drop; leaking their buffers",
                self.ops.len()
            );
            for e in self.ops.drain() {
                std::mem::forget(e);
            }
            std::mem::forget(std::mem::replace(&mut self.wake_buf, Box::new(0)));
            if let Some(br) = self.pbuf.take() {
                std::mem::forget(br);
            }
        } else if self.pbuf.is_some() && self.ring.submitter().unregister_buf_ring(BGID).is_err() {
            // Still registered: the ring teardown may read it; keep it.
            if let Some(br) = self.pbuf.take() {
                std::mem::forget(br);
            }
        }
    }
}
