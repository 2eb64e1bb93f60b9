//! Terminals through a pseudo-terminal on every backend: `is_tty`, the
//! window size, raw mode on and off and restored at the close, and
//! reading and writing the terminal (on io_uring a terminal answers
//! `EAGAIN`, and the stream waits for readiness with a poll).

mod util;

use std::cell::RefCell;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::time::Duration;

use eventide::Loop;
use eventide::net::WindowSize;
use util::run_within;

const LIMIT: Duration = Duration::from_secs(30);

/// A pseudo-terminal: (master, slave), the slave sized 100x30.
fn pty() -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (0, 0);
    let mut ws = libc::winsize {
        ws_row: 30,
        ws_col: 100,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes the two descriptors; null name and termios
    // ask for none and the defaults; `ws` is a valid winsize (only read).
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            // `*mut` for the BSDs and macOS; Linux takes `*const`.
            std::ptr::null_mut(),
            &raw mut ws,
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: two new descriptors, owned here.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

fn lflag(fd: i32) -> libc::tcflag_t {
    // SAFETY: termios is plain old data; tcgetattr fills it.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `t` is a valid termios to fill.
    assert_eq!(unsafe { libc::tcgetattr(fd, &mut t) }, 0);
    t.c_lflag
}

fn terminal_queries_and_raw_mode(lp: &mut Loop) {
    let (master, slave) = pty();
    let watch = slave.try_clone().unwrap();
    let tty = lp.pipe_open(slave).unwrap();
    assert!(tty.is_tty(lp));
    assert_eq!(
        tty.window_size(lp).unwrap(),
        WindowSize {
            columns: 100,
            rows: 30
        }
    );
    let cooked = lflag(watch.as_raw_fd());
    assert_ne!(cooked & libc::ICANON, 0, "cooked to begin with");
    tty.set_raw_mode(lp, true).unwrap();
    assert_eq!(lflag(watch.as_raw_fd()) & (libc::ICANON | libc::ECHO), 0);
    tty.set_raw_mode(lp, false).unwrap();
    assert_eq!(lflag(watch.as_raw_fd()), cooked, "off puts it back");
    tty.set_raw_mode(lp, true).unwrap();
    tty.close(lp);
    run_within(lp, LIMIT);
    assert_eq!(lflag(watch.as_raw_fd()), cooked, "the close puts it back");
    drop(master);
}

/// Bytes typed at the terminal (written to the master) reach the
/// reader, in raw mode byte for byte; what the terminal stream writes
/// comes out of the master.
fn reading_and_writing_a_terminal(lp: &mut Loop) {
    let (master, slave) = pty();
    let tty = lp.pipe_open(slave).unwrap();
    tty.set_raw_mode(lp, true).unwrap();
    let got = Rc::new(RefCell::new(Vec::new()));
    let g = Rc::clone(&got);
    tty.read_start(
        lp,
        move |lp, tty, data| {
            g.borrow_mut().extend_from_slice(data);
            if g.borrow().len() >= 3 {
                tty.write(lp, b"ok", |_, r| r.unwrap());
                tty.read_stop(lp);
            }
        },
        |_, _, _| {},
    );
    // Typed after the loop has started waiting (io_uring's read of a
    // terminal answers EAGAIN first).
    let mfd = master.as_raw_fd();
    lp.set_timeout(Duration::from_millis(50), move |_| {
        // SAFETY: writes 3 bytes from a live buffer to the master.
        let n = unsafe { libc::write(mfd, b"abc".as_ptr().cast(), 3) };
        assert_eq!(n, 3);
    });
    let answer = Rc::new(RefCell::new(Vec::new()));
    let a = Rc::clone(&answer);
    // The master is read on the loop too.
    let m = lp.pipe_open(master).unwrap();
    m.read_start(
        lp,
        move |lp, m, data| {
            a.borrow_mut().extend_from_slice(data);
            if a.borrow().ends_with(b"ok") {
                m.close(lp);
                tty.close(lp);
            }
        },
        |_, _, _| {},
    );
    run_within(lp, LIMIT);
    assert_eq!(&*got.borrow(), b"abc");
    assert!(answer.borrow().ends_with(b"ok"));
}

/// The terminal's size changes (TIOCSWINSZ on the master) and the process
/// gets SIGWINCH: `on_resize` runs with the new size. (The test raises
/// the signal itself: the pseudo-terminal is not this process's
/// controlling terminal.)
fn a_window_change_reaches_on_resize(lp: &mut Loop) {
    let (master, slave) = pty();
    let tty = lp.pipe_open(slave).unwrap();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = Rc::clone(&seen);
    // Keeps the loop alive until the event (a signal listener does not).
    let waiting = lp.set_timeout(Duration::from_secs(10), |_| {
        panic!("no resize event within 10 s")
    });
    assert!(tty.on_resize(lp, move |lp, tty, size| {
        s.borrow_mut().push(size);
        lp.clear_timer(waiting);
        tty.close(lp);
    }));
    let ws = libc::winsize {
        ws_row: 40,
        ws_col: 120,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a valid winsize; the master is open.
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    assert_eq!(rc, 0);
    // SAFETY: raise takes no pointers; SIGWINCH's default is to ignore.
    assert_eq!(unsafe { libc::raise(libc::SIGWINCH) }, 0);
    run_within(lp, LIMIT);
    assert!(
        seen.borrow().contains(&WindowSize {
            columns: 120,
            rows: 40
        }),
        "{:?}",
        seen.borrow()
    );
    drop(master);
}

on_every_backend!(
    a_window_change_reaches_on_resize,
    terminal_queries_and_raw_mode,
    reading_and_writing_a_terminal
);
