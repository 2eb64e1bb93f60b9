//! `FdWatcher` (any descriptor's readiness, libuv's `uv_poll_t`) on every
//! backend: level-triggered readiness, the kinds of readiness, start /
//! stop / change, ref / unref, close, callbacks that stop, close, restart
//! or panic, and what closing the descriptor while it is watched does.

mod util;

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::Duration;

use eventide::source::Interest;
use eventide::{Error, Loop, RunMode};
use util::run_within;

const LIMIT: Duration = Duration::from_secs(20);

on_every_backend!(
    an_eventfd_written_from_a_thread_is_read_on_the_loop,
    the_callback_runs_while_the_condition_holds,
    a_started_watcher_keeps_the_loop_alive_until_stopped,
    an_unreferenced_watcher_does_not_keep_the_loop_alive,
    the_interest_changes_inside_the_callback,
    a_callback_may_stop_close_or_restart_its_watcher,
    a_panicking_callback_leaves_the_watcher_working,
    a_panic_without_a_handler_leaves_run_and_the_next_run_goes_on,
    a_half_close_is_a_disconnect,
    priority_data_is_reported,
    a_regular_file_is_refused_on_every_backend,
    close_then_runs_in_the_close_phase_and_the_handle_goes_stale,
    closing_the_descriptor_first_keeps_watching_the_same_file,
    a_number_reused_after_the_descriptor_closed_is_not_watched,
);

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    let rc = pipe2(&mut fds, libc::O_NONBLOCK | libc::O_CLOEXEC);
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: two new descriptors, owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn write_fd(fd: RawFd, data: &[u8]) {
    // SAFETY: the pointer and length describe `data`, alive for the call.
    let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    assert_eq!(n, data.len() as isize, "write");
}

fn read_byte(fd: RawFd) -> Option<u8> {
    let mut b = 0u8;
    // SAFETY: one writable byte, alive for the call.
    let n = unsafe { libc::read(fd, (&raw mut b).cast(), 1) };
    (n == 1).then_some(b)
}

fn socket_pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().expect("socketpair");
    a.set_nonblocking(true).expect("nonblocking");
    b.set_nonblocking(true).expect("nonblocking");
    (a, b)
}

/// Runs the loop until it ends by itself or `ms` pass (a timer that stops
/// it, unreferenced): for checking what happens, or does not, meanwhile.
fn run_for(lp: &mut Loop, ms: u64) {
    let stopper = lp.set_timeout(Duration::from_millis(ms), |lp| lp.stop());
    lp.unref_timer(stopper);
    lp.run().expect("the loop runs");
    lp.clear_timer(stopper);
}

/// Where 8-byte values are written and read: an eventfd (both ends the
/// same descriptor); macOS, which has none: a nonblocking pipe.
fn counter() -> (std::sync::Arc<OwnedFd>, std::sync::Arc<OwnedFd>) {
    #[cfg(not(target_vendor = "apple"))]
    {
        // SAFETY: eventfd takes no pointers.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        assert!(raw >= 0);
        // SAFETY: a new descriptor owned by nobody else.
        let efd = std::sync::Arc::new(unsafe { OwnedFd::from_raw_fd(raw) });
        (std::sync::Arc::clone(&efd), efd)
    }
    #[cfg(target_vendor = "apple")]
    {
        let (rd, wr) = pipe(); // nonblocking
        (std::sync::Arc::new(rd), std::sync::Arc::new(wr))
    }
}

