//! The fs defects found by running the same scenarios with Node 20's `fs`
//! and with eventide (issue 12, points 6 and 7): each case failed before
//! its fix. Every case on both backends, and again on io_uring with every
//! file operation on the pool.

mod fs_support;
mod util;

use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

use eventide::Loop;
use eventide::fs::{self, File, Flags, ReadStreamOptions, RmOptions, Stats};
use fs_support::{file_with, q, tmp};
use util::{assert_fs_error, outcome, run_within};

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

type Done = Box<dyn FnOnce(&mut Loop, eventide::Result<()>)>;

const RECURSIVE: RmOptions = RmOptions::new().recursive(true).force(false);

/// `rm("tree/link/", recursive)` where `link` points to a directory
/// outside the tree: Node 20 succeeds and removes nothing (its `rmdir`
/// of `link/` is `ENOTDIR`, which rimraf takes as done); eventide
/// followed the link and emptied the directory outside.
fn a_recursive_rm_through_a_trailing_slash_symlink_removes_nothing(lp: &mut Loop) {
    let dir = tmp();
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(outside.join("sub")).unwrap();
    file_with(&outside, "keep", b"precious");
    file_with(&outside.join("sub"), "deep", b"precious too");
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    let link = tree.join("link");
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    for force in [false, true] {
        let options = RmOptions::new().recursive(true).force(force);
        let mut slashed = link.clone().into_os_string();
        slashed.push("/");
        outcome(lp, move |lp, done| lp.fs().rm(slashed, options, done)).unwrap();
        assert_eq!(names(&outside), ["keep", "sub"], "force: {force}");
        assert_eq!(names(&outside.join("sub")), ["deep"]);
        assert!(
            link.symlink_metadata().is_ok(),
            "the link stays, as in Node"
        );
    }
    // The tree itself, with the link inside: the link goes, not its target.
    let t = tree.clone();
    outcome(lp, move |lp, done| lp.fs().rm(t, RECURSIVE, done)).unwrap();
    assert!(!tree.exists());
    assert_eq!(names(&outside), ["keep", "sub"]);
    // And Node's other answers: a file, a missing path, a path under a file.
    let file = file_with(dir.path(), "f", b"x");
    let f = file.clone();
    outcome(lp, move |lp, done| {
        lp.fs().rm(f, RmOptions::default(), done)
    })
    .unwrap();
    assert!(!file.exists());
    let under = dir.path().join("outside/keep/x");
    let u = under.clone();
    let forced = RmOptions::new().recursive(true).force(true);
    let error = outcome(lp, move |lp, done| lp.fs().rm(u, forced, done)).unwrap_err();
    let message = format!("ENOTDIR: not a directory, lstat '{}'", q(&under));
    assert_fs_error(&error, "ENOTDIR", &message);
}

/// `copy_file(a, a)`, onto a hard link of `a`, onto a symbolic link to
/// `a` and from one: Node succeeds and `a` keeps its bytes (libuv compares
/// device and inode before truncating). eventide emptied `a`.
fn copy_file_onto_the_same_file_leaves_it_whole(lp: &mut Loop) {
    let dir = tmp();
    let a = file_with(dir.path(), "a", b"hello");
    let hard = dir.path().join("hard");
    std::fs::hard_link(&a, &hard).unwrap();
    let soft = dir.path().join("soft");
    std::os::unix::fs::symlink(&a, &soft).unwrap();
    for (src, dest) in [(&a, &a), (&a, &hard), (&a, &soft), (&soft, &a)] {
        let (s, d) = (src.clone(), dest.clone());
        outcome(lp, move |lp, done| lp.fs().copy_file(s, d, 0, done)).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"hello", "{src:?} -> {dest:?}");
    }
    let (s, d) = (a.clone(), a.clone());
    let error = outcome(lp, move |lp, done| {
        lp.fs().copy_file(s, d, fs::COPYFILE_EXCL, done)
    })
    .unwrap_err();
    let message = format!(
        "EEXIST: file already exists, copyfile '{}' -> '{}'",
        q(&a),
        q(&a)
    );
    assert_fs_error(&error, "EEXIST", &message);
    assert_eq!(std::fs::read(&a).unwrap(), b"hello");
}

