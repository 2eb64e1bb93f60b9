//! The routing decision, made visible and testable on a kernel that has
//! every io_uring file operation: the reactor's file-operation set
//! (narrowed by `EVENTIDE_URING_FILE_OPS`) sends operations to the pool,
//! and an `EINVAL` from the ring (`EVENTIDE_URING_FILE_OPS_EINVAL`, as a
//! kernel without the opcode answers when its probe did not say so) is
//! retried on the pool once and then remembered. Each case runs in a child
//! process with the variable set; `fs::stats()` shows where operations went.

mod util;

use std::path::Path;

use eventide::fs::{self, Flags};
use eventide::{BackendKind, Loop};
use util::{in_child, new_loop, outcome, run_child};

fn uring_compiled() -> bool {
    BackendKind::compiled().contains(&BackendKind::Uring)
}

/// Whether this kernel runs every file operation on the ring (these cases
/// count on it; an older one, or `EVENTIDE_URING_AS_KERNEL`, routes some
/// to the pool from the start: said, and skipped).
fn has_every_file_op(lp: &mut Loop) -> bool {
    use eventide::fs::FileOps;
    let ops = lp.fs().native_ops();
    // What the case itself took away with EVENTIDE_URING_FILE_OPS.
    let taken = std::env::var("EVENTIDE_URING_FILE_OPS")
        .ok()
        .and_then(|v| FileOps::parse(&v).ok())
        .map_or(FileOps::NONE, |kept| FileOps::ALL.difference(kept));
    let every = ops.union(taken) == FileOps::ALL;
    if !every {
        eprintln!("skipped: this kernel's io_uring lacks some file operations ({ops:?})");
    }
    every
}

/// What `f` returns, and where the file operations it ran went:
/// (native, pool, fallback), from `fs::stats()` before and after.
fn routed<T>(f: impl FnOnce() -> T) -> (T, (u64, u64, u64)) {
    let before = fs::stats();
    let value = f();
    let after = fs::stats();
    let counts = (
        after.native - before.native,
        after.pool - before.pool,
        after.fallback - before.fallback,
    );
    (value, counts)
}

/// A case run in a child process with the variables `env` set (io_uring
/// builds only): the `parent` test spawns it; in the `child` (ignored when
/// run directly) the body gets an io_uring loop `lp` and a temporary
/// directory `dir`.
macro_rules! in_child_with {
    ($(#[$meta:meta])* $parent:ident, $child:ident, $env:expr, |$lp:ident, $dir:ident| $body:block) => {
        $(#[$meta])*
        #[test]
        fn $parent() {
            if uring_compiled() {
                run_child(stringify!($child), $env);
            }
        }

        #[test]
        #[ignore = "run by its parent test in a child process"]
        fn $child() {
            assert!(in_child());
            let Some(mut $lp) = new_loop(BackendKind::Uring) else {
                return;
            };
            if !has_every_file_op(&mut $lp) {
                return;
            }
            let $dir = tempfile::tempdir().unwrap();
            $body
        }
    };
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
            .write(file, b"routed".to_vec(), Some(0), move |lp, n, _| {
                done(lp, n)
            })
    });
    assert_eq!(wrote.unwrap(), 6);
    let read = outcome(lp, |lp, done| {
        lp.fs()
            .read(file, Vec::with_capacity(16), Some(2), move |lp, n, buf| {
                done(lp, n.map(|_| buf))
            })
    });
    assert_eq!(read.unwrap(), b"uted");
    let st = outcome(lp, |lp, done| lp.fs().fstat(file, done)).unwrap();
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
    if !has_every_file_op(&mut lp) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ((), counts) = routed(|| round_trip(&mut lp, dir.path()));
    assert_eq!(counts, (9, 0, 0));
}

