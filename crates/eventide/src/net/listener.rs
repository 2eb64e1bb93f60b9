//! Listening sockets (TCP and Unix domain): bind, listen, and a callback
//! per connection; libuv's answer to running out of descriptors.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use eventide_reactor::{Completion, Op};
use socket2::{SockAddr, Socket};

use super::stream::{Stream, StreamState};
use crate::event_loop::{Loop, Task};
use crate::io::Direct;
use crate::slab::SlotId;
use crate::{Error, Result};

type OnConnection = Box<dyn FnMut(&mut Loop, Result<Stream>)>;

/// Options of [`Loop::tcp_listen`] and [`Loop::unix_listen`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenOptions {
    /// The accept queue's length (Node's and libuv's default: 511).
    pub backlog: i32,
    /// Sets `SO_REUSEPORT`, so that several sockets (of this process or
    /// others) listen on the same address and the kernel spreads the
    /// connections (Node's `reusePort`). `SO_REUSEADDR` is always set.
    /// TCP only.
    pub reuse_port: bool,
}

impl Default for ListenOptions {
    fn default() -> ListenOptions {
        ListenOptions {
            backlog: 511,
            reuse_port: false,
        }
    }
}

/// A listening socket's handle, TCP or Unix domain (Node's `net.Server`):
/// `Copy`, and stale once closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Listener(SlotId);

impl Listener {
    pub(crate) fn id(self) -> SlotId {
        self.0
    }

    pub(crate) fn from_id(id: SlotId) -> Listener {
        Listener(id)
    }
}

/// A listening TCP socket ([`Loop::tcp_listen`]): a [`Listener`].
pub type TcpListener = Listener;

/// A listening Unix domain socket ([`Loop::unix_listen`]): a [`Listener`].
pub type UnixListener = Listener;

/// Where a listener listens, for its messages.
enum Place {
    Ip(SocketAddr),
    /// Unlinked when the listener closes, as libuv does.
    Path(PathBuf),
}

impl Place {
    fn error(&self, syscall: &'static str, e: std::io::Error) -> Error {
        match self {
            Place::Ip(addr) => Error::net(syscall, Some(*addr), e),
            Place::Path(path) => Error::net_path(syscall, path, e),
        }
    }
}

pub(crate) struct ListenerState {
    socket: Socket,
    place: Place,
    /// `None` while it runs.
    on_connection: Option<OnConnection>,
    /// The multishot accept is armed.
    accepting: bool,
    referenced: bool,
}

impl Loop {
    /// Listens on `addr` (port 0: one the system picks, see
    /// [`Listener::local_addr`]); `on_connection` runs with each
    /// accepted connection, or with an error of `accept`. The listener
    /// keeps the loop alive until closed (or [`Listener::unref`]).
    ///
    /// # Errors
    ///
    /// [`Error::Net`] with syscall `"listen"` when the socket cannot be
    /// made, bound or put to listen (`listen EADDRINUSE: address already in
    /// use 127.0.0.1:8080`).
    pub fn tcp_listen(
        &mut self,
        addr: SocketAddr,
        options: ListenOptions,
        on_connection: impl FnMut(&mut Loop, Result<Stream>) + 'static,
    ) -> Result<Listener> {
        let place = Place::Ip(addr);
        let error = |e| place.error("listen", e);
        let socket = super::tcp_socket(addr).map_err(error)?;
        socket.set_reuse_address(true).map_err(error)?;
        if options.reuse_port {
            socket.set_reuse_port(true).map_err(error)?;
        }
        socket.bind(&addr.into()).map_err(error)?;
        socket.listen(options.backlog).map_err(error)?;
        self.listen_on(socket, place, Box::new(on_connection))
    }

    /// Listens on a Unix domain stream socket at `path` (Node's
    /// `server.listen(path)`); `on_connection` runs with each accepted
    /// connection ([`Stream`]s, with the same API as TCP's). The socket
    /// file is made by the bind and removed when the listener closes, as
    /// libuv and Node do; an existing file at `path` is an error
    /// (`listen EADDRINUSE: address already in use /tmp/app.sock`), never
    /// removed first. `options.reuse_port` is ignored.
    ///
    /// # Errors
    ///
    /// [`Error::NetPath`] with syscall `"listen"` when the socket cannot be
    /// made, bound or put to listen.
    pub fn unix_listen(
        &mut self,
        path: impl AsRef<Path>,
        options: ListenOptions,
        on_connection: impl FnMut(&mut Loop, Result<Stream>) + 'static,
    ) -> Result<Listener> {
        let path = path.as_ref();
        let error = |e| Error::net_path("listen", path, e);
        let socket = super::unix_socket().map_err(error)?;
        let addr = SockAddr::unix(path).map_err(error)?;
        socket.bind(&addr).map_err(error)?;
        let place = Place::Path(path.to_path_buf());
        if let Err(e) = socket.listen(options.backlog) {
            let _ = std::fs::remove_file(path);
            return Err(error(e));
        }
        self.listen_on(socket, place, Box::new(on_connection))
    }

