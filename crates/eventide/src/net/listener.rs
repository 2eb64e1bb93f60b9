//! Listening TCP sockets: bind, listen, and a callback per connection.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

use eventide_reactor::{Completion, Op};
use socket2::Socket;

use super::tcp::TcpStream;
use crate::event_loop::{Loop, Task};
use crate::slab::SlotId;
use crate::{Error, Result};

type OnConnection = Box<dyn FnMut(&mut Loop, Result<TcpStream>)>;

/// Options of [`Loop::tcp_listen`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenOptions {
    /// The accept queue's length (Node's and libuv's default: 511).
    pub backlog: i32,
    /// Sets `SO_REUSEPORT`, so that several sockets (of this process or
    /// others) listen on the same address and the kernel spreads the
    /// connections (Node's `reusePort`). `SO_REUSEADDR` is always set.
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

/// A listening socket's handle ([`Loop::tcp_listen`]): `Copy`, and stale
/// once closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TcpListener(SlotId);

pub(crate) struct Listener {
    socket: Socket,
    address: SocketAddr,
    /// `None` while it runs.
    on_connection: Option<OnConnection>,
}

impl Loop {
    /// Listens on `addr` (port 0: one the system picks, see
    /// [`TcpListener::local_addr`]); `on_connection` runs with each
    /// accepted connection, or with an error of `accept`. The listener
    /// keeps the loop alive until closed.
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
        on_connection: impl FnMut(&mut Loop, Result<TcpStream>) + 'static,
    ) -> Result<TcpListener> {
        let error = |e| Error::net("listen", Some(addr), e);
        let socket = super::tcp_socket(addr).map_err(error)?;
        socket.set_reuse_address(true).map_err(error)?;
        if options.reuse_port {
            socket.set_reuse_port(true).map_err(error)?;
        }
        socket.bind(&addr.into()).map_err(error)?;
        socket.listen(options.backlog).map_err(error)?;
        let fd = socket.as_raw_fd();
        let listener = Listener {
            socket,
            address: addr,
            on_connection: Some(Box::new(on_connection)),
        };
        let id = TcpListener(self.io.net.listeners.insert(listener));
        if let Err(refused) = id.arm(self, fd) {
            if let Some(listener) = self.io.net.listeners.remove(id.0) {
                drop(listener.socket);
            }
            return Err(error(refused));
        }
        Ok(id)
    }
}

impl TcpListener {
    /// The address it listens on (with the port the system chose).
    ///
    /// # Errors
    ///
    /// [`Error::Stale`] once closed; the system's error otherwise.
    pub fn local_addr(self, lp: &Loop) -> Result<SocketAddr> {
        let listener = lp.io.net.listeners.get(self.0).ok_or(STALE)?;
        super::socket_addr(listener.socket.local_addr())
            .map_err(|e| Error::net("getsockname", None, e))
    }

    /// Stops listening and closes the socket; no connection callback runs
    /// after this. Returns `false`, doing nothing, if already closed.
    pub fn close(self, lp: &mut Loop) -> bool {
        self.close_with(lp, None)
    }

    /// As [`TcpListener::close`], and `on_close` runs in this turn's close
    /// phase.
    pub fn close_then(self, lp: &mut Loop, on_close: impl FnOnce(&mut Loop) + 'static) -> bool {
        self.close_with(lp, Some(Box::new(on_close)))
    }

    fn close_with(self, lp: &mut Loop, on_close: Option<Task>) -> bool {
        let Some(listener) = lp.io.net.listeners.remove(self.0) else {
            return false;
        };
        super::close_socket(lp, listener.socket);
        lp.push_closing(on_close);
        true
    }

    /// Submits the multishot accept.
    fn arm(self, lp: &mut Loop, fd: RawFd) -> std::io::Result<()> {
        lp.submit_io(Op::accept_multi(fd), move |lp, c| self.on_accept(lp, c))
            .map(|_| ())
            .map_err(|refused| refused.error)
    }

    fn on_accept(self, lp: &mut Loop, c: Completion) {
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
        let address = listener.address;
        let fd = listener.socket.as_raw_fd();
        let result = match accepted {
            Ok(socket) => Ok(TcpStream::accepted(lp, socket)),
            Err(error) => {
                if !c.more && transient(&error) {
                    if let Err(refused) = self.arm(lp, fd) {
                        self.report(lp, Err(Error::net("accept", Some(address), refused)));
                    }
                    return;
                }
                Err(Error::net("accept", Some(address), error))
            }
        };
        self.report(lp, result);
    }

    /// Runs the connection callback, and puts it back if still listening.
    fn report(self, lp: &mut Loop, result: Result<TcpStream>) {
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

/// Accept errors that concern one connection only: accept again.
fn transient(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ECONNABORTED | libc::EINTR | libc::EAGAIN | libc::EPROTO | libc::EPERM)
    )
}

const STALE: Error = Error::Stale {
    what: "TCP listener",
};
