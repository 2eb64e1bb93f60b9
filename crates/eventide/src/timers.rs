//! Timers: `setTimeout`, `setInterval` and their friends, on the wheel.
//!
//! Node's rules, kept here: a delay below 1 ms becomes 1 ms; a timer's
//! countdown starts when it is started (the clock is read then, as Node's
//! `getLibuvNow()` does, not the turn's cached time); timers with equal
//! deadlines fire in start order; an interval is rescheduled from the moment
//! its callback started; a timer started inside the timers phase never
//! fires in that same phase; clearing a fired or unknown timer does nothing.
//!
//! One difference from Node, visible only when the loop runs late: Node
//! runs all due timers of one duration before the next duration's list;
//! eventide runs every due timer strictly by (deadline, start order).

use std::time::Duration;

use eventide_timer::Key;

use crate::event_loop::Loop;
use crate::timer_callback::TimerCallback;

/// A timer's handle: small, `Copy`, and safe to keep after the timer is
/// gone (using it then does nothing). It is the timer's key in the wheel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId(pub(crate) Key);

/// A timer, stored as its wheel entry's payload: one table, one lookup,
/// 24 bytes (the callback, inline when small, and the duration with the
/// `referenced` flag in its top bit).
pub(crate) struct Timer {
    /// Empty while an interval's callback runs.
    callback: TimerCallback,
    /// The duration in ms (bits 0..63) and `REFERENCED`.
    bits: u64,
}

const REFERENCED: u64 = 1 << 63;
/// Durations are capped at 2^63 - 1 ms (about 292 million years).
const DURATION: u64 = REFERENCED - 1;

impl Timer {
    fn new(callback: TimerCallback, duration: u64) -> Timer {
        Timer {
            callback,
            bits: duration.min(DURATION) | REFERENCED,
        }
    }

