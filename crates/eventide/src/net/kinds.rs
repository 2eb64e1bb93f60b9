//! The handle of each kind of socket: [`TcpStream`], [`UnixStream`],
//! [`TcpListener`] and [`UnixListener`], thin `Copy` wrappers of the one
//! key type ([`Stream`], [`Listener`]) whose shared API they forward
//! (generated once here), each with the methods only its kind has (in
//! `tcp.rs`, `unix.rs` and `listener.rs`).

use std::time::Duration;

use super::{Listener, Stream, WriteBuf};
use crate::Result;
use crate::event_loop::Loop;

/// The API every stream kind shares, forwarded to [`Stream`] with the
/// kind's own handle in the callbacks.
macro_rules! stream_kind {
    ($(#[$doc:meta])* $T:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub struct $T(pub(super) Stream);

        impl From<$T> for Stream {
            fn from(s: $T) -> Stream {
                s.0
            }
        }

        impl PartialEq<Stream> for $T {
            fn eq(&self, other: &Stream) -> bool {
                self.0 == *other
            }
        }

        impl $T {
            /// This connection as a [`Stream`], for code that serves every
            /// kind of stream alike (also `Stream::from`).
            pub fn stream(self) -> Stream {
                self.0
            }

            /// [`Stream::read_start`], with this kind's handle in the
            /// callbacks.
            pub fn read_start(
                self,
                lp: &mut Loop,
                mut on_data: impl FnMut(&mut Loop, $T, &[u8]) + 'static,
                on_end: impl FnOnce(&mut Loop, $T, Result<()>) + 'static,
            ) {
                self.0.read_start(
                    lp,
                    move |lp, s, data| on_data(lp, $T(s), data),
                    move |lp, s, result| on_end(lp, $T(s), result),
                );
            }

            /// [`Stream::read_stop`].
            pub fn read_stop(self, lp: &mut Loop) -> bool {
                self.0.read_stop(lp)
            }

            /// [`Stream::write`]: queues `buf` (anything that converts
            /// into a [`WriteBuf`]); `false` once the queue reached the
            /// high-water mark.
            pub fn write(
                self,
                lp: &mut Loop,
                buf: impl Into<WriteBuf>,
                on_written: impl FnOnce(&mut Loop, Result<()>) + 'static,
            ) -> bool {
                self.0.write(lp, buf, on_written)
            }

            /// [`Stream::try_write`]: writes what the kernel takes now,
            /// queues nothing.
            pub fn try_write(self, lp: &mut Loop, data: &[u8]) -> Result<usize> {
                self.0.try_write(lp, data)
            }

            /// [`Stream::write_queue_size`].
            pub fn write_queue_size(self, lp: &Loop) -> usize {
                self.0.write_queue_size(lp)
            }

            /// [`Stream::need_drain`].
            pub fn need_drain(self, lp: &Loop) -> bool {
                self.0.need_drain(lp)
            }

            /// [`Stream::high_water_mark`].
            pub fn high_water_mark(self, lp: &Loop) -> usize {
                self.0.high_water_mark(lp)
            }

            /// [`Stream::set_high_water_mark`].
            pub fn set_high_water_mark(self, lp: &mut Loop, bytes: usize) -> bool {
                self.0.set_high_water_mark(lp, bytes)
            }

            /// [`Stream::on_drain`], with this kind's handle in the
            /// callback.
            pub fn on_drain(
                self,
                lp: &mut Loop,
                mut on_drain: impl FnMut(&mut Loop, $T) + 'static,
            ) -> bool {
                self.0.on_drain(lp, move |lp, s| on_drain(lp, $T(s)))
            }

            /// [`Stream::set_idle_timeout`] (Node's `socket.setTimeout`),
            /// with this kind's handle in the callback.
            pub fn set_idle_timeout(
                self,
                lp: &mut Loop,
                idle: Duration,
                on_timeout: impl FnOnce(&mut Loop, $T) + 'static,
            ) -> bool {
                self.0
                    .set_idle_timeout(lp, idle, move |lp, s| on_timeout(lp, $T(s)))
            }

            /// [`Stream::unref`].
            pub fn unref(self, lp: &mut Loop) -> bool {
                self.0.unref(lp)
            }

            /// [`Stream::set_ref`].
            pub fn set_ref(self, lp: &mut Loop, referenced: bool) -> bool {
                self.0.set_ref(lp, referenced)
            }

            /// [`Stream::has_ref`].
            pub fn has_ref(self, lp: &Loop) -> bool {
                self.0.has_ref(lp)
            }

            /// [`Stream::shutdown`].
            pub fn shutdown(
                self,
                lp: &mut Loop,
                on_done: impl FnOnce(&mut Loop, Result<()>) + 'static,
            ) {
                self.0.shutdown(lp, on_done);
            }

            /// [`Stream::end`] (Node's `socket.end()`).
            pub fn end(self, lp: &mut Loop) -> bool {
                self.0.end(lp)
            }

            /// [`Stream::set_end_timeout`].
            pub fn set_end_timeout(self, lp: &mut Loop, timeout: Duration) -> bool {
                self.0.set_end_timeout(lp, timeout)
            }

            /// [`Stream::set_allow_half_open`].
            pub fn set_allow_half_open(self, lp: &mut Loop, allow: bool) -> bool {
                self.0.set_allow_half_open(lp, allow)
            }

            /// [`Stream::allow_half_open`].
            pub fn allow_half_open(self, lp: &Loop) -> bool {
                self.0.allow_half_open(lp)
            }

            /// [`Stream::on_close`] (Node's `'close'` event), with this
            /// kind's handle in the callback.
            pub fn on_close(
                self,
                lp: &mut Loop,
                on_close: impl FnOnce(&mut Loop, $T, bool) + 'static,
            ) -> bool {
                self.0
                    .on_close(lp, move |lp, s, had_error| on_close(lp, $T(s), had_error))
            }

            /// [`Stream::pipe`]: into `dest`, a stream of any kind.
            pub fn pipe(self, lp: &mut Loop, dest: impl Into<Stream>) -> bool {
                self.0.pipe(lp, dest)
            }

            /// [`Stream::close`].
            pub fn close(self, lp: &mut Loop) -> bool {
                self.0.close(lp)
            }

            /// [`Stream::close_then`].
            pub fn close_then(
                self,
                lp: &mut Loop,
                on_close: impl FnOnce(&mut Loop) + 'static,
            ) -> bool {
                self.0.close_then(lp, on_close)
            }

            /// [`Stream::raw_fd`].
            ///
            /// # Errors
            ///
            /// [`Error::Stale`](crate::Error::Stale) once closed.
            pub fn raw_fd(self, lp: &Loop) -> Result<std::os::fd::RawFd> {
                self.0.raw_fd(lp)
            }
        }
    };
}

stream_kind! {
    /// A TCP connection's handle ([`Loop::tcp_connect`], or a
    /// [`TcpListener`]'s connection callback; Node's `net.Socket` over
    /// TCP): `Copy`, and stale once closed (see the
    /// [module documentation](super)). It has the API of every
    /// [`Stream`] and TCP's own: [`TcpStream::set_nodelay`],
    /// [`TcpStream::set_keepalive`], [`TcpStream::local_addr`],
    /// [`TcpStream::peer_addr`]. Dropping it does not close the
    /// connection: [`TcpStream::close`] or [`TcpStream::end`] does.
    TcpStream
}

stream_kind! {
    /// A Unix domain stream connection's handle ([`Loop::unix_connect`],
    /// or a [`UnixListener`]'s connection callback): `Copy`, and stale
    /// once closed. It has the API of every [`Stream`] and the Unix
    /// domain's own: [`UnixStream::peer_cred`], [`UnixStream::local_path`],
    /// [`UnixStream::peer_path`]. Dropping it does not close the
    /// connection: [`UnixStream::close`] or [`UnixStream::end`] does.
    UnixStream
}

stream_kind! {
    /// A stream over any descriptor: one end of a pipe, a FIFO, a
    /// terminal, the process's stdin/stdout/stderr, a child's stdio
    /// ([`Loop::pipe_open`], [`Loop::pipe_pair`], [`Loop::stdin`],
    /// [`Loop::stdout`], [`Loop::stderr`]; Node's `net.Socket` on a
    /// descriptor, `process.stdin`/`stdout`, `tty` streams): `Copy`, and
    /// stale once closed. It has the API of every [`Stream`] (reads and
    /// writes are `read(2)`/`write(2)`, see [`super::pipe`]) and a
    /// terminal's: [`Pipe::is_tty`], [`Pipe::set_raw_mode`],
    /// [`Pipe::window_size`], [`Pipe::on_resize`]. Dropping it does not
    /// close the descriptor: [`Pipe::close`] or [`Pipe::end`] does.
    Pipe
}

/// The API every listener kind shares, forwarded to [`Listener`].
macro_rules! listener_kind {
    ($(#[$doc:meta])* $T:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[must_use = "dropping a listener's handle does not close it: it listens (and keeps \
                      the loop alive) until closed with the handle"]
        pub struct $T(pub(super) Listener);

        impl From<$T> for Listener {
            fn from(l: $T) -> Listener {
                l.0
            }
        }

        impl $T {
            /// This listener as a [`Listener`], for code that serves every
            /// kind alike (also `Listener::from`).
            pub fn listener(self) -> Listener {
                self.0
            }

            /// [`Listener::close`].
            pub fn close(self, lp: &mut Loop) -> bool {
                self.0.close(lp)
            }

            /// [`Listener::close_then`] (Node's `server.close(callback)`).
            pub fn close_then(
                self,
                lp: &mut Loop,
                on_close: impl FnOnce(&mut Loop) + 'static,
            ) -> bool {
                self.0.close_then(lp, on_close)
            }

            /// [`Listener::unref`].
            pub fn unref(self, lp: &mut Loop) -> bool {
                self.0.unref(lp)
            }

            /// [`Listener::set_ref`].
            pub fn set_ref(self, lp: &mut Loop, referenced: bool) -> bool {
                self.0.set_ref(lp, referenced)
            }

            /// [`Listener::has_ref`].
            pub fn has_ref(self, lp: &Loop) -> bool {
                self.0.has_ref(lp)
            }

            /// [`Listener::connections`] (Node's `server.getConnections()`).
            pub fn connections(self, lp: &Loop) -> usize {
                self.0.connections(lp)
            }
        }
    };
}

listener_kind! {
    /// A listening TCP socket's handle ([`Loop::tcp_listen`], Node's
    /// `net.Server` on a port): `Copy`, and stale once closed. It has the
    /// API of every [`Listener`] and [`TcpListener::local_addr`].
    TcpListener
}

listener_kind! {
    /// A listening Unix domain socket's handle ([`Loop::unix_listen`],
    /// Node's `net.Server` on a path): `Copy`, and stale once closed. It
    /// has the API of every [`Listener`] and [`UnixListener::path`].
    UnixListener
}
