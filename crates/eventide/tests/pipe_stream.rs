//! Streams over descriptors that are not sockets (`eventide::net::Pipe`)
//! on every backend: a pipe's bytes arrive in order with backpressure and
//! its end; a FIFO; a socketpair end opened as a pipe; a write to a pipe
//! whose reader is gone is an `EPIPE` error; the descriptors are
//! nonblocking and close-on-exec; a terminal query on a pipe is `ENOTTY`.

mod util;

use std::cell::{Cell, RefCell};
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::time::Duration;

use eventide::Loop;
use util::run_within;

const LIMIT: Duration = Duration::from_secs(30);

/// A pattern byte for position `i`.
fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 11)) as u8
}

/// 4 MiB through a pipe, written in 64 KiB chunks with backpressure
/// (each chunk after the drain), read and checked byte by byte, then the
/// writer's end is the reader's end of file.
fn pipe_carries_bytes_in_order_with_backpressure(lp: &mut Loop) {
    const TOTAL: usize = 4 << 20;
    const CHUNK: usize = 64 << 10;
    let (r, w) = lp.pipe_pair().unwrap();
    let got = Rc::new(Cell::new(0usize));
    let ended = Rc::new(Cell::new(false));
    let (g, e) = (Rc::clone(&got), Rc::clone(&ended));
    r.read_start(
        lp,
        move |_, _, data| {
            let at = g.get();
            for (k, b) in data.iter().enumerate() {
                assert_eq!(*b, pattern(at + k), "byte {}", at + k);
            }
            g.set(at + data.len());
        },
        move |_, _, end| {
            end.unwrap();
            e.set(true);
        },
    );
    let sent = Rc::new(Cell::new(0usize));
    let drains = Rc::new(Cell::new(0usize));
    fn pump(lp: &mut Loop, w: eventide::net::Pipe, sent: &Rc<Cell<usize>>) {
        while sent.get() < TOTAL {
            let at = sent.get();
            let chunk: Vec<u8> = (at..at + CHUNK).map(pattern).collect();
            sent.set(at + CHUNK);
            if !w.write(lp, chunk, |_, r| r.unwrap()) {
                return;
            }
        }
        w.end(lp);
    }
    let (s, d) = (Rc::clone(&sent), Rc::clone(&drains));
    w.on_drain(lp, move |lp, w| {
        d.set(d.get() + 1);
        pump(lp, w, &s);
    });
    pump(lp, w, &sent);
    run_within(lp, LIMIT);
    assert_eq!(got.get(), TOTAL);
    assert!(ended.get(), "the reader saw the end");
    assert!(drains.get() > 0, "the writer waited for drains");
}

/// A FIFO opened read-write (so that opening does not wait) carries a
/// line from a writer pipe to a reader pipe.
fn fifo_carries_a_line(lp: &mut Loop) {
    let dir = tempdir();
    let path = dir.join("fifo");
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: `c` is a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let reader: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap()
        .into();
    let writer: OwnedFd = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .into();
    let r = lp.pipe_open(reader).unwrap();
    let w = lp.pipe_open(writer).unwrap();
    let got = Rc::new(RefCell::new(Vec::new()));
    let g = Rc::clone(&got);
    r.read_start(
        lp,
        move |lp, r, data| {
            g.borrow_mut().extend_from_slice(data);
            if g.borrow().ends_with(b"\n") {
                r.close(lp);
            }
        },
        |_, _, _| {},
    );
    w.write(lp, b"through a fifo\n", |_, res| res.unwrap());
    w.end(lp);
    run_within(lp, LIMIT);
    assert_eq!(&*got.borrow(), b"through a fifo\n");
    std::fs::remove_dir_all(dir).unwrap();
}

/// One end of a socketpair opened as a pipe: both directions work, and
/// its end is the peer's end of file.
fn socketpair_end_as_pipe(lp: &mut Loop) {
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let a = lp.pipe_open(OwnedFd::from(a)).unwrap();
    let b = lp.pipe_open(OwnedFd::from(b)).unwrap();
    let got = Rc::new(RefCell::new(Vec::new()));
    let g = Rc::clone(&got);
    b.read_start(
        lp,
        move |_, _, data| g.borrow_mut().extend_from_slice(data),
        |_, _, end| end.unwrap(),
    );
    a.write(lp, b"ping", |_, res| res.unwrap());
    a.end(lp);
    run_within(lp, LIMIT);
    assert_eq!(&*got.borrow(), b"ping");
}

/// A write to a pipe whose reading end is closed fails with Node's
/// `write EPIPE` (SIGPIPE is ignored in Rust programs), and the stream
/// is destroyed: its close event says so.
fn write_to_a_closed_pipe_is_epipe(lp: &mut Loop) {
    let (r, w) = blocking_pipe();
    drop(r);
    let w = lp.pipe_open(w).unwrap();
    let failed = Rc::new(RefCell::new(None));
    let closed = Rc::new(Cell::new(None));
    let (f, c) = (Rc::clone(&failed), Rc::clone(&closed));
    w.on_close(lp, move |_, _, had_error| c.set(Some(had_error)));
    w.write(lp, b"nobody reads", move |_, res| {
        *f.borrow_mut() = Some(res.unwrap_err().to_string());
    });
    run_within(lp, LIMIT);
    assert_eq!(failed.borrow().as_deref(), Some("write EPIPE"));
    assert_eq!(closed.get(), Some(true));
}

