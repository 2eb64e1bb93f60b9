//! fs under a seccomp profile that refuses io_uring (as Docker's default
//! profile does): the loop's `auto` choice falls back to the fastest
//! readiness backend (epoll where compiled, else polling) and every
//! file operation goes to the pool, with the same results and errors. The
//! filter is installed in a child process (this binary, re-executed).

mod util;

use std::time::Duration;

use eventide::fs::{self, FileType};
use eventide::{BackendChoice, BackendKind, Loop};
use util::{assert_fs_error, in_child, outcome};

/// What `auto` falls back to when io_uring is refused.
fn readiness_fallback() -> BackendKind {
    if BackendKind::compiled().contains(&BackendKind::Epoll) {
        BackendKind::Epoll
    } else {
        BackendKind::Poll
    }
}

#[cfg(all(
    feature = "uring",
    any(feature = "epoll", feature = "poll"),
    target_os = "linux"
))]
#[test]
fn fs_works_when_seccomp_refuses_io_uring() {
    let out = util::run_child("child_runs_fs_under_seccomp", &[]);
    let chose = format!("auto chose {}\n", readiness_fallback());
    assert!(out.contains(&chose), "{out}");
    assert!(out.contains("fs ok on the pool"), "{out}");
    eprintln!("{out}");
}

#[test]
#[ignore = "child entry point: run by fs_works_when_seccomp_refuses_io_uring"]
fn child_runs_fs_under_seccomp() {
    assert!(in_child());
    deny_io_uring_setup();
    let forced = Loop::builder()
        .backend(BackendChoice::Only(BackendKind::Uring))
        .build();
    assert_eq!(
        forced.unwrap_err().kind(),
        std::io::ErrorKind::PermissionDenied
    );
    let mut lp = Loop::new().unwrap();
    println!("auto chose {}", lp.backend());
    assert_eq!(lp.backend(), readiness_fallback());

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.txt");
    let before = fs::stats();
    let p = path.clone();
    outcome(&mut lp, move |lp, done| {
        lp.fs().write_file(p, b"through the pool".to_vec(), done)
    })
    .unwrap();
    let p = path.clone();
    let bytes = outcome(&mut lp, move |lp, done| lp.fs().read_file(p, done)).unwrap();
    assert_eq!(bytes, b"through the pool");
    let p = path.clone();
    let stats = outcome(&mut lp, move |lp, done| lp.fs().stat(p, done)).unwrap();
    assert_eq!((stats.size, stats.is_file()), (16, true));
    let d = dir.path().to_path_buf();
    let entries = outcome(&mut lp, move |lp, done| lp.fs().readdir(d, done)).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].file_type, FileType::File);
    let missing = dir.path().join("missing.txt");
    let m = missing.clone();
    let error = outcome(&mut lp, move |lp, done| lp.fs().read_file(m, done)).unwrap_err();
    let message = format!(
        "ENOENT: no such file or directory, open '{}'",
        missing.display()
    );
    assert_fs_error(&error, "ENOENT", &message);
    let after = fs::stats();
    assert_eq!(after.native, before.native, "nothing went to io_uring");
    // write_file: open, write, close; read_file (one pool job each, twice),
    // stat, readdir.
    assert_eq!(after.pool, before.pool + 7, "{before:?} -> {after:?}");
    util::run_within(&mut lp, Duration::from_secs(5));
    println!("fs ok on the pool: {after:?}");
}

/// Installs a seccomp filter on this thread: io_uring_setup fails with EPERM.
fn deny_io_uring_setup() {
    eventide_testkit::deny_io_uring_setup().expect("install the seccomp filter");
}
