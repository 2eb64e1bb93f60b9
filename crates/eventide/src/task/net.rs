//! Sockets, awaited: connect, accept (a [`futures_core::Stream`] of
//! connections), [`AsyncStream`] (`futures-io`'s `AsyncRead` and
//! `AsyncWrite` over a [`Stream`]), UDP and DNS lookup.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use super::oneshot;
use super::stream_io::{self, StreamIo, set_waker, to_io, wake};
use super::{try_with_loop, with_loop};
use crate::dgram::UdpSocket;
use crate::net::{
    Family, ListenOptions, Listener, Stream, TcpListener, TcpStream, UnixListener, UnixStream,
};
use crate::{Error, Loop, Result};

/// Connects to `addr` ([`Loop::tcp_connect`]); resolves to the connected
/// stream or the error (`connect ECONNREFUSED 127.0.0.1:9`). Dropping the
/// future before it is connected closes the socket (the connect is
/// cancelled).
pub async fn tcp_connect(addr: SocketAddr) -> Result<TcpStream> {
    let (tx, rx) = oneshot::channel();
    let stream = with_loop(|lp| lp.tcp_connect(addr, move |_, result| tx.send(result)))?;
    let guard = CloseOnDrop(Some(stream.stream()));
    let result = rx.await;
    guard.disarm();
    result
}

/// Connects to `host` on `port` through [`Loop::lookup`]
/// ([`Loop::tcp_connect_host`]). Dropping the future lets the attempt go
/// on; a stream it connects is then closed.
pub async fn tcp_connect_host(host: &str, port: u16) -> Result<TcpStream> {
    let (tx, rx) = oneshot::channel();
    with_loop(|lp| {
        lp.tcp_connect_host(host, port, move |lp, result| {
            if tx.is_closed() {
                if let Ok(stream) = result {
                    stream.close(lp);
                }
                return;
            }
            tx.send(result);
        });
    });
    rx.await
}

/// Connects to the Unix domain socket at `path` ([`Loop::unix_connect`]).
/// Dropping the future before it is connected closes the socket.
pub async fn unix_connect(path: impl AsRef<Path>) -> Result<UnixStream> {
    let path = path.as_ref().to_path_buf();
    let (tx, rx) = oneshot::channel();
    let stream = with_loop(|lp| lp.unix_connect(path, move |_, result| tx.send(result)))?;
    let guard = CloseOnDrop(Some(stream.stream()));
    let result = rx.await;
    guard.disarm();
    result
}

/// Closes a stream whose connect was given up.
struct CloseOnDrop(Option<Stream>);

impl CloseOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if let Some(stream) = self.0.take() {
            try_with_loop(|lp| stream.close(lp));
        }
    }
}

/// Resolves `host` ([`Loop::lookup`], Node's `dns.promises.lookup` with
/// `all: true`). The lookup runs to its end even if the future is dropped.
pub async fn lookup(host: &str, family: Family) -> Result<Vec<IpAddr>> {
    let (tx, rx) = oneshot::channel();
    with_loop(|lp| lp.lookup(host, family, move |_, result| tx.send(result)));
    rx.await
}

/// What an accepting stream shares with its listener's callback.
struct Accepted<S> {
    queue: VecDeque<Result<S>>,
    waker: Option<Waker>,
}

/// A listener as a [`futures_core::Stream`] of accepted connections
/// (or `accept` errors); it never ends. Connections accepted while nobody
/// polls wait in a queue. Dropping it closes the listener.
#[must_use = "streams do nothing unless polled"]
pub struct Incoming<S> {
    listener: Listener,
    /// The accepted kind as a [`Stream`], to close the ones never taken.
    to_stream: fn(S) -> Stream,
    local: Option<SocketAddr>,
    accepted: Rc<RefCell<Accepted<S>>>,
}

impl<S> std::fmt::Debug for Incoming<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("listener", &self.listener)
            .field("local", &self.local)
            .finish()
    }
}

