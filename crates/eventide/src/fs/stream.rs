//! Chunked streams over files, Node's `fs.createReadStream` and
//! `fs.createWriteStream`: chunks with pause and resume and an end
//! callback; a write queue with a high-water mark and a drain callback
//! (backpressure); Node's options (`start`, `end`, `highWaterMark`, `fd`,
//! `autoClose`, `emitClose`, `flags`, `mode`); `destroy`, and a close
//! callback (Node's `'close'` event). Each chunk is one routed `read` or
//! `write`.
//!
//! # Destroy and the buffers in flight
//!
//! A read or write in flight owns its buffer (it travels inside the
//! request, to the ring or to a pool thread, and comes back with the
//! completion), so nothing a stream does can free memory the kernel may
//! still write. `destroy` cancels the operation in flight when it runs on
//! io_uring (a pool job, once queued, runs to its end) and **waits for its
//! completion** before closing the descriptor: the file is never closed
//! under an operation that could otherwise reach a descriptor number the
//! system has since given to another file.

use std::collections::VecDeque;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;

use eventide_reactor::Token;

use super::Fs;
use super::ops::fail_soon;
use super::table::Key;
use super::types::{File, Flags};
use crate::event_loop::Loop;
use crate::{Error, Result};

type OnData = Box<dyn FnMut(&mut Loop, ReadStream, &[u8])>;
type OnEnd = Box<dyn FnOnce(&mut Loop, Result<()>)>;
type OnDrain = Box<dyn FnMut(&mut Loop, WriteStream)>;
type OnClose = Box<dyn FnOnce(&mut Loop)>;
type OnError = Box<dyn FnOnce(&mut Loop, Error)>;

/// Chainable setters, one per named field, each documented as setting
/// it: `name: Type` takes a `Type` (or, written `impl Into<..>`, anything
/// that converts into the field's type).
macro_rules! setters {
    ($options:ident { $($field:ident: $arg:ty),* $(,)? }) => {
        impl $options {
            $(
                #[doc = concat!("Sets [`", stringify!($options), "::", stringify!($field), "`].")]
                pub fn $field(mut self, $field: $arg) -> $options {
                    self.$field = $field.into();
                    self
                }
            )*
        }
    };
}

/// Options of [`Fs::create_read_stream`] (Node's names and defaults):
/// `ReadStreamOptions::default().start(100).end(199)`. New options may
/// be added (it is `#[non_exhaustive]`): build it from `default()` with
/// the setters.
#[derive(Clone, Debug)]
#[non_exhaustive]
#[must_use = "options do nothing until given to `create_read_stream`"]
pub struct ReadStreamOptions {
    /// Bytes per chunk at most (Node's default for files: 64 KiB).
    pub high_water_mark: usize,
    /// The offset of the first byte read; `None` (Node's `undefined`):
    /// the file's current position (its start, for a file the stream
    /// opens).
    pub start: Option<u64>,
    /// The offset of the last byte read, inclusive (Node's `end`); `None`
    /// reads to the end of the file. `start` after `end` is an error.
    pub end: Option<u64>,
    /// How to open (Node's default `"r"`).
    pub flags: Flags,
    /// Permission bits if the flags create the file.
    pub mode: u32,
    /// Read this open file instead of opening the path (Node's `fd`).
    pub fd: Option<File>,
    /// Close the file after the end, an error or `destroy` (Node's
    /// `autoClose`, default `true`); `false` leaves it open for the caller.
    pub auto_close: bool,
    /// Run the close callback ([`ReadStream::on_close`]) once the stream
    /// is closed (Node's `emitClose`, default `true`).
    pub emit_close: bool,
}

impl Default for ReadStreamOptions {
    fn default() -> ReadStreamOptions {
        ReadStreamOptions {
            high_water_mark: 64 * 1024,
            start: None,
            end: None,
            flags: Flags::new().read(true),
            mode: 0o666,
            fd: None,
            auto_close: true,
            emit_close: true,
        }
    }
}

setters!(ReadStreamOptions {
    high_water_mark: usize,
    start: impl Into<Option<u64>>,
    end: impl Into<Option<u64>>,
    flags: Flags,
    mode: u32,
    fd: impl Into<Option<File>>,
    auto_close: bool,
    emit_close: bool,
});

