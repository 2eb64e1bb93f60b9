//! Node's `AbortController` and `AbortSignal`: one signal cancels many
//! operations, callback-style or awaited.
//!
//! ```
//! use std::time::Duration;
//! use eventide::abort::AbortController;
//! use eventide::task::{self, TaskError};
//!
//! let mut lp = eventide::Loop::new()?;
//! let controller = AbortController::new();
//! let signal = controller.signal();
//! lp.set_timeout(Duration::from_millis(5), move |lp| controller.abort(lp));
//! let slept = lp.block_on(signal.run(task::sleep(Duration::from_secs(60))))?;
//! let error = slept.unwrap_err();
//! assert_eq!(error.to_string(), "The operation was aborted");
//! assert_eq!(TaskError::of(&error), Some(&TaskError::Aborted));
//! # Ok::<(), eventide::Error>(())
//! ```
//!
//! - [`AbortController::abort`] runs the signal's listeners at once, in
//!   the order they were added (Node dispatches its `'abort'` event
//!   synchronously); each runs once.
//! - An operation given an already-aborted signal calls back with the
//!   abort error from the next-tick queue: never inside the call that
//!   scheduled it. (Node 20's `fs.readFile` calls back synchronously
//!   then; eventide does not.)
//! - [`AbortSignal::run`] wraps any future of the loop: once the signal
//!   is aborted the future is dropped, which cancels its operation as a
//!   drop does (a timer cleared, queued work cancelled, a connect's
//!   socket closed, an io_uring file read or write cancelled in the
//!   kernel; what the kernel still holds completes into the loop's
//!   buffers, its result dropped), and the wrapper resolves to the abort
//!   error.
//! - [`AbortSignal::read`] and [`AbortSignal::write`] are the callback
//!   forms for files: on io_uring the abort cancels the operation in the
//!   kernel (`IORING_OP_ASYNC_CANCEL`) and the callback runs once the
//!   kernel's completion is back, with the abort error and the buffer.
//! - [`AbortSignal::guard`] does the same for the callback API: the
//!   callback runs once, with the operation's result or, if the signal
//!   aborts first, with the abort error.
//!
//! The error is [`TaskError::Aborted`]
//! inside an [`Error`]: `The operation was aborted`, code
//! `ABORT_ERR` (Node's `AbortError`).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::fs::File;
use crate::task::TaskError;
use crate::{Error, Loop, Result};

type Listener = Box<dyn FnOnce(&mut Loop)>;

/// What calls off an operation when its signal aborts.
type Canceller = Box<dyn FnOnce(&mut Loop)>;

/// The completion [`AbortSignal::guard`] hands the operation it starts.
pub type Done<T> = Box<dyn FnOnce(&mut Loop, Result<T>)>;

#[derive(Default)]
struct SignalState {
    aborted: Cell<bool>,
    /// The listeners still waiting, by id: ids only grow, so the map's
    /// order is the order they were added (Node's), and one that ran or
    /// was removed leaves nothing behind (a signal that outlives many
    /// operations holds only those still pending, as Node's does).
    listeners: RefCell<BTreeMap<u64, Listener>>,
    /// The next listener's id.
    next_listener: Cell<u64>,
    /// The wakers of the [`Abortable`] futures waiting on it, by future.
    wakers: RefCell<BTreeMap<u64, Waker>>,
    /// The next [`Abortable`]'s key.
    next_waiter: Cell<u64>,
}

/// Node's `AbortController`: makes a signal and aborts it.
#[derive(Default)]
pub struct AbortController {
    signal: AbortSignal,
}

impl fmt::Debug for AbortController {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AbortController")
            .field("aborted", &self.signal.aborted())
            .finish()
    }
}

impl AbortController {
    /// A controller with a fresh signal.
    pub fn new() -> AbortController {
        AbortController::default()
    }

    /// Its signal (a cheap clone), to hand to operations.
    pub fn signal(&self) -> AbortSignal {
        self.signal.clone()
    }

    /// Aborts the signal: its listeners run now, in order, once; the
    /// futures waiting on it are woken. A second abort does nothing.
    pub fn abort(&self, lp: &mut Loop) {
        self.signal.abort(lp);
    }
}

/// Node's `AbortSignal`: a cheap, cloneable handle that operations watch.
/// It lives on the loop thread (not `Send`).
#[derive(Clone, Default)]
pub struct AbortSignal(Rc<SignalState>);

