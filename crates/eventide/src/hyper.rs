//! hyper 1.x on the loop (the `hyper` feature): hyper's runtime traits
//! for eventide's sockets, tasks and timers.
//!
//! hyper is written against three small traits instead of a runtime; this
//! module gives each an eventide form:
//!
//! - **I/O**: [`HyperStream`] is [`hyper::rt::Read`] and
//!   [`hyper::rt::Write`] over a loop [`Stream`] (TCP or Unix).
//! - **Executor**: [`LocalExecutor`] spawns what hyper hands it as a task
//!   of the loop ([`Loop::spawn_local`]); the futures need not be `Send`.
//! - **Timer**: [`LoopTimer`] is a [`hyper::rt::Timer`] whose sleeps are
//!   loop timers ([`Loop::set_timeout`]).
//!
//! An HTTP/1.1 server is then a task per connection:
//!
//! ```no_run
//! use std::convert::Infallible;
//! use eventide::hyper::{HyperStream, LoopTimer};
//! use eventide::net::ListenOptions;
//! use eventide::task::{net, with_loop};
//! use hyper::server::conn::http1;
//! use hyper::service::service_fn;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut lp = eventide::Loop::new()?;
//! let mut incoming =
//!     net::tcp_listen(&mut lp, "127.0.0.1:8080".parse()?, ListenOptions::default())?;
//! let timer = LoopTimer::new(&lp);
//! lp.block_on(async move {
//!     while let Ok(stream) = incoming.accept().await {
//!         let timer = timer.clone();
//!         with_loop(|lp| {
//!             lp.spawn_local(async move {
//!                 let service = service_fn(|_req| async {
//!                     Ok::<_, Infallible>(hyper::Response::new("Hello, World!".to_string()))
//!                 });
//!                 let served = http1::Builder::new()
//!                     .timer(timer)
//!                     .serve_connection(HyperStream::new(stream), service)
//!                     .await;
//!                 if let Err(error) = served {
//!                     eprintln!("connection: {error}");
//!                 }
//!             })
//!         });
//!     }
//! })?;
//! # Ok(())
//! # }
//! ```
//!
//! `examples/http_server.rs` adds a graceful stop on SIGTERM, and the
//! guide's async chapter says more. hyper's HTTP/1 server needs no
//! executor at all (a connection is one future); its HTTP/2 server and
//! its clients' connections take one, and [`LocalExecutor`] is what hyper
//! calls a local (`!Send`) executor.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::handle::Shared;
use crate::net::Stream;
use crate::task::stream_io::{self, StreamIo, set_waker, to_io};
use crate::task::{try_with_loop, with_loop};
use crate::{BackendKind, Loop, TimerId};

/// hyper's [`Read`](hyper::rt::Read) and [`Write`](hyper::rt::Write) over
/// a loop [`Stream`] (a `TcpStream` or a `UnixStream`), for hyper's
/// connections (`serve_connection`, `handshake`). It must be polled by a
/// task of the stream's loop.
///
/// - **Reading** starts at the first read. What the loop reads waits in
///   a buffer until hyper takes it (copied straight into hyper's own
///   buffer); past [`HyperStream::READ_HIGH_WATER`] bytes buffered,
///   reading stops until hyper has taken them (backpressure towards the
///   peer). The peer's end is a read of nothing; a reset is an error.
/// - **Writing** sends what the kernel takes at once
///   ([`Stream::try_write`], while nothing is queued; not on io_uring,
///   where a queued send joins the loop's next submission) and queues the rest
///   on the stream ([`Stream::write`]), returning at once while the write
///   queue is below its high-water mark; at the mark, a write waits for
///   the queue's drain. hyper gathers a response (head and body) in its
///   own buffer and writes it in one call (this type is not "write
///   vectored").
/// - **Flushing** is done once the bytes are in the kernel or the loop's
///   write queue:
///   from there the loop sends them, in order, whatever happens to this
///   value (its drop ends the stream after them), as the kernel sends
///   what a socket's buffer holds; waiting for each send's completion
///   would cost every response a wake-up and changes nothing hyper can
///   observe. A send that fails destroys the stream: the next read,
///   write, flush or shutdown reports its error (reading starts at the
///   first write at the latest, so that the failure is heard).
/// - **Shutting down** waits until the queue is out, then shuts the
///   writing side ([`Stream::shutdown`]).
/// - **Dropping** it after a completed shutdown (hyper's orderly close of
///   a connection) closes the stream: the FIN is out, nothing is left to
///   send. Dropped otherwise, it ends the stream gracefully
///   ([`Stream::end`]: what is queued still goes out, then the FIN).
///   [`HyperStream::close`] destroys it at once instead.
pub struct HyperStream {
    io: StreamIo,
}

