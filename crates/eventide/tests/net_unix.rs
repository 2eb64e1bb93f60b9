//! Unix domain stream sockets on every backend: the stream API of TCP
//! (echo, half-close, a large transfer with backpressure), Node's errors
//! with the path, and the socket file's life.

mod util;

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use eventide::Loop;
use eventide::net::{ListenOptions, UnixListener, UnixStream};
use util::{outcome, run_within};

const LIMIT: Duration = Duration::from_secs(30);

/// An echo server on `dir/name`: echoes, and ends its side when the peer
/// ends its own.
fn echo_server(lp: &mut Loop, path: &Path) -> UnixListener {
    lp.unix_listen(path, ListenOptions::default(), |lp, accepted| {
        let stream = accepted.expect("accepted");
        stream.read_start(
            lp,
            |lp, stream, data| {
                stream.write(lp, data.to_vec(), |_, res| res.unwrap());
            },
            |lp, stream, end| {
                end.unwrap();
                stream.shutdown(lp, move |lp, _| {
                    stream.close(lp);
                });
            },
        );
    })
    .expect("listen")
}

fn socket_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("echo.sock")
}

fn a_unix_stream_echoes_and_half_closes_like_tcp(lp: &mut Loop) {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_path(&dir);
    let server = echo_server(lp, &path);
    assert!(path.exists(), "the bind made the socket file");
    let got = Rc::new(RefCell::new(Vec::new()));
    let g = Rc::clone(&got);
    lp.unix_connect(&path, move |lp, connected| {
        let stream = connected.expect("connected");
        stream.write(lp, b"over a unix socket".to_vec(), |_, res| res.unwrap());
        stream.shutdown(lp, |_, res| res.unwrap());
        stream.read_start(
            lp,
            move |_, _, data| g.borrow_mut().extend_from_slice(data),
            move |lp, stream, end| {
                end.expect("the server ended its side");
                stream.close(lp);
                server.close(lp);
            },
        );
    })
    .unwrap();
    run_within(lp, LIMIT);
    assert_eq!(&got.borrow()[..], b"over a unix socket");
    assert!(
        !path.exists(),
        "closing the listener removed the socket file"
    );
}

fn eight_mebibytes_cross_a_unix_socket_under_backpressure(lp: &mut Loop) {
    const TOTAL: usize = 8 << 20;
    const CHUNK: usize = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let path = socket_path(&dir);
    let server = echo_server(lp, &path);
    let received = Rc::new(Cell::new(0usize));
    let intact = Rc::new(Cell::new(true));
    let drains = Rc::new(Cell::new(0));
    let (r, i, d) = (Rc::clone(&received), Rc::clone(&intact), Rc::clone(&drains));
    let written = Rc::new(Cell::new(0usize));
    let stream = lp
        .unix_connect(&path, move |lp, connected| {
            let stream = connected.unwrap();
            stream.read_start(
                lp,
                move |_, _, data| {
                    let at = r.get();
                    i.set(i.get() && data.iter().enumerate().all(|(k, b)| *b == byte(at + k)));
                    r.set(at + data.len());
                },
                move |lp, stream, end| {
                    end.unwrap();
                    stream.close(lp);
                    server.close(lp);
                },
            );
        })
        .unwrap();
    let w = Rc::clone(&written);
    let write_some = Rc::new(move |lp: &mut Loop, stream: UnixStream| {
        while w.get() < TOTAL && !stream.need_drain(lp) {
            let at = w.get();
            let len = CHUNK.min(TOTAL - at);
            stream.write(lp, (at..at + len).map(byte).collect::<Vec<u8>>(), |_, r| {
                r.unwrap()
            });
            w.set(at + len);
            if w.get() == TOTAL {
                stream.shutdown(lp, |_, res| res.unwrap());
            }
        }
    });
    let again = Rc::clone(&write_some);
    stream.on_drain(lp, move |lp, stream| {
        d.set(d.get() + 1);
        again(lp, stream);
    });
    write_some(lp, stream);
    run_within(lp, LIMIT);
    assert_eq!(received.get(), TOTAL);
    assert!(intact.get(), "bytes changed on the way");
    assert!(drains.get() > 0, "backpressure never applied");
}

