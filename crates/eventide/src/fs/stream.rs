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

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::rc::Rc;

use eventide_reactor::Token;

use super::Fs;
use super::ops::fail_soon;
use super::types::{File, Flags};
use crate::event_loop::Loop;
use crate::{Error, Result};

type OnData = Box<dyn FnMut(&mut Loop, &ReadStream, &[u8])>;
type OnEnd = Box<dyn FnOnce(&mut Loop, Result<()>)>;
type OnDrain = Box<dyn FnMut(&mut Loop, &WriteStream)>;
type OnClose = Box<dyn FnOnce(&mut Loop)>;

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

impl ReadStreamOptions {
    /// Sets [`ReadStreamOptions::high_water_mark`].
    pub fn high_water_mark(mut self, high_water_mark: usize) -> ReadStreamOptions {
        self.high_water_mark = high_water_mark;
        self
    }

    /// Sets [`ReadStreamOptions::start`] (a number or `None`).
    pub fn start(mut self, start: impl Into<Option<u64>>) -> ReadStreamOptions {
        self.start = start.into();
        self
    }

    /// Sets [`ReadStreamOptions::end`] (a number or `None`).
    pub fn end(mut self, end: impl Into<Option<u64>>) -> ReadStreamOptions {
        self.end = end.into();
        self
    }

    /// Sets [`ReadStreamOptions::flags`].
    pub fn flags(mut self, flags: Flags) -> ReadStreamOptions {
        self.flags = flags;
        self
    }

    /// Sets [`ReadStreamOptions::mode`].
    pub fn mode(mut self, mode: u32) -> ReadStreamOptions {
        self.mode = mode;
        self
    }

    /// Sets [`ReadStreamOptions::fd`] (a file or `None`).
    pub fn fd(mut self, fd: impl Into<Option<File>>) -> ReadStreamOptions {
        self.fd = fd.into();
        self
    }

    /// Sets [`ReadStreamOptions::auto_close`].
    pub fn auto_close(mut self, auto_close: bool) -> ReadStreamOptions {
        self.auto_close = auto_close;
        self
    }

    /// Sets [`ReadStreamOptions::emit_close`].
    pub fn emit_close(mut self, emit_close: bool) -> ReadStreamOptions {
        self.emit_close = emit_close;
        self
    }
}

/// A file read chunk by chunk ([`Fs::create_read_stream`]). Cheap to
/// clone; every clone is the same stream.
#[derive(Clone)]
pub struct ReadStream(Rc<RefCell<ReadState>>);

struct ReadState {
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

impl fmt::Debug for ReadStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.borrow();
        f.debug_struct("ReadStream")
            .field("pos", &s.pos)
            .field("paused", &s.paused)
            .field("ended", &s.ended)
            .field("destroyed", &s.destroyed)
            .finish_non_exhaustive()
    }
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
        on_data: impl FnMut(&mut Loop, &ReadStream, &[u8]) + 'static,
        on_end: impl FnOnce(&mut Loop, Result<()>) + 'static,
    ) -> ReadStream {
        let bad_range = match (options.start, options.end) {
            (Some(start), Some(end)) if start > end => Some(start),
            _ => None,
        };
        let left = options
            .end
            .map(|end| (end + 1).saturating_sub(options.start.unwrap_or(0)));
        let stream = ReadStream(Rc::new(RefCell::new(ReadState {
            file: None,
            opening: options.fd.is_none() && bad_range.is_none(),
            pos: options.start,
            left,
            high_water_mark: options.high_water_mark.max(1),
            auto_close: options.auto_close,
            emit_close: options.emit_close,
            paused: false,
            reading: false,
            token: None,
            ended: false,
            destroyed: false,
            buf: Vec::new(),
            on_data: Some(Box::new(on_data)),
            on_end: Some(Box::new(on_end)),
            on_close: None,
        })));
        if let Some(start) = bad_range {
            let error = Error::OutOfRange {
                name: "start",
                range: format!("<= \"end\" (here: {})", options.end.unwrap_or(0)),
                received: start.to_string(),
            };
            let s = stream.clone();
            stream.0.borrow_mut().ended = true;
            let on_end = stream.0.borrow_mut().on_end.take();
            if let Some(on_end) = on_end {
                fail_soon(self.lp, error, move |lp, result| {
                    drop(s);
                    on_end(lp, result);
                });
            }
            return stream;
        }
        if let Some(file) = options.fd {
            stream.0.borrow_mut().file = Some(file);
            let s = stream.clone();
            // Never call back inside the call that made the stream.
            self.lp.defer(move |lp| s.pump(lp));
            return stream;
        }
        let s = stream.clone();
        self.open(path, options.flags, options.mode, move |lp, opened| {
            let destroyed = {
                let mut st = s.0.borrow_mut();
                st.opening = false;
                st.destroyed
            };
            match opened {
                Ok(file) => {
                    s.0.borrow_mut().file = Some(file);
                    if destroyed {
                        s.close_destroyed(lp);
                    } else {
                        s.pump(lp);
                    }
                }
                Err(_) if destroyed => s.close_destroyed(lp),
                Err(error) => s.finish(lp, Err(error)),
            }
        });
        stream
    }
}

