//! Chunked streams over files, Node's `fs.createReadStream` and
//! `fs.createWriteStream` reduced to their core: chunks with pause and
//! resume and an end callback; a write queue with a high-water mark and
//! a drain callback (backpressure). Each chunk is one routed `read` or
//! `write`.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::path::Path;
use std::rc::Rc;

use super::Fs;
use super::types::{File, Flags};
use crate::event_loop::Loop;
use crate::{Error, Result};

type OnData = Box<dyn FnMut(&mut Loop, &ReadStream, &[u8])>;
type OnEnd = Box<dyn FnOnce(&mut Loop, Result<()>)>;
type OnDrain = Box<dyn FnMut(&mut Loop, &WriteStream)>;

/// Options of [`Fs::create_read_stream`] (Node's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadStreamOptions {
    /// Bytes per chunk at most (Node's default for files: 64 KiB).
    pub high_water_mark: usize,
    /// The offset of the first byte read.
    pub start: u64,
    /// The offset of the last byte read, inclusive (Node's `end`); `None`
    /// reads to the end of the file.
    pub end: Option<u64>,
}

impl Default for ReadStreamOptions {
    fn default() -> ReadStreamOptions {
        ReadStreamOptions {
            high_water_mark: 64 * 1024,
            start: 0,
            end: None,
        }
    }
}

/// A file read chunk by chunk ([`Fs::create_read_stream`]). Cheap to
/// clone; every clone is the same stream.
#[derive(Clone)]
pub struct ReadStream(Rc<RefCell<ReadState>>);

struct ReadState {
    file: Option<File>,
    pos: u64,
    /// One past the last offset to read, if bounded.
    stop: Option<u64>,
    high_water_mark: usize,
    paused: bool,
    reading: bool,
    ended: bool,
    buf: Vec<u8>,
    on_data: Option<OnData>,
    on_end: Option<OnEnd>,
}

impl fmt::Debug for ReadStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.borrow();
        f.debug_struct("ReadStream")
            .field("pos", &s.pos)
            .field("paused", &s.paused)
            .field("ended", &s.ended)
            .finish_non_exhaustive()
    }
}

