//! Conformance: TCP over 127.0.0.1, once per compiled backend.

mod util;

use eventide_reactor::{
    BackendKind, Completion, Op, RECV_MULTI_LEND_LIMIT, Reactor, Shutdown, Token,
};
use std::io::{ErrorKind, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};
use util::*;

conformance!(
    accepted_connection_echoes_bytes_both_ways,
    transfer_of_64_mib_with_partial_writes_arrives_intact,
    connect_to_a_closed_port_is_connection_refused,
    peer_reset_is_connection_reset,
    cancel_of_a_pending_accept_completes_cancelled,
    cancel_of_a_pending_recv_returns_the_buffer,
    close_cancels_operations_pending_on_the_descriptor,
    multishot_accept_and_recv_deliver_every_connection_and_byte,
    shutdown_write_is_seen_by_the_peer_as_end_of_stream,
    a_token_in_flight_cannot_be_submitted_twice,
    recv_multi_pauses_at_the_lend_limit_and_resumes_on_recycle,
    close_ends_a_recv_multi_paused_at_the_lend_limit,
    a_reset_socket_nobody_waits_on_does_not_wake_every_wait,
    an_operation_on_a_negative_descriptor_is_a_bad_descriptor_error,
    close_with_a_receive_pending_releases_the_socket,
    send_owned_sends_the_owners_bytes_in_place_and_hands_the_owner_back,
    close_hands_back_the_owner_of_a_send_it_cancels,
);

/// The io_uring backend without a provided-buffer ring (the fallback for
/// kernels without multishot recv): `recv_multi` runs as re-armed
/// single-shot receives. Runs the affected cases in a child process with
/// `EVENTIDE_URING_NO_PBUF` set, since the switch is read at setup.
#[test]
fn uring_without_provided_buffers_passes_the_recv_multi_cases() {
    if !BackendKind::compiled().contains(&BackendKind::Uring) {
        eprintln!("skipped: the uring backend is not compiled in");
        return;
    }
    if std::env::var(eventide_reactor::BACKEND_ENV).is_ok_and(|v| v == "poll" || v == "epoll") {
        eprintln!("skipped: EVENTIDE_BACKEND excludes the uring backend");
        return;
    }
    let out = run_child(
        "child_uring_without_provided_buffers",
        &[("EVENTIDE_URING_NO_PBUF", "1")],
    );
    assert!(
        out.contains("no provided buffers") || out.contains("skipped"),
        "{out}"
    );
}

#[test]
#[ignore = "child entry point: run by uring_without_provided_buffers_passes_the_recv_multi_cases"]
fn child_uring_without_provided_buffers() {
    assert!(in_child());
    let Some(mut r) = reactor_for(BackendKind::Uring) else {
        return;
    };
    let info = r.uring_info().expect("io_uring details");
    assert!(
        !info.multishot_recv && info.provided_buffers == 0,
        "{info:?}"
    );
    eprintln!("no provided buffers: {info:?}");
    accepted_connection_echoes_bytes_both_ways(&mut r);
    multishot_accept_and_recv_deliver_every_connection_and_byte(&mut r);
    recv_multi_pauses_at_the_lend_limit_and_resumes_on_recycle(&mut r);
    close_ends_a_recv_multi_paused_at_the_lend_limit(&mut r);
}

fn accepted_connection_echoes_bytes_both_ways(r: &mut Reactor) {
    let (c, s) = tcp_pair(r);
    for round in 0..50u32 {
        let msg = pattern(round as usize, 64);
        let sent = run_op(r, Token(1), Op::send(c, msg.clone()));
        assert_eq!(sent.result.unwrap(), 64);
        assert_eq!(
            sent.buf.as_deref(),
            Some(&msg[..]),
            "send hands its buffer back"
        );
        let mut got = Vec::new();
        while got.len() < 64 {
            let rc = run_op(r, Token(2), Op::recv(s, Vec::with_capacity(4096)));
            let n = rc.result.unwrap();
            assert!(n > 0, "unexpected end of stream");
            got.extend_from_slice(&rc.buf.unwrap());
        }
        assert_eq!(got, msg);
        let echo = run_op(r, Token(3), Op::send(s, got));
        assert_eq!(echo.result.unwrap(), 64);
        let mut back = Vec::with_capacity(64);
        while back.len() < 64 {
            let rc = run_op(r, Token(4), Op::recv(c, back));
            assert!(rc.result.unwrap() > 0);
            back = rc.buf.unwrap();
        }
        assert_eq!(back, msg);
    }
    close(c);
    close(s);
}

