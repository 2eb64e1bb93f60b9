//! Conformance: descriptor exhaustion and teardown, once per compiled
//! backend. These cases count the process's descriptors and heap bytes, so
//! this binary runs them one at a time (a lock) and has its own counting
//! allocator.

mod util;

use eventide_reactor::{Op, Reactor, Token};
use std::alloc::{GlobalAlloc, Layout, System};
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;
use util::*;

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator unchanged, only counting bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

conformance!(
    serial(crate::ONE_AT_A_TIME);
    running_out_of_descriptors_is_an_error_and_the_reactor_keeps_working,
    dropping_a_reactor_with_operations_in_flight_leaks_no_fd_and_no_buffer,
    an_accept_or_openat_that_wins_the_race_with_its_cancel_has_its_fd_closed,
);

fn an_accept_or_openat_that_wins_the_race_with_its_cancel_has_its_fd_closed(r: &mut Reactor) {
    let (l, addr) = listener();
    let file = tempfile::NamedTempFile::new().unwrap();
    let path = std::ffi::CString::new(file.path().as_os_str().as_encoded_bytes()).unwrap();
    let fds_before = open_fds();
    // A connection is already waiting, so the accept completes as soon as
    // the kernel sees it (io_uring: inline, before the cancel queued behind
    // it finds it); the polling backend cancels before trying. Either way
    // the final completion is ECANCELED and no descriptor stays open.
    let clients: Vec<_> = (0..20).map(|_| tcp_socket(&addr)).collect();
    for (i, &c) in clients.iter().enumerate() {
        let sa = socket2::SockAddr::from(addr);
        // SAFETY: valid socket address for a nonblocking connect.
        unsafe { libc::connect(c, sa.as_ptr().cast(), sa.len()) };
        std::thread::sleep(Duration::from_millis(2));
        let t = Token(100 + i as u64);
        r.submit(t, Op::accept(l.as_raw_fd())).unwrap();
        assert!(r.cancel(t));
        let done = wait_for(r, t, &mut Vec::new());
        assert!(done.is_cancelled(), "got {:?}", done.result);
    }
    for c in clients {
        close(c);
    }
    for i in 0..20u64 {
        let t = Token(200 + i);
        let op = Op::openat(libc::AT_FDCWD, path.clone(), libc::O_RDONLY, 0);
        match r.submit(t, op) {
            Ok(()) => {}
            Err(e) => {
                assert_eq!(e.error.kind(), ErrorKind::Unsupported);
                break; // polling: file operations go to the pool
            }
        }
        assert!(r.cancel(t));
        let done = wait_for(r, t, &mut Vec::new());
        assert!(done.is_cancelled(), "got {:?}", done.result);
    }
    assert_eq!(r.in_flight(), 0);
    let fds_after = open_fds();
    assert!(
        fds_after <= fds_before,
        "descriptors leaked: {fds_before} before, {fds_after} after"
    );
}

fn running_out_of_descriptors_is_an_error_and_the_reactor_keeps_working(r: &mut Reactor) {
    let (l, addr) = listener();
    let client = tcp_socket(&addr);
    r.submit(Token(1), Op::connect(client, addr)).unwrap();
    let _ = wait_for(r, Token(1), &mut Vec::new());
    // Fill the descriptor table (under a lowered soft limit).
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) };
    let lim = libc::rlimit {
        rlim_cur: (open_fds() + 64) as libc::rlim_t,
        rlim_max: old.rlim_max,
    };
    // SAFETY: valid pointer to a limit below the hard limit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    let mut hogs = Vec::new();
    loop {
        // SAFETY: dup of an open descriptor.
        let fd = unsafe { libc::dup(l.as_raw_fd()) };
        if fd < 0 {
            break;
        }
        hogs.push(fd);
    }
    let full = run_op(r, Token(2), Op::accept(l.as_raw_fd()));
    let err = full
        .result
        .expect_err("accept with a full descriptor table");
    assert_eq!(err.raw_os_error(), Some(libc::EMFILE), "got {err}");
    for fd in hogs.drain(..) {
        close(fd);
    }
    // SAFETY: restoring the saved limit.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &old) };
    // The same pending connection is accepted once descriptors are free.
    let ok = run_op(r, Token(3), Op::accept(l.as_raw_fd()));
    let fd = ok.fd().expect("accept after freeing descriptors");
    run_op(r, Token(4), Op::send(client, b"still working".to_vec()))
        .result
        .unwrap();
    let got = run_op(r, Token(5), Op::recv(fd, Vec::with_capacity(64)));
    assert_eq!(got.buf.unwrap(), b"still working");
    close(fd);
    close(client);
}

