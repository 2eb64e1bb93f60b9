//! The extension point (`eventide::source::EventSource`) on every backend,
//! used as a crate outside eventide would: the line reader of
//! `examples/line_source.rs` (public API only), and small sources that
//! submit reactor operations, remove themselves, panic, or are unreferenced.

mod util;

// The example's `main` is not used here; its items are `pub` for a crate
// of its own, not for this test.
#[path = "../examples/line_source.rs"]
#[allow(dead_code, unreachable_pub)]
mod line_source;

use std::cell::RefCell;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::Duration;

use eventide::Loop;
use eventide::source::{EventSource, Op, OpId, SourceEvent, SourceKey};
use line_source::LineSource;
use util::run_within;

const LIMIT: Duration = Duration::from_secs(20);

on_every_backend!(
    lines_from_a_thread_arrive_one_callback_per_line_and_the_end_is_reported,
    a_line_callback_may_remove_its_source,
    a_source_submits_operations_and_removes_itself_at_the_end,
    a_removed_source_hears_nothing_more_and_the_loop_ends,
    an_unreferenced_source_does_not_keep_the_loop_alive,
    a_panicking_source_is_kept,
);

fn pipe() -> (OwnedFd, std::fs::File) {
    let mut fds = [0; 2];
    let rc = pipe2(&mut fds, libc::O_CLOEXEC);
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: two new descriptors, owned by nobody else.
    unsafe {
        (
            OwnedFd::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    }
}

#[derive(Default)]
struct Seen {
    lines: Vec<String>,
    end: Option<String>,
}

fn lines_from_a_thread_arrive_one_callback_per_line_and_the_end_is_reported(lp: &mut Loop) {
    let (reader, mut writer) = pipe();
    let seen = Rc::new(RefCell::new(Seen::default()));
    let (s, e) = (Rc::clone(&seen), Rc::clone(&seen));
    LineSource::insert(
        lp,
        reader,
        move |_, line| {
            s.borrow_mut()
                .lines
                .push(String::from_utf8(line).expect("UTF-8"));
        },
        move |_, end| e.borrow_mut().end = Some(format!("{end:?}")),
    )
    .expect("insert");
    let thread = std::thread::spawn(move || {
        // A line in two writes, two lines in one, and a last line without
        // its newline.
        for piece in ["fir", "st\n", "second\nthird\n", "last"] {
            writer.write_all(piece.as_bytes()).expect("write");
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    run_within(lp, LIMIT);
    thread.join().unwrap();
    let seen = seen.borrow();
    assert_eq!(seen.lines, ["first", "second", "third", "last"]);
    assert_eq!(seen.end.as_deref(), Some("Ok(())"));
}

fn a_line_callback_may_remove_its_source(lp: &mut Loop) {
    let (reader, mut writer) = pipe();
    writer.write_all(b"a\nb\nc\n").expect("write");
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = Rc::clone(&seen);
    let key = Rc::new(RefCell::new(None::<SourceKey>));
    let k = Rc::clone(&key);
    let inserted = LineSource::insert(
        lp,
        reader,
        move |lp, line| {
            s.borrow_mut().push(line);
            let key = k.borrow().expect("inserted");
            assert!(key.remove(lp));
        },
        |_, _| panic!("removed before the end"),
    )
    .expect("insert");
    *key.borrow_mut() = Some(inserted);
    // The writer stays open: only the removal lets the loop end.
    run_within(lp, LIMIT);
    assert_eq!(*seen.borrow(), [b"a".to_vec()]);
    assert!(!inserted.is_alive(lp));
    drop(writer);
}

/// Receives from a socket with the reactor's own operation until the end
/// of the stream, counting bytes; removes itself at the end.
struct Counter {
    socket: UnixStream,
    bytes: usize,
    completions: usize,
    op: Option<OpId>,
}

impl Counter {
    fn receive(&mut self, lp: &mut Loop, key: SourceKey) {
        let op = Op::recv(self.socket.as_raw_fd(), Vec::with_capacity(64));
        self.op = Some(key.submit(lp, op).expect("submit"));
    }
}

impl EventSource for Counter {
    fn process(&mut self, lp: &mut Loop, key: SourceKey, event: SourceEvent) {
        let SourceEvent::Completed { op, completion } = event else {
            panic!("no watch here: {event:?}");
        };
        assert_eq!(Some(op), self.op);
        assert!(!completion.more);
        self.completions += 1;
        match completion.result {
            Ok(0) => {
                let total = self.bytes;
                key.remove(lp);
                lp.insert_state(total);
            }
            Ok(n) => {
                self.bytes += n;
                self.receive(lp, key);
            }
            Err(error) => panic!("recv: {error}"),
        }
    }
}

fn a_source_submits_operations_and_removes_itself_at_the_end(lp: &mut Loop) {
    let (a, b) = UnixStream::pair().expect("socketpair");
    a.set_nonblocking(true).expect("nonblocking");
    let key = lp.insert_source(Counter {
        socket: a,
        bytes: 0,
        completions: 0,
        op: None,
    });
    assert_eq!(key.with(lp, |c: &mut Counter| c.bytes), Some(0));
    assert_eq!(key.with(lp, |_: &mut Recorder| ()), None, "not a Recorder");
    key.with(lp, |_: &mut Counter| ()).expect("a Counter");
    // Its first receive, submitted from outside its own callback.
    let op = Op::recv(
        key.with(lp, |c: &mut Counter| c.socket.as_raw_fd())
            .unwrap(),
        Vec::with_capacity(64),
    );
    let id = key.submit(lp, op).expect("submit");
    key.with(lp, |c: &mut Counter| c.op = Some(id));
    let thread = std::thread::spawn(move || {
        let mut b = b;
        for _ in 0..3 {
            b.write_all(b"0123456789").expect("write");
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    run_within(lp, LIMIT);
    thread.join().unwrap();
    assert_eq!(lp.state::<usize>(), Some(&30));
    assert!(!key.is_alive(lp));
    assert!(!key.remove(lp));
    assert!(!key.cancel(lp, id));
}

/// Records what reaches it.
struct Recorder(Rc<RefCell<Vec<String>>>);

impl EventSource for Recorder {
    fn process(&mut self, _: &mut Loop, _: SourceKey, event: SourceEvent) {
        self.0.borrow_mut().push(format!("{event:?}"));
    }
}

fn a_removed_source_hears_nothing_more_and_the_loop_ends(lp: &mut Loop) {
    let (a, _b) = UnixStream::pair().expect("socketpair");
    a.set_nonblocking(true).expect("nonblocking");
    let heard = Rc::new(RefCell::new(Vec::new()));
    let key = lp.insert_source(Recorder(Rc::clone(&heard)));
    let recv = key
        .submit(lp, Op::recv(a.as_raw_fd(), Vec::with_capacity(8)))
        .expect("submit");
    let watch = key
        .watch(
            lp,
            std::os::fd::AsFd::as_fd(&a),
            eventide::source::Interest::READABLE,
        )
        .expect("watch");
    assert!(lp.alive());
    lp.set_timeout(Duration::from_millis(20), move |lp| {
        assert!(key.remove(lp));
        assert!(!key.unwatch(lp, watch));
        assert!(!key.cancel(lp, recv));
    });
    run_within(lp, LIMIT);
    assert!(heard.borrow().is_empty(), "{:?}", heard.borrow());
}

fn an_unreferenced_source_does_not_keep_the_loop_alive(lp: &mut Loop) {
    let (a, mut b) = UnixStream::pair().expect("socketpair");
    a.set_nonblocking(true).expect("nonblocking");
    let heard = Rc::new(RefCell::new(Vec::new()));
    let key = lp.insert_source(Recorder(Rc::clone(&heard)));
    let op = key
        .submit(lp, Op::recv(a.as_raw_fd(), Vec::with_capacity(8)))
        .expect("submit");
    assert!(key.has_ref(lp));
    assert!(key.set_ref(lp, false));
    assert!(!key.has_ref(lp));
    run_within(lp, LIMIT);
    assert!(heard.borrow().is_empty());
    // Its events still come while something else keeps the loop running.
    b.write_all(b"hi").expect("write");
    lp.set_timeout(Duration::from_millis(50), |_| {});
    run_within(lp, LIMIT);
    assert_eq!(heard.borrow().len(), 1, "{:?}", heard.borrow());
    assert!(!key.cancel(lp, op), "finished");
    // Referenced again: a new operation keeps the loop alive until done.
    assert!(key.set_ref(lp, true));
    key.submit(lp, Op::recv(a.as_raw_fd(), Vec::with_capacity(8)))
        .expect("submit");
    lp.set_timeout(Duration::from_millis(20), move |_| {
        b.write_all(b"!").expect("write");
    });
    run_within(lp, LIMIT);
    assert_eq!(heard.borrow().len(), 2);
    assert!(key.remove(lp));
}

/// Panics on its first event: kept, it hears the next one.
struct Flaky(Rc<RefCell<usize>>);

impl EventSource for Flaky {
    fn process(&mut self, lp: &mut Loop, key: SourceKey, _: SourceEvent) {
        *self.0.borrow_mut() += 1;
        if *self.0.borrow() == 1 {
            panic!("first event");
        }
        key.remove(lp);
    }
}

fn a_panicking_source_is_kept(lp: &mut Loop) {
    let (a, mut b) = UnixStream::pair().expect("socketpair");
    a.set_nonblocking(true).expect("nonblocking");
    let calls = Rc::new(RefCell::new(0));
    let key = lp.insert_source(Flaky(Rc::clone(&calls)));
    let watch = key
        .watch(
            lp,
            std::os::fd::AsFd::as_fd(&a),
            eventide::source::Interest::WRITABLE,
        )
        .expect("watch");
    let first = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| lp.run()));
    assert!(first.is_err(), "the panic leaves run()");
    assert!(key.is_alive(lp));
    assert_eq!(
        key.interest(lp, watch),
        Some(eventide::source::Interest::WRITABLE)
    );
    run_within(lp, LIMIT);
    assert_eq!(*calls.borrow(), 2);
    assert!(!key.is_alive(lp));
    b.write_all(b"x").ok();
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
