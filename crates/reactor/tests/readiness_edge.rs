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
//! - The same over a Unix domain socket pair, with the data and the end
//!   already there before the receive is submitted. io_uring's multishot
//!   receive loses the end on AF_UNIX (all the bytes, then nothing: seen
//!   on 6.18 once more than 32 buffers' worth waited; liburing issue
//!   1549 reports it racing even for one small send), so the io_uring
//!   backend receives on Unix sockets in single-shot rounds.

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
    big_buffers(&[client, server]);
    (server, client)
}

/// 4 MiB send and receive buffers on each of `fds`.
fn big_buffers(fds: &[RawFd]) {
    for &fd in fds {
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
}

/// A connected Unix domain stream pair (receiving end, sending end), both
/// nonblocking, with 4 MiB socket buffers.
fn big_unix_pair() -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors socketpair writes.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(rc, 0, "socketpair: {}", std::io::Error::last_os_error());
    big_buffers(&fds);
    (fds[0], fds[1])
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

/// Over a Unix domain pair: `chunks` buffers' worth and the end written
/// before the receive is submitted, then (`armed_first`) or before: every
/// byte, then the end.
fn unix_data_and_end(r: &mut Reactor, chunks: usize, armed_first: bool) {
    let (rd, wr) = big_unix_pair();
    if armed_first {
        r.submit(Token(1), Op::recv_multi(rd)).unwrap();
        r.wait(Some(Duration::from_millis(20))).unwrap();
        assert_eq!(r.completions().count(), 0);
    }
    let data = pattern(7, chunks * CHUNK + 100);
    write_all(wr, &data);
    // SAFETY: `wr` is open; SHUT_WR sends the end after the data.
    assert_eq!(unsafe { libc::shutdown(wr, libc::SHUT_WR) }, 0);
    if !armed_first {
        r.submit(Token(1), Op::recv_multi(rd)).unwrap();
    }
    let got = receive(r, Token(1), data.len(), true);
    assert!(got == data, "the bytes arrived changed");
    // Through the reactor: the numbers are reused by the next round, and
    // a backend must forget what it knew of them.
    for fd in [rd, wr] {
        run_op(r, Token(2), Op::close(fd)).result.expect("close");
    }
}

/// A burst longer than io_uring's 32 multishot retries, already there.
fn unix_burst_and_end_before_the_receive_all_arrive(r: &mut Reactor) {
    unix_data_and_end(r, 40, false);
}

/// The same with the receive armed first.
fn unix_burst_and_end_after_the_receive_all_arrive(r: &mut Reactor) {
    unix_data_and_end(r, 40, true);
}

/// One small send and the end, many times over (the race liburing's
/// issue 1549 reports).
fn unix_small_send_and_end_arrive_every_time(r: &mut Reactor) {
    for _ in 0..200 {
        unix_data_and_end(r, 0, true);
    }
}

conformance!(
    data_and_end_already_in_all_arrive,
    a_new_receive_reads_what_is_already_there,
    unix_burst_and_end_before_the_receive_all_arrive,
    unix_burst_and_end_after_the_receive_all_arrive,
    unix_small_send_and_end_arrive_every_time,
);
