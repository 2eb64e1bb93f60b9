//! A panicking callback leaves the loop consistent, at every place the
//! loop core calls user code, in both modes: with a panic handler (the
//! loop goes on) and without one (the panic leaves `run()`, and `run()` is
//! called again). Afterwards the rest of the batch runs, `run()` returns
//! when nothing is left, and the loop does not spin.
//!
//! Every run is bounded by a watchdog timer (unreferenced: it stops the
//! loop and fails the test, it does not keep the loop alive), so a loop
//! that stays alive for nothing fails instead of hanging. Spinning is
//! measured in turns, not time: a 30 ms timer must be waited for in a
//! handful of turns.

mod util;

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::time::Duration;

use eventide::{Loop, Phase};
use util::{ms, spin};

const LIMIT: Duration = Duration::from_secs(10);

/// With a panic handler installed, or without one.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Handler,
    Unwind,
}

/// The panics seen: by the handler, or out of `run()`.
#[derive(Clone, Default)]
struct Panics(Rc<RefCell<Vec<String>>>);

impl Panics {
    fn push(&self, payload: &(dyn std::any::Any + Send)) {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "?".to_owned());
        self.0.borrow_mut().push(message);
    }

    fn all(&self) -> Vec<String> {
        self.0.borrow().clone()
    }
}

/// Runs `lp` once; a panic out of `run()` is recorded. Fails if the loop
/// is still running after `LIMIT`. Returns whether a panic left `run()`.
fn run_once(lp: &mut Loop, panics: &Panics) -> bool {
    let expired = Rc::new(Cell::new(false));
    let e = expired.clone();
    let watchdog = lp.set_timeout(LIMIT, move |lp| {
        e.set(true);
        lp.stop();
    });
    lp.unref_timer(watchdog);
    let outcome = catch_unwind(AssertUnwindSafe(|| lp.run()));
    lp.clear_timer(watchdog);
    assert!(
        !expired.get(),
        "the loop was still running after {LIMIT:?} (alive: {})",
        lp.alive()
    );
    match outcome {
        Ok(result) => {
            result.expect("the loop runs");
            false
        }
        Err(payload) => {
            panics.push(&*payload);
            true
        }
    }
}

/// Sets the mode up, runs until `run()` returns normally (at most
/// `expected` panics leave it on the way, without a handler), and checks
/// that exactly the `expected` panics happened and that nothing is left.
fn run_through(lp: &mut Loop, mode: Mode, expected: &[&str]) -> Panics {
    let panics = Panics::default();
    if mode == Mode::Handler {
        let p = panics.clone();
        lp.set_panic_handler(move |_, payload| p.push(&*payload));
    }
    let mut runs = 0;
    while run_once(lp, &panics) {
        runs += 1;
        assert_eq!(mode, Mode::Unwind, "a panic left run() despite a handler");
        assert!(
            runs <= expected.len(),
            "more panics than expected: {:?}",
            panics.all()
        );
    }
    let mut seen = panics.all();
    seen.sort();
    let mut expected = expected.to_vec();
    expected.sort_unstable();
    assert_eq!(seen, expected);
    assert!(
        !lp.alive(),
        "run() returned, so nothing keeps the loop alive"
    );
    assert_no_spin(lp);
    panics
}

/// The loop waits for a 30 ms timer in a few turns (a leftover idle hook,
/// or anything else that keeps the poll phase from blocking, makes it
/// thousands), and nothing else runs meanwhile.
fn assert_no_spin(lp: &mut Loop) {
    let turns = Rc::new(Cell::new(0u32));
    let t = turns.clone();
    let counter = lp.start_hook(Phase::Prepare, move |_, _| t.set(t.get() + 1));
    lp.unref_hook(counter);
    let fired = Rc::new(Cell::new(false));
    let f = fired.clone();
    lp.set_timeout(ms(30), move |_| f.set(true));
    let panics = Panics::default();
    assert!(
        !run_once(lp, &panics),
        "a panic in the probe: {:?}",
        panics.all()
    );
    lp.stop_hook(counter);
    assert!(fired.get());
    assert!(
        turns.get() <= 10,
        "{} turns to wait for one timer: the loop spins",
        turns.get()
    );
    assert!(!lp.alive());
}

type Log = Rc<RefCell<Vec<String>>>;

fn log() -> Log {
    Rc::default()
}

fn entries(log: &Log) -> Vec<String> {
    log.borrow().clone()
}

