//! Receives on every backend in the cases where an edge-triggered
//! registration (the epoll backend's, for a socket whose one waiter is its
//! multishot receive) could miss what is already there: nothing arrives
//! after the data, so no edge comes, and the receive must still get it.
//!
//! - The data and the peer's end arrive together, between two waits:
//!   more than one turn's burst of full buffers, then a short one, then
//!   the end. A short read drains the data but not the end, which stays
//!   readable with no edge to come (this case hung with edge-triggering
//!   that took a short read for "drained").
//! - A receive cancelled with data still queued, then a new receive
//!   submitted with no new data arriving: it must read what is there.

mod util;

use eventide_reactor::{Completion, Op, Reactor, Token};
use std::os::fd::RawFd;
use std::time::Duration;
use util::*;

/// The reactor's multishot buffer size (`MULTI_BUF_SIZE`).
const CHUNK: usize = 16 * 1024;

/// A connected TCP pair over 127.0.0.1, (receiving end, sending end),
/// both nonblocking, with 4 MiB socket buffers.
fn big_tcp_pair(r: &mut Reactor) -> (RawFd, RawFd) {
    let (client, server) = tcp_pair(r);
    for fd in [client, server] {
        for opt in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
            let size: libc::c_int = 4 << 20;
            // SAFETY: the option value is a live c_int of the size given.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    opt,
                    (&raw const size).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
    }
    (server, client)
}

/// Writes all of `data` to `fd` (it has room), or panics.
fn write_all(fd: RawFd, data: &[u8]) {
    let mut at = 0;
    while at < data.len() {
        // SAFETY: the pointer and length describe the rest of `data`.
        let n = unsafe { libc::write(fd, data[at..].as_ptr().cast(), data.len() - at) };
        assert!(n > 0, "write: {}", std::io::Error::last_os_error());
        at += n as usize;
    }
}

/// Waits (bounded) until `token`'s receive has delivered `len` bytes and,
/// if `end`, its end; returns the bytes. Recycles the buffers.
fn receive(r: &mut Reactor, token: Token, len: usize, end: bool) -> Vec<u8> {
    let mut got = Vec::new();
    let mut ended = false;
    let mut waits = 0;
    while got.len() < len || (end && !ended) {
        waits += 1;
        assert!(
            waits <= 100,
            "stuck at {} of {len} bytes (end seen: {ended})",
            got.len()
        );
        r.wait(Some(Duration::from_millis(100))).unwrap();
        let done: Vec<Completion> = r.completions().collect();
        for c in done {
            assert_eq!(c.token, token);
            match c.result.expect("the receive") {
                0 => {
                    assert!(!c.more, "the end is the last completion");
                    ended = true;
                }
                n => {
                    let b = c.buf.expect("a chunk");
                    got.extend_from_slice(&b[..n]);
                    r.recycle(b);
                }
            }
        }
    }
    got
}

/// A receive armed and drained; then forty buffers' worth (more than one
/// turn's burst of 32 full ones) and the end arrive before the next wait:
/// every byte, then the end.
fn data_and_end_already_in_all_arrive(r: &mut Reactor) {
    let (rd, wr) = big_tcp_pair(r);
    // Armed first, and drained (nothing there yet).
    r.submit(Token(1), Op::recv_multi(rd)).unwrap();
    r.wait(Some(Duration::from_millis(20))).unwrap();
    assert_eq!(r.completions().count(), 0);
    // Then all of it, end included, before the next wait: one event.
    let data = pattern(3, 40 * CHUNK + 100);
    write_all(wr, &data);
    // SAFETY: `wr` is open; SHUT_WR sends the end after the data.
    assert_eq!(unsafe { libc::shutdown(wr, libc::SHUT_WR) }, 0);
    std::thread::sleep(Duration::from_millis(20));
    let got = receive(r, Token(1), data.len(), true);
    assert!(got == data, "the bytes arrived changed");
    close(rd);
    close(wr);
}

/// A receive cancelled with data still queued; then, with nothing more
/// arriving, a new receive gets what is there.
fn a_new_receive_reads_what_is_already_there(r: &mut Reactor) {
    let (rd, wr) = big_tcp_pair(r);
    let first = pattern(0, 1000);
    write_all(wr, &first);
    r.submit(Token(1), Op::recv_multi(rd)).unwrap();
    assert!(receive(r, Token(1), first.len(), false) == first);
    assert!(r.cancel(Token(1)), "the receive was armed");
    // The cancel's completion; nothing else.
    let mut waits = 0;
    loop {
        waits += 1;
        assert!(waits <= 100, "no cancel completion");
        r.wait(Some(Duration::from_millis(50))).unwrap();
        let done: Vec<Completion> = r.completions().collect();
        if done.iter().any(|c| c.token == Token(1) && !c.more) {
            for c in done {
                if let Some(b) = c.buf {
                    r.recycle(b);
                }
            }
            break;
        }
    }
    // Data arrives with no receive armed; a few turns pass.
    let second = pattern(1000, 3000);
    write_all(wr, &second);
    for _ in 0..3 {
        r.wait(Some(Duration::from_millis(20))).unwrap();
        assert_eq!(r.completions().count(), 0, "nothing is armed");
    }
    // Nothing more arrives: the new receive must find the 3,000 bytes.
    r.submit(Token(2), Op::recv_multi(rd)).unwrap();
    let got = receive(r, Token(2), second.len(), false);
    assert!(got == second, "the bytes arrived changed");
    assert!(r.cancel(Token(2)));
    let _ = receive(r, Token(2), 0, false);
    close(rd);
    close(wr);
}

conformance!(
    data_and_end_already_in_all_arrive,
    a_new_receive_reads_what_is_already_there,
);
