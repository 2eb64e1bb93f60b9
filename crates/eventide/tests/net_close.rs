//! When a listener's close callback runs: Node's `server.close(cb)`, whose
//! `'close'` is a next-tick queued once the server's handle is closed and
//! its last delivered connection destroyed (`_emitCloseIfDrained`, called
//! from `close` and from each accepted socket's `_destroy`). Each case
//! quotes the JavaScript it ports and asserts the trace node 20 printed,
//! on every compiled backend. `sock.destroy()` is `TcpStream::close` (or
//! `close_then`, whose callback is the socket's `'close'`, in the close
//! phase); timers that only separate steps in the scripts are replaced by
//! the event that makes the order certain.

mod util;

use std::cell::{Cell, RefCell};
use std::io::Read;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use eventide::Loop;
use eventide::net::{ListenOptions, TcpListener, TcpStream};
use util::{Trace, ms, run_within};

const LIMIT: Duration = Duration::from_secs(20);

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A handle to fill in once it exists (the listener, inside its own
/// connection callback).
type Later<T> = Rc<Cell<Option<T>>>;

fn listen(
    lp: &mut Loop,
    on_stream: impl FnMut(&mut Loop, TcpListener, TcpStream) + 'static,
) -> (TcpListener, SocketAddr) {
    let me: Later<TcpListener> = Rc::default();
    let m = Rc::clone(&me);
    let mut on_stream = on_stream;
    let listener = lp
        .tcp_listen(loopback(), ListenOptions::default(), move |lp, accepted| {
            let listener = m.get().expect("set before any connection");
            on_stream(lp, listener, accepted.expect("accepted"));
        })
        .expect("listen");
    me.set(Some(listener));
    let addr = listener.local_addr(lp).expect("its address");
    (listener, addr)
}

/// A client whose result is not part of the trace.
fn connect(lp: &mut Loop, addr: SocketAddr) {
    lp.tcp_connect(addr, |_, _| {}).expect("connect");
}

/// A connection still open when the server closes: the close callback is
/// queued by the destroy that ends it, before the ticks the destroying
/// callback queues after it, and before the socket's own `'close'`:
///
/// ```js
/// const server = net.createServer((s) => {
///   log('connection');
///   s.on('close', () => log('socket-close'));
///   server.close(() => log('server-close-cb'));
///   process.nextTick(() => log('tick-after-close'));
///   setImmediate(() => log('immediate-after-close'));
///   setTimeout(() => {
///     log('timer');
///     s.destroy();
///     process.nextTick(() => log('tick-after-destroy'));
///     setImmediate(() => log('immediate-after-destroy'));
///     log('after-destroy');
///   }, 20);
/// });
/// ```
fn a_close_waits_for_the_open_connection(lp: &mut Loop) {
    let trace = Trace::default();
    let t = trace.clone();
    let (_, addr) = listen(lp, move |lp, server, s| {
        t.log("connection");
        assert!(server.close_then(lp, t.at("server-close-cb")));
        assert_eq!(server.connections(lp), 0, "a closed listener counts none");
        lp.next_tick(t.at("tick-after-close"));
        lp.set_immediate(t.at("immediate-after-close"));
        let t = t.clone();
        lp.set_timeout(ms(1), move |lp| {
            t.log("timer");
            assert!(s.close_then(lp, t.at("socket-close")));
            lp.next_tick(t.at("tick-after-destroy"));
            lp.set_immediate(t.at("immediate-after-destroy"));
            t.log("after-destroy");
        });
    });
    connect(lp, addr);
    run_within(lp, LIMIT);
    trace.assert(&[
        "connection",
        "tick-after-close",
        "immediate-after-close",
        "timer",
        "after-destroy",
        "server-close-cb",
        "tick-after-destroy",
        "immediate-after-destroy",
        "socket-close",
    ]);
}

/// Two connections, each destroyed from its own data callback after the
/// server closed: only the second (the last) queues the close callback:
///
/// ```js
/// const server = net.createServer((s) => {
///   const i = ++n;
///   log('connection ' + i);
///   s.on('close', () => log('socket-close ' + i));
///   s.on('data', () => {
///     log('data ' + i);
///     s.destroy();
///     process.nextTick(() => log('tick-after-destroy ' + i));
///     setImmediate(() => log('immediate-after-destroy ' + i));
///   });
///   if (i === 2) {
///     server.close(() => log('server-close-cb'));
///     log('closed');
///     process.nextTick(() => log('tick-after-close'));
///     // then client 1 writes, and (later) client 2
///   }
/// });
/// ```
///
/// Node prints `connection 1`, `connection 2`, `closed`,
/// `tick-after-close`, `data 1`, `tick-after-destroy 1`,
/// `immediate-after-destroy 1`, `socket-close 1`, `data 2`,
/// `server-close-cb`, `tick-after-destroy 2`, `immediate-after-destroy 2`,
/// `socket-close 2`. Here the second client connects once the first is
/// delivered, the first writes once the second is delivered, and the
/// second once the first's socket has closed (in the scripts, timers).
fn connections_closed_from_their_own_data_callbacks(lp: &mut Loop) {
    let trace = Trace::default();
    let clients: Rc<RefCell<Vec<TcpStream>>> = Rc::default();
    let (t, c) = (trace.clone(), Rc::clone(&clients));
    let mut n = 0;
    let (_, addr) = listen(lp, move |lp, server, s| {
        n += 1;
        let i = n;
        t.log(format!("connection {i}"));
        let (td, c2) = (t.clone(), Rc::clone(&c));
        s.read_start(
            lp,
            move |lp, s, _| {
                td.log(format!("data {i}"));
                let tc = td.clone();
                let c3 = Rc::clone(&c2);
                s.close_then(lp, move |lp| {
                    tc.log(format!("socket-close {i}"));
                    if i == 1 {
                        write_and_close(lp, c3.borrow()[1], b"b");
                    }
                });
                let tt = td.clone();
                lp.next_tick(move |_| tt.log(format!("tick-after-destroy {i}")));
                let ti = td.clone();
                lp.set_immediate(move |_| ti.log(format!("immediate-after-destroy {i}")));
            },
            |_, _, _| {},
        );
        if i == 1 {
            let c = Rc::clone(&c);
            let addr = server.local_addr(lp).unwrap();
            lp.tcp_connect(addr, move |_, r| c.borrow_mut().push(r.unwrap()))
                .unwrap();
        } else {
            assert_eq!(server.connections(lp), 2);
            assert!(server.close_then(lp, t.at("server-close-cb")));
            t.log("closed");
            lp.next_tick(t.at("tick-after-close"));
            write_and_close(lp, c.borrow()[0], b"a");
        }
    });
    let c = Rc::clone(&clients);
    lp.tcp_connect(addr, move |_, r| c.borrow_mut().push(r.unwrap()))
        .unwrap();
    run_within(lp, LIMIT);
    trace.assert(&[
        "connection 1",
        "connection 2",
        "closed",
        "tick-after-close",
        "data 1",
        "tick-after-destroy 1",
        "immediate-after-destroy 1",
        "socket-close 1",
        "data 2",
        "server-close-cb",
        "tick-after-destroy 2",
        "immediate-after-destroy 2",
        "socket-close 2",
    ]);
}

/// A client writes one byte and closes once it is out.
fn write_and_close(lp: &mut Loop, client: TcpStream, byte: &[u8]) {
    client.write(lp, byte.to_vec(), move |lp, res| {
        res.expect("written");
        client.close(lp);
    });
}

/// `close` twice, without connections: the first call's callback is a
/// next-tick queued by it; the second call finds a stale handle, returns
/// `false` and never calls back (Node calls it with
/// `ERR_SERVER_NOT_RUNNING` right after the first), and so does a call
/// after the close callback ran:
///
/// ```js
/// server.close((e) => log('cb1 ' + (e ? e.code : 'ok')));
/// server.close((e) => log('cb2 ' + (e ? e.code : 'ok')));   // cb2 ERR_SERVER_NOT_RUNNING
/// process.nextTick(() => log('tick'));
/// setImmediate(() => { log('immediate'); server.close(cb3); process.nextTick(() => log('tick2')); });
/// ```
///
/// Node prints `cb1 ok`, `cb2 ERR_SERVER_NOT_RUNNING`, `tick`,
/// `immediate`, `cb3 ERR_SERVER_NOT_RUNNING`, `tick2`.
fn closing_twice_calls_back_once(lp: &mut Loop) {
    let trace = Trace::default();
    let (server, _) = listen(lp, |_, _, _| panic!("no client"));
    let t = trace.clone();
    lp.set_immediate(move |lp| {
        assert!(server.close_then(lp, t.at("cb1 ok")));
        assert!(!server.close_then(lp, t.at("cb2")));
        assert!(!server.close(lp));
        lp.next_tick(t.at("tick"));
        let t = t.clone();
        lp.set_immediate(move |lp| {
            t.log("immediate");
            assert!(!server.close_then(lp, t.at("cb3")));
            lp.next_tick(t.at("tick2"));
        });
    });
    run_within(lp, LIMIT);
    trace.assert(&["cb1 ok", "tick", "immediate", "tick2"]);
}

/// `close` twice with a connection open, then the connection destroyed:
/// one callback, from the destroy (Node: `connection`, `tick`,
/// `destroyed`, `cb1 ok`, `cb2 ERR_SERVER_NOT_RUNNING`,
/// `tick-after-destroy`):
///
/// ```js
/// const server = net.createServer((s) => {
///   log('connection');
///   server.close(cb1); server.close(cb2);
///   process.nextTick(() => log('tick'));
///   setTimeout(() => { s.destroy(); log('destroyed'); process.nextTick(() => log('tick-after-destroy')); }, 10);
/// });
/// ```
fn closing_twice_with_a_connection_open_calls_back_once_from_the_destroy(lp: &mut Loop) {
    let trace = Trace::default();
    let t = trace.clone();
    let (_, addr) = listen(lp, move |lp, server, s| {
        t.log("connection");
        assert!(server.close_then(lp, t.at("cb1 ok")));
        assert!(!server.close_then(lp, t.at("cb2")));
        lp.next_tick(t.at("tick"));
        let t = t.clone();
        lp.set_timeout(ms(1), move |lp| {
            assert!(s.close(lp));
            t.log("destroyed");
            lp.next_tick(t.at("tick-after-destroy"));
        });
    });
    connect(lp, addr);
    run_within(lp, LIMIT);
    trace.assert(&[
        "connection",
        "tick",
        "destroyed",
        "cb1 ok",
        "tick-after-destroy",
    ]);
}

/// `close` from within the connection callback, with more clients waiting:
/// the connection delivered is destroyed at once, the others are never
/// delivered and their clients see a reset (Node: `connection 1`,
/// `destroyed`, `tick-after-close`, `server-close-cb`,
/// `tick-after-destroy`, and `ECONNRESET` for the two other clients):
///
/// ```js
/// const server = net.createServer((s) => {
///   log('connection ' + ++n);
///   server.close(() => log('server-close-cb'));
///   process.nextTick(() => log('tick-after-close'));
///   s.destroy();
///   log('destroyed');
///   process.nextTick(() => log('tick-after-destroy'));
/// });
/// // three clients connect at once
/// ```
///
/// The clients here are blocking sockets connected before the loop runs,
/// so all three wait in the backlog (or, on io_uring, may already be
/// accepted by the multishot accept) when the first is delivered.
fn close_from_the_connection_callback_resets_the_waiting_clients(lp: &mut Loop) {
    let trace = Trace::default();
    let t = trace.clone();
    let mut n = 0;
    let (_, addr) = listen(lp, move |lp, server, s| {
        n += 1;
        t.log(format!("connection {n}"));
        assert!(server.close_then(lp, t.at("server-close-cb")));
        lp.next_tick(t.at("tick-after-close"));
        assert!(s.close(lp));
        t.log("destroyed");
        lp.next_tick(t.at("tick-after-destroy"));
    });
    let clients: Vec<std::net::TcpStream> = (0..3)
        .map(|_| std::net::TcpStream::connect(addr).expect("a blocking connect"))
        .collect();
    run_within(lp, LIMIT);
    trace.assert(&[
        "connection 1",
        "destroyed",
        "tick-after-close",
        "server-close-cb",
        "tick-after-destroy",
    ]);
    let mut ended = 0;
    let mut reset = 0;
    for mut client in clients {
        client.set_read_timeout(Some(LIMIT)).unwrap();
        match client.read(&mut [0; 8]) {
            Ok(0) => ended += 1,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => reset += 1,
            other => panic!("a client read {other:?}"),
        }
    }
    assert_eq!((ended, reset), (1, 2), "one closed, two reset");
}

/// The peer ends its side and the server destroys its socket from the end
/// callback (Node: `connection`, `end`, `server-close-cb`,
/// `tick-after-destroy`, `socket-close`):
///
/// ```js
/// const server = net.createServer((s) => {
///   log('connection');
///   server.close(() => log('server-close-cb'));
///   s.on('end', () => { log('end'); s.destroy(); process.nextTick(() => log('tick-after-destroy')); });
///   s.on('close', () => log('socket-close'));
///   s.resume();
/// });
/// // the client connects and ends at once
/// ```
fn a_connection_destroyed_at_its_end(lp: &mut Loop) {
    let trace = Trace::default();
    let t = trace.clone();
    let (_, addr) = listen(lp, move |lp, server, s| {
        t.log("connection");
        assert!(server.close_then(lp, t.at("server-close-cb")));
        let t = t.clone();
        s.read_start(
            lp,
            |_, _, _| panic!("no data"),
            move |lp, s, end| {
                end.expect("an orderly end");
                t.log("end");
                assert!(s.close_then(lp, t.at("socket-close")));
                lp.next_tick(t.at("tick-after-destroy"));
            },
        );
    });
    lp.tcp_connect(addr, |lp, c| {
        let c = c.expect("connected");
        c.shutdown(lp, move |lp, res| {
            res.expect("shut down");
            c.close(lp);
        });
    })
    .unwrap();
    run_within(lp, LIMIT);
    trace.assert(&[
        "connection",
        "end",
        "server-close-cb",
        "tick-after-destroy",
        "socket-close",
    ]);
}

/// A connection destroyed by an error (the peer resets it): the close
/// callback is queued by the destroy, after the error callback (Node's
/// `'error'`) and before the ticks it queues (Node: `connection`,
/// `error ECONNRESET`, `server-close-cb`, `tick-from-error`,
/// `socket-close`; a destroyed eventide stream has no close callback):
///
/// ```js
/// const server = net.createServer((s) => {
///   log('connection');
///   s.on('error', (e) => { log('error ' + e.code); process.nextTick(() => log('tick-from-error')); });
///   server.close(() => log('server-close-cb'));
/// });
/// // the client resets the connection (c.resetAndDestroy())
/// ```
fn a_connection_destroyed_by_a_reset(lp: &mut Loop) {
    let trace = Trace::default();
    let t = trace.clone();
    let client: Rc<RefCell<Option<std::net::TcpStream>>> = Rc::default();
    let c = Rc::clone(&client);
    let (_, addr) = listen(lp, move |lp, server, s| {
        t.log("connection");
        let te = t.clone();
        s.read_start(
            lp,
            |_, _, _| panic!("no data"),
            move |lp, _, end| {
                let t = te;
                let error = end.expect_err("a reset");
                assert_eq!(error.errno(), Some(libc::ECONNRESET), "{error}");
                t.log("error ECONNRESET");
                lp.next_tick(t.at("tick-from-error"));
            },
        );
        assert!(server.close_then(lp, t.at("server-close-cb")));
        // The client resets (SO_LINGER 0, closed) once delivered.
        drop(c.borrow_mut().take().expect("the client"));
    });
    let stream = std::net::TcpStream::connect(addr).expect("a blocking connect");
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    *client.borrow_mut() = Some(stream);
    run_within(lp, LIMIT);
    trace.assert(&[
        "connection",
        "error ECONNRESET",
        "server-close-cb",
        "tick-from-error",
    ]);
}

/// A listener closed without a callback still counts its connections, and
/// its entry is freed once they are closed: a listener opened afterwards
/// counts only its own.
fn a_closed_listeners_connections_do_not_count_for_the_next(lp: &mut Loop) {
    let streams: Rc<RefCell<Vec<TcpStream>>> = Rc::default();
    let trace = Trace::default();
    let (s, t) = (Rc::clone(&streams), trace.clone());
    let (first, addr) = listen(lp, move |lp, server, stream| {
        s.borrow_mut().push(stream);
        if s.borrow().len() == 2 {
            assert!(server.close(lp));
            let (s, t) = (Rc::clone(&s), t.clone());
            let (second, addr) = listen(lp, move |lp, second, stream| {
                assert_eq!(second.connections(lp), 1);
                // Closing the first listener's streams leaves this count.
                for old in s.borrow_mut().drain(..) {
                    assert!(old.close(lp));
                }
                assert_eq!(second.connections(lp), 1);
                assert!(second.close_then(lp, t.at("second closed")));
                assert!(stream.close(lp));
                t.log("last stream closed");
            });
            assert_eq!(second.connections(lp), 0);
            connect(lp, addr);
        }
    });
    connect(lp, addr);
    connect(lp, addr);
    run_within(lp, LIMIT);
    assert_eq!(first.connections(lp), 0);
    trace.assert(&["last stream closed", "second closed"]);
}

on_every_backend!(
    a_close_waits_for_the_open_connection,
    connections_closed_from_their_own_data_callbacks,
    closing_twice_calls_back_once,
    closing_twice_with_a_connection_open_calls_back_once_from_the_destroy,
    close_from_the_connection_callback_resets_the_waiting_clients,
    a_connection_destroyed_at_its_end,
    a_connection_destroyed_by_a_reset,
    a_closed_listeners_connections_do_not_count_for_the_next,
);
