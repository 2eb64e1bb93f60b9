//! The path and metadata operations beyond the core (recursive mkdir,
//! mkdtemp, rm, links, realpath, permissions, owners, times, access,
//! copy_file, exists, truncate): success and the main error of each, on
//! every backend (all of these run on the pool, on io_uring too).

mod fs_support;
mod util;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

use eventide::Loop;
use eventide::fs::{self, File, Flags, RmOptions};
use fs_support::{file_with, q, tmp};
use util::{assert_fs_error, outcome};

fn open(lp: &mut Loop, path: &Path, flags: &str) -> File {
    let (path, flags) = (path.to_path_buf(), Flags::parse(flags).unwrap());
    outcome(lp, move |lp, done| lp.fs().open(path, flags, 0o644, done)).unwrap()
}

fn close(lp: &mut Loop, file: File) {
    outcome(lp, move |lp, done| lp.fs().close(file, done)).unwrap();
}

fn mkdir_recursive_makes_parents_and_returns_the_first_it_made(lp: &mut Loop) {
    let dir = tmp();
    let deep = dir.path().join("a/b/c");
    let d = deep.clone();
    let first = outcome(lp, move |lp, done| lp.fs().mkdir_recursive(d, 0o755, done)).unwrap();
    assert_eq!(first, Some(dir.path().join("a")));
    assert!(deep.is_dir());
    let d = deep.clone();
    let again = outcome(lp, move |lp, done| lp.fs().mkdir_recursive(d, 0o755, done)).unwrap();
    assert_eq!(again, None, "nothing made when it all exists");
    let file = file_with(dir.path(), "f", b"");
    let under = file.join("x");
    let u = under.clone();
    let error = outcome(lp, move |lp, done| lp.fs().mkdir_recursive(u, 0o755, done)).unwrap_err();
    let message = format!("ENOTDIR: not a directory, mkdir '{}'", q(&under));
    assert_fs_error(&error, "ENOTDIR", &message);
}

fn mkdtemp_makes_a_fresh_directory_and_fails_under_a_missing_one(lp: &mut Loop) {
    let dir = tmp();
    let prefix = dir.path().join("tmp-");
    let p = prefix.clone();
    let made = outcome(lp, move |lp, done| lp.fs().mkdtemp(p, done)).unwrap();
    assert!(made.is_dir());
    let name = made.file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with("tmp-") && name.len() == 10, "{name}");
    let prefix = dir.path().join("missing/tmp-");
    let p = prefix.clone();
    let error = outcome(lp, move |lp, done| lp.fs().mkdtemp(p, done)).unwrap_err();
    let message = format!(
        "ENOENT: no such file or directory, mkdtemp '{}XXXXXX'",
        q(&prefix)
    );
    assert_fs_error(&error, "ENOENT", &message);
}

fn rm_removes_files_and_trees_as_its_options_say(lp: &mut Loop) {
    let dir = tmp();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("x/y")).unwrap();
    file_with(&tree.join("x"), "f", b"data");
    let t = tree.clone();
    let error = outcome(lp, move |lp, done| {
        lp.fs().rm(t, RmOptions::default(), done)
    })
    .unwrap_err();
    // Node's ERR_FS_EISDIR (a SystemError), errno EISDIR.
    let message = format!(
        "Path is a directory: rm returned EISDIR (is a directory) {}",
        tree.display()
    );
    assert_fs_error(&error, "ERR_FS_EISDIR", &message);
    assert_eq!(error.errno(), Some(libc::EISDIR));
    assert_eq!(error.kind(), std::io::ErrorKind::IsADirectory);
    let options = RmOptions::new().recursive(true).force(false);
    let t = tree.clone();
    outcome(lp, move |lp, done| lp.fs().rm(t, options, done)).unwrap();
    assert!(!tree.exists());
    let t = tree.clone();
    let error = outcome(lp, move |lp, done| lp.fs().rm(t, options, done)).unwrap_err();
    let message = format!("ENOENT: no such file or directory, lstat '{}'", q(&tree));
    assert_fs_error(&error, "ENOENT", &message);
    let forced = RmOptions::new().recursive(false).force(true);
    outcome(lp, move |lp, done| lp.fs().rm(tree, forced, done)).unwrap();
}

