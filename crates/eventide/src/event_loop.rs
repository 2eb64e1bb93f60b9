//! The loop: its state, its builder, and the turn.

use std::any::{Any, TypeId};
use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use eventide_reactor::{BackendChoice, BackendKind, Reactor};
use eventide_timer::Wheel;

use crate::channel::Receive;
use crate::clock::{Clock, LoopTime};
use crate::handle::Shared;
use crate::hooks::Hooks;
use crate::io::Io;
use crate::slab::{Slab, SlotId};
use crate::timers::Timer;
use crate::work::Work;
use crate::{Error, Result};

/// The next loop's id (see `Loop::id`). Starts at 1; after 2^32 loops in
/// one process it wraps, and a key could then be taken for one of a loop
/// made 2^32 loops earlier.
static NEXT_LOOP_ID: AtomicU32 = AtomicU32::new(1);

/// How long the poll phase may wait (see `Loop::poll_wait`).
#[derive(Clone, Copy)]
enum PollWait {
    /// Not at all: something is ready to run.
    Now,
    /// Until the loop's time reaches this deadline (ms), or I/O.
    Until(u64),
    /// Until I/O or another thread wakes the loop.
    Forever,
}

/// A callback that runs once with the loop.
pub(crate) type Task = Box<dyn FnOnce(&mut Loop)>;

/// A caught panic's payload.
pub(crate) type Panic = Box<dyn Any + Send>;

/// What a panic handler receives: the loop and the panic's payload.
type PanicHandler = Box<dyn FnMut(&mut Loop, Box<dyn Any + Send>)>;

/// The unwind payload that carries a [`Loop::fail`] out of the phase that
/// noticed it to [`Loop::run_mode`]: it goes through the same paths as a
/// callback's panic, which leave every structure consistent, but never to
/// the panic handler.
struct Failed;

/// How [`Loop::run_mode`] runs, as libuv's `uv_run_mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunMode {
    /// Run turns until nothing keeps the loop alive, or [`Loop::stop`].
    Default,
    /// Run one turn, blocking for I/O if there is nothing else to do.
    Once,
    /// Run one turn without blocking.
    NoWait,
}

/// Builds a [`Loop`]: its backend, its pool, its clock, its io_uring
/// settings. Most settings also have an environment variable, which
/// overrides what the code set (so an operator can move a built program to
/// another backend, pool size or clock without rebuilding it; an unset or
/// empty variable leaves the code's value); the io_uring switches'
/// variables can only turn features off. See `docs/configuration.md`.
///
/// ```
/// use eventide::{BackendChoice, ClockSource, Loop};
///
/// let lp = Loop::builder()
///     .backend(BackendChoice::Auto)
///     .pool_threads(2)
///     .clock(ClockSource::Std)
///     .uring_entries(128)
///     .build()?;
/// # drop(lp);
/// # Ok::<(), eventide::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
#[must_use = "a builder does nothing until `build()` makes the loop"]
pub struct LoopBuilder {
    backend: Option<BackendChoice>,
    pool_threads: Option<usize>,
    pool: Option<crate::work::SharedPool>,
    pool_drop_timeout: Option<Duration>,
    clock: Option<crate::clock::ClockSource>,
    uring: eventide_reactor::UringConfig,
    /// The blocked-loop detector's settings (see `diag`), if on.
    pub(crate) blocking: Option<crate::diag::BlockingConfig>,
}

impl LoopBuilder {
    /// Chooses the backend: [`BackendChoice::Auto`] (io_uring if the system
    /// allows it, else epoll, else polling), or exactly one (default:
    /// auto). The `EVENTIDE_BACKEND` environment variable, when set
    /// (`uring`, `epoll`, `poll`, `auto`), overrides this.
    pub fn backend(mut self, choice: BackendChoice) -> Self {
        self.backend = Some(choice);
        self
    }

    /// Sets the number of threads of the loop's own blocking pool
    /// (1..=1024; default 4). `EVENTIDE_THREADPOOL_SIZE`, when set,
    /// overrides this. Not with [`LoopBuilder::pool`].
    pub fn pool_threads(mut self, threads: usize) -> Self {
        self.pool_threads = Some(threads);
        self
    }

