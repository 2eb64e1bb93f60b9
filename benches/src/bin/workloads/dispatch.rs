//! W3 dispatch: a chain of setImmediate callbacks, one per loop turn.

use std::cell::Cell;
use std::time::Instant;

use eventide::{Loop, Phase};

use crate::common::{Run, cpu_now, fixed, peak_rss_mb, secs};

const N: u64 = 10_000_000;

thread_local! {
    /// Callbacks run so far in the current chain.
    static CALLS: Cell<u64> = const { Cell::new(0) };
    /// How long the current chain is.
    static LENGTH: Cell<u64> = const { Cell::new(0) };
}

/// One link of the chain: counts itself and schedules the next link, which
/// runs on the next turn (an immediate queued during the check phase waits
/// for the next one, as Node's does).
fn link(lp: &mut Loop) {
    let calls = CALLS.get() + 1;
    CALLS.set(calls);
    if calls < LENGTH.get() {
        lp.set_immediate(link);
    }
}

/// Runs a chain of `length` links; returns how many ran.
fn chain(run: &mut Run, length: u64) -> u64 {
    CALLS.set(0);
    LENGTH.set(length);
    run.lp.set_immediate(link);
    if let Err(error) = run.lp.run() {
        run.fail(format!("the loop failed: {error}"));
    }
    CALLS.get()
}

/// W3 dispatch: N = 10,000,000 callbacks, each scheduling the next for the
/// next turn with [`Loop::set_immediate`]. Figure of merit: ns per callback
/// (wall); `cpu_ns` is the one compared.
pub(crate) fn w3_dispatch(run: &mut Run) {
    // Untimed check that the chain takes one turn per link: a short chain
    // with a prepare hook counting the turns.
    const CHECKED: u64 = 1000;
    let turns = std::rc::Rc::new(Cell::new(0u64));
    let counter = std::rc::Rc::clone(&turns);
    let hook = run
        .lp
        .start_hook(Phase::Prepare, move |_, _| counter.set(counter.get() + 1));
    run.lp.unref_hook(hook);
    let calls = chain(run, CHECKED);
    run.lp.stop_hook(hook);
    if calls != CHECKED {
        run.fail(format!(
            "the check chain ran {calls} callbacks, want {CHECKED}"
        ));
    }
    if turns.get() < CHECKED {
        run.fail(format!(
            "the check chain of {CHECKED} immediates took only {} turns: \
             an immediate queued in the check phase ran in the same turn",
            turns.get()
        ));
    }

    let c0 = cpu_now();
    let w0 = Instant::now();
    let calls = chain(run, N);
    let w1 = Instant::now();
    let c1 = cpu_now();

    if calls != N {
        run.fail(format!("{calls} callbacks ran, want {N}"));
    }
    let n = N as f64;
    run.result(
        "ns_per_callback",
        fixed(secs(w0, w1) * 1e9 / n, 1),
        &[
            ("cpu_ns", fixed((c1 - c0) * 1e9 / n, 1)),
            ("wall_s", fixed(secs(w0, w1), 4)),
            ("cpu_s", fixed(c1 - c0, 4)),
            ("rss_mb", fixed(peak_rss_mb(), 1)),
            ("n", N.to_string()),
        ],
    );
}
