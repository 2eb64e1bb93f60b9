//! The values fs operations take and give: open flags, open files,
//! metadata, directory entries.

use std::ffi::OsString;
use std::fmt;
use std::os::fd::RawFd;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use super::table::Key;
use crate::{Error, Result};

/// How to open a file: Node's flag strings (`"r"`, `"w+"`, `"ax"` ...)
/// or a builder in the way of [`std::fs::OpenOptions`].
///
/// ```
/// use eventide::fs::Flags;
/// assert_eq!(Flags::parse("wx")?, Flags::new().write(true).create(true).truncate(true).exclusive(true));
/// assert!(Flags::parse("rw").is_err()); // Node: ERR_INVALID_ARG_VALUE
/// # Ok::<(), eventide::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[must_use = "flags do nothing until given to an open"]
pub struct Flags {
    read: bool,
    write: bool,
    /// Every flag but the access mode (`O_CREAT`, `O_TRUNC` ...).
    extra: i32,
}

impl Flags {
    /// No access at all yet: add `read` and/or `write`. (Alone it opens
    /// read-only, as `O_RDONLY` is 0.)
    pub fn new() -> Flags {
        Flags::default()
    }

    /// Node's flag string: `r`, `rs`/`sr`, `r+`, `rs+`/`sr+`, `w`, `wx`/`xw`,
    /// `w+`, `wx+`/`xw+`, `a`, `ax`/`xa`, `as`/`sa`, `a+`, `ax+`/`xa+`,
    /// `as+`/`sa+`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgValue`] for anything else, worded as Node's
    /// `The argument 'flags' is invalid. Received 'rw'`.
    pub fn parse(flags: &str) -> Result<Flags> {
        let (read, write, extra) = match flags {
            "r" => (true, false, 0),
            "rs" | "sr" => (true, false, libc::O_SYNC),
            "r+" => (true, true, 0),
            "rs+" | "sr+" => (true, true, libc::O_SYNC),
            "w" => (false, true, libc::O_CREAT | libc::O_TRUNC),
            "wx" | "xw" => (false, true, libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL),
            "w+" => (true, true, libc::O_CREAT | libc::O_TRUNC),
            "wx+" | "xw+" => (true, true, libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL),
            "a" => (false, true, libc::O_CREAT | libc::O_APPEND),
            "ax" | "xa" => (false, true, libc::O_CREAT | libc::O_APPEND | libc::O_EXCL),
            "as" | "sa" => (false, true, libc::O_CREAT | libc::O_APPEND | libc::O_SYNC),
            "a+" => (true, true, libc::O_CREAT | libc::O_APPEND),
            "ax+" | "xa+" => (true, true, libc::O_CREAT | libc::O_APPEND | libc::O_EXCL),
            "as+" | "sa+" => (true, true, libc::O_CREAT | libc::O_APPEND | libc::O_SYNC),
            other => {
                return Err(Error::InvalidArgValue {
                    name: "flags",
                    reason: "is invalid",
                    received: format!("'{other}'"),
                });
            }
        };
        Ok(Flags { read, write, extra })
    }

    /// Raw `open(2)` flags (`O_CLOEXEC` is always added when opening).
    pub fn from_bits(bits: i32) -> Flags {
        let access = bits & libc::O_ACCMODE;
        Flags {
            read: access == libc::O_RDONLY || access == libc::O_RDWR,
            write: access == libc::O_WRONLY || access == libc::O_RDWR,
            extra: bits & !libc::O_ACCMODE,
        }
    }

    /// The `open(2)` flags these stand for.
    pub fn bits(self) -> i32 {
        let access = match (self.read, self.write) {
            (_, false) => libc::O_RDONLY,
            (false, true) => libc::O_WRONLY,
            (true, true) => libc::O_RDWR,
        };
        access | self.extra
    }

    fn with(mut self, flag: i32, on: bool) -> Flags {
        if on {
            self.extra |= flag;
        } else {
            self.extra &= !flag;
        }
        self
    }

    /// Open for reading.
    pub fn read(mut self, on: bool) -> Flags {
        self.read = on;
        self
    }

    /// Open for writing.
    pub fn write(mut self, on: bool) -> Flags {
        self.write = on;
        self
    }

    /// Create the file if it does not exist (`O_CREAT`).
    pub fn create(self, on: bool) -> Flags {
        self.with(libc::O_CREAT, on)
    }

    /// Fail if the file exists (`O_EXCL`, with `create`).
    pub fn exclusive(self, on: bool) -> Flags {
        self.with(libc::O_EXCL, on)
    }

    /// Truncate the file to 0 bytes (`O_TRUNC`).
    pub fn truncate(self, on: bool) -> Flags {
        self.with(libc::O_TRUNC, on)
    }

