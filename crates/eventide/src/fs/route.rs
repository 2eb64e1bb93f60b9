//! The one place that decides where a file operation runs: io_uring
//! (the reactor's file ops) or the blocking pool, as libuv does.
//!
//! The rule, per operation ([`dispatch`]):
//!
//! - **io_uring backend, and the reactor runs the operations it needs**
//!   ([`Kind::needs`] within `Reactor::file_ops`: open, close, read,
//!   write, stat/lstat/fstat via statx, fsync/fdatasync, unlink, rmdir,
//!   rename, mkdir, and read_file as one open+read+close operation), and
//!   the kind was not switched to the pool (below): submitted to the ring.
//! - **otherwise** (polling backend; an operation the reactor lacks; one
//!   the running kernel's probe says it lacks, or `EVENTIDE_URING_FILE_OPS`
//!   took away; one the kernel answered `EINVAL`): the pool runs the same
//!   system call through [`sys::run`](super::sys::run).
//!
//! A kernel that lacks an opcode its probe did not report (or, for reads
//! and writes at the current position, `IORING_FEAT_RW_CUR_POS`) answers
//! `EINVAL`. Until an operation kind has once succeeded on the ring, its
//! request is kept so that an `EINVAL` can be retried on the pool: if the
//! pool succeeds, the kind is switched to the pool for good on this thread
//! (logged once at `warn`, counted as a fallback); if the pool fails too,
//! its error is the answer and nothing is switched. So the user never sees
//! a difference in results between the routes.
//!
//! Every decision is counted per thread ([`stats`]) and the first one of
//! each kind and route is logged with `log::debug!`, with the reason.

use std::cell::Cell;
use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::time::SystemTime;

use eventide_reactor::{BackendKind, Completion, FileOps, Op, ReadFileStep, Token};

use super::sys;
use super::types::{DirEntry, File, Stats};
use crate::event_loop::Loop;

/// One file system request, owning what it needs (paths, buffers), so it
/// can go to the ring or to a pool thread alike.
#[derive(Debug)]
pub(crate) enum Req {
    Open {
        path: CString,
        flags: i32,
        mode: u32,
    },
    Close {
        fd: RawFd,
    },
    Read {
        fd: RawFd,
        buf: Vec<u8>,
        pos: Option<u64>,
    },
    Write {
        fd: RawFd,
        buf: Vec<u8>,
        pos: Option<u64>,
    },
    Stat {
        path: CString,
        follow: bool,
    },
    Fstat {
        fd: RawFd,
    },
    Fsync {
        fd: RawFd,
        data_only: bool,
    },
    Unlink {
        path: CString,
    },
    Rmdir {
        path: CString,
    },
    Rename {
        from: CString,
        to: CString,
    },
    Mkdir {
        path: CString,
        mode: u32,
    },
    MkdirAll {
        path: PathBuf,
        mode: u32,
    },
    Mkdtemp {
        prefix: CString,
    },
    Rm {
        path: CString,
        recursive: bool,
        force: bool,
    },
    Readdir {
        path: PathBuf,
    },
    Ftruncate {
        fd: RawFd,
        len: u64,
    },
    Truncate {
        path: CString,
        len: u64,
    },
    Symlink {
        target: CString,
        path: CString,
    },
    Readlink {
        path: PathBuf,
    },
    Realpath {
        path: PathBuf,
    },
    Link {
        from: CString,
        to: CString,
    },
    Chmod {
        path: CString,
        mode: u32,
    },
    Fchmod {
        fd: RawFd,
        mode: u32,
    },
    Chown {
        path: CString,
        uid: u32,
        gid: u32,
        follow: bool,
    },
    Fchown {
        fd: RawFd,
        uid: u32,
        gid: u32,
    },
    Utimes {
        path: CString,
        atime: SystemTime,
        mtime: SystemTime,
    },
    Futimes {
        fd: RawFd,
        atime: SystemTime,
        mtime: SystemTime,
    },
    Access {
        path: CString,
        mode: i32,
    },
    CopyFile {
        from: CString,
        to: CString,
        exclusive: bool,
    },
    /// A whole file: open, read until the end (or until `buf` is full,
    /// on io_uring, which then hands the descriptor back), close.
    ReadFile {
        path: CString,
        buf: Vec<u8>,
    },
}

