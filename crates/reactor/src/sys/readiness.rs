//! The readiness core both readiness backends share: completion semantics
//! on top of a readiness interface. `poll.rs` gives it the `polling` crate
//! (epoll, kqueue, event ports, ...), `epoll.rs` raw epoll on Linux; each
//! of them is only a [`Selector`], and [`Readiness`] is generic over it
//! (monomorphised: no dynamic call on the hot path).
//!
//! Each operation waits in a per-descriptor queue, readers (accept, recv,
//! poll-readable) and writers (send, connect, poll-writable) apart, in
//! submission order. The descriptor is registered level-triggered for the
//! union of what its queues want; when it is ready the reactor runs the
//! nonblocking system call for the queue's head and, unless it would block,
//! completes the operation. Send and connect try their call right away at
//! submit (the socket is usually writable); shutdown and close are done at
//! once. Interest is dropped lazily: a descriptor whose queue ran empty
//! stays registered until it fires with nobody waiting, so the common "recv
//! completes, next recv submitted in the same turn" costs no registration
//! call; a registration changes only when the wanted interest really does.
//!
//! All system calls on buffers happen synchronously inside `submit` or
//! `wait`, so a buffer is never in use once it is handed back: cancel and
//! drop are immediate.

use super::slab::{Key, Slab, Tokened};
use super::{MultiBufs, WakeShared};
use crate::op::{OpKind, cancelled};
use crate::{Completion, Interest, Op, Token};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

/// Readable direction (readers' queue).
pub(crate) const R: u8 = 1;
/// Writable direction (writers' queue).
pub(crate) const W: u8 = 2;
/// Priority data (`EPOLLPRI`): asked for by `poll_multi` watches only.
pub(crate) const PRI: u8 = 4;
/// The peer's half-close (`EPOLLRDHUP`): asked for by `poll_multi` watches
/// only, on selectors that can (`Selector::RDHUP`).
pub(crate) const RDHUP: u8 = 8;
/// Registered edge-triggered (`EPOLLET`): only in `FdState::registered`
/// and in what the core asks a selector with [`Selector::EDGE`] for.
pub(crate) const EDGE: u8 = 16;

/// What a selector reports of an event besides readable and writable, for
/// the `poll_multi` watches: epoll's bit values (`epoll.rs` passes its
/// events as they are and checks that they match; `poll.rs` builds them).
/// Only a watched descriptor's events are ever looked at.
pub(crate) mod detail {
    pub(crate) const IN: u32 = 0x1;
    pub(crate) const PRI: u32 = 0x2;
    pub(crate) const OUT: u32 = 0x4;
    pub(crate) const ERR: u32 = 0x8;
    pub(crate) const HUP: u32 = 0x10;
    pub(crate) const RDHUP: u32 = 0x2000;
}

/// `FdState::flags`: the descriptor is registered with the selector.
const REGISTERED: u8 = 1;
/// It is on the dirty list (its interest is checked before the next wait).
const DIRTY: u8 = 2;
/// It fired for a direction nobody waits on: disarm it.
const SPURIOUS: u8 = 4;
/// More than one reader waits: the rest are in `Queues::more`.
const MORE_R: u8 = 8;
/// More than one writer waits: the rest are in `Queues::more`.
const MORE_W: u8 = 16;
/// A send on it wrote part of its bytes in this turn: the socket's buffer
/// is full, so the next send of the turn waits for writability rather
/// than trying at once (which would be an `EAGAIN`: 2,048 calls per GiB
/// in W12). Cleared before the next wait (the descriptor is made dirty).
const FULL: u8 = 32;
/// Edge-triggered, an event said the peer has ended or the socket failed
/// (`EPOLLRDHUP`, `EPOLLHUP`, `EPOLLERR`): that stays readable with no
/// edge to come, so a short read no longer means drained; the receive
/// reads on until it gets its end (0) or error.
const PEER_DONE: u8 = 64;

/// What differs between the readiness backends: the OS interface that
/// watches descriptors. Interest is a set of directions (`R`, `W`), always
/// level-triggered. The rules around these calls (add on `EEXIST` becomes
/// modify, modify on `ENOENT` becomes add, delete rather than "no
/// interest", negative descriptors refused) are the core's, not the
/// selector's.
pub(crate) trait Selector: Sized + std::fmt::Debug {
    /// The backend's name in messages ("polling", "epoll").
    const NAME: &'static str;

    /// Whether `RDHUP` can be asked for and is reported (else the core
    /// peeks for a watch's disconnect).
    const RDHUP: bool;

    /// Whether `EDGE` can be asked for (edge-triggered registration): the
    /// core then registers a socket whose only waiter is its multishot
    /// receive so, and keeps the rules that make that lose nothing (see
    /// `Readiness::flush_interest`).
    const EDGE: bool;

    /// Opens the interface, and the notifier its [`WakeShared`] uses.
    fn open() -> io::Result<Self>;

    /// The shared half of the backend's wakers.
    fn wake(&self) -> &Arc<WakeShared>;

