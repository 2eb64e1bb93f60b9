//! Futures on the loop: a local executor ([`Loop::spawn_local`],
//! [`Loop::block_on`]) and awaitable forms of what the loop does (timers,
//! pool work, the file system, sockets).
//!
//! ```
//! use std::time::Duration;
//! use eventide::task::{self, fs};
//!
//! let mut lp = eventide::Loop::new()?;
//! let sum = lp.block_on(async {
//!     task::sleep(Duration::from_millis(1)).await; // a loop timer
//!     let bytes = fs::read_file("Cargo.toml").await?; // io_uring or the pool
//!     task::work(move || bytes.iter().map(|&b| u64::from(b)).sum::<u64>()).await
//! })??;
//! assert!(sum > 0);
//! # Ok::<(), eventide::Error>(())
//! ```
//!
//! A `Loop` never leaves its thread, which the executor relies on:
//!
//! ```compile_fail
//! fn send<T: Send>(_: T) {}
//! send(eventide::Loop::new().unwrap());
//! ```
//!
//! # The executor
//!
//! A task is a `!Send`, `'static` future owned by the loop. It is polled
//! from the loop's **microtask queue**: when a task is woken on the loop
//! thread, a poll of it joins that queue, FIFO with
//! [`Loop::queue_microtask`], after the next-ticks, exactly where Node runs
//! a settled promise's reactions. So `await` in a task resumes where an
//! `await` in a Node `async` function would: after the callback that
//! settled it and its next-ticks, before any other callback, timer or I/O.
//!
//! - **Spawning** queues the first poll as a microtask (Node runs an
//!   `async` function's first step inside the call; Rust futures are lazy,
//!   so the first step runs as `queueMicrotask(() => f())` would).
//! - **Wakers.** A task's header (shared by its wakers) has a `queued`
//!   flag: a wake that finds it set costs nothing; one that sets it, on
//!   the loop thread, pushes the header on the loop's queue of woken
//!   tasks (no allocation: a reference-count increment and a `VecDeque`
//!   push), which is moved into the microtask queue before the next
//!   microtask is queued or run, keeping the FIFO order. A wake from
//!   another thread posts to the loop through its cross-thread wake-up
//!   (the path of [`crate::LoopHandle::post`]). The flag is cleared just
//!   before each poll, so a wake during or after the poll polls again:
//!   no wake-up is lost.
//! - **Liveness**: a pending task does not keep the loop alive, as a
//!   pending promise does not keep Node alive; only what it waits on (a
//!   timer, a socket, work on the pool) does. [`Loop::run`] may thus
//!   return with tasks still pending; they stay, and go on in a later run
//!   if what they wait for happens.
//! - **Panics**: a task's panic is caught; its [`JoinHandle`] (or its
//!   [`JoinHandle::on_done`] callback) gets [`TaskError::Panicked`] and
//!   the loop goes on. A task nobody listens to any more (its handle
//!   dropped, no callback) that panics is Node's unhandled rejection: the
//!   panic goes to the loop's panic handler, or without one out of
//!   [`Loop::run`].
//! - **Dropping a [`JoinHandle`] detaches** the task (as tokio's): it runs
//!   on. [`JoinHandle::abort`] cancels it: the future is dropped in the
//!   next microtask poll, and the handle gets [`TaskError::Aborted`].
//!
//! # Awaitable forms
//!
//! The futures of this module ([`sleep`], [`work`], [`fs`], [`net`], ...)
//! reach the loop through the task that polls them: they must be polled
//! by a task of a loop (inside [`Loop::spawn_local`] or
//! [`Loop::block_on`]), and panic otherwise, as tokio's do outside a
//! runtime. [`with_loop`] gives a task the loop for a moment, to use the
//! callback API from `async` code. Dropping one of these futures cancels
//! its operation where the loop can (a timer is cleared, queued work is
//! cancelled, a listener closed, an io_uring file read or write
//! cancelled in the kernel); an operation the kernel still holds
//! completes into the loop's own buffers, which the callback owns, and
//! its result is dropped: no buffer the kernel may still write is ever
//! freed early.

use std::cell::{Cell, RefCell, UnsafeCell};
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, ThreadId};

use crate::event_loop::{Loop, Panic, Task};
use crate::handle::Shared;
use crate::slab::{Slab, SlotId};
use crate::{Error, Result};

