//! What the loop has done and how busy it is: [`Loop::metrics`].
//!
//! Node gives `performance.eventLoopUtilization()` and
//! `monitorEventLoopDelay()`, libuv `uv_metrics_idle_time()` and
//! `uv_metrics_info()`. This module gives all of them in one call, from
//! counters the loop keeps as it runs. They are always on and cost almost
//! nothing (docs/metrics.md has the figures):
//!
//! - counts are plain integers on the loop, incremented where the loop
//!   dispatches (one add per callback, one per turn);
//! - the clock is read only around a wait for I/O, which is a system call
//!   anyway: the wait's start and end give the idle time (as libuv's) and
//!   the event-loop delay samples;
//! - the pool's queue depth, the reactor's operations in flight and the
//!   bytes in stream write queues are counted when [`Loop::metrics`] is
//!   called, not as they change;
//! - time per phase needs a clock read at every phase boundary: that is
//!   opt-in, [`Loop::set_phase_timing`], and costs nothing while off (the
//!   turn loop is compiled twice, with and without the reads).
//!
//! # Event-loop delay
//!
//! Node's `monitorEventLoopDelay` runs a timer every `resolution` ms and
//! records how long each interval really took. eventide has no polling
//! timer: a *delay sample* is the time from the end of one wait for I/O
//! (the reactor's wait in the poll phase) to the start of the next one, in
//! the same `run`. That is the time the loop spent running callbacks and
//! bookkeeping instead of looking at the operating system: a socket that
//! became readable, a child that exited, a timer that expired just after a
//! wait returned is noticed that much later, at most. It is recorded at
//! every turn whose poll phase calls the reactor, which is every turn of a
//! loop with I/O in flight or timers to wait for. A turn that skips the
//! reactor (nothing in flight and nothing to wait for: a pure chain of
//! immediates) adds its time to the next sample; the stretch after the last
//! wait of a `run` is not recorded (no wait ends it). The first sample of a
//! `run` starts when `run` is called.
//!
//! Node's figures include the timer's own resolution (10 ms by default, so
//! an idle Node process reports a mean of about 10 ms); eventide's do not:
//! an idle loop's samples are the few microseconds each turn takes. Values
//! are nanoseconds, kept in a log-linear histogram with 32 sub-buckets per
//! power of two (each percentile is within 3.2% above the true value; min,
//! max, mean and standard deviation are exact).

use std::fmt;
use std::time::{Duration, Instant};

use crate::event_loop::Loop;

/// How many callbacks of each kind the loop has run (since it was made).
///
/// A callback is counted when the loop calls it, whether or not it
/// panics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Callbacks {
    /// Timer callbacks ([`Loop::set_timeout`], [`Loop::set_interval`]):
    /// one per firing.
    pub timers: u64,
    /// Immediates ([`Loop::set_immediate`]).
    pub immediates: u64,
    /// Callbacks deferred to the pending phase ([`Loop::defer`], and the
    /// loop's own results known at once).
    pub pending: u64,
    /// Idle, prepare and check hooks ([`Loop::start_hook`]): one per hook
    /// per phase.
    pub hooks: u64,
    /// Completions of reactor operations (socket and io_uring file
    /// operations, watchers, signals, sources), each handed to its
    /// handler: libuv's I/O callbacks.
    pub io: u64,
    /// Results of pool work ([`Loop::queue_work`], and file operations the
    /// backend runs on the pool), including cancelled work whose callback
    /// ran with `Cancelled`.
    pub pool: u64,
    /// Closures posted from other threads ([`crate::LoopHandle::post`]).
    pub posted: u64,
    /// Values handed to channel handlers ([`Loop::channel`]), one call
    /// each.
    pub channels: u64,
    /// Close callbacks ([`Loop::close_then`], and handles' close phase).
    pub closes: u64,
    /// Next-tick callbacks ([`Loop::next_tick`]).
    pub next_ticks: u64,
    /// Microtasks ([`Loop::queue_microtask`]) and polls of local tasks
    /// ([`Loop::spawn_local`]).
    pub microtasks: u64,
}