impl ReadStream {
    /// Stops the chunks: none is delivered after this until
    /// [`ReadStream::resume`] (the read in flight, if any, is kept).
    pub fn pause(&self) {
        self.0.borrow_mut().paused = true;
    }

    /// Starts the chunks again (Node's `resume()`).
    pub fn resume(&self, lp: &mut Loop) {
        self.0.borrow_mut().paused = false;
        self.pump(lp);
    }

    /// Whether the stream is paused.
    pub fn is_paused(&self) -> bool {
        self.0.borrow().paused
    }

    /// The open file, once opened (Node's `stream.fd`); still there after
    /// the end when `auto_close` is off, for the caller to close.
    pub fn file(&self) -> Option<File> {
        self.0.borrow().file
    }

    /// Whether [`ReadStream::destroy`] was called.
    pub fn is_destroyed(&self) -> bool {
        self.0.borrow().destroyed
    }

    /// Sets the close callback, Node's `'close'` event: it runs once,
    /// after the stream ended (and, with `auto_close`, its file was
    /// closed) or was destroyed, unless `emit_close` is off. Without
    /// `auto_close`, only a destroyed stream calls it.
    pub fn on_close(&self, callback: impl FnOnce(&mut Loop) + 'static) {
        self.0.borrow_mut().on_close = Some(Box::new(callback));
    }

