//! The state the workers share, the steal loop, and a worker's main loop.
//!
//! # Queues
//!
//! Normal jobs are pushed to the `normal` injector, or, by the one
//! [`Submitter`](crate::Submitter), to its own deque; a worker steals a
//! batch of them into its own FIFO deque and works through it, while idle
//! peers steal from that deque. Slow I/O jobs go to the `slow` injector
//! only, never to a worker's deque, and are taken one at a time, so that the
//! slow-lane limit is checked for each of them.
//!
//! # The steal loop
//!
//! [`Shared::find_task`] looks, in order, at: the slow injector (if a slow
//! slot is free), the worker's own deque, a batch from the normal injector,
//! a batch from the submitter's deque, then each peer's deque, starting
//! after the worker's own index so that thieves spread out. As in
//! crossbeam-deque's `find_task`, the injector, the submitter's deque and
//! the peers are retried while any of them answers `Steal::Retry`. A worker
//! that found a job while it was the last one searching, and sees more
//! work, wakes one sleeper to come and look (see the sleep module).

//! # The slow-lane limit
//!
//! `slow_running` counts the workers running a slow job. A worker reserves a
//! slot (compare-and-swap while below `slow_limit`, half the threads rounded
//! up, at least one) before it takes a slow job and frees it afterwards. So
//! at least `threads - slow_limit` workers are always free for normal jobs,
//! however many slow jobs hang. A worker that frees a slot looks at the slow
//! injector first thing, so queued slow jobs never wait for a wakeup.
//!
//! # Spinning
//!
//! A worker that finds nothing yields a few times and looks again before it
//! sleeps: a submitter streaming jobs usually refills the queue within that
//! time, and a yield is far cheaper than a park/unpark pair.

use std::iter;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use crossbeam_deque::{Injector, Steal, Stealer, Worker};

use crate::Job;
use crate::completions::CompletionQueue;
use crate::error::JobError;
use crate::handle::{CancelToken, Handle};
use crate::sleep::Sleep;
use crate::sync::{AtomicUsize, Mutex, Ordering, lock, yield_now};

/// How many times an idle worker yields and looks again before sleeping.
const SPIN_ROUNDS: usize = 4;

/// The two classes of work, as libuv has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    /// File system and CPU work.
    Normal,
    /// Work that may block for long on the outside world (DNS).
    Slow,
}

/// A queued job with its id, and its claim if it can be cancelled. (The
/// id, not the whole handle: the pool's id is the same for every task, and
/// a queue of a million tasks is 8 MB smaller without it.)
pub(crate) struct Task<J> {
    pub(crate) id: u64,
    pub(crate) claim: Option<CancelToken>,
    pub(crate) job: J,
    pub(crate) lane: Lane,
}

impl<J> Task<J> {
    pub(crate) fn new(handle: Handle, claim: Option<CancelToken>, job: J, lane: Lane) -> Self {
        Task {
            id: handle.id(),
            claim,
            job,
            lane,
        }
    }

    /// Claims the task for running; false if it was cancelled.
    fn try_start(&self) -> bool {
        self.claim.as_ref().is_none_or(CancelToken::try_start)
    }

    /// Claims the task for failing without running; false if it was
    /// cancelled (whose completion the cancel delivered).
    fn try_abandon(&self) -> bool {
        self.claim.as_ref().is_none_or(CancelToken::try_abandon)
    }
}

/// A worker's own deque, with its index.
struct Local<J: Job> {
    index: usize,
    tasks: Worker<Task<J>>,
}

/// What the pool and its workers share.
pub(crate) struct Shared<J: Job> {
    normal: Injector<Task<J>>,
    slow: Injector<Task<J>>,
    stealers: Box<[Stealer<Task<J>>]>,
    locals: Mutex<Vec<Option<Local<J>>>>,
    /// The [`Submitter`](crate::Submitter)'s deque, while no one holds it,
    /// and the workers' way to steal from it.
    submitter_deque: Mutex<Option<Worker<Task<J>>>>,
    submitted: Stealer<Task<J>>,
    pub(crate) sleep: Sleep,
    slow_running: AtomicUsize,
    slow_limit: usize,
    pub(crate) completions: Arc<CompletionQueue<J::Output>>,
}

