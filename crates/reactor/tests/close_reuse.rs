//! Conformance: a close ends everything in flight on its descriptor before
//! the number can be reused, once per compiled backend.
//!
//! The dangerous case is an operation the reactor re-arms by itself (a
//! multishot receive or accept whose final completion arrived without
//! `MORE`, a single-shot round of `recv_multi`): if that completion is still
//! waiting to be processed when the close goes out, re-arming it afterwards
//! would start a receive on whatever the number names next, and the next
//! owner's bytes (or connections) would arrive under the dead operation's
//! token. Filling the completion queue first makes the kernel end the
//! multishot receive and keep its final completion behind 4,096 others, so
//! the close is submitted before the reactor has seen it.

mod util;

use eventide_reactor::{Interest, Op, Reactor, Token};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};
use util::*;

/// The cases reuse descriptor numbers on purpose, so they run one at a
/// time (a number freed by one would be taken by another's sockets).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

conformance!(
    serial(crate::SERIAL);
    a_closed_sockets_receive_never_reads_the_next_owner_of_its_number,
    a_closed_listeners_accept_never_takes_the_next_owner_of_its_number,
);

/// Enough operations that complete at once to fill the completion queue
/// (4,096 entries on io_uring); their tokens start at `FILLER`.
const FILLERS: u64 = 4096;
const FILLER: u64 = 1_000_000;

/// A descriptor that is always writable: an unbound Unix datagram socket
/// (macOS has no eventfd).
#[cfg(target_vendor = "apple")]
fn eventfd() -> OwnedFd {
    std::os::unix::net::UnixDatagram::unbound()
        .expect("an unbound datagram socket")
        .into()
}

/// A descriptor that is always writable: an eventfd (an unbound Unix
/// datagram socket on macOS, which has no eventfd).
#[cfg(not(target_vendor = "apple"))]
fn eventfd() -> OwnedFd {
    // SAFETY: eventfd takes no pointers.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    assert!(fd >= 0, "eventfd: {}", std::io::Error::last_os_error());
    // SAFETY: a new descriptor owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn fill_completion_queue(r: &mut Reactor, efd: RawFd) {
    for i in 0..FILLERS {
        r.submit(Token(FILLER + i), Op::poll(efd, Interest::WRITABLE))
            .expect("submit a poll");
    }
}

/// Moves `fd` to the number `want` (free now), returning the new owner.
fn renumber(fd: OwnedFd, want: RawFd) -> OwnedFd {
    if fd.as_raw_fd() == want {
        return fd;
    }
    // SAFETY: dup2 takes no pointers; `want` is a free number (its close
    // completed), so nothing of anyone else's is replaced.
    let r = unsafe { libc::dup2(fd.as_raw_fd(), want) };
    assert_eq!(r, want, "dup2: {}", std::io::Error::last_os_error());
    // SAFETY: `want` is the new descriptor dup2 just made, owned by nobody.
    unsafe { OwnedFd::from_raw_fd(want) }
}

/// Runs turns for a while, returning every completion of `token` and
/// whether the rest were the fillers and the close.
fn completions_of(r: &mut Reactor, token: Token, turns_for: Duration) -> Vec<(bool, Vec<u8>)> {
    let mut seen = Vec::new();
    let end = Instant::now() + turns_for;
    while Instant::now() < end {
        r.wait(Some(Duration::from_millis(20))).unwrap();
        let done: Vec<_> = r.completions().collect();
        for c in done {
            if c.token == token {
                let ok = c.result.is_ok();
                let bytes = c.buf.clone().unwrap_or_default();
                if let Some(b) = c.buf {
                    r.recycle(b);
                }
                seen.push((ok, bytes));
            }
        }
    }
    seen
}

fn a_closed_sockets_receive_never_reads_the_next_owner_of_its_number(r: &mut Reactor) {
    let efd = eventfd();
    let (peer, a) = tcp_pair(r);
    // SAFETY: the accepted descriptor is this test's.
    let mut peer = unsafe { TcpStream::from_raw_fd(peer) };
    peer.write_all(b"x").unwrap();
    std::thread::sleep(Duration::from_millis(20)); // the byte is there
    fill_completion_queue(r, efd.as_raw_fd());
    r.submit(Token(1), Op::recv_multi(a)).unwrap();
    r.submit(Token(2), Op::close(a)).unwrap();
    r.wait(Some(Duration::ZERO)).unwrap();
    let mut closed = None;
    let mut first: Vec<(bool, Vec<u8>)> = Vec::new();
    let deadline = Instant::now() + LIMIT;
    while closed.is_none() {
        assert!(Instant::now() < deadline, "the close never completed");
        for c in r.completions() {
            match c.token {
                Token(2) => closed = Some(c.result),
                Token(1) => first.push((c.result.is_ok(), c.buf.unwrap_or_default())),
                _ => {}
            }
        }
        if closed.is_none() {
            r.wait(Some(Duration::from_millis(20))).unwrap();
        }
    }
    closed.unwrap().expect("close");
    // A's number is free: a new connection takes it.
    let (mut mine, mut theirs) = UnixStream::pair().unwrap();
    if theirs.as_raw_fd() == a {
        std::mem::swap(&mut mine, &mut theirs);
    }
    let mine = renumber(OwnedFd::from(mine), a);
    theirs.write_all(b"secret").unwrap();
    let later = completions_of(r, Token(1), Duration::from_millis(300));
    let all: Vec<_> = first.iter().chain(later.iter()).collect();
    for (_, bytes) in &all {
        assert!(
            !bytes.windows(6).any(|w| w == b"secret"),
            "the closed socket's receive read the next owner's bytes: {all:?}"
        );
    }
    // The new owner gets its own bytes, every one.
    let mut mine = UnixStream::from(mine);
    mine.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut got = [0u8; 6];
    mine.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"secret");
    // The closed socket's peer sees the end.
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rest = Vec::new();
    let n = peer.read_to_end(&mut rest);
    assert!(
        matches!(n, Ok(0)) || n.is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the peer of the closed socket must see it end"
    );
    // Nothing of the closed socket stays in flight.
    drain_fillers(r);
    assert_eq!(r.in_flight(), 0, "operations left in flight");
}

