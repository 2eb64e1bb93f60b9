//! `Error::kind()` of the loop's own errors, and the Node wordings of
//! `rm` on a directory and of a NUL byte in a path, on every backend.
//!
//! A generic retry loop retries `Interrupted` (as std's `read_exact` and
//! `write_all` do) and `WouldBlock` (as non-blocking code does); no error
//! of the loop's own may have either kind, since another try cannot fix
//! it.

mod util;

use std::cell::RefCell;
use std::io::ErrorKind;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use eventide::fs::RmOptions;
use eventide::{BackendChoice, Error, Loop};
use util::{assert_fs_error, outcome, run_within};

/// The kinds a generic retry loop retries.
fn retried(kind: ErrorKind) -> bool {
    matches!(kind, ErrorKind::Interrupted | ErrorKind::WouldBlock)
}

/// Each of the loop's own errors and its kind, pinned; none is retried,
/// and the `io::Error` made from it keeps the kind.
#[test]
fn the_loops_own_errors_have_kinds_no_retry_loop_retries() {
    let pinned = [
        (Error::Cancelled, ErrorKind::Other),
        (Error::Reentrant, ErrorKind::Other),
        (
            Error::Panicked {
                message: "boom".into(),
            },
            ErrorKind::Other,
        ),
        (Error::NotRun("the pool shut down".into()), ErrorKind::Other),
        (Error::AlreadyRunning, ErrorKind::ResourceBusy),
        (
            Error::Stale {
                what: "work request",
            },
            ErrorKind::NotFound,
        ),
    ];
    for (error, kind) in pinned {
        let shown = error.to_string();
        assert_eq!(error.kind(), kind, "{shown}");
        assert!(!retried(error.kind()), "{shown}");
        assert_eq!(std::io::Error::from(error).kind(), kind, "{shown}");
    }
}

/// A retry loop as generic code writes it: retries while the kind says
/// another try may succeed, at most `limit` times. Returns the tries made.
fn tries_until_done(limit: u32, mut attempt: impl FnMut() -> Result<(), Error>) -> u32 {
    let mut tries = 0;
    while tries < limit {
        tries += 1;
        match attempt() {
            Err(e) if retried(e.kind()) => continue,
            _ => break,
        }
    }
    tries
}

/// Work cancelled while queued reports `Cancelled`, which a retry loop
/// gives up on at once.
fn cancelled_work_is_not_retried(lp: &mut Loop) {
    let mut one = Loop::builder()
        .backend(BackendChoice::Only(lp.backend()))
        .pool_threads(1)
        .build()
        .unwrap();
    let lp = &mut one;
    // Hold the only pool thread so the next work stays queued.
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    lp.queue_work(
        move || {
            started_tx.send(()).unwrap();
            let _ = release_rx.recv_timeout(Duration::from_secs(10));
        },
        |_, r| r.unwrap(),
    );
    started_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let got = Rc::new(RefCell::new(None));
    let g = Rc::clone(&got);
    let queued = lp.queue_work(
        || 1,
        move |_, r: eventide::Result<i32>| {
            *g.borrow_mut() = Some(r);
        },
    );
    lp.cancel_work(queued).unwrap();
    lp.set_timeout(Duration::from_millis(1), move |_| {
        release_tx.send(()).unwrap();
    });
    run_within(lp, Duration::from_secs(20));
    let error = got.borrow_mut().take().unwrap().unwrap_err();
    assert!(matches!(error, Error::Cancelled), "{error}");
    let mut error = Some(error);
    let tries = tries_until_done(5, || Err(error.take().unwrap_or(Error::Cancelled)));
    assert_eq!(tries, 1);
}

/// `run` from inside a callback of the same loop reports `Reentrant`,
/// which a retry loop gives up on at once (it would fail forever).
fn reentrant_run_is_not_retried(lp: &mut Loop) {
    let tries = Rc::new(RefCell::new(0));
    let t = Rc::clone(&tries);
    lp.set_immediate(move |lp| {
        *t.borrow_mut() = tries_until_done(5, || {
            let error = lp.run().unwrap_err();
            assert!(matches!(error, Error::Reentrant), "{error}");
            Err(error)
        });
    });
    run_within(lp, Duration::from_secs(20));
    assert_eq!(*tries.borrow(), 1);
}

/// `rm` of a directory without `recursive` is Node's `ERR_FS_EISDIR`, a
/// SystemError whose errno is still `EISDIR` (node 20:
/// `Path is a directory: rm returned EISDIR (is a directory) p`).
fn rm_of_a_directory_is_err_fs_eisdir(lp: &mut Loop) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p");
    std::fs::create_dir(&p).unwrap();
    let at = p.clone();
    let error = outcome(lp, move |lp, done| {
        lp.fs().rm(at, RmOptions::default(), done)
    })
    .unwrap_err();
    let message = format!(
        "Path is a directory: rm returned EISDIR (is a directory) {}",
        p.display()
    );
    assert_fs_error(&error, "ERR_FS_EISDIR", &message);
    assert_eq!(error.errno(), Some(libc::EISDIR));
    assert_eq!(error.kind(), ErrorKind::IsADirectory);
    assert!(p.is_dir(), "nothing removed");
}

/// A NUL byte in a path is `ERR_INVALID_ARG_VALUE` with Node's reason and
/// Node's quoting (`util.inspect`: single quotes unless the string holds
/// one, `\x00`), as node 20 prints them.
fn a_nul_in_a_path_has_nodes_reason(lp: &mut Loop) {
    let reason = "must be a string, Uint8Array, or URL without null bytes";
    let cases = [
        ("a\0b", r"'a\x00b'"),
        ("a\\b\0", r"'a\\b\x00'"),
        ("\x7f\0", r"'\x7F\x00'"),
        ("\u{85}\0", r"'\x85\x00'"),
        ("é\0\t\r\x1b", r"'é\x00\t\r\x1B'"),
        ("it's\0", r#""it's\x00""#),
        ("it's\"\0", r#"`it's"\x00`"#),
        ("it's\"`\0", r#"'it\'s"`\x00'"#),
        ("'\"${x}\0", r#"'\'"${x}\x00'"#),
        ("a\0'\"\n", r#"`a\x00'"\n`"#),
    ];
    for (path, received) in cases {
        let error = outcome(lp, move |lp, done| lp.fs().stat(path, done)).unwrap_err();
        assert_eq!(error.code(), Some("ERR_INVALID_ARG_VALUE"));
        assert_eq!(
            error.to_string(),
            format!("The argument 'path' {reason}. Received {received}")
        );
        assert_eq!(error.kind(), ErrorKind::InvalidInput);
    }
    let error = outcome(lp, |lp, done| {
        lp.fs().rm("x\0y", RmOptions::default(), done)
    })
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("The argument 'path' {reason}. Received 'x\\x00y'")
    );
}

on_every_backend!(
    cancelled_work_is_not_retried,
    reentrant_run_is_not_retried,
    rm_of_a_directory_is_err_fs_eisdir,
    a_nul_in_a_path_has_nodes_reason,
);