/// A copy whose source is a directory fails with Node's `EISDIR` and
/// leaves the destination as it was: none made where there was none, an
/// existing one with its bytes and its mode (eventide left an empty file,
/// or truncated and re-moded the existing one).
fn a_failed_copy_leaves_the_destination_as_it_was(lp: &mut Loop) {
    let dir = tmp();
    let src = dir.path().join("dir");
    std::fs::create_dir(&src).unwrap();
    let fresh = dir.path().join("fresh");
    let (s, d) = (src.clone(), fresh.clone());
    let error = outcome(lp, move |lp, done| lp.fs().copy_file(s, d, 0, done)).unwrap_err();
    let message = format!(
        "EISDIR: illegal operation on a directory, copyfile '{}' -> '{}'",
        q(&src),
        q(&fresh)
    );
    assert_fs_error(&error, "EISDIR", &message);
    assert!(fresh.symlink_metadata().is_err(), "no destination left");
    let old = file_with(dir.path(), "old", b"old contents");
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o600)).unwrap();
    for mode in [0, fs::COPYFILE_EXCL] {
        let (s, d) = (src.clone(), old.clone());
        let error = outcome(lp, move |lp, done| lp.fs().copy_file(s, d, mode, done)).unwrap_err();
        let code = if mode == 0 { "EISDIR" } else { "EEXIST" };
        assert_eq!(error.code(), Some(code), "{error}");
        assert_eq!(std::fs::read(&old).unwrap(), b"old contents");
        let meta = std::fs::metadata(&old).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    }
}

fn stat_all_ways(lp: &mut Loop, path: &Path) -> [Stats; 3] {
    let p = path.to_path_buf();
    let stat = outcome(lp, move |lp, done| lp.fs().stat(p, done)).unwrap();
    let p = path.to_path_buf();
    let lstat = outcome(lp, move |lp, done| lp.fs().lstat(p, done)).unwrap();
    let p = path.to_path_buf();
    let flags = Flags::parse("r").unwrap();
    let file = outcome(lp, move |lp, done| lp.fs().open(p, flags, 0, done)).unwrap();
    let f = file;
    let fstat = outcome(lp, move |lp, done| lp.fs().fstat(f, done)).unwrap();
    outcome(lp, move |lp, done| lp.fs().close(file, done)).unwrap();
    [stat, lstat, fstat]
}

/// A time before the epoch with a fraction: -1.5 s is -1.5 s (statx says
/// `tv_sec -2, tv_nsec 500000000`; it was read as -2.5 s), on every stat
/// route: the ring's statx (uring), the pool's (poll, and the pool rerun),
/// for stat, lstat and fstat.
fn pre_epoch_times_keep_their_fraction(lp: &mut Loop) {
    let dir = tmp();
    let path = file_with(dir.path(), "old", b"");
    let before = SystemTime::UNIX_EPOCH - Duration::from_millis(1500);
    let later = SystemTime::UNIX_EPOCH + Duration::from_millis(1500);
    let p = path.clone();
    outcome(lp, move |lp, done| lp.fs().utimes(p, later, before, done)).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!((meta.mtime(), meta.mtime_nsec()), (-2, 500_000_000));
    for (i, stats) in stat_all_ways(lp, &path).into_iter().enumerate() {
        assert_eq!(stats.mtime, before, "route {i} (stat, lstat, fstat)");
        assert_eq!(stats.atime, later, "route {i} (stat, lstat, fstat)");
    }
    // Whole seconds before the epoch, and the epoch itself.
    for when in [
        SystemTime::UNIX_EPOCH - Duration::from_secs(2),
        SystemTime::UNIX_EPOCH - Duration::from_nanos(1),
        SystemTime::UNIX_EPOCH,
    ] {
        let p = path.clone();
        outcome(lp, move |lp, done| lp.fs().utimes(p, when, when, done)).unwrap();
        for stats in stat_all_ways(lp, &path) {
            assert_eq!((stats.atime, stats.mtime), (when, when));
        }
    }
}

