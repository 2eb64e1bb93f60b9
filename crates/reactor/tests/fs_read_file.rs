//! `Op::read_file` (open, linked read + probe read, close in one
//! operation) on io_uring, with direct descriptors and (in a child process,
//! `EVENTIDE_URING_NO_DIRECT`) without, and the file-operation set
//! (`FileOps`) that decides what a reactor runs natively: on polling it is
//! empty and every file operation comes back `Unsupported`, buffer and all.

mod util;

use eventide_reactor::{BackendKind, FileOps, Op, Reactor, ReadFileStep, Token};
use std::ffi::CString;
use std::io::ErrorKind;
use util::*;

conformance!(
    read_file_reads_small_files_whole,
    read_file_hands_back_the_open_file_when_it_goes_on,
    read_file_reports_the_failing_step,
    read_file_reads_a_pipe_to_its_end,
    read_file_cancelled_keeps_its_buffer_and_leaks_nothing,
    read_file_reuses_direct_slots_and_overflows_to_ordinary_descriptors,
    restricted_file_ops_are_refused_with_the_buffer,
);

fn cpath(p: &std::path::Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).unwrap()
}

fn read_file_op(path: &std::path::Path, cap: usize) -> Op {
    Op::read_file(libc::AT_FDCWD, cpath(path), Vec::with_capacity(cap))
}

/// On polling, a file operation is refused whole; returns whether it was.
fn refused_on_poll(r: &mut Reactor, op: Op) -> bool {
    if r.backend() == BackendKind::Uring {
        return false;
    }
    assert!(r.file_ops().is_empty());
    let e = r.submit(Token(99), op).unwrap_err();
    assert_eq!(e.error.kind(), ErrorKind::Unsupported);
    assert!(e.op.is_file_op());
    if let Some(buf) = e.op.into_buf() {
        assert!(buf.capacity() > 0, "the buffer comes back");
    }
    assert_eq!(r.in_flight(), 0);
    true
}

/// How many of this process's descriptors name a file under `dir` (other
/// tests run in parallel threads, so only our own files are counted).
fn open_under(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    entries
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir))
        .count()
}

fn read_file_reads_small_files_whole(r: &mut Reactor) {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    let small = dir.path().join("small");
    let exact = dir.path().join("exact");
    std::fs::write(&empty, b"").unwrap();
    std::fs::write(&small, b"hello, read_file").unwrap();
    // Exactly the first read's share of a 64-byte buffer (64 - 64/8 = 56):
    // the probe then sees the end.
    let data: Vec<u8> = (0..56u8).collect();
    std::fs::write(&exact, &data).unwrap();
    if refused_on_poll(r, read_file_op(&small, 64)) {
        return;
    }
    assert!(
        r.file_ops()
            .contains(read_file_op(&small, 64).file_ops_needed()),
        "every kernel with io_uring's probe has what read_file needs"
    );
    let c = run_op(r, Token(1), read_file_op(&empty, 64));
    assert_eq!(c.result.unwrap(), 0);
    assert_eq!(c.buf.unwrap(), b"");
    assert_eq!((c.file, c.step), (None, Some(ReadFileStep::Close)));
    let c = run_op(r, Token(2), read_file_op(&small, 64));
    assert_eq!(c.result.unwrap(), 16);
    assert_eq!(c.buf.unwrap(), b"hello, read_file");
    assert_eq!(c.file, None);
    let c = run_op(r, Token(3), read_file_op(&exact, 64));
    assert_eq!(c.result.unwrap(), 56);
    assert_eq!(c.buf.unwrap(), data);
    assert_eq!(c.file, None, "the probe saw the end");
    // Bytes already in the buffer stay; the file's follow them.
    let mut buf = Vec::with_capacity(64);
    buf.extend_from_slice(b">>");
    let c = run_op(
        r,
        Token(4),
        Op::read_file(libc::AT_FDCWD, cpath(&small), buf),
    );
    assert_eq!(c.result.unwrap(), 16);
    assert_eq!(c.buf.unwrap(), b">>hello, read_file");
    assert_eq!(open_under(dir.path()), 0, "every file was closed");
}

