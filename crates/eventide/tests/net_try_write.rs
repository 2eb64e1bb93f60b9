//! `try_write` (libuv's `uv_try_write`) on every backend: it writes what
//! the kernel takes now and queues nothing; it never lets bytes overtake
//! queued writes; it says `EAGAIN` (`WouldBlock`) when nothing can go, and
//! `EPIPE`, `Stale` or the kernel's error otherwise; with `write` for the
//! rest, the bytes arrive whole and in order.

mod util;

use std::cell::{Cell, RefCell};
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use eventide::net::{ListenOptions, TcpListener, TcpStream};
use eventide::{Error, Loop};
use util::{Trace, run_within};

const LIMIT: Duration = Duration::from_secs(30);

/// The byte at `offset` of the test stream.
fn byte_at(offset: usize) -> u8 {
    (offset.wrapping_mul(31) ^ (offset >> 11)) as u8
}

fn chunk_at(offset: usize, len: usize) -> Vec<u8> {
    (offset..offset + len).map(byte_at).collect()
}

/// A listener whose accepted stream goes to `on_stream`.
fn server(
    lp: &mut Loop,
    on_stream: impl Fn(&mut Loop, TcpStream) + 'static,
) -> (TcpListener, SocketAddr) {
    let server = lp
        .tcp_listen(
            "127.0.0.1:0".parse().unwrap(),
            ListenOptions::default(),
            move |lp, accepted| on_stream(lp, accepted.expect("accepted")),
        )
        .expect("listen");
    let addr = server.local_addr(lp).expect("its address");
    (server, addr)
}

/// Collects what a stream receives, and closes it at its end.
fn collect(lp: &mut Loop, stream: TcpStream, into: &Rc<RefCell<Vec<u8>>>, ended: &Rc<Cell<bool>>) {
    let (into, ended) = (Rc::clone(into), Rc::clone(ended));
    stream.read_start(
        lp,
        move |_, _, data| into.borrow_mut().extend_from_slice(data),
        move |lp, stream, end| {
            end.expect("a clean end");
            ended.set(true);
            stream.close(lp);
        },
    );
}

fn assert_again(result: eventide::Result<usize>, when: &str) {
    match result {
        Err(error) => {
            assert_eq!(error.kind(), ErrorKind::WouldBlock, "{when}: {error}");
            assert_eq!(error.code(), Some("EAGAIN"), "{when}");
            assert_eq!(error.to_string(), "write EAGAIN", "{when}");
        }
        Ok(n) => panic!("{when}: wrote {n} bytes, expected EAGAIN"),
    }
}

/// `try_write`, then `write` of what it did not take (as the libuv
/// anchor's `write_all`): the bytes `try_write` took.
fn write_all(lp: &mut Loop, stream: TcpStream, data: &[u8]) -> usize {
    let sent = match stream.try_write(lp, data) {
        Ok(sent) => sent,
        Err(error) => {
            assert_eq!(error.kind(), ErrorKind::WouldBlock, "{error}");
            0
        }
    };
    if sent < data.len() {
        stream.write(lp, data[sent..].to_vec(), |_, written| {
            written.expect("written");
        });
    }
    sent
}

/// While connecting it is `EAGAIN`; once connected a small message goes
/// whole in the call, with no callback; an empty one is `Ok(0)`; behind a
/// queued write it is `EAGAIN` until that write's callback, and the peer
/// gets every byte in the order of the calls.
fn writes_now_and_never_overtakes_the_queue(lp: &mut Loop) {
    let got = Rc::new(RefCell::new(Vec::new()));
    let ended = Rc::new(Cell::new(false));
    let (g, e) = (Rc::clone(&got), Rc::clone(&ended));
    let (listener, addr) = server(lp, move |lp, stream| collect(lp, stream, &g, &e));
    let trace = Trace::default();
    let t = trace.clone();
    let client = lp
        .tcp_connect(addr, move |lp, connected| {
            let client = connected.expect("connected");
            assert_eq!(client.try_write(lp, b"").expect("empty"), 0);
            let n = write_all(lp, client, b"first ");
            t.log(format!("try_write took {n}"));
            // A big queued write, then try_write behind it: EAGAIN.
            let t2 = t.clone();
            client.write(lp, chunk_at(0, 256 << 10), move |lp, written| {
                written.expect("written");
                t2.log("written");
                let n = write_all(lp, client, b" last");
                t2.log(format!("try_write took {n}"));
                client.end(lp);
                listener.close(lp);
            });
            assert_again(client.try_write(lp, b"overtaking"), "behind a queued write");
            t.log("queued");
        })
        .unwrap();
    assert_again(client.try_write(lp, b"early"), "while connecting");
    run_within(lp, LIMIT);
    trace.assert(&["try_write took 6", "queued", "written", "try_write took 5"]);
    assert!(ended.get(), "the peer saw the end");
    let got = got.borrow();
    let mut want = b"first ".to_vec();
    want.extend(chunk_at(0, 256 << 10));
    want.extend_from_slice(b" last");
    assert_eq!(got.len(), want.len());
    assert!(*got == want, "the bytes arrived changed or out of order");
}