fn byte(at: usize) -> u8 {
    (at % 253) as u8
}

fn connecting_to_a_missing_path_fails_with_nodes_message(lp: &mut Loop) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nobody.sock");
    let result = outcome(lp, |lp, done| {
        lp.unix_connect(&path, |lp, res| done(lp, res.map(drop)))
            .unwrap();
    });
    let error = result.unwrap_err();
    assert_eq!(error.code(), Some("ENOENT"));
    assert_eq!(
        error.to_string(),
        format!("connect ENOENT {}", path.display())
    );
}

fn listening_on_a_taken_path_fails_with_nodes_message(lp: &mut Loop) {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_path(&dir);
    let first = echo_server(lp, &path);
    let error = lp
        .unix_listen(&path, ListenOptions::default(), |_, _| {})
        .unwrap_err();
    assert_eq!(error.code(), Some("EADDRINUSE"));
    assert_eq!(
        error.to_string(),
        format!(
            "listen EADDRINUSE: address already in use {}",
            path.display()
        )
    );
    // The failed listen left the first one's file alone.
    assert!(path.exists());
    first.close(lp);
    run_within(lp, LIMIT);
    // A plain file in the way is refused too, and not removed.
    std::fs::write(&path, b"not a socket").unwrap();
    let error = lp
        .unix_listen(&path, ListenOptions::default(), |_, _| {})
        .unwrap_err();
    assert_eq!(error.code(), Some("EADDRINUSE"));
    assert_eq!(std::fs::read(&path).unwrap(), b"not a socket");
}

fn a_unix_stream_closed_inside_its_read_callback_reads_no_more(lp: &mut Loop) {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_path(&dir);
    let server = lp
        .unix_listen(&path, ListenOptions::default(), |lp, accepted| {
            let stream = accepted.unwrap();
            for _ in 0..10 {
                stream.write(lp, vec![7; 10_000], |_, _| {});
            }
        })
        .unwrap();
    let chunks = Rc::new(Cell::new(0));
    let c = Rc::clone(&chunks);
    lp.unix_connect(&path, move |lp, connected| {
        let stream = connected.unwrap();
        stream.read_start(
            lp,
            move |lp, stream, _| {
                c.set(c.get() + 1);
                assert!(stream.close(lp));
                server.close(lp);
            },
            |_, _, _| panic!("a closed stream's reader hears nothing more"),
        );
    })
    .unwrap();
    run_within(lp, LIMIT);
    assert_eq!(chunks.get(), 1);
}

/// A Unix domain stream's own methods: the peer's credentials and the
/// paths of each end; the listener's path. (TCP's options are not there:
/// `set_nodelay` on a `UnixStream` does not compile.)
fn a_unix_stream_knows_its_peers_credentials_and_paths(lp: &mut Loop) {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_path(&dir);
    let seen = Rc::new(RefCell::new(Vec::new()));
    let server_side = Rc::clone(&seen);
    let handle = Rc::new(Cell::new(None::<UnixListener>));
    let h = Rc::clone(&handle);
    let listener = lp
        .unix_listen(&path, ListenOptions::default(), move |lp, accepted| {
            let stream = accepted.expect("accepted");
            let cred = stream.peer_cred(lp).expect("SO_PEERCRED");
            server_side.borrow_mut().push(format!(
                "server: peer pid {} uid {} gid {}; local {:?}; peer {:?}",
                cred.pid == std::process::id() as i32,
                // SAFETY: getuid and getgid cannot fail.
                cred.uid == unsafe { libc::getuid() },
                // SAFETY: as above.
                cred.gid == unsafe { libc::getgid() },
                stream
                    .local_path(lp)
                    .unwrap()
                    .map(|p| p.ends_with("echo.sock")),
                stream.peer_path(lp).unwrap(),
            ));
            // Closes once the client has closed (so after its checks).
            let h = Rc::clone(&h);
            stream.read_start(
                lp,
                |_, _, _| {},
                move |lp, stream, _| {
                    stream.close(lp);
                    h.get().map(|listener| listener.close(lp));
                },
            );
        })
        .unwrap();
    handle.set(Some(listener));
    assert_eq!(listener.path(lp).unwrap(), path);
    let client_side = Rc::clone(&seen);
    lp.unix_connect(&path, move |lp, connected| {
        let stream = connected.expect("connected");
        client_side.borrow_mut().push(format!(
            "client: local {:?}; peer {:?}",
            stream.local_path(lp).unwrap(),
            stream
                .peer_path(lp)
                .unwrap()
                .map(|p| p.ends_with("echo.sock")),
        ));
        stream.close(lp);
    })
    .unwrap();
    run_within(lp, LIMIT);
    let mut seen = seen.take();
    seen.sort();
    assert_eq!(
        seen,
        [
            "client: local None; peer Some(true)",
            "server: peer pid true uid true gid true; local Some(true); peer None",
        ]
    );
    assert!(matches!(
        listener.path(lp),
        Err(eventide::Error::Stale { .. })
    ));
}

