//! Signals on the loop: Node's `process.on('SIGINT', f)`, libuv's
//! `uv_signal_t`.
//!
//! [`Loop::on_signal`] adds a listener: a callback that runs on the loop
//! (never in the signal handler), once for every delivery of the signal to
//! the process, whichever thread the kernel picked to take it.
//!
//! ```
//! use eventide::signal::Signal;
//!
//! let mut lp = eventide::Loop::new()?;
//! let listener = lp.on_signal(Signal::USR2, |lp, me| {
//!     println!("got {}", me.signal());
//!     me.remove(lp); // as Node's `process.once`
//! })?;
//! // Listeners do not keep the loop alive (as in Node): this one does.
//! listener.set_ref(&mut lp, true);
//! // SAFETY: raise(3) sends the signal to this thread.
//! unsafe { libc::raise(libc::SIGUSR2) };
//! lp.run()?;
//! # Ok::<(), eventide::Error>(())
//! ```
//!
//! The rules, as Node's:
//! - Several listeners per signal and per loop, and several loops (on
//!   several threads) in one process: every listener of every loop hears
//!   every delivery, once, on its own loop's thread, in the poll phase.
//!   One loop's listeners run in the order they were added.
//! - A listener does not keep the loop alive (Node unreferences its
//!   signal handles); [`SignalListener::set_ref`] makes one do so (what
//!   libuv's `uv_signal_start` does by default).
//! - While a signal has a listener in any loop, its default action is off
//!   (a Ctrl-C no longer ends the program); when the last listener of the
//!   signal goes, in every loop, the disposition it had before comes back:
//!   a second Ctrl-C after a listener that removed itself ends the program.
//! - `SIGKILL` and `SIGSTOP` cannot be listened to (`uv_signal_start
//!   EINVAL`, as Node); nor, unlike Node, can `SIGSEGV`, `SIGBUS`, `SIGFPE`
//!   and `SIGILL`, whose handler would return to the faulting instruction
//!   forever.
//! - Deliveries are never merged by eventide: a listener runs as many
//!   times as the process took the signal. The kernel merges a standard
//!   signal sent while the same signal is already pending (not yet taken
//!   by a thread), as POSIX allows; real-time signals queue.
//!
//! A listener removed (by itself or another) does not run again, not even
//! for a delivery whose other listeners are still running; a listener
//! added while a delivery is being handed out hears the next one. (Node's
//! `emit` calls the listeners it had when the delivery began.)
//!
//! How it works and why (a `sigaction` handler and a wake-up descriptor
//! per loop, not `signalfd`): `docs/process.md`.

mod dispatch;

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::io;
use std::rc::Rc;

use eventide_reactor::{Completion, Interest, Op, Token};

use crate::event_loop::Loop;
use crate::slab::{Slab, SlotId};
use crate::{Error, Result};

pub(crate) use dispatch::ignore_sigpipe;

/// A signal number, with the names of the common ones.
///
/// ```
/// use eventide::signal::Signal;
/// assert_eq!(Signal::INT.to_string(), "SIGINT");
/// assert_eq!(Signal::from_name("SIGTERM"), Some(Signal::TERM));
/// assert_eq!(Signal::from_raw(libc::SIGHUP), Signal::HUP);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Signal(i32);

