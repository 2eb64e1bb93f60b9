//! The blocking pool of eventide: a small set of threads for the work the
//! operating system cannot do asynchronously (getaddrinfo, file operations a
//! backend lacks, user CPU work), as libuv's threadpool is for Node.
//!
//! The pool knows nothing of the event loop. Results come back through a
//! [`Completions`] receiver, and a [`Notify`] that the caller provides (the
//! facade: the reactor's waker) is told when some are waiting.
//!
//! ```
//! use std::time::Duration;
//! use eventide_pool::PoolBuilder;
//!
//! let (tx, rx) = std::sync::mpsc::sync_channel(1);
//! let (pool, mut completions) = PoolBuilder::from_env()
//!     .notifier(move || { let _ = tx.try_send(()); })
//!     .build()?;
//! let handle = pool.submit(|| 6 * 7);
//! let mut answer = None;
//! while answer.is_none() {
//!     rx.recv_timeout(Duration::from_secs(10)).expect("the pool notifies");
//!     completions.drain(|done, result| {
//!         assert_eq!(done, handle);
//!         answer = Some(result.expect("the job neither panicked nor was cancelled"));
//!     });
//! }
//! assert_eq!(answer, Some(42));
//! # Ok::<(), eventide_pool::ConfigError>(())
//! ```
//!
//! # Jobs and results
//!
//! A pool runs jobs of one type `J: `[`Job`], which any
//! `FnOnce() -> R + Send + 'static` closure is, and delivers
//! `Result<R, `[`JobError`]`>`. A pool of one closure type stores its jobs
//! inline in the queues, without a box. A caller that runs arbitrary closures
//! (the facade) uses a boxed [`DynJob`], with `R` its own type: an enum of
//! the results it expects, or `Box<dyn Any + Send>` to downcast on the loop
//! thread.
//!
//! A submission returns a [`Handle`], a small `Copy` key that comes back
//! with the result. [`Pool::submit`] allocates nothing beyond the queue's
//! own storage; [`Pool::submit_cancellable`] also allocates the
//! [`CancelToken`] that [`Pool::cancel`] needs, a shared claim that decides
//! whether the cancel or a worker gets the job (see the `handle` module).
//!
//! Every submitted job completes exactly once, with one of:
//! - its value;
//! - [`JobError::Cancelled`]: [`Pool::cancel`] caught it still queued (the
//!   completion is delivered at once; cancelling a running or finished job
//!   fails with [`CancelError`] instead);
//! - [`JobError::Panicked`] with the panic's message (the worker survives);
//! - [`JobError::ShutDown`]: the pool was dropped while it was still queued;
//! - [`JobError::NoThreads`]: no worker thread could be started at all.
//!
//! # Design
//!
//! - Queues and the steal loop: a crossbeam-deque injector per class of
//!   work, a FIFO deque per worker, and stealing between workers (see the
//!   `worker` module: "Queues", "The steal loop").
//! - The loop thread's fast path: a [`Submitter`] (one per pool) owns a
//!   deque as a worker does; its pushes are plain stores, and the workers
//!   steal from it in batches (see the `submitter` module).
//! - Two classes of work, as libuv's: normal jobs ([`Pool::submit`]) and
//!   slow I/O ([`Pool::submit_slow_io`]). Slow jobs never occupy more than
//!   half the threads, rounded up, at least one ([`Pool::slow_io_limit`]), so
//!   file work never starves behind a hung resolver.
//! - Sleep and wake: idle workers park on their own flag after announcing
//!   themselves and looking once more for work; a submitter wakes one only
//!   if one is idle, so a busy pool takes no lock and makes no system call
//!   per job, and an idle pool burns no CPU (see the `sleep` module).
//! - Completions: each worker delivers into its own lane, which the one
//!   consumer drains in batches, with a notification coalesced per batch:
//!   however many jobs finish between two drains, the notifier is called
//!   once (see the `completions` module).
//! - Sharing: a pool built with [`PoolBuilder::discard_results`] runs jobs
//!   that deliver their own results, each into its consumer's
//!   [`channel`], so several event loops share one pool and each drains
//!   only its own completions.
//! - Size: [`DEFAULT_THREADS`] (4); [`THREADPOOL_SIZE_ENV`]
//!   (`EVENTIDE_THREADPOOL_SIZE=1..=1024`) or [`PoolBuilder::threads`]
//!   change it; threads start on the first submission (see [`PoolBuilder`]).
//!
//! # Shutdown
//!
//! Dropping the [`Pool`] stops it from taking jobs, wakes every worker and
//! joins every thread: jobs already running finish and deliver their
//! values; jobs still queued do not run (queued work is cancelled, not run)
//! and complete with [`JobError::ShutDown`], as does anything a surviving
//! [`Submitter`] submits afterwards. No thread outlives the pool, and every
//! completion is in the [`Completions`] receiver, announced by the notifier
//! as usual, when the drop returns, so the consumer drains them afterwards.
//! The drop waits for running jobs: a job that never returns keeps it
//! waiting. [`Pool::shut_down_within`] bounds the wait: the workers still
//! inside a job when the time is up are detached (logged with
//! `log::warn!`), finish their jobs on their own, deliver them into the
//! [`Completions`] and end; it returns how many there were, so that the
//! owner of what those jobs touch knows it must keep it alive (the event
//! loop leaks such jobs' memory rather than free it under a running job).
//! A pool dropped on one of its own workers (a job that held its last
//! handle, through a shared `Arc`) joins every other thread; that one
//! cannot join itself, so it ends on its own once its job returns.
//!
//! # Testing
//!
//! The sleep/wake protocol's primitives come from one `sync` module that
//! uses loom's under `--cfg loom`, where a model checks that a job pushed
//! while a worker falls asleep is never missed:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p eventide-pool --lib --release
//! ```

mod builder;
mod completions;
mod error;
mod handle;
mod pool;
mod sleep;
mod submitter;
mod sync;
mod worker;

pub use builder::{DEFAULT_THREADS, MAX_THREADS, PoolBuilder, THREADPOOL_SIZE_ENV, ThreadSpawn};
pub use completions::{Completer, Completions, Notify, channel};
pub use error::{CancelError, ConfigError, JobError};
pub use handle::{CancelToken, Handle};
pub use pool::Pool;
pub use submitter::Submitter;

/// A unit of work the pool runs on one of its threads.
///
/// Every `FnOnce() -> R + Send + 'static` closure with `R: Send + 'static`
/// is a job, as is a boxed [`DynJob`].
pub trait Job: Send + 'static {
    /// What the job produces, delivered on [`Completions`].
    type Output: Send + 'static;

    /// Does the work.
    fn run(self) -> Self::Output;
}

impl<F, R> Job for F
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    type Output = R;

    fn run(self) -> R {
        self()
    }
}

/// A boxed job, for a pool that runs closures of many types.
pub type DynJob<R> = Box<dyn FnOnce() -> R + Send + 'static>;
