//! Immediates, libuv's idle / prepare / check hooks, and closing handles.

use crate::event_loop::{Loop, Task};
use crate::slab::{Slab, SlotId};
use crate::timers::TimerId;

/// An immediate's handle, for [`Loop::clear_immediate`].
///
/// Like every key, it names nothing in another loop than its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ImmediateId {
    slot: SlotId,
    loop_id: u32,
}

/// The phase a hook runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Every turn, before prepare; an active idle hook keeps the poll phase
    /// from blocking (libuv's `uv_idle_t`).
    Idle,
    /// Every turn, right before the poll phase (libuv's `uv_prepare_t`).
    Prepare,
    /// Every turn, right after the poll phase, before the immediates
    /// (libuv's `uv_check_t`).
    Check,
}

/// A hook's handle: an idle, prepare or check callback that runs every turn.
///
/// Like every key, it names nothing in another loop than its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HookId {
    slot: SlotId,
    loop_id: u32,
}

/// A handle [`Loop::close_then`] can close. (Non-exhaustive: more kinds
/// of handle may be closable this way.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Handle {
    /// A timer.
    Timer(TimerId),
    /// An idle, prepare or check hook.
    Hook(HookId),
}

impl From<TimerId> for Handle {
    fn from(id: TimerId) -> Handle {
        Handle::Timer(id)
    }
}

impl From<HookId> for Handle {
    fn from(id: HookId) -> Handle {
        Handle::Hook(id)
    }
}

type HookCallback = Box<dyn FnMut(&mut Loop, HookId)>;

struct Hook {
    phase: Phase,
    /// `None` while it runs.
    callback: Option<HookCallback>,
    referenced: bool,
    /// Where it was started.
    site: crate::diag::Site,
}

/// Every hook, and the running order of each phase's hooks.
#[derive(Default)]
pub(crate) struct Hooks {
    hooks: Slab<Hook>,
    /// Per phase, newest first (libuv starts hooks at the head of the queue).
    order: [Vec<HookId>; 3],
    referenced: usize,
    /// The hooks a running phase started with (reused: no allocation per
    /// turn), so hooks started or stopped meanwhile do not disturb it.
    running: Vec<HookId>,
}

impl Hooks {
    pub(crate) fn keeps_alive(&self) -> bool {
        self.referenced > 0
    }

    pub(crate) fn has_idle(&self) -> bool {
        !self.order[Phase::Idle as usize].is_empty()
    }
}

impl Loop {
    /// Runs `callback` in the check phase of this turn, or of the next
    /// turn if the check phase is running (Node's `setImmediate`). Pending
    /// immediates keep the loop alive and keep the poll phase from
    /// blocking, unless unref'd ([`Loop::unref_immediate`]).
    #[track_caller]
    pub fn set_immediate(&mut self, callback: impl FnOnce(&mut Loop) + 'static) -> ImmediateId {
        let site = std::panic::Location::caller();
        let id = self.immediates.insert((Box::new(callback) as Task, site));
        self.immediate_order.push_back(id);
        ImmediateId {
            slot: id,
            loop_id: self.id,
        }
    }

    /// Cancels an immediate that has not run (Node's `clearImmediate`);
    /// returns whether it did. An immediate that ran, or an unknown id, is
    /// a no-op.
    pub fn clear_immediate(&mut self, id: ImmediateId) -> bool {
        // Its place in the queue stays, stale: the check phase skips it.
        let cleared = id.loop_id == self.id && self.immediates.remove(id.slot).is_some();
        if cleared {
            self.unref_immediates.remove(&id.slot);
        }
        cleared
    }

    /// Lets the loop exit while this immediate is pending (Node's
    /// `immediate.unref()`): it no longer keeps the loop alive, nor keeps
    /// the poll phase from blocking, but it still runs in a check phase
    /// the loop reaches for other reasons. A ran, cleared or unknown
    /// immediate is a no-op.
    pub fn unref_immediate(&mut self, id: ImmediateId) {
        if id.loop_id == self.id && self.immediates.get(id.slot).is_some() {
            self.unref_immediates.insert(id.slot);
        }
    }

    /// Makes the immediate keep the loop alive again (Node's
    /// `immediate.ref()`).
    pub fn ref_immediate(&mut self, id: ImmediateId) {
        if id.loop_id == self.id {
            self.unref_immediates.remove(&id.slot);
        }
    }

    /// Whether the immediate keeps the loop alive (Node's
    /// `immediate.hasRef()`): `true` unless it was unref'd; `false` once
    /// it ran or was cleared (a key cannot say more after its immediate is
    /// gone; Node's object keeps its last state).
    pub fn immediate_has_ref(&self, id: ImmediateId) -> bool {
        id.loop_id == self.id
            && self.immediates.get(id.slot).is_some()
            && !self.unref_immediates.contains(&id.slot)
    }

    /// Whether a pending immediate keeps the loop alive.
    pub(crate) fn referenced_immediates(&self) -> bool {
        self.immediates.len() > self.unref_immediates.len()
    }

    /// Starts a hook: `callback` runs every turn in `phase` until the hook is
    /// stopped or closed. Hooks are referenced: an active one keeps the loop
    /// alive (see [`Loop::unref_hook`]).
    #[track_caller]
    pub fn start_hook(
        &mut self,
        phase: Phase,
        callback: impl FnMut(&mut Loop, HookId) + 'static,
    ) -> HookId {
        let hook = Hook {
            phase,
            callback: Some(Box::new(callback)),
            referenced: true,
            site: std::panic::Location::caller(),
        };
        let id = HookId {
            slot: self.hooks.hooks.insert(hook),
            loop_id: self.id,
        };
        self.hooks.order[phase as usize].insert(0, id);
        self.hooks.referenced += 1;
        id
    }

