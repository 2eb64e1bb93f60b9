//! The guide's chapter "Timers" (docs/guide/timers.md): timeouts,
//! intervals that clear themselves, refresh, unref.
//!
//!     cargo run --example guide_timers

use std::time::Duration;

use eventide::Loop;

fn main() -> eventide::Result<()> {
    let mut lp = Loop::new()?;
    let ms = Duration::from_millis;

    // A timeout: once. Timers with the same deadline run in start order.
    lp.set_timeout(ms(30), |lp| {
        println!("{:>3} ms  timeout A (30 ms)", lp.now().as_millis())
    });
    lp.set_timeout(ms(30), |lp| {
        println!(
            "{:>3} ms  timeout B (30 ms, started after A)",
            lp.now().as_millis()
        )
    });

    // A timeout cleared before it fires never runs.
    let never = lp.set_timeout(ms(20), |_| unreachable!("cleared"));
    let cleared = lp.clear_timer(never);
    println!("  0 ms  cleared a timeout before it fired: {cleared}");

    // An interval: its callback gets its own id, to clear itself with, and
    // keeps its own state (a FnMut).
    let mut ticks = 0;
    lp.set_interval(ms(10), move |lp, me| {
        ticks += 1;
        println!("{:>3} ms  interval tick {ticks}", lp.now().as_millis());
        if ticks == 3 {
            lp.clear_timer(me);
            println!("{:>3} ms  interval cleared itself", lp.now().as_millis());
        }
    });

    // An unreferenced timer does not keep the loop alive: this one would
    // fire after an hour, but run() returns when the rest is done.
    let hour = lp.set_timeout(Duration::from_secs(3600), |_| unreachable!("unref"));
    lp.unref_timer(hour);

    // refresh: restart the countdown (Node's timeout.refresh()).
    let watchdog = lp.set_timeout(ms(40), |lp| {
        println!(
            "{:>3} ms  watchdog (40 ms, refreshed at 25 ms: fires at 65)",
            lp.now().as_millis()
        )
    });
    lp.set_timeout(ms(25), move |lp| {
        lp.refresh_timer(watchdog);
    });

    lp.run()?;
    println!(
        "run() returned at {} ms; the hour-long unref'd timer did not hold it",
        lp.now().as_millis()
    );
    Ok(())
}
