//! Any descriptor as a source, and the door through which other crates add
//! their own kinds of source to the loop.
//!
//! # A descriptor's readiness: [`FdWatcher`]
//!
//! libuv's `uv_poll_t`: [`Loop::watch_fd`] takes a descriptor you own (an
//! eventfd, a pipe, a database client's socket, a D-Bus or X11
//! connection) and gives a [`FdWatcher`]; [`FdWatcher::start`] calls you
//! back with what is ready of the [`Interest`] you asked for
//! ([`Interest::READABLE`], [`Interest::WRITABLE`], [`Interest::PRIORITY`],
//! [`Interest::DISCONNECT`]), or with an error.
//!
//! ```
//! use std::io::{Read, Write};
//! use std::os::unix::net::UnixStream;
//! use eventide::source::Interest;
//!
//! let mut lp = eventide::Loop::new()?;
//! let (mut ours, mut theirs) = UnixStream::pair()?;
//! ours.set_nonblocking(true)?;
//! let watcher = lp.watch_fd(&ours)?;
//! watcher.start(&mut lp, Interest::READABLE, move |lp, me, ready| {
//!     assert!(ready.expect("no error").is_readable());
//!     let mut buf = [0; 16];
//!     let n = ours.read(&mut buf).expect("readable");
//!     assert_eq!(&buf[..n], b"hello");
//!     me.close(lp);
//! })?;
//! theirs.write_all(b"hello")?;
//! lp.run()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! It is **level-triggered**, as `uv_poll`: while the watcher is started
//! and the descriptor is ready, the callback runs once per turn of the
//! loop, so a callback that reads only part of what is there hears of the
//! rest on the next turn. Readiness may be spurious (the nonblocking call
//! then says `EAGAIN`): make the descriptor nonblocking. A hang-up or an
//! error on the descriptor is reported as everything you asked for, so
//! that your read or write meets it. [`Interest::DISCONNECT`] is a
//! stream socket's peer shutting its writing side down (`EPOLLRDHUP`), or
//! a hang-up (a pipe whose writers are gone); on the `poll` backend (the
//! `polling` crate, which cannot ask for `EPOLLRDHUP`) a half-close is
//! found only together with [`Interest::READABLE`].
//!
//! The callback gets an error, and the watcher stops, when the descriptor
//! cannot be watched; a regular file or a directory is refused at
//! [`Loop::watch_fd`] with `EPERM` on every backend (epoll refuses them;
//! `poll(2)` would call them always ready).
//!
//! ## Who owns the descriptor, and closing it while it is watched
//!
//! You keep the descriptor: the watcher holds a duplicate of it (`dup`),
//! and closes that duplicate when the watcher is closed. **Close the
//! watcher (or at least stop it) before you close the descriptor.** If you
//! close yours first, on every backend alike:
//!
//! - nothing crashes, and the watcher keeps watching the file your
//!   descriptor was (the duplicate keeps it open: a socket stays
//!   connected, a pipe's reader stays there for its writer) until you
//!   close the watcher;
//! - a descriptor that takes your old number later (a new file, a socket
//!   of this loop) is a different descriptor to the watcher: its events
//!   never reach the watcher, and the watcher's never reach it.
//!
//! The duplicate costs one descriptor per watcher. It is what makes the
//! above hold: a watch on the number itself would, after your close,
//! watch whatever takes the number next (epoll, the re-armed io_uring
//! poll), or keep an epoll registration alive that can no longer be
//! removed.
//!
//! ## Liveness
//!
//! A started, referenced watcher keeps the loop alive, as a `uv_poll_t`
//! does; [`FdWatcher::unref`] lets the loop end while it watches.
//!
//! # Other kinds of source: [`EventSource`]
//!
//! A crate that brings its own kind of event to the loop implements
//! [`EventSource`] (calloop's idea: the loop owns the source and calls it
//! back with `&mut Loop`) and adds it with [`Loop::insert_source`], which
//! returns its [`SourceKey`]. Through the key the source watches
//! descriptors ([`SourceKey::watch`], level-triggered readiness as
//! above) and submits the reactor's own operations ([`SourceKey::submit`]:
//! [`Op::recv`], [`Op::send`], [`Op::poll_multi`], ... the operations the
//! loop's sockets and files are made of, on io_uring, epoll or polling);
//! each readiness and each completion comes back to
//! [`EventSource::process`] as a [`SourceEvent`], on the loop, in the
//! poll phase. While it has a watch started or an operation in flight, a
//! referenced source keeps the loop alive ([`SourceKey::set_ref`]).
//! [`SourceKey::remove`] takes it out: its watches end, its operations are
//! cancelled, and the source is dropped.
//!
//! [`FdWatcher`] itself is such a source. A line reader over a pipe,
//! written against this module alone, is in the crate's
//! `examples/line_source.rs`.
//!
//! Before the loop calls a source, every structure is as it will be after
//! the call: `process` may remove its own source, add others, change or
//! end its watches, submit and cancel, or panic (the source is kept, the
//! panic goes to the panic handler or out of `run()`).

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd};
use std::rc::Rc;

