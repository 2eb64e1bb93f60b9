//! The submitter: one thread's fast path into the pool.
//!
//! The event loop submits from one thread, so that thread can own a deque as
//! a worker does: pushing to it is a couple of plain stores, where pushing to
//! the shared injector is a compare-and-swap and more. Workers steal from it
//! in batches, as from the injector. Job numbers come in blocks, so a
//! submission touches no counter shared with other submitters either.
//!
//! A pool has one submitter. Dropping it moves any job still in its deque to
//! the injector and gives the deque back to the pool for the next
//! [`Pool::submitter`](crate::Pool::submitter) call.
//!
//! After the pool is dropped, a submission completes at once with
//! [`JobError::ShutDown`]: the submitter checks the shutdown flag after its
//! push and its wake-up fence, and the shutdown fences after setting the
//! flag and before failing what is queued, so either the submitter sees the
//! flag and fails its own jobs, or the shutdown finds the job (a job taken
//! by both is failed once, by whoever stole it).

use std::fmt;
use std::sync::Arc;

use crossbeam_deque::Worker;

use crate::Job;
use crate::error::JobError;
use crate::handle::{CancelToken, Handle};
use crate::pool::Core;
use crate::worker::{Lane, Task};

/// How many job numbers a submitter reserves at a time.
const ID_BLOCK: u64 = 1024;

/// One thread's fast handle for submitting jobs to a [`Pool`](crate::Pool),
/// taken with [`Pool::submitter`](crate::Pool::submitter): meant for the
/// event loop's thread. It is `Send` but not `Sync` or `Clone`.
///
/// Its jobs complete on the pool's [`Completions`](crate::Completions) like
/// any other, and cancel with [`Pool::cancel`](crate::Pool::cancel).
pub struct Submitter<J: Job> {
    core: Arc<Core<J>>,
    tasks: Option<Worker<Task<J>>>,
    next_id: u64,
    end_id: u64,
    /// Set by the first [`Submitter::submit_in_burst`] of a burst.
    in_burst: bool,
}

impl<J: Job> Submitter<J> {
    pub(crate) fn take(core: Arc<Core<J>>) -> Option<Self> {
        let tasks = core.shared.take_submitter_deque()?;
        Some(Submitter {
            core,
            tasks: Some(tasks),
            next_id: 0,
            end_id: 0,
            in_burst: false,
        })
    }

    /// Queues a normal job, as [`Pool::submit`](crate::Pool::submit).
    pub fn submit(&mut self, job: J) -> Handle {
        let handle = self.next_handle();
        self.push(Task::new(handle, None, job, Lane::Normal));
        handle
    }

    /// Queues a normal job that can be cancelled, as
    /// [`Pool::submit_cancellable`](crate::Pool::submit_cancellable).
    pub fn submit_cancellable(&mut self, job: J) -> CancelToken {
        let token = CancelToken::new(self.next_handle());
        let claim = Some(token.clone());
        self.push(Task::new(token.handle(), claim, job, Lane::Normal));
        token
    }

    /// Queues a normal job under an id the caller chose instead of the
    /// pool's next one: its completion arrives with a [`Handle`] whose
    /// [`id`](Handle::id) is `id`. For a caller that keeps its own table of
    /// jobs and wants the completion to name the entry (even when the job
    /// fails or panics and only the handle comes back). The pool does not
    /// check that ids are unique: that is the caller's business. Allocates
    /// nothing but the queue's own storage.
    pub fn submit_with_id(&mut self, id: u64, job: J) -> Handle {
        let handle = Handle::new(self.core.id, id);
        self.push(Task::new(handle, None, job, Lane::Normal));
        handle
    }

    /// As [`Submitter::submit_with_id`], but part of a burst: only the
    /// first submission of a burst wakes a worker at once; the others just
    /// queue, and [`Submitter::end_burst`] wakes one if any did. Workers
    /// that find a job while others wait wake each other, so a burst is
    /// spread over the pool without a wakeup (a `SeqCst` fence, often a
    /// system call) per job. The caller must end every burst, soon: a job
    /// queued after the first may otherwise wait behind a long one while
    /// other workers sleep.
    pub fn submit_in_burst(&mut self, id: u64, job: J) -> Handle {
        let handle = Handle::new(self.core.id, id);
        let task = Task::new(handle, None, job, Lane::Normal);
        if self.in_burst {
            self.deque().push(task);
            if self.core.shared.sleep.is_shut_down() {
                self.abandon_own();
            }
        } else {
            self.in_burst = true;
            self.push(task);
        }
        handle
    }

    /// Whether a burst is open ([`Submitter::submit_in_burst`]).
    pub fn in_burst(&self) -> bool {
        self.in_burst
    }

    /// Ends the current burst: wakes a worker if one sleeps and nobody is
    /// looking for work, so that every job of the burst is seen.
    pub fn end_burst(&mut self) {
        if std::mem::take(&mut self.in_burst) {
            self.core.after_push();
        }
    }

    fn next_handle(&mut self) -> Handle {
        if self.next_id == self.end_id {
            self.next_id = self.core.reserve_ids(ID_BLOCK);
            self.end_id = self.next_id + ID_BLOCK;
        }
        self.next_id += 1;
        Handle::new(self.core.id, self.next_id - 1)
    }

    fn deque(&self) -> &Worker<Task<J>> {
        self.tasks
            .as_ref()
            .expect("the deque is only taken by drop")
    }

    fn push(&mut self, task: Task<J>) {
        self.deque().push(task);
        self.core.after_push();
        if self.core.shared.sleep.is_shut_down() {
            self.abandon_own();
        }
    }

    /// Fails the jobs in the deque: the pool is gone.
    fn abandon_own(&self) {
        while let Some(task) = self.deque().pop() {
            self.core.shared.abandon(task, JobError::ShutDown);
        }
    }
}

impl<J: Job> Drop for Submitter<J> {
    fn drop(&mut self) {
        let Some(tasks) = self.tasks.take() else {
            return;
        };
        let mut moved = 0;
        while let Some(task) = tasks.pop() {
            self.core.shared.push(task);
            moved += 1;
        }
        if moved > 0 {
            self.core.after_push();
            if self.core.shared.sleep.is_shut_down() {
                self.core.shared.abandon_queued(&JobError::ShutDown);
            }
        }
        self.core.shared.return_submitter_deque(tasks);
    }
}

impl<J: Job> fmt::Debug for Submitter<J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let queued = self.tasks.as_ref().map_or(0, Worker::len);
        f.debug_struct("Submitter")
            .field("queued", &queued)
            .finish_non_exhaustive()
    }
}
