//! The backends, chosen in this one place.
//!
//! # The backend contract
//!
//! Every backend (io_uring in `uring.rs`; raw epoll in `epoll.rs` and
//! readiness polling in `poll.rs`, both over the shared readiness core in
//! `readiness.rs`) provides the same five calls and keeps the same promises:
//!
//! - `submit(token, op, out)`: takes ownership of the operation. It either
//!   refuses it at once, handing the whole [`Op`] back (a token already in
//!   flight: `AlreadyExists`; a file operation on polling: `Unsupported`), or
//!   accepts it, and then exactly one *final* completion for that token
//!   follows (plus, for multishot operations, any number of completions with
//!   `more == true` before it). A backend may complete an operation during
//!   `submit` itself by pushing to `out`; it never blocks there.
//! - `cancel(token, out)`: asks for the operation to end. Its final
//!   completion still arrives (possibly in `out` at once), with `ECANCELED`
//!   unless the operation had already finished; a result that won the race
//!   is delivered as it is, except a descriptor (accept, openat), which the
//!   backend closes, reporting `ECANCELED`. Returns whether the token was
//!   in flight; unknown or finished tokens are a harmless no-op.
//! - `wait(timeout, out)`: starts what was submitted, blocks until at least
//!   one completion is ready, the timeout passes or a [`Waker`] fires, and
//!   appends the ready completions to `out`. With `out` non-empty or a zero
//!   timeout it does not block. It does not enter the kernel when nothing
//!   is queued and nothing can have completed (io_uring).
//! - `waker()`: a handle whose `wake()` makes a blocked or the next `wait`
//!   return; wakes coalesce until that `wait` returns.
//! - drop: no buffer the kernel may still write is freed before the kernel
//!   is done with it, and no descriptor produced after cancellation leaks.
//!
//! Buffers travel inside the operation and come back in its completion,
//! also on error and on cancel. Sockets must be nonblocking; accepted
//! sockets are nonblocking and close-on-exec on every backend.

use crate::{BackendError, BackendKind, Completion, FileOps, Op, Token};
use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The one funnel for raw system calls: `syscall!(name(args..))` calls
/// `libc::name` and turns `-1` into `Err(io::Error::last_os_error())`. The
/// caller wraps it in `unsafe` with a `// SAFETY:` line for the arguments.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        let res = libc::$fn($($arg),*);
        if res == -1 { Err(std::io::Error::last_os_error()) } else { Ok(res) }
    }};
}

#[cfg(all(feature = "epoll", target_os = "linux"))]
pub(crate) mod epoll;
#[cfg(feature = "poll")]
pub(crate) mod poll;
#[cfg(any(feature = "poll", all(feature = "epoll", target_os = "linux")))]
mod readiness;
#[cfg(all(feature = "uring", target_os = "linux"))]
pub(crate) mod uring;
#[cfg(all(feature = "uring", target_os = "linux"))]
pub(crate) mod uring_probe;

pub(crate) mod slab;

/// Capacity of the buffers `recv_multi` hands out (and takes back).
pub(crate) const MULTI_BUF_SIZE: usize = 16 * 1024;

/// Capacity of the buffers `Op::read_multi` reads into: a pipe holds
/// 64 KiB, and a reader of a pipe or a child's output gains from taking it
/// in one `read` (W12).
pub(crate) const READ_BUF_SIZE: usize = 64 * 1024;

/// How many recycled `read_multi` buffers the reactor keeps for reuse.
const READ_SPARE_MAX: usize = 8;

/// How many recycled `recv_multi` buffers the reactor keeps for reuse: as
/// many as it may lend, so a turn in which more connections than that
/// received at once (W5 with 500 connections on a readiness backend) does
/// not free the surplus on recycle and `malloc` it afresh next turn (heap
/// growth, trimming and page faults were ~10% of the server's CPU). A
/// readiness backend never owns more than this many anyway (fresh buffers
/// are made only while fewer are lent); io_uring's provided-buffer ring
/// holds up to 256 more.
const MULTI_SPARE_MAX: usize = crate::RECV_MULTI_LEND_LIMIT;

