//! The local executor: spawn_local, JoinHandle (future and callback),
//! block_on, wakers (local and cross-thread), panics, abort, liveness,
//! and the interleaving of tasks with callbacks, against Node's order.

mod util;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Poll, Waker};
use std::time::Duration;

use eventide::Loop;
use eventide::task::{self, TaskError, with_loop};
use util::{Trace, ms, run_within};

const LIMIT: Duration = Duration::from_secs(20);

/// Node (tests/…/s1.js, spawning as `queueMicrotask(async () => ..)`,
/// `await null` as `yield_now`):
/// ```js
/// setImmediate(() => {
///   log.push('imm1');
///   process.nextTick(() => log.push('tick'));
///   queueMicrotask(() => log.push('micro1'));
///   queueMicrotask(async () => { log.push('async-start'); await null;
///     log.push('after-await1'); await null; log.push('after-await2'); });
///   queueMicrotask(() => log.push('micro2'));
/// });
/// setImmediate(() => log.push('imm2'));
/// // ["imm1","tick","micro1","async-start","micro2","after-await1","after-await2","imm2"]
/// ```
fn microtask_fifo_with_tasks(lp: &mut Loop) {
    let trace = Trace::default();
    let t = trace.clone();
    lp.set_immediate(move |lp| {
        t.log("imm1");
        lp.next_tick({
            let t = t.clone();
            move |_| t.log("tick")
        });
        lp.queue_microtask({
            let t = t.clone();
            move |_| t.log("micro1")
        });
        let tt = t.clone();
        let _detached = lp.spawn_local(async move {
            tt.log("async-start");
            task::yield_now().await;
            tt.log("after-await1");
            task::yield_now().await;
            tt.log("after-await2");
        });
        lp.queue_microtask({
            let t = t.clone();
            move |_| t.log("micro2")
        });
    });
    lp.set_immediate(trace.at("imm2"));
    run_within(lp, LIMIT);
    trace.assert(&[
        "imm1",
        "tick",
        "micro1",
        "async-start",
        "micro2",
        "after-await1",
        "after-await2",
        "imm2",
    ]);
}

/// Node (s2.js):
/// ```js
/// setImmediate(() => {
///   log.push('imm A');
///   queueMicrotask(async () => { log.push('task 1'); await tp.setImmediate(); log.push('task 2'); });
///   setImmediate(() => log.push('imm C'));
/// });
/// setImmediate(() => log.push('imm B'));
/// // ["imm A","task 1","imm B","imm C","task 2"]
/// ```
fn awaited_immediate_orders_as_node(lp: &mut Loop) {
    let trace = Trace::default();
    let t = trace.clone();
    lp.set_immediate(move |lp| {
        t.log("imm A");
        let tt = t.clone();
        let _detached = lp.spawn_local(async move {
            tt.log("task 1");
            task::immediate().await;
            tt.log("task 2");
        });
        lp.set_immediate({
            let t = t.clone();
            move |_| t.log("imm C")
        });
    });
    lp.set_immediate(trace.at("imm B"));
    run_within(lp, LIMIT);
    trace.assert(&["imm A", "task 1", "imm B", "imm C", "task 2"]);
}

/// Node (s3.js): ticks queued by a microtask wait until the microtask
/// queue is empty, awaits included.
/// ```js
/// setImmediate(() => {
///   queueMicrotask(async () => {
///     process.nextTick(() => log.push('tick1'));
///     queueMicrotask(() => log.push('m1'));
///     await null; log.push('after await');
///     process.nextTick(() => log.push('tick2'));
///     await null; log.push('after await 2');
///   });
///   process.nextTick(() => log.push('tick0'));
/// });
/// // ["tick0","m1","after await","after await 2","tick1","tick2"]
/// ```
fn ticks_wait_for_the_microtasks(lp: &mut Loop) {
    let trace = Trace::default();
    let t = trace.clone();
    lp.set_immediate(move |lp| {
        let tt = t.clone();
        let _detached = lp.spawn_local(async move {
            with_loop(|lp| {
                let a = tt.clone();
                lp.next_tick(move |_| a.log("tick1"));
                let b = tt.clone();
                lp.queue_microtask(move |_| b.log("m1"));
            });
            task::yield_now().await;
            tt.log("after await");
            let c = tt.clone();
            with_loop(|lp| lp.next_tick(move |_| c.log("tick2")));
            task::yield_now().await;
            tt.log("after await 2");
        });
        lp.next_tick({
            let t = t.clone();
            move |_| t.log("tick0")
        });
    });
    run_within(lp, LIMIT);
    trace.assert(&[
        "tick0",
        "m1",
        "after await",
        "after await 2",
        "tick1",
        "tick2",
    ]);
}

