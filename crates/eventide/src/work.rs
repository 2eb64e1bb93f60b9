//! Work on the blocking pool, with its callback on the loop
//! (libuv's `uv_queue_work`).
//!
//! # One allocation per request
//!
//! A request is one heap block, an [`Item`], made on the loop thread: a
//! header (a vtable and the cancel state), the work closure (replaced by
//! its result when it has run) and the `after` callback. The loop's table
//! of requests owns the block; the pool carries a bare pointer to it (a
//! [`JobPtr`]) and touches only the header's state and the work cell.
//! The pool's completion comes back with the request's table id as its
//! handle id, so there is no map from job to request, no box for the
//! result, no shared cancel token: the block is opened, and freed, on the
//! loop thread that made it.
//!
//! `after` may hold `!Send` things (an `Rc`, say). It is never moved,
//! touched or dropped off the loop thread: the pool's pointer cannot reach
//! it, and the block is freed only by the loop, after the pool has handed
//! the pointer back or has been shut down and joined (see [`Work`]'s field
//! order).

use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use eventide_pool::{Completions, Job, JobError, Pool, PoolBuilder, Submitter};
use std::sync::Arc;

use crate::event_loop::Loop;
use crate::handle::Shared;
use crate::slab::{Slab, SlotId};
use crate::{Error, Result};

/// The request is queued: a worker or a cancel may claim it.
const QUEUED: u8 = 0;
/// A worker claimed it: it runs, or has run.
const RUNNING: u8 = 1;
/// A cancel claimed it: the worker that reaches it skips it, and its
/// `after` has been taken out to run with [`Error::Cancelled`].
const CANCELLED: u8 = 2;
/// As [`CANCELLED`], and that `after` has run (set by the loop; workers
/// only ever compare against [`QUEUED`]).
const CANCEL_DONE: u8 = 3;

/// The work closure, then its result.
enum WorkCell<F, R> {
    Job(F),
    Done(R),
    /// Taken (the closure is running, or panicked).
    Empty,
}

/// What every item starts with, whatever its closure types.
#[repr(C)]
struct Header {
    vtable: &'static ItemVtable,
    state: AtomicU8,
}

/// A callback ready to run on the loop.
type Deferred = Box<dyn FnOnce(&mut Loop)>;

/// The operations on an item of unknown type, monomorphized per
/// [`Item`] type.
struct ItemVtable {
    /// Pool thread: runs the work in place unless a cancel claimed it.
    run: unsafe fn(NonNull<Header>),
    /// Loop thread: frees the item, then calls its `after` (unless a cancel
    /// took it) with the result, or with `failure` when the pool says the
    /// work could not run or panicked.
    complete: unsafe fn(NonNull<Header>, &mut Loop, Option<JobError>),
    /// Loop thread, after a successful cancel: takes `after` out, as a
    /// closure that calls it with [`Error::Cancelled`].
    take_cancelled: unsafe fn(NonNull<Header>) -> Option<Deferred>,
    /// Loop thread: frees the item without calling `after`.
    free: unsafe fn(NonNull<Header>),
}

/// One request's heap block. `repr(C)` puts the header first, so a pointer
/// to the item is a pointer to its header.
#[repr(C)]
struct Item<F, R, A> {
    header: Header,
    /// Written only by the worker that claimed the item (or by the loop
    /// once the pool has handed the item back).
    cell: UnsafeCell<WorkCell<F, R>>,
    /// Loop thread only.
    after: Option<A>,
}