fn transfer_of_64_mib_with_partial_writes_arrives_intact(r: &mut Reactor) {
    const TOTAL: usize = 64 << 20;
    const CHUNK: usize = 4 << 20;
    let (c, s) = tcp_pair(r);
    // Byte i of the stream is i mod 251 (a prime, so chunk edges never align).
    let chunk0: Vec<u8> = (0..CHUNK + 251).map(|i| (i % 251) as u8).collect();
    let (mut sent, mut received, mut partial) = (0usize, 0usize, 0usize);
    let mut send_buf = Some(chunk0[..CHUNK].to_vec());
    let mut send_from = 0usize;
    let mut recv_buf = Some(Vec::with_capacity(256 << 10));
    let (mut send_busy, mut recv_busy) = (false, false);
    let deadline = std::time::Instant::now() + LIMIT * 3;
    while received < TOTAL {
        assert!(
            std::time::Instant::now() < deadline,
            "transfer timed out at {received}"
        );
        if !send_busy && sent < TOTAL {
            let b = send_buf.take().unwrap();
            r.submit(Token(10), Op::send_from(c, b, send_from)).unwrap();
            send_busy = true;
        }
        if !recv_busy {
            let mut b = recv_buf.take().unwrap();
            b.clear();
            r.submit(Token(11), Op::recv(s, b)).unwrap();
            recv_busy = true;
        }
        r.wait(Some(std::time::Duration::from_millis(500))).unwrap();
        let done: Vec<Completion> = r.completions().collect();
        for cpl in done {
            match cpl.token {
                Token(10) => {
                    send_busy = false;
                    let n = cpl.result.expect("send");
                    let b = cpl.buf.expect("send buffer back");
                    sent += n;
                    send_from += n;
                    if send_from < b.len() {
                        partial += 1;
                        send_buf = Some(b);
                    } else {
                        send_from = 0;
                        let off = sent % 251;
                        send_buf = Some(chunk0[off..off + CHUNK.min(TOTAL - sent)].to_vec());
                    }
                }
                Token(11) => {
                    recv_busy = false;
                    let n = cpl.result.expect("recv");
                    assert!(n > 0, "early end of stream at {received}");
                    let b = cpl.buf.expect("recv buffer back");
                    let off = received % 251;
                    assert!(
                        b[..] == chunk0[off..off + n],
                        "bytes differ at stream offset {received}"
                    );
                    received += n;
                    recv_buf = Some(b);
                }
                t => panic!("unexpected token {t:?}"),
            }
        }
    }
    assert_eq!(sent, TOTAL);
    assert!(
        partial > 0,
        "a 4 MiB send into a loopback socket should be partial at least once"
    );
    eprintln!("64 MiB moved, {partial} partial writes");
    close(c);
    close(s);
}

fn connect_to_a_closed_port_is_connection_refused(r: &mut Reactor) {
    let addr = {
        let (l, a) = listener();
        drop(l);
        a
    };
    let c = tcp_socket(&addr);
    let done = run_op(r, Token(1), Op::connect(c, addr));
    assert_eq!(
        done.result.unwrap_err().kind(),
        ErrorKind::ConnectionRefused
    );
    close(c);
}

fn peer_reset_is_connection_reset(r: &mut Reactor) {
    let (c, s) = tcp_pair(r);
    // SO_LINGER 0 then close: the peer gets a RST.
    // SAFETY: `c` is a socket this test owns; the Socket takes it over.
    let sock = unsafe { <socket2::Socket as std::os::fd::FromRawFd>::from_raw_fd(c) };
    sock.set_linger(Some(std::time::Duration::ZERO)).unwrap();
    let _ = run_op(r, Token(1), Op::send(s, vec![1; 16])); // unread data in flight
    drop(sock);
    let done = run_op(r, Token(2), Op::recv(s, Vec::with_capacity(64)));
    assert_eq!(done.result.unwrap_err().kind(), ErrorKind::ConnectionReset);
    assert!(done.buf.is_some(), "a failed recv hands its buffer back");
    close(s);
}

fn cancel_of_a_pending_accept_completes_cancelled(r: &mut Reactor) {
    let (l, _) = listener();
    r.submit(Token(7), Op::accept(l.as_raw_fd())).unwrap();
    r.wait(Some(std::time::Duration::from_millis(20))).unwrap();
    assert_eq!(r.ready(), 0, "nothing to accept yet");
    assert!(r.cancel(Token(7)));
    let done = wait_for(r, Token(7), &mut Vec::new());
    assert!(done.is_cancelled(), "got {:?}", done.result);
    assert!(!r.cancel(Token(7)), "a finished token is not in flight");
    assert_eq!(r.in_flight(), 0);
}