    /// Starts watching `fd` (open, non-negative) for `want` (not empty;
    /// `R | W`, and `PRI | RDHUP` for `poll_multi` watches).
    fn add(&mut self, fd: RawFd, want: u8) -> io::Result<()>;

    /// Changes what a watched `fd` is watched for (`want` not empty).
    fn modify(&mut self, fd: RawFd, want: u8) -> io::Result<()>;

    /// Stops watching `fd` (still open). Errors are ignored: the
    /// descriptor is forgotten either way.
    fn delete(&mut self, fd: RawFd);

    /// Blocks until a watched descriptor is ready, `timeout` passes (`None`:
    /// no timeout; zero: does not block) or a waker fires, calls
    /// `on_event(fd, readable, writable, detail)` for each ready descriptor
    /// (`detail`: the event as `detail::*` bits), and
    /// resets [`WakeShared`] so later wakes notify again. An interrupted
    /// wait is `Ok` (with no events).
    fn select(
        &mut self,
        timeout: Option<Duration>,
        on_event: impl FnMut(RawFd, bool, bool, u32),
    ) -> io::Result<()>;
}

/// One operation in flight.
#[derive(Debug)]
pub(crate) struct Entry {
    token: Token,
    kind: OpKind,
}

impl Tokened for Entry {
    fn token(&self) -> Token {
        self.token
    }
}

/// One descriptor's state, in a `Vec` indexed by descriptor: 20 bytes (W10
/// counts it per idle connection). The first waiting operation of each
/// direction is kept inline; the rare second and later ones (several sends
/// queued on a full socket, many polls) live in `Queues::more`, flagged by
/// `MORE_R` / `MORE_W` so the common case never looks there.
#[derive(Debug, Default, Clone, Copy)]
struct FdState {
    /// The first waiting reader (`Key::to_u64`; 0, which no key is: none).
    reader: Head,
    /// The first waiting writer (as `reader`).
    writer: Head,
    /// Interest currently registered with the selector (`R | W | PRI |
    /// RDHUP` bits).
    registered: u8,
    /// `REGISTERED`, `DIRTY`, `SPURIOUS`, `MORE_R`, `MORE_W`.
    flags: u8,
    /// What the `poll_multi` watches on the descriptor want together
    /// (`Queues::watches` lists them); 0 for none, as for every socket of
    /// the facade's own. (In room the alignment leaves anyway.)
    watch: u8,
}

/// A queue head: a `Key::to_u64` (0: none) kept as two `u32` halves, so
/// `FdState` is 4-byte aligned and 20 bytes rather than 24: 40 KB less at
/// W10's 10,000 idle connections.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Head([u32; 2]);

impl Head {
    fn get(self) -> u64 {
        u64::from(self.0[0]) | (u64::from(self.0[1]) << 32)
    }

    fn set(&mut self, v: u64) {
        self.0 = [v as u32, (v >> 32) as u32];
    }

    fn is_none(self) -> bool {
        self.0 == [0, 0]
    }
}

impl FdState {
    fn want(&self) -> u8 {
        (if self.reader.is_none() { 0 } else { R })
            | (if self.writer.is_none() { 0 } else { W })
            | self.watch
    }

    fn head(&self, dir: u8) -> u64 {
        if dir == R {
            self.reader.get()
        } else {
            self.writer.get()
        }
    }

    fn set_head(&mut self, dir: u8, v: u64) {
        if dir == R {
            self.reader.set(v);
        } else {
            self.writer.set(v);
        }
    }
}

/// The flag saying `dir` has operations beyond the inline head.
fn more_flag(dir: u8) -> u8 {
    if dir == R { MORE_R } else { MORE_W }
}

/// A readiness backend: the shared queues over one OS interface.
#[derive(Debug)]
pub(crate) struct Readiness<S> {
    sel: S,
    q: Queues,
}

/// Everything but the OS interface, so that the selector's event callback
/// can run the queues while the selector is borrowed.
#[derive(Debug)]
struct Queues {
    ops: Slab<Entry>,
    fds: Vec<FdState>,
    /// The waiting operations after the first, by `(fd, direction)`.
    more: HashMap<(RawFd, u8), VecDeque<Key>>,
    dirty: Vec<RawFd>,
    bufs: MultiBufs,
    /// `recv_multi` operations taken off their queue until buffers return.
    parked: VecDeque<Key>,
    /// The `poll_multi` watches, by descriptor (flagged by `FdState::watch`,
    /// so that no other descriptor's event looks here).
    watches: HashMap<RawFd, Vec<Key>>,
}

impl<S: Selector> Readiness<S> {
    pub(crate) fn new() -> io::Result<Readiness<S>> {
        Ok(Readiness {
            sel: S::open()?,
            q: Queues {
                ops: Slab::new(),
                fds: Vec::new(),
                more: HashMap::new(),
                dirty: Vec::new(),
                bufs: MultiBufs::default(),
                parked: VecDeque::new(),
                watches: HashMap::new(),
            },
        })
    }

