//! The loop: its state, its builder, and the turn.

use std::any::Any;
use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use eventide_reactor::{BackendChoice, BackendKind, Reactor};
use eventide_timer::Wheel;

use crate::channel::Receive;
use crate::clock::Clock;
use crate::handle::Shared;
use crate::hooks::Hooks;
use crate::io::Io;
use crate::slab::{Slab, SlotId};
use crate::timers::Timer;
use crate::work::Work;
use crate::{Error, Result};

/// A callback that runs once with the loop.
pub(crate) type Task = Box<dyn FnOnce(&mut Loop)>;

/// A caught panic's payload.
pub(crate) type Panic = Box<dyn Any + Send>;

/// What a panic handler receives: the loop and the panic's payload.
type PanicHandler = Box<dyn FnMut(&mut Loop, Box<dyn Any + Send>)>;

/// How [`Loop::run_mode`] runs, as libuv's `uv_run_mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunMode {
    /// Run turns until nothing keeps the loop alive, or [`Loop::stop`].
    Default,
    /// Run one turn, blocking for I/O if there is nothing else to do.
    Once,
    /// Run one turn without blocking.
    NoWait,
}

/// Builds a [`Loop`]: which reactor backend, how many pool threads.
#[derive(Debug, Clone, Default)]
pub struct LoopBuilder {
    backend: Option<BackendChoice>,
    pool_threads: Option<usize>,
    pool_drop_timeout: Option<Duration>,
}

impl LoopBuilder {
    /// Chooses the backend: [`BackendChoice::Auto`] (io_uring if the system
    /// allows it, else epoll, else polling), or exactly one. Without this
    /// call the `EVENTIDE_BACKEND` environment variable decides (`uring`,
    /// `epoll`, `poll`, `auto`; unset means auto).
    pub fn backend(mut self, choice: BackendChoice) -> Self {
        self.backend = Some(choice);
        self
    }

    /// Sets the number of blocking-pool threads (1..=1024). Without this
    /// call `EVENTIDE_THREADPOOL_SIZE` decides, and by default there are 4.
    pub fn pool_threads(mut self, threads: usize) -> Self {
        self.pool_threads = Some(threads);
        self
    }

    /// Sets how long dropping the loop waits for pool jobs still running
    /// (default 1 s). A job that is still running then (a blocking FIFO
    /// open, a hung `getaddrinfo`, user work that never returns) keeps its
    /// pool thread: the thread is detached and ends by itself when the job
    /// returns, a warning is logged, and the memory of the work requests
    /// that thread may still touch is leaked (never freed, their callbacks
    /// never run or dropped). Without the bound the drop would wait for
    /// such a job forever.
    pub fn pool_drop_timeout(mut self, timeout: Duration) -> Self {
        self.pool_drop_timeout = Some(timeout);
        self
    }

    /// Makes the loop.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the chosen backend is not compiled in or the
    /// system refuses it (a forced `uring` under a seccomp profile, say),
    /// or when `EVENTIDE_BACKEND` holds something else than the four names;
    /// [`Error::PoolConfig`] for a pool size outside 1..=1024. (An invalid
    /// `EVENTIDE_THREADPOOL_SIZE` is logged and the default used, as libuv
    /// does with `UV_THREADPOOL_SIZE`.)
    pub fn build(self) -> Result<Loop> {
        let reactor = match self.backend {
            Some(choice) => Reactor::with_choice(choice)?,
            None => Reactor::new()?,
        };
        log::debug!("eventide loop on the {} backend", reactor.backend());
        let drop_timeout = self.pool_drop_timeout.unwrap_or(crate::work::DROP_TIMEOUT);
        Loop::with_reactor(reactor, self.pool_threads, drop_timeout)
    }
}