fn cancel_of_a_pending_recv_returns_the_buffer(r: &mut Reactor) {
    let (c, s) = tcp_pair(r);
    let mut buf = Vec::with_capacity(1000);
    buf.extend_from_slice(b"kept");
    r.submit(Token(5), Op::recv(s, buf)).unwrap();
    r.wait(Some(std::time::Duration::from_millis(20))).unwrap();
    assert!(r.cancel(Token(5)));
    let done = wait_for(r, Token(5), &mut Vec::new());
    assert!(done.is_cancelled(), "got {:?}", done.result);
    let buf = done.buf.expect("the buffer comes back");
    assert_eq!(&buf[..], b"kept");
    assert_eq!(buf.capacity(), 1000);
    // The connection still works after the cancel.
    run_op(r, Token(6), Op::send(c, b"after".to_vec()))
        .result
        .unwrap();
    let got = run_op(r, Token(8), Op::recv(s, Vec::with_capacity(16)));
    assert_eq!(got.buf.unwrap(), b"after");
    close(c);
    close(s);
}

fn close_cancels_operations_pending_on_the_descriptor(r: &mut Reactor) {
    let (c, s) = tcp_pair(r);
    r.submit(Token(1), Op::recv(s, Vec::with_capacity(64)))
        .unwrap();
    r.wait(Some(std::time::Duration::from_millis(10))).unwrap();
    r.submit(Token(2), Op::close(s)).unwrap();
    let mut stash = Vec::new();
    let closed = wait_for(r, Token(2), &mut stash);
    closed.result.expect("close");
    let recv = wait_for(r, Token(1), &mut stash);
    assert!(recv.is_cancelled(), "got {:?}", recv.result);
    assert!(recv.buf.is_some());
    assert_eq!(r.in_flight(), 0);
    close(c);
}

fn multishot_accept_and_recv_deliver_every_connection_and_byte(r: &mut Reactor) {
    const CONNS: usize = 8;
    let (l, addr) = listener();
    r.submit(Token(100), Op::accept_multi(l.as_raw_fd()))
        .unwrap();
    let clients: Vec<_> = (0..CONNS).map(|_| tcp_socket(&addr)).collect();
    for (i, &c) in clients.iter().enumerate() {
        r.submit(Token(200 + i as u64), Op::connect(c, addr))
            .unwrap();
    }
    let mut servers = Vec::new();
    let mut connected = 0;
    let mut got = vec![Vec::new(); CONNS];
    let mut ended = 0;
    let deadline = std::time::Instant::now() + LIMIT;
    let per_conn = 100_000usize;
    while ended < CONNS {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out: {connected} connected, {ended} ended"
        );
        r.wait(Some(std::time::Duration::from_millis(200))).unwrap();
        let done: Vec<Completion> = r.completions().collect();
        for cpl in done {
            match cpl.token.0 {
                100 => {
                    assert!(cpl.more, "multishot accept stays armed");
                    let fd = cpl.fd().expect("accepted");
                    let i = servers.len() as u64;
                    servers.push(fd);
                    r.submit(Token(400 + i), Op::recv_multi(fd)).unwrap();
                }
                t @ 200..300 => {
                    cpl.result.expect("connect");
                    connected += 1;
                    let c = clients[(t - 200) as usize];
                    let data = pattern(t as usize, per_conn);
                    r.submit(Token(300 + t - 200), Op::send(c, data)).unwrap();
                }
                t @ 300..400 => {
                    let n = cpl.result.expect("send");
                    let i = (t - 300) as usize;
                    let b = cpl.buf.unwrap();
                    if n < b.len() {
                        r.submit(Token(t), Op::send_from(clients[i], b, n)).unwrap();
                    } else {
                        r.submit(
                            Token(500 + i as u64),
                            Op::shutdown(clients[i], Shutdown::Write),
                        )
                        .unwrap();
                    }
                }
                t @ 400..500 => {
                    let i = (t - 400) as usize;
                    match cpl.result {
                        Ok(0) => {
                            assert!(!cpl.more, "end of stream is final");
                            ended += 1;
                        }
                        Ok(n) => {
                            assert!(cpl.more);
                            let b = cpl.buf.unwrap();
                            assert_eq!(b.len(), n);
                            got[i].extend_from_slice(&b);
                            r.recycle(b);
                        }
                        Err(e) => panic!("recv_multi: {e}"),
                    }
                }
                500..600 => cpl.result.expect("shutdown").eq(&0).then_some(()).unwrap(),
                t => panic!("unexpected token {t}"),
            }
        }
    }
    // Which server fd belongs to which client is unknown: compare as sets.
    let mut want: Vec<Vec<u8>> = (0..CONNS).map(|i| pattern(200 + i, per_conn)).collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    assert!(r.cancel(Token(100)));
    let end = wait_for(r, Token(100), &mut Vec::new());
    assert!(end.is_cancelled() && !end.more, "got {:?}", end.result);
    for fd in clients.into_iter().chain(servers) {
        close(fd);
    }
}

