//! The completion path: workers push `(handle, result)` pairs, one consumer
//! drains them, and the notifier is called once per batch, not once per job.
//!
//! # Lanes
//!
//! Each worker delivers into its own lane, a vector behind its own lock,
//! which no other worker touches: workers never contend with each other to
//! deliver a result, and the consumer takes a whole lane at once by swapping
//! the vector with an empty one (it keeps the capacity for the next swap), so
//! draining costs no atomic operation per completion. Completions made off
//! the workers (cancellations, shutdown, failed thread starts) go to a shared
//! `foreign` injector. Order is kept per lane, not across lanes.
//!
//! # Coalescing
//!
//! A push that finds its lane empty announces the lane: it swaps the queue's
//! `pending` flag to true and calls the notifier only if the flag was false.
//! The consumer swaps `pending` to false before it takes the lanes. The swaps
//! are read-modify-writes on one atomic, so they are totally ordered: an
//! announcement whose swap comes after the consumer's sees false and
//! notifies; one whose swap comes before is acquired by the consumer's swap,
//! so the lane it announced is seen non-empty. A push that finds its lane
//! non-empty needs no announcement: whoever made the lane non-empty
//! announced it, and the consumer takes the whole lane at once. So a
//! completion is drained now or announced by a later notification, and
//! however many jobs finish between two drains, the consumer is notified
//! once.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use crossbeam_deque::{Injector, Steal, Worker};

use crate::error::JobError;
use crate::handle::Handle;
use crate::sync::{AtomicBool, Mutex, Ordering, lock};

/// Told when completions are waiting: the facade implements it with the
/// reactor's waker, so that a finished job wakes the loop.
///
/// Called from worker threads (and from the thread that cancels or drops the
/// pool), at most once per batch: after a call, the next comes only once
/// [`Completions::drain`] has run. Keep it short and do not panic in it (a
/// panic is caught and logged, and the completion stays queued).
///
/// Any `Fn() + Send + Sync + 'static` closure is a notifier.
pub trait Notify: Send + Sync + 'static {
    /// Completions are waiting to be drained.
    fn notify(&self);
}

impl<F: Fn() + Send + Sync + 'static> Notify for F {
    fn notify(&self) {
        self()
    }
}

/// One completion: the job's handle and its result.
pub(crate) type Done<T> = (Handle, Result<T, JobError>);

/// A completion as a worker's lane stores it: the job's id only (the
/// pool's is the queue's) and the rare error boxed, so that the common
/// success takes 8 bytes plus the output (a pool of a million quick jobs
/// keeps a million of these at once).
type Packed<T> = (u64, Result<T, Box<JobError>>);

/// The producers' side, shared by the pool, its workers and [`Completions`].
pub(crate) struct CompletionQueue<T> {
    lanes: Box<[Mutex<Vec<Packed<T>>>]>,
    /// The pool's id, for the handles of lane completions.
    pool: u64,
    foreign: Injector<Done<T>>,
    pending: AtomicBool,
    notifier: Arc<dyn Notify>,
    /// Completions are dropped, not queued (`PoolBuilder::discard_results`).
    discard: bool,
}

impl<T> CompletionQueue<T> {
    /// A queue with one lane per worker.
    pub(crate) fn new(pool: u64, lanes: usize, notifier: Arc<dyn Notify>, discard: bool) -> Self {
        CompletionQueue {
            lanes: (0..lanes).map(|_| Mutex::new(Vec::new())).collect(),
            pool,
            foreign: Injector::new(),
            pending: AtomicBool::new(false),
            notifier,
            discard,
        }
    }

    /// The handle of this pool's job `id`.
    pub(crate) fn handle(&self, id: u64) -> Handle {
        Handle::new(self.pool, id)
    }

    /// Delivers a completion from worker `index` through its lane.
    pub(crate) fn push_from_worker(&self, index: usize, id: u64, result: Result<T, JobError>) {
        if self.discard {
            return;
        }
        let packed = (id, result.map_err(Box::new));
        let was_empty = {
            let mut lane = lock(&self.lanes[index]);
            lane.push(packed);
            lane.len() == 1
        };
        if was_empty {
            self.announce();
        }
    }