impl std::fmt::Debug for HyperStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HyperStream")
            .field("stream", &self.io.stream())
            .finish()
    }
}

impl HyperStream {
    /// Bytes buffered past which reading pauses (64 KiB).
    pub const READ_HIGH_WATER: usize = stream_io::READ_HIGH_WATER;

    /// Wraps `stream`, which must not have another reader
    /// ([`Stream::read_start`] replaces its callbacks).
    pub fn new(stream: impl Into<Stream>) -> HyperStream {
        HyperStream {
            io: StreamIo::new(stream.into()),
        }
    }

    /// The stream, for the callback API.
    pub fn stream(&self) -> Stream {
        self.io.stream()
    }

    /// Destroys the stream at once (Node's `socket.destroy()`): queued
    /// writes are dropped.
    pub fn close(self) {
        self.io.close();
    }

    fn read_into(
        &self,
        cx: &Context<'_>,
        buf: &mut hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        self.io
            .poll_read(cx, |bytes| {
                let n = buf.remaining().min(bytes.len());
                buf.put_slice(&bytes[..n]);
                n
            })
            .map_ok(|_| ())
    }

    fn write_some(&self, cx: &Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let stream = self.io.stream();
        let started = {
            let io = self.io.state().borrow();
            if let Some(Err(error)) = &io.end {
                return Poll::Ready(Err(to_io(error)));
            }
            io.started
        };
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        with_loop(|lp| {
            if !started {
                // The reader is what hears of a failed send (below).
                self.io.start(lp);
            }
            // Straight to the kernel while nothing is queued (libuv's
            // `uv_try_write`, as Node's `socket.write` does first): no
            // copy, no queued request. `try_write` refuses (EAGAIN)
            // while queued bytes are still going out, so nothing
            // overtakes them (and a queue at its high-water mark is
            // never passed: nothing is sent then). Its errors change
            // nothing: the queued write below meets them again and
            // reports them as a send's. Not on io_uring: there a queued
            // send rides the submission the loop makes anyway, with
            // every other connection's (W13: 6% more CPU per request
            // with a system call per response).
            let sent = if lp.backend() == BackendKind::Uring {
                0
            } else {
                stream.try_write(lp, buf).unwrap_or(0)
            };
            if sent == buf.len() {
                return Poll::Ready(Ok(sent));
            }
            if sent == 0 && stream.need_drain(lp) {
                // At the mark: wait for the drain.
                return self.io.wait_drain(lp, cx);
            }
            // The rest is queued (a copy, in a reused send buffer), with
            // no callback of its own: a send that fails destroys the
            // stream, and the reader's end callback gets the error.
            if stream.write_copy(lp, &buf[sent..]) || stream.need_drain(lp) {
                return Poll::Ready(Ok(buf.len()));
            }
            // Refused at once (its callback would get the error).
            Poll::Ready(Err(if stream.raw_fd(lp).is_err() {
                io::Error::new(
                    io::ErrorKind::NotConnected,
                    "Cannot call write after a stream was destroyed",
                )
            } else {
                io::Error::new(io::ErrorKind::BrokenPipe, "write after end")
            }))
        })
    }

