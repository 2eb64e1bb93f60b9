//! The readiness backend: completion semantics on top of the `polling`
//! crate (epoll on Linux, kqueue, event ports, ...).
//!
//! Each operation waits in a per-descriptor queue, readers (accept, recv,
//! poll-readable) and writers (send, connect, poll-writable) apart, in
//! submission order. The descriptor is registered level-triggered for the
//! union of what its queues want; when it is ready the reactor runs the
//! nonblocking system call for the queue's head and, unless it would block,
//! completes the operation. Send and connect try their call right away at
//! submit (the socket is usually writable); shutdown and close are done at
//! once. Interest is dropped lazily: a descriptor whose queue ran empty stays
//! armed until it fires with nobody waiting, so the common "recv completes,
//! next recv submitted in the same turn" costs no `epoll_ctl`.
//!
//! All system calls on buffers happen synchronously inside `submit` or
//! `wait`, so a buffer is never in use once it is handed back: cancel and
//! drop are immediate.

use super::readiness::{Entry, R, Step, W, attempt, fd_of};
use super::slab::{Key, Slab};
use super::{MultiBufs, Notify, WakeShared};
use crate::op::{OpKind, cancelled};
use crate::{Completion, Op, Token};
use polling::{Event, Events, PollMode, Poller};
use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

/// The operations waiting on one descriptor in one direction, in order.
/// Almost always none or one (an idle connection's receive), so the first
/// is kept inline and only a second one allocates: 16 bytes, where a
/// `VecDeque` took 32 and a heap block as soon as anything waited.
#[derive(Debug, Default)]
struct Waiters {
    /// The first key (`Key::to_u64`; 0, which no key is, when empty).
    head: u64,
    /// The ones after it. Boxed on purpose: 8 bytes in every `FdState`
    /// rather than 32, for a queue that is rarely there.
    #[allow(clippy::box_collection)]
    rest: Option<Box<VecDeque<Key>>>,
}

impl Waiters {
    fn is_empty(&self) -> bool {
        self.head == 0
    }

    fn front(&self) -> Option<Key> {
        (self.head != 0).then(|| Key::from_u64(self.head))
    }

    fn push_back(&mut self, key: Key) {
        if self.head == 0 {
            self.head = key.to_u64();
        } else {
            self.rest.get_or_insert_default().push_back(key);
        }
    }

    fn remove(&mut self, key: Key) {
        if self.head == key.to_u64() {
            self.head = self
                .rest
                .as_mut()
                .and_then(|r| r.pop_front())
                .map_or(0, Key::to_u64);
        } else if let Some(rest) = self.rest.as_mut() {
            rest.retain(|k| *k != key);
        }
    }

    /// Empties the queue into `keys`, in order.
    fn take_into(&mut self, keys: &mut Vec<Key>) {
        if let Some(k) = self.front() {
            keys.push(k);
            self.head = 0;
            if let Some(rest) = self.rest.as_mut() {
                keys.extend(rest.drain(..));
            }
        }
    }
}

#[derive(Debug, Default)]
struct FdState {
    readers: Waiters,
    writers: Waiters,
    /// Interest currently registered with the poller.
    registered: u8,
    in_poller: bool,
    dirty: bool,
    /// It fired for a direction nobody waits on: disarm it.
    spurious: bool,
}

impl FdState {
    fn want(&self) -> u8 {
        (if self.readers.is_empty() { 0 } else { R })
            | (if self.writers.is_empty() { 0 } else { W })
    }

    /// Takes every waiting operation off both queues.
    fn take_waiters(&mut self) -> Vec<Key> {
        let mut keys = Vec::new();
        self.readers.take_into(&mut keys);
        self.writers.take_into(&mut keys);
        keys
    }
}

/// The polling backend.
#[derive(Debug)]
pub(crate) struct Poll {
    poller: Arc<Poller>,
    events: Option<Events>,
    ops: Slab<Entry>,
    fds: Vec<FdState>,
    dirty: Vec<RawFd>,
    wake: Arc<WakeShared>,
    bufs: MultiBufs,
    /// `recv_multi` operations taken off their queue until buffers return.
    parked: VecDeque<Key>,
}

