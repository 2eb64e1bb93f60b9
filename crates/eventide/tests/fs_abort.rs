//! Cancelling file reads and writes: an aborted ([`AbortSignal::read`],
//! [`AbortSignal::write`]) or dropped (`task::fs::read` inside
//! `AbortSignal::run`) operation in io_uring is cancelled in the kernel
//! (`IORING_OP_ASYNC_CANCEL`); its buffer stays the kernel's until the
//! completion comes back; the callback then gets `ABORT_ERR` once, with
//! the buffer.
//!
//! The kernel cases read a FIFO that this test holds open for writing
//! and never writes before the abort: the read cannot end by itself, so
//! only a cancel in the kernel ends it; and the bytes written after the
//! abort go to the next read, not to a read still pending in the kernel.
//! They need the uring backend with reads on the ring (not narrowed by
//! `EVENTIDE_URING_FILE_OPS`); elsewhere (a pool thread cannot be
//! interrupted) the same API is checked on a regular file.

mod util;

use std::cell::{Cell, RefCell};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use eventide::abort::{AbortController, AbortSignal};
use eventide::fs::{File, FileOps, Flags};
use eventide::task::{self, TaskError};
use eventide::{BackendKind, Loop};
use util::{ms, outcome, run_within};

const LIMIT: Duration = Duration::from_secs(20);

fn is_abort(error: &eventide::Error) -> bool {
    TaskError::of(error) == Some(&TaskError::Aborted)
        && error.code() == Some("ABORT_ERR")
        && error.to_string() == "The operation was aborted"
}

/// A uring loop whose reads and opens run on the ring, or `None` (the
/// case is skipped, with why on stderr).
fn ring_loop() -> Option<Loop> {
    let mut lp = util::new_loop(BackendKind::Uring)?;
    let needs = FileOps::READ.union(FileOps::OPENAT);
    if !lp.fs().native_ops().contains(needs) {
        eprintln!("skipped: reads or opens are not on the ring here");
        return None;
    }
    Some(lp)
}

/// A FIFO in a temporary directory, opened read-write by the loop (a
/// read-write open of a FIFO does not wait for a peer on Linux; holding
/// the write side, its reads wait instead of seeing an end), and a second
/// non-blocking read-write descriptor for the test to write with.
fn fifo(lp: &mut Loop) -> (tempfile::TempDir, File, std::fs::File) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path: PathBuf = dir.path().join("fifo");
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a live NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let p = path.clone();
    let flags = Flags::parse("r+").unwrap();
    let file = outcome(lp, move |lp, done| lp.fs().open(p, flags, 0, done)).expect("open");
    let writer = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .expect("open the writer");
    (dir, file, writer)
}

/// After a cancelled read: bytes written now are the next read's (a read
/// still pending in the kernel would take them, and this one would wait
/// until the watchdog fails the test).
fn next_read_gets_what_is_written(lp: &mut Loop, file: File, writer: &mut std::fs::File) {
    writer.write_all(b"after").expect("write the fifo");
    let got = Rc::new(RefCell::new(None));
    let g = Rc::clone(&got);
    lp.fs()
        .read(file, Vec::with_capacity(64), None, move |_, result, buf| {
            *g.borrow_mut() = Some((result, buf));
        });
    run_within(lp, LIMIT);
    let (result, buf) = got
        .borrow_mut()
        .take()
        .expect("the second read called back");
    assert_eq!(result.expect("the second read"), 5);
    assert_eq!(buf, b"after");
}

/// `AbortSignal::read` of a FIFO nobody writes: in the kernel until the
/// abort; the abort cancels it there (the reactor's count of operations
/// in flight drops only when the kernel's completion comes back, and the
/// callback runs after that, once, with ABORT_ERR and the very buffer
/// the kernel had).
#[test]
fn an_aborted_fifo_read_is_cancelled_in_the_kernel() {
    let Some(mut lp) = ring_loop() else { return };
    let lp = &mut lp;
    let (_dir, file, mut writer) = fifo(lp);
    let idle = lp.ops_in_flight();
    let controller = AbortController::new();
    let buf = Vec::with_capacity(4096);
    let buf_at = buf.as_ptr() as usize;
    let calls = Rc::new(Cell::new(0));
    let got = Rc::new(RefCell::new(None));
    let (c, g) = (Rc::clone(&calls), Rc::clone(&got));
    controller
        .signal()
        .read(lp, file, buf, None, move |lp, result, buf| {
            c.set(c.get() + 1);
            *g.borrow_mut() = Some((result, buf, lp.ops_in_flight()));
        });
    // 20 ms later the read is still in the kernel: abort it there.
    let before_abort = Rc::new(Cell::new(None));
    let b = Rc::clone(&before_abort);
    let c = Rc::clone(&calls);
    lp.set_timeout(ms(20), move |lp| {
        b.set(Some(lp.ops_in_flight()));
        controller.abort(lp);
        assert_eq!(c.get(), 0, "the callback ran inside abort()");
        // The cancel is asked for; the completion is not in yet.
        assert_eq!(lp.ops_in_flight(), idle + 1, "gone before its completion");
    });
    run_within(lp, LIMIT);
    assert_eq!(before_abort.get(), Some(idle + 1), "the read was in flight");
    assert_eq!(calls.get(), 1, "called back once");
    let (result, buf, in_flight_then) = got.borrow_mut().take().unwrap();
    assert!(is_abort(&result.unwrap_err()));
    assert_eq!(
        in_flight_then, idle,
        "the callback ran once the kernel let go"
    );
    assert_eq!(
        buf.as_ptr() as usize,
        buf_at,
        "the kernel's buffer came back"
    );
    assert_eq!((buf.len(), buf.capacity()), (0, 4096));
    assert_eq!(lp.ops_in_flight(), idle);
    next_read_gets_what_is_written(lp, file, &mut writer);
    outcome(lp, move |lp, done| lp.fs().close(file, done)).unwrap();
}

