//! The pool's owner: submission, cancellation, lazy thread start and
//! shutdown.

use std::fmt;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::Job;
use crate::builder::{SpawnHandler, ThreadSpawn};
use crate::completions::{CompletionQueue, Completions, Notify};
use crate::error::{CancelError, JobError};
use crate::handle::{CancelToken, Handle};
use crate::submitter::Submitter;
use crate::sync::{AtomicBool, AtomicU64, Mutex, Ordering, lock};
use crate::worker::{Lane, Shared, Task, run_worker};

/// Numbers pools, so that a handle from one pool is refused by another.
static NEXT_POOL_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A work-stealing pool of blocking threads running jobs of type `J`.
///
/// Build one with [`PoolBuilder`](crate::PoolBuilder); it comes with the
/// [`Completions`] receiver on which every job's result is delivered. `Pool`
/// is `Send + Sync`: submit from any number of threads through `&Pool`.
///
/// Dropping the pool shuts it down: see the crate docs, "Shutdown".
pub struct Pool<J: Job> {
    core: Arc<Core<J>>,
}

/// What a [`Pool`] and its [`Submitter`] share: the workers' state, and the
/// means to start them.
pub(crate) struct Core<J: Job> {
    pub(crate) shared: Arc<Shared<J>>,
    threads: Mutex<Threads>,
    all_started: AtomicBool,
    next_job: AtomicU64,
    pub(crate) id: u64,
    thread_name: String,
    spawn: Arc<SpawnHandler>,
}

/// The worker threads, guarded by [`Core::threads`].
struct Threads {
    started: Vec<bool>,
    handles: Vec<JoinHandle<()>>,
}

impl<J: Job> Pool<J> {
    pub(crate) fn new(
        threads: usize,
        thread_name: String,
        notifier: Arc<dyn Notify>,
        spawn: Arc<SpawnHandler>,
    ) -> (Self, Completions<J::Output>) {
        let id = NEXT_POOL_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let queue = Arc::new(CompletionQueue::new(id, threads, notifier));
        let core = Core {
            shared: Arc::new(Shared::new(threads, Arc::clone(&queue))),
            threads: Mutex::new(Threads {
                started: vec![false; threads],
                handles: Vec::with_capacity(threads),
            }),
            all_started: AtomicBool::new(false),
            next_job: AtomicU64::new(0),
            id,
            thread_name,
            spawn,
        };
        let pool = Pool {
            core: Arc::new(core),
        };
        (pool, Completions::new(queue))
    }

    /// Queues a normal job (file system or CPU work). Its result arrives on
    /// the [`Completions`] with the returned handle. Allocates nothing but
    /// the queue's own storage.
    pub fn submit(&self, job: J) -> Handle {
        let handle = self.core.next_handle();
        self.core
            .enqueue(Task::new(handle, None, job, Lane::Normal));
        handle
    }

    /// Queues a slow I/O job (DNS and the like). At most
    /// [`Pool::slow_io_limit`] workers run such jobs at once, so normal jobs
    /// never starve behind them.
    pub fn submit_slow_io(&self, job: J) -> Handle {
        let handle = self.core.next_handle();
        self.core.enqueue(Task::new(handle, None, job, Lane::Slow));
        handle
    }

    /// As [`Pool::submit_slow_io`], under an id the caller chose, as
    /// [`Submitter::submit_with_id`] explains.
    pub fn submit_slow_io_with_id(&self, id: u64, job: J) -> Handle {
        let handle = Handle::new(self.core.id, id);
        self.core.enqueue(Task::new(handle, None, job, Lane::Slow));
        handle
    }

    /// As [`Pool::submit`], and returns a token with which [`Pool::cancel`]
    /// can cancel the job while it is queued; the token's
    /// [`handle`](CancelToken::handle) names the job. (The token is the one
    /// allocation a plain submission does without.)
    pub fn submit_cancellable(&self, job: J) -> CancelToken {
        self.submit_cancellable_in(job, Lane::Normal)
    }

    /// As [`Pool::submit_slow_io`], with a [`CancelToken`] as
    /// [`Pool::submit_cancellable`] gives.
    pub fn submit_slow_io_cancellable(&self, job: J) -> CancelToken {
        self.submit_cancellable_in(job, Lane::Slow)
    }

    fn submit_cancellable_in(&self, job: J, lane: Lane) -> CancelToken {
        let token = CancelToken::new(self.core.next_handle());
        let claim = Some(token.clone());
        self.core
            .enqueue(Task::new(token.handle(), claim, job, lane));
        token
    }

