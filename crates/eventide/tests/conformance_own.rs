//! eventide's own conformance cases: the scenarios of the Node scripts in
//! `tests/conformance/` (see its README), with the traces Node recorded,
//! on every compiled backend.

mod util;

use std::cell::Cell;
use std::rc::Rc;

use eventide::Loop;
use util::{Trace, ms, run_within, spin};

const LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The trace Node recorded for `case`, from `tests/conformance/`.
fn recorded(case: &str) -> Vec<String> {
    let path = format!(
        "{}/tests/conformance/{case}.expected",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines().map(str::to_owned).collect()
}

fn case_30_clear_immediate_same_phase(lp: &mut Loop) {
    let trace = Trace::default();
    let b = Rc::new(Cell::new(None));
    let (t, bb) = (trace.clone(), b.clone());
    lp.set_immediate(move |lp| {
        t.log("first");
        lp.clear_immediate(bb.get().unwrap());
    });
    b.set(Some(lp.set_immediate(trace.at("second-should-not-run"))));
    lp.set_immediate(trace.at("third"));
    run_within(lp, LIMIT);
    assert_eq!(trace.tokens(), recorded("30-clear-immediate-same-phase"));
}

fn case_31_ticks_drain_between_immediates(lp: &mut Loop) {
    let trace = Trace::default();
    let t = trace.clone();
    lp.set_immediate(move |lp| {
        t.log("imm1");
        lp.queue_microtask(t.at("imm1.promise"));
        lp.next_tick(t.at("imm1.tick"));
    });
    lp.set_immediate(trace.at("imm2"));
    run_within(lp, LIMIT);
    assert_eq!(
        trace.tokens(),
        recorded("31-ticks-drain-between-immediates")
    );
}

fn case_32_interval_and_timeout_same_deadline(lp: &mut Loop) {
    let trace = Trace::default();
    let t = trace.clone();
    let mut n = 0;
    lp.set_interval(ms(5), move |lp, id| {
        n += 1;
        t.log(format!("interval{n}"));
        if n == 2 {
            lp.clear_timer(id);
        }
    });
    lp.set_timeout(ms(5), trace.at("timeout"));
    spin(2);
    lp.set_timeout(ms(5), trace.at("timeout-later-start"));
    run_within(lp, LIMIT);
    assert_eq!(
        trace.tokens(),
        recorded("32-interval-and-timeout-same-deadline")
    );
}

fn case_33_clear_timer_from_immediate(lp: &mut Loop) {
    let trace = Trace::default();
    let a = lp.set_timeout(ms(20), trace.at("a-should-not-run"));
    let b = lp.set_timeout(ms(20), trace.at("b-refreshed"));
    let t = trace.clone();
    lp.set_immediate(move |lp| {
        t.log("immediate");
        assert!(lp.clear_timer(a));
        lp.set_timeout(ms(20), t.at("c-started-in-immediate"));
        assert!(lp.refresh_timer(b));
    });
    run_within(lp, LIMIT);
    assert_eq!(trace.tokens(), recorded("33-clear-timer-from-immediate"));
}

fn case_34_refresh_in_own_callback(lp: &mut Loop) {
    let trace = Trace::default();
    let runs = Rc::new(Cell::new(0));
    let me: Rc<Cell<Option<eventide::TimerId>>> = Rc::default();
    let (t, r, m) = (trace.clone(), runs.clone(), me.clone());
    let id = lp.set_timeout(ms(5), move |lp| {
        r.set(r.get() + 1);
        let id = m.get().unwrap();
        t.log(format!(
            "refreshing-{} hasRef={}",
            r.get(),
            lp.timer_has_ref(id)
        ));
        if r.get() < 3 {
            assert!(lp.refresh_timer(id));
        }
    });
    me.set(Some(id));
    lp.set_timeout(ms(8), trace.at("once"));
    let (t, r) = (trace.clone(), runs.clone());
    lp.set_timeout(ms(200), move |_| t.log(format!("later runs={}", r.get())));
    run_within(lp, LIMIT);
    assert_eq!(trace.tokens(), recorded("34-refresh-in-own-callback"));
    assert!(!lp.timer_is_active(id), "done after its last run");
}

fn case_35_unref_immediate(lp: &mut Loop) {
    let trace = Trace::default();
    let t0 = std::time::Instant::now();
    let t = trace.clone();
    let a = lp.set_immediate(move |_| {
        t.log(format!(
            "a runs after the wait: {}",
            t0.elapsed() >= std::time::Duration::from_millis(15)
        ))
    });
    lp.unref_immediate(a);
    trace.log(format!("a.hasRef={}", lp.immediate_has_ref(a)));
    let c = lp.set_immediate(trace.at("c (unref then ref) runs"));
    lp.unref_immediate(c);
    lp.ref_immediate(c);
    trace.log(format!("c.hasRef={}", lp.immediate_has_ref(c)));
    let t = trace.clone();
    lp.set_timeout(ms(20), move |lp| {
        t.log("timeout");
        let b = lp.set_immediate(t.at("b-never"));
        lp.unref_immediate(b);
    });
    run_within(lp, LIMIT);
    assert_eq!(trace.tokens(), recorded("35-unref-immediate"));
    assert!(
        !lp.alive(),
        "the unref'd immediate left does not keep it alive"
    );
}

fn case_36_unref_immediate_lets_poll_block(lp: &mut Loop) {
    let trace = Trace::default();
    let t0 = std::time::Instant::now();
    let t = trace.clone();
    let i = lp.set_immediate(move |_| {
        t.log(format!(
            "immediate after the wait: {}",
            t0.elapsed() >= std::time::Duration::from_millis(25)
        ))
    });
    lp.unref_immediate(i);
    lp.set_timeout(ms(30), trace.at("timer"));
    run_within(lp, LIMIT);
    assert_eq!(
        trace.tokens(),
        recorded("36-unref-immediate-lets-poll-block")
    );
}

fn case_37_timers_phase_runs_again_after_a_tick_starts_a_timer(lp: &mut Loop) {
    let trace = Trace::default();
    let t = trace.clone();
    let mut n = 0;
    lp.set_interval(ms(1), move |lp, h| {
        n += 1;
        t.log(format!("interval {n}"));
        if n == 3 {
            lp.clear_timer(h);
        }
        spin(5);
        let k = n;
        let ti = t.clone();
        lp.set_immediate(move |_| ti.log(format!("immediate {k}")));
        let tt = t.clone();
        lp.next_tick(move |lp| {
            if k == 1 {
                lp.set_timeout(ms(300), tt.at("timeout from a tick"));
            } else {
                lp.set_timeout(ms(50), |_| {});
            }
        });
    });
    let t = trace.clone();
    lp.set_timeout(ms(600), move |lp| {
        let mut m = 0;
        let t = t.clone();
        lp.set_interval(ms(1), move |lp, g| {
            m += 1;
            t.log(format!("quiet interval {m}"));
            if m == 2 {
                lp.clear_timer(g);
            }
            spin(5);
            let k = m;
            let ti = t.clone();
            lp.set_immediate(move |_| ti.log(format!("quiet immediate {k}")));
        });
    });
    run_within(lp, LIMIT);
    assert_eq!(
        trace.tokens(),
        recorded("37-timers-phase-runs-again-after-a-tick-starts-a-timer")
    );
}

on_every_backend_serial!(
    case_37_timers_phase_runs_again_after_a_tick_starts_a_timer,
    case_30_clear_immediate_same_phase,
    case_31_ticks_drain_between_immediates,
    case_32_interval_and_timeout_same_deadline,
    case_33_clear_timer_from_immediate,
    case_34_refresh_in_own_callback,
    case_35_unref_immediate,
    case_36_unref_immediate_lets_poll_block,
);