impl<F, R, A> Item<F, R, A>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
    A: FnOnce(&mut Loop, Result<R>) + 'static,
{
    const VTABLE: ItemVtable = ItemVtable {
        run: Self::run,
        complete: Self::complete,
        take_cancelled: Self::take_cancelled,
        free: Self::free,
    };

    /// # Safety
    ///
    /// `header` is the header of a live `Item<F, R, A>` whose pointer the
    /// pool got from [`Loop::queue_work_in`], called on a pool thread at
    /// most once (the pool runs a job once).
    unsafe fn run(header: NonNull<Header>) {
        let item = header.cast::<Self>().as_ptr();
        // SAFETY: the item is alive (the loop frees it only after the pool
        // hands the pointer back); `state` is an atomic, shared with the
        // loop's cancel, reached through a raw field projection so that no
        // reference covers `after`.
        let state = unsafe { &(*item).header.state };
        if state
            .compare_exchange(QUEUED, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        // SAFETY: winning the claim makes this worker the only one to touch
        // the cell until it hands the item back (the loop reads it only
        // after the completion, which the pool's completion queue orders
        // after this write).
        let cell = unsafe { &mut *(*item).cell.get() };
        if let WorkCell::Job(work) = std::mem::replace(cell, WorkCell::Empty) {
            // A panic here unwinds into the pool, which reports it with this
            // item's handle; the cell stays Empty.
            *cell = WorkCell::Done(work());
        }
    }

    /// # Safety
    ///
    /// Loop thread; `header` is a live `Item<F, R, A>` that the loop owns
    /// alone: the pool handed it back or will never touch it again. The
    /// item is freed.
    unsafe fn complete(header: NonNull<Header>, lp: &mut Loop, failure: Option<JobError>) {
        // SAFETY: the caller gives us sole ownership of a block made by
        // `Box::into_raw` for this very type.
        let item = unsafe { Box::from_raw(header.cast::<Self>().as_ptr()) };
        let Item { cell, after, .. } = *item;
        let Some(after) = after else {
            return;
        };
        let result = match (failure, cell.into_inner()) {
            (Some(failure), _) => Err(Error::from(failure)),
            (None, WorkCell::Done(value)) => Ok(value),
            (None, _) => Err(Error::NotRun("the work did not run".into())),
        };
        lp.invoke(move |lp| after(lp, result));
    }

    /// # Safety
    ///
    /// Loop thread; `header` is a live `Item<F, R, A>` that the loop has
    /// just claimed with a cancel, so no worker will touch it but for its
    /// state.
    unsafe fn take_cancelled(header: NonNull<Header>) -> Option<Deferred> {
        let item = header.cast::<Self>().as_ptr();
        // SAFETY: `after` is only ever reached from the loop thread, and
        // through this field projection no reference covers the parts a
        // worker may read.
        let after = unsafe { (*std::ptr::addr_of_mut!((*item).after)).take()? };
        Some(Box::new(move |lp: &mut Loop| {
            after(lp, Err(Error::Cancelled))
        }))
    }

    /// # Safety
    ///
    /// As [`Item::complete`]: the loop owns the item alone.
    unsafe fn free(header: NonNull<Header>) {
        // SAFETY: sole ownership of a block `Box::into_raw` made for this type.
        drop(unsafe { Box::from_raw(header.cast::<Self>().as_ptr()) });
    }
}

/// The pool's job: a pointer to an item's header.
struct JobPtr(NonNull<Header>);

// SAFETY: through a `JobPtr`, a pool thread reaches only the item's header
// (an atomic and a `'static` vtable) and, via `run`, its work cell, whose
// closure and result are `Send`. The `after` callback, which may be
// `!Send`, is never reached, moved or dropped off the loop thread: a
// `JobPtr` has no `Drop`, and the item is freed by the loop, which owns it.
unsafe impl Send for JobPtr {}

impl Job for JobPtr {
    type Output = JobPtr;

    fn run(self) -> JobPtr {
        // SAFETY: the header belongs to a live item the loop gave the pool,
        // and the pool runs each job once, on one of its threads.
        unsafe { (self.0.as_ref().vtable.run)(self.0) };
        self
    }
}

/// The loop's ownership of one item: frees it when dropped.
struct OwnedItem(NonNull<Header>, crate::diag::Site);

impl OwnedItem {
    fn header(&self) -> &Header {
        // SAFETY: the item lives as long as its owner; the header is only
        // shared (its state is atomic).
        unsafe { self.0.as_ref() }
    }

    /// Gives up ownership (to a `complete`, which frees the item).
    fn into_raw(self) -> NonNull<Header> {
        let raw = self.0;
        std::mem::forget(self);
        raw
    }
}

impl Drop for OwnedItem {
    fn drop(&mut self) {
        // SAFETY: an `OwnedItem` is dropped only when the pool no longer
        // holds the pointer: after its completion, or after the pool has
        // been shut down and joined (`Work`'s field order).
        unsafe { (self.header().vtable.free)(self.0) }
    }
}

/// A work request's handle, for [`Loop::cancel_work`]: a `Copy` key,
/// fine to drop (the work runs anyway). Used with another loop than its
/// own it is [`Error::ForeignHandle`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WorkId {
    slot: SlotId,
    loop_id: u32,
}