/// A client writes 640 KiB and ends before the server accepts (its
/// socket buffer takes it all): the server reads every byte, then the
/// end. io_uring's multishot receive delivered the bytes but never the
/// end on AF_UNIX when this much waited (the reactor now receives Unix
/// sockets in single-shot rounds there; `readiness_edge` in the reactor's
/// tests has the system-call-level cases).
fn a_burst_and_the_end_written_before_the_accept_all_arrive(lp: &mut Loop) {
    const TOTAL: usize = 640 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let path = socket_path(&dir);
    let received = Rc::new(RefCell::new(Vec::new()));
    let ended = Rc::new(Cell::new(false));
    let (r, e) = (Rc::clone(&received), Rc::clone(&ended));
    let server = Rc::new(Cell::new(None::<UnixListener>));
    let s = Rc::clone(&server);
    let listener = lp
        .unix_listen(&path, ListenOptions::default(), move |lp, accepted| {
            let stream = accepted.expect("accepted");
            let (r, e, s) = (Rc::clone(&r), Rc::clone(&e), Rc::clone(&s));
            stream.read_start(
                lp,
                move |_, _, data| r.borrow_mut().extend_from_slice(data),
                move |lp, stream, end| {
                    end.expect("a clean end");
                    e.set(true);
                    stream.close(lp);
                    if let Some(l) = s.take() {
                        l.close(lp);
                    }
                },
            );
        })
        .expect("listen");
    server.set(Some(listener));
    // All of it, and the end, before the loop runs (the connection waits
    // in the backlog; the socket buffer is made big enough to hold it).
    let mut client = std::os::unix::net::UnixStream::connect(&path).expect("connect");
    let size: libc::c_int = 4 << 20;
    // SAFETY: the option value is a live c_int of the size given.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&client),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&raw const size).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_SNDBUF: {}", std::io::Error::last_os_error());
    client.set_nonblocking(true).unwrap();
    let data: Vec<u8> = (0..TOTAL).map(byte).collect();
    let mut at = 0;
    while at < TOTAL {
        match std::io::Write::write(&mut client, &data[at..]) {
            Ok(n) => at += n,
            Err(e) => panic!("the socket buffer took {at} of {TOTAL} bytes: {e}"),
        }
    }
    client.shutdown(std::net::Shutdown::Write).unwrap();
    run_within(lp, LIMIT);
    assert!(ended.get(), "the end arrived");
    assert_eq!(received.borrow().len(), TOTAL);
    assert!(*received.borrow() == data, "the bytes arrived changed");
    drop(client);
}

on_every_backend!(
    a_burst_and_the_end_written_before_the_accept_all_arrive,
    a_unix_stream_echoes_and_half_closes_like_tcp,
    a_unix_stream_knows_its_peers_credentials_and_paths,
    eight_mebibytes_cross_a_unix_socket_under_backpressure,
    connecting_to_a_missing_path_fails_with_nodes_message,
    listening_on_a_taken_path_fails_with_nodes_message,
    a_unix_stream_closed_inside_its_read_callback_reads_no_more,
);
