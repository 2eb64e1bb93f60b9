//! Thread spawn failures: a job is never lost, and never waits forever.

#![cfg(not(loom))]

mod util;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use eventide_pool::{Completions, DynJob, JobError, Pool, PoolBuilder, ThreadSpawn};
use util::{Signal, collect, job};

/// A pool whose spawn handler fails with `EAGAIN` while `fails(attempt,
/// index)` says so.
fn failing_pool(
    threads: usize,
    fails: impl Fn(usize, usize) -> bool + Send + Sync + 'static,
) -> (Pool<DynJob<u32>>, Completions<u32>, Arc<Signal>) {
    let signal = Signal::new();
    let attempts = AtomicUsize::new(0);
    let (pool, completions) = PoolBuilder::new()
        .threads(threads)
        .notifier(signal.notifier())
        .spawn_handler(move |spawn: ThreadSpawn| {
            let attempt = attempts.fetch_add(1, Ordering::SeqCst);
            if fails(attempt, spawn.index()) {
                return Err(io::Error::from_raw_os_error(11));
            }
            spawn.spawn()
        })
        .build()
        .unwrap();
    (pool, completions, signal)
}

#[test]
fn a_job_completes_with_no_threads_when_no_thread_can_start() {
    let (pool, mut completions, signal) = failing_pool(4, |_, _| true);
    let handle = pool.submit(job(|| 1));
    let done = collect(&mut completions, &signal, 1);
    assert_eq!(done[0].0, handle);
    let Err(JobError::NoThreads { message }) = &done[0].1 else {
        panic!("expected NoThreads, got {:?}", done[0].1);
    };
    assert!(message.contains("os error 11"), "{message}");
    assert_eq!(pool.started_threads(), 0);
}

#[test]
fn a_failed_start_is_retried_by_the_next_submission() {
    let (pool, mut completions, signal) = failing_pool(2, |attempt, _| attempt == 0);
    let first = pool.submit(job(|| 1));
    assert!(matches!(
        collect(&mut completions, &signal, 1)[0],
        (ref h, Err(JobError::NoThreads { .. })) if *h == first
    ));
    let second = pool.submit(job(|| 2));
    assert_eq!(collect(&mut completions, &signal, 1), vec![(second, Ok(2))]);
    assert_eq!(pool.started_threads(), 2);
}

#[test]
fn jobs_queued_while_some_threads_fail_to_start_run_on_the_others() {
    // Thread 0 starts; thread 1 fails on its first two attempts.
    let (pool, mut completions, signal) =
        failing_pool(3, |attempt, index| index == 1 && attempt < 3);
    let handles: Vec<_> = (0..100).map(|i| pool.submit(job(move || i))).collect();
    let done = collect(&mut completions, &signal, 100);
    assert!(done.iter().all(|(_, result)| result.is_ok()));
    assert_eq!(done.len(), handles.len());
    assert_eq!(
        pool.started_threads(),
        3,
        "later submissions retried the spawn"
    );
}