/// The class of pool work, as libuv has them. (Non-exhaustive: a class may
/// be added.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum WorkClass {
    /// File system and CPU work.
    #[default]
    Normal,
    /// Slow I/O (DNS): never more than half the pool's threads at once, so
    /// file work does not starve behind a hung resolver.
    SlowIo,
}

fn slot_to_id(slot: SlotId) -> u64 {
    u64::from(slot.generation) << 32 | u64::from(slot.index)
}

fn id_to_slot(id: u64) -> SlotId {
    SlotId {
        index: id as u32,
        generation: (id >> 32) as u32,
    }
}

/// The pool, its completions, and the requests in flight.
///
/// Field order matters: fields drop in declaration order, so the submitter
/// hands back what it holds, the pool shuts down and joins its threads, and
/// only then are the items still owned by `requests` freed. (The `Drop`
/// impl first shuts the pool down with a bounded wait; if that leaves
/// workers running, the items they may touch are leaked instead.)
pub(crate) struct Work {
    /// The loop thread's own deque into the pool.
    submitter: Submitter<JobPtr>,
    pool: Pool<JobPtr>,
    completions: Completions<JobPtr>,
    /// Every item the pool may still hold, by request.
    requests: Slab<OwnedItem>,
    /// Requests whose `after` has not run yet (a cancelled item stays in
    /// `requests` until the pool hands it back, without keeping the loop
    /// alive).
    live: usize,
    /// `after`s of cancelled requests, to run in the next poll phase.
    cancelled: VecDeque<(SlotId, Deferred)>,
    /// How long dropping the loop waits for jobs still running.
    drop_timeout: Duration,
}

impl Drop for Work {
    /// Shuts the pool down, waiting at most `drop_timeout` for the jobs
    /// still running (a FIFO's open, a hung `getaddrinfo`, a user job that
    /// never returns would otherwise hold the drop forever). Workers still
    /// in a job then are detached by the pool; such a worker may still
    /// write into the item of its job, and may still take the jobs queued
    /// on its own deque (to fail them, touching only their headers' ids),
    /// so every item the pool has not handed back is leaked rather than
    /// freed: its memory, work closure and `after` stay allocated, never
    /// dropped. The items it did hand back are freed as usual. Then the
    /// fields drop in order (see [`Work`]).
    fn drop(&mut self) {
        let detached = self.pool.shut_down_within(self.drop_timeout);
        if detached == 0 {
            return;
        }
        let requests = &mut self.requests;
        // What a round cut short by a panic still holds, then the rest.
        while let Some((handle, _)) = self.completions.next_in_round() {
            drop(requests.remove(id_to_slot(handle.id())));
        }
        self.completions.drain(|handle, _| {
            drop(requests.remove(id_to_slot(handle.id())));
        });
        let leaked = requests.len();
        std::mem::forget(std::mem::take(requests));
        log::warn!(
            "eventide: the loop was dropped while {detached} pool thread(s) still ran its work \
             after {:?}: they are detached, and the {leaked} work request(s) they may still \
             touch are leaked",
            self.drop_timeout
        );
    }
}