/// The future form: `task::fs::read` inside `AbortSignal::run`, aborted,
/// drops the read future, which cancels the read in the kernel. The loop
/// then has nothing left in flight and `run` returns (a read left in the
/// kernel would keep the loop alive until the watchdog), and the bytes
/// written next go to the next read.
#[test]
fn a_dropped_fifo_read_future_is_cancelled_in_the_kernel() {
    let Some(mut lp) = ring_loop() else { return };
    let lp = &mut lp;
    let (_dir, file, mut writer) = fifo(lp);
    let idle = lp.ops_in_flight();
    let controller = AbortController::new();
    let signal = controller.signal();
    let in_flight_at_abort = Rc::new(Cell::new(None));
    let seen = Rc::clone(&in_flight_at_abort);
    lp.set_timeout(ms(20), move |lp| {
        seen.set(Some(lp.ops_in_flight()));
        controller.abort(lp);
    });
    let result = lp
        .block_on(signal.run(task::fs::read(file, Vec::with_capacity(4096), None)))
        .expect("block_on");
    assert!(is_abort(&result.unwrap_err()));
    assert_eq!(in_flight_at_abort.get(), Some(idle + 1));
    // The cancelled read's completion comes back to the loop, which drops
    // the buffer with the result nobody awaits.
    run_within(lp, LIMIT);
    assert_eq!(lp.ops_in_flight(), idle, "the read is gone from the ring");
    next_read_gets_what_is_written(lp, file, &mut writer);
    outcome(lp, move |lp, done| lp.fs().close(file, done)).unwrap();
}

fn regular_file(dir: &Path) -> PathBuf {
    let path = dir.join("data");
    std::fs::write(&path, vec![7u8; 8192]).expect("write");
    path
}

/// On every backend: a read and a write with a signal aborted while they
/// are in flight (on the ring or the pool) call back once, after the
/// abort call returned, with ABORT_ERR and their buffer (a read's at its
/// length before the read); with a signal that is not aborted, with
/// their results; with an aborted one, from the next tick, having
/// started nothing.
fn signal_read_and_write_call_back_once_with_their_buffer(lp: &mut Loop) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = regular_file(dir.path());
    let flags = Flags::parse("r+").unwrap();
    let file = outcome(lp, move |lp, done| lp.fs().open(path, flags, 0, done)).expect("open");
    type Got = Rc<RefCell<Vec<(eventide::Result<usize>, Vec<u8>)>>>;
    let got: Got = Rc::default();
    let keep = |got: &Got| {
        let got = Rc::clone(got);
        move |_: &mut Loop, result, buf| got.borrow_mut().push((result, buf))
    };
    // Aborted in flight.
    let controller = AbortController::new();
    let signal = controller.signal();
    let mut head = vec![1u8, 2, 3];
    head.reserve(4096);
    let read: Got = Rc::default();
    signal.read(lp, file, head, Some(0), keep(&read));
    signal.write(lp, file, vec![9u8; 100], Some(0), keep(&got));
    controller.abort(lp);
    assert!(got.borrow().is_empty(), "called back inside abort()");
    assert!(read.borrow().is_empty(), "called back inside abort()");
    run_within(lp, LIMIT);
    {
        // Each its own: on the pool the two may finish in either order.
        let read = read.borrow();
        assert_eq!(read.len(), 1, "the read called back once");
        assert!(is_abort(read[0].0.as_ref().unwrap_err()));
        assert_eq!(
            read[0].1,
            [1, 2, 3],
            "the read's buffer at its length before"
        );
        let got = got.borrow();
        assert_eq!(got.len(), 1, "the write called back once");
        assert!(is_abort(got[0].0.as_ref().unwrap_err()));
        assert_eq!(got[0].1, vec![9u8; 100], "the write's buffer");
    }
    got.borrow_mut().clear();
    // Not aborted: the results.
    let quiet = AbortSignal::default();
    quiet.read(lp, file, Vec::with_capacity(16), Some(0), keep(&got));
    run_within(lp, LIMIT);
    quiet.write(lp, file, vec![5u8; 4], Some(8190), keep(&got));
    run_within(lp, LIMIT);
    {
        let got = got.borrow();
        assert_eq!(got.len(), 2);
        assert_eq!(*got[0].0.as_ref().unwrap(), 16);
        assert!(got[0].1.iter().all(|&b| b == 7 || b == 9));
        assert_eq!(*got[1].0.as_ref().unwrap(), 4);
    }
    got.borrow_mut().clear();
    // Already aborted: nothing starts; the abort error from the next tick.
    let aborted = AbortSignal::aborted_signal();
    aborted.write(lp, file, vec![0u8; 4], Some(0), keep(&got));
    assert!(got.borrow().is_empty(), "called back inside write()");
    run_within(lp, LIMIT);
    assert_eq!(got.borrow().len(), 1);
    assert!(is_abort(got.borrow()[0].0.as_ref().unwrap_err()));
    outcome(lp, move |lp, done| lp.fs().close(file, done)).unwrap();
    let bytes = std::fs::read(dir.path().join("data")).unwrap();
    assert_eq!(&bytes[8190..], [5, 5, 5, 5], "the quiet write went through");
    assert!(bytes[..4].iter().all(|&b| b == 7 || b == 9), "not zeroed");
}

on_every_backend!(signal_read_and_write_call_back_once_with_their_buffer);