impl Callbacks {
    /// All callbacks, of every kind.
    pub fn total(&self) -> u64 {
        self.timers
            + self.immediates
            + self.pending
            + self.hooks
            + self.io
            + self.pool
            + self.posted
            + self.channels
            + self.closes
            + self.next_ticks
            + self.microtasks
    }

    /// What arrived from outside the loop's thread in poll phases: I/O
    /// completions, pool results, posted closures and channel values
    /// (the `events` of [`Metrics`]).
    pub fn events(&self) -> u64 {
        self.io + self.pool + self.posted + self.channels
    }
}

/// Node's `performance.eventLoopUtilization()`: how the loop's time
/// divides into idle (blocked in the poll phase's wait) and active (the
/// rest), in milliseconds, and `active / (idle + active)`.
///
/// [`Loop::utilization`] gives the figures since the loop first ran;
/// [`Utilization::between`] and [`Loop::utilization_since`] give the
/// difference between two readings, as Node's two- and one-argument
/// forms do.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Utilization {
    /// Milliseconds blocked waiting for I/O or a timer (Node's `idle`).
    pub idle: f64,
    /// Milliseconds not idle since the loop first ran (Node's `active`):
    /// callbacks, the loop's own work, and time spent outside
    /// [`Loop::run`] after the first run (Node has no such time).
    pub active: f64,
    /// `active / (idle + active)`: 0 before the loop has ever run, NaN for
    /// a difference of two equal readings (both as Node).
    pub utilization: f64,
}

impl Utilization {
    /// Node's `eventLoopUtilization(util1, util2)`: `util1 - util2`, field
    /// by field, with the utilization of the differences. Give the later
    /// reading first; the other order gives negative times (as Node).
    ///
    /// ```
    /// use eventide::metrics::Utilization;
    /// let mut lp = eventide::Loop::new()?;
    /// lp.set_timeout(std::time::Duration::from_millis(5), |_| {});
    /// let before = lp.utilization();
    /// lp.run()?;
    /// let during = Utilization::between(lp.utilization(), before);
    /// assert!(during.idle >= 0.0 && during.active >= 0.0);
    /// # Ok::<(), eventide::Error>(())
    /// ```
    pub fn between(util1: Utilization, util2: Utilization) -> Utilization {
        let idle = util1.idle - util2.idle;
        let active = util1.active - util2.active;
        Utilization {
            idle,
            active,
            utilization: active / (idle + active),
        }
    }
}

/// How many sub-buckets each power of two has (5 bits of the value).
const SUB_BITS: u32 = 5;
const SUB: usize = 1 << SUB_BITS;
/// Values below `2 * SUB` have a bucket each (two rows of `SUB`); above,
/// each power of two from `2^(SUB_BITS+1)` up to `2^63` has `SUB` buckets.
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB;

/// The bucket of `value`: exact below 64, then 32 per power of two.
fn bucket_of(value: u64) -> usize {
    if value < 2 * SUB as u64 {
        return value as usize;
    }
    let exponent = 63 - value.leading_zeros();
    let shift = exponent - SUB_BITS;
    let mantissa = (value >> shift) as usize; // in SUB..2*SUB
    (shift as usize + 1) * SUB + (mantissa - SUB)
}

/// The largest value in bucket `index`.
fn bucket_high(index: usize) -> u64 {
    if index < 2 * SUB {
        return index as u64;
    }
    let shift = (index / SUB - 1) as u32;
    let mantissa = (index % SUB + SUB) as u64;
    let low = mantissa << shift;
    low.saturating_add((1u64 << shift) - 1)
}

/// The event-loop delay histogram, as Node's `monitorEventLoopDelay()`
/// gives (see the [module documentation](self) for what one sample is).
/// Read it with [`Loop::delay_histogram`]; [`Loop::metrics`] has a
/// summary ([`DelaySummary`]).
#[derive(Clone)]
pub struct DelayHistogram {
    buckets: Box<[u64]>,
    count: u64,
    min: u64,
    max: u64,
    sum: u128,
    sum_squares: f64,
}

