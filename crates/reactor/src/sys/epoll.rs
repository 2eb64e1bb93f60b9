//! The epoll backend (Linux): the readiness core (`readiness.rs`, the
//! queues and rules it shares with `poll.rs`) on raw `epoll`, so that a
//! turn costs one `epoll_wait` and nothing else.
//!
//! This file is only the OS interface. What it does not do, and the
//! `polling` crate's `wait` does on every call (its API leaves no way
//! around it): re-arm a timerfd for the timeout (`timerfd_settime` and
//! `epoll_ctl`) and read and re-arm its notifier (`read` and `epoll_ctl`)
//! whether or not anyone woke it. Where it differs from `poll.rs`:
//!
//! - the timeout goes to `epoll_wait` itself, in milliseconds, rounded up
//!   (a wait never ends before its timeout; the loop's timers have
//!   millisecond granularity anyway);
//! - the wake-up eventfd is registered once, level-triggered, under its
//!   own `epoll_data` (`WAKE_KEY`), and read only when `epoll_wait`
//!   reports it; the pending flag is reset after that read (polling
//!   resets it right after its wait). [`WakeShared`] writes to it only on
//!   the false-to-true edge of its pending flag (and the facade wakes only
//!   a sleeping loop), so a loop nobody wakes never touches it;
//! - readable and writable are mapped from epoll's bits here
//!   (`READ_EVENTS`, `WRITE_EVENTS`, as polling maps them), and one wait
//!   takes at most `MAX_EVENTS`;
//! - `epoll_ctl` is called only when the core asks (a descriptor's wanted
//!   interest really changed, or it fired with nobody waiting and is
//!   deleted).
//!
//! W4 (ping-pong) therefore costs per round trip two `epoll_wait`, two
//! `recv` and two `send`: what libuv makes (docs/benchmarks.md).

use super::readiness::{EDGE, PRI, R, RDHUP, Readiness, Selector, W, detail};
use super::{Notify, WakeShared};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

/// The `epoll_data` of the wake-up eventfd. Descriptors are never
/// negative, so no descriptor's data (`fd as u64`) is this.
const WAKE_KEY: u64 = u64::MAX;

/// How many events one `epoll_wait` takes at most (as libuv). More ready
/// descriptors are reported by the next wait: registrations are
/// level-triggered, so nothing is lost.
const MAX_EVENTS: usize = 1024;

/// What epoll reports as "a reader can proceed" (errors and hang-ups make
/// the pending call fail or see the end of the stream), as `polling` maps it.
const READ_EVENTS: u32 = (libc::EPOLLIN | libc::EPOLLPRI | libc::EPOLLHUP | libc::EPOLLERR) as u32;
/// What epoll reports as "a writer can proceed".
const WRITE_EVENTS: u32 = (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) as u32;

/// The kernel's signal set size, `epoll_pwait`'s last argument (64
/// signals; what glibc passes).
const SIGSET_BYTES: libc::size_t = 8;

/// The epoll backend.
pub(crate) type Epoll = Readiness<EpollSelector>;

/// Raw epoll as the readiness core's OS interface.
#[derive(Debug)]
pub(crate) struct EpollSelector {
    epfd: OwnedFd,
    /// The wake-up eventfd (owned by `wake`, which this keeps alive).
    wake_fd: RawFd,
    wake: Arc<WakeShared>,
    /// `MAX_EVENTS` slots `epoll_wait` fills.
    events: Vec<libc::epoll_event>,
}

impl EpollSelector {
    /// One `epoll_ctl` for `fd` (`EPOLL_CTL_ADD` or `EPOLL_CTL_MOD`), with
    /// `want` (`R | W` bits) as `EPOLLIN` / `EPOLLOUT` (and a `poll_multi`
    /// watch's `PRI | RDHUP` as `EPOLLPRI` / `EPOLLRDHUP`).
    fn ctl(&self, op: i32, fd: RawFd, want: u8) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: (if want & R != 0 {
                libc::EPOLLIN as u32
            } else {
                0
            }) | (if want & W != 0 {
                libc::EPOLLOUT as u32
            } else {
                0
            }) | watch_events(want)
                | (if want & EDGE != 0 {
                    // With the peer's end reported, so that the core
                    // knows a drained socket may still read its end.
                    (libc::EPOLLET | libc::EPOLLRDHUP) as u32
                } else {
                    0
                }),
            u64: fd as u64,
        };
        // SAFETY: `ev` is a valid event for the call; a descriptor that is
        // not open is an error result (the core handles it). The core keeps
        // `fd` registered only while it is open (the caller keeps it open
        // while operations wait on it, and the reactor deletes it before an
        // `Op::close`).
        unsafe { syscall!(epoll_ctl(self.epfd.as_raw_fd(), op, fd, &raw mut ev)) }.map(|_| ())
    }

    /// Reads the wake-up eventfd back to zero (it fired).
    fn drain_wake(&self) {
        let mut count: u64 = 0;
        // SAFETY: the eventfd is open (`self.wake` owns it); the pointer and
        // length describe the 8 bytes of `count`, alive for the call.
        let _ = unsafe { syscall!(read(self.wake_fd, (&raw mut count).cast(), 8)) };
    }
}

