//! Adopting std sockets (`from_std`, `from_fd`), handing them back
//! (`into_std`), and borrowing a socket's descriptor (`fd`).
//!
//! Adoption checks what the descriptor is (a socket, of the family and
//! type asked, connected for a stream, listening for a listener), then
//! makes it nonblocking and close-on-exec and puts it in the loop's table
//! as if the loop had made it: from then on the loop owns it and closes
//! it with the handle.
//!
//! Handing back is asynchronous, because no operation of the reactor may
//! still run on a descriptor the user owns: the stream's receive (or the
//! listener's accept) is cancelled, and the socket is handed over only
//! once that operation's final completion has come back. Bytes received
//! meanwhile (and chunks received and not yet read) go with it
//! ([`HandedBack::unread`]), connections accepted meanwhile likewise
//! ([`HandedBackListener::accepted`]). A stream with writes queued or in
//! flight, a connect, a shutdown or an `end` in progress is refused with
//! `EBUSY` (`into_std EBUSY`), and stays open and usable: tokio's
//! `into_std` has nothing in flight to lose (its writes are the caller's
//! own system calls); here the queue would be lost, so it is refused.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use eventide_reactor::Completion;
use socket2::{Socket, Type};

use super::listener::Place;
use super::{ListenOptions, Listener, Stream};
use super::{TcpListener, TcpStream, UnixListener, UnixStream};
use crate::event_loop::Loop;
use crate::{Error, Result};

/// A stream handed back to std by `into_std`
/// ([`TcpStream::into_std`], [`UnixStream::into_std`]).
#[derive(Debug)]
#[non_exhaustive]
pub struct HandedBack<S> {
    /// The socket, still nonblocking (as tokio's `into_std` leaves it:
    /// `set_nonblocking(false)` for blocking I/O) and close-on-exec.
    pub socket: S,
    /// Bytes the loop had already received and no reader had taken, in
    /// order: they come before anything read from `socket`.
    pub unread: Vec<u8>,
}

/// A listener handed back to std by `into_std`
/// ([`TcpListener::into_std`], [`UnixListener::into_std`]).
#[derive(Debug)]
#[non_exhaustive]
pub struct HandedBackListener<L, S> {
    /// The listening socket, still nonblocking and close-on-exec.
    pub listener: L,
    /// Connections the loop's accept had taken and not yet delivered to
    /// the connection callback when it was cancelled: they are the
    /// caller's now (nonblocking, close-on-exec), as if accepted from
    /// `listener`. The others wait in its backlog. (On io_uring, one the
    /// kernel accepts after the cancel was asked is closed by the
    /// reactor, its rule for a cancelled accept: that client sees its
    /// connection end, as the backlog's do when a listener closes.)
    pub accepted: Vec<S>,
}

type OnStream = Box<dyn FnOnce(&mut Loop, Result<(Socket, Vec<u8>)>)>;
type OnListener = Box<dyn FnOnce(&mut Loop, Result<(Socket, Vec<Socket>)>)>;

/// A socket on its way back to the user: waiting for its last operation.
pub(super) enum HandingBack {
    Stream {
        stream: Stream,
        socket: Socket,
        unread: Vec<u8>,
        /// A receive error that came in meanwhile: the hand-back fails
        /// with it (the socket's pending error was taken by the receive).
        error: Option<io::Error>,
        on_done: OnStream,
    },
    Listener {
        listener: Listener,
        socket: Socket,
        accepted: Vec<Socket>,
        on_done: OnListener,
    },
}

/// The hand-backs waiting for their operation's final completion.
#[derive(Default)]
pub(crate) struct HandBacks(Vec<HandingBack>);

impl HandBacks {
    /// Whether `listener` is being handed back (its accept's completions
    /// come here).
    pub(super) fn has_listener(&self, listener: Listener) -> bool {
        self.0
            .iter()
            .any(|h| matches!(h, HandingBack::Listener { listener: l, .. } if *l == listener))
    }
}