/// A file read chunk by chunk ([`Fs::create_read_stream`]): a small
/// `Copy` key into its loop's table, as every eventide handle; its
/// methods take the loop, `stream.pause(lp)`, as a net stream's do.
///
/// The key goes stale once the stream has finished: ended or failed
/// and, with `auto_close`, its file closed; or destroyed and closed.
/// Then every method is a no-op: [`ReadStream::is_destroyed`] answers
/// `true` (a finished stream is destroyed, as Node's `autoDestroy`
/// makes it), [`ReadStream::file`] `None`. Without `auto_close`, an
/// ended stream stays (its `file()` too) until [`ReadStream::destroy`].
/// A key of another loop is stale on this one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReadStream(Key);

/// A read stream's state, in its loop's table.
pub(crate) struct ReadState {
    file: Option<File>,
    opening: bool,
    /// Where the next read starts; `None`: the file's position.
    pos: Option<u64>,
    /// Bytes still allowed before `end` (inclusive), if bounded.
    left: Option<u64>,
    high_water_mark: usize,
    auto_close: bool,
    emit_close: bool,
    paused: bool,
    reading: bool,
    /// The ring token of the read in flight (to cancel it).
    token: Option<Token>,
    ended: bool,
    destroyed: bool,
    buf: Vec<u8>,
    on_data: Option<OnData>,
    on_end: Option<OnEnd>,
    on_close: Option<OnClose>,
}

impl Fs<'_> {
    /// Opens `path` (or takes `options.fd`) and reads it in chunks of up
    /// to `high_water_mark` bytes, from `start` to `end`: `on_data` runs
    /// with each chunk (the slice is only valid during the call: one
    /// buffer is reused), then `on_end` once, with `Ok(())` after the last
    /// chunk and the file closed (with `auto_close`), or with the first
    /// error (opening, reading or closing). After that, and after
    /// [`ReadStream::destroy`] (which runs no `on_end`), the close
    /// callback runs ([`ReadStream::on_close`], Node's `'close'`).
    /// [`ReadStream::pause`] stops the flow after the read in flight;
    /// [`ReadStream::resume`] starts it again.
    ///
    /// A `start` after `end` ends the stream at once with
    /// [`Error::OutOfRange`] (`ERR_OUT_OF_RANGE`, worded as Node's throw),
    /// opening nothing; a `start` past the end of the file ends it with no chunk.
    pub fn create_read_stream(
        self,
        path: impl AsRef<Path>,
        options: ReadStreamOptions,
        on_data: impl FnMut(&mut Loop, ReadStream, &[u8]) + 'static,
        on_end: impl FnOnce(&mut Loop, Result<()>) + 'static,
    ) -> ReadStream {
        let bad_range = match (options.start, options.end) {
            (Some(start), Some(end)) if start > end => Some(start),
            _ => None,
        };
        let left = options
            .end
            .map(|end| (end + 1).saturating_sub(options.start.unwrap_or(0)));
        let given = options.fd.is_some();
        let stream = ReadStream(self.lp.io.fs.insert_read(ReadState {
            file: options.fd,
            opening: !given && bad_range.is_none(),
            pos: options.start,
            left,
            high_water_mark: options.high_water_mark.max(1),
            auto_close: options.auto_close,
            emit_close: options.emit_close,
            paused: false,
            reading: false,
            token: None,
            ended: bad_range.is_some(),
            destroyed: false,
            buf: Vec::new(),
            on_data: Some(Box::new(on_data)),
            on_end: None,
            on_close: None,
        }));
        if let Some(start) = bad_range {
            let error = Error::OutOfRange {
                name: "start",
                range: format!("<= \"end\" (here: {})", options.end.unwrap_or(0)),
                received: start.to_string(),
            };
            fail_soon(self.lp, error, move |lp, result| {
                // Nothing was opened: the stream is done before its end.
                lp.io.fs.remove_read(stream.0);
                on_end(lp, result);
            });
            return stream;
        }
        if let Some(s) = stream.state(self.lp) {
            s.on_end = Some(Box::new(on_end));
        }
        if given {
            // Never call back inside the call that made the stream.
            self.lp.defer(move |lp| stream.pump(lp));
            return stream;
        }
        self.open(path, options.flags, options.mode, move |lp, opened| {
            let Some(s) = stream.state(lp) else {
                // Not expected (the stream waits for its open); never leak.
                if let Ok(file) = opened {
                    lp.fs().close(file, |_, _| {});
                }
                return;
            };
            s.opening = false;
            let destroyed = s.destroyed;
            match opened {
                Ok(file) => {
                    s.file = Some(file);
                    if destroyed {
                        stream.close_destroyed(lp);
                    } else {
                        stream.pump(lp);
                    }
                }
                Err(_) if destroyed => stream.close_destroyed(lp),
                Err(error) => stream.finish(lp, Err(error)),
            }
        });
        stream
    }
}