impl Fs<'_> {
    /// Opens `path` and reads it in chunks of up to `high_water_mark`
    /// bytes, from `start` to `end`: `on_data` runs with each chunk (the
    /// slice is only valid during the call: one buffer is reused), then
    /// `on_end` once, with `Ok(())` after the last chunk and the file
    /// closed, or with the first error (opening, reading or closing).
    /// [`ReadStream::pause`] stops the flow after the read in flight;
    /// [`ReadStream::resume`] starts it again.
    pub fn create_read_stream(
        self,
        path: impl AsRef<Path>,
        options: ReadStreamOptions,
        on_data: impl FnMut(&mut Loop, &ReadStream, &[u8]) + 'static,
        on_end: impl FnOnce(&mut Loop, Result<()>) + 'static,
    ) -> ReadStream {
        let stream = ReadStream(Rc::new(RefCell::new(ReadState {
            file: None,
            pos: options.start,
            stop: options.end.map(|end| end.saturating_add(1)),
            high_water_mark: options.high_water_mark.max(1),
            paused: false,
            reading: true,
            ended: false,
            buf: Vec::new(),
            on_data: Some(Box::new(on_data)),
            on_end: Some(Box::new(on_end)),
        })));
        let s = stream.clone();
        self.open(path, Flags::new().read(true), 0, move |lp, opened| {
            s.0.borrow_mut().reading = false;
            match opened {
                Ok(file) => {
                    s.0.borrow_mut().file = Some(file);
                    s.pump(lp);
                }
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

    /// Issues the next read, unless paused, reading, ended or not open yet.
    fn pump(&self, lp: &mut Loop) {
        let mut s = self.0.borrow_mut();
        if s.paused || s.reading || s.ended {
            return;
        }
        let Some(file) = s.file.clone() else {
            return;
        };
        let want = match s.stop {
            Some(stop) => stop.saturating_sub(s.pos).min(s.high_water_mark as u64) as usize,
            None => s.high_water_mark,
        };
        if want == 0 {
            drop(s);
            return self.finish(lp, Ok(()));
        }
        s.reading = true;
        let mut buf = std::mem::take(&mut s.buf);
        buf.clear();
        buf.reserve_exact(want);
        let pos = s.pos;
        drop(s);
        let stream = self.clone();
        lp.fs().read(&file, buf, Some(pos), move |lp, read, buf| {
            stream.on_read(lp, read, buf, want);
        });
    }

    fn on_read(&self, lp: &mut Loop, read: Result<usize>, mut buf: Vec<u8>, want: usize) {
        self.0.borrow_mut().reading = false;
        let n = match read {
            Ok(0) => return self.finish(lp, Ok(())),
            Ok(n) => n.min(want),
            Err(error) => return self.finish(lp, Err(error)),
        };
        buf.truncate(n);
        let on_data = {
            let mut s = self.0.borrow_mut();
            s.pos += n as u64;
            s.on_data.take()
        };
        if let Some(mut on_data) = on_data {
            on_data(lp, self, &buf);
            let mut s = self.0.borrow_mut();
            s.on_data = Some(on_data);
        }
        self.0.borrow_mut().buf = buf;
        self.pump(lp);
    }

    /// Ends the stream once: closes the file (if open), then `on_end`.
    fn finish(&self, lp: &mut Loop, result: Result<()>) {
        let (file, on_end) = {
            let mut s = self.0.borrow_mut();
            if s.ended {
                return;
            }
            s.ended = true;
            s.on_data = None;
            (s.file.take(), s.on_end.take())
        };
        let Some(on_end) = on_end else { return };
        match file {
            Some(file) => lp.fs().close(file, move |lp, closed| {
                on_end(lp, result.and(closed));
            }),
            None => on_end(lp, result),
        }
    }
}

/// Options of [`Fs::create_write_stream`] (Node's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
}

impl Default for WriteStreamOptions {
    fn default() -> WriteStreamOptions {
        WriteStreamOptions {
            flags: Flags::new().write(true).create(true).truncate(true),
            mode: 0o666,
            high_water_mark: 16 * 1024,
            start: None,
        }
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
    writing: bool,
    need_drain: bool,
    pos: Option<u64>,
    error: Option<Error>,
    on_drain: Option<OnDrain>,
    on_finish: Option<OnEnd>,
    ending: bool,
    finished: bool,
}

impl fmt::Debug for WriteStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.borrow();
        f.debug_struct("WriteStream")
            .field("queued", &s.queued)
            .field("writing", &s.writing)
            .field("ending", &s.ending)
            .finish_non_exhaustive()
    }
}

impl Fs<'_> {
    /// Opens `path` for a stream of writes: [`WriteStream::write`] queues
    /// a chunk and says whether the caller may go on (`false` once
    /// `high_water_mark` bytes wait: wait for `on_drain`, Node's
    /// backpressure); chunks are written in order, one routed `write` at a
    /// time, short writes continued. [`WriteStream::end`] finishes: its
    /// callback runs when everything is written and the file closed, with
    /// the first error of opening, writing or closing (after an error,
    /// queued and later chunks are dropped).
    pub fn create_write_stream(
        self,
        path: impl AsRef<Path>,
        options: WriteStreamOptions,
        on_drain: impl FnMut(&mut Loop, &WriteStream) + 'static,
    ) -> WriteStream {
        let stream = WriteStream(Rc::new(RefCell::new(WriteState {
            file: None,
            opening: true,
            queue: VecDeque::new(),
            queued: 0,
            high_water_mark: options.high_water_mark.max(1),
            writing: false,
            need_drain: false,
            pos: options.start,
            error: None,
            on_drain: Some(Box::new(on_drain)),
            on_finish: None,
            ending: false,
            finished: false,
        })));
        let s = stream.clone();
        self.open(path, options.flags, options.mode, move |lp, opened| {
            {
                let mut st = s.0.borrow_mut();
                st.opening = false;
                match opened {
                    Ok(file) => st.file = Some(file),
                    Err(error) => st.fail(error),
                }
            }
            s.pump(lp);
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
    /// emptied. Writing after [`WriteStream::end`] or after an error drops
    /// the data and returns `false`.
    pub fn write(&self, lp: &mut Loop, data: Vec<u8>) -> bool {
        let ok = {
            let mut s = self.0.borrow_mut();
            if s.ending || s.error.is_some() {
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

    /// Writes what is queued, closes the file, then runs `on_finish` with
    /// the first error, if any (Node's `end()` and `'finish'`/`'error'`).
    pub fn end(&self, lp: &mut Loop, on_finish: impl FnOnce(&mut Loop, Result<()>) + 'static) {
        {
            let mut s = self.0.borrow_mut();
            if s.ending {
                drop(s);
                let error = Error::Stale {
                    what: "write stream (end called twice)",
                };
                return lp.defer(move |lp| on_finish(lp, Err(error)));
            }
            s.ending = true;
            s.on_finish = Some(Box::new(on_finish));
        }
        self.pump(lp);
    }

    /// Writes the next chunk, or finishes.
    fn pump(&self, lp: &mut Loop) {
        let mut s = self.0.borrow_mut();
        if s.writing || s.opening || s.finished {
            return;
        }
        let Some(chunk) = s.queue.pop_front() else {
            if s.ending {
                drop(s);
                self.finish(lp);
            }
            return;
        };
        let Some(file) = s.file.clone() else {
            return;
        };
        s.writing = true;
        let pos = s.pos;
        drop(s);
        let stream = self.clone();
        lp.fs().write(&file, chunk, pos, move |lp, wrote, chunk| {
            stream.on_written(lp, wrote, chunk);
        });
    }

    fn on_written(&self, lp: &mut Loop, wrote: Result<usize>, mut chunk: Vec<u8>) {
        let drain = {
            let mut s = self.0.borrow_mut();
            s.writing = false;
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
        if let Some(mut on_drain) = drain {
            on_drain(lp, self);
            let mut s = self.0.borrow_mut();
            if s.on_drain.is_none() {
                s.on_drain = Some(on_drain);
            }
        }
        self.pump(lp);
    }

    fn finish(&self, lp: &mut Loop) {
        let (file, error, on_finish) = {
            let mut s = self.0.borrow_mut();
            s.finished = true;
            s.on_drain = None;
            (s.file.take(), s.error.take(), s.on_finish.take())
        };
        let Some(on_finish) = on_finish else { return };
        let result = error.map_or(Ok(()), Err);
        match file {
            Some(file) => lp.fs().close(file, move |lp, closed| {
                on_finish(lp, result.and(closed));
            }),
            // Maybe inside `end` itself: never call back from within it.
            None => lp.defer(move |lp| on_finish(lp, result)),
        }
    }
}