macro_rules! signals {
    ($($(#[$doc:meta])* $name:ident = $raw:ident;)*) => {
        impl Signal {
            $($(#[$doc])* pub const $name: Signal = Signal(libc::$raw);)*
        }

        /// The named signals, as Node names them.
        const NAMES: &[(Signal, &str)] = &[$((Signal::$name, stringify!($raw))),*];
    };
}

signals! {
    /// `SIGHUP`: the terminal hung up (or a daemon is asked to reload).
    HUP = SIGHUP;
    /// `SIGINT`: Ctrl-C at the terminal.
    INT = SIGINT;
    /// `SIGQUIT`: Ctrl-\ at the terminal.
    QUIT = SIGQUIT;
    /// `SIGILL` (it cannot be listened to).
    ILL = SIGILL;
    /// `SIGTRAP`.
    TRAP = SIGTRAP;
    /// `SIGABRT`.
    ABRT = SIGABRT;
    /// `SIGBUS` (it cannot be listened to).
    BUS = SIGBUS;
    /// `SIGFPE` (it cannot be listened to).
    FPE = SIGFPE;
    /// `SIGKILL` (no process can catch it).
    KILL = SIGKILL;
    /// `SIGUSR1`, for the program's own use.
    USR1 = SIGUSR1;
    /// `SIGSEGV` (it cannot be listened to).
    SEGV = SIGSEGV;
    /// `SIGUSR2`, for the program's own use.
    USR2 = SIGUSR2;
    /// `SIGPIPE`: a write to a pipe or socket without a reader (ignored
    /// once a loop exists: such writes fail with `EPIPE`).
    PIPE = SIGPIPE;
    /// `SIGALRM`.
    ALRM = SIGALRM;
    /// `SIGTERM`: the polite request to end (what `kill` sends).
    TERM = SIGTERM;
    /// `SIGCHLD`: a child process stopped or ended.
    CHLD = SIGCHLD;
    /// `SIGCONT`.
    CONT = SIGCONT;
    /// `SIGSTOP` (no process can catch it).
    STOP = SIGSTOP;
    /// `SIGTSTP`: Ctrl-Z at the terminal.
    TSTP = SIGTSTP;
    /// `SIGTTIN`.
    TTIN = SIGTTIN;
    /// `SIGTTOU`.
    TTOU = SIGTTOU;
    /// `SIGURG`.
    URG = SIGURG;
    /// `SIGXCPU`.
    XCPU = SIGXCPU;
    /// `SIGXFSZ`.
    XFSZ = SIGXFSZ;
    /// `SIGVTALRM`.
    VTALRM = SIGVTALRM;
    /// `SIGPROF`.
    PROF = SIGPROF;
    /// `SIGWINCH`: the terminal's window size changed.
    WINCH = SIGWINCH;
    /// `SIGIO`.
    IO = SIGIO;
    /// `SIGSYS`.
    SYS = SIGSYS;
}

impl Signal {
    /// The signal numbered `raw` on this system (any number: one that is
    /// no signal is refused by [`Loop::on_signal`]).
    pub const fn from_raw(raw: i32) -> Signal {
        Signal(raw)
    }

    /// The signal's number on this system.
    pub const fn as_raw(self) -> i32 {
        self.0
    }

    /// The signal's name as Node spells it (`"SIGINT"`), if it has one
    /// here.
    pub fn name(self) -> Option<&'static str> {
        NAMES.iter().find(|(s, _)| *s == self).map(|(_, n)| *n)
    }

    /// The signal named `name` (`"SIGINT"`, as Node's `process.on`).
    pub fn from_name(name: &str) -> Option<Signal> {
        NAMES.iter().find(|(_, n)| *n == name).map(|(s, _)| *s)
    }
}

impl fmt::Display for Signal {
    /// The name (`SIGINT`), or `signal 40` for one without a name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "signal {}", self.0),
        }
    }
}

impl fmt::Debug for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self} ({})", self.0)
    }
}

/// A signal listener's handle ([`Loop::on_signal`]): small, `Copy`, and
/// safe to keep after the listener is removed (it then names nothing: a
/// no-op). A key used with another loop than the one that made it names
/// nothing there either.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SignalListener {
    slot: SlotId,
    loop_id: u32,
    signal: Signal,
}

type Callback = Box<dyn FnMut(&mut Loop, SignalListener)>;

/// One loop's listeners: in the loop's I/O state (`Io::signals`), shared
/// (`Rc`) so that a borrow can be held while the loop submits.
pub(crate) type Table = Rc<RefCell<Listeners>>;

/// One listener.
struct Entry {
    signal: Signal,
    /// `None` while it runs.
    callback: Option<Callback>,
    referenced: bool,
}

