//! Backend selection: `auto`, `EVENTIDE_BACKEND`, and the fallback to the
//! fastest readiness backend (epoll on Linux, else polling) when a seccomp
//! profile refuses io_uring (as Docker's default profile does). Cases that change the environment or install a seccomp
//! filter run in a child process: this test binary re-executes itself with
//! `EVENTIDE_TEST_CHILD` set and runs one `#[ignore]`d child entry point.

mod util;

use eventide_reactor::{BACKEND_ENV, BackendChoice, BackendError, BackendKind, Op, Reactor, Token};
use util::*;

#[test]
fn auto_prefers_io_uring_where_the_kernel_allows_it() {
    let r = Reactor::with_choice(BackendChoice::Auto).unwrap();
    let uring_ok = Reactor::with_backend(BackendKind::Uring).is_ok();
    let want = if uring_ok {
        BackendKind::Uring
    } else {
        readiness_fallback()
    };
    eprintln!("auto chose {}", r.backend());
    assert_eq!(r.backend(), want);
}

#[test]
fn the_environment_variable_picks_the_backend() {
    for kind in BackendKind::compiled() {
        let out = run_child("child_reports_its_backend", &[(BACKEND_ENV, kind.name())]);
        if Reactor::with_backend(*kind).is_ok() {
            assert!(out.contains(&format!("backend={kind}")), "{out}");
        } else {
            eprintln!("note: the {kind} backend is refused here");
            assert!(out.contains(&format!("refused {kind}")), "{out}");
        }
    }
    run_child(
        "child_rejects_a_bad_backend_name",
        &[(BACKEND_ENV, "kqueue-please")],
    );
}

#[test]
#[ignore = "child entry point: run by the_environment_variable_picks_the_backend"]
fn child_reports_its_backend() {
    assert!(in_child());
    match Reactor::new() {
        Ok(r) => println!("backend={}", r.backend()),
        // Asked for io_uring where it is refused (a seccomp profile): a
        // clear refusal, never another backend.
        Err(BackendError::Refused { backend, source }) => {
            println!("refused {backend}: {source}")
        }
        Err(e @ BackendError::InvalidSetting { .. }) => {
            println!("invalid: {e}");
            match Reactor::with_choice(eventide_reactor::BackendChoice::Auto) {
                Err(BackendError::InvalidSetting { .. }) => println!("auto: invalid setting"),
                Ok(r) => println!("auto: fell back to {}", r.backend()),
                Err(other) => println!("auto: {other}"),
            }
        }
        Err(e) => panic!("{e}"),
    }
}

/// One rule for every variable the reactor reads: set to the empty string
/// it means what unset means (the default); a value that does not parse is
/// an error naming the variable.
#[test]
fn an_empty_variable_means_the_default_and_a_bad_one_is_named() {
    if Reactor::with_backend(BackendKind::Uring).is_err() {
        eprintln!("skipped: io_uring is refused here");
        return;
    }
    // The variables under test, unset in the first child whatever this
    // process has (CI runs the suite with EVENTIDE_URING_AS_KERNEL set).
    let vars = [
        BACKEND_ENV,
        "EVENTIDE_URING_FILE_OPS",
        "EVENTIDE_URING_FILE_OPS_EINVAL",
        "EVENTIDE_URING_NO_PBUF",
        "EVENTIDE_URING_NO_DIRECT",
        "EVENTIDE_URING_AS_KERNEL",
    ];
    let out = run_child_without("child_reports_what_it_uses", &vars, &[]);
    let unset = out
        .lines()
        .find_map(|l| l.find("USING ").map(|at| l[at..].to_owned()))
        .expect("the child says what it uses");
    let empty = run_child(
        "child_reports_what_it_uses",
        &[
            (BACKEND_ENV, ""),
            ("EVENTIDE_URING_FILE_OPS", ""),
            ("EVENTIDE_URING_FILE_OPS_EINVAL", " "),
            ("EVENTIDE_URING_NO_PBUF", ""),
            ("EVENTIDE_URING_NO_DIRECT", ""),
            ("EVENTIDE_URING_AS_KERNEL", ""),
        ],
    );
    assert!(empty.contains(&unset), "unset: {unset}\nempty: {empty}");
    for (name, value) in [
        ("EVENTIDE_URING_FILE_OPS", "openat,bogus"),
        ("EVENTIDE_URING_NO_PBUF", "maybe"),
        ("EVENTIDE_URING_AS_KERNEL", "latest"),
    ] {
        let out = run_child("child_reports_what_it_uses", &[(name, value)]);
        assert!(
            out.contains(&format!("invalid: {name}={value:?}: expected")),
            "{out}"
        );
        // `auto` does not fall back over it: the mistake is the caller's.
        assert!(out.contains("auto: invalid setting"), "{out}");
    }
}

