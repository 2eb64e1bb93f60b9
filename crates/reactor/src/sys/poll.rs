//! The polling backend: the readiness core (`readiness.rs`) over the
//! `polling` crate (epoll, kqueue, event ports, ...), for the systems
//! other than Linux and selectable on Linux (`EVENTIDE_BACKEND=poll`).
//!
//! This file is only the OS interface. Where it differs from `epoll.rs`:
//!
//! - registrations go through `polling` in `PollMode::Level` (its default
//!   is oneshot, which would need a `modify` after every event); the
//!   event's key is the descriptor;
//! - the timeout goes to `Poller::wait` as it is (polling re-arms a timerfd
//!   for it on every wait, and reads and re-arms its notifier: the cost
//!   `epoll.rs` exists to avoid);
//! - a wake is polling's own `notify`, which its `wait` consumes, so the
//!   pending flag is reset as soon as the wait returns, before the events
//!   are handled;
//! - readable and writable are as polling maps the OS's events.

use super::readiness::{PRI, R, Readiness, Selector, W, detail};
use super::{Notify, WakeShared};
use polling::{Event, Events, PollMode, Poller};
use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

/// The polling backend.
pub(crate) type Poll = Readiness<PollSelector>;

/// The `polling` crate as the readiness core's OS interface.
#[derive(Debug)]
pub(crate) struct PollSelector {
    poller: Arc<Poller>,
    events: Events,
    wake: Arc<WakeShared>,
}

/// `want` (`R | W` bits, and a `poll_multi` watch's `PRI`) as polling's
/// event for `fd`. (polling cannot ask for `RDHUP`: the core peeks.)
fn event(fd: RawFd, want: u8) -> Event {
    let mut ev = Event::new(fd as usize, want & R != 0, want & W != 0);
    if want & PRI != 0 {
        ev.set_priority(true);
    }
    ev
}

/// What polling says of an event, as the core's `detail` bits (readable
/// includes what polling counts as readable: priority data, hang-ups and
/// errors too).
fn detail_of(ev: &Event) -> u32 {
    (if ev.readable { detail::IN } else { 0 })
        | (if ev.writable { detail::OUT } else { 0 })
        | (if ev.is_priority() { detail::PRI } else { 0 })
        | (if ev.is_interrupt() { detail::HUP } else { 0 })
        | (if ev.is_err() == Some(true) {
            detail::ERR
        } else {
            0
        })
}

impl Selector for PollSelector {
    const NAME: &'static str = "polling";
    const RDHUP: bool = false;
    // The `polling` crate has an edge mode on some systems only, and its
    // waits cost more than a level-triggered recheck.
    const EDGE: bool = false;

    fn open() -> io::Result<PollSelector> {
        let poller = Arc::new(Poller::new()?);
        let wake = Arc::new(WakeShared::new(Notify::Poller(poller.clone())));
        Ok(PollSelector {
            poller,
            events: Events::new(),
            wake,
        })
    }

    fn wake(&self) -> &Arc<WakeShared> {
        &self.wake
    }

    fn add(&mut self, fd: RawFd, want: u8) -> io::Result<()> {
        // SAFETY: the core keeps `fd` registered only while it is open (the
        // caller keeps it open while operations wait on it, and the reactor
        // deletes it before an `Op::close`).
        unsafe {
            self.poller
                .add_with_mode(fd, event(fd, want), PollMode::Level)
        }
    }

    fn modify(&mut self, fd: RawFd, want: u8) -> io::Result<()> {
        // SAFETY: as in `add`, `fd` is open while it is registered.
        let bfd = unsafe { BorrowedFd::borrow_raw(fd) };
        self.poller
            .modify_with_mode(bfd, event(fd, want), PollMode::Level)
    }

    fn delete(&mut self, fd: RawFd) {
        // SAFETY: the core deletes `fd` while it is still open.
        let _ = self.poller.delete(unsafe { BorrowedFd::borrow_raw(fd) });
    }

    fn select(
        &mut self,
        timeout: Option<Duration>,
        mut on_event: impl FnMut(RawFd, bool, bool, u32),
    ) -> io::Result<()> {
        self.events.clear();
        let r = self.poller.wait(&mut self.events, timeout);
        self.wake.reset();
        if let Err(e) = r {
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            };
        }
        for ev in self.events.iter() {
            on_event(ev.key as RawFd, ev.readable, ev.writable, detail_of(&ev));
        }
        Ok(())
    }
}