/// One signal this loop listens to.
struct Listened {
    /// The delivery count this loop has handed out up to.
    seen: u32,
    /// Its listeners, in the order they run: the loop's own (internal)
    /// ones first, then the program's, each in the order added.
    order: Vec<SlotId>,
    /// How many of `order` are internal (at its front).
    internal: usize,
}

/// One loop's listeners, its waker and its wait.
#[derive(Default)]
pub(crate) struct Listeners {
    entries: Slab<Entry>,
    listened: BTreeMap<i32, Listened>,
    /// Taken with the first listener, given back when the loop goes.
    waker: Option<&'static dispatch::Waker>,
    /// The readable wait on the waker, while there are listeners.
    wait: Option<Token>,
    /// Listeners that keep the loop alive.
    referenced: usize,
    /// Calls still to make, in order (a listener once per delivery).
    /// Filled from the counts before any of them runs.
    queue: VecDeque<SlotId>,
    /// Whether a deferred drain of `queue` is waiting (after a panic
    /// left one half done).
    drain_deferred: bool,
}

impl Drop for Listeners {
    fn drop(&mut self) {
        let Some(waker) = self.waker.take() else {
            return;
        };
        for &signal in self.listened.keys() {
            waker.unlisten(signal);
            dispatch::release(signal);
        }
        waker.give_back();
    }
}

fn table_of(lp: &Loop) -> Table {
    Rc::clone(&lp.io.signals)
}

impl Loop {
    /// Adds a listener of `signal` (Node's `process.on(signal, f)`):
    /// `listener` runs on this loop, in the poll phase, once for each
    /// delivery of the signal to the process from now on, with the
    /// listener's handle (to remove it, as Node's `process.once` does, or
    /// to read [`SignalListener::signal`]). It does not keep the loop
    /// alive unless [`SignalListener::set_ref`] says so.
    ///
    /// While the signal has a listener, its default action (ending the
    /// process, for most) does not happen; the last listener's removal
    /// brings back the disposition the signal had before. See the
    /// [module documentation](crate::signal).
    ///
    /// # Errors
    ///
    /// `uv_signal_start EINVAL` (code `EINVAL`, as Node) for `SIGKILL`,
    /// `SIGSTOP`, `SIGSEGV`, `SIGBUS`, `SIGFPE`, `SIGILL` and numbers that
    /// are no signal here; the system's error if the handler or the
    /// wake-up descriptor cannot be set up (`EMFILE`, say).
    #[track_caller]
    pub fn on_signal(
        &mut self,
        signal: Signal,
        listener: impl FnMut(&mut Loop, SignalListener) + 'static,
    ) -> Result<SignalListener> {
        let site = std::panic::Location::caller();
        let added = self.add_signal_listener(signal, Box::new(listener), false)?;
        let id = crate::slab::raw(added.slot);
        self.remember_site(crate::diag::Kind::Signal, id, site);
        Ok(added)
    }

    /// [`Loop::on_signal`] for eventide's own use (the process module's
    /// `SIGCHLD`): it runs before the program's listeners of the signal,
    /// never keeps the loop alive, and counts as a listener for the
    /// disposition like any other (so a program's last listener of the
    /// signal leaves it handled while this one is there).
    pub(crate) fn on_signal_internal(
        &mut self,
        signal: Signal,
        listener: impl FnMut(&mut Loop, SignalListener) + 'static,
    ) -> Result<SignalListener> {
        self.add_signal_listener(signal, Box::new(listener), true)
    }