    pub(crate) fn notifier(&self) -> Arc<WakeShared> {
        self.sel.wake().clone()
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.q.ops.len()
    }

    pub(crate) fn recycle(&mut self, buf: Vec<u8>) {
        self.q.bufs.give_back(buf);
    }

    pub(crate) fn multi_bufs(&mut self) -> &mut MultiBufs {
        &mut self.q.bufs
    }

    pub(crate) fn submit(
        &mut self,
        token: Token,
        op: Op,
        out: &mut VecDeque<Completion>,
    ) -> Result<(), (io::Error, Op)> {
        if self.q.ops.contains_token(token) {
            return Err((io::ErrorKind::AlreadyExists.into(), op));
        }
        if op.is_file_op() {
            let e = io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "file operations are unsupported by the {} backend (run them on a thread pool)",
                    S::NAME
                ),
            );
            return Err((e, op));
        }
        if fd_of(&op.kind) < 0 {
            // No descriptor has a negative number (and the per-fd table is
            // indexed by it): the kernel's answer, as io_uring gives it.
            let mut op = op;
            let owner = op.kind.take_owner();
            let (buf, _) = op.into_parts();
            let ebadf = Err(io::Error::from_raw_os_error(libc::EBADF));
            out.push_back(
                Completion::new(token, ebadf)
                    .with_buf(buf)
                    .with_owner(owner),
            );
            return Ok(());
        }
        match op.kind {
            OpKind::Shutdown { fd, how } => {
                // SAFETY: shutdown takes no pointers; a bad fd is an error result.
                let r = unsafe { syscall!(shutdown(fd, how.how())) };
                out.push_back(Completion::new(token, r.map(|_| 0)));
            }
            OpKind::Close { fd } => {
                self.q.cancel_fd(fd, out);
                self.forget_fd(fd);
                // SAFETY: the caller gave the descriptor to the reactor to close.
                let r = unsafe { syscall!(close(fd)) };
                out.push_back(Completion::new(token, r.map(|_| 0)));
            }
            OpKind::Connect { fd, addr } => {
                let sa = &addr;
                // SAFETY: `sa` is a valid socket address of `sa.len()` bytes,
                // alive for the call.
                let r = unsafe { syscall!(connect(fd, sa.as_ptr().cast(), sa.len())) };
                match r {
                    Ok(_) => out.push_back(Completion::new(token, Ok(0))),
                    Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
                        self.q.enqueue(token, OpKind::Connect { fd, addr }, W);
                    }
                    Err(e) => out.push_back(Completion::new(token, Err(e))),
                }
            }
            kind @ OpKind::Send { .. } => {
                let fd = fd_of(&kind);
                let idle = self
                    .q
                    .fds
                    .get(fd as usize)
                    .is_none_or(|s| s.writer.is_none() && s.flags & FULL == 0);
                let mut entry = Entry { token, kind };
                if idle {
                    let len = send_len(&entry.kind);
                    match attempt(&mut entry, W, &mut self.q.bufs) {
                        Step::Block | Step::Park => {}
                        Step::Done(res, buf) => {
                            if matches!(res, Ok(n) if n < len) {
                                self.q.fd_state(fd).flags |= FULL;
                                self.q.mark_dirty(fd);
                            }
                            let owner = entry.kind.take_owner();
                            let c = Completion::new(token, res).with_buf(buf).with_owner(owner);
                            out.push_back(c);
                            return Ok(());
                        }
                        Step::Again(..) => unreachable!("send is single-shot"),
                    }
                }
                self.q.enqueue(token, entry.kind, W);
            }
            kind @ OpKind::PollMulti { .. } => {
                let want = kind_interest(&kind);
                self.q.watch(token, kind, want);
            }
            kind @ OpKind::Poll { interest, .. } => {
                let dirs = (if interest.is_readable() { R } else { 0 })
                    | (if interest.is_writable() { W } else { 0 });
                self.q.enqueue(token, kind, dirs);
            }
            kind => self.q.enqueue(token, kind, R),
        }
        Ok(())
    }

    pub(crate) fn cancel(&mut self, token: Token, out: &mut VecDeque<Completion>) -> bool {
        self.q.cancel(token, out)
    }

    /// Takes `fd` out of the selector before it is closed.
    fn forget_fd(&mut self, fd: RawFd) {
        let Some(st) = self.q.fds.get_mut(fd as usize) else {
            return;
        };
        if st.flags & REGISTERED != 0 {
            // `fd` is still open here (it is closed right after).
            self.sel.delete(fd);
        }
        st.flags &= !(REGISTERED | SPURIOUS | FULL | PEER_DONE);
        st.registered = 0;
    }

    pub(crate) fn wait(
        &mut self,
        timeout: Option<Duration>,
        out: &mut VecDeque<Completion>,
    ) -> io::Result<()> {
        self.q.unpark();
        self.flush_interest(out);
        let timeout = if out.is_empty() {
            timeout
        } else {
            Some(Duration::ZERO)
        };
        let q = &mut self.q;
        self.sel.select(timeout, |fd, readable, writable, detail| {
            q.on_ready::<S>(fd, readable, writable, detail, out);
        })
    }

    /// Brings every changed descriptor's registration up to date. An
    /// edge-triggered one is told only of what arrives from now on, so
    /// its receive is tried here, once, whatever may already be there: a
    /// receive just queued (a new one, or one unparked), or one whose last
    /// turn stopped at the burst limit with its buffers still coming back
    /// full. A receive that got less than its buffer (or `EAGAIN`) has
    /// drained the socket, and the next arrival is an edge; that is the
    /// rule that makes edge-triggering lose nothing. (Descriptors marked
    /// dirty meanwhile wait for the next wait: a busy one cannot hold this
    /// loop.)
    fn flush_interest(&mut self, out: &mut VecDeque<Completion>) {
        if self.q.dirty.is_empty() {
            return;
        }
        let mut dirty = std::mem::take(&mut self.q.dirty);
        for &fd in &dirty {
            self.update_interest(fd, out);
            let st = &self.q.fds[fd as usize];
            if st.registered & EDGE != 0 && !st.reader.is_none() {
                self.q.run_queue(fd, R, R, out);
            }
        }
        // Keep the vector's memory (the common case: one descriptor).
        if self.q.dirty.is_empty() {
            dirty.clear();
            self.q.dirty = dirty;
        }
    }

    fn update_interest(&mut self, fd: RawFd, out: &mut VecDeque<Completion>) {
        let edge = S::EDGE && self.q.edge_eligible(fd);
        let sel = &mut self.sel;
        let st = &mut self.q.fds[fd as usize];
        st.flags &= !(DIRTY | FULL);
        let want = st.want();
        let target = if edge { R | EDGE } else { want };
        // Interest is dropped lazily (a registration wider than the queues
        // want stays until it fires for nobody), but an edge-triggered one
        // stays only while the queues are what it was made for: a
        // receive's alone, or nothing.
        let edge_still_fits = st.registered & EDGE == 0 || want == 0 || edge;
        if target == st.registered
            || (want & !st.registered == 0 && st.flags & SPURIOUS == 0 && edge_still_fits)
        {
            return;
        }
        st.flags &= !SPURIOUS;
        if want == 0 {
            // Nobody waits and it fired. Modifying it to "no interest" is not
            // enough: epoll reports hang-up and error regardless, so a reset
            // socket would wake every wait until the caller closes it.
            if st.flags & REGISTERED != 0 {
                // The caller keeps `fd` open while it is registered.
                sel.delete(fd);
            }
            st.flags &= !REGISTERED;
            st.registered = 0;
            return;
        }
        // The caller keeps `fd` open while operations wait on it, and the
        // reactor deletes it before an `Op::close`; a descriptor that is
        // not open is an error result (handled below).
        let r = if st.flags & REGISTERED != 0 {
            match sel.modify(fd, target) {
                // Closed and reopened behind our back: register it anew.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => sel.add(fd, target),
                r => r,
            }
        } else {
            match sel.add(fd, target) {
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => sel.modify(fd, target),
                r => r,
            }
        };
        match r {
            Ok(()) => {
                st.registered = target;
                st.flags |= REGISTERED;
            }
            Err(e) => {
                // The descriptor cannot be watched (closed, not pollable):
                // its operations fail rather than wait forever.
                let code = e.raw_os_error();
                for key in self.q.take_waiters(fd) {
                    if let Some(token) = self.q.ops.get_mut(key).map(|en| en.token) {
                        let err = match code {
                            Some(code) => io::Error::from_raw_os_error(code),
                            None => e.kind().into(),
                        };
                        self.q.finish(key, token, Err(err), None, out);
                    }
                }
            }
        }
    }
}

