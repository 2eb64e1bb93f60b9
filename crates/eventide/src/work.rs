//! Work on the blocking pool, with its callback on the loop
//! (libuv's `uv_queue_work`).

use std::any::Any;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use eventide_pool::{
    CancelError, CancelToken, Completions, Handle, Job, JobError, Pool, PoolBuilder, Submitter,
};
use eventide_reactor::Waker;

use crate::event_loop::Loop;
use crate::slab::{Slab, SlotId};
use crate::{Error, Result};

/// One work item, in one allocation that makes the round trip: made on the
/// loop thread holding the closure, run in place on a pool thread (which
/// leaves the result where the closure was), and sent back whole, to be
/// opened and freed on the loop thread. No result box, and no memory
/// allocated on one thread and freed on another.
enum Cell<F, R> {
    Job(F),
    Done(R),
    Empty,
}

/// A [`Cell`] of any closure type, as the pool carries it.
trait RunInPlace: Send {
    /// Runs the closure and keeps its result.
    fn run_in_place(&mut self);
    /// For the loop thread, to get the concrete cell back.
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
}

impl<F: FnOnce() -> R + Send + 'static, R: Send + 'static> RunInPlace for Cell<F, R> {
    fn run_in_place(&mut self) {
        if let Cell::Job(work) = std::mem::replace(self, Cell::Empty) {
            *self = Cell::Done(work());
        }
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

/// The pool's job type: a boxed cell; its output is the same box.
struct WorkItem(Box<dyn RunInPlace>);

impl Job for WorkItem {
    type Output = WorkItem;

    fn run(mut self) -> WorkItem {
        self.0.run_in_place();
        self
    }
}

/// What runs on the loop when the job is done.
type After = Box<dyn FnOnce(&mut Loop, std::result::Result<WorkItem, JobError>)>;

/// A work request's handle, for [`Loop::cancel_work`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WorkId(SlotId);

/// The class of pool work, as libuv has them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum WorkClass {
    /// File system and CPU work.
    #[default]
    Normal,
    /// Slow I/O (DNS): never more than half the pool's threads at once, so
    /// file work does not starve behind a hung resolver.
    SlowIo,
}

/// Hashes the pool's job numbers (unique `u64`s, mostly consecutive) with
/// one multiplication: the default SipHash cost more than the rest of a
/// work item's bookkeeping together.
#[derive(Default)]
struct JobIdHasher(u64);

impl Hasher for JobIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*byte)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        // Fibonacci hashing: spreads consecutive ids over the high bits,
        // which the table's probing uses.
        self.0 = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

struct Request {
    token: CancelToken,
    after: After,
}

/// The pool, its completions, and the callbacks of work in flight.
pub(crate) struct Work {
    /// The loop thread's own deque into the pool (dropped before the pool,
    /// handing back whatever it still holds).
    submitter: Submitter<WorkItem>,
    pool: Pool<WorkItem>,
    completions: Completions<WorkItem>,
    requests: Slab<Request>,
    by_job: HashMap<u64, SlotId, BuildHasherDefault<JobIdHasher>>,
    finished: Vec<(Handle, std::result::Result<WorkItem, JobError>)>,
}

impl Work {
    pub(crate) fn new(waker: Waker, threads: Option<usize>) -> Result<Work> {
        let builder = PoolBuilder::from_env();
        if let Some(problem) = builder.config_warning() {
            log::warn!(
                "eventide: {problem}; using {} pool threads",
                builder.thread_count()
            );
        }
        let builder = match threads {
            Some(threads) => builder.threads(threads),
            None => builder,
        };
        let notify = move || {
            if let Err(error) = waker.wake() {
                log::error!("eventide: could not wake the loop for finished work: {error}");
            }
        };
        let (pool, completions) = builder
            .thread_name("eventide-pool")
            .notifier(notify)
            .build()?;
        let submitter = pool.submitter().expect("a new pool's submitter is free");
        Ok(Work {
            submitter,
            pool,
            completions,
            requests: Slab::default(),
            by_job: HashMap::default(),
            finished: Vec::new(),
        })
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.requests.len()
    }