/// Node's event loop: one thread, callbacks that receive the loop, and the
/// phases in libuv's order every turn. See the [crate documentation](crate).
///
/// Dropping it shuts its pool down, waiting at most
/// [`LoopBuilder::pool_drop_timeout`] (1 s by default) for jobs still
/// running; a job stuck longer keeps its thread, which is detached.
pub struct Loop {
    pub(crate) reactor: Reactor,
    /// The cached time, in ms since the clock's epoch; read lazily (see `now`).
    now: Cell<u64>,
    /// Whether `now` must be read again before use: set at each turn's
    /// timers phase when there are no timers, so a turn without timers
    /// reads no clock unless somebody asks for the time.
    now_stale: Cell<bool>,
    /// The millisecond clock (a calibrated TSC where it can be exact).
    clock: Clock,
    pub(crate) wheel: Wheel<Timer>,
    /// Armed, referenced timers: they keep the loop alive.
    pub(crate) ref_timers: usize,
    pub(crate) immediates: Slab<Task>,
    /// The pending immediates that were unref'd (`Loop::unref_immediate`):
    /// they neither keep the loop alive nor keep the poll phase from
    /// blocking.
    pub(crate) unref_immediates: std::collections::HashSet<SlotId>,
    pub(crate) immediate_order: VecDeque<SlotId>,
    ticks: VecDeque<Task>,
    microtasks: VecDeque<Task>,
    pending: VecDeque<Task>,
    pub(crate) hooks: Hooks,
    pub(crate) closing: VecDeque<Option<Task>>,
    pub(crate) work: Work,
    pub(crate) io: Io,
    pub(crate) shared: Arc<Shared>,
    pub(crate) channels: Vec<Option<Box<dyn Receive>>>,
    panic_handler: Option<PanicHandler>,
    stop_requested: bool,
    running: bool,
}

impl fmt::Debug for Loop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loop")
            .field("backend", &format_args!("{}", self.reactor.backend()))
            .field("now", &self.now())
            .field("timers", &self.wheel.len())
            .field("immediates", &self.immediates.len())
            .field("alive", &self.alive())
            .finish_non_exhaustive()
    }
}

impl Loop {
    /// A loop on the backend `EVENTIDE_BACKEND` names, or the best one the
    /// system allows. Same as `Loop::builder().build()`.
    ///
    /// # Errors
    ///
    /// As [`LoopBuilder::build`].
    pub fn new() -> Result<Loop> {
        Loop::builder().build()
    }

    /// A builder, to choose the backend or the pool size.
    pub fn builder() -> LoopBuilder {
        LoopBuilder::default()
    }

    fn with_reactor(
        reactor: Reactor,
        pool_threads: Option<usize>,
        drop_timeout: Duration,
    ) -> Result<Loop> {
        let shared = Arc::new(Shared::new(reactor.waker()));
        let work = Work::new(Arc::clone(&shared), pool_threads, drop_timeout)?;
        Ok(Loop {
            reactor,
            now: Cell::new(0),
            now_stale: Cell::new(false),
            clock: Clock::new(),
            wheel: Wheel::new(),
            ref_timers: 0,
            immediates: Slab::default(),
            unref_immediates: Default::default(),
            immediate_order: VecDeque::new(),
            ticks: VecDeque::new(),
            microtasks: VecDeque::new(),
            pending: VecDeque::new(),
            hooks: Hooks::default(),
            closing: VecDeque::new(),
            work,
            io: Io::default(),
            shared,
            channels: Vec::new(),
            panic_handler: None,
            stop_requested: false,
            running: false,
        })
    }

    /// The backend this loop's I/O runs on.
    pub fn backend(&self) -> BackendKind {
        self.reactor.backend()
    }

    /// The loop's cached time, in milliseconds since the loop was made
    /// (libuv's `uv_now`): read once per turn, before the timers run, and
    /// then the same until the next turn or [`Loop::update_time`]. (In a
    /// turn with no timer at all, the clock is read at the first call.)
    pub fn now(&self) -> u64 {
        if self.now_stale.get() {
            self.now.set(self.clock());
            self.now_stale.set(false);
        }
        self.now.get()
    }

    /// Reads the clock into the cached time (libuv's `uv_update_time`).
    pub fn update_time(&mut self) {
        self.now.set(self.clock());
        self.now_stale.set(false);
    }

    /// The turn's time update: at once if timers need it, else on demand.
    fn update_time_lazily(&mut self) {
        if self.wheel.is_empty() {
            self.now_stale.set(true);
        } else {
            self.update_time();
        }
    }

    /// The clock now, in ms since the loop was made, without caching it.
    pub(crate) fn clock(&self) -> u64 {
        self.clock.ms()
    }

    /// Stops the loop at the end of this turn: [`Loop::run`] returns
    /// (libuv's `uv_stop`). A later `run` starts it again.
    pub fn stop(&mut self) {
        self.stop_requested = true;
    }

