//! The core file operations (open, close, read, write, stat, lstat, fstat,
//! rename, unlink, mkdir, rmdir, readdir, fsync, fdatasync, ftruncate):
//! each one's success and its main error, worded as Node's, on every
//! backend (the poll backend runs them all on the blocking pool).

mod fs_support;
mod util;

use std::path::Path;

use eventide::fs::{self, File, FileType, Flags};
use eventide::{BackendKind, Loop, Result};
use fs_support::{file_with, q, tmp};
use util::{assert_fs_error, outcome};

fn open(lp: &mut Loop, path: &Path, flags: &str) -> Result<File> {
    let flags = Flags::parse(flags).unwrap();
    let path = path.to_path_buf();
    outcome(lp, move |lp, done| lp.fs().open(path, flags, 0o644, done))
}

fn read(lp: &mut Loop, file: &File, buf: Vec<u8>, at: Option<u64>) -> (Result<usize>, Vec<u8>) {
    let f = *file;
    outcome(lp, move |lp, done| {
        lp.fs()
            .read(f, buf, at, move |lp, res, buf| done(lp, (res, buf)))
    })
}

fn write(lp: &mut Loop, file: &File, buf: &[u8], at: Option<u64>) -> (Result<usize>, Vec<u8>) {
    let (f, buf) = (*file, buf.to_vec());
    outcome(lp, move |lp, done| {
        lp.fs()
            .write(f, buf, at, move |lp, res, buf| done(lp, (res, buf)))
    })
}

fn close(lp: &mut Loop, file: File) -> Result<()> {
    outcome(lp, move |lp, done| lp.fs().close(file, done))
}

fn opening_reading_and_closing_a_file_gives_its_bytes(lp: &mut Loop) {
    let dir = tmp();
    let path = file_with(dir.path(), "a.txt", b"hello, world");
    let file = open(lp, &path, "r").unwrap();
    assert!(file.fd(lp).is_some());
    let (n, buf) = read(lp, &file, Vec::with_capacity(5), Some(7));
    assert_eq!((n.unwrap(), buf.as_slice()), (5, &b"world"[..]));
    close(lp, file).unwrap();
    assert_eq!(file.fd(lp), None, "the key is stale once closed");
}

fn opening_a_missing_file_is_enoent_worded_as_node(lp: &mut Loop) {
    let dir = tmp();
    let path = dir.path().join("missing.txt");
    let error = open(lp, &path, "r").unwrap_err();
    let message = format!("ENOENT: no such file or directory, open '{}'", q(&path));
    assert_fs_error(&error, "ENOENT", &message);
    assert_eq!(error.kind(), std::io::ErrorKind::NotFound);
    assert_eq!(error.errno(), Some(libc::ENOENT));
    let io: std::io::Error = error.into();
    assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
    assert_eq!(io.to_string(), message);
}

fn exclusive_create_of_an_existing_file_is_eexist(lp: &mut Loop) {
    let dir = tmp();
    let path = file_with(dir.path(), "here", b"");
    let error = open(lp, &path, "wx").unwrap_err();
    let message = format!("EEXIST: file already exists, open '{}'", q(&path));
    assert_fs_error(&error, "EEXIST", &message);
    let made = open(lp, &dir.path().join("new"), "wx").unwrap();
    close(lp, made).unwrap();
}

fn reads_at_the_current_position_advance_it(lp: &mut Loop) {
    let dir = tmp();
    let path = file_with(dir.path(), "abc", b"abcdef");
    let file = open(lp, &path, "r").unwrap();
    let (n, buf) = read(lp, &file, Vec::with_capacity(2), None);
    assert_eq!((n.unwrap(), buf.as_slice()), (2, &b"ab"[..]));
    // A read at a position leaves the current position alone.
    let (n, _) = read(lp, &file, Vec::with_capacity(4), Some(0));
    assert_eq!(n.unwrap(), 4);
    // The reused buffer fills its spare capacity, after what it holds.
    let mut buf = buf;
    buf.reserve_exact(4);
    let (n, buf) = read(lp, &file, buf, None);
    assert_eq!((n.unwrap(), buf.as_slice()), (4, &b"abcdef"[..]));
    let (n, _) = read(lp, &file, Vec::with_capacity(4), None);
    assert_eq!(n.unwrap(), 0, "the end of the file");
    close(lp, file).unwrap();
}