/// The `recv_multi` buffer budget both backends share.
///
/// Buffers the reactor hands to the caller are *lent*: the count goes up
/// when one leaves in a completion and down when one comes back through
/// [`Reactor::recycle`](crate::Reactor::recycle). While
/// [`RECV_MULTI_LEND_LIMIT`](crate::RECV_MULTI_LEND_LIMIT) buffers are out,
/// no fresh buffer is allocated: receives wait (parked, not spinning) until
/// buffers come back, and TCP flow control holds the sender. So the memory a
/// slow or forgetful consumer can make the reactor allocate is bounded.
#[derive(Debug, Default)]
pub(crate) struct MultiBufs {
    spare: Vec<Vec<u8>>,
    /// Spare `read_multi` buffers ([`READ_BUF_SIZE`]).
    read_spare: Vec<Vec<u8>>,
    /// Lent buffers of both sizes (one budget).
    lent: usize,
}

impl MultiBufs {
    /// A buffer for the next receive: a recycled one, or a fresh one while
    /// the lending budget allows; `None` when receiving must wait.
    pub(crate) fn get(&mut self) -> Option<Vec<u8>> {
        if let Some(b) = self.spare.pop() {
            return Some(b);
        }
        (self.lent < crate::RECV_MULTI_LEND_LIMIT).then(|| Vec::with_capacity(MULTI_BUF_SIZE))
    }

    /// A buffer for the next `read_multi` round ([`READ_BUF_SIZE`]),
    /// within the same lending budget as [`MultiBufs::get`].
    pub(crate) fn get_read(&mut self) -> Option<Vec<u8>> {
        if let Some(b) = self.read_spare.pop() {
            return Some(b);
        }
        (self.lent < crate::RECV_MULTI_LEND_LIMIT).then(|| Vec::with_capacity(READ_BUF_SIZE))
    }

    /// Whether [`MultiBufs::get`] would give a buffer.
    pub(crate) fn available(&self) -> usize {
        self.spare.len() + crate::RECV_MULTI_LEND_LIMIT.saturating_sub(self.lent)
    }

    /// A buffer leaves in a completion: it is the caller's now.
    pub(crate) fn lend(&mut self) {
        self.lent += 1;
    }

    /// The caller gives a buffer back ([`Reactor::recycle`](crate::Reactor::recycle)).
    pub(crate) fn give_back(&mut self, buf: Vec<u8>) {
        if buf.capacity() == MULTI_BUF_SIZE || buf.capacity() == READ_BUF_SIZE {
            self.lent = self.lent.saturating_sub(1);
            self.keep(buf);
        }
    }

    /// A lent buffer the caller keeps ([`Reactor::take_lent`](crate::Reactor::take_lent)):
    /// it no longer counts against the limit.
    pub(crate) fn take_lent(&mut self) {
        self.lent = self.lent.saturating_sub(1);
    }

    /// A buffer the reactor did not hand out (an empty or failed receive).
    pub(crate) fn keep(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() == MULTI_BUF_SIZE && self.spare.len() < MULTI_SPARE_MAX {
            buf.clear();
            self.spare.push(buf);
        } else if buf.capacity() == READ_BUF_SIZE && self.read_spare.len() < READ_SPARE_MAX {
            buf.clear();
            self.read_spare.push(buf);
        }
    }
}

#[cfg(not(any(
    feature = "poll",
    all(feature = "uring", target_os = "linux"),
    all(feature = "epoll", target_os = "linux")
)))]
compile_error!("eventide-reactor needs a backend: enable `poll` (or `uring` or `epoll` on Linux)");

