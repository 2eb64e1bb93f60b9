//! Timers, awaited: [`sleep`], [`timeout`], [`interval`] (Node's
//! `timers/promises`).

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use super::{TaskError, try_with_loop, with_loop};
use crate::{ImmediateId, Result, TimerId};

/// What a timer's callback and its future share.
#[derive(Default)]
struct Fired {
    /// Times the timer fired and the future has not yet seen.
    count: u64,
    waker: Option<Waker>,
}

fn fire(fired: &Rc<RefCell<Fired>>) {
    let waker = {
        let mut f = fired.borrow_mut();
        f.count += 1;
        f.waker.take()
    };
    if let Some(waker) = waker {
        waker.wake();
    }
}

fn register(fired: &Rc<RefCell<Fired>>, cx: &Context<'_>) {
    let mut f = fired.borrow_mut();
    match &f.waker {
        Some(waker) if waker.will_wake(cx.waker()) => {}
        _ => f.waker = Some(cx.waker().clone()),
    }
}

/// Completes after `delay` (Node's `timersPromises.setTimeout(delay)`): a
/// loop timer ([`crate::Loop::set_timeout`]) started at the first poll.
/// Dropping the future clears the timer.
pub fn sleep(delay: Duration) -> Sleep {
    Sleep {
        delay,
        timer: None,
        fired: Rc::default(),
    }
}

/// The future of [`sleep`].
#[must_use = "futures do nothing unless awaited"]
pub struct Sleep {
    delay: Duration,
    timer: Option<TimerId>,
    fired: Rc<RefCell<Fired>>,
}

impl std::fmt::Debug for Sleep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sleep")
            .field("delay", &self.delay)
            .field("timer", &self.timer)
            .finish()
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.fired.borrow().count > 0 {
            self.timer = None;
            return Poll::Ready(());
        }
        if self.timer.is_none() {
            let fired = Rc::clone(&self.fired);
            let delay = self.delay;
            self.timer = Some(with_loop(|lp| lp.set_timeout(delay, move |_| fire(&fired))));
        }
        register(&self.fired, cx);
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(id) = self.timer.take() {
            try_with_loop(|lp| lp.clear_timer(id));
        }
    }
}

/// Runs `future` with a deadline: its output, or
/// [`TaskError::TimedOut`] (`The operation was aborted due to timeout`)
/// if `limit` passes first; the future is then dropped (its operation
/// cancelled) when the `Timeout` is.
pub fn timeout<F: Future>(limit: Duration, future: F) -> Timeout<F> {
    Timeout {
        future: Box::pin(future),
        sleep: sleep(limit),
    }
}

/// The future of [`timeout`].
#[must_use = "futures do nothing unless awaited"]
pub struct Timeout<F> {
    future: Pin<Box<F>>,
    sleep: Sleep,
}

impl<F> std::fmt::Debug for Timeout<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timeout")
            .field("sleep", &self.sleep)
            .finish()
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(value) = self.future.as_mut().poll(cx) {
            return Poll::Ready(Ok(value));
        }
        match Pin::new(&mut self.sleep).poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(TaskError::TimedOut.into())),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A [`futures_core::Stream`] that yields every `period` (Node's
/// `timersPromises.setInterval(period)` async iterator): a loop interval
/// ([`crate::Loop::set_interval`]) started at the first poll. Each firing
/// is yielded once, even if the task falls behind (they are counted, as
/// Node's iterator does). Dropping it clears the interval.
pub fn interval(period: Duration) -> Interval {
    Interval {
        period,
        timer: None,
        fired: Rc::default(),
    }
}

/// The stream of [`interval`].
#[must_use = "streams do nothing unless polled"]
pub struct Interval {
    period: Duration,
    timer: Option<TimerId>,
    fired: Rc<RefCell<Fired>>,
}

impl std::fmt::Debug for Interval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interval")
            .field("period", &self.period)
            .field("timer", &self.timer)
            .finish()
    }
}

impl Interval {
    /// The next firing (a future of `Some(())`; the stream never ends).
    pub fn tick(&mut self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            futures_core::Stream::poll_next(Pin::new(&mut *self), cx).map(|_| ())
        })
    }
}

impl futures_core::Stream for Interval {
    type Item = ();

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<()>> {
        {
            let mut f = self.fired.borrow_mut();
            if f.count > 0 {
                f.count -= 1;
                return Poll::Ready(Some(()));
            }
        }
        if self.timer.is_none() {
            let fired = Rc::clone(&self.fired);
            let period = self.period;
            self.timer = Some(with_loop(|lp| {
                lp.set_interval(period, move |_, _| fire(&fired))
            }));
        }
        register(&self.fired, cx);
        Poll::Pending
    }
}

impl Drop for Interval {
    fn drop(&mut self) {
        if let Some(id) = self.timer.take() {
            try_with_loop(|lp| lp.clear_timer(id));
        }
    }
}

/// Completes in the check phase (Node's `timersPromises.setImmediate()`):
/// a loop immediate ([`crate::Loop::set_immediate`]) queued at the first
/// poll. Dropping the future clears it.
pub fn immediate() -> Immediate {
    Immediate {
        id: None,
        fired: Rc::default(),
    }
}

/// The future of [`immediate`].
#[must_use = "futures do nothing unless awaited"]
pub struct Immediate {
    id: Option<ImmediateId>,
    fired: Rc<RefCell<Fired>>,
}

impl std::fmt::Debug for Immediate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Immediate").field("id", &self.id).finish()
    }
}

impl Future for Immediate {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.fired.borrow().count > 0 {
            self.id = None;
            return Poll::Ready(());
        }
        if self.id.is_none() {
            let fired = Rc::clone(&self.fired);
            self.id = Some(with_loop(|lp| lp.set_immediate(move |_| fire(&fired))));
        }
        register(&self.fired, cx);
        Poll::Pending
    }
}

impl Drop for Immediate {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            try_with_loop(|lp| lp.clear_immediate(id));
        }
    }
}