fn read_file_hands_back_the_open_file_when_it_goes_on(r: &mut Reactor) {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&big, &data).unwrap();
    let mid = dir.path().join("mid");
    // More than the first read's 56 bytes, less than the buffer: the probe
    // holds the rest, moved to follow the first read's bytes.
    std::fs::write(&mid, &data[..60]).unwrap();
    if refused_on_poll(r, read_file_op(&big, 64)) {
        return;
    }
    for (token, path, want) in [(1, &big, &data[..]), (2, &mid, &data[..60])] {
        let c = run_op(r, Token(token), read_file_op(path, 64));
        let n = c.result.unwrap();
        let mut got = c.buf.unwrap();
        assert_eq!(got.len(), n);
        assert!(n > 0 && n <= 64);
        assert_eq!(&got[..], &want[..n]);
        let fd = c.file.expect("the file goes on: its descriptor comes back");
        assert_eq!(c.step, Some(ReadFileStep::Read));
        // The caller reads on from the file's position.
        let mut f = unsafe_file(fd);
        std::io::Read::read_to_end(&mut f, &mut got).unwrap();
        assert_eq!(got, want);
    }
}

/// Takes ownership of a descriptor the reactor handed over.
fn unsafe_file(fd: i32) -> std::fs::File {
    use std::os::fd::FromRawFd;
    // SAFETY: the completion handed `fd` over: it is open and ours alone.
    unsafe { std::fs::File::from_raw_fd(fd) }
}

fn read_file_reports_the_failing_step(r: &mut Reactor) {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    if refused_on_poll(r, read_file_op(&missing, 64)) {
        return;
    }
    let c = run_op(r, Token(1), read_file_op(&missing, 64));
    assert_eq!(c.result.unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(c.step, Some(ReadFileStep::Open));
    assert_eq!(c.buf.unwrap().capacity(), 64, "the buffer comes back");
    assert_eq!(
        c.path,
        Some(cpath(&missing)),
        "and the path, for the message"
    );
    let c = run_op(r, Token(2), read_file_op(dir.path(), 64));
    assert_eq!(c.result.unwrap_err().raw_os_error(), Some(libc::EISDIR));
    assert_eq!(c.step, Some(ReadFileStep::Read));
    assert_eq!(c.file, None);
    assert_eq!(open_under(dir.path()), 0, "the directory was closed");
    // /proc files refuse RWF_NOWAIT: the probe reads for the first read.
    let c = run_op(
        r,
        Token(4),
        read_file_op(std::path::Path::new("/proc/self/cmdline"), 64),
    );
    let mut got = c.buf.unwrap();
    assert_eq!(got.len(), c.result.unwrap());
    if let Some(fd) = c.file {
        std::io::Read::read_to_end(&mut unsafe_file(fd), &mut got).unwrap();
    }
    assert_eq!(got, std::fs::read("/proc/self/cmdline").unwrap());
    // Too little room for a read and a probe: refused, buffer back.
    let e = r
        .submit(
            Token(3),
            Op::read_file(libc::AT_FDCWD, cpath(&missing), Vec::with_capacity(1)),
        )
        .unwrap_err();
    assert_eq!(e.error.kind(), ErrorKind::InvalidInput);
    assert_eq!(r.in_flight(), 0);
}

/// A FIFO in `dir`; `None` (nothing to test) where the backend refuses
/// read_file (polling).
fn fifo_in(r: &mut Reactor, dir: &std::path::Path) -> Option<std::path::PathBuf> {
    let fifo = dir.join("fifo");
    let c = cpath(&fifo);
    // SAFETY: `c` is a live NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    (!refused_on_poll(r, read_file_op(&fifo, 4096))).then_some(fifo)
}

fn read_file_reads_a_pipe_to_its_end(r: &mut Reactor) {
    let dir = tempfile::tempdir().unwrap();
    let Some(fifo) = fifo_in(r, dir.path()) else {
        return;
    };
    r.submit(Token(1), read_file_op(&fifo, 4096)).unwrap();
    // The writer: two writes with a pause between, so the first read is
    // short and the probe waits for the rest (or the end).
    let path = fifo.clone();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let mut w = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        w.write_all(b"first ").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        w.write_all(b"second").unwrap();
    });
    let c = wait_for(r, Token(1), &mut Vec::new());
    writer.join().unwrap();
    let mut got = c.buf.unwrap();
    got.truncate(c.result.unwrap());
    if let Some(fd) = c.file {
        std::io::Read::read_to_end(&mut unsafe_file(fd), &mut got).unwrap();
    }
    assert_eq!(got, b"first second");
}