pub mod fs;
pub mod net;
mod oneshot;
pub(crate) mod stream_io;
mod time;
mod work;

pub use time::{Immediate, Interval, Sleep, Timeout, immediate, interval, sleep, timeout};
pub use work::{Work, work};

/// One entry of the loop's microtask queue: a callback
/// ([`Loop::queue_microtask`]) or the poll of a woken task.
pub(crate) enum Micro {
    /// A queued callback.
    Call(Task),
    /// A woken task, to poll.
    Poll(Arc<Header>),
}

thread_local! {
    /// This thread's id, read once.
    static THREAD: ThreadId = thread::current().id();
    /// The loop whose task is being polled on this thread (null outside
    /// a poll, and inside [`with_loop`]'s closure).
    static CURRENT: Cell<*mut Loop> = const { Cell::new(std::ptr::null_mut()) };
}

/// What a loop's executor shares with its tasks' wakers.
struct ExecShared {
    /// The loop's thread (a `Loop` is not `Send`: it never leaves it).
    owner: ThreadId,
    /// Tasks woken on the loop thread, not yet moved into the microtask
    /// queue. Touched only on `owner`.
    woken: UnsafeCell<VecDeque<Arc<Header>>>,
    /// The loop's cross-thread wake-up. Weak: a wake posted there holds
    /// a header, which holds this; a strong reference would be a cycle
    /// keeping both alive after the loop is gone.
    shared: std::sync::Weak<Shared>,
}

// SAFETY: `woken` is the only field that is not `Sync`; it is read and
// written only on the `owner` thread (every access checks `on_owner` or
// runs in a method of the loop, which never leaves that thread), so no two
// threads ever touch it. What it holds (`Arc<Header>`) is `Send`.
unsafe impl Sync for ExecShared {}

impl ExecShared {
    fn on_owner(&self) -> bool {
        // During the thread's TLS teardown: treated as another thread (a
        // post, harmless), never a panic in a waker.
        THREAD.try_with(|id| *id == self.owner).unwrap_or(false)
    }

    /// Pushes a woken task. Only on the loop thread.
    fn push_woken(&self, header: Arc<Header>) {
        debug_assert!(self.on_owner());
        // SAFETY: on the owner thread (checked by every caller), and no
        // reference into `woken` lives across a call that could come back
        // here: each access is one push, drain or length read.
        unsafe { (*self.woken.get()).push_back(header) }
    }
}

/// The part of a task its wakers hold: where it is, whether it is queued.
pub(crate) struct Header {
    slot: SlotId,
    exec: Arc<ExecShared>,
    /// A poll of this task is queued (or the task is being spawned).
    queued: AtomicBool,
    /// [`JoinHandle::abort`] was called.
    aborted: AtomicBool,
}

impl Header {
    /// Queues a poll, unless one is queued already.
    fn schedule(self: &Arc<Self>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        if self.exec.on_owner() {
            self.exec.push_woken(Arc::clone(self));
        } else {
            Arc::clone(self).post();
        }
    }

    /// [`Header::schedule`] for a waker woken by value: the waker's own
    /// reference is the one queued (no count taken and given back).
    fn schedule_owned(self: Arc<Self>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        if self.exec.on_owner() {
            let woken = self.exec.woken.get();
            // SAFETY: on the owner thread (just checked), as
            // `push_woken`; the queue lives in the `ExecShared` this
            // header holds, which stays alive once the header is moved
            // into that queue (moving the `Arc` moves a pointer).
            unsafe { (*woken).push_back(self) }
        } else {
            self.post();
        }
    }

    /// Queues a poll from another thread, through the loop's wake-up.
    fn post(self: Arc<Self>) {
        let Some(shared) = self.exec.shared.upgrade() else {
            return; // The loop is gone.
        };
        // The posted closure runs on the loop thread; if the loop is
        // gone the closure (and the header) is just dropped.
        shared.post(Box::new(move |_lp: &mut Loop| {
            let exec = Arc::clone(&self.exec);
            exec.push_woken(self);
        }));
    }
}

impl Wake for Header {
    fn wake(self: Arc<Self>) {
        self.schedule_owned();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.schedule();
    }
}

