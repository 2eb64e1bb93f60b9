//! `no-uring COMMAND [ARGS...]`: runs COMMAND under a seccomp filter that
//! refuses `io_uring_setup` with `EPERM`, as Docker's default profile does.
//! `.ci/run` runs the reactor's and the facade's suites under it.

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(program) = args.next() else {
        eprintln!("usage: no-uring COMMAND [ARGS...]");
        return ExitCode::from(2);
    };
    if let Err(e) = eventide_testkit::deny_io_uring_setup() {
        eprintln!("no-uring: cannot install the seccomp filter: {e}");
        return ExitCode::from(1);
    }
    assert!(
        eventide_testkit::io_uring_refused(),
        "the filter is installed, so io_uring_setup must fail"
    );
    let e = Command::new(&program).args(args).exec();
    eprintln!("no-uring: cannot run {}: {e}", program.to_string_lossy());
    ExitCode::from(127)
}
