//! `examples/blocked.rs` run as its users run it (a process, built by
//! cargo with this test's features and profile): its report on stderr
//! names `examples/blocked.rs:LINE`, the line where the blocking timer is
//! set, while the callback runs and when it returns. On each compiled
//! backend (`EVENTIDE_BACKEND`); bounded by [`LIMIT`].

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);

/// Builds the example (once per test) and returns its executable.
fn blocked() -> PathBuf {
    let mut cargo = Command::new(env!("CARGO"));
    cargo.args(["build", "--quiet", "--message-format=json"]);
    cargo.args(["--manifest-path", env!("CARGO_MANIFEST_PATH")]);
    cargo.args(["--example", "blocked"]);
    let features: Vec<&str> = [
        ("uring", cfg!(feature = "uring")),
        ("epoll", cfg!(feature = "epoll")),
        ("poll", cfg!(feature = "poll")),
        ("tracing", cfg!(feature = "tracing")),
    ]
    .into_iter()
    .filter_map(|(name, on)| on.then_some(name))
    .collect();
    cargo.args(["--no-default-features", "--features", &features.join(",")]);
    if !cfg!(debug_assertions) {
        cargo.arg("--release");
    }
    let out = cargo.stderr(Stdio::inherit()).output().expect("run cargo");
    assert!(out.status.success(), "cargo build --example failed");
    let text = String::from_utf8(out.stdout).expect("cargo prints UTF-8");
    text.lines()
        .find_map(|line| {
            let at = line.find("\"executable\":\"")? + "\"executable\":\"".len();
            let end = line[at..].find('"')?;
            Some(PathBuf::from(&line[at..at + end]))
        })
        .expect("cargo names the example's executable")
}

/// The line of `examples/blocked.rs` that sets the blocking timer.
fn timer_line() -> usize {
    let source = include_str!("../examples/blocked.rs");
    source
        .lines()
        .position(|l| l.contains("lp.set_timeout("))
        .expect("the example sets a timeout")
        + 1
}

#[test]
fn blocked_example_names_the_timer_line() {
    let exe = blocked();
    let line = timer_line();
    let site = format!("examples/blocked.rs:{line}:");
    for backend in ["uring", "epoll", "poll"] {
        if !cfg!(feature = "uring") && backend == "uring"
            || !cfg!(feature = "epoll") && backend == "epoll"
            || !cfg!(feature = "poll") && backend == "poll"
        {
            continue;
        }
        let mut child = Command::new(&exe)
            .env("EVENTIDE_BACKEND", backend)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the example");
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if start.elapsed() > LIMIT {
                child.kill().ok();
                panic!("the example ran over {LIMIT:?} on {backend}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let out = child.wait_with_output().expect("the output");
        let stderr = String::from_utf8(out.stderr).expect("UTF-8");
        if !status.success() && stderr.contains("Backend") {
            eprintln!("skipped on {backend}: {stderr}");
            continue;
        }
        assert!(status.success(), "{backend}: {status}\n{stderr}");
        let reports: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("the loop was blocked"))
            .collect();
        assert_eq!(reports.len(), 2, "{backend}: {stderr}");
        for report in &reports {
            assert!(report.contains(&site), "{backend}: want {site} in {report}");
            assert!(report.contains("timeout callback"), "{report}");
        }
        assert!(reports[0].contains("so far"), "{stderr}");
        assert!(reports[1].contains("in all"), "{stderr}");
    }
}