/// Due timers, one of which panics and queues a next-tick that clears the
/// next due timer. With a handler, Node's order holds the tick until the
/// next timer has been taken (it is of another duration, so the tick runs
/// before it, and clears it); without one, the tick runs at the next
/// `run()`. Either way the cleared timer never runs and the others do.
fn timers(lp: &mut Loop, mode: Mode) {
    let seen = log();
    let s = seen.clone();
    let second = Rc::new(Cell::new(None));
    let sec = second.clone();
    lp.set_timeout(ms(1), move |lp| {
        s.borrow_mut().push("first".into());
        let (s, sec) = (s.clone(), sec.clone());
        lp.next_tick(move |lp| {
            s.borrow_mut().push("tick".into());
            assert!(lp.clear_timer(sec.get().unwrap()), "second still pending");
        });
        panic!("first timer");
    });
    let s = seen.clone();
    second.set(Some(
        lp.set_timeout(ms(2), move |_| s.borrow_mut().push("second".into())),
    ));
    let s = seen.clone();
    lp.set_timeout(ms(3), move |_| s.borrow_mut().push("third".into()));
    // All three are due when the loop first looks.
    spin(10);
    run_through(lp, mode, &["first timer"]);
    assert_eq!(entries(&seen), ["first", "tick", "third"]);
}

/// An interval that panics on its second call is stopped (its id no
/// longer active); another interval goes on to its own end.
fn intervals(lp: &mut Loop, mode: Mode) {
    let calls = Rc::new(Cell::new(0));
    let c = calls.clone();
    let failing = lp.set_interval(ms(1), move |_, _| {
        c.set(c.get() + 1);
        if c.get() == 2 {
            panic!("interval");
        }
    });
    let other_calls = Rc::new(Cell::new(0));
    let o = other_calls.clone();
    lp.set_interval(ms(2), move |lp, id| {
        o.set(o.get() + 1);
        if o.get() == 5 {
            lp.clear_timer(id);
        }
    });
    run_through(lp, mode, &["interval"]);
    assert_eq!(calls.get(), 2);
    assert_eq!(other_calls.get(), 5);
    assert!(
        !lp.timer_is_active(failing),
        "the panicking interval stopped"
    );
    assert!(!lp.clear_timer(failing));
}

/// Immediates after the panicking one run (in the same check phase with a
/// handler, in the next `run()` without).
fn immediates(lp: &mut Loop, mode: Mode) {
    let seen = log();
    for i in 0..4 {
        let s = seen.clone();
        lp.set_immediate(move |_| {
            s.borrow_mut().push(format!("i{i}"));
            if i == 1 {
                panic!("immediate");
            }
        });
    }
    run_through(lp, mode, &["immediate"]);
    assert_eq!(entries(&seen), ["i0", "i1", "i2", "i3"]);
}

/// Next-ticks and microtasks queued behind a panicking tick run.
fn next_ticks(lp: &mut Loop, mode: Mode) {
    let seen = log();
    let s = seen.clone();
    lp.set_immediate(move |lp| {
        for i in 0..3 {
            let s = s.clone();
            lp.next_tick(move |_| {
                s.borrow_mut().push(format!("t{i}"));
                if i == 0 {
                    panic!("tick");
                }
            });
        }
        let s = s.clone();
        lp.queue_microtask(move |_| s.borrow_mut().push("m".into()));
    });
    run_through(lp, mode, &["tick"]);
    assert_eq!(entries(&seen), ["t0", "t1", "t2", "m"]);
}

/// Microtasks queued behind a panicking microtask run, and ticks the
/// panicking one queued too.
fn microtasks(lp: &mut Loop, mode: Mode) {
    let seen = log();
    let s = seen.clone();
    lp.set_timeout(ms(1), move |lp| {
        for i in 0..3 {
            let s = s.clone();
            lp.queue_microtask(move |lp| {
                s.borrow_mut().push(format!("m{i}"));
                if i == 1 {
                    let s = s.clone();
                    lp.next_tick(move |_| s.borrow_mut().push("tick".into()));
                    panic!("microtask");
                }
            });
        }
    });
    run_through(lp, mode, &["microtask"]);
    let seen = entries(&seen);
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert_eq!(seen[..2], ["m0", "m1"]);
    assert!(seen.contains(&"m2".to_owned()) && seen.contains(&"tick".to_owned()));
}