/// What a request produced.
#[derive(Debug)]
pub(crate) enum Out {
    Unit,
    Fd(RawFd),
    Size(usize),
    Stat(Stats),
    Path(PathBuf),
    MaybePath(Option<PathBuf>),
    Entries(Vec<DirEntry>),
    /// A read_file's bytes are in the buffer; `Some(fd)`: the file goes on
    /// and is still open at its position (read on, then close it).
    Whole(Option<RawFd>),
}

/// A finished request: its result, and the buffer it was given (empty for
/// requests without one), also on error.
#[derive(Debug)]
pub(crate) struct Done {
    pub(crate) result: io::Result<Out>,
    pub(crate) buf: Vec<u8>,
    /// For a read_file error: the step that failed (`open`, `read`,
    /// `close`), as Node's error names it; for rm, the system call that
    /// failed (`lstat`, `unlink`, `rmdir`, `scandir`, `rm`).
    pub(crate) step: &'static str,
    /// The path the request's error names first, handed back by either
    /// route (see [`Req::into_path`]), so that no caller keeps a copy.
    pub(crate) path: Option<PathBuf>,
}

impl Done {
    pub(crate) fn new(result: io::Result<Out>, buf: Vec<u8>) -> Done {
        Done {
            result,
            buf,
            step: "open",
            path: None,
        }
    }
}

/// Operation kinds, for routing and counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Open,
    Close,
    Read,
    Write,
    Stat,
    Fstat,
    Fsync,
    Unlink,
    Rmdir,
    Rename,
    Mkdir,
    ReadFile,
    Other,
}

impl Kind {
    /// The reactor's file operations this kind needs on io_uring (none
    /// for the kinds it does not have).
    fn needs(self) -> FileOps {
        match self {
            Kind::Open => FileOps::OPENAT,
            Kind::Close => FileOps::CLOSE,
            Kind::Read => FileOps::READ,
            Kind::Write => FileOps::WRITE,
            Kind::Stat | Kind::Fstat => FileOps::STATX,
            Kind::Fsync => FileOps::FSYNC,
            Kind::Unlink | Kind::Rmdir => FileOps::UNLINKAT,
            Kind::Rename => FileOps::RENAMEAT,
            Kind::Mkdir => FileOps::MKDIRAT,
            Kind::ReadFile => FileOps::OPENAT.union(FileOps::READ).union(FileOps::CLOSE),
            Kind::Other => FileOps::NONE,
        }
    }

    fn bit(self) -> u64 {
        1 << (self as u32)
    }
}

impl Req {
    fn kind(&self) -> Kind {
        match self {
            Req::Open { .. } => Kind::Open,
            Req::Close { .. } => Kind::Close,
            Req::Read { .. } => Kind::Read,
            Req::Write { .. } => Kind::Write,
            Req::Stat { .. } => Kind::Stat,
            Req::Fstat { .. } => Kind::Fstat,
            Req::Fsync { .. } => Kind::Fsync,
            Req::Unlink { .. } => Kind::Unlink,
            Req::Rmdir { .. } => Kind::Rmdir,
            Req::Rename { .. } => Kind::Rename,
            Req::Mkdir { .. } => Kind::Mkdir,
            Req::ReadFile { .. } => Kind::ReadFile,
            _ => Kind::Other,
        }
    }

