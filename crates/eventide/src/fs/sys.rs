//! The pool's side: every file request as blocking system calls, through
//! one funnel ([`syscall!`]). Runs on a pool thread (except `close_now`).

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use eventide_reactor::FileStat;

use super::route::{Done, Out, Req};
use super::types::{DirEntry, FileType, Stats};

/// Calls a libc function; a `-1` result becomes `io::Error::last_os_error()`.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        // SAFETY: every call site passes valid descriptors or pointers to
        // live, NUL-terminated C strings and buffers of the stated length,
        // as the comment at the call site says.
        let res = unsafe { libc::$fn($($arg),*) };
        if res == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

/// Closes `fd` now, on this thread (a `File` dropped without close).
pub(crate) fn close_now(fd: RawFd) {
    // The descriptor is owned by the dropped File and named nowhere else.
    if let Err(error) = syscall!(close(fd)) {
        log::debug!("eventide::fs: closing fd {fd} on drop failed: {error}");
    }
}

/// Runs one request to its end.
pub(crate) fn run(req: Req) -> Done {
    match req {
        Req::Read { fd, buf, pos } => read(fd, buf, pos),
        Req::Write { fd, buf, pos } => write(fd, buf, pos),
        Req::ReadFile { path, buf } => {
            let mut done = read_file(&path, buf);
            done.path = Some(super::route::path_of(path));
            done
        }
        Req::Rm {
            path,
            recursive,
            force,
        } => {
            let (result, step, at) = match rm(&path, recursive, force) {
                Ok(()) => (Ok(Out::Unit), "rm", None),
                Err(failed) => (Err(failed.error), failed.syscall, failed.path),
            };
            let mut done = Done::new(result, Vec::new());
            done.step = step;
            done.path = Some(at.unwrap_or_else(|| super::route::path_of(path)));
            done
        }
        Req::MkdirAll { path, mode } => {
            let (result, at) = match mkdir_all(&path, mode) {
                Ok(first) => (Ok(Out::MaybePath(first)), path),
                Err((error, at)) => (Err(error), at),
            };
            let mut done = Done::new(result, Vec::new());
            done.path = Some(at);
            done
        }
        other => {
            let result = run_unbuffered(&other);
            let mut done = Done::new(result, Vec::new());
            done.path = other.into_path();
            done
        }
    }
}

/// A whole file in one job: open, fstat, reads, close, as Node's
/// `fs.readFile`: a regular file with a size is read up to that size (or
/// to a read that returns 0, if it shrank); anything else (pipes, `/proc`
/// files, whose size is 0) until a read returns 0. Errors name the step
/// that failed.
fn read_file(path: &CStr, mut buf: Vec<u8>) -> Done {
    let fail = |error, buf, step| Done {
        result: Err(error),
        buf,
        step,
        path: None,
    };
    // `path` is a live NUL-terminated string.
    let fd = match syscall!(open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC)) {
        Ok(fd) => fd,
        Err(error) => return fail(error, buf, "open"),
    };
    // SAFETY: `stat` is a plain C struct; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // `fd` is open; `st` is a writable stat record.
    let start = buf.len();
    let mut size = None;
    if syscall!(fstat(fd, &mut st)).is_ok()
        && st.st_mode & libc::S_IFMT == libc::S_IFREG
        && st.st_size > 0
    {
        let want = st.st_size as usize;
        size = Some(want);
        let spare = buf.capacity() - buf.len();
        if want > spare {
            buf.reserve_exact(want - spare);
        }
    }
    while size.is_none_or(|size| buf.len() - start < size) {
        if buf.len() == buf.capacity() {
            buf.reserve(buf.len().max(64 * 1024));
        }
        let spare = buf.spare_capacity_mut();
        let (ptr, len) = (spare.as_mut_ptr().cast::<libc::c_void>(), spare.len());
        // `ptr` points at `len` bytes of the buffer's spare capacity.
        match syscall!(read(fd, ptr, len)) {
            Ok(0) => break,
            // SAFETY: the kernel initialised `n` bytes of the spare capacity.
            Ok(n) => unsafe { buf.set_len(buf.len() + n as usize) },
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => {
                // The read's error is the one to report; the descriptor is
                // ours alone.
                let _ = syscall!(close(fd));
                return fail(error, buf, "read");
            }
        }
    }
    // The descriptor is ours alone.
    match syscall!(close(fd)) {
        Ok(_) => Done::new(Ok(Out::Whole(None)), buf),
        Err(error) => fail(error, buf, "close"),
    }
}

