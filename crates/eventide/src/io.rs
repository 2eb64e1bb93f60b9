//! Operations on the reactor, and the dispatch of their completions.
//!
//! This is the one place the loop meets the reactor's completions; the
//! file system and networking modules build on it. An operation's token
//! says what runs when it completes:
//!
//! | bits 32..64 | bits 29..32 | bits 0..29 | runs |
//! |---|---|---|---|
//! | generation | 0 | slot | the boxed closure in that slot of `Io::handlers` |
//! | generation | 1 | stream | that stream's receive (`Stream::on_received`) |
//! | generation | 2 | stream | that stream's send (`Stream::on_sent`) |
//! | generation | 3 | listener | that listener's accept (`Listener::on_accept`) |
//! | generation | 4 | stream | its send of a `write_copy` (`Stream::sent_quietly`, else `on_sent`) |
//!
//! so the operations every connection has in flight (its receive, its
//! send, a listener's accept) cost no slot and no allocation here: the
//! token names the socket (W10 counts every byte an idle connection
//! holds). A socket has at most one operation of each kind in flight, so
//! its tokens are unique among the operations in flight.
//!
//! An operation keeps the loop alive while it is in flight (a multishot
//! one until its final completion, `more == false`). The boxed ones do
//! unless their owner says otherwise (`Loop::set_counted`: the receive
//! wait of an unreferenced UDP socket); the socket operations are counted in `Io::sockets` by the
//! networking code, which leaves out the receive of an unreferenced
//! stream and the accept of an unreferenced listener (libuv's `uv_unref`)
//! while the socket is open.

use eventide_reactor::{Completion, Op, SubmitError, Token};

use crate::event_loop::Loop;
use crate::net::{Listener, Stream};
use crate::slab::{Slab, SlotId};

/// What runs on each completion of one operation. A multishot operation
/// (`Completion::more`) calls it again; it is dropped after the final one.
pub(crate) type OnComplete = Box<dyn FnMut(&mut Loop, Completion)>;

/// A socket operation, dispatched by its token alone.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Direct {
    /// A stream's multishot receive.
    Received(Stream),
    /// A stream's send.
    Sent(Stream),
    /// A stream's send of a [`Stream::write_copy`] (no callback): its
    /// completion may end without a callback's dispatch
    /// (`Stream::sent_quietly`).
    SentQuiet(Stream),
    /// A listener's multishot accept.
    Accepted(Listener),
}

const TAG_SHIFT: u32 = 29;
const TAG_MASK: u64 = 7;
const INDEX_MASK: u64 = (1 << TAG_SHIFT) - 1;
const BOXED: u64 = 0;
const RECEIVED: u64 = 1;
const SENT: u64 = 2;
const ACCEPTED: u64 = 3;
const SENT_QUIET: u64 = 4;

/// A boxed operation's handler, and whether it keeps the loop alive.
struct Boxed {
    /// `None` while it runs.
    handler: Option<OnComplete>,
    counted: bool,
}

/// The operations in flight on the reactor.
pub(crate) struct Io {
    /// Boxed handlers, by token (tag 0).
    handlers: Slab<Boxed>,
    /// Boxed operations in flight that do not keep the loop alive.
    uncounted: usize,
    /// Socket operations in flight that keep the loop alive (see the
    /// module documentation).
    pub(crate) sockets: usize,
    /// The sockets of [`crate::net`], which own the descriptors these
    /// operations run on.
    pub(crate) net: crate::net::Sockets,
    /// The UDP sockets of [`crate::dgram`].
    pub(crate) dgram: crate::dgram::Table,
    /// The open files and file streams of [`crate::fs`].
    pub(crate) fs: crate::fs::Table,
    /// The event sources of [`crate::source`].
    pub(crate) sources: crate::source::Table,
    /// The file watchers of [`crate::fs`] (`watch`, `watch_file`).
    pub(crate) watch: crate::fs::Watches,
    /// The signal listeners of [`crate::signal`].
    pub(crate) signals: crate::signal::Table,
    /// The children of [`crate::process`] watched the `SIGCHLD` way.
    pub(crate) children: crate::process::Reapers,
}

