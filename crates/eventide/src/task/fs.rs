//! The file system, awaited: Node's `fs.promises`.
//!
//! Each function starts its operation at the first poll, on the loop
//! polling the task, through the callback API of [`crate::fs`]: same
//! backends, same results, same errors (`ENOENT: no such file or
//! directory, open 'missing.txt'`). Dropping a [`read()`] or [`write()`]
//! future (or aborting it with [`AbortSignal::run`]) once its operation
//! is in io_uring cancels it in the kernel (`IORING_OP_ASYNC_CANCEL`);
//! its buffer stays the kernel's until the completion comes back to the
//! loop, which then drops it. Other operations, and any on the pool, are
//! not taken back: they complete into buffers the loop owns, and their
//! results are dropped; a file opened for a dropped [`open`] is closed.
//!
//! [`AbortSignal::run`]: crate::abort::AbortSignal::run

use std::path::{Path, PathBuf};

use eventide_reactor::Token;

use super::oneshot;
use super::{try_with_loop, with_loop};
use crate::Result;
use crate::fs::{DirEntry, File, Flags, Stats};

/// Opens `path` (Node's `fsPromises.open(path, flags, mode)`).
pub async fn open(path: impl AsRef<Path>, flags: Flags, mode: u32) -> Result<File> {
    let path = path.as_ref().to_path_buf();
    let (tx, rx) = oneshot::channel();
    with_loop(|lp| {
        lp.fs().open(path, flags, mode, move |lp, result| {
            if tx.is_closed() {
                // The future is gone: nobody would close the file.
                if let Ok(file) = result {
                    lp.fs().close(file, |_, _| {});
                }
                return;
            }
            tx.send(result);
        });
    });
    rx.await
}

/// Closes `file` (Node's `filehandle.close()`).
pub async fn close(file: File) -> Result<()> {
    let (tx, rx) = oneshot::channel();
    with_loop(|lp| lp.fs().close(file, move |_, result| tx.send(result)));
    rx.await
}

/// Reads into the spare capacity of `buf` at `position` (`None`: the
/// current position); resolves to the count read (0 at the end of the
/// file) and the buffer, which grew by it (Node's `filehandle.read`).
/// The buffer belongs to the operation until it completes.
pub async fn read(file: File, buf: Vec<u8>, position: Option<u64>) -> (Result<usize>, Vec<u8>) {
    transfer(false, file, buf, position).await
}

/// Writes `buf` at `position` in one system call (Node's
/// `filehandle.write`): the count may be short. The buffer comes back.
pub async fn write(file: File, buf: Vec<u8>, position: Option<u64>) -> (Result<usize>, Vec<u8>) {
    transfer(true, file, buf, position).await
}

/// A read or a write; dropped before its completion, its io_uring
/// operation is cancelled in the kernel ([`CancelOnDrop`]).
async fn transfer(
    write: bool,
    file: File,
    buf: Vec<u8>,
    position: Option<u64>,
) -> (Result<usize>, Vec<u8>) {
    let (tx, rx) = oneshot::channel();
    let token = with_loop(|lp| {
        lp.fs()
            .transfer(write, file, buf, position, move |_, result, buf| {
                tx.send((result, buf))
            })
    });
    let guard = CancelOnDrop(token);
    let out = rx.await;
    guard.disarm();
    out
}

/// The ring operation of a read or write future: dropped while armed
/// (the future dropped before its result came), it asks the kernel to
/// end the operation (`IORING_OP_ASYNC_CANCEL`). The buffer stays the
/// operation's until the kernel's completion comes back to the loop,
/// which then drops it with the result nobody awaits. A token whose
/// operation is already done names nothing (its generation is stale).
struct CancelOnDrop(Option<Token>);

impl CancelOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(token) = self.0.take() {
            try_with_loop(|lp| lp.cancel_io(token));
        }
    }
}

/// The whole contents of `path` (Node's `fsPromises.readFile`).
pub async fn read_file(path: impl AsRef<Path>) -> Result<Vec<u8>> {
    let path = path.as_ref().to_path_buf();
    let (tx, rx) = oneshot::channel();
    with_loop(|lp| lp.fs().read_file(path, move |_, result| tx.send(result)));
    rx.await
}