fn read(fd: RawFd, mut buf: Vec<u8>, pos: Option<u64>) -> Done {
    let spare = buf.spare_capacity_mut();
    let (ptr, len) = (spare.as_mut_ptr().cast::<libc::c_void>(), spare.len());
    // `ptr` points at `len` bytes of the buffer's spare capacity.
    let result = match pos {
        Some(pos) => syscall!(pread(fd, ptr, len, pos as libc::off_t)),
        None => syscall!(read(fd, ptr, len)),
    };
    let result = result.map(|n| {
        // SAFETY: the kernel initialised `n` bytes of the spare capacity.
        unsafe { buf.set_len(buf.len() + n as usize) };
        Out::Size(n as usize)
    });
    Done::new(result, buf)
}

fn write(fd: RawFd, buf: Vec<u8>, pos: Option<u64>) -> Done {
    let (ptr, len) = (buf.as_ptr().cast::<libc::c_void>(), buf.len());
    // `ptr` points at the `len` initialised bytes of `buf`.
    let result = match pos {
        Some(pos) => syscall!(pwrite(fd, ptr, len, pos as libc::off_t)),
        None => syscall!(write(fd, ptr, len)),
    };
    Done::new(result.map(|n| Out::Size(n as usize)), buf)
}

fn unit<T>(result: io::Result<T>) -> io::Result<Out> {
    result.map(|_| Out::Unit)
}

fn run_unbuffered(req: &Req) -> io::Result<Out> {
    match req {
        Req::Open { path, flags, mode } => {
            // `path` is a live C string.
            syscall!(open(path.as_ptr(), *flags | libc::O_CLOEXEC, *mode)).map(Out::Fd)
        }
        Req::Close { fd } => unit(syscall!(close(*fd))),
        Req::Stat { path, follow } => {
            let flags = if *follow {
                0
            } else {
                libc::AT_SYMLINK_NOFOLLOW
            };
            stat_at(libc::AT_FDCWD, path, flags)
        }
        Req::Fstat { fd } => fstat(*fd).map(Out::Stat),
        #[cfg(not(target_vendor = "apple"))]
        Req::Fsync { fd, data_only } => match *data_only {
            true => unit(syscall!(fdatasync(*fd))),
            false => unit(syscall!(fsync(*fd))),
        },
        #[cfg(target_vendor = "apple")]
        Req::Fsync { fd, .. } => unit(full_fsync(*fd)),
        // `path`, `from`, `to`, `target`: live C strings, in every arm below.
        Req::Unlink { path } => unit(syscall!(unlink(path.as_ptr()))),
        Req::Rmdir { path } => unit(syscall!(rmdir(path.as_ptr()))),
        Req::Rename { from, to } => unit(syscall!(rename(from.as_ptr(), to.as_ptr()))),
        Req::Mkdir { path, mode } => unit(syscall!(mkdir(path.as_ptr(), *mode as libc::mode_t))),
        Req::Mkdtemp { prefix } => mkdtemp(prefix).map(Out::Path),
        Req::Readdir { path } => readdir(path).map(Out::Entries),
        Req::Ftruncate { fd, len } => unit(syscall!(ftruncate(*fd, *len as libc::off_t))),
        Req::Truncate { path, len } => unit(syscall!(truncate(path.as_ptr(), *len as libc::off_t))),
        Req::Symlink { target, path } => unit(syscall!(symlink(target.as_ptr(), path.as_ptr()))),
        Req::Readlink { path } => std::fs::read_link(path).map(Out::Path),
        Req::Realpath { path } => std::fs::canonicalize(path).map(Out::Path),
        Req::Link { from, to } => unit(syscall!(link(from.as_ptr(), to.as_ptr()))),
        Req::Chmod { path, mode } => unit(syscall!(chmod(path.as_ptr(), *mode as libc::mode_t))),
        Req::Fchmod { fd, mode } => unit(syscall!(fchmod(*fd, *mode as libc::mode_t))),
        Req::Chown {
            path,
            uid,
            gid,
            follow: true,
        } => unit(syscall!(chown(path.as_ptr(), *uid, *gid))),
        Req::Chown { path, uid, gid, .. } => unit(syscall!(lchown(path.as_ptr(), *uid, *gid))),
        Req::Fchown { fd, uid, gid } => unit(syscall!(fchown(*fd, *uid, *gid))),
        Req::Utimes { path, atime, mtime } => {
            let times = [timespec(*atime), timespec(*mtime)];
            // `times` holds the two timespecs utimensat reads.
            unit(syscall!(utimensat(
                libc::AT_FDCWD,
                path.as_ptr(),
                times.as_ptr(),
                0
            )))
        }
        Req::Futimes { fd, atime, mtime } => {
            let times = [timespec(*atime), timespec(*mtime)];
            unit(syscall!(futimens(*fd, times.as_ptr())))
        }
        Req::Access { path, mode } => unit(syscall!(access(path.as_ptr(), *mode))),
        Req::CopyFile {
            from,
            to,
            exclusive,
        } => unit(copy_file(from, to, *exclusive)),
        Req::Read { .. }
        | Req::Write { .. }
        | Req::ReadFile { .. }
        | Req::Rm { .. }
        | Req::MkdirAll { .. } => {
            unreachable!("run handles these itself")
        }
    }
}

