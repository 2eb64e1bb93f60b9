//! SIGPIPE never kills a process with a loop: a write to a pipe or socket
//! whose reader is gone is an `EPIPE` error to its callback.
//!
//! The Rust runtime already ignores SIGPIPE before `main`, so each case
//! runs in a child process that first puts SIGPIPE back to its default
//! (what a C program embedding eventide, or a Rust one built with the
//! default disposition, has), then makes its loop on one backend. Without
//! the loop's ignore the child dies of SIGPIPE and the parent test fails.

mod util;

use std::cell::{Cell, RefCell};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::rc::Rc;
use std::time::Duration;

use eventide::fs::Flags;
use eventide::net::ListenOptions;
use eventide::{BackendChoice, BackendKind, Loop};
use util::{in_child, run_child, run_within};

const LIMIT: Duration = Duration::from_secs(10);

fn sigpipe_disposition() -> libc::sighandler_t {
    // SAFETY: an all-zero sigaction is a valid buffer; a null new action
    // only queries.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        assert_eq!(
            libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut old),
            0
        );
        old.sa_sigaction
    }
}

/// SIGPIPE back to its default, then a loop on the backend the parent
/// chose (`SIGPIPE_BACKEND`).
fn child_loop() -> Loop {
    // SAFETY: an all-zero sigaction with SIG_DFL is valid.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = libc::SIG_DFL;
        assert_eq!(
            libc::sigaction(libc::SIGPIPE, &action, std::ptr::null_mut()),
            0
        );
    }
    assert_eq!(sigpipe_disposition(), libc::SIG_DFL);
    let backend = match std::env::var("SIGPIPE_BACKEND").unwrap().as_str() {
        "uring" => BackendKind::Uring,
        "epoll" => BackendKind::Epoll,
        _ => BackendKind::Poll,
    };
    let lp = Loop::builder()
        .backend(BackendChoice::Only(backend))
        .build()
        .expect("the parent checked the backend");
    assert_eq!(
        sigpipe_disposition(),
        libc::SIG_IGN,
        "the loop ignores SIGPIPE"
    );
    lp
}

/// A write (through `fs.write`: write(2) on the pool, or io_uring's write)
/// to a FIFO whose reader has closed.
#[test]
#[ignore = "run in a child process by fifo_write_is_epipe"]
fn child_fifo_write() {
    if !in_child() {
        return;
    }
    let mut lp = child_loop();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // A reader, so that opening for writing does not block.
    // SAFETY: as above; the descriptor is closed below.
    let reader = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK) };
    assert!(reader >= 0);
    let got = Rc::new(RefCell::new(None));
    let g = Rc::clone(&got);
    lp.fs()
        .open(&fifo, Flags::new().write(true), 0, move |lp, file| {
            let file = file.expect("open the FIFO for writing");
            // SAFETY: closes the reader opened above, once.
            unsafe { libc::close(reader) };
            lp.fs()
                .write(file, b"lost".to_vec(), None, move |lp, result, _| {
                    *g.borrow_mut() = Some(result.map_err(|e| e.to_string()));
                    lp.fs().close(file, |_, r| r.unwrap());
                });
        });
    run_within(&mut lp, LIMIT);
    let result = got.borrow_mut().take().expect("the write called back");
    assert_eq!(result, Err("EPIPE: broken pipe, write".to_string()));
    println!("fifo write: EPIPE, and alive");
}

