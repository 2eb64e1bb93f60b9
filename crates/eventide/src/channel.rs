//! Typed channels into the loop: other threads send values, a handler on
//! the loop receives them (what libuv programs build from `uv_async_send`
//! and a locked queue, and tokio's `mpsc` into a task).
//!
//! Where [`crate::LoopHandle::post`] boxes one closure per message, a
//! channel moves plain values: a sender locks the channel's `Vec`, pushes,
//! and unlocks; only the send that finds the `Vec` empty marks the channel
//! ready and wakes the loop. The loop swaps the whole `Vec` out under the
//! lock (with an empty one it keeps for the purpose), so a burst of
//! messages costs one wake-up, one lock hand-over and no allocation per
//! message. One sender's messages arrive in the order it sent them.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::event_loop::{Loop, Panic};
use crate::handle::Shared;

/// The state a channel's senders and its receiving loop share.
struct Chan<T> {
    queue: Mutex<Vec<T>>,
    /// The loop is gone: sends fail.
    closed: AtomicBool,
    senders: AtomicUsize,
    shared: Arc<Shared>,
}

impl<T> Chan<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<T>> {
        // A sender never panics while holding the lock, but a poisoned
        // queue is still a queue.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Sends values of type `T` to a handler on the loop; made by
/// [`Loop::channel`]. `Send`, `Sync` and cheap to clone. While any sender
/// exists the loop stays alive; when the last one is dropped, the handler
/// gets what is queued and the channel goes away.
#[must_use = "dropping the only sender closes the channel at once: its handler never gets a value"]
pub struct Sender<T> {
    chan: Arc<Chan<T>>,
}

/// Sending to a loop that has been dropped: the value comes back.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SendError<T>(pub T);

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError(..)")
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the event loop is gone: the value was not sent")
    }
}

impl<T> std::error::Error for SendError<T> {}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("closed", &self.chan.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl<T: Send> Sender<T> {
    /// Queues `value` for the loop's handler and wakes the loop if it may
    /// be asleep. Never blocks for long: the lock is held for one push.
    ///
    /// # Errors
    ///
    /// [`SendError`], with the value, when the loop has been dropped.
    pub fn send(&self, value: T) -> Result<(), SendError<T>> {
        if self.chan.closed.load(Ordering::Acquire) {
            return Err(SendError(value));
        }
        let was_empty = {
            let mut queue = self.chan.lock();
            let was_empty = queue.is_empty();
            queue.push(value);
            was_empty
        };
        if was_empty {
            self.chan.shared.wake_channels();
        }
        Ok(())
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.chan.senders.fetch_add(1, Ordering::AcqRel);
        Sender {
            chan: Arc::clone(&self.chan),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if self.chan.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The loop may be waiting on this channel alone: let it look.
            self.chan.shared.wake_channels();
        }
    }
}

/// The loop's side of one channel.
pub(crate) trait Receive {
    /// Hands every queued message to the handler; returns `false` once
    /// the channel is finished (no sender left, nothing queued), and the
    /// loop forgets it. Until then it keeps the loop alive: the last
    /// sender's drop wakes the loop for this final receive.
    ///
    /// A handler that panics (or, without a panic handler, a next-tick it
    /// queued) ends the receive: the messages after it go
    /// back to the front of the queue, the channel is marked ready again
    /// (the next poll phase delivers them) and the panic comes back, with
    /// whether the channel is still needed.
    fn receive(&mut self, lp: &mut Loop) -> Result<bool, (Panic, bool)>;
}

struct Receiver<T, F> {
    chan: Arc<Chan<T>>,
    /// The loop's spare `Vec`, swapped with the queue on each receive.
    spare: Vec<T>,
    handler: F,
}

impl<T, F: FnMut(&mut Loop, T)> Receive for Receiver<T, F> {
    fn receive(&mut self, lp: &mut Loop) -> Result<bool, (Panic, bool)> {
        // Loaded before the swap: if no sender was left then, every value
        // ever sent is in the queue taken now, and none can follow.
        let senders_left = self.chan.senders.load(Ordering::Acquire) > 0;
        std::mem::swap(&mut *self.chan.lock(), &mut self.spare);
        let mut values = self.spare.drain(..);
        while let Some(value) = values.next() {
            lp.metrics.callbacks.channels += 1;
            let handler = &mut self.handler;
            lp.note_call(crate::diag::Kind::Channel, None);
            let outcome = lp
                .catching(|lp: &mut Loop| handler(lp, value))
                .and_then(|()| lp.drain_ticks_catching());
            if let Err(payload) = outcome {
                let rest: Vec<T> = values.collect();
                let needed = senders_left || !rest.is_empty();
                if !rest.is_empty() {
                    // Ahead of anything sent since the swap: one sender's
                    // values stay in the order sent.
                    self.chan.lock().splice(0..0, rest);
                    self.chan.shared.wake_channels();
                }
                return Err((payload, needed));
            }
        }
        Ok(senders_left)
    }
}

impl<T, F> Drop for Receiver<T, F> {
    /// Nobody will receive any more (the loop is gone): later sends fail
    /// and hand their value back.
    fn drop(&mut self) {
        self.chan.closed.store(true, Ordering::Release);
    }
}

impl Loop {
    /// Makes a channel into this loop: values sent on the returned
    /// [`Sender`] (from any thread) are handed to `handler` on the loop, in
    /// the poll phase, each followed by its next-ticks. One sender's values
    /// arrive in the order sent.
    pub fn channel<T: Send + 'static>(
        &mut self,
        handler: impl FnMut(&mut Loop, T) + 'static,
    ) -> Sender<T> {
        let chan = Arc::new(Chan {
            queue: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            senders: AtomicUsize::new(1),
            shared: Arc::clone(&self.shared),
        });
        let receiver = Receiver {
            chan: Arc::clone(&chan),
            spare: Vec::new(),
            handler,
        };
        self.channels.push(Some(Box::new(receiver)));
        Sender { chan }
    }

    /// Runs the handlers of channels that have messages (or lost their
    /// last sender), and forgets finished channels. A channel is taken out
    /// of its slot while its handler runs. A handler's panic ends this
    /// phase's channel work with everything in place: the panicking
    /// channel back in its slot (unless it is finished) with its other
    /// messages queued, and the channels not reached yet marked for the
    /// next poll phase; then the panic goes to the handler, or on out of
    /// `run()`.
    // Inlined into both compilations of the turn loop (metrics: with and
    // without phase timing), as into the one loop there was before.
    #[inline(always)]
    pub(crate) fn run_channels(&mut self) {
        if !self.shared.take_channel_wake() {
            return;
        }
        let mut index = 0;
        while index < self.channels.len() {
            let Some(mut channel) = self.channels[index].take() else {
                index += 1;
                continue;
            };
            match channel.receive(self) {
                Ok(needed) => {
                    if needed {
                        self.channels[index] = Some(channel);
                    }
                }
                Err((payload, needed)) => {
                    if needed {
                        self.channels[index] = Some(channel);
                    } else {
                        drop(channel);
                    }
                    self.channels.retain(Option::is_some);
                    // The channels after this one were not looked at.
                    self.shared.wake_channels();
                    self.panicked(payload);
                    self.drain_ticks();
                    return;
                }
            }
            index += 1;
        }
        self.channels.retain(Option::is_some);
    }

    /// A channel keeps the loop alive until its final receive (see
    /// [`Receive::receive`]).
    pub(crate) fn channels_keep_alive(&self) -> bool {
        !self.channels.is_empty()
    }
}