    /// Runs the loop's pool work on `pool`, shared with other loops,
    /// instead of a pool of its own (see [`SharedPool`](crate::SharedPool)).
    /// Its size was settled when it was made ([`SharedPool::new`](crate::SharedPool::new),
    /// which `EVENTIDE_THREADPOOL_SIZE` overrides too). Not with
    /// [`LoopBuilder::pool_threads`].
    pub fn pool(mut self, pool: crate::work::SharedPool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// Sets how long dropping the loop waits for pool jobs still running
    /// (default 1 s). A job that is still running then (a blocking FIFO
    /// open, a hung `getaddrinfo`, user work that never returns) keeps its
    /// pool thread: the thread is detached and ends by itself when the job
    /// returns, a warning is logged, and the memory of the work requests
    /// that thread may still touch is leaked (never freed, their callbacks
    /// never run or dropped). Without the bound the drop would wait for
    /// such a job forever. On a [`SharedPool`](crate::SharedPool), the
    /// drop waits for nothing unless the loop held the pool's last handle.
    pub fn pool_drop_timeout(mut self, timeout: Duration) -> Self {
        self.pool_drop_timeout = Some(timeout);
        self
    }

    /// Chooses the loop's clock (see [`ClockSource`](crate::ClockSource)).
    /// `EVENTIDE_CLOCK`, when set (`tsc`, the default, or `std`),
    /// overrides this.
    pub fn clock(mut self, source: crate::clock::ClockSource) -> Self {
        self.clock = Some(source);
        self
    }

    /// On io_uring, runs natively only the file operations of `ops` that
    /// the kernel has; the others go to the pool, as on epoll (default:
    /// all). `EVENTIDE_URING_FILE_OPS` narrows this further.
    pub fn uring_file_ops(mut self, ops: eventide_reactor::FileOps) -> Self {
        self.uring.file_ops = ops;
        self
    }

    /// On io_uring, whether whole-file reads open into direct descriptors
    /// where the kernel has them (6.8+; default: true).
    /// `EVENTIDE_URING_NO_DIRECT=1` turns them off whatever this says.
    pub fn uring_direct_descriptors(mut self, on: bool) -> Self {
        self.uring.direct_descriptors = on;
        self
    }

    /// On io_uring, whether socket receives use multishot recv from a
    /// provided-buffer ring where the kernel has it (6.0+; default: true).
    /// `EVENTIDE_URING_NO_PBUF=1` turns it off whatever this says.
    pub fn uring_provided_buffers(mut self, on: bool) -> Self {
        self.uring.provided_buffers = on;
        self
    }

    /// On io_uring, the submission queue's size: 1 to 32768 entries (the
    /// kernel rounds up to a power of two; default 256); the completion
    /// queue gets 16 times as many. A full submission queue is submitted
    /// early, so this bounds a system call's batch, not the operations in
    /// flight.
    pub fn uring_entries(mut self, entries: u32) -> Self {
        self.uring.sq_entries = entries;
        self
    }

    /// Makes the loop.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming the method or the environment
    /// variable, the value and what it accepts, for an invalid setting:
    /// a pool size outside 1..=1024, both [`LoopBuilder::pool`] and
    /// [`LoopBuilder::pool_threads`], an io_uring size outside 1..=32768,
    /// or a variable that does not parse (`EVENTIDE_BACKEND`,
    /// `EVENTIDE_THREADPOOL_SIZE`, `EVENTIDE_CLOCK`, the `EVENTIDE_URING_*`
    /// ones), read only when the code leaves its setting unset.
    /// [`Error::Backend`] when the chosen backend is not compiled in or the
    /// system refuses it (a forced `uring` under a seccomp profile, say).
    #[must_use = "the loop runs nothing until `run()` is called on it"]
    pub fn build(mut self) -> Result<Loop> {
        let blocking = self.blocking.take();
        let config = self.resolve()?;
        let reactor = Reactor::with_config(config.backend, &config.uring).map_err(config_error)?;
        log::debug!("eventide loop on the {} backend", reactor.backend());
        crate::diag::note_backend(Some(config.backend), reactor.backend());
        let mut lp = Loop::with_reactor(reactor, config)?;
        if let Some(config) = &blocking {
            lp.detector = Some(crate::diag::Detector::start(config)?);
            lp.refresh_call_mode();
        }
        Ok(lp)
    }

    /// Every setting, from the environment or else the code, checked.
    fn resolve(self) -> Result<Resolved> {
        use crate::work::check_threads;
        // The environment overrides the code (docs/configuration.md): an
        // operator can move a built program to another backend, pool size
        // or clock without rebuilding it. An unset or empty variable
        // leaves the code's setting (or the default).
        let backend = if env_set(eventide_reactor::BACKEND_ENV) {
            BackendChoice::from_env().map_err(config_error)?
        } else {
            self.backend.unwrap_or(BackendChoice::Auto)
        };
        let threads = match (self.pool_threads, &self.pool) {
            (Some(threads), Some(_)) => {
                return Err(Error::InvalidConfig {
                    setting: "LoopBuilder::pool_threads",
                    value: threads.to_string(),
                    expected: "no pool size with LoopBuilder::pool (a shared pool has its own)"
                        .to_owned(),
                });
            }
            // A shared pool took the variable into account when it was made.
            (None, Some(_)) => None,
            _ if env_set(eventide_pool::THREADPOOL_SIZE_ENV) => {
                Some(crate::work::threads_from_env()?)
            }
            (Some(threads), None) => Some(check_threads("LoopBuilder::pool_threads", threads)?),
            (None, None) => None,
        };
        let name = crate::clock::CLOCK_ENV;
        let clock = match self.clock {
            Some(source) if !env_set(name) => source,
            _ => {
                let value = std::env::var_os(name).unwrap_or_default();
                value
                    .to_str()
                    .and_then(crate::clock::ClockSource::parse)
                    .ok_or_else(|| Error::InvalidConfig {
                        setting: name,
                        value: value.to_string_lossy().into_owned(),
                        expected: "tsc or std".to_owned(),
                    })?
            }
        };
        if !(1..=eventide_reactor::MAX_SQ_ENTRIES).contains(&self.uring.sq_entries) {
            return Err(Error::InvalidConfig {
                setting: "LoopBuilder::uring_entries",
                value: self.uring.sq_entries.to_string(),
                expected: format!("a number from 1 to {}", eventide_reactor::MAX_SQ_ENTRIES),
            });
        }
        let uring = self.uring.with_env().map_err(config_error)?;
        Ok(Resolved {
            backend,
            uring,
            threads,
            pool: self.pool,
            clock,
            drop_timeout: self.pool_drop_timeout.unwrap_or(crate::work::DROP_TIMEOUT),
        })
    }
}

/// Whether the variable `name` is set to something (an empty value counts
/// as unset, as a blank line in an environment file).
fn env_set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}

