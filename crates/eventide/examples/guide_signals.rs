//! The guide's chapter "Signals" (docs/guide/signals.md): two listeners
//! of SIGUSR1, one that removes itself after its first call (Node's
//! `process.once`), a signal sent to the process three times, and the
//! default disposition back once the last listener is gone.
//!
//!     cargo run --example guide_signals

use std::time::Duration;

use eventide::signal::Signal;
use eventide::{Loop, Result};

/// What the listeners count, on the loop.
#[derive(Default)]
struct Heard(u32);

/// Sends `signal` to this process, as `kill -USR1 <pid>` would.
fn kill_self(signal: Signal) {
    // SAFETY: kill(2) with this process's id and a valid signal number.
    unsafe { libc::kill(libc::getpid(), signal.as_raw()) };
}

/// Whether `signal`'s disposition is the default one.
fn is_default(signal: Signal) -> bool {
    // SAFETY: a null new action only queries; `old` is a live local.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal.as_raw(), std::ptr::null(), &mut old);
        old.sa_sigaction == libc::SIG_DFL
    }
}

fn main() -> Result<()> {
    let mut lp = Loop::new()?;
    lp.insert_state(Heard::default());

    // Runs for every SIGUSR1; after the third, removes itself.
    let every = lp.on_signal(Signal::USR1, |lp, me| {
        let heard = lp.state_mut::<Heard>().expect("inserted");
        heard.0 += 1;
        let n = heard.0;
        println!("every: {} number {n}", me.signal());
        if n == 3 {
            me.remove(lp);
            println!("SIGUSR1 back to its default: {}", is_default(Signal::USR1));
        }
    })?;
    // Listeners do not keep the loop alive, as in Node: this one does,
    // until it is removed.
    every.set_ref(&mut lp, true);

    // Runs once (Node's `process.once('SIGUSR1', ..)`).
    lp.on_signal(Signal::USR1, |lp, me| {
        println!("once: {}, removing myself", me.signal());
        me.remove(lp);
    })?;
    println!("SIGUSR1 handled by eventide: {}", !is_default(Signal::USR1));

    // Three deliveries, from a timer: each one reaches `every`.
    lp.set_timeout(Duration::from_millis(10), |_| {
        for _ in 0..3 {
            kill_self(Signal::USR1);
        }
    });
    lp.run()?;
    println!("the loop ended");
    Ok(())
}