    fn flush_queued(&self) -> Poll<io::Result<()>> {
        match &self.io.state().borrow().end {
            Some(Err(error)) => Poll::Ready(Err(to_io(error))),
            _ => Poll::Ready(Ok(())),
        }
    }

    fn shut(&self, cx: &Context<'_>) -> Poll<io::Result<()>> {
        self.io.poll_shutdown(cx)
    }
}

impl hyper::rt::Read for HyperStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        self.read_into(cx, &mut buf)
    }
}

impl hyper::rt::Write for HyperStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.write_some(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.flush_queued()
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shut(cx)
    }
}

impl Drop for HyperStream {
    fn drop(&mut self) {
        // Once hyper closed the connection in order (every write out,
        // the FIN sent), nothing is left to do with it, so the
        // descriptor goes now, as a dropped socket's does, instead of
        // lingering until the peer ends (up to the end timeout); before
        // that, the stream is ended.
        self.io.release(true);
    }
}

/// hyper's [`Executor`](hyper::rt::Executor) on the loop: each future
/// becomes a task ([`Loop::spawn_local`], detached), so it need not be
/// `Send` (hyper's "local executor"). [`execute`](hyper::rt::Executor::execute)
/// must be called from a task of a loop (where hyper calls it: inside a
/// connection's poll); it panics elsewhere, as eventide's futures do.
///
/// A detached task's panic is an unhandled one: it goes to the loop's
/// panic handler, or out of [`Loop::run`] without one.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalExecutor;

impl<F> hyper::rt::Executor<F> for LocalExecutor
where
    F: Future + 'static,
    F::Output: 'static,
{
    fn execute(&self, future: F) {
        with_loop(|lp| {
            // Detached: dropping the handle lets the task run on.
            drop(lp.spawn_local(future));
        });
    }
}

/// hyper's [`Timer`](hyper::rt::Timer) on a loop: a sleep waits on a loop
/// timer ([`Loop::set_timeout`], millisecond resolution, never early),
/// started at its first poll, not at its creation: hyper starts a
/// header-read timeout for every request and drops it, unpolled, when
/// the head came in one read, which then costs the loop nothing.
///
/// hyper wants its timer and its sleeps `Send + Sync`, though its
/// HTTP/1 connections, polled by a task of the loop, create, reset, poll
/// and drop them on the loop's thread. That is the fast path: a sleep
/// first polled by a task of its loop takes a slot in a table of the
/// thread's, which keeps its waker and deadline, and with the slot its
/// loop timer: the one the slot's last sleep left pending if that fires
/// no later than the deadline (hyper's header-read timeouts, one per
/// request, then cost no timer started or cleared), a new one otherwise.
/// The timer's callback holds only the slot's index and a number (stored
/// in the timer: nothing allocated, no lock); polls, resets and the drop
/// on the loop thread reach the slot directly. A sleep polled anywhere
/// else (another thread, a plain callback) shares a small state under a
/// mutex with its loop timer's callback instead, and its arming, resets
/// and drop are posted to the loop through its cross-thread wake-up; a
/// generation number (and the current timer's id) makes a late-running
/// post or timer of a superseded deadline a no-op. A sleep of the fast
/// path polled or reset from elsewhere moves to the shared form (its
/// slot given back by a post to the loop); dropped elsewhere, it gives
/// its slot back the same way, and the loop's drop frees the slots its
/// sleeps still hold (a post it will never run).
///
/// The timers are unreferenced ([`Loop::unref_timer`]): a hyper timeout
/// guards a connection whose socket keeps the loop alive; the timeout
/// itself never does. A sleep whose loop is gone never completes.
///
/// A `LoopTimer` does not keep the loop alive (unlike a
/// [`crate::LoopHandle`]); cloning it is cheap.
#[derive(Clone)]
pub struct LoopTimer {
    shared: Weak<Shared>,
}

impl std::fmt::Debug for LoopTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopTimer")
            .field("loop_gone", &(self.shared.strong_count() == 0))
            .finish()
    }
}

