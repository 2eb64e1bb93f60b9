//! Streams (TCP and Unix domain alike): read, write with a queue and
//! backpressure, shutdown, close, idle timeout, ref/unref.
//!
//! A stream's state lives in the loop's socket table; its handle is the
//! key. At most one receive and one send are in flight per stream: the
//! receive is one multishot `recv_multi` whose chunks arrive in buffers the
//! reactor lends (each recycled once `on_data` returns, so an idle stream
//! holds no buffer), the send works through the write queue, resubmitting
//! the rest of a partial send until the buffer is out.
//!
//! The state is kept small for idle connections (W10): what only some
//! streams use (a connect in progress, a stash of chunks, a shutdown, a
//! high-water mark of their own, a drain callback, an idle timeout) sits
//! behind one pointer, allocated the first time it is needed.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;

use eventide_reactor::{Completion, Op, Shutdown, Token};
use socket2::Socket;

use super::WriteBuf;
use super::buf::ForSend;
use crate::event_loop::{Loop, Task};
use crate::io::Direct;
use crate::slab::{Key, SlotId};
use crate::timers::TimerId;
use crate::{Error, Result};

pub(super) type OnConnect = Box<dyn FnOnce(&mut Loop, Result<Stream>)>;
type OnRead = Box<dyn Reader>;
type OnDone = Box<dyn FnOnce(&mut Loop, Result<()>)>;
type OnDrain = Box<dyn FnMut(&mut Loop, Stream)>;
type OnTimeout = Box<dyn FnOnce(&mut Loop, Stream)>;
type OnClose = Box<dyn FnOnce(&mut Loop, Stream, bool)>;
/// A panic caught from a callback, to resume once the stream's state is
/// consistent again.
type Payload = Box<dyn std::any::Any + Send>;

/// How long a stream that [`Stream::end`]ed waits for its peer's end
/// after its own FIN is out, before it releases its descriptor anyway.
pub const DEFAULT_END_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs user code, catching a panic so that the caller can put its state
/// in order before resuming it.
pub(super) fn catch<R>(f: impl FnOnce() -> R) -> std::result::Result<R, Payload> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
}

/// The first of the panics caught while running several callbacks.
#[derive(Default)]
pub(super) struct Unwind(Option<Payload>);

impl Unwind {
    /// Runs `f`, keeping its panic if it is the first.
    pub(super) fn run(&mut self, f: impl FnOnce()) {
        if let Err(payload) = catch(f) {
            self.keep(payload);
        }
    }

    pub(super) fn keep(&mut self, payload: Payload) {
        if self.0.is_none() {
            self.0 = Some(payload);
        }
    }

    /// Resumes the panic kept, if any.
    pub(super) fn resume(self) {
        if let Some(payload) = self.0 {
            std::panic::resume_unwind(payload);
        }
    }
}

/// A reader's two callbacks (`read_start`'s `on_data` and `on_end`) in one
/// box: 16 bytes in the stream's slot instead of 32 (W10 counts every byte
/// of an idle connection), and one allocation instead of two.
trait Reader {
    fn data(&mut self, lp: &mut Loop, stream: Stream, chunk: &[u8]);
    fn end(self: Box<Self>, lp: &mut Loop, stream: Stream, result: Result<()>);

    /// A chunk in the reactor's buffer (lent: see
    /// `eventide_reactor::RECV_MULTI_LEND_LIMIT`): `data`, then the buffer
    /// goes back to the reactor, even if `data` panics. A reader that has a
    /// use for the buffer itself takes it (see `Piped`).
    fn data_owned(&mut self, lp: &mut Loop, stream: Stream, chunk: Vec<u8>) {
        let done = catch(|| self.data(lp, stream, &chunk));
        lp.reactor.recycle(chunk);
        if let Err(payload) = done {
            std::panic::resume_unwind(payload);
        }
    }
}

/// The reader of [`Stream::pipe`]: each chunk is written to `dest` as it
/// arrived, in the reactor's own buffer when that is worth it (no copy,
/// no allocation: the echo server of W5 moves every message this way).
struct Piped {
    dest: Stream,
}

/// The reader of a stream piped into itself (an echo): as [`Piped`], with
/// the source as the destination. Its calls carry the stream, so it holds
/// nothing: a zero-sized reader, whose box allocates nothing (W10 counts
/// the 32-byte heap chunk a `Piped` takes at every idle connection).
struct PipedToSelf;

impl Reader for Piped {
    fn data(&mut self, lp: &mut Loop, source: Stream, chunk: &[u8]) {
        pipe_on(lp, self.dest, source, chunk.to_vec());
    }

    fn end(self: Box<Self>, lp: &mut Loop, _: Stream, _: Result<()>) {
        self.dest.end(lp);
    }

    fn data_owned(&mut self, lp: &mut Loop, source: Stream, chunk: Vec<u8>) {
        pipe_owned(lp, self.dest, source, chunk);
    }
}

impl Reader for PipedToSelf {
    fn data(&mut self, lp: &mut Loop, source: Stream, chunk: &[u8]) {
        pipe_on(lp, source, source, chunk.to_vec());
    }

    fn end(self: Box<Self>, lp: &mut Loop, source: Stream, _: Result<()>) {
        source.end(lp);
    }

    fn data_owned(&mut self, lp: &mut Loop, source: Stream, chunk: Vec<u8>) {
        pipe_owned(lp, source, source, chunk);
    }
}

/// A chunk in the reactor's buffer, piped from `source` to `dest`.
fn pipe_owned(lp: &mut Loop, dest: Stream, source: Stream, mut chunk: Vec<u8>) {
    // On the readiness backends a send is a system call made right here
    // anyway (their `submit` tries it at once): made directly, it skips
    // the operation, its completion and the queue, and the buffer goes
    // back at once (W5's echo). What the kernel does not take, and any
    // error, takes the queue's path (whose send reports the error as a
    // write's does). On io_uring the queue is the fast path: its sends
    // join the loop's next submission, one for every connection the turn
    // echoed (W5 has many).
    if lp.backend() != crate::BackendKind::Uring
        && let Ok(sent) = dest.try_write(lp, &chunk)
    {
        if sent == chunk.len() {
            lp.reactor.recycle(chunk);
            return;
        }
        chunk.drain(..sent);
    }
    // The buffer itself is sent when it is the only one this pipe holds
    // (`dest`'s queue is empty) or mostly full: then a pipe keeps at most
    // one half-empty 16 KiB buffer per stream, never one per small chunk
    // queued behind a slow reader. Else a copy of the bytes, and the
    // buffer goes back at once.
    let idle = lp
        .io
        .net
        .streams
        .get(dest.0)
        .is_some_and(|d| d.more.as_ref().is_none_or(|m| m.writes.is_empty()));
    if idle || chunk.len() >= chunk.capacity() / 2 {
        let chunk = lp.reactor.take_lent(chunk);
        pipe_on(lp, dest, source, chunk);
    } else {
        let copy = chunk.to_vec();
        lp.reactor.recycle(chunk);
        pipe_on(lp, dest, source, copy);
    }
}

/// Queues `chunk` on `dest`; reading `source` pauses above the mark.
fn pipe_on(lp: &mut Loop, dest: Stream, source: Stream, chunk: Vec<u8>) {
    let below = dest.enqueue(lp, chunk.into(), AfterWrite::Piped(source));
    if !below {
        source.read_stop(lp);
    }
}

/// What runs once a write is out (or has failed).
enum AfterWrite {
    /// [`Stream::write`]'s callback.
    Call(OnDone),
    /// A chunk [`Stream::pipe`] wrote on from `source`: its buffer is
    /// offered back to the reactor, and a failure closes `source`.
    Piped(Stream),
    /// Nothing ([`Stream::write_copy`]): a failure destroys the stream,
    /// whose reader hears of it. Its send's token is `Direct::SentQuiet`,
    /// and a completion that ends the queue keeps the buffer, the loop's
    /// copy, for the next copy (`Stream::sent_quietly`).
    #[cfg_attr(not(feature = "hyper"), allow(dead_code))] // hyper's writes.
    Quiet,
}

impl AfterWrite {
    fn run(self, lp: &mut Loop, result: Result<()>) {
        match self {
            AfterWrite::Call(on_written) => on_written(lp, result),
            AfterWrite::Piped(source) => {
                if result.is_err() {
                    source.close(lp);
                }
            }
            AfterWrite::Quiet => {}
        }
    }
}

struct Callbacks<D, E> {
    on_data: D,
    on_end: E,
}

impl<D, E> Reader for Callbacks<D, E>
where
    D: FnMut(&mut Loop, Stream, &[u8]),
    E: FnOnce(&mut Loop, Stream, Result<()>),
{
    fn data(&mut self, lp: &mut Loop, stream: Stream, chunk: &[u8]) {
        (self.on_data)(lp, stream, chunk);
    }

    fn end(self: Box<Self>, lp: &mut Loop, stream: Stream, result: Result<()>) {
        (self.on_end)(lp, stream, result);
    }
}

/// Node's default high-water mark for a socket's writable side (16 KiB).
pub const DEFAULT_HIGH_WATER_MARK: usize = 16 * 1024;

/// A connected stream's handle of either kind (Node's `net.Socket`,
/// libuv's `uv_stream_t`), for code that serves TCP and Unix domain
/// streams alike: what [`TcpStream`](super::TcpStream) and
/// [`UnixStream`](super::UnixStream) convert into (`Stream::from`), with
/// the API they share and none of a kind's own (no `set_nodelay` here).
/// `Copy`, and stale once closed (see the [module documentation](super));
/// dropping it does not close the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Stream(pub(super) Key);

/// Who a stream connects to, for its error messages.
#[derive(Default)]
pub(super) enum Peer {
    #[default]
    Unknown,
    Ip(SocketAddr),
    Path(PathBuf),
}

impl Peer {
    pub(super) fn error(&self, syscall: &'static str, e: io::Error) -> Error {
        match self {
            Peer::Unknown => Error::net(syscall, None, e),
            Peer::Ip(addr) => Error::net(syscall, Some(*addr), e),
            Peer::Path(path) => Error::net_path(syscall, path, e),
        }
    }
}

