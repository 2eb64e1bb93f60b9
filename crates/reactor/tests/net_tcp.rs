//! Conformance: TCP over 127.0.0.1, once per compiled backend.

mod util;

use eventide_reactor::{Completion, Op, Reactor, Shutdown, Token};
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
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
);

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