impl LoopTimer {
    /// A timer whose sleeps run on `lp`.
    pub fn new(lp: &Loop) -> LoopTimer {
        LoopTimer {
            shared: Arc::downgrade(&lp.shared),
        }
    }

    /// A timer on the loop whose task is being polled (see
    /// [`with_loop`]).
    ///
    /// # Panics
    ///
    /// Outside a task's poll, as [`with_loop`].
    pub fn current() -> LoopTimer {
        with_loop(|lp| LoopTimer::new(lp))
    }

    /// A sleep until `deadline`, as a concrete type (what
    /// [`hyper::rt::Timer::sleep_until`] boxes).
    pub fn sleep_until(&self, deadline: Instant) -> LoopSleep {
        LoopSleep {
            shared: self.shared.clone(),
            deadline,
            local: None,
            state: None,
        }
    }
}

impl hyper::rt::Timer for LoopTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let deadline = Instant::now()
            .checked_add(duration)
            .unwrap_or_else(far_future);
        Box::pin(LoopTimer::sleep_until(self, deadline))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(LoopTimer::sleep_until(self, deadline))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<LoopSleep>() {
            Some(ours) => ours.get_mut().reset(new_deadline),
            None => *sleep = hyper::rt::Timer::sleep_until(self, new_deadline),
        }
    }
}

/// A deadline no program waits for (about 30 years on).
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}

/// What a [`LoopSleep`] of the shared form (polled off its loop's
/// thread) and its loop timer's callback share.
struct SleepState {
    inner: Mutex<SleepInner>,
}

struct SleepInner {
    deadline: Instant,
    /// Bumped by every reset and by the drop: a posted arming of an
    /// older generation does nothing.
    generation: u64,
    /// The current generation's timer was asked for (at the first poll).
    armed: bool,
    /// The current generation's timer fired.
    fired: bool,
    /// The current generation's loop timer, once started: a timer that
    /// runs and is not this one was superseded, and does nothing.
    timer: Option<TimerId>,
    waker: Option<Waker>,
}

impl SleepState {
    fn lock(&self) -> MutexGuard<'_, SleepInner> {
        // A panic while the lock is held leaves plain data, still
        // consistent: go on with it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Starts the loop timer of `generation` for `deadline`, unless the
/// sleep has moved on (reset or dropped) meanwhile.
fn arm(lp: &mut Loop, state: &Arc<SleepState>, deadline: Instant, generation: u64) {
    if state.lock().generation != generation {
        return;
    }
    // Rounded up: the loop's timers count whole milliseconds, and a
    // sleep must not end before its deadline.
    let left = deadline.saturating_duration_since(Instant::now());
    let ms = left.as_nanos().div_ceil(1_000_000);
    let delay = Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX));
    let fired = Arc::clone(state);
    // An interval cleared at its first run: its callback gets its own id
    // (to tell the current timer from a superseded one), so the closure
    // holds only the state and is stored inline (no allocation).
    let id = lp.set_interval(delay, move |lp, me| {
        lp.clear_timer(me);
        let waker = {
            let mut inner = fired.lock();
            if inner.timer != Some(me) {
                // Superseded (reset or dropped from another thread, the
                // clear posted and not yet run).
                return;
            }
            inner.timer = None;
            if Instant::now() < inner.deadline {
                // The loop's clock runs a little behind the monotonic
                // one it samples: wait for the rest.
                let (deadline, generation) = (inner.deadline, inner.generation);
                drop(inner);
                arm(lp, &fired, deadline, generation);
                return;
            }
            inner.fired = true;
            inner.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    });
    lp.unref_timer(id);
    let mut inner = state.lock();
    if inner.generation == generation {
        inner.timer = Some(id);
    } else {
        // Reset or dropped from another thread meanwhile.
        drop(inner);
        lp.clear_timer(id);
    }
}

