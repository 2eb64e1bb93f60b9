//! The one place that decides where a file operation runs: io_uring
//! (the reactor's file ops) or the blocking pool, as libuv does.
//!
//! The rule, per operation ([`Kind::native`]):
//!
//! - **io_uring backend, and the reactor has the operation** (open, close,
//!   read, write, stat/lstat/fstat via statx, fsync/fdatasync, unlink,
//!   rmdir, rename, mkdir): submitted to the ring.
//! - **otherwise** (polling backend; an operation the reactor lacks; one
//!   the running kernel turned out to lack): the pool runs the same system
//!   call through [`sys::run`](super::sys::run).
//!
//! A kernel that lacks an opcode (or, for reads and writes at the current
//! position, `IORING_FEAT_RW_CUR_POS`) answers `EINVAL`. Until an
//! operation kind has once succeeded on the ring, its request is kept so
//! that an `EINVAL` can be retried on the pool: if the pool succeeds, the
//! kind is switched to the pool for good (logged once, counted as a
//! fallback); if the pool also says `EINVAL`, that is the answer. So the
//! user never sees a difference in results between the routes.
//!
//! Every decision is counted per thread ([`stats`]) and the first one of
//! each kind is logged with `log::debug!`.

use std::cell::Cell;
use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use eventide_reactor::{BackendKind, Completion, Op};

use super::sys;
use super::types::{DirEntry, Stats};
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
        path: PathBuf,
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
}

/// What a request produced.
#[derive(Debug)]
pub(crate) enum Out {
    Unit,
    Fd(RawFd),
    Size(usize),
    Stat(Box<Stats>),
    Path(PathBuf),
    MaybePath(Option<PathBuf>),
    Entries(Vec<DirEntry>),
}

/// A finished request: its result, and the buffer it was given (empty for
/// requests without one), also on error.
#[derive(Debug)]
pub(crate) struct Done {
    pub(crate) result: io::Result<Out>,
    pub(crate) buf: Vec<u8>,
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
    Other,
}

impl Kind {
    /// Whether the reactor has this operation on io_uring.
    fn native(self) -> bool {
        self != Kind::Other
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
            _ => return None,
        })
    }

    fn put_buf(&mut self, back: Vec<u8>) {
        if let Req::Read { buf, .. } | Req::Write { buf, .. } = self {
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
            Req::Fstat { fd } => Op::statx(fd, CString::default(), libc::AT_EMPTY_PATH),
            Req::Fsync { fd, data_only } => Op::fsync(fd, data_only),
            Req::Unlink { path } => Op::unlinkat(CWD, path, 0),
            Req::Rmdir { path } => Op::unlinkat(CWD, path, libc::AT_REMOVEDIR),
            Req::Rename { from, to } => Op::renameat(CWD, from, CWD, to, 0),
            Req::Mkdir { path, mode } => Op::mkdirat(CWD, path, mode),
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
    /// operation (`EINVAL`, then success on the pool) or the submission
    /// was refused. Also counted in `native`.
    pub fallback: u64,
}

thread_local! {
    static STATS: Cell<FsStats> = Cell::new(FsStats::default());
    static LOGGED: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// Native kinds that have succeeded on the ring (no retry copy needed).
static CONFIRMED: AtomicU64 = AtomicU64::new(0);
/// Native kinds the kernel turned out to lack: pool from then on.
static DISABLED: AtomicU64 = AtomicU64::new(0);

/// The routing counters of the calling thread (every loop on it): how many
/// file operations went to io_uring and how many to the pool.
pub fn stats() -> FsStats {
    STATS.with(Cell::get)
}

fn count(kind: Kind, native: bool) {
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
            log::debug!("eventide::fs: {kind:?} runs on {route}");
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
/// never inside this call.
pub(crate) fn dispatch(lp: &mut Loop, req: Req, done: impl FnOnce(&mut Loop, Done) + 'static) {
    let kind = req.kind();
    let on_ring = lp.backend() == BackendKind::Uring
        && kind.native()
        && DISABLED.load(Ordering::Relaxed) & kind.bit() == 0;
    if on_ring {
        on_uring(lp, kind, req, Box::new(done));
    } else {
        count(kind, false);
        on_pool(lp, req, Box::new(done));
    }
}

fn on_pool(lp: &mut Loop, req: Req, done: DoneFn) {
    lp.queue_work(
        move || sys::run(req),
        move |lp, result| {
            let finished = result.unwrap_or_else(|error| Done {
                result: Err(error.into()),
                buf: Vec::new(),
            });
            done(lp, finished);
        },
    );
}

fn on_uring(lp: &mut Loop, kind: Kind, req: Req, done: DoneFn) {
    count(kind, true);
    let mut retry = if CONFIRMED.load(Ordering::Relaxed) & kind.bit() == 0 {
        req.retry_copy()
    } else {
        None
    };
    let slot = Rc::new(Cell::new(Some(done)));
    let handler_slot = Rc::clone(&slot);
    let handler = move |lp: &mut Loop, c: Completion| {
        let Some(done) = handler_slot.take() else {
            return;
        };
        let buf = c.buf.unwrap_or_default();
        let einval = matches!(&c.result, Err(e) if e.raw_os_error() == Some(libc::EINVAL));
        if let (true, Some(mut again)) = (einval, retry.take()) {
            again.put_buf(buf);
            retry_on_pool(lp, kind, again, done);
            return;
        }
        if c.result.is_ok() {
            CONFIRMED.fetch_or(kind.bit(), Ordering::Relaxed);
        }
        let result = c.result.map(|n| decode(kind, n, c.stat.as_deref()));
        done(lp, Done { result, buf });
    };
    if let Err(refused) = lp.submit_io(req.into_op(), handler) {
        // Not expected on io_uring (a full queue is flushed, not refused);
        // the request is gone into the op, so report the error.
        count_fallback();
        let buf = refused.op.into_buf().unwrap_or_default();
        if let Some(done) = slot.take() {
            let error = refused.error;
            lp.defer(move |lp| {
                done(
                    lp,
                    Done {
                        result: Err(error),
                        buf,
                    },
                );
            });
        }
    }
}

/// An `EINVAL` from the ring before the kind ever succeeded there: ask the
/// pool. If it succeeds, the kernel lacks the operation: pool from now on.
fn retry_on_pool(lp: &mut Loop, kind: Kind, req: Req, done: DoneFn) {
    on_pool(
        lp,
        req,
        Box::new(move |lp: &mut Loop, finished: Done| {
            if finished.result.is_ok() {
                count_fallback();
                if DISABLED.fetch_or(kind.bit(), Ordering::Relaxed) & kind.bit() == 0 {
                    log::warn!(
                        "eventide::fs: io_uring refused {kind:?} (EINVAL) where the pool \
                         succeeded; {kind:?} runs on the blocking pool from now on"
                    );
                }
            }
            done(lp, finished);
        }),
    );
}

fn decode(kind: Kind, n: usize, stat: Option<&eventide_reactor::FileStat>) -> Out {
    match kind {
        Kind::Open => Out::Fd(n as RawFd),
        Kind::Read | Kind::Write => Out::Size(n),
        Kind::Stat | Kind::Fstat => match stat {
            Some(stat) => Out::Stat(Box::new(Stats::from_statx(stat.raw()))),
            None => unreachable!("a successful statx carries its record"),
        },
        _ => Out::Unit,
    }
}