    /// Ends the stream now (Node's `destroy()`): no more chunks and no
    /// `on_end`; a read in flight is cancelled (on io_uring) and waited
    /// for, then the file is closed (with `auto_close`) and the close
    /// callback runs. Harmless on an ended or destroyed stream.
    pub fn destroy(&self, lp: &mut Loop) {
        let (reading, opening, token) = {
            let mut s = self.0.borrow_mut();
            if s.ended || s.destroyed {
                return;
            }
            s.destroyed = true;
            s.on_data = None;
            s.on_end = None;
            (s.reading, s.opening, s.token.take())
        };
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
    fn pump(&self, lp: &mut Loop) {
        let mut s = self.0.borrow_mut();
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
            drop(s);
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
        drop(s);
        let stream = self.clone();
        let token = lp
            .fs()
            .transfer(false, file, buf, pos, move |lp, read, buf| {
                stream.on_read(lp, read, buf, want);
            });
        self.0.borrow_mut().token = token;
    }

    fn on_read(&self, lp: &mut Loop, read: Result<usize>, buf: Vec<u8>, want: usize) {
        let destroyed = {
            let mut s = self.0.borrow_mut();
            s.reading = false;
            s.token = None;
            s.destroyed
        };
        if destroyed {
            // The buffer is back: the kernel is done with it.
            self.0.borrow_mut().buf = buf;
            return self.close_destroyed(lp);
        }
        let n = match read {
            Ok(0) => return self.finish(lp, Ok(())),
            Ok(n) => n,
            Err(error) => return self.finish(lp, Err(error)),
        };
        debug_assert!(n <= want && buf.len() == n, "a read stays within `want`");
        let on_data = {
            let mut s = self.0.borrow_mut();
            s.pos = s.pos.map(|p| p + n as u64);
            s.left = s.left.map(|l| l - n as u64);
            s.on_data.take()
        };
        let mut panicked = None;
        if let Some(mut on_data) = on_data {
            // User code: if it panics, the stream is put back together
            // (callback, buffer, next read) before the panic goes on, so
            // the stream reads on whether a panic handler catches it or
            // it unwinds out of `run` (and `run` is called again).
            let call = panic::catch_unwind(AssertUnwindSafe(|| on_data(lp, self, &buf)));
            panicked = call.err();
            let mut s = self.0.borrow_mut();
            if !s.destroyed && !s.ended {
                s.on_data = Some(on_data);
            }
        }
        self.0.borrow_mut().buf = buf;
        self.pump(lp);
        if let Some(payload) = panicked {
            panic::resume_unwind(payload);
        }
    }

    /// Ends the stream once: closes the file (with `auto_close`), then
    /// `on_end`, then the close callback.
    fn finish(&self, lp: &mut Loop, result: Result<()>) {
        let (file, on_end, on_close) = {
            let mut s = self.0.borrow_mut();
            if s.ended || s.destroyed {
                return;
            }
            s.ended = true;
            s.on_data = None;
            // Without auto_close the file stays (see `file()`): dropping
            // the last clone here would close it.
            let file = if s.auto_close { s.file.take() } else { None };
            let on_close = s.on_close.take().filter(|_| s.emit_close && s.auto_close);
            (file, s.on_end.take(), on_close)
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
    fn close_destroyed(&self, lp: &mut Loop) {
        let (file, on_close) = {
            let mut s = self.0.borrow_mut();
            if s.ended {
                return;
            }
            s.ended = true;
            // Without auto_close the file stays (see `file()`): dropping
            // the last clone here would close it.
            let file = if s.auto_close { s.file.take() } else { None };
            (file, s.on_close.take().filter(|_| s.emit_close))
        };
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

impl WriteStreamOptions {
    /// Sets [`WriteStreamOptions::flags`].
    pub fn flags(mut self, flags: Flags) -> WriteStreamOptions {
        self.flags = flags;
        self
    }

    /// Sets [`WriteStreamOptions::mode`].
    pub fn mode(mut self, mode: u32) -> WriteStreamOptions {
        self.mode = mode;
        self
    }

    /// Sets [`WriteStreamOptions::high_water_mark`].
    pub fn high_water_mark(mut self, high_water_mark: usize) -> WriteStreamOptions {
        self.high_water_mark = high_water_mark;
        self
    }

    /// Sets [`WriteStreamOptions::start`] (a number or `None`).
    pub fn start(mut self, start: impl Into<Option<u64>>) -> WriteStreamOptions {
        self.start = start.into();
        self
    }

    /// Sets [`WriteStreamOptions::fd`] (a file or `None`).
    pub fn fd(mut self, fd: impl Into<Option<File>>) -> WriteStreamOptions {
        self.fd = fd.into();
        self
    }

    /// Sets [`WriteStreamOptions::auto_close`].
    pub fn auto_close(mut self, auto_close: bool) -> WriteStreamOptions {
        self.auto_close = auto_close;
        self
    }

    /// Sets [`WriteStreamOptions::emit_close`].
    pub fn emit_close(mut self, emit_close: bool) -> WriteStreamOptions {
        self.emit_close = emit_close;
        self
    }
}

/// A file written through a queue ([`Fs::create_write_stream`]). Cheap to
/// clone; every clone is the same stream.
#[derive(Clone)]
pub struct WriteStream(Rc<RefCell<WriteState>>);

struct WriteState {
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
    ending: bool,
    finished: bool,
    destroyed: bool,
}

impl fmt::Debug for WriteStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.borrow();
        f.debug_struct("WriteStream")
            .field("queued", &s.queued)
            .field("writing", &s.writing)
            .field("ending", &s.ending)
            .field("destroyed", &s.destroyed)
            .finish_non_exhaustive()
    }
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
    /// ([`WriteStream::on_close`], Node's `'close'`).
    pub fn create_write_stream(
        self,
        path: impl AsRef<Path>,
        options: WriteStreamOptions,
        on_drain: impl FnMut(&mut Loop, &WriteStream) + 'static,
    ) -> WriteStream {
        let given = options.fd.is_some();
        let stream = WriteStream(Rc::new(RefCell::new(WriteState {
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
            ending: false,
            finished: false,
            destroyed: false,
        })));
        if given {
            return stream;
        }
        let s = stream.clone();
        self.open(path, options.flags, options.mode, move |lp, opened| {
            let destroyed = {
                let mut st = s.0.borrow_mut();
                st.opening = false;
                match opened {
                    Ok(file) => st.file = Some(file),
                    Err(error) if !st.destroyed => st.fail(error),
                    Err(_) => {}
                }
                st.destroyed
            };
            if destroyed {
                s.close_destroyed(lp);
            } else {
                s.pump(lp);
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
    /// Queues `data`; `true` while fewer than the high-water mark bytes
    /// wait, `false` from there on: `on_drain` runs when the queue has
    /// emptied. Writing after [`WriteStream::end`], after an error or
    /// after [`WriteStream::destroy`] drops the data and returns `false`.
    pub fn write(&self, lp: &mut Loop, data: Vec<u8>) -> bool {
        let ok = {
            let mut s = self.0.borrow_mut();
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
            ok
        };
        self.pump(lp);
        ok
    }

    /// Bytes queued and not yet written (Node's `writableLength`).
    pub fn queued(&self) -> usize {
        self.0.borrow().queued
    }

    /// The open file, once opened (Node's `stream.fd`); still there after
    /// the end when `auto_close` is off, for the caller to close.
    pub fn file(&self) -> Option<File> {
        self.0.borrow().file
    }

    /// Whether [`WriteStream::destroy`] was called.
    pub fn is_destroyed(&self) -> bool {
        self.0.borrow().destroyed
    }

    /// Sets the close callback, Node's `'close'` event: it runs once, after
    /// `end` finished (and, with `auto_close`, the file was closed) or
    /// after [`WriteStream::destroy`], unless `emit_close` is off. Without
    /// `auto_close`, only a destroyed stream calls it.
    pub fn on_close(&self, callback: impl FnOnce(&mut Loop) + 'static) {
        self.0.borrow_mut().on_close = Some(Box::new(callback));
    }

    /// Writes what is queued, closes the file (with `auto_close`), then
    /// runs `on_finish` with the first error, if any (Node's `end()` and
    /// `'finish'`/`'error'`).
    pub fn end(&self, lp: &mut Loop, on_finish: impl FnOnce(&mut Loop, Result<()>) + 'static) {
        {
            let mut s = self.0.borrow_mut();
            if s.ending || s.destroyed {
                let error = if s.destroyed {
                    Error::StreamDestroyed { method: "end" }
                } else {
                    Error::Stale {
                        what: "write stream (end called twice)",
                    }
                };
                drop(s);
                return lp.defer(move |lp| on_finish(lp, Err(error)));
            }
            s.ending = true;
            s.on_finish = Some(Box::new(on_finish));
        }
        self.pump(lp);
    }

    /// Ends the stream now (Node's `destroy()`): queued chunks are
    /// dropped; a write in flight is cancelled (on io_uring) and waited
    /// for; then the file is closed (with `auto_close`) and the close
    /// callback runs. A pending [`WriteStream::end`] callback gets an
    /// error (Node's `ERR_STREAM_DESTROYED`). Harmless once finished.
    pub fn destroy(&self, lp: &mut Loop) {
        let (writing, opening, token, on_finish) = {
            let mut s = self.0.borrow_mut();
            if s.finished || s.destroyed {
                return;
            }
            s.destroyed = true;
            s.queue.clear();
            s.queued = 0;
            s.on_drain = None;
            (s.writing, s.opening, s.token.take(), s.on_finish.take())
        };
        if let Some(on_finish) = on_finish {
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
    fn pump(&self, lp: &mut Loop) {
        let mut s = self.0.borrow_mut();
        if s.writing || s.opening || s.finished || s.destroyed {
            return;
        }
        let Some(chunk) = s.queue.pop_front() else {
            if s.ending {
                drop(s);
                self.finish(lp);
            }
            return;
        };
        let Some(file) = s.file else {
            return;
        };
        s.writing = true;
        let pos = s.pos;
        drop(s);
        let stream = self.clone();
        let token = lp
            .fs()
            .transfer(true, file, chunk, pos, move |lp, wrote, chunk| {
                stream.on_written(lp, wrote, chunk);
            });
        self.0.borrow_mut().token = token;
    }

    fn on_written(&self, lp: &mut Loop, wrote: Result<usize>, mut chunk: Vec<u8>) {
        let drain = {
            let mut s = self.0.borrow_mut();
            s.writing = false;
            s.token = None;
            if s.destroyed {
                drop(s);
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
            drain.then(|| s.on_drain.take()).flatten()
        };
        let mut panicked = None;
        if let Some(mut on_drain) = drain {
            // User code: a panic leaves the stream whole (callback kept,
            // queue written on) before it goes on.
            let call = panic::catch_unwind(AssertUnwindSafe(|| on_drain(lp, self)));
            panicked = call.err();
            let mut s = self.0.borrow_mut();
            if s.on_drain.is_none() && !s.destroyed {
                s.on_drain = Some(on_drain);
            }
        }
        self.pump(lp);
        if let Some(payload) = panicked {
            panic::resume_unwind(payload);
        }
    }

    fn finish(&self, lp: &mut Loop) {
        let (file, error, on_finish, on_close) = {
            let mut s = self.0.borrow_mut();
            s.finished = true;
            s.on_drain = None;
            // Without auto_close the file stays (see `file()`): dropping
            // the last clone here would close it.
            let file = if s.auto_close { s.file.take() } else { None };
            let on_close = s.on_close.take().filter(|_| s.emit_close && s.auto_close);
            (file, s.error.take(), s.on_finish.take(), on_close)
        };
        let result = error.map_or(Ok(()), Err);
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

    /// After `destroy`, once nothing is in flight: close (with
    /// `auto_close`), then the close callback.
    fn close_destroyed(&self, lp: &mut Loop) {
        let (file, on_close) = {
            let mut s = self.0.borrow_mut();
            if s.finished {
                return;
            }
            s.finished = true;
            // Without auto_close the file stays (see `file()`): dropping
            // the last clone here would close it.
            let file = if s.auto_close { s.file.take() } else { None };
            (file, s.on_close.take().filter(|_| s.emit_close))
        };
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