fn shutdown_write_is_seen_by_the_peer_as_end_of_stream(r: &mut Reactor) {
    let (c, s) = tcp_pair(r);
    run_op(r, Token(1), Op::shutdown(c, Shutdown::Write))
        .result
        .unwrap();
    let done = run_op(r, Token(2), Op::recv(s, Vec::with_capacity(8)));
    assert_eq!(done.result.unwrap(), 0);
    close(c);
    close(s);
}

fn a_token_in_flight_cannot_be_submitted_twice(r: &mut Reactor) {
    let (l, _) = listener();
    r.submit(Token(1), Op::accept(l.as_raw_fd())).unwrap();
    let err = r.submit(Token(1), Op::recv(0, vec![7; 3])).unwrap_err();
    assert_eq!(err.error.kind(), ErrorKind::AlreadyExists);
    assert_eq!(
        err.op.into_buf(),
        Some(vec![7; 3]),
        "the refused op comes back whole"
    );
    r.cancel(Token(1));
    assert!(wait_for(r, Token(1), &mut Vec::new()).is_cancelled());
}

/// Bytes a writer thread pushes at a `recv_multi` consumer that recycles
/// nothing: far more than the lend limit's worth (plus io_uring's ring and
/// the socket buffers), so receiving must pause before the end.
const FLOOD: usize = (RECV_MULTI_LEND_LIMIT + 256) * 16 * 1024 + (24 << 20);
const _: () = assert!(FLOOD.is_multiple_of(PERIOD));

/// Starts a writer thread sending `FLOOD` bytes of `pattern` to a
/// connection accepted through the reactor, and a `recv_multi` (token 50)
/// on it. Returns the server fd and the writer.
fn flood(r: &mut Reactor) -> (i32, std::thread::JoinHandle<()>) {
    let (l, addr) = listener();
    let writer = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        // FLOOD is a whole number of periods: write the period repeatedly.
        for _ in 0..FLOOD / PERIOD {
            if s.write_all(period()).is_err() {
                return; // the test closed its end
            }
        }
    });
    let fd = run_op(r, Token(49), Op::accept(l.as_raw_fd()))
        .fd()
        .expect("accepted");
    r.submit(Token(50), Op::recv_multi(fd)).unwrap();
    (fd, writer)
}

/// Receives without recycling until nothing arrives for 300 ms. Returns the
/// buffers held and checks the bytes on the way.
fn receive_until_paused(r: &mut Reactor, got: &mut usize) -> Vec<Vec<u8>> {
    let mut held = Vec::new();
    let deadline = Instant::now() + LIMIT;
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_millis(300) {
        assert!(Instant::now() < deadline, "no pause after {got} bytes");
        r.wait(Some(Duration::from_millis(50))).unwrap();
        for c in r.completions() {
            assert_eq!(c.token, Token(50));
            let n = c.result.expect("recv_multi");
            assert!(c.more && n > 0, "the stream ended before the limit");
            let b = c.buf.expect("a chunk");
            assert!(check_wrapped(&b, *got), "bytes differ at {got}");
            *got += n;
            held.push(b);
            quiet_since = Instant::now();
        }
    }
    held
}

const PERIOD: usize = 1 << 20;

/// The flood repeats `pattern(0, PERIOD)`.
fn period() -> &'static [u8] {
    static P: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    P.get_or_init(|| pattern(0, PERIOD))
}

/// Whether `b` is the flood's bytes from stream offset `at`.
fn check_wrapped(b: &[u8], at: usize) -> bool {
    let p = period();
    let off = at % PERIOD;
    let first = b.len().min(PERIOD - off);
    b[..first] == p[off..off + first] && (first == b.len() || check_wrapped(&b[first..], 0))
}

