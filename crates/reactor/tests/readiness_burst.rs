//! The readiness backends' multishot reads in bursts (issue 13, W12): when
//! a descriptor holds several buffers' worth, one wait delivers them all
//! (read after read while each fills its buffer, as libuv's `uv__read`),
//! not one buffer per wait. A short read ends the burst.
//!
//! io_uring is not concerned (its reads are the kernel's); the cases run on
//! the epoll and polling backends.

#![cfg(target_os = "linux")]

mod util;

use eventide_reactor::{BackendKind, Op, Reactor, Token};
use std::os::fd::RawFd;
use util::*;

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

/// Writes all of `data` to the nonblocking `fd` (it has room).
fn write_all(fd: RawFd, data: &[u8]) {
    let mut at = 0;
    while at < data.len() {
        // SAFETY: the pointer and length describe the rest of `data`.
        let n = unsafe { libc::write(fd, data[at..].as_ptr().cast(), data.len() - at) };
        assert!(n > 0, "write: {}", std::io::Error::last_os_error());
        at += n as usize;
    }
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

#[test]
fn one_wait_takes_every_full_buffer_epoll() {
    run(BackendKind::Epoll, one_wait_takes_every_full_buffer);
}

#[test]
fn one_wait_takes_every_full_buffer_poll() {
    run(BackendKind::Poll, one_wait_takes_every_full_buffer);
}