use eventide_reactor::Token;
pub use eventide_reactor::{Completion, Interest, Op, SubmitError};

use crate::event_loop::{Loop, Task};
use crate::slab::{Slab, SlotId};
use crate::{Error, Result};

/// A kind of event source another crate brings to the loop: the loop owns
/// it ([`Loop::insert_source`]) and calls [`EventSource::process`] with
/// each event of its watches and operations. See the [module
/// documentation](self).
pub trait EventSource: Any {
    /// Handles one event of this source, on the loop. `key` is the
    /// source's own key: through it the source changes its watches,
    /// submits more operations, or removes itself.
    fn process(&mut self, lp: &mut Loop, key: SourceKey, event: SourceEvent);
}

/// What happened to one of a source's watches or operations.
#[derive(Debug)]
#[non_exhaustive]
pub enum SourceEvent {
    /// A watch ([`SourceKey::watch`]) found its descriptor ready for
    /// `ready` (some of what it watches for, never empty). It comes again
    /// on every turn for as long as the descriptor stays ready and the
    /// watch is started.
    Ready {
        /// Which watch.
        watch: WatchId,
        /// What is ready.
        ready: Interest,
    },
    /// A watch's descriptor cannot be watched any more (`poll: ...`); the
    /// watch is stopped (its descriptor is still the source's, until
    /// [`SourceKey::unwatch`]).
    WatchFailed {
        /// Which watch.
        watch: WatchId,
        /// Why.
        error: Error,
    },
    /// One completion of an operation the source submitted
    /// ([`SourceKey::submit`]): its final one when `completion.more` is
    /// false, after which the [`OpId`] names nothing.
    Completed {
        /// Which operation.
        op: OpId,
        /// What the reactor reports, buffer included.
        completion: Completion,
    },
}

/// A source's key ([`Loop::insert_source`]): small, `Copy`, and stale once
/// the source is removed (a stale key, or another loop's, names nothing:
/// calls return `false` or [`Error::Stale`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SourceKey {
    id: SlotId,
    lp: u32,
}

/// One descriptor watch of a source ([`SourceKey::watch`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WatchId(SlotId);

/// One operation a source submitted ([`SourceKey::submit`]), until its
/// final completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OpId(SlotId);

/// A descriptor's readiness watcher ([`Loop::watch_fd`]), libuv's
/// `uv_poll_t`: `Copy`, and stale once closed. Dropping it does not close
/// it: [`FdWatcher::close`] does. See the [module documentation](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[must_use = "dropping a watcher's handle does not close it: it holds a duplicate of the \
              descriptor until closed with the handle"]
pub struct FdWatcher(SourceKey);

/// What an [`FdWatcher`] calls with each readiness, or its error.
type FdCallback = Box<dyn FnMut(&mut Loop, FdWatcher, Result<Interest>)>;

/// One loop's sources, shared (`Rc`) so that this module can hold a
/// borrow of the table while it submits with `&mut Loop`. No user code
/// runs while it is borrowed.
pub(crate) type Table = Rc<RefCell<Sources>>;

/// The sources (see [`Table`]).
#[derive(Default)]
pub(crate) struct Sources {
    slab: Slab<Entry>,
}

struct Entry {
    /// `None` while it runs.
    source: Option<Box<dyn EventSource>>,
    /// The source's type, for [`SourceKey::with`].
    type_id: TypeId,
    referenced: bool,
    watches: Slab<Watch>,
    /// The tokens of the operations in flight.
    ops: Slab<Token>,
    /// An [`FdWatcher`]'s own state (its source is [`FdWatch`]).
    fd: Option<FdState>,
}