/// The sleeps waiting on this thread's loops (the fast path; see
/// [`LoopTimer`]): a slot per sleep, from its first poll to its drop, and
/// with each slot the loop timer it last started, which outlives the
/// sleep. A dropped sleep's timer is not cleared: the next sleep given
/// the slot (slots are reused last freed, first) takes it over if it
/// fires no later than that sleep's deadline (hyper's header-read
/// timeouts, one per request with the same duration, always do), and
/// when it fires early for its current sleep it starts itself again for
/// the rest. So a request's timeout costs no timer started or cleared,
/// only a slot taken and given back; a connection that is waited on
/// for the whole timeout costs one timer start per timeout.
struct Waits {
    slots: Vec<Wait>,
    /// Free slots, the last freed at the end.
    free: Vec<u32>,
    /// This thread, whose table this is.
    thread: std::thread::ThreadId,
}

/// One slot of [`Waits`].
struct Wait {
    /// Bumped each time a sleep takes the slot: a sleep's id for it.
    generation: u32,
    /// A sleep holds the slot.
    taken: bool,
    /// The holder's deadline has passed (its timer ran after it).
    fired: bool,
    /// The holder's deadline.
    deadline: Instant,
    /// The holder's loop's id.
    loop_id: u32,
    waker: Option<Waker>,
    /// The slot's pending loop timer, if any: its loop's id, its id, the
    /// instant it was started for, and its number (its callback holds
    /// the slot's index and this number: a timer whose number is not
    /// the slot's current one was superseded, and does nothing).
    timer: Option<(u32, TimerId)>,
    timer_at: Instant,
    timer_count: u32,
}

thread_local! {
    static WAITS: RefCell<Waits> = RefCell::new(Waits {
        slots: Vec::new(),
        free: Vec::new(),
        thread: std::thread::current().id(),
    });
}

/// Runs `f` on this thread's [`Waits`] (nothing during the thread's TLS
/// teardown).
fn with_waits<R>(f: impl FnOnce(&mut Waits) -> R) -> Option<R> {
    WAITS.try_with(|w| f(&mut w.borrow_mut())).ok()
}

/// Loop `loop_id` is being dropped (on its thread: this one). Its
/// sleeps' slots in this thread's [`Waits`] are freed, their wakers
/// dropped: a sleep sent to another thread and dropped there gives its
/// slot back by a post to the loop, which a loop gone (or dropped before
/// running the post) never runs. A sleep of the loop still alive on
/// this thread finds its slot no longer its own, as it would after any
/// other move away from the fast path; it never completes (its loop is
/// gone).
pub(crate) fn loop_dropped(loop_id: u32) {
    let wakers = with_waits(|waits| waits.forget_loop(loop_id));
    // Dropped once the table is no longer borrowed.
    drop(wakers);
}

/// A sleep's slot in the [`Waits`] of its loop's thread.
#[derive(Clone, Copy, Debug)]
struct Local {
    index: u32,
    generation: u32,
    thread: std::thread::ThreadId,
}

impl Waits {
    /// The slot of `local`, if it is still its holder's.
    fn slot(&mut self, local: Local) -> Option<&mut Wait> {
        self.slots
            .get_mut(local.index as usize)
            .filter(|w| w.taken && w.generation == local.generation)
    }

