//! Streams over any descriptor: pipes, FIFOs, terminals, the process's
//! stdin/stdout/stderr, one end of a socketpair (libuv's `uv_pipe_open`
//! and `uv_tty_t`, Node's `net.Socket({ fd })`, `process.stdin`,
//! `process.stdout`, `tty`).
//!
//! A [`Pipe`] has the API of every [`Stream`] (read, write with
//! backpressure, end, close, pipe). What differs from a socket:
//!
//! - Over anything but a socket (a socket, such as a socketpair's end,
//!   keeps the sockets' path and its half-close), its reads and writes
//!   are `read(2)` and `write(2)`
//!   (`Op::read_multi`, `Op::write_from`; on io_uring `IORING_OP_READ` and
//!   `IORING_OP_WRITE` at the current position), chosen once at creation:
//!   the sockets' path is untouched.
//! - There is no half-close: [`Stream::end`] and [`Stream::shutdown`]
//!   both end it, the queued writes out first, then the descriptor is
//!   closed (that is the reader's end of file) once the other side ended
//!   too (at once for a descriptor opened write-only).
//! - A descriptor opened read-only takes no writes (they fail with
//!   `EBADF`); one opened write-only has nothing to read (a reader gets
//!   its end at once).
//! - A terminal io_uring cannot wait on answers `EAGAIN`: the stream then
//!   waits for readiness with a one-shot poll and goes again.
//!
//! # Nonblocking descriptors, and what Node does
//!
//! Every descriptor a [`Pipe`] owns is nonblocking and close-on-exec:
//! writes to stdout never block the loop. The nonblocking flag belongs to
//! the open file description, which other processes may share (a pipe
//! the shell made, a terminal): eventide sets it when the pipe opens and
//! clears it again when the pipe closes if it was clear before. For a
//! terminal, [`Loop::stdin`], [`Loop::stdout`] and [`Loop::stderr`] open
//! the terminal again by its name (as libuv's `uv_tty_init` does), so
//! that the flag is on a description of this process alone; only if that
//! fails is the shared one used.
//!
//! Node writes to `process.stdout`/`process.stderr` synchronously when
//! they are files or terminals (and pipes, on Linux), so that output is
//! not lost when the process exits. eventide never blocks the loop: its
//! writes are queued as on any stream, and what is queued when the
//! process exits without running the loop to the end is lost. Run the
//! loop until the write callbacks ran (or the stream ended) before
//! exiting. A regular file works on every backend for writing (a write to
//! a file is never `EAGAIN`); reading a regular file through a `Pipe`
//! works on io_uring only (epoll refuses regular files with `EPERM`): use
//! [`crate::fs`] streams for files.
//!
//! # Terminals
//!
//! [`Pipe::is_tty`], [`Pipe::set_raw_mode`] (restored when the pipe
//! closes, and at process exit), [`Pipe::window_size`] and
//! [`Pipe::on_resize`]. The resize event comes from `SIGWINCH`: the first
//! resize callback of a loop adds the loop's own listener of the signal
//! (an unreferenced one, beside any of the program's), which runs every
//! open terminal pipe's callback with its new size.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, Once};

use socket2::Socket;

use super::Pipe;
use super::stream::{NOT_SOCKET, Stream, StreamState};
use crate::event_loop::Loop;
use crate::{Error, Result};

/// A terminal's size in character cells (`TIOCGWINSZ`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowSize {
    /// Columns (Node's `columns`).
    pub columns: u16,
    /// Rows (Node's `rows`).
    pub rows: u16,
}

/// The callback of [`Pipe::on_resize`].
pub(crate) type OnResize = Box<dyn FnMut(&mut Loop, Pipe, WindowSize)>;

/// What a descriptor was before a pipe changed it, restored at its close
/// (and, for a terminal's mode, at process exit): by descriptor number,
/// process-wide (descriptor numbers are).
#[derive(Default)]
struct Restore {
    /// Descriptors whose description had `O_NONBLOCK` clear.
    blocking: HashMap<RawFd, ()>,
    /// Terminals in raw mode: their mode before.
    termios: HashMap<RawFd, libc::termios>,
}