fn reading_a_closed_file_is_ebadf_and_gives_the_buffer_back(lp: &mut Loop) {
    let dir = tmp();
    let path = file_with(dir.path(), "x", b"x");
    let file = open(lp, &path, "r").unwrap();
    close(lp, file).unwrap();
    let (n, buf) = read(lp, &file, Vec::with_capacity(77), None);
    assert_fs_error(&n.unwrap_err(), "EBADF", "EBADF: bad file descriptor, read");
    assert_eq!(buf.capacity(), 77);
    let error = close(lp, file).unwrap_err();
    assert_fs_error(&error, "EBADF", "EBADF: bad file descriptor, close");
}

fn writes_at_a_position_and_at_the_current_one(lp: &mut Loop) {
    let dir = tmp();
    let path = dir.path().join("w");
    let file = open(lp, &path, "w+").unwrap();
    assert_eq!(write(lp, &file, b"hello", None).0.unwrap(), 5);
    assert_eq!(write(lp, &file, b" world", None).0.unwrap(), 6);
    assert_eq!(write(lp, &file, b"J", Some(0)).0.unwrap(), 1);
    close(lp, file).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"Jello world");
}

fn appending_writes_at_the_end_whatever_the_position(lp: &mut Loop) {
    let dir = tmp();
    let path = file_with(dir.path(), "log", b"one\n");
    let file = open(lp, &path, "a").unwrap();
    write(lp, &file, b"two\n", None).0.unwrap();
    close(lp, file).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"one\ntwo\n");
}

fn writing_a_file_opened_read_only_is_ebadf(lp: &mut Loop) {
    let dir = tmp();
    let path = file_with(dir.path(), "ro", b"");
    let file = open(lp, &path, "r").unwrap();
    let (n, buf) = write(lp, &file, b"nope", Some(0));
    assert_fs_error(
        &n.unwrap_err(),
        "EBADF",
        "EBADF: bad file descriptor, write",
    );
    assert_eq!(buf, b"nope");
    close(lp, file).unwrap();
}

fn stat_describes_a_file_and_a_missing_path_is_enoent(lp: &mut Loop) {
    let dir = tmp();
    let path = file_with(dir.path(), "s", &[7; 1234]);
    let p = path.clone();
    let stats = outcome(lp, move |lp, done| lp.fs().stat(p, done)).unwrap();
    let std_meta = std::fs::metadata(&path).unwrap();
    assert_eq!(stats.size, 1234);
    assert!(stats.is_file() && !stats.is_dir());
    assert_eq!(stats.file_type(), FileType::File);
    assert_eq!(stats.ino, std::os::unix::fs::MetadataExt::ino(&std_meta));
    assert_eq!(stats.mtime, std_meta.modified().unwrap());
    let d = dir.path().to_path_buf();
    assert!(
        outcome(lp, move |lp, done| lp.fs().stat(d, done))
            .unwrap()
            .is_dir()
    );
    let missing = dir.path().join("nope");
    let m = missing.clone();
    let error = outcome(lp, move |lp, done| lp.fs().stat(m, done)).unwrap_err();
    let message = format!("ENOENT: no such file or directory, stat '{}'", q(&missing));
    assert_fs_error(&error, "ENOENT", &message);
}