    /// Installs a handler for panics in the loop's callbacks. Without one, a
    /// panic propagates out of [`Loop::run`], as an uncaught exception ends
    /// a Node process; with one, the handler gets the payload and the loop
    /// goes on. (A panic in work on the pool is never this: it reaches that
    /// work's callback as [`Error::Panicked`].) Either way the loop is left
    /// as it would be had the callback returned, except that a hook or an
    /// interval whose callback panicked is stopped: what was queued behind
    /// it (the rest of a channel's batch, other posted closures, other
    /// timers and immediates) still runs, and `alive()` counts only what
    /// is still registered.
    pub fn set_panic_handler(
        &mut self,
        handler: impl FnMut(&mut Loop, Box<dyn Any + Send>) + 'static,
    ) {
        self.panic_handler = Some(Box::new(handler));
    }

    /// Runs `callback` on the next turn, in the pending phase, after the
    /// timers and before idle hooks: libuv's pending callbacks (deferred I/O
    /// results). Used for results that are known at once, so that no
    /// callback runs inside the call that asked for it.
    pub fn defer(&mut self, callback: impl FnOnce(&mut Loop) + 'static) {
        self.pending.push_back(Box::new(callback));
    }

    /// Queues `callback` to run right after the current callback, before
    /// any other callback, timer or I/O (Node's `process.nextTick`). The
    /// queue drains completely, ticks added meanwhile included.
    pub fn next_tick(&mut self, callback: impl FnOnce(&mut Loop) + 'static) {
        self.ticks.push_back(Box::new(callback));
    }

    /// Queues `callback` as a microtask (Node's `queueMicrotask`, and what a
    /// settled promise's reactions are): after each callback the loop runs
    /// every next-tick, then every microtask, and repeats until both are
    /// empty.
    pub fn queue_microtask(&mut self, callback: impl FnOnce(&mut Loop) + 'static) {
        self.microtasks.push_back(Box::new(callback));
    }

    /// Whether anything keeps the loop alive: referenced timers, pending
    /// immediates, active referenced hooks, work in flight, open
    /// [`crate::LoopHandle`]s, closing handles and deferred callbacks.
    pub fn alive(&self) -> bool {
        self.ref_timers > 0
            || self.referenced_immediates()
            || self.hooks.keeps_alive()
            || self.work.in_flight() > 0
            || self.io.in_flight() > 0
            || !self.pending.is_empty()
            || !self.closing.is_empty()
            || self.shared.keeps_alive()
            || self.channels_keep_alive()
    }

    /// Runs until nothing keeps the loop alive or [`Loop::stop`] is called
    /// (`uv_run(UV_RUN_DEFAULT)`).
    ///
    /// # Errors
    ///
    /// [`Error::Reentrant`] from inside a callback of this loop;
    /// [`Error::Io`] if waiting for I/O fails.
    ///
    /// # Panics
    ///
    /// A panic in a callback propagates, unless a handler was installed with
    /// [`Loop::set_panic_handler`].
    pub fn run(&mut self) -> Result<()> {
        self.run_mode(RunMode::Default).map(|_| ())
    }

    /// Runs in the given mode; returns whether the loop is still alive
    /// (`uv_run`'s return value).
    ///
    /// # Errors
    ///
    /// As [`Loop::run`].
    pub fn run_mode(&mut self, mode: RunMode) -> Result<bool> {
        if self.running {
            return Err(Error::Reentrant);
        }
        self.running = true;
        // A callback's panic may unwind out of here (no panic handler): the
        // loop must still be runnable afterwards, so `running` is reset
        // before the panic goes on.
        let result = panic::catch_unwind(AssertUnwindSafe(|| self.turns(mode)));
        self.running = false;
        result.unwrap_or_else(|payload| {
            // The run is over: a stop asked for in it is spent, as on return.
            self.stop_requested = false;
            panic::resume_unwind(payload)
        })
    }