/// A hook that panics on its second call is stopped; the loop then ends
/// (a prepare or check hook left registered would keep it alive, an idle
/// one would also keep it from ever blocking).
fn hook_in(lp: &mut Loop, mode: Mode, phase: Phase) {
    let calls = Rc::new(Cell::new(0));
    let c = calls.clone();
    let hook = lp.start_hook(phase, move |_, _| {
        c.set(c.get() + 1);
        if c.get() == 2 {
            panic!("hook");
        }
    });
    // Something to keep the loop turning meanwhile (a prepare or check
    // hook alone lets the poll phase block).
    let ticks = Rc::new(Cell::new(0));
    let t = ticks.clone();
    lp.set_interval(ms(1), move |lp, id| {
        t.set(t.get() + 1);
        if t.get() == 8 {
            lp.clear_timer(id);
        }
    });
    let other = Rc::new(Cell::new(0));
    let o = other.clone();
    lp.start_hook(phase, move |lp, id| {
        o.set(o.get() + 1);
        if o.get() == 4 {
            lp.stop_hook(id);
        }
    });
    run_through(lp, mode, &["hook"]);
    assert_eq!(calls.get(), 2);
    assert_eq!(other.get(), 4);
    assert!(!lp.stop_hook(hook), "the panicking hook is already stopped");
}

fn idle_hooks(lp: &mut Loop, mode: Mode) {
    hook_in(lp, mode, Phase::Idle);
}

fn prepare_hooks(lp: &mut Loop, mode: Mode) {
    hook_in(lp, mode, Phase::Prepare);
}

fn check_hooks(lp: &mut Loop, mode: Mode) {
    hook_in(lp, mode, Phase::Check);
}

/// Work callbacks after a panicking one run, each once.
fn work_callbacks(lp: &mut Loop, mode: Mode) {
    let seen = log();
    for i in 0..6u32 {
        let s = seen.clone();
        lp.queue_work(
            move || i,
            move |_, result| {
                let i = result.expect("the work ran");
                s.borrow_mut().push(format!("w{i}"));
                if i == 2 {
                    panic!("work callback");
                }
            },
        );
    }
    run_through(lp, mode, &["work callback"]);
    let mut seen = entries(&seen);
    seen.sort();
    assert_eq!(seen, ["w0", "w1", "w2", "w3", "w4", "w5"]);
}

/// Closures posted after a panicking one run without another post.
fn posted_closures(lp: &mut Loop, mode: Mode) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let handle = lp.handle();
    for i in 0..4 {
        let s = seen.clone();
        handle
            .post(move |_| {
                s.lock().unwrap().push(i);
                if i == 1 {
                    panic!("posted");
                }
            })
            .unwrap();
    }
    drop(handle);
    run_through(lp, mode, &["posted"]);
    assert_eq!(*seen.lock().unwrap(), [0, 1, 2, 3]);
}

/// A channel whose handler panics keeps its other messages (in order) and
/// its senders: sending afterwards still works.
fn channels(lp: &mut Loop, mode: Mode) {
    let seen = log();
    let sender = Rc::new(RefCell::new(None));
    let s = seen.clone();
    let tx = sender.clone();
    let first = lp.channel(move |_, value: u32| {
        s.borrow_mut().push(format!("a{value}"));
        match value {
            2 => panic!("channel"),
            // Sent from the loop after the panic: the channel still works.
            5 => tx
                .borrow()
                .as_ref()
                .map(|tx: &eventide::Sender<u32>| tx.send(6).expect("the channel is still open")),
            6 => tx.borrow_mut().take().map(drop),
            _ => None,
        };
    });
    // A second channel, served after the first in the same phase: it must
    // not be forgotten when the first one's handler panics.
    let s = seen.clone();
    let second = lp.channel(move |_, value: u32| s.borrow_mut().push(format!("b{value}")));
    for value in 1..=5 {
        first.send(value).unwrap();
        second.send(value).unwrap();
    }
    *sender.borrow_mut() = Some(first);
    drop(second);
    run_through(lp, mode, &["channel"]);
    let seen = entries(&seen);
    let a: Vec<_> = seen.iter().filter(|v| v.starts_with('a')).collect();
    let b: Vec<_> = seen.iter().filter(|v| v.starts_with('b')).collect();
    assert_eq!(a, ["a1", "a2", "a3", "a4", "a5", "a6"]);
    assert_eq!(b, ["b1", "b2", "b3", "b4", "b5"]);
}

/// Close callbacks after a panicking one run; the closing queue empties.
fn close_callbacks(lp: &mut Loop, mode: Mode) {
    let seen = log();
    for i in 0..3 {
        let hook = lp.start_hook(Phase::Check, |_, _| {});
        let s = seen.clone();
        lp.close_then(hook, move |_| {
            s.borrow_mut().push(format!("c{i}"));
            if i == 1 {
                panic!("close");
            }
        });
    }
    run_through(lp, mode, &["close"]);
    // Last closed first.
    assert_eq!(entries(&seen), ["c2", "c1", "c0"]);
}