impl ReadStream {
    fn state(self, lp: &mut Loop) -> Option<&mut ReadState> {
        lp.io.fs.read(self.0)
    }

    fn peek(self, lp: &Loop) -> Option<&ReadState> {
        lp.io.fs.read_ref(self.0)
    }

    /// Stops the chunks: none is delivered after this until
    /// [`ReadStream::resume`] (the read in flight, if any, is kept).
    pub fn pause(self, lp: &mut Loop) {
        if let Some(s) = self.state(lp) {
            s.paused = true;
        }
    }

    /// Starts the chunks again (Node's `resume()`).
    pub fn resume(self, lp: &mut Loop) {
        if let Some(s) = self.state(lp) {
            s.paused = false;
        }
        self.pump(lp);
    }

    /// Whether the stream is paused (`false` once it is gone).
    pub fn is_paused(self, lp: &Loop) -> bool {
        self.peek(lp).is_some_and(|s| s.paused)
    }

    /// The open file, once opened (Node's `stream.fd`); still there after
    /// the end when `auto_close` is off, for the caller to close.
    pub fn file(self, lp: &Loop) -> Option<File> {
        self.peek(lp).and_then(|s| s.file)
    }

    /// Whether [`ReadStream::destroy`] was called, or the stream has
    /// finished (its key is stale: see [`ReadStream`]).
    pub fn is_destroyed(self, lp: &Loop) -> bool {
        self.peek(lp).is_none_or(|s| s.destroyed)
    }

    /// Sets the close callback, Node's `'close'` event: it runs once,
    /// after the stream ended (and, with `auto_close`, its file was
    /// closed) or was destroyed, unless `emit_close` is off. Without
    /// `auto_close`, only a destroyed stream calls it. On a stream that
    /// is gone it is dropped, never run.
    pub fn on_close(self, lp: &mut Loop, callback: impl FnOnce(&mut Loop) + 'static) {
        if let Some(s) = self.state(lp) {
            s.on_close = Some(Box::new(callback));
        }
    }

    /// Ends the stream now (Node's `destroy()`): no more chunks and no
    /// `on_end`; a read in flight is cancelled (on io_uring) and waited
    /// for, then the file is closed (with `auto_close`) and the close
    /// callback runs. On a stream that ended without `auto_close` it only
    /// lets the stream go (the file stays the caller's) and runs the
    /// close callback. A no-op on a stream that is gone or destroyed.
    pub fn destroy(self, lp: &mut Loop) {
        let Some(s) = self.state(lp) else {
            return;
        };
        if s.destroyed {
            return;
        }
        if s.ended {
            // Only an ended stream without `auto_close` is still here.
            s.destroyed = true;
            let on_close = s.on_close.take().filter(|_| s.emit_close);
            lp.io.fs.remove_read(self.0);
            return close_then(lp, None, on_close);
        }
        s.destroyed = true;
        s.on_data = None;
        s.on_end = None;
        let (reading, opening, token) = (s.reading, s.opening, s.token.take());
        if reading {
            // The read's completion comes back (cancelled or done) and
            // closes the file then.
            if let Some(token) = token {
                lp.reactor.cancel(token);
            }
        } else if !opening {
            self.close_destroyed(lp);
        }
    }

    /// Issues the next read, unless paused, reading, ended or not open yet.
    fn pump(self, lp: &mut Loop) {
        let Some(s) = self.state(lp) else {
            return;
        };
        if s.paused || s.reading || s.ended || s.destroyed {
            return;
        }
        let Some(file) = s.file else {
            return;
        };
        let want = match s.left {
            Some(left) => left.min(s.high_water_mark as u64) as usize,
            None => s.high_water_mark,
        };
        if want == 0 {
            return self.finish(lp, Ok(()));
        }
        s.reading = true;
        let mut buf = std::mem::take(&mut s.buf);
        buf.clear();
        // A read fills the buffer's spare capacity: it must be `want`
        // exactly, or a read bounded by `end` would take bytes past it
        // from a pipe (one allocation, for the last bounded chunk).
        if buf.capacity() != want {
            buf = Vec::with_capacity(want);
        }
        let pos = s.pos;
        let token = lp
            .fs()
            .transfer(false, file, buf, pos, move |lp, read, buf| {
                self.on_read(lp, read, buf, want);
            });
        if let Some(s) = self.state(lp) {
            s.token = token;
        }
    }

