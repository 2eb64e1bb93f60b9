//! The blocked-loop detector: a timer's callback blocks the loop for
//! 300 ms; the watchdog reports it on stderr while it runs (after the
//! 100 ms threshold) and again when it returns, naming the line of this
//! file where the timer was set.
//!
//! ```text
//! cargo run --release -p eventide --example blocked
//! ```
//!
//! Then the loop prints what is still alive (an unreferenced interval,
//! which does not keep it running) and ends.

use std::time::{Duration, Instant};

fn main() -> eventide::Result<()> {
    let mut lp = eventide::Loop::builder()
        .detect_blocking(Duration::from_millis(100))
        .on_blocked(|report| eprintln!("{report}"))
        .build()?;
    // Fires every 10 ms but does not keep the loop alive.
    let ticker = lp.set_interval(Duration::from_millis(10), |_, _| {});
    lp.unref_timer(ticker);
    lp.set_timeout(Duration::from_millis(5), |lp| {
        // Something synchronous and slow: the loop can run nothing else.
        let until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < until {
            std::hint::spin_loop();
        }
        eprint!("after the timeout, {}", lp.handles());
    });
    lp.run()
}
