//! The guide's chapter "Immediates, next-ticks and microtasks"
//! (docs/guide/ticks.md): Node's ordering, from the main program and from
//! an I/O callback.
//!
//!     cargo run --example guide_ticks

use std::time::Duration;

use eventide::Loop;

/// Queues one of each, in the reverse of the order they run in an I/O
/// callback, each printing its name after `label`.
fn queue_all(lp: &mut Loop, label: &'static str) {
    lp.set_timeout(Duration::ZERO, move |_| println!("{label}: setTimeout(0)"));
    lp.set_immediate(move |_| println!("{label}: setImmediate"));
    lp.queue_microtask(move |_| println!("{label}: queueMicrotask"));
    lp.next_tick(move |lp| {
        println!("{label}: nextTick");
        // A tick queued by a tick still runs before the microtasks.
        lp.next_tick(move |_| println!("{label}: nextTick queued by a nextTick"));
    });
}

fn main() -> eventide::Result<()> {
    let mut lp = Loop::new()?;

    // From an I/O callback (here: a file read finishing), the order is
    // fixed: ticks, microtasks, then the check phase's immediate, then the
    // next turn's timers.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    lp.fs().read_file(path, |lp, result| {
        result.expect("Cargo.toml reads");
        queue_all(lp, "in an I/O callback");
    });
    lp.run()?;

    // An immediate queued by an immediate runs on the next turn, after
    // whatever that turn's poll phase brings.
    lp.set_immediate(|lp| {
        println!("immediate 1");
        lp.set_immediate(|_| println!("immediate 3 (queued by 1: the next turn)"));
    });
    lp.set_immediate(|_| println!("immediate 2"));
    lp.run()?;
    Ok(())
}