    fn on_read(self, lp: &mut Loop, read: Result<usize>, buf: Vec<u8>, want: usize) {
        let Some(s) = self.state(lp) else {
            return;
        };
        s.reading = false;
        s.token = None;
        if s.destroyed {
            // The buffer is back: the kernel is done with it.
            s.buf = buf;
            return self.close_destroyed(lp);
        }
        let n = match read {
            Ok(0) => return self.finish(lp, Ok(())),
            Ok(n) => n,
            Err(error) => return self.finish(lp, Err(error)),
        };
        debug_assert!(n <= want && buf.len() == n, "a read stays within `want`");
        s.pos = s.pos.map(|p| p + n as u64);
        s.left = s.left.map(|l| l - n as u64);
        let on_data = s.on_data.take();
        let mut panicked = None;
        if let Some(mut on_data) = on_data {
            // User code: if it panics, the stream is put back together
            // (callback, buffer, next read) before the panic goes on, so
            // the stream reads on whether a panic handler catches it or
            // it unwinds out of `run` (and `run` is called again).
            let call = panic::catch_unwind(AssertUnwindSafe(|| on_data(lp, self, &buf)));
            panicked = call.err();
            if let Some(s) = self.state(lp)
                && !s.destroyed
                && !s.ended
            {
                s.on_data = Some(on_data);
            }
        }
        if let Some(s) = self.state(lp) {
            s.buf = buf;
        }
        self.pump(lp);
        if let Some(payload) = panicked {
            panic::resume_unwind(payload);
        }
    }

    /// Ends the stream once: closes the file (with `auto_close`), then
    /// `on_end`, then the close callback.
    fn finish(self, lp: &mut Loop, result: Result<()>) {
        let Some(s) = self.state(lp) else {
            return;
        };
        if s.ended || s.destroyed {
            return;
        }
        s.ended = true;
        s.on_data = None;
        let on_end = s.on_end.take();
        // Without auto_close the stream stays, with its file (see
        // `file()`), until `destroy`.
        let (file, on_close) = if s.auto_close {
            let on_close = s.on_close.take().filter(|_| s.emit_close);
            let file = s.file.take();
            lp.io.fs.remove_read(self.0);
            (file, on_close)
        } else {
            (None, None)
        };
        let done = move |lp: &mut Loop, result: Result<()>| {
            end_then_close(
                lp,
                on_end.map(|f| move |lp: &mut Loop| f(lp, result)),
                on_close,
            );
        };
        match file {
            Some(file) => lp.fs().close(file, move |lp, closed| {
                done(lp, result.and(closed));
            }),
            None => done(lp, result),
        }
    }

    /// After `destroy`, once nothing is in flight: close (with
    /// `auto_close`), then the close callback.
    fn close_destroyed(self, lp: &mut Loop) {
        let Some(s) = self.state(lp) else {
            return;
        };
        s.ended = true;
        // Without auto_close the file is the caller's: left open.
        let file = if s.auto_close { s.file.take() } else { None };
        let on_close = s.on_close.take().filter(|_| s.emit_close);
        lp.io.fs.remove_read(self.0);
        close_then(lp, file, on_close);
    }
}

/// Options of [`Fs::create_write_stream`] (Node's names and defaults):
/// `WriteStreamOptions::default().flags(Flags::parse("a")?)`. New
/// options may be added (it is `#[non_exhaustive]`): build it from
/// `default()` with the setters.
#[derive(Clone, Debug)]
#[non_exhaustive]
#[must_use = "options do nothing until given to `create_write_stream`"]
pub struct WriteStreamOptions {
    /// How to open (Node's default `"w"`).
    pub flags: Flags,
    /// Permission bits of a new file (less the umask).
    pub mode: u32,
    /// [`WriteStream::write`] returns `false` once this many bytes are
    /// queued (Node's default: 16 KiB).
    pub high_water_mark: usize,
    /// Where the first write goes; `None`: the file's position (appending
    /// files always write at the end).
    pub start: Option<u64>,
    /// Write to this open file instead of opening the path (Node's `fd`).
    pub fd: Option<File>,
    /// Close the file after `end` finished, an error or `destroy` (Node's
    /// `autoClose`, default `true`).
    pub auto_close: bool,
    /// Run the close callback ([`WriteStream::on_close`]) once the stream
    /// is closed (Node's `emitClose`, default `true`).
    pub emit_close: bool,
}