    /// Every write goes to the end (`O_APPEND`).
    pub fn append(self, on: bool) -> Flags {
        self.with(libc::O_APPEND, on)
    }

    /// Synchronous writes (`O_SYNC`).
    pub fn sync(self, on: bool) -> Flags {
        self.with(libc::O_SYNC, on)
    }
}

impl FromStr for Flags {
    type Err = Error;

    fn from_str(s: &str) -> Result<Flags> {
        Flags::parse(s)
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Flags({:#o})", self.bits())
    }
}

/// An open file: Node's file descriptor, as a small `Copy` key into its
/// loop's table of open files (every eventide handle is such a key; see
/// the [`fs` module](crate::fs#files)).
///
/// Operations take it by value: `lp.fs().read(file, buf, None, cb)`, as
/// Node's `fs.read(fd, ...)`. [`Fs::close`](crate::fs::Fs::close) closes
/// it: from then on an operation with the key fails with `EBADF`, worded
/// as Node's (`EBADF: bad file descriptor, read`), without a system call,
/// and never reaches a descriptor number the system has since given to
/// another file; so a descriptor is never closed twice. A key of another
/// loop is `EBADF` too: it names no file open on this one. `close` waits
/// for the operations queued on or running on the pool before it closes
/// the descriptor (its number is not reused under them; the close's
/// callback runs after theirs).
///
/// **Left open:** a file that is never closed stays open until its loop
/// is dropped, which closes it (with a `log::debug!` line; an error of
/// that close is lost). Call `close` to learn it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct File(pub(crate) Key);

/// A close's callback.
pub(crate) type OnClosed = Box<dyn FnOnce(&mut crate::Loop, Result<()>)>;

/// A close waiting for the pool operations on its descriptor.
pub(crate) struct DeferredClose {
    pub(crate) fd: RawFd,
    pub(crate) callback: OnClosed,
}

impl File {
    /// The descriptor, or `None` once closed (or for a key of another
    /// loop).
    pub fn fd(self, lp: &crate::Loop) -> Option<RawFd> {
        lp.io.fs.fd(self)
    }
}

impl fmt::Debug for File {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "File({}v{}@{})",
            self.0.slot.index, self.0.slot.generation, self.0.table
        )
    }
}

/// What kind of file a path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A block device.
    BlockDevice,
    /// A character device.
    CharDevice,
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
    /// Not known (the file system did not say).
    Unknown,
}

impl FileType {
    /// From the type bits of a mode (`st_mode & S_IFMT`).
    #[allow(clippy::unnecessary_cast)] // `mode_t` is `u16` on macOS and FreeBSD
    pub fn from_mode(mode: u32) -> FileType {
        const FMT: u32 = libc::S_IFMT as u32;
        const REG: u32 = libc::S_IFREG as u32;
        const DIR: u32 = libc::S_IFDIR as u32;
        const LNK: u32 = libc::S_IFLNK as u32;
        const BLK: u32 = libc::S_IFBLK as u32;
        const CHR: u32 = libc::S_IFCHR as u32;
        const FIFO: u32 = libc::S_IFIFO as u32;
        const SOCK: u32 = libc::S_IFSOCK as u32;
        match mode & FMT {
            REG => FileType::File,
            DIR => FileType::Dir,
            LNK => FileType::Symlink,
            BLK => FileType::BlockDevice,
            CHR => FileType::CharDevice,
            FIFO => FileType::Fifo,
            SOCK => FileType::Socket,
            _ => FileType::Unknown,
        }
    }

    pub(crate) fn from_std(t: std::fs::FileType) -> FileType {
        use std::os::unix::fs::FileTypeExt;
        if t.is_file() {
            FileType::File
        } else if t.is_dir() {
            FileType::Dir
        } else if t.is_symlink() {
            FileType::Symlink
        } else if t.is_block_device() {
            FileType::BlockDevice
        } else if t.is_char_device() {
            FileType::CharDevice
        } else if t.is_fifo() {
            FileType::Fifo
        } else if t.is_socket() {
            FileType::Socket
        } else {
            FileType::Unknown
        }
    }
}

/// One entry of [`Fs::readdir`](crate::fs::Fs::readdir) (Node's `Dirent`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's name (not its path).
    pub name: OsString,
    /// Its type, as the directory says (a symlink is `Symlink`).
    pub file_type: FileType,
}

