//! Shutdown: dropping the pool lets running jobs finish, completes queued
//! ones with `ShutDown`, joins every thread and loses no completion.

#![cfg(not(loom))]

mod util;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use eventide_pool::{JobError, PoolBuilder, ThreadSpawn};
use util::{Counter, Gate, TIMEOUT, collect, gated, job};

#[test]
fn dropping_the_pool_finishes_running_jobs_and_fails_queued_ones_with_shut_down() {
    let (pool, mut completions, _signal) = util::pool::<usize>(1);
    let (gate, started) = (Gate::new(), Counter::new());
    let running = pool.submit(gated(&gate, &started, 0));
    started.wait_for(1);
    let queued: Vec<_> = (1..=10).map(|i| pool.submit(job(move || i))).collect();
    let (dropped_tx, dropped_rx) = mpsc::channel();
    let dropper = std::thread::spawn(move || {
        drop(pool);
        dropped_tx.send(()).unwrap();
    });
    assert!(
        dropped_rx.recv_timeout(Duration::from_millis(100)).is_err(),
        "the drop waits for the running job"
    );
    gate.open();
    dropped_rx
        .recv_timeout(TIMEOUT)
        .expect("the drop returns once the job ends");
    dropper.join().unwrap();
    let mut done = Vec::new();
    completions.drain(|handle, result| done.push((handle, result)));
    assert_eq!(done.len(), 11);
    assert!(done.contains(&(running, Ok(0))));
    for handle in queued {
        assert!(done.contains(&(handle, Err(JobError::ShutDown))));
    }
}

#[test]
fn no_worker_thread_outlives_the_pool() {
    let alive = Counter::new();
    let (pool, mut completions) = {
        let alive = Arc::clone(&alive);
        PoolBuilder::new()
            .threads(4)
            .spawn_handler(move |spawn: ThreadSpawn| {
                let alive = Arc::clone(&alive);
                let name = spawn.name().to_owned();
                let body = spawn.into_body();
                alive.add(1);
                std::thread::Builder::new().name(name).spawn(move || {
                    body();
                    alive.add(-1);
                })
            })
            .build()
            .unwrap()
    };
    pool.submit(|| 1);
    assert_eq!(alive.get(), 4);
    drop(pool);
    assert_eq!(
        alive.get(),
        0,
        "every worker thread ended before the drop returned"
    );
    let delivered = completions.drain(|_, result| {
        assert!(
            matches!(result, Ok(1) | Err(JobError::ShutDown)),
            "{result:?}"
        );
    });
    assert_eq!(delivered, 1);
}

#[test]
fn dropping_a_pool_with_work_in_flight_delivers_every_completion_once() {
    const JOBS: usize = 20_000;
    let (pool, mut completions, signal) = util::pool::<usize>(4);
    let handles: HashSet<_> = (0..JOBS)
        .map(|i| pool.submit(job(move || (0..(i % 50)).sum())).id())
        .collect();
    drop(pool);
    let before = signal.count();
    let mut seen = HashSet::new();
    let mut shut_down = 0;
    completions.drain(|handle, result| {
        match result {
            Ok(_) => {}
            Err(JobError::ShutDown) => shut_down += 1,
            Err(other) => panic!("unexpected {other}"),
        }
        assert!(seen.insert(handle.id()), "a job completed twice");
    });
    assert_eq!(seen, handles, "every job completed");
    assert!(before >= 1, "the consumer was notified");
    assert!(shut_down <= JOBS);
}

#[test]
fn dropping_a_pool_that_never_ran_a_job_returns_at_once() {
    let (pool, mut completions, signal) = util::pool::<()>(4);
    drop(pool);
    assert_eq!(signal.count(), 0);
    assert_eq!(completions.drain(|_, _| panic!("nothing was submitted")), 0);
}

#[test]
fn completions_of_a_dropped_pool_are_drained_after_it() {
    let (pool, mut completions, signal) = util::pool::<u8>(2);
    let started = Counter::new();
    {
        let started = Arc::clone(&started);
        pool.submit(job(move || {
            started.add(1);
            3
        }));
    }
    started.wait_for(1);
    drop(pool);
    let done = collect(&mut completions, &signal, 1);
    assert_eq!(done[0].1, Ok(3), "a job that had started finishes");
}

/// A pool whose worker threads count themselves in `alive` while they run.
fn counted_pool(
    threads: usize,
    alive: &Arc<Counter>,
    signal: &Arc<util::Signal>,
) -> (util::TestPool<u32>, eventide_pool::Completions<u32>) {
    let alive = Arc::clone(alive);
    PoolBuilder::new()
        .threads(threads)
        .notifier(signal.notifier())
        .spawn_handler(move |spawn: ThreadSpawn| {
            let alive = Arc::clone(&alive);
            let name = spawn.name().to_owned();
            let body = spawn.into_body();
            alive.add(1);
            std::thread::Builder::new().name(name).spawn(move || {
                body();
                alive.add(-1);
            })
        })
        .build()
        .unwrap()
}

#[test]
fn a_bounded_shutdown_detaches_a_worker_stuck_in_its_job() {
    let (alive, signal) = (Counter::new(), util::Signal::new());
    let (pool, mut completions) = counted_pool(2, &alive, &signal);
    let (gate, started) = (Gate::new(), Counter::new());
    let stuck = pool.submit(gated(&gate, &started, 7));
    started.wait_for(1);
    let (tx, rx) = mpsc::channel();
    let shutter = std::thread::spawn(move || {
        let detached = pool.shut_down_within(Duration::from_millis(50));
        // Dropping it now waits for nothing more.
        drop(pool);
        tx.send(detached).unwrap();
    });
    let detached = rx
        .recv_timeout(TIMEOUT)
        .expect("the bounded shutdown returns while the job is stuck");
    shutter.join().unwrap();
    assert_eq!(detached, 1, "one worker was inside a job");
    assert_eq!(alive.get(), 1, "the idle worker was joined");
    // The detached worker finishes its job, delivers it, and ends.
    gate.open();
    let done = collect(&mut completions, &signal, 1);
    assert_eq!(done[0], (stuck, Ok(7)));
    let deadline = std::time::Instant::now() + TIMEOUT;
    while alive.get() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the detached worker ended"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_bounded_shutdown_with_nothing_stuck_joins_every_worker() {
    let (alive, signal) = (Counter::new(), util::Signal::new());
    let (pool, mut completions) = counted_pool(3, &alive, &signal);
    pool.submit(Box::new(|| 1));
    let done = collect(&mut completions, &signal, 1);
    assert_eq!(done[0].1, Ok(1));
    assert_eq!(alive.get(), 3);
    assert_eq!(pool.shut_down_within(Duration::from_secs(10)), 0);
    assert_eq!(alive.get(), 0, "every worker ended before it returned");
}
