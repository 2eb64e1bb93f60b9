//! Cancellation, as `uv_cancel`: a queued job can be cancelled, a running or
//! finished one cannot, and either way the job completes exactly once.

#![cfg(not(loom))]

mod util;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use eventide_pool::{CancelError, JobError};
use util::{Counter, Gate, collect, gated, job};

/// A one-thread pool whose worker is held by a gated job, which has started.
fn blocked_pool() -> (
    util::TestPool<&'static str>,
    eventide_pool::Completions<&'static str>,
    Arc<util::Signal>,
    Arc<Gate>,
    eventide_pool::CancelToken,
) {
    let (pool, completions, signal) = util::pool(1);
    let (gate, started) = (Gate::new(), Counter::new());
    let blocker = pool.submit_cancellable(gated(&gate, &started, "blocker"));
    started.wait_for(1);
    (pool, completions, signal, gate, blocker)
}

#[test]
fn a_cancelled_queued_job_completes_with_cancelled_and_never_runs() {
    let (pool, mut completions, signal, gate, blocker) = blocked_pool();
    let ran = Arc::new(AtomicBool::new(false));
    let queued = {
        let ran = Arc::clone(&ran);
        pool.submit_cancellable(job(move || {
            ran.store(true, Ordering::SeqCst);
            "queued"
        }))
    };
    assert_eq!(pool.cancel(&queued), Ok(()));
    let first = collect(&mut completions, &signal, 1);
    assert_eq!(first, vec![(queued.handle(), Err(JobError::Cancelled))]);
    gate.open();
    let after = pool.submit(job(|| "after"));
    let rest = collect(&mut completions, &signal, 2);
    assert_eq!(
        rest,
        vec![(blocker.handle(), Ok("blocker")), (after, Ok("after"))]
    );
    assert!(!ran.load(Ordering::SeqCst), "a cancelled job must not run");
    drop(pool);
    assert_eq!(
        completions.drain(|h, r| panic!("{h:?} completed twice: {r:?}")),
        0
    );
}

#[test]
fn cancelling_a_running_job_reports_that_it_is_running() {
    let (pool, mut completions, signal, gate, blocker) = blocked_pool();
    assert_eq!(pool.cancel(&blocker), Err(CancelError::Running));
    gate.open();
    let done = collect(&mut completions, &signal, 1);
    assert_eq!(done, vec![(blocker.handle(), Ok("blocker"))]);
}

#[test]
fn cancelling_a_finished_job_reports_that_it_finished() {
    let (pool, mut completions, signal) = util::pool(1);
    let token = pool.submit_cancellable(job(|| 1));
    collect(&mut completions, &signal, 1);
    assert_eq!(pool.cancel(&token), Err(CancelError::Finished));
}

#[test]
fn cancelling_twice_reports_the_first_cancel_and_completes_once() {
    let (pool, mut completions, signal, gate, _blocker) = blocked_pool();
    let queued = pool.submit_cancellable(job(|| "queued"));
    assert_eq!(pool.cancel(&queued), Ok(()));
    assert_eq!(pool.cancel(&queued), Err(CancelError::AlreadyCancelled));
    gate.open();
    let done = collect(&mut completions, &signal, 2);
    let cancelled = done.iter().filter(|(h, _)| *h == queued.handle()).count();
    assert_eq!(cancelled, 1);
}

#[test]
fn a_handle_from_another_pool_is_refused() {
    let (pool, mut completions, signal) = util::pool(1);
    let (other, _other_completions, _) = util::pool::<i32>(1);
    let token = pool.submit_cancellable(job(|| 1));
    assert_eq!(other.cancel(&token), Err(CancelError::ForeignHandle));
    assert_eq!(collect(&mut completions, &signal, 1)[0].1, Ok(1));
}

#[test]
fn cancels_racing_workers_complete_every_job_exactly_once() {
    const JOBS: usize = 2_000;
    let (pool, mut completions, signal) = util::pool::<usize>(4);
    let tokens: Vec<_> = (0..JOBS)
        .map(|i| pool.submit_cancellable(job(move || i)))
        .collect();
    let cancelled = tokens.iter().filter(|t| pool.cancel(t).is_ok()).count();
    let done = collect(&mut completions, &signal, JOBS);
    let reported = done
        .iter()
        .filter(|(_, r)| *r == Err(JobError::Cancelled))
        .count();
    assert_eq!(reported, cancelled);
    let mut ids: Vec<_> = done.iter().map(|(h, _)| h.id()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), JOBS);
}
