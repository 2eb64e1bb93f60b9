//! A one-value slot between a callback and the future awaiting it.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

struct Slot<T> {
    value: Option<T>,
    waker: Option<Waker>,
}

/// The future's end: ready once the callback sent its value.
pub(crate) struct Receiver<T>(Rc<RefCell<Slot<T>>>);

/// The callback's end. Sending after the receiver is gone drops the value.
pub(crate) struct Sender<T>(Rc<RefCell<Slot<T>>>);

/// A new slot.
pub(crate) fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let slot = Rc::new(RefCell::new(Slot {
        value: None,
        waker: None,
    }));
    (Sender(Rc::clone(&slot)), Receiver(slot))
}

impl<T> Sender<T> {
    /// Whether the receiving future was dropped: nobody will take a value.
    pub(crate) fn is_closed(&self) -> bool {
        std::rc::Rc::strong_count(&self.0) == 1
    }

    /// Stores `value` and wakes the receiver's task.
    pub(crate) fn send(self, value: T) {
        let waker = {
            let mut slot = self.0.borrow_mut();
            slot.value = Some(value);
            slot.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut slot = self.0.borrow_mut();
        match slot.value.take() {
            Some(value) => Poll::Ready(value),
            None => {
                match &slot.waker {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    _ => slot.waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }
}
