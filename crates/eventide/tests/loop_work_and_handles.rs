//! Work on the pool, panics, and posting from other threads, on every
//! compiled backend.

mod util;

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use eventide::{BackendChoice, Error, Loop, WorkClass};
use util::{ms, run_within};

const LIMIT: Duration = Duration::from_secs(20);

fn work_runs_on_another_thread_and_its_callback_on_the_loop(lp: &mut Loop) {
    let loop_thread = std::thread::current().id();
    let result = Rc::new(Cell::new(None));
    let r = result.clone();
    lp.queue_work(
        move || (std::thread::current().id() != loop_thread, 6 * 7),
        move |lp, outcome| {
            assert_eq!(std::thread::current().id(), loop_thread);
            // The loop is usable in the callback: it can queue more.
            lp.set_immediate(|_| {});
            r.set(Some(outcome.expect("the work succeeded")));
        },
    );
    assert!(lp.alive(), "work in flight keeps the loop alive");
    run_within(lp, LIMIT);
    assert_eq!(result.get(), Some((true, 42)));
}

fn many_work_items_each_complete_exactly_once(lp: &mut Loop) {
    const N: u64 = 10_000;
    let sum = Rc::new(Cell::new(0u64));
    let count = Rc::new(Cell::new(0u64));
    for i in 0..N {
        let (s, c) = (sum.clone(), count.clone());
        lp.queue_work(
            move || i * 2,
            move |_, r| {
                s.set(s.get() + r.unwrap());
                c.set(c.get() + 1);
            },
        );
    }
    run_within(lp, LIMIT);
    assert_eq!(count.get(), N);
    assert_eq!(sum.get(), N * (N - 1));
}

fn a_panicking_job_is_an_error_for_its_callback_and_the_pool_lives_on(lp: &mut Loop) {
    let outcome = Rc::new(RefCell::new(Vec::new()));
    let o = outcome.clone();
    lp.queue_work(
        || -> u32 { panic!("the job fell over") },
        move |lp, result| {
            match result {
                Err(Error::Panicked { message }) => o.borrow_mut().push(message),
                other => panic!("expected Panicked, got {other:?}"),
            }
            let o = o.clone();
            lp.queue_work(
                || 7,
                move |_, r| o.borrow_mut().push(format!("then {}", r.unwrap())),
            );
        },
    );
    run_within(lp, LIMIT);
    assert_eq!(*outcome.borrow(), ["the job fell over", "then 7"]);
}

fn slow_io_work_runs_too(lp: &mut Loop) {
    let done = Rc::new(Cell::new(false));
    let d = done.clone();
    lp.queue_work_in(
        WorkClass::SlowIo,
        || "resolved",
        move |_, r| {
            assert_eq!(r.unwrap(), "resolved");
            d.set(true);
        },
    );
    run_within(lp, LIMIT);
    assert!(done.get());
}

fn a_posted_closure_wakes_a_blocked_loop_and_runs_on_it(lp: &mut Loop) {
    let handle = lp.handle();
    let loop_thread = std::thread::current().id();
    let got = Rc::new(Cell::new(0u64));
    let sender = std::thread::spawn(move || {
        std::thread::sleep(ms(20));
        handle
            .post(move |lp| {
                assert_eq!(std::thread::current().id(), loop_thread);
                lp.next_tick(|_| {});
            })
            .expect("the loop is alive");
        // Dropping the last handle lets the loop end.
    });
    let g = got.clone();
    lp.set_timeout(ms(1), move |_| g.set(g.get() + 1));
    run_within(lp, LIMIT);
    sender.join().unwrap();
    assert_eq!(got.get(), 1);
    assert!(!lp.alive());
}