/// How long dropping a loop waits for its pool's running jobs by default.
pub(crate) const DROP_TIMEOUT: Duration = Duration::from_secs(1);

impl Work {
    /// A pool whose completions wake the loop through `shared` (only when
    /// it sleeps: see the handle module).
    pub(crate) fn new(
        shared: Arc<Shared>,
        threads: Option<usize>,
        drop_timeout: Duration,
    ) -> Result<Work> {
        let builder = PoolBuilder::from_env();
        if let Some(problem) = builder.config_warning() {
            log::warn!(
                "eventide: {problem}; using {} pool threads",
                builder.thread_count()
            );
        }
        let builder = match threads {
            Some(threads) => builder.threads(threads),
            None => builder,
        };
        let notify = move || shared.wake_if_sleeping();
        let (pool, completions) = builder
            .thread_name("eventide-pool")
            .notifier(notify)
            .build()?;
        let submitter = pool.submitter().expect("a new pool's submitter is free");
        Ok(Work {
            submitter,
            pool,
            completions,
            requests: Slab::default(),
            live: 0,
            cancelled: VecDeque::new(),
            drop_timeout,
        })
    }

    /// Requests whose `after` has yet to run: they keep the loop alive.
    pub(crate) fn in_flight(&self) -> usize {
        self.live
    }

    /// Whether the next poll phase has callbacks to run: the pool has
    /// announced completions that no drain has taken (it notifies only when
    /// this goes from false to true, so the loop must drain whenever it is
    /// set, even if an earlier drain took them, or it would never hear
    /// again), or a cancel left an `after` to run.
    pub(crate) fn completions_due(&self) -> bool {
        self.completions.is_due() || self.has_ready()
    }

    /// Wakes a pool worker for the jobs queued since the first of this
    /// burst, if need be (see `Submitter::submit_in_burst`).
    #[inline]
    pub(crate) fn end_burst(&mut self) {
        if self.submitter.in_burst() {
            self.submitter.end_burst();
        }
    }

    /// Whether callbacks are ready to run without waiting for the pool: a
    /// cancel left an `after`, or a panic cut the last round of
    /// completions short. The poll phase must not block.
    pub(crate) fn has_ready(&self) -> bool {
        !self.cancelled.is_empty() || self.completions.in_round()
    }
}

