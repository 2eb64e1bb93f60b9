//! Whole-file conveniences: `read_file`, `write_file`, `append_file`, as
//! chains of the single operations (each step routed on its own).

use std::path::Path;

use super::Fs;
use super::ops::{c_path, fail_soon};
use super::route::{Done, Out, Req, dispatch};
use super::types::{File, Flags};
use crate::event_loop::Loop;
use crate::{Error, Result};

/// How much `read_file` asks for at a time when the size is not known
/// (always, at first: it does not fstat), as Node's
/// `kReadFileUnknownBufferLength`.
const UNKNOWN_SIZE_CHUNK: usize = 64 * 1024;

/// The buffer of `read_file`'s first chunk (small files, the common case,
/// fit whole; a larger one goes on in chunks of [`UNKNOWN_SIZE_CHUNK`]).
const FIRST_CHUNK: usize = 16 * 1024;

/// `read_file` hands back a buffer with at most this much unused capacity
/// (it shrinks the first chunk's buffer to the file, in place).
const SHRINK_SLACK: usize = 4096;

type Then<T> = Box<dyn FnOnce(&mut Loop, Result<T>)>;
type ReadDone = Then<Vec<u8>>;
type WriteDone = Then<()>;

impl Fs<'_> {
    /// The whole contents of `path` (Node's `fs.readFile`): open, reads
    /// until one returns 0 (so short reads, files larger than one read and
    /// files of unknown size such as pipes and `/proc` files are handled),
    /// close. Errors are Node's: `open 'path'` for the open, `read` for a
    /// read (e.g. `EISDIR: illegal operation on a directory, read`).
    ///
    /// On io_uring the first 64 KiB come in one reactor operation (open, a
    /// read and a probe read linked in the kernel, close: one callback on
    /// the loop per file, no fstat); a larger file goes on with ordinary
    /// reads. On the pool the whole file is one job.
    pub fn read_file(
        self,
        path: impl AsRef<Path>,
        callback: impl FnOnce(&mut Loop, Result<Vec<u8>>) + 'static,
    ) {
        let path = path.as_ref();
        let c = match c_path("path", path) {
            Ok(c) => c,
            Err(error) => return fail_soon(self.lp, error, callback),
        };
        let req = Req::ReadFile {
            path: c,
            buf: Vec::with_capacity(FIRST_CHUNK),
        };
        dispatch(self.lp, req, move |lp, done: Done| {
            let mut buf = done.buf;
            match done.result {
                Ok(Out::Whole(None)) => {
                    if buf.capacity() - buf.len() > SHRINK_SLACK {
                        buf.shrink_to_fit();
                    }
                    callback(lp, Ok(buf));
                }
                Ok(Out::Whole(Some(fd))) => {
                    let file = lp.io.fs.insert_file(fd);
                    read_rest(lp, file, buf, 0, Box::new(callback));
                }
                Ok(other) => unreachable!("read_file gives its bytes, not {other:?}"),
                Err(error) => {
                    // The request's own path comes back with it.
                    let path = done.path.filter(|_| done.step == "open");
                    callback(lp, Err(Error::fs(done.step, path, None, error)));
                }
            }
        });
    }

    /// Replaces the contents of `path` with `data`, creating it (mode
    /// `0o666` less the umask) (Node's `fs.writeFile`): open `"w"`, writes
    /// until all is written (a short write continues where it stopped),
    /// close.
    pub fn write_file(
        self,
        path: impl AsRef<Path>,
        data: Vec<u8>,
        callback: impl FnOnce(&mut Loop, Result<()>) + 'static,
    ) {
        let flags = Flags::new().write(true).create(true).truncate(true);
        self.write_file_with(path, data, flags, 0o666, callback);
    }

    /// Appends `data` to `path`, creating it (Node's `fs.appendFile`).
    pub fn append_file(
        self,
        path: impl AsRef<Path>,
        data: Vec<u8>,
        callback: impl FnOnce(&mut Loop, Result<()>) + 'static,
    ) {
        let flags = Flags::new().write(true).create(true).append(true);
        self.write_file_with(path, data, flags, 0o666, callback);
    }

    /// [`Fs::write_file`] with Node's `flag` and `mode` options.
    pub fn write_file_with(
        self,
        path: impl AsRef<Path>,
        data: Vec<u8>,
        flags: Flags,
        mode: u32,
        callback: impl FnOnce(&mut Loop, Result<()>) + 'static,
    ) {
        let callback: WriteDone = Box::new(callback);
        let append = flags.bits() & libc::O_APPEND != 0;
        self.open(path, flags, mode, move |lp, opened| match opened {
            Ok(file) => {
                let start = (!append).then_some(0);
                write_rest(lp, file, data, start, callback);
            }
            Err(error) => callback(lp, Err(error)),
        });
    }
}

/// Reads at the file's position into the end of what `buf` holds until
/// `size` is reached (when known) or a read returns 0.
fn read_rest(lp: &mut Loop, file: File, mut buf: Vec<u8>, size: usize, callback: ReadDone) {
    if buf.len() == buf.capacity() {
        buf.reserve(UNKNOWN_SIZE_CHUNK.max(buf.len()));
    }
    // The current position (Node reads at -1 too): pipes work as files do.
    let f = file;
    lp.fs()
        .read(file, buf, None, move |lp, read, buf| match read {
            Ok(0) => close_then(lp, f, Ok(buf), callback),
            Ok(_) if size > 0 && buf.len() >= size => close_then(lp, f, Ok(buf), callback),
            Ok(_) => read_rest(lp, f, buf, size, callback),
            Err(error) => close_then(lp, f, Err(error), callback),
        });
}

/// Closes `file`, then reports `result` (or the close's error, if the
/// rest went well).
fn close_then<T: 'static>(lp: &mut Loop, file: File, result: Result<T>, callback: Then<T>) {
    lp.fs().close(file, move |lp, closed| {
        let result = match (result, closed) {
            (Ok(value), Ok(())) => Ok(value),
            (Ok(_), Err(error)) | (Err(error), _) => Err(error),
        };
        callback(lp, result);
    });
}

/// Writes all of `data` (at `position`, advancing; `None` when appending).
fn write_rest(
    lp: &mut Loop,
    file: File,
    data: Vec<u8>,
    position: Option<u64>,
    callback: WriteDone,
) {
    if data.is_empty() {
        return close_then(lp, file, Ok(()), callback);
    }
    let f = file;
    lp.fs().write(
        file,
        data,
        position,
        move |lp, wrote, mut data| match wrote {
            Ok(0) => {
                let error = Error::fs("write", None, None, std::io::ErrorKind::WriteZero.into());
                close_then(lp, f, Err(error), callback);
            }
            Ok(n) => {
                data.drain(..n.min(data.len()));
                let next = position.map(|p| p + n as u64);
                write_rest(lp, f, data, next, callback);
            }
            Err(error) => close_then(lp, f, Err(error), callback),
        },
    );
}