fn posts_from_each_sender_run_in_the_order_they_were_posted(lp: &mut Loop) {
    const SENDERS: usize = 4;
    const EACH: u64 = 20_000;
    // The closures run on the loop thread: they keep their tally there.
    NEXT.with(|next| *next.borrow_mut() = vec![0; SENDERS]);
    let threads: Vec<_> = (0..SENDERS)
        .map(|sender| {
            let handle = lp.handle();
            std::thread::spawn(move || {
                for i in 0..EACH {
                    let in_order = move |_: &mut Loop| {
                        NEXT.with(|next| {
                            let mut next = next.borrow_mut();
                            assert_eq!(next[sender], i, "sender {sender} out of order");
                            next[sender] = i + 1;
                        })
                    };
                    handle.post(in_order).expect("the loop is alive");
                }
            })
        })
        .collect();
    run_within(lp, LIMIT);
    for thread in threads {
        thread.join().unwrap();
    }
    NEXT.with(|next| assert_eq!(*next.borrow(), vec![EACH; SENDERS]));
}

thread_local! {
    static NEXT: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

fn posting_to_a_dropped_loop_hands_the_closure_back(lp: &mut Loop) {
    let handle = lp.handle();
    assert!(!handle.is_closed());
    let other = Loop::builder()
        .backend(BackendChoice::Only(lp.backend()))
        .build()
        .unwrap();
    let orphan = other.handle();
    drop(other);
    assert!(orphan.is_closed());
    let marker = std::sync::Arc::new(());
    let m = marker.clone();
    let error = orphan.post(move |_| drop(m)).expect_err("the loop is gone");
    assert_eq!(
        error.to_string(),
        "the event loop is gone: the closure was not posted"
    );
    assert_eq!(
        std::sync::Arc::strong_count(&marker),
        2,
        "the closure came back, unrun"
    );
    drop(error);
    assert_eq!(std::sync::Arc::strong_count(&marker), 1);
    drop(handle);
    run_within(lp, LIMIT);
}

fn a_panic_in_a_callback_propagates_out_of_run_without_a_handler(lp: &mut Loop) {
    lp.set_immediate(|_| panic!("callback failed"));
    let outcome = catch_unwind(AssertUnwindSafe(|| lp.run()));
    let payload = outcome.expect_err("the panic propagates");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"callback failed"));
    // The loop is still usable: what was left runs on the next run().
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    lp.set_immediate(move |_| r.set(true));
    run_within(lp, LIMIT);
    assert!(ran.get(), "the loop runs again after a propagated panic");
}

fn with_a_panic_handler_the_loop_goes_on_after_a_panicking_callback(lp: &mut Loop) {
    let caught = Rc::new(RefCell::new(Vec::new()));
    let c = caught.clone();
    lp.set_panic_handler(move |_, payload| {
        c.borrow_mut().push(
            payload
                .downcast_ref::<&str>()
                .copied()
                .unwrap_or("?")
                .to_owned(),
        );
    });
    lp.set_immediate(|_| panic!("first"));
    let c = caught.clone();
    lp.set_immediate(move |lp| {
        lp.next_tick(|_| panic!("in a tick"));
        let c = c.clone();
        lp.set_timeout(ms(1), move |_| {
            c.borrow_mut().push("timer after".to_owned())
        });
    });
    run_within(lp, LIMIT);
    assert_eq!(*caught.borrow(), ["first", "in a tick", "timer after"]);
}

/// A loop on `lp`'s backend with one pool thread.
fn one_pool_thread(lp: &Loop) -> Loop {
    Loop::builder()
        .backend(BackendChoice::Only(lp.backend()))
        .pool_threads(1)
        .build()
        .unwrap()
}