/// The compiled backends, a closed set: one `match` per call, no vtable.
/// One value lives per reactor and is never moved on the hot path, so the
/// size difference between the variants costs nothing; boxing would add a
/// pointer chase to every call.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum Backend {
    #[cfg(all(feature = "uring", target_os = "linux"))]
    Uring(uring::Uring),
    #[cfg(all(feature = "epoll", target_os = "linux"))]
    Epoll(epoll::Epoll),
    #[cfg(feature = "poll")]
    Poll(poll::Poll),
}

macro_rules! dispatch {
    ($self:expr, $b:ident => $e:expr) => {
        match $self {
            #[cfg(all(feature = "uring", target_os = "linux"))]
            Backend::Uring($b) => $e,
            #[cfg(all(feature = "epoll", target_os = "linux"))]
            Backend::Epoll($b) => $e,
            #[cfg(feature = "poll")]
            Backend::Poll($b) => $e,
        }
    };
}

impl Backend {
    pub(crate) fn open(
        kind: BackendKind,
        #[allow(unused_variables)] uring: &crate::UringConfig,
    ) -> Result<Backend, BackendError> {
        match kind {
            #[cfg(all(feature = "uring", target_os = "linux"))]
            BackendKind::Uring => uring::Uring::new(uring)
                .map(Backend::Uring)
                .map_err(|source| crate::config::BadSetting::from_io(kind, source)),
            #[cfg(all(feature = "epoll", target_os = "linux"))]
            BackendKind::Epoll => {
                epoll::Epoll::new()
                    .map(Backend::Epoll)
                    .map_err(|source| BackendError::Refused {
                        backend: kind,
                        source,
                    })
            }
            #[cfg(feature = "poll")]
            BackendKind::Poll => {
                poll::Poll::new()
                    .map(Backend::Poll)
                    .map_err(|source| BackendError::Refused {
                        backend: kind,
                        source,
                    })
            }
            #[allow(unreachable_patterns)]
            other => Err(BackendError::NotCompiled(other)),
        }
    }

    pub(crate) fn kind(&self) -> BackendKind {
        match self {
            #[cfg(all(feature = "uring", target_os = "linux"))]
            Backend::Uring(_) => BackendKind::Uring,
            #[cfg(all(feature = "epoll", target_os = "linux"))]
            Backend::Epoll(_) => BackendKind::Epoll,
            #[cfg(feature = "poll")]
            Backend::Poll(_) => BackendKind::Poll,
        }
    }

    pub(crate) fn submit(
        &mut self,
        token: Token,
        op: Op,
        out: &mut VecDeque<Completion>,
    ) -> Result<(), (io::Error, Op)> {
        dispatch!(self, b => b.submit(token, op, out))
    }

    pub(crate) fn cancel(&mut self, token: Token, out: &mut VecDeque<Completion>) -> bool {
        dispatch!(self, b => b.cancel(token, out))
    }

    pub(crate) fn wait(
        &mut self,
        timeout: Option<Duration>,
        out: &mut VecDeque<Completion>,
    ) -> io::Result<()> {
        dispatch!(self, b => b.wait(timeout, out))
    }

    pub(crate) fn notifier(&self) -> Arc<WakeShared> {
        dispatch!(self, b => b.notifier())
    }

    pub(crate) fn recycle(&mut self, buf: Vec<u8>) {
        dispatch!(self, b => b.recycle(buf))
    }

    pub(crate) fn take_lent(&mut self) {
        dispatch!(self, b => b.multi_bufs().take_lent())
    }

    pub(crate) fn offer(&mut self, buf: Vec<u8>) {
        dispatch!(self, b => b.multi_bufs().keep(buf))
    }

    pub(crate) fn in_flight(&self) -> usize {
        dispatch!(self, b => b.in_flight())
    }

    pub(crate) fn file_ops(&self) -> FileOps {
        match self {
            #[cfg(all(feature = "uring", target_os = "linux"))]
            Backend::Uring(u) => u.file_ops(),
            #[cfg(all(feature = "epoll", target_os = "linux"))]
            Backend::Epoll(_) => FileOps::NONE,
            #[cfg(feature = "poll")]
            Backend::Poll(_) => FileOps::NONE,
        }
    }

