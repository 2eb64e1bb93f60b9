//! The core of the stream adapters: what [`AsyncStream`] (futures-io's
//! traits) and, with the `hyper` feature, `hyper::HyperStream` (hyper's
//! I/O traits) keep over a loop [`Stream`] and do alike.
//!
//! [`StreamIo`] owns the stream and the state its callbacks share with
//! the adapter: the bytes read and not yet taken, the wakers, the
//! stream's end, the shutdown. It reads (started at the first read, paused
//! past [`READ_HIGH_WATER`] bytes not taken), waits for a drain, shuts
//! the writing side down, and closes or ends the stream for the
//! adapter's `close` and drop. What differs between the adapters stays
//! with them: the buffer a read copies into (a slice, hyper's
//! `ReadBufCursor`), the write path and `flush` (an `AsyncStream`
//! counts its queued writes for `flush`; a `HyperStream` queues its
//! writes without a callback and, on io_uring, without trying the kernel
//! first), and what the drop does after a completed shutdown.
//!
//! [`AsyncStream`]: super::net::AsyncStream

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use super::{try_with_loop, with_loop};
use crate::net::Stream;
use crate::{Error, Loop, Result};

/// Bytes buffered past which reading pauses (64 KiB): both adapters'
/// `READ_HIGH_WATER`.
pub(crate) const READ_HIGH_WATER: usize = 64 * 1024;

/// What an adapter shares with its stream's callbacks. `W` is the
/// adapter's own bookkeeping of its writes.
#[derive(Default)]
pub(crate) struct State<W> {
    /// Bytes read and not yet taken, from `taken` on.
    inbox: Vec<u8>,
    taken: usize,
    /// The peer ended (`Ok`) or the stream failed.
    pub(crate) end: Option<Result<()>>,
    /// Whether reading is on (`read_start` without `read_stop`).
    reading: bool,
    /// Whether the reader is installed (the first `read_start`): from
    /// then on, a failure of the stream (a send's included) reaches its
    /// end callback, into `end`.
    pub(crate) started: bool,
    read_waker: Option<Waker>,
    /// Waits for a drain, the adapter's writes or the shutdown.
    pub(crate) write_waker: Option<Waker>,
    /// Whether `on_drain` is installed.
    drain_set: bool,
    /// The shutdown's result, once done.
    shut: Option<Result<()>>,
    shutdown_started: bool,
    /// The adapter's `close` destroyed the stream: the drop ends nothing.
    destroyed: bool,
    /// The adapter's own bookkeeping of its writes.
    pub(crate) writes: W,
}

impl<W> State<W> {
    fn buffered(&self) -> usize {
        self.inbox.len() - self.taken
    }
}

/// A loop [`Stream`] and the [`State`] its callbacks feed (see the
/// module's documentation).
pub(crate) struct StreamIo<W = ()> {
    stream: Stream,
    state: Rc<RefCell<State<W>>>,
}