    /// Stops a hook for good (what `uv_idle_stop` and then `uv_close` do);
    /// returns whether it was running. From anywhere, its own callback
    /// included.
    pub fn stop_hook(&mut self, id: HookId) -> bool {
        if id.loop_id != self.id {
            return false;
        }
        let Some(hook) = self.hooks.hooks.remove(id.slot) else {
            return false;
        };
        let order = &mut self.hooks.order[hook.phase as usize];
        order.retain(|other| *other != id);
        if hook.referenced {
            self.hooks.referenced -= 1;
        }
        true
    }

    /// Lets the loop exit while this hook is active.
    pub fn unref_hook(&mut self, id: HookId) {
        self.set_hook_ref(id, false);
    }

    /// Makes the hook keep the loop alive again.
    pub fn ref_hook(&mut self, id: HookId) {
        self.set_hook_ref(id, true);
    }

    fn set_hook_ref(&mut self, id: HookId, referenced: bool) {
        if id.loop_id != self.id {
            return;
        }
        let Some(hook) = self.hooks.hooks.get_mut(id.slot) else {
            return;
        };
        if hook.referenced != referenced {
            hook.referenced = referenced;
            if referenced {
                self.hooks.referenced += 1;
            } else {
                self.hooks.referenced -= 1;
            }
        }
    }

    /// Closes a handle: it stops at once, and `on_close` runs in the close
    /// phase of this turn, the last phase (libuv's `uv_close`). A closing
    /// handle keeps the loop alive until its close callback has run.
    /// Returns `false`, queuing nothing, for a handle already gone.
    ///
    /// This is libuv's close-with-callback, for code that needs to know
    /// when a handle is completely gone; to stop a timer, use
    /// [`Loop::clear_timer`], and to stop a hook [`Loop::stop_hook`].
    pub fn close_then(
        &mut self,
        handle: impl Into<Handle>,
        on_close: impl FnOnce(&mut Loop) + 'static,
    ) -> bool {
        self.close_handle(handle.into(), Some(Box::new(on_close)))
    }

    /// Closes a handle with no close callback; see [`Loop::close_then`].
    ///
    /// Kept for libuv's `uv_close(handle, NULL)`; it is the same as
    /// [`Loop::clear_timer`] or [`Loop::stop_hook`] except that the loop
    /// stays alive until the close phase. New code uses those.
    #[deprecated(
        note = "use `Loop::clear_timer` for a timer or `Loop::stop_hook` for a hook; `close_then` when a close callback is needed"
    )]
    pub fn close(&mut self, handle: impl Into<Handle>) -> bool {
        self.close_handle(handle.into(), None)
    }

    fn close_handle(&mut self, handle: Handle, on_close: Option<Task>) -> bool {
        let stopped = match handle {
            Handle::Timer(id) => self.clear_timer(id),
            Handle::Hook(id) => self.stop_hook(id),
        };
        if stopped {
            self.closing.push_back(on_close);
        }
        stopped
    }

    /// Queues `task` (or nothing but the keep-alive) for this turn's close
    /// phase, as a handle closed elsewhere (`net`) needs.
    pub(crate) fn push_closing(&mut self, task: Option<Task>) {
        self.closing.push_back(task);
    }

    /// Runs the hooks of `phase` that were active when the phase began.
    #[inline]
    pub(crate) fn run_hooks(&mut self, phase: Phase) {
        if self.hooks.order[phase as usize].is_empty() {
            return;
        }
        self.run_hooks_of(phase);
    }

    #[inline(never)]
    fn run_hooks_of(&mut self, phase: Phase) {
        let mut running = std::mem::take(&mut self.hooks.running);
        running.extend_from_slice(&self.hooks.order[phase as usize]);
        for &id in &running {
            let Some(hook) = self.hooks.hooks.get_mut(id.slot) else {
                continue;
            };
            let Some(mut callback) = hook.callback.take() else {
                continue;
            };
            self.metrics.callbacks.hooks += 1;
            let site = Some(hook.site);
            let returned = self.catching_as(crate::diag::Kind::Hook, site, move |lp: &mut Loop| {
                callback(lp, id);
                callback
            });
            match returned {
                Ok(callback) => {
                    if let Some(hook) = self.hooks.hooks.get_mut(id.slot) {
                        hook.callback = Some(callback);
                    }
                }
                // Its closure was dropped in the unwind: a hook without a
                // callback would keep the loop alive doing nothing (and an
                // idle one would keep the poll phase from blocking), so it
                // stops, before the handler hears of the panic or, without
                // one, the panic leaves `run()`.
                Err(payload) => {
                    self.stop_hook(id);
                    self.panicked(payload);
                }
            }
            self.drain_ticks();
        }
        running.clear();
        self.hooks.running = running;
    }
}

impl HookId {
    /// The hook's number, as [`crate::diag::HandleInfo::id`] lists it.
    pub fn raw(self) -> u64 {
        crate::slab::raw(self.slot)
    }
}

impl ImmediateId {
    /// The immediate's number, as [`crate::diag::HandleInfo::id`] lists it.
    pub fn raw(self) -> u64 {
        crate::slab::raw(self.slot)
    }
}

impl Loop {
    /// The hooks, for [`Loop::handles`].
    pub(crate) fn list_hooks(&self, listing: &mut crate::diag::Listing) {
        for (slot, hook) in self.hooks.hooks.iter() {
            listing.add(
                crate::diag::Kind::Hook,
                crate::slab::raw(slot),
                hook.referenced,
                hook.referenced,
                Some(hook.site),
            );
        }
    }
}