fn an_eventfd_written_from_a_thread_is_read_on_the_loop(lp: &mut Loop) {
    let (reader, writer) = counter();
    let watcher = lp.watch_fd(&*reader).expect("watch");
    let total = Rc::new(Cell::new(0u64));
    let t = Rc::clone(&total);
    watcher
        .start(lp, Interest::READABLE, move |lp, me, ready| {
            assert_eq!(ready.expect("no error"), Interest::READABLE);
            let mut value = 0u64;
            // SAFETY: reads 8 bytes into `value`, alive for the call.
            let n = unsafe { libc::read(reader.as_raw_fd(), (&raw mut value).cast(), 8) };
            if n == 8 {
                t.set(t.get() + value);
            }
            if t.get() == 10 {
                assert!(me.close(lp));
            }
        })
        .expect("start");
    let thread = std::thread::spawn(move || {
        for value in [1u64, 2, 3, 4] {
            // SAFETY: writes the 8 bytes of `value`, alive for the call.
            let n = unsafe { libc::write(writer.as_raw_fd(), (&raw const value).cast(), 8) };
            assert_eq!(n, 8);
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    run_within(lp, LIMIT);
    thread.join().unwrap();
    assert_eq!(total.get(), 10);
}

/// Level-triggered: a callback that takes one byte per call is called for
/// every byte, though nothing new arrives (an edge-triggered watch would
/// call once and never again).
fn the_callback_runs_while_the_condition_holds(lp: &mut Loop) {
    let (rd, wr) = pipe();
    write_fd(wr.as_raw_fd(), b"abcde");
    let got = Rc::new(RefCell::new(Vec::new()));
    let g = Rc::clone(&got);
    let fd = rd.as_raw_fd();
    let watcher = lp.watch_fd(&rd).expect("watch");
    watcher
        .start(lp, Interest::READABLE, move |lp, me, ready| {
            assert!(ready.expect("no error").is_readable());
            if let Some(b) = read_byte(fd) {
                g.borrow_mut().push(b);
            }
            if g.borrow().len() == 5 {
                me.stop(lp);
            }
        })
        .expect("start");
    run_within(lp, LIMIT);
    assert_eq!(*got.borrow(), b"abcde");
    assert!(!watcher.is_active(lp));
    assert!(watcher.close(lp));
}

fn a_started_watcher_keeps_the_loop_alive_until_stopped(lp: &mut Loop) {
    let (rd, wr) = pipe();
    let watcher = lp.watch_fd(&rd).expect("watch");
    // A stopped watcher keeps nothing alive.
    assert!(!lp.run_mode(RunMode::NoWait).unwrap());
    let calls = Rc::new(Cell::new(0));
    let c = Rc::clone(&calls);
    let fd = rd.as_raw_fd();
    watcher
        .start(lp, Interest::READABLE, move |_, _, _| {
            c.set(c.get() + 1);
            read_byte(fd);
        })
        .expect("start");
    assert!(watcher.is_active(lp));
    assert!(lp.run_mode(RunMode::NoWait).unwrap(), "started: alive");
    // Something to read, then a timer stops the watcher: only then does
    // `run` return by itself.
    lp.set_timeout(Duration::from_millis(30), move |lp| {
        assert!(watcher.stop(lp));
    });
    write_fd(wr.as_raw_fd(), b"x");
    run_within(lp, LIMIT);
    assert_eq!(calls.get(), 1);
    assert!(!watcher.is_active(lp));
    assert_eq!(watcher.interest(lp), Some(Interest::NONE));
    assert!(watcher.close(lp));
}

fn an_unreferenced_watcher_does_not_keep_the_loop_alive(lp: &mut Loop) {
    let (rd, wr) = pipe();
    let watcher = lp.watch_fd(&rd).expect("watch");
    let calls = Rc::new(Cell::new(0));
    let c = Rc::clone(&calls);
    let fd = rd.as_raw_fd();
    watcher
        .start(lp, Interest::READABLE, move |_, _, _| {
            c.set(c.get() + 1);
            read_byte(fd);
        })
        .expect("start");
    assert!(watcher.has_ref(lp));
    assert!(watcher.unref(lp));
    assert!(!watcher.has_ref(lp));
    // Nothing else: run returns at once.
    run_within(lp, LIMIT);
    assert_eq!(calls.get(), 0);
    // While a timer keeps the loop running, it still reports.
    write_fd(wr.as_raw_fd(), b"x");
    lp.set_timeout(Duration::from_millis(50), |_| {});
    run_within(lp, LIMIT);
    assert_eq!(calls.get(), 1);
    // Referenced again (also across a restart): it keeps the loop alive.
    assert!(watcher.set_ref(lp, true));
    assert!(lp.run_mode(RunMode::NoWait).unwrap());
    // Closed: the loop ends (once the reactor has let go of the watch).
    assert!(watcher.close(lp));
    run_within(lp, LIMIT);
}

fn the_interest_changes_inside_the_callback(lp: &mut Loop) {
    let (a, b) = socket_pair();
    let watcher = lp.watch_fd(&a).expect("watch");
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = Rc::clone(&seen);
    let fd = a.as_raw_fd();
    watcher
        .start(lp, Interest::WRITABLE, move |lp, me, ready| {
            let ready = ready.expect("no error");
            s.borrow_mut().push(ready);
            if ready == Interest::WRITABLE {
                // From writable to readable, with the same callback.
                let s = Rc::clone(&s);
                me.start(lp, Interest::READABLE, move |lp, me, ready| {
                    s.borrow_mut().push(ready.expect("no error"));
                    read_byte(fd);
                    me.close(lp);
                })
                .expect("restart");
            }
        })
        .expect("start");
    let mut b = b;
    lp.set_timeout(Duration::from_millis(30), move |_| {
        b.write_all(b"r").expect("write");
    });
    run_within(lp, LIMIT);
    assert_eq!(*seen.borrow(), [Interest::WRITABLE, Interest::READABLE]);
}

fn a_callback_may_stop_close_or_restart_its_watcher(lp: &mut Loop) {
    // Close inside the callback: no further call, the handle is stale.
    let (rd, wr) = pipe();
    write_fd(wr.as_raw_fd(), b"xyz");
    let calls = Rc::new(Cell::new(0));
    let c = Rc::clone(&calls);
    let closer = lp.watch_fd(&rd).expect("watch");
    closer
        .start(lp, Interest::READABLE, move |lp, me, _| {
            c.set(c.get() + 1);
            assert!(me.close(lp));
            assert!(!me.close(lp));
            assert!(!me.stop(lp));
            assert!(matches!(
                me.start(lp, Interest::READABLE, |_, _, _| {}),
                Err(Error::Stale { what: "fd watcher" })
            ));
        })
        .expect("start");
    run_within(lp, LIMIT);
    assert_eq!(calls.get(), 1);
    assert_eq!(closer.interest(lp), None);
    assert!(!closer.is_active(lp));

    // Stop inside the callback, then start again from a timer with a new
    // callback: the old one never runs again.
    let old = Rc::new(Cell::new(0));
    let new = Rc::new(Cell::new(0));
    let o = Rc::clone(&old);
    let stopper = lp.watch_fd(&rd).expect("watch");
    stopper
        .start(lp, Interest::READABLE, move |lp, me, _| {
            o.set(o.get() + 1);
            assert!(me.stop(lp));
        })
        .expect("start");
    let n = Rc::clone(&new);
    let fd = rd.as_raw_fd();
    lp.set_timeout(Duration::from_millis(20), move |lp| {
        let n = Rc::clone(&n);
        stopper
            .start(lp, Interest::READABLE, move |lp, me, _| {
                n.set(n.get() + 1);
                while read_byte(fd).is_some() {}
                me.close(lp);
            })
            .expect("restart");
    });
    run_within(lp, LIMIT);
    assert_eq!((old.get(), new.get()), (1, 1));
}

fn a_panicking_callback_leaves_the_watcher_working(lp: &mut Loop) {
    let panics = Rc::new(Cell::new(0));
    let p = Rc::clone(&panics);
    lp.set_panic_handler(move |_, _| p.set(p.get() + 1));
    let (rd, wr) = pipe();
    write_fd(wr.as_raw_fd(), b"ab");
    let fd = rd.as_raw_fd();
    let calls = Rc::new(Cell::new(0));
    let c = Rc::clone(&calls);
    let watcher = lp.watch_fd(&rd).expect("watch");
    watcher
        .start(lp, Interest::READABLE, move |lp, me, _| {
            c.set(c.get() + 1);
            read_byte(fd);
            if c.get() == 1 {
                panic!("first call");
            }
            me.close(lp);
        })
        .expect("start");
    run_within(lp, LIMIT);
    assert_eq!((calls.get(), panics.get()), (2, 1));
}

fn a_panic_without_a_handler_leaves_run_and_the_next_run_goes_on(lp: &mut Loop) {
    let (rd, wr) = pipe();
    write_fd(wr.as_raw_fd(), b"ab");
    let fd = rd.as_raw_fd();
    let calls = Rc::new(Cell::new(0));
    let c = Rc::clone(&calls);
    let watcher = lp.watch_fd(&rd).expect("watch");
    watcher
        .start(lp, Interest::READABLE, move |lp, me, _| {
            c.set(c.get() + 1);
            read_byte(fd);
            if c.get() == 1 {
                panic!("first call");
            }
            me.close(lp);
        })
        .expect("start");
    let first = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| lp.run()));
    assert!(first.is_err(), "the panic leaves run()");
    assert!(watcher.is_active(lp), "the watcher is still started");
    run_within(lp, LIMIT);
    assert_eq!(calls.get(), 2);
    assert!(!lp.alive());
}

fn a_half_close_is_a_disconnect(lp: &mut Loop) {
    let (a, b) = socket_pair();
    let watcher = lp.watch_fd(&a).expect("watch");
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = Rc::clone(&seen);
    let want = Interest::READABLE | Interest::DISCONNECT;
    watcher
        .start(lp, want, move |lp, me, ready| {
            s.borrow_mut().push(ready.expect("no error"));
            me.close(lp);
        })
        .expect("start");
    lp.set_timeout(Duration::from_millis(20), move |_| {
        b.shutdown(std::net::Shutdown::Write).expect("shutdown");
    });
    run_within(lp, LIMIT);
    assert_eq!(*seen.borrow(), [want]);
    // The stream itself is intact: the end of it is there to read.
    let mut a = a;
    assert_eq!(a.read(&mut [0; 4]).unwrap(), 0);
}

fn priority_data_is_reported(lp: &mut Loop) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    server.set_nonblocking(true).expect("nonblocking");
    let watcher = lp.watch_fd(&server).expect("watch");
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = Rc::clone(&seen);
    watcher
        .start(lp, Interest::PRIORITY, move |lp, me, ready| {
            s.borrow_mut().push(ready.expect("no error"));
            me.close(lp);
        })
        .expect("start");
    // Ordinary data first: not priority data.
    (&client).write_all(b"plain").expect("write");
    lp.set_timeout(Duration::from_millis(50), move |_| {
        // SAFETY: sends one byte from a static, alive for the call.
        let n = unsafe { libc::send(client.as_raw_fd(), b"!".as_ptr().cast(), 1, libc::MSG_OOB) };
        assert_eq!(n, 1);
    });
    run_within(lp, LIMIT);
    assert_eq!(*seen.borrow(), [Interest::PRIORITY]);
}

