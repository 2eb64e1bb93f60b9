//! Whole-file conveniences: `read_file`, `write_file`, `append_file`, as
//! chains of the single operations (each step routed on its own).

use std::path::Path;

use super::Fs;
use super::types::{File, Flags};
use crate::event_loop::Loop;
use crate::{Error, Result};

/// How much `read_file` asks for at a time when the size is not known
/// (a file of size 0 in `/proc`, say), as Node's `kReadFileUnknownBufferLength`.
const UNKNOWN_SIZE_CHUNK: usize = 64 * 1024;

type Then<T> = Box<dyn FnOnce(&mut Loop, Result<T>)>;
type ReadDone = Then<Vec<u8>>;
type WriteDone = Then<()>;

impl Fs<'_> {
    /// The whole contents of `path` (Node's `fs.readFile`): open, fstat,
    /// reads until the size fstat gave is reached or a read returns 0 (so
    /// short reads and files larger than one read are handled), close.
    /// Errors are Node's: `open 'path'` for the open, `read` for a read
    /// (e.g. `EISDIR: illegal operation on a directory, read`).
    pub fn read_file(
        self,
        path: impl AsRef<Path>,
        callback: impl FnOnce(&mut Loop, Result<Vec<u8>>) + 'static,
    ) {
        let callback: ReadDone = Box::new(callback);
        self.open(
            path,
            Flags::new().read(true),
            0,
            move |lp, opened| match opened {
                Ok(file) => size_then_read(lp, file, callback),
                Err(error) => callback(lp, Err(error)),
            },
        );
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

fn size_then_read(lp: &mut Loop, file: File, callback: ReadDone) {
    let f = file.clone();
    lp.fs().fstat(&file, move |lp, stat| match stat {
        Ok(stat) => {
            let size = usize::try_from(stat.size).unwrap_or(usize::MAX);
            let first = if size == 0 { UNKNOWN_SIZE_CHUNK } else { size };
            read_rest(lp, f, Vec::with_capacity(first), size, callback);
        }
        Err(error) => close_then(lp, f, Err(error), callback),
    });
}

/// Reads at the end of what `buf` holds until `size` is reached (when
/// known) or a read returns 0.
fn read_rest(lp: &mut Loop, file: File, mut buf: Vec<u8>, size: usize, callback: ReadDone) {
    if buf.len() == buf.capacity() {
        buf.reserve(UNKNOWN_SIZE_CHUNK.max(buf.len()));
    }
    let position = Some(buf.len() as u64);
    let f = file.clone();
    lp.fs()
        .read(&file, buf, position, move |lp, read, buf| match read {
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
    let f = file.clone();
    lp.fs().write(
        &file,
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