/// Node's recursive mkdir (checked with node 20): a file where the
/// directory should be is `EEXIST`; a file on the way is `ENOTDIR`; a
/// dangling symbolic link is `ENOENT`, and on the way `ENOTDIR` naming the
/// link; a link to a directory is followed.
fn mkdir_recursive_fails_as_node_does(lp: &mut Loop) {
    let dir = tmp();
    let file = file_with(dir.path(), "file", b"");
    let dangling = dir.path().join("dangling");
    std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
    let real = dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let to_dir = dir.path().join("to-dir");
    std::os::unix::fs::symlink(&real, &to_dir).unwrap();
    let cases = [
        (file.clone(), "EEXIST: file already exists", file.clone()),
        (
            file.join("x/y"),
            "ENOTDIR: not a directory",
            file.join("x/y"),
        ),
        (
            dangling.clone(),
            "ENOENT: no such file or directory",
            dangling.clone(),
        ),
        (
            dangling.join("x/y"),
            "ENOTDIR: not a directory",
            dangling.clone(),
        ),
    ];
    for (path, what, named) in cases {
        let p = path.clone();
        let error = outcome(lp, move |lp, done| lp.fs().mkdir_recursive(p, 0o755, done))
            .expect_err(&q(&path));
        let code = what.split(':').next().unwrap();
        assert_fs_error(&error, code, &format!("{what}, mkdir '{}'", q(&named)));
    }
    assert!(!dir.path().join("nowhere").exists(), "nothing made");
    let p = to_dir.join("z");
    let made = outcome(lp, move |lp, done| lp.fs().mkdir_recursive(p, 0o755, done)).unwrap();
    assert_eq!(made, Some(to_dir.join("z")));
    assert!(real.join("z").is_dir());
    let mut slashed = dir.path().join("new/a").into_os_string();
    slashed.push("/");
    let made = outcome(lp, move |lp, done| {
        lp.fs().mkdir_recursive(slashed, 0o755, done)
    })
    .unwrap();
    assert_eq!(made, Some(dir.path().join("new")));
    assert!(dir.path().join("new/a").is_dir());
    let p = real.clone();
    let made = outcome(lp, move |lp, done| lp.fs().mkdir_recursive(p, 0o755, done)).unwrap();
    assert_eq!(made, None);
}

/// `rm` of a path with a NUL byte fails as every other operation does
/// (`ERR_INVALID_ARG_VALUE`, without a system call); it was `UNKNOWN`.
fn rm_with_a_nul_byte_is_an_invalid_argument(lp: &mut Loop) {
    let bad = "a\0b";
    let from_stat = outcome(lp, move |lp, done| lp.fs().stat(bad, done)).unwrap_err();
    for options in [RmOptions::default(), RECURSIVE] {
        let error = outcome(lp, move |lp, done| lp.fs().rm(bad, options, done)).unwrap_err();
        assert_eq!(error.code(), Some("ERR_INVALID_ARG_VALUE"), "{error}");
        assert_eq!(error.to_string(), from_stat.to_string());
    }
    for name in ["readdir", "readlink", "realpath", "mkdir_recursive"] {
        let error = outcome(lp, move |lp, done: Done| {
            let done = move |lp: &mut Loop, r: eventide::Result<()>| done(lp, r);
            match name {
                "readdir" => lp.fs().readdir(bad, move |lp, r| done(lp, r.map(drop))),
                "readlink" => lp.fs().readlink(bad, move |lp, r| done(lp, r.map(drop))),
                "realpath" => lp.fs().realpath(bad, move |lp, r| done(lp, r.map(drop))),
                _ => lp
                    .fs()
                    .mkdir_recursive(bad, 0o755, move |lp, r| done(lp, r.map(drop))),
            }
        })
        .unwrap_err();
        assert_eq!(error.to_string(), from_stat.to_string(), "{name}");
    }
}

/// A FIFO holding 32 bytes, read by a stream with high-water mark 16 and
/// `end: 19`: the stream gets bytes 0..20 and bytes 20..32 are still in
/// the pipe for the next reader. The last bounded read asked for the
/// buffer's whole capacity (16) and dropped what passed `end`.
fn a_read_stream_with_end_leaves_the_rest_of_a_pipe_alone(lp: &mut Loop) {
    let dir = tmp();
    let fifo = dir.path().join("fifo");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a live NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // Read-write opens of a FIFO do not wait for the other side (Linux).
    let f = fifo.clone();
    let flags = Flags::parse("r+").unwrap();
    let file: File = outcome(lp, move |lp, done| lp.fs().open(f, flags, 0, done)).unwrap();
    // Never blocks the test: an empty pipe is an error (EAGAIN), not a wait.
    let mut other = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let bytes: Vec<u8> = (0..32).collect();
    std::io::Write::write_all(&mut other, &bytes).unwrap();
    let got = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let g = got.clone();
    let options = ReadStreamOptions::default()
        .high_water_mark(16)
        .end(19)
        .fd(file)
        .auto_close(false);
    let ended = outcome(lp, move |lp, done| {
        lp.fs().create_read_stream(
            "",
            options,
            move |_, _, chunk| g.borrow_mut().extend_from_slice(chunk),
            move |lp, result| done(lp, result),
        );
    });
    ended.unwrap();
    assert_eq!(*got.borrow(), bytes[..20]);
    let mut rest = [0u8; 64];
    let n = std::io::Read::read(&mut other, &mut rest).unwrap();
    assert_eq!(
        &rest[..n],
        &bytes[20..],
        "the bytes after `end` stay in the pipe"
    );
    outcome(lp, move |lp, done| lp.fs().close(file, done)).unwrap();
}

