//! Operations: what a caller submits, and what comes back.
//!
//! An [`Op`] owns everything the kernel may touch while it runs: the data
//! buffer (`Vec<u8>`), the path (`CString`), the peer address. Ownership
//! moves into the reactor on submit and the buffer moves back out in the
//! operation's [`Completion`] (or in the [`SubmitError`](crate::SubmitError)
//! when the submission itself is refused). The heap block of a `Vec` or a
//! `CString` does not move when the value itself moves, so the pointer the
//! kernel was given stays valid for as long as the reactor holds the value.

use std::ffi::{CStr, CString};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

/// A caller-chosen tag that names one operation in flight.
///
/// Tokens must be unique among the operations in flight on one reactor (a
/// second submission with a token already in flight is refused). Once the
/// operation's final completion has been collected the token may be reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub u64);

/// Readiness a [`Op::poll`] or [`Op::poll_multi`] waits for, and reports
/// back.
///
/// [`Op::poll`] (single-shot) waits for [`Interest::READABLE`] and
/// [`Interest::WRITABLE`] only; [`Op::poll_multi`] also for
/// [`Interest::PRIORITY`] and [`Interest::DISCONNECT`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Interest(u8);

impl Interest {
    /// The descriptor can be read (or accepted on) without blocking.
    pub const READABLE: Interest = Interest(1);
    /// The descriptor can be written without blocking.
    pub const WRITABLE: Interest = Interest(2);
    /// Both readable and writable.
    pub const BOTH: Interest = Interest(3);
    /// Priority data can be read (`EPOLLPRI`/`POLLPRI`: TCP urgent data,
    /// a `sysfs` attribute that changed, a pseudo-terminal master's
    /// packet-mode status).
    pub const PRIORITY: Interest = Interest(4);
    /// The peer shut its writing side down (`EPOLLRDHUP`/`POLLRDHUP` on a
    /// stream socket), or the descriptor hung up (`POLLHUP`: a pipe whose
    /// writers are all gone, a socket shut both ways).
    pub const DISCONNECT: Interest = Interest(8);
    /// No readiness at all.
    pub const NONE: Interest = Interest(0);

    /// Whether this includes readability.
    pub fn is_readable(self) -> bool {
        self.0 & 1 != 0
    }

    /// Whether this includes writability.
    pub fn is_writable(self) -> bool {
        self.0 & 2 != 0
    }

    /// Whether this includes priority data.
    pub fn is_priority(self) -> bool {
        self.0 & 4 != 0
    }

    /// Whether this includes a disconnect.
    pub fn is_disconnect(self) -> bool {
        self.0 & 8 != 0
    }

    /// Whether this is [`Interest::NONE`].
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every readiness of `other` is in `self`.
    pub fn contains(self, other: Interest) -> bool {
        self.0 & other.0 == other.0
    }

    /// Both sets: `Interest::READABLE.union(Interest::DISCONNECT)`.
    #[must_use]
    pub const fn union(self, other: Interest) -> Interest {
        Interest(self.0 | other.0)
    }

    /// What both sets have.
    #[must_use]
    pub const fn intersection(self, other: Interest) -> Interest {
        Interest(self.0 & other.0)
    }

    /// The raw bits (1 readable, 2 writable, 4 priority, 8 disconnect), as
    /// a poll completion's result.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// From raw bits; unknown bits are dropped.
    pub fn from_bits(bits: u8) -> Interest {
        Interest(bits & 15)
    }
}

impl std::ops::BitOr for Interest {
    type Output = Interest;

    fn bitor(self, other: Interest) -> Interest {
        self.union(other)
    }
}

/// Which half of a connection [`Op::shutdown`] closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shutdown {
    /// No more receives.
    Read,
    /// No more sends (the peer sees end of stream).
    Write,
    /// Both.
    Both,
}

impl Shutdown {
    pub(crate) fn how(self) -> i32 {
        match self {
            Shutdown::Read => libc::SHUT_RD,
            Shutdown::Write => libc::SHUT_WR,
            Shutdown::Both => libc::SHUT_RDWR,
        }
    }
}

/// File metadata: on Linux as `statx(2)` returned it (the io_uring
/// backend's statx); elsewhere a `struct stat` filled by `fstatat(2)`
/// ([`FileStat::stat_at`]). The accessors are the same on every system.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct FileStat(pub(crate) RawStat);

/// The record behind a [`FileStat`]: `statx` on Linux.
#[cfg(target_os = "linux")]
pub type RawStat = libc::statx;

/// The record behind a [`FileStat`]: `struct stat` outside Linux.
#[cfg(not(target_os = "linux"))]
pub type RawStat = libc::stat;

impl FileStat {
    #[cfg_attr(not(all(feature = "uring", target_os = "linux")), allow(dead_code))]
    pub(crate) fn zeroed() -> Box<FileStat> {
        // SAFETY: `statx`/`stat` is a plain C struct of integers; all-zero is a valid value.
        Box::new(FileStat(unsafe { std::mem::zeroed() }))
    }

