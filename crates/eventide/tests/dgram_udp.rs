//! UDP on every backend: echo round trips over 127.0.0.1 and ::1, many
//! datagrams in order with their bytes, oversize datagrams on both ends,
//! close from a receive callback, stale handles, bind and option errors,
//! connected sockets and refused datagrams, multicast on loopback, when
//! callbacks run, and what keeps the loop alive.

mod util;

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use eventide::dgram::{MulticastInterface, UdpOptions, UdpSocket};
use eventide::{Error, Loop};
use util::{Trace, run_within};

const LIMIT: Duration = Duration::from_secs(30);

fn v4() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn v6() -> SocketAddr {
    "[::1]:0".parse().unwrap()
}

fn bind(lp: &mut Loop, addr: SocketAddr) -> UdpSocket {
    lp.udp_bind(addr, UdpOptions::default()).expect("bind")
}

fn pattern(seed: usize, n: usize) -> Vec<u8> {
    (0..n).map(|i| ((i + seed) * 7 % 251) as u8).collect()
}

fn no_error(_: &mut Loop, _: UdpSocket, error: Error) {
    panic!("unexpected receive error: {error}");
}

/// A socket that sends every datagram back to where it came from.
fn echo_server(lp: &mut Loop, addr: SocketAddr) -> (UdpSocket, SocketAddr) {
    let server = bind(lp, addr);
    server.recv_start(
        lp,
        |lp, socket, data, from| {
            socket.send_to(lp, data.to_vec(), from, |_, sent| {
                sent.expect("echoed");
            })
        },
        no_error,
    );
    let at = server.local_addr(lp).expect("its address");
    (server, at)
}

/// Sends `message` to an echo server on `addr`'s loopback and returns what
/// came back and from where.
fn echo_round_trip(lp: &mut Loop, addr: SocketAddr) {
    let (server, at) = echo_server(lp, addr);
    assert_eq!(at.ip(), addr.ip());
    assert_ne!(at.port(), 0);
    let client = bind(lp, addr);
    let client_at = client.local_addr(lp).unwrap();
    let got = Rc::new(RefCell::new(None));
    let g = Rc::clone(&got);
    client.recv_start(
        lp,
        move |lp, client, data, from| {
            *g.borrow_mut() = Some((data.to_vec(), from));
            assert!(client.close(lp));
            assert!(server.close(lp));
        },
        no_error,
    );
    let sent = Rc::new(Cell::new(None));
    let s = Rc::clone(&sent);
    let message = pattern(1, 1200);
    client.send_to(lp, message.clone(), at, move |_, n| s.set(Some(n.unwrap())));
    assert_eq!(sent.get(), None, "the send callback ran inside send_to");
    run_within(lp, LIMIT);
    assert_eq!(sent.get(), Some(1200));
    let (data, from) = got.take().expect("the echo came back");
    assert_eq!(data, message);
    assert_eq!(from, at);
    assert_ne!(client_at, at);
}

fn an_echo_round_trip_over_ipv4_returns_the_same_bytes(lp: &mut Loop) {
    echo_round_trip(lp, v4());
}

fn an_echo_round_trip_over_ipv6_returns_the_same_bytes(lp: &mut Loop) {
    if let Err(error) = lp.udp_bind(v6(), UdpOptions::default()) {
        eprintln!("skipped: no ::1 here ({error})");
        return;
    }
    echo_round_trip(lp, v6());
}

