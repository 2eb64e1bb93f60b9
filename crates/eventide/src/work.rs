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
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use eventide_pool::{
    Completer, Completions, Job, JobError, MAX_THREADS, Pool, PoolBuilder, Submitter,
    THREADPOOL_SIZE_ENV,
};

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
    /// Queued in the slow lane (for the metrics).
    slow: bool,
    /// When the job was queued, if its queue wait is measured (one job in
    /// `metrics::QUEUE_WAIT_SAMPLING`); set before the pool sees the item.
    queued_at: Option<Instant>,
    /// The measured wait in ns, written by the worker that claimed the
    /// job (before the completion that hands the item back); `u64::MAX`
    /// while not measured.
    waited_ns: AtomicU64,
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
    /// Loop thread, after a successful cancel (or when the loop is
    /// dropped, to drop `after` there): takes `after` out, as a closure
    /// that calls it with [`Error::Cancelled`].
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
        // SAFETY: as `state` above; `queued_at` is not written after the
        // item was given to the pool, and `waited_ns` is an atomic.
        let header = unsafe { &(*item).header };
        if let Some(queued_at) = header.queued_at {
            let waited = u64::try_from(queued_at.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
            header.waited_ns.store(waited, Ordering::Relaxed);
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
    /// Loop thread; `header` is a live `Item<F, R, A>`. A worker may run
    /// it at the same time (when the loop is dropped under a running job):
    /// a worker touches only the state and the cell, never `after`.
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

/// Where the loop's jobs go: its own pool, or one shared with other loops.
enum Target {
    /// The loop's own pool.
    Own(Pool<JobPtr>),
    /// A pool shared with other loops: each job delivers itself through
    /// this loop's inbox ([`Routed`]) into the loop's completion channel.
    Shared { pool: SharedPool, inbox: Arc<Inbox> },
}

/// The pool, its completions, and the requests in flight.
///
/// Field order matters: fields drop in declaration order, so the
/// submitter hands back what it holds, an own pool shuts down and joins
/// its threads, and only then are the items still owned by `requests`
/// freed. (The `Drop` impl first shuts an own pool down with a bounded
/// wait; if that leaves workers running, the items they may touch are
/// leaked instead. On a shared pool it hands the items the pool still
/// holds to the inbox: see [`orphan_all`].)
pub(crate) struct Work {
    /// The loop thread's own deque into its own pool; `None` on a shared
    /// pool (a pool has one submitter).
    submitter: Option<Submitter<JobPtr>>,
    target: Target,
    /// The own pool's completions, or, on a shared pool, the loop's own
    /// channel (`eventide_pool::channel`) that its jobs deliver into: the
    /// loop drains both the same way, at the same cost.
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
    /// Own pool: shuts the pool down, waiting at most `drop_timeout` for
    /// the jobs still running (a FIFO's open, a hung `getaddrinfo`, a user
    /// job that never returns would otherwise hold the drop forever).
    /// Workers still in a job then are detached by the pool; such a worker
    /// may still write into the item of its job, and may still take the
    /// jobs queued on its own deque (to fail them, touching only their
    /// headers' ids), so every item the pool has not handed back is leaked
    /// rather than freed: its memory, work closure and `after` stay
    /// allocated, never dropped. The items it did hand back are freed as
    /// usual. Then the fields drop in order (see [`Work`]).
    ///
    /// Shared pool: see [`orphan_all`]; then the loop lets go of the
    /// pool, and if it held the last handle, shuts it down as an own pool.
    fn drop(&mut self) {
        let pool = match &mut self.target {
            Target::Own(pool) => pool,
            Target::Shared { inbox, pool } => {
                let inbox = Arc::clone(inbox);
                // A placeholder that holds no pool: the loop's handle is
                // released below, after the items are handed over.
                let pool = std::mem::replace(pool, SharedPool::placeholder());
                orphan_all(&inbox, &mut self.completions, &mut self.requests);
                pool.release(self.drop_timeout);
                return;
            }
        };
        let detached = pool.shut_down_within(self.drop_timeout);
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

/// Hands a dropped loop's requests over to its inbox, all under the
/// inbox's lock (so no delivery comes in between): the items the pool has
/// delivered are taken back; the others are cancelled if still queued (the
/// worker that reaches one skips it), their `after` is taken out, and they
/// become orphans, which the delivery of each frees on whatever thread
/// delivers it (what is left of them, the work closure or its result, is
/// `Send`). Only then, with the lock released and every item the pool
/// holds an orphan, are the taken-back items and the `after`s dropped,
/// here on the loop thread (they may be `!Send`): a `Drop` of the user's
/// that panics cannot leave an item the pool holds in the loop's hands.
fn orphan_all(
    inbox: &Inbox,
    completions: &mut Completions<JobPtr>,
    requests: &mut Slab<OwnedItem>,
) {
    let mut delivered = Vec::new();
    let mut afters = Vec::new();
    let mut state = inbox.lock();
    while let Some((handle, _)) = completions.next_in_round() {
        delivered.extend(requests.remove(id_to_slot(handle.id())));
    }
    completions.drain(|handle, _| {
        delivered.extend(requests.remove(id_to_slot(handle.id())));
    });
    let slots: Vec<SlotId> = requests.iter().map(|(slot, _)| slot).collect();
    let mut orphans = HashMap::with_capacity(slots.len());
    for slot in slots {
        let Some(item) = requests.remove(slot) else {
            continue;
        };
        let header = item.header();
        let _ =
            header
                .state
                .compare_exchange(QUEUED, CANCELLED, Ordering::AcqRel, Ordering::Acquire);
        // SAFETY: loop thread; the item is alive (the pool has not handed
        // it back, and cannot free it: it is not an orphan yet);
        // `take_cancelled` reaches only `after`, which no worker touches.
        afters.extend(unsafe { (header.vtable.take_cancelled)(item.0) });
        orphans.insert(slot_to_id(slot), Orphan(item.into_raw()));
    }
    let count = orphans.len();
    *state = Some(orphans);
    drop(state);
    if count > 0 {
        log::debug!(
            "eventide: a loop was dropped with {count} request(s) on its shared pool: \
             cancelled if queued, freed when the pool lets go of them"
        );
    }
    drop(delivered);
    drop(afters);
}

/// How long dropping a loop waits for its pool's running jobs by default.
pub(crate) const DROP_TIMEOUT: Duration = Duration::from_secs(1);

impl Work {
    /// A pool whose completions wake the loop through `shared` (only when
    /// it sleeps: see the handle module): `threads` threads of its own
    /// (validated by the caller; `EVENTIDE_THREADPOOL_SIZE` or 4 when
    /// `None`), or the shared `pool`.
    pub(crate) fn new(
        shared: Arc<Shared>,
        threads: Option<usize>,
        pool: Option<SharedPool>,
        drop_timeout: Duration,
    ) -> Result<Work> {
        let notify = move || shared.wake_if_sleeping();
        let (submitter, target, completions) = match pool {
            Some(pool) => {
                let (completer, completions) = eventide_pool::channel(notify);
                let inbox = Arc::new(Inbox {
                    orphans: Mutex::new(None),
                    completer,
                });
                (None, Target::Shared { pool, inbox }, completions)
            }
            None => {
                let threads = match threads {
                    Some(threads) => threads,
                    None => threads_from_env()?,
                };
                let (pool, completions) = PoolBuilder::new()
                    .threads(threads)
                    .thread_name("eventide-pool")
                    .notifier(notify)
                    .build()?;
                let submitter = pool.submitter().expect("a new pool's submitter is free");
                (Some(submitter), Target::Own(pool), completions)
            }
        };
        Ok(Work {
            submitter,
            target,
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

    /// This loop's jobs not started by a worker yet: (normal, slow).
    pub(crate) fn queued(&self) -> (usize, usize) {
        let mut queued = [0; 2];
        for (_, item) in self.requests.iter() {
            let header = item.header();
            if header.state.load(Ordering::Acquire) == QUEUED {
                queued[usize::from(header.slow)] += 1;
            }
        }
        (queued[0], queued[1])
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
        if let Some(submitter) = &mut self.submitter
            && submitter.in_burst()
        {
            submitter.end_burst();
        }
    }

    /// Whether callbacks are ready to run without waiting for the pool: a
    /// cancel left an `after`, or a panic cut the last round of
    /// completions short. The poll phase must not block.
    pub(crate) fn has_ready(&self) -> bool {
        !self.cancelled.is_empty() || self.completions.in_round()
    }

    /// Queues item `header` under request `id` where the loop's normal
    /// jobs do not go through its submitter: slow I/O, or a shared pool.
    fn submit_elsewhere(&self, id: u64, header: NonNull<Header>, class: WorkClass) {
        match &self.target {
            Target::Own(pool) => {
                pool.submit_slow_io_with_id(id, JobPtr(header));
            }
            Target::Shared { pool, inbox } => {
                let job = Routed {
                    item: JobPtr(header),
                    id,
                    inbox: Some(Arc::clone(inbox)),
                };
                match class {
                    WorkClass::Normal => pool.get().submit_with_id(id, job),
                    WorkClass::SlowIo => pool.get().submit_slow_io_with_id(id, job),
                };
            }
        }
    }
}

/// `EVENTIDE_THREADPOOL_SIZE`, or [`eventide_pool::DEFAULT_THREADS`] when
/// unset or blank.
///
/// # Errors
///
/// [`Error::InvalidConfig`] naming the variable when it holds anything
/// but a whole number from 1 to 1024.
pub(crate) fn threads_from_env() -> Result<usize> {
    let builder = PoolBuilder::from_env();
    match builder.config_warning() {
        None => Ok(builder.thread_count()),
        Some(_) => Err(Error::InvalidConfig {
            setting: THREADPOOL_SIZE_ENV,
            value: std::env::var_os(THREADPOOL_SIZE_ENV)
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
            expected: format!("a whole number from 1 to {MAX_THREADS}"),
        }),
    }
}

/// Checks a thread count set in code (`setting` names the method).
pub(crate) fn check_threads(setting: &'static str, threads: usize) -> Result<usize> {
    if (1..=MAX_THREADS).contains(&threads) {
        Ok(threads)
    } else {
        Err(Error::InvalidConfig {
            setting,
            value: threads.to_string(),
            expected: format!("a number from 1 to {MAX_THREADS}"),
        })
    }
}

/// A blocking pool that several loops share (libuv has one per process):
/// N loops on one `SharedPool` of 4 threads run 4 pool threads, not 4N.
/// Give it to each loop with [`LoopBuilder::pool`](crate::LoopBuilder::pool).
///
/// A clone is another handle to the same pool. Each loop's work comes
/// back to that loop only, whatever thread ran it: every job carries its
/// loop's inbox. The pool lives while a handle or a loop using it does;
/// dropping one loop does not disturb the others. When a loop is dropped
/// with work still on the pool, its queued jobs are cancelled (skipped,
/// their `after` dropped without running, on the loop's thread), and a
/// job that is running finishes on its pool thread, which then frees it.
/// When the last user goes (handle or loop), the pool shuts down as a
/// loop's own pool does: if a loop lets it go, waiting at most that loop's
/// [`LoopBuilder::pool_drop_timeout`](crate::LoopBuilder::pool_drop_timeout)
/// for running jobs; if the last handle is dropped elsewhere, waiting for
/// them.
///
/// The submission is a little dearer than on a loop's own pool (a shared
/// queue, a wakeup per job rather than per burst), and each completion
/// takes a lock the loops share with the pool.
///
/// ```
/// use eventide::{Loop, SharedPool};
///
/// let pool = SharedPool::new(2)?;
/// let handles: Vec<_> = (0..2)
///     .map(|i| {
///         let pool = pool.clone();
///         std::thread::spawn(move || -> eventide::Result<u64> {
///             let mut lp = Loop::builder().pool(pool).build()?;
///             let got = std::rc::Rc::new(std::cell::Cell::new(0));
///             let g = got.clone();
///             lp.queue_work(move || i * 10, move |_, r| g.set(r.unwrap()));
///             lp.run()?;
///             Ok(got.get())
///         })
///     })
///     .collect();
/// let results: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap().unwrap()).collect();
/// assert_eq!(results, [0, 10]);
/// assert_eq!(pool.threads(), 2);
/// # Ok::<(), eventide::Error>(())
/// ```
#[derive(Clone)]
pub struct SharedPool {
    /// `None` only in the placeholder a dropped loop leaves behind.
    pool: Option<Arc<Pool<Routed>>>,
}

impl SharedPool {
    /// A pool of `threads` threads (started on the first job), or as many
    /// as `EVENTIDE_THREADPOOL_SIZE` says when it is set: the variable
    /// overrides the code, as for [`LoopBuilder::pool_threads`](crate::LoopBuilder::pool_threads).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming `SharedPool::new` when `threads`
    /// is outside 1..=1024, or naming the variable when its value is not
    /// a whole number in that range.
    pub fn new(threads: usize) -> Result<SharedPool> {
        // The variable overrides the code, as for a loop's own pool.
        let threads = if std::env::var_os(THREADPOOL_SIZE_ENV).is_some_and(|v| !v.is_empty()) {
            threads_from_env()?
        } else {
            check_threads("SharedPool::new", threads)?
        };
        let (pool, _completions) = PoolBuilder::new()
            .threads(threads)
            .thread_name("eventide-pool")
            .discard_results()
            .build::<Routed>()?;
        Ok(SharedPool {
            pool: Some(Arc::new(pool)),
        })
    }

    /// A pool of as many threads as `EVENTIDE_THREADPOOL_SIZE` says, or 4
    /// when it is unset.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming the variable when it holds anything
    /// but a whole number from 1 to 1024.
    pub fn from_env() -> Result<SharedPool> {
        SharedPool::new(threads_from_env()?)
    }

    /// The number of threads the pool runs once started.
    pub fn threads(&self) -> usize {
        self.pool.as_ref().map_or(0, |pool| pool.threads())
    }

    /// The number of threads started so far (0 before the first job).
    pub fn started_threads(&self) -> usize {
        self.pool.as_ref().map_or(0, |pool| pool.started_threads())
    }

    /// Whether `self` and `other` are handles to the same pool.
    pub fn same_pool(&self, other: &SharedPool) -> bool {
        match (&self.pool, &other.pool) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    fn placeholder() -> SharedPool {
        SharedPool { pool: None }
    }

    fn get(&self) -> &Pool<Routed> {
        self.pool
            .as_ref()
            .expect("only a dropped loop holds no pool")
    }

    /// Lets go of this handle: the last one shuts the pool down, waiting
    /// at most `timeout` for running jobs.
    fn release(mut self, timeout: Duration) {
        if let Some(pool) = self.pool.take().and_then(Arc::into_inner) {
            pool.shut_down_within(timeout);
        }
    }
}

impl fmt::Debug for SharedPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedPool")
            .field("threads", &self.threads())
            .field("started_threads", &self.started_threads())
            .finish()
    }
}

/// A loop's inbox on a shared pool: where its jobs deliver themselves.
///
/// While the loop lives, a delivery goes into the loop's completion
/// channel, which wakes the loop if it sleeps. Once the loop is dropped,
/// `orphans` holds the items the pool still had, and a delivery frees its
/// item instead. The lock makes the two exclusive: a delivery never lands
/// in the channel of a loop that has already handed its items over.
pub(crate) struct Inbox {
    /// `Some` once the loop is gone: its items the pool still holds.
    orphans: Mutex<Option<HashMap<u64, Orphan>>>,
    completer: Completer<JobPtr>,
}

/// An item of a dropped loop, its `after` already dropped.
struct Orphan(NonNull<Header>);

// SAFETY: an orphan's `after` was taken out and dropped on its loop's
// thread (see `orphan_all`); what is left, the header, the work closure or
// its result, is `Send` (`queue_work_in` requires it), so the item may be
// freed on any thread.
unsafe impl Send for Orphan {}

impl Orphan {
    fn free(self) {
        // SAFETY: the pool has handed the item back (its job was delivered)
        // and its loop is gone, so this is its only owner; `after` is gone.
        unsafe { (self.0.as_ref().vtable.free)(self.0) }
    }
}

impl Inbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<HashMap<u64, Orphan>>> {
        // Nothing panics while holding it but an allocation failure; the
        // state is consistent between statements anyway.
        self.orphans.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A job of this inbox's loop is done (or will never run): from a
    /// pool thread, or the thread that shuts the pool down.
    fn deliver(&self, id: u64, result: std::result::Result<JobPtr, JobError>) {
        let mut orphans = self.lock();
        match orphans.as_mut() {
            None => self.completer.complete(id, result),
            Some(orphans_now) => {
                let orphan = orphans_now.remove(&id);
                drop(orphans);
                if let Some(orphan) = orphan {
                    orphan.free();
                }
            }
        }
    }
}

/// A job on a shared pool: the item, and the inbox its completion goes
/// to. It reports itself exactly once: from `run`, or from `Drop` when the
/// pool drops it unrun (at shutdown).
pub(crate) struct Routed {
    item: JobPtr,
    id: u64,
    inbox: Option<Arc<Inbox>>,
}

impl Job for Routed {
    type Output = ();

    fn run(mut self) {
        let Some(inbox) = self.inbox.take() else {
            return;
        };
        let header = self.item.0;
        // The pool would catch a panic, but drops its report (see
        // `PoolBuilder::discard_results`): catch it here to route it.
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: the header belongs to a live item its loop gave the
            // pool (a dropped loop's items live on as orphans until
            // delivered), and the pool runs each job once.
            unsafe { (header.as_ref().vtable.run)(header) }
        }));
        let result = match outcome {
            Ok(()) => Ok(JobPtr(header)),
            Err(payload) => Err(JobError::Panicked {
                message: panic_message(payload),
            }),
        };
        inbox.deliver(self.id, result);
    }
}

impl Drop for Routed {
    fn drop(&mut self) {
        if let Some(inbox) = self.inbox.take() {
            inbox.deliver(self.id, Err(JobError::ShutDown));
        }
    }
}

/// A caught panic's message, as the pool gives it.
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(message) => *message,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(message) => (*message).to_owned(),
            Err(_) => "<non-string panic payload>".to_owned(),
        },
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
        let slow = class == WorkClass::SlowIo;
        let sampled = self.metrics.lanes[usize::from(slow)].sample_next();
        let item = Box::new(Item {
            header: Header {
                vtable: &Item::<W, R, A>::VTABLE,
                state: AtomicU8::new(QUEUED),
                slow,
                queued_at: sampled.then(Instant::now),
                waited_ns: AtomicU64::new(u64::MAX),
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
        match (&mut work.submitter, class) {
            // The loop ends the burst after the running callback (or at
            // the next turn), see `Loop::guarded`.
            (Some(submitter), WorkClass::Normal) => {
                submitter.submit_in_burst(id, JobPtr(header));
            }
            _ => work.submit_elsewhere(id, header, class),
        }
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
    // Inlined into both compilations of the turn loop (metrics: with and
    // without phase timing), as into the one loop there was before.
    #[inline(always)]
    pub(crate) fn run_work_completions(&mut self) {
        if !self.work.completions_due() {
            return;
        }
        if self.work.completions.is_due() {
            // Continues a round a panic cut short, or starts one.
            self.work.completions.start_round();
        }
        // One at a time, straight from the pool's lanes (or the loop's
        // channel, on a shared pool): a callback's panic leaves the rest
        // of the round for the next poll phase.
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
            self.metrics.callbacks.pool += 1;
            let measured = item.header();
            if measured.queued_at.is_some() {
                let waited = measured.waited_ns.load(Ordering::Relaxed);
                if waited != u64::MAX {
                    let lane = &mut self.metrics.lanes[usize::from(measured.slow)];
                    lane.record(Duration::from_nanos(waited));
                }
            }
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
            self.metrics.callbacks.pool += 1;
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
