//! A long-lived `AbortSignal` holds only its pending operations' listeners
//! (Node's `getEventListeners(signal, 'abort')`), on every backend: node
//! v20 prints `0` after 1,000 awaited `timersPromises.setTimeout`s and 100
//! `fs.promises.readFile`s with one signal, `1` while one is pending, `0`
//! once it is done. Before, every operation left an entry behind (and
//! timers and queued work a boxed closure) until the signal aborted.

mod util;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use eventide::Loop;
use eventide::abort::AbortController;
use eventide::task;
use util::{Trace, run_within};

const LIMIT: Duration = Duration::from_secs(30);

/// Timers, queued work, guarded file reads and `on_abort` listeners
/// removed by hand, one after another on one signal: none is left once
/// each is done; while one is pending, one is there.
fn completed_operations_leave_no_listener(lp: &mut Loop) {
    const ROUNDS: usize = 1000;
    let ac = AbortController::new();
    let signal = ac.signal();
    let done = Rc::new(Cell::new(0usize));
    let max_seen = Rc::new(Cell::new(0usize));
    fn step(
        lp: &mut Loop,
        signal: eventide::abort::AbortSignal,
        i: usize,
        done: Rc<Cell<usize>>,
        max_seen: Rc<Cell<usize>>,
    ) {
        max_seen.set(max_seen.get().max(signal.listener_count()));
        if i == ROUNDS {
            return;
        }
        let next = {
            let signal = signal.clone();
            let (done, max_seen) = (Rc::clone(&done), Rc::clone(&max_seen));
            move |lp: &mut Loop| step(lp, signal, i + 1, done, max_seen)
        };
        done.set(done.get() + 1);
        match i % 4 {
            0 => {
                signal.set_timeout(lp, Duration::ZERO, move |lp, r| {
                    r.expect("the timer ran");
                    next(lp);
                });
                assert_eq!(signal.listener_count(), 1, "a pending timer");
            }
            1 => {
                signal.queue_work(
                    lp,
                    move || i * 2,
                    move |lp, r| {
                        assert_eq!(r.expect("the work ran"), i * 2);
                        next(lp);
                    },
                );
                assert_eq!(signal.listener_count(), 1, "pending work");
            }
            2 => {
                signal.guard(
                    lp,
                    |lp, done| lp.fs().read_file("Cargo.toml", done),
                    move |lp, r| {
                        assert!(!r.expect("read").is_empty());
                        next(lp);
                    },
                );
                assert_eq!(signal.listener_count(), 1, "a pending read");
            }
            _ => {
                let id = signal.on_abort(lp, |_| panic!("removed: never runs"));
                assert_eq!(signal.listener_count(), 1);
                assert!(signal.remove(id));
                assert!(!signal.remove(id), "removed twice");
                lp.set_immediate(next);
            }
        }
    }
    step(
        lp,
        signal.clone(),
        0,
        Rc::clone(&done),
        Rc::clone(&max_seen),
    );
    run_within(lp, LIMIT);
    assert_eq!(done.get(), ROUNDS);
    assert_eq!(
        max_seen.get(),
        0,
        "a finished operation left a listener behind"
    );
    assert_eq!(
        signal.listener_count(),
        0,
        "a listener outlived its operation"
    );
    // The signal still works for what comes next.
    let trace = Trace::default();
    let t = trace.clone();
    signal.set_timeout(lp, Duration::from_secs(10), move |_, r| {
        t.log(format!("timer {}", r.unwrap_err()));
    });
    let t = trace.clone();
    signal.on_abort(lp, move |_| t.log("listener"));
    assert_eq!(signal.listener_count(), 2);
    ac.abort(lp);
    assert_eq!(signal.listener_count(), 0);
    run_within(lp, LIMIT);
    trace.assert(&["listener", "timer The operation was aborted"]);
    assert!(!lp.alive(), "the aborted timer was cleared");
}