static RESTORE: Mutex<Option<Restore>> = Mutex::new(None);

fn with_restore<R>(f: impl FnOnce(&mut Restore) -> R) -> R {
    let mut guard = RESTORE.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(Restore::default))
}

/// Restores every terminal left in raw mode: registered with `atexit` the
/// first time a terminal goes raw.
extern "C" fn restore_at_exit() {
    let saved: Vec<(RawFd, libc::termios)> =
        with_restore(|r| r.termios.drain().collect::<Vec<_>>());
    for (fd, mode) in saved {
        // SAFETY: `mode` is a termios read from this descriptor; a
        // descriptor closed meanwhile makes this an EBADF, nothing more.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &mode) };
    }
}

/// A pipe's descriptor is about to be closed: its terminal mode and its
/// blocking flag go back to what they were (called by the stream's close).
pub(crate) fn releasing(fd: RawFd) {
    let (mode, blocking) =
        with_restore(|r| (r.termios.remove(&fd), r.blocking.remove(&fd).is_some()));
    if let Some(mode) = mode {
        // SAFETY: `mode` was read from this descriptor, still open here.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &mode) };
    }
    if blocking {
        let _ = set_nonblocking(fd, false);
    }
}

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Sets or clears `O_NONBLOCK`; returns whether it was set before.
fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<bool> {
    // SAFETY: fcntl with F_GETFL/F_SETFL takes no pointers.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    let was = flags & libc::O_NONBLOCK != 0;
    let want = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    if want != flags {
        // SAFETY: as above.
        cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, want) })?;
    }
    Ok(was)
}

/// Makes `fd` ready for a pipe: close-on-exec, nonblocking (recording a
/// blocking description to restore), and says whether it can be read and
/// written (`O_ACCMODE`; a socket both).
fn prepare(fd: RawFd) -> io::Result<(bool, bool)> {
    // SAFETY: fcntl with F_GETFD/F_SETFD/F_GETFL takes no pointers.
    let fdflags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFD, fdflags | libc::FD_CLOEXEC) })?;
    // SAFETY: as above.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    let was = set_nonblocking(fd, true)?;
    if !was {
        with_restore(|r| r.blocking.insert(fd, ()));
    }
    Ok(match flags & libc::O_ACCMODE {
        libc::O_RDONLY => (true, false),
        libc::O_WRONLY => (false, true),
        _ => (true, true),
    })
}

fn pipe_error(syscall: &'static str, e: io::Error) -> Error {
    Error::net(syscall, None, e)
}

impl Loop {
    /// A stream over `fd`, any descriptor: one end of a pipe, a FIFO, a
    /// terminal, a socket (Node's `new net.Socket({ fd })`, libuv's
    /// `uv_pipe_open`). The pipe owns it from now on: it is made
    /// nonblocking and close-on-exec, and closed when the pipe closes (a
    /// nonblocking flag it set on a shared description is cleared again
    /// then). Whether it reads, writes or both follows how it was opened.
    ///
    /// # Errors
    ///
    /// [`Error::Net`] (`open EBADF`) when `fd` is not an open descriptor.
    pub fn pipe_open(&mut self, fd: OwnedFd) -> Result<Pipe> {
        let (readable, writable) = prepare(fd.as_raw_fd()).map_err(|e| pipe_error("open", e))?;
        Ok(self.pipe_insert(fd, readable, writable))
    }