/// `statx(2)` on Linux (the reactor's mask, basic stats, so both routes
/// agree), `fstatat(2)` elsewhere.
fn stat_at(dir: RawFd, path: &CStr, flags: i32) -> io::Result<Out> {
    let st = FileStat::stat_at(dir, path, flags)?;
    Ok(Out::Stat(Stats::from_raw(st.raw())))
}

/// The metadata of an open descriptor: `statx(2)` with `AT_EMPTY_PATH` on
/// Linux, `fstat(2)` elsewhere.
fn fstat(fd: RawFd) -> io::Result<Stats> {
    let st = FileStat::of_fd(fd)?;
    Ok(Stats::from_raw(st.raw()))
}

/// This thread's `errno` (readdir reports errors only through it).
#[cfg(target_os = "linux")]
fn errno_location() -> *mut libc::c_int {
    // SAFETY: returns this thread's errno address; no preconditions.
    unsafe { libc::__errno_location() }
}

/// This thread's `errno` (readdir reports errors only through it).
#[cfg(any(
    target_os = "freebsd",
    target_os = "dragonfly",
    target_vendor = "apple"
))]
fn errno_location() -> *mut libc::c_int {
    // SAFETY: returns this thread's errno address; no preconditions.
    unsafe { libc::__error() }
}

/// This thread's `errno` (readdir reports errors only through it).
#[cfg(any(target_os = "netbsd", target_os = "openbsd"))]
fn errno_location() -> *mut libc::c_int {
    // SAFETY: returns this thread's errno address; no preconditions.
    unsafe { libc::__errno() }
}

/// macOS's `fsync` (and `fdatasync`, which it lacks) as libuv does it:
/// `fcntl(F_FULLFSYNC)` to reach the medium, and plain `fsync(2)` on file
/// systems that refuse it.
#[cfg(target_vendor = "apple")]
fn full_fsync(fd: RawFd) -> io::Result<libc::c_int> {
    // `fd` is the caller's open descriptor.
    syscall!(fcntl(fd, libc::F_FULLFSYNC)).or_else(|_| syscall!(fsync(fd)))
}

fn timespec(t: SystemTime) -> libc::timespec {
    let (secs, nanos) = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(before) => {
            let d = before.duration();
            let (s, n) = (-(d.as_secs() as i64), d.subsec_nanos());
            if n == 0 {
                (s, 0)
            } else {
                (s - 1, 1_000_000_000 - n)
            }
        }
    };
    libc::timespec {
        tv_sec: secs,
        tv_nsec: i64::from(nanos),
    }
}

