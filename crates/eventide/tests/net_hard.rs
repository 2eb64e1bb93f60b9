//! The hard cases of networking, on every backend: ten thousand
//! concurrent connections to one server, a gibibyte with its bytes
//! checked, a client that vanishes while the server writes to it, and
//! running out of descriptors during accept. (Closing a stream from
//! inside its own read callback is in `net_tcp.rs`.)

mod net_support;
mod util;

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream as StdStream};
use std::rc::Rc;
use std::sync::Mutex;
use std::time::Duration;

use eventide::Loop;
use eventide::net::{ListenOptions, TcpListener, TcpStream};
use util::{in_child, run_child, run_within};

const LIMIT: Duration = Duration::from_secs(120);

/// The tests that hold thousands of descriptors run one at a time (the
/// backends' copies would otherwise share one process's limit).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// The limits on open descriptors.
fn fd_limits() -> libc::rlimit {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into `limit`.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(rc, 0);
    limit
}

/// Sets the soft limit on open descriptors.
fn set_soft_fd_limit(soft: libc::rlim_t) {
    let mut limit = fd_limits();
    limit.rlim_cur = soft;
    // SAFETY: setrlimit reads one valid rlimit.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    assert_eq!(rc, 0);
}

/// Raises the soft limit on open descriptors to the hard one.
fn raise_fd_limit() {
    set_soft_fd_limit(fd_limits().rlim_max);
}

/// The lowest descriptor number not in use.
fn lowest_free_fd() -> i32 {
    // SAFETY: dup of stdin returns a new descriptor (the lowest free one),
    // closed at once.
    unsafe {
        let fd = libc::dup(0);
        assert!(fd >= 0);
        libc::close(fd);
        fd
    }
}

fn backend_name(lp: &Loop) -> &'static str {
    lp.backend().name()
}

/// An echo server that counts its open connections and their peak.
fn counting_echo_server(
    lp: &mut Loop,
    open: Rc<Cell<usize>>,
    peak: Rc<Cell<usize>>,
) -> TcpListener {
    lp.tcp_listen(
        loopback(),
        ListenOptions::default().backlog(4096),
        move |lp, accepted| {
            let stream = accepted.expect("accepted");
            open.set(open.get() + 1);
            peak.set(peak.get().max(open.get()));
            let open = Rc::clone(&open);
            stream.read_start(
                lp,
                |lp, stream, data| {
                    stream.write(lp, data.to_vec(), |_, _| {});
                },
                move |lp, stream, _| {
                    open.set(open.get() - 1);
                    stream.close(lp);
                },
            );
        },
    )
    .expect("listen")
}

const CONNECTIONS: usize = 10_000;

fn ten_thousand_concurrent_connections_to_one_server_all_echo(lp: &mut Loop) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    raise_fd_limit();
    let open = Rc::new(Cell::new(0));
    let peak = Rc::new(Cell::new(0));
    let server = counting_echo_server(lp, Rc::clone(&open), Rc::clone(&peak));
    let addr = server.local_addr(lp).unwrap();
    // The clients live in a child process (one process cannot hold both
    // ends of 10,000 connections under the hard limit of 20,000 here).
    let handle = lp.handle();
    let clients = std::thread::spawn(move || {
        let out = run_child(
            "ten_thousand_clients_hold_their_connections_open",
            &[("EVENTIDE_TEST_ADDR", &addr.to_string())],
        );
        let posted = handle.post(move |lp: &mut Loop| {
            server.close(lp);
        });
        assert!(posted.is_ok(), "the loop is gone");
        out
    });
    run_within(lp, LIMIT);
    let out = clients.join().expect("the client thread");
    assert!(out.contains("10000 echoes"), "{out}");
    assert_eq!(peak.get(), CONNECTIONS, "all connections were open at once");
    assert_eq!(
        open.get(),
        0,
        "each connection was closed when its client left"
    );
}

/// The child of the test above: opens 10,000 connections, sends on each,
/// and reads every echo while all of them are open.
#[test]
#[ignore = "a child process of ten_thousand_concurrent_connections"]
fn ten_thousand_clients_hold_their_connections_open() {
    if !in_child() {
        return;
    }
    raise_fd_limit();
    let addr: SocketAddr = std::env::var("EVENTIDE_TEST_ADDR")
        .unwrap()
        .parse()
        .unwrap();
    let mut streams = Vec::with_capacity(CONNECTIONS);
    for i in 0..CONNECTIONS {
        let mut stream = StdStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        stream.write_all(&(i as u32).to_le_bytes()).unwrap();
        streams.push(stream);
    }
    for (i, stream) in streams.iter_mut().enumerate() {
        let mut back = [0; 4];
        stream.read_exact(&mut back).expect("the echo");
        assert_eq!(u32::from_le_bytes(back) as usize, i);
    }
    println!("{} echoes", streams.len());
}

