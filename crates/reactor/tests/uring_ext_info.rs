//! The io_uring extension: what the ring was set up with, and that the
//! polling backend has none of it.

mod util;

use eventide_reactor::{BackendKind, Reactor};

conformance!(uring_info_describes_the_ring_only_on_io_uring);

fn uring_info_describes_the_ring_only_on_io_uring(r: &mut Reactor) {
    match r.backend() {
        BackendKind::Poll | BackendKind::Epoll => assert!(r.uring_info().is_none()),
        BackendKind::Uring => {
            let info = r.uring_info().expect("io_uring details");
            eprintln!("{info:?}");
            assert!(info.sq_entries >= 1 && info.cq_entries >= info.sq_entries);
            assert!(!(info.defer_taskrun && info.coop_taskrun));
            assert_eq!(info.multishot_recv, info.provided_buffers > 0);
            if !info.multishot_recv {
                eprintln!("note: this kernel has no multishot recv; recv_multi runs single-shot");
            }
        }
    }
}

/// `EVENTIDE_URING_AS_KERNEL` makes the backend use only what an older
/// release had (each case in a child: the variable is read at setup), and
/// the socket cases pass with each release's alternatives: the close
/// without cancel-by-descriptor, the timed wait without `EXT_ARG`,
/// shutdown(2) without `IORING_OP_SHUTDOWN`, single-shot receives and
/// accepts.
#[test]
fn an_older_kernels_feature_set_can_be_reproduced() {
    if !BackendKind::compiled().contains(&BackendKind::Uring)
        || Reactor::with_backend(BackendKind::Uring).is_err()
    {
        eprintln!("skipped: no io_uring here");
        return;
    }
    for release in ["5.10", "5.15", "6.1"] {
        let out = util::run_child(
            "child_as_an_older_kernel",
            &[("EVENTIDE_URING_AS_KERNEL", release)],
        );
        assert!(out.contains("acting as"), "{out}");
    }
}

#[test]
#[ignore = "child entry point: run by an_older_kernels_feature_set_can_be_reproduced"]
fn child_as_an_older_kernel() {
    assert!(util::in_child());
    let release = std::env::var("EVENTIDE_URING_AS_KERNEL").unwrap();
    let (major, minor) = release
        .split_once('.')
        .map(|(a, b)| (a.parse::<u32>().unwrap(), b.parse::<u32>().unwrap()))
        .unwrap();
    let at_least = |m: u32, n: u32| (major, minor) >= (m, n);
    let mut r = Reactor::with_backend(BackendKind::Uring).expect("io_uring");
    let info = r.uring_info().unwrap();
    eprintln!("acting as {release}: {info:?}, file ops {:?}", r.file_ops());
    assert_eq!(info.as_kernel, Some((major, minor)));
    assert_eq!(info.ext_arg, at_least(5, 11));
    assert_eq!(info.shutdown_op, at_least(5, 11));
    assert_eq!(info.cancel_by_fd, at_least(5, 19));
    assert_eq!(info.coop_taskrun || info.defer_taskrun, at_least(5, 19));
    assert_eq!(info.multishot_accept, at_least(5, 19));
    assert_eq!(info.multishot_recv, at_least(6, 0));
    assert_eq!(
        r.file_ops().contains(eventide_reactor::FileOps::MKDIRAT),
        at_least(5, 15)
    );
    assert_eq!(
        r.file_ops().contains(eventide_reactor::FileOps::RENAMEAT),
        at_least(5, 11)
    );
    util::socket_cases_with_alternatives(&mut r);
}

/// A release before io_uring's probe is refused with the reason (so `auto`
/// picks polling), and a value that is not a release is an error naming the
/// variable.
#[test]
fn a_kernel_too_old_is_refused_and_a_bad_release_is_an_error() {
    if !BackendKind::compiled().contains(&BackendKind::Uring)
        || Reactor::with_backend(BackendKind::Uring).is_err()
    {
        eprintln!("skipped: no io_uring here");
        return;
    }
    util::run_child("child_too_old", &[("EVENTIDE_URING_AS_KERNEL", "5.4")]);
    util::run_child("child_bad_release", &[("EVENTIDE_URING_AS_KERNEL", "five")]);
}

#[test]
#[ignore = "child entry point: run by a_kernel_too_old_is_refused_and_a_bad_release_is_an_error"]
fn child_too_old() {
    let e = Reactor::with_backend(BackendKind::Uring).unwrap_err();
    assert!(e.to_string().contains("IORING_REGISTER_PROBE"), "{e}");
    let r = Reactor::with_choice(eventide_reactor::BackendChoice::Auto).unwrap();
    assert_ne!(
        r.backend(),
        BackendKind::Uring,
        "auto falls back to readiness"
    );
}

#[test]
#[ignore = "child entry point: run by a_kernel_too_old_is_refused_and_a_bad_release_is_an_error"]
fn child_bad_release() {
    let e = Reactor::with_backend(BackendKind::Uring).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("EVENTIDE_URING_AS_KERNEL=\"five\"") && text.contains("5.15"),
        "{text}"
    );
}
