//! The process tests' second run: the whole test binary again with
//! `EVENTIDE_NO_PIDFD=1`, the process module's test hook that makes it
//! watch exits the `SIGCHLD` way (its fallback where there is no
//! `pidfd_open`), on every backend.

#![allow(dead_code, unreachable_pub)]

/// The process module's test hook (read once per process).
pub const NO_PIDFD: &str = "EVENTIDE_NO_PIDFD";

/// Whether this test process watches exits the `SIGCHLD` way.
pub fn forced_sigchld() -> bool {
    std::env::var_os(NO_PIDFD).is_some_and(|v| !v.is_empty() && v != "0")
}

/// Runs this test binary again, every test but `skip` (the caller), with
/// `EVENTIDE_NO_PIDFD=1`; fails unless it passed and ran at least
/// `at_least` tests. Returns its output.
pub fn rerun_without_pidfd(skip: &str, at_least: usize) -> String {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--skip", skip])
        .env_remove("EVENTIDE_BACKEND")
        .env(NO_PIDFD, "1")
        .output()
        .expect("run the test binary again");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "without pidfd:\n{text}");
    let passed: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("test result: ok. "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no test result:\n{text}"));
    assert!(
        passed >= at_least,
        "without pidfd: {passed} passed, expected {at_least}:\n{text}"
    );
    text
}

/// Whether this process holds a pidfd now (`/proc/self/fd` links to
/// `anon_inode:[pidfd]`).
pub fn holds_a_pidfd() -> bool {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .any(|target| target.to_string_lossy().contains("pidfd"))
}