impl Queues {
    /// Whether `fd` may be registered edge-triggered: a socket whose one
    /// waiter is its multishot receive (`recv`, not `read`: a terminal's
    /// short read does not mean it is drained), with no watch on it.
    fn edge_eligible(&self, fd: RawFd) -> bool {
        let st = &self.fds[fd as usize];
        if st.watch != 0 || st.flags & MORE_R != 0 || !st.writer.is_none() || st.reader.is_none() {
            return false;
        }
        let key = Key::from_u64(st.reader.get());
        matches!(
            self.ops.get(key).map(|e| &e.kind),
            Some(OpKind::RecvMulti { read: false, .. })
        )
    }

    /// Adds a `poll_multi` watch wanting `want` on its descriptor.
    fn watch(&mut self, token: Token, kind: OpKind, want: u8) {
        let fd = fd_of(&kind);
        let key = self.ops.insert(token, Entry { token, kind });
        self.watches.entry(fd).or_default().push(key);
        self.fd_state(fd).watch |= want;
        self.mark_dirty(fd);
    }

    /// Takes the watch `key` off `fd`; the descriptor then wants what the
    /// other watches want.
    fn unwatch(&mut self, fd: RawFd, key: Key) {
        let Some(list) = self.watches.get_mut(&fd) else {
            return;
        };
        list.retain(|k| *k != key);
        let mut want = 0;
        for &k in list.iter() {
            if let Some(e) = self.ops.get_mut(k) {
                want |= kind_interest(&e.kind);
            }
        }
        if list.is_empty() {
            self.watches.remove(&fd);
        }
        if let Some(st) = self.fds.get_mut(fd as usize) {
            st.watch = want;
        }
        self.mark_dirty(fd);
    }