impl fmt::Debug for AbortSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AbortSignal")
            .field("aborted", &self.aborted())
            .finish()
    }
}

/// A listener added with [`AbortSignal::on_abort`], to remove it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListenerId(u64);

/// The abort error: `The operation was aborted`, code `ABORT_ERR`.
pub fn abort_error() -> Error {
    TaskError::Aborted.into()
}

impl AbortSignal {
    /// A signal already aborted (Node's `AbortSignal.abort()`).
    pub fn aborted_signal() -> AbortSignal {
        let signal = AbortSignal::default();
        signal.0.aborted.set(true);
        signal
    }

    /// A signal that aborts after `delay` (Node's `AbortSignal.timeout`,
    /// though with the abort error rather than Node's `TimeoutError`). The
    /// timer is unreferenced: it does not keep the loop alive.
    pub fn timeout(lp: &mut Loop, delay: Duration) -> AbortSignal {
        let signal = AbortSignal::default();
        let s = signal.clone();
        let timer = lp.set_timeout(delay, move |lp| s.abort(lp));
        lp.unref_timer(timer);
        signal
    }

    /// Whether it has been aborted (Node's `signal.aborted`).
    pub fn aborted(&self) -> bool {
        self.0.aborted.get()
    }

    /// The abort error if aborted (Node's `signal.throwIfAborted()`).
    ///
    /// # Errors
    ///
    /// The abort error, once aborted.
    pub fn check(&self) -> Result<()> {
        if self.aborted() {
            Err(abort_error())
        } else {
            Ok(())
        }
    }

    /// Runs `listener` when the signal aborts (Node's
    /// `signal.addEventListener('abort', .., { once: true })`). On a
    /// signal already aborted it runs from the next-tick queue.
    pub fn on_abort(
        &self,
        lp: &mut Loop,
        listener: impl FnOnce(&mut Loop) + 'static,
    ) -> ListenerId {
        let id = self.0.next_listener.get();
        self.0.next_listener.set(id + 1);
        if self.aborted() {
            lp.next_tick(listener);
        } else {
            self.0.listeners.borrow_mut().insert(id, Box::new(listener));
        }
        ListenerId(id)
    }

    /// Removes a listener that has not run; returns whether it was there.
    pub fn remove(&self, id: ListenerId) -> bool {
        self.0.listeners.borrow_mut().remove(&id.0).is_some()
    }

    /// How many listeners wait for the abort (Node's
    /// `events.getEventListeners(signal, 'abort').length`): one per
    /// pending operation started with this signal (a callback operation,
    /// an [`AbortSignal::on_abort`] listener, an [`AbortSignal::run`]
    /// future that has waited), none once they are done (each takes its
    /// listener away as it completes, as Node's operations do), and none
    /// after the abort. A signal that outlives many operations holds
    /// only the pending ones.
    pub fn listener_count(&self) -> usize {
        self.0.listeners.borrow().len() + self.0.wakers.borrow().len()
    }

