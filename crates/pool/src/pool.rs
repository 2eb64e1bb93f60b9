//! The pool's owner: submission, cancellation, lazy thread start and
//! shutdown.

use std::fmt;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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

/// A fresh pool id (also for a completion [`channel`](crate::channel)).
pub(crate) fn next_pool_id() -> u64 {
    NEXT_POOL_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

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
    /// Workers inside their main function, for a bounded shutdown.
    running: Arc<Running>,
}

/// Counts the workers that have not left their main function, so that a
/// shutdown can wait for them with a deadline (a `JoinHandle` has no timed
/// join). Plain `std` primitives: nothing here takes part in the sleep
/// protocol that the loom model checks.
#[derive(Default)]
struct Running {
    count: std::sync::Mutex<usize>,
    changed: std::sync::Condvar,
}

impl Running {
    fn add(&self, delta: isize) {
        let mut count = self.count.lock().unwrap_or_else(|p| p.into_inner());
        *count = count.checked_add_signed(delta).expect("worker count");
        if *count == 0 {
            self.changed.notify_all();
        }
    }

    /// Waits until no worker runs or `timeout` has passed; returns how many
    /// still run.
    fn wait_for_none(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let mut count = self.count.lock().unwrap_or_else(|p| p.into_inner());
        while *count > 0 {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            count = self
                .changed
                .wait_timeout(count, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *count
    }
}

/// Marks its worker as gone when dropped: when the worker's main function
/// returns, or unwinds.
struct Leaving(Arc<Running>);

impl Drop for Leaving {
    fn drop(&mut self) {
        self.0.add(-1);
    }
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
        discard: bool,
    ) -> (Self, Completions<J::Output>) {
        let id = next_pool_id();
        let queue = Arc::new(CompletionQueue::new(id, threads, notifier, discard));
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
            running: Arc::default(),
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

    /// As [`Pool::submit`], under an id the caller chose, as
    /// [`Submitter::submit_with_id`] explains: for callers that share the
    /// pool and so cannot each own its one [`Submitter`].
    pub fn submit_with_id(&self, id: u64, job: J) -> Handle {
        let handle = Handle::new(self.core.id, id);
        self.core
            .enqueue(Task::new(handle, None, job, Lane::Normal));
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
        // Counted from before the spawn: a shutdown that comes before the
        // thread runs still waits for it.
        self.running.add(1);
        let leaving = Leaving(Arc::clone(&self.running));
        let body = Box::new(move || {
            let _leaving = leaving;
            run_worker(shared, index);
        });
        let name = format!("{}-{index}", self.thread_name);
        let result = (self.spawn)(ThreadSpawn::new(index, name, body));
        if let Err(error) = &result {
            // The body was dropped unrun, and its `Leaving` with it.
            log::warn!("eventide-pool: could not start worker thread {index}: {error}");
        }
        result
    }

    /// Stops the workers, joins them (waiting at most `timeout`, if given:
    /// then the workers still running are detached), and fails what is
    /// still queued. Returns how many workers were still running.
    fn shut_down(&self, timeout: Option<Duration>) -> usize {
        self.shared.sleep.shutdown();
        let handles = std::mem::take(&mut lock(&self.threads).handles);
        let still_running = match timeout {
            Some(timeout) if !handles.is_empty() => self.running.wait_for_none(timeout),
            _ => 0,
        };
        let me = std::thread::current().id();
        for handle in handles {
            if handle.thread().id() == me {
                // Shut down from one of its own workers (a job held the
                // pool's last handle): that thread cannot join itself; it
                // sees the shutdown and ends once its job returns.
                continue;
            }
            if still_running > 0 && !handle.is_finished() {
                // Detached: it ends by itself once its job returns.
                continue;
            }
            if handle.join().is_err() {
                log::error!("eventide-pool: a worker thread panicked");
            }
        }
        self.shared.abandon_queued(&JobError::ShutDown);
        still_running
    }
}

impl<J: Job> Pool<J> {
    /// Shuts the pool down as dropping it does (see the crate docs,
    /// "Shutdown"), but waits at most `timeout` for the jobs still
    /// running: workers still inside a job then are detached (their
    /// threads end by themselves when their jobs return, delivering into
    /// the [`Completions`] as usual) and a warning is logged. Returns how
    /// many workers were detached: while that is not zero, a job the pool
    /// was given may still be running, or still be run, on a detached
    /// thread. Dropping the pool afterwards waits for nothing more.
    pub fn shut_down_within(&self, timeout: Duration) -> usize {
        let detached = self.core.shut_down(Some(timeout));
        if detached > 0 {
            log::warn!(
                "eventide-pool: {detached} worker thread(s) still running after {timeout:?} \
                 at shutdown: detached"
            );
        }
        detached
    }
}

impl<J: Job> Drop for Pool<J> {
    /// Shuts down: see the crate docs, "Shutdown".
    fn drop(&mut self) {
        self.core.shut_down(None);
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
