//! Shared helpers for the facade's tests: a loop per backend, a trace to
//! record callback order, and a busy-wait that blocks the loop thread as
//! Node's `spin(ms)` does in the conformance scripts.

#![allow(dead_code, unreachable_pub)]

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use eventide::{BackendChoice, BackendKind, Loop};

/// A loop on exactly `backend`, or `None` (with a note on stderr) when
/// that backend is not compiled in or the system refuses it here.
pub fn new_loop(backend: BackendKind) -> Option<Loop> {
    match Loop::builder()
        .backend(BackendChoice::Only(backend))
        .build()
    {
        // The variable overrides the code (docs/configuration.md): a run
        // with EVENTIDE_BACKEND set tests that backend only.
        Ok(lp) if lp.backend() != backend && std::env::var_os("EVENTIDE_BACKEND").is_some() => {
            eprintln!("skipped on {backend}: EVENTIDE_BACKEND overrides it");
            None
        }
        Ok(lp) => {
            assert_eq!(lp.backend(), backend);
            eprintln!("backend: {backend}");
            Some(lp)
        }
        Err(error) => {
            eprintln!("skipped on {backend}: {error}");
            None
        }
    }
}

/// The order things happened in, one token each.
#[derive(Clone, Default)]
pub struct Trace(Rc<RefCell<Vec<String>>>);

impl Trace {
    pub fn log(&self, token: impl Into<String>) {
        self.0.borrow_mut().push(token.into());
    }

    /// A callback-friendly logger: `trace.at("a")` is a closure that logs "a".
    pub fn at(&self, token: &'static str) -> impl FnMut(&mut Loop) + 'static {
        let trace = self.clone();
        move |_| trace.log(token)
    }

    pub fn tokens(&self) -> Vec<String> {
        self.0.borrow().clone()
    }

    pub fn assert(&self, expected: &[&str]) {
        assert_eq!(self.tokens(), expected);
    }
}

/// Blocks the thread for `ms` milliseconds, as the scripts' `spin(ms)`.
pub fn spin(ms: u64) {
    let end = Instant::now() + Duration::from_millis(ms);
    while Instant::now() < end {
        std::hint::spin_loop();
    }
}

pub fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// Runs the loop to its end, failing the test if it takes over `limit`
/// (a bug that keeps the loop alive must fail, not hang).
pub fn run_within(lp: &mut Loop, limit: Duration) {
    let watchdog = lp.set_timeout(limit, |_| {
        panic!("the loop was still running after its time limit")
    });
    lp.unref_timer(watchdog);
    lp.run().expect("the loop runs");
}

/// One at a time: held by the scenarios whose orderings depend on time
/// (`spin`s against millisecond timers), so the three backends' copies of
/// a scenario do not preempt one another on a 2-core machine and turn a
/// 5 ms spin into 30. (A panicking holder leaves it usable.)
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// As [`on_every_backend!`], each scenario run under [`serial`], the loop
/// made once the lock is held: for scenarios that spin against timers.
#[macro_export]
macro_rules! on_every_backend_serial {
    ($($name:ident),* $(,)?) => {
        mod uring {
            $(
                #[test]
                fn $name() {
                    let _serial = $crate::util::serial();
                    if let Some(mut lp) = $crate::util::new_loop(eventide::BackendKind::Uring) {
                        super::$name(&mut lp);
                    }
                }
            )*
        }
        mod poll {
            $(
                #[test]
                fn $name() {
                    let _serial = $crate::util::serial();
                    if let Some(mut lp) = $crate::util::new_loop(eventide::BackendKind::Poll) {
                        super::$name(&mut lp);
                    }
                }
            )*
        }
        mod epoll {
            $(
                #[test]
                fn $name() {
                    let _serial = $crate::util::serial();
                    if let Some(mut lp) = $crate::util::new_loop(eventide::BackendKind::Epoll) {
                        super::$name(&mut lp);
                    }
                }
            )*
        }
    };
}

/// Instantiates each named scenario `fn name(lp: &mut Loop)` once per
/// backend, as `uring::name`, `epoll::name` and `poll::name`.
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod uring {
            $(
                #[test]
                fn $name() {
                    if let Some(mut lp) = $crate::util::new_loop(eventide::BackendKind::Uring) {
                        super::$name(&mut lp);
                    }
                }
            )*
        }
        mod poll {
            $(
                #[test]
                fn $name() {
                    if let Some(mut lp) = $crate::util::new_loop(eventide::BackendKind::Poll) {
                        super::$name(&mut lp);
                    }
                }
            )*
        }
        mod epoll {
            $(
                #[test]
                fn $name() {
                    if let Some(mut lp) = $crate::util::new_loop(eventide::BackendKind::Epoll) {
                        super::$name(&mut lp);
                    }
                }
            )*
        }
    };
}

/// Starts something with a callback, runs the loop (bounded), and returns
/// what the callback was given: `outcome(lp, |lp, done| lp.fs().stat(p, done))`.
/// Fails if the callback ran inside the call that started it, or never.
pub fn outcome<T: 'static>(
    lp: &mut Loop,
    start: impl FnOnce(&mut Loop, Box<dyn FnOnce(&mut Loop, T)>),
) -> T {
    let got = Rc::new(RefCell::new(None));
    let g = Rc::clone(&got);
    start(lp, Box::new(move |_, value| *g.borrow_mut() = Some(value)));
    assert!(
        got.borrow().is_none(),
        "the callback ran inside the call that asked for it"
    );
    run_within(lp, Duration::from_secs(20));
    let value = got.borrow_mut().take();
    value.expect("the callback ran")
}

/// Checks an fs error: its code and its message, exactly as Node's.
pub fn assert_fs_error(error: &eventide::Error, code: &str, message: &str) {
    assert_eq!(error.code(), Some(code), "{error}");
    assert_eq!(error.to_string(), message);
}

/// Set in a child test process started by [`run_child`].
const CHILD: &str = "EVENTIDE_TEST_CHILD";

/// Re-runs this test binary with only the `#[ignore]`d test `name`, in a
/// child process (`EVENTIDE_BACKEND` removed, `env` added); fails unless
/// it passed. Returns the child's stdout and stderr.
pub fn run_child(name: &str, env: &[(&str, &str)]) -> String {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        name,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    cmd.env_remove("EVENTIDE_BACKEND").env(CHILD, "1");
    for (key, value) in env {
        cmd.env(key, value);
    }
    let out = cmd.output().expect("spawn the child test");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child {name} failed:\n{text}");
    assert!(
        text.contains("1 passed"),
        "child {name} did not run:\n{text}"
    );
    text
}

/// Whether this process is a child started by [`run_child`].
pub fn in_child() -> bool {
    std::env::var_os(CHILD).is_some()
}