impl Default for DelayHistogram {
    fn default() -> Self {
        DelayHistogram {
            buckets: vec![0; BUCKETS].into_boxed_slice(),
            count: 0,
            min: u64::MAX,
            max: 0,
            sum: 0,
            sum_squares: 0.0,
        }
    }
}

impl fmt::Debug for DelayHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.summary(), f)
    }
}

impl DelayHistogram {
    /// Adds one sample.
    pub fn record(&mut self, delay: Duration) {
        self.record_ns(u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX));
    }

    /// [`DelayHistogram::record`] of a sample in nanoseconds.
    #[inline]
    fn record_ns(&mut self, ns: u64) {
        self.buckets[bucket_of(ns)] += 1;
        self.count += 1;
        self.min = self.min.min(ns);
        self.max = self.max.max(ns);
        self.sum += u128::from(ns);
        self.sum_squares += (ns as f64) * (ns as f64);
    }

    /// Forgets every sample (Node's `histogram.reset()`).
    pub fn reset(&mut self) {
        *self = DelayHistogram::default();
    }

    /// How many samples (Node's `count`).
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The smallest sample; zero without samples.
    pub fn min(&self) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.min)
    }

    /// The largest sample; zero without samples.
    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.max)
    }

    /// The mean of the samples; zero without samples.
    pub fn mean(&self) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let mean = self.sum / u128::from(self.count);
        Duration::from_nanos(u64::try_from(mean).unwrap_or(u64::MAX))
    }

    /// The samples' standard deviation (of the population, as Node's
    /// histogram computes it); zero without samples.
    pub fn stddev(&self) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let n = self.count as f64;
        let mean = self.sum as f64 / n;
        let variance = (self.sum_squares / n - mean * mean).max(0.0);
        Duration::from_nanos(variance.sqrt().round() as u64)
    }

    /// The value at `percentile` (0..=100, clamped), as HdrHistogram's
    /// `getValueAtPercentile` (Node's `histogram.percentile(p)`): the
    /// smallest bucket under which at least `percentile`% of the samples
    /// lie, given as that bucket's highest value (at most 3.2% above the
    /// true sample), never above the maximum nor below the minimum. Zero
    /// without samples.
    pub fn percentile(&self, percentile: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let percentile = if percentile.is_nan() {
            0.0
        } else {
            percentile.clamp(0.0, 100.0)
        };
        if percentile == 0.0 {
            return self.min();
        }
        let wanted = ((percentile / 100.0) * self.count as f64).ceil() as u64;
        let wanted = wanted.clamp(1, self.count);
        let mut seen = 0;
        for (index, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= wanted {
                let value = bucket_high(index).clamp(self.min, self.max);
                return Duration::from_nanos(value);
            }
        }
        Duration::from_nanos(self.max)
    }

    /// The summary [`Loop::metrics`] carries.
    pub fn summary(&self) -> DelaySummary {
        DelaySummary {
            count: self.count,
            min: self.min(),
            max: self.max(),
            mean: self.mean(),
            stddev: self.stddev(),
            p50: self.percentile(50.0),
            p90: self.percentile(90.0),
            p99: self.percentile(99.0),
            p999: self.percentile(99.9),
        }
    }
}

/// The event-loop delay at a glance (see [`DelayHistogram`] for any
/// percentile).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DelaySummary {
    /// How many samples.
    pub count: u64,
    /// The smallest sample.
    pub min: Duration,
    /// The largest sample.
    pub max: Duration,
    /// Their mean.
    pub mean: Duration,
    /// Their standard deviation.
    pub stddev: Duration,
    /// The median.
    pub p50: Duration,
    /// The 90th percentile.
    pub p90: Duration,
    /// The 99th percentile.
    pub p99: Duration,
    /// The 99.9th percentile.
    pub p999: Duration,
}