impl Default for WriteStreamOptions {
    fn default() -> WriteStreamOptions {
        WriteStreamOptions {
            flags: Flags::new().write(true).create(true).truncate(true),
            mode: 0o666,
            high_water_mark: 16 * 1024,
            start: None,
            fd: None,
            auto_close: true,
            emit_close: true,
        }
    }
}

setters!(WriteStreamOptions {
    flags: Flags,
    mode: u32,
    high_water_mark: usize,
    start: impl Into<Option<u64>>,
    fd: impl Into<Option<File>>,
    auto_close: bool,
    emit_close: bool,
});

/// A file written through a queue ([`Fs::create_write_stream`]): a small
/// `Copy` key into its loop's table, as every eventide handle; its
/// methods take the loop, `stream.write(lp, data)`, as a net stream's do.
///
/// The key goes stale once the stream has finished: `end` done and,
/// with `auto_close`, its file closed; or destroyed and closed. Then
/// [`WriteStream::write`] drops the data and returns `false`,
/// [`WriteStream::end`] calls back with [`Error::Stale`],
/// [`WriteStream::is_destroyed`] answers `true` (a finished stream is
/// destroyed, as Node's `autoDestroy` makes it), the rest are no-ops.
/// Without `auto_close`, a finished stream stays (its `file()` too)
/// until [`WriteStream::destroy`]. A key of another loop is stale on
/// this one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WriteStream(Key);

/// A write stream's state, in its loop's table.
pub(crate) struct WriteState {
    file: Option<File>,
    opening: bool,
    queue: VecDeque<Vec<u8>>,
    queued: usize,
    high_water_mark: usize,
    auto_close: bool,
    emit_close: bool,
    writing: bool,
    /// The ring token of the write in flight (to cancel it).
    token: Option<Token>,
    need_drain: bool,
    pos: Option<u64>,
    error: Option<Error>,
    on_drain: Option<OnDrain>,
    on_finish: Option<OnEnd>,
    on_close: Option<OnClose>,
    on_error: Option<OnError>,
    ending: bool,
    finished: bool,
    destroyed: bool,
}

impl Fs<'_> {
    /// Opens `path` (or takes `options.fd`) for a stream of writes:
    /// [`WriteStream::write`] queues a chunk and says whether the caller
    /// may go on (`false` once `high_water_mark` bytes wait: wait for
    /// `on_drain`, Node's backpressure); chunks are written in order, one
    /// routed `write` at a time, short writes continued.
    /// [`WriteStream::end`] finishes: its callback runs when everything is
    /// written and the file closed (with `auto_close`), with the first
    /// error of opening, writing or closing (after an error, queued and
    /// later chunks are dropped). Then the close callback runs
    /// ([`WriteStream::on_close`], Node's `'close'`). An error before
    /// `end` destroys the stream at once, as Node's `autoDestroy` does,
    /// and goes to [`WriteStream::on_error`] (or, with no listener, ends
    /// the loop's `run()` with it: Node's uncaught `'error'`).
    pub fn create_write_stream(
        self,
        path: impl AsRef<Path>,
        options: WriteStreamOptions,
        on_drain: impl FnMut(&mut Loop, WriteStream) + 'static,
    ) -> WriteStream {
        let given = options.fd.is_some();
        let stream = WriteStream(self.lp.io.fs.insert_write(WriteState {
            file: options.fd,
            opening: !given,
            queue: VecDeque::new(),
            queued: 0,
            high_water_mark: options.high_water_mark.max(1),
            auto_close: options.auto_close,
            emit_close: options.emit_close,
            writing: false,
            token: None,
            need_drain: false,
            pos: options.start,
            error: None,
            on_drain: Some(Box::new(on_drain)),
            on_finish: None,
            on_close: None,
            on_error: None,
            ending: false,
            finished: false,
            destroyed: false,
        }));
        if given {
            return stream;
        }
        self.open(path, options.flags, options.mode, move |lp, opened| {
            let Some(s) = stream.state(lp) else {
                // Not expected (the stream waits for its open); never leak.
                if let Ok(file) = opened {
                    lp.fs().close(file, |_, _| {});
                }
                return;
            };
            s.opening = false;
            match opened {
                Ok(file) => s.file = Some(file),
                Err(error) if !s.destroyed => s.fail(error),
                Err(_) => {}
            }
            if s.destroyed {
                stream.close_destroyed(lp);
            } else {
                stream.pump(lp);
            }
        });
        stream
    }
}