struct FdState {
    watch: WatchId,
    /// `None` while it runs, and while stopped.
    callback: Option<FdCallback>,
}

/// One watch: the duplicate it watches, what for, and its
/// `Op::poll_multi` in flight.
struct Watch {
    fd: OwnedFd,
    interest: Interest,
    token: Option<Token>,
}

fn table(lp: &Loop) -> Table {
    Rc::clone(&lp.io.sources)
}

const STALE: Error = Error::Stale {
    what: "event source",
};
const STALE_WATCHER: Error = Error::Stale { what: "fd watcher" };

impl Loop {
    /// Adds `source` to the loop and returns its key, through which it
    /// watches descriptors and submits operations. It does nothing, and
    /// keeps the loop alive for nothing, until it does.
    #[track_caller]
    pub fn insert_source<S: EventSource>(&mut self, source: S) -> SourceKey {
        let key = self.insert_entry(Box::new(source), TypeId::of::<S>());
        let id = crate::slab::raw(key.id);
        self.remember_site(
            crate::diag::Kind::Source,
            id,
            std::panic::Location::caller(),
        );
        key
    }

    fn insert_entry(&mut self, source: Box<dyn EventSource>, type_id: TypeId) -> SourceKey {
        let id = table(self).borrow_mut().slab.insert(Entry {
            source: Some(source),
            type_id,
            referenced: true,
            watches: Slab::default(),
            ops: Slab::default(),
            fd: None,
        });
        SourceKey { id, lp: self.id }
    }

    /// A watcher of `fd`'s readiness (libuv's `uv_poll_init`), stopped:
    /// [`FdWatcher::start`] starts it. `fd` stays yours; the watcher holds
    /// a duplicate of it until [`FdWatcher::close`] (see the [module
    /// documentation](crate::source) for what closing yours first does).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] (`"poll"`): `EPERM` for a regular file or a
    /// directory, which no backend can watch for readiness; the
    /// duplicate's error (`EMFILE`) if the process is out of descriptors.
    #[track_caller]
    pub fn watch_fd(&mut self, fd: impl AsFd) -> Result<FdWatcher> {
        let fd = fd.as_fd();
        let dup = duplicate(fd)?;
        let key = self.insert_source(FdWatch);
        let watch = key.add_watch(self, dup, Interest::NONE)?;
        if let Some(entry) = table(self).borrow_mut().slab.get_mut(key.id) {
            entry.fd = Some(FdState {
                watch,
                callback: None,
            });
        }
        Ok(FdWatcher(key))
    }
}

/// The watch's own duplicate of `fd`, refused for what cannot be watched.
fn duplicate(fd: BorrowedFd<'_>) -> Result<OwnedFd> {
    // SAFETY: an all-zero `stat` is a valid value of the plain C struct,
    // which fstat then fills.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open (borrowed for the call); `st` is writable and
    // alive for it.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(Error::io("poll", io::Error::last_os_error()));
    }
    let kind = st.st_mode & libc::S_IFMT;
    if kind == libc::S_IFREG || kind == libc::S_IFDIR {
        return Err(Error::io("poll", io::Error::from_raw_os_error(libc::EPERM)));
    }
    fd.try_clone_to_owned().map_err(|e| Error::io("poll", e))
}

impl SourceKey {
    fn entry<R>(self, lp: &Loop, f: impl FnOnce(&mut Entry) -> R) -> Option<R> {
        if self.lp != lp.id {
            return None;
        }
        table(lp).borrow_mut().slab.get_mut(self.id).map(f)
    }

    /// Whether the source is still in the loop.
    pub fn is_alive(self, lp: &Loop) -> bool {
        self.entry(lp, |_| ()).is_some()
    }