fn on_connection<S: 'static>(
    accepted: &Rc<RefCell<Accepted<S>>>,
) -> impl FnMut(&mut Loop, Result<S>) + 'static {
    let accepted = Rc::clone(accepted);
    move |_, result| {
        let waker = {
            let mut a = accepted.borrow_mut();
            a.queue.push_back(result);
            a.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// Listens on `addr` ([`Loop::tcp_listen`]): the connections as a stream.
///
/// # Errors
///
/// As [`Loop::tcp_listen`] (`listen EADDRINUSE: address already in use
/// 127.0.0.1:8080`).
pub fn tcp_listen(
    lp: &mut Loop,
    addr: SocketAddr,
    options: ListenOptions,
) -> Result<Incoming<TcpStream>> {
    let accepted = Rc::new(RefCell::new(Accepted {
        queue: VecDeque::new(),
        waker: None,
    }));
    let listener: TcpListener = lp.tcp_listen(addr, options, on_connection(&accepted))?;
    Ok(Incoming {
        local: listener.local_addr(lp).ok(),
        to_stream: TcpStream::stream,
        listener: listener.into(),
        accepted,
    })
}

/// Listens on the Unix domain socket `path` ([`Loop::unix_listen`]).
///
/// # Errors
///
/// As [`Loop::unix_listen`].
pub fn unix_listen(
    lp: &mut Loop,
    path: impl AsRef<Path>,
    options: ListenOptions,
) -> Result<Incoming<UnixStream>> {
    let accepted = Rc::new(RefCell::new(Accepted {
        queue: VecDeque::new(),
        waker: None,
    }));
    let listener: UnixListener = lp.unix_listen(path, options, on_connection(&accepted))?;
    Ok(Incoming {
        local: None,
        to_stream: UnixStream::stream,
        listener: listener.into(),
        accepted,
    })
}

impl<S> Incoming<S> {
    /// The address a TCP listener is bound to (`None` for Unix).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local
    }

    /// Connections accepted and not yet taken.
    pub fn pending(&self) -> usize {
        self.accepted.borrow().queue.len()
    }

    /// The listener, for its callback API (`unref`, `connections`).
    pub fn listener(&self) -> Listener {
        self.listener
    }

    /// The next connection (`accept` as a future).
    pub async fn accept(&mut self) -> Result<S> {
        let accepted = Rc::clone(&self.accepted);
        std::future::poll_fn(move |cx| poll_accept(&accepted, cx)).await
    }
}

fn poll_accept<S>(accepted: &Rc<RefCell<Accepted<S>>>, cx: &Context<'_>) -> Poll<Result<S>> {
    let mut a = accepted.borrow_mut();
    if let Some(result) = a.queue.pop_front() {
        return Poll::Ready(result);
    }
    match &a.waker {
        Some(waker) if waker.will_wake(cx.waker()) => {}
        _ => a.waker = Some(cx.waker().clone()),
    }
    Poll::Pending
}

impl<S> futures_core::Stream for Incoming<S> {
    type Item = Result<S>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<S>>> {
        poll_accept(&self.accepted, cx).map(Some)
    }
}

impl<S> Drop for Incoming<S> {
    fn drop(&mut self) {
        let listener = self.listener;
        // Connections accepted and never taken are closed with it.
        let left: Vec<Stream> = self
            .accepted
            .borrow_mut()
            .queue
            .drain(..)
            .filter_map(|r| r.ok().map(|s| (self.to_stream)(s)))
            .collect();
        try_with_loop(|lp| {
            listener.close(lp);
            for stream in left {
                stream.close(lp);
            }
        });
    }
}

/// An [`AsyncStream`]'s bookkeeping of its queued writes, for `flush`.
#[derive(Default)]
struct Queued {
    /// Writes queued and not yet called back.
    count: usize,
    /// The first write error, reported by the next write or flush.
    error: Option<Error>,
}

/// `futures-io`'s [`AsyncRead`](futures_io::AsyncRead) and
/// [`AsyncWrite`](futures_io::AsyncWrite) over a loop [`Stream`] (TCP,
/// Unix), for code written against them (codecs, TLS, HTTP).
///
/// - **Reading** starts at the first read; chunks the loop reads wait in
///   a buffer until taken. Past [`AsyncStream::READ_HIGH_WATER`] bytes
///   buffered, reading stops ([`Stream::read_stop`]) until the reader has
///   taken them: backpressure towards the peer, as a paused Node socket.
///   `Ok(0)` is the peer's end; a reset is an error.
/// - **Writing** sends what the kernel takes at once
///   ([`Stream::try_write`], while nothing is queued) and queues the rest
///   ([`Stream::write`]), returning at once while the write queue is
///   under its high-water mark; once the mark is reached a write waits
///   for the queue's `drain`. `flush` waits until every queued write is
///   out; `close` flushes and shuts the writing side
///   ([`Stream::shutdown`]).
/// - **Dropping** it ends the stream gracefully ([`Stream::end`], Node's
///   `socket.end()`): queued writes still go out. [`AsyncStream::close`]
///   destroys it instead.
pub struct AsyncStream {
    io: StreamIo<Queued>,
}

impl std::fmt::Debug for AsyncStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncStream")
            .field("stream", &self.io.stream())
            .finish()
    }
}