    /// A new pipe (`pipe2(2)`, nonblocking and close-on-exec): its reading
    /// end and its writing end, each a [`Pipe`] of this loop.
    ///
    /// # Errors
    ///
    /// [`Error::Net`] (`pipe EMFILE`) when the system refuses.
    pub fn pipe_pair(&mut self) -> Result<(Pipe, Pipe)> {
        let (r, w) = cloexec_pipe().map_err(|e| pipe_error("pipe", e))?;
        set_nonblocking(r.as_raw_fd(), true).map_err(|e| pipe_error("pipe", e))?;
        set_nonblocking(w.as_raw_fd(), true).map_err(|e| pipe_error("pipe", e))?;
        let r = self.pipe_insert(r, true, false);
        let w = self.pipe_insert(w, false, true);
        Ok((r, w))
    }

    /// Node's `process.stdin`: a readable [`Pipe`] over a descriptor of
    /// its own for the process's standard input (a terminal opened again
    /// by its name, else a duplicate of descriptor 0); descriptor 0
    /// itself stays open. See the [module documentation](self) for the
    /// nonblocking flag.
    ///
    /// # Errors
    ///
    /// [`Error::Net`] when the descriptor cannot be duplicated (standard
    /// input closed: `EBADF`).
    pub fn stdin(&mut self) -> Result<Pipe> {
        self.std_pipe(0, true, false)
    }

    /// Node's `process.stdout`: a writable [`Pipe`] over a descriptor of
    /// its own for the standard output, as [`Loop::stdin`]. Writes never
    /// block the loop (see the [module documentation](self) for what
    /// Node does instead).
    ///
    /// # Errors
    ///
    /// As [`Loop::stdin`].
    pub fn stdout(&mut self) -> Result<Pipe> {
        self.std_pipe(1, false, true)
    }

    /// Node's `process.stderr`, as [`Loop::stdout`].
    ///
    /// # Errors
    ///
    /// As [`Loop::stdin`].
    pub fn stderr(&mut self) -> Result<Pipe> {
        self.std_pipe(2, false, true)
    }

    fn std_pipe(&mut self, fd: RawFd, readable: bool, writable: bool) -> Result<Pipe> {
        let own = reopen_tty(fd).map_or_else(|| dup(fd), Ok);
        let own = own.map_err(|e| pipe_error("open", e))?;
        let (can_read, can_write) = prepare(own.as_raw_fd()).map_err(|e| pipe_error("open", e))?;
        Ok(self.pipe_insert(own, readable && can_read, writable && can_write))
    }

    /// A pipe's stream over `fd`, already nonblocking and close-on-exec.
    pub(crate) fn pipe_insert(&mut self, fd: OwnedFd, readable: bool, writable: bool) -> Pipe {
        let is_socket = is_socket(fd.as_raw_fd());
        self.pipe_insert_as(fd, readable, writable, is_socket)
    }

    /// A stream over `fd` (nonblocking, close-on-exec) on the `read(2)`/
    /// `write(2)` path even if it is a socket: a child's stdio socketpair
    /// end, which only reads or only writes (its end is its close), and
    /// reads 64 KiB at a time (`Op::read_multi`) where a socket's receive
    /// takes 16 KiB.
    pub(crate) fn pipe_insert_rw(&mut self, fd: OwnedFd, readable: bool, writable: bool) -> Pipe {
        self.pipe_insert_as(fd, readable, writable, false)
    }

    fn pipe_insert_as(
        &mut self,
        fd: OwnedFd,
        readable: bool,
        writable: bool,
        is_socket: bool,
    ) -> Pipe {
        // SAFETY: the descriptor is owned (an `OwnedFd`); `Socket` only
        // holds it and closes it once, and the stream uses no socket call
        // on it unless it is one (`NOT_SOCKET`).
        let socket = unsafe { Socket::from_raw_fd(fd.into_raw_fd()) };
        let state = if is_socket {
            // A socket (a socketpair's end) keeps the sockets' path: its
            // end is a real half-close. One that is only written (a
            // child's stdin) has its input ended at once, so that its end
            // closes it once the FIN is out.
            let mut state = StreamState::new(socket);
            if !readable {
                state.mark_ended_input();
            }
            state
        } else {
            StreamState::pipe(socket, readable, writable)
        };
        Pipe(Stream::insert(self, state))
    }
}