fn symlink_readlink_and_realpath_agree(lp: &mut Loop) {
    let dir = tmp();
    let target = file_with(dir.path(), "target", b"t");
    let link = dir.path().join("link");
    let (t, l) = (target.clone(), link.clone());
    outcome(lp, move |lp, done| lp.fs().symlink(t, l, done)).unwrap();
    let l = link.clone();
    assert_eq!(
        outcome(lp, move |lp, done| lp.fs().readlink(l, done)).unwrap(),
        target
    );
    let l = link.clone();
    let real = outcome(lp, move |lp, done| lp.fs().realpath(l, done)).unwrap();
    assert_eq!(real, std::fs::canonicalize(&target).unwrap());
    let (t, l) = (target.clone(), link.clone());
    let error = outcome(lp, move |lp, done| lp.fs().symlink(t, l, done)).unwrap_err();
    let message = format!(
        "EEXIST: file already exists, symlink '{}' -> '{}'",
        q(&target),
        q(&link)
    );
    assert_fs_error(&error, "EEXIST", &message);
    let t = target.clone();
    let error = outcome(lp, move |lp, done| lp.fs().readlink(t, done)).unwrap_err();
    let message = format!("EINVAL: invalid argument, readlink '{}'", q(&target));
    assert_fs_error(&error, "EINVAL", &message);
    let missing = dir.path().join("nope");
    let m = missing.clone();
    let error = outcome(lp, move |lp, done| lp.fs().realpath(m, done)).unwrap_err();
    let message = format!(
        "ENOENT: no such file or directory, realpath '{}'",
        q(&missing)
    );
    assert_fs_error(&error, "ENOENT", &message);
}

fn link_makes_a_second_name_and_refuses_an_existing_one(lp: &mut Loop) {
    let dir = tmp();
    let a = file_with(dir.path(), "a", b"same");
    let b = dir.path().join("b");
    let (x, y) = (a.clone(), b.clone());
    outcome(lp, move |lp, done| lp.fs().link(x, y, done)).unwrap();
    assert_eq!(std::fs::metadata(&a).unwrap().nlink(), 2);
    let (x, y) = (a.clone(), b.clone());
    let error = outcome(lp, move |lp, done| lp.fs().link(x, y, done)).unwrap_err();
    let message = format!(
        "EEXIST: file already exists, link '{}' -> '{}'",
        q(&a),
        q(&b)
    );
    assert_fs_error(&error, "EEXIST", &message);
}

fn chmod_and_fchmod_set_permissions(lp: &mut Loop) {
    let dir = tmp();
    let path = file_with(dir.path(), "m", b"");
    let p = path.clone();
    outcome(lp, move |lp, done| lp.fs().chmod(p, 0o600, done)).unwrap();
    let mode = || std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(), 0o600);
    let file = open(lp, &path, "r");
    let f = file;
    outcome(lp, move |lp, done| lp.fs().fchmod(f, 0o640, done)).unwrap();
    assert_eq!(mode(), 0o640);
    close(lp, file);
    let error = outcome(lp, move |lp, done| lp.fs().fchmod(file, 0o600, done)).unwrap_err();
    assert_fs_error(&error, "EBADF", "EBADF: bad file descriptor, fchmod");
    let missing = dir.path().join("nope");
    let m = missing.clone();
    let error = outcome(lp, move |lp, done| lp.fs().chmod(m, 0o600, done)).unwrap_err();
    let message = format!("ENOENT: no such file or directory, chmod '{}'", q(&missing));
    assert_fs_error(&error, "ENOENT", &message);
}

fn chown_lchown_and_fchown_keep_or_refuse_owners(lp: &mut Loop) {
    let dir = tmp();
    let path = file_with(dir.path(), "o", b"");
    let meta = std::fs::metadata(&path).unwrap();
    let (uid, gid) = (meta.uid(), meta.gid());
    let p = path.clone();
    outcome(lp, move |lp, done| lp.fs().chown(p, uid, gid, done)).unwrap();
    let p = path.clone();
    outcome(lp, move |lp, done| lp.fs().lchown(p, uid, gid, done)).unwrap();
    let file = open(lp, &path, "r");
    let f = file;
    outcome(lp, move |lp, done| lp.fs().fchown(f, uid, gid, done)).unwrap();
    close(lp, file);
    let missing = dir.path().join("nope");
    let m = missing.clone();
    let error = outcome(lp, move |lp, done| lp.fs().chown(m, uid, gid, done)).unwrap_err();
    let message = format!("ENOENT: no such file or directory, chown '{}'", q(&missing));
    assert_fs_error(&error, "ENOENT", &message);
}

fn utimes_and_futimes_set_the_times(lp: &mut Loop) {
    let dir = tmp();
    let path = file_with(dir.path(), "t", b"");
    let when = SystemTime::UNIX_EPOCH + Duration::new(1_000_000_000, 500);
    let p = path.clone();
    outcome(lp, move |lp, done| lp.fs().utimes(p, when, when, done)).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), when);
    let later = when + Duration::from_secs(60);
    let file = open(lp, &path, "r+");
    let f = file;
    outcome(lp, move |lp, done| lp.fs().futimes(f, later, later, done)).unwrap();
    close(lp, file);
    assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), later);
    let missing = dir.path().join("nope");
    let m = missing.clone();
    let error = outcome(lp, move |lp, done| lp.fs().utimes(m, when, when, done)).unwrap_err();
    let message = format!("ENOENT: no such file or directory, utime '{}'", q(&missing));
    assert_fs_error(&error, "ENOENT", &message);
}