    fn enqueue(&mut self, token: Token, kind: OpKind, dirs: u8) {
        let fd = fd_of(&kind);
        let key = self.ops.insert(token, Entry { token, kind });
        self.fd_state(fd);
        if dirs & R != 0 {
            self.push_back(fd, R, key);
        }
        if dirs & W != 0 {
            self.push_back(fd, W, key);
        }
        self.mark_dirty(fd);
    }

    fn fd_state(&mut self, fd: RawFd) -> &mut FdState {
        let i = fd as usize;
        if i >= self.fds.len() {
            self.fds.resize(i + 1, FdState::default());
        }
        &mut self.fds[i]
    }

    fn mark_dirty(&mut self, fd: RawFd) {
        let st = self.fd_state(fd);
        if st.flags & DIRTY == 0 {
            st.flags |= DIRTY;
            self.dirty.push(fd);
        }
    }

    /// Appends `key` to `fd`'s queue for `dir` (its state exists).
    fn push_back(&mut self, fd: RawFd, dir: u8, key: Key) {
        let st = &mut self.fds[fd as usize];
        if st.head(dir) == 0 {
            st.set_head(dir, key.to_u64());
        } else {
            st.flags |= more_flag(dir);
            self.more.entry((fd, dir)).or_default().push_back(key);
        }
    }

    /// Takes `key` off `fd`'s queue for `dir`, if it is there.
    fn remove_waiter(&mut self, fd: RawFd, dir: u8, key: Key) {
        let Some(st) = self.fds.get_mut(fd as usize) else {
            return;
        };
        let flag = more_flag(dir);
        let has_more = st.flags & flag != 0;
        if st.head(dir) == key.to_u64() {
            let next = if has_more {
                self.more.get_mut(&(fd, dir)).and_then(VecDeque::pop_front)
            } else {
                None
            };
            st.set_head(dir, next.map_or(0, Key::to_u64));
        } else if has_more && let Some(rest) = self.more.get_mut(&(fd, dir)) {
            rest.retain(|k| *k != key);
        }
        if has_more && self.more.get(&(fd, dir)).is_none_or(VecDeque::is_empty) {
            self.more.remove(&(fd, dir));
            st.flags &= !flag;
        }
    }

    /// Empties both of `fd`'s queues into a list, in order (readers first),
    /// then its watches.
    fn take_waiters(&mut self, fd: RawFd) -> Vec<Key> {
        let mut keys = Vec::new();
        let Some(st) = self.fds.get_mut(fd as usize) else {
            return keys;
        };
        if st.watch != 0 {
            st.watch = 0;
            keys.extend(self.watches.remove(&fd).unwrap_or_default());
        }
        for dir in [R, W] {
            let head = st.head(dir);
            st.set_head(dir, 0);
            if head != 0 {
                keys.push(Key::from_u64(head));
            }
            let flag = more_flag(dir);
            if st.flags & flag != 0 {
                st.flags &= !flag;
                if let Some(rest) = self.more.remove(&(fd, dir)) {
                    keys.extend(rest);
                }
            }
        }
        keys
    }

    fn cancel(&mut self, token: Token, out: &mut VecDeque<Completion>) -> bool {
        let Some(key) = self.ops.key_of(token) else {
            return false;
        };
        let (fd, watch) = match self.ops.get_mut(key) {
            Some(e) => (fd_of(&e.kind), matches!(e.kind, OpKind::PollMulti { .. })),
            None => return false,
        };
        if watch {
            self.unwatch(fd, key);
        }
        self.unqueue(fd, key);
        self.parked.retain(|k| *k != key);
        self.finish(key, token, Err(cancelled()), None, out);
        true
    }

    /// Cancels every operation waiting on `fd`.
    fn cancel_fd(&mut self, fd: RawFd, out: &mut VecDeque<Completion>) {
        let mut keys = self.take_waiters(fd);
        // Parked receives on the descriptor are off its queues: end them too.
        let ops = &mut self.ops;
        self.parked.retain(|&k| match ops.get_mut(k) {
            Some(e) if fd_of(&e.kind) == fd => {
                keys.push(k);
                false
            }
            Some(_) => true,
            None => false,
        });
        for key in keys {
            if let Some(token) = self.ops.get_mut(key).map(|e| e.token) {
                self.finish(key, token, Err(cancelled()), None, out);
            }
        }
    }

    fn unqueue(&mut self, fd: RawFd, key: Key) {
        self.remove_waiter(fd, R, key);
        self.remove_waiter(fd, W, key);
        self.mark_dirty(fd);
    }