/// The client keeps `WINDOW` datagrams in flight (each one acknowledged by
/// its sequence number), so the receiver's buffer can never overflow and
/// loopback cannot drop any: every datagram must arrive, once, in order,
/// with its bytes.
fn many_datagrams_arrive_in_order_with_their_bytes(lp: &mut Loop) {
    const COUNT: u32 = 2000;
    const WINDOW: u32 = 32;
    let datagram = |seq: u32| {
        let mut data = seq.to_be_bytes().to_vec();
        data.extend(pattern(seq as usize, 1 + (seq as usize * 37) % 1400));
        data
    };
    let server = bind(lp, v4());
    let expected = Rc::new(Cell::new(0u32));
    let e = Rc::clone(&expected);
    server.recv_start(
        lp,
        move |lp, server, data, from| {
            let seq = u32::from_be_bytes(data[..4].try_into().unwrap());
            assert_eq!(seq, e.get(), "out of order or lost");
            assert_eq!(data, &datagram(seq)[..], "datagram {seq} changed");
            e.set(seq + 1);
            server.send_to(lp, seq.to_be_bytes().to_vec(), from, |_, n| {
                assert_eq!(n.unwrap(), 4);
            });
            if seq + 1 == COUNT {
                server.close(lp);
            }
        },
        no_error,
    );
    let to = server.local_addr(lp).unwrap();
    let client = bind(lp, v4());
    let next = Rc::new(Cell::new(0u32));
    let sent_ok = Rc::new(Cell::new(0u32));
    let send_next = {
        let next = Rc::clone(&next);
        let sent_ok = Rc::clone(&sent_ok);
        move |lp: &mut Loop, client: UdpSocket| {
            let seq = next.get();
            if seq < COUNT {
                next.set(seq + 1);
                let sent_ok = Rc::clone(&sent_ok);
                let len = datagram(seq).len();
                client.send_to(lp, datagram(seq), to, move |_, n| {
                    assert_eq!(n.unwrap(), len);
                    sent_ok.set(sent_ok.get() + 1);
                });
            }
        }
    };
    let acked = Rc::new(Cell::new(0u32));
    let a = Rc::clone(&acked);
    let send = send_next.clone();
    client.recv_start(
        lp,
        move |lp, client, data, _| {
            assert_eq!(data, a.get().to_be_bytes(), "acks come in order");
            a.set(a.get() + 1);
            if a.get() == COUNT {
                client.close(lp);
            } else {
                send(lp, client);
            }
        },
        no_error,
    );
    for _ in 0..WINDOW {
        send_next(lp, client);
    }
    run_within(lp, LIMIT);
    assert_eq!(expected.get(), COUNT);
    assert_eq!(acked.get(), COUNT);
    assert_eq!(sent_ok.get(), COUNT);
}

fn a_datagram_over_the_ipv4_limit_fails_with_emsgsize(lp: &mut Loop) {
    let server = bind(lp, v4());
    let to = server.local_addr(lp).unwrap();
    let client = bind(lp, v4());
    let got = Rc::new(RefCell::new(None));
    let g = Rc::clone(&got);
    client.send_to(lp, vec![7; 70_000], to, move |lp, sent| {
        *g.borrow_mut() = Some(sent);
        client.close(lp);
        server.close(lp);
    });
    run_within(lp, LIMIT);
    let error = got.take().expect("called back").unwrap_err();
    assert_eq!(error.code(), Some("EMSGSIZE"));
    assert_eq!(error.to_string(), format!("send EMSGSIZE {to}"));
}

/// A datagram over the receiver's `max_datagram` is not delivered cut
/// short: it is reported as `recvmsg EMSGSIZE`, and the next one arrives.
fn a_datagram_over_max_datagram_is_reported_and_the_next_one_arrives(lp: &mut Loop) {
    let options = UdpOptions::default().max_datagram(16);
    let server = lp.udp_bind(v4(), options).unwrap();
    let to = server.local_addr(lp).unwrap();
    let trace = Trace::default();
    let (t, t2) = (trace.clone(), trace.clone());
    server.recv_start(
        lp,
        move |lp, server, data, _| {
            t.log(format!("message {}", data.len()));
            server.close(lp);
        },
        move |_, _, error| {
            assert_eq!(error.code(), Some("EMSGSIZE"));
            t2.log(error.to_string());
        },
    );
    let client = bind(lp, v4());
    client.send_to(lp, vec![1; 100], to, |_, n| assert_eq!(n.unwrap(), 100));
    client.send_to(lp, vec![2; 16], to, move |lp, n| {
        assert_eq!(n.unwrap(), 16);
        client.close(lp);
    });
    run_within(lp, LIMIT);
    trace.assert(&["recvmsg EMSGSIZE", "message 16"]);
}