impl AsyncStream {
    /// Bytes buffered past which reading pauses (64 KiB).
    pub const READ_HIGH_WATER: usize = stream_io::READ_HIGH_WATER;

    /// Wraps `stream`; it must not have another reader
    /// ([`Stream::read_start`] replaces the callbacks).
    pub fn new(stream: impl Into<Stream>) -> AsyncStream {
        AsyncStream {
            io: StreamIo::new(stream.into()),
        }
    }

    /// The stream, for the callback API.
    pub fn stream(&self) -> Stream {
        self.io.stream()
    }

    /// Destroys the stream at once (Node's `socket.destroy()`): queued
    /// writes are dropped.
    pub fn close(self) {
        self.io.close();
    }

    fn read_some(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        self.io.poll_read(cx, |bytes| {
            let n = buf.len().min(bytes.len());
            buf[..n].copy_from_slice(&bytes[..n]);
            n
        })
    }

    fn write_some(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let stream = self.io.stream();
        let state = self.io.state();
        let mut io = state.borrow_mut();
        if let Some(error) = io.writes.error.take() {
            return Poll::Ready(Err(to_io(&error)));
        }
        if let Some(Err(error)) = &io.end {
            return Poll::Ready(Err(to_io(error)));
        }
        // One visit to the loop: the drain check and the write.
        with_loop(|lp| {
            if stream.need_drain(lp) {
                drop(io);
                return self.io.wait_drain(lp, cx);
            }
            // Straight to the kernel while nothing is queued (libuv's
            // `uv_try_write`): no copy, no queued request, nothing for
            // `flush` to wait for. `try_write` refuses (EAGAIN) while
            // queued bytes are still going out, so nothing overtakes
            // them; its other errors change nothing, and the queued
            // write below meets them again and reports them.
            let sent = stream.try_write(lp, buf).unwrap_or(0);
            if sent == buf.len() {
                return Poll::Ready(Ok(sent));
            }
            io.writes.count += 1;
            drop(io);
            let written_io = Rc::clone(state);
            stream.write(lp, buf[sent..].to_vec(), move |_, result| {
                let mut io = written_io.borrow_mut();
                io.writes.count -= 1;
                if let Err(error) = result
                    && io.writes.error.is_none()
                {
                    io.writes.error = Some(error);
                }
                if io.writes.count == 0 || io.writes.error.is_some() {
                    wake(&mut io.write_waker);
                }
            });
            Poll::Ready(Ok(buf.len()))
        })
    }

    fn flush_all(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut io = self.io.state().borrow_mut();
        if let Some(error) = io.writes.error.take() {
            return Poll::Ready(Err(to_io(&error)));
        }
        if io.writes.count == 0 {
            return Poll::Ready(Ok(()));
        }
        set_waker(&mut io.write_waker, cx);
        Poll::Pending
    }

    fn shut(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Poll::Ready(Err(e)) = self.flush_all(cx) {
            return Poll::Ready(Err(e));
        }
        self.io.poll_shutdown(cx)
    }
}