/// File metadata (Node's `fs.Stats`), the same from io_uring's statx and
/// from the pool's `statx(2)` (Linux) or `fstatat(2)`/`fstat(2)` (elsewhere).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    /// The device holding the file.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Type and permission bits.
    pub mode: u32,
    /// Number of hard links.
    pub nlink: u64,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// The device this file is, if it is one.
    pub rdev: u64,
    /// Size in bytes.
    pub size: u64,
    /// Preferred I/O block size.
    pub blksize: u64,
    /// 512-byte blocks allocated.
    pub blocks: u64,
    /// Last access.
    pub atime: SystemTime,
    /// Last modification of the contents.
    pub mtime: SystemTime,
    /// Last change of the inode.
    pub ctime: SystemTime,
    /// Creation (the epoch where the file system does not record it).
    pub birthtime: SystemTime,
}

/// A statx time: `tv_sec` seconds (negative before the epoch) plus
/// `tv_nsec` nanoseconds, always forward (-1.5 s is `-2` and `500000000`).
#[cfg(target_os = "linux")]
fn time_of(t: libc::statx_timestamp) -> SystemTime {
    time_from(t.tv_sec, u64::from(t.tv_nsec))
}

/// `secs` seconds since the epoch (negative before it) plus `nanos`
/// nanoseconds forward.
fn time_from(secs: i64, nanos: u64) -> SystemTime {
    let whole_secs = Duration::from_secs(secs.unsigned_abs());
    let whole = if secs >= 0 {
        SystemTime::UNIX_EPOCH + whole_secs
    } else {
        SystemTime::UNIX_EPOCH - whole_secs
    };
    whole + Duration::from_nanos(nanos)
}

impl Stats {
    /// From the reactor's raw record: `statx` on Linux, `struct stat`
    /// elsewhere.
    pub(crate) fn from_raw(s: &eventide_reactor::RawStat) -> Stats {
        #[cfg(target_os = "linux")]
        return Stats::from_statx(s);
        #[cfg(not(target_os = "linux"))]
        return Stats::from_stat(s);
    }

    /// From `struct stat` (FreeBSD, macOS and the other BSDs all have
    /// `st_birthtime`; its `-1` or `0` means "not recorded").
    #[cfg(not(target_os = "linux"))]
    #[allow(clippy::unnecessary_cast)] // field widths differ per system
    fn from_stat(s: &libc::stat) -> Stats {
        let time =
            |secs: libc::time_t, nsec: libc::c_long| time_from(secs as i64, nsec.max(0) as u64);
        let birth = if s.st_birthtime > 0 {
            time(s.st_birthtime, s.st_birthtime_nsec)
        } else {
            SystemTime::UNIX_EPOCH
        };
        Stats {
            dev: s.st_dev as u64,
            ino: s.st_ino as u64,
            mode: u32::from(s.st_mode),
            nlink: s.st_nlink as u64,
            uid: s.st_uid,
            gid: s.st_gid,
            rdev: s.st_rdev as u64,
            size: s.st_size as u64,
            blksize: s.st_blksize as u64,
            blocks: s.st_blocks as u64,
            atime: time(s.st_atime, s.st_atime_nsec),
            mtime: time(s.st_mtime, s.st_mtime_nsec),
            ctime: time(s.st_ctime, s.st_ctime_nsec),
            birthtime: birth,
        }
    }

    #[cfg(target_os = "linux")]
    pub(crate) fn from_statx(s: &libc::statx) -> Stats {
        let dev = |major, minor| libc::makedev(major, minor);
        let birth = if s.stx_mask & libc::STATX_BTIME != 0 {
            time_of(s.stx_btime)
        } else {
            SystemTime::UNIX_EPOCH
        };
        Stats {
            dev: dev(s.stx_dev_major, s.stx_dev_minor),
            ino: s.stx_ino,
            mode: u32::from(s.stx_mode),
            nlink: u64::from(s.stx_nlink),
            uid: s.stx_uid,
            gid: s.stx_gid,
            rdev: dev(s.stx_rdev_major, s.stx_rdev_minor),
            size: s.stx_size,
            blksize: u64::from(s.stx_blksize),
            blocks: s.stx_blocks,
            atime: time_of(s.stx_atime),
            mtime: time_of(s.stx_mtime),
            ctime: time_of(s.stx_ctime),
            birthtime: birth,
        }
    }

    /// The file's type.
    pub fn file_type(&self) -> FileType {
        FileType::from_mode(self.mode)
    }

    /// Whether it is a regular file.
    pub fn is_file(&self) -> bool {
        self.file_type() == FileType::File
    }

    /// Whether it is a directory.
    pub fn is_dir(&self) -> bool {
        self.file_type() == FileType::Dir
    }

    /// Whether it is a symbolic link (only [`Fs::lstat`](crate::fs::Fs::lstat) sees one).
    pub fn is_symlink(&self) -> bool {
        self.file_type() == FileType::Symlink
    }

    /// The permission bits (`mode & 0o7777`).
    pub fn permissions(&self) -> u32 {
        self.mode & 0o7777
    }
}