/// Time spent in each phase of the turn, when [`Loop::set_phase_timing`]
/// is on (only the time while it was on).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PhaseTimes {
    /// The timers phase (and the next-ticks of the main program, before
    /// the first turn).
    pub timers: Duration,
    /// The pending phase (both of its runs in a turn: before the hooks,
    /// and after the poll for what the poll deferred).
    pub pending: Duration,
    /// The idle and prepare hooks.
    pub idle_prepare: Duration,
    /// The poll phase, its wait included (the wait alone is
    /// [`PhaseTimes::poll_wait`]).
    pub poll: Duration,
    /// Of `poll`, the time in the reactor's wait (blocking or not).
    pub poll_wait: Duration,
    /// The check phase: check hooks and immediates.
    pub check: Duration,
    /// The close phase.
    pub close: Duration,
}

/// One lane of the blocking pool, as seen from this loop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LaneMetrics {
    /// This loop's jobs queued in the lane, not started by a worker yet.
    pub queued: usize,
    /// Jobs whose queue wait was measured (one in
    /// [`QUEUE_WAIT_SAMPLING`], see there).
    pub sampled: u64,
    /// The mean queue wait of the measured jobs: from the submission on
    /// the loop thread to the moment a worker started the job.
    pub mean_wait: Duration,
    /// The longest measured queue wait.
    pub max_wait: Duration,
}

/// The blocking pool's lanes (see [`crate::WorkClass`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolMetrics {
    /// File work and [`Loop::queue_work`].
    pub normal: LaneMetrics,
    /// Slow I/O (DNS lookups).
    pub slow: LaneMetrics,
}

/// The queue wait is measured for one job in this many of each lane (the
/// first, then every `QUEUE_WAIT_SAMPLING`th): two clock reads per job
/// would cost W6 (a million small jobs) several percent.
pub const QUEUE_WAIT_SAMPLING: u64 = 8;

/// Everything [`Loop::metrics`] reports.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Metrics {
    /// Turns of the loop run (libuv's `loop_count`).
    pub turns: u64,
    /// What arrived from outside the loop's thread and was handled in
    /// poll phases: I/O completions, pool results, posted closures,
    /// channel values ([`Callbacks::events`]).
    pub events: u64,
    /// Callbacks run, by kind.
    pub callbacks: Callbacks,
    /// Time blocked in the poll phase's wait (libuv's
    /// `uv_metrics_idle_time`: only waits that could block count).
    pub idle_time: Duration,
    /// Node's `eventLoopUtilization()` since the loop first ran.
    pub utilization: Utilization,
    /// The event-loop delay histogram's summary.
    pub delay: DelaySummary,
    /// Time per phase, if [`Loop::set_phase_timing`] was ever on.
    pub phases: Option<PhaseTimes>,
    /// The pool: queue depth and queue wait per lane.
    pub pool: PoolMetrics,
    /// Reactor operations in flight (submitted, final completion not yet
    /// seen): reads, writes, accepts, io_uring file operations...
    pub reactor_in_flight: usize,
    /// Bytes queued in the loop's stream write queues (TCP, Unix, pipes)
    /// and not yet taken by the kernel: the sum of every stream's
    /// `write_queue_size`.
    pub write_queue_bytes: usize,
}

impl fmt::Display for Metrics {
    /// A readable multi-line report.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.callbacks;
        let u = &self.utilization;
        let d = &self.delay;
        writeln!(f, "turns {}, events {}", self.turns, self.events)?;
        writeln!(
            f,
            "callbacks {}: timers {}, immediates {}, pending {}, hooks {}, io {}, pool {}, \
             posted {}, channels {}, closes {}, next-ticks {}, microtasks {}",
            c.total(),
            c.timers,
            c.immediates,
            c.pending,
            c.hooks,
            c.io,
            c.pool,
            c.posted,
            c.channels,
            c.closes,
            c.next_ticks,
            c.microtasks
        )?;
        writeln!(
            f,
            "idle {:?}; utilization: idle {:.3} ms, active {:.3} ms, {:.1}%",
            self.idle_time,
            u.idle,
            u.active,
            u.utilization * 100.0
        )?;
        writeln!(
            f,
            "delay ({} samples): min {:?}, mean {:?}, stddev {:?}, p50 {:?}, p90 {:?}, \
             p99 {:?}, p99.9 {:?}, max {:?}",
            d.count, d.min, d.mean, d.stddev, d.p50, d.p90, d.p99, d.p999, d.max
        )?;
        if let Some(p) = &self.phases {
            writeln!(
                f,
                "phases: timers {:?}, pending {:?}, idle+prepare {:?}, poll {:?} \
                 (wait {:?}), check {:?}, close {:?}",
                p.timers, p.pending, p.idle_prepare, p.poll, p.poll_wait, p.check, p.close
            )?;
        }
        for (name, lane) in [("normal", &self.pool.normal), ("slow", &self.pool.slow)] {
            writeln!(
                f,
                "pool {name}: {} queued; wait (of {} sampled) mean {:?}, max {:?}",
                lane.queued, lane.sampled, lane.mean_wait, lane.max_wait
            )?;
        }
        write!(
            f,
            "reactor: {} in flight; write queues: {} bytes",
            self.reactor_in_flight, self.write_queue_bytes
        )
    }
}

