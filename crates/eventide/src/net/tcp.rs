//! TCP streams: connect, read, write with a queue, shutdown, close.
//!
//! A stream's state lives in the loop's socket table; its handle is the
//! key. At most one receive and one send are in flight per stream: the
//! receive is one multishot `recv_multi` whose chunks arrive in buffers the
//! reactor lends (each recycled once `on_data` returns, so an idle stream
//! holds no buffer), the send works through the write queue, resubmitting
//! the rest of a partial send until the buffer is out.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use eventide_reactor::{Completion, Op, Shutdown, Token};
use socket2::{Socket, TcpKeepalive};

use crate::event_loop::{Loop, Task};
use crate::slab::SlotId;
use crate::{Error, Result};

type OnConnect = Box<dyn FnOnce(&mut Loop, Result<TcpStream>)>;
type OnData = Box<dyn FnMut(&mut Loop, TcpStream, &[u8])>;
type OnEnd = Box<dyn FnOnce(&mut Loop, TcpStream, Result<()>)>;
type OnDone = Box<dyn FnOnce(&mut Loop, Result<()>)>;

/// A TCP connection's handle: `Copy`, and stale once closed (see the
/// [module documentation](super)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TcpStream(SlotId);

pub(crate) struct Stream {
    socket: Socket,
    /// Where `connect` went, for its error messages.
    peer: Option<SocketAddr>,
    /// Set while a connect is in flight.
    on_connect: Option<OnConnect>,
    reading: bool,
    /// The multishot receive armed, until its final completion.
    recv: Option<Token>,
    /// `recv` was cancelled by `read_stop` (its final completion is due).
    recv_cancelled: bool,
    /// Chunks (reactor buffers, recycled once delivered) that arrived while
    /// no reader wanted them, for the next `read_start`, in order.
    stash: VecDeque<Vec<u8>>,
    /// The peer ended its side.
    eof: bool,
    /// `None` while it runs.
    on_data: Option<OnData>,
    on_end: Option<OnEnd>,
    writes: VecDeque<Write>,
    /// Bytes queued and not yet taken by the kernel.
    queued: usize,
    sending: bool,
    shutdown: ShutdownState,
}

struct Write {
    buf: Vec<u8>,
    sent: usize,
    on_written: OnDone,
}

enum ShutdownState {
    Open,
    /// Requested; submitted once the write queue is empty.
    Queued(OnDone),
    InFlight,
}

impl Stream {
    fn new(socket: Socket, peer: Option<SocketAddr>, on_connect: Option<OnConnect>) -> Stream {
        Stream {
            socket,
            peer,
            on_connect,
            reading: false,
            recv: None,
            recv_cancelled: false,
            stash: VecDeque::new(),
            eof: false,
            on_data: None,
            on_end: None,
            writes: VecDeque::new(),
            queued: 0,
            sending: false,
            shutdown: ShutdownState::Open,
        }
    }

    fn connected(&self) -> bool {
        self.on_connect.is_none()
    }
}

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
    pub fn tcp_connect(
        &mut self,
        addr: SocketAddr,
        on_connect: impl FnOnce(&mut Loop, Result<TcpStream>) + 'static,
    ) -> Result<TcpStream> {
        let error = |e| Error::net("connect", Some(addr), e);
        let socket = super::tcp_socket(addr).map_err(error)?;
        let fd = socket.as_raw_fd();
        let stream = Stream::new(socket, Some(addr), Some(Box::new(on_connect)));
        let id = TcpStream(self.io.net.streams.insert(stream));
        let op = Op::connect(fd, addr);
        if let Err(refused) = self.submit_io(op, move |lp, c| id.on_connected(lp, c)) {
            if let Some(stream) = self.io.net.streams.remove(id.0) {
                drop(stream.socket);
            }
            return Err(error(refused.error));
        }
        Ok(id)
    }
}

impl TcpStream {
    pub(super) fn accepted(lp: &mut Loop, socket: Socket) -> TcpStream {
        TcpStream(lp.io.net.streams.insert(Stream::new(socket, None, None)))
    }