// The stream's flags.
/// `read_start` is in force.
const READING: u16 = 1;
/// `recv` was cancelled by `read_stop` (its final completion is due).
const RECV_CANCELLED: u16 = 1 << 1;
/// The peer ended its side.
const EOF: u16 = 1 << 2;
/// A send is in flight.
const SENDING: u16 = 1 << 3;
/// A connect is in flight.
const CONNECTING: u16 = 1 << 4;
/// `unref`: its receive does not keep the loop alive.
const UNREF: u16 = 1 << 5;
/// The queue reached the high-water mark: `drain` is due once it empties.
const NEED_DRAIN: u16 = 1 << 6;
/// `shutdown` was called: no more writes.
const ENDED: u16 = 1 << 7;
/// The multishot receive is armed (`recv` is its token), until its final
/// completion.
const RECV_ARMED: u16 = 1 << 8;
/// `on_data` runs: the reader is out of the slot, in `deliver`.
const DELIVERING: u16 = 1 << 9;
/// Node's `allowHalfOpen`: the peer's end does not end this side.
const HALF_OPEN: u16 = 1 << 10;
/// `end` was called: the stream closes once its FIN is out and the peer
/// has ended too (or the end timeout passed).
const END_REQUESTED: u16 = 1 << 11;
/// The shutdown went to the kernel: a FIN may be out.
const SHUT_SUBMITTED: u16 = 1 << 12;
/// The shutdown completed: the FIN is out.
const FIN_SENT: u16 = 1 << 13;
/// Piped to itself (an echo): its drain resumes its reading (no drain
/// callback, so an idle echo connection allocates nothing more: W10).
const PIPED_TO_SELF: u16 = 1 << 14;
/// Not a socket (a pipe, a FIFO, a terminal: [`super::pipe`]): reads and
/// writes are `read(2)`/`write(2)` (`Op::read_multi`, `Op::write_from`),
/// there is no FIN (its shutdown ends it: see `start_shutdown`), and
/// `EAGAIN` from io_uring means: wait for readiness (`wait_ready`).
/// Chosen at creation: the sockets' path never looks at it but to pick
/// their ops.
pub(crate) const NOT_SOCKET: u16 = 1 << 15;

/// A stream's slot in the socket table: 32 bytes, what an idle connection
/// costs here (W10); everything else is in `more`.
pub(crate) struct StreamState {
    socket: Socket,
    flags: u16,
    /// The listener that delivered it, as its entry in `Servers` plus 1
    /// (0: none, or in `more` if the index does not fit): in the slot's
    /// padding, so it costs no byte.
    server: u16,
    /// `read_start`'s callbacks; `None` while `on_data` runs (see
    /// `DELIVERING`).
    reader: Option<OnRead>,
    /// What streams that write, connect, stash... need.
    more: Option<Box<Extras>>,
}

/// The parts of a stream an idle reader does not need.
#[derive(Default)]
struct Extras {
    writes: VecDeque<Write>,
    /// Bytes queued and not yet taken by the kernel.
    queued: usize,
    /// Where `connect` went, for its error messages.
    peer: Peer,
    /// Set while a connect is in flight.
    on_connect: Option<OnConnect>,
    /// Chunks (reactor buffers, recycled once delivered) that arrived while
    /// no reader wanted them, for the next `read_start`, in order.
    stash: VecDeque<Vec<u8>>,
    /// Requested, and waiting for the queue to empty.
    shutdown: Option<OnDone>,
    /// `None`: [`DEFAULT_HIGH_WATER_MARK`].
    high_water: Option<usize>,
    on_drain: Option<OnDrain>,
    idle: Option<Idle>,
    /// The listener's entry in `Servers`, for the (rare) index too large
    /// for `StreamState::server`.
    server: Option<u32>,
    /// Node's `'close'` event.
    on_close: Option<OnClose>,
    /// After `end`: the timer that releases the stream if the peer does
    /// not end in time.
    linger: Option<TimerId>,
    /// `None`: [`DEFAULT_END_TIMEOUT`].
    end_timeout: Option<Duration>,
    /// The shutdown operation is in flight (for `into_std`, which waits
    /// for no operation).
    shutting: bool,
    /// The crate's own close watcher (a child process counting its
    /// stdio's closes for Node's `'close'`): runs in the close phase,
    /// before `on_close`, whoever set that.
    watcher: Option<Task>,
}

/// An armed idle timeout: an unreferenced timer on the wheel, refreshed
/// by activity.
struct Idle {
    timer: TimerId,
    on_timeout: OnTimeout,
}

struct Write {
    /// Empty while its send is in flight (the reactor holds its `Vec` or
    /// its owner until the send completes; see [`WriteBuf`]).
    buf: WriteBuf,
    sent: usize,
    after: AfterWrite,
}

impl StreamState {
    pub(super) fn new(socket: Socket) -> StreamState {
        StreamState {
            socket,
            flags: 0,
            server: 0,
            reader: None,
            more: None,
        }
    }

    /// A stream about to connect to `peer`.
    pub(super) fn connecting(socket: Socket, peer: Peer, on_connect: OnConnect) -> StreamState {
        let mut s = StreamState::new(socket);
        s.flags = CONNECTING;
        s.more = Some(Box::new(Extras {
            peer,
            on_connect: Some(on_connect),
            ..Extras::default()
        }));
        s
    }

    /// Records the listener that delivered the stream (its `Servers`
    /// entry).
    pub(super) fn set_server(&mut self, index: u32) {
        match index.checked_add(1).map(u16::try_from) {
            Some(Ok(tag)) => self.server = tag,
            _ => self.more().server = Some(index),
        }
    }

    /// Sets `flag` (a pipe's `NOT_SOCKET`).
    pub(super) fn add_flags(&mut self, flag: u16) {
        self.flags |= flag;
    }

    /// A pipe that cannot be read: its input has ended, and that end does
    /// not end the stream (it ends when its writing does).
    pub(super) fn mark_ended_input(&mut self) {
        self.flags |= EOF | HALF_OPEN;
    }

    /// Node's `allowHalfOpen`, from the listener's options.
    pub(super) fn set_allow_half_open(&mut self, allow: bool) {
        self.set(HALF_OPEN, allow);
    }

    /// The `Servers` entry of the listener that delivered it.
    fn server(&self) -> Option<u32> {
        match self.server {
            0 => self.more.as_ref().and_then(|m| m.server),
            tag => Some(u32::from(tag) - 1),
        }
    }

    fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }

    fn set(&mut self, flag: u16, on: bool) {
        if on {
            self.flags |= flag;
        } else {
            self.flags &= !flag;
        }
    }

    fn more(&mut self) -> &mut Extras {
        self.more.get_or_insert_with(Box::default)
    }

    fn stash_is_empty(&self) -> bool {
        self.more.as_ref().is_none_or(|m| m.stash.is_empty())
    }

    /// Ended by `end`, its FIN out, and nobody reads: what arrives is
    /// dropped while waiting for the peer's end.
    fn discarding(&self) -> bool {
        !self.has(READING) && self.has(END_REQUESTED) && self.has(FIN_SENT)
    }

    pub(crate) fn queued(&self) -> usize {
        self.more.as_ref().map_or(0, |m| m.queued)
    }

    /// The receive's token, if armed: the stream's own (a stream has at
    /// most one receive in flight, dispatched by its slot, see io.rs), so
    /// it is not stored.
    fn recv(&self, stream: Stream) -> Option<Token> {
        self.has(RECV_ARMED)
            .then(|| Direct::Received(stream).token())
    }

    fn high_water(&self) -> usize {
        self.more
            .as_ref()
            .and_then(|m| m.high_water)
            .unwrap_or(DEFAULT_HIGH_WATER_MARK)
    }

    fn peer_error(&self, syscall: &'static str, e: io::Error) -> Error {
        match &self.more {
            Some(m) => m.peer.error(syscall, e),
            None => Error::net(syscall, None, e),
        }
    }
}

impl Stream {
    pub(crate) fn id(self) -> SlotId {
        self.0.slot
    }

    /// Its number in [`Loop::handles`].
    pub(crate) fn raw(self) -> u64 {
        crate::slab::raw(self.0.slot)
    }

    pub(crate) fn from_id(key: Key) -> Stream {
        Stream(key)
    }

    pub(super) fn insert(lp: &mut Loop, state: StreamState) -> Stream {
        Stream(lp.io.net.streams.insert(state))
    }

    /// Undoes [`Stream::insert`] for a stream whose start failed; its
    /// socket is closed here.
    pub(super) fn forget(self, lp: &mut Loop) {
        drop(lp.io.net.streams.remove(self.0));
    }

    /// Starts reading: `on_data` runs with each chunk received (the slice
    /// is valid during the call only: the buffer goes back to the reactor
    /// for reuse), `on_end` once
    /// when the peer ends its side (`Ok(())`) or with the error that
    /// destroyed the stream (a reset is always an error, never a clean
    /// end). After `on_end(Ok)` returns, the stream [`end`](Stream::end)s
    /// itself unless it allows half-open connections
    /// ([`Stream::set_allow_half_open`]): the writes queued until then go
    /// out, then it closes. Replaces the callbacks of an earlier
    /// `read_start`. A panic in `on_data` (with a panic handler, or
    /// unwinding out of `run`) leaves the stream reading: its next chunks
    /// come in later turns.
    pub fn read_start(
        self,
        lp: &mut Loop,
        on_data: impl FnMut(&mut Loop, Stream, &[u8]) + 'static,
        on_end: impl FnOnce(&mut Loop, Stream, Result<()>) + 'static,
    ) {
        self.start_reader(lp, Box::new(Callbacks { on_data, on_end }));
    }

    /// [`Stream::read_start`] with its reader.
    fn start_reader(self, lp: &mut Loop, reader: OnRead) {
        let Some(s) = lp.io.net.streams.get_mut(self.0) else {
            let error = lp.io.net.streams.miss(self.0, WHAT);
            lp.defer(move |lp| reader.end(lp, self, Err(error)));
            return;
        };
        s.set(READING, true);
        s.reader = Some(reader);
        if !s.stash_is_empty() || s.has(EOF) {
            // Known at once: delivered from the pending phase.
            lp.defer(move |lp| self.pump(lp));
        } else {
            self.pump(lp);
        }
    }

    /// Stops reading; no `on_data` runs until the next
    /// [`Stream::read_start`]. The receive is cancelled; bytes that
    /// arrive meanwhile (a chunk already received as the cancel lands
    /// included) are kept, in order, for the next `read_start`, never
    /// dropped. Returns `false` for a closed stream.
    pub fn read_stop(self, lp: &mut Loop) -> bool {
        let Some(s) = lp.io.net.streams.get_mut(self.0) else {
            return false;
        };
        s.set(READING, false);
        if let Some(token) = s.recv(self)
            && !s.has(RECV_CANCELLED)
        {
            s.set(RECV_CANCELLED, true);
            lp.reactor.cancel(token);
        }
        true
    }