    /// Removes the entry and queues its final completion, buffer included.
    fn finish(
        &mut self,
        key: Key,
        token: Token,
        res: io::Result<usize>,
        buf: Option<Vec<u8>>,
        out: &mut VecDeque<Completion>,
    ) {
        if let Some(entry) = self.ops.remove(key, token) {
            let mut kind = entry.kind;
            let owner = kind.take_owner();
            let buf = buf.or_else(|| Op { kind }.into_buf());
            out.push_back(Completion::new(token, res).with_buf(buf).with_owner(owner));
        }
    }

    /// Puts parked receives back on their queues, as many as there are
    /// buffers for.
    #[inline]
    fn unpark(&mut self) {
        if self.parked.is_empty() {
            return;
        }
        self.unpark_some();
    }

    #[inline(never)]
    fn unpark_some(&mut self) {
        let n = self.bufs.available().min(self.parked.len());
        for _ in 0..n {
            let Some(key) = self.parked.pop_front() else {
                break;
            };
            let Some(fd) = self.ops.get_mut(key).map(|e| fd_of(&e.kind)) else {
                continue;
            };
            self.fd_state(fd);
            self.push_back(fd, R, key);
            self.mark_dirty(fd);
        }
    }

    fn on_ready<S: Selector>(
        &mut self,
        fd: RawFd,
        readable: bool,
        writable: bool,
        detail: u32,
        out: &mut VecDeque<Completion>,
    ) {
        if fd < 0 || fd as usize >= self.fds.len() {
            return;
        }
        let ready = (if readable { R } else { 0 }) | (if writable { W } else { 0 });
        if self.fds[fd as usize].registered & EDGE != 0
            && detail & (detail::RDHUP | detail::HUP | detail::ERR) != 0
        {
            self.fds[fd as usize].flags |= PEER_DONE;
        }
        if readable {
            self.run_queue(fd, R, ready, out);
        }
        if writable {
            self.run_queue(fd, W, ready, out);
        }
        if self.fds[fd as usize].watch != 0 {
            self.run_watches::<S>(fd, detail, out);
        }
        let st = &mut self.fds[fd as usize];
        let want = st.want();
        if ready & !want != 0 {
            st.flags |= SPURIOUS;
        }
        // Checked before the next wait only if that could change the
        // registration (see `update_interest`): it fired for nobody, or
        // its queues now want more than is registered. The common turn (a
        // receive completes and stays armed) costs nothing here.
        if want & !st.registered != 0 || st.flags & SPURIOUS != 0 {
            self.mark_dirty(fd);
        }
    }

    /// Tells each `poll_multi` watch on `fd` what of its interest the event
    /// (`detail`) says is ready, as libuv's `uv__io_poll` does: a hang-up
    /// or an error alone counts as all of the watch's interest, so that
    /// the caller's call meets it.
    #[cold]
    fn run_watches<S: Selector>(&mut self, fd: RawFd, detail: u32, out: &mut VecDeque<Completion>) {
        let Some(list) = self.watches.get(&fd) else {
            return;
        };
        let mut peeked = None;
        for &key in list {
            let Some(e) = self.ops.get_mut(key) else {
                continue;
            };
            let want = kind_interest(&e.kind);
            let mut got = 0;
            if detail & detail::IN != 0 {
                got |= R;
            }
            if detail & detail::OUT != 0 {
                got |= W;
            }
            if detail & detail::PRI != 0 {
                got |= PRI;
            }
            if detail & detail::RDHUP != 0 {
                got |= RDHUP;
            }
            if detail & (detail::HUP | detail::ERR) != 0 {
                got |= want;
            }
            if !S::RDHUP && want & (RDHUP | R) == RDHUP | R && got & R != 0 && got & RDHUP == 0 {
                // No EPOLLRDHUP here: a readable socket at its end (a
                // peek finds 0 bytes) has been shut down by its peer.
                if *peeked.get_or_insert_with(|| at_end_of_stream(fd)) {
                    got |= RDHUP;
                }
            }
            let got = got & want;
            if got != 0 {
                let mut c = Completion::new(e.token, Ok(usize::from(got)));
                c.more = true;
                out.push_back(c);
            }
        }
    }