fn a_regular_file_is_refused_on_every_backend(lp: &mut Loop) {
    let file = tempfile::tempfile().expect("a temporary file");
    let error = lp.watch_fd(&file).expect_err("refused");
    assert_eq!(error.errno(), Some(libc::EPERM), "{error}");
    let dir = std::fs::File::open(std::env::temp_dir()).expect("a directory");
    let error = lp.watch_fd(&dir).expect_err("refused");
    assert_eq!(error.errno(), Some(libc::EPERM), "{error}");
    assert!(!lp.alive());
}

fn close_then_runs_in_the_close_phase_and_the_handle_goes_stale(lp: &mut Loop) {
    let (rd, _wr) = pipe();
    let watcher = lp.watch_fd(&rd).expect("watch");
    watcher
        .start(lp, Interest::READABLE, |_, _, _| panic!("nothing to read"))
        .expect("start");
    let trace = util::Trace::default();
    let t = trace.clone();
    lp.set_immediate(move |lp| {
        t.log("immediate");
        let t2 = t.clone();
        assert!(watcher.close_then(lp, move |_| t2.log("closed")));
        assert!(!watcher.close_then(lp, |_| panic!("closed twice")));
        let t3 = t.clone();
        lp.next_tick(move |_| t3.log("tick"));
    });
    run_within(lp, LIMIT);
    trace.assert(&["immediate", "tick", "closed"]);
    assert!(!watcher.has_ref(lp));
    assert!(!watcher.set_ref(lp, true));
    // The watcher's duplicate is closed; ours is open.
    assert!(read_byte(rd.as_raw_fd()).is_none());
    // SAFETY: fcntl F_GETFD takes no pointers.
    assert!(unsafe { libc::fcntl(rd.as_raw_fd(), libc::F_GETFD) } >= 0);
}

