//! The readiness backends' system calls on a busy stream (issue 13, W12):
//!
//! - multishot reads in bursts: when a descriptor holds several buffers'
//!   worth, one wait delivers them all (read after read while each fills
//!   its buffer, as libuv's `uv__read`), not one buffer per wait; a short
//!   read ends the burst;
//! - after a short send (the socket's buffer is full), the next send of
//!   the same turn waits for writability instead of trying at once (an
//!   `EAGAIN`, as libuv, which waits for `POLLOUT` after a partial write).
//!
//! io_uring is not concerned (its reads are the kernel's); the cases run on
//! the epoll and polling backends.

#![cfg(target_os = "linux")]

mod util;

use eventide_reactor::{BackendKind, Op, Reactor, Token};
use std::os::fd::RawFd;
use std::sync::Mutex;
use util::*;

/// The cases run one at a time: `a_reused_descriptor_number_sends_at_once`
/// counts on the lowest free descriptor number being its own.
static SERIAL: Mutex<()> = Mutex::new(());

/// Runs `case` on `kind`, alone in this binary.
fn serial(kind: BackendKind, case: fn(&mut Reactor)) {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    run(kind, case);
}

/// `read_multi`'s buffer size (the reactor's `READ_BUF_SIZE`).
const BUF: usize = 64 * 1024;

/// A nonblocking pipe holding 1 MiB, (read end, write end).
fn big_pipe() -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
    assert_eq!(r, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: F_SETPIPE_SZ takes an int; the descriptor is open.
    let size = unsafe { libc::fcntl(fds[1], libc::F_SETPIPE_SZ, 1 << 20) };
    assert!(size >= 1 << 20, "F_SETPIPE_SZ: {size}");
    (fds[0], fds[1])
}

/// Five full buffers and a short one are written before the read is
/// submitted: the first wait that reports the read delivers all six, in
/// order (one wait per buffer before the bursts).
fn one_wait_takes_every_full_buffer(r: &mut Reactor) {
    let (rd, wr) = big_pipe();
    let data = pattern(7, 5 * BUF + 1000);
    write_all(wr, &data);
    r.submit(Token(1), Op::read_multi(rd)).unwrap();
    let mut got = Vec::new();
    let mut waits = 0;
    while got.is_empty() {
        waits += 1;
        assert!(waits <= 50, "no read completed");
        r.wait(Some(std::time::Duration::from_millis(100))).unwrap();
        got.extend(r.completions());
    }
    let sizes: Vec<usize> = got.iter().map(|c| *c.result.as_ref().unwrap()).collect();
    assert_eq!(sizes, [BUF, BUF, BUF, BUF, BUF, 1000], "one wait's reads");
    let mut back = Vec::new();
    for c in got {
        assert!(c.more, "the read stays armed");
        let buf = c.buf.unwrap();
        back.extend_from_slice(&buf);
        r.recycle(buf);
    }
    assert_eq!(back, data);
    // The burst ended at the short read; more data is read by a later wait.
    write_all(wr, &data[..100]);
    let c = wait_for(r, Token(1), &mut Vec::new());
    assert_eq!(c.result.unwrap(), 100);
    r.recycle(c.buf.unwrap());
    r.cancel(Token(1));
    close(rd);
    close(wr);
}

/// A nonblocking Unix socketpair.
fn socketpair() -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    let ty = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: `fds` has room for the two descriptors socketpair writes.
    let r = unsafe { libc::socketpair(libc::AF_UNIX, ty, 0, fds.as_mut_ptr()) };
    assert_eq!(r, 0, "socketpair: {}", std::io::Error::last_os_error());
    (fds[0], fds[1])
}

/// Reads what `fd` holds now (nonblocking) onto `into`.
fn drain(fd: RawFd, into: &mut Vec<u8>) {
    let mut buf = vec![0u8; BUF];
    loop {
        // SAFETY: the pointer and length describe `buf`.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return;
        }
        into.extend_from_slice(&buf[..n as usize]);
    }
}