    /// Runs the head of one of `fd`'s queues while its calls do not block.
    ///
    /// A multishot receive reads again in the same turn while each read
    /// fills its buffer (at most `BURST` reads), as libuv's `uv__read`
    /// does: a full buffer says more may be waiting, a short one that the
    /// descriptor is (very likely) empty, so neither an `EAGAIN` call nor
    /// an `epoll_wait` per buffer is spent. W12 (1 GiB through `cat`)
    /// read its 64 KiB buffers one per turn before: about 16,400 waits
    /// per GiB to libuv's 4,300.
    fn run_queue(&mut self, fd: RawFd, dir: u8, ready: u8, out: &mut VecDeque<Completion>) {
        let mut burst = 0;
        loop {
            let head = self.fds[fd as usize].head(dir);
            if head == 0 {
                return;
            }
            let key = Key::from_u64(head);
            let Some(entry) = self.ops.get_mut(key) else {
                self.unqueue(fd, key);
                continue;
            };
            let len = if dir == W { send_len(&entry.kind) } else { 0 };
            match attempt(entry, ready, &mut self.bufs) {
                Step::Block => return,
                Step::Park => {
                    self.unqueue(fd, key);
                    self.parked.push_back(key);
                }
                Step::Again(c, full) => {
                    out.push_back(c);
                    burst += 1;
                    if !full && self.fds[fd as usize].flags & PEER_DONE == 0 {
                        return;
                    }
                    if burst == BURST {
                        // Edge-triggered, there may be more with no edge
                        // to come: tried again before the next wait.
                        if self.fds[fd as usize].registered & EDGE != 0 {
                            self.mark_dirty(fd);
                        }
                        return;
                    }
                }
                Step::Done(res, buf) => {
                    let token = entry.token;
                    let short = matches!(res, Ok(n) if n < len);
                    self.unqueue(fd, key);
                    self.finish(key, token, res, buf, out);
                    if short {
                        // The socket is full: the next send waits for it
                        // (`unqueue` made the descriptor dirty, so this is
                        // cleared before the next wait).
                        self.fds[fd as usize].flags |= FULL;
                        return;
                    }
                }
            }
        }
    }
}

/// How many reads a multishot receive makes in one turn at most while
/// each fills its buffer (libuv's `uv__read` makes 32), so that one busy
/// descriptor does not hold the loop.
const BURST: usize = 32;

/// What one attempt at an operation's system call gave.
enum Step {
    /// Not ready after all: keep waiting.
    Block,
    /// The final completion: the entry is finished.
    Done(io::Result<usize>, Option<Vec<u8>>),
    /// One completion of a multishot operation, which stays armed; and
    /// whether it filled its buffer (another call may find more at once).
    Again(Completion, bool),
    /// No buffer to receive into (lending budget spent): wait for one.
    Park,
}

/// What a `poll_multi` watch wants, as `R | W | PRI | RDHUP` bits (the
/// same values as `Interest`'s); 0 for other operations.
fn kind_interest(kind: &OpKind) -> u8 {
    match kind {
        OpKind::PollMulti { interest, .. } => interest.bits() & (R | W | PRI | RDHUP),
        _ => 0,
    }
}

/// Whether a peek at `fd` finds the end of the stream (a socket whose peer
/// shut its writing side down); false for anything else, data included.
fn at_end_of_stream(fd: RawFd) -> bool {
    let mut byte = 0u8;
    // SAFETY: the pointer and length describe one writable byte, alive for
    // the call; a descriptor that is not a socket is an error result.
    let r = unsafe {
        syscall!(recv(
            fd,
            (&raw mut byte).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT
        ))
    };
    matches!(r, Ok(0))
}

/// How many bytes a send has left to write (0 for other operations).
fn send_len(kind: &OpKind) -> usize {
    match kind {
        OpKind::Send { buf, from, .. } => buf.as_slice().len().saturating_sub(*from),
        _ => 0,
    }
}

/// The descriptor an operation waits on. Path operations never get here
/// (they are refused as file operations first); they would read as no
/// descriptor (-1, which is `EBADF`).
fn fd_of(kind: &OpKind) -> RawFd {
    kind.fd().unwrap_or(-1)
}

/// Maps a nonblocking call's result: `EAGAIN` is "not ready", `EINTR` retries.
fn nonblocking(mut call: impl FnMut() -> io::Result<isize>) -> Option<io::Result<usize>> {
    loop {
        match call() {
            Ok(n) => return Some(Ok(n as usize)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Some(Err(e)),
        }
    }
}

/// One nonblocking `accept4` (nonblocking, close-on-exec socket).
#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly"
))]
fn accept_one(fd: RawFd) -> Option<io::Result<usize>> {
    nonblocking(|| {
        let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        // SAFETY: null address pointers ask for no peer address.
        let r = unsafe {
            syscall!(accept4(
                fd,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                flags
            ))
        };
        r.map(|v| v as isize)
    })
}

/// One nonblocking `accept`, then the flags `accept4` would have set
/// (systems without `accept4`: macOS). The descriptor is close-on-exec
/// only from the `fcntl` on: a `fork` + `exec` on another thread in
/// between would inherit it, as with libuv on these systems.
#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly"
)))]
fn accept_one(fd: RawFd) -> Option<io::Result<usize>> {
    nonblocking(|| {
        // SAFETY: null address pointers ask for no peer address.
        let new = unsafe { syscall!(accept(fd, std::ptr::null_mut(), std::ptr::null_mut())) }?;
        let set = || -> io::Result<()> {
            // SAFETY: fcntl with F_GETFD/F_SETFD/F_GETFL/F_SETFL and int
            // arguments on the descriptor accept just made.
            unsafe {
                let fd_flags = syscall!(fcntl(new, libc::F_GETFD))?;
                syscall!(fcntl(new, libc::F_SETFD, fd_flags | libc::FD_CLOEXEC))?;
                let fl = syscall!(fcntl(new, libc::F_GETFL))?;
                syscall!(fcntl(new, libc::F_SETFL, fl | libc::O_NONBLOCK))?;
            }
            Ok(())
        };
        if let Err(e) = set() {
            // SAFETY: `new` is ours (just accepted) and closed once.
            unsafe { libc::close(new) };
            return Err(e);
        }
        Ok(new as isize)
    })
}