/// The most workers that may run slow jobs at once: half, rounded up.
pub(crate) fn slow_limit(threads: usize) -> usize {
    threads.div_ceil(2).max(1)
}

impl<J: Job> Shared<J> {
    /// State for `threads` workers, delivering to `completions`.
    pub(crate) fn new(threads: usize, completions: Arc<CompletionQueue<J::Output>>) -> Self {
        let tasks: Vec<_> = (0..threads).map(|_| Worker::new_fifo()).collect();
        let stealers = tasks.iter().map(Worker::stealer).collect();
        let locals = tasks.into_iter().enumerate();
        let locals = locals.map(|(index, tasks)| Some(Local { index, tasks }));
        let submitter_deque = Worker::new_fifo();
        Shared {
            submitted: submitter_deque.stealer(),
            submitter_deque: Mutex::new(Some(submitter_deque)),
            normal: Injector::new(),
            slow: Injector::new(),
            stealers,
            locals: Mutex::new(locals.collect()),
            sleep: Sleep::new(threads),
            slow_running: AtomicUsize::new(0),
            slow_limit: slow_limit(threads),
            completions,
        }
    }

    pub(crate) fn slow_limit(&self) -> usize {
        self.slow_limit
    }

    /// Queues a task on its lane's injector (no wakeup).
    pub(crate) fn push(&self, task: Task<J>) {
        match task.lane {
            Lane::Normal => self.normal.push(task),
            Lane::Slow => self.slow.push(task),
        }
    }

    /// Completes `task` with `error`, unrun, unless a cancel claimed it.
    pub(crate) fn abandon(&self, task: Task<J>, error: JobError) {
        if task.try_abandon() {
            let handle = self.completions.handle(task.id);
            self.completions.push(handle, Err(error));
        }
    }

    /// Completes every job still in the injectors or the submitter's deque
    /// with `error`.
    pub(crate) fn abandon_queued(&self, error: &JobError) {
        for injector in [&self.normal, &self.slow] {
            while let Some(task) = steal_one(|| injector.steal()) {
                self.abandon(task, error.clone());
            }
        }
        while let Some(task) = steal_one(|| self.submitted.steal()) {
            self.abandon(task, error.clone());
        }
    }

    /// Hands out the submitter's deque, if no one holds it.
    pub(crate) fn take_submitter_deque(&self) -> Option<Worker<Task<J>>> {
        lock(&self.submitter_deque).take()
    }

    /// Takes back the submitter's deque.
    pub(crate) fn return_submitter_deque(&self, deque: Worker<Task<J>>) {
        *lock(&self.submitter_deque) = Some(deque);
    }

    fn take_local(&self, index: usize) -> Option<Local<J>> {
        lock(&self.locals)[index].take()
    }

    /// Whether a worker looking now would find something to do.
    fn has_work(&self) -> bool {
        !self.normal.is_empty()
            || !self.submitted.is_empty()
            || self.slow_job_available()
            || self.stealers.iter().any(|stealer| !stealer.is_empty())
    }

    fn slow_job_available(&self) -> bool {
        !self.slow.is_empty() && self.slow_running.load(Ordering::Acquire) < self.slow_limit
    }

    /// The steal loop (see the module docs).
    fn find_task(&self, local: &Worker<Task<J>>, index: usize) -> Option<Task<J>> {
        self.take_slow()
            .or_else(|| local.pop())
            .or_else(|| self.steal_normal(local, index))
    }

    fn steal_normal(&self, local: &Worker<Task<J>>, index: usize) -> Option<Task<J>> {
        iter::repeat_with(|| {
            self.normal
                .steal_batch_and_pop(local)
                .or_else(|| self.submitted.steal_batch_and_pop(local))
                .or_else(|| self.steal_from_peers(index))
        })
        .find(|steal| !steal.is_retry())
        .and_then(Steal::success)
    }