    /// Delivers a completion from any thread.
    pub(crate) fn push(&self, handle: Handle, result: Result<T, JobError>) {
        if self.discard {
            return;
        }
        self.foreign.push((handle, result));
        self.announce();
    }

    /// Notifies unless the consumer is already due to drain.
    fn announce(&self) {
        if !self.pending.swap(true, Ordering::AcqRel) {
            self.notify();
        }
    }

    fn notify(&self) {
        let notifier = &self.notifier;
        if catch_unwind(AssertUnwindSafe(|| notifier.notify())).is_err() {
            log::error!("eventide-pool: the completion notifier panicked");
        }
    }

    fn waiting(&self) -> usize {
        let in_lanes: usize = self.lanes.iter().map(|lane| lock(lane).len()).sum();
        in_lanes + self.foreign.len()
    }
}

/// Makes a completion queue with no pool behind it: the [`Completer`]
/// delivers into it from any thread, the [`Completions`] takes what was
/// delivered, and `notifier` is told as a pool's notifier is (once per
/// batch). For jobs that deliver their own results (a pool built with
/// [`PoolBuilder::discard_results`](crate::PoolBuilder::discard_results)
/// shared by several consumers, each with its own channel).
pub fn channel<T>(notifier: impl Notify) -> (Completer<T>, Completions<T>) {
    let id = crate::pool::next_pool_id();
    let queue = Arc::new(CompletionQueue::new(id, 0, Arc::new(notifier), false));
    (
        Completer {
            queue: Arc::clone(&queue),
        },
        Completions::new(queue),
    )
}

/// The producers' side of a [`channel`]: cheap to clone, `Send + Sync`
/// when `T` is `Send`.
pub struct Completer<T> {
    queue: Arc<CompletionQueue<T>>,
}

impl<T> Clone for Completer<T> {
    fn clone(&self) -> Self {
        Completer {
            queue: Arc::clone(&self.queue),
        }
    }
}

impl<T> Completer<T> {
    /// Delivers job `id`'s result: the [`Completions`] hand it out with a
    /// [`Handle`] whose [`id`](Handle::id) is `id`.
    pub fn complete(&self, id: u64, result: Result<T, JobError>) {
        self.queue.push(self.queue.handle(id), result);
    }
}

impl<T> fmt::Debug for Completer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completer").finish_non_exhaustive()
    }
}

/// The consumer's side of the completion queue: every job submitted to the
/// pool is delivered here exactly once, as `(handle, result)`.
///
/// It outlives the [`Pool`](crate::Pool): the completions that the pool's
/// shutdown delivers are drained from here after the pool is gone.
pub struct Completions<T> {
    queue: Arc<CompletionQueue<T>>,
    /// The vector a drain swaps into a lane, keeping its capacity.
    spare: Vec<Packed<T>>,
    /// Where drains move foreign completions, a batch per steal.
    batch: Worker<Done<T>>,
    /// The lane being taken by a round ([`Completions::start_round`]),
    /// reversed, so that popping gives the oldest first.
    current: Vec<Packed<T>>,
    /// The next lane a round takes.
    next_lane: usize,
    /// Foreign completions the round still takes.
    foreign_left: usize,
    /// Whether a round is in progress.
    in_round: bool,
}

impl<T> Completions<T> {
    pub(crate) fn new(queue: Arc<CompletionQueue<T>>) -> Self {
        Completions {
            queue,
            spare: Vec::new(),
            batch: Worker::new_fifo(),
            current: Vec::new(),
            next_lane: 0,
            foreign_left: 0,
            in_round: false,
        }
    }

