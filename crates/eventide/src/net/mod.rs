//! Networking: Node's `net` (TCP and Unix domain stream sockets) and
//! `dns.lookup`, reduced to their libuv core, on the loop.
//!
//! ```
//! use std::net::SocketAddr;
//! use eventide::net::ListenOptions;
//!
//! let mut lp = eventide::Loop::new()?;
//! let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
//! let server = lp.tcp_listen(any, ListenOptions::default(), |lp, accepted| {
//!     // Echo everything back, with backpressure; when the peer ends, the
//!     // echoes still queued go out, then the stream ends and closes.
//!     let stream = accepted.unwrap();
//!     stream.pipe(lp, stream);
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
//! Each kind of socket has its handle type: [`TcpStream`],
//! [`UnixStream`], [`TcpListener`], [`UnixListener`]. They are small
//! `Copy` keys into the loop's socket table, with a generation: once
//! closed, a handle is stale, and using it is harmless: `close` returns
//! `false`, operations with a callback get
//! [`Error::Stale`](crate::Error::Stale) in it (in the next pending
//! phase), getters return it. Dropping a handle closes nothing (the
//! socket lives in the loop's table until closed), hence `#[must_use]`
//! on the listeners.
//!
//! Every stream kind has the API of [`Stream`] (reading, writing,
//! ending, closing, ...), with its own handle in the callbacks; TCP's
//! options and addresses are on [`TcpStream`] only, the Unix domain's
//! peer credentials and paths on [`UnixStream`] only. [`Stream`] and
//! [`Listener`] are the handles of "either kind", for code that serves
//! both: every kind converts into them with `From`.
//!
//! Methods that change something take `&mut Loop`; queries take
//! `&Loop`.
//!
//! Writes take a [`WriteBuf`]: a `Vec<u8>`, a literal, an `Rc<[u8]>`, an
//! `Arc<[u8]>`, any owner of bytes.
//!
//! # Streams
//!
//! - Reading: [`Stream::read_start`] with a callback per chunk and one
//!   for the end of the stream; [`Stream::read_stop`] keeps what still
//!   arrives for the next `read_start`.
//! - Writing: [`Stream::write`] queues; [`Stream::write_queue_size`] counts
//!   the bytes not yet sent. Backpressure as Node's: once the queue reaches
//!   the high-water mark ([`Stream::set_high_water_mark`], 16 KiB by
//!   default) [`Stream::need_drain`] is `true` until the queue has emptied
//!   and the [`Stream::on_drain`] callback has run.
//! - [`Stream::end`] ends gracefully (Node's `socket.end()`): the queued
//!   writes, then the FIN, then the close once the peer has ended too
//!   (or after [`DEFAULT_END_TIMEOUT`]). [`Stream::shutdown`] only
//!   half-closes; [`Stream::close`] closes at once, dropping queued
//!   writes (Node's `destroy()`).
//! - Half-open connections as Node's `allowHalfOpen`, off by default: a
//!   stream whose peer ended ends itself once its reader's `on_end(Ok)`
//!   returned ([`Stream::set_allow_half_open`],
//!   [`ListenOptions::allow_half_open`]).
//! - [`Stream::pipe`] is Node's `readable.pipe(writable)`: reading pauses
//!   while the destination is at its high-water mark.
//! - [`Stream::on_close`] is Node's `'close'` event: once, however the
//!   stream ends, with whether an error ended it.
//! - [`Stream::set_idle_timeout`] is Node's `socket.setTimeout`: a callback
//!   after a time without reads or writes, on the loop's timer wheel.
//!
//! # Closing
//!
//! [`Stream::close`] and [`Listener::close`] make the handle stale at
//! once. A stream's close callback ([`Stream::close_then`]) runs in the
//! close phase, where Node emits a socket's `'close'`; a listener's
//! ([`Listener::close_then`]) is Node's `server.close(callback)`: a
//! next-tick once the listener is closed and every connection it
//! delivered ([`Listener::connections`]) has been closed.
//!
//! # Names
//!
//! [`Loop::lookup`] resolves a host name on the pool's slow lane (Node's
//! `dns.lookup` with `all: true`; [`Loop::lookup_with`] takes Node's
//! options, [`LookupOptions`]); [`Loop::tcp_connect_host`] connects to
//! a name through it, trying its addresses in order.
//! [`Loop::lookup_service`] is Node's `dns.lookupService` (getnameinfo).
//!
//! # Sockets made elsewhere
//!
//! `from_std` and `from_fd` ([`TcpStream::from_std`],
//! [`TcpListener::from_std`], [`UnixStream::from_std`],
//! [`UnixListener::from_std`]) adopt a socket made by other code, checked
//! for its kind; `into_std` ([`TcpStream::into_std`], ...) hands it back
//! once nothing of the loop runs on it any more ([`HandedBack`],
//! [`HandedBackListener`]); `fd` borrows the descriptor as a
//! [`BorrowedFd`](std::os::fd::BorrowedFd).
//!
//! # Liveness
//!
//! As libuv's handles, a socket keeps the loop alive while it does
//! something: a listener while it accepts, a stream while it connects,
//! reads, writes or shuts down, and any of them until the close phase
//! of the turn it was closed in. An idle open stream does not. `unref` ([`Stream::unref`],
//! [`Listener::unref`]) lets the loop end while a stream reads or a
//! listener accepts (libuv's `uv_unref`); writes, connects and shutdowns
//! keep it alive regardless, as libuv's requests do. The idle timeout's
//! timer never keeps it alive (as Node's).
//!
//! # Errors
//!
//! Failures are [`Error::Net`](crate::Error::Net) (or
//! [`Error::NetPath`](crate::Error::NetPath) for Unix domain sockets,
//! [`Error::Dns`](crate::Error::Dns) for names), displayed as Node's
//! (`connect ECONNREFUSED 127.0.0.1:9`, `read ECONNRESET`,
//! `connect ENOENT /tmp/app.sock`, `getaddrinfo ENOTFOUND nosuchhost.invalid`).
//! As in Node, a stream that meets an error is destroyed: its descriptor
//! is closed at once, every callback still waiting gets the error, and
//! the handle is stale from then on.