/// Node (s4.js): the task's timer started after a callback timer of the
/// same delay fires after it; the task resumes right after its own
/// timer's callback, and its ticks follow.
/// ```js
/// setTimeout(() => {
///   queueMicrotask(async () => { log.push('task: sleeping'); await tp.setTimeout(10);
///     log.push('task: woke'); process.nextTick(() => log.push('task tick')); });
///   setTimeout(() => log.push('timer 10 (after task timer)'), 10);
/// }, 1);
/// // ["task: sleeping","timer 10 (after task timer)","task: woke","task tick"]
/// ```
fn awaited_timer_orders_as_node(lp: &mut Loop) {
    let trace = Trace::default();
    let t = trace.clone();
    lp.set_timeout(ms(1), move |lp| {
        let tt = t.clone();
        let _detached = lp.spawn_local(async move {
            tt.log("task: sleeping");
            task::sleep(ms(10)).await;
            tt.log("task: woke");
            let a = tt.clone();
            with_loop(|lp| lp.next_tick(move |_| a.log("task tick")));
        });
        let t2 = t.clone();
        lp.set_timeout(ms(10), move |_| t2.log("timer 10"));
    });
    run_within(lp, LIMIT);
    trace.assert(&["task: sleeping", "timer 10", "task: woke", "task tick"]);
}

fn join_handle_is_a_future_and_a_callback(lp: &mut Loop) {
    let got = Rc::new(Cell::new(0));
    let g = Rc::clone(&got);
    let inner = lp.spawn_local(async {
        task::sleep(ms(2)).await;
        20
    });
    let outer = lp.spawn_local(async move { inner.await.expect("inner") + 1 });
    outer.on_done(lp, move |_, result| g.set(result.expect("outer") * 2));
    assert_eq!(got.get(), 0, "on_done never runs inside the call");
    run_within(lp, LIMIT);
    assert_eq!(got.get(), 42);
    assert_eq!(lp.tasks_pending(), 0);
}

fn on_done_after_finish_runs_as_a_microtask(lp: &mut Loop) {
    let handle = lp.spawn_local(async { "done" });
    run_within(lp, LIMIT);
    assert!(handle.is_finished());
    let got = Rc::new(Cell::new(""));
    let g = Rc::clone(&got);
    lp.set_immediate(move |lp| {
        handle.on_done(lp, move |_, r| g.set(r.unwrap()));
    });
    run_within(lp, LIMIT);
    assert_eq!(got.get(), "done");
}

fn block_on_returns_the_output_and_leaves_other_work(lp: &mut Loop) {
    let later = Rc::new(Cell::new(false));
    let l = Rc::clone(&later);
    lp.set_timeout(ms(200), move |_| l.set(true));
    let value = lp
        .block_on(async {
            task::sleep(ms(5)).await;
            task::work(|| 6 * 7).await.expect("work")
        })
        .expect("block_on");
    assert_eq!(value, 42);
    assert!(!later.get(), "block_on returned before the longer timer");
    // The rest goes on at the next run (run_until semantics).
    run_within(lp, LIMIT);
    assert!(later.get());
}

fn block_on_a_future_that_cannot_complete(lp: &mut Loop) {
    let error = lp
        .block_on(std::future::pending::<()>())
        .expect_err("nothing can wake it");
    assert_eq!(TaskError::of(&error), Some(&TaskError::Unsettled));
    assert_eq!(lp.tasks_pending(), 0, "the future was dropped");
}

/// Node (s5.js): `(async () => { await new Promise(() => {}) })()` —
/// the process exits: a pending promise keeps nothing alive.
fn a_pending_task_does_not_keep_the_loop_alive(lp: &mut Loop) {
    let done = Rc::new(Cell::new(false));
    let d = Rc::clone(&done);
    let handle = lp.spawn_local(async move {
        std::future::pending::<()>().await;
        d.set(true);
    });
    run_within(lp, LIMIT);
    assert!(!done.get());
    assert!(!handle.is_finished());
    assert_eq!(lp.tasks_pending(), 1, "the task stays, for a later run");
    handle.abort();
    run_within(lp, LIMIT);
    assert_eq!(lp.tasks_pending(), 0);
}