impl Io {
    /// The I/O state of the loop `owner` (its id, which every key of its
    /// tables carries).
    pub(crate) fn new(owner: u32) -> Io {
        Io {
            handlers: Slab::default(),
            uncounted: 0,
            sockets: 0,
            net: crate::net::Sockets::new(owner),
            dgram: crate::dgram::new_table(owner),
            fs: crate::fs::Table::new(owner),
            sources: crate::source::Table::default(),
            watch: crate::fs::Watches::new(owner),
            signals: crate::signal::Table::default(),
            children: crate::process::Reapers::default(),
        }
    }

    /// The operations in flight that keep the loop alive.
    pub(crate) fn in_flight(&self) -> usize {
        self.handlers.len() - self.uncounted + self.sockets
    }

    /// Whether the boxed operation under `token` keeps the loop alive
    /// (libuv's `uv_ref`/`uv_unref` for the handle that owns it). A token
    /// no longer in flight is ignored.
    pub(crate) fn set_counted(&mut self, token: Token, counted: bool) {
        let (tag, id) = decode(token);
        if tag != BOXED {
            return;
        }
        let Some(boxed) = self.handlers.get_mut(id) else {
            return;
        };
        if boxed.counted != counted {
            boxed.counted = counted;
            if counted {
                self.uncounted -= 1;
            } else {
                self.uncounted += 1;
            }
        }
    }
}

fn token(tag: u64, id: SlotId) -> Token {
    assert!(
        u64::from(id.index) <= INDEX_MASK,
        "eventide: more than 2^29 handlers or sockets"
    );
    Token((u64::from(id.generation) << 32) | (tag << TAG_SHIFT) | u64::from(id.index))
}

fn decode(token: Token) -> (u64, SlotId) {
    let id = SlotId {
        index: (token.0 & INDEX_MASK) as u32,
        generation: (token.0 >> 32) as u32,
    };
    ((token.0 >> TAG_SHIFT) & TAG_MASK, id)
}

impl Direct {
    /// The token the operation runs under: its kind and its socket's slot.
    pub(crate) fn token(self) -> Token {
        match self {
            Direct::Received(stream) => token(RECEIVED, stream.id()),
            Direct::Sent(stream) => token(SENT, stream.id()),
            Direct::SentQuiet(stream) => token(SENT_QUIET, stream.id()),
            Direct::Accepted(listener) => token(ACCEPTED, listener.id()),
        }
    }
}

impl Loop {
    /// How many operations the reactor has in flight: submitted (to
    /// io_uring, or waiting for readiness) and not yet completed for the
    /// last time. A diagnostic: an operation cancelled in the kernel
    /// leaves this count only when its completion comes back.
    pub fn ops_in_flight(&self) -> usize {
        self.reactor.in_flight()
    }

    /// Asks the reactor to end the operation under `token` (on io_uring,
    /// `IORING_OP_ASYNC_CANCEL`); its completion still comes back to its
    /// handler, which owns the buffer until then. A token already done
    /// is ignored.
    pub(crate) fn cancel_io(&mut self, token: Token) {
        self.reactor.cancel(token);
    }

    /// Submits `op` to the reactor; `on_complete` runs on the loop, in the
    /// poll phase, with each of its completions. Returns the token it runs
    /// under.
    ///
    /// # Errors
    ///
    /// The reactor's refusal, with the operation handed back whole (for
    /// example `Unsupported` for a file operation on the polling backend,
    /// which the caller then sends to the pool).
    #[allow(clippy::result_large_err)] // The reactor's error, handed on.
    pub(crate) fn submit_io(
        &mut self,
        op: Op,
        on_complete: impl FnMut(&mut Loop, Completion) + 'static,
    ) -> Result<Token, SubmitError> {
        self.submit_boxed(op, Box::new(on_complete))
            .map_err(|(refused, _, _)| refused)
    }

    /// [`Loop::submit_io`] for a single-shot operation whose handler hears
    /// of a refusal too: a refused operation's handler runs once, on the
    /// next turn (never inside this call), with a completion carrying the
    /// refusal's error and the operation's buffer. Returns the token, or
    /// `None` when refused.
    pub(crate) fn submit_io_reported(
        &mut self,
        op: Op,
        on_complete: impl FnMut(&mut Loop, Completion) + 'static,
    ) -> Option<Token> {
        let (refused, token, handler) = match self.submit_boxed(op, Box::new(on_complete)) {
            Ok(token) => return Some(token),
            Err(refused) => refused,
        };
        let mut handler = handler?;
        let (buf, path) = refused.op.into_parts();
        let completion = Completion {
            token,
            result: Err(refused.error),
            buf,
            owner: None,
            stat: None,
            more: false,
            file: None,
            step: None,
            path,
        };
        self.defer(move |lp| handler(lp, completion));
        None
    }