pub(crate) mod adopt;
mod buf;
mod dns;
mod kinds;
mod listener;
pub mod pipe;
mod stream;
mod tcp;
mod unix;

pub use adopt::{HandedBack, HandedBackListener};
pub use buf::WriteBuf;
pub use dns::{Family, Hints, LookupOptions};
pub use kinds::{Pipe, TcpListener, TcpStream, UnixListener, UnixStream};
pub use listener::{ListenOptions, Listener};
pub use pipe::WindowSize;
pub use stream::{DEFAULT_END_TIMEOUT, DEFAULT_HIGH_WATER_MARK, Stream};
pub use unix::PeerCred;

use socket2::{Domain, Socket, Type};
use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use crate::event_loop::Loop;
use crate::slab::{Key, Keyed, SlotId};

/// Every open socket of one loop.
pub(crate) struct Sockets {
    streams: Keyed<stream::StreamState>,
    listeners: Keyed<listener::ListenerState>,
    /// Each listener's count of open connections (Node's
    /// `server._connections`), kept until it is closed and drained.
    servers: listener::Servers,
    /// libuv's reserve descriptor (`/dev/null`), opened with the first
    /// listener and spent when accept runs out of descriptors.
    reserve: Option<OwnedFd>,
    /// Errors owed to the `on_end` of streams destroyed while their
    /// `on_data` ran (the reader was out of the slot then): taken by the
    /// delivery that comes back to find the stream gone.
    owed: Vec<(stream::Stream, crate::Error)>,
    /// Sockets being handed back to std, waiting for their operation's
    /// final completion (`into_std`, in adopt.rs).
    hand_backs: adopt::HandBacks,
    /// The terminal pipes' resize callbacks (`pipe::window_changed`).
    resize: Vec<(Pipe, pipe::OnResize)>,
    /// The loop's own `SIGWINCH` listener, made with the first resize
    /// callback (it keeps nothing alive).
    winch: Option<crate::signal::SignalListener>,
    /// Send buffers of [`Stream::write_copy`] given back by their send's
    /// completion (the kernel is done with them), for the next copy:
    /// at most `SPARE_SENDS` of at most `SPARE_SEND_CAPACITY` bytes.
    spare_sends: Vec<Vec<u8>>,
}

/// How many finished send buffers a loop keeps for reuse (W13's 50
/// connections send up to 50 responses per turn).
const SPARE_SENDS: usize = 64;
/// The largest send buffer kept for reuse: at most 64 of them, 256 KiB.
const SPARE_SEND_CAPACITY: usize = 4096;

impl Sockets {
    /// Bytes queued in every stream's write queue (for the metrics).
    pub(crate) fn write_queue_bytes(&self) -> usize {
        self.streams.values().map(stream::StreamState::queued).sum()
    }