/// A task's future, its output's type erased.
trait RawTask {
    /// Polls the future, catching its panic. `Ready` once it is done, with
    /// what must happen next.
    fn poll_task(&mut self, cx: &mut Context<'_>) -> Poll<Finish>;
    /// The task is dropped unfinished: tells its handle, and hands back
    /// the `on_done` callback to run.
    fn cancel(&mut self) -> Option<Task>;
}

/// What a finished task leaves to the executor.
struct Finish {
    /// The `on_done` callback, to queue as a microtask.
    then: Option<Task>,
    /// A panic nobody listens to: Node's unhandled rejection.
    unhandled: Option<Panic>,
}

/// The loop's executor: its tasks and the woken ones.
pub(crate) struct Executor {
    exec: Arc<ExecShared>,
    tasks: Slab<Option<Box<dyn RawTask>>>,
}

impl Executor {
    pub(crate) fn new(shared: Arc<Shared>) -> Executor {
        Executor {
            exec: Arc::new(ExecShared {
                owner: thread::current().id(),
                woken: UnsafeCell::new(VecDeque::new()),
                shared: Arc::downgrade(&shared),
            }),
            tasks: Slab::default(),
        }
    }

    /// Whether tasks were woken and not yet moved to the microtasks.
    #[inline]
    pub(crate) fn has_woken(&self) -> bool {
        // SAFETY: the executor lives in the loop, on the owner thread; a
        // length read holds no reference past this line.
        unsafe { !(*self.exec.woken.get()).is_empty() }
    }

    /// Moves the woken tasks to the end of `microtasks`, in wake order.
    #[inline]
    pub(crate) fn flush_woken(&self, microtasks: &mut VecDeque<Micro>) {
        if self.has_woken() {
            // SAFETY: as in `has_woken`; the drain calls no user code.
            let woken = unsafe { &mut *self.exec.woken.get() };
            microtasks.extend(woken.drain(..).map(Micro::Poll));
        }
    }

    /// The next microtask to run: the front of `microtasks` once the woken
    /// tasks joined its end ([`Executor::flush_woken`]). With `microtasks`
    /// empty, the first woken task is taken as it is (the same order,
    /// without moving the others: the common case of a task woken by an
    /// I/O callback).
    #[inline]
    pub(crate) fn next_micro(&self, microtasks: &mut VecDeque<Micro>) -> Option<Micro> {
        if microtasks.is_empty() {
            // SAFETY: as in `has_woken`; the pop calls no user code.
            let woken = unsafe { &mut *self.exec.woken.get() };
            return woken.pop_front().map(Micro::Poll);
        }
        self.flush_woken(microtasks);
        microtasks.pop_front()
    }

    /// The number of tasks not finished.
    pub(crate) fn len(&self) -> usize {
        self.tasks.len()
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        // The woken headers hold the shared part: let them go (no cycle).
        // SAFETY: dropped with the loop, on the owner thread.
        unsafe { (*self.exec.woken.get()).clear() };
        // The tasks' futures are dropped here, without a loop to reach:
        // their operations' callbacks are dropped with the loop too.
        for task in self.tasks.drain().flatten() {
            drop(panic::catch_unwind(AssertUnwindSafe(move || drop(task))));
        }
    }
}

impl fmt::Debug for Executor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Executor")
            .field("tasks", &self.tasks.len())
            .finish()
    }
}

/// Runs `f` with `lp` as the current loop of this thread (for the
/// awaitable futures' [`with_loop`]). `f` must not use `lp` otherwise.
fn enter<R>(lp: &mut Loop, f: impl FnOnce() -> R) -> R {
    struct Restore(*mut Loop);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|c| c.set(self.0));
        }
    }
    let previous = CURRENT.with(|c| c.replace(lp as *mut Loop));
    let _restore = Restore(previous);
    f()
}

/// Runs `f` with the loop whose task is being polled: how `async` code
/// uses the callback API (`with_loop(|lp| lp.set_immediate(..))`) and
/// the loop's state.
///
/// # Panics
///
/// Outside a task's poll (the future is not polled by
/// [`Loop::spawn_local`] or [`Loop::block_on`]), or inside another
/// `with_loop` (the loop is already lent out).
pub fn with_loop<R>(f: impl FnOnce(&mut Loop) -> R) -> R {
    try_with_loop(f).expect(
        "eventide: no loop here: eventide's futures must be polled by a task of a Loop \
         (Loop::spawn_local or Loop::block_on), and not inside with_loop",
    )
}

