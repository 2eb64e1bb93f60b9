//! Node's ordering around UDP sockets: case 24 of
//! `shared/conformance/node/` (24-close-callbacks-phase) in full, its
//! variant 24a, a dgram close variant, and when send and message
//! callbacks run, each asserting the trace Node 20 printed for the
//! JavaScript quoted above it, on every compiled backend.
//!
//! Mapping: the script's top-level code is the code before `run()`;
//! `sock.on('close')` after `sock.destroy()` is `Stream::close_then` (its
//! callback runs in the close phase, as the uv_close callback Node emits
//! it from); `server.close(cb)` is `Listener::close_then`, whose callback
//! is a next-tick queued once the listener is closed and its last
//! connection closed (Node's `_emitCloseIfDrained`; tests/net_close.rs
//! has the other orders); `u.close(cb)` of a dgram socket is
//! `UdpSocket::close_then`, whose callback runs as a next-tick right
//! after the current callback, as Node's `socketCloseNT`. Node's
//! `dgram.createSocket('udp4')` without `bind` has no counterpart
//! (eventide's UDP sockets are made bound): `udp_bind(127.0.0.1:0)` stands
//! for it; a bound Node socket closes in the same order (the dgram
//! variant below).

mod util;

use std::net::SocketAddr;

use eventide::Loop;
use eventide::dgram::UdpOptions;
use eventide::net::ListenOptions;
use util::{Trace, run_within};

const LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// 24-close-callbacks-phase as it is (`shared/conformance/node/`):
///
/// ```js
/// const server = net.createServer((sock) => {
///   log('server-connection');
///   sock.on('close', () => {
///     log('socket-close-event');
///     setImmediate(() => log('immediate-from-close'));
///     process.nextTick(() => log('tick-from-close'));
///   });
///   sock.destroy();
///   process.nextTick(() => log('tick-after-destroy'));
///   setImmediate(() => log('immediate-after-destroy'));
///   server.close(() => log('server-close-callback'));
///   const u = dgram.createSocket('udp4');
///   u.on('close', () => log('dgram-close-event'));
///   u.close();
///   log('after-close-calls');
/// });
/// server.listen(0, '127.0.0.1', () => {
///   const c = net.connect(server.address().port, '127.0.0.1');
///   c.on('error', () => {});
/// });
/// ```
///
/// The trace is the case's `24-close-callbacks-phase.expected`.
fn case_24_close_callbacks_phase(lp: &mut Loop) {
    run_case_24(lp, true).assert(&[
        "server-connection",
        "after-close-calls",
        "tick-after-destroy",
        "server-close-callback",
        "dgram-close-event",
        "immediate-after-destroy",
        "socket-close-event",
        "tick-from-close",
        "immediate-from-close",
    ]);
}

/// Case 24a: case 24 with `server.close()` for `server.close(cb)` (Node's
/// trace is case 24's without `server-close-callback`).
fn case_24a_socket_close_in_the_close_phase_dgram_close_as_a_next_tick(lp: &mut Loop) {
    run_case_24(lp, false).assert(&[
        "server-connection",
        "after-close-calls",
        "tick-after-destroy",
        "dgram-close-event",
        "immediate-after-destroy",
        "socket-close-event",
        "tick-from-close",
        "immediate-from-close",
    ]);
}

