//! W6 (pool-throughput) at the pool level, shared by the criterion bench
//! (`benches/pool.rs`) and the full run (`examples/w6_pool.rs`).
//!
//! From the consumer ("loop") thread, queue `n` work items to a pool of 4
//! threads; each adds its index to its own slot and returns the index; the
//! consumer drains the completions, woken by the pool's notifier, and sums
//! the indices. Both pools run the same [`W6Job`] with the same notifier (an
//! unpark of the consumer thread) and the same consumer loop.

use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::Thread;
use std::time::{Duration, Instant};

use eventide_benches::mutex_pool::MutexPool;
use eventide_pool::{Completions, Job, Pool, PoolBuilder, Submitter};

/// Threads in both pools, as the contract fixes.
pub(crate) const THREADS: usize = 4;

/// One W6 work item: adds its index to its slot.
#[derive(Debug)]
pub(crate) struct W6Job {
    slots: &'static [AtomicU64],
    index: usize,
}

impl Job for W6Job {
    type Output = u64;

    fn run(self) -> u64 {
        let index = self.index as u64;
        self.slots[self.index].fetch_add(index, Ordering::Relaxed);
        index
    }
}

/// The per-item slots, allocated once and shared by every run.
pub(crate) fn slots(n: usize) -> &'static [AtomicU64] {
    Box::leak((0..n).map(|_| AtomicU64::new(0)).collect())
}

/// The sum W6 checks: 0 + 1 + ... + (n - 1).
pub(crate) fn expected_sum(n: usize) -> u64 {
    let n = n as u64;
    n * (n - 1) / 2
}

fn unparker(consumer: Thread) -> impl Fn() + Send + Sync + 'static {
    move || consumer.unpark()
}

/// Waits for the notifier, but never forever (a bug must not hang a bench).
fn wait_for_notification() {
    std::thread::park_timeout(Duration::from_millis(100));
}

/// An eventide pool set up for W6 on the calling (consumer) thread.
/// Submits through the pool's [`Submitter`], the loop thread's path.
pub(crate) struct EventidePool {
    submitter: Submitter<W6Job>,
    completions: Completions<u64>,
    _pool: Pool<W6Job>,
}

impl EventidePool {
    /// Builds the pool; it notifies the calling thread.
    pub(crate) fn new() -> Self {
        let (pool, completions) = PoolBuilder::new()
            .threads(THREADS)
            .notifier(unparker(std::thread::current()))
            .build()
            .expect("a valid pool configuration");
        let submitter = pool.submitter().expect("a fresh pool's submitter is free");
        EventidePool {
            submitter,
            completions,
            _pool: pool,
        }
    }

    /// Runs W6 with `n` items from `slots`; returns the sum of completions.
    pub(crate) fn run(&mut self, slots: &'static [AtomicU64], n: usize) -> u64 {
        for index in 0..n {
            std::hint::black_box(self.submitter.submit(W6Job { slots, index }));
        }
        let (mut sum, mut consumed) = (0, 0);
        while consumed < n {
            consumed += self
                .completions
                .drain(|_, result| sum += result.expect("W6 job failed"));
            if consumed < n {
                wait_for_notification();
            }
        }
        sum
    }
}

/// The libuv-structured baseline set up for W6 on the calling thread.
pub(crate) struct MutexBaseline {
    pool: MutexPool<W6Job>,
}

impl MutexBaseline {
    /// Starts the pool; it notifies the calling thread.
    pub(crate) fn new() -> Self {
        let pool = MutexPool::new(THREADS, unparker(std::thread::current()));
        MutexBaseline { pool }
    }

    /// Runs W6 with `n` items from `slots`; returns the sum of completions.
    pub(crate) fn run(&mut self, slots: &'static [AtomicU64], n: usize) -> u64 {
        for index in 0..n {
            std::hint::black_box(self.pool.submit(W6Job { slots, index }));
        }
        let (mut sum, mut consumed) = (0, 0);
        while consumed < n {
            consumed += self.pool.drain(|_, output| sum += output);
            if consumed < n {
                wait_for_notification();
            }
        }
        sum
    }
}

/// Times one run and checks its sum; returns the elapsed wall time.
pub(crate) fn timed(n: usize, run: impl FnOnce() -> u64) -> Duration {
    let start = Instant::now();
    let sum = run();
    let elapsed = start.elapsed();
    assert_eq!(sum, expected_sum(n), "W6 sum check failed");
    elapsed
}
