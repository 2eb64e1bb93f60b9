//! Conformance: `Op::poll_multi`, the level-triggered readiness watch
//! (libuv's `uv_poll_t` at the reactor's level), once per compiled backend.

mod util;

use eventide_reactor::{BackendKind, Completion, Interest, Op, Reactor, Token};
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};
use util::*;

conformance!(
    a_watch_fires_while_the_condition_holds,
    a_writable_watch_fires_every_turn_until_cancelled,
    a_disconnect_is_reported_on_a_half_close_with_readable,
    a_hang_up_is_reported_to_a_disconnect_watch,
    priority_data_is_reported,
    a_close_ends_the_watch_cancelled,
    a_close_of_a_duplicate_leaves_the_watch_on,
    watches_and_receives_share_a_descriptor,
    a_regular_file_is_refused_or_always_ready,
);

const WATCH: Token = Token(1);

/// One wait of at most `ms`, and what it brought.
fn turn(r: &mut Reactor, ms: u64) -> Vec<Completion> {
    r.wait(Some(Duration::from_millis(ms))).expect("wait");
    r.completions().collect()
}

/// Waits (bounded) until a completion for `token` comes, and returns it
/// with the others of the same turn.
fn next_for(r: &mut Reactor, token: Token) -> Completion {
    let deadline = Instant::now() + LIMIT;
    loop {
        assert!(Instant::now() < deadline, "timed out waiting for {token:?}");
        for c in turn(r, 200) {
            if c.token == token {
                return c;
            }
        }
    }
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    let rc = pipe2(&mut fds, libc::O_NONBLOCK | libc::O_CLOEXEC);
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: two new descriptors, owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn write_all(fd: RawFd, data: &[u8]) {
    // SAFETY: the pointer and length describe `data`, alive for the call.
    let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    assert_eq!(n, data.len() as isize, "write");
}

fn read_one(fd: RawFd) -> Option<u8> {
    let mut b = 0u8;
    // SAFETY: one writable byte, alive for the call.
    let n = unsafe { libc::read(fd, (&raw mut b).cast(), 1) };
    (n == 1).then_some(b)
}

fn readiness(c: &Completion) -> Interest {
    c.readiness()
        .unwrap_or_else(|| panic!("an error: {:?}", c.result))
}

/// The defining property: a reader that takes one byte per completion
/// hears of every byte, though no new data arrives (a watch that fired
/// once per wake-up would report the first and fall silent).
fn a_watch_fires_while_the_condition_holds(r: &mut Reactor) {
    let (rd, wr) = pipe();
    write_all(wr.as_raw_fd(), b"abc");
    r.submit(WATCH, Op::poll_multi(rd.as_raw_fd(), Interest::READABLE))
        .expect("submit");
    let mut got = Vec::new();
    for _ in 0..3 {
        let c = next_for(r, WATCH);
        assert!(c.more, "the watch stays armed: {c:?}");
        assert_eq!(readiness(&c), Interest::READABLE);
        got.push(read_one(rd.as_raw_fd()).expect("a byte is there"));
    }
    assert_eq!(got, b"abc");
    // Drained: nothing more until something is written.
    for c in turn(r, 100) {
        assert_ne!(c.token, WATCH, "fired with nothing to read: {c:?}");
    }
    write_all(wr.as_raw_fd(), b"d");
    let c = next_for(r, WATCH);
    assert_eq!(readiness(&c), Interest::READABLE);
    assert_eq!(read_one(rd.as_raw_fd()), Some(b'd'));
    assert!(r.cancel(WATCH));
    let end = next_for(r, WATCH);
    assert!(!end.more && end.is_cancelled(), "{end:?}");
    assert_eq!(r.in_flight(), 0);
}

fn a_writable_watch_fires_every_turn_until_cancelled(r: &mut Reactor) {
    let (a, _b) = UnixStream::pair().expect("socketpair");
    a.set_nonblocking(true).expect("nonblocking");
    r.submit(WATCH, Op::poll_multi(a.as_raw_fd(), Interest::WRITABLE))
        .expect("submit");
    for _ in 0..5 {
        let c = next_for(r, WATCH);
        assert!(c.more);
        assert_eq!(readiness(&c), Interest::WRITABLE);
    }
    assert!(r.cancel(WATCH));
    // The final completion comes (perhaps after readiness that won the
    // race), and then nothing.
    loop {
        let c = next_for(r, WATCH);
        if !c.more {
            assert!(c.is_cancelled(), "{c:?}");
            break;
        }
    }
    for c in turn(r, 50) {
        assert_ne!(c.token, WATCH, "after the final completion: {c:?}");
    }
    assert!(!r.cancel(WATCH), "no longer in flight");
}

fn a_disconnect_is_reported_on_a_half_close_with_readable(r: &mut Reactor) {
    let (a, b) = UnixStream::pair().expect("socketpair");
    a.set_nonblocking(true).expect("nonblocking");
    let want = Interest::READABLE | Interest::DISCONNECT;
    r.submit(WATCH, Op::poll_multi(a.as_raw_fd(), want))
        .expect("submit");
    for c in turn(r, 50) {
        assert_ne!(c.token, WATCH, "nothing happened yet: {c:?}");
    }
    b.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let c = next_for(r, WATCH);
    assert_eq!(readiness(&c), want, "readable (the end) and disconnected");
    r.cancel(WATCH);
    while next_for(r, WATCH).more {}
}

fn a_hang_up_is_reported_to_a_disconnect_watch(r: &mut Reactor) {
    // A pipe's reader hears its writers go: POLLHUP, on every backend.
    let (rd, wr) = pipe();
    r.submit(WATCH, Op::poll_multi(rd.as_raw_fd(), Interest::DISCONNECT))
        .expect("submit");
    for c in turn(r, 50) {
        assert_ne!(c.token, WATCH, "nothing happened yet: {c:?}");
    }
    drop(wr);
    let c = next_for(r, WATCH);
    assert_eq!(readiness(&c), Interest::DISCONNECT);
    // Level-triggered: it goes on while the pipe stays hung up.
    let again = next_for(r, WATCH);
    assert_eq!(readiness(&again), Interest::DISCONNECT);
    r.cancel(WATCH);
    while next_for(r, WATCH).more {}
}

fn priority_data_is_reported(r: &mut Reactor) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let client = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    server.set_nonblocking(true).expect("nonblocking");
    r.submit(
        WATCH,
        Op::poll_multi(server.as_raw_fd(), Interest::PRIORITY),
    )
    .expect("submit");
    // Ordinary data is no priority data.
    (&client).write_all(b"plain").expect("write");
    for c in turn(r, 100) {
        assert_ne!(c.token, WATCH, "ordinary data: {c:?}");
    }
    let urgent = b"!";
    // SAFETY: the pointer and length describe `urgent`, alive for the call.
    let n = unsafe { libc::send(client.as_raw_fd(), urgent.as_ptr().cast(), 1, libc::MSG_OOB) };
    assert_eq!(n, 1, "send MSG_OOB");
    let c = next_for(r, WATCH);
    assert_eq!(readiness(&c), Interest::PRIORITY);
    r.cancel(WATCH);
    while next_for(r, WATCH).more {}
}