const GIB: usize = 1 << 30;
/// A prime period: a lost, repeated or reordered chunk shifts the pattern.
const PERIOD: usize = 65_521;
const SEND_CHUNK: usize = 256 << 10;

/// The transfer's bytes: a period of pseudo-random bytes, repeated (twice
/// over, so any window of a period is one slice).
fn pattern() -> Rc<Vec<u8>> {
    let mut x = 0x2545_f491_u32;
    let period: Vec<u8> = (0..PERIOD)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    Rc::new(period.repeat(2 + SEND_CHUNK / PERIOD + 1))
}

/// Whether `data` is what should arrive at offset `at` (memcmp per
/// period: fast in debug builds too).
fn matches_at(pattern: &[u8], at: usize, data: &[u8]) -> bool {
    let mut at = at;
    data.chunks(PERIOD).all(|piece| {
        let start = at % PERIOD;
        at += piece.len();
        pattern[start..start + piece.len()] == *piece
    })
}

fn a_gibibyte_arrives_with_every_byte_checked(lp: &mut Loop) {
    let pattern = pattern();
    let received = Rc::new(Cell::new(0usize));
    let intact = Rc::new(Cell::new(true));
    let (r, i, p) = (
        Rc::clone(&received),
        Rc::clone(&intact),
        Rc::clone(&pattern),
    );
    let server = lp
        .tcp_listen(loopback(), ListenOptions::default(), move |lp, accepted| {
            let (r, i, p) = (Rc::clone(&r), Rc::clone(&i), Rc::clone(&p));
            accepted.unwrap().read_start(
                lp,
                move |_, _, data| {
                    if !matches_at(&p, r.get(), data) {
                        i.set(false);
                    }
                    r.set(r.get() + data.len());
                },
                |lp, stream, end| {
                    end.expect("a clean end");
                    stream.close(lp);
                },
            );
        })
        .unwrap();
    let addr = server.local_addr(lp).unwrap();
    let sent = Rc::new(Cell::new(0usize));
    let send = Rc::new(move |lp: &mut Loop, stream: TcpStream| {
        while sent.get() < GIB && !stream.need_drain(lp) {
            let at = sent.get();
            let len = SEND_CHUNK.min(GIB - at);
            let start = at % PERIOD;
            stream.write(lp, pattern[start..start + len].to_vec(), |_, res| {
                res.expect("written");
            });
            sent.set(at + len);
            if sent.get() == GIB {
                stream.shutdown(lp, move |lp, res| {
                    res.expect("shut down");
                    stream.close(lp);
                    server.close(lp);
                });
            }
        }
    });
    let again = Rc::clone(&send);
    let client = lp
        .tcp_connect(addr, move |lp, connected| send(lp, connected.unwrap()))
        .unwrap();
    client.set_high_water_mark(lp, 1 << 20);
    client.on_drain(lp, move |lp, stream| again(lp, stream));
    run_within(lp, LIMIT);
    assert_eq!(received.get(), GIB);
    assert!(intact.get(), "bytes changed on the way");
}

fn a_client_that_vanishes_mid_write_fails_the_write_and_the_server_lives_on(lp: &mut Loop) {
    let failures = Rc::new(RefCell::new(Vec::new()));
    let f = Rc::clone(&failures);
    let served = Rc::new(Cell::new(0));
    let s = Rc::clone(&served);
    let server = lp
        .tcp_listen(loopback(), ListenOptions::default(), move |lp, accepted| {
            let stream = accepted.unwrap();
            s.set(s.get() + 1);
            if s.get() == 1 {
                // The first client gets far more than its buffers hold.
                for _ in 0..64 {
                    let f = Rc::clone(&f);
                    stream.write(lp, vec![1; 1 << 20], move |_, res| {
                        if let Err(error) = res {
                            f.borrow_mut().push(error);
                        }
                    });
                }
            } else {
                net_support::echo(lp, stream);
            }
        })
        .unwrap();
    let addr = server.local_addr(lp).unwrap();
    let echoed = Rc::new(RefCell::new(Vec::new()));
    let e = Rc::clone(&echoed);
    // The vanishing client: reads a little, then resets the connection.
    let vanish = std::thread::spawn(move || {
        let mut stream = StdStream::connect(addr).unwrap();
        let mut some = vec![0; 1 << 16];
        stream.read_exact(&mut some).unwrap();
        socket2::SockRef::from(&stream)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(stream);
    });
    // Once the first client's writes have failed, a second one is served.
    let f = Rc::clone(&failures);
    lp.set_interval(Duration::from_millis(10), move |lp, id| {
        if f.borrow().is_empty() {
            return;
        }
        lp.clear_timer(id);
        let e = Rc::clone(&e);
        lp.tcp_connect(addr, move |lp, connected| {
            let stream = connected.unwrap();
            stream.write(lp, b"still here?".to_vec(), |_, res| res.unwrap());
            stream.read_start(
                lp,
                move |lp, stream, data| {
                    e.borrow_mut().extend_from_slice(data);
                    stream.close(lp);
                    server.close(lp);
                },
                |_, _, _| {},
            );
        })
        .unwrap();
    });
    run_within(lp, LIMIT);
    vanish.join().unwrap();
    let failures = failures.borrow();
    // Every write still queued got the error: the first with the reset
    // itself, the rest with the same errno.
    assert!(!failures.is_empty());
    for error in failures.iter() {
        assert!(
            matches!(error.code(), Some("ECONNRESET" | "EPIPE")),
            "{error}"
        );
        assert!(error.to_string().starts_with("write E"), "{error}");
    }
    assert_eq!(&echoed.borrow()[..], b"still here?");
}