    /// Queues `buf` (a `Vec<u8>`, a `&'static [u8]`, a shared buffer:
    /// whatever converts into a [`WriteBuf`], which says which forms are
    /// sent without a copy) for sending; `on_written` runs once all of it is out
    /// (taken by the kernel), or with the error. Writes go out in order;
    /// partial sends are continued.
    ///
    /// Returns what Node's `socket.write` returns: `true` while the queue
    /// ([`Stream::write_queue_size`]) is below the high-water mark
    /// ([`Stream::set_high_water_mark`], 16 KiB by default), `false` once
    /// this write made it reach the mark (then the stream needs a drain,
    /// [`Stream::need_drain`], and the callback of [`Stream::on_drain`]
    /// runs once the queue has emptied, after the last write's callback),
    /// and `false` for a write that fails at once (a closed stream: `Stale`;
    /// after [`Stream::shutdown`]: `EPIPE`; either in `on_written`, from
    /// the next pending phase). The write is queued either way: the mark
    /// is advice to the writer. In a callback that must return `()`, write
    /// it as a statement: `|lp, s, data| { s.write(lp, data.to_vec(), cb); }`.
    pub fn write(
        self,
        lp: &mut Loop,
        buf: impl Into<WriteBuf>,
        on_written: impl FnOnce(&mut Loop, Result<()>) + 'static,
    ) -> bool {
        self.enqueue(lp, buf.into(), AfterWrite::Call(Box::new(on_written)))
    }

    /// [`Stream::write`] of a copy of `data`, with no callback (the
    /// adapters' queued writes: a failed send destroys the stream, and its
    /// reader's `on_end` gets the error). The copy goes into a send buffer
    /// an earlier `write_copy` of this loop left when its send completed
    /// (the kernel done with it) as the last of its stream's queue, so a
    /// server answering request after request allocates none; the
    /// returned `bool` is `write`'s.
    #[cfg_attr(not(feature = "hyper"), allow(dead_code))] // hyper's writes.
    pub(crate) fn write_copy(self, lp: &mut Loop, data: &[u8]) -> bool {
        let buf = lp.io.net.copy_for_send(data);
        let Some(s) = lp.io.net.streams.get_mut(self.0) else {
            return false;
        };
        let idle_queue = s.more.as_ref().is_none_or(|m| m.writes.is_empty());
        if !idle_queue || s.has(SENDING | CONNECTING | NOT_SOCKET | ENDED) {
            return self.enqueue(lp, buf.into(), AfterWrite::Quiet);
        }
        // Nothing queued, nothing in flight: `enqueue` then `flush`, in
        // one look at the stream. The queue's entry stands for the send
        // (its buffer is the reactor's until the completion).
        let high_water = s.high_water();
        let fd = s.socket.as_raw_fd();
        let m = s.more();
        m.queued += buf.len();
        let reached = m.queued >= high_water;
        m.writes.push_back(Write {
            buf: WriteBuf::from(Vec::new()),
            sent: 0,
            after: AfterWrite::Quiet,
        });
        let idle = m.idle.as_ref().map(|idle| idle.timer);
        if reached {
            s.set(NEED_DRAIN, true);
        }
        s.set(SENDING, true);
        if let Some(timer) = idle {
            lp.refresh_timer(timer);
        }
        let op = Op::send_from(fd, buf, 0);
        if let Err(refused) = lp.submit_direct(op, Direct::SentQuiet(self), true) {
            self.destroy(lp, Error::net("write", None, refused.error));
        }
        !reached
    }

    /// [`Stream::write`], with what runs after it.
    fn enqueue(self, lp: &mut Loop, buf: WriteBuf, after: AfterWrite) -> bool {
        let Some(s) = lp.io.net.streams.get_mut(self.0) else {
            if !matches!(after, AfterWrite::Quiet) {
                let error = lp.io.net.streams.miss(self.0, WHAT);
                lp.defer(move |lp| after.run(lp, Err(error)));
            }
            return false;
        };
        if s.has(ENDED) {
            if !matches!(after, AfterWrite::Quiet) {
                let epipe = io::Error::from_raw_os_error(libc::EPIPE);
                lp.defer(move |lp| after.run(lp, Err(Error::net("write", None, epipe))));
            }
            return false;
        }
        let high_water = s.high_water();
        let m = s.more();
        m.queued += buf.len();
        let reached = m.queued >= high_water;
        m.writes.push_back(Write {
            buf,
            sent: 0,
            after,
        });
        if reached {
            s.set(NEED_DRAIN, true);
        }
        self.touch(lp);
        self.flush(lp);
        !reached
    }

    /// Writes what the kernel takes of `data` now, in this call, and queues
    /// nothing (libuv's `uv_try_write`; Node's `socket.write` tries the same
    /// before it queues): `Ok(n)`, the bytes written, which may be fewer
    /// than `data.len()` (the rest is the caller's, to [`Stream::write`] or
    /// to drop). There is no callback: nothing of it runs later.
    ///
    /// On io_uring too it is a system call of its own, made now; a write
    /// queued with [`Stream::write`] there instead joins the loop's next
    /// submission, batched with the turn's other operations. Which is
    /// cheaper depends on the program: one latency-bound connection gains
    /// from sending at once (W4: 3% more round trips per second), a server
    /// writing many connections per turn from the batch (W13: direct sends
    /// cost 4-6% more CPU per request; the hyper adapter queues there).
    ///
    /// An empty `data` is `Ok(0)` without a system call. Errors, none of
    /// which changes the stream:
    /// - `write EAGAIN` ([`Error::kind`] `WouldBlock`) when nothing can go
    ///   now: the kernel's buffer is full; writes queued by
    ///   [`Stream::write`] are still going out (bytes written here would
    ///   overtake them); the stream is still connecting; or it is a pipe or
    ///   terminal whose descriptor is in blocking mode (a write could block
    ///   the loop).
    /// - `write EPIPE` after [`Stream::end`] or [`Stream::shutdown`].
    /// - [`Error::Stale`] for a closed stream.
    /// - What the kernel said (`write ECONNRESET`, `write EPIPE`): the
    ///   stream stays open, and its reader sees the reset. Close it, or
    ///   write, whose failure destroys it as Node's does.
    ///
    /// ```
    /// # use eventide::Loop;
    /// # use eventide::net::TcpStream;
    /// // Echo `data` back: what the kernel does not take now is queued.
    /// fn echo(lp: &mut Loop, stream: TcpStream, data: &[u8]) {
    ///     let sent = stream.try_write(lp, data).unwrap_or(0);
    ///     if sent < data.len() {
    ///         stream.write(lp, data[sent..].to_vec(), |_, _| {});
    ///     }
    /// }
    /// ```
    pub fn try_write(self, lp: &mut Loop, data: &[u8]) -> Result<usize> {
        let Some(s) = lp.io.net.streams.get(self.0) else {
            return Err(lp.io.net.streams.miss(self.0, WHAT));
        };
        let again = || Error::net("write", None, io::Error::from_raw_os_error(libc::EAGAIN));
        if s.has(ENDED) {
            let epipe = io::Error::from_raw_os_error(libc::EPIPE);
            return Err(Error::net("write", None, epipe));
        }
        let queue = s.more.as_ref().is_some_and(|m| !m.writes.is_empty());
        if queue || s.has(SENDING) || s.has(CONNECTING) {
            return Err(again());
        }
        if data.is_empty() {
            return Ok(0);
        }
        let fd = s.socket.as_raw_fd();
        let not_socket = s.has(NOT_SOCKET);
        if not_socket && !nonblocking(fd) {
            return Err(again());
        }
        let written = loop {
            // The system calls themselves (`eventide_reactor::direct`: no
            // cancellation-point wrappers).
            let sent = if not_socket {
                eventide_reactor::direct::write(fd, data)
            } else {
                eventide_reactor::direct::send(fd, data, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
            };
            let error = match sent {
                Ok(n) => break n,
                Err(error) => error,
            };
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(if error.kind() == io::ErrorKind::WouldBlock {
                    again()
                } else {
                    Error::net("write", None, error)
                });
            }
        };
        if written == 0 {
            return Err(again());
        }
        self.touch(lp);
        Ok(written)
    }

    /// Bytes queued by [`Stream::write`] and not yet sent (libuv's
    /// `write_queue_size`, Node's `writableLength`); 0 for a closed stream.
    pub fn write_queue_size(self, lp: &Loop) -> usize {
        lp.io.net.streams.get(self.0).map_or(0, StreamState::queued)
    }

    /// Whether the write queue has reached the high-water mark and not
    /// drained since (Node's `writableNeedDrain`): a writer that respects
    /// backpressure waits for [`Stream::on_drain`]. `false` for a closed
    /// stream.
    pub fn need_drain(self, lp: &Loop) -> bool {
        lp.io
            .net
            .streams
            .get(self.0)
            .is_some_and(|s| s.has(NEED_DRAIN))
    }

    /// The high-water mark of the write queue, in bytes (Node's
    /// `writableHighWaterMark`); 0 for a closed stream.
    pub fn high_water_mark(self, lp: &Loop) -> usize {
        lp.io
            .net
            .streams
            .get(self.0)
            .map_or(0, StreamState::high_water)
    }

    /// Sets the high-water mark of the write queue (Node's
    /// `highWaterMark` option; 16 KiB by default). Returns `false` for a
    /// closed stream.
    pub fn set_high_water_mark(self, lp: &mut Loop, bytes: usize) -> bool {
        let Some(s) = lp.io.net.streams.get_mut(self.0) else {
            return false;
        };
        s.more().high_water = (bytes != DEFAULT_HIGH_WATER_MARK).then_some(bytes);
        true
    }

    /// Sets the callback of Node's `'drain'` event: it runs each time the
    /// write queue empties after having reached the high-water mark, after
    /// the callback of the write that emptied it. Replaces an earlier one.
    /// Returns `false` for a closed stream.
    pub fn on_drain(
        self,
        lp: &mut Loop,
        on_drain: impl FnMut(&mut Loop, Stream) + 'static,
    ) -> bool {
        let Some(s) = lp.io.net.streams.get_mut(self.0) else {
            return false;
        };
        s.more().on_drain = Some(Box::new(on_drain));
        true
    }