/// The descriptors of a pipe pair are nonblocking and close-on-exec; a
/// descriptor given blocking is nonblocking while open, and blocking
/// again once its pipe closed (checked on a duplicate sharing the
/// description).
fn descriptors_are_nonblocking_and_cloexec(lp: &mut Loop) {
    let (r, w) = lp.pipe_pair().unwrap();
    for p in [r, w] {
        let fd = p.raw_fd(lp).unwrap();
        // SAFETY: fcntl with F_GETFL/F_GETFD takes no pointers.
        let (fl, fdf) = unsafe {
            (
                libc::fcntl(fd, libc::F_GETFL),
                libc::fcntl(fd, libc::F_GETFD),
            )
        };
        assert_ne!(fl & libc::O_NONBLOCK, 0);
        assert_ne!(fdf & libc::FD_CLOEXEC, 0);
    }
    let (a, b) = blocking_pipe();

    let shared = a.try_clone().unwrap();
    let p = lp.pipe_open(a).unwrap();
    // SAFETY: as above.
    let fl = unsafe { libc::fcntl(shared.as_raw_fd(), libc::F_GETFL) };
    assert_ne!(fl & libc::O_NONBLOCK, 0, "nonblocking while open");
    p.close(lp);
    r.close(lp);
    w.close(lp);
    run_within(lp, LIMIT);
    // SAFETY: as above.
    let fl = unsafe { libc::fcntl(shared.as_raw_fd(), libc::F_GETFL) };
    assert_eq!(fl & libc::O_NONBLOCK, 0, "blocking again after the close");
    drop(b);
}

/// Terminal queries on a pipe: not a tty, and `ENOTTY` as Node's
/// messages name the calls.
fn a_pipe_is_not_a_tty(lp: &mut Loop) {
    let (r, w) = lp.pipe_pair().unwrap();
    assert!(!r.is_tty(lp));
    let e = r.window_size(lp).unwrap_err();
    assert_eq!(e.to_string(), "getWindowSize ENOTTY");
    let e = w.set_raw_mode(lp, true).unwrap_err();
    assert_eq!(e.to_string(), "setRawMode ENOTTY");
    r.close(lp);
    w.close(lp);
    run_within(lp, LIMIT);
}

/// The standard streams open as pipes of their own descriptors
/// (duplicates: closing them leaves 0, 1 and 2 open).
fn std_streams_open_and_close(lp: &mut Loop) {
    let out = lp.stdout().unwrap();
    let fd = out.raw_fd(lp).unwrap();
    assert!(fd > 2, "a descriptor of its own");
    let done = Rc::new(Cell::new(false));
    let d = Rc::clone(&done);
    out.write(lp, b"", move |_, res| {
        res.unwrap();
        d.set(true);
    });
    out.end(lp);
    let err = lp.stderr().unwrap();
    err.close(lp);
    run_within(lp, LIMIT);
    assert!(done.get());
    // SAFETY: fcntl with F_GETFD takes no pointers.
    let one = unsafe { libc::fcntl(1, libc::F_GETFD) };
    assert!(one >= 0, "1 still open");
}

/// A plain blocking pipe: (read end, write end).
/// Two pipes over one open file (a descriptor and its duplicate, as
/// stdout and stderr are in a `2>&1` process): closing one while a write
/// of the other waits in flight loses nothing. (io_uring cancels by file:
/// the close of the duplicate cancelled the other's write too, which then
/// failed with `ECANCELED`; the stream now sends it again.)
fn closing_a_duplicate_does_not_fail_the_others_write(lp: &mut Loop) {
    let (r, w) = blocking_pipe();
    let dup = w.try_clone().unwrap();
    let a = lp.pipe_open(w).unwrap();
    let b = lp.pipe_open(dup).unwrap();
    // More than a pipe holds (64 KiB): the write waits for the reader.
    let data: Vec<u8> = (0..256 << 10).map(pattern).collect();
    let written = Rc::new(Cell::new(None));
    let wr = Rc::clone(&written);
    a.write(lp, data.clone(), move |_, res| {
        wr.set(Some(res.map_err(|e| e.to_string())))
    });
    a.end(lp);
    lp.set_timeout(Duration::from_millis(20), move |lp| {
        b.close(lp);
    });
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        std::thread::sleep(Duration::from_millis(150));
        let mut got = Vec::new();
        std::fs::File::from(r).read_to_end(&mut got).unwrap();
        got
    });
    run_within(lp, LIMIT);
    assert_eq!(written.take(), Some(Ok(())), "the write went out");
    let got = reader.join().unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "every byte, in order");
}

fn blocking_pipe() -> (OwnedFd, OwnedFd) {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    assert_eq!(pipe2(&mut fds, libc::O_CLOEXEC), 0);
    // SAFETY: two new descriptors, owned here.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn tempdir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "eventide-pipe-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

on_every_backend!(
    pipe_carries_bytes_in_order_with_backpressure,
    fifo_carries_a_line,
    socketpair_end_as_pipe,
    write_to_a_closed_pipe_is_epipe,
    descriptors_are_nonblocking_and_cloexec,
    a_pipe_is_not_a_tty,
    std_streams_open_and_close,
    closing_a_duplicate_does_not_fail_the_others_write,
);

/// `pipe2(2)`; macOS has none: `pipe(2)`, then the same flags by `fcntl`.
fn pipe2(fds: &mut [libc::c_int; 2], flags: libc::c_int) -> libc::c_int {
    #[cfg(not(target_vendor = "apple"))]
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    return unsafe { libc::pipe2(fds.as_mut_ptr(), flags) };
    #[cfg(target_vendor = "apple")]
    {
        // SAFETY: `fds` has room for the two descriptors pipe writes.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            return -1;
        }
        for &fd in fds.iter() {
            // SAFETY: fcntl with integer arguments on a descriptor just made.
            unsafe {
                if flags & libc::O_CLOEXEC != 0 {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                }
                if flags & libc::O_NONBLOCK != 0 {
                    libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK);
                }
            }
        }
        0
    }
}