    /// The metadata of `path` relative to `dir` (`flags` as `AT_*`, e.g.
    /// `AT_SYMLINK_NOFOLLOW`), synchronously: `statx(2)` with the basic
    /// fields on Linux (the mask the io_uring statx asks for), `fstatat(2)`
    /// elsewhere.
    pub fn stat_at(dir: RawFd, path: &CStr, flags: i32) -> io::Result<FileStat> {
        let mut st = FileStat::zeroed();
        #[cfg(target_os = "linux")]
        // SAFETY: `path` is NUL-terminated and `st.0` is a writable statx record.
        let rc = unsafe {
            libc::statx(
                dir,
                path.as_ptr(),
                flags,
                libc::STATX_BASIC_STATS,
                &mut st.0,
            )
        };
        #[cfg(not(target_os = "linux"))]
        // SAFETY: `path` is NUL-terminated and `st.0` is a writable stat record.
        let rc = unsafe { libc::fstatat(dir, path.as_ptr(), &mut st.0, flags) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(*st)
    }

    /// The metadata of the open descriptor `fd`: `statx(2)` with
    /// `AT_EMPTY_PATH` on Linux, `fstat(2)` elsewhere.
    pub fn of_fd(fd: RawFd) -> io::Result<FileStat> {
        #[cfg(target_os = "linux")]
        return FileStat::stat_at(fd, c"", libc::AT_EMPTY_PATH);
        #[cfg(not(target_os = "linux"))]
        {
            let mut st = FileStat::zeroed();
            // SAFETY: `st.0` is a writable stat record.
            if unsafe { libc::fstat(fd, &mut st.0) } < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(*st)
        }
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        #[cfg(target_os = "linux")]
        return self.0.stx_size;
        #[cfg(not(target_os = "linux"))]
        return self.0.st_size as u64;
    }

    /// File type and permission bits (`st_mode`).
    pub fn mode(&self) -> u32 {
        #[cfg(target_os = "linux")]
        return u32::from(self.0.stx_mode);
        #[cfg(not(target_os = "linux"))]
        return u32::from(self.0.st_mode);
    }

    /// Whether this is a regular file.
    #[allow(clippy::unnecessary_cast)] // `mode_t` is `u16` on macOS and FreeBSD
    pub fn is_file(&self) -> bool {
        self.mode() & (libc::S_IFMT as u32) == libc::S_IFREG as u32
    }

    /// Whether this is a directory.
    #[allow(clippy::unnecessary_cast)] // `mode_t` is `u16` on macOS and FreeBSD
    pub fn is_dir(&self) -> bool {
        self.mode() & (libc::S_IFMT as u32) == libc::S_IFDIR as u32
    }

    /// Number of hard links.
    pub fn nlink(&self) -> u32 {
        #[cfg(target_os = "linux")]
        return self.0.stx_nlink;
        #[cfg(not(target_os = "linux"))]
        #[allow(clippy::unnecessary_cast)]
        return self.0.st_nlink as u32;
    }

    /// Inode number.
    pub fn ino(&self) -> u64 {
        #[cfg(target_os = "linux")]
        return self.0.stx_ino;
        #[cfg(not(target_os = "linux"))]
        #[allow(clippy::unnecessary_cast)]
        return self.0.st_ino as u64;
    }

    /// Owner user id.
    pub fn uid(&self) -> u32 {
        #[cfg(target_os = "linux")]
        return self.0.stx_uid;
        #[cfg(not(target_os = "linux"))]
        return self.0.st_uid;
    }

    /// Owner group id.
    pub fn gid(&self) -> u32 {
        #[cfg(target_os = "linux")]
        return self.0.stx_gid;
        #[cfg(not(target_os = "linux"))]
        return self.0.st_gid;
    }

    /// Last modification time, seconds and nanoseconds since the epoch.
    pub fn mtime(&self) -> (i64, u32) {
        #[cfg(target_os = "linux")]
        return (self.0.stx_mtime.tv_sec, self.0.stx_mtime.tv_nsec);
        #[cfg(not(target_os = "linux"))]
        #[allow(clippy::unnecessary_cast)]
        return (self.0.st_mtime as i64, self.0.st_mtime_nsec as u32);
    }

    /// The raw record: `statx` on Linux, `struct stat` elsewhere.
    pub fn raw(&self) -> &RawStat {
        &self.0
    }
}

impl fmt::Debug for FileStat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStat")
            .field("size", &self.size())
            .field("mode", &format_args!("{:o}", self.mode()))
            .field("ino", &self.ino())
            .finish_non_exhaustive()
    }
}

/// The steps of an [`Op::read_file`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReadFileStep {
    /// Opening the file.
    Open,
    /// Reading it.
    Read,
    /// Closing it.
    Close,
}

/// A set of io_uring file operations: what a reactor runs natively
/// ([`Reactor::file_ops`](crate::Reactor::file_ops)) and what an operation
/// needs ([`Op::file_ops_needed`]).
///
/// On io_uring the set is what the kernel's opcode probe reports, narrowed
/// by the `EVENTIDE_URING_FILE_OPS` environment variable and by
/// [`Reactor::restrict_file_ops`](crate::Reactor::restrict_file_ops); on
/// polling it is empty. Both narrowings exist for testing and diagnosis:
/// they make the reactor behave as on a kernel without those operations
/// (it refuses them with `Unsupported`, and a caller such as eventide's
/// `fs` runs them on its thread pool).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FileOps(u32);

