//! Unix domain stream sockets: connect (listening is in `listener`).
//!
//! `connect(2)` on `AF_UNIX` has no io_uring path the reactor offers for a
//! path, so it is libuv's pipe connect: a nonblocking `connect`, which on
//! Linux succeeds or fails at once; `EINPROGRESS` (other systems) waits
//! for the socket to become writable with [`Op::poll`] and then reads the
//! outcome from `SO_ERROR`. `EAGAIN` (the listener's backlog is full) is
//! an error, as in libuv and Node (`connect EAGAIN /tmp/app.sock`): on
//! Linux that socket is not connecting, and would turn writable without
//! ever being connected.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use eventide_reactor::{Interest, Op};
use socket2::SockAddr;

use super::UnixStream;
use super::stream::{Peer, Stream, StreamState};
use crate::event_loop::Loop;
use crate::{Error, Result};

impl Loop {
    /// Connects to the Unix domain stream socket at `path` (Node's
    /// `net.connect(path)`); `on_connect` runs with the stream once
    /// connected, or with the error (`connect ENOENT /tmp/app.sock`). As
    /// with [`Loop::tcp_connect`], the stream is returned at once, and
    /// the callback never runs inside this call.
    ///
    /// # Errors
    ///
    /// [`Error::NetPath`] when the socket cannot be made (too many open
    /// files, say) or the path is too long for a socket address.
    #[track_caller]
    pub fn unix_connect(
        &mut self,
        path: impl AsRef<Path>,
        on_connect: impl FnOnce(&mut Loop, Result<UnixStream>) + 'static,
    ) -> Result<UnixStream> {
        let path = path.as_ref();
        let error = |e| Error::net_path("connect", path, e);
        let addr = SockAddr::unix(path).map_err(error)?;
        let socket = super::unix_socket().map_err(error)?;
        let fd = socket.as_raw_fd();
        let started = socket.connect(&addr);
        let peer = Peer::Path(path.to_path_buf());
        let on_connect = Box::new(move |lp: &mut Loop, r: Result<Stream>| {
            on_connect(lp, r.map(UnixStream));
        });
        let state = StreamState::connecting(socket, peer, on_connect);
        let id = Stream::insert(self, state);
        self.remember_site(
            crate::diag::Kind::Stream,
            id.raw(),
            std::panic::Location::caller(),
        );
        match started {
            // Known at once: reported from the pending phase.
            Ok(()) => self.defer(move |lp| id.connected(lp, Ok(()))),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINPROGRESS)) => {
                let op = Op::poll(fd, Interest::WRITABLE);
                let submitted = self.submit_io(op, move |lp, c| {
                    let outcome = c.result.and_then(|_| id.socket_error(lp));
                    id.connected(lp, outcome);
                });
                if let Err(refused) = submitted {
                    id.forget(self);
                    return Err(error(refused.error));
                }
            }
            Err(e) => self.defer(move |lp| id.connected(lp, Err(e))),
        }
        Ok(UnixStream(id))
    }
}