impl HandingBack {
    /// Hands the socket over: the caller's callback runs with it (or with
    /// the receive error that came in meanwhile, the socket then closed).
    pub(super) fn finish(self, lp: &mut Loop) {
        match self {
            HandingBack::Stream {
                socket,
                unread,
                error: None,
                on_done,
                ..
            } => on_done(lp, Ok((socket, unread))),
            HandingBack::Stream {
                socket,
                error: Some(error),
                on_done,
                ..
            } => {
                super::close_socket(lp, socket);
                on_done(lp, Err(Error::net("read", None, error)));
            }
            HandingBack::Listener {
                socket,
                accepted,
                on_done,
                ..
            } => on_done(lp, Ok((socket, accepted))),
        }
    }
}

/// A completion of the receive of `stream`, which is no longer in the
/// table: if it is being handed back, keeps its bytes (or error), and on
/// the final completion returns the hand-back, to finish once the
/// completion's buffer is recycled.
pub(super) fn received_while_handing_back(
    lp: &mut Loop,
    stream: Stream,
    c: &Completion,
) -> Option<HandingBack> {
    let list = &mut lp.io.net.hand_backs.0;
    let at = list
        .iter()
        .position(|h| matches!(h, HandingBack::Stream { stream: s, .. } if *s == stream))?;
    if let HandingBack::Stream { unread, error, .. } = &mut list[at] {
        match &c.result {
            Ok(n) if *n > 0 => {
                if let Some(buf) = &c.buf {
                    unread.extend_from_slice(buf);
                }
            }
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ECANCELED | libc::ENOBUFS)) => {}
            Err(e) if error.is_none() => {
                *error = Some(match e.raw_os_error() {
                    Some(errno) => io::Error::from_raw_os_error(errno),
                    None => io::Error::from(e.kind()),
                });
            }
            Err(_) => {}
        }
    }
    (!c.more).then(|| list.swap_remove(at))
}

/// A completion of the accept of `listener`, which is being handed back:
/// a connection is kept for the caller; the final completion finishes.
pub(super) fn accepted_while_handing_back(lp: &mut Loop, listener: Listener, c: Completion) {
    let list = &mut lp.io.net.hand_backs.0;
    let Some(at) = list
        .iter()
        .position(|h| matches!(h, HandingBack::Listener { listener: l, .. } if *l == listener))
    else {
        return;
    };
    if let (Ok(fd), HandingBack::Listener { accepted, .. }) = (c.result, &mut list[at]) {
        let fd = std::os::fd::RawFd::try_from(fd).expect("a descriptor fits in RawFd");
        // SAFETY: the reactor hands over the descriptor accept just made:
        // open, and owned by nobody else.
        let socket = unsafe { <Socket as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        // As the loop's own accepts make them (accept4 with both flags).
        let _ = socket.set_nonblocking(true);
        let _ = set_cloexec(&socket);
        accepted.push(socket);
    }
    if !c.more {
        list.swap_remove(at).finish(lp);
    }
}

/// What a descriptor must be to be adopted.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    Udp,
    TcpStream,
    TcpListener,
    UnixStream,
    UnixListener,
}

/// What a socket is, in words: `a UDP socket (AF_INET, SOCK_DGRAM)`.
fn describe(socket: &Socket) -> String {
    let family = socket.local_addr().map(|a| a.family());
    let kind = socket.r#type();
    let family_name = match family {
        Ok(f) if i32::from(f) == libc::AF_INET => "AF_INET",
        Ok(f) if i32::from(f) == libc::AF_INET6 => "AF_INET6",
        Ok(f) if i32::from(f) == libc::AF_UNIX => "AF_UNIX",
        Ok(_) => "another family",
        Err(_) => "unknown family",
    };
    let type_name = match kind {
        Ok(t) if t == Type::STREAM => "SOCK_STREAM",
        Ok(t) if t == Type::DGRAM => "SOCK_DGRAM",
        Ok(t) if t == Type::SEQPACKET => "SOCK_SEQPACKET",
        Ok(_) => "another type",
        Err(_) => "unknown type",
    };
    let noun = match (family_name, type_name) {
        ("AF_INET" | "AF_INET6", "SOCK_STREAM") => "a TCP socket",
        ("AF_INET" | "AF_INET6", "SOCK_DGRAM") => "a UDP socket",
        ("AF_UNIX", "SOCK_STREAM") => "a Unix domain stream socket",
        ("AF_UNIX", "SOCK_DGRAM") => "a Unix domain datagram socket",
        _ => "a socket",
    };
    let listening = matches!(is_listening(socket), Ok(true));
    let state = if listening { "listening " } else { "" };
    let noun = noun.replacen("a ", &format!("a {state}"), 1);
    format!("{noun} ({family_name}, {type_name})")
}