/// `run` futures: one that waits holds one listener until it completes
/// or is dropped; 500 in a row leave none.
fn run_futures_leave_no_waker(lp: &mut Loop) {
    let ac = AbortController::new();
    let signal = ac.signal();
    let seen: Rc<RefCell<Vec<usize>>> = Rc::default();
    let (s, seen2) = (signal.clone(), Rc::clone(&seen));
    let handle = lp.spawn_local(async move {
        for _ in 0..500 {
            let sleep = s.run(task::sleep(Duration::from_millis(0)));
            sleep.await.expect("not aborted");
            seen2.borrow_mut().push(s.listener_count());
        }
        // A future dropped while it waits takes its listener too.
        let pending = s.run(task::sleep(Duration::from_secs(10)));
        let mut pending = Box::pin(pending);
        let waited = std::future::poll_fn(|cx| {
            let _ = pending.as_mut().poll(cx);
            std::task::Poll::Ready(s.listener_count())
        })
        .await;
        seen2.borrow_mut().push(waited);
        drop(pending);
        seen2.borrow_mut().push(s.listener_count());
    });
    drop(handle);
    run_within(lp, LIMIT);
    let seen = seen.borrow();
    assert_eq!(seen.len(), 502);
    assert!(
        seen[..500].iter().all(|&n| n == 0),
        "a finished run left a listener"
    );
    assert_eq!(seen[500], 1, "a waiting run holds one listener");
    assert_eq!(seen[501], 0, "a dropped run took its listener");
    assert_eq!(signal.listener_count(), 0);
}

/// A signal with two listeners: `l1`, which panics, then `l2`.
fn failing_then_plain_listener(
    lp: &mut Loop,
    trace: &Trace,
) -> (AbortController, eventide::abort::AbortSignal) {
    let ac = AbortController::new();
    let signal = ac.signal();
    let t = trace.clone();
    signal.on_abort(lp, move |_| {
        t.log("l1");
        panic!("l1 fails");
    });
    let t = trace.clone();
    signal.on_abort(lp, move |_| t.log("l2"));
    (ac, signal)
}

/// A listener that panics does not keep the later ones from running (node
/// v20: with `l1` throwing, `l1 l2` print, then `after abort`, then the
/// uncaught exception): with a panic handler the handler gets the panic
/// once all have run, and a guarded operation on the same signal still
/// gets its abort error.
fn a_panicking_listener_leaves_the_others_to_run(lp: &mut Loop) {
    let trace = Trace::default();
    let caught = Rc::new(RefCell::new(Vec::<String>::new()));
    let c = Rc::clone(&caught);
    lp.set_panic_handler(move |_, payload| {
        c.borrow_mut()
            .push(payload.downcast_ref::<&str>().unwrap_or(&"?").to_string());
    });
    let (ac, signal) = failing_then_plain_listener(lp, &trace);
    let t = trace.clone();
    signal.guard(
        lp,
        |lp, done| {
            lp.queue_work(|| std::thread::sleep(Duration::from_millis(50)), done);
        },
        move |_, result: eventide::Result<()>| {
            t.log(format!("work: {}", result.unwrap_err()));
        },
    );
    let t = trace.clone();
    let seen = Rc::clone(&caught);
    lp.set_timeout(Duration::from_millis(1), move |lp| {
        ac.abort(lp);
        t.log(format!("after abort, caught {}", seen.borrow().len()));
    });
    run_within(lp, LIMIT);
    assert_eq!(
        trace.tokens(),
        [
            "l1",
            "l2",
            "after abort, caught 1",
            "work: The operation was aborted"
        ]
    );
    assert_eq!(*caught.borrow(), ["l1 fails"]);
    assert_eq!(signal.listener_count(), 0);
}

/// Without a panic handler the panic leaves `run()`, after every listener
/// has run; the signal holds none.
fn without_a_handler_the_panic_leaves_run_after_all_listeners(lp: &mut Loop) {
    let trace = Trace::default();
    let (ac, signal) = failing_then_plain_listener(lp, &trace);
    lp.set_timeout(Duration::from_millis(1), move |lp| ac.abort(lp));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| lp.run()));
    let payload = outcome.expect_err("the listener's panic leaves run()");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"l1 fails"));
    assert_eq!(trace.tokens(), ["l1", "l2"]);
    assert_eq!(signal.listener_count(), 0);
    run_within(lp, LIMIT);
}

on_every_backend!(
    completed_operations_leave_no_listener,
    run_futures_leave_no_waker,
    a_panicking_listener_leaves_the_others_to_run,
    without_a_handler_the_panic_leaves_run_after_all_listeners,
);