/// `mkdir -p`, as Node's (`MKDirpAsync` in node_file.cc, checked against
/// node 20): mkdir the path; on `ENOENT` make its parent first (the part
/// before the last `/`) and try again; on `EEXIST` or another error, stat
/// it (following links): a directory is fine, anything else fails: a
/// parent on the way with `ENOTDIR`, the path itself with `EEXIST` (or
/// the stat's error: a dangling link is `ENOENT`). `EACCES`, `EPERM` and
/// `ENOTDIR` fail at once. Returns the first directory made (`None` when
/// it all existed), or the error and the path it names (the one being
/// made when it happened, as Node's message names it).
fn mkdir_all(path: &Path, mode: u32) -> Result<Option<PathBuf>, (io::Error, PathBuf)> {
    let mut stack: Vec<Vec<u8>> = vec![path.as_os_str().as_bytes().to_vec()];
    let mut first: Option<PathBuf> = None;
    let as_path = |bytes: &[u8]| PathBuf::from(OsStr::from_bytes(bytes));
    while let Some(at) = stack.pop() {
        let fail = |error| Err((error, as_path(&at)));
        let c = match CString::new(at.clone()) {
            Ok(c) => c,
            Err(_) => return fail(io::ErrorKind::InvalidInput.into()),
        };
        // `c` is a live C string.
        let error = match syscall!(mkdir(c.as_ptr(), mode as libc::mode_t)) {
            Ok(_) => {
                first.get_or_insert_with(|| as_path(&at));
                continue;
            }
            Err(error) => error,
        };
        match error.raw_os_error() {
            Some(libc::EACCES | libc::EPERM | libc::ENOTDIR) => return fail(error),
            Some(libc::ENOENT) => {
                let parent = match at.iter().rposition(|&b| b == b'/') {
                    Some(slash) => at[..slash].to_vec(),
                    None => at.clone(),
                };
                if parent == at || parent.is_empty() {
                    // Nothing above to make (Node: EEXIST when alone).
                    let error = if stack.is_empty() {
                        io::Error::from_raw_os_error(libc::EEXIST)
                    } else {
                        error
                    };
                    return fail(error);
                }
                stack.push(at);
                stack.push(parent);
            }
            _ => {
                let intermediate = !stack.is_empty();
                let exists = error.raw_os_error() == Some(libc::EEXIST);
                let is_dir = match std::fs::metadata(as_path(&at)) {
                    Ok(meta) => Ok(meta.is_dir()),
                    Err(stat_error) => Err(stat_error),
                };
                match is_dir {
                    Ok(true) => {}
                    _ if exists && intermediate => {
                        return fail(io::Error::from_raw_os_error(libc::ENOTDIR));
                    }
                    Ok(false) => return fail(io::Error::from_raw_os_error(libc::EEXIST)),
                    Err(stat_error) => return fail(stat_error),
                }
            }
        }
    }
    Ok(first)
}

fn mkdtemp(prefix: &CStr) -> io::Result<PathBuf> {
    let mut template = prefix.to_bytes().to_vec();
    template.extend_from_slice(b"XXXXXX\0");
    // SAFETY: `template` is NUL-terminated and ends in the six X mkdtemp
    // replaces in place.
    let made = unsafe { libc::mkdtemp(template.as_mut_ptr().cast()) };
    if made.is_null() {
        return Err(io::Error::last_os_error());
    }
    template.pop();
    Ok(PathBuf::from(OsStr::from_bytes(&template)))
}

/// An `rm` that failed: the error, the system call and the path its
/// message names (Node's rimraf reports the step that failed).
pub(crate) struct RmFailed {
    pub(crate) error: io::Error,
    pub(crate) syscall: &'static str,
    pub(crate) path: Option<PathBuf>,
}

fn rm_failed(error: io::Error, syscall: &'static str, path: Option<PathBuf>) -> RmFailed {
    RmFailed {
        error,
        syscall,
        path,
    }
}

/// The path of `name` in the directory whose path is `dir`, for messages.
fn child_path(dir: &Path, name: &CStr) -> PathBuf {
    let mut bytes = dir.as_os_str().as_bytes().to_vec();
    bytes.push(b'/');
    bytes.extend_from_slice(name.to_bytes());
    PathBuf::from(OsStr::from_bytes(&bytes))
}