fn lstat_sees_the_link_and_stat_its_target(lp: &mut Loop) {
    let dir = tmp();
    let target = file_with(dir.path(), "t", b"12345");
    let link = dir.path().join("l");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let l = link.clone();
    let lstats = outcome(lp, move |lp, done| lp.fs().lstat(l, done)).unwrap();
    assert!(lstats.is_symlink());
    let l = link.clone();
    let stats = outcome(lp, move |lp, done| lp.fs().stat(l, done)).unwrap();
    assert_eq!((stats.is_file(), stats.size), (true, 5));
    let missing = dir.path().join("gone");
    let m = missing.clone();
    let error = outcome(lp, move |lp, done| lp.fs().lstat(m, done)).unwrap_err();
    let message = format!("ENOENT: no such file or directory, lstat '{}'", q(&missing));
    assert_fs_error(&error, "ENOENT", &message);
}

fn fstat_describes_an_open_file_and_a_closed_one_is_ebadf(lp: &mut Loop) {
    let dir = tmp();
    let path = file_with(dir.path(), "f", &[1; 100]);
    let file = open(lp, &path, "r").unwrap();
    let f = file;
    let stats = outcome(lp, move |lp, done| lp.fs().fstat(f, done)).unwrap();
    assert_eq!((stats.size, stats.is_file()), (100, true));
    close(lp, file).unwrap();
    let error = outcome(lp, move |lp, done| lp.fs().fstat(file, done)).unwrap_err();
    assert_fs_error(&error, "EBADF", "EBADF: bad file descriptor, fstat");
}

fn rename_moves_a_file_and_names_both_paths_in_its_error(lp: &mut Loop) {
    let dir = tmp();
    let from = file_with(dir.path(), "from", b"x");
    let to = dir.path().join("to");
    let (f, t) = (from.clone(), to.clone());
    outcome(lp, move |lp, done| lp.fs().rename(f, t, done)).unwrap();
    assert!(!from.exists() && to.exists());
    let (f, t) = (from.clone(), to.clone());
    let error = outcome(lp, move |lp, done| lp.fs().rename(f, t, done)).unwrap_err();
    let message = format!(
        "ENOENT: no such file or directory, rename '{}' -> '{}'",
        q(&from),
        q(&to)
    );
    assert_fs_error(&error, "ENOENT", &message);
}

fn unlink_removes_a_file_and_a_missing_one_is_enoent(lp: &mut Loop) {
    let dir = tmp();
    let path = file_with(dir.path(), "u", b"");
    let p = path.clone();
    outcome(lp, move |lp, done| lp.fs().unlink(p, done)).unwrap();
    assert!(!path.exists());
    let p = path.clone();
    let error = outcome(lp, move |lp, done| lp.fs().unlink(p, done)).unwrap_err();
    let message = format!("ENOENT: no such file or directory, unlink '{}'", q(&path));
    assert_fs_error(&error, "ENOENT", &message);
}

fn mkdir_makes_a_directory_and_an_existing_one_is_eexist(lp: &mut Loop) {
    let dir = tmp();
    let path = dir.path().join("d");
    let p = path.clone();
    outcome(lp, move |lp, done| lp.fs().mkdir(p, 0o755, done)).unwrap();
    assert!(path.is_dir());
    let p = path.clone();
    let error = outcome(lp, move |lp, done| lp.fs().mkdir(p, 0o755, done)).unwrap_err();
    let message = format!("EEXIST: file already exists, mkdir '{}'", q(&path));
    assert_fs_error(&error, "EEXIST", &message);
}

fn rmdir_removes_an_empty_directory_and_refuses_a_full_one(lp: &mut Loop) {
    let dir = tmp();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let e = empty.clone();
    outcome(lp, move |lp, done| lp.fs().rmdir(e, done)).unwrap();
    assert!(!empty.exists());
    file_with(dir.path(), "inside", b"");
    let d = dir.path().to_path_buf();
    let error = outcome(lp, move |lp, done| lp.fs().rmdir(d, done)).unwrap_err();
    let message = format!("ENOTEMPTY: directory not empty, rmdir '{}'", q(dir.path()));
    assert_fs_error(&error, "ENOTEMPTY", &message);
}