/// Without a handler: a close callback that panics last in its phase
/// leaves nothing in the closing queue, so the loop is not alive (the
/// spent entries used to keep it so until another close phase).
fn a_close_callback_panicking_last_leaves_nothing_alive(lp: &mut Loop) {
    let panics = Panics::default();
    let seen = log();
    for i in 0..3 {
        let hook = lp.start_hook(Phase::Check, |_, _| {});
        let s = seen.clone();
        lp.close_then(hook, move |_| {
            s.borrow_mut().push(format!("c{i}"));
            if i == 0 {
                panic!("close");
            }
        });
    }
    assert!(run_once(lp, &panics));
    assert_eq!(entries(&seen), ["c2", "c1", "c0"]);
    assert!(!lp.alive(), "every close callback has run");
}

/// With a handler that itself panics: the close callback that panicked
/// last in its phase leaves nothing behind when the handler's panic
/// leaves `run()`.
fn a_panicking_handler_in_the_close_phase(lp: &mut Loop) {
    let panics = Panics::default();
    lp.set_panic_handler(|_, _| panic!("handler"));
    let seen = log();
    for i in 0..3 {
        let hook = lp.start_hook(Phase::Check, |_, _| {});
        let s = seen.clone();
        lp.close_then(hook, move |_| {
            s.borrow_mut().push(format!("c{i}"));
            if i == 0 {
                panic!("close");
            }
        });
    }
    assert!(run_once(lp, &panics));
    assert_eq!(panics.all(), ["handler"]);
    assert_eq!(entries(&seen), ["c2", "c1", "c0"]);
    assert!(!lp.alive(), "every close callback has run");
}

/// Deferred (pending-phase) callbacks after a panicking one run.
fn deferred(lp: &mut Loop, mode: Mode) {
    let seen = log();
    for i in 0..3 {
        let s = seen.clone();
        lp.defer(move |_| {
            s.borrow_mut().push(format!("d{i}"));
            if i == 0 {
                panic!("deferred");
            }
        });
    }
    run_through(lp, mode, &["deferred"]);
    assert_eq!(entries(&seen), ["d0", "d1", "d2"]);
}

/// A completion handler of an I/O operation (here a file stat, a boxed
/// handler on io_uring, pool work on polling) that panics leaves no slot
/// behind: other operations complete and the loop ends.
fn io_callbacks(lp: &mut Loop, mode: Mode) {
    let dir = tempfile::tempdir().unwrap();
    let seen = log();
    for i in 0..3 {
        let s = seen.clone();
        lp.fs().stat(dir.path(), move |_, result| {
            assert!(result.expect("stat").is_dir());
            s.borrow_mut().push(format!("s{i}"));
            if i == 0 {
                panic!("stat callback");
            }
        });
    }
    // All three done before the loop first waits: their completions are
    // taken in one wait, and those after the panicking one must not wait
    // for another completion to be looked at.
    spin(20);
    run_through(lp, mode, &["stat callback"]);
    let mut seen = entries(&seen);
    seen.sort();
    assert_eq!(seen, ["s0", "s1", "s2"]);
}

/// A next-tick that panics right after a callback, queued by an interval,
/// a channel handler, a posted closure and a close callback: without a
/// handler its panic leaves `run()` after the callback's own state was put
/// right (the interval re-armed, the channel's other messages kept, the
/// posts behind it still flagged, the close queue clean).
fn ticks_after_callbacks(lp: &mut Loop, mode: Mode) {
    let seen = log();
    let s = seen.clone();
    let mut calls = 0;
    lp.set_interval(ms(1), move |lp, id| {
        calls += 1;
        s.borrow_mut().push(format!("interval{calls}"));
        if calls == 1 {
            lp.next_tick(|_| panic!("tick of an interval"));
        }
        if calls == 3 {
            lp.clear_timer(id);
        }
    });
    let s = seen.clone();
    let sender = lp.channel(move |lp, value: u32| {
        s.borrow_mut().push(format!("message{value}"));
        if value == 1 {
            lp.queue_microtask(|_| panic!("microtask of a message"));
        }
    });
    for value in 1..=3 {
        sender.send(value).unwrap();
    }
    drop(sender);
    let posted = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let handle = lp.handle();
    for i in 1..=3 {
        let p = posted.clone();
        handle
            .post(move |lp| {
                p.lock().unwrap().push(i);
                if i == 1 {
                    lp.next_tick(|_| panic!("tick of a post"));
                }
            })
            .unwrap();
    }
    drop(handle);
    for i in 1..=2 {
        let hook = lp.start_hook(Phase::Check, |_, _| {});
        let s = seen.clone();
        lp.close_then(hook, move |lp| {
            s.borrow_mut().push(format!("close{i}"));
            if i == 2 {
                lp.next_tick(|_| panic!("tick of a close"));
            }
        });
    }
    run_through(
        lp,
        mode,
        &[
            "tick of an interval",
            "microtask of a message",
            "tick of a post",
            "tick of a close",
        ],
    );
    let mut seen = entries(&seen);
    seen.sort();
    assert_eq!(
        seen,
        [
            "close1",
            "close2",
            "interval1",
            "interval2",
            "interval3",
            "message1",
            "message2",
            "message3",
        ]
    );
    assert_eq!(*posted.lock().unwrap(), [1, 2, 3]);
}