    /// A copy to retry on the pool, without the buffer (which comes back
    /// with the completion). Only for native kinds.
    fn retry_copy(&self) -> Option<Req> {
        Some(match self {
            Req::Open { path, flags, mode } => Req::Open {
                path: path.clone(),
                flags: *flags,
                mode: *mode,
            },
            Req::Close { fd } => Req::Close { fd: *fd },
            Req::Read { fd, pos, .. } => Req::Read {
                fd: *fd,
                buf: Vec::new(),
                pos: *pos,
            },
            Req::Write { fd, pos, .. } => Req::Write {
                fd: *fd,
                buf: Vec::new(),
                pos: *pos,
            },
            Req::Stat { path, follow } => Req::Stat {
                path: path.clone(),
                follow: *follow,
            },
            Req::Fstat { fd } => Req::Fstat { fd: *fd },
            Req::Fsync { fd, data_only } => Req::Fsync {
                fd: *fd,
                data_only: *data_only,
            },
            Req::Unlink { path } => Req::Unlink { path: path.clone() },
            Req::Rmdir { path } => Req::Rmdir { path: path.clone() },
            Req::Rename { from, to } => Req::Rename {
                from: from.clone(),
                to: to.clone(),
            },
            Req::Mkdir { path, mode } => Req::Mkdir {
                path: path.clone(),
                mode: *mode,
            },
            Req::ReadFile { path, .. } => Req::ReadFile {
                path: path.clone(),
                buf: Vec::new(),
            },
            _ => return None,
        })
    }

    /// The path an error names first, taken out of the request: the one
    /// `on_path` was given (open's and stat's path, rename's, link's and
    /// copy_file's source, symlink's target, ...); `None` for a request on
    /// a descriptor, and for mkdtemp (whose error names its template).
    pub(crate) fn into_path(self) -> Option<PathBuf> {
        let c = match self {
            Req::Open { path, .. }
            | Req::Stat { path, .. }
            | Req::Unlink { path }
            | Req::Rmdir { path }
            | Req::Mkdir { path, .. }
            | Req::Truncate { path, .. }
            | Req::Chmod { path, .. }
            | Req::Chown { path, .. }
            | Req::Utimes { path, .. }
            | Req::Access { path, .. }
            | Req::ReadFile { path, .. }
            | Req::Rm { path, .. } => path,
            Req::Rename { from, .. } | Req::Link { from, .. } | Req::CopyFile { from, .. } => from,
            Req::Symlink { target, .. } => target,
            Req::MkdirAll { path, .. }
            | Req::Readdir { path }
            | Req::Readlink { path }
            | Req::Realpath { path } => return Some(path),
            Req::Mkdtemp { .. }
            | Req::Close { .. }
            | Req::Read { .. }
            | Req::Write { .. }
            | Req::Fstat { .. }
            | Req::Fsync { .. }
            | Req::Ftruncate { .. }
            | Req::Fchmod { .. }
            | Req::Fchown { .. }
            | Req::Futimes { .. } => return None,
        };
        Some(path_of(c))
    }

    fn put_buf(&mut self, back: Vec<u8>) {
        if let Req::Read { buf, .. } | Req::Write { buf, .. } | Req::ReadFile { buf, .. } = self {
            *buf = back;
        }
    }

    /// The reactor operation for a native kind.
    fn into_op(self) -> Op {
        const CWD: RawFd = libc::AT_FDCWD;
        // -1: "the current file position" (IORING_FEAT_RW_CUR_POS).
        let offset = |pos: Option<u64>| pos.unwrap_or(u64::MAX);
        match self {
            Req::Open { path, flags, mode } => Op::openat(CWD, path, flags, mode),
            Req::Close { fd } => Op::close(fd),
            Req::Read { fd, buf, pos } => Op::read_at(fd, buf, offset(pos)),
            Req::Write { fd, buf, pos } => Op::write_at(fd, buf, offset(pos)),
            Req::Stat { path, follow } => {
                let flags = if follow { 0 } else { libc::AT_SYMLINK_NOFOLLOW };
                Op::statx(CWD, path, flags)
            }
            // Native only where the ring runs statx (Linux); elsewhere no
            // backend offers `FileOps::STATX` and fstat goes to the pool.
            #[cfg(target_os = "linux")]
            Req::Fstat { fd } => Op::statx(fd, CString::default(), libc::AT_EMPTY_PATH),
            Req::Fsync { fd, data_only } => Op::fsync(fd, data_only),
            Req::Unlink { path } => Op::unlinkat(CWD, path, 0),
            Req::Rmdir { path } => Op::unlinkat(CWD, path, libc::AT_REMOVEDIR),
            Req::Rename { from, to } => Op::renameat(CWD, from, CWD, to, 0),
            Req::Mkdir { path, mode } => Op::mkdirat(CWD, path, mode),
            Req::ReadFile { path, buf } => Op::read_file(CWD, path, buf),
            other => unreachable!("not a native request: {other:?}"),
        }
    }
}