fn a_close_ends_the_watch_cancelled(r: &mut Reactor) {
    let (rd, _wr) = pipe();
    let fd = rd.as_raw_fd();
    r.submit(WATCH, Op::poll_multi(fd, Interest::READABLE))
        .expect("submit");
    let _ = turn(r, 10);
    // The reactor closes it now.
    std::mem::forget(rd);
    r.submit(Token(2), Op::close(fd)).expect("submit close");
    let mut watch_end = None;
    let mut closed = None;
    let deadline = Instant::now() + LIMIT;
    while watch_end.is_none() || closed.is_none() {
        assert!(Instant::now() < deadline, "timed out");
        for c in turn(r, 100) {
            match c.token {
                WATCH if !c.more => watch_end = Some(c),
                WATCH => {}
                _ => closed = Some(c),
            }
        }
    }
    assert!(watch_end.unwrap().is_cancelled());
    closed.unwrap().result.expect("closed");
    assert_eq!(r.in_flight(), 0);
}

/// A watch on one descriptor, and a close of its duplicate (the same open
/// file): the watch goes on (io_uring's close cancels by file, so the
/// watch's poll was cancelled too; it is armed again, since its own
/// descriptor is still open), and reports the data written after.
fn a_close_of_a_duplicate_leaves_the_watch_on(r: &mut Reactor) {
    let (rd, wr) = pipe();
    let dup = rd.try_clone().unwrap();
    r.submit(WATCH, Op::poll_multi(rd.as_raw_fd(), Interest::READABLE))
        .expect("submit");
    let _ = turn(r, 10);
    let dup_fd = dup.as_raw_fd();
    std::mem::forget(dup);
    r.submit(Token(2), Op::close(dup_fd)).expect("submit close");
    let closed = next_for(r, Token(2));
    closed.result.expect("closed");
    for c in turn(r, 20) {
        assert!(
            c.token != WATCH || c.more,
            "the watch ended: {:?}",
            c.result
        );
    }
    write_all(wr.as_raw_fd(), b"x");
    let c = next_for(r, WATCH);
    assert!(c.more, "still armed: {:?}", c.result);
    assert!(readiness(&c).is_readable());
    r.cancel(WATCH);
    while next_for(r, WATCH).more {}
}