fn dropping_a_reactor_with_operations_in_flight_leaks_no_fd_and_no_buffer(r: &mut Reactor) {
    let kind = r.backend();
    // A reactor of our own, so that dropping it is part of the test.
    let fds_before = open_fds();
    let bytes_before = LIVE.load(Ordering::Relaxed);
    let mut r = Reactor::with_backend(kind).unwrap();
    let (c, s) = tcp_pair(&mut r);
    let (l, addr) = listener();
    const BIG: usize = 8 << 20;
    // Pending: a recv with a big buffer on a socket nobody writes to, an
    // accept and a multishot accept whose connections arrive before the
    // drop (their fds must not leak), a multishot recv, and a send stuck
    // behind a full socket buffer.
    let (c2, s2) = tcp_pair(&mut r);
    fill_send_buffer(c);
    r.submit(Token(1), Op::recv(c2, Vec::with_capacity(BIG)))
        .unwrap();
    r.submit(Token(2), Op::accept(l.as_raw_fd())).unwrap();
    r.submit(Token(3), Op::accept_multi(l.as_raw_fd())).unwrap();
    r.submit(Token(4), Op::send(c, vec![0x5a; BIG])).unwrap();
    r.submit(Token(5), Op::recv_multi(s2)).unwrap();
    r.wait(Some(Duration::from_millis(20))).unwrap();
    let stray: Vec<_> = (0..3).map(|_| tcp_socket(&addr)).collect();
    for &k in &stray {
        let sa = socket2::SockAddr::from(addr);
        // SAFETY: valid socket address for a nonblocking connect.
        unsafe { libc::connect(k, sa.as_ptr().cast(), sa.len()) };
    }
    std::thread::sleep(Duration::from_millis(20));
    // Drain what completed (accepted fds are ours: close them).
    r.wait(Some(Duration::from_millis(20))).unwrap();
    for cpl in r.completions() {
        if matches!(cpl.token, Token(2) | Token(3))
            && let Some(fd) = cpl.fd()
        {
            close(fd);
        }
    }
    // One more connection lands in the multishot accept's queue unseen.
    let late = tcp_socket(&addr);
    let sa = socket2::SockAddr::from(addr);
    // SAFETY: as above.
    unsafe { libc::connect(late, sa.as_ptr().cast(), sa.len()) };
    std::thread::sleep(Duration::from_millis(10));
    assert_eq!(r.in_flight(), 4, "operations should still be in flight");
    drop(r);
    for fd in [c, s, c2, s2, late].into_iter().chain(stray) {
        close(fd);
    }
    drop(l);
    let fds_after = open_fds();
    if fds_after > fds_before {
        for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
            eprintln!(
                "open: {:?} -> {:?}",
                e.file_name(),
                std::fs::read_link(e.path())
            );
        }
    }
    assert!(
        fds_after <= fds_before,
        "descriptors leaked: {fds_before} before, {fds_after} after"
    );
    let bytes_after = LIVE.load(Ordering::Relaxed);
    assert!(
        bytes_after - bytes_before < (BIG / 2) as isize,
        "heap grew by {} bytes across the reactor's life",
        bytes_after - bytes_before
    );
}

/// Writes into a nonblocking socket until the kernel takes no more.
fn fill_send_buffer(fd: i32) {
    let junk = [0u8; 65536];
    loop {
        // SAFETY: valid buffer pointer and length.
        let n = unsafe { libc::send(fd, junk.as_ptr().cast(), junk.len(), libc::MSG_DONTWAIT) };
        if n < 0 {
            assert_eq!(
                std::io::Error::last_os_error().kind(),
                ErrorKind::WouldBlock
            );
            return;
        }
    }
}
