//! The single operations, Node's `fs.open`, `fs.read`, `fs.stat` ...:
//! each builds a request, hands it to the router, and maps the result
//! (and its error, worded as Node's) for the callback.

use std::ffi::CString;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::route::{Done, Out, Req, dispatch, dispatch_on};
use super::table::{ebadf, fd_for};
use super::types::{DirEntry, File, Flags, OnClosed, Stats};
use super::{Fs, RmOptions};
use crate::event_loop::Loop;
use crate::{Error, Result};
use eventide_reactor::Token;

/// A path as the system takes it; a NUL byte inside is Node's
/// `ERR_INVALID_ARG_VALUE`, with Node's reason.
pub(crate) fn c_path(name: &'static str, path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::InvalidArgValue {
        name,
        reason: "must be a string, Uint8Array, or URL without null bytes",
        received: crate::error::inspect_str(&path.display().to_string()),
    })
}

/// Reports an error known at once, in the next pending phase.
pub(crate) fn fail_soon<T: 'static>(
    lp: &mut Loop,
    error: Error,
    callback: impl FnOnce(&mut Loop, Result<T>) + 'static,
) {
    lp.defer(move |lp| callback(lp, Err(error)));
}

fn unit(_: Out) {}

fn stats(out: Out) -> Stats {
    match out {
        Out::Stat(stats) => stats,
        other => unreachable!("a stat gives stats, not {other:?}"),
    }
}

fn path(out: Out) -> PathBuf {
    match out {
        Out::Path(path) => path,
        other => unreachable!("expected a path, got {other:?}"),
    }
}

fn maybe_path(out: Out) -> Option<PathBuf> {
    match out {
        Out::MaybePath(path) => path,
        other => unreachable!("expected an optional path, got {other:?}"),
    }
}

fn entries(out: Out) -> Vec<DirEntry> {
    match out {
        Out::Entries(entries) => entries,
        other => unreachable!("expected entries, got {other:?}"),
    }
}

fn size(out: &Out) -> usize {
    match out {
        Out::Size(n) => *n,
        other => unreachable!("expected a size, got {other:?}"),
    }
}

/// What the error of a request names: the syscall and the paths.
struct Names {
    syscall: &'static str,
    path: Option<PathBuf>,
    dest: Option<PathBuf>,
}

impl Names {
    /// The error, naming `self.path` or else the path the request handed
    /// back (`Done::path`).
    fn error(self, source: std::io::Error, handed_back: Option<PathBuf>) -> Error {
        Error::fs(self.syscall, self.path.or(handed_back), self.dest, source)
    }
}