    /// Node's `socket.setTimeout(ms, callback)`: `on_timeout` runs once
    /// the stream has seen no activity (a chunk read, a write queued or
    /// completed) for `idle`; each activity restarts the countdown. It
    /// runs once: the stream is not closed (the callback decides), and a
    /// later activity does not arm it again (as in Node); call this again
    /// for another. A zero `idle` disables it. The timer is unreferenced:
    /// it does not keep the loop alive. Returns `false` for a closed
    /// stream.
    pub fn set_idle_timeout(
        self,
        lp: &mut Loop,
        idle: Duration,
        on_timeout: impl FnOnce(&mut Loop, Stream) + 'static,
    ) -> bool {
        let Some(s) = lp.io.net.streams.get_mut(self.0) else {
            return false;
        };
        let old = s.more.as_mut().and_then(|m| m.idle.take());
        if let Some(old) = old {
            lp.clear_timer(old.timer);
        }
        if idle.is_zero() {
            return true;
        }
        let timer = lp.set_timeout(idle, move |lp| self.timed_out(lp));
        lp.unref_timer(timer);
        if let Some(s) = lp.io.net.streams.get_mut(self.0) {
            s.more().idle = Some(Idle {
                timer,
                on_timeout: Box::new(on_timeout),
            });
        }
        true
    }

    /// The former name of [`Stream::set_idle_timeout`] (Node's
    /// `socket.setTimeout`), which it calls.
    #[deprecated(note = "renamed `set_idle_timeout`: it is an idle timeout")]
    pub fn set_timeout(
        self,
        lp: &mut Loop,
        idle: Duration,
        on_timeout: impl FnOnce(&mut Loop, Stream) + 'static,
    ) -> bool {
        self.set_idle_timeout(lp, idle, on_timeout)
    }

    /// Lets the loop end while this stream reads (libuv's `uv_unref`,
    /// Node's `socket.unref()`). Writes, a connect and a shutdown in
    /// flight still keep it alive, as libuv's requests do. Returns
    /// `false` for a closed stream.
    pub fn unref(self, lp: &mut Loop) -> bool {
        self.set_ref(lp, false)
    }

    /// Makes the stream keep the loop alive again while it reads (libuv's
    /// `uv_ref`, Node's `socket.ref()`), or not (`false`: as
    /// [`Stream::unref`]). Returns `false` for a closed stream.
    pub fn set_ref(self, lp: &mut Loop, referenced: bool) -> bool {
        let Some(s) = lp.io.net.streams.get_mut(self.0) else {
            return false;
        };
        let was = !s.has(UNREF);
        s.set(UNREF, !referenced);
        if s.has(RECV_ARMED) && was != referenced {
            // The receive in flight starts or stops keeping the loop alive.
            if referenced {
                lp.io.sockets += 1;
            } else {
                lp.io.sockets -= 1;
            }
        }
        true
    }

    /// Whether the stream keeps the loop alive while it reads (libuv's
    /// `uv_has_ref`); `false` for a closed stream.
    pub fn has_ref(self, lp: &Loop) -> bool {
        lp.io.net.streams.get(self.0).is_some_and(|s| !s.has(UNREF))
    }

    /// Ends the writing side once the queued writes are out (half-close:
    /// the peer reads its end; reading goes on). `on_done` runs when the
    /// shutdown is done. Writes after this fail with `EPIPE`; a second
    /// shutdown with `EALREADY`.
    pub fn shutdown(self, lp: &mut Loop, on_done: impl FnOnce(&mut Loop, Result<()>) + 'static) {
        let Some(s) = lp.io.net.streams.get_mut(self.0) else {
            let error = lp.io.net.streams.miss(self.0, WHAT);
            lp.defer(move |lp| on_done(lp, Err(error)));
            return;
        };
        if s.has(ENDED) {
            let again = io::Error::from_raw_os_error(libc::EALREADY);
            lp.defer(move |lp| on_done(lp, Err(Error::net("shutdown", None, again))));
            return;
        }
        s.set(ENDED, true);
        s.more().shutdown = Some(Box::new(on_done));
        self.flush(lp);
    }

    /// Node's `socket.end()`: ends the stream gracefully. No more writes
    /// are taken (they fail with `EPIPE`); the queued ones go out, then
    /// the FIN; once the peer has ended its side too, the stream closes
    /// (its [`Stream::on_close`] reports a clean end). Until then reading
    /// goes on: a reader still gets the peer's bytes and its end; without
    /// one (no [`Stream::read_start`], or after [`Stream::read_stop`]),
    /// what the peer still sends once the FIN is out is discarded. A peer
    /// that does not end within the end timeout ([`DEFAULT_END_TIMEOUT`],
    /// see [`Stream::set_end_timeout`]) after the FIN is not waited for:
    /// the stream closes then (a clean end too). After
    /// [`Stream::shutdown`], `end` only adds the closing. Returns `false`
    /// for a closed stream; calling it again does nothing more.
    pub fn end(self, lp: &mut Loop) -> bool {
        let Some(s) = lp.io.net.streams.get_mut(self.0) else {
            return false;
        };
        if s.has(END_REQUESTED) {
            return true;
        }
        s.set(END_REQUESTED, true);
        if !s.has(ENDED) {
            s.set(ENDED, true);
            s.more().shutdown = Some(Box::new(|_, _| {}));
        }
        if s.has(FIN_SENT) {
            self.after_fin(lp);
        } else {
            self.flush(lp);
        }
        true
    }

    /// How long a stream that [`Stream::end`]ed waits, once its FIN is
    /// out, for the peer to end too ([`DEFAULT_END_TIMEOUT`] unless set);
    /// zero closes it as soon as the FIN is out. Returns `false` for a
    /// closed stream.
    pub fn set_end_timeout(self, lp: &mut Loop, timeout: Duration) -> bool {
        let Some(s) = lp.io.net.streams.get_mut(self.0) else {
            return false;
        };
        s.more().end_timeout = Some(timeout);
        true
    }

    /// Node's `allowHalfOpen` (`false` by default, as in Node): with
    /// `false`, once the peer has ended its side and the reader's
    /// `on_end(Ok)` has returned, the stream [`end`](Stream::end)s itself:
    /// the writes queued until then still go out, then the FIN, then it
    /// closes. With `true` the stream stays open for writing until ended
    /// or closed. Returns `false` for a closed stream.
    pub fn set_allow_half_open(self, lp: &mut Loop, allow: bool) -> bool {
        let Some(s) = lp.io.net.streams.get_mut(self.0) else {
            return false;
        };
        s.set(HALF_OPEN, allow);
        true
    }

    /// Whether the stream stays open for writing after the peer's end
    /// ([`Stream::set_allow_half_open`]); `false` for a closed stream.
    pub fn allow_half_open(self, lp: &Loop) -> bool {
        lp.io
            .net
            .streams
            .get(self.0)
            .is_some_and(|s| s.has(HALF_OPEN))
    }

    /// Sets the callback of Node's `'close'` event: it runs once, in the
    /// close phase of the turn the stream went away in, however it went:
    /// [`Stream::close`], the end of [`Stream::end`] (or of the
    /// automatic end, see [`Stream::set_allow_half_open`]), or an error
    /// (a reset, a failed write, ...). Its `bool` is Node's `hadError`:
    /// `true` when an error destroyed the stream. It runs after the
    /// callbacks the close cancelled and before [`Stream::close_then`]'s.
    /// Replaces an earlier one. Returns `false` for a closed stream.
    pub fn on_close(
        self,
        lp: &mut Loop,
        on_close: impl FnOnce(&mut Loop, Stream, bool) + 'static,
    ) -> bool {
        let Some(s) = lp.io.net.streams.get_mut(self.0) else {
            return false;
        };
        s.more().on_close = Some(Box::new(on_close));
        true
    }

    /// Node's `readable.pipe(writable)`: every chunk this stream reads is
    /// written to `dest` (which may be this stream itself: an echo), and
    /// reading pauses while `dest`'s write queue is at or above its
    /// high-water mark, resuming on its drain (this takes over this
    /// stream's reader, and `dest`'s [`Stream::on_drain`] callback unless
    /// `dest` is this stream). When
    /// this stream ends, `dest` is [`end`](Stream::end)ed (its queued
    /// writes still go out); when it fails, `dest` is ended too. When a
    /// write to `dest` fails, this stream is closed. Returns `false`,
    /// doing nothing, if either stream is closed.
    pub fn pipe(self, lp: &mut Loop, dest: impl Into<Stream>) -> bool {
        let dest = dest.into();
        if lp.io.net.streams.get(self.0).is_none() || lp.io.net.streams.get(dest.0).is_none() {
            return false;
        }
        if dest == self {
            if let Some(s) = lp.io.net.streams.get_mut(self.0) {
                s.set(PIPED_TO_SELF, true);
            }
            self.start_reader(lp, Box::new(PipedToSelf));
        } else {
            dest.on_drain(lp, move |lp, _| self.resume_reading(lp));
            self.start_reader(lp, Box::new(Piped { dest }));
        }
        true
    }

    /// Closes the stream at once: reading stops, the descriptor is
    /// released, and the callbacks still waiting (writes, shutdown,
    /// connect) run in this turn's close phase with `ECANCELED`. Returns
    /// `false`, doing nothing, if already closed. Allowed anywhere, the
    /// stream's own callbacks included.
    pub fn close(self, lp: &mut Loop) -> bool {
        self.close_with(lp, None)
    }

    /// As [`Stream::close`], and `on_close` runs in this turn's close
    /// phase, after the cancelled callbacks.
    pub fn close_then(self, lp: &mut Loop, on_close: impl FnOnce(&mut Loop) + 'static) -> bool {
        self.close_with(lp, Some(Box::new(on_close)))
    }

    /// The stream's descriptor (libuv's `uv_fileno`), for a socket option
    /// eventide does not wrap (`TCP_SYNCNT`, `TCP_USER_TIMEOUT`, ...).
    /// The stream still owns it: it must not be closed, read, written or
    /// made blocking through it, and it is valid only until the stream
    /// closes (the number may then be reused).
    ///
    /// # Errors
    ///
    /// [`Error::Stale`] once closed.
    pub fn raw_fd(self, lp: &Loop) -> Result<std::os::fd::RawFd> {
        Ok(self.socket(lp)?.as_raw_fd())
    }

    pub(super) fn socket(self, lp: &Loop) -> Result<&Socket> {
        lp.io
            .net
            .streams
            .get(self.0)
            .map(|s| &s.socket)
            .ok_or_else(|| lp.io.net.streams.miss(self.0, WHAT))
    }