fn recv_multi_pauses_at_the_lend_limit_and_resumes_on_recycle(r: &mut Reactor) {
    let (fd, writer) = flood(r);
    let mut got = 0;
    let held = receive_until_paused(r, &mut got);
    eprintln!("paused after {got} bytes in {} buffers", held.len());
    assert!(got < FLOOD, "receiving never paused");
    assert!(
        held.len() >= RECV_MULTI_LEND_LIMIT && held.len() <= RECV_MULTI_LEND_LIMIT + 257,
        "{} buffers lent (limit {RECV_MULTI_LEND_LIMIT})",
        held.len()
    );
    assert_eq!(r.in_flight(), 1, "the recv_multi stays armed while paused");
    for b in held {
        r.recycle(b);
    }
    // Now recycle as we go: everything arrives, then the end of stream.
    let deadline = Instant::now() + LIMIT;
    loop {
        assert!(
            Instant::now() < deadline,
            "stuck at {got} of {FLOOD} after recycling"
        );
        r.wait(Some(Duration::from_millis(100))).unwrap();
        let done: Vec<Completion> = r.completions().collect();
        let mut ended = false;
        for c in done {
            match c.result.expect("recv_multi") {
                0 => {
                    assert!(!c.more);
                    ended = true;
                }
                n => {
                    let b = c.buf.unwrap();
                    assert!(check_wrapped(&b, got), "bytes differ at {got}");
                    got += n;
                    r.recycle(b);
                }
            }
        }
        if ended {
            break;
        }
    }
    assert_eq!(got, FLOOD);
    writer.join().unwrap();
    assert_eq!(r.in_flight(), 0);
    close(fd);
}

fn close_ends_a_recv_multi_paused_at_the_lend_limit(r: &mut Reactor) {
    let (fd, writer) = flood(r);
    let mut got = 0;
    let held = receive_until_paused(r, &mut got);
    assert!(got < FLOOD, "receiving never paused");
    r.submit(Token(51), Op::close(fd)).unwrap();
    let mut stash = Vec::new();
    wait_for(r, Token(51), &mut stash).result.expect("close");
    let end = wait_for(r, Token(50), &mut stash);
    assert!(end.is_cancelled() && !end.more, "got {:?}", end.result);
    assert_eq!(r.in_flight(), 0);
    for b in held {
        r.recycle(b);
    }
    writer.join().unwrap();
}

fn a_reset_socket_nobody_waits_on_does_not_wake_every_wait(r: &mut Reactor) {
    let (c, s) = tcp_pair(r);
    // SAFETY: `c` is a socket this test owns; the Socket takes it over.
    let sock = unsafe { <socket2::Socket as std::os::fd::FromRawFd>::from_raw_fd(c) };
    sock.set_linger(Some(Duration::ZERO)).unwrap();
    let _ = run_op(r, Token(1), Op::send(s, vec![1; 16]));
    drop(sock); // RST: `s` is in error and hung up from now on
    let done = run_op(r, Token(2), Op::recv(s, Vec::with_capacity(64)));
    assert!(done.result.is_err(), "got {:?}", done.result);
    // `s` stays open with nobody waiting on it: waits must sleep their
    // timeout (one early return for the readiness that was pending is fine).
    let start = Instant::now();
    for _ in 0..5 {
        assert_eq!(r.wait(Some(Duration::from_millis(40))).unwrap(), 0);
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(150),
        "waits returned early ({took:?}): a dead socket keeps waking the reactor"
    );
    close(s);
}

fn an_operation_on_a_negative_descriptor_is_a_bad_descriptor_error(r: &mut Reactor) {
    let ops = [
        Op::recv(-1, Vec::with_capacity(16)),
        Op::recv_multi(-1),
        Op::send(-1, b"x".to_vec()),
        Op::accept(-1),
        Op::accept_multi(-1),
        Op::poll(-1, eventide_reactor::Interest::READABLE),
        Op::shutdown(-1, Shutdown::Write),
        Op::close(-1),
    ];
    for (i, op) in ops.into_iter().enumerate() {
        let c = run_op(r, Token(50 + i as u64), op);
        let e = c.result.expect_err("a negative descriptor");
        assert_eq!(e.raw_os_error(), Some(libc::EBADF), "op {i}: {e}");
    }
    assert_eq!(r.in_flight(), 0);
}

