//! The epoll backend (Linux): the polling backend's completion semantics on
//! raw `epoll`, so that a turn costs one `epoll_wait` and nothing else.
//!
//! It behaves exactly as `poll.rs` does (the same conformance suite runs on
//! both): each operation waits in a per-descriptor queue, readers (accept,
//! recv, poll-readable) and writers (send, connect, poll-writable) apart, in
//! submission order; the descriptor is registered *level-triggered* for the
//! union of what its queues want; when it is ready the reactor runs the
//! nonblocking system call for the queue's head and, unless it would block,
//! completes the operation. Send and connect try their call right away at
//! submit; shutdown and close are done at once. Interest is dropped lazily:
//! a descriptor whose queue ran empty stays registered until it fires with
//! nobody waiting, so "recv completes, next recv submitted in the same
//! turn" costs no `epoll_ctl`.
//!
//! What it does not do, and the `polling` crate's `wait` does on every call
//! (its API leaves no way around it): re-arm a timerfd for the timeout
//! (`timerfd_settime` and `epoll_ctl`) and read and re-arm its notifier
//! (`read` and `epoll_ctl`) whether or not anyone woke it. Here:
//!
//! - the timeout goes to `epoll_wait` itself, in milliseconds, rounded up
//!   (a wait never ends before its timeout; the loop's timers have
//!   millisecond granularity anyway);
//! - the wake-up eventfd is registered once, level-triggered, and read only
//!   when `epoll_wait` reports it; [`WakeShared`] writes to it only on the
//!   false-to-true edge of its pending flag (and the facade wakes only a
//!   sleeping loop), so a loop nobody wakes never touches it;
//! - `epoll_ctl` is called only when a descriptor's wanted interest really
//!   changes (or it fired with nobody waiting, and is then deleted).
//!
//! W4 (ping-pong) therefore costs per round trip two `epoll_wait`, two
//! `recv` and two `send`: what libuv makes (docs/benchmarks.md).
//!
//! All system calls on buffers happen synchronously inside `submit` or
//! `wait`, so a buffer is never in use once it is handed back: cancel and
//! drop are immediate.

use super::readiness::{Entry, R, Step, W, attempt, fd_of};
use super::slab::{Key, Slab};
use super::{MultiBufs, Notify, WakeShared};
use crate::op::{OpKind, cancelled};
use crate::{Completion, Op, Token};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

/// `FdState::flags`: the descriptor is in the epoll set.
const IN_EPOLL: u8 = 1;
/// It is on the dirty list (its interest is checked before the next wait).
const DIRTY: u8 = 2;
/// It fired for a direction nobody waits on: disarm it.
const SPURIOUS: u8 = 4;
/// More than one reader waits: the rest are in `Epoll::more`.
const MORE_R: u8 = 8;
/// More than one writer waits: the rest are in `Epoll::more`.
const MORE_W: u8 = 16;

/// The `epoll_data` of the wake-up eventfd. Descriptors are never
/// negative, so no descriptor's data (`fd as u64`) is this.
const WAKE_KEY: u64 = u64::MAX;

/// How many events one `epoll_wait` takes at most (as libuv). More ready
/// descriptors are reported by the next wait: registrations are
/// level-triggered, so nothing is lost.
const MAX_EVENTS: usize = 1024;

/// What epoll reports as "a reader can proceed" (errors and hang-ups make
/// the pending call fail or see the end of the stream), as `polling` maps it.
const READ_EVENTS: u32 = (libc::EPOLLIN | libc::EPOLLPRI | libc::EPOLLHUP | libc::EPOLLERR) as u32;
/// What epoll reports as "a writer can proceed".
const WRITE_EVENTS: u32 = (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) as u32;

/// One descriptor's state, in a `Vec` indexed by descriptor: 24 bytes (W10
/// counts it per idle connection). The first waiting operation of each
/// direction is kept inline; the rare second and later ones (several sends
/// queued on a full socket, many polls) live in `Epoll::more`, flagged by
/// `MORE_R` / `MORE_W` so the common case never looks there.
#[derive(Debug, Default, Clone, Copy)]
struct FdState {
    /// The first waiting reader (`Key::to_u64`; 0, which no key is: none).
    reader: u64,
    /// The first waiting writer (as `reader`).
    writer: u64,
    /// Interest currently registered with epoll (`R | W` bits).
    registered: u8,
    /// `IN_EPOLL`, `DIRTY`, `SPURIOUS`, `MORE_R`, `MORE_W`.
    flags: u8,
}

impl FdState {
    fn want(&self) -> u8 {
        (if self.reader == 0 { 0 } else { R }) | (if self.writer == 0 { 0 } else { W })
    }

