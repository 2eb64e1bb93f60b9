//! [`LoopHandle`]: other threads post closures to the loop and wake it
//! (libuv's `uv_async_send`, with the message queue it always needs).
//!
//! The protocol: a sender pushes its closure onto a lock-free FIFO, then
//! sets `wake_pending`; only the sender that turns it from `false` to
//! `true` wakes the reactor, so a burst of posts costs one wake-up. The loop
//! clears `wake_pending` *before* it drains the queue: a closure pushed
//! after the clear sets it again and wakes again; one pushed before is
//! seen by the drain. Nothing is missed, and one sender's closures run in
//! the order it posted them.
//!
//! # Waking only a sleeping loop
//!
//! Writing to the reactor's waker is a system call for the sender and a
//! completion for the loop to take. While the loop is awake it will look
//! at the pending flags before it next blocks anyway, so the waker is used
//! only when the loop sleeps. The loop sets `sleeping`, issues a `SeqCst`
//! fence, then looks at every pending flag (posts, channels, finished pool
//! work) once more before it blocks; a sender sets its flag, issues a
//! `SeqCst` fence, then looks at `sleeping`. Of two fences one comes first,
//! so either the loop sees the flag (and does not block) or the sender sees
//! `sleeping` (and wakes it): never neither. Both may happen: then the
//! wake-up is spare, and the loop's next wait returns at once, harmlessly.
//! A stream of messages into a busy loop thus costs no system call at all.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};

use crossbeam_deque::{Injector, Steal};
use eventide_reactor::Waker;

use crate::event_loop::Loop;

/// A closure posted from another thread.
type Posted = Box<dyn FnOnce(&mut Loop) + Send>;

/// What a loop and its handles share.
pub(crate) struct Shared {
    queue: Injector<Posted>,
    wake_pending: AtomicBool,
    /// Some channel has messages (or lost its last sender).
    channels_pending: AtomicBool,
    /// The loop is blocked in its poll phase's wait, or about to be (see
    /// the module docs).
    sleeping: AtomicBool,
    closed: AtomicBool,
    /// Live `LoopHandle`s: while there are any, the loop stays alive.
    handles: AtomicUsize,
    waker: Waker,
}

impl Shared {
    pub(crate) fn new(waker: Waker) -> Shared {
        Shared {
            queue: Injector::new(),
            wake_pending: AtomicBool::new(false),
            channels_pending: AtomicBool::new(false),
            sleeping: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            handles: AtomicUsize::new(0),
            waker,
        }
    }

    /// Whether open handles (or undrained posts) keep the loop alive.
    pub(crate) fn keeps_alive(&self) -> bool {
        self.handles.load(Ordering::Acquire) > 0 || !self.queue.is_empty()
    }

    /// The open handles, and the closures posted and not run yet.
    pub(crate) fn counts(&self) -> (usize, usize) {
        (self.handles.load(Ordering::Acquire), self.queue.len())
    }

    pub(crate) fn wake_pending(&self) -> bool {
        self.wake_pending.load(Ordering::Acquire) || self.channels_pending.load(Ordering::Acquire)
    }

    /// A channel needs the loop: wake it, once per burst.
    pub(crate) fn wake_channels(&self) {
        if !self.channels_pending.load(Ordering::Acquire)
            && !self.channels_pending.swap(true, Ordering::AcqRel)
        {
            self.wake_if_sleeping();
        }
    }

    /// Wakes the loop if it sleeps or is about to; call after setting a
    /// flag that the loop looks at before it sleeps (see the module docs).
    pub(crate) fn wake_if_sleeping(&self) {
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed)
            && self.sleeping.swap(false, Ordering::AcqRel)
            && let Err(error) = self.waker.wake()
        {
            log::error!("eventide: could not wake the loop: {error}");
        }
    }

    /// The loop is about to block: from now on, senders wake it. The caller
    /// must look at every pending flag after this, and not block if one is
    /// set.
    pub(crate) fn fall_asleep(&self) {
        self.sleeping.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// The loop is back from its wait.
    pub(crate) fn wake_up(&self) {
        self.sleeping.store(false, Ordering::Relaxed);
    }

    /// Clears the channels' wake-up; returns whether there was one. Cleared
    /// before the channels are read, so a send after it wakes again.
    pub(crate) fn take_channel_wake(&self) -> bool {
        self.channels_pending.load(Ordering::Acquire)
            && self.channels_pending.swap(false, Ordering::AcqRel)
    }

    /// The loop is gone: later posts are refused.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Posts `f` as [`LoopHandle::post`] does, for the loop's own
    /// cross-thread wake-ups (a task's waker); `false` (and `f` dropped)
    /// once the loop is gone.
    pub(crate) fn post(&self, f: Posted) -> bool {
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        self.queue.push(f);
        self.wake();
        true
    }

    fn wake(&self) {
        if !self.wake_pending.load(Ordering::Acquire)
            && !self.wake_pending.swap(true, Ordering::AcqRel)
        {
            self.wake_if_sleeping();
        }
    }
}

