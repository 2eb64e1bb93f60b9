//! TCP streams: connect (to an address, or to a host name through
//! [`Loop::lookup`]), and the options and addresses only TCP has.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use eventide_reactor::Op;
use socket2::TcpKeepalive;

use super::TcpStream;
use super::dns::Family;
use super::stream::{OnConnect, Peer, Stream, StreamState};
use crate::event_loop::Loop;
use crate::{Error, Result};

impl Loop {
    /// Connects to `addr`; `on_connect` runs with the stream once
    /// connected, or with the error (`connect ECONNREFUSED 127.0.0.1:9`).
    /// The stream is returned at once: writes and `read_start` before the
    /// connection is made wait for it, and closing it cancels the connect
    /// (its callback gets `ECANCELED`).
    ///
    /// # Errors
    ///
    /// [`Error::Net`] when the socket cannot be made or the connect not
    /// submitted (too many open files, say).
    #[track_caller]
    pub fn tcp_connect(
        &mut self,
        addr: SocketAddr,
        on_connect: impl FnOnce(&mut Loop, Result<TcpStream>) + 'static,
    ) -> Result<TcpStream> {
        let on_connect: OnConnect = Box::new(move |lp, r| on_connect(lp, r.map(TcpStream)));
        let site = std::panic::Location::caller();
        let stream = self.tcp_connect_boxed(addr, on_connect)?;
        self.remember_site(crate::diag::Kind::Stream, stream.raw(), site);
        Ok(TcpStream(stream))
    }

    fn tcp_connect_boxed(&mut self, addr: SocketAddr, on_connect: OnConnect) -> Result<Stream> {
        let error = |e| Error::net("connect", Some(addr), e);
        let socket = super::tcp_socket(addr).map_err(error)?;
        let fd = socket.as_raw_fd();
        let state = StreamState::connecting(socket, Peer::Ip(addr), on_connect);
        let id = Stream::insert(self, state);
        let op = Op::connect(fd, addr);
        if let Err(refused) = self.submit_io(op, move |lp, c| id.connected(lp, c.result.map(drop)))
        {
            id.forget(self);
            return Err(error(refused.error));
        }
        Ok(id)
    }

    /// Connects to `host` (a name, or an IP address written out) on
    /// `port`, as Node's `net.connect(port, host)`: the name is resolved
    /// with [`Loop::lookup`] (on the pool's slow lane), then the addresses
    /// are tried in the order the resolver gave them, each until it
    /// connects or fails; `on_connect` gets the first stream that
    /// connects, or the last address's error, or the lookup's
    /// (`getaddrinfo ENOTFOUND nosuchhost.invalid`). Unlike Node's
    /// `autoSelectFamily`, an attempt is not cut short after 250 ms: the
    /// next address is tried when the current one fails.
    ///
    /// No handle is returned: there is no socket until the name is
    /// resolved.
    pub fn tcp_connect_host(
        &mut self,
        host: &str,
        port: u16,
        on_connect: impl FnOnce(&mut Loop, Result<TcpStream>) + 'static,
    ) {
        let on_connect: OnConnect = Box::new(move |lp, r| on_connect(lp, r.map(TcpStream)));
        if let Ok(ip) = host.parse::<IpAddr>() {
            return try_in_turn(self, vec![SocketAddr::new(ip, port)], on_connect);
        }
        self.lookup(host, Family::Any, move |lp, found| match found {
            Ok(addrs) => {
                let addrs = addrs.into_iter().map(|ip| SocketAddr::new(ip, port));
                try_in_turn(lp, addrs.collect(), on_connect);
            }
            Err(error) => on_connect(lp, Err(error)),
        });
    }
}

/// Connects to the first of `addrs` that accepts; `on_connect` gets that
/// stream or the last error.
fn try_in_turn(lp: &mut Loop, mut addrs: Vec<SocketAddr>, on_connect: OnConnect) {
    addrs.reverse();
    next_address(lp, addrs, on_connect, None);
}

fn next_address(
    lp: &mut Loop,
    mut rest: Vec<SocketAddr>,
    on_connect: OnConnect,
    last: Option<Error>,
) {
    let Some(addr) = rest.pop() else {
        let error = last.unwrap_or_else(|| {
            Error::net(
                "connect",
                None,
                std::io::Error::from_raw_os_error(libc::EADDRNOTAVAIL),
            )
        });
        // Possibly inside the call that started it: never run it there.
        return lp.defer(move |lp| on_connect(lp, Err(error)));
    };
    // The callback is shared between the attempt and the synchronous
    // failure path below; exactly one of them takes it.
    let cell = Rc::new(RefCell::new(Some((on_connect, rest))));
    let c = Rc::clone(&cell);
    let attempt = lp.tcp_connect_boxed(
        addr,
        Box::new(move |lp, result| {
            let Some((on_connect, rest)) = c.borrow_mut().take() else {
                return;
            };
            match result {
                Ok(stream) => on_connect(lp, Ok(stream)),
                Err(error) if rest.is_empty() => on_connect(lp, Err(error)),
                Err(error) => next_address(lp, rest, on_connect, Some(error)),
            }
        }),
    );
    if let Err(error) = attempt {
        let taken = cell.borrow_mut().take();
        if let Some((on_connect, rest)) = taken {
            next_address(lp, rest, on_connect, Some(error));
        }
    }
}

impl TcpStream {
    /// Sets `TCP_NODELAY` (Node's `setNoDelay`): no Nagle delay.
    ///
    /// # Errors
    ///
    /// [`Error::Stale`] once closed; the system's error otherwise.
    pub fn set_nodelay(self, lp: &mut Loop, nodelay: bool) -> Result<()> {
        self.0
            .socket(lp)?
            .set_tcp_nodelay(nodelay)
            .map_err(|e| Error::net("setsockopt", None, e))
    }

    /// Whether `TCP_NODELAY` is set.
    ///
    /// # Errors
    ///
    /// [`Error::Stale`] once closed; the system's error otherwise.
    pub fn nodelay(self, lp: &Loop) -> Result<bool> {
        self.0
            .socket(lp)?
            .tcp_nodelay()
            .map_err(|e| Error::net("getsockopt", None, e))
    }

    /// Turns TCP keep-alive on or off (Node's `setKeepAlive`); `delay`,
    /// if not zero, is the idle time before the first probe.
    ///
    /// # Errors
    ///
    /// [`Error::Stale`] once closed; the system's error otherwise.
    pub fn set_keepalive(self, lp: &mut Loop, enable: bool, delay: Duration) -> Result<()> {
        let socket = self.0.socket(lp)?;
        let error = |e| Error::net("setsockopt", None, e);
        if enable && !delay.is_zero() {
            let params = TcpKeepalive::new().with_time(delay);
            socket.set_tcp_keepalive(&params).map_err(error)
        } else {
            socket.set_keepalive(enable).map_err(error)
        }
    }

    /// This end's address.
    ///
    /// # Errors
    ///
    /// [`Error::Stale`] once closed; the system's error otherwise.
    pub fn local_addr(self, lp: &Loop) -> Result<SocketAddr> {
        super::socket_addr(self.0.socket(lp)?.local_addr())
            .map_err(|e| Error::net("getsockname", None, e))
    }

    /// The peer's address.
    ///
    /// # Errors
    ///
    /// [`Error::Stale`] once closed; `ENOTCONN` before the connection is
    /// made.
    pub fn peer_addr(self, lp: &Loop) -> Result<SocketAddr> {
        super::socket_addr(self.0.socket(lp)?.peer_addr())
            .map_err(|e| Error::net("getpeername", None, e))
    }
}