fn readdir_lists_sorted_entries_with_their_types(lp: &mut Loop) {
    let dir = tmp();
    file_with(dir.path(), "b.txt", b"");
    std::fs::create_dir(dir.path().join("a-dir")).unwrap();
    std::os::unix::fs::symlink("b.txt", dir.path().join("c-link")).unwrap();
    let d = dir.path().to_path_buf();
    let entries = outcome(lp, move |lp, done| lp.fs().readdir(d, done)).unwrap();
    let got: Vec<_> = entries
        .iter()
        .map(|e| (e.name.to_str().unwrap(), e.file_type))
        .collect();
    assert_eq!(
        got,
        [
            ("a-dir", FileType::Dir),
            ("b.txt", FileType::File),
            ("c-link", FileType::Symlink)
        ]
    );
    let file = dir.path().join("b.txt");
    let f = file.clone();
    let error = outcome(lp, move |lp, done| lp.fs().readdir(f, done)).unwrap_err();
    let message = format!("ENOTDIR: not a directory, scandir '{}'", q(&file));
    assert_fs_error(&error, "ENOTDIR", &message);
}

fn fsync_and_fdatasync_flush_and_fail_on_a_closed_file(lp: &mut Loop) {
    let dir = tmp();
    let file = open(lp, &dir.path().join("sync"), "w").unwrap();
    write(lp, &file, b"data", None).0.unwrap();
    let f = file;
    outcome(lp, move |lp, done| lp.fs().fsync(f, done)).unwrap();
    let f = file;
    outcome(lp, move |lp, done| lp.fs().fdatasync(f, done)).unwrap();
    close(lp, file).unwrap();
    let f = file;
    let error = outcome(lp, move |lp, done| lp.fs().fsync(f, done)).unwrap_err();
    assert_fs_error(&error, "EBADF", "EBADF: bad file descriptor, fsync");
    let error = outcome(lp, move |lp, done| lp.fs().fdatasync(file, done)).unwrap_err();
    assert_fs_error(&error, "EBADF", "EBADF: bad file descriptor, fdatasync");
}

fn ftruncate_sets_the_length_and_needs_a_writable_file(lp: &mut Loop) {
    let dir = tmp();
    let path = file_with(dir.path(), "t", &[9; 4096]);
    let file = open(lp, &path, "r+").unwrap();
    let f = file;
    outcome(lp, move |lp, done| lp.fs().ftruncate(f, 10, done)).unwrap();
    close(lp, file).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 10);
    let ro = open(lp, &path, "r").unwrap();
    let f = ro;
    let error = outcome(lp, move |lp, done| lp.fs().ftruncate(f, 0, done)).unwrap_err();
    assert_fs_error(&error, "EINVAL", "EINVAL: invalid argument, ftruncate");
    close(lp, ro).unwrap();
}

fn invalid_flags_and_paths_fail_as_node_does_without_a_system_call(lp: &mut Loop) {
    let error = Flags::parse("rw").unwrap_err();
    assert_eq!(
        error.to_string(),
        "The argument 'flags' is invalid. Received 'rw'"
    );
    assert_eq!(error.code(), Some("ERR_INVALID_ARG_VALUE"));
    let before = fs::stats();
    let error = outcome(lp, |lp, done| lp.fs().stat("a\0b", done)).unwrap_err();
    assert_eq!(error.code(), Some("ERR_INVALID_ARG_VALUE"));
    assert_eq!(fs::stats(), before, "nothing was routed");
}