    fn add_signal_listener(
        &mut self,
        signal: Signal,
        callback: Callback,
        internal: bool,
    ) -> Result<SignalListener> {
        let failed = |e| Error::net("uv_signal_start", None, e);
        let raw = signal.as_raw();
        if dispatch::refused(raw) {
            return Err(failed(io::Error::from_raw_os_error(libc::EINVAL)));
        }
        let table = table_of(self);
        let mut listeners = table.borrow_mut();
        let waker = match listeners.waker {
            Some(waker) => waker,
            None => {
                let waker = dispatch::Waker::take().map_err(failed)?;
                listeners.waker = Some(waker);
                waker
            }
        };
        if let std::collections::btree_map::Entry::Vacant(vacant) = listeners.listened.entry(raw) {
            // From here on the handler wakes this loop for the signal;
            // deliveries counted from here on are this loop's.
            waker.listen(raw);
            let seen = dispatch::delivered(raw);
            if let Err(error) = dispatch::acquire(raw) {
                waker.unlisten(raw);
                return Err(failed(error));
            }
            vacant.insert(Listened {
                seen,
                order: Vec::new(),
                internal: 0,
            });
        }
        let slot = listeners.entries.insert(Entry {
            signal,
            callback: Some(callback),
            referenced: false,
        });
        let listened = listeners.listened.get_mut(&raw).expect("inserted above");
        if internal {
            listened.order.insert(listened.internal, slot);
            listened.internal += 1;
        } else {
            listened.order.push(slot);
        }
        drop(listeners);
        self.watch_signals();
        Ok(SignalListener {
            slot,
            loop_id: self.id,
            signal,
        })
    }

    /// Submits the readable wait on the waker if there are listeners and
    /// none is in flight, and makes it count for liveness as the
    /// listeners say.
    fn watch_signals(&mut self) {
        let table = table_of(self);
        let mut listeners = table.borrow_mut();
        let counted = listeners.referenced > 0;
        if let Some(token) = listeners.wait {
            self.io.set_counted(token, counted);
            return;
        }
        let Some(waker) = listeners.waker else {
            return;
        };
        if listeners.entries.len() == 0 {
            return;
        }
        let op = Op::poll(waker.fd(), Interest::READABLE);
        match self.submit_io(op, on_wake) {
            Ok(token) => {
                listeners.wait = Some(token);
                self.io.set_counted(token, counted);
            }
            // The reactor refused a poll on an eventfd: nothing a retry
            // would fix; the listeners stay, deaf.
            Err(refused) => log::error!("eventide: cannot wait for signals: {}", refused.error),
        }
    }
}

/// The waker is readable: some signal was delivered.
fn on_wake(lp: &mut Loop, c: Completion) {
    {
        let table = table_of(lp);
        let mut listeners = table.borrow_mut();
        if listeners.wait != Some(c.token) {
            return; // Cancelled when the last listener went.
        }
        listeners.wait = None;
        if let Err(error) = &c.result {
            log::warn!("eventide: the wait for signals failed: {error}");
        }
        let Some(waker) = listeners.waker else {
            return;
        };
        // Drained before the counts are read: a delivery whose count is
        // missed below writes after this, and wakes the loop again.
        waker.drain();
        let Listeners {
            listened, queue, ..
        } = &mut *listeners;
        for (&raw, signal) in listened.iter_mut() {
            let now = dispatch::delivered(raw);
            let new = now.wrapping_sub(signal.seen);
            signal.seen = now;
            for _ in 0..new {
                queue.extend(signal.order.iter().copied());
            }
        }
    }
    // Watching again before any listener runs: one that panics leaves the
    // loop listening.
    lp.watch_signals();
    run_queue(lp);
}