fn a_task_waiting_on_a_timer_keeps_it_alive(lp: &mut Loop) {
    let handle = lp.spawn_local(async {
        task::sleep(ms(20)).await;
        7
    });
    run_within(lp, LIMIT);
    assert!(handle.is_finished());
    assert_eq!(lp.block_on(handle).expect("block_on").expect("task"), 7);
}

fn a_panicking_task_reports_to_its_handle(lp: &mut Loop) {
    let panicking = lp.spawn_local(async {
        task::yield_now().await;
        panic!("boom in a task");
    });
    let after = lp.spawn_local(async { "the loop went on" });
    let (a, b) = lp
        .block_on(async move { (panicking.await, after.await) })
        .expect("block_on");
    let error = a.expect_err("the task panicked");
    assert_eq!(
        TaskError::of(&error),
        Some(&TaskError::Panicked {
            message: "boom in a task".into()
        })
    );
    assert_eq!(error.to_string(), "the task panicked: boom in a task");
    assert_eq!(b.expect("other task"), "the loop went on");
}

fn a_detached_panic_is_an_unhandled_rejection(lp: &mut Loop) {
    let caught = Rc::new(Cell::new(false));
    let c = Rc::clone(&caught);
    lp.set_panic_handler(move |_, payload| {
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"nobody listens"));
        c.set(true);
    });
    drop(lp.spawn_local(async { panic!("nobody listens") }));
    run_within(lp, LIMIT);
    assert!(caught.get());
}

fn abort_drops_the_future_and_its_timer(lp: &mut Loop) {
    let sleeper = lp.spawn_local(async {
        task::sleep(Duration::from_secs(30)).await;
        "slept"
    });
    let out = lp
        .block_on(async move {
            task::yield_now().await;
            sleeper.abort();
            sleeper.await
        })
        .expect("block_on");
    let error = out.expect_err("aborted");
    assert_eq!(TaskError::of(&error), Some(&TaskError::Aborted));
    assert_eq!(error.to_string(), "The operation was aborted");
    // The timer went with the future: nothing keeps the loop alive.
    assert!(!lp.alive());
}

fn dropping_a_join_handle_detaches(lp: &mut Loop) {
    let ran = Rc::new(Cell::new(false));
    let r = Rc::clone(&ran);
    drop(lp.spawn_local(async move {
        task::sleep(ms(5)).await;
        r.set(true);
    }));
    run_within(lp, LIMIT);
    assert!(ran.get());
}

/// Another thread wakes a task many rounds; each round the task checks
/// the counter the thread bumped before waking it. A lost wake-up hangs
/// the loop until the watchdog.
fn cross_thread_wakes_are_never_lost(lp: &mut Loop) {
    const ROUNDS: usize = 2000;
    let counter = Arc::new(AtomicUsize::new(0));
    let (waker_tx, waker_rx) = std::sync::mpsc::channel::<Waker>();
    let keep_alive = lp.handle();
    let c = Arc::clone(&counter);
    let thread = std::thread::spawn(move || {
        let _keep_alive = keep_alive;
        for round in 1..=ROUNDS {
            // A lost wake-up leaves the task waiting: the thread gives up,
            // its handle goes, and block_on fails instead of hanging.
            let Ok(waker) = waker_rx.recv_timeout(Duration::from_secs(10)) else {
                return;
            };
            c.store(round, Ordering::Release);
            waker.wake();
        }
    });
    let c = Arc::clone(&counter);
    let seen = lp
        .block_on(async move {
            let mut seen = 0;
            for round in 1..=ROUNDS {
                let mut sent = false;
                std::future::poll_fn(|cx| {
                    if c.load(Ordering::Acquire) >= round {
                        return Poll::Ready(());
                    }
                    if !sent {
                        sent = true;
                        waker_tx.send(cx.waker().clone()).expect("thread alive");
                    }
                    Poll::Pending
                })
                .await;
                seen += 1;
            }
            seen
        })
        .expect("block_on");
    assert_eq!(seen, ROUNDS);
    thread.join().expect("thread");
}