/// A lane's queue-wait sums, on the loop thread.
#[derive(Default)]
pub(crate) struct LaneWait {
    /// Jobs submitted to the lane (for the sampling).
    pub(crate) submitted: u64,
    sampled: u64,
    total_ns: u128,
    max_ns: u64,
}

impl LaneWait {
    /// Whether the job about to be submitted is measured.
    #[inline]
    pub(crate) fn sample_next(&mut self) -> bool {
        let sample = self.submitted.is_multiple_of(QUEUE_WAIT_SAMPLING);
        self.submitted += 1;
        sample
    }

    /// A measured job's wait, when its result comes back.
    pub(crate) fn record(&mut self, wait: Duration) {
        let ns = u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX);
        self.sampled += 1;
        self.total_ns += u128::from(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    fn report(&self, queued: usize) -> LaneMetrics {
        let mean = if self.sampled == 0 {
            0
        } else {
            u64::try_from(self.total_ns / u128::from(self.sampled)).unwrap_or(u64::MAX)
        };
        LaneMetrics {
            queued,
            sampled: self.sampled,
            mean_wait: Duration::from_nanos(mean),
            max_wait: Duration::from_nanos(self.max_ns),
        }
    }
}

/// The phases [`PhaseTimes`] splits a turn into.
#[derive(Clone, Copy)]
pub(crate) enum PhaseKind {
    Timers,
    Pending,
    IdlePrepare,
    Poll,
    Check,
    Close,
}

/// The loop's counters and clocks (a field of [`Loop`]).
#[derive(Default)]
pub(crate) struct State {
    pub(crate) turns: u64,
    pub(crate) callbacks: Callbacks,
    /// When the loop first ran (Node's `loopStart`).
    started: Option<Instant>,
    /// Nanoseconds blocked in the poll phase's wait.
    idle_ns: u64,
    /// The end of the last wait, or the start of this `run`, in
    /// [`crate::clock::mono_ns`] (0: the loop never ran).
    last_wait_end: u64,
    delay: DelayHistogram,
    pub(crate) lanes: [LaneWait; 2],
    /// Whether the next run times its phases.
    phase_timing: bool,
    phases: Option<PhaseTimes>,
    /// The last phase boundary, while phases are timed.
    last_mark: Option<Instant>,
}

impl State {
    /// At the start of `run`: the first delay sample starts here.
    pub(crate) fn run_started(&mut self) {
        self.started.get_or_insert_with(Instant::now);
        self.last_wait_end = crate::clock::mono_ns();
    }

    /// Whether this run times its phases.
    pub(crate) fn phase_timing(&self) -> bool {
        self.phase_timing
    }