    /// A slot for a sleep of `lp` until `deadline`, its timer started
    /// (or the slot's pending one taken over).
    fn take(&mut self, lp: &mut Loop, deadline: Instant, waker: Waker) -> Local {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                let index = u32::try_from(self.slots.len()).expect("fewer than 2^32 sleeps");
                self.slots.push(Wait {
                    generation: 0,
                    taken: false,
                    fired: false,
                    deadline,
                    loop_id: lp.id,
                    waker: None,
                    timer: None,
                    timer_at: deadline,
                    timer_count: 0,
                });
                index
            }
        };
        let wait = &mut self.slots[index as usize];
        wait.generation = wait.generation.wrapping_add(1);
        wait.taken = true;
        wait.fired = false;
        wait.deadline = deadline;
        wait.loop_id = lp.id;
        wait.waker = Some(waker);
        wait.arm(lp, index);
        Local {
            index,
            generation: wait.generation,
            thread: self.thread,
        }
    }

    /// Frees the slots of loop `loop_id`'s sleeps and forgets the
    /// timers it had pending (see [`loop_dropped`]); the wakers are
    /// handed out, to drop once the table is no longer borrowed.
    fn forget_loop(&mut self, loop_id: u32) -> Vec<Waker> {
        let mut wakers = Vec::new();
        for (index, wait) in (0u32..).zip(self.slots.iter_mut()) {
            if wait.timer.is_some_and(|(id, _)| id == loop_id) {
                wait.timer = None;
            }
            if wait.taken && wait.loop_id == loop_id {
                wait.taken = false;
                wakers.extend(wait.waker.take());
                self.free.push(index);
            }
        }
        wakers
    }

    /// Gives `local`'s slot back (its timer left pending, for the next
    /// holder); the waker is handed out, to drop once the table is no
    /// longer borrowed.
    fn give_back(&mut self, local: Local) -> Option<Waker> {
        let wait = self.slot(local)?;
        wait.taken = false;
        let waker = wait.waker.take();
        self.free.push(local.index);
        waker
    }
}

impl Wait {
    /// Makes sure a timer of `lp` fires no later than the deadline: the
    /// pending one if it does, else a new one (the pending one cleared).
    fn arm(&mut self, lp: &mut Loop, index: u32) {
        match self.timer {
            Some((loop_id, _)) if loop_id == lp.id && self.timer_at <= self.deadline => return,
            Some((loop_id, id)) if loop_id == lp.id => {
                lp.clear_timer(id);
            }
            // Another loop's (on this thread), or none: left to fire
            // into a number that is no longer the slot's.
            _ => {}
        }
        self.start(lp, index);
    }

    /// Starts a loop timer for the deadline (rounded up to whole
    /// milliseconds: the loop's timers count those, and a sleep must not
    /// end before its deadline). Its callback holds the slot's index and
    /// the timer's number (8 bytes: stored in the timer, nothing
    /// allocated).
    fn start(&mut self, lp: &mut Loop, index: u32) {
        let left = self.deadline.saturating_duration_since(Instant::now());
        let ms = left.as_nanos().div_ceil(1_000_000);
        let delay = Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX));
        self.timer_count = self.timer_count.wrapping_add(1);
        let count = self.timer_count;
        let id = lp.set_timeout(delay, move |lp| {
            let waker = with_waits(|waits| waits.slots[index as usize].on_timer(lp, index, count));
            // Woken once the table is no longer borrowed.
            if let Some(waker) = waker.flatten() {
                waker.wake();
            }
        });
        lp.unref_timer(id);
        self.timer = Some((lp.id, id));
        self.timer_at = self.deadline;
    }

    /// The slot's timer number `count` ran: the holder's waker to wake
    /// if its deadline has passed; the timer started again for the rest
    /// if it has not (a timer taken over, or the loop's clock a little
    /// behind the monotonic one); nothing for a superseded timer or a
    /// free slot.
    fn on_timer(&mut self, lp: &mut Loop, index: u32, count: u32) -> Option<Waker> {
        if count != self.timer_count || self.timer.is_none_or(|(id, _)| id != lp.id) {
            return None;
        }
        self.timer = None;
        if !self.taken || self.fired {
            return None;
        }
        if Instant::now() < self.deadline {
            self.start(lp, index);
            return None;
        }
        self.fired = true;
        self.waker.take()
    }
}

/// What a look at a sleep's slot found.
enum LocalPoll {
    Ready,
    Pending,
    /// Pending, polled with another waker than the one kept.
    NewWaker,
}