    /// Starts a round of taking completions one at a time, with
    /// [`Completions::next_in_round`]: what [`Completions::drain`] does in
    /// one call, for a consumer that needs to do things between two
    /// completions that a closure cannot (call back into the owner of
    /// these completions, say). Re-arms the notification, as a drain does.
    /// Each lane is taken once per round, when the round gets to it, so a
    /// busy pool cannot keep a round going; what arrives later is announced
    /// afresh. Nothing is copied out: a lane's vector is taken whole, and
    /// memory stays what the pool's lanes hold.
    ///
    /// A round in progress (see [`Completions::in_round`]) is not
    /// restarted: what it has not handed out yet is kept.
    pub fn start_round(&mut self) {
        if self.in_round {
            return;
        }
        self.queue.pending.swap(false, Ordering::AcqRel);
        self.next_lane = 0;
        self.foreign_left = self.queue.foreign.len();
        self.in_round = true;
    }

    /// The next completion of the round, oldest first per worker; `None`
    /// once the round is over.
    pub fn next_in_round(&mut self) -> Option<(Handle, Result<T, JobError>)> {
        if !self.in_round {
            return None;
        }
        loop {
            if let Some((id, result)) = self.current.pop() {
                let handle = Handle::new(self.queue.pool, id);
                return Some((handle, result.map_err(|error| *error)));
            }
            if let Some(lane) = self.queue.lanes.get(self.next_lane) {
                self.next_lane += 1;
                // `current` is empty: the lane gets its capacity back.
                std::mem::swap(&mut *lock(lane), &mut self.current);
                self.current.reverse();
                continue;
            }
            if self.foreign_left > 0 {
                match self.queue.foreign.steal() {
                    Steal::Success(done) => {
                        self.foreign_left -= 1;
                        return Some(done);
                    }
                    Steal::Retry => continue,
                    Steal::Empty => self.foreign_left = 0,
                }
            }
            self.in_round = false;
            return None;
        }
    }

    /// Whether a round has completions left to hand out.
    pub fn in_round(&self) -> bool {
        self.in_round
    }

    /// Hands every completion waiting now to `f` and returns how many there
    /// were. Completions from one worker come in the order they finished.
    ///
    /// Completions that arrive during the drain are left for the next one,
    /// so a busy pool cannot keep a loop turn from ending; they are announced
    /// by a fresh notification.
    pub fn drain(&mut self, mut f: impl FnMut(Handle, Result<T, JobError>)) -> usize {
        let queue = Arc::clone(&self.queue);
        queue.pending.swap(false, Ordering::AcqRel);
        let mut drained = 0;
        for lane in queue.lanes.iter() {
            std::mem::swap(&mut *lock(lane), &mut self.spare);
            drained += self.spare.len();
            self.spare.drain(..).for_each(|(id, result)| {
                f(Handle::new(queue.pool, id), result.map_err(|error| *error))
            });
        }
        let waiting = queue.foreign.len();
        let steal = |batch: &_, limit| queue.foreign.steal_batch_with_limit(batch, limit);
        drained + self.drain_from(waiting, steal, &mut f)
    }

    /// Hands at most `limit` foreign completions to `f`, a batch at a time;
    /// returns how many.
    fn drain_from(
        &mut self,
        limit: usize,
        steal: impl Fn(&Worker<Done<T>>, usize) -> Steal<()>,
        f: &mut impl FnMut(Handle, Result<T, JobError>),
    ) -> usize {
        let mut drained = 0;
        while drained < limit {
            match steal(&self.batch, limit - drained) {
                Steal::Empty => break,
                Steal::Retry => continue,
                Steal::Success(()) => {}
            }
            while let Some((handle, result)) = self.batch.pop() {
                f(handle, result);
                drained += 1;
            }
        }
        drained
    }

    /// Whether a drain is due: the notifier was called (or is about to be)
    /// and no [`Completions::drain`] has run since. Cheap (one atomic
    /// load), for a consumer's hot path; unlike [`Completions::is_empty`],
    /// a consumer that drains whenever this is true never misses a
    /// notification, because only a drain re-arms it.
    pub fn is_due(&self) -> bool {
        self.queue.pending.load(Ordering::Acquire)
    }

    /// Whether no completion is waiting.
    pub fn is_empty(&self) -> bool {
        self.queue.waiting() == 0
    }
}

impl<T> fmt::Debug for Completions<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completions")
            .field("waiting", &self.queue.waiting())
            .finish()
    }
}