/// A peer that does not read: `try_write` takes what the kernel's
/// buffers hold, then says `EAGAIN`, queueing nothing; once the peer
/// reads, every byte written (and only those) arrives.
fn a_full_kernel_buffer_is_eagain_and_loses_nothing(lp: &mut Loop) {
    let peer: Rc<Cell<Option<TcpStream>>> = Rc::default();
    let p = Rc::clone(&peer);
    let (listener, addr) = server(lp, move |_, stream| p.set(Some(stream)));
    let written = Rc::new(Cell::new(0usize));
    let full = Rc::new(Cell::new(false));
    let (w, f) = (Rc::clone(&written), Rc::clone(&full));
    lp.tcp_connect(addr, move |lp, connected| {
        let client = connected.expect("connected");
        let mut calls = 0;
        loop {
            calls += 1;
            assert!(calls < 100_000, "the kernel never filled up");
            let at = w.get();
            match client.try_write(lp, &chunk_at(at, 64 << 10)) {
                Ok(n) => {
                    assert!(n > 0 && n <= 64 << 10, "wrote {n}");
                    w.set(at + n);
                }
                Err(error) => {
                    assert_eq!(error.kind(), ErrorKind::WouldBlock, "{error}");
                    break;
                }
            }
        }
        assert_eq!(client.write_queue_size(lp), 0, "try_write queued bytes");
        f.set(true);
        client.end(lp);
    })
    .unwrap();
    // Once the writer is full and the peer accepted, the peer reads.
    let got = Rc::new(RefCell::new(Vec::new()));
    let ended = Rc::new(Cell::new(false));
    let (g, e) = (Rc::clone(&got), Rc::clone(&ended));
    lp.set_interval(Duration::from_millis(5), move |lp, id| {
        if !full.get() {
            return;
        }
        let Some(peer) = peer.get() else { return };
        lp.clear_timer(id);
        listener.close(lp);
        collect(lp, peer, &g, &e);
    });
    run_within(lp, LIMIT);
    assert!(ended.get(), "the peer saw the end");
    let written = written.get();
    assert!(written > 0, "nothing was written");
    let got = got.borrow();
    assert_eq!(got.len(), written);
    assert!(*got == chunk_at(0, written), "the bytes arrived changed");
}

/// After `end`, `EPIPE`; after close, `Stale`; neither queues a thing.
fn after_end_epipe_after_close_stale(lp: &mut Loop) {
    let (listener, addr) = server(lp, |lp, stream| {
        stream.read_start(
            lp,
            |_, _, _| {},
            |lp, stream, _| {
                stream.close(lp);
            },
        );
    });
    let trace = Trace::default();
    let t = trace.clone();
    lp.tcp_connect(addr, move |lp, connected| {
        let client = connected.expect("connected");
        client.end(lp);
        let error = client.try_write(lp, b"late").unwrap_err();
        assert_eq!(error.code(), Some("EPIPE"));
        assert_eq!(error.to_string(), "write EPIPE");
        t.log("epipe");
        client.close(lp);
        let error = client.try_write(lp, b"closed").unwrap_err();
        assert!(matches!(error, Error::Stale { .. }), "{error:?}");
        t.log("stale");
        listener.close(lp);
    })
    .unwrap();
    run_within(lp, LIMIT);
    trace.assert(&["epipe", "stale"]);
}

/// A pipe: nonblocking, it writes now; with its description switched to
/// blocking mode (by another process sharing it, say), `EAGAIN`: a write
/// could block the loop. The reader gets exactly the bytes written.
fn a_pipe_in_blocking_mode_is_eagain(lp: &mut Loop) {
    let (r, w) = lp.pipe_pair().unwrap();
    let got = Rc::new(RefCell::new(Vec::new()));
    let g = Rc::clone(&got);
    r.read_start(
        lp,
        move |_, _, data| g.borrow_mut().extend_from_slice(data),
        |lp, r, end| {
            end.expect("a clean end");
            r.close(lp);
        },
    );
    assert_eq!(w.try_write(lp, b"now ").unwrap(), 4);
    let fd = w.raw_fd(lp).unwrap();
    // SAFETY: F_GETFL/F_SETFL on the pipe's own open descriptor.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
    }
    assert_again(w.try_write(lp, b"blocking"), "a blocking pipe");
    // SAFETY: as above.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    assert_eq!(w.try_write(lp, b"again").unwrap(), 5);
    w.end(lp);
    run_within(lp, LIMIT);
    assert_eq!(&got.borrow()[..], b"now again");
}

on_every_backend!(
    writes_now_and_never_overtakes_the_queue,
    a_full_kernel_buffer_is_eagain_and_loses_nothing,
    after_end_epipe_after_close_stale,
    a_pipe_in_blocking_mode_is_eagain,
);
