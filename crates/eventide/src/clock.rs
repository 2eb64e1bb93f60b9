//! The loop's millisecond clock.
//!
//! Node reads the clock at every `setTimeout` (its timers start from "now",
//! not from the turn's cached time), so a program that starts many timers
//! pays for many clock reads. `clock_gettime(CLOCK_MONOTONIC)` through the
//! vDSO costs about 20-25 ns here: a quarter of what starting and
//! cancelling a timer costs in all. On x86-64 with an invariant TSC (one
//! that ticks at a constant rate in every power state, which the kernel
//! also trusts as its own clock source), this clock mostly reads the TSC
//! instead and converts, and falls back to the real clock whenever the
//! conversion could be wrong by even a millisecond.
//!
//! # Why the estimate is exact
//!
//! Every real read is taken between two TSC reads; if those are close
//! together (the thread was not preempted in between), the pair (tick,
//! ns) is *good* and becomes the anchor. The first good pair is the
//! calibration base; once a good pair is at least 1 ms past it, the rate
//! (ns per tick) is known to within a relative error of about 1e-3 (the
//! pairs' own width over the interval; it shrinks as the loop lives on),
//! plus NTP's slewing of the monotonic clock (at most 5e-4).
//!
//! An estimate is made only within one millisecond's worth of ticks of
//! the anchor, so it is off by at most ~1.5 µs; and it is used only when
//! it lies at least [`MARGIN_NS`] (5 µs) away from a millisecond boundary.
//! So the true time is in the same millisecond as the estimate: the
//! millisecond returned is the one a real read would have given. Anything
//! else (no invariant TSC, not calibrated yet, anchor too old, a TSC that
//! went backwards or jumped, too close to a boundary) reads the real clock,
//! which re-anchors.

use std::cell::Cell;
use std::fmt;
use std::ops::{Add, AddAssign, Sub};
use std::time::Duration;

/// A point on a loop's clock: whole milliseconds since that loop was made
/// (what [`crate::Loop::now`] returns; libuv's `uv_now`, Node's
/// `getLibuvNow()`).
///
/// It is only meaningful with the loop that gave it: two loops made at
/// different moments have different origins. Differences are
/// [`Duration`]s; adding a `Duration` truncates it to whole milliseconds
/// (as timer delays are), saturating at the end of time.
///
/// ```
/// use std::time::Duration;
/// let lp = eventide::Loop::new()?;
/// let start = lp.now();
/// let later = start + Duration::from_millis(250);
/// assert_eq!(later - start, Duration::from_millis(250));
/// assert_eq!(later.as_millis(), start.as_millis() + 250);
/// println!("the loop's time: {start}"); // e.g. "3ms"
/// # Ok::<(), eventide::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LoopTime(u64);

impl LoopTime {
    /// The moment the loop was made.
    pub const ZERO: LoopTime = LoopTime(0);

    /// The time `ms` milliseconds after the loop was made.
    pub const fn from_millis(ms: u64) -> LoopTime {
        LoopTime(ms)
    }

    /// Milliseconds since the loop was made.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// The time elapsed since the loop was made.
    pub const fn since_start(self) -> Duration {
        Duration::from_millis(self.0)
    }

    /// `self - earlier`, or zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: LoopTime) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for LoopTime {
    type Output = LoopTime;

    fn add(self, delay: Duration) -> LoopTime {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        LoopTime(self.0.saturating_add(ms))
    }
}

impl AddAssign<Duration> for LoopTime {
    fn add_assign(&mut self, delay: Duration) {
        *self = *self + delay;
    }
}

impl Sub for LoopTime {
    type Output = Duration;

    /// The time between two readings; zero if `earlier` is later (as
    /// `Instant`'s subtraction does since Rust 1.60).
    fn sub(self, earlier: LoopTime) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

impl fmt::Display for LoopTime {
    /// `1234ms`: milliseconds since the loop was made.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Through `pad`, so that widths and alignment (`{:>8}`) apply.
        f.pad(&format!("{}ms", self.0))
    }
}

/// Estimates closer than this to a millisecond boundary are not trusted.
const MARGIN_NS: u64 = 5_000;

/// A real read is usable as an anchor only if the TSC reads around it are
/// at most this many ticks apart (about a microsecond at 2-5 GHz).
const PAIR_TICKS: u64 = 4_096;

/// The calibration interval after which estimates may be made.
const CALIBRATE_NS: u64 = 1_000_000;