/// `SO_ACCEPTCONN`: whether `listen` was called on the socket.
fn is_listening(socket: &Socket) -> io::Result<bool> {
    let mut on: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `on`, which is
    // that large; the descriptor is open (`socket` owns it).
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&raw mut on).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(on != 0)
}

/// Sets close-on-exec (`FD_CLOEXEC`), portably.
fn set_cloexec(socket: &Socket) -> io::Result<()> {
    let fd = socket.as_raw_fd();
    // SAFETY: fcntl on an open descriptor (`socket` owns it), with
    // F_GETFD/F_SETFD and an int argument.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Checks that `fd` is the socket `want` names, and makes it nonblocking
/// and close-on-exec. The descriptor is closed if it is refused (it was
/// given away).
///
/// Errors: not a socket (`ENOTSOCK`), another family or type, a stream
/// not connected or a listener not listening: [`Error::InvalidArgValue`]
/// naming what it is (`The argument 'socket' must be a connected TCP
/// socket. Received a UDP socket (AF_INET, SOCK_DGRAM)`); a failing
/// `fcntl`: [`Error::Net`] with syscall `"adopt"`.
pub(crate) fn adopt(fd: OwnedFd, want: Want) -> Result<Socket> {
    let socket = Socket::from(fd);
    let refuse = |received: String| Error::InvalidArgValue {
        name: "socket",
        reason: match want {
            Want::TcpStream => "must be a connected TCP socket",
            Want::TcpListener => "must be a listening TCP socket",
            Want::UnixStream => "must be a connected Unix domain stream socket",
            Want::UnixListener => "must be a listening Unix domain stream socket",
            Want::Udp => "must be a UDP socket",
        },
        received,
    };
    let kind = match socket.r#type() {
        Ok(kind) => kind,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSOCK) => {
            return Err(refuse(
                "a descriptor that is not a socket (ENOTSOCK)".into(),
            ));
        }
        Err(e) => return Err(Error::net("adopt", None, e)),
    };
    let family = socket.local_addr().map(|a| a.family());
    let family_ok = match (want, family) {
        (Want::TcpStream | Want::TcpListener, Ok(f)) => {
            i32::from(f) == libc::AF_INET || i32::from(f) == libc::AF_INET6
        }
        (Want::UnixStream | Want::UnixListener, Ok(f)) => i32::from(f) == libc::AF_UNIX,
        (Want::Udp, Ok(f)) => i32::from(f) == libc::AF_INET || i32::from(f) == libc::AF_INET6,
        (_, Err(_)) => false,
    };
    let listening = is_listening(&socket).map_err(|e| Error::net("adopt", None, e))?;
    let wants_listener = matches!(want, Want::TcpListener | Want::UnixListener);
    let connected = !wants_listener && socket.peer_addr().is_ok();
    let (want_type, state_ok) = match want {
        Want::Udp => (Type::DGRAM, true),
        _ if wants_listener => (Type::STREAM, listening),
        _ => (Type::STREAM, connected),
    };
    if kind != want_type || !family_ok || !state_ok {
        let mut received = describe(&socket);
        if family_ok && kind == Type::STREAM && !wants_listener && !listening {
            received = format!("{received}, not connected");
        }
        if family_ok && kind == Type::STREAM && wants_listener {
            received = format!("{received}, not listening");
        }
        return Err(refuse(received));
    }
    socket
        .set_nonblocking(true)
        .map_err(|e| Error::net("adopt", None, e))?;
    set_cloexec(&socket).map_err(|e| Error::net("adopt", None, e))?;
    Ok(socket)
}

