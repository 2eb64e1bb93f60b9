//! The readiness core both readiness backends share (`poll.rs` over the
//! `polling` crate, `epoll.rs` over raw epoll): the nonblocking attempt of
//! each operation. Compiled whenever either backend is.

use super::MultiBufs;
use super::slab::Tokened;
use crate::op::OpKind;
use crate::{Completion, Interest, Token};
use std::io;
use std::os::fd::RawFd;

/// Readable direction (readers' queue).
pub(super) const R: u8 = 1;
/// Writable direction (writers' queue).
pub(super) const W: u8 = 2;

/// One operation in flight.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) token: Token,
    pub(super) kind: OpKind,
}

impl Tokened for Entry {
    fn token(&self) -> Token {
        self.token
    }
}

/// What one attempt at an operation's system call gave.
pub(super) enum Step {
    /// Not ready after all: keep waiting.
    Block,
    /// The final completion: the entry is finished.
    Done(io::Result<usize>, Option<Vec<u8>>),
    /// One completion of a multishot operation, which stays armed.
    Again(Completion),
    /// No buffer to receive into (lending budget spent): wait for one.
    Park,
}

/// The descriptor an operation waits on (or works in).
pub(super) fn fd_of(kind: &OpKind) -> RawFd {
    match kind {
        OpKind::Accept { fd }
        | OpKind::AcceptMulti { fd, .. }
        | OpKind::Connect { fd, .. }
        | OpKind::Recv { fd, .. }
        | OpKind::RecvMulti { fd, .. }
        | OpKind::Send { fd, .. }
        | OpKind::Shutdown { fd, .. }
        | OpKind::Close { fd }
        | OpKind::Poll { fd, .. }
        | OpKind::ReadAt { fd, .. }
        | OpKind::WriteAt { fd, .. }
        | OpKind::Fsync { fd, .. } => *fd,
        OpKind::OpenAt { dir, .. }
        | OpKind::Statx { dir, .. }
        | OpKind::UnlinkAt { dir, .. }
        | OpKind::MkdirAt { dir, .. } => *dir,
        OpKind::ReadFile(rf) => rf.dir,
        OpKind::RenameAt(r) => r.old_dir,
    }
}

/// Maps a nonblocking call's result: `EAGAIN` is "not ready", `EINTR` retries.
fn nonblocking(mut call: impl FnMut() -> io::Result<isize>) -> Option<io::Result<usize>> {
    loop {
        match call() {
            Ok(n) => return Some(Ok(n as usize)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Some(Err(e)),
        }
    }
}

/// One nonblocking `accept4` (nonblocking, close-on-exec socket).
fn accept_one(fd: RawFd) -> Option<io::Result<usize>> {
    nonblocking(|| {
        let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        // SAFETY: null address pointers ask for no peer address.
        let r = unsafe {
            syscall!(accept4(
                fd,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                flags
            ))
        };
        r.map(|v| v as isize)
    })
}

/// One nonblocking `recv` into `buf`'s spare capacity.
fn recv_into(fd: RawFd, buf: &mut Vec<u8>) -> Option<io::Result<usize>> {
    let res = nonblocking(|| {
        let spare = buf.spare_capacity_mut();
        // SAFETY: the pointer and length describe the spare capacity of
        // `buf`, writable memory owned by this call for its duration.
        unsafe { syscall!(recv(fd, spare.as_mut_ptr().cast(), spare.len(), 0)) }
    })?;
    if let Ok(n) = res {
        // SAFETY: the kernel initialised `n` bytes of the spare capacity.
        unsafe { buf.set_len(buf.len() + n) };
    }
    Some(res)
}

/// Tries `entry`'s system call once (or a burst, for multishot ones).
pub(super) fn attempt(entry: &mut Entry, ready: u8, bufs: &mut MultiBufs) -> Step {
    let token = entry.token;
    match &mut entry.kind {
        OpKind::Accept { fd } => match accept_one(*fd) {
            None => Step::Block,
            Some(r) => Step::Done(r, None),
        },
        OpKind::AcceptMulti { fd, .. } => match accept_one(*fd) {
            None => Step::Block,
            Some(Ok(newfd)) => {
                let mut c = Completion::new(token, Ok(newfd));
                c.more = true;
                Step::Again(c)
            }
            Some(Err(e)) => Step::Done(Err(e), None),
        },
        OpKind::Recv { fd, buf } => match recv_into(*fd, buf) {
            None => Step::Block,
            Some(r) => Step::Done(r, Some(std::mem::take(buf))),
        },
        OpKind::RecvMulti { fd, .. } => {
            let Some(mut buf) = bufs.get() else {
                return Step::Park;
            };
            match recv_into(*fd, &mut buf) {
                None => {
                    bufs.keep(buf);
                    Step::Block
                }
                Some(Ok(0)) => {
                    bufs.keep(buf);
                    Step::Done(Ok(0), None)
                }
                Some(Ok(n)) => {
                    bufs.lend();
                    let mut c = Completion::new(token, Ok(n)).with_buf(Some(buf));
                    c.more = true;
                    Step::Again(c)
                }
                Some(Err(e)) => {
                    bufs.keep(buf);
                    Step::Done(Err(e), None)
                }
            }
        }
        OpKind::Send { fd, buf, from } => {
            let fd = *fd;
            let start = (*from).min(buf.len());
            let data = &buf[start..];
            let r = nonblocking(|| {
                // SAFETY: the pointer and length describe the initialised
                // bytes of `buf[start..]`, alive for the call.
                unsafe {
                    syscall!(send(
                        fd,
                        data.as_ptr().cast(),
                        data.len(),
                        libc::MSG_NOSIGNAL
                    ))
                }
            });
            match r {
                None => Step::Block,
                Some(r) => Step::Done(r, Some(std::mem::take(buf))),
            }
        }
        OpKind::Connect { fd, .. } => Step::Done(take_socket_error(*fd), None),
        OpKind::Poll { interest, .. } => {
            let got = ready & interest.bits();
            if got == 0 {
                Step::Block
            } else {
                Step::Done(Ok(usize::from(Interest::from_bits(got).bits())), None)
            }
        }
        _ => Step::Done(Err(io::ErrorKind::Unsupported.into()), None),
    }
}

/// The outcome of a nonblocking connect, once the socket is writable.
fn take_socket_error(fd: RawFd) -> io::Result<usize> {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `err` and `len` are valid for writes and `len` holds the size of `err`.
    unsafe {
        syscall!(getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&raw mut err).cast(),
            &mut len
        ))
    }?;
    if err == 0 {
        Ok(0)
    } else {
        Err(io::Error::from_raw_os_error(err))
    }
}
