//! UDP on the loop: Node's `dgram` reduced to its libuv core (`uv_udp_t`).
//!
//! ```
//! use std::net::SocketAddr;
//! use eventide::dgram::UdpOptions;
//!
//! let mut lp = eventide::Loop::new()?;
//! let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
//! let server = lp.udp_bind(any, UdpOptions::default())?;
//! // Echo every datagram back to its sender.
//! server.recv_start(
//!     &mut lp,
//!     |lp, socket, data, from| socket.send_to(lp, data.to_vec(), from, |_, res| drop(res.unwrap())),
//!     |_, _, error| panic!("{error}"),
//! );
//! let client = lp.udp_bind(any, UdpOptions::default())?;
//! client.recv_start(
//!     &mut lp,
//!     move |lp, client, data, _from| {
//!         assert_eq!(data, b"ping");
//!         client.close(lp);
//!         server.close(lp);
//!     },
//!     |_, _, error| panic!("{error}"),
//! );
//! let to = server.local_addr(&lp)?;
//! client.send_to(&mut lp, b"ping".to_vec(), to, |_, sent| assert_eq!(sent.unwrap(), 4));
//! lp.run()?;
//! # Ok::<(), eventide::Error>(())
//! ```
//!
//! # Handles
//!
//! [`UdpSocket`] is a small `Copy` key into the loop's table of UDP
//! sockets, with a generation: once closed, a handle is stale, and using it
//! is harmless: `close` and `recv_stop` return `false`, `send_to` calls its
//! callback with [`Error::Stale`] (in the next pending
//! phase), getters and setters return it.
//!
//! # How it runs
//!
//! A socket is nonblocking; the reactor watches it for readiness
//! ([`Op::poll`](eventide_reactor::Op::poll), on io_uring as on polling)
//! and the loop makes the `recvfrom` and `sendto` calls itself when it is
//! ready, as libuv does on epoll. While receiving, up to 32 datagrams are
//! read per readiness before the socket is watched again, so one busy
//! socket cannot starve the others.
//!
//! A send is tried at once when nothing is queued before it; if the kernel
//! would block, it waits in the socket's queue until the socket is
//! writable. Either way its callback never runs inside the call: a send
//! that went out at once calls back as Node's does, as a next-tick (on an
//! unconnected socket one tick later, where Node looks the address up
//! first); a queued one from the poll phase that sent it.
//!
//! Each datagram is its own callback, as each of Node's `'message'`
//! events: the next-ticks and microtasks one queues run before the next
//! datagram is delivered, though up to 32 are read per readiness.
//!
//! # Liveness
//!
//! As libuv's `uv_udp_t`: a socket keeps the loop alive while it receives
//! (between `recv_start` and `recv_stop`) or has sends queued, and until
//! its close has finished. A bound socket that neither receives nor sends
//! does not. (Node starts receiving as soon as a socket is bound, so a
//! bound Node socket always keeps the process alive, as a bound socket
//! with `recv_start` does here.) [`UdpSocket::unref`] (Node's
//! `socket.unref()`) lets the loop end while the socket receives;
//! [`UdpSocket::set_ref`] and [`UdpSocket::has_ref`] as for streams.
//!
//! # Sockets made elsewhere
//!
//! [`UdpSocket::from_std`] adopts a std UDP socket (checked, made
//! nonblocking and close-on-exec, owned by the loop from then on);
//! [`UdpSocket::into_std`] hands it back once the loop's readiness waits
//! on it have completed; [`UdpSocket::fd`] borrows the descriptor.
//!
//! # Closing
//!
//! `close` releases the socket at once; the handle is stale from then on.
//! The close callback of [`UdpSocket::close_then`] runs as a next-tick
//! right after the current callback, as Node emits a dgram socket's
//! `'close'` (its `socketCloseNT`), not in the close phase; sends still
//! queued get `ECANCELED` in this turn's close phase, as libuv's
//! `uv__udp_finish_close` does. See docs/dgram.md for why.
//!
//! # Errors
//!
//! Failures are [`Error::Net`], displayed as Node's:
//! `bind EADDRINUSE 127.0.0.1:41234`, `send EMSGSIZE 127.0.0.1:9`,
//! `recvmsg ECONNREFUSED`, `addMembership EADDRINUSE`, `setTTL EINVAL`.
//! Unlike a TCP stream, a UDP socket lives on after an error, as Node's
//! does: receive errors (an ICMP port unreachable on a connected socket,
//! say) go to the receiver's error callback and receiving goes on.

mod socket;
mod table;

pub use crate::net::WriteBuf;
pub use socket::UdpSocket;
pub(crate) use table::{Table, new_table};

use std::net::{Ipv4Addr, SocketAddr};

use socket2::{Domain, Socket, Type};

use crate::event_loop::Loop;
use crate::{Error, Result};