/// [`with_loop`], or `None` (and `f` not called) where there is no loop
/// to lend.
pub fn try_with_loop<R>(f: impl FnOnce(&mut Loop) -> R) -> Option<R> {
    // During the thread's TLS teardown there is no loop to lend.
    let ptr = CURRENT
        .try_with(|c| c.replace(std::ptr::null_mut()))
        .unwrap_or(std::ptr::null_mut());
    if ptr.is_null() {
        return None;
    }
    struct Restore(*mut Loop);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(ptr);
    // SAFETY: `ptr` was set by `enter` from a `&mut Loop` that its caller
    // does not use until `enter` returns, and this thread is inside that
    // `enter` (CURRENT is reset when it returns). It is taken out of
    // CURRENT while `f` runs, so no second `&mut` is made from it
    // meanwhile: this is the only live reference to the loop.
    let lp = unsafe { &mut *ptr };
    Some(f(lp))
}

/// Yields once: the task is woken at once, so its next poll goes to the
/// end of the microtask queue (what `await null` does in a Node `async`
/// function). It does not let timers or I/O run: for that, await
/// [`immediate`].
pub fn yield_now() -> YieldNow {
    YieldNow(false)
}

/// The future of [`yield_now`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Polls the task `header` names; run from the microtask queue.
pub(crate) fn poll(lp: &mut Loop, header: Arc<Header>) {
    // Cleared before the poll: a wake from now on polls again.
    header.queued.store(false, Ordering::Release);
    std::sync::atomic::fence(Ordering::SeqCst);
    let slot = header.slot;
    let Some(mut task) = lp.tasks.tasks.get_mut(slot).and_then(Option::take) else {
        return;
    };
    if header.aborted.load(Ordering::Acquire) {
        lp.tasks.tasks.remove(slot);
        let then = task.cancel();
        drop_task(lp, task);
        if let Some(then) = then {
            lp.queue_microtask(then);
        }
        return;
    }
    // The queue's reference becomes the poll's waker (nothing below
    // needs the header).
    let waker = Waker::from(header);
    let mut cx = Context::from_waker(&waker);
    let outcome = enter(lp, || task.poll_task(&mut cx));
    match outcome {
        Poll::Pending => {
            if let Some(entry) = lp.tasks.tasks.get_mut(slot) {
                *entry = Some(task);
            }
        }
        Poll::Ready(finish) => {
            lp.tasks.tasks.remove(slot);
            drop_task(lp, task);
            if let Some(then) = finish.then {
                lp.queue_microtask(then);
            }
            if let Some(payload) = finish.unhandled {
                lp.panicked(payload);
            }
        }
    }
}

/// Drops a task's future with the loop reachable (its operations cancel
/// themselves), its panic swallowed (the task's outcome is decided).
fn drop_task(lp: &mut Loop, task: Box<dyn RawTask>) {
    let dropped = enter(lp, || {
        panic::catch_unwind(AssertUnwindSafe(move || drop(task)))
    });
    if dropped.is_err() {
        log::warn!("eventide: a task's future panicked while being dropped");
    }
}

/// Why a task gave no value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskError {
    /// The task panicked; the message is the panic's.
    Panicked {
        /// The panic's message (`"<non-string panic payload>"` if none).
        message: String,
    },
    /// The task was cancelled ([`JoinHandle::abort`]).
    Aborted,
    /// [`Loop::block_on`]'s future could not complete: it waits, and
    /// nothing keeps the loop alive (Node's unsettled top-level await).
    Unsettled,
    /// A [`timeout`] elapsed first.
    TimedOut,
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::Panicked { message } => write!(f, "the task panicked: {message}"),
            TaskError::Aborted => f.write_str("The operation was aborted"),
            TaskError::Unsettled => f.write_str(
                "the future can never complete: it is pending and nothing keeps the loop alive",
            ),
            TaskError::TimedOut => f.write_str("The operation was aborted due to timeout"),
        }
    }
}

impl std::error::Error for TaskError {}

impl TaskError {
    /// Node's code: `ABORT_ERR` for [`TaskError::Aborted`] (Node's
    /// `AbortError`), none for the others.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            TaskError::Aborted => Some("ABORT_ERR"),
            _ => None,
        }
    }

    /// The [`TaskError`] inside `error`, if it is one.
    pub fn of(error: &Error) -> Option<&TaskError> {
        error.get_ref()?.downcast_ref()
    }
}

