//! What a write or a datagram send takes: the bytes as the caller has them.

use std::fmt;
use std::rc::Rc;
use std::sync::Arc;

use eventide_reactor::SendOwner;

/// The bytes of a [`Stream::write`](super::Stream::write) or a
/// [`UdpSocket::send_to`](crate::dgram::UdpSocket::send_to), in the form
/// the caller has them; every form converts with `From` (`write(lp,
/// b"ping", ..)`, `write(lp, vec, ..)`, `write(lp, shared.clone(), ..)`).
///
/// Which forms are sent without a copy:
///
/// All of them, on streams and datagrams alike:
///
/// - A `Vec<u8>` (or a `String`, a `Box<[u8]>`, which become one without
///   a copy) goes to the kernel as it is.
/// - A `&'static [u8]` (a literal: `b"ping"`, `"pong"`), an `Rc<[u8]>`,
///   an `Arc<[u8]>` or any owner of bytes ([`WriteBuf::from_owner`]: a
///   `bytes::Bytes`, say) is sent from where its bytes are: a UDP socket's
///   `sendto` is the loop's own call; a stream's send hands the owner to
///   the reactor (boxed: one small allocation for a reference, none for an
///   owner already boxed), which keeps it until the kernel is done with
///   the bytes, even if the stream is closed meanwhile. Writing the same
///   `Rc<[u8]>` to a thousand streams costs a thousand reference counts,
///   not a thousand copies.
pub struct WriteBuf(Repr);

/// A stream send's bytes ([`WriteBuf::take_for_send`]).
pub(crate) enum ForSend {
    Vec(Vec<u8>),
    Owner(SendOwner),
}

enum Repr {
    Vec(Vec<u8>),
    Static(&'static [u8]),
    Rc(Rc<[u8]>),
    Arc(Arc<[u8]>),
    Owner(Box<dyn AsRef<[u8]>>),
}

impl WriteBuf {
    /// Bytes held by any owner that lends them (`bytes::Bytes`, a memory
    /// map, an `Rc<Vec<u8>>`...): kept, not copied, until sent.
    pub fn from_owner(owner: impl AsRef<[u8]> + 'static) -> WriteBuf {
        WriteBuf(Repr::Owner(Box::new(owner)))
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match &self.0 {
            Repr::Vec(v) => v,
            Repr::Static(s) => s,
            Repr::Rc(r) => r,
            Repr::Arc(a) => a,
            Repr::Owner(o) => (**o).as_ref(),
        }
    }

    /// How many bytes.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the bytes are an owned `Vec` (the reactor takes it as it
    /// is).
    #[cfg(test)]
    pub(crate) fn is_owned(&self) -> bool {
        matches!(self.0, Repr::Vec(_))
    }

    /// What a stream's send takes, leaving an empty `Vec`: the `Vec`
    /// itself, or the bytes' owner, boxed (no copy either way).
    pub(crate) fn take_for_send(&mut self) -> ForSend {
        match std::mem::replace(&mut self.0, Repr::Vec(Vec::new())) {
            Repr::Vec(v) => ForSend::Vec(v),
            Repr::Static(s) => ForSend::Owner(Box::new(s)),
            Repr::Rc(r) => ForSend::Owner(Box::new(r)),
            Repr::Arc(a) => ForSend::Owner(Box::new(a)),
            Repr::Owner(o) => ForSend::Owner(o),
        }
    }

    /// An owner a send's completion handed back.
    pub(crate) fn from_send_owner(owner: SendOwner) -> WriteBuf {
        WriteBuf(Repr::Owner(owner))
    }

    /// The bytes as an owned `Vec`, leaving an empty one: the `Vec` itself
    /// if they are one, else a copy.
    pub(crate) fn take_vec(&mut self) -> Vec<u8> {
        match &mut self.0 {
            Repr::Vec(v) => std::mem::take(v),
            _ => {
                let copy = self.as_slice().to_vec();
                self.0 = Repr::Vec(Vec::new());
                copy
            }
        }
    }
}

impl AsRef<[u8]> for WriteBuf {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl fmt::Debug for WriteBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let form = match self.0 {
            Repr::Vec(_) => "Vec",
            Repr::Static(_) => "Static",
            Repr::Rc(_) => "Rc",
            Repr::Arc(_) => "Arc",
            Repr::Owner(_) => "Owner",
        };
        f.debug_struct("WriteBuf")
            .field("form", &form)
            .field("len", &self.len())
            .finish()
    }
}

impl From<Vec<u8>> for WriteBuf {
    fn from(v: Vec<u8>) -> WriteBuf {
        WriteBuf(Repr::Vec(v))
    }
}

impl From<Box<[u8]>> for WriteBuf {
    fn from(b: Box<[u8]>) -> WriteBuf {
        WriteBuf(Repr::Vec(b.into_vec()))
    }
}

impl From<String> for WriteBuf {
    fn from(s: String) -> WriteBuf {
        WriteBuf(Repr::Vec(s.into_bytes()))
    }
}

impl From<&'static [u8]> for WriteBuf {
    fn from(s: &'static [u8]) -> WriteBuf {
        WriteBuf(Repr::Static(s))
    }
}

impl<const N: usize> From<&'static [u8; N]> for WriteBuf {
    fn from(s: &'static [u8; N]) -> WriteBuf {
        WriteBuf(Repr::Static(s))
    }
}

impl From<&'static str> for WriteBuf {
    fn from(s: &'static str) -> WriteBuf {
        WriteBuf(Repr::Static(s.as_bytes()))
    }
}

impl From<Rc<[u8]>> for WriteBuf {
    fn from(r: Rc<[u8]>) -> WriteBuf {
        WriteBuf(Repr::Rc(r))
    }
}

impl From<Arc<[u8]>> for WriteBuf {
    fn from(a: Arc<[u8]>) -> WriteBuf {
        WriteBuf(Repr::Arc(a))
    }
}

#[cfg(test)]
mod tests {
    use super::WriteBuf;
    use std::rc::Rc;

    #[test]
    fn a_vec_is_taken_as_it_is_and_others_are_copied_once() {
        let v = vec![1u8, 2, 3];
        let at = v.as_ptr();
        let mut buf = WriteBuf::from(v);
        assert!(buf.is_owned());
        let taken = buf.take_vec();
        assert_eq!(taken.as_ptr(), at, "the same allocation");

        let shared: Rc<[u8]> = Rc::from(&b"shared"[..]);
        let mut buf = WriteBuf::from(Rc::clone(&shared));
        assert!(!buf.is_owned());
        assert_eq!(buf.as_slice().as_ptr(), shared.as_ptr(), "not copied");
        assert_eq!(buf.take_vec(), b"shared");
        assert!(buf.is_owned() && buf.is_empty());

        let buf = WriteBuf::from(b"static");
        assert_eq!(buf.as_slice(), b"static");
        assert_eq!(WriteBuf::from_owner(vec![7u8; 3]).len(), 3);
    }
}