    fn head(&self, dir: u8) -> u64 {
        if dir == R { self.reader } else { self.writer }
    }

    fn head_mut(&mut self, dir: u8) -> &mut u64 {
        if dir == R {
            &mut self.reader
        } else {
            &mut self.writer
        }
    }
}

/// The flag saying `dir` has operations beyond the inline head.
fn more_flag(dir: u8) -> u8 {
    if dir == R { MORE_R } else { MORE_W }
}

/// The epoll backend.
#[derive(Debug)]
pub(crate) struct Epoll {
    epfd: OwnedFd,
    /// The wake-up eventfd (owned by `wake`, which this keeps alive).
    wake_fd: RawFd,
    wake: Arc<WakeShared>,
    /// `MAX_EVENTS` slots `epoll_wait` fills.
    events: Vec<libc::epoll_event>,
    ops: Slab<Entry>,
    fds: Vec<FdState>,
    /// The waiting operations after the first, by `(fd, direction)`.
    more: HashMap<(RawFd, u8), VecDeque<Key>>,
    dirty: Vec<RawFd>,
    bufs: MultiBufs,
    /// `recv_multi` operations taken off their queue until buffers return.
    parked: VecDeque<Key>,
}

impl Epoll {
    pub(crate) fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes no pointers.
        let epfd = unsafe { syscall!(epoll_create1(libc::EPOLL_CLOEXEC)) }?;
        // SAFETY: `epfd` is a new descriptor nobody else owns.
        let epfd = unsafe { OwnedFd::from_raw_fd(epfd) };
        // SAFETY: eventfd takes no pointers.
        let efd = unsafe { syscall!(eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK)) }?;
        // SAFETY: `efd` is a new descriptor nobody else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(efd) };
        let wake = Arc::new(WakeShared::new(Notify::EventFd(owned)));
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: WAKE_KEY,
        };
        // SAFETY: both descriptors are open; `ev` is a valid event for the call.
        unsafe {
            syscall!(epoll_ctl(
                epfd.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                efd,
                &raw mut ev
            ))
        }?;
        Ok(Epoll {
            epfd,
            wake_fd: efd,
            wake,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS],
            ops: Slab::new(),
            fds: Vec::new(),
            more: HashMap::new(),
            dirty: Vec::new(),
            bufs: MultiBufs::default(),
            parked: VecDeque::new(),
        })
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

    pub(crate) fn submit(
        &mut self,
        token: Token,
        op: Op,
        out: &mut VecDeque<Completion>,
    ) -> Result<(), (io::Error, Op)> {
        if self.ops.contains_token(token) {
            return Err((io::ErrorKind::AlreadyExists.into(), op));
        }
        if op.is_file_op() {
            let e = io::Error::new(
                io::ErrorKind::Unsupported,
                "file operations are unsupported by the epoll backend (run them on a thread pool)",
            );
            return Err((e, op));
        }
        if fd_of(&op.kind) < 0 {
            // No descriptor has a negative number (and the per-fd table is
            // indexed by it): the kernel's answer, as io_uring gives it.
            let (buf, _) = op.into_parts();
            let ebadf = Err(io::Error::from_raw_os_error(libc::EBADF));
            out.push_back(Completion::new(token, ebadf).with_buf(buf));
            return Ok(());
        }
        match op.kind {
            OpKind::Shutdown { fd, how } => {
                // SAFETY: shutdown takes no pointers; a bad fd is an error result.
                let r = unsafe { syscall!(shutdown(fd, how.how())) };
                out.push_back(Completion::new(token, r.map(|_| 0)));
            }
            OpKind::Close { fd } => {
                self.cancel_fd(fd, out);
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
                        self.enqueue(token, OpKind::Connect { fd, addr }, W);
                    }
                    Err(e) => out.push_back(Completion::new(token, Err(e))),
                }
            }
            kind @ OpKind::Send { .. } => {
                let fd = fd_of(&kind);
                let idle = self.fds.get(fd as usize).is_none_or(|s| s.writer == 0);
                let mut entry = Entry { token, kind };
                if idle {
                    match attempt(&mut entry, W, &mut self.bufs) {
                        Step::Block | Step::Park => {}
                        Step::Done(res, buf) => {
                            out.push_back(Completion::new(token, res).with_buf(buf));
                            return Ok(());
                        }
                        Step::Again(_) => unreachable!("send is single-shot"),
                    }
                }
                self.enqueue(token, entry.kind, W);
            }
            kind @ OpKind::Poll { interest, .. } => {
                let dirs = (if interest.is_readable() { R } else { 0 })
                    | (if interest.is_writable() { W } else { 0 });
                self.enqueue(token, kind, dirs);
            }
            kind => self.enqueue(token, kind, R),
        }
        Ok(())
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
        let head = st.head_mut(dir);
        if *head == 0 {
            *head = key.to_u64();
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
            *st.head_mut(dir) = next.map_or(0, Key::to_u64);
        } else if has_more && let Some(rest) = self.more.get_mut(&(fd, dir)) {
            rest.retain(|k| *k != key);
        }
        if has_more && self.more.get(&(fd, dir)).is_none_or(VecDeque::is_empty) {
            self.more.remove(&(fd, dir));
            st.flags &= !flag;
        }
    }

    /// Empties both of `fd`'s queues into a list, in order (readers first).
    fn take_waiters(&mut self, fd: RawFd) -> Vec<Key> {
        let mut keys = Vec::new();
        let Some(st) = self.fds.get_mut(fd as usize) else {
            return keys;
        };
        for dir in [R, W] {
            let head = std::mem::take(st.head_mut(dir));
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

    pub(crate) fn cancel(&mut self, token: Token, out: &mut VecDeque<Completion>) -> bool {
        let Some(key) = self.ops.key_of(token) else {
            return false;
        };
        let fd = match self.ops.get_mut(key) {
            Some(e) => fd_of(&e.kind),
            None => return false,
        };
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

    /// Takes `fd` out of the epoll set before it is closed.
    fn forget_fd(&mut self, fd: RawFd) {
        let epfd = self.epfd.as_raw_fd();
        let Some(st) = self.fds.get_mut(fd as usize) else {
            return;
        };
        if st.flags & IN_EPOLL != 0 {
            // SAFETY: `fd` is still open here (it is closed right after); a
            // null event is allowed for EPOLL_CTL_DEL.
            let _ = unsafe {
                syscall!(epoll_ctl(
                    epfd,
                    libc::EPOLL_CTL_DEL,
                    fd,
                    std::ptr::null_mut()
                ))
            };
        }
        st.flags &= !(IN_EPOLL | SPURIOUS);
        st.registered = 0;
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
            let buf = buf.or_else(|| Op { kind: entry.kind }.into_buf());
            out.push_back(Completion::new(token, res).with_buf(buf));
        }
    }

    pub(crate) fn wait(
        &mut self,
        timeout: Option<Duration>,
        out: &mut VecDeque<Completion>,
    ) -> io::Result<()> {
        self.unpark();
        self.flush_interest(out);
        let ms = if out.is_empty() {
            timeout_ms(timeout)
        } else {
            0
        };
        // SAFETY: `events` holds MAX_EVENTS initialised entries the kernel
        // may overwrite; the epoll descriptor is open.
        let r = unsafe {
            syscall!(epoll_wait(
                self.epfd.as_raw_fd(),
                self.events.as_mut_ptr(),
                MAX_EVENTS as i32,
                ms
            ))
        };
        let n = match r {
            Ok(n) => n as usize,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => {
                self.wake.reset();
                return Err(e);
            }
        };
        for i in 0..n.min(MAX_EVENTS) {
            let libc::epoll_event { events, u64: data } = self.events[i];
            if data == WAKE_KEY {
                self.drain_wake();
                continue;
            }
            self.on_ready(
                data as RawFd,
                events & READ_EVENTS != 0,
                events & WRITE_EVENTS != 0,
                out,
            );
        }
        // After the eventfd was read, not before: a wake between the two
        // would otherwise be read away while the flag still said "pending",
        // and no later wake would write again.
        self.wake.reset();
        Ok(())
    }

    /// Reads the wake-up eventfd back to zero (it fired).
    fn drain_wake(&mut self) {
        let mut count: u64 = 0;
        // SAFETY: the eventfd is open (`self.wake` owns it); the pointer and
        // length describe the 8 bytes of `count`, alive for the call.
        let _ = unsafe { syscall!(read(self.wake_fd, (&raw mut count).cast(), 8)) };
    }

    /// Puts parked receives back on their queues, as many as there are
    /// buffers for.
    fn unpark(&mut self) {
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

    fn flush_interest(&mut self, out: &mut VecDeque<Completion>) {
        while let Some(fd) = self.dirty.pop() {
            self.update_interest(fd, out);
        }
    }

    fn update_interest(&mut self, fd: RawFd, out: &mut VecDeque<Completion>) {
        let epfd = self.epfd.as_raw_fd();
        let st = &mut self.fds[fd as usize];
        st.flags &= !DIRTY;
        let want = st.want();
        if want == st.registered || (want & !st.registered == 0 && st.flags & SPURIOUS == 0) {
            return;
        }
        st.flags &= !SPURIOUS;
        if want == 0 {
            // Nobody waits and it fired. Modifying it to "no interest" is not
            // enough: epoll reports hang-up and error regardless, so a reset
            // socket would wake every wait until the caller closes it.
            if st.flags & IN_EPOLL != 0 {
                // SAFETY: `fd` is open (the caller keeps it open while it is
                // registered); a null event is allowed for EPOLL_CTL_DEL.
                let _ = unsafe {
                    syscall!(epoll_ctl(
                        epfd,
                        libc::EPOLL_CTL_DEL,
                        fd,
                        std::ptr::null_mut()
                    ))
                };
            }
            st.flags &= !IN_EPOLL;
            st.registered = 0;
            return;
        }
        let ctl = |op: i32| {
            let mut ev = libc::epoll_event {
                events: (if want & R != 0 {
                    libc::EPOLLIN as u32
                } else {
                    0
                }) | (if want & W != 0 {
                    libc::EPOLLOUT as u32
                } else {
                    0
                }),
                u64: fd as u64,
            };
            // SAFETY: `ev` is a valid event for the call; a descriptor that
            // is not open is an error result (handled below). The caller
            // keeps `fd` open while operations wait on it, and the reactor
            // deletes it from the set before an `Op::close`.
            unsafe { syscall!(epoll_ctl(epfd, op, fd, &raw mut ev)) }
        };
        let r = if st.flags & IN_EPOLL != 0 {
            match ctl(libc::EPOLL_CTL_MOD) {
                // Closed and reopened behind our back: register it anew.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => ctl(libc::EPOLL_CTL_ADD),
                r => r,
            }
        } else {
            match ctl(libc::EPOLL_CTL_ADD) {
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => ctl(libc::EPOLL_CTL_MOD),
                r => r,
            }
        };
        match r {
            Ok(_) => {
                st.registered = want;
                st.flags |= IN_EPOLL;
            }
            Err(e) => {
                // The descriptor cannot be watched (closed, not pollable):
                // its operations fail rather than wait forever.
                let code = e.raw_os_error();
                for key in self.take_waiters(fd) {
                    if let Some(token) = self.ops.get_mut(key).map(|en| en.token) {
                        let err = match code {
                            Some(code) => io::Error::from_raw_os_error(code),
                            None => e.kind().into(),
                        };
                        self.finish(key, token, Err(err), None, out);
                    }
                }
            }
        }
    }

    fn on_ready(
        &mut self,
        fd: RawFd,
        readable: bool,
        writable: bool,
        out: &mut VecDeque<Completion>,
    ) {
        if fd < 0 || fd as usize >= self.fds.len() {
            return;
        }
        let ready = (if readable { R } else { 0 }) | (if writable { W } else { 0 });
        if readable {
            self.run_queue(fd, R, ready, out);
        }
        if writable {
            self.run_queue(fd, W, ready, out);
        }
        let st = &mut self.fds[fd as usize];
        if ready & !st.want() != 0 {
            st.flags |= SPURIOUS;
        }
        self.mark_dirty(fd);
    }

    /// Runs the head of one of `fd`'s queues while its calls do not block.
    fn run_queue(&mut self, fd: RawFd, dir: u8, ready: u8, out: &mut VecDeque<Completion>) {
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
            match attempt(entry, ready, &mut self.bufs) {
                Step::Block => return,
                Step::Park => {
                    self.unqueue(fd, key);
                    self.parked.push_back(key);
                }
                Step::Again(c) => {
                    out.push_back(c);
                    return;
                }
                Step::Done(res, buf) => {
                    let token = entry.token;
                    self.unqueue(fd, key);
                    self.finish(key, token, res, buf, out);
                }
            }
        }
    }
}

/// `epoll_wait`'s timeout: whole milliseconds, rounded up so that a wait
/// never ends before its timeout; -1 for none; capped at `i32::MAX` ms
/// (24.8 days: the caller waits again).
fn timeout_ms(timeout: Option<Duration>) -> i32 {
    match timeout {
        None => -1,
        Some(t) => {
            let ms = t.as_millis() + u128::from(t.subsec_nanos() % 1_000_000 != 0);
            i32::try_from(ms).unwrap_or(i32::MAX)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_descriptor_state_is_24_bytes() {
        assert_eq!(std::mem::size_of::<FdState>(), 24);
    }

    #[test]
    fn timeouts_round_up_to_whole_milliseconds() {
        assert_eq!(timeout_ms(None), -1);
        assert_eq!(timeout_ms(Some(Duration::ZERO)), 0);
        assert_eq!(timeout_ms(Some(Duration::from_nanos(1))), 1);
        assert_eq!(timeout_ms(Some(Duration::from_millis(5))), 5);
        assert_eq!(timeout_ms(Some(Duration::from_micros(5_001))), 6);
        assert_eq!(timeout_ms(Some(Duration::MAX)), i32::MAX);
    }
}
