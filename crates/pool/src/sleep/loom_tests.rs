//! Loom models of the sleep/wake protocol.
//!
//! The pool's crossbeam queues are not loom-aware, so the models stand them
//! in with an atomic job counter: a push is a `Release` increment and the
//! emptiness check an `Acquire` load, as weak as crossbeam's own. The protocol
//! code under test is the real [`Sleep`]. A lost wakeup leaves a worker parked
//! forever, which loom reports as a deadlock.
//!
//! Run with: `RUSTFLAGS="--cfg loom" cargo test -p eventide-pool --lib --release`

use loom::sync::Arc;
use loom::sync::atomic::AtomicUsize;
use loom::thread;

use super::Sleep;
use crate::sync::Ordering;

/// Explores with at most 3 preemptions unless `LOOM_MAX_PREEMPTIONS` says
/// otherwise: enough for these protocols, and quick.
fn model(body: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(body);
}

/// A stand-in for the pool's queues.
#[derive(Default)]
struct Jobs {
    queued: AtomicUsize,
    taken: AtomicUsize,
}

impl Jobs {
    fn push(&self) {
        self.queued.fetch_add(1, Ordering::Release);
    }

    fn has_work(&self) -> bool {
        self.queued.load(Ordering::Acquire) > 0
    }

    fn try_take(&self) -> bool {
        let take = |queued: usize| queued.checked_sub(1);
        let taken = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, take);
        if taken.is_ok() {
            self.taken.fetch_add(1, Ordering::AcqRel);
        }
        taken.is_ok()
    }
}

/// A worker: takes jobs until `target` were taken (by anyone) or shutdown,
/// sleeping whenever it finds none.
/// As the pool's workers, it searches before it sleeps, and is counted as
/// searching when woken.
fn work(sleep: &Sleep, jobs: &Jobs, index: usize, target: usize) {
    let mut searching = false;
    while jobs.taken.load(Ordering::Acquire) < target && !sleep.is_shut_down() {
        if !searching {
            sleep.start_searching();
        }
        if jobs.try_take() {
            if sleep.stop_searching() && jobs.has_work() {
                sleep.wake_one();
            }
            searching = false;
            continue;
        }
        sleep.stop_searching();
        searching = sleep.sleep(index, || jobs.has_work());
    }
    if searching {
        sleep.stop_searching();
    }
}

/// A submitter: pushes a job, then wakes a sleeper, as `Pool::submit` does.
fn submit(sleep: &Sleep, jobs: &Jobs) {
    jobs.push();
    sleep.wake_one();
}

#[test]
fn a_job_pushed_while_the_worker_falls_asleep_is_never_missed() {
    model(|| {
        let sleep = Arc::new(Sleep::new(1));
        let jobs = Arc::new(Jobs::default());
        let worker = {
            let (sleep, jobs) = (Arc::clone(&sleep), Arc::clone(&jobs));
            thread::spawn(move || work(&sleep, &jobs, 0, 1))
        };
        submit(&sleep, &jobs);
        worker.join().unwrap();
        assert_eq!(jobs.taken.load(Ordering::Acquire), 1);
    });
}

#[test]
fn two_jobs_reach_two_workers_falling_asleep() {
    model(|| {
        let sleep = Arc::new(Sleep::new(2));
        let jobs = Arc::new(Jobs::default());
        let workers: Vec<_> = (0..2)
            .map(|index| {
                let (sleep, jobs) = (Arc::clone(&sleep), Arc::clone(&jobs));
                thread::spawn(move || {
                    work(&sleep, &jobs, index, 2);
                    // Whoever sees the last job taken releases the other
                    // worker, which may rightly be asleep, as a drop would.
                    sleep.shutdown();
                })
            })
            .collect();
        submit(&sleep, &jobs);
        submit(&sleep, &jobs);
        for worker in workers {
            worker.join().unwrap();
        }
        assert_eq!(jobs.taken.load(Ordering::Acquire), 2);
    });
}

#[test]
fn a_shutdown_while_a_worker_falls_asleep_still_releases_it() {
    model(|| {
        let sleep = Arc::new(Sleep::new(1));
        let jobs = Arc::new(Jobs::default());
        let worker = {
            let (sleep, jobs) = (Arc::clone(&sleep), Arc::clone(&jobs));
            thread::spawn(move || work(&sleep, &jobs, 0, 1))
        };
        sleep.shutdown();
        worker.join().unwrap();
        assert_eq!(jobs.taken.load(Ordering::Acquire), 0);
    });
}