    fn listen_on(
        &mut self,
        socket: Socket,
        place: Place,
        on_connection: OnConnection,
    ) -> Result<Listener> {
        self.io.net.ensure_reserve();
        let fd = socket.as_raw_fd();
        let listener = ListenerState {
            socket,
            place,
            on_connection: Some(on_connection),
            accepting: false,
            referenced: true,
        };
        let id = Listener(self.io.net.listeners.insert(listener));
        if let Err(refused) = id.arm(self, fd) {
            let listener = self.io.net.listeners.remove(id.0).expect("just inserted");
            let error = listener.place.error("listen", refused);
            listener.unlink();
            return Err(error);
        }
        Ok(id)
    }
}

impl ListenerState {
    /// Removes a Unix socket's file.
    fn unlink(&self) {
        if let Place::Path(path) = &self.place {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Listener {
    /// The address it listens on (with the port the system chose).
    ///
    /// # Errors
    ///
    /// [`Error::Stale`] once closed; `EAFNOSUPPORT` for a Unix domain
    /// listener; the system's error otherwise.
    pub fn local_addr(self, lp: &Loop) -> Result<SocketAddr> {
        let listener = lp.io.net.listeners.get(self.0).ok_or(STALE)?;
        super::socket_addr(listener.socket.local_addr())
            .map_err(|e| Error::net("getsockname", None, e))
    }

    /// Stops listening and closes the socket (and removes a Unix socket's
    /// file); no connection callback runs after this. Returns `false`,
    /// doing nothing, if already closed.
    pub fn close(self, lp: &mut Loop) -> bool {
        self.close_with(lp, None)
    }

    /// As [`Listener::close`], and `on_close` runs in this turn's close
    /// phase.
    pub fn close_then(self, lp: &mut Loop, on_close: impl FnOnce(&mut Loop) + 'static) -> bool {
        self.close_with(lp, Some(Box::new(on_close)))
    }

    /// Lets the loop end while this listener waits for connections
    /// (libuv's `uv_unref`, Node's `server.unref()`); it still accepts
    /// while the loop runs. Returns `false` for a closed listener.
    pub fn unref(self, lp: &mut Loop) -> bool {
        self.set_ref(lp, false)
    }

    /// Makes the listener keep the loop alive again (`true`, libuv's
    /// `uv_ref`, Node's `server.ref()`), or not (`false`). Returns `false`
    /// for a closed listener.
    pub fn set_ref(self, lp: &mut Loop, referenced: bool) -> bool {
        let Some(listener) = lp.io.net.listeners.get_mut(self.0) else {
            return false;
        };
        if listener.accepting && listener.referenced != referenced {
            // The accept in flight starts or stops keeping the loop alive.
            if referenced {
                lp.io.sockets += 1;
            } else {
                lp.io.sockets -= 1;
            }
        }
        listener.referenced = referenced;
        true
    }

    /// Whether the listener keeps the loop alive (libuv's `uv_has_ref`);
    /// `false` for a closed listener.
    pub fn has_ref(self, lp: &Loop) -> bool {
        lp.io
            .net
            .listeners
            .get(self.0)
            .is_some_and(|l| l.referenced)
    }

    fn close_with(self, lp: &mut Loop, on_close: Option<Task>) -> bool {
        let Some(listener) = lp.io.net.listeners.remove(self.0) else {
            return false;
        };
        if listener.accepting && !listener.referenced {
            // Its accept's final completion is still to come and finds no
            // listener: it keeps the loop alive from now on.
            lp.io.sockets += 1;
        }
        listener.unlink();
        super::close_socket(lp, listener.socket);
        lp.push_closing(on_close);
        true
    }

    /// Submits the multishot accept.
    fn arm(self, lp: &mut Loop, fd: RawFd) -> std::io::Result<()> {
        let referenced = lp.io.net.listeners.get(self.0).is_none_or(|l| l.referenced);
        lp.submit_direct(Op::accept_multi(fd), Direct::Accepted(self), referenced)
            .map_err(|refused| refused.error)?;
        if let Some(listener) = lp.io.net.listeners.get_mut(self.0) {
            listener.accepting = true;
        }
        Ok(())
    }

    pub(crate) fn on_accept(self, lp: &mut Loop, c: Completion) {
        if !c.more {
            self.accept_ended(lp);
        }
        let accepted = match c.result {
            Ok(fd) => {
                let fd = RawFd::try_from(fd).expect("a descriptor fits in RawFd");
                // SAFETY: the reactor hands over the descriptor accept just
                // made: open, and owned by nobody else.
                Ok(unsafe { Socket::from_raw_fd(fd) })
            }
            Err(error) if c.is_cancelled() => return drop(error),
            Err(error) => Err(error),
        };
        let Some(listener) = lp.io.net.listeners.get_mut(self.0) else {
            return; // Closed meanwhile: an accepted socket is dropped, closed.
        };
        let fd = listener.socket.as_raw_fd();
        let error = match accepted {
            Ok(socket) => {
                let stream = Stream::insert(lp, StreamState::new(socket));
                self.report(lp, Ok(stream));
                // A multishot accept may also end on a connection (the
                // kernel drops it, on a full completion queue say): arm
                // it again if still listening.
                if !c.more
                    && lp
                        .io
                        .net
                        .listeners
                        .get(self.0)
                        .is_some_and(|l| !l.accepting)
                    && let Err(refused) = self.arm(lp, fd)
                {
                    self.fail(lp, "accept", refused);
                }
                return;
            }
            Err(error) => error,
        };
        let out_of_fds = matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
        // libuv's answer to running out of descriptors: with the reserve
        // descriptor released, take the waiting connections and close them
        // (their clients see the connection end instead of hanging), then
        // keep listening. The connections already open are untouched.
        if out_of_fds && lp.io.net.shed_waiting_connections(fd) {
            log::debug!("eventide: accept ran out of descriptors; dropped waiting connections");
        } else if out_of_fds || !transient(&error) {
            // Anything else ends the accepting: reported, the listener
            // stays open until closed.
            return self.fail(lp, "accept", error);
        }
        if !c.more
            && let Err(refused) = self.arm(lp, fd)
        {
            self.fail(lp, "accept", refused);
        }
    }

    /// Reports an error of `syscall` to the connection callback.
    fn fail(self, lp: &mut Loop, syscall: &'static str, error: std::io::Error) {
        let Some(listener) = lp.io.net.listeners.get(self.0) else {
            return;
        };
        let error = listener.place.error(syscall, error);
        self.report(lp, Err(error));
    }

    /// The multishot accept's final completion: it no longer keeps the
    /// loop alive (a closed listener's always did, see `close_with`).
    fn accept_ended(self, lp: &mut Loop) {
        match lp.io.net.listeners.get_mut(self.0) {
            Some(listener) => {
                if listener.referenced {
                    lp.io.sockets -= 1;
                }
                listener.accepting = false;
            }
            None => lp.io.sockets -= 1,
        }
    }

    /// Runs the connection callback, and puts it back if still listening.
    fn report(self, lp: &mut Loop, result: Result<Stream>) {
        let Some(listener) = lp.io.net.listeners.get_mut(self.0) else {
            return;
        };
        let Some(mut on_connection) = listener.on_connection.take() else {
            return;
        };
        on_connection(lp, result);
        if let Some(listener) = lp.io.net.listeners.get_mut(self.0) {
            listener.on_connection = Some(on_connection);
        }
    }
}

impl super::Sockets {
    /// Opens the reserve descriptor if it is not open yet (it may have
    /// been spent in an earlier shortage).
    fn ensure_reserve(&mut self) {
        if self.reserve.is_none() {
            self.reserve = std::fs::File::open("/dev/null").ok().map(OwnedFd::from);
        }
    }

    /// libuv's `uv__emfile_trick`: close the reserve descriptor, accept
    /// and close every connection waiting on `listener` (it is
    /// nonblocking), then open the reserve again. Returns `false`, doing
    /// nothing, without a reserve (then accepting must stop, or it would
    /// spin on the same error).
    fn shed_waiting_connections(&mut self, listener: RawFd) -> bool {
        if self.reserve.take().is_none() {
            return false;
        }
        loop {
            // SAFETY: accept4 with null address pointers only returns a new
            // descriptor, which is owned below; `listener` is the
            // listener's open socket.
            let fd = unsafe {
                libc::accept4(
                    listener,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                break;
            }
            // SAFETY: accept4 just made `fd`; nobody else owns it.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        self.ensure_reserve();
        true
    }
}

/// Accept errors that concern one connection only: accept again.
fn transient(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ECONNABORTED | libc::EINTR | libc::EAGAIN | libc::EPROTO | libc::EPERM)
    )
}

const STALE: Error = Error::Stale { what: "listener" };