/// Two watches and the reactor's own receive on one socket: each hears
/// what it asked for, and ending one leaves the others as they were.
fn watches_and_receives_share_a_descriptor(r: &mut Reactor) {
    let (a, b) = UnixStream::pair().expect("socketpair");
    a.set_nonblocking(true).expect("nonblocking");
    let fd = a.as_raw_fd();
    let reader = Token(10);
    let writer = Token(11);
    r.submit(reader, Op::poll_multi(fd, Interest::READABLE))
        .expect("submit");
    r.submit(writer, Op::poll_multi(fd, Interest::WRITABLE))
        .expect("submit");
    let c = next_for(r, writer);
    assert_eq!(readiness(&c), Interest::WRITABLE);
    r.cancel(writer);
    while next_for(r, writer).more {}
    // The receive takes the bytes; the reader watch heard of them (or the
    // receive was quicker: either way no byte is lost and nothing hangs).
    (&b).write_all(b"xy").expect("write");
    r.submit(Token(12), Op::recv(fd, Vec::with_capacity(16)))
        .expect("submit recv");
    let mut stash = Vec::new();
    let got = wait_for(r, Token(12), &mut stash);
    assert_eq!(got.buf.as_deref(), Some(&b"xy"[..]));
    // The reader watch still works after all that.
    (&b).write_all(b"z").expect("write");
    let c = next_for(r, reader);
    assert_eq!(readiness(&c), Interest::READABLE);
    r.cancel(reader);
    while next_for(r, reader).more {}
    assert_eq!(r.in_flight(), 0);
}

/// A regular file cannot be watched by epoll (`EPERM`), which the
/// readiness backends report as the watch's final completion; io_uring
/// polls it as poll(2) does: always ready.
fn a_regular_file_is_refused_or_always_ready(r: &mut Reactor) {
    let file = tempfile::tempfile().expect("a temporary file");
    r.submit(WATCH, Op::poll_multi(file.as_raw_fd(), Interest::READABLE))
        .expect("submit");
    let c = next_for(r, WATCH);
    if r.backend() == BackendKind::Uring {
        assert_eq!(readiness(&c), Interest::READABLE);
        r.cancel(WATCH);
        while next_for(r, WATCH).more {}
    } else {
        assert!(!c.more);
        let e = c.result.expect_err("refused");
        assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
    }
    assert_eq!(r.in_flight(), 0);
}

/// `pipe2(2)`; macOS has none: `pipe(2)`, then the same flags by `fcntl`.
fn pipe2(fds: &mut [libc::c_int; 2], flags: libc::c_int) -> libc::c_int {
    #[cfg(not(target_vendor = "apple"))]
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    return unsafe { libc::pipe2(fds.as_mut_ptr(), flags) };
    #[cfg(target_vendor = "apple")]
    {
        // SAFETY: `fds` has room for the two descriptors pipe writes.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            return -1;
        }
        for &fd in fds.iter() {
            // SAFETY: fcntl with integer arguments on a descriptor just made.
            unsafe {
                if flags & libc::O_CLOEXEC != 0 {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                }
                if flags & libc::O_NONBLOCK != 0 {
                    libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK);
                }
            }
        }
        0
    }
}
