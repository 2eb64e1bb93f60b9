//! The routing decision, made visible and testable on a kernel that has
//! every io_uring file operation: the reactor's file-operation set
//! (narrowed by `EVENTIDE_URING_FILE_OPS`) sends operations to the pool,
//! and an `EINVAL` from the ring (`EVENTIDE_URING_FILE_OPS_EINVAL`, as a
//! kernel without the opcode answers when its probe did not say so) is
//! retried on the pool once and then remembered. Each case runs in a child
//! process with the variable set; `fs::stats()` shows where operations went.

mod util;

use std::path::Path;

use eventide::fs::{self, Flags, FsStats};
use eventide::{BackendKind, Loop};
use util::{in_child, new_loop, outcome, run_child};

fn uring_compiled() -> bool {
    BackendKind::compiled().contains(&BackendKind::Uring)
}

fn diff(after: FsStats, before: FsStats) -> (u64, u64, u64) {
    (
        after.native - before.native,
        after.pool - before.pool,
        after.fallback - before.fallback,
    )
}

/// open, write, read at a position, fstat, close, read_file, stat, unlink:
/// the results, whatever the route.
fn round_trip(lp: &mut Loop, dir: &Path) {
    let path = dir.join("f");
    let file = outcome(lp, |lp, done| {
        lp.fs()
            .open(&path, Flags::parse("w+").unwrap(), 0o600, done)
    })
    .unwrap();
    let wrote = outcome(lp, |lp, done| {
        lp.fs()
            .write(&file, b"routed".to_vec(), Some(0), move |lp, n, _| {
                done(lp, n)
            })
    });
    assert_eq!(wrote.unwrap(), 6);
    let read = outcome(lp, |lp, done| {
        lp.fs()
            .read(&file, Vec::with_capacity(16), Some(2), move |lp, n, buf| {
                done(lp, n.map(|_| buf))
            })
    });
    assert_eq!(read.unwrap(), b"uted");
    let st = outcome(lp, |lp, done| lp.fs().fstat(&file, done)).unwrap();
    assert_eq!(st.size, 6);
    outcome(lp, |lp, done| lp.fs().close(file, done)).unwrap();
    let whole = outcome(lp, |lp, done| lp.fs().read_file(&path, done)).unwrap();
    assert_eq!(whole, b"routed");
    assert!(
        outcome(lp, |lp, done| lp.fs().stat(&path, done))
            .unwrap()
            .is_file()
    );
    outcome(lp, |lp, done| lp.fs().unlink(&path, done)).unwrap();
    let missing = outcome(lp, |lp, done| lp.fs().read_file(&path, done)).unwrap_err();
    assert_eq!(missing.code(), Some("ENOENT"));
}

/// Without narrowing, on io_uring, every one of these runs on the ring.
#[test]
fn uring_runs_them_natively() {
    let Some(mut lp) = new_loop(BackendKind::Uring) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let before = fs::stats();
    round_trip(&mut lp, dir.path());
    let (native, pool, fallback) = diff(fs::stats(), before);
    assert_eq!((pool, fallback), (0, 0));
    assert_eq!(native, 9);
}

#[test]
fn narrowed_to_nothing_every_op_goes_to_the_pool() {
    if uring_compiled() {
        run_child(
            "narrowed_to_nothing_child",
            &[("EVENTIDE_URING_FILE_OPS", "none")],
        );
    }
}

#[test]
#[ignore = "run by narrowed_to_nothing_every_op_goes_to_the_pool in a child process"]
fn narrowed_to_nothing_child() {
    assert!(in_child());
    let Some(mut lp) = new_loop(BackendKind::Uring) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let before = fs::stats();
    round_trip(&mut lp, dir.path());
    let (native, pool, fallback) = diff(fs::stats(), before);
    assert_eq!((native, pool, fallback), (0, 9, 0));
}

#[test]
fn narrowed_by_one_op_only_that_one_goes_to_the_pool() {
    if uring_compiled() {
        run_child(
            "narrowed_by_statx_child",
            &[("EVENTIDE_URING_FILE_OPS", "all,-statx")],
        );
    }
}