/// Closed inside its receive callback, a socket gets no more datagrams
/// (three were waiting), its handle is stale at once, and its close
/// callback runs right after the receive callback, as a next-tick.
fn closing_a_socket_inside_its_receive_callback_stops_it_there(lp: &mut Loop) {
    let server = bind(lp, v4());
    let to = server.local_addr(lp).unwrap();
    let client = bind(lp, v4());
    let trace = Trace::default();
    for i in 0..3u8 {
        let t = trace.clone();
        client.send_to(lp, vec![i], to, move |lp, n| {
            assert_eq!(n.unwrap(), 1);
            t.log(format!("sent {i}"));
            if i == 2 {
                // All three are in the server's buffer: now read.
                let t = t.clone();
                let t2 = t.clone();
                server.recv_start(
                    lp,
                    move |lp, server, data, _| {
                        t.log(format!("message {}", data[0]));
                        assert!(server.close_then(lp, t.at("close callback")));
                        assert!(!server.close(lp), "closed twice");
                        assert!(!server.recv_stop(lp));
                        assert!(matches!(server.local_addr(lp), Err(Error::Stale { .. })));
                        lp.set_immediate(t.at("immediate"));
                        t.log("after close");
                    },
                    move |_, _, error| t2.log(format!("error {error}")),
                );
                client.close(lp);
            }
        });
    }
    run_within(lp, LIMIT);
    trace.assert(&[
        "sent 0",
        "sent 1",
        "sent 2",
        "message 0",
        "after close",
        "close callback",
        "immediate",
    ]);
}

/// A closed socket's handle does nothing: sends fail with `Error::Stale`
/// (called back later, never inside the call), and it never reaches the
/// socket that reuses its slot.
fn a_stale_socket_fails_sends_and_never_reaches_a_new_socket(lp: &mut Loop) {
    let old = bind(lp, v4());
    assert!(old.close(lp));
    let new = bind(lp, v4());
    assert_ne!(old, new);
    let new_at = new.local_addr(lp).unwrap();
    let trace = Trace::default();
    let t = trace.clone();
    old.send_to(lp, b"x".to_vec(), new_at, move |_, sent| {
        assert!(matches!(sent, Err(Error::Stale { .. })), "{sent:?}");
        t.log("stale send");
    });
    let t = trace.clone();
    old.recv_start(
        lp,
        |_, _, _, _| panic!("a stale socket received"),
        move |_, _, error| {
            assert!(matches!(error, Error::Stale { .. }), "{error}");
            t.log("stale recv_start");
        },
    );
    trace.assert(&[]);
    assert!(!old.recv_stop(lp));
    assert!(!old.close(lp));
    assert!(matches!(old.local_addr(lp), Err(Error::Stale { .. })));
    assert!(matches!(
        old.set_broadcast(lp, true),
        Err(Error::Stale { .. })
    ));
    assert_eq!(old.send_queue_size(lp), 0);
    assert_eq!(new.local_addr(lp).unwrap(), new_at);
    new.close(lp);
    run_within(lp, LIMIT);
    trace.assert(&["stale send", "stale recv_start"]);
}

fn binding_a_taken_address_fails_with_eaddrinuse(lp: &mut Loop) {
    let first = bind(lp, v4());
    let taken = first.local_addr(lp).unwrap();
    let error = lp.udp_bind(taken, UdpOptions::default()).unwrap_err();
    assert_eq!(error.code(), Some("EADDRINUSE"));
    assert_eq!(error.to_string(), format!("bind EADDRINUSE {taken}"));
    assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse);
    // With SO_REUSEADDR on both, Linux lets a second socket share it.
    let shared = UdpOptions::default().reuse_addr(true);
    let a = lp.udp_bind(v4(), shared).unwrap();
    let at = a.local_addr(lp).unwrap();
    let b = lp.udp_bind(at, shared).unwrap();
    assert_eq!(b.local_addr(lp).unwrap(), at);
    for socket in [first, a, b] {
        socket.close(lp);
    }
    run_within(lp, LIMIT);
}

fn out_of_range_ttls_fail_as_nodes_do(lp: &mut Loop) {
    let socket = bind(lp, v4());
    for ttl in [0, 256] {
        let error = socket.set_ttl(lp, ttl).unwrap_err();
        assert_eq!(error.to_string(), "setTTL EINVAL");
    }
    let error = socket.set_multicast_ttl(lp, 256).unwrap_err();
    assert_eq!(error.to_string(), "setMulticastTTL EINVAL");
    socket.set_ttl(lp, 64).unwrap();
    socket.set_multicast_ttl(lp, 0).unwrap();
    socket.set_broadcast(lp, true).unwrap();
    socket.set_multicast_loopback(lp, false).unwrap();
    socket.close(lp);
    run_within(lp, LIMIT);
}