    fn abort(&self, lp: &mut Loop) {
        if self.0.aborted.replace(true) {
            return;
        }
        for waker in self.0.wakers.take().into_values() {
            waker.wake();
        }
        // One at a time, in the order they were added, the map released:
        // a listener may remove others (added ones run from the next-tick
        // queue, through the aborted path). A listener that panics does
        // not keep the others from running (Node reports a throwing
        // listener as an uncaught exception and goes on to the next):
        // each panic is handed on once all have run, to the panic handler
        // or, without one, out of this call (the first; later ones are
        // dropped with it).
        let mut panics = Vec::new();
        loop {
            let next = self.0.listeners.borrow_mut().pop_first();
            let Some((_, listener)) = next else {
                break;
            };
            if let Err(payload) =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| listener(lp)))
            {
                panics.push(payload);
            }
        }
        for payload in panics {
            lp.panicked(payload);
        }
    }

    /// Calls `callback` once: with the result `start`'s operation gives
    /// its `done`, or with the abort error if the signal aborts first
    /// (from the next-tick queue; the operation's late result is then
    /// dropped). `start` runs now unless the signal is aborted already.
    ///
    /// ```
    /// use eventide::abort::AbortController;
    ///
    /// let mut lp = eventide::Loop::new()?;
    /// let controller = AbortController::new();
    /// controller.signal().guard(
    ///     &mut lp,
    ///     |lp, done| lp.fs().read_file("Cargo.toml", done),
    ///     |_, result| assert_eq!(result.unwrap_err().to_string(), "The operation was aborted"),
    /// );
    /// controller.abort(&mut lp);
    /// lp.run()?;
    /// # Ok::<(), eventide::Error>(())
    /// ```
    pub fn guard<T: 'static>(
        &self,
        lp: &mut Loop,
        start: impl FnOnce(&mut Loop, Done<T>),
        callback: impl FnOnce(&mut Loop, Result<T>) + 'static,
    ) {
        self.guard_cancel(
            lp,
            move |lp, done| {
                start(lp, done);
                None
            },
            callback,
        );
    }

    /// [`AbortSignal::guard`] for an operation that can be called off:
    /// `start` returns what cancels it, which the abort runs after
    /// scheduling the abort error, from the one listener the operation
    /// holds (gone when it completes).
    fn guard_cancel<T: 'static>(
        &self,
        lp: &mut Loop,
        start: impl FnOnce(&mut Loop, Done<T>) -> Option<Canceller>,
        callback: impl FnOnce(&mut Loop, Result<T>) + 'static,
    ) {
        if self.aborted() {
            lp.next_tick(move |lp| callback(lp, Err(abort_error())));
            return;
        }
        let slot: Rc<RefCell<Option<Done<T>>>> = Rc::new(RefCell::new(Some(Box::new(callback))));
        let cancel: Rc<Cell<Option<Canceller>>> = Rc::default();
        let (on_abort, canceller) = (Rc::clone(&slot), Rc::clone(&cancel));
        let id = self.on_abort(lp, move |lp| {
            if let Some(callback) = on_abort.borrow_mut().take() {
                lp.next_tick(move |lp| callback(lp, Err(abort_error())));
            }
            if let Some(cancel) = canceller.take() {
                cancel(lp);
            }
        });
        let signal = self.clone();
        let stop = start(
            lp,
            Box::new(move |lp, result| {
                signal.remove(id);
                if let Some(callback) = slot.borrow_mut().take() {
                    callback(lp, result);
                }
            }),
        );
        // Only while the operation is pending: done already (its `done`
        // ran inside `start`), there is nothing to call off.
        if self.0.listeners.borrow().contains_key(&id.0) {
            cancel.set(stop);
        }
    }

    /// [`Loop::set_timeout`] with this signal: the timer is cleared when
    /// the signal aborts, and `callback` gets the abort error instead
    /// (Node's `timersPromises.setTimeout(ms, value, { signal })`).
    pub fn set_timeout(
        &self,
        lp: &mut Loop,
        delay: Duration,
        callback: impl FnOnce(&mut Loop, Result<()>) + 'static,
    ) {
        self.guard_cancel(
            lp,
            move |lp, done| {
                let mut done = Some(done);
                let timer = lp.set_timeout(delay, move |lp| {
                    if let Some(done) = done.take() {
                        done(lp, Ok(()));
                    }
                });
                Some(Box::new(move |lp: &mut Loop| {
                    lp.clear_timer(timer);
                }))
            },
            callback,
        );
    }

    /// [`Loop::queue_work`] with this signal: work still queued when the
    /// signal aborts is cancelled ([`Loop::cancel_work`]); `after` gets
    /// the abort error (a job already running runs to its end, its result
    /// dropped).
    pub fn queue_work<R: Send + 'static>(
        &self,
        lp: &mut Loop,
        work: impl FnOnce() -> R + Send + 'static,
        after: impl FnOnce(&mut Loop, Result<R>) + 'static,
    ) {
        self.guard_cancel(
            lp,
            move |lp, done| {
                let id = lp.queue_work(work, done);
                Some(Box::new(move |lp: &mut Loop| {
                    let _ = lp.cancel_work(id);
                }))
            },
            after,
        );
    }

    /// [`Fs::read`](crate::fs::Fs::read) with this signal: a read still
    /// in flight when the signal aborts is cancelled. On io_uring the
    /// kernel is asked to end it (`IORING_OP_ASYNC_CANCEL`): the buffer
    /// stays the kernel's until its completion (`ECANCELED`, or the
    /// read's own end if it won the race) comes back, and only then does
    /// `callback` run, once, with the abort error (`The operation was
    /// aborted`, `ABORT_ERR`) and the buffer, at its length before the
    /// read (bytes a read got before the cancel took effect are dropped,
    /// as Node drops an aborted read's). On the pool a running system
    /// call cannot be interrupted: the callback gets the abort error when
    /// it returns. An already-aborted signal starts nothing and calls
    /// back from the next-tick queue.
    pub fn read(
        &self,
        lp: &mut Loop,
        file: File,
        buf: Vec<u8>,
        position: Option<u64>,
        callback: impl FnOnce(&mut Loop, Result<usize>, Vec<u8>) + 'static,
    ) {
        self.transfer(lp, false, file, buf, position, callback);
    }

    /// [`Fs::write`](crate::fs::Fs::write) with this signal, cancelled as
    /// [`AbortSignal::read`] is: the buffer comes back with the abort
    /// error once the kernel (or the pool) is done with it. Some of the
    /// bytes may have been written when the abort won the race.
    pub fn write(
        &self,
        lp: &mut Loop,
        file: File,
        buf: Vec<u8>,
        position: Option<u64>,
        callback: impl FnOnce(&mut Loop, Result<usize>, Vec<u8>) + 'static,
    ) {
        self.transfer(lp, true, file, buf, position, callback);
    }

    fn transfer(
        &self,
        lp: &mut Loop,
        write: bool,
        file: File,
        buf: Vec<u8>,
        position: Option<u64>,
        callback: impl FnOnce(&mut Loop, Result<usize>, Vec<u8>) + 'static,
    ) {
        if self.aborted() {
            lp.next_tick(move |lp| callback(lp, Err(abort_error()), buf));
            return;
        }
        let len = buf.len();
        let listener: Rc<Cell<Option<ListenerId>>> = Rc::default();
        let signal = self.clone();
        let on_done = Rc::clone(&listener);
        let token = lp
            .fs()
            .transfer(write, file, buf, position, move |lp, result, mut buf| {
                if let Some(id) = on_done.take() {
                    signal.remove(id);
                }
                if signal.aborted() {
                    if !write {
                        buf.truncate(len);
                    }
                    return callback(lp, Err(abort_error()), buf);
                }
                callback(lp, result, buf);
            });
        // On the ring: the abort cancels it in the kernel. The listener
        // goes at the completion, so a later abort never names a token
        // that is done (a stale token would find nothing anyway).
        if let Some(token) = token {
            listener.set(Some(self.on_abort(lp, move |lp| {
                lp.cancel_io(token);
            })));
        }
    }

    /// Runs `future` until it completes or the signal aborts: then the
    /// future is dropped (its operation cancelled as a drop does) and
    /// this resolves to the abort error. An already-aborted signal never
    /// polls the future.
    pub fn run<F: Future>(&self, future: F) -> Abortable<F> {
        Abortable {
            signal: self.clone(),
            future: Some(Box::pin(future)),
            waiting: None,
        }
    }
}