    /// Stores `handler` under a new token and submits `op` with it; on a
    /// refusal the handler comes back, unstored, with the token it had.
    #[allow(clippy::result_large_err)] // The reactor's error, handed on.
    fn submit_boxed(
        &mut self,
        op: Op,
        handler: OnComplete,
    ) -> Result<Token, (SubmitError, Token, Option<OnComplete>)> {
        let id = self.io.handlers.insert(Boxed {
            handler: Some(handler),
            counted: true,
        });
        let token = token(BOXED, id);
        match self.reactor.submit(token, op) {
            Ok(()) => Ok(token),
            Err(refused) => {
                let handler = self.io.handlers.remove(id).and_then(|b| b.handler);
                Err((refused, token, handler))
            }
        }
    }

    /// Submits a socket operation, dispatched by its token; `counted`
    /// says whether it keeps the loop alive (the caller then uncounts it
    /// on its final completion).
    #[allow(clippy::result_large_err)] // The reactor's error, handed on.
    pub(crate) fn submit_direct(
        &mut self,
        op: Op,
        direct: Direct,
        counted: bool,
    ) -> Result<Token, SubmitError> {
        let token = direct.token();
        self.reactor.submit(token, op)?;
        if counted {
            self.io.sockets += 1;
        }
        Ok(token)
    }

    /// Hands every ready completion to its handler.
    pub(crate) fn run_io_completions(&mut self) {
        while let Some(completion) = self.reactor.next_completion() {
            self.metrics.callbacks.io += 1;
            let (tag, id) = decode(completion.token);
            match tag {
                RECEIVED => {
                    let stream = Stream::from_id(self.io.net.key(id));
                    let kind = crate::diag::Kind::Stream;
                    let site = self.call_site_of(kind, stream.raw());
                    self.invoke_as(kind, site, |lp: &mut Loop| {
                        stream.on_received(lp, completion);
                    });
                }
                SENT_QUIET => {
                    let stream = Stream::from_id(self.io.net.key(id));
                    let mut completion = completion;
                    if stream.sent_quietly(self, &mut completion) {
                        // Done, with no callback to dispatch.
                        continue;
                    }
                    let kind = crate::diag::Kind::Stream;
                    let site = self.call_site_of(kind, stream.raw());
                    self.invoke_as(kind, site, |lp: &mut Loop| stream.on_sent(lp, completion));
                }
                SENT => {
                    let stream = Stream::from_id(self.io.net.key(id));
                    let kind = crate::diag::Kind::Stream;
                    let site = self.call_site_of(kind, stream.raw());
                    self.invoke_as(kind, site, |lp: &mut Loop| stream.on_sent(lp, completion));
                }
                ACCEPTED => {
                    let listener = Listener::from_id(self.io.net.key(id));
                    let kind = crate::diag::Kind::Listener;
                    let site = self.call_site_of(kind, listener.raw());
                    self.invoke_as(kind, site, |lp: &mut Loop| {
                        listener.on_accept(lp, completion);
                    });
                }
                _ => self.run_boxed(id, completion),
            }
        }
    }