/// A connected socket sends to its peer with `send`, refuses another
/// address, hears of a refused datagram as `recvmsg ECONNREFUSED` and
/// keeps working; disconnected, it needs addresses again.
fn a_connected_socket_sends_to_its_peer_and_hears_refusals(lp: &mut Loop) {
    // A port nobody listens on: bound, noted, closed.
    let gone = bind(lp, v4());
    let nobody = gone.local_addr(lp).unwrap();
    gone.close(lp);
    let (server, at) = echo_server(lp, v4());
    let client = bind(lp, v4());
    assert_eq!(
        client.remote_addr(lp).unwrap_err().to_string(),
        "getpeername ENOTCONN"
    );
    client.connect(lp, at).unwrap();
    assert_eq!(client.remote_addr(lp).unwrap(), at);
    let error = client.connect(lp, at).unwrap_err();
    assert_eq!(error.to_string(), format!("connect EISCONN {at}"));
    let trace = Trace::default();
    let t = trace.clone();
    client.send_to(lp, b"x".to_vec(), nobody, move |_, sent| {
        t.log(sent.unwrap_err().to_string());
    });
    let t = trace.clone();
    let t2 = trace.clone();
    client.recv_start(
        lp,
        move |lp, client, data, from| {
            assert_eq!(from, at);
            t.log(format!("echo {}", String::from_utf8_lossy(data)));
            client.disconnect(lp).unwrap();
            assert!(client.remote_addr(lp).is_err());
            let t1 = t.clone();
            // Not connected any more: any address will do.
            client.send_to(lp, b"y".to_vec(), nobody, move |_, sent| {
                assert_eq!(sent.unwrap(), 1);
                t1.log("sent to nobody");
            });
            let t = t.clone();
            client.send(lp, b"z".to_vec(), move |lp, sent| {
                t.log(sent.unwrap_err().to_string());
                client.close(lp);
                server.close(lp);
            });
        },
        move |_, _, error| t2.log(format!("error {error}")),
    );
    client.send(lp, b"ping".to_vec(), |_, sent| assert_eq!(sent.unwrap(), 4));
    run_within(lp, LIMIT);
    trace.assert(&[
        &format!("send EISCONN {nobody}"),
        "echo ping",
        "sent to nobody",
        "send EDESTADDRREQ",
    ]);

    // Connected to nobody: the ICMP refusal comes back as a receive error,
    // and the socket lives on.
    let client = bind(lp, v4());
    client.connect(lp, nobody).unwrap();
    let trace = Trace::default();
    let t = trace.clone();
    client.recv_start(
        lp,
        |_, _, _, _| panic!("nobody answers"),
        move |lp, client, error| {
            t.log(error.to_string());
            assert_eq!(error.code(), Some("ECONNREFUSED"));
            assert_eq!(client.remote_addr(lp).unwrap(), nobody);
            client.close(lp);
        },
    );
    client.send(lp, b"anyone?".to_vec(), |_, sent| {
        assert_eq!(sent.unwrap(), 7)
    });
    run_within(lp, LIMIT);
    trace.assert(&["recvmsg ECONNREFUSED"]);
}

/// As Node's dgram: a datagram sent at once is called back as a next-tick
/// (behind the ticks queued after the call, and before the check phase's
/// immediates: Node prints `tick`, `send-cb`, `immediate`), never inside
/// the call.
fn a_send_calls_back_as_a_next_tick_never_inside_the_call(lp: &mut Loop) {
    let socket = bind(lp, v4());
    let to = socket.local_addr(lp).unwrap();
    let trace = Trace::default();
    let t = trace.clone();
    socket.send_to(lp, b"hi".to_vec(), to, move |lp, n| {
        assert_eq!(n.unwrap(), 2);
        t.log("send callback");
        socket.close(lp);
    });
    lp.next_tick(trace.at("tick"));
    lp.set_immediate(trace.at("immediate"));
    trace.assert(&[]);
    run_within(lp, LIMIT);
    trace.assert(&["tick", "send callback", "immediate"]);
}