    /// Sets the crate's own close watcher (see `Extras::watcher`);
    /// `false` for a closed stream.
    pub(crate) fn watch_close(
        self,
        lp: &mut Loop,
        watcher: impl FnOnce(&mut Loop) + 'static,
    ) -> bool {
        let Some(s) = lp.io.net.streams.get_mut(self.0) else {
            return false;
        };
        s.more().watcher = Some(Box::new(watcher));
        true
    }

    /// A pipe's source resumes reading (its destination drained), unless
    /// it was closed or its reader ended meanwhile.
    fn resume_reading(self, lp: &mut Loop) {
        if let Some(s) = lp.io.net.streams.get_mut(self.0)
            && s.reader.is_some()
            && !s.has(READING)
        {
            s.set(READING, true);
            self.pump(lp);
        }
    }

    /// The connect finished (`Ok`) or failed.
    pub(super) fn connected(self, lp: &mut Loop, result: io::Result<()>) {
        let Some(s) = lp.io.net.streams.get_mut(self.0) else {
            return;
        };
        if let Err(error) = result {
            let error = s.peer_error("connect", error);
            return self.destroy(lp, error);
        }
        s.set(CONNECTING, false);
        let Some(on_connect) = s.more.as_mut().and_then(|m| m.on_connect.take()) else {
            return;
        };
        let panicked = catch(|| on_connect(lp, Ok(self)));
        // Panicked or not, what it asked for (a read, writes, an end) goes
        // on.
        self.pump(lp);
        self.flush(lp);
        if let Err(payload) = panicked {
            std::panic::resume_unwind(payload);
        }
    }

    /// After a callback panicked, its state put back in order: the
    /// stream's work (delivering, draining, sending) goes on from the
    /// next pending phase, and the panic goes on now.
    fn resume_later(self, lp: &mut Loop, payload: Payload) -> ! {
        lp.defer(move |lp| {
            self.pump(lp);
            self.drain_if_due(lp);
            self.flush(lp);
        });
        std::panic::resume_unwind(payload)
    }

    /// Activity: restarts the idle timeout's countdown.
    fn touch(self, lp: &mut Loop) {
        let timer = lp
            .io
            .net
            .streams
            .get(self.0)
            .and_then(|s| s.more.as_ref())
            .and_then(|m| m.idle.as_ref())
            .map(|idle| idle.timer);
        if let Some(timer) = timer {
            lp.refresh_timer(timer);
        }
    }

    fn timed_out(self, lp: &mut Loop) {
        let idle = lp
            .io
            .net
            .streams
            .get_mut(self.0)
            .and_then(|s| s.more.as_mut())
            .and_then(|m| m.idle.take());
        if let Some(idle) = idle {
            (idle.on_timeout)(lp, self);
        }
    }

    /// Delivers what is ready to a reader (stashed chunks, then the end of
    /// the stream), then arms the receive if it wants more. After `end`'s
    /// FIN, a stream nobody reads discards what arrives, waiting for the
    /// peer's end.
    fn pump(self, lp: &mut Loop) {
        loop {
            let Some(s) = lp.io.net.streams.get_mut(self.0) else {
                return;
            };
            if s.has(CONNECTING) {
                return;
            }
            if s.discarding() {
                let stash = s.more.as_mut().map(|m| std::mem::take(&mut m.stash));
                for buf in stash.into_iter().flatten() {
                    lp.reactor.recycle(buf);
                }
                break;
            }
            // No reader, or its `on_data` is running (and this pump comes
            // from inside it): the stash waits.
            if !s.has(READING) || s.reader.is_none() {
                return;
            }
            let Some(m) = s.more.as_mut() else { break };
            let Some(chunk) = m.stash.pop_front() else {
                break;
            };
            if m.stash.is_empty() {
                // Hold no memory while idle.
                m.stash = VecDeque::new();
            }
            self.deliver(lp, chunk);
        }
        let Some(s) = lp.io.net.streams.get_mut(self.0) else {
            return;
        };
        if s.has(EOF) {
            let reader = if s.has(READING) {
                s.set(READING, false);
                s.reader.take()
            } else {
                None
            };
            let panicked = match reader {
                Some(reader) => catch(|| reader.end(lp, self, Ok(()))),
                None => Ok(()),
            };
            self.peer_ended(lp);
            if let Err(payload) = panicked {
                std::panic::resume_unwind(payload);
            }
            return;
        }
        if s.has(RECV_ARMED) {
            return;
        }
        let counted = !s.has(UNREF);
        let op = if s.has(NOT_SOCKET) {
            Op::read_multi(s.socket.as_raw_fd())
        } else {
            Op::recv_multi(s.socket.as_raw_fd())
        };
        match lp.submit_direct(op, Direct::Received(self), counted) {
            Ok(token) => {
                debug_assert_eq!(token, Direct::Received(self).token());
                if let Some(s) = lp.io.net.streams.get_mut(self.0) {
                    s.set(RECV_ARMED, true);
                    s.set(RECV_CANCELLED, false);
                }
            }
            Err(refused) => self.destroy(lp, Error::net("read", None, refused.error)),
        }
    }

    /// The peer's end has been delivered (or, after `end`'s FIN, seen):
    /// the stream closes if it has ended too, or ends itself unless it
    /// allows half-open connections.
    fn peer_ended(self, lp: &mut Loop) {
        let Some(s) = lp.io.net.streams.get(self.0) else {
            return;
        };
        if s.has(END_REQUESTED) {
            if s.has(FIN_SENT) {
                self.close_with(lp, None);
            }
            return;
        }
        if !s.has(HALF_OPEN) {
            self.end(lp);
        }
    }

    /// `end`'s FIN is out: close once the peer ends (at once if it has),
    /// or after the end timeout.
    fn after_fin(self, lp: &mut Loop) {
        let Some(s) = lp.io.net.streams.get_mut(self.0) else {
            return;
        };
        if !s.has(END_REQUESTED) {
            return;
        }
        if !s.has(EOF) {
            let m = s.more();
            let timeout = m.end_timeout.unwrap_or(DEFAULT_END_TIMEOUT);
            if timeout.is_zero() {
                self.close_with(lp, None);
                return;
            }
            if m.linger.is_none() {
                let timer = lp.set_timeout(timeout, move |lp| {
                    self.close_with(lp, None);
                });
                lp.unref_timer(timer);
                if let Some(s) = lp.io.net.streams.get_mut(self.0) {
                    s.more().linger = Some(timer);
                }
            }
        }
        self.pump(lp);
    }

