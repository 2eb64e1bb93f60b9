//! Node's `'close'` event for streams (`TcpStream::on_close`), on every
//! backend: one callback, once, however the stream ends, with whether an
//! error ended it; and a reset reported as an error on every backend,
//! never as a clean end.

mod util;

use std::cell::RefCell;
use std::io::Read;
use std::net::{Shutdown, SocketAddr, TcpStream as StdStream};
use std::rc::Rc;
use std::thread;
use std::time::Duration;

use eventide::Loop;
use eventide::net::{ListenOptions, TcpListener, TcpStream};
use util::run_within;

const LIMIT: Duration = Duration::from_secs(60);

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// What happened to each server stream, in order.
type Log = Rc<RefCell<Vec<String>>>;

/// A listener whose connections get `serve`, with their close events
/// (`close:false`/`close:true`) and reader ends (`end:ok`/`end:CODE`)
/// logged; it closes after `connections` connections.
fn server(
    lp: &mut Loop,
    connections: usize,
    serve: impl Fn(&mut Loop, TcpStream, Log) + 'static,
) -> (SocketAddr, Log) {
    let log: Log = Rc::default();
    let l = Rc::clone(&log);
    let accepted_so_far = Rc::new(RefCell::new(0));
    let me: Rc<RefCell<Option<TcpListener>>> = Rc::default();
    let m = Rc::clone(&me);
    let listener = lp
        .tcp_listen(loopback(), ListenOptions::default(), move |lp, accepted| {
            let stream = accepted.expect("accepted");
            let log = Rc::clone(&l);
            stream.on_close(lp, move |_, _, had_error| {
                log.borrow_mut().push(format!("close:{had_error}"));
            });
            serve(lp, stream, Rc::clone(&l));
            *accepted_so_far.borrow_mut() += 1;
            if *accepted_so_far.borrow() == connections
                && let Some(listener) = m.borrow_mut().take()
            {
                listener.close(lp);
            }
        })
        .unwrap();
    *me.borrow_mut() = Some(listener);
    (listener.local_addr(lp).unwrap(), log)
}

/// Reads, logging how the reading ended.
fn read_logging(lp: &mut Loop, stream: TcpStream, log: Log) {
    stream.read_start(
        lp,
        |_, _, _| {},
        move |_, _, end| {
            let what = match end {
                Ok(()) => "end:ok".to_owned(),
                Err(error) => format!("end:{}", error.code().unwrap_or("?")),
            };
            log.borrow_mut().push(what);
        },
    );
}

fn closed_by_close_reports_a_clean_close_once(lp: &mut Loop) {
    let (addr, log) = server(lp, 1, |lp, stream, log| {
        read_logging(lp, stream, log);
        lp.set_timeout(Duration::from_millis(20), move |lp| {
            assert!(stream.close(lp));
            assert!(!stream.close(lp));
        });
    });
    let client = thread::spawn(move || {
        let mut s = StdStream::connect(addr).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    });
    run_within(lp, LIMIT);
    client.join().unwrap();
    assert_eq!(*log.borrow(), ["close:false"]);
}

fn a_reset_while_reading_is_an_error_and_one_close_with_error(lp: &mut Loop) {
    let (addr, log) = server(lp, 1, read_logging);
    let client = thread::spawn(move || {
        let s = StdStream::connect(addr).unwrap();
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        thread::sleep(Duration::from_millis(20));
        drop(s); // RST
    });
    run_within(lp, LIMIT);
    client.join().unwrap();
    assert_eq!(*log.borrow(), ["end:ECONNRESET", "close:true"]);
}

fn a_peer_that_ends_then_resets_while_we_write_closes_with_error(lp: &mut Loop) {
    // The peer sends its FIN (a clean end for the reader), then resets
    // while the stream still writes: the close event says so, once.
    let (addr, log) = server(lp, 1, |lp, stream, log| {
        stream.set_allow_half_open(lp, true);
        let writes = Rc::new(RefCell::new(0));
        let w = Rc::clone(&writes);
        stream.read_start(
            lp,
            |_, _, _| {},
            move |lp, stream, end| {
                end.unwrap();
                log.borrow_mut().push("end:ok".to_owned());
                for _ in 0..64 {
                    let w = Rc::clone(&w);
                    stream.write(lp, vec![5; 256 * 1024], move |_, res| {
                        if res.is_err() {
                            *w.borrow_mut() += 1;
                        }
                    });
                }
            },
        );
    });
    let client = thread::spawn(move || {
        let mut s = StdStream::connect(addr).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut buf = vec![0; 64 * 1024];
        s.read_exact(&mut buf).unwrap();
        drop(s); // unread data: RST
    });
    run_within(lp, LIMIT);
    client.join().unwrap();
    assert_eq!(*log.borrow(), ["end:ok", "close:true"]);
}

fn an_end_that_completes_reports_a_clean_close(lp: &mut Loop) {
    let (addr, log) = server(lp, 1, |lp, stream, log| {
        read_logging(lp, stream, log);
        stream.write(lp, b"bye".to_vec(), |_, res| res.unwrap());
        stream.end(lp);
    });
    let client = thread::spawn(move || {
        let mut s = StdStream::connect(addr).unwrap();
        let mut back = Vec::new();
        s.read_to_end(&mut back).unwrap();
        assert_eq!(back, b"bye");
        s.shutdown(Shutdown::Write).unwrap();
    });
    run_within(lp, LIMIT);
    client.join().unwrap();
    assert_eq!(*log.borrow(), ["end:ok", "close:false"]);
}