/// The type bits of `name` under `dir`, not following a final link.
fn lstat_at(dir: RawFd, name: &CStr) -> io::Result<libc::mode_t> {
    // SAFETY: `stat` is a plain C struct; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // `name` is a live C string, `st` a record fstatat may write.
    syscall!(fstatat(
        dir,
        name.as_ptr(),
        &mut st,
        libc::AT_SYMLINK_NOFOLLOW
    ))?;
    Ok(st.st_mode & libc::S_IFMT)
}

/// Node's `fs.rm` (validateRmOptions, then lib/internal/fs/rimraf.js),
/// one step at a time as Node takes them, so results and errors agree:
///
/// - `lstat(path)` (which follows the link of `link/`): a missing path is
///   `ENOENT` naming `lstat` (nothing, with `force`), another error names
///   `lstat`; a directory without `recursive` is `EISDIR`, `rm` (which
///   `Error::fs` makes Node's `ERR_FS_EISDIR`).
/// - a file: `unlink`; a directory: `rmdir`, and when it is not empty its
///   entries one by one, then `rmdir` again. `rmdir` answering `ENOTDIR`
///   (`link/` where `link` is a symbolic link) ends it without error and
///   without removing anything, as Node's does: a remove never leaves the
///   tree it was given.
///
/// Below the top, unlike Node's path-based walk, every step is relative to
/// an open directory, and the directories are opened with `O_NOFOLLOW`: a
/// directory swapped for a symbolic link meanwhile is not followed either.
fn rm(path: &CStr, recursive: bool, force: bool) -> Result<(), RmFailed> {
    let display = || Some(super::route::path_of(path.to_owned()));
    let kind = match lstat_at(libc::AT_FDCWD, path) {
        Ok(kind) => kind,
        Err(e) if force && e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(rm_failed(e, "lstat", display())),
    };
    if kind == libc::S_IFDIR && !recursive {
        return Err(rm_failed(
            io::Error::from_raw_os_error(libc::EISDIR),
            "rm",
            display(),
        ));
    }
    let shown = super::route::path_of(path.to_owned());
    let result = remove_at(libc::AT_FDCWD, path, &shown, Some(kind), true);
    match result {
        // rimraf: "the file is already gone".
        Err(failed) if failed.error.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// rimraf's `_rimraf` for `name` under `dir` (`shown`: its path for
/// messages; `top`: the path the caller gave, which may end in `/`).
fn remove_at(
    dir: RawFd,
    name: &CStr,
    shown: &Path,
    kind: Option<libc::mode_t>,
    top: bool,
) -> Result<(), RmFailed> {
    let kind = match kind {
        Some(kind) => Ok(kind),
        None => lstat_at(dir, name),
    };
    match kind {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Ok(libc::S_IFDIR) => return rmdir_at(dir, name, shown, top, None),
        _ => {}
    }
    // `name` is a live C string.
    match syscall!(unlinkat(dir, name.as_ptr(), 0)) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EISDIR | libc::EPERM)) => {
            rmdir_at(dir, name, shown, top, Some(e))
        }
        Err(e) => Err(rm_failed(e, "unlink", Some(shown.to_path_buf()))),
    }
}

/// rimraf's `_rmdir`: `rmdir`; not empty: the entries, then `rmdir` again;
/// `ENOTDIR`: the original error, if any, else done.
fn rmdir_at(
    dir: RawFd,
    name: &CStr,
    shown: &Path,
    top: bool,
    original: Option<io::Error>,
) -> Result<(), RmFailed> {
    // `name` is a live C string.
    let e = match syscall!(unlinkat(dir, name.as_ptr(), libc::AT_REMOVEDIR)) {
        Ok(_) => return Ok(()),
        Err(e) => e,
    };
    match e.raw_os_error() {
        Some(libc::ENOENT) => Ok(()),
        Some(libc::ENOTEMPTY | libc::EEXIST | libc::EPERM) => {
            remove_children(dir, name, shown, top)?;
            // `name` is a live C string.
            syscall!(unlinkat(dir, name.as_ptr(), libc::AT_REMOVEDIR))
                .map(drop)
                .map_err(|e| rm_failed(e, "rmdir", Some(shown.to_path_buf())))
        }
        Some(libc::ENOTDIR) => match original {
            Some(original) => Err(rm_failed(original, "unlink", Some(shown.to_path_buf()))),
            None => Ok(()),
        },
        _ => Err(rm_failed(e, "rmdir", Some(shown.to_path_buf()))),
    }
}

