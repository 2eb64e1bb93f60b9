//! The pool's side: every file request as blocking system calls, through
//! one funnel ([`syscall!`]). Runs on a pool thread (except `close_now`).

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

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
            statx(libc::AT_FDCWD, path, flags)
        }
        Req::Fstat { fd } => statx(*fd, c"", libc::AT_EMPTY_PATH),
        Req::Fsync { fd, data_only } => match *data_only {
            true => unit(syscall!(fdatasync(*fd))),
            false => unit(syscall!(fsync(*fd))),
        },
        // `path`, `from`, `to`, `target`: live C strings, in every arm below.
        Req::Unlink { path } => unit(syscall!(unlink(path.as_ptr()))),
        Req::Rmdir { path } => unit(syscall!(rmdir(path.as_ptr()))),
        Req::Rename { from, to } => unit(syscall!(rename(from.as_ptr(), to.as_ptr()))),
        Req::Mkdir { path, mode } => unit(syscall!(mkdir(path.as_ptr(), *mode))),
        Req::MkdirAll { path, mode } => mkdir_all(path, *mode).map(Out::MaybePath),
        Req::Mkdtemp { prefix } => mkdtemp(prefix).map(Out::Path),
        Req::Rm {
            path,
            recursive,
            force,
        } => unit(rm(path, *recursive, *force)),
        Req::Readdir { path } => readdir(path).map(Out::Entries),
        Req::Ftruncate { fd, len } => unit(syscall!(ftruncate(*fd, *len as libc::off_t))),
        Req::Truncate { path, len } => unit(syscall!(truncate(path.as_ptr(), *len as libc::off_t))),
        Req::Symlink { target, path } => unit(syscall!(symlink(target.as_ptr(), path.as_ptr()))),
        Req::Readlink { path } => std::fs::read_link(path).map(Out::Path),
        Req::Realpath { path } => std::fs::canonicalize(path).map(Out::Path),
        Req::Link { from, to } => unit(syscall!(link(from.as_ptr(), to.as_ptr()))),
        Req::Chmod { path, mode } => unit(syscall!(chmod(path.as_ptr(), *mode))),
        Req::Fchmod { fd, mode } => unit(syscall!(fchmod(*fd, *mode))),
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
        Req::Read { .. } | Req::Write { .. } | Req::ReadFile { .. } => {
            unreachable!("buffered requests go to run")
        }
    }
}

fn statx(dir: RawFd, path: &CStr, flags: i32) -> io::Result<Out> {
    // SAFETY: `statx` is a plain C struct of integers; all-zero is valid.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // `path` is a live C string and `st` a record statx may write. The
    // mask is the reactor's (basic stats), so both routes agree.
    syscall!(statx(
        dir,
        path.as_ptr(),
        flags,
        libc::STATX_BASIC_STATS,
        &mut st
    ))?;
    Ok(Out::Stat(Stats::from_statx(&st)))
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

/// `mkdir -p`; the first directory it made, as Node's recursive mkdir
/// returns (`None` when all existed).
fn mkdir_all(path: &Path, mode: u32) -> io::Result<Option<PathBuf>> {
    let mut missing = Vec::new();
    let mut at = path;
    loop {
        match std::fs::metadata(at) {
            Ok(meta) if meta.is_dir() => break,
            Ok(_) => return Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(at),
            Err(e) => return Err(e),
        }
        match at.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => at = parent,
            _ => break,
        }
    }
    let first = missing.last().map(|p| p.to_path_buf());
    for dir in missing.iter().rev() {
        let c = cstring(dir)?;
        match syscall!(mkdir(c.as_ptr(), mode)) {
            Ok(_) => {}
            // Made by someone else meanwhile: fine, if it is a directory.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) && dir.is_dir() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(first)
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::ErrorKind::InvalidInput.into())
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

fn rm(path: &Path, recursive: bool, force: bool) -> io::Result<()> {
    let result = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() && !recursive => Err(io::Error::from_raw_os_error(libc::EISDIR)),
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if force && e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
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

/// libuv's copyfile: the destination gets the source's mode, the bytes go
/// by `copy_file_range(2)` where the kernel can, else read/write.
fn copy_file(from: &CStr, to: &CStr, exclusive: bool) -> io::Result<()> {
    // `from`, `to`: live C strings.
    let src = Owned(syscall!(open(
        from.as_ptr(),
        libc::O_RDONLY | libc::O_CLOEXEC
    ))?);
    let Out::Stat(stat) = statx(src.0, c"", libc::AT_EMPTY_PATH)? else {
        unreachable!("statx gives a Stat")
    };
    let mut flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC;
    if exclusive {
        flags |= libc::O_EXCL;
    }
    let dst = Owned(syscall!(open(to.as_ptr(), flags, stat.permissions()))?);
    syscall!(fchmod(dst.0, stat.permissions()))?;
    let mut left = stat.size;
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