/// Replaces the contents of `path` with `data`, creating it (Node's
/// `fsPromises.writeFile`).
pub async fn write_file(path: impl AsRef<Path>, data: impl Into<Vec<u8>>) -> Result<()> {
    let path = path.as_ref().to_path_buf();
    let data = data.into();
    let (tx, rx) = oneshot::channel();
    with_loop(|lp| {
        lp.fs()
            .write_file(path, data, move |_, result| tx.send(result))
    });
    rx.await
}

/// Appends `data` to `path`, creating it (Node's `fsPromises.appendFile`).
pub async fn append_file(path: impl AsRef<Path>, data: impl Into<Vec<u8>>) -> Result<()> {
    let path = path.as_ref().to_path_buf();
    let data = data.into();
    let (tx, rx) = oneshot::channel();
    with_loop(|lp| {
        lp.fs()
            .append_file(path, data, move |_, result| tx.send(result))
    });
    rx.await
}

/// Metadata of `path`, following links (Node's `fsPromises.stat`).
pub async fn stat(path: impl AsRef<Path>) -> Result<Stats> {
    let path = path.as_ref().to_path_buf();
    let (tx, rx) = oneshot::channel();
    with_loop(|lp| lp.fs().stat(path, move |_, result| tx.send(result)));
    rx.await
}

/// Metadata of `path`, not following a last link (Node's
/// `fsPromises.lstat`).
pub async fn lstat(path: impl AsRef<Path>) -> Result<Stats> {
    let path = path.as_ref().to_path_buf();
    let (tx, rx) = oneshot::channel();
    with_loop(|lp| lp.fs().lstat(path, move |_, result| tx.send(result)));
    rx.await
}

/// Metadata of an open file (Node's `filehandle.stat`).
pub async fn fstat(file: File) -> Result<Stats> {
    let (tx, rx) = oneshot::channel();
    with_loop(|lp| lp.fs().fstat(file, move |_, result| tx.send(result)));
    rx.await
}

/// The entries of a directory with their types, sorted by name (Node's
/// `fsPromises.readdir(path, { withFileTypes: true })`).
pub async fn readdir(path: impl AsRef<Path>) -> Result<Vec<DirEntry>> {
    let path = path.as_ref().to_path_buf();
    let (tx, rx) = oneshot::channel();
    with_loop(|lp| lp.fs().readdir(path, move |_, result| tx.send(result)));
    rx.await
}

/// Makes a directory (Node's `fsPromises.mkdir(path, { mode })`).
pub async fn mkdir(path: impl AsRef<Path>, mode: u32) -> Result<()> {
    let path = path.as_ref().to_path_buf();
    let (tx, rx) = oneshot::channel();
    with_loop(|lp| lp.fs().mkdir(path, mode, move |_, result| tx.send(result)));
    rx.await
}

/// Makes a directory and its missing parents; resolves to the first one
/// made, if any (Node's `fsPromises.mkdir(path, { recursive: true })`).
pub async fn mkdir_recursive(path: impl AsRef<Path>, mode: u32) -> Result<Option<PathBuf>> {
    let path = path.as_ref().to_path_buf();
    let (tx, rx) = oneshot::channel();
    with_loop(|lp| {
        lp.fs()
            .mkdir_recursive(path, mode, move |_, result| tx.send(result));
    });
    rx.await
}

/// Removes an empty directory (Node's `fsPromises.rmdir`).
pub async fn rmdir(path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref().to_path_buf();
    let (tx, rx) = oneshot::channel();
    with_loop(|lp| lp.fs().rmdir(path, move |_, result| tx.send(result)));
    rx.await
}

/// Removes a file (Node's `fsPromises.unlink`).
pub async fn unlink(path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref().to_path_buf();
    let (tx, rx) = oneshot::channel();
    with_loop(|lp| lp.fs().unlink(path, move |_, result| tx.send(result)));
    rx.await
}

/// Renames `from` to `to` (Node's `fsPromises.rename`).
pub async fn rename(from: impl AsRef<Path>, to: impl AsRef<Path>) -> Result<()> {
    let from = from.as_ref().to_path_buf();
    let to = to.as_ref().to_path_buf();
    let (tx, rx) = oneshot::channel();
    with_loop(|lp| lp.fs().rename(from, to, move |_, result| tx.send(result)));
    rx.await
}