/// How many file operations went where, on this thread's loops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsStats {
    /// Submitted to io_uring.
    pub native: u64,
    /// Run on the blocking pool (polling backend, or an operation io_uring
    /// does not have here).
    pub pool: u64,
    /// Tried on io_uring, finished on the pool: the kernel lacked the
    /// operation (`EINVAL`, then success on the pool). Also counted in
    /// `native`.
    pub fallback: u64,
}

thread_local! {
    static STATS: Cell<FsStats> = Cell::new(FsStats::default());
    static LOGGED: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
    /// Native kinds that have succeeded on the ring (no retry copy needed).
    static CONFIRMED: Cell<u64> = const { Cell::new(0) };
    /// Native kinds the kernel turned out to lack (an `EINVAL` the pool
    /// did not give): pool from then on, on this thread's loops.
    static DISABLED: Cell<u64> = const { Cell::new(0) };
}

fn has(set: &'static std::thread::LocalKey<Cell<u64>>, kind: Kind) -> bool {
    set.with(Cell::get) & kind.bit() != 0
}

fn add(set: &'static std::thread::LocalKey<Cell<u64>>, kind: Kind) -> bool {
    set.with(|c| {
        let old = c.get();
        c.set(old | kind.bit());
        old & kind.bit() == 0
    })
}

/// The routing counters of the calling thread (every loop on it): how many
/// file operations went to io_uring and how many to the pool.
pub fn stats() -> FsStats {
    STATS.with(Cell::get)
}

fn count(kind: Kind, native: bool, why: &str) {
    STATS.with(|s| {
        let mut v = s.get();
        if native {
            v.native += 1;
        } else {
            v.pool += 1;
        }
        s.set(v);
    });
    LOGGED.with(|l| {
        let (mut n, mut p) = l.get();
        let seen = if native { &mut n } else { &mut p };
        if *seen & kind.bit() == 0 {
            *seen |= kind.bit();
            let route = if native {
                "io_uring"
            } else {
                "the blocking pool"
            };
            log::debug!("eventide::fs: {kind:?} runs on {route} ({why})");
        }
        l.set((n, p));
    });
}

fn count_fallback() {
    STATS.with(|s| {
        let mut v = s.get();
        v.fallback += 1;
        s.set(v);
    });
}

type DoneFn = Box<dyn FnOnce(&mut Loop, Done)>;

/// Runs `req` where it belongs; `done` runs on the loop with its result,
/// never inside this call. Returns the reactor token when it went to the
/// ring (a stream cancels its read or write with it; a pool job cannot be
/// cancelled once queued, and its buffer is the job's until it ends).
pub(crate) fn dispatch(
    lp: &mut Loop,
    req: Req,
    done: impl FnOnce(&mut Loop, Done) + 'static,
) -> Option<Token> {
    dispatch_on(lp, req, None, done)
}

/// [`dispatch`] for a request on an open file: while it waits for or runs on the pool, a close of
/// the file waits for it (the descriptor's number cannot be reused under
/// it). On the ring no wait is needed: the kernel holds the file from the
/// submission on, and the reactor's close cancels what is in flight.
pub(crate) fn dispatch_on(
    lp: &mut Loop,
    req: Req,
    file: Option<File>,
    done: impl FnOnce(&mut Loop, Done) + 'static,
) -> Option<Token> {
    let kind = req.kind();
    let why = if lp.backend() != BackendKind::Uring {
        "a readiness backend (epoll, polling)"
    } else if kind == Kind::Other {
        "not an io_uring operation"
    } else if !lp.reactor.file_ops().contains(kind.needs()) {
        "the kernel's io_uring lacks it (or EVENTIDE_URING_FILE_OPS narrowed it)"
    } else if has(&DISABLED, kind) {
        "io_uring answered EINVAL where the pool succeeded"
    } else {
        return on_uring(lp, kind, req, file, done);
    };
    count(kind, false, why);
    on_pool(lp, req, file, Box::new(done));
    None
}