/// A sleep of a [`LoopTimer`]: completes once its deadline has passed
/// (see [`LoopTimer`] for how it reaches the loop). Until its first poll
/// it is just its deadline: nothing shared, no timer started.
pub struct LoopSleep {
    shared: Weak<Shared>,
    deadline: Instant,
    /// The fast path: first polled by a task of its loop.
    local: Option<Local>,
    /// The shared form: made at the first poll that has to wait away
    /// from the loop's thread.
    state: Option<Arc<SleepState>>,
}

impl std::fmt::Debug for LoopSleep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("LoopSleep");
        d.field("deadline", &self.deadline);
        if let Some(local) = &self.local {
            d.field("slot", &local.index);
        }
        if let Some(state) = &self.state {
            let inner = state.lock();
            d.field("fired", &inner.fired).field("timer", &inner.timer);
        }
        d.finish()
    }
}

impl LoopSleep {
    /// Runs `f` with the sleep's loop if that loop is lent to the running
    /// task on this thread; `None` (and `f` not called) otherwise.
    fn here<R>(&self, f: impl FnOnce(&mut Loop) -> R) -> Option<R> {
        try_with_loop(|lp| (self.shared.as_ptr() == Arc::as_ptr(&lp.shared)).then(|| f(lp)))
            .flatten()
    }

    /// Posts `f` to the sleep's loop (dropped if the loop is gone).
    fn post(&self, f: impl FnOnce(&mut Loop) + Send + 'static) {
        if let Some(shared) = self.shared.upgrade() {
            shared.post(Box::new(f));
        }
    }

    /// Runs `f` on the sleep's loop: at once where that loop is lent to
    /// the running task, posted to it otherwise (dropped if it is gone).
    fn on_loop(
        &self,
        state: &Arc<SleepState>,
        f: impl FnOnce(&mut Loop, &Arc<SleepState>) + Send + 'static,
    ) {
        let state = Arc::clone(state);
        let mut f = Some(f);
        let here = self.here(|lp| {
            if let Some(f) = f.take() {
                f(lp, &state);
            }
        });
        if here.is_some() {
            return;
        }
        if let Some(f) = f {
            self.post(move |lp: &mut Loop| f(lp, &state));
        }
    }

    /// Clears the loop timer `old`, if any.
    fn clear(&self, state: &Arc<SleepState>, old: Option<TimerId>) {
        if let Some(id) = old {
            self.on_loop(state, move |lp, _| {
                lp.clear_timer(id);
            });
        }
    }

    /// Leaves the fast path, if on it: the slot is given back, at once on
    /// its thread, else by a post to the loop (lost with the loop).
    fn leave_local(&mut self) {
        let Some(local) = self.local.take() else {
            return;
        };
        let given =
            with_waits(|waits| (waits.thread == local.thread).then(|| waits.give_back(local)))
                .flatten();
        match given {
            Some(waker) => drop(waker),
            None => self.post(move |_| drop(with_waits(|waits| waits.give_back(local)))),
        }
    }