impl From<TaskError> for Error {
    fn from(error: TaskError) -> Error {
        Error::other(error)
    }
}

/// A panic payload's message.
fn panic_message(payload: &Panic) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_owned()
    }
}

/// What a task and its handle share.
struct JoinState<T> {
    result: Option<Result<T>>,
    /// The result was handed out (or the task is finished and reported).
    finished: bool,
    waker: Option<Waker>,
    callback: Option<OnDone<T>>,
    /// The handle exists (or its callback waits): somebody listens.
    listened: bool,
}

type JoinCell<T> = Rc<RefCell<JoinState<T>>>;

/// A [`JoinHandle::on_done`] callback.
type OnDone<T> = Box<dyn FnOnce(&mut Loop, Result<T>)>;

struct TaskCell<F: Future> {
    future: Pin<Box<F>>,
    join: JoinCell<F::Output>,
}

impl<F: Future> TaskCell<F>
where
    F::Output: 'static,
{
    /// Settles the task with `result`; returns the callback to queue.
    fn settle(&mut self, result: Result<F::Output>) -> Option<Task> {
        let mut join = self.join.borrow_mut();
        join.finished = true;
        let then = match join.callback.take() {
            Some(callback) => Some(Box::new(move |lp: &mut Loop| callback(lp, result)) as Task),
            None => {
                join.result = Some(result);
                None
            }
        };
        let waker = join.waker.take();
        drop(join);
        if let Some(waker) = waker {
            waker.wake();
        }
        then
    }
}

impl<F: Future + 'static> RawTask for TaskCell<F> {
    fn poll_task(&mut self, cx: &mut Context<'_>) -> Poll<Finish> {
        let future = self.future.as_mut();
        match panic::catch_unwind(AssertUnwindSafe(move || future.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => Poll::Ready(Finish {
                then: self.settle(Ok(value)),
                unhandled: None,
            }),
            Err(payload) => {
                let listened = {
                    let join = self.join.borrow();
                    join.listened || join.callback.is_some()
                };
                let message = panic_message(&payload);
                let then = self.settle(Err(TaskError::Panicked { message }.into()));
                Poll::Ready(Finish {
                    then,
                    unhandled: (!listened).then_some(payload),
                })
            }
        }
    }

    fn cancel(&mut self) -> Option<Task> {
        self.settle(Err(TaskError::Aborted.into()))
    }
}

/// A spawned task's handle ([`Loop::spawn_local`]): a future of the
/// task's result, or a callback with it ([`JoinHandle::on_done`]).
/// Dropping it detaches the task, which runs on; [`JoinHandle::abort`]
/// cancels it.
///
/// The result is `Ok(value)`, or an [`Error`] holding a [`TaskError`]
/// (see [`TaskError::of`]): the task panicked or was aborted.
#[must_use = "dropping a JoinHandle detaches the task: its result is lost"]
pub struct JoinHandle<T> {
    join: JoinCell<T>,
    header: Arc<Header>,
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl<T: 'static> JoinHandle<T> {
    /// Calls `callback` with the task's result, from the microtask queue
    /// (as a promise's `.then`): right after the task finishes, or, if it
    /// has, in the next microtask; never inside this call.
    pub fn on_done(self, lp: &mut Loop, callback: impl FnOnce(&mut Loop, Result<T>) + 'static) {
        let mut join = self.join.borrow_mut();
        if let Some(result) = join.result.take() {
            lp.queue_microtask(move |lp| callback(lp, result));
        } else if join.finished {
            drop(join);
            panic!("eventide: JoinHandle::on_done after the result was taken");
        } else {
            join.callback = Some(Box::new(callback));
        }
    }
}

impl<T> JoinHandle<T> {
    /// Whether the task has finished (returned, panicked or was aborted).
    pub fn is_finished(&self) -> bool {
        self.join.borrow().finished
    }

    /// Cancels the task: its future is dropped (in the microtask queue,
    /// never inside this call), its operations with it, and the handle
    /// gets [`TaskError::Aborted`]. No-op once the task has finished.
    /// May be called from any task of the loop, or outside the loop on
    /// its thread.
    pub fn abort(&self) {
        if !self.is_finished() {
            self.header.aborted.store(true, Ordering::Release);
            self.header.schedule();
        }
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let mut join = self.join.borrow_mut();
        if let Some(result) = join.result.take() {
            return Poll::Ready(result);
        }
        assert!(
            !join.finished,
            "eventide: JoinHandle polled after it gave its result"
        );
        match &join.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => join.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        if let Ok(mut join) = self.join.try_borrow_mut() {
            join.listened = false;
            join.waker = None;
        }
    }
}

