//! A panicking stream or listener callback leaves the loop consistent, on
//! every backend, in both of the loop's modes: with a panic handler (the
//! panic is caught and handed to it), and without one (it unwinds out of
//! `run`, which is then called again). Afterwards the stream goes on:
//! its reader stays, its buffers are recycled, its queued writes, FIN and
//! drain still come, other connections still read.

mod net_support;
mod util;

use net_support::panics::{Mode, boom, run_through_panics};

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::rc::Rc;
use std::thread;
use std::time::Duration;

use eventide::Loop;
use eventide::net::{ListenOptions, TcpListener, TcpStream};

const LIMIT: Duration = Duration::from_secs(60);

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A listener serving `connections` connections with `serve`, then closed.
fn server(
    lp: &mut Loop,
    connections: usize,
    mut serve: impl FnMut(&mut Loop, TcpStream, usize) + 'static,
) -> SocketAddr {
    let me: Rc<Cell<Option<TcpListener>>> = Rc::default();
    let m = Rc::clone(&me);
    let mut n = 0;
    let listener = lp
        .tcp_listen(loopback(), ListenOptions::default(), move |lp, accepted| {
            let stream = accepted.expect("accepted");
            n += 1;
            if n == connections
                && let Some(listener) = m.take()
            {
                listener.close(lp);
            }
            serve(lp, stream, n);
        })
        .unwrap();
    me.set(Some(listener));
    listener.local_addr(lp).unwrap()
}

/// A client sending `total` bytes then its FIN, reading everything back
/// until EOF.
fn echo_client(addr: SocketAddr, total: usize) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let s = StdStream::connect(addr).unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        let mut w = s.try_clone().unwrap();
        let sender = thread::spawn(move || {
            let data: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
            w.write_all(&data).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        });
        let mut back = Vec::new();
        let mut r = s;
        r.read_to_end(&mut back).unwrap();
        sender.join().unwrap();
        back
    })
}

fn pattern(total: usize) -> Vec<u8> {
    (0..total).map(|i| (i % 251) as u8).collect()
}

fn on_data(lp: &mut Loop, mode: Mode) {
    // Connection 1 pings 1,200 single bytes; its `on_data` echoes each,
    // then panics: more chunks than the reactor lends buffers for (1,024),
    // so a buffer not recycled stalls it. Connection 2 echoes 1 MiB
    // meanwhile.
    let rounds = 1200;
    let addr = server(lp, 2, |lp, stream, _| {
        stream.read_start(
            lp,
            |lp, stream, data| {
                stream.write(lp, data.to_vec(), |_, _| {});
                if data == b"p" {
                    boom();
                }
            },
            |_, _, _| {},
        );
    });
    let pinger = thread::spawn(move || {
        let mut s = StdStream::connect(addr).unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        let mut b = [0u8; 1];
        for _ in 0..rounds {
            s.write_all(b"p").unwrap();
            s.read_exact(&mut b).unwrap();
            assert_eq!(&b, b"p");
        }
        s.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        rest
    });
    let other = echo_client(addr, 1 << 20);
    let panics = run_through_panics(lp, mode);
    assert_eq!(pinger.join().unwrap(), b"", "then EOF");
    assert_eq!(other.join().unwrap(), pattern(1 << 20));
    assert_eq!(panics, rounds);
}

fn on_end(lp: &mut Loop, mode: Mode) {
    // The reader's `on_end(Ok)` panics: the stream still ends itself, its
    // queued echoes first.
    let addr = server(lp, 1, |lp, stream, _| {
        stream.read_start(
            lp,
            |lp, stream, data| {
                stream.write(lp, data.to_vec(), |_, _| {});
            },
            |_, _, _| boom(),
        );
    });
    let client = echo_client(addr, 1 << 20);
    let panics = run_through_panics(lp, mode);
    assert_eq!(client.join().unwrap(), pattern(1 << 20));
    assert_eq!(panics, 1);
}

fn on_written(lp: &mut Loop, mode: Mode) {
    // The first write's callback panics: the other writes still go out,
    // then the end's FIN.
    let addr = server(lp, 1, |lp, stream, _| {
        let data = pattern(192 * 1024);
        stream.write(lp, data[..64 * 1024].to_vec(), |_, _| boom());
        stream.write(lp, data[64 * 1024..].to_vec(), |_, res| res.unwrap());
        stream.end(lp);
    });
    let client = thread::spawn(move || {
        let mut s = StdStream::connect(addr).unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        let mut back = Vec::new();
        s.read_to_end(&mut back).unwrap();
        back
    });
    let panics = run_through_panics(lp, mode);
    assert_eq!(client.join().unwrap(), pattern(192 * 1024));
    assert_eq!(panics, 1);
}

fn on_drain(lp: &mut Loop, mode: Mode) {
    // The first drain writes more, then panics: its callback stays, and
    // the second drain ends the stream.
    let addr = server(lp, 1, |lp, stream, _| {
        stream.set_high_water_mark(lp, 1024);
        let drains = Rc::new(Cell::new(0));
        stream.on_drain(lp, move |lp, stream| {
            drains.set(drains.get() + 1);
            if drains.get() == 1 {
                stream.write(lp, vec![2; 64 * 1024], |_, _| {});
                boom();
            }
            stream.end(lp);
        });
        assert!(!stream.write(lp, vec![1; 64 * 1024], |_, _| {}));
    });
    let client = thread::spawn(move || {
        let mut s = StdStream::connect(addr).unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        let mut back = Vec::new();
        s.read_to_end(&mut back).unwrap();
        back
    });
    let panics = run_through_panics(lp, mode);
    let back = client.join().unwrap();
    assert_eq!(back.len(), 128 * 1024);
    assert!(back[..64 * 1024].iter().all(|&b| b == 1));
    assert!(back[64 * 1024..].iter().all(|&b| b == 2));
    assert_eq!(panics, 1);
}