    /// Starts watching `fd` for `interest` (level-triggered readiness,
    /// reported as [`SourceEvent::Ready`]); [`Interest::NONE`] adds the
    /// watch stopped. `fd` stays the caller's: the watch holds a duplicate
    /// of it until [`SourceKey::unwatch`] or the source's removal (as
    /// [`FdWatcher`] does).
    ///
    /// # Errors
    ///
    /// [`Error::Stale`] for a removed source; as [`Loop::watch_fd`].
    pub fn watch(self, lp: &mut Loop, fd: BorrowedFd<'_>, interest: Interest) -> Result<WatchId> {
        if !self.is_alive(lp) {
            return Err(STALE);
        }
        let dup = duplicate(fd)?;
        self.add_watch(lp, dup, interest)
    }

    fn add_watch(self, lp: &mut Loop, fd: OwnedFd, interest: Interest) -> Result<WatchId> {
        let watch = self
            .entry(lp, |e| {
                WatchId(e.watches.insert(Watch {
                    fd,
                    interest: Interest::NONE,
                    token: None,
                }))
            })
            .ok_or(STALE)?;
        self.set_interest(lp, watch, interest)?;
        Ok(watch)
    }

    /// Changes what `watch` watches for (libuv's `uv_poll_start` on a
    /// started handle); [`Interest::NONE`] stops it (`uv_poll_stop`): no
    /// readiness is reported for it from now on, also none already found
    /// this turn.
    ///
    /// # Errors
    ///
    /// [`Error::Stale`] for a removed source or watch; the reactor's
    /// refusal (`poll: ...`), which leaves the watch stopped.
    pub fn set_interest(self, lp: &mut Loop, watch: WatchId, interest: Interest) -> Result<()> {
        let t = table(lp);
        let mut sources = t.borrow_mut();
        let entry = sources
            .slab
            .get_mut(self.id)
            .filter(|_| self.lp == lp.id)
            .ok_or(STALE)?;
        let referenced = entry.referenced;
        let w = entry.watches.get_mut(watch.0).ok_or(STALE)?;
        let interest = Interest::from_bits(interest.bits());
        if interest == w.interest && (w.token.is_some() || interest.is_empty()) {
            return Ok(());
        }
        if let Some(token) = w.token.take() {
            // Its last completions find `token` no longer the watch's.
            lp.reactor.cancel(token);
        }
        w.interest = interest;
        if interest.is_empty() {
            return Ok(());
        }
        let op = Op::poll_multi(w.fd.as_raw_fd(), interest);
        match lp.submit_io(op, move |lp, c| on_watch(lp, self, watch, c)) {
            Ok(token) => {
                w.token = Some(token);
                if !referenced {
                    lp.io.set_counted(token, false);
                }
                Ok(())
            }
            Err(refused) => {
                w.interest = Interest::NONE;
                Err(Error::io("poll", refused.error))
            }
        }
    }

    /// What `watch` watches for now ([`Interest::NONE`] when stopped, also
    /// after [`SourceEvent::WatchFailed`]); `None` for a stale one.
    pub fn interest(self, lp: &Loop, watch: WatchId) -> Option<Interest> {
        self.entry(lp, |e| e.watches.get(watch.0).map(|w| w.interest))
            .flatten()
    }

    /// Ends `watch` and closes its duplicate of the descriptor. Returns
    /// `false` for a stale source or watch.
    pub fn unwatch(self, lp: &mut Loop, watch: WatchId) -> bool {
        let Some(Some(w)) = self.entry(lp, |e| e.watches.remove(watch.0)) else {
            return false;
        };
        close_watch(lp, w);
        true
    }

    /// Submits a reactor operation for the source: each of its completions
    /// comes to [`EventSource::process`] as [`SourceEvent::Completed`].
    /// The operation runs as the loop's own do (on io_uring, epoll or
    /// polling; a file operation a readiness backend refuses is refused
    /// here too); the descriptors it names must stay open until its final
    /// completion. While it is in flight a referenced source keeps the loop
    /// alive.
    ///
    /// # Errors
    ///
    /// The refusal, with the operation (and its buffer) handed back; a
    /// removed source's refusal is `NotFound`.
    #[allow(clippy::result_large_err)] // The reactor's error, handed on.
    pub fn submit(self, lp: &mut Loop, op: Op) -> std::result::Result<OpId, SubmitError> {
        let Some((id, referenced)) = self.entry(lp, |e| (e.ops.insert(Token(0)), e.referenced))
        else {
            let error = io::Error::new(io::ErrorKind::NotFound, STALE.to_string());
            return Err(SubmitError { error, op });
        };
        let op_id = OpId(id);
        match lp.submit_io(op, move |lp, c| on_op(lp, self, op_id, c)) {
            Ok(token) => {
                self.entry(lp, |e| {
                    if let Some(slot) = e.ops.get_mut(id) {
                        *slot = token;
                    }
                });
                if !referenced {
                    lp.io.set_counted(token, false);
                }
                Ok(op_id)
            }
            Err(refused) => {
                self.entry(lp, |e| e.ops.remove(id));
                Err(refused)
            }
        }
    }