/// Queues a job that holds the pool's only thread until the returned
/// sender sends (or 10 s pass), and waits until it has started; `after`
/// gets its result, `"blocker done"`.
fn hold_the_pool(
    lp: &mut Loop,
    after: impl FnOnce(&mut Loop, eventide::Result<&'static str>) + 'static,
) -> (eventide::WorkId, mpsc::Sender<()>) {
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let id = lp.queue_work(
        move || {
            started_tx.send(()).unwrap();
            release_rx
                .recv_timeout(Duration::from_secs(10))
                .expect("released");
            "blocker done"
        },
        after,
    );
    started_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the blocker started");
    (id, release_tx)
}

fn queued_work_can_be_cancelled_and_running_work_cannot(lp: &mut Loop) {
    // One pool thread: the first job holds it while the second waits.
    let mut lp1 = one_pool_thread(lp);
    let lp = &mut lp1;
    let outcomes = Rc::new(RefCell::new(Vec::new()));
    let o = outcomes.clone();
    let (blocker, release_tx) = hold_the_pool(lp, move |_, r| {
        o.borrow_mut()
            .push(format!("{:?}", r.map_err(|e| e.to_string())))
    });
    let o = outcomes.clone();
    let queued = lp.queue_work(
        || "queued ran",
        move |_, r| {
            o.borrow_mut()
                .push(format!("{:?}", r.map_err(|e| e.to_string())));
        },
    );
    assert!(matches!(
        lp.cancel_work(blocker),
        Err(Error::AlreadyRunning)
    ));
    lp.cancel_work(queued).expect("queued work cancels");
    release_tx.send(()).unwrap();
    run_within(lp, LIMIT);
    let outcomes = outcomes.borrow();
    assert_eq!(outcomes.len(), 2);
    assert!(outcomes.contains(&"Err(\"the work was cancelled before it started\")".to_owned()));
    assert!(outcomes.contains(&"Ok(\"blocker done\")".to_owned()));
    assert!(matches!(lp.cancel_work(queued), Err(Error::Stale { .. })));
}

fn channel_values_arrive_in_order_per_sender_and_the_loop_ends_with_the_last_sender(lp: &mut Loop) {
    const EACH: u64 = 50_000;
    let next = Rc::new(RefCell::new([0u64; 3]));
    let n = next.clone();
    let sender = lp.channel(move |_, (from, value): (usize, u64)| {
        let mut next = n.borrow_mut();
        assert_eq!(next[from], value, "sender {from} out of order");
        next[from] = value + 1;
    });
    let threads: Vec<_> = (0..3)
        .map(|from| {
            let sender = sender.clone();
            std::thread::spawn(move || {
                for value in 0..EACH {
                    sender.send((from, value)).expect("the loop is alive");
                }
            })
        })
        .collect();
    drop(sender);
    run_within(lp, LIMIT);
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(*next.borrow(), [EACH; 3]);
    assert!(!lp.alive(), "no sender is left");
}

fn sending_to_a_dropped_loop_hands_the_value_back(lp: &mut Loop) {
    let mut other = Loop::builder()
        .backend(BackendChoice::Only(lp.backend()))
        .build()
        .unwrap();
    let sender = other.channel(|_, _: String| panic!("never received"));
    drop(other);
    let error = sender
        .send("lost?".to_owned())
        .expect_err("the loop is gone");
    assert_eq!(error.0, "lost?");
    assert_eq!(
        error.to_string(),
        "the event loop is gone: the value was not sent"
    );
}

fn a_channel_handler_can_send_to_its_own_channel_and_schedule_work(lp: &mut Loop) {
    let received = Rc::new(RefCell::new(Vec::new()));
    let r = received.clone();
    let own: Rc<RefCell<Option<eventide::Sender<u32>>>> = Rc::new(RefCell::new(None));
    let o = own.clone();
    let sender = lp.channel(move |lp, value: u32| {
        r.borrow_mut().push(value);
        if value < 3 {
            o.borrow().as_ref().unwrap().send(value + 1).unwrap();
        } else {
            // Dropping the last sender lets the loop end.
            o.borrow_mut().take();
            lp.next_tick(|_| {});
        }
    });
    sender.send(0).unwrap();
    *own.borrow_mut() = Some(sender);
    run_within(lp, LIMIT);
    assert_eq!(*received.borrow(), [0, 1, 2, 3]);
}

/// Regression: a drain could take a completion before its worker announced
/// it; the loop then skipped the next drain ("nothing waiting"), the pool's
/// announcement stayed set, and no later completion woke the loop again.
fn a_steady_stream_of_work_never_loses_a_completion(lp: &mut Loop) {
    const TOTAL: usize = 50_000;
    const IN_FLIGHT: usize = 64;
    fn next(lp: &mut Loop, issued: Rc<Cell<usize>>, done: Rc<Cell<usize>>) {
        let i = issued.get();
        if i == TOTAL {
            return;
        }
        issued.set(i + 1);
        lp.queue_work(
            // A system call's worth of work, as fs jobs are: it widens the
            // window between a worker's push and its announcement.
            move || {
                std::fs::metadata(env!("CARGO_MANIFEST_PATH"))
                    .map(|_| i * 2)
                    .ok()
            },
            move |lp, result| {
                assert_eq!(result.unwrap(), Some(i * 2));
                done.set(done.get() + 1);
                next(lp, issued, done);
            },
        );
    }
    let (issued, done) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
    for _ in 0..IN_FLIGHT {
        next(lp, issued.clone(), done.clone());
    }
    run_within(lp, LIMIT);
    assert_eq!(done.get(), TOTAL);
}

/// Records the thread it is dropped on.
struct DropWitness {
    dropped_on: Rc<RefCell<Vec<std::thread::ThreadId>>>,
}

impl Drop for DropWitness {
    fn drop(&mut self) {
        self.dropped_on
            .borrow_mut()
            .push(std::thread::current().id());
    }
}

fn cancelling_twice_is_harmless_and_the_callback_runs_once(lp: &mut Loop) {
    let mut lp1 = one_pool_thread(lp);
    let lp = &mut lp1;
    let (_, release_tx) = hold_the_pool(lp, |_, r| {
        r.unwrap();
    });
    let calls = Rc::new(RefCell::new(Vec::new()));
    let c = calls.clone();
    let queued = lp.queue_work(
        || 1,
        move |_, r: eventide::Result<i32>| {
            c.borrow_mut().push(r.map_err(|e| {
                assert!(matches!(e, Error::Cancelled), "{e}");
                e.kind()
            }));
        },
    );
    lp.cancel_work(queued).expect("queued work cancels");
    lp.cancel_work(queued)
        .expect("a second cancel before the callback is a no-op");
    // The cancelled callback runs without waiting for the pool's thread
    // (held until this timer releases it; 200 ms, not 1: a loop that
    // starts running over 1 ms late, on a loaded machine, runs a 1 ms
    // timer in the timers phase before the poll phase's cancellations).
    let c = calls.clone();
    lp.set_timeout(ms(200), move |_| {
        assert_eq!(c.borrow().len(), 1, "the cancel's callback ran first");
        release_tx.send(()).unwrap();
    });
    run_within(lp, LIMIT);
    assert_eq!(*calls.borrow(), [Err(Error::Cancelled.kind())]);
    assert!(matches!(lp.cancel_work(queued), Err(Error::Stale { .. })));
}

fn a_callback_that_is_not_send_is_dropped_on_the_loop_thread_when_the_loop_goes(lp: &mut Loop) {
    let loop_thread = std::thread::current().id();
    let dropped_on = Rc::new(RefCell::new(Vec::new()));
    let mut lp1 = one_pool_thread(lp);
    // One job runs, one is queued behind it, one is cancelled: none of their
    // callbacks ever runs, each is dropped with the loop, on its thread.
    let witness = DropWitness {
        dropped_on: dropped_on.clone(),
    };
    let (_, release_tx) = hold_the_pool(&mut lp1, move |_, _| drop(witness));
    for cancel in [false, true] {
        let witness = DropWitness {
            dropped_on: dropped_on.clone(),
        };
        let id = lp1.queue_work(|| (), move |_, _| drop(witness));
        if cancel {
            lp1.cancel_work(id).unwrap();
        }
    }
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        release_tx.send(()).unwrap();
    });
    // Joins the pool (the running job ends when released), then frees.
    drop(lp1);
    releaser.join().unwrap();
    assert_eq!(*dropped_on.borrow(), vec![loop_thread; 3]);
}