fn on_pool(lp: &mut Loop, req: Req, file: Option<File>, done: DoneFn) {
    if let Some(file) = file {
        lp.io.fs.hold(file);
    }
    lp.queue_work(
        move || sys::run(req),
        move |lp, result| {
            let finished = result.unwrap_or_else(|error| Done::new(Err(error.into()), Vec::new()));
            // The close that waited for this (it goes out before the
            // callback runs, which may panic).
            if let Some(close) = file.and_then(|file| lp.io.fs.release(file)) {
                lp.fs().close_fd(close.fd, close.callback);
            }
            done(lp, finished);
        },
    );
}

/// Generic over the callback, so the ring path boxes it only once (inside
/// the reactor handler), not twice.
fn on_uring<F: FnOnce(&mut Loop, Done) + 'static>(
    lp: &mut Loop,
    kind: Kind,
    req: Req,
    file: Option<File>,
    done: F,
) -> Option<Token> {
    count(kind, true, "io_uring has it");
    let mut retry = if !has(&CONFIRMED, kind) {
        req.retry_copy()
    } else {
        None
    };
    let mut done = Some(done);
    // Runs once: with the operation's completion, or with the reactor's
    // refusal (not expected on io_uring: a full queue is flushed, not
    // refused), which is then the answer.
    let handler = move |lp: &mut Loop, c: Completion| {
        let Some(done) = done.take() else {
            return;
        };
        let buf = c.buf.unwrap_or_default();
        let einval = matches!(&c.result, Err(e) if e.raw_os_error() == Some(libc::EINVAL));
        if einval && let Some(mut again) = retry.take() {
            again.put_buf(buf);
            retry_on_pool(lp, kind, again, file, Box::new(done));
            return;
        }
        if c.result.is_ok() && retry.is_some() {
            add(&CONFIRMED, kind);
        }
        let step = match c.step {
            Some(ReadFileStep::Read) => "read",
            Some(ReadFileStep::Close) => "close",
            _ => "open",
        };
        let result = c.result.map(|n| decode(kind, n, c.stat.as_deref(), c.file));
        // The op's path is the one the error names, but fstat's (`""`,
        // with AT_EMPTY_PATH) names none (as `Req::into_path`).
        let path = c.path.filter(|_| kind != Kind::Fstat).map(path_of);
        done(
            lp,
            Done {
                result,
                buf,
                step,
                path,
            },
        );
    };
    lp.submit_io_reported(req.into_op(), handler)
}

/// An `EINVAL` from the ring before the kind ever succeeded there: ask the
/// pool. If it succeeds, the kernel lacks the operation: pool from now on.
fn retry_on_pool(lp: &mut Loop, kind: Kind, req: Req, file: Option<File>, done: DoneFn) {
    on_pool(
        lp,
        req,
        file,
        Box::new(move |lp: &mut Loop, finished: Done| {
            if finished.result.is_ok() {
                count_fallback();
                if add(&DISABLED, kind) {
                    crate::diag::diag_event!(
                        warn,
                        "eventide::fs: io_uring refused {kind:?} (EINVAL) where the pool \
                         succeeded; {kind:?} runs on the blocking pool from now on"
                    );
                }
            }
            done(lp, finished);
        }),
    );
}

/// A C path as a `PathBuf`, reusing its bytes.
pub(crate) fn path_of(c: CString) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    std::ffi::OsString::from_vec(c.into_bytes()).into()
}

fn decode(
    kind: Kind,
    n: usize,
    stat: Option<&eventide_reactor::FileStat>,
    file: Option<RawFd>,
) -> Out {
    match kind {
        Kind::ReadFile => Out::Whole(file),
        Kind::Open => Out::Fd(n as RawFd),
        Kind::Read | Kind::Write => Out::Size(n),
        Kind::Stat | Kind::Fstat => match stat {
            Some(stat) => Out::Stat(Stats::from_raw(stat.raw())),
            None => unreachable!("a successful statx carries its record"),
        },
        _ => Out::Unit,
    }
}