/// A [`LoopBuilder`]'s settings once resolved.
struct Resolved {
    backend: BackendChoice,
    uring: eventide_reactor::UringConfig,
    /// The own pool's size; `None` for the environment's or the default.
    threads: Option<usize>,
    pool: Option<crate::work::SharedPool>,
    clock: crate::clock::ClockSource,
    drop_timeout: Duration,
}

/// A reactor's refusal of a setting as [`Error::InvalidConfig`]; other
/// reactor errors as [`Error::Backend`].
fn config_error(error: eventide_reactor::BackendError) -> Error {
    use eventide_reactor::{BACKEND_ENV, BackendError};
    match error {
        BackendError::InvalidSetting {
            setting,
            value,
            expected,
        } => Error::InvalidConfig {
            setting,
            value,
            expected,
        },
        BackendError::BadChoice(value) => Error::InvalidConfig {
            setting: BACKEND_ENV,
            value,
            expected: "uring, epoll, poll or auto".to_owned(),
        },
        other => Error::Backend(other),
    }
}

/// Node's event loop: one thread, callbacks that receive the loop, and the
/// phases in libuv's order every turn. See the [crate documentation](crate).
///
/// Dropping it shuts its pool down, waiting at most
/// [`LoopBuilder::pool_drop_timeout`] (1 s by default) for jobs still
/// running; a job stuck longer keeps its thread, which is detached.
pub struct Loop {
    /// This loop's id: every key it hands out carries it, so that a key
    /// used with another loop is told apart (a no-op or an error, never
    /// that loop's handle in the same slot).
    pub(crate) id: u32,
    pub(crate) reactor: Reactor,
    /// The cached time, in ms since the clock's epoch; read lazily (see `now`).
    pub(crate) now: Cell<u64>,
    /// Whether `now` must be read again before use: set at each turn's
    /// timers phase when there are no timers, so a turn without timers
    /// reads no clock unless somebody asks for the time.
    now_stale: Cell<bool>,
    /// In the timers phase, while a fired timer's next-ticks run: Node's
    /// timer handle, as re-armed (see `Loop::run_timers`).
    pub(crate) timers_tail: Option<crate::timers::TimersTail>,
    /// The millisecond clock (a calibrated TSC where it can be exact).
    clock: Clock,
    pub(crate) wheel: Wheel<Timer>,
    /// Armed, referenced timers: they keep the loop alive.
    pub(crate) ref_timers: usize,
    /// The pending immediates, with where each was set.
    pub(crate) immediates: Slab<(Task, crate::diag::Site)>,
    /// The pending immediates that were unref'd (`Loop::unref_immediate`):
    /// they neither keep the loop alive nor keep the poll phase from
    /// blocking.
    pub(crate) unref_immediates: std::collections::HashSet<SlotId>,
    pub(crate) immediate_order: VecDeque<SlotId>,
    ticks: VecDeque<(Task, crate::diag::Site)>,
    microtasks: VecDeque<crate::task::Micro>,
    /// The tasks of [`Loop::spawn_local`] (see the `task` module).
    pub(crate) tasks: crate::task::Executor,
    pending: VecDeque<(Task, crate::diag::Site)>,
    pub(crate) hooks: Hooks,
    pub(crate) closing: VecDeque<Option<Task>>,
    pub(crate) work: Work,
    pub(crate) io: Io,
    pub(crate) shared: Arc<Shared>,
    pub(crate) channels: Vec<Option<Box<dyn Receive>>>,
    panic_handler: Option<PanicHandler>,
    /// The error a callback stopped the loop with ([`Loop::fail`]), until
    /// `run` returns it.
    failure: Option<Error>,
    /// The user's state ([`Loop::insert_state`]), one value per type.
    states: HashMap<TypeId, Box<dyn Any>>,
    stop_requested: bool,
    running: bool,
    /// The counters and clocks of [`Loop::metrics`].
    pub(crate) metrics: crate::metrics::State,
    /// The blocked-loop detector, when on (see `diag`).
    pub(crate) detector: Option<crate::diag::Detector>,
    /// How callbacks run: plainly, with the detector's stores only, or
    /// the general way (`Loop::guarded_as`).
    pub(crate) call_mode: crate::diag::CallMode,
    /// The callback about to run, for the detector and tracing.
    pub(crate) call: crate::diag::Call,
    /// Where the I/O handles were registered (see `diag::Sites`).
    pub(crate) sites: crate::diag::Sites,
}