    /// The turns, in libuv's order: timers, pending, idle, prepare, poll,
    /// check, close. (Like libuv's `uv_run`, the default mode runs the
    /// timers once before the first turn, and each turn ends with them.)
    fn turns(&mut self, mode: RunMode) -> Result<bool> {
        // Work the main program queued outside any callback starts now.
        self.work.end_burst();
        // What the main program queued with next_tick runs before the loop.
        self.drain_ticks();
        let mut alive = self.alive();
        if !alive {
            self.update_time();
        }
        if mode == RunMode::Default && alive && !self.stop_requested {
            self.update_time_lazily();
            self.run_timers();
        }
        while alive && !self.stop_requested {
            let can_sleep = self.pending.is_empty() && !self.hooks.has_idle();
            self.run_pending();
            self.run_hooks(crate::hooks::Phase::Idle);
            self.run_hooks(crate::hooks::Phase::Prepare);
            let block = mode == RunMode::Default || (mode == RunMode::Once && can_sleep);
            let timeout = if block {
                self.poll_timeout()
            } else {
                Some(Duration::ZERO)
            };
            self.poll(timeout)?;
            self.run_pending();
            self.run_check();
            self.run_closing();
            self.update_time_lazily();
            self.run_timers();
            alive = self.alive();
            if mode != RunMode::Default {
                break;
            }
        }
        self.stop_requested = false;
        Ok(alive)
    }

    /// How long the poll phase may block: not at all when something is
    /// ready to run; until the next timer otherwise; forever when only
    /// I/O or other threads can wake the loop.
    fn poll_timeout(&mut self) -> Option<Duration> {
        let busy = self.stop_requested
            || !self.alive()
            || !self.pending.is_empty()
            || self.hooks.has_idle()
            || self.referenced_immediates()
            || !self.closing.is_empty()
            || self.work.has_ready();
        if busy {
            return Some(Duration::ZERO);
        }
        let deadline = self.wheel.next_deadline()?;
        // Against the clock, not the cached time: callbacks since the turn
        // began may have taken a while, and the deadline is absolute.
        Some(Duration::from_millis(deadline.saturating_sub(self.clock())))
    }

    /// The poll phase: wait for I/O (or a wake-up), then run what arrived:
    /// finished pool work, closures posted from other threads.
    fn poll(&mut self, timeout: Option<Duration>) -> Result<()> {
        // Callbacks end their bursts; this is for work queued elsewhere.
        self.work.end_burst();
        let nothing_to_wait_for = timeout == Some(Duration::ZERO)
            && self.reactor.in_flight() == 0
            && !self.shared.wake_pending()
            && !self.work.completions_due();
        if !nothing_to_wait_for {
            let blocking = timeout != Some(Duration::ZERO);
            let mut timeout = timeout;
            if blocking {
                // From here on other threads wake the loop; what they did
                // before is seen now (see the handle module).
                self.shared.fall_asleep();
                if self.shared.wake_pending() || self.work.completions_due() {
                    timeout = Some(Duration::ZERO);
                }
            }
            let waited = self.reactor.wait(timeout);
            if blocking {
                self.shared.wake_up();
            }
            waited.map_err(|e| Error::io("poll", e))?;
        }
        // Also when the wait was skipped: an operation may have completed
        // as it was submitted.
        if self.reactor.ready() > 0 {
            self.run_io_completions();
        }
        self.run_work_completions();
        self.run_posted();
        self.run_channels();
        Ok(())
    }

    fn run_pending(&mut self) {
        // Only what was deferred before this phase began: a callback that
        // defers again waits for the next turn.
        for _ in 0..self.pending.len() {
            let Some(task) = self.pending.pop_front() else {
                break;
            };
            self.invoke(task);
        }
    }

    /// The check phase: check hooks, then the immediates queued before the
    /// phase began (one queued meanwhile waits for the next turn).
    fn run_check(&mut self) {
        self.run_hooks(crate::hooks::Phase::Check);
        for _ in 0..self.immediate_order.len() {
            let Some(id) = self.immediate_order.pop_front() else {
                break;
            };
            if let Some(task) = self.immediates.remove(id) {
                if !self.unref_immediates.is_empty() {
                    self.unref_immediates.remove(&id);
                }
                self.invoke(task);
            }
        }
    }

    /// The close phase. libuv pushes each closed handle onto the head of
    /// its closing list, so one phase runs the close callbacks in reverse
    /// order of the closes (shared case 35); handles closed during the
    /// phase wait for the next one. A callback whose panic propagates out
    /// of `run` leaves the ones not yet run in place for the next phase
    /// (and takes its own and those that ran out of the queue, so they no
    /// longer keep the loop alive).
    fn run_closing(&mut self) {
        if self.closing.is_empty() {
            return;
        }
        self.run_closing_queue();
    }