/// An open directory stream, closed when dropped.
struct DirStream(*mut libc::DIR);

impl Drop for DirStream {
    fn drop(&mut self) {
        // SAFETY: the stream came from fdopendir and is closed only here.
        unsafe { libc::closedir(self.0) };
    }
}

/// rimraf's `_rmchildren`: every entry of the directory `name` (opened
/// without following a link), each removed as `remove_at` does; the first
/// error is reported after trying the rest, as Node's concurrent removes
/// do.
fn remove_children(dir: RawFd, name: &CStr, shown: &Path, top: bool) -> Result<(), RmFailed> {
    // The top path may end in `/`, which would follow a link whatever the
    // flags: open it without, so O_NOFOLLOW holds.
    let trimmed;
    let open_name = if top {
        let bytes = name.to_bytes();
        let end = bytes.iter().rposition(|&b| b != b'/').map_or(1, |i| i + 1);
        trimmed = CString::new(&bytes[..end]).expect("no NUL inside a C string");
        trimmed.as_c_str()
    } else {
        name
    };
    let scandir = |e| rm_failed(e, "scandir", Some(shown.to_path_buf()));
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // `open_name` is a live C string.
    let fd = syscall!(openat(dir, open_name.as_ptr(), flags)).map_err(scandir)?;
    // SAFETY: `fd` is an open directory descriptor, owned by the stream
    // from here on (closedir closes it).
    let stream = unsafe { libc::fdopendir(fd) };
    if stream.is_null() {
        let error = io::Error::last_os_error();
        // The descriptor is ours and fdopendir did not take it.
        let _ = syscall!(close(fd));
        return Err(scandir(error));
    }
    let stream = DirStream(stream);
    let mut names = Vec::new();
    loop {
        // readdir reports an error only through errno: clear it first.
        // SAFETY: errno is this thread's.
        unsafe { *errno_location() = 0 };
        #[cfg(target_os = "linux")]
        // SAFETY: `stream.0` is an open directory stream.
        let entry = unsafe { libc::readdir64(stream.0) };
        #[cfg(not(target_os = "linux"))]
        // SAFETY: `stream.0` is an open directory stream.
        let entry = unsafe { libc::readdir(stream.0) };
        if entry.is_null() {
            let error = io::Error::last_os_error();
            if error.raw_os_error().is_some_and(|n| n != 0) {
                return Err(scandir(error));
            }
            break;
        }
        // SAFETY: a non-null entry's name is a NUL-terminated string,
        // valid until the next readdir; it is copied at once.
        let entry_name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) };
        if entry_name != c"." && entry_name != c".." {
            names.push(entry_name.to_owned());
        }
    }
    // SAFETY: `stream.0` is open; its descriptor lives as long as it.
    let fd = unsafe { libc::dirfd(stream.0) };
    let mut first_error = None;
    for child in names {
        let shown = child_path(shown, &child);
        if let Err(failed) = remove_at(fd, &child, &shown, None, false)
            && first_error.is_none()
        {
            first_error = Some(failed);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// The entries, sorted by name as libuv's scandir sorts them.
fn readdir(path: &Path) -> io::Result<Vec<DirEntry>> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let file_type = entry
            .file_type()
            .map(FileType::from_std)
            .unwrap_or(FileType::Unknown);
        entries.push(DirEntry {
            name: entry.file_name(),
            file_type,
        });
    }
    entries.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    Ok(entries)
}

/// Closes `fd` when dropped (the copy's own descriptors).
struct Owned(RawFd);

impl Drop for Owned {
    fn drop(&mut self) {
        // The copy opened this descriptor and nothing else names it.
        let _ = syscall!(close(self.0));
    }
}