fn the_route_is_visible_in_the_counters(lp: &mut Loop) {
    let dir = tmp();
    let before = fs::stats();
    let d = dir.path().to_path_buf();
    outcome(lp, move |lp, done| lp.fs().stat(d, done)).unwrap();
    let d = dir.path().to_path_buf();
    outcome(lp, move |lp, done| lp.fs().readdir(d, done)).unwrap();
    let after = fs::stats();
    let ring = lp.fs().native_ops().contains(fs::FileOps::STATX);
    if lp.backend() != BackendKind::Uring {
        assert!(lp.fs().native_ops().is_empty(), "nothing native on polling");
    }
    match lp.backend() {
        BackendKind::Uring if !ring => {
            // EVENTIDE_URING_FILE_OPS took statx away: both on the pool.
            assert_eq!(after.native, before.native, "stat on the pool");
            assert_eq!(after.pool, before.pool + 2, "both on the pool");
        }
        BackendKind::Uring => {
            assert_eq!(after.native, before.native + 1, "stat on the ring");
            assert_eq!(after.pool, before.pool + 1, "readdir on the pool");
        }
        BackendKind::Poll | BackendKind::Epoll => {
            assert_eq!(after.native, before.native, "no ring on polling");
            assert_eq!(after.pool, before.pool + 2, "both on the pool");
        }
    }
    assert_eq!(after.fallback, before.fallback);
}

/// A file never closed stays open while its loop lives (its key is
/// `Copy`: nothing closes on a drop), and is closed once when the loop is
/// dropped.
fn a_file_left_open_is_closed_with_its_loop(lp: &mut Loop) {
    let dir = tmp();
    let path = file_with(dir.path(), "d", b"");
    let Some(mut own) = util::new_loop(lp.backend()) else {
        return;
    };
    let file = open(&mut own, &path, "r").unwrap();
    let fd = file.fd(&own).unwrap();
    let named = || std::fs::read_link(format!("/proc/self/fd/{fd}")).ok();
    assert_eq!(named(), Some(path.clone()));
    own.run().unwrap();
    assert_eq!(
        named(),
        Some(path.clone()),
        "still open while the loop lives"
    );
    drop(own);
    // Another test's thread may reuse the number, but not for this path.
    assert_ne!(named(), Some(path), "fd {fd} was closed with the loop");
}

