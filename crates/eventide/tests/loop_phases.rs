//! The loop's turn: phase order, run modes, stop, liveness, hooks and
//! closing handles, on every compiled backend.

mod util;

use std::cell::Cell;
use std::rc::Rc;

use eventide::{Error, Loop, Phase, RunMode};
use util::{Trace, ms, run_within};

const LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

fn one_turn_runs_the_phases_in_libuv_order(lp: &mut Loop) {
    let trace = Trace::default();
    // Armed so that the first turn has everything to do at once.
    let t = trace.clone();
    lp.set_timeout(ms(1), move |lp| {
        t.log("timers");
        lp.defer(t.at("pending"));
        let t2 = t.clone();
        let idle = lp.start_hook(Phase::Idle, move |lp, id| {
            t2.log("idle");
            lp.stop_hook(id);
        });
        let _ = idle;
        let t2 = t.clone();
        lp.start_hook(Phase::Prepare, move |lp, id| {
            t2.log("prepare");
            lp.stop_hook(id);
        });
        let t2 = t.clone();
        lp.queue_work(|| 1, move |_, _| t2.log("poll"));
        let t2 = t.clone();
        lp.start_hook(Phase::Check, move |lp, id| {
            t2.log("check");
            lp.stop_hook(id);
        });
        lp.set_immediate(t.at("immediate"));
        let t2 = t.clone();
        let closing = lp.start_hook(Phase::Idle, |_, _| {});
        lp.close_then(closing, move |_| t2.log("close"));
    });
    util::spin(5);
    run_within(lp, LIMIT);
    let tokens = trace.tokens();
    // The work callback may need more than one turn to arrive; everything
    // else is fixed.
    let without_poll: Vec<_> = tokens.iter().filter(|t| *t != "poll").cloned().collect();
    assert_eq!(
        without_poll,
        [
            "timers",
            "pending",
            "idle",
            "prepare",
            "check",
            "immediate",
            "close"
        ],
        "{tokens:?}"
    );
    let poll = tokens
        .iter()
        .position(|t| t == "poll")
        .expect("the work callback ran");
    let prepare = tokens.iter().position(|t| t == "prepare").unwrap();
    assert!(poll > prepare, "{tokens:?}");
}

fn run_returns_at_once_when_nothing_keeps_the_loop_alive(lp: &mut Loop) {
    assert!(!lp.alive());
    lp.run().unwrap();
    assert!(!lp.run_mode(RunMode::Once).unwrap());
    assert!(!lp.run_mode(RunMode::NoWait).unwrap());
}

fn run_once_blocks_for_the_next_timer_and_nowait_does_not(lp: &mut Loop) {
    let fired = Rc::new(Cell::new(0));
    let f = fired.clone();
    lp.set_timeout(ms(30), move |_| f.set(f.get() + 1));
    // NoWait: the timer is not due, nothing blocks, the loop stays alive.
    assert!(lp.run_mode(RunMode::NoWait).unwrap());
    assert_eq!(fired.get(), 0);
    // Once: blocks in poll until the timer is due, runs it at the turn's end.
    let mut turns = 0;
    while fired.get() == 0 {
        turns += 1;
        assert!(turns < 10, "run(Once) never got to the timer");
        lp.run_mode(RunMode::Once).unwrap();
    }
    assert!(!lp.alive());
}

fn stop_ends_run_after_the_current_turn_and_run_resumes_later(lp: &mut Loop) {
    let count = Rc::new(Cell::new(0));
    let c = count.clone();
    let interval = lp.set_interval(ms(1), move |lp, _| {
        c.set(c.get() + 1);
        if c.get() == 3 {
            lp.stop();
        }
    });
    lp.run().unwrap();
    assert_eq!(count.get(), 3);
    assert!(lp.alive(), "the interval still keeps the loop alive");
    let c = count.clone();
    lp.set_timeout(ms(5), move |lp| {
        assert!(c.get() >= 4);
        lp.clear_timer(interval);
    });
    run_within(lp, LIMIT);
    assert!(count.get() >= 4);
}

fn run_from_inside_a_callback_is_an_error(lp: &mut Loop) {
    let result = Rc::new(Cell::new(None));
    let r = result.clone();
    lp.set_immediate(move |lp| r.set(Some(matches!(lp.run(), Err(Error::Reentrant)))));
    run_within(lp, LIMIT);
    assert_eq!(result.get(), Some(true));
}

fn unrefd_hooks_run_but_do_not_keep_the_loop_alive(lp: &mut Loop) {
    let runs = Rc::new(Cell::new(0));
    let r = runs.clone();
    let hook = lp.start_hook(Phase::Check, move |_, _| r.set(r.get() + 1));
    lp.unref_hook(hook);
    assert!(!lp.alive());
    lp.set_timeout(ms(2), |_| {});
    run_within(lp, LIMIT);
    assert!(runs.get() >= 1, "an active check hook runs every turn");
    lp.ref_hook(hook);
    assert!(lp.alive());
    assert!(lp.stop_hook(hook));
    assert!(!lp.stop_hook(hook), "stopping twice is a no-op");
    assert!(!lp.alive());
}

