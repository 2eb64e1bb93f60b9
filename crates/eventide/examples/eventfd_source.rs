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
//! macOS has no eventfd: there the values go through a pipe instead, 8
//! bytes each (one read per write, no summing).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use eventide::Loop;
use eventide::source::Interest;

const VALUES: [u64; 4] = [1, 2, 3, 4];

type Ends = (std::sync::Arc<OwnedFd>, std::sync::Arc<OwnedFd>);

/// The (read, write) ends: one eventfd for both; macOS: a pipe.
fn counter() -> std::io::Result<Ends> {
    #[cfg(not(target_vendor = "apple"))]
    {
        // SAFETY: eventfd takes no pointers.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a new descriptor nobody else owns.
        let efd = std::sync::Arc::new(unsafe { OwnedFd::from_raw_fd(raw) });
        Ok((std::sync::Arc::clone(&efd), efd))
    }
    #[cfg(target_vendor = "apple")]
    {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe writes.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: two new descriptors nobody else owns.
        let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        for fd in [&rd, &wr] {
            // SAFETY: fcntl with integer arguments on an open descriptor.
            unsafe {
                libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC);
                libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK);
            }
        }
        Ok((std::sync::Arc::new(rd), std::sync::Arc::new(wr)))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (reader, writer) = counter()?;

    let mut lp = Loop::new()?;
    println!("backend: {}", lp.backend());
    let watcher = lp.watch_fd(&*reader)?;
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