fn on_connect(lp: &mut Loop, mode: Mode) {
    // The connect callback starts reading, writes, ends, then panics: all
    // of it still happens.
    let std_server = StdListener::bind(loopback()).unwrap();
    let addr = std_server.local_addr().unwrap();
    let peer = thread::spawn(move || {
        let (mut s, _) = std_server.accept().unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        s.write_all(&got).unwrap();
        got
    });
    let echoed = Rc::new(RefCell::new(Vec::new()));
    let ended = Rc::new(Cell::new(false));
    let (e, d) = (Rc::clone(&echoed), Rc::clone(&ended));
    lp.tcp_connect(addr, move |lp, connected| {
        let stream = connected.unwrap();
        stream.read_start(
            lp,
            move |_, _, data| e.borrow_mut().extend_from_slice(data),
            move |_, _, end| {
                end.unwrap();
                d.set(true);
            },
        );
        stream.write(lp, b"hello".to_vec(), |_, res| res.unwrap());
        stream.end(lp);
        boom();
    })
    .unwrap();
    let panics = run_through_panics(lp, mode);
    assert_eq!(peer.join().unwrap(), b"hello");
    assert_eq!(*echoed.borrow(), b"hello");
    assert!(ended.get());
    assert_eq!(panics, 1);
}

fn accept(lp: &mut Loop, mode: Mode) {
    // The connection callback panics for the first connection (after
    // setting it up): the listener keeps its callback and serves the
    // next ones.
    let addr = server(lp, 3, |lp, stream, n| {
        stream.pipe(lp, stream);
        if n == 1 {
            boom();
        }
    });
    let clients: Vec<_> = (0..3).map(|_| echo_client(addr, 64 * 1024)).collect();
    let panics = run_through_panics(lp, mode);
    for c in clients {
        assert_eq!(c.join().unwrap(), pattern(64 * 1024));
    }
    assert_eq!(panics, 1);
}

fn on_shutdown(lp: &mut Loop, mode: Mode) {
    // The shutdown's callback panics: the reading goes on to the peer's
    // end.
    let addr = server(lp, 1, |lp, stream, _| {
        stream.write(lp, b"bye".to_vec(), |_, res| res.unwrap());
        stream.shutdown(lp, |_, res| {
            res.unwrap();
            boom();
        });
        stream.read_start(
            lp,
            |lp, stream, data| {
                assert_eq!(data, b"more");
                stream.close(lp);
            },
            |_, _, _| {},
        );
    });
    let client = thread::spawn(move || {
        let mut s = StdStream::connect(addr).unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        let mut back = Vec::new();
        s.read_to_end(&mut back).unwrap();
        s.write_all(b"more").unwrap();
        back
    });
    let panics = run_through_panics(lp, mode);
    assert_eq!(client.join().unwrap(), b"bye");
    assert_eq!(panics, 1);
}

/// Generates `handler_tests::{uring,poll}::NAME` and
/// `unwinding_tests::{uring,poll}::NAME` for each scenario.
macro_rules! in_both_modes {
    ($($name:ident),* $(,)?) => {
        mod with_handler {
            $(pub(super) fn $name(lp: &mut eventide::Loop) {
                super::$name(lp, super::Mode::Handler);
            })*
        }
        mod unwinding {
            $(pub(super) fn $name(lp: &mut eventide::Loop) {
                super::$name(lp, super::Mode::Unwind);
            })*
        }
        mod handler_tests {
            use super::with_handler::*;
            crate::on_every_backend!($($name),*);
        }
        mod unwinding_tests {
            use super::unwinding::*;
            crate::on_every_backend!($($name),*);
        }
    };
}

in_both_modes!(on_data, on_end, on_written, on_drain, accept);

// The connect's and the shutdown's callbacks run from boxed I/O handlers
// (io.rs): with a handler they pass; unwinding, they need the loop fixed.
mod boxed_with_handler {
    pub(super) fn on_connect(lp: &mut eventide::Loop) {
        super::on_connect(lp, super::Mode::Handler);
    }
    pub(super) fn on_shutdown(lp: &mut eventide::Loop) {
        super::on_shutdown(lp, super::Mode::Handler);
    }
    crate::on_every_backend!(on_connect, on_shutdown);
}

/// Without a panic handler: the panic leaves `run()`, and the next `run()`
/// finishes (the handler's slot followed its operation out).
mod unwinding_boxed {
    pub(super) fn on_connect(lp: &mut eventide::Loop) {
        super::on_connect(lp, super::Mode::Unwind);
    }
    pub(super) fn on_shutdown(lp: &mut eventide::Loop) {
        super::on_shutdown(lp, super::Mode::Unwind);
    }
    crate::on_every_backend!(on_connect, on_shutdown);
}