/// Blocks every pool thread (the default 4; the suites do not set
/// `EVENTIDE_THREADPOOL_SIZE`) until the returned sender is dropped; the
/// jobs' callbacks do nothing.
fn occupy_the_pool(lp: &mut Loop) -> std::sync::mpsc::Sender<()> {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
    let started = std::sync::Arc::new(std::sync::Barrier::new(5));
    for _ in 0..4 {
        let (rx, started) = (rx.clone(), started.clone());
        lp.queue_work(
            move || {
                started.wait();
                // Each waits for the sender to go (or 10 s at most).
                let _ = rx.lock().unwrap().recv_timeout(Duration::from_secs(10));
            },
            |_, _| {},
        );
    }
    // A turn hands the jobs to the pool; then every worker is in one.
    lp.run_mode(eventide::RunMode::NoWait).unwrap();
    started.wait();
    tx
}

/// `close` while a pool operation on the same file waits its turn: the
/// number must not be freed under it. An `ftruncate` (a pool operation on
/// both backends) is queued behind busy pool threads, then the file is
/// closed and another opened, which gets the same number if the close
/// went out at once: the old `ftruncate` then emptied the new file.
fn close_waits_for_the_pool_operations_on_its_file(lp: &mut Loop) {
    let dir = tmp();
    let first = file_with(dir.path(), "first", b"first file");
    let second = file_with(dir.path(), "second", b"second file, must stay whole");
    let flags = Flags::parse("r+").unwrap();
    let p = first.clone();
    let file = outcome(lp, move |lp, done| lp.fs().open(p, flags, 0, done)).unwrap();
    let number = file.fd(lp).unwrap();
    let release = occupy_the_pool(lp);
    let truncated = std::rc::Rc::new(std::cell::RefCell::new(None));
    let t = truncated.clone();
    lp.fs().ftruncate(file, 0, move |_, result| {
        *t.borrow_mut() = Some(result.map_err(|e| e.to_string()));
    });
    let closed = std::rc::Rc::new(std::cell::Cell::new(None));
    let c = closed.clone();
    lp.fs()
        .close(file, move |_, result| c.set(Some(result.is_ok())));
    assert!(
        lp.run_mode(eventide::RunMode::NoWait).is_ok(),
        "a turn runs"
    );
    // A second file opened now: on io_uring (where the close and open go
    // to the ring) it gets the number if the close already ran.
    let opened = std::rc::Rc::new(std::cell::RefCell::new(None));
    let o = opened.clone();
    lp.fs().open(second.clone(), flags, 0, move |_, result| {
        *o.borrow_mut() = Some(result.unwrap());
    });
    // Let the ring ops complete before the pool is released.
    for _ in 0..20 {
        if opened.borrow().is_some() {
            break;
        }
        lp.run_mode(eventide::RunMode::NoWait).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(release);
    run_within(lp, Duration::from_secs(20));
    let reused = opened.borrow_mut().take().expect("the second open");
    eprintln!("first file's number {number}, second's {:?}", reused.fd(lp));
    assert_eq!(
        truncated.borrow_mut().take(),
        Some(Ok(())),
        "the ftruncate ran on its file"
    );
    assert_eq!(closed.get(), Some(true), "then the close");
    assert_eq!(std::fs::read(&first).unwrap(), b"");
    assert_eq!(
        std::fs::read(&second).unwrap(),
        b"second file, must stay whole"
    );
    outcome(lp, move |lp, done| lp.fs().close(reused, done)).unwrap();
}

on_every_backend!(
    a_recursive_rm_through_a_trailing_slash_symlink_removes_nothing,
    copy_file_onto_the_same_file_leaves_it_whole,
    a_failed_copy_leaves_the_destination_as_it_was,
    pre_epoch_times_keep_their_fraction,
    mkdir_recursive_fails_as_node_does,
    rm_with_a_nul_byte_is_an_invalid_argument,
    a_read_stream_with_end_leaves_the_rest_of_a_pipe_alone,
    close_waits_for_the_pool_operations_on_its_file,
);

/// The same cases on the io_uring backend with every file operation on
/// the pool (as on a kernel whose io_uring lacks them): same results.
#[test]
fn the_same_cases_pass_with_every_op_on_the_pool() {
    fs_support::rerun_uring_cases_on_the_pool();
}