    /// Asks the operation to end; its final completion still comes
    /// (`ECANCELED` unless it had finished). Returns whether it was in
    /// flight.
    pub fn cancel(self, lp: &mut Loop, op: OpId) -> bool {
        match self.entry(lp, |e| e.ops.get(op.0).copied()).flatten() {
            Some(token) => lp.reactor.cancel(token),
            None => false,
        }
    }

    /// Whether the source keeps the loop alive while it has watches
    /// started or operations in flight (libuv's `uv_ref` / `uv_unref`;
    /// referenced by default). An unreferenced source still gets its
    /// events while something else keeps the loop running. Returns `false`
    /// for a removed source.
    pub fn set_ref(self, lp: &mut Loop, referenced: bool) -> bool {
        let Some(tokens) = self.entry(lp, |e| {
            e.referenced = referenced;
            let mut tokens: Vec<Token> = e.ops.iter().map(|(_, t)| *t).collect();
            tokens.extend(e.watches.iter().filter_map(|(_, w)| w.token));
            tokens
        }) else {
            return false;
        };
        for token in tokens {
            lp.io.set_counted(token, referenced);
        }
        true
    }

    /// Whether the source is referenced; `false` once removed.
    pub fn has_ref(self, lp: &Loop) -> bool {
        self.entry(lp, |e| e.referenced).unwrap_or(false)
    }

    /// Removes the source: its watches end (their duplicates closed), its
    /// operations are cancelled (their completions no longer reach it), and
    /// the source is dropped, now or, when it is the one running, as soon
    /// as its `process` returns. Returns `false` if already removed.
    pub fn remove(self, lp: &mut Loop) -> bool {
        if self.lp != lp.id {
            return false;
        }
        let Some(entry) = table(lp).borrow_mut().slab.remove(self.id) else {
            return false;
        };
        let Entry {
            source,
            watches,
            ops,
            fd,
            ..
        } = entry;
        let mut watches = watches;
        for w in watches.drain() {
            close_watch(lp, w);
        }
        let mut ops = ops;
        for token in ops.drain() {
            lp.reactor.cancel(token);
        }
        // User code (the source's and the callback's drops) runs last,
        // with the table in order.
        drop(fd);
        drop(source);
        true
    }

    /// Runs `f` on the source, if it is of type `S` and not the one
    /// running (from its own `process`, use `self`).
    pub fn with<S: EventSource, R>(self, lp: &Loop, f: impl FnOnce(&mut S) -> R) -> Option<R> {
        if self.lp != lp.id {
            return None;
        }
        let t = table(lp);
        let mut sources = t.borrow_mut();
        let entry = sources.slab.get_mut(self.id)?;
        if entry.type_id != TypeId::of::<S>() {
            return None;
        }
        let source: *mut dyn EventSource = &mut **entry.source.as_mut()?;
        // SAFETY: the box was made from an `S` (`type_id` was recorded from
        // it at `insert_source`), so the data pointer points to a live `S`,
        // borrowed mutably through `entry` for this call only.
        let source = unsafe { &mut *source.cast::<S>() };
        Some(f(source))
    }
}

/// Hands a watch's duplicate to the reactor to close: first its
/// registration is removed, and its poll cancelled (a plain close would
/// leave epoll watching the file for as long as the caller's own
/// descriptor keeps it open, under a number that no longer names it).
fn close_watch(lp: &mut Loop, w: Watch) {
    let Watch { fd, token, .. } = w;
    if let Some(token) = token {
        lp.reactor.cancel(token);
    }
    let raw = fd.as_raw_fd();
    match lp.submit_io(Op::close(raw), |_, _| {}) {
        // The reactor owns the descriptor now.
        Ok(_) => {
            let _ = fd.into_raw_fd();
        }
        Err(_) => drop(fd),
    }
}