/// One nonblocking `recv` into `buf`'s spare capacity.
fn recv_into(fd: RawFd, buf: &mut Vec<u8>) -> Option<io::Result<usize>> {
    let res =
        nonblocking(|| crate::direct::recv(fd, buf.spare_capacity_mut()).map(|n| n as isize))?;
    if let Ok(n) = res {
        // SAFETY: the kernel initialised `n` bytes of the spare capacity.
        unsafe { buf.set_len(buf.len() + n) };
    }
    Some(res)
}

/// One nonblocking `read` into `buf`'s spare capacity (any descriptor).
fn read_into(fd: RawFd, buf: &mut Vec<u8>) -> Option<io::Result<usize>> {
    let res =
        nonblocking(|| crate::direct::read(fd, buf.spare_capacity_mut()).map(|n| n as isize))?;
    if let Ok(n) = res {
        // SAFETY: the kernel initialised `n` bytes of the spare capacity.
        unsafe { buf.set_len(buf.len() + n) };
    }
    Some(res)
}

/// Tries `entry`'s system call once.
fn attempt(entry: &mut Entry, ready: u8, bufs: &mut MultiBufs) -> Step {
    let token = entry.token;
    match &mut entry.kind {
        OpKind::Accept { fd } => match accept_one(*fd) {
            None => Step::Block,
            Some(r) => Step::Done(r, None),
        },
        OpKind::AcceptMulti { fd, .. } => match accept_one(*fd) {
            None => Step::Block,
            Some(Ok(newfd)) => {
                let mut c = Completion::new(token, Ok(newfd));
                c.more = true;
                Step::Again(c, false)
            }
            Some(Err(e)) => Step::Done(Err(e), None),
        },
        OpKind::Recv { fd, buf } => match recv_into(*fd, buf) {
            None => Step::Block,
            Some(r) => Step::Done(r, Some(std::mem::take(buf))),
        },
        OpKind::RecvMulti { fd, read, .. } => {
            let got = if *read { bufs.get_read() } else { bufs.get() };
            let Some(mut buf) = got else {
                return Step::Park;
            };
            let got = if *read {
                read_into(*fd, &mut buf)
            } else {
                recv_into(*fd, &mut buf)
            };
            match got {
                None => {
                    bufs.keep(buf);
                    Step::Block
                }
                Some(Ok(0)) => {
                    bufs.keep(buf);
                    Step::Done(Ok(0), None)
                }
                Some(Ok(n)) => {
                    bufs.lend();
                    let full = n == buf.capacity();
                    let mut c = Completion::new(token, Ok(n)).with_buf(Some(buf));
                    c.more = true;
                    Step::Again(c, full)
                }
                Some(Err(e)) => {
                    bufs.keep(buf);
                    Step::Done(Err(e), None)
                }
            }
        }
        OpKind::Send {
            fd,
            buf,
            from,
            write: true,
        } => {
            let fd = *fd;
            let bytes = buf.as_slice();
            let data = &bytes[(*from).min(bytes.len())..];
            let r = nonblocking(|| crate::direct::write(fd, data).map(|n| n as isize));
            match r {
                None => Step::Block,
                Some(r) => Step::Done(r, buf.take_vec()),
            }
        }
        OpKind::Send { fd, buf, from, .. } => {
            let fd = *fd;
            let bytes = buf.as_slice();
            let data = &bytes[(*from).min(bytes.len())..];
            let r = nonblocking(|| {
                crate::direct::send(fd, data, libc::MSG_NOSIGNAL).map(|n| n as isize)
            });
            match r {
                None => Step::Block,
                Some(r) => Step::Done(r, buf.take_vec()),
            }
        }
        OpKind::Connect { fd, .. } => Step::Done(take_socket_error(*fd), None),
        OpKind::Poll { interest, .. } => {
            let got = ready & interest.bits();
            if got == 0 {
                Step::Block
            } else {
                Step::Done(Ok(usize::from(Interest::from_bits(got).bits())), None)
            }
        }
        _ => Step::Done(Err(io::ErrorKind::Unsupported.into()), None),
    }
}

/// The outcome of a nonblocking connect, once the socket is writable.
fn take_socket_error(fd: RawFd) -> io::Result<usize> {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `err` and `len` are valid for writes and `len` holds the size of `err`.
    unsafe {
        syscall!(getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&raw mut err).cast(),
            &mut len
        ))
    }?;
    if err == 0 {
        Ok(0)
    } else {
        Err(io::Error::from_raw_os_error(err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_descriptor_state_is_20_bytes() {
        assert_eq!(std::mem::size_of::<FdState>(), 20);
    }
}
