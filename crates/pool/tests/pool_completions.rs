//! Submission and completion: every job completes exactly once, with its
//! handle, through a coalesced notifier.

#![cfg(not(loom))]

mod util;

use std::collections::HashMap;
use std::sync::Arc;

use eventide_pool::PoolBuilder;
use util::{Counter, Gate, collect, gated, job};

#[test]
fn a_job_completes_with_its_value_and_its_handle() {
    let (pool, mut completions, signal) = util::pool(2);
    let handle = pool.submit(job(|| "forty-two".len()));
    let done = collect(&mut completions, &signal, 1);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].0, handle);
    assert_eq!(done[0].1, Ok(9));
}

#[test]
fn every_job_from_many_submitting_threads_completes_exactly_once() {
    const THREADS: u64 = 8;
    const PER_THREAD: u64 = 5_000;
    let (pool, mut completions, signal) = util::pool::<u64>(4);
    let handles: Vec<_> = std::thread::scope(|scope| {
        let submitters: Vec<_> = (0..THREADS)
            .map(|t| {
                let pool = &pool;
                scope.spawn(move || {
                    let values = t * PER_THREAD..(t + 1) * PER_THREAD;
                    values
                        .map(|v| (pool.submit(job(move || v)), v))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        submitters
            .into_iter()
            .flat_map(|s| s.join().unwrap())
            .collect()
    });
    let expected: HashMap<_, _> = handles.into_iter().map(|(h, v)| (h.id(), v)).collect();
    let total = (THREADS * PER_THREAD) as usize;
    let done = collect(&mut completions, &signal, total);
    assert_eq!(done.len(), total);
    let mut seen = HashMap::with_capacity(total);
    for (handle, result) in done {
        assert_eq!(Ok(expected[&handle.id()]), result);
        assert!(
            seen.insert(handle.id(), ()).is_none(),
            "{handle:?} completed twice"
        );
    }
    drop(pool);
    assert_eq!(
        completions.drain(|h, r| panic!("late completion {h:?} {r:?}")),
        0
    );
}

#[test]
fn jobs_that_finish_between_two_drains_cost_one_notification() {
    let (pool, mut completions, signal) = util::pool::<usize>(4);
    let finished = Counter::new();
    for i in 0..1_000 {
        let finished = Arc::clone(&finished);
        pool.submit(job(move || {
            finished.add(1);
            i
        }));
    }
    finished.wait_for(1_000);
    drop(pool);
    assert_eq!(
        signal.count(),
        1,
        "no drain happened, so one notification suffices"
    );
    assert_eq!(
        completions.drain(|_, result| assert!(result.is_ok())),
        1_000
    );
}

#[test]
fn a_completion_after_a_drain_is_notified_again() {
    let (pool, mut completions, signal) = util::pool::<u32>(1);
    pool.submit(job(|| 1));
    collect(&mut completions, &signal, 1);
    let before = signal.count();
    pool.submit(job(|| 2));
    let done = collect(&mut completions, &signal, 1);
    assert_eq!(done[0].1, Ok(2));
    assert!(signal.count() > before);
}

#[test]
fn threads_start_on_the_first_submission_not_before() {
    let (pool, mut completions, signal) = util::pool::<()>(3);
    assert_eq!(pool.started_threads(), 0);
    pool.submit(job(|| ()));
    assert_eq!(pool.started_threads(), 3);
    collect(&mut completions, &signal, 1);
}

#[test]
fn idle_workers_steal_from_a_busy_one() {
    // One worker grabs a batch of jobs; a job in that batch blocks until
    // every other job has run, which only other workers can do by stealing.
    let (pool, mut completions, signal) = util::pool::<()>(2);
    let gate = Gate::new();
    let ran = Counter::new();
    const JOBS: usize = 64;
    for _ in 0..JOBS {
        let (gate, ran) = (Arc::clone(&gate), Arc::clone(&ran));
        pool.submit(job(move || {
            if ran.add(1) == 1 {
                gate.wait();
            }
        }));
    }
    ran.wait_for(JOBS);
    gate.open();
    let done = collect(&mut completions, &signal, JOBS);
    assert!(done.iter().all(|(_, result)| result.is_ok()));
}

#[test]
fn a_pool_of_plain_closures_runs_without_boxing() {
    let signal = util::Signal::new();
    let (pool, mut completions) = PoolBuilder::new()
        .notifier(signal.notifier())
        .build()
        .expect("valid configuration");
    let slots: Arc<Vec<_>> = Arc::new((0..100u64).map(std::sync::atomic::AtomicU64::new).collect());
    for i in 0..100 {
        let slots = Arc::clone(&slots);
        pool.submit(move || slots[i].fetch_add(i as u64, std::sync::atomic::Ordering::Relaxed));
    }
    let sum: u64 = collect(&mut completions, &signal, 100)
        .into_iter()
        .map(|(_, result)| result.unwrap())
        .sum();
    assert_eq!(sum, (0..100).sum::<u64>());
}

/// Rounds: the same completions as drains give, one at a time, with the
/// notification re-armed by the round's start, and a round that is left
/// half-taken is continued, not restarted, by the next start.
#[test]
fn rounds_hand_out_each_completion_once_in_order_per_worker() {
    const JOBS: u64 = 2_000;
    let (pool, mut completions, signal) = util::pool::<u64>(1);
    let mut submitter = pool.submitter().unwrap();
    for i in 0..JOBS {
        submitter.submit(job(move || i));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut values = Vec::new();
    let mut rounds = 0;
    while (values.len() as u64) < JOBS {
        let seen = signal.count();
        if !completions.in_round() {
            assert!(
                completions.is_due() || signal.wait_beyond(seen, deadline),
                "timed out with {} of {JOBS}",
                values.len()
            );
        }
        completions.start_round();
        rounds += 1;
        // Take at most 7 per call, as a consumer cut short would.
        for _ in 0..7 {
            match completions.next_in_round() {
                Some((_, result)) => values.push(result.unwrap()),
                None => break,
            }
        }
    }
    // One worker: its completions come in the order it ran them.
    assert_eq!(values, (0..JOBS).collect::<Vec<_>>());
    assert!(rounds > 1);
}

#[test]
fn a_cancelled_job_reaches_a_round_too() {
    let (pool, mut completions, signal) = util::pool::<u32>(1);
    let gate = Gate::new();
    let started = Counter::new();
    pool.submit(gated(&gate, &started, 1));
    started.wait_for(1);
    let token = pool.submit_cancellable(job(|| 2));
    pool.cancel(&token).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut got = Vec::new();
    gate.open();
    while got.len() < 2 {
        let seen = signal.count();
        completions.start_round();
        while let Some((handle, result)) = completions.next_in_round() {
            got.push((handle, result));
        }
        if got.len() < 2 {
            assert!(signal.wait_beyond(seen, deadline), "timed out");
        }
    }
    assert!(
        got.iter()
            .any(|(h, r)| *h == token.handle() && *r == Err(eventide_pool::JobError::Cancelled))
    );
    assert!(got.iter().any(|(_, r)| *r == Ok(1)));
}
