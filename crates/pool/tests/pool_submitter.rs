//! The submitter: the loop thread's fast path, with the same guarantees as
//! `Pool::submit`.

#![cfg(not(loom))]

mod util;

use std::collections::HashSet;
use std::sync::Arc;

use eventide_pool::JobError;
use util::{Counter, Gate, collect, job};

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
    {
        let (gate, started) = (Arc::clone(&gate), Arc::clone(&started));
        pool.submit(job(move || {
            started.add(1);
            gate.wait();
            0
        }));
    }
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
    {
        let (gate, started) = (Arc::clone(&gate), Arc::clone(&started));
        pool.submit(job(move || {
            started.add(1);
            gate.wait();
            0
        }));
    }
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
    {
        let (gate, started) = (Arc::clone(&gate), Arc::clone(&started));
        pool.submit(job(move || {
            started.add(1);
            gate.wait();
            0
        }));
    }
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
