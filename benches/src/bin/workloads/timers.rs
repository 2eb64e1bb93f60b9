//! W1 timers-fire, W2 timers-cancel and W2b timers-rearm.

use std::cell::Cell;
use std::time::{Duration, Instant};

use eventide::{Loop, TimerId};

use crate::common::{Run, cpu_now, fixed, peak_rss_mb, secs};

const N: usize = 1_000_000;

thread_local! {
    /// Timers fired so far (the callbacks run on this thread, the loop's).
    static FIRED: Cell<u64> = const { Cell::new(0) };
    /// W1: timers that fired out of deadline order.
    static OUT_OF_ORDER: Cell<u64> = const { Cell::new(0) };
    /// W1: timers that fired before their timeout had elapsed.
    static EARLY: Cell<u64> = const { Cell::new(0) };
    /// W1: the loop time (ms) just before the first timer was started.
    static SETUP_START_MS: Cell<u64> = const { Cell::new(0) };
}

/// W1's timeout for timer `i`: 1000 distinct timeouts of 1..=1000 ms.
fn w1_timeout_ms(i: u64) -> u64 {
    i / 1000 + 1
}

/// W1's callback, for timer `i`.
///
/// eventide starts a timer's countdown when it is started (the clock is
/// read then, as Node's `setTimeout` does), so timer `i`'s deadline is
/// `clock_i + i/1000 + 1`: both terms never decrease with `i`, so the
/// deadlines never decrease with `i`, and timers with equal deadlines fire in
/// start order. "Firing order never goes back in deadline" is therefore
/// exactly "timer `i` is the `i`-th to fire", which is what is checked.
/// Since `clock_i` is at least the loop time read before the setup, a timer
/// that runs before that time plus its timeout fired early: checked too.
fn w1_on_timer(lp: &mut Loop, i: u32) {
    let fired = FIRED.get();
    let i = u64::from(i);
    if i != fired {
        OUT_OF_ORDER.set(OUT_OF_ORDER.get() + 1);
    }
    if lp.now().as_millis() < SETUP_START_MS.get() + w1_timeout_ms(i) {
        EARLY.set(EARLY.get() + 1);
    }
    FIRED.set(fired + 1);
}

/// W1 timers-fire: N one-shot timers, timer i with timeout i/1000+1 ms, all
/// started before the loop runs; run until every timer fired. Figure of
/// merit: process CPU seconds from the start of the setup to the end of the
/// run.
pub(crate) fn w1_timers_fire(run: &mut Run) {
    let c0 = cpu_now();
    let w0 = Instant::now();
    run.lp.update_time();
    SETUP_START_MS.set(run.lp.now().as_millis());
    for i in 0..N as u32 {
        let timeout = Duration::from_millis(w1_timeout_ms(u64::from(i)));
        run.lp.set_timeout(timeout, move |lp| w1_on_timer(lp, i));
    }
    let w1 = Instant::now();
    if FIRED.get() != 0 {
        run.fail("a timer fired during the setup");
    }
    if let Err(error) = run.lp.run() {
        run.fail(format!("the loop failed: {error}"));
    }
    let w2 = Instant::now();
    let c2 = cpu_now();

    let fired = FIRED.get();
    if fired != N as u64 {
        run.fail(format!("fired {fired} timers, want {N}"));
    }
    let out_of_order = OUT_OF_ORDER.get();
    if out_of_order != 0 {
        run.fail(format!("{out_of_order} timers fired out of deadline order"));
    }
    let early = EARLY.get();
    if early != 0 {
        run.fail(format!("{early} timers fired before their timeout elapsed"));
    }
    run.result(
        "cpu_s",
        fixed(c2 - c0, 4),
        &[
            ("setup_s", fixed(secs(w0, w1), 4)),
            ("wall_s", fixed(secs(w0, w2), 4)),
            ("cpu_s", fixed(c2 - c0, 4)),
            ("rss_mb", fixed(peak_rss_mb(), 1)),
            ("n", N.to_string()),
            ("fired", fired.to_string()),
        ],
    );
}

/// The contract's 64-bit LCG (W2): seed 1, advanced before each draw,
/// `timeout_ms = 1000 + (x >> 33) % 59000`. Returns the timeouts and their
/// sum.
fn lcg_timeouts(n: usize) -> (Vec<u64>, u64) {
    let mut x: u64 = 1;
    let mut sum = 0;
    let timeouts = (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let timeout = 1000 + (x >> 33) % 59000;
            sum += timeout;
            timeout
        })
        .collect();
    (timeouts, sum)
}

/// The sum of W2's 1M timeouts, as every anchor prints it.
const W2_TSUM: u64 = 30_482_571_145;

/// A callback that must never run (W2, W2b).
fn count_fired(_: &mut Loop) {
    FIRED.set(FIRED.get() + 1);
}