fn running_out_of_descriptors_during_accept_keeps_serving_and_recovers(lp: &mut Loop) {
    // In a child with a low descriptor limit of its own.
    let backend = backend_name(lp);
    let out = run_child(
        "a_server_out_of_descriptors",
        &[("EVENTIDE_BACKEND", backend)],
    );
    assert!(out.contains("recovered"), "{out}");
}

/// Connections accepted beyond the limit: the server holds `ROOM`
/// descriptors' worth of room, and `CLIENTS` connect at once.
const ROOM: i32 = 4;
const CLIENTS: usize = 12;

/// The child of the test above.
#[test]
#[ignore = "a child process of running_out_of_descriptors_during_accept"]
fn a_server_out_of_descriptors() {
    if !in_child() {
        return;
    }
    let mut lp = Loop::new().unwrap();
    let served = Rc::new(Cell::new(0));
    let s = Rc::clone(&served);
    let server = lp
        .tcp_listen(loopback(), ListenOptions::default(), move |lp, accepted| {
            let stream = accepted.expect("no error reaches the callback");
            s.set(s.get() + 1);
            net_support::echo(lp, stream);
        })
        .unwrap();
    let addr = server.local_addr(&lp).unwrap();
    // The clients connect before the limit drops (the kernel completes
    // the handshakes; nothing is accepted yet).
    let clients: Vec<StdStream> = (0..CLIENTS)
        .map(|_| StdStream::connect(addr).unwrap())
        .collect();
    set_soft_fd_limit((lowest_free_fd() + ROOM) as libc::rlim_t);
    let handle = lp.handle();
    let worker = std::thread::spawn(move || {
        let result = exercise(clients, addr);
        let posted = handle.post(move |lp: &mut Loop| {
            server.close(lp);
        });
        assert!(posted.is_ok(), "the loop is gone");
        result
    });
    run_within(&mut lp, LIMIT);
    let (echoed, dropped) = worker.join().expect("the clients' thread");
    assert!(
        echoed >= 1 && dropped >= 1,
        "{echoed} echoed, {dropped} dropped"
    );
    println!("{echoed} served, {dropped} dropped, then recovered");
}

/// Pings every client: the accepted ones echo, the ones the server had
/// no descriptor for are closed by it. Then the served ones leave, and a
/// new client is served (trying again while the server's descriptors
/// come back). Returns (echoed, dropped).
fn exercise(clients: Vec<StdStream>, addr: SocketAddr) -> (usize, usize) {
    let (mut echoed, mut dropped) = (0, 0);
    let mut served = Vec::new();
    for mut client in clients {
        client
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let _ = client.write_all(b"ping");
        let mut back = [0; 4];
        match client.read(&mut back) {
            Ok(4) => {
                assert_eq!(&back, b"ping");
                echoed += 1;
                served.push(client);
            }
            Ok(0) => dropped += 1,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => dropped += 1,
            other => panic!("neither served nor dropped: {other:?}"),
        }
    }
    // The served connections are still served.
    for client in &mut served {
        client.write_all(b"more").unwrap();
        let mut back = [0; 4];
        client.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"more");
    }
    drop(served);
    for _ in 0..200 {
        std::thread::sleep(Duration::from_millis(10));
        let Ok(mut client) = StdStream::connect(addr) else {
            continue;
        };
        client
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let _ = client.write_all(b"back");
        let mut back = [0; 4];
        if matches!(client.read(&mut back), Ok(4)) {
            assert_eq!(&back, b"back");
            return (echoed, dropped);
        }
    }
    panic!("the server never served again");
}

on_every_backend!(
    ten_thousand_concurrent_connections_to_one_server_all_echo,
    a_gibibyte_arrives_with_every_byte_checked,
    a_client_that_vanishes_mid_write_fails_the_write_and_the_server_lives_on,
    running_out_of_descriptors_during_accept_keeps_serving_and_recovers,
);