/// A `poll_multi` watch's `PRI | RDHUP` bits as epoll's.
fn watch_events(want: u8) -> u32 {
    (if want & PRI != 0 {
        libc::EPOLLPRI as u32
    } else {
        0
    }) | (if want & RDHUP != 0 {
        libc::EPOLLRDHUP as u32
    } else {
        0
    })
}

// The core reads a watched descriptor's events as epoll gives them.
const _: () = assert!(
    detail::IN == libc::EPOLLIN as u32
        && detail::PRI == libc::EPOLLPRI as u32
        && detail::OUT == libc::EPOLLOUT as u32
        && detail::ERR == libc::EPOLLERR as u32
        && detail::HUP == libc::EPOLLHUP as u32
        && detail::RDHUP == libc::EPOLLRDHUP as u32
);

impl Selector for EpollSelector {
    const NAME: &'static str = "epoll";
    const RDHUP: bool = true;
    const EDGE: bool = true;

    fn open() -> io::Result<EpollSelector> {
        // SAFETY: epoll_create1 takes no pointers.
        let epfd = unsafe { syscall!(epoll_create1(libc::EPOLL_CLOEXEC)) }?;
        // SAFETY: `epfd` is a new descriptor nobody else owns.
        let epfd = unsafe { OwnedFd::from_raw_fd(epfd) };
        // SAFETY: eventfd takes no pointers.
        let efd = unsafe { syscall!(eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK)) }?;
        // SAFETY: `efd` is a new descriptor nobody else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(efd) };
        let wake = Arc::new(WakeShared::new(Notify::EventFd(owned)));
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: WAKE_KEY,
        };
        // SAFETY: both descriptors are open; `ev` is a valid event for the call.
        unsafe {
            syscall!(epoll_ctl(
                epfd.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                efd,
                &raw mut ev
            ))
        }?;
        Ok(EpollSelector {
            epfd,
            wake_fd: efd,
            wake,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS],
        })
    }

    fn wake(&self) -> &Arc<WakeShared> {
        &self.wake
    }

    fn add(&mut self, fd: RawFd, want: u8) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, want)
    }

    fn modify(&mut self, fd: RawFd, want: u8) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, want)
    }

    fn delete(&mut self, fd: RawFd) {
        // SAFETY: `fd` is open (the core deletes it before it is closed); a
        // null event is allowed for EPOLL_CTL_DEL.
        let _ = unsafe {
            syscall!(epoll_ctl(
                self.epfd.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut()
            ))
        };
    }

    fn select(
        &mut self,
        timeout: Option<Duration>,
        mut on_event: impl FnMut(RawFd, bool, bool, u32),
    ) -> io::Result<()> {
        // The system call itself, not glibc's `epoll_wait`: that one is a
        // cancellation point, which in a process with a second thread (a
        // second loop, the pool) brackets every wait with two atomic
        // updates of the thread's cancellation state; nothing here is ever
        // cancelled. `epoll_pwait` with no signal mask is `epoll_wait` (and
        // the only one of the two that every architecture has).
        // SAFETY: `events` holds MAX_EVENTS initialised entries the kernel
        // may overwrite; the epoll descriptor is open; a null signal mask
        // is allowed (its size is then not read). Every argument is passed
        // a register wide: `syscall` reads them as `long`s.
        let r = unsafe {
            libc::syscall(
                libc::SYS_epoll_pwait,
                libc::c_long::from(self.epfd.as_raw_fd()),
                self.events.as_mut_ptr(),
                MAX_EVENTS as libc::c_long,
                libc::c_long::from(timeout_ms(timeout)),
                std::ptr::null::<libc::sigset_t>(),
                SIGSET_BYTES,
            )
        };
        let r = if r == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        };
        let n = match r {
            Ok(n) => n as usize,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => {
                self.wake.reset();
                return Err(e);
            }
        };
        for i in 0..n.min(MAX_EVENTS) {
            let libc::epoll_event { events, u64: data } = self.events[i];
            if data == WAKE_KEY {
                self.drain_wake();
                continue;
            }
            on_event(
                data as RawFd,
                events & READ_EVENTS != 0,
                events & WRITE_EVENTS != 0,
                events,
            );
        }
        // After the eventfd was read, not before: a wake between the two
        // would otherwise be read away while the flag still said "pending",
        // and no later wake would write again.
        self.wake.reset();
        Ok(())
    }
}

/// `epoll_wait`'s timeout: whole milliseconds, rounded up so that a wait
/// never ends before its timeout; -1 for none; capped at `i32::MAX` ms
/// (24.8 days: the caller waits again).
fn timeout_ms(timeout: Option<Duration>) -> i32 {
    match timeout {
        None => -1,
        Some(t) => {
            let ms = t.as_millis() + u128::from(t.subsec_nanos() % 1_000_000 != 0);
            i32::try_from(ms).unwrap_or(i32::MAX)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_round_up_to_whole_milliseconds() {
        assert_eq!(timeout_ms(None), -1);
        assert_eq!(timeout_ms(Some(Duration::ZERO)), 0);
        assert_eq!(timeout_ms(Some(Duration::from_nanos(1))), 1);
        assert_eq!(timeout_ms(Some(Duration::from_millis(5))), 5);
        assert_eq!(timeout_ms(Some(Duration::from_micros(5_001))), 6);
        assert_eq!(timeout_ms(Some(Duration::MAX)), i32::MAX);
    }
}