/// A completion of a watch's `poll_multi`.
fn on_watch(lp: &mut Loop, key: SourceKey, watch: WatchId, c: Completion) {
    let event = key.entry(lp, |e| {
        let w = e.watches.get_mut(watch.0)?;
        if w.token != Some(c.token) {
            return None; // Stopped or changed since: not this watch's now.
        }
        if !c.more {
            w.token = None;
        }
        match c.result {
            Ok(bits) if c.more => Some(SourceEvent::Ready {
                watch,
                ready: Interest::from_bits(bits as u8),
            }),
            Ok(_) => None,
            Err(error) => {
                w.interest = Interest::NONE;
                Some(SourceEvent::WatchFailed {
                    watch,
                    error: Error::io("poll", error),
                })
            }
        }
    });
    if let Some(Some(event)) = event {
        deliver(lp, key, event);
    }
}

/// A completion of an operation a source submitted.
fn on_op(lp: &mut Loop, key: SourceKey, op: OpId, completion: Completion) {
    let live = key.entry(lp, |e| {
        if e.ops.get(op.0) != Some(&completion.token) {
            return false;
        }
        if !completion.more {
            e.ops.remove(op.0);
        }
        true
    });
    if live == Some(true) {
        deliver(lp, key, SourceEvent::Completed { op, completion });
    }
}

/// Calls the source with `event`: taken out of its slot for the call, put
/// back afterwards unless it was removed meanwhile (then dropped), also
/// when it panicked; only then does the panic go on.
fn deliver(lp: &mut Loop, key: SourceKey, event: SourceEvent) {
    let Some(Some(mut source)) = key.entry(lp, |e| e.source.take()) else {
        return;
    };
    lp.note_call_of(crate::diag::Kind::Source, crate::slab::raw(key.id));
    let outcome = lp.catching(|lp: &mut Loop| source.process(lp, key, event));
    let leftover = match key.entry(lp, |e| e.source.is_none()) {
        Some(true) => {
            key.entry(lp, |e| e.source = Some(source));
            None
        }
        _ => Some(source),
    };
    drop(leftover);
    if let Err(payload) = outcome {
        lp.panicked(payload);
    }
}

/// The source behind an [`FdWatcher`]: its callback lives in the entry's
/// `FdState`, where `start` and `stop` reach it also while it runs.
struct FdWatch;

impl EventSource for FdWatch {
    fn process(&mut self, lp: &mut Loop, key: SourceKey, event: SourceEvent) {
        let me = FdWatcher(key);
        let result = match event {
            SourceEvent::Ready { ready, .. } => Ok(ready),
            SourceEvent::WatchFailed { error, .. } => Err(error),
            SourceEvent::Completed { .. } => return,
        };
        let failed = result.is_err();
        let Some(Some(mut callback)) =
            key.entry(lp, |e| e.fd.as_mut().and_then(|f| f.callback.take()))
        else {
            return;
        };
        lp.note_call_of(crate::diag::Kind::Source, crate::slab::raw(key.id));
        let outcome = lp.catching(|lp: &mut Loop| callback(lp, me, result));
        // Put back unless stopped, closed or restarted with another
        // callback meanwhile; after an error the watcher is stopped.
        let leftover = key
            .entry(lp, |e| {
                let started =
                    e.fd.as_ref()
                        .and_then(|f| e.watches.get(f.watch.0))
                        .is_some_and(|w| !w.interest.is_empty());
                match e.fd.as_mut() {
                    Some(f) if started && !failed && f.callback.is_none() => {
                        f.callback = Some(callback);
                        None
                    }
                    _ => Some(callback),
                }
            })
            .flatten();
        drop(leftover);
        if let Err(payload) = outcome {
            std::panic::resume_unwind(payload);
        }
    }
}

impl FdWatcher {
    fn state<R>(self, lp: &Loop, f: impl FnOnce(&mut FdState, &mut Slab<Watch>) -> R) -> Option<R> {
        self.0
            .entry(lp, |e| e.fd.as_mut().map(|fd| f(fd, &mut e.watches)))
            .flatten()
    }