    /// The pool's [`Submitter`]: the fast way for one thread (the event
    /// loop's) to submit normal jobs. There is one per pool: `None` while it
    /// is taken; dropping it gives it back.
    pub fn submitter(&self) -> Option<Submitter<J>> {
        Submitter::take(Arc::clone(&self.core))
    }

    /// Cancels a job that is still queued, as `uv_cancel` does: its
    /// completion, [`JobError::Cancelled`], is delivered at once, and the job
    /// itself is dropped, unrun, when a worker reaches it (or at shutdown).
    /// A job that has started cannot be cancelled.
    pub fn cancel(&self, token: &CancelToken) -> Result<(), CancelError> {
        let handle = token.handle();
        if handle.pool() != self.core.id {
            return Err(CancelError::ForeignHandle);
        }
        token.try_cancel()?;
        let cancelled = Err(JobError::Cancelled);
        self.core.shared.completions.push(handle, cancelled);
        Ok(())
    }

    /// The number of worker threads the pool runs once started.
    pub fn threads(&self) -> usize {
        lock(&self.core.threads).started.len()
    }

    /// The number of worker threads started so far (0 before the first
    /// submission; less than [`Pool::threads`] while spawns fail).
    pub fn started_threads(&self) -> usize {
        lock(&self.core.threads).handles.len()
    }

    /// The most workers that run slow I/O jobs at once: half the threads,
    /// rounded up, at least one.
    pub fn slow_io_limit(&self) -> usize {
        self.core.shared.slow_limit()
    }
}

impl<J: Job> Core<J> {
    fn next_handle(&self) -> Handle {
        Handle::new(self.id, self.next_job.fetch_add(1, Ordering::Relaxed))
    }

    /// Reserves `count` consecutive job numbers; returns the first.
    pub(crate) fn reserve_ids(&self, count: u64) -> u64 {
        self.next_job.fetch_add(count, Ordering::Relaxed)
    }

    /// Queues a task on the injectors and wakes a worker for it.
    fn enqueue(&self, task: Task<J>) {
        self.shared.push(task);
        self.after_push();
    }

    /// Starts the threads if need be, then wakes a sleeper: call after
    /// making a task visible.
    pub(crate) fn after_push(&self) {
        if !self.all_started.load(Ordering::Acquire) {
            self.start_threads();
        }
        self.shared.sleep.wake_one();
    }

    /// Starts the threads not running yet; if none runs afterwards, fails
    /// the queued jobs rather than leave them waiting forever.
    fn start_threads(&self) {
        let mut threads = lock(&self.threads);
        if self.all_started.load(Ordering::Acquire) || self.shared.sleep.is_shut_down() {
            return;
        }
        let failure = self.spawn_missing(&mut threads);
        if threads.handles.len() == threads.started.len() {
            self.all_started.store(true, Ordering::Release);
        }
        if let (true, Some(message)) = (threads.handles.is_empty(), failure) {
            self.shared.abandon_queued(&JobError::NoThreads { message });
        }
    }

    /// Spawns each missing worker, stopping at the first failure, whose
    /// message it returns.
    fn spawn_missing(&self, threads: &mut Threads) -> Option<String> {
        for index in 0..threads.started.len() {
            if threads.started[index] {
                continue;
            }
            match self.spawn_worker(index) {
                Ok(handle) => {
                    threads.started[index] = true;
                    threads.handles.push(handle);
                }
                Err(error) => return Some(error.to_string()),
            }
        }
        None
    }

    fn spawn_worker(&self, index: usize) -> std::io::Result<JoinHandle<()>> {
        let shared = Arc::clone(&self.shared);
        let body = Box::new(move || run_worker(shared, index));
        let name = format!("{}-{index}", self.thread_name);
        let result = (self.spawn)(ThreadSpawn::new(index, name, body));
        if let Err(error) = &result {
            log::warn!("eventide-pool: could not start worker thread {index}: {error}");
        }
        result
    }

    /// Stops the workers, joins them, and fails what is still queued.
    fn shut_down(&self) {
        self.shared.sleep.shutdown();
        let handles = std::mem::take(&mut lock(&self.threads).handles);
        for handle in handles {
            if handle.join().is_err() {
                log::error!("eventide-pool: a worker thread panicked");
            }
        }
        self.shared.abandon_queued(&JobError::ShutDown);
    }
}

impl<J: Job> Drop for Pool<J> {
    /// Shuts down: see the crate docs, "Shutdown".
    fn drop(&mut self) {
        self.core.shut_down();
    }
}

impl<J: Job> fmt::Debug for Pool<J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("threads", &self.threads())
            .field("started_threads", &self.started_threads())
            .field("slow_io_limit", &self.slow_io_limit())
            .finish()
    }
}