impl Poll {
    pub(crate) fn new() -> io::Result<Poll> {
        let poller = Arc::new(Poller::new()?);
        let wake = Arc::new(WakeShared::new(Notify::Poller(poller.clone())));
        Ok(Poll {
            poller,
            events: Some(Events::new()),
            ops: Slab::new(),
            fds: Vec::new(),
            dirty: Vec::new(),
            wake,
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
                "file operations are unsupported by the polling backend (run them on a thread pool)",
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
                let idle = self
                    .fds
                    .get(fd as usize)
                    .is_none_or(|s| s.writers.is_empty());
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
        let st = self.fd_state(fd);
        if dirs & R != 0 {
            st.readers.push_back(key);
        }
        if dirs & W != 0 {
            st.writers.push_back(key);
        }
        self.mark_dirty(fd);
    }

    fn fd_state(&mut self, fd: RawFd) -> &mut FdState {
        let i = fd as usize;
        if i >= self.fds.len() {
            self.fds.resize_with(i + 1, FdState::default);
        }
        &mut self.fds[i]
    }

    fn mark_dirty(&mut self, fd: RawFd) {
        let st = self.fd_state(fd);
        if !st.dirty {
            st.dirty = true;
            self.dirty.push(fd);
        }
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
        let Some(st) = self.fds.get_mut(fd as usize) else {
            return;
        };
        let mut keys = st.take_waiters();
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

    /// Takes `fd` out of the poller before it is closed.
    fn forget_fd(&mut self, fd: RawFd) {
        let Some(st) = self.fds.get_mut(fd as usize) else {
            return;
        };
        if st.in_poller {
            // SAFETY: `fd` is still open here (it is closed right after).
            let _ = self
                .poller
                .delete(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) });
        }
        st.in_poller = false;
        st.registered = 0;
        st.spurious = false;
    }

    fn unqueue(&mut self, fd: RawFd, key: Key) {
        if let Some(st) = self.fds.get_mut(fd as usize) {
            st.readers.remove(key);
            st.writers.remove(key);
        }
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
        let timeout = if out.is_empty() {
            timeout
        } else {
            Some(Duration::ZERO)
        };
        let mut events = self.events.take().unwrap_or_default();
        events.clear();
        let r = self.poller.wait(&mut events, timeout);
        self.wake.reset();
        if let Err(e) = r {
            self.events = Some(events);
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            };
        }
        for ev in events.iter() {
            self.on_ready(ev.key as RawFd, ev.readable, ev.writable, out);
        }
        self.events = Some(events);
        Ok(())
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
            self.fd_state(fd).readers.push_back(key);
            self.mark_dirty(fd);
        }
    }

    fn flush_interest(&mut self, out: &mut VecDeque<Completion>) {
        while let Some(fd) = self.dirty.pop() {
            self.update_interest(fd, out);
        }
    }

    fn update_interest(&mut self, fd: RawFd, out: &mut VecDeque<Completion>) {
        let poller = &self.poller;
        let st = &mut self.fds[fd as usize];
        st.dirty = false;
        let want = st.want();
        if want == st.registered || (want & !st.registered == 0 && !st.spurious) {
            return;
        }
        st.spurious = false;
        let ev = Event::new(fd as usize, want & R != 0, want & W != 0);
        // SAFETY: the caller keeps `fd` open while operations wait on it, and
        // the reactor deletes it from the poller before an `Op::close`.
        let bfd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        if want == 0 {
            // Nobody waits and it fired. Modifying it to "no interest" is not
            // enough: epoll reports hang-up and error regardless, so a reset
            // socket would wake every wait until the caller closes it.
            if st.in_poller {
                let _ = poller.delete(bfd);
            }
            st.in_poller = false;
            st.registered = 0;
            return;
        }
        let r = if st.in_poller {
            match poller.modify_with_mode(bfd, ev, PollMode::Level) {
                // Closed and reopened behind our back: register it anew.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    // SAFETY: as above, `fd` stays open while it is registered.
                    unsafe { poller.add_with_mode(fd, ev, PollMode::Level) }
                }
                r => r,
            }
        } else if want == 0 {
            Ok(())
        } else {
            // SAFETY: as above, `fd` stays open while it is registered.
            match unsafe { poller.add_with_mode(fd, ev, PollMode::Level) } {
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    poller.modify_with_mode(bfd, ev, PollMode::Level)
                }
                r => r,
            }
        };
        match r {
            Ok(()) => {
                st.registered = want;
                st.in_poller = true;
            }
            Err(e) => {
                // The descriptor cannot be watched (closed, not pollable):
                // its operations fail rather than wait forever.
                for key in st.take_waiters() {
                    if let Some(token) = self.ops.get_mut(key).map(|en| en.token) {
                        let err = match e.raw_os_error() {
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
        if fd as usize >= self.fds.len() {
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
            st.spurious = true;
        }
        self.mark_dirty(fd);
    }

    /// Runs the head of one of `fd`'s queues while its calls do not block.
    fn run_queue(&mut self, fd: RawFd, dir: u8, ready: u8, out: &mut VecDeque<Completion>) {
        loop {
            let st = &self.fds[fd as usize];
            let head = if dir == R {
                st.readers.front()
            } else {
                st.writers.front()
            };
            let Some(key) = head else { return };
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