impl Loop {
    /// Spawns `future` as a task on this loop (it need not be `Send`): its
    /// first poll is queued as a microtask, and every wake-up polls it
    /// again from the microtask queue (see the [`task`](crate::task)
    /// module). The task runs while the loop runs; a pending task does
    /// not keep the loop alive by itself.
    #[track_caller]
    pub fn spawn_local<F>(&mut self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let join = Rc::new(RefCell::new(JoinState {
            result: None,
            finished: false,
            waker: None,
            callback: None,
            listened: true,
        }));
        let slot = self.tasks.tasks.insert(None);
        let site = std::panic::Location::caller();
        self.remember_site(crate::diag::Kind::Task, crate::slab::raw(slot), site);
        let header = Arc::new(Header {
            slot,
            exec: Arc::clone(&self.tasks.exec),
            queued: AtomicBool::new(true),
            aborted: AtomicBool::new(false),
        });
        let task = TaskCell {
            future: Box::pin(future),
            join: Rc::clone(&join),
        };
        if let Some(entry) = self.tasks.tasks.get_mut(slot) {
            *entry = Some(Box::new(task));
        }
        self.tasks.exec.push_woken(Arc::clone(&header));
        JoinHandle { join, header }
    }

    /// The number of spawned tasks not yet finished.
    pub fn tasks_pending(&self) -> usize {
        self.tasks.len()
    }

    /// Runs the loop until `future` completes, and returns its output
    /// (tokio's `LocalSet::block_on`, i.e. `run_until`): the future is
    /// spawned as a task and the loop runs ([`Loop::run`]); once it
    /// completes the loop stops at the end of that turn
    /// ([`Loop::stop`]'s semantics). Other work is left as it is: other
    /// tasks, timers, sockets stay, and go on at the next `run` or
    /// `block_on`.
    ///
    /// # Errors
    ///
    /// - [`TaskError::Unsettled`] when the future is still pending and
    ///   nothing keeps the loop alive (Node exits then with its
    ///   "unsettled top-level await" warning): the future is dropped.
    /// - The future's panic, as [`TaskError::Panicked`].
    /// - What [`Loop::run`] returns ([`Error::Reentrant`] inside a
    ///   callback of this loop, a [`Loop::fail`]ure): the future is then
    ///   dropped too.
    pub fn block_on<F>(&mut self, future: F) -> Result<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let out: Rc<RefCell<Option<Result<F::Output>>>> = Rc::new(RefCell::new(None));
        let handle = self.spawn_local(future);
        let header = Arc::clone(&handle.header);
        let slot = Rc::clone(&out);
        handle.on_done(self, move |lp, result| {
            *slot.borrow_mut() = Some(result);
            lp.stop();
        });
        loop {
            if let Err(error) = self.run() {
                self.drop_task_now(&header);
                return Err(error);
            }
            if let Some(result) = out.borrow_mut().take() {
                return result;
            }
            if !self.alive() && !self.has_ticks() {
                self.drop_task_now(&header);
                return Err(TaskError::Unsettled.into());
            }
        }
    }

    /// Drops a task at once (from outside the loop's run).
    fn drop_task_now(&mut self, header: &Arc<Header>) {
        if let Some(Some(task)) = self.tasks.tasks.remove(header.slot) {
            drop_task(self, task);
        }
    }
}

/// A task's number in [`Loop::handles`].
pub(crate) fn raw_id(header: &Header) -> u64 {
    crate::slab::raw(header.slot)
}

impl Loop {
    /// The tasks not yet finished, for [`Loop::handles`]: listed, never
    /// keeping the loop alive by themselves (what they wait for does).
    pub(crate) fn list_tasks(&self, listing: &mut crate::diag::Listing) {
        for (slot, _) in self.tasks.tasks.iter() {
            let id = crate::slab::raw(slot);
            let kind = crate::diag::Kind::Task;
            listing.add(kind, id, true, false, self.site_of(kind, id));
        }
    }
}
