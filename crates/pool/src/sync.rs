//! The synchronization primitives the pool is built on, in one place.
//!
//! Everything that takes part in the sleep/wake protocol (and the claim state
//! of a job) comes from here, never from `std::sync` directly, so that under
//! `--cfg loom` the same code runs on loom's model-checked primitives. The
//! lock-free queues themselves come from crossbeam-deque and are not swapped:
//! the loom model replaces them with an atomic counter (see `sleep.rs`).

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, fence};
#[cfg(loom)]
pub(crate) use loom::sync::{Condvar, Mutex, MutexGuard};
#[cfg(loom)]
pub(crate) use loom::thread::yield_now;

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, fence};
#[cfg(not(loom))]
pub(crate) use std::sync::{Condvar, Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::thread::yield_now;

pub(crate) use std::sync::atomic::Ordering;

/// Locks `mutex`, ignoring poisoning.
///
/// The pool never runs user code while holding one of its locks, so a
/// poisoned lock can only mean a bug in the pool itself panicked mid-update;
/// the data it guards (counters, stacks of indices) stays meaningful.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Waits on `condvar`, ignoring poisoning (see [`lock`]).
pub(crate) fn wait<'a, T>(condvar: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    condvar
        .wait(guard)
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