    /// Starts reading: `on_data` runs with each chunk received (the slice
    /// is valid during the call only: the buffer goes back to the reactor
    /// for reuse), `on_end` once
    /// when the peer ends its side (`Ok(())`; the stream stays open for
    /// writing until closed) or with the error that destroyed the stream.
    /// Replaces the callbacks of an earlier `read_start`.
    pub fn read_start(
        self,
        lp: &mut Loop,
        on_data: impl FnMut(&mut Loop, TcpStream, &[u8]) + 'static,
        on_end: impl FnOnce(&mut Loop, TcpStream, Result<()>) + 'static,
    ) {
        let Some(s) = lp.io.net.streams.get_mut(self.0) else {
            lp.defer(move |lp| on_end(lp, self, Err(STALE)));
            return;
        };
        s.reading = true;
        s.on_data = Some(Box::new(on_data));
        s.on_end = Some(Box::new(on_end));
        if !s.stash.is_empty() || s.eof {
            // Known at once: delivered from the pending phase.
            lp.defer(move |lp| self.pump(lp));
        } else {
            self.pump(lp);
        }
    }

    /// Stops reading; no `on_data` runs until the next
    /// [`TcpStream::read_start`]. The receive is cancelled; bytes that
    /// arrive meanwhile (a chunk already received as the cancel lands
    /// included) are kept, in order, for the next `read_start`, never
    /// dropped. Returns `false` for a closed stream.
    pub fn read_stop(self, lp: &mut Loop) -> bool {
        let Some(s) = lp.io.net.streams.get_mut(self.0) else {
            return false;
        };
        s.reading = false;
        if let Some(token) = s.recv
            && !s.recv_cancelled
        {
            s.recv_cancelled = true;
            lp.reactor.cancel(token);
        }
        true
    }

    /// Queues `buf` for sending; `on_written` runs once all of it is out
    /// (taken by the kernel), or with the error. Writes go out in order;
    /// partial sends are continued. [`TcpStream::write_queue_size`] counts
    /// the bytes not sent yet.
    pub fn write(
        self,
        lp: &mut Loop,
        buf: Vec<u8>,
        on_written: impl FnOnce(&mut Loop, Result<()>) + 'static,
    ) {
        let Some(s) = lp.io.net.streams.get_mut(self.0) else {
            lp.defer(move |lp| on_written(lp, Err(STALE)));
            return;
        };
        if !matches!(s.shutdown, ShutdownState::Open) {
            let epipe = io::Error::from_raw_os_error(libc::EPIPE);
            lp.defer(move |lp| on_written(lp, Err(Error::net("write", None, epipe))));
            return;
        }
        s.queued += buf.len();
        s.writes.push_back(Write {
            buf,
            sent: 0,
            on_written: Box::new(on_written),
        });
        self.flush(lp);
    }

    /// Bytes queued by [`TcpStream::write`] and not yet sent (libuv's
    /// `write_queue_size`, Node's `writableLength`); 0 for a closed stream.
    pub fn write_queue_size(self, lp: &Loop) -> usize {
        lp.io.net.streams.get(self.0).map_or(0, |s| s.queued)
    }

    /// Ends the writing side once the queued writes are out (half-close:
    /// the peer reads its end; reading goes on). `on_done` runs when the
    /// shutdown is done. Writes after this fail with `EPIPE`.
    pub fn shutdown(self, lp: &mut Loop, on_done: impl FnOnce(&mut Loop, Result<()>) + 'static) {
        let Some(s) = lp.io.net.streams.get_mut(self.0) else {
            lp.defer(move |lp| on_done(lp, Err(STALE)));
            return;
        };
        if !matches!(s.shutdown, ShutdownState::Open) {
            let again = io::Error::from_raw_os_error(libc::EALREADY);
            lp.defer(move |lp| on_done(lp, Err(Error::net("shutdown", None, again))));
            return;
        }
        s.shutdown = ShutdownState::Queued(Box::new(on_done));
        self.flush(lp);
    }

    /// Closes the stream at once: reading stops, the descriptor is
    /// released, and the callbacks still waiting (writes, shutdown,
    /// connect) run in this turn's close phase with `ECANCELED`. Returns
    /// `false`, doing nothing, if already closed. Allowed anywhere, the
    /// stream's own callbacks included.
    pub fn close(self, lp: &mut Loop) -> bool {
        self.close_with(lp, None)
    }