    /// A wait for I/O that took from `start` to `end` (both
    /// [`crate::clock::mono_ns`]: plain integers, the cheapest clock
    /// readings to take and subtract, as this runs at every turn): a delay
    /// sample (the stretch since the last wait ended), and idle time if it
    /// could block. Inlined into the turn loop: a call at every turn
    /// costs more than its few adds.
    #[inline(always)]
    pub(crate) fn waited(&mut self, start: u64, end: u64, blocking: bool) {
        if self.last_wait_end != 0 {
            self.delay
                .record_ns(start.saturating_sub(self.last_wait_end));
        }
        self.last_wait_end = end;
        let waited = end.saturating_sub(start);
        if blocking {
            self.idle_ns += waited;
        }
        if self.last_mark.is_some()
            && let Some(phases) = &mut self.phases
        {
            phases.poll_wait += Duration::from_nanos(waited);
        }
    }

    fn idle(&self) -> Duration {
        Duration::from_nanos(self.idle_ns)
    }
}

/// Phase boundaries in the turn loop, which is compiled once per
/// implementation: [`Untimed`]'s are no code at all.
pub(crate) trait PhaseMarks {
    /// At the start of the turns.
    fn begin(lp: &mut Loop);
    /// At the end of `phase`.
    fn mark(lp: &mut Loop, phase: PhaseKind);
}

/// No phase timing (the default).
pub(crate) struct Untimed;

impl PhaseMarks for Untimed {
    #[inline(always)]
    fn begin(_: &mut Loop) {}
    #[inline(always)]
    fn mark(_: &mut Loop, _: PhaseKind) {}
}

/// Phase timing: one clock read per phase boundary.
pub(crate) struct Timed;

impl PhaseMarks for Timed {
    fn begin(lp: &mut Loop) {
        let state = &mut lp.metrics;
        state.phases.get_or_insert_with(PhaseTimes::default);
        state.last_mark = Some(Instant::now());
    }

    fn mark(lp: &mut Loop, phase: PhaseKind) {
        let state = &mut lp.metrics;
        let now = Instant::now();
        let (Some(last), Some(phases)) = (state.last_mark, &mut state.phases) else {
            return;
        };
        let spent = now.saturating_duration_since(last);
        let slot = match phase {
            PhaseKind::Timers => &mut phases.timers,
            PhaseKind::Pending => &mut phases.pending,
            PhaseKind::IdlePrepare => &mut phases.idle_prepare,
            PhaseKind::Poll => &mut phases.poll,
            PhaseKind::Check => &mut phases.check,
            PhaseKind::Close => &mut phases.close,
        };
        *slot += spent;
        state.last_mark = Some(now);
    }
}

impl Loop {
    /// What the loop has done and how busy it is: counts, idle time,
    /// utilization, event-loop delay, pool queues, I/O in flight, bytes
    /// waiting in write queues (see the [`metrics`](crate::metrics) module
    /// and docs/metrics.md).
    ///
    /// Cheap: the counters are kept as the loop runs; this call adds one
    /// clock read and a walk over the open streams and queued pool jobs.
    ///
    /// ```
    /// let mut lp = eventide::Loop::new()?;
    /// lp.set_immediate(|_| {});
    /// lp.run()?;
    /// let metrics = lp.metrics();
    /// assert_eq!(metrics.callbacks.immediates, 1);
    /// println!("{metrics}");
    /// # Ok::<(), eventide::Error>(())
    /// ```
    pub fn metrics(&self) -> Metrics {
        let state = &self.metrics;
        let (normal, slow) = self.work.queued();
        Metrics {
            turns: state.turns,
            events: state.callbacks.events(),
            callbacks: state.callbacks,
            idle_time: state.idle(),
            utilization: self.utilization(),
            delay: state.delay.summary(),
            phases: state.phases,
            pool: PoolMetrics {
                normal: state.lanes[0].report(normal),
                slow: state.lanes[1].report(slow),
            },
            reactor_in_flight: self.reactor.in_flight(),
            write_queue_bytes: self.io.net.write_queue_bytes(),
        }
    }

    /// Node's `performance.eventLoopUtilization()` with no argument: idle
    /// and active milliseconds since the loop first ran, and their ratio.
    /// All zero before the first [`Loop::run`].
    pub fn utilization(&self) -> Utilization {
        let state = &self.metrics;
        let Some(started) = state.started else {
            return Utilization::default();
        };
        let elapsed = started.elapsed().as_secs_f64() * 1e3;
        let idle = state.idle().as_secs_f64() * 1e3;
        let active = elapsed - idle;
        Utilization {
            idle,
            active,
            utilization: active / (idle + active),
        }
    }