impl FileOps {
    /// No operation.
    pub const NONE: FileOps = FileOps(0);
    /// `openat` ([`Op::openat`]).
    pub const OPENAT: FileOps = FileOps(1);
    /// `read` ([`Op::read_at`]).
    pub const READ: FileOps = FileOps(1 << 1);
    /// `write` ([`Op::write_at`]).
    pub const WRITE: FileOps = FileOps(1 << 2);
    /// `statx` ([`Op::statx`]).
    pub const STATX: FileOps = FileOps(1 << 3);
    /// `fsync` ([`Op::fsync`]).
    pub const FSYNC: FileOps = FileOps(1 << 4);
    /// `unlinkat` ([`Op::unlinkat`]).
    pub const UNLINKAT: FileOps = FileOps(1 << 5);
    /// `renameat` ([`Op::renameat`]).
    pub const RENAMEAT: FileOps = FileOps(1 << 6);
    /// `mkdirat` ([`Op::mkdirat`]).
    pub const MKDIRAT: FileOps = FileOps(1 << 7);
    /// `close` of a file (needed by [`Op::read_file`]; [`Op::close`] itself
    /// is not a file operation).
    pub const CLOSE: FileOps = FileOps(1 << 8);
    /// Every file operation.
    pub const ALL: FileOps = FileOps((1 << 9) - 1);

    const NAMES: [(&'static str, FileOps); 9] = [
        ("openat", FileOps::OPENAT),
        ("read", FileOps::READ),
        ("write", FileOps::WRITE),
        ("statx", FileOps::STATX),
        ("fsync", FileOps::FSYNC),
        ("unlinkat", FileOps::UNLINKAT),
        ("renameat", FileOps::RENAMEAT),
        ("mkdirat", FileOps::MKDIRAT),
        ("close", FileOps::CLOSE),
    ];

    /// Whether every operation of `other` is in `self`.
    pub const fn contains(self, other: FileOps) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Both sets.
    pub const fn union(self, other: FileOps) -> FileOps {
        FileOps(self.0 | other.0)
    }

    /// What both sets have.
    pub const fn intersection(self, other: FileOps) -> FileOps {
        FileOps(self.0 & other.0)
    }

    /// `self` without `other`.
    pub const fn difference(self, other: FileOps) -> FileOps {
        FileOps(self.0 & !other.0)
    }

    /// Parses a comma-separated list of names (`openat`, `read`, `write`,
    /// `statx`, `fsync`, `unlinkat`, `renameat`, `mkdirat`, `close`), or
    /// `all` / `none`; a name prefixed with `-` is taken away from what
    /// came before it (`all,-statx`). Whitespace around names is ignored.
    ///
    /// # Errors
    ///
    /// The first word that is none of these.
    pub fn parse(list: &str) -> Result<FileOps, String> {
        let mut set = FileOps::NONE;
        for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let (remove, name) = match word.strip_prefix('-') {
                Some(rest) => (true, rest.trim()),
                None => (false, word),
            };
            let ops = match name {
                "all" => FileOps::ALL,
                "none" => FileOps::NONE,
                _ => FileOps::NAMES
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, ops)| *ops)
                    .ok_or_else(|| word.to_owned())?,
            };
            set = if remove {
                set.difference(ops)
            } else {
                set.union(ops)
            };
        }
        Ok(set)
    }
}

impl fmt::Debug for FileOps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = FileOps::NAMES
            .iter()
            .filter(|(_, ops)| self.contains(*ops))
            .map(|(n, _)| *n)
            .collect();
        write!(f, "FileOps({})", names.join(","))
    }
}

/// One operation, owning what the kernel may touch while it runs.
///
/// Build one with the constructors (`Op::recv(fd, buf)` and so on). Socket
/// descriptors given to the reactor must be nonblocking (the polling backend
/// relies on it; io_uring does not mind), and they stay owned by the caller
/// except for [`Op::close`], which consumes the descriptor.
#[derive(Debug)]
pub struct Op {
    pub(crate) kind: OpKind,
}