/// The contract is "close the watcher first". Closing the descriptor
/// first does not crash and does not end the watch: the watcher holds a
/// duplicate, so it keeps watching the same pipe, which stays open for
/// its writer.
fn closing_the_descriptor_first_keeps_watching_the_same_file(lp: &mut Loop) {
    let (rd, wr) = pipe();
    let watcher = lp.watch_fd(&rd).expect("watch");
    let calls = Rc::new(Cell::new(0));
    let c = Rc::clone(&calls);
    watcher
        .start(lp, Interest::READABLE, move |lp, me, ready| {
            assert_eq!(ready.expect("no error"), Interest::READABLE);
            c.set(c.get() + 1);
            me.close(lp);
        })
        .expect("start");
    run_for(lp, 20);
    drop(rd);
    run_for(lp, 20);
    assert_eq!(calls.get(), 0);
    // The pipe still has a reader (the duplicate): the write succeeds, and
    // the watcher hears of it.
    write_fd(wr.as_raw_fd(), b"x");
    run_within(lp, LIMIT);
    assert_eq!(calls.get(), 1);
    // Closed: now the pipe has no reader.
    // SAFETY: the pointer and length describe one byte, alive for the call.
    let n = unsafe { libc::write(wr.as_raw_fd(), b"y".as_ptr().cast(), 1) };
    assert_eq!(n, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EPIPE)
    );
}