impl WriteState {
    fn fail(&mut self, error: Error) {
        if self.error.is_none() {
            self.error = Some(error);
        }
        self.queue.clear();
        self.queued = 0;
    }
}

impl WriteStream {
    fn state(self, lp: &mut Loop) -> Option<&mut WriteState> {
        lp.io.fs.write(self.0)
    }

    fn peek(self, lp: &Loop) -> Option<&WriteState> {
        lp.io.fs.write_ref(self.0)
    }

    /// Queues `data`; `true` while fewer than the high-water mark bytes
    /// wait, `false` from there on: `on_drain` runs when the queue has
    /// emptied. Writing after [`WriteStream::end`], after an error, after
    /// [`WriteStream::destroy`] or once the stream is gone drops the data
    /// and returns `false`.
    pub fn write(self, lp: &mut Loop, data: Vec<u8>) -> bool {
        let Some(s) = self.state(lp) else {
            return false;
        };
        if s.ending || s.error.is_some() || s.destroyed {
            return false;
        }
        s.queued += data.len();
        if !data.is_empty() {
            s.queue.push_back(data);
        }
        let ok = s.queued < s.high_water_mark;
        if !ok {
            s.need_drain = true;
        }
        self.pump(lp);
        ok
    }

    /// Bytes queued and not yet written (Node's `writableLength`); 0 once
    /// the stream is gone.
    pub fn queued(self, lp: &Loop) -> usize {
        self.peek(lp).map_or(0, |s| s.queued)
    }

    /// The open file, once opened (Node's `stream.fd`); still there after
    /// the end when `auto_close` is off, for the caller to close.
    pub fn file(self, lp: &Loop) -> Option<File> {
        self.peek(lp).and_then(|s| s.file)
    }

    /// Whether [`WriteStream::destroy`] was called, or the stream has
    /// finished (its key is stale: see [`WriteStream`]).
    pub fn is_destroyed(self, lp: &Loop) -> bool {
        self.peek(lp).is_none_or(|s| s.destroyed)
    }

    /// Sets the close callback, Node's `'close'` event: it runs once, after
    /// `end` finished (and, with `auto_close`, the file was closed) or
    /// after [`WriteStream::destroy`], unless `emit_close` is off. Without
    /// `auto_close`, only a destroyed stream calls it. On a stream that is
    /// gone it is dropped, never run.
    pub fn on_close(self, lp: &mut Loop, callback: impl FnOnce(&mut Loop) + 'static) {
        if let Some(s) = self.state(lp) {
            s.on_close = Some(Box::new(callback));
        }
    }

    /// Sets the error callback, Node's `'error'` event, for an error of
    /// opening or writing that comes before [`WriteStream::end`]: the
    /// stream is then destroyed (as Node's `autoDestroy` does: queued
    /// chunks are dropped, the file is closed with `auto_close`), this
    /// callback runs with the error, then the close callback. A writer
    /// waiting for `on_drain` learns of the failure here (no drain comes
    /// after an error). The stream is gone then (its key stale): later
    /// writes return `false`, `end` answers [`Error::Stale`] (Node's
    /// `ERR_STREAM_DESTROYED`). With no error callback set, the error ends
    /// the loop's `run()` ([`Loop::fail`]), as an `'error'` nobody listens
    /// to ends a Node process: it is never lost. An error while `end` is
    /// pending goes to `end`'s callback instead.
    pub fn on_error(self, lp: &mut Loop, callback: impl FnOnce(&mut Loop, Error) + 'static) {
        if let Some(s) = self.state(lp) {
            s.on_error = Some(Box::new(callback));
        }
    }