#[derive(Debug)]
#[cfg_attr(not(all(feature = "uring", target_os = "linux")), allow(dead_code))]
pub(crate) enum OpKind {
    Accept {
        fd: RawFd,
    },
    AcceptMulti {
        fd: RawFd,
        /// The descriptor's close count when submitted (io_uring): a
        /// re-arm after a close of `fd` would land on the number's next
        /// owner, so a changed count ends the operation instead.
        epoch: u32,
    },
    Connect {
        fd: RawFd,
        /// Boxed: its place stays fixed while the kernel reads it, and the
        /// variant stays small.
        addr: Box<socket2::SockAddr>,
    },
    Recv {
        fd: RawFd,
        buf: Vec<u8>,
    },
    RecvMulti {
        fd: RawFd,
        /// As `AcceptMulti`'s.
        epoch: u32,
        /// The buffer of a single-shot round (io_uring without provided
        /// buffers), while one is in flight.
        round_buf: Option<Vec<u8>>,
        /// `read(2)` instead of `recv(2)`: any descriptor ([`Op::read_multi`]).
        read: bool,
    },
    Send {
        fd: RawFd,
        buf: SendBytes,
        from: usize,
        /// `write(2)` instead of `send(2)`: any descriptor ([`Op::write_from`]).
        write: bool,
    },
    Shutdown {
        fd: RawFd,
        how: Shutdown,
    },
    Close {
        fd: RawFd,
    },
    Poll {
        fd: RawFd,
        interest: Interest,
    },
    /// A level-triggered readiness watch that stays armed (`Op::poll_multi`).
    PollMulti {
        fd: RawFd,
        interest: Interest,
        /// As `AcceptMulti`'s (io_uring re-arms it after each completion).
        epoch: u32,
    },
    OpenAt {
        dir: RawFd,
        path: CString,
        flags: i32,
        mode: u32,
    },
    ReadAt {
        fd: RawFd,
        buf: Vec<u8>,
        offset: u64,
    },
    WriteAt {
        fd: RawFd,
        buf: Vec<u8>,
        offset: u64,
    },
    Statx {
        dir: RawFd,
        path: CString,
        flags: i32,
        /// The record the kernel fills (io_uring; set at submission).
        stat: Option<Box<FileStat>>,
    },
    Fsync {
        fd: RawFd,
        data_only: bool,
    },
    UnlinkAt {
        dir: RawFd,
        path: CString,
        flags: i32,
    },
    /// Boxed, as `ReadFile`: rare and large, it would grow every entry.
    RenameAt(Box<RenameAt>),
    MkdirAt {
        dir: RawFd,
        path: CString,
        mode: u32,
    },
    /// Boxed: the in-flight table holds an `OpKind` per operation, and
    /// an idle connection's receive should not pay for the largest one.
    ReadFile(Box<ReadFile>),
}

/// The arguments of `Op::renameat`.
#[derive(Debug)]
#[cfg_attr(not(all(feature = "uring", target_os = "linux")), allow(dead_code))]
pub(crate) struct RenameAt {
    pub(crate) old_dir: RawFd,
    pub(crate) old: CString,
    pub(crate) new_dir: RawFd,
    pub(crate) new: CString,
    pub(crate) flags: u32,
}

/// The state of an `Op::read_file` through its steps.
#[derive(Debug)]
#[cfg_attr(not(all(feature = "uring", target_os = "linux")), allow(dead_code))]
pub(crate) struct ReadFile {
    pub(crate) dir: RawFd,
    pub(crate) path: CString,
    pub(crate) buf: Vec<u8>,
    /// The slot of the ring's fixed-file table the file is opened into (a
    /// direct descriptor), when the ring has one free; else the file gets
    /// an ordinary descriptor.
    pub(crate) slot: Option<u32>,
    /// The ordinary descriptor once opened, or (direct) once installed for
    /// the caller to read on (-1 before).
    pub(crate) fd: RawFd,
    /// Direct: the file goes on past the buffer, and this much was read;
    /// its descriptor is being installed and the slot closed.
    pub(crate) handoff: Option<usize>,
    /// Bytes the first read asks for, and the probe read after it.
    pub(crate) ask: usize,
    pub(crate) probe: usize,
    /// The first read's and the probe's results as the kernel gave
    /// them (`-errno` on error), as they arrive.
    pub(crate) first: Option<i32>,
    pub(crate) second: Option<i32>,
    /// Which step is in flight (see `ReadFileStep`), and the final
    /// result (raw, as above) waiting for the close.
    pub(crate) step: ReadFileStep,
    pub(crate) outcome: Option<i32>,
}

impl OpKind {
    /// The open descriptor the operation works on (sockets, files, the one
    /// a close closes); `None` for the operations that name a path (their
    /// directory descriptor is not theirs to wait on or to end) and for
    /// `read_file`, whose descriptor is the backend's own.
    pub(crate) fn fd(&self) -> Option<RawFd> {
        match self {
            OpKind::Accept { fd }
            | OpKind::AcceptMulti { fd, .. }
            | OpKind::Connect { fd, .. }
            | OpKind::Recv { fd, .. }
            | OpKind::RecvMulti { fd, .. }
            | OpKind::Send { fd, .. }
            | OpKind::Shutdown { fd, .. }
            | OpKind::Close { fd }
            | OpKind::Poll { fd, .. }
            | OpKind::PollMulti { fd, .. }
            | OpKind::ReadAt { fd, .. }
            | OpKind::WriteAt { fd, .. }
            | OpKind::Fsync { fd, .. } => Some(*fd),
            OpKind::OpenAt { .. }
            | OpKind::Statx { .. }
            | OpKind::UnlinkAt { .. }
            | OpKind::MkdirAt { .. }
            | OpKind::ReadFile(_)
            | OpKind::RenameAt(_) => None,
        }
    }
}