/// Receiving keeps the loop alive; `recv_stop` lets it end with the socket
/// still open, and a later `recv_start` receives what waited meanwhile.
fn receiving_keeps_the_loop_alive_and_recv_stop_lets_it_end(lp: &mut Loop) {
    let server = bind(lp, v4());
    let to = server.local_addr(lp).unwrap();
    let client = bind(lp, v4());
    let got = Rc::new(RefCell::new(Vec::new()));
    let g = Rc::clone(&got);
    server.recv_start(
        lp,
        move |lp, server, data, _| {
            g.borrow_mut().push(data.to_vec());
            assert!(server.recv_stop(lp));
        },
        no_error,
    );
    // Sent a while after the loop starts: only the receive keeps it alive.
    lp.set_timeout(Duration::from_millis(20), move |lp| {
        client.send_to(lp, b"one".to_vec(), to, |_, n| assert_eq!(n.unwrap(), 3));
        client.send_to(lp, b"two".to_vec(), to, |_, n| assert_eq!(n.unwrap(), 3));
    });
    run_within(lp, LIMIT);
    assert_eq!(*got.borrow(), [b"one".to_vec()]);
    // The socket is still open; the second datagram waited in the kernel.
    let g = Rc::clone(&got);
    server.recv_start(
        lp,
        move |lp, server, data, _| {
            g.borrow_mut().push(data.to_vec());
            server.close(lp);
        },
        no_error,
    );
    run_within(lp, LIMIT);
    assert_eq!(*got.borrow(), [b"one".to_vec(), b"two".to_vec()]);
    client.close(lp);
    run_within(lp, LIMIT);
}

/// Multicast on loopback: a receiver joins 239.255.77.x on 127.0.0.1 (the
/// `lo` interface), a sender sends there through `lo` with loopback on,
/// and the datagram arrives. The receiver binds the group address itself
/// (not 0.0.0.0), so nothing outside the host is touched. Joining twice,
/// leaving a group not joined and joining a unicast address fail as in
/// Node.
fn multicast_on_loopback_joins_receives_and_leaves(lp: &mut Loop) {
    let group = Ipv4Addr::new(239, 255, 77, 1 + (std::process::id() % 200) as u8);
    let lo = MulticastInterface::V4(Ipv4Addr::LOCALHOST);
    let options = UdpOptions::default().reuse_addr(true);
    let receiver = lp
        .udp_bind(SocketAddr::new(IpAddr::V4(group), 0), options)
        .expect("bind the group address");
    let port = receiver.local_addr(lp).unwrap().port();
    receiver
        .add_membership(lp, IpAddr::V4(group), lo)
        .expect("join");
    let again = receiver
        .add_membership(lp, IpAddr::V4(group), lo)
        .unwrap_err();
    assert_eq!(again.to_string(), "addMembership EADDRINUSE");
    let unicast = IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4));
    let error = receiver.add_membership(lp, unicast, lo).unwrap_err();
    assert_eq!(error.to_string(), "addMembership EINVAL");
    let v6_group: IpAddr = "ff02::1:3".parse().unwrap();
    let error = receiver.add_membership(lp, v6_group, lo).unwrap_err();
    assert_eq!(
        error.to_string(),
        "addMembership EINVAL",
        "an IPv4 interface"
    );
    let error = receiver
        .add_membership(lp, v6_group, MulticastInterface::Default)
        .unwrap_err();
    assert_eq!(error.to_string(), "addMembership ENOPROTOOPT");

    let sender = bind(lp, v4());
    sender.set_multicast_interface(lp, lo).unwrap();
    sender.set_multicast_loopback(lp, true).unwrap();
    sender.set_multicast_ttl(lp, 1).unwrap();
    let from = sender.local_addr(lp).unwrap();
    let got = Rc::new(RefCell::new(None));
    let g = Rc::clone(&got);
    receiver.recv_start(
        lp,
        move |lp, receiver, data, sent_from| {
            *g.borrow_mut() = Some((data.to_vec(), sent_from));
            receiver
                .drop_membership(lp, IpAddr::V4(group), lo)
                .expect("leave");
            let error = receiver
                .drop_membership(lp, IpAddr::V4(group), lo)
                .unwrap_err();
            assert_eq!(error.to_string(), "dropMembership EADDRNOTAVAIL");
            receiver.close(lp);
            sender.close(lp);
        },
        no_error,
    );
    let to = SocketAddr::new(IpAddr::V4(group), port);
    sender.send_to(lp, b"to the group".to_vec(), to, |_, n| {
        assert_eq!(n.unwrap(), 12);
    });
    run_within(lp, LIMIT);
    let (data, sent_from) = got.take().expect("the group datagram arrived");
    assert_eq!(data, b"to the group");
    assert_eq!(sent_from, from);
}