    fn steal_from_peers(&self, index: usize) -> Steal<Task<J>> {
        let peers = self.stealers.len();
        (1..peers)
            .map(|offset| self.stealers[(index + offset) % peers].steal())
            .collect()
    }

    fn take_slow(&self) -> Option<Task<J>> {
        if self.slow.is_empty() || !self.reserve_slow_slot() {
            return None;
        }
        let task = steal_one(|| self.slow.steal());
        if task.is_none() {
            self.release_slow_slot();
        }
        task
    }

    fn reserve_slow_slot(&self) -> bool {
        let below_limit = |running: usize| (running < self.slow_limit).then_some(running + 1);
        self.slow_running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, below_limit)
            .is_ok()
    }

    fn release_slow_slot(&self) {
        self.slow_running.fetch_sub(1, Ordering::AcqRel);
    }

    /// Runs a task unless it was cancelled, and delivers its result.
    fn run(&self, local: &Local<J>, task: Task<J>) {
        let lane = task.lane;
        if task.try_start() {
            let Task { id, claim, job, .. } = task;
            let result = catch_unwind(AssertUnwindSafe(|| job.run()));
            claim.as_ref().map(CancelToken::finish);
            let result = result.map_err(panicked);
            self.completions.push_from_worker(local.index, id, result);
        }
        if lane == Lane::Slow {
            self.release_slow_slot();
        }
    }

    /// The next task for worker `index`, or `None` once the pool shuts down.
    fn next_task(&self, local: &Local<J>) -> Option<Task<J>> {
        // Whether this worker counts as searching (see the sleep module):
        // a woken worker was counted by its waker.
        let mut searching = false;
        loop {
            if self.sleep.is_shut_down() {
                if searching {
                    self.sleep.stop_searching();
                }
                return None;
            }
            if let Some(task) = self.take_slow().or_else(|| local.tasks.pop()) {
                if searching {
                    self.found_while_searching();
                }
                return Some(task);
            }
            if !searching {
                self.sleep.start_searching();
            }
            if let Some(task) = self.steal_spinning(&local.tasks, local.index) {
                self.found_while_searching();
                return Some(task);
            }
            self.sleep.stop_searching();
            searching = self.sleep.sleep(local.index, || self.has_work());
        }
    }

    /// A searcher found a job: it stops searching, and if it was the last
    /// searcher and there is more to do, wakes a sleeper to look for it.
    fn found_while_searching(&self) {
        if self.sleep.stop_searching() && self.has_work() {
            self.sleep.wake_one();
        }
    }

    /// Steals, yielding a few times between attempts before giving up.
    fn steal_spinning(&self, local: &Worker<Task<J>>, index: usize) -> Option<Task<J>> {
        iter::once(())
            .chain(iter::repeat_n((), SPIN_ROUNDS).map(|()| yield_now()))
            .find_map(|()| self.find_task(local, index))
    }
}

/// A worker thread's main function.
pub(crate) fn run_worker<J: Job>(shared: Arc<Shared<J>>, index: usize) {
    let Some(local) = shared.take_local(index) else {
        return;
    };
    while let Some(task) = shared.next_task(&local) {
        shared.run(&local, task);
    }
    while let Some(task) = local.tasks.pop() {
        shared.abandon(task, JobError::ShutDown);
    }
}

fn steal_one<T>(steal: impl FnMut() -> Steal<T>) -> Option<T> {
    iter::repeat_with(steal)
        .find(|steal| !steal.is_retry())
        .and_then(Steal::success)
}

/// Turns a caught panic into the job's error, keeping its message.
fn panicked(payload: Box<dyn std::any::Any + Send>) -> JobError {
    let message = match payload.downcast::<String>() {
        Ok(message) => *message,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(message) => (*message).to_owned(),
            Err(_) => "<non-string panic payload>".to_owned(),
        },
    };
    JobError::Panicked { message }
}