impl OpKind {
    /// The owner of a [`Op::send_owned`]'s bytes, taken out for its
    /// completion (an empty one is left: a boxed empty array allocates
    /// nothing).
    pub(crate) fn take_owner(&mut self) -> Option<SendOwner> {
        match self {
            OpKind::Send {
                buf: SendBytes::Owner(owner),
                ..
            } => Some(std::mem::replace(owner, Box::new([]))),
            _ => None,
        }
    }
}

/// The bytes of a send: the caller's `Vec` ([`Op::send`]) or an owner's
/// ([`Op::send_owned`]); no larger than the `Vec` alone.
pub(crate) enum SendBytes {
    Vec(Vec<u8>),
    Owner(SendOwner),
}

impl SendBytes {
    /// The caller's `Vec`, taken out (`None` for an owner's bytes, which
    /// [`OpKind::take_owner`] hands back).
    #[cfg(any(feature = "poll", all(feature = "epoll", target_os = "linux")))]
    pub(crate) fn take_vec(&mut self) -> Option<Vec<u8>> {
        match self {
            SendBytes::Vec(v) => Some(std::mem::take(v)),
            SendBytes::Owner(_) => None,
        }
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            SendBytes::Vec(v) => v,
            SendBytes::Owner(o) => (**o).as_ref(),
        }
    }
}

impl fmt::Debug for SendBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendBytes::Vec(v) => write!(f, "Vec({} bytes)", v.len()),
            SendBytes::Owner(o) => write!(f, "Owner({} bytes)", (**o).as_ref().len()),
        }
    }
}

impl Op {
    fn new(kind: OpKind) -> Op {
        Op { kind }
    }

    /// Accept one connection on a listening socket. The result is the new
    /// descriptor (nonblocking, close-on-exec), owned by the caller.
    pub fn accept(listener: RawFd) -> Op {
        Op::new(OpKind::Accept { fd: listener })
    }

    /// Accept connections until cancelled: one completion per connection,
    /// each with [`Completion::more`] set while the operation stays armed.
    /// io_uring uses multishot accept where the kernel has it.
    pub fn accept_multi(listener: RawFd) -> Op {
        Op::new(OpKind::AcceptMulti {
            fd: listener,
            epoch: 0,
        })
    }

    /// Connect a nonblocking, unconnected socket to `addr`.
    pub fn connect(socket: RawFd, addr: SocketAddr) -> Op {
        Op::new(OpKind::Connect {
            fd: socket,
            addr: Box::new(socket2::SockAddr::from(addr)),
        })
    }

    /// Receive into the spare capacity of `buf` (`buf.len()..buf.capacity()`);
    /// the completion's buffer has its length grown by the bytes received.
    /// A result of 0 with spare capacity is the end of the stream.
    pub fn recv(socket: RawFd, buf: Vec<u8>) -> Op {
        Op::new(OpKind::Recv { fd: socket, buf })
    }

    /// Receive until cancelled, end of stream or error, into buffers the
    /// reactor provides: one completion per chunk, each carrying a buffer
    /// the caller owns from then on. Give each back with
    /// [`Reactor::recycle`](crate::Reactor::recycle): at most
    /// [`RECV_MULTI_LEND_LIMIT`](crate::RECV_MULTI_LEND_LIMIT) are lent at a
    /// time, and receiving pauses (the operation stays armed) until some
    /// come back.
    /// io_uring uses multishot recv with a provided-buffer ring where the
    /// kernel has them.
    pub fn recv_multi(socket: RawFd) -> Op {
        Op::new(OpKind::RecvMulti {
            fd: socket,
            epoch: 0,
            round_buf: None,
            read: false,
        })
    }

    /// [`Op::recv_multi`] for any readable descriptor (a pipe, a FIFO, a
    /// terminal, a socket): `read(2)` instead of `recv(2)`, with the same
    /// completions, in lent buffers of 64 KiB (a pipe's capacity; the
    /// lending budget is the same count). io_uring runs single-shot
    /// `IORING_OP_READ` rounds at the descriptor's current position
    /// (offset -1), each in one of the reactor's buffers, re-armed as the
    /// rounds of `recv_multi` without provided buffers are. A descriptor
    /// io_uring cannot wait on (a terminal opened nonblocking) may end the
    /// operation with `EAGAIN`: wait with [`Op::poll`] and submit again.
    pub fn read_multi(fd: RawFd) -> Op {
        Op::new(OpKind::RecvMulti {
            fd,
            epoch: 0,
            round_buf: None,
            read: true,
        })
    }

    /// Send all of `buf`. The result is the number of bytes the kernel took,
    /// which may be fewer (a partial write): resubmit with
    /// [`Op::send_from`] for the rest.
    pub fn send(socket: RawFd, buf: Vec<u8>) -> Op {
        Op::send_from(socket, buf, 0)
    }

    /// Send `buf[from..]`. The result counts bytes from `from`.
    pub fn send_from(socket: RawFd, buf: Vec<u8>, from: usize) -> Op {
        Op::new(OpKind::Send {
            fd: socket,
            buf: SendBytes::Vec(buf),
            from,
            write: false,
        })
    }