impl Stream {
    /// Hands the socket back, once the reactor has nothing in flight on
    /// it (see the [module documentation](self)).
    fn into_std_with(self, lp: &mut Loop, on_done: OnStream) {
        match self.take_for_std(lp) {
            Err(error) => lp.defer(move |lp| on_done(lp, Err(error))),
            Ok((socket, unread, false)) => {
                lp.defer(move |lp| on_done(lp, Ok((socket, unread))));
            }
            Ok((socket, unread, true)) => {
                lp.io.net.hand_backs.0.push(HandingBack::Stream {
                    stream: self,
                    socket,
                    unread,
                    error: None,
                    on_done,
                });
            }
        }
    }

    /// The stream's descriptor, borrowed from the loop: the `BorrowedFd`
    /// form of [`Stream::raw_fd`], with its rules (do not close, read,
    /// write or make it blocking through it), which the borrow of the loop
    /// bounds in time.
    ///
    /// # Errors
    ///
    /// [`Error::Stale`] once closed.
    pub fn fd(self, lp: &Loop) -> Result<BorrowedFd<'_>> {
        Ok(self.socket(lp)?.as_fd())
    }
}

impl Listener {
    fn into_std_with(self, lp: &mut Loop, on_done: OnListener) {
        match self.take_for_std(lp) {
            Err(error) => lp.defer(move |lp| on_done(lp, Err(error))),
            Ok((socket, false)) => lp.defer(move |lp| on_done(lp, Ok((socket, Vec::new())))),
            Ok((socket, true)) => lp.io.net.hand_backs.0.push(HandingBack::Listener {
                listener: self,
                socket,
                accepted: Vec::new(),
                on_done,
            }),
        }
    }

    /// The listening socket's descriptor, borrowed from the loop (for a
    /// socket option eventide does not wrap): the loop owns it; it must
    /// not be closed, accepted on or made blocking through it.
    ///
    /// # Errors
    ///
    /// [`Error::Stale`] once closed.
    pub fn fd(self, lp: &Loop) -> Result<BorrowedFd<'_>> {
        self.socket_fd(lp)
    }

    /// The listening socket's descriptor (libuv's `uv_fileno`), under the
    /// rules of [`Listener::fd`], valid until the listener closes (the
    /// number may then be reused): prefer [`Listener::fd`].
    ///
    /// # Errors
    ///
    /// [`Error::Stale`] once closed.
    pub fn raw_fd(self, lp: &Loop) -> Result<std::os::fd::RawFd> {
        Ok(self.socket_fd(lp)?.as_raw_fd())
    }
}

impl TcpStream {
    /// Adopts a connected std TCP stream (Node's `new net.Socket({ fd })`,
    /// tokio's `TcpStream::from_std`): it is made nonblocking and
    /// close-on-exec, and the loop owns it from now on (closing the handle
    /// closes it). Not reading until [`TcpStream::read_start`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgValue`] if it is not a connected TCP socket
    /// (`The argument 'socket' must be a connected TCP socket. Received a
    /// UDP socket (AF_INET, SOCK_DGRAM)`): the descriptor is then closed.
    pub fn from_std(lp: &mut Loop, stream: std::net::TcpStream) -> Result<TcpStream> {
        TcpStream::from_fd(lp, stream.into())
    }

    /// [`TcpStream::from_std`] for a descriptor: it must be a connected
    /// TCP socket, which is checked.
    ///
    /// # Errors
    ///
    /// As [`TcpStream::from_std`] (`ENOTSOCK` worded: `Received a
    /// descriptor that is not a socket (ENOTSOCK)`).
    pub fn from_fd(lp: &mut Loop, fd: OwnedFd) -> Result<TcpStream> {
        let socket = adopt(fd, Want::TcpStream)?;
        Ok(TcpStream(adopt_stream(lp, socket)))
    }

    /// Hands the socket back to std (tokio's `into_std`): the handle is
    /// stale at once, its reader dropped without its `on_end` (as
    /// [`TcpStream::close`] drops it) and its [`TcpStream::on_close`] runs
    /// in this turn's close phase, as for a close; `on_done` runs, never
    /// inside this call, with the socket once no operation of the loop
    /// runs on it any more (a receive in flight is cancelled first), and
    /// the bytes received that nobody read ([`HandedBack::unread`]).
    ///
    /// # Errors
    ///
    /// In `on_done`: `into_std EBUSY` while the stream connects, has
    /// writes queued, shuts down or ends (nothing is changed: it stays
    /// open); [`Error::Stale`] once closed; a receive error that came in
    /// while the receive was cancelled (`read ECONNRESET`: the socket is
    /// then closed).
    pub fn into_std(
        self,
        lp: &mut Loop,
        on_done: impl FnOnce(&mut Loop, Result<HandedBack<std::net::TcpStream>>) + 'static,
    ) {
        self.0.into_std_with(
            lp,
            Box::new(move |lp, r| {
                on_done(
                    lp,
                    r.map(|(socket, unread)| HandedBack {
                        socket: socket.into(),
                        unread,
                    }),
                );
            }),
        );
    }