    /// As [`TcpStream::close`], and `on_close` runs in this turn's close
    /// phase, after the cancelled callbacks.
    pub fn close_then(self, lp: &mut Loop, on_close: impl FnOnce(&mut Loop) + 'static) -> bool {
        self.close_with(lp, Some(Box::new(on_close)))
    }

    /// Sets `TCP_NODELAY` (Node's `setNoDelay`): no Nagle delay.
    ///
    /// # Errors
    ///
    /// [`Error::Stale`] once closed; the system's error otherwise.
    pub fn set_nodelay(self, lp: &Loop, nodelay: bool) -> Result<()> {
        let socket = self.socket(lp)?;
        socket
            .set_tcp_nodelay(nodelay)
            .map_err(|e| Error::net("setsockopt", None, e))
    }

    /// Turns TCP keep-alive on or off (Node's `setKeepAlive`); `delay`,
    /// if not zero, is the idle time before the first probe.
    ///
    /// # Errors
    ///
    /// [`Error::Stale`] once closed; the system's error otherwise.
    pub fn set_keepalive(self, lp: &Loop, enable: bool, delay: Duration) -> Result<()> {
        let socket = self.socket(lp)?;
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
        super::socket_addr(self.socket(lp)?.local_addr())
            .map_err(|e| Error::net("getsockname", None, e))
    }

    /// The peer's address.
    ///
    /// # Errors
    ///
    /// [`Error::Stale`] once closed; `ENOTCONN` before the connection is
    /// made.
    pub fn peer_addr(self, lp: &Loop) -> Result<SocketAddr> {
        super::socket_addr(self.socket(lp)?.peer_addr())
            .map_err(|e| Error::net("getpeername", None, e))
    }

    fn socket(self, lp: &Loop) -> Result<&Socket> {
        lp.io
            .net
            .streams
            .get(self.0)
            .map(|s| &s.socket)
            .ok_or(STALE)
    }

    fn on_connected(self, lp: &mut Loop, c: Completion) {
        let Some(s) = lp.io.net.streams.get_mut(self.0) else {
            return;
        };
        let peer = s.peer;
        if let Err(error) = c.result {
            return self.destroy(lp, Error::net("connect", peer, error));
        }
        let Some(on_connect) = s.on_connect.take() else {
            return;
        };
        on_connect(lp, Ok(self));
        self.pump(lp);
        self.flush(lp);
    }

    /// Delivers what is ready to a reader (stashed chunks, then the end of
    /// the stream), then arms the receive if it wants more.
    fn pump(self, lp: &mut Loop) {
        loop {
            let Some(s) = lp.io.net.streams.get_mut(self.0) else {
                return;
            };
            // No reader, or its `on_data` is running (and this pump comes
            // from inside it): the stash waits.
            if !s.reading || !s.connected() || s.on_data.is_none() {
                return;
            }
            let Some(chunk) = s.stash.pop_front() else {
                break;
            };
            if s.stash.is_empty() {
                // Hold no memory while idle.
                s.stash = VecDeque::new();
            }
            self.deliver(lp, chunk);
        }
        let Some(s) = lp.io.net.streams.get_mut(self.0) else {
            return;
        };
        if s.eof {
            s.reading = false;
            s.on_data = None;
            if let Some(on_end) = s.on_end.take() {
                on_end(lp, self, Ok(()));
            }
            return;
        }
        if s.recv.is_some() {
            return;
        }
        let op = Op::recv_multi(s.socket.as_raw_fd());
        match lp.submit_io(op, move |lp, c| self.on_received(lp, c)) {
            Ok(token) => {
                if let Some(s) = lp.io.net.streams.get_mut(self.0) {
                    s.recv = Some(token);
                    s.recv_cancelled = false;
                }
            }
            Err(refused) => self.destroy(lp, Error::net("read", None, refused.error)),
        }
    }