impl StreamState {
    /// The state of a stream over a descriptor that is not (or need not
    /// be treated as) a socket.
    pub(super) fn pipe(socket: Socket, readable: bool, writable: bool) -> StreamState {
        let mut s = StreamState::new(socket);
        s.add_flags(NOT_SOCKET);
        if !readable {
            // Nothing to read: its end is known, and does not end it.
            s.mark_ended_input();
        }
        // A descriptor opened read-only takes writes like any other; the
        // kernel answers them `EBADF`.
        let _ = writable;
        s
    }
}

/// Whether `fd` is a socket (`fstat`).
fn is_socket(fd: RawFd) -> bool {
    // SAFETY: stat is plain old data; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid stat to fill.
    let rc = unsafe { libc::fstat(fd, &mut st) };
    rc == 0 && st.st_mode & libc::S_IFMT == libc::S_IFSOCK
}

/// `pipe2(O_CLOEXEC)`: (read end, write end).
#[cfg(not(target_vendor = "apple"))]
pub(crate) fn cloexec_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded: both are new descriptors owned here.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// macOS has no `pipe2`: `pipe`, then `FD_CLOEXEC` on each end (as libuv
/// does there; not atomic against a concurrent fork+exec).
#[cfg(target_vendor = "apple")]
pub(crate) fn cloexec_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe writes.
    cvt(unsafe { libc::pipe(fds.as_mut_ptr()) })?;
    // SAFETY: pipe succeeded: both are new descriptors owned here.
    let ends = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    for fd in [&ends.0, &ends.1] {
        // SAFETY: F_SETFD takes an integer; the descriptor is open.
        cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) })?;
    }
    Ok(ends)
}

/// A close-on-exec duplicate of `fd`, numbered 3 or above.
fn dup(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC takes no pointers.
    let new = cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) })?;
    // SAFETY: a new descriptor, owned here.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// `fd`'s terminal opened again by its name, read-write (a description
/// of this process's own), if `fd` is a terminal.
fn reopen_tty(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: isatty takes no pointers.
    if unsafe { libc::isatty(fd) } != 1 {
        return None;
    }
    let mut name = [0 as libc::c_char; 256];
    // SAFETY: `name` has room for `name.len()` bytes, as told.
    if unsafe { libc::ttyname_r(fd, name.as_mut_ptr(), name.len()) } != 0 {
        return None;
    }
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: `name` is NUL-terminated by ttyname_r.
    let new = unsafe { libc::open(name.as_ptr(), flags) };
    // SAFETY: a new descriptor, owned here.
    (new >= 0).then(|| unsafe { OwnedFd::from_raw_fd(new) })
}

impl Pipe {
    /// Whether the descriptor is a terminal (Node's `isTTY`); `false` for
    /// a closed pipe.
    pub fn is_tty(self, lp: &Loop) -> bool {
        // SAFETY: isatty takes no pointers; the descriptor is the pipe's.
        self.raw_fd(lp)
            .is_ok_and(|fd| unsafe { libc::isatty(fd) } == 1)
    }

