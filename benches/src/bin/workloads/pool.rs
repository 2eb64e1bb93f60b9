//! W6 pool-throughput: 1M trivial work items on the blocking pool.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::common::{POOL_THREADS, Run, cpu_now, fixed, peak_rss_mb, secs};

const N: usize = 1_000_000;

thread_local! {
    /// Sum of the slots, read by the completion callbacks (loop thread).
    static SUM: Cell<u64> = const { Cell::new(0) };
    /// Completion callbacks run.
    static COMPLETED: Cell<u64> = const { Cell::new(0) };
    /// Completions that came back as an error.
    static FAILED: Cell<u64> = const { Cell::new(0) };
}

/// W6 pool-throughput: from the loop thread, queue N items with
/// [`eventide::Loop::queue_work`] to the pool of 4 threads; item i adds i to
/// its own slot; its callback, on the loop thread, adds the slot to the sum.
/// Figure of merit: items per second, wall clock from the first queue_work
/// to the last callback; checks the sum and the count.
pub(crate) fn w6_pool_throughput(run: &mut Run) {
    // Untimed: one slot per item, shared with the pool threads. Each slot is
    // written by one item and read after its completion, which the pool's
    // completion queue orders, so relaxed accesses are plain loads/stores.
    let slots: &'static [AtomicU64] = Box::leak((0..N).map(|_| AtomicU64::new(0)).collect());

    let c0 = cpu_now();
    let w0 = Instant::now();
    for (i, slot) in slots.iter().enumerate() {
        run.lp.queue_work(
            move || slot.store(slot.load(Ordering::Relaxed) + i as u64, Ordering::Relaxed),
            move |_, result| {
                if result.is_err() {
                    FAILED.set(FAILED.get() + 1);
                }
                SUM.set(SUM.get() + slot.load(Ordering::Relaxed));
                COMPLETED.set(COMPLETED.get() + 1);
            },
        );
    }
    let w1 = Instant::now();
    if let Err(error) = run.lp.run() {
        run.fail(format!("the loop failed: {error}"));
    }
    let w2 = Instant::now();
    let c2 = cpu_now();

    let (sum, completed, failed) = (SUM.get(), COMPLETED.get(), FAILED.get());
    let want = (N as u64) * (N as u64 - 1) / 2;
    if failed != 0 {
        run.fail(format!("{failed} work items failed"));
    }
    if completed != N as u64 {
        run.fail(format!("{completed} completions, want {N}"));
    }
    if sum != want {
        run.fail(format!("sum {sum}, want {want}"));
    }
    run.result(
        "items_per_s",
        fixed(N as f64 / secs(w0, w2), 0),
        &[
            ("wall_s", fixed(secs(w0, w2), 4)),
            ("queue_s", fixed(secs(w0, w1), 4)),
            ("cpu_s", fixed(c2 - c0, 4)),
            ("rss_mb", fixed(peak_rss_mb(), 1)),
            ("n", N.to_string()),
            ("threads", POOL_THREADS.to_string()),
            ("sum", sum.to_string()),
        ],
    );
}