const NS_PER_MS: u64 = 1_000_000;

/// A millisecond clock since a fixed epoch (see the module docs).
#[derive(Debug)]
pub(crate) struct Clock {
    /// The epoch, in [`mono_ns`]: a real read is `mono_ns() - epoch`, so
    /// any [`mono_ns`] reading taken for another purpose (the metrics'
    /// readings around each wait) converts to this clock's time exactly
    /// ([`Clock::ms_at`]).
    epoch: u64,
    tsc: Option<Tsc>,
}

impl Clock {
    /// A clock whose epoch is now, reading the TSC where it is exact when
    /// `source` allows it.
    pub(crate) fn new(source: ClockSource) -> Clock {
        let tsc = source == ClockSource::Tsc && Tsc::usable();
        let clock = Clock {
            epoch: mono_ns(),
            tsc: tsc.then(Tsc::default),
        };
        // The first real read is the calibration base.
        clock.read();
        clock
    }

    /// The clock it reads.
    pub(crate) fn source(&self) -> ClockSource {
        if self.tsc.is_some() {
            ClockSource::Tsc
        } else {
            ClockSource::Std
        }
    }

    /// The time in ms since the epoch: what a real read would give.
    #[inline]
    pub(crate) fn ms(&self) -> u64 {
        if let Some(tsc) = &self.tsc
            && let Some(ms) = tsc.estimate(rdtsc())
        {
            return ms;
        }
        self.read()
    }

    /// The time in ms since the epoch at the moment [`mono_ns`] read
    /// `mono`: what a real read then gave (no clock read here).
    #[inline]
    pub(crate) fn ms_at(&self, mono: u64) -> u64 {
        mono.saturating_sub(self.epoch) / NS_PER_MS
    }

    /// Reads the real clock (and anchors the TSC to it).
    #[cold]
    fn read(&self) -> u64 {
        let Some(tsc) = &self.tsc else {
            return self.ms_at(mono_ns());
        };
        let before = rdtsc();
        let ns = mono_ns().saturating_sub(self.epoch);
        let after = rdtsc();
        tsc.observe(before, ns, after);
        ns / NS_PER_MS
    }
}

/// The clock [`mono_ns`] reads: the one `std::time::Instant` reads.
#[cfg(not(target_vendor = "apple"))]
const MONO_CLOCK: libc::clockid_t = libc::CLOCK_MONOTONIC;
/// The clock [`mono_ns`] reads: the one `std::time::Instant` reads.
#[cfg(target_vendor = "apple")]
const MONO_CLOCK: libc::clockid_t = libc::CLOCK_UPTIME_RAW;

