//! Shared helpers for the reactor tests: backend instantiation, sockets on
//! 127.0.0.1, and bounded waits (every wait has a deadline; nothing hangs).
#![allow(dead_code, unreachable_pub)]

use eventide_reactor::{BACKEND_ENV, BackendKind, Completion, Op, Reactor, Shutdown, Token};
use socket2::{Domain, Protocol, Socket, Type};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::process::Command;
use std::time::{Duration, Instant};

/// Set in a child process started by [`run_child`].
pub const CHILD: &str = "EVENTIDE_TEST_CHILD";

/// Runs the `#[ignore]`d test `name` of this test binary in a child process
/// (with `EVENTIDE_BACKEND` removed, [`CHILD`] and `env` set), asserts that it
/// ran and passed, and returns its output.
pub fn run_child(name: &str, env: &[(&str, &str)]) -> String {
    run_child_without(name, &[], env)
}

/// As [`run_child`], with the variables `remove` also removed from the
/// child's environment (whatever this process has).
pub fn run_child_without(name: &str, remove: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    for k in remove {
        cmd.env_remove(k);
    }
    cmd.args([
        name,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    cmd.env_remove(BACKEND_ENV).env(CHILD, "1");
    for (k, v) in env {
        cmd.env(k, v);
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

/// How long any single test waits for one thing before failing.
pub const LIMIT: Duration = Duration::from_secs(20);

/// Writes one conformance case per compiled backend: `uring::name`,
/// `epoll::name` and `poll::name`, each calling `name(&mut Reactor)` on
/// that backend (skipped, with a note, where it is not compiled in).
#[macro_export]
macro_rules! conformance {
    (serial($lock:path); $($name:ident),* $(,)?) => {
        mod uring {
            $( #[test] fn $name() {
                let _g = $lock.lock().unwrap_or_else(|e| e.into_inner());
                $crate::util::run(eventide_reactor::BackendKind::Uring, super::$name)
            } )*
        }
        mod poll {
            $( #[test] fn $name() {
                let _g = $lock.lock().unwrap_or_else(|e| e.into_inner());
                $crate::util::run(eventide_reactor::BackendKind::Poll, super::$name)
            } )*
        }
        mod epoll {
            $( #[test] fn $name() {
                let _g = $lock.lock().unwrap_or_else(|e| e.into_inner());
                $crate::util::run(eventide_reactor::BackendKind::Epoll, super::$name)
            } )*
        }
    };
    ($($name:ident),* $(,)?) => {
        mod uring {
            $( #[test] fn $name() { $crate::util::run(eventide_reactor::BackendKind::Uring, super::$name) } )*
        }
        mod poll {
            $( #[test] fn $name() { $crate::util::run(eventide_reactor::BackendKind::Poll, super::$name) } )*
        }
        mod epoll {
            $( #[test] fn $name() { $crate::util::run(eventide_reactor::BackendKind::Epoll, super::$name) } )*
        }
    };
}

/// Whether `kind` should run here: compiled in, not excluded by
/// EVENTIDE_BACKEND, and (for io_uring not forced) allowed by the system.
pub fn reactor_for(kind: BackendKind) -> Option<Reactor> {
    if !BackendKind::compiled().contains(&kind) {
        eprintln!("skipped: the {kind} backend is not compiled in");
        return None;
    }
    let forced = std::env::var(BACKEND_ENV)
        .ok()
        .filter(|v| v != "auto" && !v.is_empty());
    if let Some(f) = &forced
        && f != kind.name()
    {
        eprintln!("skipped: {BACKEND_ENV}={f} excludes the {kind} backend");
        return None;
    }
    match Reactor::with_backend(kind) {
        Ok(r) => Some(r),
        Err(e) if forced.is_none() && kind == BackendKind::Uring => {
            eprintln!("skipped: {e}");
            None
        }
        Err(e) => panic!("{kind} backend: {e}"),
    }
}

/// Runs one case on one backend, naming the backend in the output.
pub fn run(kind: BackendKind, case: fn(&mut Reactor)) {
    let Some(mut r) = reactor_for(kind) else {
        return;
    };
    assert_eq!(r.backend(), kind);
    eprintln!("backend: {kind}");
    case(&mut r);
}

/// Waits (bounded) until the completion for `token` arrives; other
/// completions are kept in `stash`.
pub fn wait_for(r: &mut Reactor, token: Token, stash: &mut Vec<Completion>) -> Completion {
    if let Some(i) = stash.iter().position(|c| c.token == token) {
        return stash.remove(i);
    }
    let deadline = Instant::now() + LIMIT;
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .expect("timed out waiting for a completion");
        r.wait(Some(left.min(Duration::from_millis(500))))
            .expect("wait");
        let mut found = None;
        for c in r.completions() {
            if found.is_none() && c.token == token {
                found = Some(c);
            } else {
                stash.push(c);
            }
        }
        if let Some(c) = found {
            return c;
        }
    }
}

/// Submits and waits for the one completion.
pub fn run_op(r: &mut Reactor, token: Token, op: Op) -> Completion {
    r.submit(token, op).expect("submit");
    wait_for(r, token, &mut Vec::new())
}

/// A nonblocking listener on 127.0.0.1, its fd and address.
pub fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.set_nonblocking(true).expect("nonblocking");
    let a = l.local_addr().expect("addr");
    (l, a)
}

/// A fresh nonblocking TCP socket (raw fd, caller closes).
pub fn tcp_socket(addr: &SocketAddr) -> RawFd {
    #[cfg(not(target_vendor = "apple"))]
    let s = Socket::new(
        Domain::for_address(*addr),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )
    .expect("socket");
    // macOS: no SOCK_NONBLOCK/SOCK_CLOEXEC; socket2 sets close-on-exec
    // itself there, and nonblocking follows.
    #[cfg(target_vendor = "apple")]
    let s = {
        let s = Socket::new(
            Domain::for_address(*addr),
            Type::STREAM,
            Some(Protocol::TCP),
        )
        .expect("socket");
        s.set_nonblocking(true).expect("nonblocking");
        s
    };
    s.set_tcp_nodelay(true).expect("nodelay");
    s.into_raw_fd()
}

/// A connected pair (client fd, server fd), both nonblocking, via the reactor.
pub fn tcp_pair(r: &mut Reactor) -> (RawFd, RawFd) {
    let (l, addr) = listener();
    let c = tcp_socket(&addr);
    r.submit(Token(9_000_001), Op::accept(l.as_raw_fd()))
        .expect("accept");
    r.submit(Token(9_000_002), Op::connect(c, addr))
        .expect("connect");
    let mut stash = Vec::new();
    let a = wait_for(r, Token(9_000_001), &mut stash);
    let k = wait_for(r, Token(9_000_002), &mut stash);
    k.result.expect("connect result");
    let s = a.fd().expect("accepted fd");
    (c, s)
}

/// Writes all of `data` to the nonblocking `fd` (it has room), or panics.
pub fn write_all(fd: RawFd, data: &[u8]) {
    let mut at = 0;
    while at < data.len() {
        // SAFETY: the pointer and length describe the rest of `data`.
        let n = unsafe { libc::write(fd, data[at..].as_ptr().cast(), data.len() - at) };
        assert!(n > 0, "write: {}", std::io::Error::last_os_error());
        at += n as usize;
    }
}

pub fn close(fd: RawFd) {
    // SAFETY: test-owned descriptor.
    unsafe { libc::close(fd) };
}

/// Number of open descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A deterministic byte pattern: byte i of the stream is `pattern_at(i)`.
pub fn pattern(from: usize, len: usize) -> Vec<u8> {
    (from..from + len)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 11)) as u8)
        .collect()
}