fn a_panic_in_one_work_callback_leaves_the_others_for_the_next_run(lp: &mut Loop) {
    const N: usize = 8;
    let ran = Rc::new(Cell::new(0));
    for i in 0..N {
        let r = ran.clone();
        lp.queue_work(
            move || i,
            move |_, v| {
                r.set(r.get() + 1);
                if v.unwrap() == 3 {
                    panic!("after {i}");
                }
            },
        );
    }
    let mut panics = 0;
    for _ in 0..N {
        match catch_unwind(AssertUnwindSafe(|| lp.run())) {
            Ok(result) => {
                result.unwrap();
                break;
            }
            Err(_) => panics += 1,
        }
    }
    assert_eq!(panics, 1);
    assert_eq!(ran.get(), N, "every callback ran once, the panic's too");
    assert!(!lp.alive());
}

/// Another thread waits for the loop to take each message before it sends
/// the next, so most messages arrive while the loop is falling asleep or
/// asleep: a lost wake-up would leave the loop blocked (and `run_within`
/// would fail). Posts, channel sends and pool completions alternate.
fn ping_pong_with_another_thread_never_loses_a_wake_up(lp: &mut Loop) {
    const ROUNDS: u64 = 3_000;
    let handle = lp.handle();
    let (ack_tx, ack_rx) = mpsc::channel::<u64>();
    let got = Rc::new(Cell::new(0u64));
    let g = got.clone();
    let ack = ack_tx.clone();
    let sender = lp.channel(move |_, value: u64| {
        g.set(g.get() + 1);
        ack.send(value).unwrap();
    });
    let pinger = std::thread::spawn(move || {
        for round in 0..ROUNDS {
            match round % 2 {
                0 => sender.send(round).map_err(|_| "channel").unwrap(),
                _ => {
                    let ack = ack_tx.clone();
                    handle
                        .post(move |_| ack.send(round).unwrap())
                        .map_err(|_| "post")
                        .unwrap();
                }
            }
            let echoed = ack_rx
                .recv_timeout(Duration::from_secs(10))
                .expect("the loop took the message");
            assert_eq!(echoed, round);
        }
    });
    // Meanwhile pool work completes into the same loop, one item at a time.
    fn chain(lp: &mut Loop, left: u32, done: Rc<Cell<u32>>) {
        if left == 0 {
            return;
        }
        lp.queue_work(std::thread::yield_now, move |lp, r| {
            r.unwrap();
            done.set(done.get() + 1);
            chain(lp, left - 1, done);
        });
    }
    let done = Rc::new(Cell::new(0));
    chain(lp, 500, done.clone());
    run_within(lp, LIMIT);
    pinger.join().unwrap();
    assert_eq!(got.get(), ROUNDS / 2);
    assert_eq!(done.get(), 500);
}

