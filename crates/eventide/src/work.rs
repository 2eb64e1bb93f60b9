//! Work on the blocking pool, with its callback on the loop
//! (libuv's `uv_queue_work`).

use std::any::Any;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use eventide_pool::{
    CancelError, CancelToken, Completions, DynJob, Handle, JobError, Pool, PoolBuilder,
};
use eventide_reactor::Waker;

use crate::event_loop::Loop;
use crate::slab::{Slab, SlotId};
use crate::{Error, Result};

/// What a pool job hands back: the user's value, boxed.
type Value = Box<dyn Any + Send>;
/// What runs on the loop when the job is done.
type After = Box<dyn FnOnce(&mut Loop, std::result::Result<Value, JobError>)>;

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
    pool: Pool<DynJob<Value>>,
    completions: Completions<Value>,
    requests: Slab<Request>,
    by_job: HashMap<u64, SlotId, BuildHasherDefault<JobIdHasher>>,
    finished: Vec<(Handle, std::result::Result<Value, JobError>)>,
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
        Ok(Work {
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

    pub(crate) fn completions_waiting(&self) -> bool {
        !self.completions.is_empty()
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
    pub fn queue_work_in<R: Send + 'static>(
        &mut self,
        class: WorkClass,
        work: impl FnOnce() -> R + Send + 'static,
        after: impl FnOnce(&mut Loop, Result<R>) + 'static,
    ) -> WorkId {
        let job: DynJob<Value> = Box::new(move || Box::new(work()) as Value);
        let after: After = Box::new(move |lp, result| {
            let result = result.map_err(Error::from).map(|value| {
                *value
                    .downcast::<R>()
                    .expect("a work result has the type its job produced")
            });
            after(lp, result);
        });
        let work = &mut self.work;
        let token = match class {
            WorkClass::Normal => work.pool.submit_cancellable(job),
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
        if self.work.in_flight() == 0 || !self.work.completions_waiting() {
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
