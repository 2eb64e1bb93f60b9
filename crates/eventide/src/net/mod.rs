//! TCP networking: Node's `net` reduced to its libuv core, on the loop.
//!
//! ```
//! use std::net::SocketAddr;
//! use eventide::net::ListenOptions;
//!
//! let mut lp = eventide::Loop::new()?;
//! let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
//! let server = lp.tcp_listen(any, ListenOptions::default(), |lp, accepted| {
//!     // Echo everything back, then close when the peer ends.
//!     let stream = accepted.unwrap();
//!     stream.read_start(
//!         lp,
//!         |lp, stream, data| stream.write(lp, data.to_vec(), |_, res| res.unwrap()),
//!         |lp, stream, _end| { stream.close(lp); },
//!     );
//! })?;
//! let addr = server.local_addr(&lp)?;
//! lp.tcp_connect(addr, move |lp, connected| {
//!     let stream = connected.unwrap();
//!     stream.write(lp, b"ping".to_vec(), |_, res| res.unwrap());
//!     stream.read_start(
//!         lp,
//!         move |lp, stream, data| {
//!             assert_eq!(data, b"ping");
//!             stream.close(lp);
//!             server.close(lp);
//!         },
//!         |_, _, _| {},
//!     );
//! })?;
//! lp.run()?;
//! # Ok::<(), eventide::Error>(())
//! ```
//!
//! # Handles
//!
//! [`TcpListener`] and [`TcpStream`] are small `Copy` keys into the loop's
//! socket table, with a generation: once closed, a handle is stale, and
//! using it is harmless: `close` returns `false`, operations with a
//! callback get [`Error::Stale`](crate::Error::Stale) in it (in the next
//! pending phase), getters return it.
//!
//! # Liveness
//!
//! As libuv's handles, a socket keeps the loop alive while it does
//! something: a listener while it accepts, a stream while it connects,
//! reads, writes or shuts down, and any of them until its close callback
//! has run. An idle open stream does not.
//!
//! # Errors
//!
//! Failures are [`Error::Net`](crate::Error::Net), displayed as Node's
//! (`connect ECONNREFUSED 127.0.0.1:9`, `read ECONNRESET`). As in Node, a
//! stream that meets an error is destroyed: its descriptor is closed at
//! once, every callback still waiting gets the error, and the handle is
//! stale from then on.

mod listener;
mod tcp;

pub use listener::{ListenOptions, TcpListener};
pub use tcp::TcpStream;

use socket2::{Domain, Socket, Type};
use std::net::SocketAddr;

use crate::event_loop::Loop;
use crate::slab::Slab;

/// Every open socket of one loop.
#[derive(Default)]
pub(crate) struct Sockets {
    streams: Slab<tcp::Stream>,
    listeners: Slab<listener::Listener>,
}

/// A nonblocking, close-on-exec TCP socket for `addr`'s family.
fn tcp_socket(addr: SocketAddr) -> std::io::Result<Socket> {
    Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        None,
    )
}

/// Hands `socket` to the reactor to close (after cancelling what runs on
/// it); closes it here if the reactor refuses.
fn close_socket(lp: &mut Loop, socket: Socket) {
    use std::os::fd::{AsRawFd, IntoRawFd};
    let op = eventide_reactor::Op::close(socket.as_raw_fd());
    if lp.submit_io(op, |_, _| {}).is_ok() {
        // The reactor owns the descriptor now.
        let _ = socket.into_raw_fd();
    }
}

/// An address as a `SocketAddr` (TCP sockets always have one).
fn socket_addr(addr: std::io::Result<socket2::SockAddr>) -> std::io::Result<SocketAddr> {
    addr?
        .as_socket()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::Unsupported, "not an IP address"))
}
