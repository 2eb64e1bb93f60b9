//! W1, W2 and W2b of the workloads contract (`shared/bench/WORKLOADS.md`)
//! at the timer-store level: the same work on eventide's wheel and on the
//! libuv-style [`HeapTimers`], each checking its own result.
//!
//! Time is simulated the way an event loop drives its timers: the loop
//! sleeps until the next deadline, then advances to it and runs what is due.
//! Each function takes its timer store (and key buffer) from the caller and
//! leaves it empty, so a bench can run them warm, as a loop's long-lived
//! store is, or cold, on fresh ones.

use std::hint::black_box;

use eventide_timer::{Key, Wheel};

use crate::heap::HeapKey;

use crate::heap::HeapTimers;

/// W1's timeout for timer `i`: 1000 distinct timeouts of 1..=1000 ms.
pub fn w1_timeout(i: u64) -> u64 {
    i / 1000 + 1
}

/// W2's timeouts: a 64-bit LCG, seed 1, mapped to 1000..59999 ms.
#[derive(Debug)]
pub struct W2Timeouts {
    state: u64,
}

impl Default for W2Timeouts {
    fn default() -> Self {
        W2Timeouts { state: 1 }
    }
}

impl Iterator for W2Timeouts {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        self.state = self
            .state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        Some(1000 + (self.state >> 33) % 59000)
    }
}

/// W2b: how many timers are re-armed, and how many times each.
pub const W2B_TIMERS: usize = 10_000;
/// W2b: re-arm passes over all timers.
pub const W2B_PASSES: u64 = 100;
/// W2b: the timeout every timer has, in ms.
pub const W2B_TIMEOUT: u64 = 30_000;

/// W1 on the wheel: start `n` timers, then fire them all; returns the count.
///
/// # Panics
///
/// If a timer is lost or fires out of deadline order.
pub fn w1_wheel(wheel: &mut Wheel<u64>, n: u64) -> u64 {
    let start = wheel.elapsed();
    for i in 0..n {
        wheel.insert(start + w1_timeout(i), i);
    }
    let mut fired = 0;
    let mut last = 0;
    while let Some(now) = wheel.next_deadline() {
        for expired in wheel.advance(now) {
            assert!(
                expired.deadline >= last,
                "W1: firing order went back in deadline"
            );
            last = expired.deadline;
            black_box(expired.payload);
            fired += 1;
        }
    }
    assert_eq!(fired, n, "W1: not every timer fired");
    fired
}

/// W1 on the heap; see [`w1_wheel`].
///
/// # Panics
///
/// If a timer is lost or fires out of deadline order.
pub fn w1_heap(heap: &mut HeapTimers<u64>, n: u64) -> u64 {
    for i in 0..n {
        heap.insert(w1_timeout(i), i);
    }
    let mut fired = 0;
    let mut last = 0;
    while let Some(now) = heap.next_deadline() {
        while let Some((deadline, payload)) = heap.pop_expired(now) {
            assert!(deadline >= last, "W1: firing order went back in deadline");
            last = deadline;
            black_box(payload);
            fired += 1;
        }
    }
    assert_eq!(fired, n, "W1: not every timer fired");
    fired
}

/// W2 on the wheel: start `n` timers, cancel each in start order; nothing
/// may be left. Returns the number cancelled.
///
/// # Panics
///
/// If a cancel fails or a timer is left.
pub fn w2_wheel(wheel: &mut Wheel<()>, keys: &mut Vec<Key>, n: usize) -> usize {
    let start = wheel.elapsed();
    keys.clear();
    keys.extend(
        W2Timeouts::default()
            .take(n)
            .map(|t| wheel.insert(start + t, ())),
    );
    let cancelled = keys
        .iter()
        .filter(|key| wheel.cancel(**key).is_some())
        .count();
    assert_eq!(cancelled, n, "W2: a cancel failed");
    assert_eq!(
        wheel.next_deadline(),
        None,
        "W2: the wheel still holds a timer"
    );
    cancelled
}