impl fmt::Debug for Loop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let alternate = f.alternate();
        let mut s = f.debug_struct("Loop");
        s.field("backend", &format_args!("{}", self.reactor.backend()))
            .field("now", &self.now())
            .field("timers", &self.wheel.len())
            .field("immediates", &self.immediates.len())
            .field("alive", &self.alive());
        if alternate {
            s.field("handles", &self.handles());
        }
        s.finish_non_exhaustive()
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
    #[must_use = "a builder does nothing until `build()` makes the loop"]
    pub fn builder() -> LoopBuilder {
        LoopBuilder::default()
    }

    fn with_reactor(reactor: Reactor, config: Resolved) -> Result<Loop> {
        // As Node: a write to a pipe or socket without a reader is an
        // `EPIPE` error, never the end of the process (docs/process.md).
        crate::signal::ignore_sigpipe();
        let shared = Arc::new(Shared::new(reactor.waker()));
        let work = Work::new(
            Arc::clone(&shared),
            config.threads,
            config.pool,
            config.drop_timeout,
        )?;
        let id = NEXT_LOOP_ID.fetch_add(1, Ordering::Relaxed);
        Ok(Loop {
            id,
            reactor,
            now: Cell::new(0),
            now_stale: Cell::new(false),
            timers_tail: None,
            clock: Clock::new(config.clock),
            wheel: Wheel::new(),
            ref_timers: 0,
            immediates: Slab::default(),
            unref_immediates: Default::default(),
            immediate_order: VecDeque::new(),
            ticks: VecDeque::new(),
            microtasks: VecDeque::new(),
            tasks: crate::task::Executor::new(Arc::clone(&shared)),
            pending: VecDeque::new(),
            hooks: Hooks::default(),
            closing: VecDeque::new(),
            work,
            io: Io::new(id),
            shared,
            channels: Vec::new(),
            panic_handler: None,
            failure: None,
            states: HashMap::new(),
            stop_requested: false,
            running: false,
            metrics: Default::default(),
            detector: None,
            call_mode: if cfg!(feature = "tracing") {
                crate::diag::CallMode::General
            } else {
                crate::diag::CallMode::Plain
            },
            call: crate::diag::Call::default(),
            sites: crate::diag::Sites::default(),
        })
    }

    /// The backend this loop's I/O runs on.
    pub fn backend(&self) -> BackendKind {
        self.reactor.backend()
    }

    /// The clock this loop reads: [`ClockSource::Tsc`](crate::ClockSource)
    /// only where it was allowed and the machine has an invariant TSC.
    pub fn clock_source(&self) -> crate::clock::ClockSource {
        self.clock.source()
    }

    /// How the io_uring backend set itself up (its queue sizes, which
    /// features it uses); `None` on the other backends.
    pub fn uring_info(&self) -> Option<eventide_reactor::uring_ext::UringInfo> {
        self.reactor.uring_info()
    }

    /// The loop's cached time, in milliseconds since the loop was made
    /// (libuv's `uv_now`): read once per turn, before the timers run, and
    /// then the same until the next turn or [`Loop::update_time`]. (In a
    /// turn with no timer at all, the clock is read at the first call.)
    ///
    /// Timers do not start from it: each start reads the clock, as Node's
    /// `setTimeout` does.
    pub fn now(&self) -> LoopTime {
        LoopTime::from_millis(self.now_ms())
    }

    /// [`Loop::now`] as a number of milliseconds.
    pub(crate) fn now_ms(&self) -> u64 {
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

    /// The clock now, also kept as the cached time: what Node's
    /// `getLibuvNow()` does when a timer starts (libuv's `uv_update_time`).
    pub(crate) fn clock_into_now(&self) -> u64 {
        let now = self.clock();
        self.now.set(now);
        self.now_stale.set(false);
        now
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

    /// Stops the loop with `error`, which [`Loop::run`] (or
    /// [`Loop::run_mode`]) returns: what an uncaught exception is to a
    /// Node process, without ending the process.
    ///
    /// The callback that calls it finishes; as soon as it returns, `run`
    /// returns `Err(error)`. Nothing else runs first: not the callback's
    /// next-ticks and microtasks, not the rest of the phase (other due
    /// timers, immediates, I/O callbacks), not the close phase. That is
    /// Node's behaviour for an uncaught exception (the process exits
    /// before `process.nextTick` callbacks run) and calloop's for a
    /// callback that returns `Err` (dispatching stops, the error comes
    /// back). Nothing is lost either: everything queued stays queued and
    /// every handle stays as the callback left it, so a later `run`
    /// continues where this one stopped (the ticks first), as after a
    /// panic that left `run`. (One qualification: an event whose handling
    /// calls several of your callbacks in a row, a file stream's last
    /// `data` and its `end` say, finishes that handling first.)
    ///
    /// The first failure wins: later calls before `run` returns drop
    /// their error. Called outside `run`, the next `run` returns the error
    /// at once. A panic handler never sees a failure. The error can be any
    /// error type ([`Error::other`]), or an eventide error:
    ///
    /// ```
    /// let mut lp = eventide::Loop::new()?;
    /// lp.fs().read_file("no-such-file.txt", |lp, result| match result {
    ///     Ok(bytes) => println!("{} bytes", bytes.len()),
    ///     Err(error) => lp.fail(error),
    /// });
    /// let error = lp.run().unwrap_err();
    /// assert_eq!(error.code(), Some("ENOENT"));
    /// # Ok::<(), eventide::Error>(())
    /// ```
    ///
    /// It stops the loop by unwinding (a private payload, caught by `run`)
    /// from the point where the loop would next run a callback, through
    /// the same paths that make a panic leave `run` with the loop
    /// consistent. In a program built with `panic = "abort"`, where
    /// nothing unwinds, the loop instead stops at the end of the current
    /// phase: the rest of the phase runs first.
    pub fn fail(&mut self, error: impl Into<Error>) {
        if self.failure.is_none() {
            let error = error.into();
            crate::diag::note_failure(&error);
            self.failure = Some(error);
        }
    }

    /// Whether a callback called [`Loop::fail`] and `run` has not returned
    /// the error yet.
    pub fn is_failed(&self) -> bool {
        self.failure.is_some()
    }

    /// Stores `state`, the one value of its type in this loop, for every
    /// callback to reach with [`Loop::state`], [`Loop::state_mut`] or
    /// [`Loop::with_state`]: a program's state without `Rc<RefCell<..>>`.
    /// Returns the value of that type it replaces, if any.
    ///
    /// Values are keyed by their type, so give each piece of state its own
    /// type (a struct, or a newtype around a `Vec`): two `u64`s would be one
    /// slot. The values live as long as the loop, or until
    /// [`Loop::remove_state`].
    ///
    /// ```
    /// #[derive(Default)]
    /// struct Counts { ticks: u32 }
    ///
    /// let mut lp = eventide::Loop::new()?;
    /// lp.insert_state(Counts::default());
    /// lp.set_interval(std::time::Duration::from_millis(1), |lp, me| {
    ///     let counts = lp.state_mut::<Counts>().unwrap();
    ///     counts.ticks += 1;
    ///     if counts.ticks == 3 {
    ///         lp.clear_timer(me);
    ///     }
    /// });
    /// lp.run()?;
    /// assert_eq!(lp.state::<Counts>().unwrap().ticks, 3);
    /// # Ok::<(), eventide::Error>(())
    /// ```
    pub fn insert_state<T: 'static>(&mut self, state: T) -> Option<T> {
        let old = self.states.insert(TypeId::of::<T>(), Box::new(state))?;
        Some(
            *old.downcast::<T>()
                .expect("state stored under its own type"),
        )
    }

    /// The stored state of type `T`, if any (see [`Loop::insert_state`]).
    pub fn state<T: 'static>(&self) -> Option<&T> {
        self.states.get(&TypeId::of::<T>())?.downcast_ref()
    }

    /// The stored state of type `T`, mutably, if any. It borrows the loop:
    /// to call the loop while changing the state, use [`Loop::with_state`].
    pub fn state_mut<T: 'static>(&mut self) -> Option<&mut T> {
        self.states.get_mut(&TypeId::of::<T>())?.downcast_mut()
    }

    /// Takes the stored state of type `T` out of the loop.
    pub fn remove_state<T: 'static>(&mut self) -> Option<T> {
        let state = self.states.remove(&TypeId::of::<T>())?;
        Some(
            *state
                .downcast::<T>()
                .expect("state stored under its own type"),
        )
    }

    /// Runs `f` with the loop and the stored state of type `T` together,
    /// so that `f` may start timers or I/O while it changes the state;
    /// `None` (and `f` not called) if there is no such state.
    ///
    /// The state is out of the store while `f` runs (`state::<T>()` is
    /// `None` there, and a nested `with_state::<T>` finds nothing); it is
    /// put back when `f` returns or panics, unless `f` stored another `T`
    /// meanwhile, which then stays.
    ///
    /// ```
    /// struct Log(Vec<String>);
    ///
    /// let mut lp = eventide::Loop::new()?;
    /// lp.insert_state(Log(Vec::new()));
    /// lp.set_immediate(|lp| {
    ///     lp.with_state(|lp, log: &mut Log| {
    ///         log.0.push("immediate".into());
    ///         lp.next_tick(|lp| lp.state_mut::<Log>().unwrap().0.push("tick".into()));
    ///     });
    /// });
    /// lp.run()?;
    /// assert_eq!(lp.state::<Log>().unwrap().0, ["immediate", "tick"]);
    /// # Ok::<(), eventide::Error>(())
    /// ```
    pub fn with_state<T: 'static, R>(
        &mut self,
        f: impl FnOnce(&mut Loop, &mut T) -> R,
    ) -> Option<R> {
        let key = TypeId::of::<T>();
        let mut state = self.states.remove(&key)?;
        let value = state
            .downcast_mut::<T>()
            .expect("state stored under its own type");
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| f(self, value)));
        self.states.entry(key).or_insert(state);
        match outcome {
            Ok(result) => Some(result),
            Err(payload) => panic::resume_unwind(payload),
        }
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
        self.refresh_call_mode();
    }

    /// Runs `callback` on the next turn, in the pending phase, after the
    /// timers and before idle hooks: libuv's pending callbacks (deferred I/O
    /// results). Used for results that are known at once, so that no
    /// callback runs inside the call that asked for it.
    #[track_caller]
    pub fn defer(&mut self, callback: impl FnOnce(&mut Loop) + 'static) {
        self.pending
            .push_back((Box::new(callback), std::panic::Location::caller()));
    }

    /// Queues `callback` to run right after the current callback, before
    /// any other callback, timer or I/O (Node's `process.nextTick`). The
    /// queue drains completely, ticks added meanwhile included.
    #[track_caller]
    pub fn next_tick(&mut self, callback: impl FnOnce(&mut Loop) + 'static) {
        self.ticks
            .push_back((Box::new(callback), std::panic::Location::caller()));
    }

    /// Queues `callback` as a microtask (Node's `queueMicrotask`, and what a
    /// settled promise's reactions are): after each callback the loop runs
    /// every next-tick, then every microtask, and repeats until both are
    /// empty.
    pub fn queue_microtask(&mut self, callback: impl FnOnce(&mut Loop) + 'static) {
        // Tasks woken before this call go first: one FIFO (task module).
        self.tasks.flush_woken(&mut self.microtasks);
        self.microtasks
            .push_back(crate::task::Micro::Call(Box::new(callback)));
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
    /// The error a callback gave [`Loop::fail`];
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
        // A callback's panic (or a failure) that left the run: the
        // callback is over.
        self.diag_end();
        match result {
            Ok(Ok(alive)) => Ok(alive),
            Ok(Err(error)) => {
                self.stop_requested = false;
                Err(error)
            }
            Err(payload) => {
                // The run is over: a stop asked for in it is spent, as on
                // return.
                self.stop_requested = false;
                if payload.is::<Failed>()
                    && let Some(error) = self.failure.take()
                {
                    return Err(error);
                }
                panic::resume_unwind(payload)
            }
        }
    }

    /// After a phase: a failure ([`Loop::fail`]) not yet carried out of
    /// the loop (it was recorded where nothing could unwind: a panic
    /// handler, a `panic = "abort"` build) ends the run here.
    #[inline]
    fn check_failed(&mut self) -> Result<()> {
        if self.failure.is_none() {
            return Ok(());
        }
        match self.failure.take() {
            None => Ok(()),
            Some(error) => Err(error),
        }
    }

    /// The turns, in libuv's order: timers, pending, idle, prepare, poll,
    /// check, close. (Like libuv's `uv_run`, the default mode runs the
    /// timers once before the first turn, and each turn ends with them.)
    fn turns(&mut self, mode: RunMode) -> Result<bool> {
        self.metrics.run_started();
        if self.metrics.phase_timing() {
            self.turns_marked::<crate::metrics::Timed>(mode)
        } else {
            self.turns_marked::<crate::metrics::Untimed>(mode)
        }
    }

    /// [`Loop::turns`], with `M` at the phase boundaries (see the metrics
    /// module: nothing, or a clock read).
    fn turns_marked<M: crate::metrics::PhaseMarks>(&mut self, mode: RunMode) -> Result<bool> {
        use crate::metrics::PhaseKind;
        M::begin(self);
        // Work the main program queued outside any callback starts now.
        self.work.end_burst();
        // What the main program queued with next_tick runs before the loop.
        self.drain_ticks();
        self.check_failed()?;
        let mut alive = self.alive();
        if !alive {
            self.update_time();
        }
        if mode == RunMode::Default && alive && !self.stop_requested {
            self.update_time_lazily();
            self.run_timers();
            self.check_failed()?;
        }
        M::mark(self, PhaseKind::Timers);
        while alive && !self.stop_requested {
            self.metrics.turns += 1;
            let can_sleep = self.pending.is_empty() && !self.hooks.has_idle();
            self.run_pending();
            M::mark(self, PhaseKind::Pending);
            self.run_hooks(crate::hooks::Phase::Idle);
            self.run_hooks(crate::hooks::Phase::Prepare);
            self.check_failed()?;
            M::mark(self, PhaseKind::IdlePrepare);
            let block = mode == RunMode::Default || (mode == RunMode::Once && can_sleep);
            let wait = if block {
                self.poll_wait()
            } else {
                PollWait::Now
            };
            self.poll(wait)?;
            M::mark(self, PhaseKind::Poll);
            self.run_pending();
            M::mark(self, PhaseKind::Pending);
            self.run_check();
            M::mark(self, PhaseKind::Check);
            self.run_closing();
            self.check_failed()?;
            M::mark(self, PhaseKind::Close);
            self.update_time_lazily();
            self.run_timers();
            self.check_failed()?;
            M::mark(self, PhaseKind::Timers);
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
    // Inlined into both compilations of the turn loop (metrics: with and
    // without phase timing), as into the one loop there was before.
    #[inline(always)]
    fn poll_wait(&mut self) -> PollWait {
        let busy = self.stop_requested
            || self.failure.is_some()
            || !self.alive()
            || !self.pending.is_empty()
            || self.hooks.has_idle()
            || self.referenced_immediates()
            || !self.closing.is_empty()
            || self.work.has_ready();
        if busy {
            return PollWait::Now;
        }
        match self.wheel.next_deadline() {
            Some(deadline) => PollWait::Until(deadline),
            None => PollWait::Forever,
        }
    }

    /// The poll phase: wait for I/O (or a wake-up), then run what arrived:
    /// finished pool work, closures posted from other threads.
    // Inlined into both compilations of the turn loop (metrics: with and
    // without phase timing), as into the one loop there was before.
    #[inline(always)]
    fn poll(&mut self, wait: PollWait) -> Result<()> {
        // Callbacks end their bursts; this is for work queued elsewhere.
        self.work.end_burst();
        // A timer's deadline is absolute: the timeout is taken against the
        // clock, not the cached time (callbacks since the turn began may
        // have taken a while), and from the reading that also starts the
        // metrics' wait, so a turn reads the clock once for both.
        let mut start = None;
        let timeout = match wait {
            PollWait::Now => Some(Duration::ZERO),
            PollWait::Forever => None,
            PollWait::Until(deadline) => {
                let now = crate::clock::mono_ns();
                start = Some(now);
                Some(Duration::from_millis(
                    deadline.saturating_sub(self.clock.ms_at(now)),
                ))
            }
        };
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
            let start = start.unwrap_or_else(crate::clock::mono_ns);
            let waited = self.reactor.wait(timeout);
            self.metrics.waited(
                start,
                crate::clock::mono_ns(),
                timeout != Some(Duration::ZERO),
            );
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

    #[inline]
    fn run_pending(&mut self) {
        if !self.pending.is_empty() {
            self.run_pending_queue();
        }
    }

    #[inline(never)]
    fn run_pending_queue(&mut self) {
        // Only what was deferred before this phase began: a callback that
        // defers again waits for the next turn.
        for _ in 0..self.pending.len() {
            let Some((task, site)) = self.pending.pop_front() else {
                break;
            };
            self.metrics.callbacks.pending += 1;
            self.invoke_as(crate::diag::Kind::Pending, Some(site), task);
        }
    }

    /// The check phase: check hooks, then the immediates queued before the
    /// phase began (one queued meanwhile waits for the next turn).
    // Inlined into both compilations of the turn loop (metrics: with and
    // without phase timing), as into the one loop there was before.
    #[inline(always)]
    fn run_check(&mut self) {
        self.run_hooks(crate::hooks::Phase::Check);
        for _ in 0..self.immediate_order.len() {
            let Some(id) = self.immediate_order.pop_front() else {
                break;
            };
            if let Some((task, site)) = self.immediates.remove(id) {
                if !self.unref_immediates.is_empty() {
                    self.unref_immediates.remove(&id);
                }
                self.metrics.callbacks.immediates += 1;
                self.invoke_as(crate::diag::Kind::Immediate, Some(site), task);
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
            self.metrics.callbacks.closes += 1;
            self.note_call(crate::diag::Kind::Close, None);
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

    /// [`Loop::invoke`] for a callback of `kind` registered at `site`.
    #[inline(always)]
    pub(crate) fn invoke_as(
        &mut self,
        kind: crate::diag::Kind,
        site: Option<crate::diag::Site>,
        task: impl FnOnce(&mut Loop),
    ) {
        self.guarded_as(kind, site, task);
        self.drain_ticks();
    }

    /// Runs `f` with the loop, for a call site that has nothing to set
    /// right if it panics: the panic goes to the handler (and `None` comes
    /// back) or, without one, on out of `run()`. What it is for the
    /// detector and tracing: what `note_call` said.
    ///
    /// Afterwards, the work the callback queued is announced to the pool
    /// (one wakeup for all of it, see `Work::end_burst`).
    #[inline]
    pub(crate) fn guarded<R>(&mut self, f: impl FnOnce(&mut Loop) -> R) -> Option<R> {
        if matches!(self.call_mode, crate::diag::CallMode::Plain) {
            // No panic handler, no detector, no tracing: nothing to catch
            // the panic for, it may unwind from here. (The most common
            // path, W3's: no `catch_unwind` frame to set up.)
            let value = f(self);
            self.work.end_burst();
            return Some(value);
        }
        let call = self.take_call();
        self.guarded_as(call.kind, call.site, f)
    }

    /// [`Loop::guarded`] for a callback of `kind` registered at `site`
    /// (the hot paths: nothing stored when nobody listens; with the
    /// detector alone, its stores and nothing else).
    #[inline(always)]
    pub(crate) fn guarded_as<R>(
        &mut self,
        kind: crate::diag::Kind,
        site: Option<crate::diag::Site>,
        f: impl FnOnce(&mut Loop) -> R,
    ) -> Option<R> {
        match self.call_mode {
            crate::diag::CallMode::Plain => {
                let value = f(self);
                self.work.end_burst();
                Some(value)
            }
            crate::diag::CallMode::Watched(watch) => {
                // A panic unwinding from here skips `end`: `run_mode`
                // ends the callback.
                watch.begin(kind, site);
                let value = f(self);
                watch.end();
                self.work.end_burst();
                Some(value)
            }
            crate::diag::CallMode::General => {
                self.guarded_watched(crate::diag::Call { kind, site }, f)
            }
        }
    }

    /// [`Loop::guarded`] with a panic handler, the detector or tracing on.
    #[inline]
    fn guarded_watched<R>(
        &mut self,
        call: crate::diag::Call,
        f: impl FnOnce(&mut Loop) -> R,
    ) -> Option<R> {
        if self.panic_handler.is_none() {
            // A panic unwinding from here skips `diag_end`: `run_mode`
            // calls it.
            #[cfg(feature = "tracing")]
            let span = crate::diag::callback_span(call);
            #[cfg(feature = "tracing")]
            let _entered = span.enter();
            self.diag_begin(call);
            let value = f(self);
            self.diag_end();
            self.work.end_burst();
            return Some(value);
        }
        match self.catching_watched(call, f) {
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
    /// a `run()` after an uncaught panic finds a consistent loop. What it
    /// is for the detector and tracing: what `note_call` said.
    pub(crate) fn catching<R>(&mut self, f: impl FnOnce(&mut Loop) -> R) -> Result<R, Panic> {
        let call = self.take_call();
        self.catching_as(call.kind, call.site, f)
    }

    /// [`Loop::catching`] for a callback of `kind` registered at `site`.
    #[inline]
    pub(crate) fn catching_as<R>(
        &mut self,
        kind: crate::diag::Kind,
        site: Option<crate::diag::Site>,
        f: impl FnOnce(&mut Loop) -> R,
    ) -> Result<R, Panic> {
        match self.call_mode {
            crate::diag::CallMode::Plain => {
                let outcome = panic::catch_unwind(AssertUnwindSafe(|| f(self)));
                self.work.end_burst();
                outcome
            }
            crate::diag::CallMode::Watched(watch) => {
                watch.begin(kind, site);
                let outcome = panic::catch_unwind(AssertUnwindSafe(|| f(self)));
                watch.end();
                self.work.end_burst();
                outcome
            }
            crate::diag::CallMode::General => {
                self.catching_watched(crate::diag::Call { kind, site }, f)
            }
        }
    }

    /// [`Loop::catching_as`] with a panic handler, the detector or
    /// tracing on.
    fn catching_watched<R>(
        &mut self,
        call: crate::diag::Call,
        f: impl FnOnce(&mut Loop) -> R,
    ) -> Result<R, Panic> {
        #[cfg(feature = "tracing")]
        let span = crate::diag::callback_span(call);
        #[cfg(feature = "tracing")]
        let _entered = span.enter();
        self.diag_begin(call);
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| f(self)));
        self.diag_end();
        self.work.end_burst();
        outcome
    }

    /// How callbacks run now (see `Loop::guarded_as`).
    fn refresh_call_mode(&mut self) {
        use crate::diag::CallMode;
        self.call_mode = if self.panic_handler.is_some() || cfg!(feature = "tracing") {
            CallMode::General
        } else {
            match &self.detector {
                None => CallMode::Plain,
                Some(detector) => CallMode::Watched(detector.watch),
            }
        };
    }

    /// A callback's panic, once its call site is consistent again: the
    /// handler gets it, or, without one, it unwinds out of `run()`.
    pub(crate) fn panicked(&mut self, payload: Panic) {
        // A failure is no panic: it leaves `run()` whatever the handler.
        if payload.is::<Failed>() {
            panic::resume_unwind(payload)
        }
        crate::diag::note_panic();
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
    ///
    /// A failure ([`Loop::fail`]) comes back here as a payload too, in
    /// both modes, for the caller to pass to [`Loop::panicked`] (which
    /// sends it on out of `run()`, never to the handler).
    pub(crate) fn drain_ticks_catching(&mut self) -> Result<(), Panic> {
        if self.has_panic_handler() {
            // The ticks' panics go to the handler: nothing unwinds here.
            if self.drain_ticks_until_failed() {
                return Err(Box::new(Failed));
            }
            return Ok(());
        }
        panic::catch_unwind(AssertUnwindSafe(|| self.drain_ticks()))
    }

    /// Whether next-ticks or microtasks are queued.
    #[inline]
    pub(crate) fn has_ticks(&self) -> bool {
        !self.ticks.is_empty() || !self.microtasks.is_empty() || self.tasks.has_woken()
    }

    /// Node's `processTicksAndRejections`: all ticks (including new ones),
    /// then all microtasks, until both queues are empty.
    ///
    /// Every callback is followed by this, once its call site has put its
    /// structures back in order; so this is where a failure
    /// ([`Loop::fail`]) leaves the loop: before the failed callback's
    /// ticks, or right after the tick that failed, the rest staying queued.
    #[inline]
    pub(crate) fn drain_ticks(&mut self) {
        // The common case, after nearly every callback: nothing queued.
        if self.failure.is_none() && !self.has_ticks() {
            return;
        }
        if self.drain_ticks_until_failed() {
            Self::unwind_failed();
        }
    }

    /// [`Loop::drain_ticks`] without the unwind: stops (the rest queued)
    /// and returns `true` on a failure.
    fn drain_ticks_until_failed(&mut self) -> bool {
        if self.failure.is_some() {
            return true;
        }
        while self.has_ticks() {
            while let Some((tick, site)) = self.ticks.pop_front() {
                self.metrics.callbacks.next_ticks += 1;
                self.guarded_as(crate::diag::Kind::NextTick, Some(site), tick);
                if self.failure.is_some() {
                    return true;
                }
            }
            loop {
                // Tasks woken since the last push join the queue's end.
                let Some(microtask) = self.tasks.next_micro(&mut self.microtasks) else {
                    break;
                };
                self.metrics.callbacks.microtasks += 1;
                match microtask {
                    crate::task::Micro::Call(call) => {
                        self.guarded_as(crate::diag::Kind::Microtask, None, call)
                    }
                    crate::task::Micro::Poll(task) => {
                        self.note_call_of(crate::diag::Kind::Task, crate::task::raw_id(&task));
                        self.guarded(|lp| crate::task::poll(lp, task))
                    }
                };
                if self.failure.is_some() {
                    return true;
                }
            }
        }
        false
    }

    /// Carries a failure out to `run_mode` (see [`Loop::fail`]): where
    /// panics unwind, from here; else it is found after the phase.
    #[cold]
    #[inline(never)]
    fn unwind_failed() {
        #[cfg(panic = "unwind")]
        panic::resume_unwind(Box::new(Failed));
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        self.shared.close();
        // The slots its hyper sleeps hold in this thread's table.
        #[cfg(feature = "hyper")]
        crate::hyper::loop_dropped(self.id);
    }
}

impl Loop {
    /// The loop's own queues, for [`Loop::handles`]: immediates, pending
    /// and closing callbacks, open loop handles and channels, tasks.
    pub(crate) fn list_loop(&self, listing: &mut crate::diag::Listing) {
        use crate::diag::Kind;
        for (id, (_, site)) in self.immediates.iter() {
            let referenced = !self.unref_immediates.contains(&id);
            listing.add(
                Kind::Immediate,
                crate::slab::raw(id),
                referenced,
                referenced,
                Some(site),
            );
        }
        for (n, (_, site)) in self.pending.iter().enumerate() {
            listing.add(Kind::Pending, n as u64, true, true, Some(site));
        }
        for n in 0..self.closing.iter().filter(|c| c.is_some()).count() {
            listing.add(Kind::Close, n as u64, true, true, None);
        }
        let (handles, posted) = self.shared.counts();
        for n in 0..handles + posted {
            listing.add(Kind::Posted, n as u64, true, true, None);
        }
        for n in 0..self.channels.iter().filter(|c| c.is_some()).count() {
            listing.add(Kind::Channel, n as u64, true, true, None);
        }
        self.list_tasks(listing);
    }
}

#[cfg(test)]
impl Loop {
    /// For the crate's unit tests: an unreferenced timer (it keeps nothing
    /// alive) that stops the loop after `after`; the flag says whether it
    /// fired, i.e. whether the loop failed to end by itself in time.
    pub(crate) fn test_watchdog(
        &mut self,
        after: std::time::Duration,
    ) -> std::rc::Rc<std::cell::Cell<bool>> {
        let expired = std::rc::Rc::new(std::cell::Cell::new(false));
        let e = std::rc::Rc::clone(&expired);
        let watchdog = self.set_timeout(after, move |lp| {
            e.set(true);
            lp.stop();
        });
        self.unref_timer(watchdog);
        expired
    }
}
