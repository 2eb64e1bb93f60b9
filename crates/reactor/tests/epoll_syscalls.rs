//! The epoll backend's system-call budget (issue 19): once a connection's
//! interest is registered, a turn costs one `epoll_wait` and the operations'
//! own calls (`recv`, `send`), nothing else: no `epoll_ctl` per wait, no
//! timerfd, no read of the wake-up eventfd nobody wrote to. (The `polling`
//! crate's wait re-arms a timerfd and its notifier on every call.)
//!
//! Checked in a child process (this binary, re-executed): after a warm-up,
//! its test thread installs a seccomp filter that kills the process on
//! `epoll_ctl`, `read`, `timerfd_create`, `timerfd_settime` or `eventfd2`,
//! then runs 200 ping-pong round trips through the reactor.

#![cfg(all(feature = "epoll", target_os = "linux"))]

mod util;

use eventide_reactor::{BACKEND_ENV, BackendKind, Op, Reactor, Token};
use util::*;

#[test]
fn a_ping_pong_turn_on_epoll_calls_only_epoll_wait_recv_and_send() {
    let out = run_child(
        "child_ping_pong_under_a_syscall_filter",
        &[(BACKEND_ENV, BackendKind::Epoll.name())],
    );
    assert!(out.contains("200 round trips under the filter"), "{out}");
}

/// The child: a reactor on `EVENTIDE_BACKEND`, a connection with a
/// `recv_multi` on each end, three round trips to settle the registrations,
/// then the filter, then 200 round trips. A forbidden call kills the
/// process (SIGSYS), which the parent reports as a failed child.
#[test]
#[ignore = "child entry point: run by a_ping_pong_turn_on_epoll_calls_only_epoll_wait_recv_and_send"]
fn child_ping_pong_under_a_syscall_filter() {
    assert!(in_child());
    let mut r = Reactor::new().unwrap();
    eprintln!("backend: {}", r.backend());
    let (c, s) = tcp_pair(&mut r);
    r.submit(Token(1), Op::recv_multi(s)).unwrap();
    r.submit(Token(2), Op::recv_multi(c)).unwrap();
    let mut stash = Vec::new();
    let mut round = |r: &mut Reactor, i: u64| {
        let msg = pattern(i as usize, 64);
        r.submit(Token(10), Op::send(c, msg.clone())).unwrap();
        let sent = wait_for(r, Token(10), &mut stash);
        assert_eq!(sent.result.unwrap(), 64);
        let got = wait_for(r, Token(1), &mut stash);
        assert_eq!(got.result.as_ref().unwrap(), &64);
        let buf = got.buf.unwrap();
        assert_eq!(buf, msg);
        r.submit(Token(11), Op::send(s, buf.clone())).unwrap();
        let echoed = wait_for(r, Token(11), &mut stash);
        assert_eq!(echoed.result.unwrap(), 64);
        r.recycle(buf);
        let back = wait_for(r, Token(2), &mut stash);
        let buf = back.buf.unwrap();
        assert_eq!(buf, msg);
        r.recycle(buf);
    };
    for i in 0..3 {
        round(&mut r, i);
    }
    kill_on(&[
        libc::SYS_epoll_ctl,
        libc::SYS_read,
        libc::SYS_timerfd_create,
        libc::SYS_timerfd_settime,
        libc::SYS_eventfd2,
    ]);
    for i in 3..203 {
        round(&mut r, i);
    }
    println!("200 round trips under the filter");
    r.cancel(Token(1));
    r.cancel(Token(2));
    close(c);
    close(s);
}

/// Installs a seccomp filter on this thread: any of `syscalls` kills the
/// process. Core dumps are turned off first (SIGSYS would dump one).
fn kill_on(syscalls: &[libc::c_long]) {
    #[cfg(target_arch = "x86_64")]
    const ARCH: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
    #[cfg(target_arch = "aarch64")]
    const ARCH: u32 = 0xc000_00b7; // AUDIT_ARCH_AARCH64
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    let f = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let skip_all = u8::try_from(1 + 2 * syscalls.len()).unwrap();
    let mut filter = vec![
        f(LD_W_ABS, 0, 0, 4), // seccomp_data.arch
        f(JEQ_K, 0, skip_all, ARCH),
        f(LD_W_ABS, 0, 0, 0), // seccomp_data.nr
    ];
    for &nr in syscalls {
        filter.push(f(JEQ_K, 0, 1, nr as u32));
        filter.push(f(RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS));
    }
    filter.push(f(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW));
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `no_core` is a valid rlimit for the call.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) }, 0);
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