    /// The sockets of the loop `owner`.
    pub(crate) fn new(owner: u32) -> Sockets {
        Sockets {
            streams: Keyed::new(owner),
            listeners: Keyed::new(owner),
            servers: listener::Servers::default(),
            reserve: None,
            owed: Vec::new(),
            hand_backs: adopt::HandBacks::default(),
            resize: Vec::new(),
            winch: None,
            spare_sends: Vec::new(),
        }
    }

    /// A copy of `data` in a send buffer, a kept one when there is one.
    #[cfg_attr(not(feature = "hyper"), allow(dead_code))] // hyper's writes.
    fn copy_for_send(&mut self, data: &[u8]) -> Vec<u8> {
        match self.spare_sends.pop() {
            Some(mut buf) => {
                buf.extend_from_slice(data);
                buf
            }
            None => data.to_vec(),
        }
    }

    /// Keeps a send buffer the kernel is done with (its send completed),
    /// emptied, for [`Sockets::copy_for_send`]; a large one, or one over
    /// the count, is freed.
    fn keep_send_buffer(&mut self, mut buf: Vec<u8>) {
        let capacity = buf.capacity();
        if capacity > 0 && capacity <= SPARE_SEND_CAPACITY && self.spare_sends.len() < SPARE_SENDS {
            buf.clear();
            self.spare_sends.push(buf);
        }
    }

    /// The key of a slot of this loop's streams or listeners (an
    /// operation's token names the slot).
    pub(crate) fn key(&self, slot: SlotId) -> Key {
        self.streams.key(slot)
    }

    /// Leaves `error` for `stream`'s reader, which is out running `on_data`.
    fn owe_end(&mut self, stream: stream::Stream, error: crate::Error) {
        self.owed.push((stream, error));
    }

    /// The error owed to `stream`'s reader, if any.
    fn owed_end(&mut self, stream: stream::Stream) -> Option<crate::Error> {
        let at = self.owed.iter().position(|(s, _)| *s == stream)?;
        Some(self.owed.swap_remove(at).1)
    }
}

/// A nonblocking, close-on-exec TCP socket for `addr`'s family.
fn tcp_socket(addr: SocketAddr) -> std::io::Result<Socket> {
    new_socket(Domain::for_address(addr), Type::STREAM)
}

/// A nonblocking, close-on-exec Unix domain stream socket.
fn unix_socket() -> std::io::Result<Socket> {
    new_socket(Domain::UNIX, Type::STREAM)
}

/// A nonblocking, close-on-exec socket: both flags at once where
/// `socket(2)` takes them (`SOCK_NONBLOCK | SOCK_CLOEXEC`: Linux and the
/// BSDs), else set right after (macOS, as libuv does there).
pub(crate) fn new_socket(domain: Domain, kind: Type) -> std::io::Result<Socket> {
    #[cfg(any(
        target_os = "linux",
        target_os = "android",
        target_os = "freebsd",
        target_os = "netbsd",
        target_os = "openbsd",
        target_os = "dragonfly"
    ))]
    {
        Socket::new(domain, kind.nonblocking().cloexec(), None)
    }
    #[cfg(not(any(
        target_os = "linux",
        target_os = "android",
        target_os = "freebsd",
        target_os = "netbsd",
        target_os = "openbsd",
        target_os = "dragonfly"
    )))]
    {
        let socket = Socket::new(domain, kind, None)?;
        socket.set_nonblocking(true)?;
        socket.set_cloexec(true)?;
        Ok(socket)
    }
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

/// An address as a `SocketAddr` (TCP sockets always have one; a Unix
/// domain socket's is `EAFNOSUPPORT`).
fn socket_addr(addr: std::io::Result<socket2::SockAddr>) -> std::io::Result<SocketAddr> {
    addr?
        .as_socket()
        .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EAFNOSUPPORT))
}

#[cfg(test)]
mod tests {
    /// What an idle connection costs in the loop's tables (W10): its
    /// stream's slot (its receive's token names the stream, with no slot
    /// of its own). A change that grows it should be a decision, not an
    /// accident.
    #[test]
    fn an_idle_connections_slot_stays_small() {
        use std::mem::size_of;
        assert!(size_of::<super::stream::StreamState>() <= 32);
        assert!(size_of::<Option<super::stream::StreamState>>() <= 32);
    }
}