/// Options of [`Loop::udp_bind`] (Node's `dgram.createSocket` options):
/// `UdpOptions::default()`, then the setters (or the fields):
/// `UdpOptions::default().reuse_addr(true).max_datagram(1500)`.
/// Non-exhaustive, so that adding an option breaks no caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct UdpOptions {
    /// Sets `SO_REUSEADDR` (Node's `reuseAddr`): on Linux several sockets
    /// may then bind the same address, each receiving multicast datagrams.
    pub reuse_addr: bool,
    /// Sets `SO_REUSEPORT` (Node's `reusePort`): the kernel spreads unicast
    /// datagrams over the sockets bound to the same address.
    pub reuse_port: bool,
    /// For an IPv6 address, receive IPv6 only (Node's `ipv6Only`);
    /// otherwise `::` also takes IPv4 datagrams, as mapped addresses.
    pub ipv6_only: bool,
    /// `SO_RCVBUF` in bytes, if set (Node's `recvBufferSize`).
    pub recv_buffer_size: Option<usize>,
    /// `SO_SNDBUF` in bytes, if set (Node's `sendBufferSize`).
    pub send_buffer_size: Option<usize>,
    /// The largest datagram received whole (the receive buffer's size;
    /// 65,536 by default as Node's, more than any IPv4 datagram). A larger
    /// one is dropped and reported to the error callback as
    /// `recvmsg EMSGSIZE`, never delivered cut short.
    pub max_datagram: usize,
}

impl UdpOptions {
    /// Sets [`UdpOptions::reuse_addr`].
    #[must_use = "a setter returns the changed options"]
    pub fn reuse_addr(mut self, reuse_addr: bool) -> UdpOptions {
        self.reuse_addr = reuse_addr;
        self
    }

    /// Sets [`UdpOptions::reuse_port`].
    #[must_use = "a setter returns the changed options"]
    pub fn reuse_port(mut self, reuse_port: bool) -> UdpOptions {
        self.reuse_port = reuse_port;
        self
    }

    /// Sets [`UdpOptions::ipv6_only`].
    #[must_use = "a setter returns the changed options"]
    pub fn ipv6_only(mut self, ipv6_only: bool) -> UdpOptions {
        self.ipv6_only = ipv6_only;
        self
    }

    /// Sets [`UdpOptions::recv_buffer_size`].
    #[must_use = "a setter returns the changed options"]
    pub fn recv_buffer_size(mut self, recv_buffer_size: Option<usize>) -> UdpOptions {
        self.recv_buffer_size = recv_buffer_size;
        self
    }

    /// Sets [`UdpOptions::send_buffer_size`].
    #[must_use = "a setter returns the changed options"]
    pub fn send_buffer_size(mut self, send_buffer_size: Option<usize>) -> UdpOptions {
        self.send_buffer_size = send_buffer_size;
        self
    }

    /// Sets [`UdpOptions::max_datagram`].
    #[must_use = "a setter returns the changed options"]
    pub fn max_datagram(mut self, max_datagram: usize) -> UdpOptions {
        self.max_datagram = max_datagram;
        self
    }
}

impl Default for UdpOptions {
    fn default() -> UdpOptions {
        UdpOptions {
            reuse_addr: false,
            reuse_port: false,
            ipv6_only: false,
            recv_buffer_size: None,
            send_buffer_size: None,
            max_datagram: 64 * 1024,
        }
    }
}

/// Which interface a multicast operation uses
/// ([`UdpSocket::add_membership`], [`UdpSocket::set_multicast_interface`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MulticastInterface {
    /// The one the system chooses (`INADDR_ANY`, or interface index 0).
    Default,
    /// An IPv4 interface, by one of its addresses (`127.0.0.1` is `lo`).
    V4(Ipv4Addr),
    /// An IPv6 interface, by index (1 is usually `lo`).
    V6(u32),
}

impl Loop {
    /// Makes a UDP socket bound to `addr` (port 0: one the system picks,
    /// see [`UdpSocket::local_addr`]). It neither receives nor keeps the
    /// loop alive until [`UdpSocket::recv_start`].
    ///
    /// # Errors
    ///
    /// [`Error::Net`] with syscall `"bind"` when the socket cannot be made,
    /// configured or bound: `bind EADDRINUSE 127.0.0.1:41234`.
    #[track_caller]
    pub fn udp_bind(&mut self, addr: SocketAddr, options: UdpOptions) -> Result<UdpSocket> {
        let table = table::of(self);
        let socket = udp_socket(addr, &options).map_err(|e| Error::net("bind", Some(addr), e))?;
        let udp = UdpSocket::insert(
            &mut table.borrow_mut(),
            socket,
            addr.is_ipv6(),
            options.max_datagram,
        );
        self.remember_site(
            crate::diag::Kind::Udp,
            udp.raw(),
            std::panic::Location::caller(),
        );
        Ok(udp)
    }
}

/// A nonblocking, close-on-exec UDP socket configured by `options` and
/// bound to `addr`.
fn udp_socket(addr: SocketAddr, options: &UdpOptions) -> std::io::Result<Socket> {
    let socket = crate::net::new_socket(Domain::for_address(addr), Type::DGRAM)?;
    if options.reuse_addr {
        socket.set_reuse_address(true)?;
    }
    if options.reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() && options.ipv6_only {
        socket.set_only_v6(true)?;
    }
    if let Some(size) = options.recv_buffer_size {
        socket.set_recv_buffer_size(size)?;
    }
    if let Some(size) = options.send_buffer_size {
        socket.set_send_buffer_size(size)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket)
}
