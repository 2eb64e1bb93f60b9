//! Job handles, and the claim that decides, exactly once, how a cancellable
//! job ends.
//!
//! A [`Handle`] is a plain key: the pool's number and the job's. A job
//! submitted with [`Pool::submit_cancellable`](crate::Pool::submit_cancellable)
//! also carries a small shared claim, whose state moves forward only, by
//! compare-and-swap, from `QUEUED` to one of `RUNNING` (a worker took it),
//! `CANCELLED` (a cancel won the race) or `DONE` (it failed without
//! running); a worker moves it on to `DONE` after the run. Whoever wins the
//! swap out of `QUEUED` delivers the job's completion, which is how a
//! cancellable job completes exactly once even when a cancel races a worker.
//! Plain jobs have no claim and cost no allocation: nothing can race their
//! worker.

use std::fmt;
use std::sync::Arc;

use crate::error::CancelError;
use crate::sync::{AtomicU8, Ordering};

const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const DONE: u8 = 2;
const CANCELLED: u8 = 3;

/// Names one submitted job: returned by [`Pool::submit`](crate::Pool::submit)
/// and handed back with the job's result by
/// [`Completions::drain`](crate::Completions::drain).
///
/// A small `Copy` key, fit to index the caller's table of callbacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Handle {
    pool: u64,
    id: u64,
}

impl Handle {
    pub(crate) fn new(pool: u64, id: u64) -> Self {
        Handle { pool, id }
    }

    /// The job's number, unique within its pool (increasing for each
    /// submitter; the [`Submitter`](crate::Submitter) takes numbers in blocks).
    pub fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn pool(&self) -> u64 {
        self.pool
    }
}

/// Lets its holder cancel one queued job: returned by
/// [`Pool::submit_cancellable`](crate::Pool::submit_cancellable), used with
/// [`Pool::cancel`](crate::Pool::cancel).
#[derive(Clone)]
pub struct CancelToken {
    claim: Arc<Claim>,
}

/// The state shared by a cancellable job's task and its token.
struct Claim {
    handle: Handle,
    state: AtomicU8,
}

impl CancelToken {
    pub(crate) fn new(handle: Handle) -> Self {
        let state = AtomicU8::new(QUEUED);
        CancelToken {
            claim: Arc::new(Claim { handle, state }),
        }
    }

    /// The handle of the job this token cancels.
    pub fn handle(&self) -> Handle {
        self.claim.handle
    }

    /// A worker claims the job to run it; false if it was cancelled.
    pub(crate) fn try_start(&self) -> bool {
        self.leave_queued(RUNNING).is_ok()
    }

    /// Marks a started job finished.
    pub(crate) fn finish(&self) {
        self.claim.state.store(DONE, Ordering::Release);
    }

    /// Cancels the job if it is still queued.
    pub(crate) fn try_cancel(&self) -> Result<(), CancelError> {
        match self.leave_queued(CANCELLED) {
            Ok(_) => Ok(()),
            Err(RUNNING) => Err(CancelError::Running),
            Err(CANCELLED) => Err(CancelError::AlreadyCancelled),
            Err(_) => Err(CancelError::Finished),
        }
    }

    /// Claims a queued job that will never run (shutdown, no threads).
    pub(crate) fn try_abandon(&self) -> bool {
        self.leave_queued(DONE).is_ok()
    }

    fn leave_queued(&self, to: u8) -> Result<u8, u8> {
        let state = &self.claim.state;
        state.compare_exchange(QUEUED, to, Ordering::AcqRel, Ordering::Acquire)
    }

    fn state_name(&self) -> &'static str {
        match self.claim.state.load(Ordering::Acquire) {
            QUEUED => "queued",
            RUNNING => "running",
            CANCELLED => "cancelled",
            _ => "done",
        }
    }
}

impl fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelToken")
            .field("handle", &self.claim.handle)
            .field("state", &self.state_name())
            .finish()
    }
}