/// Posting to a loop that has been dropped: the closure comes back.
#[derive(Clone, Copy)]
pub struct LoopGone<F>(pub F);

impl<F> fmt::Debug for LoopGone<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LoopGone(..)")
    }
}

impl<F> fmt::Display for LoopGone<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the event loop is gone: the closure was not posted")
    }
}

impl<F> std::error::Error for LoopGone<F> {}

/// Posts closures to a [`Loop`] from any thread, and wakes it. `Send`,
/// `Sync` and cheap to clone. While any handle exists the loop stays alive
/// (as an open `uv_async_t` does): drop every handle to let it finish.
pub struct LoopHandle {
    shared: Arc<Shared>,
}

impl fmt::Debug for LoopHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopHandle")
            .field("closed", &self.shared.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl LoopHandle {
    /// Queues `f` to run on the loop thread, in the poll phase, and wakes the
    /// loop. Closures from one handle (one thread) run in the order posted.
    ///
    /// # Errors
    ///
    /// [`LoopGone`], with `f` in it, when the loop has been dropped.
    pub fn post<F: FnOnce(&mut Loop) + Send + 'static>(&self, f: F) -> Result<(), LoopGone<F>> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(LoopGone(f));
        }
        self.shared.queue.push(Box::new(f));
        self.shared.wake();
        Ok(())
    }

    /// Wakes the loop without posting anything (`uv_async_send` alone).
    pub fn wake(&self) {
        self.shared.wake();
    }

    /// Whether the loop has been dropped.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }
}

impl Clone for LoopHandle {
    fn clone(&self) -> Self {
        self.shared.handles.fetch_add(1, Ordering::AcqRel);
        LoopHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl Drop for LoopHandle {
    fn drop(&mut self) {
        // The last handle going may end the loop: wake it to look again.
        if self.shared.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            let _ = self.shared.waker.wake();
        }
    }
}

impl Loop {
    /// A handle for other threads to post closures with. The loop stays
    /// alive while any handle exists.
    ///
    /// (`LoopHandle` is the one handle that is not a `Copy` key: it is
    /// for other threads, which cannot reach the loop to use a key with
    /// it, and it keeps the loop alive while it exists, as an open
    /// `uv_async_t` does. Dropping it is how it is closed.)
    #[must_use = "a handle dropped at once posts nothing (and keeps the loop alive for no one)"]
    pub fn handle(&self) -> LoopHandle {
        self.shared.handles.fetch_add(1, Ordering::AcqRel);
        LoopHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Runs what other threads posted, each followed by its next-ticks.
    // Inlined into both compilations of the turn loop (metrics: with and
    // without phase timing), as into the one loop there was before.
    #[inline(always)]
    pub(crate) fn run_posted(&mut self) {
        // A plain load first: the common turn has nothing posted, and
        // needs no locked instruction to find that out.
        if !self.shared.wake_pending.load(Ordering::Acquire)
            || !self.shared.wake_pending.swap(false, Ordering::AcqRel)
        {
            return;
        }
        // Only what is queued now: a sender that keeps posting cannot hold
        // the loop in this phase (what it posts next wakes the next turn).
        let mut left = self.shared.queue.len();
        while left > 0 {
            match self.shared.queue.steal() {
                Steal::Success(posted) => {
                    left -= 1;
                    self.metrics.callbacks.posted += 1;
                    self.note_call(crate::diag::Kind::Posted, None);
                    let outcome = self
                        .catching(posted)
                        .and_then(|()| self.drain_ticks_catching());
                    if let Err(payload) = outcome {
                        // The flag was cleared for this drain: without it
                        // the closures behind this one would wait for
                        // another post. (With a handler the drain goes on
                        // and the next poll phase finds nothing, harmlessly.)
                        if !self.shared.queue.is_empty() {
                            self.shared.wake();
                        }
                        self.panicked(payload);
                        self.drain_ticks();
                    }
                }
                Steal::Retry => continue,
                Steal::Empty => break,
            }
        }
    }
}