    /// Send `owner`'s bytes from `from` on, as they are: no copy. The
    /// reactor keeps the owner until the send's completion hands it back
    /// ([`Completion::owner`]), so the memory stays where the kernel reads
    /// it, whatever happens to the socket meanwhile. The result counts
    /// bytes from `from`.
    pub fn send_owned(socket: RawFd, owner: SendOwner, from: usize) -> Op {
        Op::new(OpKind::Send {
            fd: socket,
            buf: SendBytes::Owner(owner),
            from,
            write: false,
        })
    }

    /// [`Op::send_from`] for any writable descriptor (a pipe, a FIFO, a
    /// terminal, a socket): `write(2)` of `buf[from..]` at the current
    /// position (io_uring: `IORING_OP_WRITE` with offset -1). The result
    /// counts bytes from `from` and may be short. A write to a pipe
    /// without a reader fails with `EPIPE` (and raises `SIGPIPE`, which
    /// Rust programs ignore from the start). A descriptor io_uring cannot
    /// wait on may fail with `EAGAIN`: wait with [`Op::poll`] and submit
    /// again.
    pub fn write_from(fd: RawFd, buf: Vec<u8>, from: usize) -> Op {
        Op::new(OpKind::Send {
            fd,
            buf: SendBytes::Vec(buf),
            from,
            write: true,
        })
    }

    /// [`Op::send_owned`] for any writable descriptor, as
    /// [`Op::write_from`].
    pub fn write_owned(fd: RawFd, owner: SendOwner, from: usize) -> Op {
        Op::new(OpKind::Send {
            fd,
            buf: SendBytes::Owner(owner),
            from,
            write: true,
        })
    }

    /// Shut down one or both halves of a connection.
    pub fn shutdown(socket: RawFd, how: Shutdown) -> Op {
        Op::new(OpKind::Shutdown { fd: socket, how })
    }

    /// Close a descriptor, cancelling the operations in flight on it first
    /// (they complete with `ECANCELED`). The descriptor belongs to the
    /// reactor from the submission on, also if the close fails.
    ///
    /// On io_uring with cancel-by-descriptor (5.19 and later) the kernel
    /// matches by open file, not by number: operations in flight on a
    /// *duplicate* of `fd` (`dup`, or stdout and stderr of a `2>&1`
    /// process) are cancelled too, and complete with `ECANCELED` although
    /// their descriptor is still open. A caller that shares open files
    /// between descriptors submits such an operation again (the facade's
    /// streams do).
    pub fn close(fd: RawFd) -> Op {
        Op::new(OpKind::Close { fd })
    }

    /// Wait until `fd` is ready for `interest`; the result holds the
    /// readiness bits ([`Interest::bits`]). Only [`Interest::READABLE`] and
    /// [`Interest::WRITABLE`] count here (the other bits are dropped): see
    /// [`Op::poll_multi`] for the rest.
    pub fn poll(fd: RawFd, interest: Interest) -> Op {
        let interest = Interest::from_bits(interest.bits() & 3);
        Op::new(OpKind::Poll { fd, interest })
    }

    /// Watch `fd` for `interest` until cancelled, level-triggered (libuv's
    /// `uv_poll_t`): one completion, with [`Completion::more`] set, each
    /// time the reactor waits and finds the descriptor ready for some of
    /// `interest`, for as long as it is; the result holds the readiness
    /// bits ([`Completion::readiness`]), which may be spurious (the caller's
    /// nonblocking call then says `EAGAIN`). A hang-up or an error on the
    /// descriptor (`POLLHUP`, `POLLERR`) is reported as all of `interest`,
    /// so that the caller's read or write meets it. The final completion
    /// (`more == false`) is `ECANCELED` after [`Reactor::cancel`](crate::Reactor::cancel)
    /// or an [`Op::close`] of `fd`, or the error that made watching
    /// impossible (`EBADF`, `EPERM` for a regular file on the readiness
    /// backends).
    ///
    /// On the readiness backends it is a persistent level-triggered
    /// registration. On io_uring it is a single-shot `POLL_ADD` re-armed
    /// after each completion: io_uring's multishot poll
    /// (`IORING_POLL_ADD_MULTI`) reports each wake-up, not a condition
    /// that holds, so a caller that reads only part of what is there would
    /// never hear of the rest; the re-armed poll is submitted with the next
    /// wait, after the caller has handled the completion, and so checks
    /// the condition as it is then.
    ///
    /// [`Interest::DISCONNECT`] needs `EPOLLRDHUP`, which the `poll`
    /// backend (the `polling` crate) cannot ask for: there a peer's
    /// half-close is found by peeking when the socket is readable and the
    /// watch includes [`Interest::READABLE`]; a hang-up is reported
    /// everywhere.
    pub fn poll_multi(fd: RawFd, interest: Interest) -> Op {
        Op::new(OpKind::PollMulti {
            fd,
            interest,
            epoch: 0,
        })
    }

    /// `openat(2)`: open `path` relative to `dir` (`libc::AT_FDCWD` for the
    /// working directory). The result is the new descriptor. File operation:
    /// io_uring only.
    pub fn openat(dir: RawFd, path: CString, flags: i32, mode: u32) -> Op {
        Op::new(OpKind::OpenAt {
            dir,
            path,
            flags: flags | libc::O_CLOEXEC,
            mode,
        })
    }

