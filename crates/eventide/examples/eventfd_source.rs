//! An `eventfd` written from another thread and read on the loop through
//! an [`FdWatcher`](eventide::source::FdWatcher) (libuv's `uv_poll_t`).
//!
//! ```text
//! cargo run -p eventide --example eventfd_source
//! ```
//!
//! The thread adds 1, 2, 3 and 4 to the eventfd's counter; each read on
//! the loop takes the counter (what was added since the last read, so two
//! writes close together read as their sum). It prints what it read and
//! ends once the four values are in (or after five seconds, as a failure).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use eventide::Loop;
use eventide::source::Interest;

const VALUES: [u64; 4] = [1, 2, 3, 4];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: eventfd takes no pointers.
    let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: a new descriptor nobody else owns.
    let efd = std::sync::Arc::new(unsafe { OwnedFd::from_raw_fd(raw) });

    let mut lp = Loop::new()?;
    println!("backend: {}", lp.backend());
    let watcher = lp.watch_fd(&*efd)?;
    let reader = std::sync::Arc::clone(&efd);
    let want: u64 = VALUES.iter().sum();
    let mut total = 0;
    watcher.start(&mut lp, Interest::READABLE, move |lp, me, ready| {
        if let Err(error) = ready {
            lp.fail(error);
            return;
        }
        let mut value = 0u64;
        // SAFETY: reads the 8-byte counter into `value`, alive for the call.
        let n = unsafe { libc::read(reader.as_raw_fd(), (&raw mut value).cast(), 8) };
        if n != 8 {
            return; // EAGAIN: a spurious readiness.
        }
        total += value;
        println!("read {value} (total {total})");
        if total >= want {
            me.close(lp);
        }
    })?;
    // Fails the run if the values do not all come.
    let deadline = lp.set_timeout(Duration::from_secs(5), |lp| {
        lp.fail(eventide::Error::other("timed out waiting for the writer"));
    });
    lp.unref_timer(deadline);

    let writer = std::sync::Arc::clone(&efd);
    let thread = std::thread::spawn(move || {
        for value in VALUES {
            // SAFETY: writes the 8 bytes of `value`, alive for the call.
            let n = unsafe { libc::write(writer.as_raw_fd(), (&raw const value).cast(), 8) };
            assert_eq!(n, 8, "write to the eventfd");
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    lp.run()?;
    thread.join().expect("the writer thread");
    println!("done");
    Ok(())
}
