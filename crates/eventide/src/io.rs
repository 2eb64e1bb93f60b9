//! Operations on the reactor, and the dispatch of their completions: each
//! operation's token names a slot holding what to do when it completes.
//!
//! This is the one place the loop meets the reactor's completions; the
//! file system and networking modules build on it. An operation keeps the
//! loop alive while it is in flight (a multishot one until its final
//! completion, `more == false`).

use eventide_reactor::{Completion, Op, SubmitError, Token};

use crate::event_loop::Loop;
use crate::slab::{Slab, SlotId};

/// What runs on each completion of one operation. A multishot operation
/// (`Completion::more`) calls it again; it is dropped after the final one.
pub(crate) type OnComplete = Box<dyn FnMut(&mut Loop, Completion)>;

/// The operations in flight on the reactor, by token.
#[derive(Default)]
pub(crate) struct Io {
    handlers: Slab<Option<OnComplete>>,
    /// The sockets of [`crate::net`], which own the descriptors these
    /// operations run on.
    pub(crate) net: crate::net::Sockets,
}

impl Io {
    pub(crate) fn in_flight(&self) -> usize {
        self.handlers.len()
    }
}

fn token_of(id: SlotId) -> Token {
    Token((u64::from(id.generation) << 32) | u64::from(id.index))
}

fn id_of(token: Token) -> SlotId {
    SlotId {
        index: token.0 as u32,
        generation: (token.0 >> 32) as u32,
    }
}

impl Loop {
    /// Submits `op` to the reactor; `on_complete` runs on the loop, in the
    /// poll phase, with each of its completions. Returns the token it runs
    /// under.
    ///
    /// # Errors
    ///
    /// The reactor's refusal, with the operation handed back whole (for
    /// example `Unsupported` for a file operation on the polling backend,
    /// which the caller then sends to the pool).
    pub(crate) fn submit_io(
        &mut self,
        op: Op,
        on_complete: impl FnMut(&mut Loop, Completion) + 'static,
    ) -> Result<Token, SubmitError> {
        let id = self.io.handlers.insert(Some(Box::new(on_complete)));
        let token = token_of(id);
        match self.reactor.submit(token, op) {
            Ok(()) => Ok(token),
            Err(refused) => {
                self.io.handlers.remove(id);
                Err(refused)
            }
        }
    }

    /// Hands every ready completion to its handler.
    pub(crate) fn run_io_completions(&mut self) {
        while let Some(completion) = self.reactor.next_completion() {
            let id = id_of(completion.token);
            let Some(slot) = self.io.handlers.get_mut(id) else {
                log::warn!(
                    "eventide: completion for unknown token {:?}",
                    completion.token
                );
                continue;
            };
            let Some(mut handler) = slot.take() else {
                log::warn!(
                    "eventide: completion for a running handler {:?}",
                    completion.token
                );
                continue;
            };
            let more = completion.more;
            self.invoke(|lp: &mut Loop| handler(lp, completion));
            if more {
                if let Some(slot) = self.io.handlers.get_mut(id) {
                    *slot = Some(handler);
                }
            } else {
                self.io.handlers.remove(id);
            }
        }
    }
}