/// A panic handler that itself panics: its panic leaves `run()`, the
/// handler stays installed, and the loop goes on at the next `run()`.
fn a_panicking_panic_handler(lp: &mut Loop) {
    let panics = Panics::default();
    let handled = Rc::new(Cell::new(0));
    let h = handled.clone();
    lp.set_panic_handler(move |_, _| {
        h.set(h.get() + 1);
        if h.get() == 1 {
            panic!("handler");
        }
    });
    let seen = log();
    for i in 0..3 {
        let s = seen.clone();
        lp.set_immediate(move |_| {
            s.borrow_mut().push(format!("i{i}"));
            if i < 2 {
                panic!("immediate {i}");
            }
        });
    }
    assert!(run_once(lp, &panics), "the handler's panic leaves run()");
    assert!(!run_once(lp, &panics), "the second panic is handled");
    assert_eq!(panics.all(), ["handler"]);
    assert_eq!(handled.get(), 2);
    assert_eq!(entries(&seen), ["i0", "i1", "i2"]);
    assert!(!lp.alive());
}

/// A `stop()` in the run a panic ended does not stop the next run.
fn a_stop_before_an_uncaught_panic_is_spent(lp: &mut Loop) {
    let panics = Panics::default();
    lp.set_immediate(|lp| {
        lp.stop();
        panic!("after stop");
    });
    assert!(run_once(lp, &panics));
    let ran = Rc::new(Cell::new(0));
    let r = ran.clone();
    lp.set_timeout(ms(1), move |lp| {
        r.set(1);
        let r = r.clone();
        lp.set_timeout(ms(1), move |_| r.set(2));
    });
    assert!(!run_once(lp, &panics));
    assert_eq!(ran.get(), 2, "the whole run ran, not one turn");
}

/// Each scenario in both modes, on every backend.
macro_rules! on_every_backend_in_both_modes {
    ($($name:ident),* $(,)?) => {
        mod uring {
            $(
                mod $name {
                    fn run(mode: crate::Mode) {
                        if let Some(mut lp) = crate::util::new_loop(eventide::BackendKind::Uring) {
                            crate::$name(&mut lp, mode);
                        }
                    }
                    #[test]
                    fn handler() {
                        run(crate::Mode::Handler);
                    }
                    #[test]
                    fn unwind() {
                        run(crate::Mode::Unwind);
                    }
                }
            )*
        }
        mod poll {
            $(
                mod $name {
                    fn run(mode: crate::Mode) {
                        if let Some(mut lp) = crate::util::new_loop(eventide::BackendKind::Poll) {
                            crate::$name(&mut lp, mode);
                        }
                    }
                    #[test]
                    fn handler() {
                        run(crate::Mode::Handler);
                    }
                    #[test]
                    fn unwind() {
                        run(crate::Mode::Unwind);
                    }
                }
            )*
        }
    };
}

on_every_backend_in_both_modes!(
    timers,
    intervals,
    immediates,
    next_ticks,
    microtasks,
    idle_hooks,
    prepare_hooks,
    check_hooks,
    work_callbacks,
    posted_closures,
    channels,
    close_callbacks,
    deferred,
    io_callbacks,
    ticks_after_callbacks,
);

mod handlers {
    use super::*;
    on_every_backend!(
        a_panicking_panic_handler,
        a_stop_before_an_uncaught_panic_is_spent,
        a_close_callback_panicking_last_leaves_nothing_alive,
        a_panicking_handler_in_the_close_phase,
    );
}