    /// Node's `performance.eventLoopUtilization(util1)`: the utilization
    /// since the reading `earlier` (`Utilization::between(now, earlier)`).
    pub fn utilization_since(&self, earlier: Utilization) -> Utilization {
        Utilization::between(self.utilization(), earlier)
    }

    /// The event-loop delay histogram (Node's `monitorEventLoopDelay()`,
    /// always enabled; see the [`metrics`](crate::metrics) module for what
    /// a sample is).
    pub fn delay_histogram(&self) -> &DelayHistogram {
        &self.metrics.delay
    }

    /// Forgets the delay samples so far (Node's `histogram.reset()`).
    pub fn reset_delay_histogram(&mut self) {
        self.metrics.delay.reset();
    }

    /// Turns the timing of each phase on or off, from the next
    /// [`Loop::run`] on (a run in progress keeps its setting). It costs a
    /// clock read (about 20 ns) at each of the turn's seven phase
    /// boundaries; off, nothing. The times are in [`Metrics::phases`].
    pub fn set_phase_timing(&mut self, on: bool) {
        self.metrics.phase_timing = on;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_bound_their_values() {
        let mut previous = 0;
        for value in (0..5000u64).chain([u64::MAX / 3, u64::MAX - 1, u64::MAX]) {
            let index = bucket_of(value);
            assert!(index < BUCKETS, "{value}");
            assert!(index >= previous || value > 5000, "{value}");
            previous = index;
            assert!(bucket_high(index) >= value, "{value}");
            // At most 1/32 above the value.
            assert!(
                (bucket_high(index) - value) as f64 <= value as f64 / 32.0,
                "{value}"
            );
        }
        for index in 1..BUCKETS {
            assert_eq!(bucket_of(bucket_high(index - 1) + 1), index, "{index}");
        }
    }

    #[test]
    fn percentiles_of_known_delays() {
        let mut h = DelayHistogram::default();
        // 1..=100 ms: the p-th percentile is p ms (within a bucket).
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        assert_eq!(h.count(), 100);
        assert_eq!(h.min(), Duration::from_millis(1));
        assert_eq!(h.max(), Duration::from_millis(100));
        assert_eq!(h.mean(), Duration::from_micros(50_500));
        // Population stddev of 1..=100 is sqrt((100^2 - 1) / 12) ms.
        let expected = ((100.0f64 * 100.0 - 1.0) / 12.0).sqrt() * 1e6;
        assert!((h.stddev().as_nanos() as f64 - expected).abs() < 1.0);
        for p in [1.0, 25.0, 50.0, 90.0, 99.0] {
            let got = h.percentile(p).as_nanos() as f64;
            let want = p * 1e6;
            assert!(
                got >= want && got <= want * (1.0 + 1.0 / 32.0),
                "p{p}: {got}"
            );
        }
        assert_eq!(h.percentile(100.0), h.max());
        assert_eq!(h.percentile(0.0), h.min());
        h.reset();
        assert_eq!(h.count(), 0);
        assert_eq!(h.percentile(50.0), Duration::ZERO);
    }

    #[test]
    fn utilization_between_is_util1_minus_util2_as_node() {
        // node v20: eventLoopUtilization(b, a) with a = {idle 0, active 0},
        // b = {idle 100.25, active 100.49} gives b; (a, b) gives the
        // negated times and the same utilization; (b, b) gives NaN.
        let a = Utilization::default();
        let b = Utilization {
            idle: 100.0,
            active: 300.0,
            utilization: 0.75,
        };
        assert_eq!(Utilization::between(b, a), b);
        let reversed = Utilization::between(a, b);
        assert_eq!((reversed.idle, reversed.active), (-100.0, -300.0));
        assert_eq!(reversed.utilization, 0.75);
        assert!(Utilization::between(b, b).utilization.is_nan());
    }
}