/// A send too big for the socket's buffer writes part of it at submit;
/// the reader then makes room, and a second send submitted in the same
/// turn is not written at once (it would have been before: the room was
/// there) but at the next wait, once the socket is writable. Every byte
/// arrives, in order.
fn after_a_short_send_the_next_waits_for_writability(r: &mut Reactor) {
    let (a, b) = socketpair();
    let big = pattern(1, 16 << 20);
    r.submit(Token(1), Op::send(a, big.clone())).unwrap();
    let first: Vec<_> = r.completions().collect();
    assert_eq!(first.len(), 1, "the send is tried at submit");
    let n = *first[0].result.as_ref().unwrap();
    assert!(n > 0 && n < big.len(), "a short send: {n}");
    let mut got = Vec::new();
    drain(b, &mut got);
    assert_eq!(got.len(), n);
    let small = pattern(2, 1000);
    r.submit(Token(2), Op::send(a, small.clone())).unwrap();
    assert_eq!(
        r.completions().count(),
        0,
        "the send after a short one waits for the next wait"
    );
    let c = wait_for(r, Token(2), &mut Vec::new());
    assert_eq!(c.result.unwrap(), small.len());
    drain(b, &mut got);
    assert_eq!(got[..n], big[..n]);
    assert_eq!(got[n..], small[..]);
    // The next turn's sends are tried at submit again.
    r.submit(Token(3), Op::send(a, small.clone())).unwrap();
    let third: Vec<_> = r.completions().collect();
    assert_eq!(
        third.len(),
        1,
        "tried at submit once the socket took a send"
    );
    assert_eq!(*third[0].result.as_ref().unwrap(), small.len());
    close(a);
    close(b);
}

/// The flag a short send leaves is the descriptor's, not its number's: a
/// socket closed through the reactor in the same turn and a new one with
/// the same number sends at once.
fn a_reused_descriptor_number_sends_at_once(r: &mut Reactor) {
    let (a, b) = socketpair();
    r.submit(Token(1), Op::send(a, pattern(1, 16 << 20)))
        .unwrap();
    let n = *r.completions().next().unwrap().result.as_ref().unwrap();
    assert!(n < 16 << 20, "a short send: {n}");
    r.submit(Token(2), Op::close(a)).unwrap();
    assert!(r.completions().next().unwrap().result.is_ok());
    let (c, d) = socketpair();
    assert_eq!(c, a, "the lowest free number is reused");
    r.submit(Token(3), Op::send(c, pattern(2, 1000))).unwrap();
    let sent: Vec<_> = r.completions().collect();
    assert_eq!(sent.len(), 1, "tried at submit");
    assert_eq!(*sent[0].result.as_ref().unwrap(), 1000);
    for fd in [b, c, d] {
        close(fd);
    }
}

#[test]
fn a_reused_descriptor_number_sends_at_once_epoll() {
    serial(BackendKind::Epoll, a_reused_descriptor_number_sends_at_once);
}

#[test]
fn a_reused_descriptor_number_sends_at_once_poll() {
    serial(BackendKind::Poll, a_reused_descriptor_number_sends_at_once);
}

#[test]
fn after_a_short_send_the_next_waits_for_writability_epoll() {
    serial(
        BackendKind::Epoll,
        after_a_short_send_the_next_waits_for_writability,
    );
}

#[test]
fn after_a_short_send_the_next_waits_for_writability_poll() {
    serial(
        BackendKind::Poll,
        after_a_short_send_the_next_waits_for_writability,
    );
}

#[test]
fn one_wait_takes_every_full_buffer_epoll() {
    serial(BackendKind::Epoll, one_wait_takes_every_full_buffer);
}

#[test]
fn one_wait_takes_every_full_buffer_poll() {
    serial(BackendKind::Poll, one_wait_takes_every_full_buffer);
}