/// libuv's copyfile (`uv__fs_copyfile`): the destination gets the
/// source's bytes and mode; the bytes go by `copy_file_range(2)` where the
/// kernel can, else read/write. As libuv: the destination is opened
/// without truncating, and a destination that is the source itself (the
/// same path, a hard link, a symbolic link to it: same device and inode)
/// is left whole and the copy succeeds; only then is it truncated.
/// Unlike libuv, a source that is a directory fails (`EISDIR`) before the
/// destination is changed, and a failure removes a destination only if
/// this copy created it (libuv removes the destination whatever it was).
fn copy_file(from: &CStr, to: &CStr, exclusive: bool) -> io::Result<()> {
    // `from`, `to`: live C strings.
    let src = Owned(syscall!(open(
        from.as_ptr(),
        libc::O_RDONLY | libc::O_CLOEXEC
    ))?);
    let stat = fstat(src.0)?;
    let (dst, created) = open_destination(to, exclusive, stat.permissions())?;
    let result = fill_destination(&src, &dst, &stat, exclusive, created);
    drop(dst);
    if result.is_err() && created {
        // Ours, and the copy failed: leave no half file behind.
        let _ = syscall!(unlink(to.as_ptr()));
    }
    result
}

/// Opens the destination for writing, without truncating it; whether
/// this call created it.
fn open_destination(to: &CStr, exclusive: bool, mode: u32) -> io::Result<(Owned, bool)> {
    let base = libc::O_WRONLY | libc::O_CLOEXEC;
    // `to` is a live C string, in every open below.
    match syscall!(open(to.as_ptr(), base | libc::O_CREAT | libc::O_EXCL, mode)) {
        Ok(fd) => return Ok((Owned(fd), true)),
        Err(e) if exclusive || e.raw_os_error() != Some(libc::EEXIST) => return Err(e),
        Err(_) => {}
    }
    match syscall!(open(to.as_ptr(), base)) {
        Ok(fd) => Ok((Owned(fd), false)),
        // A dangling symbolic link (O_EXCL does not follow it) or a file
        // removed meanwhile: create through it, as libuv's O_CREAT does.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            syscall!(open(to.as_ptr(), base | libc::O_CREAT, mode)).map(|fd| (Owned(fd), false))
        }
        Err(e) => Err(e),
    }
}

fn fill_destination(
    src: &Owned,
    dst: &Owned,
    stat: &Stats,
    exclusive: bool,
    created: bool,
) -> io::Result<()> {
    if !exclusive && !created {
        let dst_stat = fstat(dst.0)?;
        if (dst_stat.dev, dst_stat.ino) == (stat.dev, stat.ino) {
            // The same file: nothing to copy (libuv succeeds too).
            return Ok(());
        }
    }
    if stat.is_dir() {
        return Err(io::Error::from_raw_os_error(libc::EISDIR));
    }
    if !created {
        syscall!(ftruncate(dst.0, 0))?;
    }
    syscall!(fchmod(dst.0, stat.permissions() as libc::mode_t))?;
    copy_bytes(src, dst, stat.size)
}

/// The bytes, by `copy_file_range(2)` where the kernel can (Linux,
/// FreeBSD), else a read/write loop.
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
fn copy_bytes(src: &Owned, dst: &Owned, size: u64) -> io::Result<()> {
    let mut left = size;
    while left > 0 {
        let chunk = left.min(1 << 30) as usize;
        // Null offsets: both descriptors' own positions are used.
        match syscall!(copy_file_range(
            src.0,
            std::ptr::null_mut(),
            dst.0,
            std::ptr::null_mut(),
            chunk,
            0
        )) {
            Ok(0) => return Ok(()),
            Ok(n) => left = left.saturating_sub(n as u64),
            Err(e) if copy_range_unusable(&e) => return copy_by_reads(src.0, dst.0),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The bytes by a read/write loop (no `copy_file_range` here).
#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
fn copy_bytes(src: &Owned, dst: &Owned, _size: u64) -> io::Result<()> {
    copy_by_reads(src.0, dst.0)
}

#[cfg(any(target_os = "linux", target_os = "freebsd"))]
fn copy_range_unusable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EXDEV | libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP | libc::EPERM)
    )
}

fn copy_by_reads(src: RawFd, dst: RawFd) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // `buf` has `buf.len()` writable bytes.
        let n = syscall!(read(src, buf.as_mut_ptr().cast(), buf.len()))? as usize;
        if n == 0 {
            return Ok(());
        }
        let mut done = 0;
        while done < n {
            // `buf[done..n]` is initialised.
            let w = syscall!(write(dst, buf[done..n].as_ptr().cast(), n - done))?;
            done += w as usize;
        }
    }
}