/// Closing the descriptor first, and a new descriptor takes its number: the
/// watcher never reports the newcomer's readiness, and the newcomer (here
/// watched by a watcher of its own) is not disturbed.
fn a_number_reused_after_the_descriptor_closed_is_not_watched(lp: &mut Loop) {
    let (rd, _wr) = pipe();
    let number = rd.as_raw_fd();
    let stale = lp.watch_fd(&rd).expect("watch");
    let stale_calls = Rc::new(Cell::new(0));
    let s = Rc::clone(&stale_calls);
    stale
        .start(lp, Interest::READABLE, move |_, _, _| s.set(s.get() + 1))
        .expect("start");
    run_for(lp, 20);
    // Our descriptor closed and its number taken by a new pipe's reader, in
    // one step (dup2 closes what the number named), so that no other test
    // running meanwhile takes the number in between.
    let (other, wr2) = pipe();
    // SAFETY: dup2 takes no pointers; `number` is ours (`rd`), and `rd2`
    // owns it from here on (`rd` is forgotten, its file closed by dup2).
    let rc = unsafe { libc::dup2(other.as_raw_fd(), number) };
    assert_eq!(rc, number, "dup2: {}", std::io::Error::last_os_error());
    std::mem::forget(rd);
    // SAFETY: `number` now names the new pipe's reader, owned by nobody else.
    let rd2 = unsafe { OwnedFd::from_raw_fd(number) };
    drop(other);
    write_fd(wr2.as_raw_fd(), b"new");
    let fresh = lp.watch_fd(rd2.as_fd()).expect("watch");
    let fresh_calls = Rc::new(Cell::new(0));
    let f = Rc::clone(&fresh_calls);
    let fd = rd2.as_raw_fd();
    fresh
        .start(lp, Interest::READABLE, move |lp, me, _| {
            f.set(f.get() + 1);
            while read_byte(fd).is_some() {}
            me.close(lp);
        })
        .expect("start");
    run_for(lp, 100);
    assert_eq!(fresh_calls.get(), 1);
    assert_eq!(
        stale_calls.get(),
        0,
        "the newcomer's readiness reached the stale watcher"
    );
    assert!(stale.close(lp));
    run_within(lp, LIMIT);
}

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