/// Runs the queued calls in order, each listener taken out of its entry
/// while it runs; a removed listener is skipped. A panic (or a failure)
/// leaves the rest queued, to run in the next pending phase.
fn run_queue(lp: &mut Loop) {
    let table = table_of(lp);
    loop {
        let (slot, signal, mut callback) = {
            let mut listeners = table.borrow_mut();
            let Some(slot) = listeners.queue.pop_front() else {
                return;
            };
            let Some(entry) = listeners.entries.get_mut(slot) else {
                continue; // Removed.
            };
            let Some(callback) = entry.callback.take() else {
                continue; // Running (cannot happen: the loop is not re-entrant).
            };
            (slot, entry.signal, callback)
        };
        let me = SignalListener {
            slot,
            loop_id: lp.id,
            signal,
        };
        lp.note_call_of(crate::diag::Kind::Signal, crate::slab::raw(me.slot));
        let outcome = lp.catching(|lp: &mut Loop| callback(lp, me));
        let removed = {
            let mut listeners = table.borrow_mut();
            match listeners.entries.get_mut(slot) {
                Some(entry) if entry.callback.is_none() => {
                    entry.callback = Some(callback);
                    None
                }
                // Removed by itself (or replaced): dropped below, with
                // no borrow held (its drop is the program's code).
                _ => Some(callback),
            }
        };
        drop(removed);
        if let Err(payload) = outcome.and_then(|()| lp.drain_ticks_catching()) {
            let mut listeners = table.borrow_mut();
            if !listeners.queue.is_empty() && !listeners.drain_deferred {
                listeners.drain_deferred = true;
                drop(listeners);
                lp.defer(|lp| {
                    table_of(lp).borrow_mut().drain_deferred = false;
                    run_queue(lp);
                });
            } else {
                drop(listeners);
            }
            lp.panicked(payload);
        }
    }
}

impl SignalListener {
    /// The signal it listens to.
    pub fn signal(self) -> Signal {
        self.signal
    }

    /// Removes the listener (Node's `process.removeListener`): it does
    /// not run again, not even for a delivery being handed out now. The
    /// signal's last listener over all loops brings its previous
    /// disposition back. From anywhere, its own call included. Returns
    /// `false` if it was already removed (or is another loop's).
    pub fn remove(self, lp: &mut Loop) -> bool {
        if self.loop_id != lp.id {
            return false;
        }
        let table = table_of(lp);
        let mut listeners = table.borrow_mut();
        let Some(entry) = listeners.entries.remove(self.slot) else {
            return false;
        };
        if entry.referenced {
            listeners.referenced -= 1;
        }
        let raw = entry.signal.as_raw();
        let listened = listeners
            .listened
            .get_mut(&raw)
            .expect("a listener's signal is listened to");
        let at = listened
            .order
            .iter()
            .position(|&s| s == self.slot)
            .expect("a listener is in its signal's order");
        listened.order.remove(at);
        if at < listened.internal {
            listened.internal -= 1;
        }
        if listened.order.is_empty() {
            listeners.listened.remove(&raw);
            if let Some(waker) = listeners.waker {
                waker.unlisten(raw);
            }
            dispatch::release(raw);
        }
        let counted = listeners.referenced > 0;
        let last = listeners.entries.len() == 0;
        let wait = if last {
            listeners.wait.take()
        } else {
            listeners.wait
        };
        drop(listeners);
        if let Some(token) = wait {
            lp.io.set_counted(token, counted);
            if last {
                // Its completion finds `wait` no longer naming it.
                lp.reactor.cancel(token);
            }
        }
        // The program's closure goes last, with no borrow held.
        drop(entry);
        true
    }

    /// Whether the listener keeps the loop alive (Node's `ref`/`unref`
    /// of the handle behind `process.on`, libuv's `uv_ref`/`uv_unref`):
    /// `false` by default, as in Node. An unreferenced listener still
    /// runs while something else keeps the loop running. Returns `false`
    /// if the listener was removed.
    pub fn set_ref(self, lp: &mut Loop, referenced: bool) -> bool {
        if self.loop_id != lp.id {
            return false;
        }
        let table = table_of(lp);
        let mut listeners = table.borrow_mut();
        let Some(entry) = listeners.entries.get_mut(self.slot) else {
            return false;
        };
        if entry.referenced != referenced {
            entry.referenced = referenced;
            if referenced {
                listeners.referenced += 1;
            } else {
                listeners.referenced -= 1;
            }
        }
        drop(listeners);
        lp.watch_signals();
        true
    }

    /// [`SignalListener::set_ref`] with `false`.
    pub fn unref(self, lp: &mut Loop) -> bool {
        self.set_ref(lp, false)
    }