    /// One completion of the multishot receive: a chunk (`more`), or its
    /// end (end of stream, cancel, error).
    fn on_received(self, lp: &mut Loop, c: Completion) {
        let Some(s) = lp.io.net.streams.get_mut(self.0) else {
            // Closed: the reactor's buffer goes back to it.
            if let Some(buf) = c.buf {
                lp.reactor.recycle(buf);
            }
            return;
        };
        if !c.more && s.recv == Some(c.token) {
            s.recv = None;
            s.recv_cancelled = false;
        }
        match c.result {
            Ok(0) => {
                // The end of the stream (a final 0); never a chunk.
                s.eof |= !c.more;
                if let Some(buf) = c.buf {
                    lp.reactor.recycle(buf);
                }
            }
            Ok(_) => match c.buf {
                // The fast path: straight to the reader.
                Some(buf) if s.reading && s.stash.is_empty() && s.on_data.is_some() => {
                    self.deliver(lp, buf);
                    if c.more {
                        return;
                    }
                }
                Some(buf) => s.stash.push_back(buf),
                None => {}
            },
            Err(error) if error.raw_os_error() == Some(libc::ECANCELED) => {
                if let Some(buf) = c.buf {
                    lp.reactor.recycle(buf);
                }
            }
            // The reactor parks receives starved of buffers itself; a final
            // ENOBUFS is the system's (out of socket memory): receive again.
            Err(error) if error.raw_os_error() == Some(libc::ENOBUFS) => {
                if let Some(buf) = c.buf {
                    lp.reactor.recycle(buf);
                }
            }
            Err(error) => {
                if let Some(buf) = c.buf {
                    lp.reactor.recycle(buf);
                }
                return self.destroy(lp, Error::net("read", None, error));
            }
        }
        self.pump(lp);
    }

    /// Runs `on_data` with `chunk`, then gives the buffer back to the
    /// reactor.
    fn deliver(self, lp: &mut Loop, chunk: Vec<u8>) {
        let Some(mut on_data) = lp
            .io
            .net
            .streams
            .get_mut(self.0)
            .and_then(|s| s.on_data.take())
        else {
            lp.reactor.recycle(chunk);
            return;
        };
        on_data(lp, self, &chunk);
        lp.reactor.recycle(chunk);
        let Some(s) = lp.io.net.streams.get_mut(self.0) else {
            return; // Closed by the callback.
        };
        // A read_start inside the callback brought new callbacks: keep them.
        if s.on_data.is_none() {
            s.on_data = Some(on_data);
        }
    }

    /// Sends the head of the write queue, or the shutdown once it is empty.
    fn flush(self, lp: &mut Loop) {
        let Some(s) = lp.io.net.streams.get_mut(self.0) else {
            return;
        };
        if s.sending || !s.connected() {
            return;
        }
        let fd = s.socket.as_raw_fd();
        let Some(head) = s.writes.front_mut() else {
            return self.start_shutdown(lp);
        };
        // An empty write is sent too (0 bytes), so that its callback runs
        // from the poll phase like any other.
        let op = Op::send_from(fd, std::mem::take(&mut head.buf), head.sent);
        s.sending = true;
        if let Err(refused) = lp.submit_io(op, move |lp, c| self.on_sent(lp, c)) {
            self.destroy(lp, Error::net("write", None, refused.error));
        }
    }

    fn on_sent(self, lp: &mut Loop, c: Completion) {
        let Some(s) = lp.io.net.streams.get_mut(self.0) else {
            return;
        };
        s.sending = false;
        let n = match c.result {
            Ok(n) => n,
            Err(error) => return self.destroy(lp, Error::net("write", None, error)),
        };
        let Some(head) = s.writes.front_mut() else {
            return;
        };
        head.buf = c.buf.unwrap_or_default();
        head.sent += n;
        s.queued -= n;
        if head.sent == head.buf.len() {
            self.written(lp);
        } else {
            self.flush(lp);
        }
    }

    /// The head write is out: its callback runs, the queue goes on.
    fn written(self, lp: &mut Loop) {
        let Some(head) = lp
            .io
            .net
            .streams
            .get_mut(self.0)
            .and_then(|s| s.writes.pop_front())
        else {
            return;
        };
        (head.on_written)(lp, Ok(()));
        self.flush(lp);
    }