    pub(crate) fn restrict_file_ops(&mut self, keep: FileOps) {
        match self {
            #[cfg(all(feature = "uring", target_os = "linux"))]
            Backend::Uring(u) => u.restrict_file_ops(keep),
            #[cfg(all(feature = "epoll", target_os = "linux"))]
            Backend::Epoll(_) => {
                // Nothing to narrow: epoll runs no file operation.
                let _ = keep;
            }
            #[cfg(feature = "poll")]
            Backend::Poll(_) => {
                // Nothing to narrow: polling runs no file operation.
                let _ = keep;
            }
        }
    }

    #[cfg(all(feature = "uring", target_os = "linux"))]
    pub(crate) fn uring(&self) -> Option<&uring::Uring> {
        #[allow(unreachable_patterns)]
        match self {
            Backend::Uring(u) => Some(u),
            _ => None,
        }
    }
}

/// Which backends this build contains, best first: `auto` tries them in
/// this order, so where io_uring is refused (a seccomp profile) it gets
/// epoll, the faster readiness backend, before `polling`.
pub(crate) fn compiled() -> &'static [BackendKind] {
    &[
        #[cfg(all(feature = "uring", target_os = "linux"))]
        BackendKind::Uring,
        #[cfg(all(feature = "epoll", target_os = "linux"))]
        BackendKind::Epoll,
        #[cfg(feature = "poll")]
        BackendKind::Poll,
    ]
}

/// The shared half of a [`Waker`]: a flag that coalesces wakes, and the
/// backend's way to interrupt a blocked wait.
#[derive(Debug)]
pub(crate) struct WakeShared {
    pending: AtomicBool,
    notify: Notify,
}

#[derive(Debug)]
pub(crate) enum Notify {
    /// Write to an eventfd the io_uring backend keeps a read armed on, or
    /// the epoll backend has registered.
    #[cfg(all(any(feature = "uring", feature = "epoll"), target_os = "linux"))]
    EventFd(std::os::fd::OwnedFd),
    /// polling's own notification.
    #[cfg(feature = "poll")]
    Poller(Arc<polling::Poller>),
}

impl WakeShared {
    pub(crate) fn new(notify: Notify) -> WakeShared {
        WakeShared {
            pending: AtomicBool::new(false),
            notify,
        }
    }

    /// Wakes the reactor unless a wake is already on its way.
    pub(crate) fn wake(&self) -> io::Result<()> {
        // AcqRel: what the waking thread wrote before wake() is visible to
        // the loop once it has seen the flag (and reset it).
        if self.pending.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        match &self.notify {
            #[cfg(all(any(feature = "uring", feature = "epoll"), target_os = "linux"))]
            Notify::EventFd(fd) => {
                use std::os::fd::AsRawFd;
                let one: u64 = 1;
                // SAFETY: `fd` is an open eventfd owned by `self`; the pointer
                // and length describe the 8 bytes of `one`, alive for the call.
                let r = unsafe { syscall!(write(fd.as_raw_fd(), (&raw const one).cast(), 8)) };
                match r {
                    Ok(_) => Ok(()),
                    // The counter is saturated: a wake is pending anyway.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
                    Err(e) => Err(e),
                }
            }
            #[cfg(feature = "poll")]
            Notify::Poller(p) => p.notify(),
        }
    }

    /// Called by the backend when its wait returned: later wakes notify again.
    pub(crate) fn reset(&self) {
        // Nothing to clear while no wake is pending (most turns): a wake
        // that sets the flag after this load finds it clear, so it
        // notifies, and the next wait returns at once. Skipping the store
        // and the fence then loses no wake, and saves a full fence a turn.
        if !self.pending.load(Ordering::Acquire) {
            return;
        }
        self.pending.store(false, Ordering::Release);
        // A fence so the loop's reads of the waking threads' data come after
        // the flag reset (pairs with the AcqRel swap in `wake`).
        std::sync::atomic::fence(Ordering::SeqCst);
    }
}

