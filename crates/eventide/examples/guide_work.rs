//! The guide's chapter "Work on the pool" (docs/guide/work.md): CPU work
//! on the pool while a timer ticks, a cancel, a panic, and results sent
//! from a thread of your own.
//!
//!     cargo run --example guide_work

use std::time::Duration;

use eventide::{Error, Loop};

/// A blocking call (a sleep stands in for a blocking library or a long
/// computation), then a result.
fn slow_sum_of_squares(n: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(110));
    (1..=n).map(|i| i * i).sum()
}

fn main() -> eventide::Result<()> {
    // A panic in pool work is caught and handed to its callback; the
    // default panic hook would also print it (with a backtrace) on stderr.
    std::panic::set_hook(Box::new(|info| eprintln!("(panic hook: {info})")));

    // Two pool threads, so that the third request waits in the queue.
    let mut lp = Loop::builder().pool_threads(2).build()?;

    // A timer ticks on the loop thread while the pool computes.
    let mut ticks = 0;
    let ticker = lp.set_interval(Duration::from_millis(25), move |_, _| {
        ticks += 1;
        println!("tick {ticks}");
    });

    // 1. Work that returns a value: `after` gets it on the loop thread.
    lp.queue_work(
        || slow_sum_of_squares(1000),
        move |lp, result| {
            println!("sum of squares: {}", result.expect("it ran"));
            lp.clear_timer(ticker);
        },
    );

    // 2. Work that panics: the panic stays on the pool; `after` gets it.
    lp.queue_work(
        || -> u32 { panic!("bad input") },
        |_, result| match result {
            Err(Error::Panicked { message }) => println!("the work panicked: {message}"),
            other => println!("unexpected: {other:?}"),
        },
    );

    // 3. Work cancelled while queued: `after` runs with Error::Cancelled.
    let queued = lp.queue_work(
        || 42,
        |_, result| match result {
            Err(Error::Cancelled) => println!("cancelled before it started"),
            other => println!("ran anyway: {other:?}"),
        },
    );
    match lp.cancel_work(queued) {
        Ok(()) => {}
        Err(e) => println!("could not cancel: {e}"),
    }

    // 4. A thread of your own sends values into the loop through a channel.
    let sender = lp.channel(|_, line: String| println!("from my thread: {line}"));
    std::thread::spawn(move || {
        for i in 1..=2 {
            sender.send(format!("message {i}")).ok();
        }
        // Dropping the last sender lets the loop finish.
    });

    lp.run()?;
    println!("all done");
    Ok(())
}
