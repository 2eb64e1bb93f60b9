//! File operations: native on io_uring; "unsupported" on polling, with the
//! operation handed back so the caller can run it on a thread pool.

mod util;

use eventide_reactor::{BackendKind, FileOps, FileStat, Op, Reactor, Token};
use std::ffi::CString;
use std::io::ErrorKind;
use util::*;

conformance!(
    file_operations_run_natively_or_come_back_unsupported,
    file_stat_synchronously_agrees_with_std_and_the_ring,
);

fn cpath(p: &std::path::Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).unwrap()
}

fn file_operations_run_natively_or_come_back_unsupported(r: &mut Reactor) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.txt");
    let open = Op::openat(
        libc::AT_FDCWD,
        cpath(&file),
        libc::O_CREAT | libc::O_RDWR,
        0o644,
    );
    if r.backend() != BackendKind::Uring {
        let e = r.submit(Token(1), open).unwrap_err();
        assert_eq!(e.error.kind(), ErrorKind::Unsupported);
        assert!(e.op.is_file_op());
        let e = r
            .submit(Token(2), Op::read_at(0, vec![9; 4], 0))
            .unwrap_err();
        assert_eq!(e.op.into_buf(), Some(vec![9; 4]), "the buffer comes back");
        assert_eq!(r.in_flight(), 0);
        return;
    }
    if !r.file_ops().contains(FileOps::ALL) {
        // A kernel without some of them (or EVENTIDE_URING_AS_KERNEL): what
        // it lacks is refused as polling refuses it, the op handed back.
        let missing = FileOps::ALL.difference(r.file_ops());
        eprintln!("this kernel lacks {missing:?}: checking the refusal");
        let sub = dir.path().join("sub");
        let probe = Op::mkdirat(libc::AT_FDCWD, cpath(&sub), 0o755);
        assert_eq!(
            r.submit(Token(1), probe).map_err(|e| e.error.kind()).err(),
            missing
                .contains(FileOps::MKDIRAT)
                .then_some(ErrorKind::Unsupported)
        );
        if !missing.contains(FileOps::MKDIRAT) {
            wait_for(r, Token(1), &mut Vec::new()).result.unwrap();
        }
        return;
    }
    let fd = run_op(r, Token(1), open).fd().expect("openat");
    let w = run_op(r, Token(2), Op::write_at(fd, b"hello, reactor".to_vec(), 3));
    assert_eq!(w.result.unwrap(), 14);
    run_op(r, Token(3), Op::fsync(fd, true)).result.unwrap();
    run_op(r, Token(4), Op::fsync(fd, false)).result.unwrap();
    let rd = run_op(r, Token(5), Op::read_at(fd, Vec::with_capacity(64), 3));
    assert_eq!(rd.result.unwrap(), 14);
    assert_eq!(rd.buf.unwrap(), b"hello, reactor");
    let st = run_op(r, Token(6), Op::statx(libc::AT_FDCWD, cpath(&file), 0));
    let st = st.stat.expect("statx record");
    assert_eq!(st.size(), 17);
    assert!(st.is_file() && !st.is_dir());
    let sub = dir.path().join("sub");
    run_op(r, Token(7), Op::mkdirat(libc::AT_FDCWD, cpath(&sub), 0o755))
        .result
        .unwrap();
    assert!(sub.is_dir());
    let moved = sub.join("b.txt");
    let mv = Op::renameat(
        libc::AT_FDCWD,
        cpath(&file),
        libc::AT_FDCWD,
        cpath(&moved),
        0,
    );
    run_op(r, Token(8), mv).result.unwrap();
    assert!(moved.is_file() && !file.exists());
    run_op(r, Token(9), Op::unlinkat(libc::AT_FDCWD, cpath(&moved), 0))
        .result
        .unwrap();
    run_op(
        r,
        Token(10),
        Op::unlinkat(libc::AT_FDCWD, cpath(&sub), libc::AT_REMOVEDIR),
    )
    .result
    .unwrap();
    assert!(!sub.exists());
    let missing = run_op(r, Token(11), Op::statx(libc::AT_FDCWD, cpath(&file), 0));
    assert_eq!(missing.result.unwrap_err().kind(), ErrorKind::NotFound);
    assert!(missing.stat.is_none());
    assert_eq!(missing.path, Some(cpath(&file)), "the path comes back");
    run_op(r, Token(12), Op::close(fd)).result.unwrap();
}

/// `FileStat::stat_at`/`of_fd` (statx on Linux, fstatat/fstat elsewhere)
/// give what std's metadata gives, and on io_uring what its statx gives.
fn file_stat_synchronously_agrees_with_std_and_the_ring(r: &mut Reactor) {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.txt");
    std::fs::write(&file, b"twelve bytes").unwrap();
    let link = dir.path().join("l");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    let meta = std::fs::metadata(&file).unwrap();
    let check = |st: &FileStat| {
        assert_eq!(st.size(), 12);
        assert!(st.is_file() && !st.is_dir());
        assert_eq!(st.mode(), meta.mode());
        assert_eq!(st.ino(), meta.ino());
        assert_eq!(u64::from(st.nlink()), meta.nlink());
        assert_eq!((st.uid(), st.gid()), (meta.uid(), meta.gid()));
        assert_eq!(st.mtime(), (meta.mtime(), meta.mtime_nsec() as u32));
    };
    check(&FileStat::stat_at(libc::AT_FDCWD, &cpath(&file), 0).unwrap());
    check(&FileStat::stat_at(libc::AT_FDCWD, &cpath(&link), 0).unwrap());
    let open = std::fs::File::open(&file).unwrap();
    check(&FileStat::of_fd(open.as_raw_fd()).unwrap());
    let nofollow = FileStat::stat_at(libc::AT_FDCWD, &cpath(&link), libc::AT_SYMLINK_NOFOLLOW);
    let nofollow = nofollow.unwrap();
    assert!(!nofollow.is_file() && !nofollow.is_dir(), "the link itself");
    assert!(
        FileStat::stat_at(libc::AT_FDCWD, &cpath(dir.path()), 0)
            .unwrap()
            .is_dir()
    );
    let missing = FileStat::stat_at(libc::AT_FDCWD, &cpath(&dir.path().join("no")), 0);
    assert_eq!(missing.unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(
        FileStat::of_fd(-1).unwrap_err().raw_os_error(),
        Some(libc::EBADF)
    );
    if r.backend() == BackendKind::Uring && r.file_ops().contains(FileOps::STATX) {
        let ring = run_op(r, Token(1), Op::statx(libc::AT_FDCWD, cpath(&file), 0));
        check(&ring.stat.expect("statx record"));
    }
}