    /// One completion of the multishot receive: a chunk (`more`), or its
    /// end (end of stream, cancel, error).
    pub(crate) fn on_received(self, lp: &mut Loop, c: Completion) {
        let Some(s) = lp.io.net.streams.get_mut(self.0) else {
            // Closed: the reactor's buffer goes back to it; the receive
            // kept the loop alive since the close (see `Waiting::take`).
            if !c.more {
                lp.io.sockets -= 1;
            }
            // Handed back to std (`into_std`): its bytes are kept for the user.
            let handed_back = super::adopt::received_while_handing_back(lp, self, &c);
            if let Some(buf) = c.buf {
                lp.reactor.recycle(buf);
            }
            if let Some(handed_back) = handed_back {
                handed_back.finish(lp);
            }
            return;
        };
        if !c.more && s.recv(self) == Some(c.token) {
            if !s.has(UNREF) {
                lp.io.sockets -= 1;
            }
            s.set(RECV_ARMED | RECV_CANCELLED, false);
        }
        match c.result {
            Ok(0) => {
                if let Some(buf) = c.buf {
                    lp.reactor.recycle(buf);
                }
                // The end of the stream (a final 0); never a chunk. Unless
                // it was a reset whose error a failed send took first (the
                // receive then reads 0): never a clean end.
                if !c.more {
                    let Some(s) = lp.io.net.streams.get_mut(self.0) else {
                        return;
                    };
                    if !s.has(SHUT_SUBMITTED) && was_reset(&s.socket) {
                        let reset = io::Error::from_raw_os_error(libc::ECONNRESET);
                        return self.destroy(lp, Error::net("read", None, reset));
                    }
                    s.set(EOF, true);
                }
            }
            Ok(_) => match c.buf {
                // The fast path: straight to the reader.
                Some(buf) if s.has(READING) && s.stash_is_empty() && s.reader.is_some() => {
                    self.deliver(lp, buf);
                    if c.more {
                        return;
                    }
                }
                // Ended, nobody reads: waiting for the peer's end only.
                Some(buf) if s.discarding() => lp.reactor.recycle(buf),
                Some(buf) => s.more().stash.push_back(buf),
                None => {}
            },
            // io_uring cannot wait on this descriptor (a terminal opened
            // nonblocking): read again once it is readable.
            Err(error)
                if error.raw_os_error() == Some(libc::EAGAIN) && s.has(NOT_SOCKET) && !c.more =>
            {
                if let Some(buf) = c.buf {
                    lp.reactor.recycle(buf);
                }
                return self.wait_ready(lp, eventide_reactor::Interest::READABLE);
            }
            // A cancel (read_stop), or ENOBUFS: the reactor parks receives
            // starved of buffers itself; a final ENOBUFS is the system's
            // (out of socket memory): receive again.
            Err(error) if matches!(error.raw_os_error(), Some(libc::ECANCELED | libc::ENOBUFS)) => {
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
    /// reactor. If `on_data` panics, the reader, the buffer and the
    /// stream's state are put back first, and its reading goes on from
    /// the next pending phase.
    fn deliver(self, lp: &mut Loop, chunk: Vec<u8>) {
        let Some((mut reader, idle)) = lp.io.net.streams.get_mut(self.0).and_then(|s| {
            let reader = s.reader.take()?;
            s.set(DELIVERING, true);
            let idle = s
                .more
                .as_ref()
                .and_then(|m| m.idle.as_ref())
                .map(|i| i.timer);
            Some((reader, idle))
        }) else {
            lp.reactor.recycle(chunk);
            return;
        };
        // Activity (`touch`, from the lookup just made).
        if let Some(timer) = idle {
            lp.refresh_timer(timer);
        }
        let mut unwind = Unwind::default();
        unwind.run(|| reader.data_owned(lp, self, chunk));
        match lp.io.net.streams.get_mut(self.0) {
            // Closed by the callback, or destroyed by an error meanwhile:
            // then `on_end` is owed that error (`Waiting::take` left it
            // here, the reader being out).
            None => {
                if let Some(error) = lp.io.net.owed_end(self) {
                    unwind.run(|| reader.end(lp, self, Err(error)));
                }
            }
            Some(s) => {
                s.set(DELIVERING, false);
                // A read_start inside the callback brought new callbacks:
                // keep them.
                if s.reader.is_none() {
                    s.reader = Some(reader);
                }
            }
        }
        if let Some(payload) = unwind.0 {
            self.resume_later(lp, payload);
        }
    }

    /// Sends the head of the write queue, or the shutdown once it is empty.
    fn flush(self, lp: &mut Loop) {
        let Some(s) = lp.io.net.streams.get_mut(self.0) else {
            return;
        };
        if s.has(SENDING) || s.has(CONNECTING) {
            return;
        }
        let fd = s.socket.as_raw_fd();
        let Some(head) = s.more.as_mut().and_then(|m| m.writes.front_mut()) else {
            return self.start_shutdown(lp);
        };
        let quiet = matches!(head.after, AfterWrite::Quiet);
        // An empty write is sent too (0 bytes), so that its callback runs
        // from the poll phase like any other.
        let op = match (head.buf.take_for_send(), s.flags & NOT_SOCKET != 0) {
            (ForSend::Vec(buf), false) => Op::send_from(fd, buf, head.sent),
            (ForSend::Owner(owner), false) => Op::send_owned(fd, owner, head.sent),
            (ForSend::Vec(buf), true) => Op::write_from(fd, buf, head.sent),
            (ForSend::Owner(owner), true) => Op::write_owned(fd, owner, head.sent),
        };
        s.set(SENDING, true);
        // A copy's send may end without a callback's dispatch (see
        // `sent_quietly`): its token says so.
        let direct = if quiet {
            Direct::SentQuiet(self)
        } else {
            Direct::Sent(self)
        };
        if let Err(refused) = lp.submit_direct(op, direct, true) {
            self.destroy(lp, Error::net("write", None, refused.error));
        }
    }

    /// The completion of a [`Stream::write_copy`]'s send that finishes
    /// its stream's queue with nothing else to do (W13's every response):
    /// the whole copy went, nothing is queued behind it, no drain is due,
    /// no shutdown waits. Then its buffer is kept for the next copy and the
    /// idle countdown restarts, with no callback dispatched (no user code
    /// can run), and `true` comes back; otherwise nothing is changed and
    /// the completion goes to [`Stream::on_sent`].
    pub(crate) fn sent_quietly(self, lp: &mut Loop, c: &mut Completion) -> bool {
        let Some(s) = lp.io.net.streams.get_mut(self.0) else {
            return false;
        };
        let Ok(n) = c.result else {
            return false;
        };
        if c.more || c.buf.is_none() || s.has(NOT_SOCKET | NEED_DRAIN) || !s.has(SENDING) {
            return false;
        }
        let Some(m) = s.more.as_mut() else {
            return false;
        };
        // With one write queued, `queued` is what its send had left to go.
        if m.writes.len() != 1
            || m.queued != n
            || m.shutdown.is_some()
            || !matches!(m.writes[0].after, AfterWrite::Quiet)
        {
            return false;
        }
        // Its buffer is in the completion; what is left is dropped.
        m.writes.pop_front();
        m.queued = 0;
        let idle = m.idle.as_ref().map(|idle| idle.timer);
        s.set(SENDING, false);
        lp.io.sockets -= 1;
        if let Some(buf) = c.buf.take() {
            lp.io.net.keep_send_buffer(buf);
        }
        if let Some(timer) = idle {
            lp.refresh_timer(timer);
        }
        true
    }

    pub(crate) fn on_sent(self, lp: &mut Loop, c: Completion) {
        if !c.more {
            lp.io.sockets -= 1;
        }
        let Some(s) = lp.io.net.streams.get_mut(self.0) else {
            return;
        };
        s.set(SENDING, false);
        let again = s.has(NOT_SOCKET)
            && matches!(&c.result, Err(e) if e.raw_os_error() == Some(libc::EAGAIN));
        // Cancelled, with the stream still open: not by this stream (its
        // close removes it first), but by the close of another descriptor
        // of the same open file (io_uring cancels by file: stdout and
        // stderr of a `2>&1` process, a watcher's duplicate). Sent again.
        let cancelled = matches!(&c.result, Err(e) if e.raw_os_error() == Some(libc::ECANCELED));
        let n = match c.result {
            Ok(n) => n,
            Err(_) if again || cancelled => 0,
            Err(error) => return self.destroy(lp, Error::net("write", None, error)),
        };
        let Some(m) = s.more.as_mut() else {
            return;
        };
        let Some(head) = m.writes.front_mut() else {
            return;
        };
        head.buf = match c.owner {
            Some(owner) => WriteBuf::from_send_owner(owner),
            None => WriteBuf::from(c.buf.unwrap_or_default()),
        };
        if again {
            // io_uring cannot wait on this descriptor (a terminal opened
            // nonblocking): the write goes again once it is writable.
            s.set(SENDING, true);
            return self.wait_ready(lp, eventide_reactor::Interest::WRITABLE);
        }
        head.sent += n;
        let done = head.sent == head.buf.len();
        m.queued -= n;
        self.touch(lp);
        if done {
            self.written(lp);
        } else {
            self.flush(lp);
        }
    }

    /// The head write is out: its callback runs, then `drain` if the queue
    /// emptied after reaching the mark, and the queue goes on (even if the
    /// callback panicked).
    fn written(self, lp: &mut Loop) {
        let Some(mut head) = lp
            .io
            .net
            .streams
            .get_mut(self.0)
            .and_then(|s| s.more.as_mut())
            .and_then(|m| m.writes.pop_front())
        else {
            return;
        };
        if let AfterWrite::Piped(_) = head.after {
            // The reactor's buffer, when the pipe sent it on as it was.
            lp.reactor.offer(head.buf.take_vec());
        }
        let panicked = catch(|| head.after.run(lp, Ok(())));
        self.drain_if_due(lp);
        self.flush(lp);
        if let Err(payload) = panicked {
            std::panic::resume_unwind(payload);
        }
    }

    fn drain_if_due(self, lp: &mut Loop) {
        let Some(s) = lp.io.net.streams.get_mut(self.0) else {
            return;
        };
        let queue_empty = s
            .more
            .as_ref()
            .is_none_or(|m| m.queued == 0 && m.writes.is_empty());
        if !s.has(NEED_DRAIN) || !queue_empty {
            return;
        }
        s.set(NEED_DRAIN, false);
        if s.has(PIPED_TO_SELF) {
            self.resume_reading(lp);
        }
        let Some(s) = lp.io.net.streams.get_mut(self.0) else {
            return;
        };
        let Some(mut on_drain) = s.more.as_mut().and_then(|m| m.on_drain.take()) else {
            return;
        };
        let panicked = catch(|| on_drain(lp, self));
        if let Some(s) = lp.io.net.streams.get_mut(self.0) {
            let slot = &mut s.more().on_drain;
            if slot.is_none() {
                *slot = Some(on_drain);
            }
        }
        if let Err(payload) = panicked {
            self.resume_later(lp, payload);
        }
    }

    fn start_shutdown(self, lp: &mut Loop) {
        let Some(s) = lp.io.net.streams.get_mut(self.0) else {
            return;
        };
        let Some(on_done) = s.more.as_mut().and_then(|m| m.shutdown.take()) else {
            return;
        };
        s.set(SHUT_SUBMITTED, true);
        s.more().shutting = true;
        if s.has(NOT_SOCKET) {
            // No FIN on a pipe: its end is the close of this descriptor,
            // which `end` (which `shutdown` is here) does once the peer's
            // end is in (at once for a writing end, see `super::pipe`).
            s.set(END_REQUESTED, true);
            lp.defer(move |lp| self.shut(lp, on_done, Ok(())));
            return;
        }
        let op = Op::shutdown(s.socket.as_raw_fd(), Shutdown::Write);
        let mut on_done = Some(on_done);
        let submitted = lp.submit_io(op, move |lp, c| {
            let Some(on_done) = on_done.take() else {
                return;
            };
            self.shut(lp, on_done, c.result.map(drop));
        });
        if let Err(refused) = submitted {
            // The callback went with the refused operation's handler.
            self.destroy(lp, Error::net("shutdown", None, refused.error));
        }
    }

    /// The shutdown is done (or failed): `on_done` runs, then the end goes
    /// on.
    fn shut(self, lp: &mut Loop, on_done: OnDone, result: io::Result<()>) {
        let failed = result.as_ref().err().and_then(io::Error::raw_os_error);
        let mut s = lp.io.net.streams.get_mut(self.0);
        if let Some(m) = s.as_mut().and_then(|s| s.more.as_mut()) {
            m.shutting = false;
        }
        let ending = s.as_ref().is_some_and(|s| s.has(END_REQUESTED));
        if let Some(s) = s
            && failed.is_none()
        {
            s.set(FIN_SENT, true);
        }
        let panicked = catch(|| on_done(lp, result.map_err(shutdown_error)));
        match failed {
            None => self.after_fin(lp),
            // `end` cannot finish: the stream is destroyed, as Node's
            // is by a failed shutdown.
            Some(errno) if ending => {
                let error = io::Error::from_raw_os_error(errno);
                self.destroy(lp, Error::net("shutdown", None, error));
            }
            Some(_) => {}
        }
        if let Err(payload) = panicked {
            std::panic::resume_unwind(payload);
        }
    }

    /// io_uring returned `EAGAIN` on a descriptor that is not a socket:
    /// a one-shot readiness wait, then the read or the write goes again
    /// (the write is still `SENDING`, so nothing else sends meanwhile). A
    /// close meanwhile cancels the wait (the reactor's close cancels what
    /// runs on the descriptor), which then finds no stream.
    fn wait_ready(self, lp: &mut Loop, interest: eventide_reactor::Interest) {
        let Ok(fd) = self.raw_fd(lp) else {
            return;
        };
        let writable = interest.is_writable();
        let submitted = lp.submit_io(Op::poll(fd, interest), move |lp, c| {
            if lp.io.net.streams.get(self.0).is_none() {
                return;
            }
            if let Err(error) = c.result
                && error.raw_os_error() != Some(libc::ECANCELED)
            {
                let syscall = if writable { "write" } else { "read" };
                return self.destroy(lp, Error::net(syscall, None, error));
            }
            if writable {
                if let Some(s) = lp.io.net.streams.get_mut(self.0) {
                    s.set(SENDING, false);
                }
                self.flush(lp);
            } else {
                self.pump(lp);
            }
        });
        if let Err(refused) = submitted {
            let syscall = if writable { "write" } else { "read" };
            self.destroy(lp, Error::net(syscall, None, refused.error));
        }
    }

    fn close_with(self, lp: &mut Loop, on_close: Option<Task>) -> bool {
        let Some(mut s) = lp.io.net.streams.remove(self.0) else {
            return false;
        };
        left_server(lp, &s);
        let mut waiting = Waiting::take(lp, &mut s, false);
        let watcher = waiting.watcher.take();
        if s.has(NOT_SOCKET) {
            super::pipe::releasing(s.socket.as_raw_fd());
        }
        super::close_socket(lp, s.socket);
        lp.push_closing(Some(Box::new(move |lp: &mut Loop| {
            let mut unwind = Unwind::default();
            let close_event = waiting.fail(lp, libc::ECANCELED, &mut unwind);
            if let Some(watcher) = watcher {
                unwind.run(|| watcher(lp));
            }
            if let Some(close_event) = close_event {
                unwind.run(|| close_event(lp, self, false));
            }
            if let Some(on_close) = on_close {
                unwind.run(|| on_close(lp));
            }
            unwind.resume();
        })));
        true
    }

    /// Ends the stream on a fatal error, as Node destroys a socket: the
    /// descriptor is closed, and every waiting callback gets the error
    /// (`on_end` and the one the error belongs to with `error` itself);
    /// the close event follows in the close phase, with `hadError`.
    fn destroy(self, lp: &mut Loop, error: Error) {
        let Some(mut s) = lp.io.net.streams.remove(self.0) else {
            return;
        };
        left_server(lp, &s);
        let mut waiting = Waiting::take(lp, &mut s, true);
        if s.has(NOT_SOCKET) {
            super::pipe::releasing(s.socket.as_raw_fd());
        }
        super::close_socket(lp, s.socket);
        let watcher = waiting.watcher.take();
        let close_event = waiting.on_close.take();
        if watcher.is_some() || close_event.is_some() {
            lp.push_closing(Some(Box::new(move |lp: &mut Loop| {
                let mut unwind = Unwind::default();
                if let Some(watcher) = watcher {
                    unwind.run(|| watcher(lp));
                }
                if let Some(close_event) = close_event {
                    unwind.run(|| close_event(lp, self, true));
                }
                unwind.resume();
            })));
        }
        let errno = error.errno().unwrap_or(libc::EIO);
        waiting.fail_first(lp, self, error, errno);
    }
}

/// Whether a TCP connection whose receive read 0 was reset rather than
/// ended: its state is `TCP_CLOSE` although this side sent no FIN (a
/// peer's FIN leaves it in `CLOSE_WAIT`). A send that failed on the reset
/// took the socket's error first; the receive then reads 0 (io_uring
/// runs both at once). Not a TCP socket: `false`. Linux only (its
/// `TCP_INFO` states; io_uring is Linux's): elsewhere `false`, the
/// readiness backends' receive meeting the reset error itself.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn was_reset(socket: &Socket) -> bool {
    /// `TCP_CLOSE` of the kernel's `tcp_states.h`.
    const TCP_CLOSE: u8 = 7;
    // SAFETY: tcp_info is plain old data; all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, which is
    // that large, and the descriptor is open (the stream owns it).
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    rc == 0 && len > 0 && info.tcpi_state == TCP_CLOSE
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn was_reset(_: &Socket) -> bool {
    false
}

/// A stream a listener delivered is going away: the listener counts one
/// connection less, and if it is closed and that was its last, its close
/// callback is queued as a next-tick now, as Node's `Socket._destroy`
/// calls `server._emitCloseIfDrained` (before the stream's own callbacks).
/// Whether `fd`'s open file is in nonblocking mode (a pipe or terminal
/// may be shared with a process that wants it blocking; see `pipe.rs`).
fn nonblocking(fd: std::os::fd::RawFd) -> bool {
    // SAFETY: F_GETFL reads the flags of `fd`, the stream's own open
    // descriptor; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    flags >= 0 && flags & libc::O_NONBLOCK != 0
}

fn left_server(lp: &mut Loop, s: &StreamState) {
    if let Some(server) = s.server()
        && let Some(on_close) = lp.io.net.servers.left(server)
    {
        lp.next_tick(on_close);
    }
}

/// The callbacks of a stream that is going away.
struct Waiting {
    peer: Peer,
    on_connect: Option<OnConnect>,
    writes: VecDeque<Write>,
    shutdown: Option<OnDone>,
    reader: Option<OnRead>,
    /// The reader is out (its `on_data` runs): its error is left for
    /// `deliver` to hand to `on_end` (see `Sockets::owed_end`).
    reader_out: bool,
    on_close: Option<OnClose>,
    watcher: Option<Task>,
}

impl Waiting {
    /// Takes the callbacks out of a stream being removed, gives its
    /// undelivered chunks back to the reactor, and stops its timers.
    fn take(lp: &mut Loop, s: &mut StreamState, with_reader: bool) -> Waiting {
        if s.has(RECV_ARMED) && s.has(UNREF) {
            // Its receive's final completion is still to come and finds no
            // stream: from now on it keeps the loop alive, as every
            // operation of a closing handle does.
            lp.io.sockets += 1;
        }
        let mut more = s.more.take().map(|m| *m).unwrap_or_default();
        for buf in more.stash.drain(..) {
            lp.reactor.recycle(buf);
        }
        if let Some(idle) = more.idle.take() {
            lp.clear_timer(idle.timer);
        }
        if let Some(linger) = more.linger.take() {
            lp.clear_timer(linger);
        }
        Waiting {
            peer: more.peer,
            on_connect: more.on_connect,
            writes: more.writes,
            shutdown: more.shutdown,
            reader: if with_reader { s.reader.take() } else { None },
            reader_out: with_reader && s.has(DELIVERING),
            on_close: more.on_close,
            watcher: more.watcher,
        }
    }

    /// Fails every callback with `errno` (a panic in one is kept in
    /// `unwind`, the others still run); returns the close event's
    /// callback.
    fn fail(self, lp: &mut Loop, errno: i32, unwind: &mut Unwind) -> Option<OnClose> {
        let os = || io::Error::from_raw_os_error(errno);
        if let Some(on_connect) = self.on_connect {
            let error = self.peer.error("connect", os());
            unwind.run(|| on_connect(lp, Err(error)));
        }
        for write in self.writes {
            unwind.run(|| write.after.run(lp, Err(Error::net("write", None, os()))));
        }
        if let Some(on_done) = self.shutdown {
            unwind.run(|| on_done(lp, Err(Error::net("shutdown", None, os()))));
        }
        self.on_close
    }

    /// Fails every callback, the first of them (the connect's, else the
    /// head write's, else the reader's) with `error` itself.
    fn fail_first(mut self, lp: &mut Loop, stream: Stream, error: Error, errno: i32) {
        let mut unwind = Unwind::default();
        let reader = self.reader.take();
        let reader_out = self.reader_out;
        let mut error = Some(error);
        if let Some(on_connect) = self.on_connect.take() {
            let error = error.take().expect("not taken yet");
            unwind.run(|| on_connect(lp, Err(error)));
        } else if let Some(head) = self.writes.pop_front() {
            let error = error.take().expect("not taken yet");
            unwind.run(|| head.after.run(lp, Err(error)));
        }
        let close_event = self.fail(lp, errno, &mut unwind);
        debug_assert!(close_event.is_none(), "taken by destroy");
        if reader.is_some() || reader_out {
            let error = error.unwrap_or_else(|| {
                let syscall = "read";
                Error::net(syscall, None, io::Error::from_raw_os_error(errno))
            });
            match reader {
                Some(reader) => unwind.run(|| reader.end(lp, stream, Err(error))),
                None => lp.io.net.owe_end(stream, error),
            }
        }
        unwind.resume();
    }
}

fn shutdown_error(error: io::Error) -> Error {
    Error::net("shutdown", None, error)
}

/// What a stream is called in errors.
pub(super) const WHAT: &str = "stream";

// ---- Handing a stream back to std (h-adopt; the rest is in adopt.rs). ----
impl Stream {
    /// Takes the stream out of the table for [`Stream::into_std`]-like
    /// hand-backs: refused (`EBUSY`, nothing changed) while it connects,
    /// has writes queued or in flight, or shuts down; else the handle is
    /// stale from now on, the reader is dropped (as `close` drops it), the
    /// chunks already received are returned, and the receive, if armed, is
    /// cancelled: its final completion is still to come (`true`).
    pub(super) fn take_for_std(self, lp: &mut Loop) -> Result<(Socket, Vec<u8>, bool)> {
        let Some(s) = lp.io.net.streams.get(self.0) else {
            return Err(lp.io.net.streams.miss(self.0, WHAT));
        };
        let writing = s
            .more
            .as_ref()
            .is_some_and(|m| !m.writes.is_empty() || m.queued > 0 || m.shutdown.is_some());
        let shutting = s.more.as_ref().is_some_and(|m| m.shutting);
        if writing || shutting || s.has(CONNECTING | SENDING | END_REQUESTED) {
            let busy = io::Error::from_raw_os_error(libc::EBUSY);
            return Err(Error::net("into_std", None, busy));
        }
        let mut s = lp.io.net.streams.remove(self.0).expect("just found");
        left_server(lp, &s);
        let recv = s.recv(self);
        if let Some(token) = recv
            && !s.has(RECV_CANCELLED)
        {
            lp.reactor.cancel(token);
        }
        let mut unread = Vec::new();
        if let Some(m) = s.more.as_mut() {
            for buf in m.stash.drain(..) {
                unread.extend_from_slice(&buf);
                lp.reactor.recycle(buf);
            }
        }
        let waiting = Waiting::take(lp, &mut s, false);
        // Node's `'close'` event: the handle's life ended (its descriptor
        // lives on, in the user's hands).
        lp.push_closing(Some(Box::new(move |lp: &mut Loop| {
            let mut unwind = Unwind::default();
            if let Some(close_event) = waiting.fail(lp, libc::ECANCELED, &mut unwind) {
                unwind.run(|| close_event(lp, self, false));
            }
            unwind.resume();
        })));
        Ok((s.socket, unread, recv.is_some()))
    }
}

impl Loop {
    /// The streams, for [`Loop::handles`]; returns how many of the socket
    /// operations counted in `Io::sockets` they account for.
    /// The site of the listener that accepted the stream numbered `id`
    /// (`slab::raw`), if it was accepted.
    pub(crate) fn accepted_site(&self, id: u64) -> Option<crate::diag::Site> {
        let slot = SlotId {
            index: id as u32,
            generation: (id >> 32) as u32,
        };
        let s = self.io.net.streams.get(self.io.net.key(slot))?;
        s.server().and_then(|i| self.io.net.servers.site(i))
    }

    pub(crate) fn list_streams(&self, listing: &mut crate::diag::Listing) -> usize {
        let mut ops = 0;
        for (slot, s) in self.io.net.streams.iter() {
            let id = crate::slab::raw(slot);
            let referenced = !s.has(UNREF);
            let receiving = referenced && s.has(RECV_ARMED);
            let sending = s.has(SENDING);
            ops += usize::from(receiving) + usize::from(sending);
            let kind = crate::diag::Kind::Stream;
            // An accepted connection: its listener's site.
            let site = self.site_of(kind, id).or_else(|| self.accepted_site(id));
            listing.add(kind, id, referenced, receiving || sending, site);
        }
        ops
    }
}

/// `write_copy` (the adapters' queued writes, with no callback) on every
/// compiled backend: its fast path after a completed send (no callback,
/// no drain due) and the boundaries where the general path takes over.
#[cfg(test)]
mod write_copy_tests {
    use std::cell::{Cell, RefCell};
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::rc::Rc;
    use std::time::Duration;

    use eventide_reactor::{BackendChoice, BackendKind};

    use super::Stream;
    use crate::event_loop::Loop;
    use crate::net::ListenOptions;

    /// What the accepting side read, and whether its end came.
    #[derive(Default)]
    struct Peer {
        bytes: Vec<u8>,
        ended: bool,
    }

    /// Runs `client` on the connected client stream of a fresh loop of
    /// each compiled backend; the server reads everything into a `Peer`,
    /// then `check` looks at the loop and what the peer got. A watchdog
    /// fails a run that does not end in 10 s. Returns how many backends
    /// ran.
    fn on_every_backend(
        client: impl Fn(&mut Loop, Stream) + Clone + 'static,
        check: impl Fn(&mut Loop, &Peer, BackendKind),
    ) -> usize {
        let mut ran = 0;
        for &kind in BackendKind::compiled() {
            let Ok(mut lp) = Loop::builder().backend(BackendChoice::Only(kind)).build() else {
                eprintln!("skipped on {kind}");
                continue;
            };
            let peer = Rc::new(RefCell::new(Peer::default()));
            let p = Rc::clone(&peer);
            let listener = lp
                .tcp_listen(
                    "127.0.0.1:0".parse().unwrap(),
                    ListenOptions::default(),
                    move |lp, accepted| {
                        let (data, end) = (Rc::clone(&p), Rc::clone(&p));
                        accepted.expect("accepted").read_start(
                            lp,
                            move |_, _, chunk| data.borrow_mut().bytes.extend_from_slice(chunk),
                            move |lp, s, _| {
                                end.borrow_mut().ended = true;
                                s.close(lp);
                            },
                        );
                    },
                )
                .expect("listen");
            let addr = listener.local_addr(&lp).expect("its address");
            let client = client.clone();
            lp.tcp_connect(addr, move |lp, connected| {
                listener.close(lp);
                client(lp, Stream::from(connected.expect("connected")));
            })
            .expect("connect");
            let expired = lp.test_watchdog(Duration::from_secs(10));
            // A panicking callback leaves `run`; the loop then goes on.
            for _ in 0..3 {
                if catch_unwind(AssertUnwindSafe(|| lp.run())).is_ok() {
                    break;
                }
            }
            assert!(!expired.get(), "{kind}: the loop ended by itself");
            check(&mut lp, &peer.borrow(), kind);
            ran += 1;
        }
        ran
    }

    /// The bytes of chunk `i` (sizes 1 to 97).
    fn chunk(i: usize) -> Vec<u8> {
        vec![i as u8; 1 + (i * 37) % 97]
    }

    /// Writes queued behind a send in flight (the general path: more
    /// queued behind each) go out whole and in order, and a copy written
    /// from a callback of the queue goes out after it.
    #[test]
    fn queued_copies_arrive_in_order() {
        on_every_backend(
            |lp, client| {
                for i in 0..100 {
                    assert!(client.write_copy(lp, &chunk(i)), "below the mark");
                }
                assert!(client.write_queue_size(lp) > 0, "queued behind the first");
                client.write(lp, b"|".to_vec(), move |lp, written| {
                    written.expect("written");
                    assert!(client.write_copy(lp, b"end"));
                    client.end(lp);
                });
            },
            |lp, peer, kind| {
                let mut want: Vec<u8> = (0..100).flat_map(chunk).collect();
                want.extend_from_slice(b"|end");
                assert!(peer.bytes == want, "{kind}: every byte, in order");
                assert!(peer.ended, "{kind}: the end after them");
                assert!(lp.io.net.spare_sends.len() <= super::super::SPARE_SENDS);
                assert_eq!(lp.ops_in_flight(), 0);
            },
        );
    }

    /// A lone copy's completion (the dispatch-free path, `sent_quietly`)
    /// leaves the stream as the general path would: nothing queued, no
    /// send in flight (`try_write` goes straight to the kernel again), and
    /// the send no longer counted (the loop ends); its buffer is kept, and
    /// the next copy takes it instead of allocating.
    #[test]
    fn a_lone_copy_leaves_the_stream_ready_for_the_next_write() {
        on_every_backend(
            |lp, client| {
                assert!(client.write_copy(lp, b"lone"));
                assert_eq!(client.write_queue_size(lp), 4);
                let checks = Rc::new(Cell::new(0));
                lp.set_interval(Duration::from_millis(2), move |lp, interval| {
                    checks.set(checks.get() + 1);
                    assert!(checks.get() < 1000, "the send completed in 2 s");
                    if client.write_queue_size(lp) > 0 {
                        return;
                    }
                    assert!(!client.need_drain(lp));
                    assert_eq!(lp.io.net.spare_sends.len(), 1, "its buffer kept");
                    assert_eq!(client.try_write(lp, b" next").expect("not sending"), 5);
                    assert!(client.write_copy(lp, b"!"));
                    assert!(lp.io.net.spare_sends.is_empty(), "reused");
                    assert!(client.end(lp));
                    lp.clear_timer(interval);
                });
            },
            |lp, peer, kind| {
                assert!(peer.bytes == b"lone next!", "{kind}: {:?}", peer.bytes);
                assert!(peer.ended, "{kind}");
                assert_eq!(lp.ops_in_flight(), 0, "{kind}");
            },
        );
    }

    /// At the high-water mark the general path runs: `drain` once the
    /// queue empties, after the last write, whether the copy that reached
    /// the mark went straight to the kernel (nothing queued before it) or
    /// was queued; a copy after `end` is refused (nothing sent).
    #[test]
    fn a_copy_that_reaches_the_mark_gets_its_drain() {
        let drains = Rc::new(Cell::new(0));
        let d = Rc::clone(&drains);
        let ran = on_every_backend(
            move |lp, client| {
                client.set_high_water_mark(lp, 64);
                let d = Rc::clone(&d);
                client.on_drain(lp, move |lp, s| {
                    d.set(d.get() + 1);
                    assert_eq!(s.write_queue_size(lp), 0);
                    s.end(lp);
                    assert!(!s.write_copy(lp, b"late"), "after end");
                });
                assert!(!client.write_copy(lp, &[2; 100]), "at the mark at once");
                assert!(client.need_drain(lp));
                assert!(!client.write_copy(lp, &[1; 10]), "queued at the mark");
            },
            |lp, peer, kind| {
                assert_eq!(peer.bytes.len(), 110, "{kind}");
                assert!(peer.ended, "{kind}");
                assert_eq!(lp.ops_in_flight(), 0, "{kind}");
            },
        );
        assert_eq!(drains.get(), ran, "one drain per backend");
    }

    /// A write with a callback between two copies: the callback closes
    /// the stream; the copy behind it fails quietly (nothing to call), the
    /// one before it arrived.
    #[test]
    fn a_callback_closing_the_stream_between_copies() {
        on_every_backend(
            |lp, client| {
                assert!(client.write_copy(lp, b"first "));
                client.write(lp, b"second".to_vec(), move |lp, written| {
                    written.expect("written");
                    assert!(client.close(lp));
                });
                assert!(client.write_copy(lp, b" never"));
            },
            |lp, peer, kind| {
                assert!(peer.bytes == b"first second", "{kind}: {:?}", peer.bytes);
                assert!(peer.ended, "{kind}");
                assert_eq!(lp.ops_in_flight(), 0, "{kind}");
            },
        );
    }

    /// A write's callback that panics between two copies: the panic
    /// leaves `run`, and the queue goes on with the copy behind it.
    #[test]
    fn a_callback_panicking_between_copies() {
        on_every_backend(
            |lp, client| {
                assert!(client.write_copy(lp, b"first "));
                client.write(lp, b"second".to_vec(), |_, written| {
                    written.expect("written");
                    panic!("a write's callback panics");
                });
                assert!(client.write_copy(lp, b" third"));
                client.end(lp);
            },
            |_, peer, kind| {
                assert!(
                    peer.bytes == b"first second third",
                    "{kind}: {:?}",
                    peer.bytes
                );
                assert!(peer.ended, "{kind}");
            },
        );
    }

    /// A close while a copy's send is in flight (on io_uring: submitted
    /// with the turn, cancelled by the close): the loop ends with nothing
    /// in flight, and the buffer, handed back by the cancelled send's
    /// completion, is freed with it, not kept.
    #[test]
    fn a_close_with_a_copy_in_flight() {
        on_every_backend(
            |lp, client| {
                assert!(client.write_copy(lp, &[7; 2000]));
                assert!(client.write_copy(lp, &[8; 2000]));
                assert!(client.close(lp));
                assert!(!client.write_copy(lp, b"after the close"), "stale");
            },
            |lp, peer, kind| {
                assert!(peer.ended, "{kind}");
                assert!(peer.bytes.len() <= 4000, "{kind}");
                assert!(peer.bytes.iter().all(|&b| b == 7 || b == 8), "{kind}");
                assert_eq!(lp.ops_in_flight(), 0, "{kind}");
                assert!(lp.io.net.spare_sends.is_empty(), "{kind}");
            },
        );
    }
}