/// Reading and writing go through the stream's shared state, so a shared
/// reference does both: one task may read while another writes (hold the
/// `AsyncStream` in an `Rc` and use `&*rc` in each).
macro_rules! io_traits {
    ($($T:ty),*) => {$(
        impl futures_io::AsyncRead for $T {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut [u8],
            ) -> Poll<io::Result<usize>> {
                self.read_some(cx, buf)
            }
        }

        impl futures_io::AsyncWrite for $T {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                self.write_some(cx, buf)
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                self.flush_all(cx)
            }

            fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                self.shut(cx)
            }
        }
    )*};
}

io_traits!(AsyncStream, &AsyncStream);

impl Drop for AsyncStream {
    fn drop(&mut self) {
        // After `close`, nothing; else `end`, even after a completed
        // `poll_close`.
        self.io.release(false);
    }
}

/// Sends `data` to `to` on `socket` ([`UdpSocket::send_to`]); resolves
/// to the bytes sent.
pub async fn udp_send_to(socket: UdpSocket, data: Vec<u8>, to: SocketAddr) -> Result<usize> {
    let (tx, rx) = oneshot::channel();
    with_loop(|lp| socket.send_to(lp, data, to, move |_, result| tx.send(result)));
    rx.await
}

/// What a [`UdpIncoming`] shares with its socket's callbacks.
struct Datagrams {
    queue: VecDeque<Result<(Vec<u8>, SocketAddr)>>,
    waker: Option<Waker>,
}

/// The datagrams `socket` receives, as a [`futures_core::Stream`] of
/// `(bytes, sender)` (or receive errors): [`UdpSocket::recv_start`] at
/// the first poll, [`UdpSocket::recv_stop`] when dropped.
pub fn udp_recv(socket: UdpSocket) -> UdpIncoming {
    UdpIncoming {
        socket,
        started: false,
        datagrams: Rc::new(RefCell::new(Datagrams {
            queue: VecDeque::new(),
            waker: None,
        })),
    }
}

/// The stream of [`udp_recv`].
#[must_use = "streams do nothing unless polled"]
pub struct UdpIncoming {
    socket: UdpSocket,
    started: bool,
    datagrams: Rc<RefCell<Datagrams>>,
}

impl std::fmt::Debug for UdpIncoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpIncoming")
            .field("socket", &self.socket)
            .finish()
    }
}

impl UdpIncoming {
    /// The next datagram (a future).
    pub async fn recv(&mut self) -> Result<(Vec<u8>, SocketAddr)> {
        std::future::poll_fn(|cx| {
            futures_core::Stream::poll_next(Pin::new(&mut *self), cx)
                .map(|item| item.unwrap_or_else(|| Err(Error::other("the datagram stream ended"))))
        })
        .await
    }
}

impl futures_core::Stream for UdpIncoming {
    type Item = Result<(Vec<u8>, SocketAddr)>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut d = self.datagrams.borrow_mut();
        if let Some(item) = d.queue.pop_front() {
            return Poll::Ready(Some(item));
        }
        set_waker(&mut d.waker, cx);
        drop(d);
        if !self.started {
            self.started = true;
            let socket = self.socket;
            let on_message = Rc::clone(&self.datagrams);
            let on_error = Rc::clone(&self.datagrams);
            with_loop(|lp| {
                socket.recv_start(
                    lp,
                    move |_, _, bytes, from| {
                        let mut d = on_message.borrow_mut();
                        d.queue.push_back(Ok((bytes.to_vec(), from)));
                        wake(&mut d.waker);
                    },
                    move |_, _, error| {
                        let mut d = on_error.borrow_mut();
                        d.queue.push_back(Err(error));
                        wake(&mut d.waker);
                    },
                );
            });
        }
        Poll::Pending
    }
}

impl Drop for UdpIncoming {
    fn drop(&mut self) {
        if self.started {
            let socket = self.socket;
            try_with_loop(|lp| socket.recv_stop(lp));
        }
    }
}
