//! Where a loop's UDP sockets live: a table in the loop's I/O state
//! (`io::Io::dgram`), shared (`Rc`) so that this module can hold a borrow
//! of it while it submits operations with `&mut Loop`. The sockets close
//! with the loop.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};
use std::rc::Rc;

use crate::event_loop::Loop;
use crate::slab::Keyed;

use super::socket::{HandingBack, Udp};

/// One loop's UDP sockets.
pub(crate) type Table = Rc<RefCell<Sockets>>;

/// The sockets (the slab, which this derefs to), and the one receive
/// buffer they share: a datagram is delivered before the next is read,
/// so one buffer per loop is enough (libuv's and Node's 64 KiB per read,
/// without one per socket).
pub(crate) struct Sockets {
    slab: Keyed<Udp>,
    spare: Vec<u8>,
    /// Sockets being handed back (`UdpSocket::into_std`).
    pub(super) hand_backs: Vec<HandingBack>,
}

/// The UDP table of the loop `owner`.
pub(crate) fn new_table(owner: u32) -> Table {
    Rc::new(RefCell::new(Sockets {
        slab: Keyed::new(owner),
        spare: Vec::new(),
        hand_backs: Vec::new(),
    }))
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
    type Target = Keyed<Udp>;

    fn deref(&self) -> &Keyed<Udp> {
        &self.slab
    }
}

impl DerefMut for Sockets {
    fn deref_mut(&mut self) -> &mut Keyed<Udp> {
        &mut self.slab
    }
}

/// The UDP table of `lp`.
pub(super) fn of(lp: &Loop) -> Table {
    Rc::clone(&lp.io.dgram)
}