    #[inline(never)]
    fn run_closing_queue(&mut self) {
        let mut closed_before = self.closing.len();
        for i in (0..closed_before).rev() {
            let Some(task) = self.closing.get_mut(i).and_then(Option::take) else {
                continue;
            };
            let outcome = self
                .catching(task)
                .and_then(|()| self.drain_ticks_catching());
            if let Err(payload) = outcome {
                // The entries that ran (this one and those after it) go
                // now, in case the panic leaves `run()`: spent, they would
                // keep the loop alive. Those not run yet stay in front.
                self.closing.drain(i..closed_before);
                closed_before = i;
                self.panicked(payload);
                self.drain_ticks();
            }
        }
        self.closing.drain(..closed_before);
    }

    /// Runs one callback, then everything it queued with next_tick and
    /// queue_microtask.
    pub(crate) fn invoke(&mut self, task: impl FnOnce(&mut Loop)) {
        self.guarded(task);
        self.drain_ticks();
    }

    /// Runs `f` with the loop, for a call site that has nothing to set
    /// right if it panics: the panic goes to the handler (and `None` comes
    /// back) or, without one, on out of `run()`.
    ///
    /// Afterwards, the work the callback queued is announced to the pool
    /// (one wakeup for all of it, see `Work::end_burst`).
    pub(crate) fn guarded<R>(&mut self, f: impl FnOnce(&mut Loop) -> R) -> Option<R> {
        if self.panic_handler.is_none() {
            // Nothing to catch the panic for: it may unwind from here. (The
            // most common path, W3's: no `catch_unwind` frame to set up.)
            let value = f(self);
            self.work.end_burst();
            return Some(value);
        }
        match self.catching(f) {
            Ok(value) => Some(value),
            Err(payload) => {
                self.panicked(payload);
                None
            }
        }
    }

    /// Runs `f` with the loop and hands back its panic, in both modes: the
    /// caller puts its structures right (a slot taken out for the call, a
    /// batch cut short), then passes the payload to [`Loop::panicked`],
    /// which gives it to the handler or, without one, resumes the unwind.
    /// So the state is the same whether or not a handler is installed, and
    /// a `run()` after an uncaught panic finds a consistent loop.
    pub(crate) fn catching<R>(&mut self, f: impl FnOnce(&mut Loop) -> R) -> Result<R, Panic> {
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| f(self)));
        self.work.end_burst();
        outcome
    }

    /// A callback's panic, once its call site is consistent again: the
    /// handler gets it, or, without one, it unwinds out of `run()`.
    pub(crate) fn panicked(&mut self, payload: Panic) {
        let Some(mut handler) = self.panic_handler.take() else {
            panic::resume_unwind(payload)
        };
        // A handler that panics is kept (unless it replaced itself), and
        // its own panic goes on out of `run()`.
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| handler(self, payload)));
        if self.panic_handler.is_none() {
            self.panic_handler = Some(handler);
        }
        if let Err(payload) = outcome {
            panic::resume_unwind(payload)
        }
    }

    /// Whether a panic handler is installed (a panic then does not leave
    /// the phase that caught it).
    pub(crate) fn has_panic_handler(&self) -> bool {
        self.panic_handler.is_some()
    }

    /// [`Loop::drain_ticks`] for a caller that must put its own state
    /// right before a panic goes on: without a panic handler, a tick's
    /// panic comes back here (the ticks after it stay queued, for the next
    /// `run()`) instead of unwinding through the caller. With a handler
    /// the ticks' panics go to it, as always, and this is `Ok`.
    pub(crate) fn drain_ticks_catching(&mut self) -> Result<(), Panic> {
        if self.has_panic_handler() {
            self.drain_ticks();
            return Ok(());
        }
        panic::catch_unwind(AssertUnwindSafe(|| self.drain_ticks()))
    }

    /// Whether next-ticks or microtasks are queued.
    #[inline]
    pub(crate) fn has_ticks(&self) -> bool {
        !self.ticks.is_empty() || !self.microtasks.is_empty()
    }

    /// Node's `processTicksAndRejections`: all ticks (including new ones),
    /// then all microtasks, until both queues are empty.
    pub(crate) fn drain_ticks(&mut self) {
        while !self.ticks.is_empty() || !self.microtasks.is_empty() {
            while let Some(tick) = self.ticks.pop_front() {
                self.guarded(tick);
            }
            while let Some(microtask) = self.microtasks.pop_front() {
                self.guarded(microtask);
            }
        }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        self.shared.close();
    }
}
