//! eventide's deliberate differences from Node's timers, pinned (each is
//! explained in docs/loop.md, "Deliberate differences from Node"): a
//! timer's handle is a `Copy` key, so what Node's `Timeout` object keeps
//! after its timer is gone (its function, its ref flag) is gone too; and
//! due timers run in deadline order, where Node's per-duration lists
//! reorder them when the loop runs late.

mod util;

use std::cell::Cell;
use std::rc::Rc;

use eventide::Loop;
use util::{Trace, ms, run_within, spin};

const LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Node: `t.refresh()` on a timeout that fired in an earlier callback runs
/// it again. eventide: the callback was dropped when it returned (and its
/// ticks ran); `refresh_timer` answers `false` and nothing runs again.
fn refreshing_a_timeout_that_fired_earlier_does_nothing(lp: &mut Loop) {
    let runs = Rc::new(Cell::new(0));
    let r = runs.clone();
    let t = lp.set_timeout(ms(1), move |_| r.set(r.get() + 1));
    let refreshed = Rc::new(Cell::new(None));
    let seen = refreshed.clone();
    lp.set_timeout(ms(10), move |lp| seen.set(Some(lp.refresh_timer(t))));
    run_within(lp, LIMIT);
    assert_eq!(runs.get(), 1);
    assert_eq!(refreshed.get(), Some(false));
    assert!(!lp.timer_is_active(t));
}

/// Node: `hasRef()` of a timeout that fired or was cleared still reports
/// its ref flag (true unless unref'd). eventide: `false` once it is gone.
fn has_ref_of_a_timer_that_is_gone_is_false(lp: &mut Loop) {
    let fired = lp.set_timeout(ms(1), |_| {});
    let cleared = lp.set_timeout(ms(1), |_| {});
    assert!(lp.timer_has_ref(cleared));
    assert!(lp.clear_timer(cleared));
    run_within(lp, LIMIT);
    assert!(!lp.timer_has_ref(fired));
    assert!(!lp.timer_has_ref(cleared));
}

/// Node keeps one list per duration and, when the loop runs late, runs
/// every due timer of one list before the next list: with A (10 ms) and
/// B (12 ms) started at 0, C (10 ms) started at 5, and the loop first
/// running at 25, node prints A, C, B (recorded:
/// `node -e` of the same program, three runs alike). eventide runs due
/// timers in (deadline, start order): A (10), B (12), C (15), so firing
/// order never goes back in deadline (W1's contract checks exactly that).
fn late_timers_run_in_deadline_order_not_per_duration_list(lp: &mut Loop) {
    let trace = Trace::default();
    lp.set_timeout(ms(10), trace.at("A"));
    lp.set_timeout(ms(12), trace.at("B"));
    spin(5);
    lp.set_timeout(ms(10), trace.at("C"));
    spin(20);
    run_within(lp, LIMIT);
    trace.assert(&["A", "B", "C"]);
}

on_every_backend_serial!(
    late_timers_run_in_deadline_order_not_per_duration_list,
    refreshing_a_timeout_that_fired_earlier_does_nothing,
    has_ref_of_a_timer_that_is_gone_is_false,
);