    /// Read at `offset` into the spare capacity of `buf`, as [`Op::recv`].
    /// File operation: io_uring only.
    pub fn read_at(fd: RawFd, buf: Vec<u8>, offset: u64) -> Op {
        Op::new(OpKind::ReadAt { fd, buf, offset })
    }

    /// Write `buf` at `offset`; the result may be short. File operation:
    /// io_uring only.
    pub fn write_at(fd: RawFd, buf: Vec<u8>, offset: u64) -> Op {
        Op::new(OpKind::WriteAt { fd, buf, offset })
    }

    /// `statx(2)` of `path` relative to `dir` (`flags` as `AT_*`, e.g.
    /// `AT_SYMLINK_NOFOLLOW`); the completion carries a [`FileStat`].
    /// File operation: io_uring only.
    pub fn statx(dir: RawFd, path: CString, flags: i32) -> Op {
        Op::new(OpKind::Statx {
            dir,
            path,
            flags,
            stat: None,
        })
    }

    /// `fsync(2)`, or `fdatasync(2)` when `data_only`. File operation:
    /// io_uring only.
    pub fn fsync(fd: RawFd, data_only: bool) -> Op {
        Op::new(OpKind::Fsync { fd, data_only })
    }

    /// `unlinkat(2)` (`flags` `AT_REMOVEDIR` removes a directory). File
    /// operation: io_uring only.
    pub fn unlinkat(dir: RawFd, path: CString, flags: i32) -> Op {
        Op::new(OpKind::UnlinkAt { dir, path, flags })
    }

    /// `renameat2(2)`. File operation: io_uring only.
    pub fn renameat(old_dir: RawFd, old: CString, new_dir: RawFd, new: CString, flags: u32) -> Op {
        Op::new(OpKind::RenameAt(Box::new(RenameAt {
            old_dir,
            old,
            new_dir,
            new,
            flags,
        })))
    }

    /// `mkdirat(2)`. File operation: io_uring only.
    pub fn mkdirat(dir: RawFd, path: CString, mode: u32) -> Op {
        Op::new(OpKind::MkdirAt { dir, path, mode })
    }

    /// A whole small file in one operation: open `path` (relative to
    /// `dir`) read-only, read from its start into the spare capacity of
    /// `buf` until a read returns 0 (the end) or the buffer is full, and
    /// close it. File operation: io_uring only.
    ///
    /// On io_uring the two reads are one linked pair after the open: the
    /// first asks for most of the spare capacity and takes only what is
    /// there at once (`RWF_NOWAIT`; the page cache, for a warm file), the
    /// second (a *probe*) reads on from there into the rest, waiting if it
    /// must. So a file that ends within the buffer is seen to end (the
    /// probe returns 0) without knowing its size first, for any kind of
    /// file (pipes and `/proc` files too), and a file that was not cached
    /// is still read right (what the probe got follows; the caller reads
    /// on). Then the file is closed and
    /// the result is the byte count, with [`Completion::file`] `None`.
    /// If the probe found more, the file stays open: the result counts
    /// what was read, the descriptor comes back in [`Completion::file`]
    /// (the caller's to read on, at its current position, and to close).
    ///
    /// Where the kernel allows, the file is opened as a *direct
    /// descriptor* (a slot of a table registered with the ring, see
    /// [`UringInfo::direct_files`](crate::uring_ext::UringInfo::direct_files)): it
    /// takes no entry in the process's descriptor table, and the reads
    /// skip the per-call descriptor lookup. A file that goes on past the
    /// buffer then gets an ordinary descriptor for the caller
    /// (`IORING_OP_FIXED_FD_INSTALL`) before its slot is closed.
    ///
    /// Errors say which step failed in [`Completion::step`]. The spare
    /// capacity must be at least 2 bytes (else the submission is refused
    /// with `InvalidInput`).
    pub fn read_file(dir: RawFd, path: CString, buf: Vec<u8>) -> Op {
        Op::new(OpKind::ReadFile(Box::new(ReadFile {
            dir,
            path,
            buf,
            slot: None,
            fd: -1,
            handoff: None,
            ask: 0,
            probe: 0,
            first: None,
            second: None,
            step: ReadFileStep::Open,
            outcome: None,
        })))
    }

    /// Whether this is a file operation (which the polling backend refuses
    /// with [`io::ErrorKind::Unsupported`]).
    pub fn is_file_op(&self) -> bool {
        !self.file_ops_needed().is_empty()
    }

    /// The io_uring file operations this operation needs (empty for the
    /// others). A reactor whose [`Reactor::file_ops`](crate::Reactor::file_ops)
    /// lacks one of them refuses the operation with
    /// [`io::ErrorKind::Unsupported`].
    pub fn file_ops_needed(&self) -> FileOps {
        match self.kind {
            OpKind::OpenAt { .. } => FileOps::OPENAT,
            OpKind::ReadAt { .. } => FileOps::READ,
            OpKind::WriteAt { .. } => FileOps::WRITE,
            OpKind::Statx { .. } => FileOps::STATX,
            OpKind::Fsync { .. } => FileOps::FSYNC,
            OpKind::UnlinkAt { .. } => FileOps::UNLINKAT,
            OpKind::RenameAt(_) => FileOps::RENAMEAT,
            OpKind::MkdirAt { .. } => FileOps::MKDIRAT,
            OpKind::ReadFile(_) => FileOps::OPENAT.union(FileOps::READ).union(FileOps::CLOSE),
            _ => FileOps::NONE,
        }
    }