fn read_file_cancelled_keeps_its_buffer_and_leaks_nothing(r: &mut Reactor) {
    let dir = tempfile::tempdir().unwrap();
    let Some(fifo) = fifo_in(r, dir.path()) else {
        return;
    };
    // A writer that holds the pipe open without writing: the open returns,
    // the reads wait. Cancel them.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let path = fifo.clone();
    let writer = std::thread::spawn(move || {
        let w = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        let _ = rx.recv();
        drop(w);
    });
    r.submit(Token(1), read_file_op(&fifo, 4096)).unwrap();
    // Let the open finish and the reads start.
    for _ in 0..20 {
        r.wait(Some(std::time::Duration::from_millis(10))).unwrap();
        assert_eq!(r.ready(), 0, "nothing completes before the cancel");
    }
    assert!(r.cancel(Token(1)));
    let c = wait_for(r, Token(1), &mut Vec::new());
    assert!(c.is_cancelled(), "{:?}", c.result);
    assert_eq!(c.buf.unwrap().capacity(), 4096, "the buffer comes back");
    assert_eq!(c.file, None);
    tx.send(()).unwrap();
    writer.join().unwrap();
    assert_eq!(r.in_flight(), 0);
    assert_eq!(open_under(dir.path()), 0, "the pipe was closed");
}

fn restricted_file_ops_are_refused_with_the_buffer(r: &mut Reactor) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a");
    std::fs::write(&file, b"abc").unwrap();
    if refused_on_poll(r, Op::statx(libc::AT_FDCWD, cpath(&file), 0)) {
        r.restrict_file_ops(FileOps::ALL);
        assert!(r.file_ops().is_empty(), "narrowing never widens");
        return;
    }
    r.restrict_file_ops(FileOps::ALL.difference(FileOps::STATX));
    assert!(!r.file_ops().contains(FileOps::STATX));
    let e = r
        .submit(Token(1), Op::statx(libc::AT_FDCWD, cpath(&file), 0))
        .unwrap_err();
    assert_eq!(e.error.kind(), ErrorKind::Unsupported);
    // Others still run.
    let c = run_op(r, Token(2), read_file_op(&file, 64));
    assert_eq!(c.buf.unwrap(), b"abc");
    r.restrict_file_ops(FileOps::NONE);
    let e = r.submit(Token(3), read_file_op(&file, 64)).unwrap_err();
    assert_eq!(e.error.kind(), ErrorKind::Unsupported);
    assert_eq!(e.op.into_buf().unwrap().capacity(), 64);
    // Sockets are not file operations: still fine.
    assert!(!Op::close(-1).is_file_op());
}

