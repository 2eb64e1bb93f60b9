//! Helpers shared by the pool's tests: a notifier to wait on, a gate that
//! holds jobs until released, and bounded waits everywhere, so that a bug
//! fails a test instead of hanging it.

#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use eventide_pool::{Completions, DynJob, Handle, JobError, Pool, PoolBuilder};

/// The longest any test waits for anything.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// A pool of boxed jobs returning `R`, as the facade will use.
pub type TestPool<R> = Pool<DynJob<R>>;

/// One finished job.
pub type Done<R> = (Handle, Result<R, JobError>);

/// Counts notifications and lets a test wait for the next one.
#[derive(Debug, Default)]
pub struct Signal {
    count: Mutex<u64>,
    condvar: Condvar,
}

impl Signal {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// A notifier that bumps this signal.
    pub fn notifier(self: &Arc<Self>) -> impl Fn() + Send + Sync + 'static {
        let signal = Arc::clone(self);
        move || {
            *signal.count.lock().unwrap() += 1;
            signal.condvar.notify_all();
        }
    }

    pub fn count(&self) -> u64 {
        *self.count.lock().unwrap()
    }

    /// Waits until the count exceeds `seen`, up to `deadline`.
    pub fn wait_beyond(&self, seen: u64, deadline: Instant) -> bool {
        let mut count = self.count.lock().unwrap();
        while *count <= seen {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            count = self.condvar.wait_timeout(count, left).unwrap().0;
        }
        true
    }
}

/// Builds a pool of `threads` boxed-job threads notifying a fresh signal.
pub fn pool<R: Send + 'static>(threads: usize) -> (TestPool<R>, Completions<R>, Arc<Signal>) {
    let signal = Signal::new();
    let (pool, completions) = PoolBuilder::new()
        .threads(threads)
        .notifier(signal.notifier())
        .build()
        .expect("a valid configuration");
    (pool, completions, signal)
}

/// Boxes a closure as a job.
pub fn job<R, F: FnOnce() -> R + Send + 'static>(f: F) -> DynJob<R> {
    Box::new(f)
}

/// A job that counts itself started on `started`, waits for `gate`, and
/// returns `value`: the usual way to hold a worker.
pub fn gated<R: Send + 'static>(gate: &Arc<Gate>, started: &Arc<Counter>, value: R) -> DynJob<R> {
    let (gate, started) = (Arc::clone(gate), Arc::clone(started));
    job(move || {
        started.add(1);
        gate.wait();
        value
    })
}

/// Drains until `n` completions arrived, waiting on `signal` between drains.
/// Panics if they do not all arrive within [`TIMEOUT`].
pub fn collect<R>(completions: &mut Completions<R>, signal: &Signal, n: usize) -> Vec<Done<R>> {
    let deadline = Instant::now() + TIMEOUT;
    let mut done = Vec::with_capacity(n);
    loop {
        let seen = signal.count();
        completions.drain(|handle, result| done.push((handle, result)));
        if done.len() >= n {
            return done;
        }
        assert!(
            signal.wait_beyond(seen, deadline),
            "timed out with {} of {n} completions",
            done.len()
        );
    }
}

/// Holds jobs until opened; every wait is bounded by [`TIMEOUT`].
#[derive(Debug, Default)]
pub struct Gate {
    open: Mutex<bool>,
    condvar: Condvar,
}

impl Gate {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    pub fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.condvar.notify_all();
    }

    /// Blocks until the gate opens; panics (failing the job) on timeout.
    pub fn wait(&self) {
        let open = self.open.lock().unwrap();
        let (open, timeout) = self
            .condvar
            .wait_timeout_while(open, TIMEOUT, |open| !*open)
            .unwrap();
        assert!(*open && !timeout.timed_out(), "the gate never opened");
    }
}

/// A counter of events that tests can wait to reach a value.
#[derive(Debug, Default)]
pub struct Counter {
    value: Mutex<usize>,
    condvar: Condvar,
}

impl Counter {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    pub fn add(&self, delta: isize) -> usize {
        let mut value = self.value.lock().unwrap();
        *value = value.checked_add_signed(delta).expect("counter underflow");
        self.condvar.notify_all();
        *value
    }

    pub fn get(&self) -> usize {
        *self.value.lock().unwrap()
    }

    /// Waits until the value is at least `target`; panics on timeout.
    pub fn wait_for(&self, target: usize) {
        let value = self.value.lock().unwrap();
        let (value, _) = self
            .condvar
            .wait_timeout_while(value, TIMEOUT, |value| *value < target)
            .unwrap();
        assert!(
            *value >= target,
            "timed out at {} waiting for {target}",
            *value
        );
    }
}