/// A close with a receive pending on the descriptor releases the socket:
/// the receive ends cancelled, and the peer sees the end of the stream
/// (the kernel would keep the socket open while a receive held it).
pub fn close_with_a_receive_pending_releases_the_socket(r: &mut Reactor) {
    let (c, s) = tcp_pair(r);
    r.submit(Token(71), Op::recv(s, Vec::with_capacity(64)))
        .unwrap();
    r.wait(Some(Duration::from_millis(10))).unwrap();
    let mut stash = Vec::new();
    r.submit(Token(72), Op::close(s)).unwrap();
    wait_for(r, Token(72), &mut stash).result.expect("close");
    assert!(wait_for(r, Token(71), &mut stash).is_cancelled());
    // The peer reads the end (0), not a hang.
    // SAFETY: test-owned descriptor, closed by the TcpStream.
    let mut peer = unsafe { <std::net::TcpStream as std::os::fd::FromRawFd>::from_raw_fd(c) };
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 8];
    let n = std::io::Read::read(&mut peer, &mut b).expect("the peer sees the end, not a timeout");
    assert_eq!(n, 0);
    assert_eq!(r.in_flight(), 0);
}

/// What the io_uring alternatives for older kernels must keep working: a
/// close with a receive pending, a timed wait, a shutdown seen by the peer,
/// accepting several connections with `accept_multi`.
pub fn socket_cases_with_alternatives(r: &mut Reactor) {
    close_with_a_receive_pending_releases_the_socket(r);
    // A timed wait returns Ok after (not before) its timeout.
    let t = Instant::now();
    r.wait(Some(Duration::from_millis(30)))
        .expect("a timed wait");
    assert!(
        t.elapsed() >= Duration::from_millis(25),
        "{:?}",
        t.elapsed()
    );
    // Shutdown: the peer reads the end.
    let (c, s) = tcp_pair(r);
    run_op(r, Token(73), Op::shutdown(c, Shutdown::Write))
        .result
        .expect("shutdown");
    let got = run_op(r, Token(74), Op::recv(s, Vec::with_capacity(8)));
    assert_eq!(got.result.unwrap(), 0);
    close(c);
    close(s);
    // accept_multi takes every connection.
    let (l, addr) = listener();
    r.submit(Token(75), Op::accept_multi(l.as_raw_fd()))
        .unwrap();
    let clients: Vec<_> = (0..3)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    let mut stash = Vec::new();
    for _ in 0..3 {
        let a = wait_for(r, Token(75), &mut stash);
        assert!(a.more);
        close(a.fd().expect("accepted") as RawFd);
    }
    r.cancel(Token(75));
    assert!(wait_for(r, Token(75), &mut stash).is_cancelled());
    drop(clients);
    assert_eq!(r.in_flight(), 0);
}
