//! Shared by the fs suites: temporary directories and files, and
//! re-running a suite's io_uring cases with every file operation routed to
//! the blocking pool.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};

/// A fresh temporary directory, removed when dropped.
pub fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

/// A path as Node's messages quote it.
pub fn q(path: &Path) -> String {
    path.display().to_string()
}

/// Writes `contents` to `dir/name` and returns the path.
pub fn file_with(dir: &Path, name: &str, contents: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// Re-runs this test binary's `uring::` cases in a child process with
/// `EVENTIDE_URING_FILE_OPS=none`: the reactor then runs no file operation
/// natively and `eventide::fs` routes every one to the pool, on the
/// io_uring backend (as on a kernel without them). Fails unless the child
/// passed at least one case and failed none.
pub fn rerun_uring_cases_on_the_pool() {
    if std::env::var_os("EVENTIDE_TEST_CHILD").is_some() {
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["uring::", "--test-threads=2"])
        .env_remove("EVENTIDE_BACKEND")
        .env("EVENTIDE_TEST_CHILD", "1")
        .env("EVENTIDE_URING_FILE_OPS", "none")
        .output()
        .expect("spawn the child test run");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the pool-routed run failed:\n{text}");
    let passed = text
        .lines()
        .find_map(|l| l.strip_prefix("test result: ok. "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse::<usize>().ok());
    assert!(
        passed.is_some_and(|n| n > 0),
        "the pool-routed run ran no case:\n{text}"
    );
}