    /// The fast path's poll, on the sleep's loop (lent as `lp`). Wakers
    /// are cloned and dropped while the table is not borrowed (a waker's
    /// code may do anything).
    fn poll_local(&mut self, lp: &mut Loop, cx: &Context<'_>) -> Poll<()> {
        let deadline = self.deadline;
        let Some(local) = self.local else {
            let waker = cx.waker().clone();
            let local = with_waits(|waits| waits.take(lp, deadline, waker));
            // `None`: the thread is tearing down; nothing will wake it.
            self.local = local;
            return Poll::Pending;
        };
        let polled = with_waits(|waits| {
            let wait = waits.slot(local)?;
            if wait.fired {
                return Some(LocalPoll::Ready);
            }
            if wait.timer.is_none() {
                // Reset since: a timer for the new deadline.
                wait.arm(lp, local.index);
            }
            let same = wait.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker()));
            Some(if same {
                LocalPoll::Pending
            } else {
                LocalPoll::NewWaker
            })
        })
        .flatten();
        match polled {
            Some(LocalPoll::Ready) => Poll::Ready(()),
            Some(LocalPoll::Pending) => Poll::Pending,
            Some(LocalPoll::NewWaker) => {
                // Another waker than the one kept: swapped in.
                let waker = cx.waker().clone();
                let old = with_waits(|waits| waits.slot(local).map(|w| w.waker.replace(waker)));
                drop(old);
                Poll::Pending
            }
            // Not this thread's slot (cannot happen: a loop never leaves
            // its thread): start afresh.
            None => {
                self.local = None;
                self.poll_local(lp, cx)
            }
        }
    }

    /// The shared form's poll (anywhere).
    fn poll_shared(&mut self, cx: &Context<'_>) -> Poll<()> {
        let state = match &self.state {
            Some(state) => Arc::clone(state),
            None => {
                // Even a deadline already past goes through the loop
                // timer (of 1 ms), whose callback checks the clock: one
                // clock read per wait, none per poll.
                let state = Arc::new(SleepState {
                    inner: Mutex::new(SleepInner {
                        deadline: self.deadline,
                        generation: 0,
                        armed: false,
                        fired: false,
                        timer: None,
                        waker: None,
                    }),
                });
                self.state = Some(Arc::clone(&state));
                state
            }
        };
        let (deadline, generation) = {
            let mut inner = state.lock();
            if inner.fired {
                return Poll::Ready(());
            }
            set_waker(&mut inner.waker, cx);
            if inner.armed {
                return Poll::Pending;
            }
            inner.armed = true;
            (inner.deadline, inner.generation)
        };
        self.on_loop(&state, move |lp, state| {
            arm(lp, state, deadline, generation)
        });
        Poll::Pending
    }

    /// Moves the deadline (hyper's `Timer::reset`): not fired any more.
    /// On the fast path the pending loop timer stays if it fires no later
    /// than the new deadline (it starts itself again for the rest), and
    /// is cleared otherwise; in the shared form it is cleared. Either
    /// way the next poll that has to wait makes sure of a timer.
    pub fn reset(&mut self, deadline: Instant) {
        self.deadline = deadline;
        if let Some(local) = self.local {
            let reset = self.here(|lp| {
                with_waits(|waits| {
                    let wait = waits.slot(local)?;
                    wait.deadline = deadline;
                    wait.fired = false;
                    if let Some((loop_id, id)) = wait.timer
                        && wait.timer_at > deadline
                    {
                        if loop_id == lp.id {
                            lp.clear_timer(id);
                        }
                        wait.timer = None;
                    }
                    Some(())
                })
                .flatten()
            });
            if reset.flatten().is_none() {
                // Away from the loop's thread: the next poll starts
                // afresh, wherever it is.
                self.leave_local();
            }
        }
        let Some(state) = &self.state else {
            return;
        };
        let old = {
            let mut inner = state.lock();
            inner.deadline = deadline;
            inner.generation += 1;
            inner.armed = false;
            inner.fired = false;
            inner.timer.take()
        };
        self.clear(state, old);
    }
}

impl Future for LoopSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.state.is_none() {
            let shared = this.shared.as_ptr();
            let polled = try_with_loop(|lp| {
                (shared == Arc::as_ptr(&lp.shared)).then(|| this.poll_local(lp, cx))
            })
            .flatten();
            if let Some(polled) = polled {
                return polled;
            }
            // Polled away from its loop's thread: the shared form from
            // now on.
            this.leave_local();
        }
        this.poll_shared(cx)
    }
}

/// `Send + Sync` (its state is plain ids, or behind an
/// `Arc<Mutex<_>>`), as hyper asks.
impl hyper::rt::Sleep for LoopSleep {}

impl Drop for LoopSleep {
    fn drop(&mut self) {
        self.leave_local();
        let Some(state) = &self.state else {
            return;
        };
        let old = {
            let mut inner = state.lock();
            inner.generation += 1;
            inner.waker = None;
            inner.timer.take()
        };
        self.clear(state, old);
    }
}