/// Case 24's script, its server closed with a callback or without.
fn run_case_24(lp: &mut Loop, server_close_callback: bool) -> Trace {
    let trace = Trace::default();
    let t = trace.clone();
    let server = std::rc::Rc::new(std::cell::Cell::new(None));
    let s = std::rc::Rc::clone(&server);
    let listener = lp
        .tcp_listen(loopback(), ListenOptions::default(), move |lp, accepted| {
            let sock = accepted.expect("accepted");
            t.log("server-connection");
            let tc = t.clone();
            assert!(sock.close_then(lp, move |lp| {
                tc.log("socket-close-event");
                lp.set_immediate(tc.at("immediate-from-close"));
                lp.next_tick(tc.at("tick-from-close"));
            }));
            lp.next_tick(t.at("tick-after-destroy"));
            lp.set_immediate(t.at("immediate-after-destroy"));
            let server: eventide::net::TcpListener = s.get().expect("listening");
            if server_close_callback {
                assert!(server.close_then(lp, t.at("server-close-callback")));
            } else {
                assert!(server.close(lp));
            }
            let u = lp
                .udp_bind(loopback(), UdpOptions::default())
                .expect("bind");
            u.close_then(lp, t.at("dgram-close-event"));
            t.log("after-close-calls");
        })
        .expect("listen");
    server.set(Some(listener));
    let addr = listener.local_addr(lp).expect("its address");
    // The client's result (connected, or reset) is not part of the trace.
    lp.tcp_connect(addr, |_, _| {}).expect("connect");
    run_within(lp, LIMIT);
    trace
}

/// A bound dgram socket closed from its own message callback (Node prints
/// `message`, `after-close`, `dgram-close-callback`, `tick-after-close`,
/// `immediate-after-close`):
///
/// ```js
/// const u = dgram.createSocket('udp4');
/// u.bind(0, '127.0.0.1', () => {
///   u.on('message', () => {
///     log('message');
///     u.close(() => log('dgram-close-callback'));
///     process.nextTick(() => log('tick-after-close'));
///     setImmediate(() => log('immediate-after-close'));
///     log('after-close');
///   });
///   u.send('x', u.address().port, '127.0.0.1');
/// });
/// ```
fn dgram_close_from_a_message_callback_calls_back_before_that_callbacks_ticks(lp: &mut Loop) {
    let trace = Trace::default();
    let u = lp
        .udp_bind(loopback(), UdpOptions::default())
        .expect("bind");
    let t = trace.clone();
    u.recv_start(
        lp,
        move |lp, u, _, _| {
            t.log("message");
            u.close_then(lp, t.at("dgram-close-callback"));
            lp.next_tick(t.at("tick-after-close"));
            lp.set_immediate(t.at("immediate-after-close"));
            t.log("after-close");
        },
        |_, _, error| panic!("{error}"),
    );
    let to = u.local_addr(lp).unwrap();
    u.send_to(lp, b"x".to_vec(), to, |_, sent| {
        assert_eq!(sent.unwrap(), 1)
    });
    run_within(lp, LIMIT);
    trace.assert(&[
        "message",
        "after-close",
        "dgram-close-callback",
        "tick-after-close",
        "immediate-after-close",
    ]);
}

/// When a send's callback runs: Node's `doSend` calls back through
/// `process.nextTick`, after a lookup of the address that is itself a tick
/// on an unconnected socket (so ticks queued after `send` run first) and
/// skipped on a connected one. Node prints, unconnected:
/// `message`, `after-send`, `tick`, `send-cb`, `microtask`, `immediate`;
/// connected: `message`, `after-send`, `send-cb`, `tick`, `microtask`,
/// `immediate`:
///
/// ```js
/// r.once('message', (m) => {
///   log('message');
///   r.send('y', port, '127.0.0.1', () => log('send-cb'));   // connected: r.send('y', cb)
///   setImmediate(() => log('immediate'));
///   process.nextTick(() => log('tick'));
///   Promise.resolve().then(() => log('microtask'));
///   log('after-send');
/// });
/// ```
fn send_callbacks_are_next_ticks_after_a_lookup_tick_unless_connected(lp: &mut Loop) {
    for connected in [false, true] {
        let trace = Trace::default();
        let r = lp
            .udp_bind(loopback(), UdpOptions::default())
            .expect("bind");
        let at = r.local_addr(lp).unwrap();
        if connected {
            r.connect(lp, at).unwrap();
        }
        let t = trace.clone();
        let mut first = true;
        r.recv_start(
            lp,
            move |lp, r, _, _| {
                if !first {
                    return;
                }
                first = false;
                t.log("message");
                let ts = t.clone();
                let on_sent = move |lp: &mut Loop, sent: eventide::Result<usize>| {
                    assert_eq!(sent.unwrap(), 1);
                    ts.log("send-cb");
                    r.close(lp);
                };
                if connected {
                    r.send(lp, b"y".to_vec(), on_sent);
                } else {
                    r.send_to(lp, b"y".to_vec(), at, on_sent);
                }
                lp.set_immediate(t.at("immediate"));
                lp.next_tick(t.at("tick"));
                lp.queue_microtask(t.at("microtask"));
                t.log("after-send");
            },
            |_, _, error| panic!("{error}"),
        );
        r.send_to(lp, b"x".to_vec(), at, |_, sent| {
            assert_eq!(sent.unwrap(), 1)
        });
        run_within(lp, LIMIT);
        if connected {
            trace.assert(&[
                "message",
                "after-send",
                "send-cb",
                "tick",
                "microtask",
                "immediate",
            ]);
        } else {
            trace.assert(&[
                "message",
                "after-send",
                "tick",
                "send-cb",
                "microtask",
                "immediate",
            ]);
        }
    }
}

