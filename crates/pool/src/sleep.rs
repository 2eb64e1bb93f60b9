//! How idle workers sleep and how submitters wake them, without lost wakeups
//! and without a wakeup per job.
//!
//! # The protocol
//!
//! Each worker has its own [`Parker`] (a flag under a mutex, and a condvar).
//! Idle workers are kept on a stack under the `idle` mutex, and `num_idle`
//! mirrors the stack's length so that a submitter can tell, without taking
//! the lock, that nobody sleeps.
//!
//! A worker that found no work calls [`Sleep::sleep`], which, under `idle`:
//!
//! 1. pushes the worker on the stack and increments `num_idle`, then issues
//!    a `SeqCst` fence;
//! 2. checks for work once more (`has_work`); if there is some, it pops
//!    itself off again (it is still on top: the lock was held since step 1)
//!    and returns;
//! 3. otherwise releases the lock and parks until its flag is set.
//!
//! A submitter pushes its job, then calls [`Sleep::wake_one`], which issues
//! a `SeqCst` fence and reads `num_idle`. The two fences are totally
//! ordered: if the submitter's comes first, the worker's step 2, after its
//! own fence, sees the job the submitter pushed before its fence; if the
//! worker's comes first, the submitter reads a non-zero count, takes the
//! lock (waiting out a step 2 in progress), pops a sleeper and sets its
//! flag. Either way the job is seen: no lost wakeup. This relies only on the
//! queue's push and emptiness check being atomic accesses to the same
//! memory, not on the orderings the queue uses inside.
//!
//! The fence costs the submitter less than a read-modify-write of
//! `num_idle` would: that cache line changes hands whenever a worker falls
//! asleep or wakes, and a plain load can share it.
//!
//! A wakeup targets one popped worker through its own flag, so a spurious
//! condvar wakeup can never consume someone else's wakeup, and an unpark that
//! lands between steps 2 and 3 is kept in the flag. When nobody sleeps, a
//! submission costs one uncontended read-modify-write and no system call.
//!
//! # Searching workers
//!
//! A worker that is out of work of its own and looks for some to steal is
//! *searching*; `searching` counts them. A submitter does not wake anybody
//! while someone searches: the searcher will find the job. So a stream of
//! submissions to a pool whose workers keep up costs no wakeups (without
//! this, every submission found an idle worker to unpark: a system call per
//! job). A worker woken by [`Sleep::wake_one`] is counted as searching by
//! its waker, so that the submissions made before it runs do not wake more.
//!
//! The count cannot lose a job. A searcher stops searching (a `SeqCst`
//! decrement and fence) before it either takes a job or falls asleep:
//!
//! - falling asleep, it checks for work after the fence of step 1 above:
//!   a submitter that read the count before the decrement issued its own
//!   fence before this worker's, so the job it pushed is seen;
//! - having found a job, if it was the last searcher and work remains, it
//!   wakes a sleeper (the same fence argument shows the remaining work is
//!   seen), so that a job queued behind a long one is not left waiting
//!   while others sleep.
//!
//! [`Sleep::shutdown`] sets the shutdown flag under `idle` and unparks every
//! sleeper; a worker that reaches step 1 afterwards sees the flag under the
//! lock and does not sleep.

use crate::sync::{AtomicBool, AtomicUsize, Condvar, Mutex, Ordering, fence, lock, wait};

/// One worker's wakeup flag.
#[derive(Debug, Default)]
struct Parker {
    notified: Mutex<bool>,
    condvar: Condvar,
}

impl Parker {
    /// Blocks until [`Parker::unpark`] was called, then resets the flag.
    fn park(&self) {
        let mut notified = lock(&self.notified);
        while !*notified {
            notified = wait(&self.condvar, notified);
        }
        *notified = false;
    }

    /// Sets the flag and wakes the parked worker, if it is parked.
    fn unpark(&self) {
        *lock(&self.notified) = true;
        self.condvar.notify_one();
    }
}