/// Closes a descriptor nobody owns any more (a late accept or open).
#[cfg_attr(not(all(feature = "uring", target_os = "linux")), allow(dead_code))]
pub(crate) fn close_fd(fd: i32) {
    // SAFETY: the caller hands over a descriptor no one else owns.
    let _ = unsafe { syscall!(close(fd)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst of more receives than the old 256-buffer spare list, all
    /// recycled: every buffer is kept for the next burst, none freed (and
    /// allocated afresh, page faults and all, on the next turn).
    #[test]
    fn recycled_multi_buffers_are_kept_up_to_the_lend_limit() {
        let mut bufs = MultiBufs::default();
        let burst: Vec<Vec<u8>> = (0..500)
            .map(|_| {
                let b = bufs.get().expect("within the lending budget");
                bufs.lend();
                b
            })
            .collect();
        for b in burst {
            bufs.give_back(b);
        }
        assert_eq!(bufs.lent, 0);
        assert_eq!(bufs.spare.len(), 500, "every recycled buffer is kept");
        // Never more than the lending budget, however many come back.
        for _ in 0..2 * crate::RECV_MULTI_LEND_LIMIT {
            bufs.keep(Vec::with_capacity(MULTI_BUF_SIZE));
        }
        assert_eq!(bufs.spare.len(), crate::RECV_MULTI_LEND_LIMIT);
    }

    /// Buffers a caller keeps (a pipe sending them on) stop counting
    /// against the budget, so the receives of others go on; offered back,
    /// they are reused, and the count stays right.
    #[test]
    fn buffers_taken_out_of_the_count_do_not_hold_back_receives() {
        let mut bufs = MultiBufs::default();
        let kept: Vec<Vec<u8>> = (0..crate::RECV_MULTI_LEND_LIMIT)
            .map(|_| {
                let b = bufs.get().expect("within the lending budget");
                bufs.lend();
                b
            })
            .collect();
        assert!(bufs.get().is_none(), "the budget is spent");
        for _ in &kept {
            bufs.take_lent();
        }
        assert_eq!(bufs.lent, 0);
        assert!(bufs.get().is_some(), "kept buffers no longer count");
        for b in kept {
            bufs.keep(b);
        }
        assert_eq!(bufs.lent, 0, "offered back without touching the count");
        assert_eq!(bufs.spare.len(), crate::RECV_MULTI_LEND_LIMIT);
    }

    /// `read_multi`'s 64 KiB buffers share the lending budget with
    /// `recv_multi`'s, come back to their own spares (a few), and are
    /// never handed to a receive that wants 16 KiB.
    #[test]
    fn read_buffers_share_the_budget_and_keep_their_size() {
        let mut bufs = MultiBufs::default();
        let r = bufs.get_read().expect("within the budget");
        assert_eq!(r.capacity(), READ_BUF_SIZE);
        bufs.lend();
        let small: Vec<Vec<u8>> = (1..crate::RECV_MULTI_LEND_LIMIT)
            .map(|_| {
                let b = bufs.get().expect("within the budget");
                bufs.lend();
                b
            })
            .collect();
        assert!(bufs.get_read().is_none(), "one budget for both sizes");
        bufs.give_back(r);
        assert_eq!(bufs.read_spare.len(), 1);
        assert_eq!(bufs.spare.len(), 0, "not a spare for receives");
        let again = bufs.get_read().expect("the spare");
        assert_eq!(again.capacity(), READ_BUF_SIZE);
        for b in small {
            bufs.give_back(b);
        }
        for _ in 0..2 * READ_SPARE_MAX {
            bufs.keep(Vec::with_capacity(READ_BUF_SIZE));
        }
        assert_eq!(bufs.read_spare.len(), READ_SPARE_MAX);
    }
}