    /// [`Stream::fd`].
    ///
    /// # Errors
    ///
    /// [`Error::Stale`] once closed.
    pub fn fd(self, lp: &Loop) -> Result<BorrowedFd<'_>> {
        self.0.fd(lp)
    }
}

impl UnixStream {
    /// Adopts a connected std Unix domain stream (from
    /// `std::os::unix::net::UnixStream::pair`, say): as
    /// [`TcpStream::from_std`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgValue`] if it is not a connected Unix domain
    /// stream socket: the descriptor is then closed.
    pub fn from_std(lp: &mut Loop, stream: std::os::unix::net::UnixStream) -> Result<UnixStream> {
        UnixStream::from_fd(lp, stream.into())
    }

    /// [`UnixStream::from_std`] for a descriptor (checked).
    ///
    /// # Errors
    ///
    /// As [`UnixStream::from_std`].
    pub fn from_fd(lp: &mut Loop, fd: OwnedFd) -> Result<UnixStream> {
        let socket = adopt(fd, Want::UnixStream)?;
        Ok(UnixStream(adopt_stream(lp, socket)))
    }

    /// Hands the socket back to std: as [`TcpStream::into_std`].
    ///
    /// # Errors
    ///
    /// As [`TcpStream::into_std`].
    pub fn into_std(
        self,
        lp: &mut Loop,
        on_done: impl FnOnce(&mut Loop, Result<HandedBack<std::os::unix::net::UnixStream>>) + 'static,
    ) {
        self.0.into_std_with(
            lp,
            Box::new(move |lp, r| {
                on_done(
                    lp,
                    r.map(|(socket, unread)| HandedBack {
                        socket: socket.into(),
                        unread,
                    }),
                );
            }),
        );
    }

    /// [`Stream::fd`].
    ///
    /// # Errors
    ///
    /// [`Error::Stale`] once closed.
    pub fn fd(self, lp: &Loop) -> Result<BorrowedFd<'_>> {
        self.0.fd(lp)
    }
}

/// Puts an adopted, checked stream socket in the table.
fn adopt_stream(lp: &mut Loop, socket: Socket) -> Stream {
    Stream::insert(lp, super::stream::StreamState::new(socket))
}

impl TcpListener {
    /// Adopts a listening std TCP listener (Node's `server.listen({ fd })`,
    /// tokio's `TcpListener::from_std`): made nonblocking and
    /// close-on-exec, owned by the loop from now on; `on_connection` runs
    /// with each connection, as for [`Loop::tcp_listen`] with default
    /// options (its backlog and `SO_REUSEPORT` are the socket's own).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgValue`] if it is not a listening TCP socket
    /// (the descriptor is then closed); [`Error::Net`] if its accept
    /// cannot be started.
    #[track_caller]
    pub fn from_std(
        lp: &mut Loop,
        listener: std::net::TcpListener,
        on_connection: impl FnMut(&mut Loop, Result<TcpStream>) + 'static,
    ) -> Result<TcpListener> {
        TcpListener::from_fd(lp, listener.into(), on_connection)
    }

    /// [`TcpListener::from_std`] for a descriptor (checked).
    ///
    /// # Errors
    ///
    /// As [`TcpListener::from_std`].
    #[track_caller]
    pub fn from_fd(
        lp: &mut Loop,
        fd: OwnedFd,
        mut on_connection: impl FnMut(&mut Loop, Result<TcpStream>) + 'static,
    ) -> Result<TcpListener> {
        let socket = adopt(fd, Want::TcpListener)?;
        let addr = super::socket_addr(socket.local_addr())
            .map_err(|e| Error::net("getsockname", None, e))?;
        let on_connection =
            move |lp: &mut Loop, r: Result<Stream>| on_connection(lp, r.map(TcpStream));
        lp.listen_on(
            socket,
            Place::Ip(addr),
            ListenOptions::default(),
            Box::new(on_connection),
        )
        .map(TcpListener)
    }

