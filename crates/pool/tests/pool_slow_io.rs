//! The slow lane: slow I/O jobs occupy at most half the threads (rounded up,
//! at least one), so normal jobs never starve behind hung resolvers.

#![cfg(not(loom))]

mod util;

use std::sync::{Arc, Mutex};

use util::{Counter, Gate, collect, gated, job};

/// Counts slow jobs running now and the most that ever ran at once.
#[derive(Default)]
struct Concurrency {
    now_and_max: Mutex<(usize, usize)>,
}

impl Concurrency {
    fn enter(&self) {
        let mut guard = self.now_and_max.lock().unwrap();
        guard.0 += 1;
        guard.1 = guard.1.max(guard.0);
    }

    fn leave(&self) {
        self.now_and_max.lock().unwrap().0 -= 1;
    }

    fn max(&self) -> usize {
        self.now_and_max.lock().unwrap().1
    }
}

#[test]
fn the_slow_lane_limit_is_half_the_threads_rounded_up_and_at_least_one() {
    for (threads, limit) in [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3), (1024, 512)] {
        let (pool, _completions, _signal) = util::pool::<()>(threads);
        assert_eq!(pool.slow_io_limit(), limit, "{threads} threads");
    }
}

#[test]
fn hung_slow_jobs_never_occupy_more_than_half_the_threads() {
    const SLOW: usize = 6;
    let (pool, mut completions, signal) = util::pool::<&'static str>(4);
    let (gate, started) = (Gate::new(), Counter::new());
    let concurrency = Arc::new(Concurrency::default());
    for _ in 0..SLOW {
        let (gate, started, concurrency) = (
            Arc::clone(&gate),
            Arc::clone(&started),
            Arc::clone(&concurrency),
        );
        pool.submit_slow_io(job(move || {
            concurrency.enter();
            started.add(1);
            gate.wait();
            concurrency.leave();
            "slow"
        }));
    }
    started.wait_for(2);
    // The two other threads keep serving file work while resolvers hang.
    for _ in 0..100 {
        pool.submit(job(|| "fast"));
    }
    let fast = collect(&mut completions, &signal, 100);
    assert!(fast.iter().all(|(_, result)| *result == Ok("fast")));
    assert_eq!(started.get(), 2, "no third slow job started");
    gate.open();
    let slow = collect(&mut completions, &signal, SLOW);
    assert!(slow.iter().all(|(_, result)| *result == Ok("slow")));
    assert_eq!(concurrency.max(), 2);
}

#[test]
fn a_one_thread_pool_still_runs_slow_jobs() {
    let (pool, mut completions, signal) = util::pool::<u8>(1);
    pool.submit_slow_io(job(|| 1));
    pool.submit(job(|| 2));
    pool.submit_slow_io(job(|| 3));
    let mut values: Vec<_> = collect(&mut completions, &signal, 3)
        .into_iter()
        .map(|(_, result)| result.unwrap())
        .collect();
    values.sort_unstable();
    assert_eq!(values, [1, 2, 3]);
}

#[test]
fn a_queued_slow_job_can_be_cancelled() {
    let (pool, mut completions, signal) = util::pool::<u8>(2);
    let (gate, started) = (Gate::new(), Counter::new());
    pool.submit_slow_io(gated(&gate, &started, 1));
    started.wait_for(1);
    let queued = pool.submit_slow_io_cancellable(job(|| 2));
    assert_eq!(pool.cancel(&queued), Ok(()));
    gate.open();
    let done = collect(&mut completions, &signal, 2);
    let cancelled = (queued.handle(), Err(eventide_pool::JobError::Cancelled));
    assert!(done.contains(&cancelled));
    // The cancelled job gave its slot back: slow work still runs.
    pool.submit_slow_io(job(|| 3));
    assert_eq!(collect(&mut completions, &signal, 1)[0].1, Ok(3));
}