/// The future of [`AbortSignal::run`].
#[must_use = "futures do nothing unless awaited"]
pub struct Abortable<F> {
    signal: AbortSignal,
    future: Option<Pin<Box<F>>>,
    /// Its entry among the signal's wakers, while it waits.
    waiting: Option<u64>,
}

impl<F> Abortable<F> {
    /// Takes its waker off the signal (done, or dropped).
    fn stop_waiting(&mut self) {
        if let Some(key) = self.waiting.take() {
            self.signal.0.wakers.borrow_mut().remove(&key);
        }
    }
}

impl<F> Drop for Abortable<F> {
    fn drop(&mut self) {
        self.stop_waiting();
    }
}

impl<F> fmt::Debug for Abortable<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Abortable")
            .field("signal", &self.signal)
            .finish()
    }
}

impl<F: Future> Future for Abortable<F> {
    type Output = Result<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.signal.aborted() {
            self.future = None;
            self.stop_waiting();
            return Poll::Ready(Err(abort_error()));
        }
        let Some(future) = self.future.as_mut() else {
            panic!("eventide: Abortable polled after it completed");
        };
        if let Poll::Ready(value) = future.as_mut().poll(cx) {
            self.future = None;
            self.stop_waiting();
            return Poll::Ready(Ok(value));
        }
        let key = match self.waiting {
            Some(key) => key,
            None => {
                let key = self.signal.0.next_waiter.get();
                self.signal.0.next_waiter.set(key + 1);
                self.waiting = Some(key);
                key
            }
        };
        let mut wakers = self.signal.0.wakers.borrow_mut();
        match wakers.get_mut(&key) {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            Some(waker) => waker.clone_from(cx.waker()),
            None => {
                wakers.insert(key, cx.waker().clone());
            }
        }
        Poll::Pending
    }
}