impl Stream {
    /// The socket's pending error (`SO_ERROR`), after a connect.
    fn socket_error(self, lp: &Loop) -> std::io::Result<()> {
        let Ok(socket) = self.socket(lp) else {
            return Ok(()); // Closed meanwhile: `connected` ignores it.
        };
        match socket.take_error()? {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// The credentials of a Unix domain stream's peer process, as the kernel
/// recorded them when the connection was made (`SO_PEERCRED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct PeerCred {
    /// The peer's process id.
    pub pid: i32,
    /// The peer's effective user id.
    pub uid: u32,
    /// The peer's effective group id.
    pub gid: u32,
}

impl UnixStream {
    /// The peer process's credentials (`SO_PEERCRED` on Linux,
    /// `LOCAL_PEERCRED` on FreeBSD, `getpeereid` and `LOCAL_PEERPID` on
    /// macOS): who is on the other end, for a server that serves some
    /// users only.
    ///
    /// # Errors
    ///
    /// [`Error::Stale`] once closed; the system's error otherwise
    /// (`getsockopt ENOTSUP` on a system without a way to ask).
    pub fn peer_cred(self, lp: &Loop) -> Result<PeerCred> {
        let socket = self.0.socket(lp)?;
        peer_cred_of(socket.as_raw_fd()).map_err(|e| Error::net("getsockopt", None, e))
    }

    /// The path this end is bound to: the listener's path on a connection
    /// it accepted, `None` on a connecting side (its socket is unnamed).
    ///
    /// # Errors
    ///
    /// [`Error::Stale`] once closed; the system's error otherwise.
    pub fn local_path(self, lp: &Loop) -> Result<Option<PathBuf>> {
        let addr = self.0.socket(lp)?.local_addr();
        let addr = addr.map_err(|e| Error::net("getsockname", None, e))?;
        Ok(addr.as_pathname().map(Path::to_path_buf))
    }

    /// The path the peer is bound to: the listener's path on the
    /// connecting side, `None` on an accepted connection (the connecting
    /// socket is unnamed).
    ///
    /// # Errors
    ///
    /// [`Error::Stale`] once closed; `ENOTCONN` before the connection is
    /// made; the system's error otherwise.
    pub fn peer_path(self, lp: &Loop) -> Result<Option<PathBuf>> {
        let addr = self.0.socket(lp)?.peer_addr();
        let addr = addr.map_err(|e| Error::net("getpeername", None, e))?;
        Ok(addr.as_pathname().map(Path::to_path_buf))
    }
}

/// `getsockopt(fd, level, name)` into a `T` (plain old data).
#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_vendor = "apple"
))]
fn getsockopt<T>(fd: std::os::fd::RawFd, level: i32, name: i32) -> std::io::Result<T> {
    // SAFETY: every `T` this is called with is a C struct or integer of
    // plain old data, for which all zeroes is a valid value.
    let mut value: T = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `value`, which
    // is that large; `fd` is open (the stream owns it).
    let rc = unsafe { libc::getsockopt(fd, level, name, (&raw mut value).cast(), &mut len) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(value)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn peer_cred_of(fd: std::os::fd::RawFd) -> std::io::Result<PeerCred> {
    let cred: libc::ucred = getsockopt(fd, libc::SOL_SOCKET, libc::SO_PEERCRED)?;
    Ok(PeerCred {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
    })
}

#[cfg(target_os = "freebsd")]
fn peer_cred_of(fd: std::os::fd::RawFd) -> std::io::Result<PeerCred> {
    let cred: libc::xucred = getsockopt(fd, libc::SOL_LOCAL, libc::LOCAL_PEERCRED)?;
    // SAFETY: the kernel fills `cr_pid` (FreeBSD 13 and later; zero, from
    // the zeroed record, before); the union holds plain integers.
    let pid = unsafe { cred.cr_pid__c_anonymous_union.cr_pid };
    Ok(PeerCred {
        pid,
        uid: cred.cr_uid,
        gid: cred.cr_groups[0],
    })
}

#[cfg(target_vendor = "apple")]
fn peer_cred_of(fd: std::os::fd::RawFd) -> std::io::Result<PeerCred> {
    let (mut uid, mut gid) = (0, 0);
    // SAFETY: getpeereid writes two ids; `fd` is open.
    if unsafe { libc::getpeereid(fd, &mut uid, &mut gid) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let pid: libc::pid_t = getsockopt(fd, libc::SOL_LOCAL, libc::LOCAL_PEERPID)?;
    Ok(PeerCred { pid, uid, gid })
}

#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_vendor = "apple"
)))]
fn peer_cred_of(_: std::os::fd::RawFd) -> std::io::Result<PeerCred> {
    Err(std::io::Error::from_raw_os_error(libc::ENOTSUP))
}
