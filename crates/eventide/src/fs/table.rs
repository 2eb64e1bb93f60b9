//! Where a loop's open files and file streams live: a table owned by the
//! loop (`io::Io::fs`), addressed by the `Copy` keys [`File`],
//! [`ReadStream`](super::ReadStream) and [`WriteStream`](super::WriteStream).
//!
//! A key is a slot and the generation it was issued at, plus the number
//! of the loop whose table issued it: a key whose entry is gone (a closed file,
//! a finished stream) or that another loop issued finds nothing, never an
//! entry that reused its slot. What is left open when the loop is dropped
//! is closed then.

use std::os::fd::RawFd;

use super::stream::{ReadState, WriteState};
use super::types::{DeferredClose, File};
use crate::slab::{Slab, SlotId};
use crate::{Error, Result};

/// A key into one of a table's slabs: the slot and its loop's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub(crate) slot: SlotId,
    pub(crate) table: u32,
}

/// One open file: its descriptor (-1 once closed) and the pool operations
/// on it, which a close waits for.
pub(crate) struct OpenFile {
    pub(crate) fd: RawFd,
    /// Operations on the descriptor queued on or running on the pool.
    pub(crate) pool_ops: u32,
    /// A close asked for while some were: sent when the last one ends.
    pub(crate) deferred_close: Option<DeferredClose>,
}

/// One loop's files and file streams.
pub(crate) struct Table {
    id: u32,
    files: Slab<OpenFile>,
    reads: Slab<ReadState>,
    writes: Slab<WriteState>,
}

impl Table {
    /// The table of the loop `owner` (its id: a key of one loop is stale
    /// on another).
    pub(crate) fn new(owner: u32) -> Table {
        Table {
            id: owner,
            files: Slab::default(),
            reads: Slab::default(),
            writes: Slab::default(),
        }
    }
}

impl Table {
    fn key(&self, slot: SlotId) -> Key {
        Key {
            slot,
            table: self.id,
        }
    }

    /// The slot of `key` if this table issued it.
    fn mine(&self, key: Key) -> Option<SlotId> {
        (key.table == self.id).then_some(key.slot)
    }

    /// A newly opened descriptor's key.
    pub(crate) fn insert_file(&mut self, fd: RawFd) -> File {
        let slot = self.files.insert(OpenFile {
            fd,
            pool_ops: 0,
            deferred_close: None,
        });
        File(self.key(slot))
    }

    fn file(&self, file: File) -> Option<&OpenFile> {
        self.files.get(self.mine(file.0)?)
    }

    fn file_mut(&mut self, file: File) -> Option<&mut OpenFile> {
        self.files.get_mut(self.mine(file.0)?)
    }

    /// The descriptor of an open file; `None` when closed (or not this
    /// loop's).
    pub(crate) fn fd(&self, file: File) -> Option<RawFd> {
        self.file(file).map(|f| f.fd).filter(|&fd| fd >= 0)
    }

    /// A pool operation on the file was queued: a close waits for it.
    pub(crate) fn hold(&mut self, file: File) {
        if let Some(f) = self.file_mut(file) {
            f.pool_ops += 1;
        }
    }

    /// A pool operation on the file ended; the close that waited for the
    /// last one, if any, is now due (and the entry goes).
    pub(crate) fn release(&mut self, file: File) -> Option<DeferredClose> {
        let slot = self.mine(file.0)?;
        let f = self.files.get_mut(slot)?;
        f.pool_ops -= 1;
        if f.pool_ops > 0 || f.fd >= 0 {
            return None;
        }
        self.files.remove(slot).and_then(|f| f.deferred_close)
    }

    /// Takes the descriptor out for a close: later operations on the key
    /// find it closed. `Ok(fd)`: close it now (the entry is gone); `Err`
    /// gives `on_closed` back with the reason: `None`, the close was kept
    /// for the end of the pool operations on the file; `Some(EBADF)`, the
    /// file was closed already (or is not this loop's).
    pub(crate) fn take_for_close(
        &mut self,
        file: File,
        on_closed: super::types::OnClosed,
    ) -> std::result::Result<(RawFd, super::types::OnClosed), Option<super::types::OnClosed>> {
        let Some(slot) = self.mine(file.0) else {
            return Err(Some(on_closed));
        };
        let Some(f) = self.files.get_mut(slot) else {
            return Err(Some(on_closed));
        };
        if f.fd < 0 {
            return Err(Some(on_closed));
        }
        let fd = std::mem::replace(&mut f.fd, -1);
        if f.pool_ops > 0 {
            f.deferred_close = Some(DeferredClose {
                fd,
                callback: on_closed,
            });
            return Err(None);
        }
        self.files.remove(slot);
        Ok((fd, on_closed))
    }

    /// A new read stream's key.
    pub(crate) fn insert_read(&mut self, state: ReadState) -> Key {
        let slot = self.reads.insert(state);
        self.key(slot)
    }

    /// A new write stream's key.
    pub(crate) fn insert_write(&mut self, state: WriteState) -> Key {
        let slot = self.writes.insert(state);
        self.key(slot)
    }

    /// The read stream of `key`.
    pub(crate) fn read(&mut self, key: Key) -> Option<&mut ReadState> {
        self.reads.get_mut(self.mine(key)?)
    }

    /// The write stream of `key`.
    pub(crate) fn write(&mut self, key: Key) -> Option<&mut WriteState> {
        self.writes.get_mut(self.mine(key)?)
    }

    /// The read stream of `key`, for a query.
    pub(crate) fn read_ref(&self, key: Key) -> Option<&ReadState> {
        self.reads.get(self.mine(key)?)
    }

    /// The write stream of `key`, for a query.
    pub(crate) fn write_ref(&self, key: Key) -> Option<&WriteState> {
        self.writes.get(self.mine(key)?)
    }

    /// Forgets a finished read stream.
    pub(crate) fn remove_read(&mut self, key: Key) {
        if let Some(slot) = self.mine(key) {
            self.reads.remove(slot);
        }
    }

    /// Forgets a finished write stream.
    pub(crate) fn remove_write(&mut self, key: Key) {
        if let Some(slot) = self.mine(key) {
            self.writes.remove(slot);
        }
    }
}

/// `EBADF` worded as Node's for `syscall` on a closed file.
pub(crate) fn ebadf(syscall: &'static str) -> Error {
    Error::fs(
        syscall,
        None,
        None,
        std::io::Error::from_raw_os_error(libc::EBADF),
    )
}

/// `Ok(fd)` of an open file, or Node's `EBADF` for `syscall`.
pub(crate) fn fd_for(table: &Table, file: File, syscall: &'static str) -> Result<RawFd> {
    table.fd(file).ok_or_else(|| ebadf(syscall))
}

impl Drop for Table {
    fn drop(&mut self) {
        // The loop is going: nothing runs on these descriptors any more
        // (its pool has been shut down before its I/O state is dropped).
        for f in self.files.drain() {
            if let Some(close) = f.deferred_close {
                super::sys::close_now(close.fd);
            }
            if f.fd >= 0 {
                log::debug!("eventide::fs: fd {} left open; closed with the loop", f.fd);
                super::sys::close_now(f.fd);
            }
        }
    }
}