    /// Starts watching for `interest` (libuv's `uv_poll_start`), or, on a
    /// started watcher, changes the interest and the callback. `callback`
    /// runs on the loop with what is ready (some of `interest`, never
    /// empty), on every turn while it is, or once with an error, after
    /// which the watcher is stopped. It never runs inside this call.
    /// [`Interest::NONE`] stops the watcher, as [`FdWatcher::stop`].
    ///
    /// # Errors
    ///
    /// [`Error::Stale`] for a closed watcher; the reactor's refusal
    /// (`poll: ...`).
    pub fn start(
        self,
        lp: &mut Loop,
        interest: Interest,
        callback: impl FnMut(&mut Loop, FdWatcher, Result<Interest>) + 'static,
    ) -> Result<()> {
        let watch = self.state(lp, |f, _| f.watch).ok_or(STALE_WATCHER)?;
        if interest.is_empty() {
            self.stop(lp);
            return Ok(());
        }
        self.state(lp, |f, _| f.callback = Some(Box::new(callback)));
        let started = self.0.set_interest(lp, watch, interest);
        if started.is_err() {
            self.state(lp, |f, _| f.callback = None);
        }
        started
    }

    /// Stops watching (libuv's `uv_poll_stop`): the callback does not run
    /// again until the next [`FdWatcher::start`], not even for readiness
    /// already found this turn. Returns `false` for a closed watcher.
    pub fn stop(self, lp: &mut Loop) -> bool {
        let Some((watch, callback)) = self.state(lp, |f, _| (f.watch, f.callback.take())) else {
            return false;
        };
        let _ = self.0.set_interest(lp, watch, Interest::NONE);
        drop(callback);
        true
    }

    /// What the watcher watches for ([`Interest::NONE`] when stopped);
    /// `None` once closed.
    pub fn interest(self, lp: &Loop) -> Option<Interest> {
        self.state(lp, |f, watches| {
            watches
                .get(f.watch.0)
                .map_or(Interest::NONE, |w| w.interest)
        })
    }

    /// Whether the watcher is started (libuv's `uv_is_active`).
    pub fn is_active(self, lp: &Loop) -> bool {
        self.interest(lp).is_some_and(|i| !i.is_empty())
    }

    /// Whether a started watcher keeps the loop alive (libuv's `uv_ref`
    /// / `uv_unref`; referenced by default). Returns `false` once closed.
    pub fn set_ref(self, lp: &mut Loop, referenced: bool) -> bool {
        self.0.set_ref(lp, referenced)
    }

    /// [`FdWatcher::set_ref`] with `false`.
    pub fn unref(self, lp: &mut Loop) -> bool {
        self.set_ref(lp, false)
    }

    /// Whether the watcher is referenced (libuv's `uv_has_ref`); `false`
    /// once closed.
    pub fn has_ref(self, lp: &Loop) -> bool {
        self.0.has_ref(lp)
    }

    /// Closes the watcher at once: it stops, its duplicate of the
    /// descriptor is closed (yours stays open), the handle is stale.
    /// Returns `false` if already closed. Allowed anywhere, its own
    /// callback included.
    pub fn close(self, lp: &mut Loop) -> bool {
        self.0.remove(lp)
    }

    /// As [`FdWatcher::close`], and `on_close` runs in this turn's close
    /// phase (libuv's `uv_close` callback), never inside this call.
    pub fn close_then(self, lp: &mut Loop, on_close: impl FnOnce(&mut Loop) + 'static) -> bool {
        if !self.close(lp) {
            return false;
        }
        let task: Task = Box::new(on_close);
        lp.push_closing(Some(task));
        true
    }
}

impl fmt::Debug for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sources")
            .field("len", &self.slab.len())
            .finish()
    }
}

impl Loop {
    /// The sources (and fd watchers), for [`Loop::handles`]: a referenced
    /// one with operations in flight keeps the loop alive (its operations
    /// are also listed, as I/O).
    pub(crate) fn list_sources(&self, listing: &mut crate::diag::Listing) {
        let table = table(self);
        let sources = table.borrow();
        for (slot, entry) in sources.slab.iter() {
            let id = crate::slab::raw(slot);
            let kind = crate::diag::Kind::Source;
            let keeps = entry.referenced && entry.ops.len() > 0;
            listing.add(kind, id, entry.referenced, keeps, self.site_of(kind, id));
        }
    }
}