/// Every operation on the key of a closed file answers `EBADF` worded as
/// Node's (`fs.read` on a closed fd: `EBADF: bad file descriptor, read`),
/// from the next turn, without a system call; and a key whose slot was
/// reused by a file opened since never reaches that file.
fn every_operation_on_a_closed_file_is_ebadf_without_a_system_call(lp: &mut Loop) {
    let dir = tmp();
    let path = file_with(dir.path(), "closed", b"keep me");
    let file = open(lp, &path, "r+").unwrap();
    close(lp, file).unwrap();
    // Opened after the close: it may take the closed file's slot.
    let other = open(lp, &path, "r+").unwrap();
    let before = fs::stats();
    let f = file;
    let (n, buf) = read(lp, &f, Vec::with_capacity(8), None);
    assert_fs_error(&n.unwrap_err(), "EBADF", "EBADF: bad file descriptor, read");
    assert_eq!(buf.capacity(), 8, "the buffer comes back");
    let (n, buf) = write(lp, &f, b"clobber", Some(0));
    assert_fs_error(
        &n.unwrap_err(),
        "EBADF",
        "EBADF: bad file descriptor, write",
    );
    assert_eq!(buf, b"clobber");
    let error = outcome(lp, move |lp, done| lp.fs().fstat(f, done)).unwrap_err();
    assert_fs_error(&error, "EBADF", "EBADF: bad file descriptor, fstat");
    let error = outcome(lp, move |lp, done| lp.fs().fsync(f, done)).unwrap_err();
    assert_fs_error(&error, "EBADF", "EBADF: bad file descriptor, fsync");
    let error = outcome(lp, move |lp, done| lp.fs().fdatasync(f, done)).unwrap_err();
    assert_fs_error(&error, "EBADF", "EBADF: bad file descriptor, fdatasync");
    let error = outcome(lp, move |lp, done| lp.fs().ftruncate(f, 0, done)).unwrap_err();
    assert_fs_error(&error, "EBADF", "EBADF: bad file descriptor, ftruncate");
    let error = outcome(lp, move |lp, done| lp.fs().fchmod(f, 0o600, done)).unwrap_err();
    assert_fs_error(&error, "EBADF", "EBADF: bad file descriptor, fchmod");
    let error = outcome(lp, move |lp, done| lp.fs().fchown(f, 0, 0, done)).unwrap_err();
    assert_fs_error(&error, "EBADF", "EBADF: bad file descriptor, fchown");
    let t = std::time::SystemTime::UNIX_EPOCH;
    let error = outcome(lp, move |lp, done| lp.fs().futimes(f, t, t, done)).unwrap_err();
    assert_fs_error(&error, "EBADF", "EBADF: bad file descriptor, futime");
    let error = close(lp, f).unwrap_err();
    assert_fs_error(&error, "EBADF", "EBADF: bad file descriptor, close");
    assert_eq!(fs::stats(), before, "nothing was routed");
    assert_eq!(file.fd(lp), None);
    assert!(
        other.fd(lp).is_some(),
        "the file opened since is still open"
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
    close(lp, other).unwrap();
}

/// A key of another loop names no file here, even when the other loop's
/// table has a file in the same slot at the same generation: `EBADF`,
/// and that file is untouched.
fn a_file_of_another_loop_is_ebadf_here(lp: &mut Loop) {
    let dir = tmp();
    let path = file_with(dir.path(), "mine", b"mine");
    let Some(mut other) = util::new_loop(lp.backend()) else {
        return;
    };
    // Both loops' first file: the same slot and generation.
    let theirs = open(&mut other, &path, "r").unwrap();
    let mine = open(lp, &path, "r+").unwrap();
    let (n, _) = write(lp, &theirs, b"NOT", Some(0));
    assert_fs_error(
        &n.unwrap_err(),
        "EBADF",
        "EBADF: bad file descriptor, write",
    );
    assert_eq!(theirs.fd(lp), None, "not open on this loop");
    let error = close(lp, theirs).unwrap_err();
    assert_fs_error(&error, "EBADF", "EBADF: bad file descriptor, close");
    assert!(mine.fd(lp).is_some(), "this loop's file is still open");
    assert!(theirs.fd(&other).is_some(), "and the other loop's too");
    assert_eq!(std::fs::read(&path).unwrap(), b"mine");
    close(lp, mine).unwrap();
    close(&mut other, theirs).unwrap();
}

on_every_backend!(
    opening_reading_and_closing_a_file_gives_its_bytes,
    opening_a_missing_file_is_enoent_worded_as_node,
    exclusive_create_of_an_existing_file_is_eexist,
    reads_at_the_current_position_advance_it,
    reading_a_closed_file_is_ebadf_and_gives_the_buffer_back,
    writes_at_a_position_and_at_the_current_one,
    appending_writes_at_the_end_whatever_the_position,
    writing_a_file_opened_read_only_is_ebadf,
    stat_describes_a_file_and_a_missing_path_is_enoent,
    lstat_sees_the_link_and_stat_its_target,
    fstat_describes_an_open_file_and_a_closed_one_is_ebadf,
    rename_moves_a_file_and_names_both_paths_in_its_error,
    unlink_removes_a_file_and_a_missing_one_is_enoent,
    mkdir_makes_a_directory_and_an_existing_one_is_eexist,
    rmdir_removes_an_empty_directory_and_refuses_a_full_one,
    readdir_lists_sorted_entries_with_their_types,
    fsync_and_fdatasync_flush_and_fail_on_a_closed_file,
    ftruncate_sets_the_length_and_needs_a_writable_file,
    invalid_flags_and_paths_fail_as_node_does_without_a_system_call,
    the_route_is_visible_in_the_counters,
    a_file_left_open_is_closed_with_its_loop,
    every_operation_on_a_closed_file_is_ebadf_without_a_system_call,
    a_file_of_another_loop_is_ebadf_here,
);

/// The same cases on the io_uring backend with every file operation on
/// the pool (as on a kernel whose io_uring lacks them): same results.
#[test]
fn the_same_cases_pass_with_every_op_on_the_pool() {
    fs_support::rerun_uring_cases_on_the_pool();
}