    fn start_shutdown(self, lp: &mut Loop) {
        let Some(s) = lp.io.net.streams.get_mut(self.0) else {
            return;
        };
        let on_done = match std::mem::replace(&mut s.shutdown, ShutdownState::InFlight) {
            ShutdownState::Queued(on_done) => on_done,
            other => {
                s.shutdown = other;
                return;
            }
        };
        let op = Op::shutdown(s.socket.as_raw_fd(), Shutdown::Write);
        let mut on_done = Some(on_done);
        let submitted = lp.submit_io(op, move |lp, c| {
            if let Some(on_done) = on_done.take() {
                on_done(lp, c.result.map(drop).map_err(shutdown_error));
            }
        });
        if let Err(refused) = submitted {
            // The callback went with the refused operation's handler.
            self.destroy(lp, Error::net("shutdown", None, refused.error));
        }
    }

    fn close_with(self, lp: &mut Loop, on_close: Option<Task>) -> bool {
        let Some(mut s) = lp.io.net.streams.remove(self.0) else {
            return false;
        };
        recycle_stash(lp, &mut s);
        let waiting = Waiting::take(&mut s, false);
        super::close_socket(lp, s.socket);
        lp.push_closing(Some(Box::new(move |lp: &mut Loop| {
            waiting.fail(lp, libc::ECANCELED);
            if let Some(on_close) = on_close {
                on_close(lp);
            }
        })));
        true
    }

    /// Ends the stream on a fatal error, as Node destroys a socket: the
    /// descriptor is closed, and every waiting callback gets the error
    /// (`on_end` and the one the error belongs to with `error` itself).
    fn destroy(self, lp: &mut Loop, error: Error) {
        let Some(mut s) = lp.io.net.streams.remove(self.0) else {
            return;
        };
        recycle_stash(lp, &mut s);
        let waiting = Waiting::take(&mut s, true);
        super::close_socket(lp, s.socket);
        let errno = error.errno().unwrap_or(libc::EIO);
        waiting.fail_first(lp, self, error, errno);
    }
}

/// The callbacks of a stream that is going away.
struct Waiting {
    peer: Option<SocketAddr>,
    on_connect: Option<OnConnect>,
    writes: VecDeque<Write>,
    shutdown: Option<OnDone>,
    on_end: Option<OnEnd>,
}

impl Waiting {
    fn take(s: &mut Stream, with_reader: bool) -> Waiting {
        let shutdown = match std::mem::replace(&mut s.shutdown, ShutdownState::InFlight) {
            ShutdownState::Queued(on_done) => Some(on_done),
            _ => None,
        };
        Waiting {
            peer: s.peer,
            on_connect: s.on_connect.take(),
            writes: std::mem::take(&mut s.writes),
            shutdown,
            on_end: if with_reader { s.on_end.take() } else { None },
        }
    }

    /// Fails every callback with `errno`.
    fn fail(self, lp: &mut Loop, errno: i32) {
        let os = || io::Error::from_raw_os_error(errno);
        if let Some(on_connect) = self.on_connect {
            on_connect(lp, Err(Error::net("connect", self.peer, os())));
        }
        for write in self.writes {
            (write.on_written)(lp, Err(Error::net("write", None, os())));
        }
        if let Some(on_done) = self.shutdown {
            on_done(lp, Err(Error::net("shutdown", None, os())));
        }
    }

    /// Fails every callback, the first of them (the connect's, else the
    /// head write's, else the reader's) with `error` itself.
    fn fail_first(mut self, lp: &mut Loop, stream: TcpStream, error: Error, errno: i32) {
        let on_end = self.on_end.take();
        let mut error = Some(error);
        if let Some(on_connect) = self.on_connect.take() {
            on_connect(lp, Err(error.take().expect("not taken yet")));
        } else if let Some(head) = self.writes.pop_front() {
            (head.on_written)(lp, Err(error.take().expect("not taken yet")));
        }
        self.fail(lp, errno);
        if let Some(on_end) = on_end {
            let error = error.unwrap_or_else(|| {
                let syscall = "read";
                Error::net(syscall, None, io::Error::from_raw_os_error(errno))
            });
            on_end(lp, stream, Err(error));
        }
    }
}

/// Gives the chunks a going stream never delivered back to the reactor.
fn recycle_stash(lp: &mut Loop, s: &mut Stream) {
    for buf in s.stash.drain(..) {
        lp.reactor.recycle(buf);
    }
}

fn shutdown_error(error: io::Error) -> Error {
    Error::net("shutdown", None, error)
}

const STALE: Error = Error::Stale { what: "TCP stream" };