/// Whether this kernel is 6.8 or later (`IORING_OP_FIXED_FD_INSTALL`, which
/// direct descriptors for `read_file` need).
fn kernel_has_fixed_fd_install() -> bool {
    let release = |text: &str| {
        let mut parts = text
            .trim()
            .split(['.', '-'])
            .map(|p| p.parse::<u32>().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
    };
    let running = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    // The backend acting as an older kernel uses only what that one had.
    let acting = std::env::var("EVENTIDE_URING_AS_KERNEL")
        .ok()
        .filter(|v| !v.trim().is_empty());
    release(&running) >= (6, 8) && acting.is_none_or(|v| release(&v) >= (6, 8))
}

/// The limits on descriptors (a fixed-file table may not be larger than
/// the soft one).
fn descriptor_limits() -> libc::rlimit {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(got, 0);
    limit
}

/// More files at once than the direct-descriptor table has slots (256):
/// the rest take ordinary descriptors; every file reads whole (small ones,
/// and ones that go on past the buffer, whose descriptor is installed for
/// the caller); every slot comes back (a second round fits again); no
/// descriptor is left open.
fn read_file_reuses_direct_slots_and_overflows_to_ordinary_descriptors(r: &mut Reactor) {
    let dir = tempfile::tempdir().unwrap();
    const FILES: u64 = 300;
    let content = |i: u64| -> Vec<u8> {
        // Every 10th file goes on past the 64-byte buffer.
        let len = if i.is_multiple_of(10) {
            100 + i as usize
        } else {
            (i % 60) as usize
        };
        (0..len).map(|b| (b as u64 * 31 + i) as u8).collect()
    };
    for i in 0..FILES {
        std::fs::write(dir.path().join(format!("f{i}")), content(i)).unwrap();
    }
    if refused_on_poll(r, read_file_op(&dir.path().join("f1"), 64)) {
        return;
    }
    let no_direct = std::env::var("EVENTIDE_URING_NO_DIRECT")
        .is_ok_and(|v| !v.trim().is_empty() && v.trim() != "0");
    let expected_slots =
        if no_direct || !kernel_has_fixed_fd_install() || descriptor_limits().rlim_cur < 256 {
            0
        } else {
            256
        };
    for round in 0..2 {
        for i in 0..FILES {
            let path = dir.path().join(format!("f{i}"));
            r.submit(Token(1000 * round + i), read_file_op(&path, 64))
                .unwrap();
        }
        assert_eq!(r.uring_info().unwrap().direct_files, expected_slots);
        let mut stash = Vec::new();
        for i in 0..FILES {
            let c = wait_for(r, Token(1000 * round + i), &mut stash);
            let want = content(i);
            let n = c.result.unwrap_or_else(|e| panic!("file {i}: {e}"));
            let mut got = c.buf.unwrap();
            assert_eq!(got.len(), n);
            if let Some(fd) = c.file {
                // Past the first read's 56 bytes, the probe cannot see the
                // end: the file goes on.
                assert!(want.len() > 56, "file {i} went on: {} bytes", want.len());
                std::io::Read::read_to_end(&mut unsafe_file(fd), &mut got).unwrap();
            }
            assert_eq!(got, want, "file {i}, round {round}");
        }
        assert_eq!(r.in_flight(), 0);
        assert_eq!(open_under(dir.path()), 0, "every file was closed");
    }
}

/// Runs the ignored test `child` in a child process with `env` (io_uring
/// compiled in only) and checks it ran to its end or skipped.
fn uring_child(child: &str, env: &[(&str, &str)]) {
    if !BackendKind::compiled().contains(&BackendKind::Uring) {
        return;
    }
    let out = run_child(child, env);
    assert!(out.contains("checked") || out.contains("skipped"), "{out}");
}

/// The read_file cases again without direct descriptors.
#[test]
fn read_file_without_direct_descriptors() {
    uring_child(
        "read_file_without_direct_descriptors_child",
        &[("EVENTIDE_URING_NO_DIRECT", "1")],
    );
}

#[test]
#[ignore = "run by read_file_without_direct_descriptors in a child process"]
fn read_file_without_direct_descriptors_child() {
    assert!(in_child());
    let cases: [fn(&mut Reactor); 6] = [
        read_file_reads_small_files_whole,
        read_file_hands_back_the_open_file_when_it_goes_on,
        read_file_reports_the_failing_step,
        read_file_reads_a_pipe_to_its_end,
        read_file_cancelled_keeps_its_buffer_and_leaks_nothing,
        read_file_reuses_direct_slots_and_overflows_to_ordinary_descriptors,
    ];
    for case in cases {
        let Some(mut r) = reactor_for(BackendKind::Uring) else {
            return;
        };
        case(&mut r);
        assert_eq!(r.uring_info().unwrap().direct_files, 0);
    }
    eprintln!("checked");
}

/// Direct descriptors take no entry in the process's descriptor table, and
/// a slot is free again once its file is closed: with the descriptor limit
/// at the table's size, round after round of 250 files at once all read
/// (ordinary descriptors would run out: a slot that did not come back
/// shows as `EMFILE`).
#[test]
fn read_file_direct_slots_come_back() {
    if kernel_has_fixed_fd_install() {
        uring_child("read_file_direct_slots_come_back_child", &[]);
    }
}

#[test]
#[ignore = "run by read_file_direct_slots_come_back in a child process"]
fn read_file_direct_slots_come_back_child() {
    assert!(in_child());
    let mut limit = descriptor_limits();
    if limit.rlim_max < 256 {
        eprintln!("skipped: the descriptor limit is below 256");
        return;
    }
    limit.rlim_cur = 256;
    // SAFETY: setrlimit reads the struct it is given.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    let Some(mut r) = reactor_for(BackendKind::Uring) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    const FILES: u64 = 250;
    for i in 0..FILES {
        std::fs::write(dir.path().join(format!("f{i}")), i.to_string()).unwrap();
    }
    for round in 0..3 {
        for i in 0..FILES {
            let path = dir.path().join(format!("f{i}"));
            r.submit(Token(1000 * round + i), read_file_op(&path, 64))
                .unwrap();
        }
        let mut stash = Vec::new();
        for i in 0..FILES {
            let c = wait_for(&mut r, Token(1000 * round + i), &mut stash);
            let n = c
                .result
                .unwrap_or_else(|e| panic!("round {round}, file {i}: {e}"));
            assert_eq!(c.buf.unwrap(), i.to_string().as_bytes());
            assert_eq!((n, c.file), (i.to_string().len(), None));
        }
        assert_eq!(r.uring_info().unwrap().direct_files, 256);
    }
    eprintln!("checked");
}

#[test]
fn file_ops_parse_lists() {
    assert_eq!(FileOps::parse("all").unwrap(), FileOps::ALL);
    assert_eq!(FileOps::parse(" none ").unwrap(), FileOps::NONE);
    assert_eq!(FileOps::parse("").unwrap(), FileOps::NONE);
    let no_stat = FileOps::parse("all, -statx").unwrap();
    assert!(!no_stat.contains(FileOps::STATX) && no_stat.contains(FileOps::OPENAT));
    assert_eq!(
        FileOps::parse("read,openat").unwrap(),
        FileOps::READ.union(FileOps::OPENAT)
    );
    assert_eq!(FileOps::parse("all,-bogus").unwrap_err(), "-bogus");
    assert_eq!(format!("{:?}", FileOps::READ), "FileOps(read)");
}

/// The environment narrows the set at start: refused ops, and ops
/// answered EINVAL at once (as a kernel without them whose probe did not
/// say so).
#[test]
fn environment_narrows_file_ops() {
    uring_child(
        "environment_narrows_file_ops_child",
        &[
            ("EVENTIDE_URING_FILE_OPS", "all,-mkdirat"),
            ("EVENTIDE_URING_FILE_OPS_EINVAL", "statx"),
        ],
    );
}

#[test]
#[ignore = "run by environment_narrows_file_ops in a child process"]
fn environment_narrows_file_ops_child() {
    assert!(in_child());
    let Some(mut r) = reactor_for(BackendKind::Uring) else {
        return;
    };
    assert!(!r.file_ops().contains(FileOps::MKDIRAT));
    assert!(r.file_ops().contains(FileOps::STATX));
    let dir = tempfile::tempdir().unwrap();
    let e = r
        .submit(
            Token(1),
            Op::mkdirat(libc::AT_FDCWD, cpath(&dir.path().join("d")), 0o700),
        )
        .unwrap_err();
    assert_eq!(e.error.kind(), ErrorKind::Unsupported);
    let c = run_op(
        &mut r,
        Token(2),
        Op::statx(libc::AT_FDCWD, cpath(dir.path()), 0),
    );
    assert_eq!(c.result.unwrap_err().raw_os_error(), Some(libc::EINVAL));
    assert!(c.stat.is_none());
    eprintln!("checked");
}
