//! Where a loop's UDP sockets live.
//!
//! The loop's own I/O state (`io::Io`) has a field for TCP's socket table
//! and none for UDP's yet, and this module may not change it; until it
//! does, each loop's UDP table is kept in a per-thread registry keyed by
//! the loop's shared state (a `Loop` never leaves its thread: it is not
//! `Send`). Everything reaches the table through [`of`], so moving it into
//! `Io` is a change of that one function (docs/dgram.md, "Where the table
//! lives"). A loop's table goes when the loop and every `LoopHandle` of it
//! are gone: its sockets are closed then, when the next UDP socket is made
//! on the thread.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};
use std::rc::Rc;
use std::sync::{Arc, Weak};

use crate::event_loop::Loop;
use crate::handle::Shared;
use crate::slab::Slab;

use super::socket::Udp;

/// One loop's UDP sockets.
pub(super) type Table = Rc<RefCell<Sockets>>;

/// The sockets (the slab, which this derefs to), and the one receive
/// buffer they share: a datagram is delivered before the next is read,
/// so one buffer per loop is enough (libuv's and Node's 64 KiB per read,
/// without one per socket).
#[derive(Default)]
pub(crate) struct Sockets {
    slab: Slab<Udp>,
    spare: Vec<u8>,
}

impl Sockets {
    /// The receive buffer, at least `len` bytes long (a new one if it is
    /// out, which only a receive inside a receive would find).
    pub(super) fn take_buffer(&mut self, len: usize) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.spare);
        if buf.len() < len {
            buf.resize(len, 0);
        }
        buf
    }

    /// Gives the receive buffer back for the next datagram.
    pub(super) fn give_buffer(&mut self, buf: Vec<u8>) {
        if buf.len() > self.spare.len() {
            self.spare = buf;
        }
    }
}

impl Deref for Sockets {
    type Target = Slab<Udp>;

    fn deref(&self) -> &Slab<Udp> {
        &self.slab
    }
}

impl DerefMut for Sockets {
    fn deref_mut(&mut self) -> &mut Slab<Udp> {
        &mut self.slab
    }
}

struct Entry {
    /// The loop's shared state: alive exactly as long as the loop (or a
    /// `LoopHandle` of it) is.
    owner: Weak<Shared>,
    sockets: Table,
}

thread_local! {
    static TABLES: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
}

/// The UDP table of `lp`, made on first use.
pub(super) fn of(lp: &Loop) -> Table {
    let owner = Arc::as_ptr(&lp.shared);
    TABLES.with_borrow_mut(|tables| {
        if let Some(entry) = tables.iter().find(|e| e.owner.as_ptr() == owner) {
            return Rc::clone(&entry.sockets);
        }
        let sockets = Table::default();
        tables.push(Entry {
            owner: Arc::downgrade(&lp.shared),
            sockets: Rc::clone(&sockets),
        });
        sockets
    })
}

/// Forgets the tables of this thread's loops that are gone, closing their
/// sockets (called before a socket is made, which may want an address one
/// of them holds).
pub(super) fn collect_dropped() {
    let gone: Vec<Entry> = TABLES.with_borrow_mut(|tables| {
        if tables.iter().all(|e| e.owner.strong_count() > 0) {
            return Vec::new();
        }
        let (live, gone) = std::mem::take(tables)
            .into_iter()
            .partition(|e| e.owner.strong_count() > 0);
        *tables = live;
        gone
    });
    // Dropped outside the registry's borrow: the sockets' callbacks may
    // own anything.
    drop(gone);
}