/// Runs the loop after every timer was cancelled: it must return at once
/// with nothing fired and nothing left alive. Returns the run's seconds.
fn run_must_return_at_once(run: &mut Run) -> f64 {
    let w = Instant::now();
    if let Err(error) = run.lp.run() {
        run.fail(format!("the loop failed: {error}"));
    }
    let run_s = secs(w, Instant::now());
    let fired = FIRED.get();
    if fired != 0 {
        run.fail(format!("{fired} timers fired after being cancelled"));
    }
    if run.lp.alive() {
        run.fail("the loop is still alive after run returned");
    }
    if run_s > 0.5 {
        run.fail(format!(
            "the loop took {run_s:.3} s, it must return at once"
        ));
    }
    run_s
}

/// W2 timers-cancel: start N one-shot timers with the LCG's timeouts (1 to
/// 60 s), cancel every one in start order, then run the loop. Figure of
/// merit: ns per start+cancel pair (wall); `cpu_ns` is the one compared.
pub(crate) fn w2_timers_cancel(run: &mut Run) {
    // Untimed: the timeouts, and room for the ids (libuv's handle array).
    let (timeouts, tsum) = lcg_timeouts(N);
    if tsum != W2_TSUM {
        run.fail(format!("timeouts sum to {tsum}, want {W2_TSUM}"));
    }
    let timeouts: Vec<Duration> = timeouts.into_iter().map(Duration::from_millis).collect();
    let mut ids: Vec<TimerId> = Vec::with_capacity(N);

    let c0 = cpu_now();
    let w0 = Instant::now();
    for &timeout in &timeouts {
        ids.push(run.lp.set_timeout(timeout, count_fired));
    }
    let w1 = Instant::now();
    let mut not_cleared = 0u64;
    for &id in &ids {
        if !run.lp.clear_timer(id) {
            not_cleared += 1;
        }
    }
    let w2 = Instant::now();
    let c2 = cpu_now();

    if not_cleared != 0 {
        run.fail(format!(
            "{not_cleared} timers were not pending when cancelled"
        ));
    }
    let run_s = run_must_return_at_once(run);
    let n = N as f64;
    run.result(
        "ns_per_start_cancel",
        fixed(secs(w0, w2) * 1e9 / n, 1),
        &[
            ("start_ns", fixed(secs(w0, w1) * 1e9 / n, 1)),
            ("cancel_ns", fixed(secs(w1, w2) * 1e9 / n, 1)),
            ("cpu_ns", fixed((c2 - c0) * 1e9 / n, 1)),
            ("wall_s", fixed(secs(w0, w2), 4)),
            ("cpu_s", fixed(c2 - c0, 4)),
            ("run_s", fixed(run_s, 6)),
            ("rss_mb", fixed(peak_rss_mb(), 1)),
            ("n", N.to_string()),
            ("tsum", tsum.to_string()),
        ],
    );
}

/// W2b timers-rearm: 10,000 timers of 30 s, each re-armed with the same
/// timeout (Node's `timeout.refresh()`: [`Loop::refresh_timer`]) round robin
/// 100 times; then all cancelled and the loop run. Figure of merit: ns per
/// re-arm (wall); `cpu_ns` is the one compared.
pub(crate) fn w2b_timers_rearm(run: &mut Run) {
    const TIMERS: usize = 10_000;
    const ROUNDS: usize = 100;
    const TIMEOUT: Duration = Duration::from_secs(30);

    let ids: Vec<TimerId> = (0..TIMERS)
        .map(|_| run.lp.set_timeout(TIMEOUT, count_fired))
        .collect();

    let mut rearms = 0u64;
    let mut refused = 0u64;
    let c0 = cpu_now();
    let w0 = Instant::now();
    for _ in 0..ROUNDS {
        for &id in &ids {
            if !run.lp.refresh_timer(id) {
                refused += 1;
            }
        }
        rearms += TIMERS as u64;
    }
    let w1 = Instant::now();
    let c1 = cpu_now();

    if refused != 0 {
        run.fail(format!("{refused} re-arms were refused"));
    }
    if rearms != (TIMERS * ROUNDS) as u64 {
        run.fail(format!("did {rearms} re-arms"));
    }
    for (i, &id) in ids.iter().enumerate() {
        if !run.lp.timer_is_active(id) {
            run.fail(format!("timer {i} is not armed after the re-arms"));
        }
        if !run.lp.clear_timer(id) {
            run.fail(format!("timer {i} could not be cancelled"));
        }
    }
    let run_s = run_must_return_at_once(run);
    let per = rearms as f64;
    run.result(
        "ns_per_rearm",
        fixed(secs(w0, w1) * 1e9 / per, 1),
        &[
            ("cpu_ns", fixed((c1 - c0) * 1e9 / per, 1)),
            ("wall_s", fixed(secs(w0, w1), 4)),
            ("cpu_s", fixed(c1 - c0, 4)),
            ("run_s", fixed(run_s, 6)),
            ("rss_mb", fixed(peak_rss_mb(), 1)),
            ("timers", TIMERS.to_string()),
            ("rearms", rearms.to_string()),
        ],
    );
}