#[test]
#[ignore = "run by narrowed_by_one_op_only_that_one_goes_to_the_pool in a child process"]
fn narrowed_by_statx_child() {
    assert!(in_child());
    let Some(mut lp) = new_loop(BackendKind::Uring) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let before = fs::stats();
    round_trip(&mut lp, dir.path());
    // fstat and stat went to the pool; the rest to the ring.
    assert_eq!(diff(fs::stats(), before), (7, 2, 0));
}

#[test]
fn einval_is_retried_on_the_pool_once_then_remembered() {
    if uring_compiled() {
        run_child(
            "einval_child",
            &[("EVENTIDE_URING_FILE_OPS_EINVAL", "statx,openat")],
        );
    }
}

#[test]
#[ignore = "run by einval_is_retried_on_the_pool_once_then_remembered in a child process"]
fn einval_child() {
    assert!(in_child());
    let Some(mut lp) = new_loop(BackendKind::Uring) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, b"x").unwrap();
    // First stat: the ring says EINVAL, the pool answers; counted as
    // native and as a fallback. The second goes straight to the pool.
    let before = fs::stats();
    let st = outcome(&mut lp, |lp, done| lp.fs().stat(&path, done)).unwrap();
    assert_eq!(st.size, 1);
    assert_eq!(diff(fs::stats(), before), (1, 0, 1));
    let before = fs::stats();
    let st = outcome(&mut lp, |lp, done| lp.fs().lstat(&path, done)).unwrap();
    assert!(st.is_file());
    assert_eq!(diff(fs::stats(), before), (0, 1, 0), "remembered");
    // The kind stays on the pool, for errors too.
    let before = fs::stats();
    let missing = outcome(&mut lp, |lp, done| {
        lp.fs().stat(dir.path().join("no"), done)
    });
    assert_eq!(missing.unwrap_err().code(), Some("ENOENT"));
    assert_eq!(diff(fs::stats(), before), (0, 1, 0));
    // read_file needs openat: EINVAL, pool, remembered; open likewise.
    let before = fs::stats();
    let got = outcome(&mut lp, |lp, done| lp.fs().read_file(&path, done)).unwrap();
    assert_eq!(got, b"x");
    let got = outcome(&mut lp, |lp, done| lp.fs().read_file(&path, done)).unwrap();
    assert_eq!(got, b"x");
    assert_eq!(diff(fs::stats(), before), (1, 1, 1));
    // Other kinds stay native.
    let before = fs::stats();
    outcome(&mut lp, |lp, done| lp.fs().unlink(&path, done)).unwrap();
    assert_eq!(diff(fs::stats(), before), (1, 0, 0));
}

/// An EINVAL on the ring for a request the pool fails as well: the pool's
/// error is the answer, and the kind is not switched to the pool.
#[test]
fn einval_from_both_routes_is_the_answer() {
    if uring_compiled() {
        run_child(
            "einval_both_child",
            &[("EVENTIDE_URING_FILE_OPS_EINVAL", "read")],
        );
    }
}

#[test]
#[ignore = "run by einval_from_both_routes_is_the_answer in a child process"]
fn einval_both_child() {
    assert!(in_child());
    let Some(mut lp) = new_loop(BackendKind::Uring) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The ring's EINVAL is retried on the pool, whose read(2) of a
    // directory fails (EISDIR): that is the answer, and since the pool
    // failed too, the kind is not switched.
    let file = outcome(&mut lp, |lp, done| {
        lp.fs()
            .open(dir.path(), Flags::parse("r").unwrap(), 0, done)
    })
    .unwrap();
    let before = fs::stats();
    let r = outcome(&mut lp, |lp, done| {
        lp.fs()
            .read(&file, Vec::with_capacity(8), None, move |lp, n, _| {
                done(lp, n)
            })
    });
    assert_eq!(r.unwrap_err().code(), Some("EISDIR"));
    assert_eq!(diff(fs::stats(), before), (1, 0, 0), "tried, not switched");
    let before = fs::stats();
    let r = outcome(&mut lp, |lp, done| {
        lp.fs()
            .read(&file, Vec::with_capacity(8), None, move |lp, n, _| {
                done(lp, n)
            })
    });
    assert_eq!(r.unwrap_err().code(), Some("EISDIR"));
    assert_eq!(
        diff(fs::stats(), before),
        (1, 0, 0),
        "still tried on the ring"
    );
    outcome(&mut lp, |lp, done| lp.fs().close(file, done)).unwrap();
}