    /// Writes what is queued, closes the file (with `auto_close`), then
    /// runs `on_finish` with the first error, if any (Node's `end()` and
    /// `'finish'`/`'error'`). Called twice, after `destroy` (Node's
    /// `ERR_STREAM_DESTROYED`) or once the stream is gone
    /// ([`Error::Stale`]), it calls back with the error, from the next
    /// pending phase.
    pub fn end(self, lp: &mut Loop, on_finish: impl FnOnce(&mut Loop, Result<()>) + 'static) {
        let error = match self.state(lp) {
            None => Error::Stale {
                what: "write stream",
            },
            Some(s) if s.destroyed => Error::StreamDestroyed { method: "end" },
            Some(s) if s.ending => Error::Stale {
                what: "write stream (end called twice)",
            },
            Some(s) => {
                s.ending = true;
                s.on_finish = Some(Box::new(on_finish));
                return self.pump(lp);
            }
        };
        lp.defer(move |lp| on_finish(lp, Err(error)));
    }

    /// Ends the stream now (Node's `destroy()`): queued chunks are
    /// dropped; a write in flight is cancelled (on io_uring) and waited
    /// for; then the file is closed (with `auto_close`) and the close
    /// callback runs. A pending [`WriteStream::end`] callback gets an
    /// error (Node's `ERR_STREAM_DESTROYED`). On a stream that finished
    /// without `auto_close` it only lets the stream go (the file stays the
    /// caller's) and runs the close callback. A no-op on a stream that is
    /// gone or destroyed.
    pub fn destroy(self, lp: &mut Loop) {
        let Some(s) = self.state(lp) else {
            return;
        };
        if s.destroyed {
            return;
        }
        s.destroyed = true;
        if s.finished {
            // Only a finished stream without `auto_close` is still here.
            let on_close = s.on_close.take().filter(|_| s.emit_close);
            lp.io.fs.remove_write(self.0);
            return close_then(lp, None, on_close);
        }
        s.queue.clear();
        s.queued = 0;
        s.on_drain = None;
        let (writing, opening, token) = (s.writing, s.opening, s.token.take());
        if let Some(on_finish) = s.on_finish.take() {
            let error = Error::StreamDestroyed { method: "end" };
            lp.defer(move |lp| on_finish(lp, Err(error)));
        }
        if writing {
            if let Some(token) = token {
                lp.reactor.cancel(token);
            }
        } else if !opening {
            self.close_destroyed(lp);
        }
    }

    /// Writes the next chunk, or finishes.
    fn pump(self, lp: &mut Loop) {
        let Some(s) = self.state(lp) else {
            return;
        };
        if s.writing || s.opening || s.finished || s.destroyed {
            return;
        }
        if s.error.is_some() && !s.ending {
            return self.errored(lp);
        }
        let Some(file) = s.file else {
            // Opening failed: nothing is written; `end` finishes.
            if s.ending {
                self.finish(lp);
            }
            return;
        };
        let Some(chunk) = s.queue.pop_front() else {
            if s.ending {
                self.finish(lp);
            }
            return;
        };
        s.writing = true;
        let pos = s.pos;
        let token = lp
            .fs()
            .transfer(true, file, chunk, pos, move |lp, wrote, chunk| {
                self.on_written(lp, wrote, chunk);
            });
        if let Some(s) = self.state(lp) {
            s.token = token;
        }
    }

    fn on_written(self, lp: &mut Loop, wrote: Result<usize>, mut chunk: Vec<u8>) {
        let Some(s) = self.state(lp) else {
            return;
        };
        s.writing = false;
        s.token = None;
        if s.destroyed {
            return self.close_destroyed(lp);
        }
        match wrote {
            Ok(0) if !chunk.is_empty() => {
                let zero = std::io::ErrorKind::WriteZero.into();
                s.fail(Error::fs("write", None, None, zero));
            }
            Ok(n) => {
                s.queued -= n.min(chunk.len());
                s.pos = s.pos.map(|p| p + n as u64);
                if n < chunk.len() {
                    chunk.drain(..n);
                    s.queue.push_front(chunk);
                }
            }
            Err(error) => s.fail(error),
        }
        let drain = s.queue.is_empty() && s.need_drain && s.error.is_none();
        if drain {
            s.need_drain = false;
        }
        let drain = drain.then(|| s.on_drain.take()).flatten();
        let mut panicked = None;
        if let Some(mut on_drain) = drain {
            // User code: a panic leaves the stream whole (callback kept,
            // queue written on) before it goes on.
            let call = panic::catch_unwind(AssertUnwindSafe(|| on_drain(lp, self)));
            panicked = call.err();
            if let Some(s) = self.state(lp)
                && s.on_drain.is_none()
                && !s.destroyed
                && !s.finished
            {
                s.on_drain = Some(on_drain);
            }
        }
        self.pump(lp);
        if let Some(payload) = panicked {
            panic::resume_unwind(payload);
        }
    }