    /// The data buffer this operation owns, if any, taken out of it.
    pub fn into_buf(self) -> Option<Vec<u8>> {
        self.into_parts().0
    }

    /// The data buffer and the path this operation owns, if any, taken
    /// out of it (the path of openat, statx, unlinkat, mkdirat and
    /// read_file; renameat's first).
    pub fn into_parts(self) -> (Option<Vec<u8>>, Option<CString>) {
        match self.kind {
            OpKind::Send {
                buf: SendBytes::Vec(buf),
                ..
            }
            | OpKind::Recv { buf, .. }
            | OpKind::ReadAt { buf, .. }
            | OpKind::WriteAt { buf, .. } => (Some(buf), None),
            OpKind::ReadFile(rf) => (Some(rf.buf), Some(rf.path)),
            OpKind::OpenAt { path, .. }
            | OpKind::Statx { path, .. }
            | OpKind::UnlinkAt { path, .. }
            | OpKind::MkdirAt { path, .. } => (None, Some(path)),
            OpKind::RenameAt(r) => (None, Some(r.old)),
            _ => (None, None),
        }
    }
}

/// Who holds the bytes of an [`Op::send_owned`]: any owner that lends
/// them (`Rc<[u8]>`, `Arc<[u8]>`, `&'static [u8]`, `bytes::Bytes`...),
/// boxed, so the bytes do not move while the kernel reads them.
pub type SendOwner = Box<dyn AsRef<[u8]>>;

/// The outcome of one operation (or one shot of a multishot operation).
pub struct Completion {
    /// The token the operation was submitted with.
    pub token: Token,
    /// Bytes transferred; for accept and openat the new descriptor (owned by
    /// the caller); for poll the readiness bits; otherwise 0.
    pub result: io::Result<usize>,
    /// The data buffer, handed back: the caller's own for recv, send,
    /// read_at and write_at (also on error and on cancel), or a
    /// reactor-provided one for [`Op::recv_multi`].
    pub buf: Option<Vec<u8>>,
    /// The owner of an [`Op::send_owned`]'s bytes, handed back with its
    /// completion (on success, error and cancel alike).
    pub owner: Option<SendOwner>,
    /// The metadata of a successful [`Op::statx`].
    pub stat: Option<Box<FileStat>>,
    /// True when more completions will follow for this token (a multishot
    /// operation still armed); false on an operation's final completion.
    pub more: bool,
    /// [`Op::read_file`]: the descriptor, still open, when the file went
    /// on past the buffer (the caller's to read on and close).
    pub file: Option<RawFd>,
    /// [`Op::read_file`]: the step the result comes from (on success,
    /// [`ReadFileStep::Close`]).
    pub step: Option<ReadFileStep>,
    /// The path the operation owned (see [`Op::into_parts`]), handed back
    /// with its final completion, for an error message that names it.
    pub path: Option<CString>,
}

impl fmt::Debug for Completion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completion")
            .field("token", &self.token)
            .field("result", &self.result)
            .field("buf", &self.buf.as_ref().map(Vec::len))
            .field("owner", &self.owner.as_ref().map(|o| (**o).as_ref().len()))
            .field("stat", &self.stat)
            .field("more", &self.more)
            .field("file", &self.file)
            .field("step", &self.step)
            .field("path", &self.path)
            .finish()
    }
}

impl Completion {
    #[inline]
    pub(crate) fn new(token: Token, result: io::Result<usize>) -> Completion {
        Completion {
            token,
            result,
            buf: None,
            owner: None,
            stat: None,
            more: false,
            file: None,
            step: None,
            path: None,
        }
    }

    #[inline]
    pub(crate) fn with_buf(mut self, buf: Option<Vec<u8>>) -> Completion {
        self.buf = buf;
        self
    }

    #[inline]
    pub(crate) fn with_owner(mut self, owner: Option<SendOwner>) -> Completion {
        self.owner = owner;
        self
    }

    /// The descriptor an accept or openat produced.
    pub fn fd(&self) -> Option<RawFd> {
        match self.result {
            Ok(v) => RawFd::try_from(v).ok(),
            Err(_) => None,
        }
    }

    /// The readiness a poll operation reported.
    pub fn readiness(&self) -> Option<Interest> {
        match self.result {
            Ok(v) => Some(Interest::from_bits(v as u8)),
            Err(_) => None,
        }
    }

    /// Whether the operation ended because it was cancelled.
    pub fn is_cancelled(&self) -> bool {
        matches!(&self.result, Err(e) if e.raw_os_error() == Some(libc::ECANCELED))
    }
}

pub(crate) fn cancelled() -> io::Error {
    io::Error::from_raw_os_error(libc::ECANCELED)
}
