//! Dropping a loop while its pool is stuck in a job: the drop returns
//! after a bounded wait (the stuck thread is detached), on every compiled
//! backend.
//!
//! The loop is `!Send`, so each test makes, runs and drops it on a thread
//! of its own, and the test thread waits for the drop with a deadline: a
//! drop that hangs fails the test instead of hanging it. Each stuck job is
//! released at the end, so no thread outlives the test by much.

mod util;

use std::ffi::CString;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use eventide::{BackendChoice, BackendKind, Loop, RunMode, fs::Flags};

/// Far longer than the drop may take (its bound is 1 s by default).
const DEADLINE: Duration = Duration::from_secs(20);

fn build(backend: BackendKind, drop_timeout: Option<Duration>) -> Option<Loop> {
    let mut builder = Loop::builder().backend(BackendChoice::Only(backend));
    if let Some(timeout) = drop_timeout {
        builder = builder.pool_drop_timeout(timeout);
    }
    match builder.build() {
        Ok(lp) => Some(lp),
        Err(error) => {
            eprintln!("skipped on {backend}: {error}");
            None
        }
    }
}

/// A work job that blocks until released: the loop is dropped meanwhile.
/// The drop returns; once released, the job finishes on its detached
/// thread (its result goes into memory the loop leaked, not freed memory).
fn a_stuck_job(backend: BackendKind, drop_timeout: Option<Duration>) {
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let (finished_tx, finished_rx) = mpsc::channel::<()>();
    let (dropped_tx, dropped_rx) = mpsc::channel::<Duration>();
    let looper = std::thread::spawn(move || {
        let Some(mut lp) = build(backend, drop_timeout) else {
            dropped_tx.send(Duration::ZERO).unwrap();
            return false;
        };
        // `after` holds an Rc: it may never leave this thread, and is
        // leaked, not dropped, while its job is stuck.
        let marker = Rc::new(());
        let m = Rc::clone(&marker);
        lp.queue_work(
            move || {
                started_tx.send(()).unwrap();
                release_rx.recv().unwrap();
                finished_tx.send(()).unwrap();
                vec![7u8; 1024]
            },
            move |_, _| drop(m),
        );
        // Quick jobs alongside, finished before the drop: freed as usual.
        for i in 0..8 {
            lp.queue_work(move || i, |_, _| {});
        }
        lp.run_mode(RunMode::NoWait).unwrap();
        started_rx
            .recv_timeout(DEADLINE)
            .expect("the stuck job started");
        let start = Instant::now();
        drop(lp);
        dropped_tx.send(start.elapsed()).unwrap();
        assert_eq!(Rc::strong_count(&marker), 2, "the stuck `after` is leaked");
        true
    });
    let took = dropped_rx
        .recv_timeout(DEADLINE)
        .expect("dropping the loop returned while its job was stuck");
    let ran = looper.join().expect("the loop thread");
    if ran {
        eprintln!("the drop took {took:?}");
    }
    // Released, the job ends on its detached thread.
    if release_tx.send(()).is_ok() {
        finished_rx
            .recv_timeout(DEADLINE)
            .expect("the detached job finished");
    }
}

/// A FIFO's open on the pool or the ring blocks until a writer comes;
/// the loop is dropped meanwhile. Afterwards a writer releases it.
fn a_stuck_fifo_open(backend: BackendKind) {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let c_path = CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let (dropped_tx, dropped_rx) = mpsc::channel::<bool>();
    let path = fifo.clone();
    let looper = std::thread::spawn(move || {
        let Some(mut lp) = build(backend, Some(Duration::from_millis(200))) else {
            dropped_tx.send(false).unwrap();
            return;
        };
        lp.fs()
            .open(&path, Flags::parse("r").unwrap(), 0, |_, _| {});
        // A few turns, so the open is under way.
        for _ in 0..5 {
            lp.run_mode(RunMode::NoWait).unwrap();
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(lp);
        dropped_tx.send(true).unwrap();
    });
    let ran = dropped_rx
        .recv_timeout(DEADLINE)
        .expect("dropping the loop returned while a FIFO open was stuck");
    looper.join().unwrap();
    if ran {
        // A writer releases the open, wherever it waits.
        // SAFETY: a valid path; the descriptor is closed at once.
        let fd = unsafe { libc::open(c_path.as_ptr(), libc::O_WRONLY | libc::O_NONBLOCK) };
        if fd >= 0 {
            // SAFETY: the descriptor just opened, closed once.
            unsafe { libc::close(fd) };
        }
    }
}

#[test]
fn a_stuck_job_with_the_default_bound_on_uring() {
    a_stuck_job(BackendKind::Uring, None);
}

#[test]
fn a_stuck_job_with_the_default_bound_on_poll() {
    a_stuck_job(BackendKind::Poll, None);
}

#[test]
fn a_stuck_job_with_a_short_bound_on_uring() {
    a_stuck_job(BackendKind::Uring, Some(Duration::from_millis(50)));
}

#[test]
fn a_stuck_job_with_a_short_bound_on_poll() {
    a_stuck_job(BackendKind::Poll, Some(Duration::from_millis(50)));
}

#[test]
fn a_stuck_fifo_open_on_uring() {
    a_stuck_fifo_open(BackendKind::Uring);
}

#[test]
fn a_stuck_fifo_open_on_poll() {
    a_stuck_fifo_open(BackendKind::Poll);
}