impl Loop {
    /// Runs `work` on the blocking pool, then `after` on the loop with its
    /// result (libuv's `uv_queue_work`): `Ok(value)`, or
    /// [`Error::Cancelled`] if [`Loop::cancel_work`] caught it queued, or
    /// [`Error::Panicked`] if it panicked. The request keeps the loop alive
    /// until `after` has run; `after` runs in the poll phase.
    #[track_caller]
    pub fn queue_work<R: Send + 'static>(
        &mut self,
        work: impl FnOnce() -> R + Send + 'static,
        after: impl FnOnce(&mut Loop, Result<R>) + 'static,
    ) -> WorkId {
        self.queue_work_in(WorkClass::Normal, work, after)
    }

    /// [`Loop::queue_work`] in a chosen class of work.
    #[track_caller]
    pub fn queue_work_in<R, W, A>(&mut self, class: WorkClass, work: W, after: A) -> WorkId
    where
        R: Send + 'static,
        W: FnOnce() -> R + Send + 'static,
        A: FnOnce(&mut Loop, Result<R>) + 'static,
    {
        let item = Box::new(Item {
            header: Header {
                vtable: &Item::<W, R, A>::VTABLE,
                state: AtomicU8::new(QUEUED),
            },
            cell: UnsafeCell::new(WorkCell::<W, R>::Job(work)),
            after: Some(after),
        });
        let header = NonNull::from(Box::leak(item)).cast::<Header>();
        let work = &mut self.work;
        let slot = work
            .requests
            .insert(OwnedItem(header, std::panic::Location::caller()));
        work.live += 1;
        let id = slot_to_id(slot);
        match class {
            // The loop ends the burst after the running callback (or at
            // the next turn), see `Loop::guarded`.
            WorkClass::Normal => work.submitter.submit_in_burst(id, JobPtr(header)),
            WorkClass::SlowIo => work.pool.submit_slow_io_with_id(id, JobPtr(header)),
        };
        WorkId {
            slot,
            loop_id: self.id,
        }
    }

    /// Cancels work that has not started (libuv's `uv_cancel`): its `after`
    /// then runs with [`Error::Cancelled`], in the next poll phase.
    /// Cancelling it again before then is a no-op (`Ok`).
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyRunning`] when a pool thread has started (or
    /// finished) it: its `after` gets the real result.
    /// [`Error::Stale`] when its `after` has already run;
    /// [`Error::ForeignHandle`] for another loop's work.
    pub fn cancel_work(&mut self, id: WorkId) -> Result<()> {
        if id.loop_id != self.id {
            return Err(Error::ForeignHandle {
                what: "work request",
            });
        }
        let stale = Error::Stale {
            what: "work request",
        };
        let item = self.work.requests.get(id.slot).ok_or(stale)?;
        let header = item.header();
        match header
            .state
            .compare_exchange(QUEUED, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                // SAFETY: the cancel claimed the item: no worker will touch
                // anything but its state; this is the loop thread.
                let after = unsafe { (header.vtable.take_cancelled)(item.0) };
                if let Some(after) = after {
                    self.work.cancelled.push_back((id.slot, after));
                }
                Ok(())
            }
            // Its `after` waits for the poll phase with the cancel.
            Err(CANCELLED) => Ok(()),
            // It ran; the item waits only for the pool to hand it back.
            Err(CANCEL_DONE) => Err(Error::Stale {
                what: "work request",
            }),
            Err(_) => Err(Error::AlreadyRunning),
        }
    }

    /// Runs the callbacks of the work the pool has finished, then those of
    /// cancelled work.
    pub(crate) fn run_work_completions(&mut self) {
        if !self.work.completions_due() {
            return;
        }
        if self.work.completions.is_due() {
            // Continues a round a panic cut short, or starts one.
            self.work.completions.start_round();
        }
        // One at a time, straight from the pool's lanes: a callback's panic
        // leaves the rest of the round for the next poll phase.
        while let Some((handle, result)) = self.work.completions.next_in_round() {
            let failure = result.err();
            let Some(item) = self.work.requests.remove(id_to_slot(handle.id())) else {
                // Not ours: the pool never hands back a request twice.
                debug_assert!(false, "a work completion for no request");
                continue;
            };
            if item.header().state.load(Ordering::Acquire) >= CANCELLED {
                // Its `after` ran (or waits in `cancelled`) with the cancel.
                drop(item);
                continue;
            }
            self.work.live -= 1;
            self.note_call(crate::diag::Kind::Work, Some(item.1));
            let header = item.into_raw();
            // SAFETY: the pool has handed the item back (or reported that it
            // failed without it), so the loop owns it alone; `complete`
            // frees it.
            unsafe { (header.as_ref().vtable.complete)(header, self, failure) };
        }
        while let Some((slot, after)) = self.work.cancelled.pop_front() {
            if let Some(item) = self.work.requests.get(slot) {
                item.header().state.store(CANCEL_DONE, Ordering::Release);
                self.note_call(crate::diag::Kind::Work, Some(item.1));
            }
            self.work.live -= 1;
            self.invoke(after);
        }
    }
}

impl Loop {
    /// The work requests whose `after` has not run, for [`Loop::handles`].
    pub(crate) fn list_work(&self, listing: &mut crate::diag::Listing) {
        for (slot, item) in self.work.requests.iter() {
            // A cancelled request whose `after` ran waits only for the
            // pool to hand it back: it no longer counts.
            if item.header().state.load(Ordering::Acquire) == CANCEL_DONE {
                continue;
            }
            listing.add(
                crate::diag::Kind::Work,
                slot_to_id(slot),
                true,
                true,
                Some(item.1),
            );
        }
    }
}
