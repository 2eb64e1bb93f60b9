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
use std::path::Path;

use eventide_reactor::{Interest, Op};
use socket2::SockAddr;

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
    pub fn unix_connect(
        &mut self,
        path: impl AsRef<Path>,
        on_connect: impl FnOnce(&mut Loop, Result<Stream>) + 'static,
    ) -> Result<Stream> {
        let path = path.as_ref();
        let error = |e| Error::net_path("connect", path, e);
        let addr = SockAddr::unix(path).map_err(error)?;
        let socket = super::unix_socket().map_err(error)?;
        let fd = socket.as_raw_fd();
        let started = socket.connect(&addr);
        let peer = Peer::Path(path.to_path_buf());
        let state = StreamState::connecting(socket, peer, Box::new(on_connect));
        let id = Stream::insert(self, state);
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
        Ok(id)
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