/// W2 on the heap; see [`w2_wheel`].
///
/// # Panics
///
/// If a cancel fails or a timer is left.
pub fn w2_heap(heap: &mut HeapTimers<()>, keys: &mut Vec<HeapKey>, n: usize) -> usize {
    keys.clear();
    keys.extend(W2Timeouts::default().take(n).map(|t| heap.insert(t, ())));
    let cancelled = keys
        .iter()
        .filter(|key| heap.cancel(**key).is_some())
        .count();
    assert_eq!(cancelled, n, "W2: a cancel failed");
    assert!(heap.is_empty(), "W2: the heap still holds a timer");
    cancelled
}

/// W2b on the wheel: [`W2B_TIMERS`] timers of [`W2B_TIMEOUT`], re-armed
/// round robin [`W2B_PASSES`] times each while the clock moves 1 ms per
/// pass, then all cancelled. Returns the number of re-arms.
///
/// # Panics
///
/// If a re-arm or cancel fails, or anything fires.
pub fn w2b_wheel(wheel: &mut Wheel<usize>, keys: &mut Vec<Key>) -> u64 {
    let start = wheel.elapsed();
    keys.clear();
    keys.extend((0..W2B_TIMERS).map(|i| wheel.insert(start + W2B_TIMEOUT, i)));
    let mut rearms = 0;
    for now in start..start + W2B_PASSES {
        assert_eq!(wheel.advance(now).count(), 0, "W2b: a timer fired early");
        for key in keys.iter() {
            wheel
                .reset(*key, now + W2B_TIMEOUT)
                .expect("W2b: re-arm of a live timer");
            rearms += 1;
        }
    }
    let all_cancelled = keys.iter().all(|key| wheel.cancel(*key).is_some());
    assert!(all_cancelled && wheel.is_empty(), "W2b: a cancel failed");
    rearms
}

/// W2b on the heap; see [`w2b_wheel`].
///
/// # Panics
///
/// If a re-arm or cancel fails, or anything fires.
pub fn w2b_heap(heap: &mut HeapTimers<usize>, keys: &mut Vec<HeapKey>) -> u64 {
    keys.clear();
    keys.extend((0..W2B_TIMERS).map(|i| heap.insert(W2B_TIMEOUT, i)));
    let mut rearms = 0;
    for now in 0..W2B_PASSES {
        assert!(heap.pop_expired(now).is_none(), "W2b: a timer fired early");
        for key in keys.iter() {
            assert!(
                heap.reset(*key, now + W2B_TIMEOUT),
                "W2b: re-arm of a live timer"
            );
            rearms += 1;
        }
    }
    let all_cancelled = keys.iter().all(|key| heap.cancel(*key).is_some());
    assert!(all_cancelled && heap.is_empty(), "W2b: a cancel failed");
    rearms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn w2_timeouts_follow_the_contracts_lcg() {
        let first: Vec<u64> = W2Timeouts::default().take(3).collect();
        // x1 = 6364136223846793005 + 1442695040888963407 (mod 2^64), and so on.
        let mut x: u64 = 1;
        let expected: Vec<u64> = (0..3)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                1000 + (x >> 33) % 59000
            })
            .collect();
        assert_eq!(first, expected);
        assert!(
            W2Timeouts::default()
                .take(10_000)
                .all(|t| (1000..60_000).contains(&t))
        );
    }

    #[test]
    fn both_stores_do_the_same_work_and_check_it_cold_and_warm() {
        let (mut wheel, mut heap) = (Wheel::new(), HeapTimers::default());
        let (mut wheel_keys, mut heap_keys) = (Vec::new(), Vec::new());
        for _ in 0..2 {
            assert_eq!(w1_wheel(&mut wheel, 20_000), 20_000);
            assert_eq!(w1_heap(&mut heap, 20_000), 20_000);
        }
        let (mut wheel, mut heap) = (Wheel::new(), HeapTimers::default());
        for _ in 0..2 {
            assert_eq!(w2_wheel(&mut wheel, &mut wheel_keys, 20_000), 20_000);
            assert_eq!(w2_heap(&mut heap, &mut heap_keys, 20_000), 20_000);
        }
        let (mut wheel, mut heap) = (Wheel::new(), HeapTimers::default());
        for _ in 0..2 {
            let rearms = W2B_TIMERS as u64 * W2B_PASSES;
            assert_eq!(w2b_wheel(&mut wheel, &mut wheel_keys), rearms);
            assert_eq!(w2b_heap(&mut heap, &mut heap_keys), rearms);
        }
    }
}