    /// Whether the listener keeps the loop alive (libuv's `uv_has_ref`);
    /// `false` once removed.
    pub fn has_ref(self, lp: &Loop) -> bool {
        self.loop_id == lp.id
            && lp
                .io
                .signals
                .borrow()
                .entries
                .get(self.slot)
                .is_some_and(|e| e.referenced)
    }

    /// Whether the listener is still there (not removed).
    pub fn is_active(self, lp: &Loop) -> bool {
        self.loop_id == lp.id && lp.io.signals.borrow().entries.get(self.slot).is_some()
    }
}

/// The internal consumer (the process module's `SIGCHLD`) beside the
/// program's listeners. Here, not in `tests/signal_*.rs`, because it is
/// crate-private; `SIGCHLD`'s default action is to ignore, so the other
/// unit tests of this binary are not disturbed by it.
impl Loop {
    /// The signal listeners, for [`Loop::handles`] (the loop's own, which
    /// never keep it alive, included).
    pub(crate) fn list_signals(&self, listing: &mut crate::diag::Listing) {
        let table = table_of(self);
        let listeners = table.borrow();
        for (slot, entry) in listeners.entries.iter() {
            let id = crate::slab::raw(slot);
            let kind = crate::diag::Kind::Signal;
            listing.add(
                kind,
                id,
                entry.referenced,
                entry.referenced,
                self.site_of(kind, id),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::time::Duration;

    use eventide_reactor::{BackendChoice, BackendKind};

    use super::Signal;
    use crate::event_loop::Loop;

    fn sigchld_handler() -> libc::sighandler_t {
        // SAFETY: a null new action only queries; `old` is a live local.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            assert_eq!(
                libc::sigaction(libc::SIGCHLD, std::ptr::null(), &mut old),
                0
            );
            old.sa_sigaction
        }
    }

    /// An internal SIGCHLD listener runs before the program's (added
    /// earlier), never keeps the loop alive, and keeps the signal handled
    /// when the program's last listener goes; the program's listener hears
    /// every delivery as it would alone.
    fn internal_consumer_beside_user_listeners(backend: BackendKind) {
        // One at a time: the three share SIGCHLD's disposition.
        static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let Ok(mut lp) = Loop::builder()
            .backend(BackendChoice::Only(backend))
            .build()
        else {
            eprintln!("skipped on {backend}");
            return;
        };
        let log = Rc::new(RefCell::new(Vec::new()));
        let l = Rc::clone(&log);
        let user = lp
            .on_signal(Signal::CHLD, move |lp, me| {
                l.borrow_mut().push("user");
                me.remove(lp);
            })
            .unwrap();
        user.set_ref(&mut lp, true);
        let l = Rc::clone(&log);
        let internal = lp
            .on_signal_internal(Signal::CHLD, move |_, _| l.borrow_mut().push("internal"))
            .unwrap();
        assert!(!internal.has_ref(&lp));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let watchdog = lp.set_timeout(Duration::from_secs(10), |_| panic!("no SIGCHLD"));
        lp.unref_timer(watchdog);
        // Ends when the user's listener removes itself: the internal one
        // keeps nothing alive.
        lp.run().unwrap();
        assert!(child.wait().unwrap().success());
        let log = log.borrow().clone();
        assert_eq!(log[..2], ["internal", "user"], "{log:?}");
        assert_eq!(log.iter().filter(|s| **s == "user").count(), 1);
        assert_ne!(
            sigchld_handler(),
            libc::SIG_DFL,
            "the internal listener keeps it"
        );
        assert!(internal.remove(&mut lp));
        assert_eq!(sigchld_handler(), libc::SIG_DFL);
    }

    #[test]
    fn internal_consumer_beside_user_listeners_on_uring() {
        internal_consumer_beside_user_listeners(BackendKind::Uring);
    }

    #[test]
    fn internal_consumer_beside_user_listeners_on_epoll() {
        internal_consumer_beside_user_listeners(BackendKind::Epoll);
    }

    #[test]
    fn internal_consumer_beside_user_listeners_on_poll() {
        internal_consumer_beside_user_listeners(BackendKind::Poll);
    }
}