/// Wakes from another thread while the task is being polled and while
/// the loop sleeps, with no handshake: every one of them must lead to a
/// poll that sees the final count.
fn cross_thread_wake_storm(lp: &mut Loop) {
    const WAKES: usize = 20_000;
    let counter = Arc::new(AtomicUsize::new(0));
    let (waker_tx, waker_rx) = std::sync::mpsc::channel::<Waker>();
    let keep_alive = lp.handle();
    let c = Arc::clone(&counter);
    let thread = std::thread::spawn(move || {
        let _keep_alive = keep_alive;
        let waker = waker_rx.recv().expect("the task's waker");
        for _ in 0..WAKES {
            c.fetch_add(1, Ordering::AcqRel);
            waker.wake_by_ref();
        }
    });
    let c = Arc::clone(&counter);
    let polls = lp
        .block_on(async move {
            let mut polls = 0usize;
            let mut sent = false;
            std::future::poll_fn(|cx| {
                polls += 1;
                if !sent {
                    sent = true;
                    waker_tx.send(cx.waker().clone()).expect("thread alive");
                    // Pending whatever the count: the thread may finish
                    // every wake before this poll returns (it then woke a
                    // task being polled), and those wakes must still lead
                    // to a second poll.
                    return Poll::Pending;
                }
                if c.load(Ordering::Acquire) == WAKES {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await;
            polls
        })
        .expect("block_on");
    assert!((2..=WAKES + 1).contains(&polls), "{polls}");
    thread.join().expect("thread");
}

fn local_wakes_coalesce(lp: &mut Loop) {
    // Ten wakes before the next poll queue it once.
    let polls = Rc::new(Cell::new(0));
    let p = Rc::clone(&polls);
    let handle = lp.spawn_local(std::future::poll_fn(move |cx| {
        p.set(p.get() + 1);
        if p.get() == 1 {
            for _ in 0..10 {
                cx.waker().wake_by_ref();
            }
            return Poll::Pending;
        }
        Poll::Ready(())
    }));
    run_within(lp, LIMIT);
    assert!(handle.is_finished());
    assert_eq!(polls.get(), 2);
}

fn block_on_inside_a_callback_is_reentrant(lp: &mut Loop) {
    let got = Rc::new(Cell::new(false));
    let g = Rc::clone(&got);
    lp.set_immediate(move |lp| {
        let error = lp.block_on(async { 1 }).expect_err("reentrant");
        assert!(matches!(error, eventide::Error::Reentrant));
        g.set(true);
    });
    run_within(lp, LIMIT);
    assert!(got.get());
    assert_eq!(lp.tasks_pending(), 0);
}

/// A loop dropped with tasks pending (a timer, queued work, a woken
/// task not yet polled, a waker held by another thread) drops them
/// without reaching the loop, and a late wake from the thread is harmless.
#[test]
fn dropping_a_loop_with_pending_tasks() {
    let Some(mut lp) = util::new_loop(eventide::BackendKind::Poll) else {
        return;
    };
    let (waker_tx, waker_rx) = std::sync::mpsc::channel::<Waker>();
    let sleeper = lp.spawn_local(async {
        task::sleep(Duration::from_secs(60)).await;
    });
    let _held = lp.spawn_local(std::future::poll_fn(move |cx| {
        let _ = waker_tx.send(cx.waker().clone());
        Poll::<()>::Pending
    }));
    let _queued = lp.spawn_local(async { task::work(|| 1).await });
    lp.set_immediate(|_| {});
    lp.run_mode(eventide::RunMode::NoWait).expect("one turn");
    let _never_polled = lp.spawn_local(async {});
    let waker = waker_rx.recv().expect("the task's waker");
    assert!(!sleeper.is_finished());
    drop(lp);
    std::thread::spawn(move || waker.wake())
        .join()
        .expect("a late wake");
    drop(sleeper);
}

#[test]
#[should_panic(expected = "no loop here")]
fn awaitables_outside_a_task_panic() {
    let waker = Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut sleep = std::pin::pin!(task::sleep(ms(1)));
    let _ = std::future::Future::poll(sleep.as_mut(), &mut cx);
}

on_every_backend!(
    microtask_fifo_with_tasks,
    awaited_immediate_orders_as_node,
    ticks_wait_for_the_microtasks,
    awaited_timer_orders_as_node,
    join_handle_is_a_future_and_a_callback,
    on_done_after_finish_runs_as_a_microtask,
    block_on_returns_the_output_and_leaves_other_work,
    block_on_a_future_that_cannot_complete,
    a_pending_task_does_not_keep_the_loop_alive,
    a_task_waiting_on_a_timer_keeps_it_alive,
    a_panicking_task_reports_to_its_handle,
    a_detached_panic_is_an_unhandled_rejection,
    abort_drops_the_future_and_its_timer,
    dropping_a_join_handle_detaches,
    cross_thread_wakes_are_never_lost,
    cross_thread_wake_storm,
    local_wakes_coalesce,
    block_on_inside_a_callback_is_reentrant,
);
