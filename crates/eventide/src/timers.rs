//! Timers: `setTimeout`, `setInterval` and their friends, on the wheel.
//!
//! Node's rules, kept here: a delay below 1 ms becomes 1 ms; a timer's
//! countdown starts when it is started (the clock is read then, as Node's
//! `getLibuvNow()` does, not the turn's cached time); timers with equal
//! deadlines fire in start order; an interval is rescheduled from the moment
//! its callback started; a timer started inside the timers phase does not
//! fire in that same phase, with Node's one exception (below); clearing a
//! fired or unknown timer does nothing.
//!
//! The exception: Node's timers phase is one libuv timer, re-armed when
//! the timers' JavaScript returns (for the next deadline, at least 1 ms
//! after libuv's cached time), before the last timer's next-ticks run.
//! Starting a timer reads the clock into that cached time
//! (`getLibuvNow()`), so when such a tick starts one after a callback
//! spun past the re-armed time, libuv runs the timers again within the
//! same phase: an interval whose callback outlasted its period runs again
//! before the immediates it queued. eventide keeps the same cached time
//! (starting, refreshing or re-arming a timer reads the clock into it) and
//! the same re-arm rule (`Loop::timers_rearmed_at`; own conformance case
//! 37).
//!
//! One difference from Node, visible only when the loop runs late: Node
//! runs all due timers of one duration before the next duration's list;
//! eventide runs every due timer strictly by (deadline, start order).

use std::time::Duration;

use eventide_timer::Key;

use crate::event_loop::Loop;
use crate::timer_callback::TimerCallback;

/// A timer's handle: small, `Copy`, and safe to keep after the timer is
/// gone (using it then does nothing). It is the timer's key in the wheel,
/// checked by generation: a key whose timer is gone never reaches a newer
/// timer in the same slot.
///
/// Stop a timer with [`Loop::clear_timer`] (one way for timeouts and
/// intervals alike, as Node's `clearTimeout` and `clearInterval` are
/// interchangeable).
///
/// A key used with another loop than the one that made it names nothing
/// there: the same no-op as a stale key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId {
    key: Key,
    /// The id of the loop that made it.
    loop_id: u32,
}

/// A timer, stored as its wheel entry's payload: one table, one lookup,
/// 32 bytes (the callback, inline when small, the duration with the
/// flags in its top bits, and where it was set).
pub(crate) struct Timer {
    /// Where it was set (`Loop::handles`, the blocked-loop detector).
    site: crate::diag::Site,
    /// Empty while the timer's callback runs.
    callback: TimerCallback,
    /// The duration in ms (bits 0..61), `REFERENCED`, `INTERVAL` and
    /// `REFRESHED`.
    bits: u64,
}

const REFERENCED: u64 = 1 << 63;
/// A `setInterval` (else a `setTimeout`).
const INTERVAL: u64 = 1 << 62;
/// A timeout whose callback is running was refreshed by it: it stays, and
/// runs again (Node's `refresh()` in the timeout's own callback).
const REFRESHED: u64 = 1 << 61;
/// Durations are capped at 2^61 - 1 ms (about 73 million years).
const DURATION: u64 = REFRESHED - 1;

impl Timer {
    fn new(
        callback: TimerCallback,
        duration: u64,
        interval: bool,
        site: crate::diag::Site,
    ) -> Timer {
        let kind = if interval { INTERVAL } else { 0 };
        Timer {
            site,
            callback,
            bits: duration.min(DURATION) | REFERENCED | kind,
        }
    }

    fn duration(&self) -> u64 {
        self.bits & DURATION
    }

    fn is_interval(&self) -> bool {
        self.bits & INTERVAL != 0
    }

    fn is_refreshed(&self) -> bool {
        self.bits & REFRESHED != 0
    }

    fn referenced(&self) -> bool {
        self.bits & REFERENCED != 0
    }

    fn set_referenced(&mut self, referenced: bool) {
        if referenced {
            self.bits |= REFERENCED;
        } else {
            self.bits &= !REFERENCED;
        }
    }

