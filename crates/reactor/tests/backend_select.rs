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
        assert!(out.contains(&format!("backend={kind}")), "{out}");
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
    let r = Reactor::new().unwrap();
    println!("backend={}", r.backend());
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
    #[cfg(target_arch = "x86_64")]
    const ARCH: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
    #[cfg(target_arch = "aarch64")]
    const ARCH: u32 = 0xc000_00b7; // AUDIT_ARCH_AARCH64
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    let f = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let filter = [
        f(LD_W_ABS, 0, 0, 4), // seccomp_data.arch
        f(JEQ_K, 0, 3, ARCH),
        f(LD_W_ABS, 0, 0, 0), // seccomp_data.nr
        f(JEQ_K, 0, 1, libc::SYS_io_uring_setup as u32),
        f(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        f(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: plain prctl with integer arguments.
    let nnp = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    assert_eq!(nnp, 0);
    // SAFETY: `prog` points to a valid filter program that outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &raw const prog,
        )
    };
    assert_eq!(r, 0, "seccomp: {}", std::io::Error::last_os_error());
}