    fn finish(self, lp: &mut Loop) {
        let Some(s) = self.state(lp) else {
            return;
        };
        s.finished = true;
        s.on_drain = None;
        let result = s.error.take().map_or(Ok(()), Err);
        let on_finish = s.on_finish.take();
        // Without auto_close the stream stays, with its file (see
        // `file()`), until `destroy`.
        let (file, on_close) = if s.auto_close {
            let on_close = s.on_close.take().filter(|_| s.emit_close);
            let file = s.file.take();
            lp.io.fs.remove_write(self.0);
            (file, on_close)
        } else {
            (None, None)
        };
        let done = move |lp: &mut Loop, result: Result<()>| {
            let on_finish = on_finish.map(|f| move |lp: &mut Loop| f(lp, result));
            end_then_close(lp, on_finish, on_close);
        };
        match file {
            Some(file) => lp.fs().close(file, move |lp, closed| {
                done(lp, result.and(closed));
            }),
            // Maybe inside `end` itself: never call back from within it.
            None => lp.defer(move |lp| done(lp, result)),
        }
    }

    /// The first error, with no `end` pending (Node's `autoDestroy`): the
    /// stream goes, its file is closed (with `auto_close`), then the error
    /// callback runs (or the loop fails with the error), then the close
    /// callback. Nothing is in flight.
    fn errored(self, lp: &mut Loop) {
        let Some(s) = self.state(lp) else {
            return;
        };
        let Some(error) = s.error.take() else {
            return;
        };
        s.destroyed = true;
        s.finished = true;
        s.on_drain = None;
        let on_error = s.on_error.take();
        let on_close = s.on_close.take().filter(|_| s.emit_close);
        let file = if s.auto_close { s.file.take() } else { None };
        lp.io.fs.remove_write(self.0);
        let report = move |lp: &mut Loop| match on_error {
            Some(on_error) => on_error(lp, error),
            None => lp.fail(error),
        };
        match file {
            Some(file) => lp.fs().close(file, move |lp, _| {
                end_then_close(lp, Some(report), on_close);
            }),
            None => lp.defer(move |lp| end_then_close(lp, Some(report), on_close)),
        }
    }

    /// After `destroy`, once nothing is in flight: close (with
    /// `auto_close`), then the close callback.
    fn close_destroyed(self, lp: &mut Loop) {
        let Some(s) = self.state(lp) else {
            return;
        };
        s.finished = true;
        // Without auto_close the file is the caller's: left open.
        let file = if s.auto_close { s.file.take() } else { None };
        let on_close = s.on_close.take().filter(|_| s.emit_close);
        lp.io.fs.remove_write(self.0);
        close_then(lp, file, on_close);
    }
}

/// Runs a stream's end (or finish) callback, then its close callback.
/// If the first panics, the close callback is deferred to the next
/// pending phase (it still runs once, and no user code runs while the
/// panic unwinds), then the panic goes on.
fn end_then_close(
    lp: &mut Loop,
    on_end: Option<impl FnOnce(&mut Loop)>,
    on_close: Option<OnClose>,
) {
    if let Some(on_end) = on_end
        && let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| on_end(lp)))
    {
        if let Some(on_close) = on_close {
            lp.defer(on_close);
        }
        panic::resume_unwind(payload);
    }
    if let Some(on_close) = on_close {
        on_close(lp);
    }
}

/// A destroyed stream's last steps: close its file (if it still owns it),
/// then run its close callback (if any), never from inside the caller.
fn close_then(lp: &mut Loop, file: Option<File>, on_close: Option<OnClose>) {
    match (file, on_close) {
        (Some(file), Some(on_close)) => lp.fs().close(file, move |lp, _| on_close(lp)),
        (Some(file), None) => lp.fs().close(file, |_, _| {}),
        // Maybe inside `destroy` itself: never call back from within it.
        (None, Some(on_close)) => lp.defer(on_close),
        (None, None) => {}
    }
}