    fn duration(&self) -> u64 {
        self.bits & DURATION
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

    /// Armed in the wheel, as opposed to an interval whose callback is
    /// running (its callback is out, and its wheel entry idle).
    fn is_armed(&self) -> bool {
        self.callback.is_some()
    }
}

/// Node's delay coercion: below 1 ms (0 included) is 1 ms; fractions of a
/// millisecond are truncated.
fn delay_ms(delay: Duration) -> u64 {
    u64::try_from(delay.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl Loop {
    /// Runs `callback` once, `delay` from now (Node's `setTimeout`).
    pub fn set_timeout(
        &mut self,
        delay: Duration,
        callback: impl FnOnce(&mut Loop) + 'static,
    ) -> TimerId {
        self.start_timer(delay, TimerCallback::once(callback))
    }

    /// Runs `callback` every `period` (Node's `setInterval`); the callback
    /// gets its own id, to clear itself with.
    pub fn set_interval(
        &mut self,
        period: Duration,
        callback: impl FnMut(&mut Loop, TimerId) + 'static,
    ) -> TimerId {
        self.start_timer(period, TimerCallback::repeat(callback))
    }

    fn start_timer(&mut self, delay: Duration, callback: TimerCallback) -> TimerId {
        let duration = delay_ms(delay);
        let timer = Timer::new(callback, duration);
        self.ref_timers += 1;
        TimerId(
            self.wheel
                .insert(self.clock().saturating_add(duration), timer),
        )
    }

    /// Stops a timeout or an interval (Node's `clearTimeout` and
    /// `clearInterval` are the same). From anywhere, its own callback
    /// included; a fired, cleared or unknown timer is a no-op. Returns
    /// whether a timer was stopped.
    pub fn clear_timer(&mut self, id: TimerId) -> bool {
        let Some(timer) = self.wheel.cancel(id.0) else {
            return false;
        };
        if timer.is_armed() && timer.referenced() {
            self.ref_timers -= 1;
        }
        true
    }

    /// Same as [`Loop::clear_timer`] (Node's `clearTimeout`).
    pub fn clear_timeout(&mut self, id: TimerId) -> bool {
        self.clear_timer(id)
    }

    /// Same as [`Loop::clear_timer`] (Node's `clearInterval`).
    pub fn clear_interval(&mut self, id: TimerId) -> bool {
        self.clear_timer(id)
    }

    /// Restarts the countdown from now with the timer's duration, and puts
    /// it after the timers already started with the same deadline (Node's
    /// `timeout.refresh()`). Returns `false`, doing nothing, for a timer
    /// that has fired (a timeout) or was cleared: unlike Node, a fired
    /// timeout is not brought back, since its callback has run and is gone.
    /// An interval refreshed from its own callback is re-armed from the
    /// callback's start as usual (`false`).
    pub fn refresh_timer(&mut self, id: TimerId) -> bool {
        let Some(timer) = self.wheel.get(id.0).filter(|timer| timer.is_armed()) else {
            return false;
        };
        let deadline = self.clock().saturating_add(timer.duration());
        self.wheel.reset(id.0, deadline).is_ok()
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
    /// `false` for a fired or cleared timer.
    pub fn timer_has_ref(&self, id: TimerId) -> bool {
        self.wheel.get(id.0).is_some_and(Timer::referenced)
    }

    /// Whether the timer is still pending (armed, or an interval whose
    /// callback is running).
    pub fn timer_is_active(&self, id: TimerId) -> bool {
        self.wheel.contains(id.0)
    }

    fn set_timer_ref(&mut self, id: TimerId, referenced: bool) {
        let Some(timer) = self.wheel.get_mut(id.0) else {
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
    pub(crate) fn run_timers(&mut self) {
        if self.wheel.is_empty() {
            return;
        }
        self.wheel.advance_to(self.now());
        let mut ticks_held_for: Option<u64> = None;
        while let Some((key, _)) = self.wheel.pop_expired_key() {
            let id = TimerId(key);
            if let Some(duration) = ticks_held_for.take()
                && self.wheel.get(id.0).map(Timer::duration) != Some(duration)
            {
                self.drain_ticks();
            }
            ticks_held_for = self.fire(id);
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
        let timer = self.wheel.get_mut(id.0)?;
        if timer.referenced() {
            self.ref_timers -= 1;
        }
        let duration = timer.duration();
        let callback = timer.callback.take();
        if !callback.repeats() {
            self.wheel.cancel(id.0);
            let ran = self.catching(move |lp: &mut Loop| {
                callback.call(lp, id);
            });
            if let Err(payload) = ran {
                self.panicked(payload);
                return Some(duration);
            }
            self.drain_ticks();
            return None;
        }
        let started = self.clock();
        let returned = self.catching(move |lp: &mut Loop| callback.call(lp, id));
        match returned {
            // Re-armed before its next-ticks run (as Node re-inserts an
            // interval before the next timer's `runNextTicks`): a tick that
            // panics out of `run()` must not take the interval with it.
            Ok(Some(callback)) => {
                self.rearm_interval(id, started, callback);
                self.drain_ticks();
                None
            }
            Ok(None) => {
                self.drain_ticks();
                None
            }
            // It panicked; its closure was dropped in the unwind. The
            // interval stops, as a hook does: its idle entry leaves the
            // wheel before the handler hears of the panic or, without one,
            // the panic leaves `run()`.
            Err(payload) => {
                self.wheel.cancel(id.0);
                self.panicked(payload);
                Some(duration)
            }
        }
    }

    /// Puts an interval's callback back and arms it from when the callback
    /// started, unless the callback cleared it.
    fn rearm_interval(&mut self, id: TimerId, started: u64, callback: TimerCallback) {
        let Some(timer) = self.wheel.get_mut(id.0) else {
            return;
        };
        timer.callback = callback;
        if timer.referenced() {
            self.ref_timers += 1;
        }
        let deadline = started.saturating_add(timer.duration());
        self.wheel
            .reset(id.0, deadline)
            .expect("the interval is live");
    }
}