    /// Raw mode on a terminal (Node's `setRawMode`, libuv's
    /// `UV_TTY_MODE_RAW`): input byte by byte, no echo, no signals from
    /// keys, no output processing. `false` puts back the mode from before.
    /// The mode from before also comes back when the pipe closes and at
    /// process exit (`atexit`, so not after a signal kills the process).
    ///
    /// # Errors
    ///
    /// [`Error::Stale`] once closed; [`Error::Net`] (`setRawMode ENOTTY`)
    /// for a descriptor that is not a terminal.
    pub fn set_raw_mode(self, lp: &Loop, raw: bool) -> Result<()> {
        let fd = self.raw_fd(lp)?;
        let error = |e| pipe_error("setRawMode", e);
        if !raw {
            if let Some(mode) = with_restore(|r| r.termios.remove(&fd)) {
                // SAFETY: `mode` was read from this descriptor.
                cvt(unsafe { libc::tcsetattr(fd, libc::TCSADRAIN, &mode) }).map_err(error)?;
            }
            return Ok(());
        }
        // SAFETY: termios is plain old data; tcgetattr fills it.
        let mut mode: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `mode` is a valid termios to fill.
        cvt(unsafe { libc::tcgetattr(fd, &mut mode) }).map_err(error)?;
        let before = mode;
        // SAFETY: `mode` is a valid termios.
        unsafe { libc::cfmakeraw(&mut mode) };
        // SAFETY: as above.
        cvt(unsafe { libc::tcsetattr(fd, libc::TCSADRAIN, &mode) }).map_err(error)?;
        with_restore(|r| {
            r.termios.entry(fd).or_insert(before);
        });
        static AT_EXIT: Once = Once::new();
        AT_EXIT.call_once(|| {
            // SAFETY: registers a plain `extern "C" fn()` that only takes a
            // lock and restores terminal modes.
            unsafe { libc::atexit(restore_at_exit) };
        });
        Ok(())
    }

    /// The terminal's size (Node's `columns`/`rows`, `TIOCGWINSZ`).
    ///
    /// # Errors
    ///
    /// [`Error::Stale`] once closed; [`Error::Net`]
    /// (`getWindowSize ENOTTY`) for a descriptor that is not a terminal.
    pub fn window_size(self, lp: &Loop) -> Result<WindowSize> {
        let fd = self.raw_fd(lp)?;
        // SAFETY: winsize is plain old data.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ writes one winsize into `ws`.
        cvt(unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) })
            .map_err(|e| pipe_error("getWindowSize", e))?;
        Ok(WindowSize {
            columns: ws.ws_col,
            rows: ws.ws_row,
        })
    }

    /// Node's `'resize'` event of a terminal's stream: `on_resize` runs
    /// with the new size each time the process receives `SIGWINCH` (the
    /// terminal's size changed). Replaces an earlier one; dropped when the
    /// pipe closes. Returns `false` for a closed pipe, or if the signal
    /// cannot be listened to (then nothing is set).
    pub fn on_resize(
        self,
        lp: &mut Loop,
        on_resize: impl FnMut(&mut Loop, Pipe, WindowSize) + 'static,
    ) -> bool {
        if self.raw_fd(lp).is_err() {
            return false;
        }
        if lp.io.net.winch.is_none() {
            let winch = crate::signal::Signal::WINCH;
            match lp.on_signal_internal(winch, |lp, _| window_changed(lp)) {
                Ok(listener) => lp.io.net.winch = Some(listener),
                Err(error) => {
                    log::warn!("no resize events: {error}");
                    return false;
                }
            }
        }
        let list = &mut lp.io.net.resize;
        list.retain(|(p, _)| *p != self);
        list.push((self, Box::new(on_resize)));
        true
    }
}

/// On `SIGWINCH` (the loop's own listener, once per signal delivered):
/// each open terminal pipe with an [`Pipe::on_resize`] callback gets its
/// current size. Callbacks of closed pipes are dropped here.
fn window_changed(lp: &mut Loop) {
    let list = std::mem::take(&mut lp.io.net.resize);
    let mut keep = Vec::with_capacity(list.len());
    let mut unwind = super::stream::Unwind::default();
    for (pipe, mut on_resize) in list {
        let Ok(size) = pipe.window_size(lp) else {
            continue;
        };
        unwind.run(|| on_resize(lp, pipe, size));
        if pipe.raw_fd(lp).is_ok() {
            keep.push((pipe, on_resize));
        }
    }
    // Callbacks set meanwhile (by a callback) win over the ones run.
    let added = std::mem::replace(&mut lp.io.net.resize, keep);
    for (pipe, on_resize) in added {
        lp.io.net.resize.retain(|(p, _)| *p != pipe);
        lp.io.net.resize.push((pipe, on_resize));
    }
    unwind.resume();
}
