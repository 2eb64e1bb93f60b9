//! `Loop::fail`: a callback stops the loop with an error that `run()`
//! returns, on every backend. Nothing runs after the failing callback
//! (not its ticks, not the rest of the phase); nothing is lost either: a
//! later `run()` goes on from there.

mod util;

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use eventide::{Error, Loop, Phase, RunMode};
use util::{Trace, ms};

const LIMIT: Duration = Duration::from_secs(10);

/// Runs the loop once (bounded by an unref'ed watchdog) and returns what
/// `run()` returned.
fn run_once(lp: &mut Loop) -> eventide::Result<()> {
    let watchdog = lp.set_timeout(LIMIT, |_| {
        panic!("the loop was still running after its time limit")
    });
    lp.unref_timer(watchdog);
    let result = lp.run();
    lp.clear_timer(watchdog);
    result
}

fn failure(message: &str) -> Error {
    Error::other(message.to_owned())
}

fn a_failing_timer_ends_run_before_its_ticks_and_the_rest_of_the_phase(lp: &mut Loop) {
    let trace = Trace::default();
    let t = trace.clone();
    lp.set_timeout(ms(1), move |lp| {
        t.log("timer-a");
        lp.next_tick(t.at("tick-of-a"));
        lp.queue_microtask(t.at("microtask-of-a"));
        lp.set_immediate(t.at("immediate"));
        lp.fail(failure("a failed"));
        t.log("timer-a-finishes");
    });
    // Due in the same timers phase, after a: it must wait.
    lp.set_timeout(ms(1), trace.at("timer-b"));
    let error = run_once(lp).unwrap_err();
    assert_eq!(error.to_string(), "a failed");
    assert!(!lp.is_failed(), "run() took the error");
    trace.assert(&["timer-a", "timer-a-finishes"]);

    // Everything is still queued, in order: the ticks first.
    run_once(lp).expect("the second run has nothing to fail");
    trace.assert(&[
        "timer-a",
        "timer-a-finishes",
        "tick-of-a",
        "microtask-of-a",
        "timer-b",
        "immediate",
    ]);
    assert!(!lp.alive());
}

fn a_failing_tick_leaves_the_ticks_behind_it_queued(lp: &mut Loop) {
    let trace = Trace::default();
    let t = trace.clone();
    lp.set_immediate(move |lp| {
        let t1 = t.clone();
        lp.next_tick(move |lp| {
            t1.log("tick-1");
            lp.fail(failure("tick-1 failed"));
        });
        lp.next_tick(t.at("tick-2"));
        lp.queue_microtask(t.at("microtask"));
    });
    lp.set_immediate(trace.at("immediate-2"));
    let error = run_once(lp).unwrap_err();
    assert_eq!(error.to_string(), "tick-1 failed");
    trace.assert(&["tick-1"]);
    run_once(lp).unwrap();
    trace.assert(&["tick-1", "tick-2", "microtask", "immediate-2"]);
}

fn a_panic_handler_never_sees_a_failure(lp: &mut Loop) {
    let panics = Rc::new(RefCell::new(0));
    let p = Rc::clone(&panics);
    lp.set_panic_handler(move |_, _| *p.borrow_mut() += 1);
    let trace = Trace::default();
    let t = trace.clone();
    lp.set_immediate(move |lp| {
        t.log("immediate-1");
        lp.next_tick(t.at("tick"));
        lp.fail(failure("with a handler"));
    });
    lp.set_immediate(trace.at("immediate-2"));
    let error = run_once(lp).unwrap_err();
    assert_eq!(error.to_string(), "with a handler");
    assert_eq!(*panics.borrow(), 0);
    trace.assert(&["immediate-1"]);
    run_once(lp).unwrap();
    trace.assert(&["immediate-1", "tick", "immediate-2"]);
}