in_child_with! {
    narrowed_to_nothing_every_op_goes_to_the_pool,
    narrowed_to_nothing_child,
    &[("EVENTIDE_URING_FILE_OPS", "none")],
    |lp, dir| {
        let ((), counts) = routed(|| round_trip(&mut lp, dir.path()));
        assert_eq!(counts, (0, 9, 0));
    }
}

in_child_with! {
    narrowed_by_one_op_only_that_one_goes_to_the_pool,
    narrowed_by_statx_child,
    &[("EVENTIDE_URING_FILE_OPS", "all,-statx")],
    |lp, dir| {
        let ((), counts) = routed(|| round_trip(&mut lp, dir.path()));
        // fstat and stat went to the pool; the rest to the ring.
        assert_eq!(counts, (7, 2, 0));
    }
}

in_child_with! {
    einval_is_retried_on_the_pool_once_then_remembered,
    einval_child,
    &[("EVENTIDE_URING_FILE_OPS_EINVAL", "statx,openat")],
    |lp, dir| {
        let path = dir.path().join("f");
        std::fs::write(&path, b"x").unwrap();
        let lp = &mut lp;
        // First stat: the ring says EINVAL, the pool answers; counted as
        // native and as a fallback. The second goes straight to the pool.
        let (st, counts) = routed(|| outcome(lp, |lp, done| lp.fs().stat(&path, done)));
        assert_eq!(st.unwrap().size, 1);
        assert_eq!(counts, (1, 0, 1));
        let (st, counts) = routed(|| outcome(lp, |lp, done| lp.fs().lstat(&path, done)));
        assert!(st.unwrap().is_file());
        assert_eq!(counts, (0, 1, 0), "remembered");
        // The kind stays on the pool, for errors too.
        let missing = dir.path().join("no");
        let (st, counts) = routed(|| outcome(lp, |lp, done| lp.fs().stat(&missing, done)));
        assert_eq!(st.unwrap_err().code(), Some("ENOENT"));
        assert_eq!(counts, (0, 1, 0));
        // read_file needs openat: EINVAL, pool, remembered; open likewise.
        let (got, counts) = routed(|| {
            let first = outcome(lp, |lp, done| lp.fs().read_file(&path, done));
            let second = outcome(lp, |lp, done| lp.fs().read_file(&path, done));
            (first.unwrap(), second.unwrap())
        });
        assert_eq!(got, (b"x".to_vec(), b"x".to_vec()));
        assert_eq!(counts, (1, 1, 1));
        // Other kinds stay native.
        let (gone, counts) = routed(|| outcome(lp, |lp, done| lp.fs().unlink(&path, done)));
        gone.unwrap();
        assert_eq!(counts, (1, 0, 0));
    }
}

in_child_with! {
    /// An EINVAL on the ring for a request the pool fails as well: the pool's
    /// error is the answer, and the kind is not switched to the pool.
    einval_from_both_routes_is_the_answer,
    einval_both_child,
    &[("EVENTIDE_URING_FILE_OPS_EINVAL", "read")],
    |lp, dir| {
        // The ring's EINVAL is retried on the pool, whose read(2) of a
        // directory fails (EISDIR): that is the answer, and since the pool
        // failed too, the kind is not switched: the next read is tried on
        // the ring again.
        let file = outcome(&mut lp, |lp, done| {
            lp.fs()
                .open(dir.path(), Flags::parse("r").unwrap(), 0, done)
        })
        .unwrap();
        for attempt in ["first", "second"] {
            let (r, counts) = routed(|| {
                outcome(&mut lp, |lp, done| {
                    lp.fs()
                        .read(file, Vec::with_capacity(8), None, move |lp, n, _| {
                            done(lp, n)
                        })
                })
            });
            assert_eq!(r.unwrap_err().code(), Some("EISDIR"));
            assert_eq!(counts, (1, 0, 0), "{attempt} read: tried on the ring, not switched");
        }
        outcome(&mut lp, |lp, done| lp.fs().close(file, done)).unwrap();
    }
}