on_every_backend!(
    ping_pong_with_another_thread_never_loses_a_wake_up,
    cancelling_twice_is_harmless_and_the_callback_runs_once,
    a_callback_that_is_not_send_is_dropped_on_the_loop_thread_when_the_loop_goes,
    a_panic_in_one_work_callback_leaves_the_others_for_the_next_run,
    work_runs_on_another_thread_and_its_callback_on_the_loop,
    many_work_items_each_complete_exactly_once,
    a_panicking_job_is_an_error_for_its_callback_and_the_pool_lives_on,
    slow_io_work_runs_too,
    a_posted_closure_wakes_a_blocked_loop_and_runs_on_it,
    posts_from_each_sender_run_in_the_order_they_were_posted,
    posting_to_a_dropped_loop_hands_the_closure_back,
    a_panic_in_a_callback_propagates_out_of_run_without_a_handler,
    with_a_panic_handler_the_loop_goes_on_after_a_panicking_callback,
    queued_work_can_be_cancelled_and_running_work_cannot,
    channel_values_arrive_in_order_per_sender_and_the_loop_ends_with_the_last_sender,
    sending_to_a_dropped_loop_hands_the_value_back,
    a_channel_handler_can_send_to_its_own_channel_and_schedule_work,
    a_steady_stream_of_work_never_loses_a_completion,
);