/// The idle workers, guarded by [`Sleep::idle`].
#[derive(Debug, Default)]
struct Idle {
    /// Indices of the workers that are asleep (or about to park).
    stack: Vec<usize>,
    /// Set once by [`Sleep::shutdown`]; no worker falls asleep after it.
    shutdown: bool,
}

/// The sleep/wake protocol of a pool's workers (see the module docs).
#[derive(Debug)]
pub(crate) struct Sleep {
    idle: Mutex<Idle>,
    num_idle: AtomicUsize,
    /// Workers looking for work to steal, including woken ones that have
    /// yet to look (see the module docs).
    searching: AtomicUsize,
    shutdown: AtomicBool,
    parkers: Box<[Parker]>,
}

impl Sleep {
    /// A protocol for `workers` workers, indexed `0..workers`.
    pub(crate) fn new(workers: usize) -> Self {
        Sleep {
            idle: Mutex::new(Idle::default()),
            num_idle: AtomicUsize::new(0),
            searching: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            parkers: (0..workers).map(|_| Parker::default()).collect(),
        }
    }

    /// Whether [`Sleep::shutdown`] was called.
    pub(crate) fn is_shut_down(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }

    /// Puts `worker` to sleep unless `has_work` says there is work or the
    /// pool is shutting down; returns once woken. The caller looks for work
    /// again afterwards (a wakeup is a hint, not a hand-over). The caller
    /// must not be searching; it is, as counted by its waker, when this
    /// returns `true` (it slept and was woken).
    pub(crate) fn sleep(&self, worker: usize, has_work: impl FnOnce() -> bool) -> bool {
        if self.register_idle(worker, has_work) {
            self.parkers[worker].park();
            return true;
        }
        false
    }

    /// The calling worker starts looking for work to steal.
    pub(crate) fn start_searching(&self) {
        self.searching.fetch_add(1, Ordering::SeqCst);
    }

    /// The calling worker stops searching; returns whether it was the last
    /// searcher. Issues the fence the module docs rely on, so the caller
    /// may check for work afterwards.
    pub(crate) fn stop_searching(&self) -> bool {
        let was = self.searching.fetch_sub(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        was == 1
    }

    /// Steps 1 and 2: returns whether the worker should park.
    fn register_idle(&self, worker: usize, has_work: impl FnOnce() -> bool) -> bool {
        let mut idle = lock(&self.idle);
        if idle.shutdown {
            return false;
        }
        idle.stack.push(worker);
        self.num_idle.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if has_work() {
            idle.stack.pop();
            self.num_idle.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Wakes one sleeping worker, if any and if nobody is searching; call
    /// after making work visible. Returns whether a worker was woken.
    pub(crate) fn wake_one(&self) -> bool {
        fence(Ordering::SeqCst);
        if self.num_idle.load(Ordering::Relaxed) == 0 || self.searching.load(Ordering::Relaxed) > 0
        {
            return false;
        }
        match self.pop_idle() {
            Some(worker) => {
                self.parkers[worker].unpark();
                true
            }
            None => false,
        }
    }

    fn pop_idle(&self) -> Option<usize> {
        let mut idle = lock(&self.idle);
        let worker = idle.stack.pop()?;
        self.num_idle.fetch_sub(1, Ordering::Relaxed);
        // The woken worker searches from now on (see the module docs).
        self.searching.fetch_add(1, Ordering::SeqCst);
        Some(worker)
    }

    /// Wakes every sleeper and keeps workers from sleeping from now on.
    pub(crate) fn shutdown(&self) {
        self.shutdown.store(true, Ordering::Release);
        // Pairs with the fence in `wake_one`: a submitter that pushed before
        // its fence either sees the flag or has its job seen by the shutdown.
        fence(Ordering::SeqCst);
        let sleepers = {
            let mut idle = lock(&self.idle);
            idle.shutdown = true;
            self.num_idle.fetch_sub(idle.stack.len(), Ordering::Relaxed);
            std::mem::take(&mut idle.stack)
        };
        for worker in sleepers {
            self.parkers[worker].unpark();
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests;