    fn run_boxed(&mut self, id: SlotId, completion: Completion) {
        let Some(slot) = self.io.handlers.get_mut(id) else {
            log::warn!(
                "eventide: completion for unknown token {:?}",
                completion.token
            );
            return;
        };
        let Some(mut handler) = slot.handler.take() else {
            log::warn!(
                "eventide: completion for a running handler {:?}",
                completion.token
            );
            return;
        };
        let more = completion.more;
        let outcome = self.catching_as(crate::diag::Kind::Io, None, |lp: &mut Loop| {
            handler(lp, completion)
        });
        // Whether or not the handler panicked, the slot follows the
        // operation: back in place while more completions come, gone after
        // the final one (a slot left behind would keep the loop alive for
        // good). Only then does the panic go on.
        if more {
            if let Some(slot) = self.io.handlers.get_mut(id) {
                slot.handler = Some(handler);
            }
        } else {
            drop(handler);
            if let Some(done) = self.io.handlers.remove(id)
                && !done.counted
            {
                self.io.uncounted -= 1;
            }
        }
        if let Err(payload) = outcome {
            self.panicked(payload);
        }
        self.drain_ticks();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_gives_back_its_kind_and_slot() {
        let id = SlotId {
            index: INDEX_MASK as u32,
            generation: u32::MAX,
        };
        for tag in [BOXED, RECEIVED, SENT, ACCEPTED, SENT_QUIET] {
            let (back, back_id) = decode(token(tag, id));
            assert_eq!((back, back_id), (tag, id));
        }
        let small = SlotId {
            index: 7,
            generation: 1,
        };
        assert_eq!(decode(token(SENT, small)), (SENT, small));
        assert_ne!(token(SENT, small), token(RECEIVED, small));
    }
}

#[cfg(test)]
mod panic_tests {
    use std::cell::Cell;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::rc::Rc;
    use std::time::Duration;

    use eventide_reactor::{BackendChoice, BackendKind, Interest, Op};

    use crate::event_loop::Loop;

    /// Without a panic handler: completions taken in the same wait as one
    /// whose handler panicked run at the next `run()`, which does not
    /// block on them (they are in the reactor's ready queue, not in the
    /// kernel), and no slot is left behind.
    fn completions_after_a_panicking_handler(backend: BackendKind) {
        let Ok(mut lp) = Loop::builder()
            .backend(BackendChoice::Only(backend))
            .build()
        else {
            eprintln!("skipped on {backend}");
            return;
        };
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: writes one byte from a live local to the pipe's write end.
        assert_eq!(unsafe { libc::write(fds[1], b"x".as_ptr().cast(), 1) }, 1);
        let ran = Rc::new(Cell::new(0));
        for i in 0..3 {
            let ran = Rc::clone(&ran);
            lp.submit_io(Op::poll(fds[0], Interest::READABLE), move |_, c| {
                c.result.expect("the pipe is readable");
                ran.set(ran.get() + 1);
                if i == 0 {
                    panic!("first handler");
                }
            })
            .expect("submitted");
        }
        // Every poll is ready before the loop first waits.
        std::thread::sleep(Duration::from_millis(10));
        let expired = lp.test_watchdog(Duration::from_secs(10));
        let first = catch_unwind(AssertUnwindSafe(|| lp.run()));
        assert!(first.is_err(), "the handler's panic leaves run()");
        lp.run().expect("the loop runs again");
        assert!(!expired.get(), "the second run() ended by itself");
        assert_eq!(ran.get(), 3);
        assert!(!lp.alive());
        assert_eq!(lp.io.in_flight(), 0);
        // SAFETY: closes the two descriptors this test opened, once.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
    }

    #[test]
    fn completions_after_a_panicking_handler_on_uring() {
        completions_after_a_panicking_handler(BackendKind::Uring);
    }

    #[test]
    fn completions_after_a_panicking_handler_on_poll() {
        completions_after_a_panicking_handler(BackendKind::Poll);
    }
}

impl Loop {
    /// The I/O in flight, for [`Loop::handles`]: each boxed operation (a
    /// file system request, a watcher's or a source's wait), then the
    /// socket operations that keep the loop alive, one entry each.
    pub(crate) fn list_io(&self, listing: &mut crate::diag::Listing) {
        for (slot, boxed) in self.io.handlers.iter() {
            listing.add(
                crate::diag::Kind::Io,
                crate::slab::raw(slot),
                boxed.counted,
                boxed.counted,
                None,
            );
        }
        let mut socket_ops = self.list_streams(listing) + self.list_listeners(listing);
        socket_ops += self.list_udp(listing);
        self.list_sources(listing);
        self.list_signals(listing);
        self.list_watchers(listing);
        // Socket operations of no listed socket (one closed while its
        // operation finishes): one entry each.
        for n in socket_ops..self.io.sockets {
            listing.add(crate::diag::Kind::Io, n as u64, true, true, None);
        }
    }
}
