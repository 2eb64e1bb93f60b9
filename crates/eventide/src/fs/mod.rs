//! The file system: Node's `fs` callback API on the loop.
//!
//! Every operation is a method of [`Fs`], reached through [`Loop::fs`],
//! named as Node names it, and calls back on the loop with
//! `(&mut Loop, Result<T>)` (reads and writes also hand their buffer back):
//!
//! ```
//! use eventide::fs::Flags;
//! let dir = std::env::temp_dir();
//! let path = dir.join(format!("eventide-doc-{}.txt", std::process::id()));
//! let mut lp = eventide::Loop::new()?;
//! let p = path.clone();
//! lp.fs().write_file(&path, b"hello".to_vec(), move |lp, res| {
//!     res.unwrap();
//!     lp.fs().read_file(p.clone(), move |lp, res| {
//!         assert_eq!(res.unwrap(), b"hello");
//!         lp.fs().unlink(&p, |_, res| res.unwrap());
//!     });
//! });
//! lp.run()?;
//! # Ok::<(), eventide::Error>(())
//! ```
//!
//! # Where the work happens
//!
//! On the io_uring backend the kernel performs the operations the reactor
//! has (open, close, read, write, stat, lstat, fstat, fsync, fdatasync,
//! unlink, rmdir, rename, mkdir, and `read_file`'s open, reads and close
//! as one operation); everything else, and everything on the polling
//! backend, runs on the blocking pool, as in libuv. One module decides
//! (`route.rs`), from the set the reactor runs natively
//! ([`Fs::native_ops`]: the kernel's probe, narrowed by the
//! `EVENTIDE_URING_FILE_OPS` variable for testing and diagnosis);
//! [`stats`] counts where operations went, and the first decision of each
//! kind is logged with `log::debug!`. Results and errors are the same on
//! both routes: the pool makes the same system calls (statx for stat, with
//! the same mask), and an operation the running kernel's io_uring answers
//! with `EINVAL` is retried on the pool, then kept there.
//!
//! # Errors
//!
//! Failures are [`Error::Fs`](crate::Error::Fs), displayed as Node's:
//! `ENOENT: no such file or directory, open 'missing.txt'`. Match on
//! [`Error::code`](crate::Error::code) (`Some("ENOENT")`, as Node's
//! `err.code`) or [`Error::kind`](crate::Error::kind). Errors known at once
//! (an invalid flag string, a path with a NUL byte, closing a closed file)
//! are reported in the next pending phase: no callback ever runs inside
//! the call that asked for it.
//!
//! # Files
//!
//! [`File`] is the descriptor as a small `Copy` key into the loop's
//! table of open files, the model of every eventide handle: operations
//! take it by value, `lp.fs().read(file, buf, None, cb)`, as Node's
//! `fs.read(fd, ...)` takes its number (every fs operation, on a path or
//! a descriptor, is a method of [`Fs`]); queries take the loop,
//! `file.fd(&lp)`. [`Fs::close`] makes the key stale: an operation with
//! it then fails with `EBADF`, worded as Node's (`EBADF: bad file
//! descriptor, read`), without a system call, and never reaches a file
//! opened since, whatever slot it took; a key of another loop is `EBADF`
//! too. A file never closed stays open until its loop is dropped.
//! [`ReadStream`] and [`WriteStream`] are keys too, with their own
//! methods taking the loop (`ws.write(lp, data)`), as net's streams. As in
//! Node, closing a file while operations on it are in flight is the
//! caller's mistake, but it never reaches another file: the descriptor
//! itself is closed only once the pool operations on it have ended (its
//! number cannot be reused under them), and on io_uring the close cancels
//! the ring's operations on it first.

mod convenience;
pub(crate) mod error;
mod ops;
mod route;
mod stream;
mod sys;
mod table;
mod types;
mod watch;
mod watch_file;

pub use eventide_reactor::FileOps;
pub use route::{FsStats, stats};
pub use stream::{ReadStream, ReadStreamOptions, WriteStream, WriteStreamOptions};
pub use types::{DirEntry, File, FileType, Flags, Stats};
pub use watch::{FsWatcher, WatchEventType, WatchOptions};
pub use watch_file::{DEFAULT_INTERVAL, StatListener, StatWatcher, WatchFileOptions, zeroed_stats};

pub(crate) use table::Table;
pub(crate) use watch::Watches;

use crate::event_loop::Loop;

/// [`Fs::access`]: the file exists.
pub const F_OK: i32 = libc::F_OK;
/// [`Fs::access`]: the process may read it.
pub const R_OK: i32 = libc::R_OK;
/// [`Fs::access`]: the process may write it.
pub const W_OK: i32 = libc::W_OK;
/// [`Fs::access`]: the process may execute it (search, for a directory).
pub const X_OK: i32 = libc::X_OK;
/// [`Fs::copy_file`]: fail with `EEXIST` if the destination exists.
pub const COPYFILE_EXCL: u32 = 1;

/// The file system operations of one loop: `lp.fs().open(...)`. See the
/// [module documentation](self). It does nothing until one of its
/// methods is called.
#[derive(Debug)]
#[must_use = "`lp.fs()` does nothing until one of its operations is called"]
pub struct Fs<'a> {
    pub(crate) lp: &'a mut Loop,
}

/// Options of [`Fs::rm`] (Node's `fs.rm` options):
/// `RmOptions::new().recursive(true).force(true)`. New options may be
/// added (it is `#[non_exhaustive]`): build it from `new()` (or
/// `default()`, the same) with the setters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
#[must_use = "options do nothing until given to `rm`"]
pub struct RmOptions {
    /// Remove directories and their contents.
    pub recursive: bool,
    /// A missing path is not an error.
    pub force: bool,
}

impl RmOptions {
    /// Node's defaults: neither recursive nor forced.
    pub const fn new() -> RmOptions {
        RmOptions {
            recursive: false,
            force: false,
        }
    }

    /// Sets [`RmOptions::recursive`].
    pub const fn recursive(mut self, recursive: bool) -> RmOptions {
        self.recursive = recursive;
        self
    }

    /// Sets [`RmOptions::force`].
    pub const fn force(mut self, force: bool) -> RmOptions {
        self.force = force;
        self
    }
}

impl Fs<'_> {
    /// The io_uring file operations this loop runs natively (what the
    /// kernel's probe reported, less what `EVENTIDE_URING_FILE_OPS`
    /// takes away, a variable for testing and diagnosis); empty on the
    /// polling backend. An operation needing one outside it runs on the
    /// pool (see [`stats`]).
    pub fn native_ops(&self) -> FileOps {
        self.lp.reactor.file_ops()
    }
}

impl Loop {
    /// The file system operations ([`crate::fs`]), on this loop.
    pub fn fs(&mut self) -> Fs<'_> {
        Fs { lp: self }
    }
}