    /// Whether the pool has announced completions that no drain has taken:
    /// the pool notifies only when this goes from false to true, so the
    /// loop must drain whenever it is set, even if the completions were
    /// already taken by an earlier drain (or it would never hear again).
    pub(crate) fn completions_due(&self) -> bool {
        self.completions.is_due()
    }
}

/// The result inside a finished item, on the loop thread.
fn open<F: 'static, R: 'static>(result: std::result::Result<WorkItem, JobError>) -> Result<R> {
    let item = result?;
    let cell = item.0.into_any().downcast::<Cell<F, R>>();
    match cell.map(|cell| *cell) {
        Ok(Cell::Done(value)) => Ok(value),
        _ => unreachable!("a finished work item holds its own result type"),
    }
}

impl Loop {
    /// Runs `work` on the blocking pool, then `after` on the loop with its
    /// result (libuv's `uv_queue_work`): `Ok(value)`, or
    /// [`Error::Cancelled`] if [`Loop::cancel_work`] caught it queued, or
    /// [`Error::Panicked`] if it panicked. The request keeps the loop alive
    /// until `after` has run; `after` runs in the poll phase.
    pub fn queue_work<R: Send + 'static>(
        &mut self,
        work: impl FnOnce() -> R + Send + 'static,
        after: impl FnOnce(&mut Loop, Result<R>) + 'static,
    ) -> WorkId {
        self.queue_work_in(WorkClass::Normal, work, after)
    }

    /// [`Loop::queue_work`] in a chosen class of work.
    pub fn queue_work_in<R: Send + 'static, W: FnOnce() -> R + Send + 'static>(
        &mut self,
        class: WorkClass,
        work: W,
        after: impl FnOnce(&mut Loop, Result<R>) + 'static,
    ) -> WorkId {
        let job = WorkItem(Box::new(Cell::Job(work)));
        let after: After = Box::new(move |lp, result| after(lp, open::<W, R>(result)));
        let work = &mut self.work;
        let token = match class {
            WorkClass::Normal => work.submitter.submit_cancellable(job),
            WorkClass::SlowIo => work.pool.submit_slow_io_cancellable(job),
        };
        let job_id = token.handle().id();
        let id = work.requests.insert(Request { token, after });
        work.by_job.insert(job_id, id);
        WorkId(id)
    }

    /// Cancels work that has not started (libuv's `uv_cancel`): its `after`
    /// then runs with [`Error::Cancelled`], in the poll phase.
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyRunning`] when a pool thread has started (or
    /// finished) it: its `after` gets the real result.
    /// [`Error::Stale`] when its `after` has already run.
    pub fn cancel_work(&mut self, id: WorkId) -> Result<()> {
        let request = self.work.requests.get(id.0).ok_or(Error::Stale {
            what: "work request",
        })?;
        match self.work.pool.cancel(&request.token) {
            Ok(()) => Ok(()),
            Err(CancelError::Running | CancelError::Finished) => Err(Error::AlreadyRunning),
            Err(other) => Err(Error::NotRun(other.to_string())),
        }
    }

    /// Runs the callbacks of the work the pool has finished.
    pub(crate) fn run_work_completions(&mut self) {
        if !self.work.completions_due() {
            return;
        }
        let mut finished = std::mem::take(&mut self.work.finished);
        self.work
            .completions
            .drain(|handle, result| finished.push((handle, result)));
        for (handle, result) in finished.drain(..) {
            let Some(id) = self.work.by_job.remove(&handle.id()) else {
                continue;
            };
            let Some(request) = self.work.requests.remove(id) else {
                continue;
            };
            let after = request.after;
            self.invoke(move |lp: &mut Loop| after(lp, result));
        }
        if self.work.finished.capacity() < finished.capacity() {
            self.work.finished = finished;
        }
    }
}