/// Three sends in one callback, three datagrams received: every send
/// callback runs before the ticks they queue, and each message's ticks run
/// before the next message (each `'message'` is its own callback). Node
/// prints `sent-cb 1`, `sent-cb 2`, `sent-cb 3`, `sent-tick 1..3`, then
/// `message 1`, `tick 1`, `message 2`, `tick 2`, `message 3`, `tick 3`:
///
/// ```js
/// r.on('message', (m) => { log('message ' + m); process.nextTick(() => log('tick ' + m)); });
/// for (const i of [1, 2, 3])
///   s.send(String(i), port, '127.0.0.1', () => {
///     log('sent-cb ' + i); process.nextTick(() => log('sent-tick ' + i));
///   });
/// ```
fn each_send_callback_and_each_message_is_its_own_callback(lp: &mut Loop) {
    let trace = Trace::default();
    let r = lp
        .udp_bind(loopback(), UdpOptions::default())
        .expect("bind");
    let to = r.local_addr(lp).unwrap();
    let s = lp
        .udp_bind(loopback(), UdpOptions::default())
        .expect("bind");
    let t = trace.clone();
    r.recv_start(
        lp,
        move |lp, r, data, _| {
            let m = String::from_utf8_lossy(data).into_owned();
            t.log(format!("message {m}"));
            let tm = t.clone();
            lp.next_tick(move |_| tm.log(format!("tick {m}")));
            if data == b"3" {
                r.close(lp);
                s.close(lp);
            }
        },
        |_, _, error| panic!("{error}"),
    );
    for i in 1..=3 {
        let t = trace.clone();
        s.send_to(lp, i.to_string().into_bytes(), to, move |lp, sent| {
            assert_eq!(sent.unwrap(), 1);
            t.log(format!("sent-cb {i}"));
            let t = t.clone();
            lp.next_tick(move |_| t.log(format!("sent-tick {i}")));
        });
    }
    run_within(lp, LIMIT);
    trace.assert(&[
        "sent-cb 1",
        "sent-cb 2",
        "sent-cb 3",
        "sent-tick 1",
        "sent-tick 2",
        "sent-tick 3",
        "message 1",
        "tick 1",
        "message 2",
        "tick 2",
        "message 3",
        "tick 3",
    ]);
}

on_every_backend!(
    case_24_close_callbacks_phase,
    case_24a_socket_close_in_the_close_phase_dgram_close_as_a_next_tick,
    dgram_close_from_a_message_callback_calls_back_before_that_callbacks_ticks,
    send_callbacks_are_next_ticks_after_a_lookup_tick_unless_connected,
    each_send_callback_and_each_message_is_its_own_callback,
);