    /// Hands the listening socket back to std: the handle is stale at
    /// once and no connection callback runs after this call; the
    /// connections it delivered stay open. `on_done` runs, never inside
    /// this call, once the loop's accept on it is cancelled and done, with
    /// the connections accepted meanwhile
    /// ([`HandedBackListener::accepted`]).
    ///
    /// # Errors
    ///
    /// In `on_done`: [`Error::Stale`] once closed.
    pub fn into_std(
        self,
        lp: &mut Loop,
        on_done: impl FnOnce(
            &mut Loop,
            Result<HandedBackListener<std::net::TcpListener, std::net::TcpStream>>,
        ) + 'static,
    ) {
        self.0.into_std_with(
            lp,
            Box::new(move |lp, r| {
                on_done(
                    lp,
                    r.map(|(socket, accepted)| HandedBackListener {
                        listener: socket.into(),
                        accepted: accepted.into_iter().map(Into::into).collect(),
                    }),
                );
            }),
        );
    }

    /// [`Listener::fd`].
    ///
    /// # Errors
    ///
    /// [`Error::Stale`] once closed.
    pub fn fd(self, lp: &Loop) -> Result<BorrowedFd<'_>> {
        self.0.fd(lp)
    }
}

impl UnixListener {
    /// Adopts a listening std Unix domain listener: as
    /// [`TcpListener::from_std`]. Its socket file belongs to whoever made
    /// it: closing the listener does not remove it ([`Loop::unix_listen`]'s
    /// listeners remove theirs).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgValue`] if it is not a listening Unix domain
    /// stream socket (the descriptor is then closed).
    #[track_caller]
    pub fn from_std(
        lp: &mut Loop,
        listener: std::os::unix::net::UnixListener,
        on_connection: impl FnMut(&mut Loop, Result<UnixStream>) + 'static,
    ) -> Result<UnixListener> {
        UnixListener::from_fd(lp, listener.into(), on_connection)
    }

    /// [`UnixListener::from_std`] for a descriptor (checked).
    ///
    /// # Errors
    ///
    /// As [`UnixListener::from_std`].
    #[track_caller]
    pub fn from_fd(
        lp: &mut Loop,
        fd: OwnedFd,
        mut on_connection: impl FnMut(&mut Loop, Result<UnixStream>) + 'static,
    ) -> Result<UnixListener> {
        let socket = adopt(fd, Want::UnixListener)?;
        let path = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(PathBuf::from))
            .unwrap_or_default();
        let on_connection =
            move |lp: &mut Loop, r: Result<Stream>| on_connection(lp, r.map(UnixStream));
        lp.listen_on(
            socket,
            Place::Adopted(path),
            ListenOptions::default(),
            Box::new(on_connection),
        )
        .map(UnixListener)
    }

    /// Hands the listening socket back to std: as
    /// [`TcpListener::into_std`]; its socket file is left in place.
    ///
    /// # Errors
    ///
    /// In `on_done`: [`Error::Stale`] once closed.
    pub fn into_std(
        self,
        lp: &mut Loop,
        on_done: impl FnOnce(
            &mut Loop,
            Result<
                HandedBackListener<
                    std::os::unix::net::UnixListener,
                    std::os::unix::net::UnixStream,
                >,
            >,
        ) + 'static,
    ) {
        self.0.into_std_with(
            lp,
            Box::new(move |lp, r| {
                on_done(
                    lp,
                    r.map(|(socket, accepted)| HandedBackListener {
                        listener: socket.into(),
                        accepted: accepted.into_iter().map(Into::into).collect(),
                    }),
                );
            }),
        );
    }

    /// [`Listener::fd`].
    ///
    /// # Errors
    ///
    /// [`Error::Stale`] once closed.
    pub fn fd(self, lp: &Loop) -> Result<BorrowedFd<'_>> {
        self.0.fd(lp)
    }
}