/// IPv6 groups: joined and left on interface 1 (`lo`), where the kernel
/// allows it; an IPv4 group joins a dual-stack IPv6 socket too (as in Node);
/// an interface of the other family than the group is `EINVAL`.
fn ipv6_multicast_membership_joins_and_leaves(lp: &mut Loop) {
    let Ok(socket) = lp.udp_bind(v6(), UdpOptions::default()) else {
        eprintln!("skipped: no ::1 here");
        return;
    };
    let group: IpAddr = "ff02::1:3".parse().unwrap();
    let v4_group = IpAddr::V4(Ipv4Addr::new(239, 255, 77, 1));
    let lo = MulticastInterface::V6(1);
    let error = socket.add_membership(lp, v4_group, lo).unwrap_err();
    assert_eq!(error.to_string(), "addMembership EINVAL");
    let error = socket
        .add_membership(lp, group, MulticastInterface::V4(Ipv4Addr::LOCALHOST))
        .unwrap_err();
    assert_eq!(error.to_string(), "addMembership EINVAL");
    let any = MulticastInterface::Default;
    socket
        .add_membership(lp, v4_group, any)
        .expect("an IPv4 group on a dual-stack socket");
    socket.drop_membership(lp, v4_group, any).expect("left");
    match socket.add_membership(lp, group, lo) {
        Ok(()) => {
            socket.drop_membership(lp, group, lo).expect("leave");
            let error = socket.drop_membership(lp, group, lo).unwrap_err();
            assert_eq!(error.code(), Some("EADDRNOTAVAIL"), "{error}");
        }
        Err(error) => eprintln!("IPv6 join on lo refused here: {error}"),
    }
    socket.set_multicast_interface(lp, lo).unwrap();
    socket.set_multicast_ttl(lp, 1).unwrap();
    socket.set_ttl(lp, 64).unwrap();
    socket.close(lp);
    run_within(lp, LIMIT);
}

/// A loop's UDP sockets are closed once the loop is gone: after the
/// first loop is dropped, its socket's address can be bound again.
fn a_dropped_loops_sockets_are_closed(lp: &mut Loop) {
    let mut first = util::new_loop(lp.backend()).expect("a second loop");
    let socket = bind(&mut first, v4());
    let addr = socket.local_addr(&first).unwrap();
    socket.recv_start(&mut first, |_, _, _, _| {}, no_error);
    let taken = lp.udp_bind(addr, UdpOptions::default()).unwrap_err();
    assert_eq!(taken.code(), Some("EADDRINUSE"));
    drop(first);
    let again = lp
        .udp_bind(addr, UdpOptions::default())
        .expect("free again");
    again.close(lp);
    run_within(lp, LIMIT);
}

/// An unreferenced receiving socket lets the loop end; it still receives
/// while something else keeps the loop running; referenced again, it keeps
/// the loop alive by itself.
fn an_unreferenced_socket_does_not_keep_the_loop_alive(lp: &mut Loop) {
    let server = bind(lp, v4());
    let to = server.local_addr(lp).unwrap();
    let client = bind(lp, v4());
    let got = Rc::new(RefCell::new(Vec::new()));
    let g = Rc::clone(&got);
    server.recv_start(
        lp,
        move |_, _, data, _| g.borrow_mut().push(data.to_vec()),
        no_error,
    );
    assert!(server.has_ref(lp));
    assert!(server.unref(lp));
    assert!(!server.has_ref(lp));
    // Nothing else: run() returns, the receive still armed (bounded: a
    // socket that kept the loop alive would fail here, not hang).
    run_within(lp, LIMIT);
    assert!(!lp.alive());
    assert!(got.borrow().is_empty());
    // A referenced timer keeps the loop running: the datagram sent before
    // it fires is received meanwhile.
    client.send_to(lp, b"while a timer runs".to_vec(), to, |_, n| {
        n.unwrap();
    });
    let g = Rc::clone(&got);
    lp.set_timeout(Duration::from_millis(50), move |_| {
        assert_eq!(g.borrow().len(), 1, "received before the timer fired");
    });
    run_within(lp, LIMIT);
    assert_eq!(*got.borrow(), [b"while a timer runs".to_vec()]);
    // Referenced again: the socket alone keeps the loop alive until it
    // receives and closes itself.
    assert!(server.set_ref(lp, true));
    let g = Rc::clone(&got);
    server.recv_start(
        lp,
        move |lp, server, data, _| {
            g.borrow_mut().push(data.to_vec());
            server.close(lp);
        },
        no_error,
    );
    assert!(lp.alive());
    lp.set_timeout(Duration::from_millis(20), move |lp| {
        client.send_to(lp, b"late".to_vec(), to, move |lp, n| {
            n.unwrap();
            client.close(lp);
        });
    });
    run_within(lp, LIMIT);
    assert_eq!(got.borrow().len(), 2);
    assert!(!server.has_ref(lp), "closed");
    assert!(!server.set_ref(lp, false), "closed");
}