fn access_and_exists_check_a_path(lp: &mut Loop) {
    let dir = tmp();
    let path = file_with(dir.path(), "a", b"");
    let p = path.clone();
    outcome(lp, move |lp, done| {
        lp.fs().access(p, fs::R_OK | fs::W_OK, done)
    })
    .unwrap();
    let missing = dir.path().join("nope");
    let m = missing.clone();
    let error = outcome(lp, move |lp, done| lp.fs().access(m, fs::F_OK, done)).unwrap_err();
    let message = format!(
        "ENOENT: no such file or directory, access '{}'",
        q(&missing)
    );
    assert_fs_error(&error, "ENOENT", &message);
    assert!(outcome(lp, move |lp, done| lp.fs().exists(path, done)));
    assert!(!outcome(lp, move |lp, done| lp.fs().exists(missing, done)));
    assert!(!outcome(lp, |lp, done| lp.fs().exists("nul\0inside", done)));
}

fn copy_file_copies_bytes_and_mode_and_honours_excl(lp: &mut Loop) {
    let dir = tmp();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let src = file_with(dir.path(), "src", &data);
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o640)).unwrap();
    let dest = file_with(dir.path(), "dest", b"old contents, longer than nothing");
    let (s, d) = (src.clone(), dest.clone());
    outcome(lp, move |lp, done| lp.fs().copy_file(s, d, 0, done)).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    let (s, d) = (src.clone(), dest.clone());
    let error = outcome(lp, move |lp, done| {
        lp.fs().copy_file(s, d, fs::COPYFILE_EXCL, done)
    })
    .unwrap_err();
    let message = format!(
        "EEXIST: file already exists, copyfile '{}' -> '{}'",
        q(&src),
        q(&dest)
    );
    assert_fs_error(&error, "EEXIST", &message);
    let missing = dir.path().join("nope");
    let (m, d) = (missing.clone(), dest.clone());
    let error = outcome(lp, move |lp, done| lp.fs().copy_file(m, d, 0, done)).unwrap_err();
    let message = format!(
        "ENOENT: no such file or directory, copyfile '{}' -> '{}'",
        q(&missing),
        q(&dest)
    );
    assert_fs_error(&error, "ENOENT", &message);
}

fn truncate_sets_the_length_of_a_path(lp: &mut Loop) {
    let dir = tmp();
    let path = file_with(dir.path(), "t", &[1; 100]);
    let p = path.clone();
    outcome(lp, move |lp, done| lp.fs().truncate(p, 3, done)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), [1, 1, 1]);
    let missing = dir.path().join("nope");
    let m = missing.clone();
    let error = outcome(lp, move |lp, done| lp.fs().truncate(m, 0, done)).unwrap_err();
    let message = format!("ENOENT: no such file or directory, open '{}'", q(&missing));
    assert_fs_error(&error, "ENOENT", &message);
}

/// The main error of the descriptor and no-follow variants, as Node words
/// them (checked against node 20): a closed descriptor is `EBADF`.
fn lchown_fchown_and_futimes_report_their_main_error(lp: &mut Loop) {
    let dir = tmp();
    let missing = dir.path().join("nope");
    let m = missing.clone();
    let error = outcome(lp, move |lp, done| lp.fs().lchown(m, 0, 0, done)).unwrap_err();
    let message = format!(
        "ENOENT: no such file or directory, lchown '{}'",
        q(&missing)
    );
    assert_fs_error(&error, "ENOENT", &message);
    let path = file_with(dir.path(), "c", b"");
    let file = open(lp, &path, "r");
    close(lp, file);
    let f = file;
    let error = outcome(lp, move |lp, done| lp.fs().fchown(f, 0, 0, done)).unwrap_err();
    assert_fs_error(&error, "EBADF", "EBADF: bad file descriptor, fchown");
    let when = SystemTime::UNIX_EPOCH;
    let error = outcome(lp, move |lp, done| lp.fs().futimes(file, when, when, done)).unwrap_err();
    assert_fs_error(&error, "EBADF", "EBADF: bad file descriptor, futime");
}

on_every_backend!(
    lchown_fchown_and_futimes_report_their_main_error,
    mkdir_recursive_makes_parents_and_returns_the_first_it_made,
    mkdtemp_makes_a_fresh_directory_and_fails_under_a_missing_one,
    rm_removes_files_and_trees_as_its_options_say,
    symlink_readlink_and_realpath_agree,
    link_makes_a_second_name_and_refuses_an_existing_one,
    chmod_and_fchmod_set_permissions,
    chown_lchown_and_fchown_keep_or_refuse_owners,
    utimes_and_futimes_set_the_times,
    access_and_exists_check_a_path,
    copy_file_copies_bytes_and_mode_and_honours_excl,
    truncate_sets_the_length_of_a_path,
);

/// The same cases on the io_uring backend with every file operation on
/// the pool (as on a kernel whose io_uring lacks them): same results.
#[test]
fn the_same_cases_pass_with_every_op_on_the_pool() {
    fs_support::rerun_uring_cases_on_the_pool();
}
