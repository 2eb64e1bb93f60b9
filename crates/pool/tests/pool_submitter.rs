//! The submitter: the loop thread's fast path, with the same guarantees as
//! `Pool::submit`.

#![cfg(not(loom))]

mod util;

use std::collections::HashSet;
use std::sync::Arc;

use eventide_pool::JobError;
use util::{Counter, Gate, collect, gated, job};

#[test]
fn a_submitters_jobs_complete_exactly_once_with_their_handles() {
    const JOBS: u64 = 10_000;
    let (pool, mut completions, signal) = util::pool::<u64>(4);
    let mut submitter = pool.submitter().expect("the submitter is free");
    let handles: Vec<_> = (0..JOBS)
        .map(|i| (submitter.submit(job(move || i)), i))
        .collect();
    let done = collect(&mut completions, &signal, JOBS as usize);
    let mut seen = HashSet::new();
    for (handle, result) in done {
        let expected = handles.iter().find(|(h, _)| *h == handle).map(|(_, v)| *v);
        assert_eq!(result.ok(), expected);
        assert!(seen.insert(handle), "{handle:?} completed twice");
    }
    assert_eq!(seen.len(), JOBS as usize);
}

#[test]
fn handles_from_the_submitter_and_the_pool_never_collide() {
    let (pool, mut completions, signal) = util::pool::<()>(2);
    let mut submitter = pool.submitter().unwrap();
    let mut ids = HashSet::new();
    for _ in 0..3_000 {
        assert!(ids.insert(submitter.submit(job(|| ())).id()));
        assert!(ids.insert(pool.submit(job(|| ())).id()));
    }
    collect(&mut completions, &signal, 6_000);
}

#[test]
fn there_is_one_submitter_at_a_time_and_dropping_it_gives_it_back() {
    let (pool, _completions, _signal) = util::pool::<()>(1);
    let submitter = pool.submitter();
    assert!(submitter.is_some());
    assert!(pool.submitter().is_none());
    drop(submitter);
    assert!(pool.submitter().is_some());
}

#[test]
fn jobs_left_in_a_dropped_submitter_still_run() {
    let (pool, mut completions, signal) = util::pool::<u32>(1);
    let (gate, started) = (Gate::new(), Counter::new());
    pool.submit(gated(&gate, &started, 0));
    started.wait_for(1);
    let mut submitter = pool.submitter().unwrap();
    for i in 1..=50 {
        submitter.submit(job(move || i));
    }
    drop(submitter);
    gate.open();
    let mut values: Vec<_> = collect(&mut completions, &signal, 51)
        .into_iter()
        .map(|(_, result)| result.unwrap())
        .collect();
    values.sort_unstable();
    assert_eq!(values, (0..=50).collect::<Vec<_>>());
}

#[test]
fn a_submitters_job_can_be_cancelled_while_queued() {
    let (pool, mut completions, signal) = util::pool::<u32>(1);
    let (gate, started) = (Gate::new(), Counter::new());
    pool.submit(gated(&gate, &started, 0));
    started.wait_for(1);
    let mut submitter = pool.submitter().unwrap();
    let token = submitter.submit_cancellable(job(|| 1));
    assert_eq!(pool.cancel(&token), Ok(()));
    gate.open();
    let done = collect(&mut completions, &signal, 2);
    assert!(done.contains(&(token.handle(), Err(JobError::Cancelled))));
}

#[test]
fn a_submission_after_the_pool_is_dropped_completes_with_shut_down() {
    let (pool, mut completions, signal) = util::pool::<u32>(2);
    let mut submitter = pool.submitter().unwrap();
    drop(pool);
    let handle = submitter.submit(job(|| 1));
    let done = collect(&mut completions, &signal, 1);
    assert_eq!(done, vec![(handle, Err(JobError::ShutDown))]);
}

#[test]
fn dropping_the_pool_while_the_submitter_holds_jobs_fails_each_once() {
    let (pool, mut completions, signal) = util::pool::<u32>(1);
    let (gate, started) = (Gate::new(), Counter::new());
    pool.submit(gated(&gate, &started, 0));
    started.wait_for(1);
    let mut submitter = pool.submitter().unwrap();
    let queued: Vec<_> = (1..=20).map(|i| submitter.submit(job(move || i))).collect();
    let dropper = std::thread::spawn(move || drop(pool));
    gate.open();
    dropper.join().unwrap();
    drop(submitter);
    let done = collect(&mut completions, &signal, 21);
    for handle in queued {
        let results: Vec<_> = done.iter().filter(|(h, _)| *h == handle).collect();
        assert_eq!(results.len(), 1, "{handle:?}");
        assert!(matches!(results[0].1, Ok(_) | Err(JobError::ShutDown)));
    }
}

#[test]
fn a_burst_completes_with_the_callers_ids() {
    const JOBS: u64 = 10_000;
    let (pool, mut completions, signal) = util::pool::<u64>(4);
    let mut submitter = pool.submitter().unwrap();
    for i in 0..JOBS {
        let handle = submitter.submit_in_burst(1_000_000 + i, job(move || i));
        assert_eq!(handle.id(), 1_000_000 + i);
        assert!(submitter.in_burst());
    }
    submitter.end_burst();
    assert!(!submitter.in_burst());
    let done = collect(&mut completions, &signal, JOBS as usize);
    let mut seen = HashSet::new();
    for (handle, result) in done {
        assert_eq!(result.ok(), Some(handle.id() - 1_000_000));
        assert!(seen.insert(handle.id()), "{handle:?} completed twice");
    }
    assert_eq!(seen.len(), JOBS as usize);
}

/// The reason bursts must end: the first job of a burst wakes a worker,
/// which may take it and block; ending the burst wakes another for the
/// rest, which therefore finish while the first is still blocked.
#[test]
fn an_ended_burst_does_not_wait_behind_its_first_job() {
    let (pool, mut completions, signal) = util::pool::<u64>(2);
    let mut submitter = pool.submitter().unwrap();
    let (gate, started) = (Gate::new(), Counter::new());
    {
        let (gate, started) = (Arc::clone(&gate), Arc::clone(&started));
        submitter.submit_in_burst(
            0,
            job(move || {
                started.add(1);
                gate.wait();
                0
            }),
        );
    }
    started.wait_for(1);
    // Let the other worker run out of things to look at and fall asleep
    // (if it has not, the test passes without showing anything, never
    // fails wrongly).
    std::thread::sleep(std::time::Duration::from_millis(50));
    for i in 1..=20 {
        submitter.submit_in_burst(i, job(move || i));
    }
    submitter.end_burst();
    let done = collect(&mut completions, &signal, 20);
    let mut ids: Vec<u64> = done.iter().map(|(handle, _)| handle.id()).collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=20).collect::<Vec<_>>());
    gate.open();
    assert_eq!(collect(&mut completions, &signal, 1)[0].0.id(), 0);
}