/// A datagram is sent from the memory the caller gives, in every form:
/// a `Vec`, a literal, a shared `Rc<[u8]>` (the same one to two
/// receivers, never copied into a `Vec` first), an `Arc<[u8]>`, any
/// owner; each arrives whole, and the shared buffer is the caller's again
/// once sent.
fn datagrams_go_from_every_buffer_form(lp: &mut Loop) {
    let got = Rc::new(RefCell::new(Vec::new()));
    let receiver = bind(lp, v4());
    let g = Rc::clone(&got);
    receiver.recv_start(
        lp,
        move |lp, receiver, data, _| {
            g.borrow_mut().push(data.to_vec());
            if g.borrow().len() == 6 {
                receiver.close(lp);
            }
        },
        no_error,
    );
    let to = receiver.local_addr(lp).unwrap();
    let sender = bind(lp, v4());
    let shared: Rc<[u8]> = Rc::from(&b"shared"[..]);
    let sent = Rc::new(Cell::new(0));
    let count = |expected: usize| {
        let sent = Rc::clone(&sent);
        move |_: &mut Loop, n: eventide::Result<usize>| {
            assert_eq!(n.unwrap(), expected);
            sent.set(sent.get() + 1);
        }
    };
    sender.send_to(lp, b"vec".to_vec(), to, count(3));
    sender.send_to(lp, b"static", to, count(6));
    sender.send_to(lp, Rc::clone(&shared), to, count(6));
    sender.send_to(lp, Rc::clone(&shared), to, count(6));
    let arc: std::sync::Arc<[u8]> = std::sync::Arc::from(&b"arc"[..]);
    sender.send_to(lp, arc, to, count(3));
    sender.send_to(
        lp,
        eventide::net::WriteBuf::from_owner(*b"owner"),
        to,
        count(5),
    );
    run_within(lp, LIMIT);
    sender.close(lp);
    assert_eq!(sent.get(), 6);
    let mut got = got.take();
    got.sort();
    let mut want: Vec<Vec<u8>> = ["arc", "owner", "shared", "shared", "static", "vec"]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(Rc::strong_count(&shared), 1, "the socket let it go");
}

on_every_backend!(
    datagrams_go_from_every_buffer_form,
    an_unreferenced_socket_does_not_keep_the_loop_alive,
    an_echo_round_trip_over_ipv4_returns_the_same_bytes,
    an_echo_round_trip_over_ipv6_returns_the_same_bytes,
    many_datagrams_arrive_in_order_with_their_bytes,
    a_datagram_over_the_ipv4_limit_fails_with_emsgsize,
    a_datagram_over_max_datagram_is_reported_and_the_next_one_arrives,
    closing_a_socket_inside_its_receive_callback_stops_it_there,
    a_stale_socket_fails_sends_and_never_reaches_a_new_socket,
    binding_a_taken_address_fails_with_eaddrinuse,
    out_of_range_ttls_fail_as_nodes_do,
    a_connected_socket_sends_to_its_peer_and_hears_refusals,
    a_send_calls_back_as_a_next_tick_never_inside_the_call,
    receiving_keeps_the_loop_alive_and_recv_stop_lets_it_end,
    multicast_on_loopback_joins_receives_and_leaves,
    ipv6_multicast_membership_joins_and_leaves,
    a_dropped_loops_sockets_are_closed,
);