/// The monotonic clock (`CLOCK_MONOTONIC`, what `Instant` reads on Linux)
/// in nanoseconds, as one integer: the loop's clock ([`Clock`]) and the
/// metrics' readings at every turn, cheaper to take and to subtract than
/// `Instant`s. Only differences between two readings mean anything.
#[inline]
pub(crate) fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec given, which lives
    // across the call; MONO_CLOCK exists on every supported system.
    unsafe { libc::clock_gettime(MONO_CLOCK, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// The TSC's calibration and anchor; all zero until the first good pair.
#[derive(Debug, Default)]
struct Tsc {
    /// Whether `base_*` holds the first good pair.
    based: Cell<bool>,
    base_tick: Cell<u64>,
    base_ns: Cell<u64>,
    /// The latest good pair.
    anchor_tick: Cell<u64>,
    anchor_ns: Cell<u64>,
    /// Nanoseconds per tick, 32.32 fixed point; 0 until calibrated.
    ns_per_tick: Cell<u64>,
    /// Ticks in a millisecond: how far past the anchor estimates go.
    ticks_per_ms: Cell<u64>,
}

/// The environment variable that chooses the loop's clock when
/// [`LoopBuilder::clock`](crate::LoopBuilder::clock) does not.
pub(crate) const CLOCK_ENV: &str = "EVENTIDE_CLOCK";

/// Which clock a loop reads its time from ([`crate::LoopBuilder::clock`],
/// or the `EVENTIDE_CLOCK` environment variable: `tsc` or `std`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ClockSource {
    /// The default: the CPU's time-stamp counter between two reads of the
    /// system's monotonic clock, where that counter is invariant and the
    /// millisecond it gives is certain; the system clock otherwise (so the
    /// time is the same as [`ClockSource::Std`] gives, read more cheaply).
    #[default]
    Tsc,
    /// The system's monotonic clock (`std::time::Instant`) at every read.
    Std,
}

impl ClockSource {
    /// Parses `EVENTIDE_CLOCK`'s value: `tsc` or `std` (blank is the
    /// default, `tsc`).
    pub(crate) fn parse(value: &str) -> Option<ClockSource> {
        match value.trim() {
            "" | "tsc" => Some(ClockSource::Tsc),
            "std" => Some(ClockSource::Std),
            _ => None,
        }
    }
}

impl Tsc {
    /// Whether this machine has a TSC to rely on (found out once per
    /// process: it reads CPUID and a sysfs file).
    fn usable() -> bool {
        static USABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *USABLE.get_or_init(invariant_tsc)
    }

    /// The ms at TSC reading `now`, if it can be told exactly.
    #[inline]
    fn estimate(&self, now: u64) -> Option<u64> {
        let rate = self.ns_per_tick.get();
        if rate == 0 {
            return None;
        }
        // A TSC that went backwards wraps to a huge distance: refused too.
        let ticks = now.wrapping_sub(self.anchor_tick.get());
        if ticks > self.ticks_per_ms.get() {
            return None;
        }
        let ns = self.anchor_ns.get() + ((u128::from(ticks) * u128::from(rate)) >> 32) as u64;
        let within = ns % NS_PER_MS;
        if !(MARGIN_NS..=NS_PER_MS - MARGIN_NS).contains(&within) {
            return None;
        }
        Some(ns / NS_PER_MS)
    }

    /// Takes a real read `ns` made between TSC readings `before` and
    /// `after`: anchors to it, and calibrates, if the pair is good.
    fn observe(&self, before: u64, ns: u64, after: u64) {
        let width = after.wrapping_sub(before);
        if width > PAIR_TICKS {
            // Preempted between the reads (or a TSC gone wrong): an
            // estimate from the old anchor may be wrong now; stop making
            // them until a good pair comes.
            self.ticks_per_ms.set(0);
            return;
        }
        let tick = before + width / 2;
        if !self.based.get() {
            self.based.set(true);
            self.base_tick.set(tick);
            self.base_ns.set(ns);
        }
        self.anchor_tick.set(tick);
        self.anchor_ns.set(ns);
        let ticks = tick.wrapping_sub(self.base_tick.get());
        let span = ns.saturating_sub(self.base_ns.get());
        if span < CALIBRATE_NS || ticks == 0 || ticks > u64::MAX / 2 {
            self.ticks_per_ms.set(0);
            return;
        }
        let rate = (u128::from(span) << 32) / u128::from(ticks);
        let Ok(rate) = u64::try_from(rate) else {
            self.ticks_per_ms.set(0);
            return;
        };
        if rate == 0 {
            return;
        }
        self.ns_per_tick.set(rate);
        let per_ms = (u128::from(NS_PER_MS) << 32) / u128::from(rate);
        self.ticks_per_ms.set(u64::try_from(per_ms).unwrap_or(0));
    }
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn rdtsc() -> u64 {
    // SAFETY: RDTSC exists on every x86-64 CPU and has no preconditions; it
    // only reads the time-stamp counter.
    unsafe { std::arch::x86_64::_rdtsc() }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn rdtsc() -> u64 {
    0
}

/// Whether the CPU says its TSC is invariant (CPUID 8000_0007h, EDX bit 8)
/// and the kernel uses it as its clock source: then it ticks at a constant
/// rate, in step on every core.
#[cfg(target_arch = "x86_64")]
fn invariant_tsc() -> bool {
    use std::arch::x86_64::__cpuid;
    let max_extended = __cpuid(0x8000_0000).eax;
    if max_extended < 0x8000_0007 {
        return false;
    }
    if __cpuid(0x8000_0007).edx & (1 << 8) == 0 {
        return false;
    }
    std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
        .is_ok_and(|source| source.trim() == "tsc")
}

#[cfg(not(target_arch = "x86_64"))]
fn invariant_tsc() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A TSC of 3 ticks per ns, calibrated over 10 ms from t = 0.
    fn calibrated() -> Tsc {
        let tsc = Tsc::default();
        tsc.observe(1_000, 0, 1_010);
        tsc.observe(30_001_000, 10_000_000, 30_001_010);
        tsc
    }

    #[test]
    fn an_uncalibrated_clock_makes_no_estimate() {
        let tsc = Tsc::default();
        assert_eq!(tsc.estimate(5), None);
        tsc.observe(1_000, 0, 1_010);
        assert_eq!(tsc.estimate(1_000 + 3 * 400_000), None, "no rate yet");
        // Less than 1 ms of calibration: still none.
        tsc.observe(1_000 + 3 * 900_000, 900_000, 1_010 + 3 * 900_000);
        assert_eq!(tsc.estimate(1_000 + 3 * 1_400_000), None);
    }

    #[test]
    fn estimates_are_exact_away_from_boundaries() {
        let tsc = calibrated();
        // Anchor at 10 ms (tick 30_001_005). 10.4 ms is tick + 3 * 400_000.
        assert_eq!(tsc.estimate(30_001_005 + 3 * 400_000), Some(10));
        assert_eq!(tsc.estimate(30_001_005 + 3 * 990_000), Some(10));
        // 10.0005 ms: within the margin of 10 ms -> refused.
        assert_eq!(tsc.estimate(30_001_005 + 3 * 500), None);
        // 10.9999 ms: within the margin of 11 ms -> refused.
        assert_eq!(tsc.estimate(30_001_005 + 3 * 999_900), None);
    }

    #[test]
    fn estimates_stop_past_a_millisecond_from_the_anchor_or_backwards() {
        let tsc = calibrated();
        assert_eq!(tsc.estimate(30_001_005 + 3 * 1_500_000), None);
        assert_eq!(tsc.estimate(30_001_005 - 3), None, "the TSC went back");
    }

    #[test]
    fn a_preempted_read_stops_estimates_until_a_good_one() {
        let tsc = calibrated();
        tsc.observe(31_000_000, 10_330_000, 31_000_000 + PAIR_TICKS + 1);
        assert_eq!(tsc.estimate(31_000_100), None);
        tsc.observe(33_001_000, 11_000_000, 33_001_010);
        assert_eq!(tsc.estimate(33_001_005 + 3 * 300_000), Some(11));
    }

    #[test]
    fn the_rate_follows_the_real_clock() {
        // 2.5 ticks per ns this time.
        let tsc = Tsc::default();
        tsc.observe(0, 0, 10);
        tsc.observe(25_000_000, 10_000_000, 25_000_010);
        assert_eq!(tsc.estimate(25_000_005 + 1_250_000), Some(10), "10.5 ms");
        assert_eq!(tsc.estimate(25_000_005 + 2_000_000), Some(10), "10.8 ms");
    }

    #[test]
    fn the_clock_agrees_with_real_reads() {
        // Whatever the machine: every reading lies between real reads
        // taken just before and just after it.
        let clock = Clock::new(ClockSource::Tsc);
        let start = Instant::now();
        let mut readings = 0u64;
        while start.elapsed().as_millis() < 30 {
            let before = clock.ms_at(mono_ns());
            let ms = clock.ms();
            let after = clock.ms_at(mono_ns());
            assert!(before <= ms && ms <= after, "{before} <= {ms} <= {after}");
            readings += 1;
        }
        assert!(readings > 100);
    }

    #[test]
    fn a_reading_taken_for_the_metrics_converts_to_the_clocks_time() {
        // `ms_at` of a `mono_ns` reading is what the clock gave just
        // before and after it: the poll phase takes its timeout from the
        // reading that starts the metrics' wait, not from a read of its
        // own. Against `Instant` too, which reads the same clock.
        for source in [ClockSource::Std, ClockSource::Tsc] {
            let clock = Clock::new(source);
            let offset = clock.ms();
            let epoch = Instant::now();
            let start = Instant::now();
            while start.elapsed().as_millis() < 20 {
                let before = clock.ms();
                let instant_before = epoch.elapsed().as_millis() as u64;
                let at = clock.ms_at(mono_ns());
                let instant_after = epoch.elapsed().as_millis() as u64;
                let after = clock.ms();
                assert!(before <= at && at <= after, "{before} <= {at} <= {after}");
                // The clock's epoch is `offset` ms (and a fraction) before
                // `epoch`.
                assert!(
                    instant_before + offset <= at && at <= instant_after + offset + 2,
                    "{instant_before} + {offset} <= {at} <= {instant_after} + {offset} + 2"
                );
            }
        }
    }
}