fn an_idle_hook_keeps_the_poll_phase_from_blocking(lp: &mut Loop) {
    let turns = Rc::new(Cell::new(0u32));
    let t = turns.clone();
    // A long timer: if poll blocked until it, the hook would run ~once.
    let long = lp.set_timeout(ms(5_000), |_| {
        panic!("the idle hook should have cleared me")
    });
    lp.start_hook(Phase::Idle, move |lp, id| {
        t.set(t.get() + 1);
        if t.get() == 100 {
            lp.stop_hook(id);
            lp.clear_timer(long);
        }
    });
    run_within(lp, LIMIT);
    assert_eq!(turns.get(), 100);
}

fn close_callbacks_run_in_the_close_phase_after_immediates(lp: &mut Loop) {
    let trace = Trace::default();
    let t = trace.clone();
    lp.set_immediate(move |lp| {
        t.log("immediate-1");
        let timer = lp.set_timeout(ms(100), t.at("timer-should-not-fire"));
        let t2 = t.clone();
        assert!(lp.close_then(timer, move |lp| {
            t2.log("timer-closed");
            lp.next_tick(t2.at("tick-from-close"));
        }));
        assert!(!lp.close_then(timer, |_| {}), "a closed handle is gone");
        lp.set_immediate(t.at("immediate-next-turn"));
    });
    lp.set_immediate(trace.at("immediate-2"));
    run_within(lp, LIMIT);
    trace.assert(&[
        "immediate-1",
        "immediate-2",
        "timer-closed",
        "tick-from-close",
        "immediate-next-turn",
    ]);
}

fn clear_immediate_cancels_one_not_yet_run_even_in_the_same_phase(lp: &mut Loop) {
    let trace = Trace::default();
    let second = Rc::new(Cell::new(None));
    let s = second.clone();
    let t = trace.clone();
    lp.set_immediate(move |lp| {
        t.log("first");
        assert!(lp.clear_immediate(s.get().unwrap()));
    });
    second.set(Some(lp.set_immediate(trace.at("second-should-not-run"))));
    let third = lp.set_immediate(trace.at("third"));
    run_within(lp, LIMIT);
    assert!(!lp.clear_immediate(third), "an immediate that ran is gone");
    trace.assert(&["first", "third"]);
}

fn deferred_callbacks_run_in_the_next_pending_phase_not_inside_the_call(lp: &mut Loop) {
    let trace = Trace::default();
    let t = trace.clone();
    lp.set_immediate(move |lp| {
        lp.defer(t.at("deferred"));
        t.log("after-defer-call");
        lp.set_immediate(t.at("next-immediate"));
    });
    run_within(lp, LIMIT);
    trace.assert(&["after-defer-call", "deferred", "next-immediate"]);
}

fn the_loop_reports_the_backend_it_runs_on(lp: &mut Loop) {
    let name = lp.backend().name();
    assert!(name == "uring" || name == "epoll" || name == "poll");
    assert!(format!("{lp:?}").contains(name));
}

fn a_hook_that_panics_under_a_panic_handler_is_stopped(lp: &mut Loop) {
    let panics = Rc::new(Cell::new(0));
    let p = panics.clone();
    lp.set_panic_handler(move |_, _| p.set(p.get() + 1));
    let hook = lp.start_hook(Phase::Idle, |_, _| panic!("hook failed"));
    run_within(lp, LIMIT);
    assert_eq!(panics.get(), 1, "it ran once, then was stopped");
    assert!(!lp.stop_hook(hook), "already stopped");
    assert!(!lp.alive());
}

on_every_backend!(
    one_turn_runs_the_phases_in_libuv_order,
    run_returns_at_once_when_nothing_keeps_the_loop_alive,
    run_once_blocks_for_the_next_timer_and_nowait_does_not,
    stop_ends_run_after_the_current_turn_and_run_resumes_later,
    run_from_inside_a_callback_is_an_error,
    unrefd_hooks_run_but_do_not_keep_the_loop_alive,
    an_idle_hook_keeps_the_poll_phase_from_blocking,
    close_callbacks_run_in_the_close_phase_after_immediates,
    clear_immediate_cancels_one_not_yet_run_even_in_the_same_phase,
    deferred_callbacks_run_in_the_next_pending_phase_not_inside_the_call,
    the_loop_reports_the_backend_it_runs_on,
    a_hook_that_panics_under_a_panic_handler_is_stopped,
);