/// `send_owned`: 8 MiB of an `Rc<[u8]>` go out from where they are (no
/// copy), partial sends continue from the offset, and every completion
/// hands back the same owner (the same bytes, at the same address).
fn send_owned_sends_the_owners_bytes_in_place_and_hands_the_owner_back(r: &mut Reactor) {
    use std::rc::Rc;
    const TOTAL: usize = 8 << 20;
    let (c, s) = tcp_pair(r);
    let bytes: Rc<[u8]> = (0..TOTAL).map(|i| (i % 251) as u8).collect();
    let at = bytes.as_ptr();
    let mut owner: Option<eventide_reactor::SendOwner> = Some(Box::new(Rc::clone(&bytes)));
    let (mut sent, mut received, mut sends) = (0usize, 0usize, 0usize);
    let mut recv_buf = Some(Vec::with_capacity(256 << 10));
    let (mut send_busy, mut recv_busy) = (false, false);
    let deadline = Instant::now() + LIMIT * 3;
    while received < TOTAL {
        assert!(Instant::now() < deadline, "timed out at {received}");
        if !send_busy && sent < TOTAL {
            let o = owner.take().expect("the owner came back");
            r.submit(Token(10), Op::send_owned(c, o, sent)).unwrap();
            send_busy = true;
            sends += 1;
        }
        if !recv_busy {
            let mut b = recv_buf.take().unwrap();
            b.clear();
            r.submit(Token(11), Op::recv(s, b)).unwrap();
            recv_busy = true;
        }
        r.wait(Some(Duration::from_millis(500))).unwrap();
        let done: Vec<Completion> = r.completions().collect();
        for cpl in done {
            match cpl.token {
                Token(10) => {
                    send_busy = false;
                    sent += cpl.result.expect("send");
                    assert!(cpl.buf.is_none(), "an owned send has no Vec to return");
                    let o = cpl.owner.expect("the owner handed back");
                    assert_eq!((*o).as_ref().as_ptr(), at, "the same bytes, not a copy");
                    owner = Some(o);
                }
                Token(11) => {
                    recv_busy = false;
                    let n = cpl.result.expect("recv");
                    assert!(n > 0, "early end of stream at {received}");
                    let b = cpl.buf.expect("recv buffer back");
                    assert!(
                        b[..] == bytes[received..received + n],
                        "bytes differ at stream offset {received}"
                    );
                    received += n;
                    recv_buf = Some(b);
                }
                t => panic!("unexpected token {t:?}"),
            }
        }
    }
    assert_eq!(sent, TOTAL);
    assert!(
        sends > 1,
        "8 MiB into a loopback socket takes several sends"
    );
    drop(owner);
    assert_eq!(Rc::strong_count(&bytes), 1, "the reactor kept no reference");
    close(c);
    close(s);
}

/// A close cancels an owned send stuck on a full socket and hands its
/// owner back: the bytes are released only once the kernel is done.
fn close_hands_back_the_owner_of_a_send_it_cancels(r: &mut Reactor) {
    use std::rc::Rc;
    let (c, s) = tcp_pair(r);
    // Nobody reads `s`: the first 64 MiB send fills both socket buffers
    // and stays in flight (or completes partially: sent again until one
    // stays).
    let bytes: Rc<[u8]> = vec![7u8; 64 << 20].into();
    let mut stash = Vec::new();
    let mut from = 0;
    let deadline = Instant::now() + LIMIT;
    loop {
        assert!(Instant::now() < deadline, "the socket never filled");
        r.submit(
            Token(1),
            Op::send_owned(c, Box::new(Rc::clone(&bytes)), from),
        )
        .unwrap();
        r.wait(Some(Duration::from_millis(50))).unwrap();
        let done: Vec<Completion> = r.completions().collect();
        match done.into_iter().find(|c| c.token == Token(1)) {
            Some(cpl) => from += cpl.result.expect("a partial send"),
            None => break,
        }
    }
    assert_eq!(
        Rc::strong_count(&bytes),
        2,
        "the send in flight holds the owner"
    );
    r.submit(Token(2), Op::close(c)).unwrap();
    let cancelled = wait_for(r, Token(1), &mut stash);
    let _ = wait_for(r, Token(2), &mut stash);
    assert!(
        cancelled.result.is_err() || cancelled.result.as_ref().is_ok_and(|n| *n > 0),
        "cancelled, or a last partial send: {:?}",
        cancelled.result
    );
    let owner = cancelled.owner.expect("the owner handed back");
    assert_eq!((*owner).as_ref().as_ptr(), bytes.as_ptr());
    drop(owner);
    assert_eq!(Rc::strong_count(&bytes), 1);
    assert_eq!(r.in_flight(), 0);
    close(s);
}