/// Writes to a TCP stream whose peer closed: an error (`EPIPE`, or
/// `ECONNRESET` once the peer's reset arrived) to the write's callback.
/// (Sends use MSG_NOSIGNAL already: this holds without the ignore too.)
#[test]
#[ignore = "run in a child process by socket_write_is_an_error"]
fn child_socket_write() {
    if !in_child() {
        return;
    }
    let mut lp = child_loop();
    let server = lp
        .tcp_listen(
            "127.0.0.1:0".parse().unwrap(),
            ListenOptions::default(),
            |lp, accepted| {
                accepted.unwrap().close(lp);
            },
        )
        .unwrap();
    let addr = server.local_addr(&lp).unwrap();
    let error = Rc::new(RefCell::new(None));
    let attempts = Rc::new(Cell::new(0));
    let (e, a) = (Rc::clone(&error), Rc::clone(&attempts));
    lp.tcp_connect(addr, move |lp, stream| {
        let stream = stream.unwrap();
        lp.set_interval(Duration::from_millis(5), move |lp, me| {
            a.set(a.get() + 1);
            if a.get() > 400 {
                lp.clear_timer(me);
                return;
            }
            let e = Rc::clone(&e);
            stream.write(lp, vec![7u8; 4096], move |lp, written| {
                if let Err(error) = written
                    && e.borrow().is_none()
                {
                    *e.borrow_mut() = Some(error.code().unwrap_or("?").to_string());
                    lp.clear_timer(me);
                    server.close(lp);
                }
            });
        });
    })
    .unwrap();
    run_within(&mut lp, LIMIT);
    let code = error.borrow_mut().take().expect("a write failed");
    assert!(code == "EPIPE" || code == "ECONNRESET", "{code}");
    println!("socket write: {code}, and alive");
}

/// A write past the file-size limit (RLIMIT_FSIZE): with SIGXFSZ at its
/// default the kernel kills the process; the loop ignores it, as Node
/// does (`node -e` with `ulimit -f 1` writing 2 KiB: `EFBIG: file too
/// large, write`), so the write's callback gets EFBIG.
#[test]
#[ignore = "run in a child process by write_past_the_file_size_limit_is_efbig"]
fn child_file_too_large() {
    if !in_child() {
        return;
    }
    // SAFETY: an all-zero sigaction with SIG_DFL is valid.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = libc::SIG_DFL;
        assert_eq!(
            libc::sigaction(libc::SIGXFSZ, &action, std::ptr::null_mut()),
            0
        );
    }
    let limit = libc::rlimit {
        rlim_cur: 1024,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit for this process.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &limit) }, 0);
    let mut lp = child_loop();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big");
    let got = Rc::new(RefCell::new(None));
    let g = Rc::clone(&got);
    lp.fs()
        .open(&path, Flags::parse("w").unwrap(), 0o600, move |lp, file| {
            let file = file.expect("open for writing");
            lp.fs()
                .write(file, vec![b'x'; 4096], Some(2048), move |lp, result, _| {
                    *g.borrow_mut() = Some(result.map_err(|e| e.to_string()));
                    lp.fs().close(file, |_, r| r.unwrap());
                });
        });
    run_within(&mut lp, LIMIT);
    let result = got.borrow_mut().take().expect("the write called back");
    assert_eq!(result, Err("EFBIG: file too large, write".to_string()));
    println!("file too large: EFBIG, and alive");
}

#[test]
fn write_past_the_file_size_limit_is_efbig() {
    in_a_child("child_file_too_large", "uring", BackendKind::Uring);
    in_a_child("child_file_too_large", "epoll", BackendKind::Epoll);
    in_a_child("child_file_too_large", "poll", BackendKind::Poll);
}

fn in_a_child(test: &str, backend: &str, kind: BackendKind) {
    if util::new_loop(kind).is_none() {
        return;
    }
    let out = run_child(test, &[("SIGPIPE_BACKEND", backend)]);
    assert!(out.contains("and alive"), "{out}");
}

#[test]
fn fifo_write_is_epipe() {
    in_a_child("child_fifo_write", "uring", BackendKind::Uring);
    in_a_child("child_fifo_write", "epoll", BackendKind::Epoll);
    in_a_child("child_fifo_write", "poll", BackendKind::Poll);
}

#[test]
fn socket_write_is_an_error() {
    in_a_child("child_socket_write", "uring", BackendKind::Uring);
    in_a_child("child_socket_write", "epoll", BackendKind::Epoll);
    in_a_child("child_socket_write", "poll", BackendKind::Poll);
}