    /// Armed in the wheel, as opposed to a timer whose callback is running
    /// (its callback is out, and its wheel entry idle, or re-armed by a
    /// refresh).
    fn is_armed(&self) -> bool {
        self.callback.is_some()
    }
}

/// Node's timer handle while the ticks of the timers phase's last timer
/// run (see `Loop::run_timers`): JavaScript's `nextExpiry`, and the time
/// libuv's timer was re-armed for.
pub(crate) struct TimersTail {
    next_expiry: u64,
    rearmed_at: Option<u64>,
}

/// Node's delay coercion: below 1 ms (0 included) is 1 ms; fractions of a
/// millisecond are truncated.
fn delay_ms(delay: Duration) -> u64 {
    u64::try_from(delay.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl Loop {
    /// Runs `callback` once, `delay` from now (Node's `setTimeout`).
    ///
    /// The callback is `FnMut`, as a Node timeout's function may run more
    /// than once: a timeout refreshed from its own callback
    /// ([`Loop::refresh_timer`]) stays, and runs the same callback again
    /// after its delay. Otherwise it is dropped once it has run. (A closure
    /// that must give away what it holds can keep it in an `Option` and
    /// `take()` it.)
    #[track_caller]
    pub fn set_timeout(
        &mut self,
        delay: Duration,
        mut callback: impl FnMut(&mut Loop) + 'static,
    ) -> TimerId {
        self.start_timer(
            delay,
            TimerCallback::repeat(move |lp: &mut Loop, _: TimerId| callback(lp)),
            false,
            std::panic::Location::caller(),
        )
    }

    /// Runs `callback` every `period` (Node's `setInterval`); the callback
    /// gets its own id, to clear itself with.
    #[track_caller]
    pub fn set_interval(
        &mut self,
        period: Duration,
        callback: impl FnMut(&mut Loop, TimerId) + 'static,
    ) -> TimerId {
        self.start_timer(
            period,
            TimerCallback::repeat(callback),
            true,
            std::panic::Location::caller(),
        )
    }

    fn start_timer(
        &mut self,
        delay: Duration,
        callback: TimerCallback,
        interval: bool,
        site: crate::diag::Site,
    ) -> TimerId {
        let duration = delay_ms(delay);
        let timer = Timer::new(callback, duration, interval, site);
        self.ref_timers += 1;
        let deadline = self.clock_into_now().saturating_add(duration);
        self.note_timer_start(deadline);
        let key = self.wheel.insert(deadline, timer);
        self.timer_id(key)
    }

    /// The key of one of this loop's timers, as its handle.
    fn timer_id(&self, key: Key) -> TimerId {
        TimerId {
            key,
            loop_id: self.id,
        }
    }

    /// The wheel key of a handle this loop made; `None` for another
    /// loop's (which names nothing here).
    #[inline]
    fn own(&self, id: TimerId) -> Option<Key> {
        (id.loop_id == self.id).then_some(id.key)
    }

    /// Stops a timeout or an interval: the one way to stop a timer (Node's
    /// `clearTimeout` and `clearInterval`, which are the same function).
    /// From anywhere, its own callback included; a fired, cleared or
    /// unknown timer is a no-op, as Node's `clearTimeout` of a fired
    /// timeout is. Returns whether a timer was stopped.
    pub fn clear_timer(&mut self, id: TimerId) -> bool {
        let Some(timer) = self.own(id).and_then(|key| self.wheel.cancel(key)) else {
            return false;
        };
        if timer.is_armed() && timer.referenced() {
            self.ref_timers -= 1;
        }
        // A timeout clearing itself from its callback stops nothing (it
        // ends anyway), unless its callback had refreshed it.
        timer.is_armed() || timer.is_interval() || timer.is_refreshed()
    }

    /// Same as [`Loop::clear_timer`] (Node's `clearTimeout`).
    #[deprecated(note = "use `Loop::clear_timer`, the one way to stop a timeout or an interval")]
    pub fn clear_timeout(&mut self, id: TimerId) -> bool {
        self.clear_timer(id)
    }

    /// Same as [`Loop::clear_timer`] (Node's `clearInterval`).
    #[deprecated(note = "use `Loop::clear_timer`, the one way to stop a timeout or an interval")]
    pub fn clear_interval(&mut self, id: TimerId) -> bool {
        self.clear_timer(id)
    }

    /// Restarts the countdown from now with the timer's duration, and puts
    /// it after the timers already started with the same deadline (Node's
    /// `timeout.refresh()`). A timeout refreshed from its own callback
    /// stays, and its callback runs again after the delay, as in Node.
    /// The same from the next-ticks and microtasks its callback queued.
    /// Returns `false`, doing nothing, for a timer that was cleared or a
    /// timeout that has fired and is gone: unlike Node, where the timeout
    /// object keeps its function, a timeout fired in an earlier callback is
    /// not brought back (its callback was dropped). An interval refreshed from its own callback
    /// is re-armed from the callback's start as usual (`false`), as Node
    /// re-inserts it.
    pub fn refresh_timer(&mut self, id: TimerId) -> bool {
        let Some(key) = self.own(id) else {
            return false;
        };
        let now = self.clock_into_now();
        let Some(timer) = self.wheel.get_mut(key) else {
            return false;
        };
        if !timer.is_armed() {
            if timer.is_interval() {
                return false;
            }
            // A timeout whose callback is running: it will stay.
            timer.bits |= REFRESHED;
        }
        let deadline = now.saturating_add(timer.duration());
        let reset = self.wheel.reset(key, deadline).is_ok();
        if reset {
            self.note_timer_start(deadline);
        }
        reset
    }

    /// Lets the loop exit while this timer is pending (Node's
    /// `timeout.unref()`); the timer still fires if the loop is running.
    pub fn unref_timer(&mut self, id: TimerId) {
        self.set_timer_ref(id, false);
    }

    /// Makes the timer keep the loop alive again (Node's `timeout.ref()`).
    pub fn ref_timer(&mut self, id: TimerId) {
        self.set_timer_ref(id, true);
    }

    /// Whether the timer keeps the loop alive (Node's `timeout.hasRef()`);
    /// `false` for a fired or cleared timer. (Node's answer there is the
    /// ref flag the dead timeout object still carries, `true` unless it
    /// was unref'ed; a key has no object left to ask. What the loop
    /// cares about, whether the timer keeps it alive, is `false` for both.)
    pub fn timer_has_ref(&self, id: TimerId) -> bool {
        self.own(id)
            .and_then(|key| self.wheel.get(key))
            .is_some_and(Timer::referenced)
    }

    /// Whether the timer is still pending (armed, an interval whose
    /// callback is running, or a timeout that its running callback
    /// refreshed).
    pub fn timer_is_active(&self, id: TimerId) -> bool {
        self.own(id)
            .and_then(|key| self.wheel.get(key))
            .is_some_and(|t| t.is_armed() || t.is_interval() || t.is_refreshed())
    }

    fn set_timer_ref(&mut self, id: TimerId, referenced: bool) {
        let Some(timer) = self.own(id).and_then(|key| self.wheel.get_mut(key)) else {
            return;
        };
        if timer.referenced() == referenced {
            return;
        }
        timer.set_referenced(referenced);
        if timer.is_armed() {
            if referenced {
                self.ref_timers += 1;
            } else {
                self.ref_timers -= 1;
            }
        }
    }

    /// The timers phase: every timer due by the cached `now`, in (deadline,
    /// start order), each followed by its next-ticks. Timers started or
    /// refreshed meanwhile wait for the next phase.
    ///
    /// After a callback that panicked (a panic handler took it), Node's
    /// order is kept (shared case 31): its next-ticks wait until after the
    /// next due timer of the same duration (Node's timer list restarts
    /// after an uncaught exception without draining the ticks first), or
    /// run before a timer of another duration, or at the end of the phase.
    #[inline]
    pub(crate) fn run_timers(&mut self) {
        if self.wheel.is_empty() {
            return;
        }
        self.wheel.advance_to(self.now_ms());
        // Most turns: nothing due (and no re-armed tail to look at).
        if !self.wheel.has_ready() && self.timers_tail.is_none() {
            return;
        }
        self.run_due_timers();
    }

    /// [`Loop::run_timers`] once the wheel was advanced and something is
    /// ready (or a re-armed tail is to be looked at).
    #[inline(never)]
    fn run_due_timers(&mut self) {
        let mut ticks_held_for: Option<u64> = None;
        loop {
            while let Some((key, _)) = self.wheel.pop_expired_key() {
                let id = self.timer_id(key);
                if let Some(duration) = ticks_held_for.take()
                    && self.wheel.get(id.key).map(Timer::duration) != Some(duration)
                {
                    self.drain_ticks();
                }
                ticks_held_for = self.fire(id);
            }
            // Node's timers phase is one libuv timer, re-armed when its
            // callback returns, before the last timer's next-ticks run: for
            // the next deadline, at least 1 ms after libuv's cached time. If
            // those ticks start a timer, that reads the clock into the
            // cached time (`getLibuvNow`), and when the clock passed the
            // re-armed time libuv runs the timers again in this same phase
            // (an interval whose callback spun past its period runs again
            // before the immediates its ticks queued).
            match self.timers_tail.take().and_then(|tail| tail.rearmed_at) {
                Some(due) if due <= self.now.get() => {
                    self.update_time();
                    self.wheel.advance_to(self.now.get());
                }
                _ => break,
            }
        }
        if ticks_held_for.is_some() {
            self.drain_ticks();
        }
    }

    /// Runs an expired timer's callback, then its next-ticks, unless the
    /// callback panicked: then it returns the timer's duration and leaves
    /// the ticks to `run_timers` (or, without a panic handler, the panic
    /// leaves `run()` once the timer is gone).
    ///
    /// The timer may be gone already: the next-ticks of a panicking timer
    /// run after the next one has been taken from the wheel, and one of
    /// them may have cleared it. Then there is nothing to run.
    fn fire(&mut self, id: TimerId) -> Option<u64> {
        let timer = self.wheel.get_mut(id.key)?;
        self.metrics.callbacks.timers += 1;
        if timer.referenced() {
            self.ref_timers -= 1;
        }
        let duration = timer.duration();
        let callback = timer.callback.take();
        let kind = if timer.is_interval() {
            crate::diag::Kind::Interval
        } else {
            crate::diag::Kind::Timeout
        };
        let site = timer.site;
        let interval = timer.is_interval();
        if !interval {
            // The entry stays, idle, while the callback runs, so that the
            // callback can refresh (or clear, unref, ask about) its own
            // timeout; then it goes, unless refreshed.
            let returned =
                self.catching_as(kind, Some(site), move |lp: &mut Loop| callback.call(lp, id));
            match returned {
                Ok(callback) if !self.has_ticks() => {
                    self.timers_tail = None;
                    self.end_timeout(id, callback);
                    return None;
                }
                Ok(callback) => {
                    self.note_timers_rearm();
                    // Its next-ticks and microtasks may refresh it too (in
                    // Node the timeout object outlives its run): it stays
                    // refreshable until they are done, and only then goes
                    // (a tick's panic goes on after that).
                    let ticks = self.drain_ticks_catching();
                    self.end_timeout(id, callback);
                    if let Err(payload) = ticks {
                        self.panicked(payload);
                    }
                    return None;
                }
                Err(payload) => {
                    self.wheel.cancel(id.key);
                    self.panicked(payload);
                    return Some(duration);
                }
            }
        }
        // Node reads the clock into libuv's time here (`getLibuvNow`).
        let started = self.clock_into_now();
        let returned =
            self.catching_as(kind, Some(site), move |lp: &mut Loop| callback.call(lp, id));
        match returned {
            // Re-armed before its next-ticks run (as Node re-inserts an
            // interval before the next timer's `runNextTicks`): a tick that
            // panics out of `run()` must not take the interval with it.
            Ok(callback) => {
                self.rearm_interval(id, started, callback);
                self.note_timers_rearm();
                self.drain_ticks();
                None
            }
            // It panicked; its closure was dropped in the unwind. The
            // interval stops, as a hook does: its idle entry leaves the
            // wheel before the handler hears of the panic or, without one,
            // the panic leaves `run()`.
            Err(payload) => {
                self.wheel.cancel(id.key);
                self.panicked(payload);
                Some(duration)
            }
        }
    }

    /// Before a fired timer's next-ticks run: when Node's timer handle
    /// would be re-armed for (see `run_timers`), or `None` if there are no
    /// ticks (nothing can move the cached time before the phase ends). A
    /// timeout whose callback ran is idle in the wheel (no deadline) unless
    /// it refreshed itself.
    fn note_timers_rearm(&mut self) {
        if !self.has_ticks() {
            self.timers_tail = None;
            return;
        }
        let now = self.now.get();
        let next = self.wheel.next_deadline();
        self.timers_tail = Some(TimersTail {
            next_expiry: next.unwrap_or(u64::MAX),
            rearmed_at: next.map(|next| now + next.saturating_sub(now).max(1)),
        });
    }

    /// A timer starts (or is refreshed) with `deadline` while the ticks of
    /// the phase's last timer run: as Node's `insert` does for a new list
    /// due before `nextExpiry`, the handle is re-armed for it.
    #[inline]
    fn note_timer_start(&mut self, deadline: u64) {
        if let Some(tail) = &mut self.timers_tail
            && deadline < tail.next_expiry
        {
            tail.next_expiry = deadline;
            tail.rearmed_at = Some(deadline);
        }
    }

    /// After a timeout's callback: a timeout it refreshed takes its
    /// callback back and stays armed (the refresh set its deadline); any
    /// other leaves the wheel, and the callback is dropped.
    fn end_timeout(&mut self, id: TimerId, callback: TimerCallback) {
        match self.wheel.get_mut(id.key) {
            Some(timer) if timer.is_refreshed() => {
                timer.bits &= !REFRESHED;
                timer.callback = callback;
                if timer.referenced() {
                    self.ref_timers += 1;
                }
            }
            Some(_) => {
                self.wheel.cancel(id.key);
            }
            None => {}
        }
    }

    /// Puts an interval's callback back and arms it from when the callback
    /// started, unless the callback cleared it.
    fn rearm_interval(&mut self, id: TimerId, started: u64, callback: TimerCallback) {
        let Some(timer) = self.wheel.get_mut(id.key) else {
            return;
        };
        timer.callback = callback;
        if timer.referenced() {
            self.ref_timers += 1;
        }
        let deadline = started.saturating_add(timer.duration());
        self.wheel
            .reset(id.key, deadline)
            .expect("the interval is live");
    }
}

impl TimerId {
    /// The timer's number, as [`crate::diag::HandleInfo::id`] lists it.
    pub fn raw(self) -> u64 {
        self.key.into_raw()
    }
}

impl Loop {
    /// The timers, for [`Loop::handles`].
    pub(crate) fn list_timers(&self, listing: &mut crate::diag::Listing) {
        for (key, _, timer) in self.wheel.iter() {
            // A timeout whose callback is running (not refreshed) is on
            // its way out: not listed.
            let active = timer.is_armed() || timer.is_interval() || timer.is_refreshed();
            if !active {
                continue;
            }
            let kind = if timer.is_interval() {
                crate::diag::Kind::Interval
            } else {
                crate::diag::Kind::Timeout
            };
            listing.add(
                kind,
                key.into_raw(),
                timer.referenced(),
                timer.referenced() && timer.is_armed(),
                Some(timer.site),
            );
        }
    }
}