fn a_closed_listeners_accept_never_takes_the_next_owner_of_its_number(r: &mut Reactor) {
    let efd = eventfd();
    let (l, addr) = listener();
    let early = TcpStream::connect(addr).unwrap();
    std::thread::sleep(Duration::from_millis(20)); // the connection is queued
    let lfd = OwnedFd::from(l);
    let raw = lfd.as_raw_fd();
    fill_completion_queue(r, efd.as_raw_fd());
    r.submit(Token(1), Op::accept_multi(raw)).unwrap();
    // The reactor closes the listener: it is no longer ours to drop.
    let raw = std::mem::ManuallyDrop::new(lfd).as_raw_fd();
    r.submit(Token(2), Op::close(raw)).unwrap();
    let mut accepted = Vec::new();
    let mut closed = None;
    let deadline = Instant::now() + LIMIT;
    while closed.is_none() {
        assert!(Instant::now() < deadline, "the close never completed");
        r.wait(Some(Duration::from_millis(20))).unwrap();
        for c in r.completions() {
            match c.token {
                Token(2) => closed = Some(c.result),
                Token(1) => accepted.extend(c.fd()),
                _ => {}
            }
        }
    }
    closed.unwrap().expect("close");
    // A new listener takes the number; a client connects to it.
    let (l2, addr2) = listener();
    let l2 = renumber(OwnedFd::from(l2), raw);
    let client = TcpStream::connect(addr2).unwrap();
    let end = Instant::now() + Duration::from_millis(300);
    while Instant::now() < end {
        r.wait(Some(Duration::from_millis(20))).unwrap();
        for c in r.completions() {
            if c.token == Token(1) {
                accepted.extend(c.fd());
            }
        }
    }
    for &fd in &accepted {
        // SAFETY: the reactor handed these accepted descriptors to us.
        let s = unsafe { TcpStream::from_raw_fd(fd as RawFd) };
        let theirs = s.peer_addr().unwrap();
        assert_ne!(
            theirs,
            client.local_addr().unwrap(),
            "the closed listener's accept took the next listener's connection"
        );
    }
    // The new listener still has its connection.
    let l2 = std::net::TcpListener::from(l2);
    l2.set_nonblocking(false).unwrap();
    let (got, from) = l2.accept().unwrap();
    assert_eq!(from, client.local_addr().unwrap());
    drop((got, early));
    drain_fillers(r);
    assert_eq!(r.in_flight(), 0, "operations left in flight");
}

/// Runs turns until the fillers' completions are all out.
fn drain_fillers(r: &mut Reactor) {
    let deadline = Instant::now() + LIMIT;
    while r.in_flight() > 0 && Instant::now() < deadline {
        r.wait(Some(Duration::from_millis(20))).unwrap();
        r.completions().for_each(drop);
    }
}

/// The same without a provided-buffer ring (`recv_multi` as re-armed
/// single-shot rounds, as on kernels before 6.0), where a round re-armed
/// after the close would also keep the closed socket open in the kernel
/// (its peer would never see the end). In a child process: the switch is
/// read at setup.
#[test]
fn without_provided_buffers_a_closed_sockets_receive_is_not_rearmed() {
    if !eventide_reactor::BackendKind::compiled().contains(&eventide_reactor::BackendKind::Uring)
        || std::env::var(eventide_reactor::BACKEND_ENV).is_ok_and(|v| v == "poll")
    {
        eprintln!("skipped: the uring backend is not compiled in or excluded");
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    run_child(
        "child_without_provided_buffers",
        &[("EVENTIDE_URING_NO_PBUF", "1")],
    );
}

#[test]
#[ignore = "child entry point: run by without_provided_buffers_a_closed_sockets_receive_is_not_rearmed"]
fn child_without_provided_buffers() {
    assert!(in_child());
    let Some(mut r) = reactor_for(eventide_reactor::BackendKind::Uring) else {
        return;
    };
    assert_eq!(r.uring_info().map(|i| i.provided_buffers), Some(0));
    a_closed_sockets_receive_never_reads_the_next_owner_of_its_number(&mut r);
    a_closed_listeners_accept_never_takes_the_next_owner_of_its_number(&mut r);
}