fn the_close_event_runs_before_close_then_and_after_the_cancelled(lp: &mut Loop) {
    let (addr, log) = server(lp, 1, |lp, stream, log| {
        stream.set_high_water_mark(lp, 1);
        let l = Rc::clone(&log);
        // Far more than the socket takes at once: still queued at the
        // close.
        stream.write(lp, vec![0; 64 << 20], move |_, res| {
            let error = res.expect_err("cancelled");
            l.borrow_mut()
                .push(format!("write:{}", error.code().unwrap()));
        });
        let l = Rc::clone(&log);
        stream.close_then(lp, move |_| l.borrow_mut().push("close_then".to_owned()));
    });
    let client = thread::spawn(move || {
        let _s = StdStream::connect(addr).unwrap();
        thread::sleep(Duration::from_millis(50));
    });
    run_within(lp, LIMIT);
    client.join().unwrap();
    assert_eq!(
        *log.borrow(),
        ["write:ECANCELED", "close:false", "close_then"]
    );
}

fn twenty_clients_that_close_with_data_unread_are_all_errors(lp: &mut Loop) {
    // The server queues 8 MiB to each of 20 clients; each reads 1 MiB and
    // closes with data unread (a reset). Every stream's reader ends with
    // an error and its close event says so, on every backend.
    let clients = 20;
    let (addr, log) = server(lp, clients, |lp, stream, log| {
        read_logging(lp, stream, log);
        for _ in 0..8 {
            stream.write(lp, vec![9; 1 << 20], |_, _| {});
        }
    });
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            thread::spawn(move || {
                let mut s = StdStream::connect(addr).unwrap();
                s.set_read_timeout(Some(LIMIT)).unwrap();
                let mut buf = vec![0; 1 << 20];
                s.read_exact(&mut buf).unwrap();
                // Data is waiting unread (a peek blocks until some is
                // there): the close is a reset, never a FIN.
                s.peek(&mut buf[..1]).unwrap();
                drop(s);
            })
        })
        .collect();
    run_within(lp, LIMIT);
    for t in threads {
        t.join().unwrap();
    }
    let log = log.borrow();
    let clean = log.iter().filter(|w| *w == "end:ok").count();
    let ends = log.iter().filter(|w| w.starts_with("end:")).count();
    let closes_with_error = log.iter().filter(|w| *w == "close:true").count();
    assert_eq!(
        (ends, clean, closes_with_error),
        (clients, 0, clients),
        "{log:?}"
    );
}

fn a_write_error_ends_the_reader_with_that_error(lp: &mut Loop) {
    // The reader is in place but paused: the reset shows first to the
    // write, which destroys the stream; the reader ends with its error.
    let (addr, log) = server(lp, 1, |lp, stream, log| {
        read_logging(lp, stream, Rc::clone(&log));
        stream.read_stop(lp);
        let l = Rc::clone(&log);
        lp.set_timeout(Duration::from_millis(100), move |lp| {
            for _ in 0..8 {
                let l = Rc::clone(&l);
                stream.write(lp, vec![1; 1 << 20], move |_, res| {
                    let error = res.expect_err("the peer reset");
                    l.borrow_mut()
                        .push(format!("write:{}", error.code().unwrap_or("?")));
                });
            }
        });
    });
    let client = thread::spawn(move || {
        let s = StdStream::connect(addr).unwrap();
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s);
    });
    run_within(lp, LIMIT);
    client.join().unwrap();
    let log = log.borrow();
    // The head write's error, the reader's with the same code, the other
    // writes', then the close event.
    let code = log[0].strip_prefix("write:").expect("a write failed first");
    assert!(matches!(code, "ECONNRESET" | "EPIPE"), "{log:?}");
    assert_eq!(count_in(&log, &format!("end:{code}")), 1, "{log:?}");
    assert_eq!(count_in(&log, "close:true"), 1, "{log:?}");
    assert_eq!(log.last().map(String::as_str), Some("close:true"));
}

fn a_reset_whose_error_was_taken_first_is_still_a_reset(lp: &mut Loop) {
    // What io_uring does when a send and the receive wake on a reset
    // together: the send takes the socket's error (here: SO_ERROR, read
    // through the descriptor), the receive then reads 0. That is a reset,
    // not the peer's end, on every backend.
    let (addr, log) = server(lp, 1, |lp, stream, log| {
        lp.set_timeout(Duration::from_millis(100), move |lp| {
            let fd = stream.raw_fd(lp).unwrap();
            let mut error: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: SO_ERROR writes one c_int into `error`; the stream
            // owns the open descriptor.
            let rc = unsafe {
                libc::getsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_ERROR,
                    (&raw mut error).cast(),
                    &mut len,
                )
            };
            assert_eq!((rc, error), (0, libc::ECONNRESET), "the peer reset");
            read_logging(lp, stream, log.clone());
        });
    });
    let client = thread::spawn(move || {
        let s = StdStream::connect(addr).unwrap();
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s);
    });
    run_within(lp, LIMIT);
    client.join().unwrap();
    assert_eq!(*log.borrow(), ["end:ECONNRESET", "close:true"]);
}

fn count_in(log: &[String], what: &str) -> usize {
    log.iter().filter(|w| *w == what).count()
}

on_every_backend!(
    closed_by_close_reports_a_clean_close_once,
    a_reset_while_reading_is_an_error_and_one_close_with_error,
    a_peer_that_ends_then_resets_while_we_write_closes_with_error,
    an_end_that_completes_reports_a_clean_close,
    the_close_event_runs_before_close_then_and_after_the_cancelled,
    twenty_clients_that_close_with_data_unread_are_all_errors,
    a_write_error_ends_the_reader_with_that_error,
    a_reset_whose_error_was_taken_first_is_still_a_reset,
);