fn a_failure_from_a_tick_under_a_panic_handler_leaves_posted_closures_in_place(lp: &mut Loop) {
    // A posted closure's ticks are drained through the path that, with a
    // handler, catches nothing: the failure must still leave at once.
    lp.set_panic_handler(|_, _| panic!("no panic expected"));
    // Posted closures are `Send`: they log into the loop's own state.
    #[derive(Default)]
    struct Log(Vec<&'static str>);
    lp.insert_state(Log::default());
    fn log(lp: &mut Loop, token: &'static str) {
        lp.state_mut::<Log>().unwrap().0.push(token);
    }
    let handle = lp.handle();
    handle
        .post(|lp| {
            log(lp, "posted-1");
            lp.next_tick(|lp| {
                log(lp, "tick-of-posted-1");
                lp.fail(failure("posted tick failed"));
            });
        })
        .unwrap();
    handle.post(|lp| log(lp, "posted-2")).unwrap();
    drop(handle);
    let error = run_once(lp).unwrap_err();
    assert_eq!(error.to_string(), "posted tick failed");
    assert_eq!(
        lp.state::<Log>().unwrap().0,
        ["posted-1", "tick-of-posted-1"]
    );
    run_once(lp).unwrap();
    assert_eq!(
        lp.state::<Log>().unwrap().0,
        ["posted-1", "tick-of-posted-1", "posted-2"]
    );
}

fn a_failure_outside_run_is_returned_by_the_next_run_at_once(lp: &mut Loop) {
    let trace = Trace::default();
    lp.next_tick(trace.at("tick"));
    lp.set_immediate(trace.at("immediate"));
    lp.fail(failure("before run"));
    assert!(lp.is_failed());
    assert_eq!(run_once(lp).unwrap_err().to_string(), "before run");
    trace.assert(&[]);
    run_once(lp).unwrap();
    trace.assert(&["tick", "immediate"]);
}

fn the_first_failure_wins(lp: &mut Loop) {
    lp.set_immediate(|lp| {
        lp.fail(failure("first"));
        lp.fail(failure("second"));
    });
    assert_eq!(run_once(lp).unwrap_err().to_string(), "first");
    run_once(lp).unwrap();
}

fn an_interval_that_fails_keeps_running_on_the_next_run(lp: &mut Loop) {
    let runs = Rc::new(RefCell::new(0));
    let r = Rc::clone(&runs);
    lp.set_interval(ms(1), move |lp, me| {
        *r.borrow_mut() += 1;
        match *r.borrow() {
            1 => lp.fail(failure("first run")),
            _ => {
                lp.clear_timer(me);
            }
        }
    });
    assert_eq!(run_once(lp).unwrap_err().to_string(), "first run");
    assert_eq!(*runs.borrow(), 1);
    assert!(lp.alive(), "the interval is still armed");
    run_once(lp).unwrap();
    assert_eq!(*runs.borrow(), 2);
}

fn failures_from_every_kind_of_callback(lp: &mut Loop) {
    // An fs error, handed on as it is.
    lp.fs()
        .read_file("no-such-file-for-loop-fail.txt", |lp, result| {
            if let Err(error) = result {
                lp.fail(error);
            }
        });
    let error = run_once(lp).unwrap_err();
    assert_eq!(error.code(), Some("ENOENT"));

    // Pool work's callback.
    lp.queue_work(
        || 6 * 7,
        |lp, r| lp.fail(failure(&format!("work {}", r.unwrap()))),
    );
    assert_eq!(run_once(lp).unwrap_err().to_string(), "work 42");

    // A hook, which stays registered (stop it after).
    let hook = lp.start_hook(Phase::Check, |lp, _| lp.fail(failure("hook")));
    assert_eq!(run_once(lp).unwrap_err().to_string(), "hook");
    assert!(lp.stop_hook(hook));

    // A close callback.
    let timer = lp.set_timeout(ms(1000), |_| panic!("closed"));
    lp.close_then(timer, |lp| lp.fail(failure("close callback")));
    assert_eq!(run_once(lp).unwrap_err().to_string(), "close callback");

    // A channel's handler: the rest of its batch waits for the next run.
    let got = Rc::new(RefCell::new(Vec::new()));
    let g = Rc::clone(&got);
    let tx = lp.channel(move |lp, value: u32| {
        g.borrow_mut().push(value);
        if value == 1 {
            lp.fail(failure("channel"));
        }
    });
    for value in 1..=3 {
        tx.send(value).unwrap();
    }
    drop(tx);
    assert_eq!(run_once(lp).unwrap_err().to_string(), "channel");
    assert_eq!(*got.borrow(), [1]);
    run_once(lp).unwrap();
    assert_eq!(*got.borrow(), [1, 2, 3]);

    // A microtask, and an io::Error (which keeps its kind).
    lp.queue_microtask(|lp| lp.fail(io::Error::other("io")));
    let error = run_once(lp).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::Other);
    assert!(!lp.alive());
}

fn run_mode_once_and_nowait_return_the_failure_too(lp: &mut Loop) {
    lp.set_immediate(|lp| lp.fail(failure("once")));
    assert_eq!(lp.run_mode(RunMode::Once).unwrap_err().to_string(), "once");
    lp.set_immediate(|lp| lp.fail(failure("nowait")));
    assert_eq!(
        lp.run_mode(RunMode::NoWait).unwrap_err().to_string(),
        "nowait"
    );
    assert!(!lp.run_mode(RunMode::NoWait).unwrap());
}

fn a_stop_requested_before_the_failure_is_spent(lp: &mut Loop) {
    let trace = Trace::default();
    let t = trace.clone();
    lp.set_immediate(move |lp| {
        lp.stop();
        lp.fail(failure("stopped and failed"));
        lp.set_immediate(t.at("next-run"));
    });
    assert!(run_once(lp).is_err());
    // The stop went with the failed run: the next run runs.
    run_once(lp).unwrap();
    trace.assert(&["next-run"]);
}

fn errors_of_the_programs_own_downcast_back() {
    #[derive(Debug)]
    struct Mine(u32);
    impl std::fmt::Display for Mine {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "mine {}", self.0)
        }
    }
    impl std::error::Error for Mine {}
    let error = Error::other(Mine(7));
    assert_eq!(error.to_string(), "mine 7");
    assert_eq!(error.kind(), io::ErrorKind::Other);
    let mine = error.get_ref().and_then(|e| e.downcast_ref::<Mine>());
    assert_eq!(mine.map(|m| m.0), Some(7));
    let io_error: io::Error = Error::other(io::Error::from(io::ErrorKind::NotFound)).into();
    assert_eq!(io_error.kind(), io::ErrorKind::NotFound);
}

#[test]
fn errors_of_the_programs_own() {
    errors_of_the_programs_own_downcast_back();
}

on_every_backend!(
    a_failing_timer_ends_run_before_its_ticks_and_the_rest_of_the_phase,
    a_failing_tick_leaves_the_ticks_behind_it_queued,
    a_panic_handler_never_sees_a_failure,
    a_failure_from_a_tick_under_a_panic_handler_leaves_posted_closures_in_place,
    a_failure_outside_run_is_returned_by_the_next_run_at_once,
    the_first_failure_wins,
    an_interval_that_fails_keeps_running_on_the_next_run,
    failures_from_every_kind_of_callback,
    run_mode_once_and_nowait_return_the_failure_too,
    a_stop_requested_before_the_failure_is_spent,
);
