//! The guide's chapter "The loop and its phases" (docs/guide/loop.md):
//! one callback in each phase of a turn, printed in the order they run.
//!
//!     cargo run --example guide_loop

use std::time::Duration;

use eventide::{Loop, Phase};

fn main() -> eventide::Result<()> {
    let mut lp = Loop::new()?;

    // timers: a timeout that is already due when the loop starts (run()
    // runs the timers once before the first turn, as libuv's uv_run).
    lp.set_timeout(Duration::ZERO, |lp| {
        println!("  timers   the timeout");
        // After every callback: next-ticks, then microtasks.
        lp.queue_microtask(|_| println!("           (its microtask)"));
        lp.next_tick(|_| println!("           (its next-tick)"));
    });
    std::thread::sleep(Duration::from_millis(2));

    // pending: a callback deferred to the next turn.
    lp.defer(|_| println!("  pending  a deferred callback"));

    // idle, prepare, check: hooks run every turn until stopped.
    lp.start_hook(Phase::Idle, |lp, id| {
        println!("  idle     the idle hook (stops itself)");
        lp.stop_hook(id);
    });
    lp.start_hook(Phase::Prepare, |lp, id| {
        println!("  prepare  the prepare hook (stops itself)");
        lp.stop_hook(id);
    });
    lp.start_hook(Phase::Check, |lp, id| {
        println!("  check    the check hook (stops itself)");
        lp.stop_hook(id);
    });

    // poll: what arrived from outside the loop thread: here a closure
    // posted through a LoopHandle (pool results, channel values and I/O
    // completions run here too).
    let handle = lp.handle();
    handle
        .post(|_| println!("  poll     a closure posted by a LoopHandle"))
        .map_err(|_| "the loop is gone")
        .expect("the loop is alive");
    drop(handle);

    // check: the immediates, after the check hooks.
    let interval = lp.set_interval(Duration::from_secs(60), |_, _| {});
    lp.set_immediate(move |lp| {
        println!("  check    the immediate; it closes an interval");
        // close: close callbacks, the turn's last phase.
        lp.close_then(interval, |_| {
            println!("  close    the interval's close callback")
        });
    });

    // run(): the timers once, then turns (pending, idle, prepare, poll,
    // check, close, timers) until nothing keeps the loop alive.
    lp.run()?;
    println!("nothing keeps the loop alive: run() returned");
    Ok(())
}