impl Fs<'_> {
    /// Runs `req`, mapping a success with `map` and a failure to Node's
    /// error for `names`.
    fn request<T: 'static>(
        self,
        req: Req,
        names: Names,
        map: fn(Out) -> T,
        callback: impl FnOnce(&mut Loop, Result<T>) + 'static,
    ) {
        dispatch(self.lp, req, move |lp, done: Done| {
            let path = done.path;
            callback(lp, done.result.map(map).map_err(|e| names.error(e, path)));
        });
    }

    /// A request on one path (`dest`: a second one).
    fn on_path<T: 'static>(
        self,
        syscall: &'static str,
        path: &Path,
        dest: Option<&Path>,
        make: impl FnOnce(CString, CString) -> Req,
        map: fn(Out) -> T,
        callback: impl FnOnce(&mut Loop, Result<T>) + 'static,
    ) {
        let c = c_path("path", path).and_then(|p| {
            let d = match dest {
                Some(dest) => c_path("dest", dest)?,
                None => CString::default(),
            };
            Ok((p, d))
        });
        match c {
            Ok((p, d)) => {
                // The path comes back with the request (`Done::path`).
                let names = Names {
                    syscall,
                    path: None,
                    dest: dest.map(Path::to_path_buf),
                };
                self.request(make(p, d), names, map, callback);
            }
            Err(error) => fail_soon(self.lp, error, callback),
        }
    }

    /// A request on an open file; a close of the file waits for it while
    /// it is on the pool. A closed file (or one of another loop) is
    /// Node's `EBADF`, without a system call.
    fn on_file<T: 'static>(
        self,
        syscall: &'static str,
        file: File,
        make: impl FnOnce(RawFd) -> Req,
        map: fn(Out) -> T,
        callback: impl FnOnce(&mut Loop, Result<T>) + 'static,
    ) {
        let fd = match fd_for(&self.lp.io.fs, file, syscall) {
            Ok(fd) => fd,
            Err(error) => return fail_soon(self.lp, error, callback),
        };
        dispatch_on(self.lp, make(fd), Some(file), move |lp, done: Done| {
            let result = done.result.map(map);
            callback(lp, result.map_err(|e| Error::fs(syscall, None, None, e)));
        });
    }

    /// Opens `path` (Node's `fs.open`). `mode` applies when the file is
    /// created (Node's default is `0o666`, less the umask).
    ///
    /// ```no_run
    /// use eventide::fs::Flags;
    /// let mut lp = eventide::Loop::new()?;
    /// lp.fs().open("missing.txt", Flags::parse("r")?, 0o666, |_, res| {
    ///     let err = res.unwrap_err();
    ///     assert_eq!(err.to_string(), "ENOENT: no such file or directory, open 'missing.txt'");
    ///     assert_eq!(err.code(), Some("ENOENT"));
    /// });
    /// lp.run()?;
    /// # Ok::<(), eventide::Error>(())
    /// ```
    pub fn open(
        self,
        path: impl AsRef<Path>,
        flags: Flags,
        mode: u32,
        callback: impl FnOnce(&mut Loop, Result<File>) + 'static,
    ) {
        let path = path.as_ref();
        let c = match c_path("path", path) {
            Ok(c) => c,
            Err(error) => return fail_soon(self.lp, error, callback),
        };
        let req = Req::Open {
            path: c,
            flags: flags.bits(),
            mode,
        };
        dispatch(self.lp, req, move |lp, done: Done| {
            let result = match done.result {
                Ok(Out::Fd(fd)) => Ok(lp.io.fs.insert_file(fd)),
                Ok(other) => unreachable!("open gives a descriptor, not {other:?}"),
                Err(e) => Err(Error::fs("open", done.path, None, e)),
            };
            callback(lp, result);
        });
    }

    /// Closes `file` (Node's `fs.close`): the key is stale from now on.
    /// Closing one already closed (or a key of another loop) is `EBADF`,
    /// without a system call.
    pub fn close(self, file: File, callback: impl FnOnce(&mut Loop, Result<()>) + 'static) {
        // Pool operations on the descriptor still queued or running: the
        // close waits for the last (its number must not be reused under
        // them). Later operations on `file` see it closed already.
        match self.lp.io.fs.take_for_close(file, Box::new(callback)) {
            Ok((fd, callback)) => self.close_fd(fd, callback),
            Err(Some(callback)) => fail_soon(self.lp, ebadf("close"), callback),
            Err(None) => {}
        }
    }

    /// Closes the descriptor `fd` now (taken out of its `File` already).
    pub(crate) fn close_fd(self, fd: RawFd, callback: OnClosed) {
        let names = Names {
            syscall: "close",
            path: None,
            dest: None,
        };
        self.request(Req::Close { fd }, names, unit, callback);
    }

    /// Reads into the spare capacity of `buf` (`buf.len()..buf.capacity()`),
    /// which grows by the bytes read (Node's `fs.read`). `position`: the
    /// file offset, or `None` for the file's current position, which the
    /// read then advances (`read(2)`, as libuv does for `position` null; on
    /// io_uring offset -1, the same thing). 0 bytes read is the end of the
    /// file. The buffer comes back, on error too, so a caller can reuse it.
    pub fn read(
        self,
        file: File,
        buf: Vec<u8>,
        position: Option<u64>,
        callback: impl FnOnce(&mut Loop, Result<usize>, Vec<u8>) + 'static,
    ) {
        self.transfer(false, file, buf, position, callback);
    }

    /// [`Fs::read`], or [`Fs::write`] when `write`, returning the reactor
    /// token when it runs on the ring (for a stream's `destroy`, which
    /// cancels it).
    pub(crate) fn transfer(
        self,
        write: bool,
        file: File,
        buf: Vec<u8>,
        pos: Option<u64>,
        callback: impl FnOnce(&mut Loop, Result<usize>, Vec<u8>) + 'static,
    ) -> Option<Token> {
        let syscall = if write { "write" } else { "read" };
        let fd = match fd_for(&self.lp.io.fs, file, syscall) {
            Ok(fd) => fd,
            Err(error) => {
                self.lp.defer(move |lp| callback(lp, Err(error), buf));
                return None;
            }
        };
        let req = if write {
            Req::Write { fd, buf, pos }
        } else {
            Req::Read { fd, buf, pos }
        };
        self.buffered(syscall, file, req, callback)
    }

    /// Writes `buf` at `position` (`None`: the current position, which
    /// advances; a file opened for appending always writes at its end), in
    /// one system call (Node's `fs.write`): the count may be short, the
    /// rest is the caller's. The buffer comes back, on error too.
    pub fn write(
        self,
        file: File,
        buf: Vec<u8>,
        position: Option<u64>,
        callback: impl FnOnce(&mut Loop, Result<usize>, Vec<u8>) + 'static,
    ) {
        self.transfer(true, file, buf, position, callback);
    }

    fn buffered(
        self,
        syscall: &'static str,
        file: File,
        req: Req,
        callback: impl FnOnce(&mut Loop, Result<usize>, Vec<u8>) + 'static,
    ) -> Option<Token> {
        dispatch_on(self.lp, req, Some(file), move |lp, done: Done| {
            let result = match done.result {
                Ok(out) => Ok(size(&out)),
                Err(e) => Err(Error::fs(syscall, None, None, e)),
            };
            callback(lp, result, done.buf);
        })
    }

    /// Metadata of `path`, following symbolic links (Node's `fs.stat`).
    pub fn stat(
        self,
        path: impl AsRef<Path>,
        callback: impl FnOnce(&mut Loop, Result<Stats>) + 'static,
    ) {
        let make = |path, _| Req::Stat { path, follow: true };
        self.on_path("stat", path.as_ref(), None, make, stats, callback);
    }

    /// Metadata of `path` itself, a symbolic link not followed (Node's
    /// `fs.lstat`).
    pub fn lstat(
        self,
        path: impl AsRef<Path>,
        callback: impl FnOnce(&mut Loop, Result<Stats>) + 'static,
    ) {
        let make = |path, _| Req::Stat {
            path,
            follow: false,
        };
        self.on_path("lstat", path.as_ref(), None, make, stats, callback);
    }

    /// Metadata of an open file (Node's `fs.fstat`).
    pub fn fstat(self, file: File, callback: impl FnOnce(&mut Loop, Result<Stats>) + 'static) {
        let make = |fd| Req::Fstat { fd };
        self.on_file("fstat", file, make, stats, callback);
    }

    /// Flushes the file's data and metadata to the device (Node's `fs.fsync`).
    pub fn fsync(self, file: File, callback: impl FnOnce(&mut Loop, Result<()>) + 'static) {
        let make = |fd| Req::Fsync {
            fd,
            data_only: false,
        };
        self.on_file("fsync", file, make, unit, callback);
    }

    /// Flushes the file's data (Node's `fs.fdatasync`).
    pub fn fdatasync(self, file: File, callback: impl FnOnce(&mut Loop, Result<()>) + 'static) {
        let make = |fd| Req::Fsync {
            fd,
            data_only: true,
        };
        self.on_file("fdatasync", file, make, unit, callback);
    }

    /// Sets the file's length (Node's `fs.ftruncate`).
    pub fn ftruncate(
        self,
        file: File,
        len: u64,
        callback: impl FnOnce(&mut Loop, Result<()>) + 'static,
    ) {
        let make = |fd| Req::Ftruncate { fd, len };
        self.on_file("ftruncate", file, make, unit, callback);
    }

    /// Sets the length of the file at `path` (Node's `fs.truncate`; its
    /// errors name `open`, as Node's do, which opens the file first).
    pub fn truncate(
        self,
        path: impl AsRef<Path>,
        len: u64,
        callback: impl FnOnce(&mut Loop, Result<()>) + 'static,
    ) {
        let make = |path, _| Req::Truncate { path, len };
        self.on_path("open", path.as_ref(), None, make, unit, callback);
    }

    /// Renames `from` to `to`, replacing a file there (Node's `fs.rename`).
    pub fn rename(
        self,
        from: impl AsRef<Path>,
        to: impl AsRef<Path>,
        callback: impl FnOnce(&mut Loop, Result<()>) + 'static,
    ) {
        let make = |from, to| Req::Rename { from, to };
        let (from, to) = (from.as_ref(), to.as_ref());
        self.on_path("rename", from, Some(to), make, unit, callback);
    }

    /// Removes a file or symbolic link (Node's `fs.unlink`).
    pub fn unlink(
        self,
        path: impl AsRef<Path>,
        callback: impl FnOnce(&mut Loop, Result<()>) + 'static,
    ) {
        let make = |path, _| Req::Unlink { path };
        self.on_path("unlink", path.as_ref(), None, make, unit, callback);
    }

    /// Makes a directory (Node's `fs.mkdir`; `mode` is Node's default
    /// `0o777` less the umask). For `recursive: true` see
    /// [`Fs::mkdir_recursive`].
    pub fn mkdir(
        self,
        path: impl AsRef<Path>,
        mode: u32,
        callback: impl FnOnce(&mut Loop, Result<()>) + 'static,
    ) {
        let make = |path, _| Req::Mkdir { path, mode };
        self.on_path("mkdir", path.as_ref(), None, make, unit, callback);
    }

    /// Makes a directory and its missing parents (Node's `fs.mkdir` with
    /// `recursive: true`): the first directory made, or `None` when it
    /// already existed. Runs on the pool as one job.
    pub fn mkdir_recursive(
        self,
        path: impl AsRef<Path>,
        mode: u32,
        callback: impl FnOnce(&mut Loop, Result<Option<PathBuf>>) + 'static,
    ) {
        let owned = path.as_ref().to_path_buf();
        let make = move |_, _| Req::MkdirAll { path: owned, mode };
        self.on_path("mkdir", path.as_ref(), None, make, maybe_path, callback);
    }

    /// Makes a new directory named `prefix` plus six random characters
    /// (Node's `fs.mkdtemp`); the callback gets its path.
    pub fn mkdtemp(
        self,
        prefix: impl AsRef<Path>,
        callback: impl FnOnce(&mut Loop, Result<PathBuf>) + 'static,
    ) {
        let template = prefix.as_ref().as_os_str().to_owned();
        let mut template = PathBuf::from(template);
        template.as_mut_os_string().push("XXXXXX");
        let names = |p: &Path| Names {
            syscall: "mkdtemp",
            path: Some(p.to_path_buf()),
            dest: None,
        };
        match c_path("prefix", prefix.as_ref()) {
            Ok(prefix) => {
                let req = Req::Mkdtemp { prefix };
                self.request(req, names(&template), path, callback);
            }
            Err(error) => fail_soon(self.lp, error, callback),
        }
    }

    /// Removes an empty directory (Node's `fs.rmdir`).
    pub fn rmdir(
        self,
        path: impl AsRef<Path>,
        callback: impl FnOnce(&mut Loop, Result<()>) + 'static,
    ) {
        let make = |path, _| Req::Rmdir { path };
        self.on_path("rmdir", path.as_ref(), None, make, unit, callback);
    }

    /// Removes a file, or a directory tree with `recursive` (Node's
    /// `fs.rm`). Without `force` a missing path is an error (named `lstat`,
    /// as Node's is); a directory without `recursive` is Node's
    /// `ERR_FS_EISDIR` (`Path is a directory: rm returned EISDIR (is a
    /// directory) p`, errno `EISDIR`). Errors name the step that failed, as Node's do (`unlink`, `rmdir`,
    /// `scandir`, with the path of the entry). A symbolic link is removed,
    /// never followed; `link/` (a link to a directory, with the slash)
    /// removes nothing and succeeds, as in Node. Runs on the pool as one
    /// job.
    pub fn rm(
        self,
        path: impl AsRef<Path>,
        options: RmOptions,
        callback: impl FnOnce(&mut Loop, Result<()>) + 'static,
    ) {
        let path = match c_path("path", path.as_ref()) {
            Ok(path) => path,
            Err(error) => return fail_soon(self.lp, error, callback),
        };
        let req = Req::Rm {
            path,
            recursive: options.recursive,
            force: options.force,
        };
        dispatch(self.lp, req, move |lp, done: Done| {
            let (path, syscall) = (done.path, done.step);
            let result = done.result.map(unit);
            callback(lp, result.map_err(|e| Error::fs(syscall, path, None, e)));
        });
    }

    /// The entries of a directory, with their types, sorted by name, `.`
    /// and `..` left out (Node's `fs.readdir` with `withFileTypes`; its
    /// errors name `scandir`, as Node's do).
    pub fn readdir(
        self,
        path: impl AsRef<Path>,
        callback: impl FnOnce(&mut Loop, Result<Vec<DirEntry>>) + 'static,
    ) {
        let owned = path.as_ref().to_path_buf();
        let make = move |_, _| Req::Readdir { path: owned };
        self.on_path("scandir", path.as_ref(), None, make, entries, callback);
    }

    /// Makes `path` a symbolic link to `target` (Node's
    /// `fs.symlink(target, path)`).
    pub fn symlink(
        self,
        target: impl AsRef<Path>,
        path: impl AsRef<Path>,
        callback: impl FnOnce(&mut Loop, Result<()>) + 'static,
    ) {
        let make = |target, path| Req::Symlink { target, path };
        let (target, path) = (target.as_ref(), path.as_ref());
        self.on_path("symlink", target, Some(path), make, unit, callback);
    }

    /// What the symbolic link at `path` points to (Node's `fs.readlink`).
    pub fn readlink(
        self,
        path: impl AsRef<Path>,
        callback: impl FnOnce(&mut Loop, Result<PathBuf>) + 'static,
    ) {
        let owned = path.as_ref().to_path_buf();
        let make = move |_, _| Req::Readlink { path: owned };
        self.on_path("readlink", path.as_ref(), None, make, self::path, callback);
    }

    /// The canonical absolute path (Node's `fs.realpath.native`).
    pub fn realpath(
        self,
        path: impl AsRef<Path>,
        callback: impl FnOnce(&mut Loop, Result<PathBuf>) + 'static,
    ) {
        let owned = path.as_ref().to_path_buf();
        let make = move |_, _| Req::Realpath { path: owned };
        self.on_path("realpath", path.as_ref(), None, make, self::path, callback);
    }

    /// Makes `new` a hard link to `existing` (Node's `fs.link`).
    pub fn link(
        self,
        existing: impl AsRef<Path>,
        new: impl AsRef<Path>,
        callback: impl FnOnce(&mut Loop, Result<()>) + 'static,
    ) {
        let make = |from, to| Req::Link { from, to };
        let (existing, new) = (existing.as_ref(), new.as_ref());
        self.on_path("link", existing, Some(new), make, unit, callback);
    }

    /// Changes the permission bits (Node's `fs.chmod`).
    pub fn chmod(
        self,
        path: impl AsRef<Path>,
        mode: u32,
        callback: impl FnOnce(&mut Loop, Result<()>) + 'static,
    ) {
        let make = |path, _| Req::Chmod { path, mode };
        self.on_path("chmod", path.as_ref(), None, make, unit, callback);
    }

    /// Changes an open file's permission bits (Node's `fs.fchmod`).
    pub fn fchmod(
        self,
        file: File,
        mode: u32,
        callback: impl FnOnce(&mut Loop, Result<()>) + 'static,
    ) {
        let make = |fd| Req::Fchmod { fd, mode };
        self.on_file("fchmod", file, make, unit, callback);
    }

    /// Changes owner and group, following symbolic links (Node's `fs.chown`).
    pub fn chown(
        self,
        path: impl AsRef<Path>,
        uid: u32,
        gid: u32,
        callback: impl FnOnce(&mut Loop, Result<()>) + 'static,
    ) {
        let make = |path, _| Req::Chown {
            path,
            uid,
            gid,
            follow: true,
        };
        self.on_path("chown", path.as_ref(), None, make, unit, callback);
    }

    /// Changes owner and group of a symbolic link itself (Node's `fs.lchown`).
    pub fn lchown(
        self,
        path: impl AsRef<Path>,
        uid: u32,
        gid: u32,
        callback: impl FnOnce(&mut Loop, Result<()>) + 'static,
    ) {
        let make = |path, _| Req::Chown {
            path,
            uid,
            gid,
            follow: false,
        };
        self.on_path("lchown", path.as_ref(), None, make, unit, callback);
    }

    /// Changes an open file's owner and group (Node's `fs.fchown`).
    pub fn fchown(
        self,
        file: File,
        uid: u32,
        gid: u32,
        callback: impl FnOnce(&mut Loop, Result<()>) + 'static,
    ) {
        let make = |fd| Req::Fchown { fd, uid, gid };
        self.on_file("fchown", file, make, unit, callback);
    }

    /// Sets access and modification times (Node's `fs.utimes`; its errors
    /// name `utime`, as Node's do).
    pub fn utimes(
        self,
        path: impl AsRef<Path>,
        atime: SystemTime,
        mtime: SystemTime,
        callback: impl FnOnce(&mut Loop, Result<()>) + 'static,
    ) {
        let make = |path, _| Req::Utimes { path, atime, mtime };
        self.on_path("utime", path.as_ref(), None, make, unit, callback);
    }

    /// Sets an open file's times (Node's `fs.futimes`; errors name `futime`).
    pub fn futimes(
        self,
        file: File,
        atime: SystemTime,
        mtime: SystemTime,
        callback: impl FnOnce(&mut Loop, Result<()>) + 'static,
    ) {
        let make = |fd| Req::Futimes { fd, atime, mtime };
        self.on_file("futime", file, make, unit, callback);
    }

    /// Checks that the file exists and the process may access it as
    /// `mode` says ([`F_OK`](super::F_OK) or a union of
    /// [`R_OK`](super::R_OK), [`W_OK`](super::W_OK), [`X_OK`](super::X_OK))
    /// (Node's `fs.access`).
    pub fn access(
        self,
        path: impl AsRef<Path>,
        mode: i32,
        callback: impl FnOnce(&mut Loop, Result<()>) + 'static,
    ) {
        let make = |path, _| Req::Access { path, mode };
        self.on_path("access", path.as_ref(), None, make, unit, callback);
    }

    /// Whether `path` exists (Node's `fs.exists`: never an error; a path
    /// that cannot be checked, or with a NUL byte, is `false`).
    pub fn exists(self, path: impl AsRef<Path>, callback: impl FnOnce(&mut Loop, bool) + 'static) {
        self.access(path, super::F_OK, move |lp, result| {
            callback(lp, result.is_ok());
        });
    }

    /// Copies the contents and permission bits of `src` to `dest`,
    /// replacing it unless `mode` has [`COPYFILE_EXCL`](super::COPYFILE_EXCL)
    /// (Node's `fs.copyFile`). Uses `copy_file_range(2)` where the kernel
    /// can (same file system, or a kernel that copies across), else reads
    /// and writes. Runs on the pool as one job.
    pub fn copy_file(
        self,
        src: impl AsRef<Path>,
        dest: impl AsRef<Path>,
        mode: u32,
        callback: impl FnOnce(&mut Loop, Result<()>) + 'static,
    ) {
        let exclusive = mode & super::COPYFILE_EXCL != 0;
        let make = |from, to| Req::CopyFile {
            from,
            to,
            exclusive,
        };
        let (src, dest) = (src.as_ref(), dest.as_ref());
        self.on_path("copyfile", src, Some(dest), make, unit, callback);
    }
}