impl<W: Default + 'static> StreamIo<W> {
    /// Wraps `stream`, which must not have another reader
    /// ([`Stream::read_start`] replaces its callbacks).
    pub(crate) fn new(stream: Stream) -> StreamIo<W> {
        StreamIo {
            stream,
            state: Rc::default(),
        }
    }

    pub(crate) fn stream(&self) -> Stream {
        self.stream
    }

    /// The state, for the adapter's write path (its callbacks hold a
    /// clone).
    pub(crate) fn state(&self) -> &Rc<RefCell<State<W>>> {
        &self.state
    }

    /// Destroys the stream at once (the adapter's `close`): its drop
    /// then does nothing.
    pub(crate) fn close(&self) {
        let stream = self.stream;
        self.state.borrow_mut().destroyed = true;
        try_with_loop(|lp| stream.close(lp));
    }

    /// Starts reading, the callbacks feeding the state.
    pub(crate) fn start(&self, lp: &mut Loop) {
        {
            let mut io = self.state.borrow_mut();
            io.reading = true;
            io.started = true;
        }
        let stream = self.stream;
        // The adapter's user decides when its side ends (hyper's
        // `poll_shutdown`, `poll_close`, or the drop): the peer's end
        // must not end it while what came before that end is still to be
        // answered.
        stream.set_allow_half_open(lp, true);
        let data_io = Rc::clone(&self.state);
        let end_io = Rc::clone(&self.state);
        stream.read_start(
            lp,
            move |lp, s, chunk| {
                let mut io = data_io.borrow_mut();
                if io.taken == io.inbox.len() {
                    io.inbox.clear();
                    io.taken = 0;
                }
                io.inbox.extend_from_slice(chunk);
                if io.buffered() >= READ_HIGH_WATER && io.reading {
                    io.reading = false;
                    s.read_stop(lp);
                }
                wake(&mut io.read_waker);
            },
            move |_, _, result| {
                let mut io = end_io.borrow_mut();
                io.end = Some(result);
                io.reading = false;
                wake(&mut io.read_waker);
                wake(&mut io.write_waker);
            },
        );
    }

    /// A read: `copy` gets the bytes buffered (never none) and returns
    /// how many of them it took; `Ok(0)` without a call is the peer's
    /// end. Reading starts at the first read that has to wait, and
    /// resumes once what a pause left buffered is taken.
    pub(crate) fn poll_read(
        &self,
        cx: &Context<'_>,
        copy: impl FnOnce(&[u8]) -> usize,
    ) -> Poll<io::Result<usize>> {
        let mut io = self.state.borrow_mut();
        if io.buffered() > 0 {
            let from = io.taken;
            let n = copy(&io.inbox[from..]);
            io.taken += n;
            let resume = !io.reading && io.end.is_none() && io.buffered() == 0;
            drop(io);
            if resume {
                with_loop(|lp| self.start(lp));
            }
            return Poll::Ready(Ok(n));
        }
        match &io.end {
            Some(Ok(())) => return Poll::Ready(Ok(0)),
            Some(Err(error)) => return Poll::Ready(Err(to_io(error))),
            None => {}
        }
        set_waker(&mut io.read_waker, cx);
        if !io.reading {
            drop(io);
            with_loop(|lp| self.start(lp));
        }
        Poll::Pending
    }

    /// A write at the stream's high-water mark: waits for the drain.
    pub(crate) fn wait_drain<T>(&self, lp: &mut Loop, cx: &Context<'_>) -> Poll<T> {
        let mut io = self.state.borrow_mut();
        set_waker(&mut io.write_waker, cx);
        if !io.drain_set {
            io.drain_set = true;
            let drain_io = Rc::clone(&self.state);
            self.stream
                .on_drain(lp, move |_, _| wake(&mut drain_io.borrow_mut().write_waker));
        }
        Poll::Pending
    }

    /// Shuts the writing side down ([`Stream::shutdown`]) and waits for
    /// it; done, it stays done.
    pub(crate) fn poll_shutdown(&self, cx: &Context<'_>) -> Poll<io::Result<()>> {
        let stream = self.stream;
        let mut io = self.state.borrow_mut();
        if let Some(result) = io.shut.take() {
            io.shut = Some(Ok(()));
            return Poll::Ready(result.map_err(|e| to_io(&e)));
        }
        set_waker(&mut io.write_waker, cx);
        if !io.shutdown_started {
            io.shutdown_started = true;
            drop(io);
            let shut_io = Rc::clone(&self.state);
            // The shutdown runs once every queued write is out.
            with_loop(|lp| {
                stream.shutdown(lp, move |_, result| {
                    let mut io = shut_io.borrow_mut();
                    // Already shut (an `end`): the writing side is done.
                    let already = matches!(&result, Err(e) if e.errno() == Some(libc::EALREADY));
                    io.shut = Some(if already { Ok(()) } else { result });
                    wake(&mut io.write_waker);
                });
            });
        }
        Poll::Pending
    }

    /// The adapter's drop: nothing after its `close`; closes the stream
    /// after a completed shutdown if `close_when_shut`; ends it
    /// gracefully ([`Stream::end`]) otherwise.
    pub(crate) fn release(&self, close_when_shut: bool) {
        let (destroyed, shut) = {
            let io = self.state.borrow();
            (io.destroyed, matches!(io.shut, Some(Ok(()))))
        };
        if destroyed {
            return;
        }
        let stream = self.stream;
        if close_when_shut && shut {
            try_with_loop(|lp| stream.close(lp));
        } else {
            try_with_loop(|lp| stream.end(lp));
        }
    }
}

/// Wakes the waker in `slot`, if any (taken out).
pub(crate) fn wake(slot: &mut Option<Waker>) {
    if let Some(waker) = slot.take() {
        waker.wake();
    }
}

/// Keeps `cx`'s waker in `slot` (not cloned if the one there wakes the
/// same task).
pub(crate) fn set_waker(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(waker) if waker.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

/// A loop error as an [`io::Error`] (its kind and its message).
pub(crate) fn to_io(error: &Error) -> io::Error {
    io::Error::new(error.kind(), error.to_string())
}