#[test]
#[ignore = "child entry point: run by an_empty_variable_means_the_default_and_a_bad_one_is_named"]
fn child_reports_what_it_uses() {
    assert!(in_child());
    match Reactor::with_backend(BackendKind::Uring) {
        Ok(r) => {
            let info = r.uring_info().unwrap();
            println!(
                "USING {} {:?} pbuf={} as_kernel={:?}",
                Reactor::new().unwrap().backend(),
                r.file_ops(),
                info.provided_buffers,
                info.as_kernel
            );
        }
        Err(BackendError::Refused { backend, source }) => {
            println!("refused {backend}: {source}")
        }
        Err(e @ BackendError::InvalidSetting { .. }) => {
            println!("invalid: {e}");
            match Reactor::with_choice(eventide_reactor::BackendChoice::Auto) {
                Err(BackendError::InvalidSetting { .. }) => println!("auto: invalid setting"),
                Ok(r) => println!("auto: fell back to {}", r.backend()),
                Err(other) => println!("auto: {other}"),
            }
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
#[ignore = "child entry point: run by the_environment_variable_picks_the_backend"]
fn child_rejects_a_bad_backend_name() {
    assert!(in_child());
    let e = Reactor::new().unwrap_err();
    assert!(matches!(e, BackendError::BadChoice(_)), "{e}");
    assert!(
        e.to_string()
            .contains("expected uring, epoll, poll or auto"),
        "{e}"
    );
}

/// The backend `auto` must fall back to when io_uring is refused: the
/// fastest readiness backend compiled, epoll where it is.
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
fn a_seccomp_refusal_of_io_uring_makes_auto_choose_the_fastest_readiness_backend() {
    let out = run_child("child_under_seccomp_falls_back_to_readiness", &[]);
    assert!(
        out.contains(&format!("auto chose {}\n", readiness_fallback())),
        "{out}"
    );
}

/// Records log lines so the child can check the fallback was logged once.
struct Recorder(std::sync::Mutex<Vec<String>>);

impl log::Log for Recorder {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        self.0.lock().unwrap().push(record.args().to_string());
    }
    fn flush(&self) {}
}

static RECORDER: Recorder = Recorder(std::sync::Mutex::new(Vec::new()));

#[test]
#[ignore = "child entry point: run by a_seccomp_refusal_of_io_uring_makes_auto_choose_the_fastest_readiness_backend"]
fn child_under_seccomp_falls_back_to_readiness() {
    assert!(in_child());
    log::set_logger(&RECORDER).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    deny_io_uring_setup();
    // Forcing io_uring is a clear error naming the cause.
    let e = Reactor::with_backend(BackendKind::Uring).unwrap_err();
    match &e {
        BackendError::Refused {
            backend: BackendKind::Uring,
            source,
        } => {
            assert_eq!(
                source.kind(),
                std::io::ErrorKind::PermissionDenied,
                "{source}"
            )
        }
        other => panic!("expected a refusal, got {other}"),
    }
    eprintln!("forced uring: {e}");
    // auto falls back, and says so once.
    let mut r = Reactor::new().unwrap();
    println!("auto chose {}", r.backend());
    let fallback = readiness_fallback();
    assert_eq!(r.backend(), fallback);
    let _again = Reactor::new().unwrap();
    let logged = RECORDER.0.lock().unwrap().clone();
    assert_eq!(logged.len(), 1, "the fallback is logged once: {logged:?}");
    assert!(
        logged[0].contains("uring") && logged[0].contains(&format!("the {fallback} backend")),
        "{logged:?}"
    );
    // The suite's echo case passes there.
    let (c, s) = tcp_pair(&mut r);
    let msg = pattern(3, 64);
    run_op(&mut r, Token(1), Op::send(c, msg.clone()))
        .result
        .unwrap();
    let got = run_op(&mut r, Token(2), Op::recv(s, Vec::with_capacity(64)));
    assert_eq!(got.buf.unwrap(), msg);
    run_op(&mut r, Token(3), Op::send(s, msg.clone()))
        .result
        .unwrap();
    let back = run_op(&mut r, Token(4), Op::recv(c, Vec::with_capacity(64)));
    assert_eq!(back.buf.unwrap(), msg);
    close(c);
    close(s);
}

/// Installs a seccomp filter on this thread: io_uring_setup fails with EPERM.
fn deny_io_uring_setup() {
    eventide_testkit::deny_io_uring_setup().expect("install the seccomp filter");
}
