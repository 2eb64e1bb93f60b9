//! Node's callback ordering, case by case: each test builds the scenario of
//! one script in `shared/conformance/node/` (named in its comment) with
//! eventide and asserts the trace Node recorded for it (`NN-*.expected`).
//! Every case runs once per compiled backend.
//!
//! Mapping: the script's top-level code is the code before `run()`;
//! `Promise.resolve().then(f)` and `queueMicrotask(f)` are
//! `queue_microtask(f)`; `fs.readFile` is `fs().read_file` (case 05, also
//! run with a pool work callback, which runs in the poll phase too);
//! `process.on('exit')` is the code after `run()` returns.
//!
//! Not ported, with the reason: 03 (ES-module top level runs inside a
//! microtask job: Rust has no module job, so eventide follows the CommonJS
//! order of case 01); 24 (sockets' and UDP sockets' close events: in
//! `conformance_dgram.rs`); 28 and 30 (`timers/promises`, `AbortSignal`
//! and fs with an AbortSignal: promise and signal APIs without a Rust
//! counterpart here; case 30's pre-aborted call that calls back inside the
//! call is also against eventide's rule that no callback runs inside the
//! call that scheduled it). Case 29's AbortSignal is mapped to the
//! unreferenced timer it is made of.

mod util;

use eventide::Loop;
use util::{Trace, ms, run_within, spin};

const LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// 01-sync-then-nexttick-then-microtasks
fn case_01_ticks_then_microtasks_after_the_main_program(lp: &mut Loop) {
    let trace = Trace::default();
    trace.log("sync1");
    lp.next_tick(trace.at("tick1"));
    lp.queue_microtask(trace.at("promise1"));
    lp.queue_microtask(trace.at("microtask2"));
    lp.next_tick(trace.at("tick2"));
    lp.queue_microtask(trace.at("promise3"));
    trace.log("sync2");
    run_within(lp, LIMIT);
    trace.assert(&[
        "sync1",
        "sync2",
        "tick1",
        "tick2",
        "promise1",
        "microtask2",
        "promise3",
    ]);
}

/// 02-nexttick-microtask-interleave
fn case_02_whole_tick_queue_then_whole_microtask_queue_repeatedly(lp: &mut Loop) {
    let trace = Trace::default();
    let t = trace.clone();
    lp.next_tick(move |lp| {
        t.log("tick1");
        lp.next_tick(t.at("tick1.tick"));
        lp.queue_microtask(t.at("tick1.promise"));
    });
    let t = trace.clone();
    lp.queue_microtask(move |lp| {
        t.log("promise1");
        lp.next_tick(t.at("promise1.tick"));
        let t = t.clone();
        lp.queue_microtask(move |lp| {
            t.log("promise1.promise");
            lp.next_tick(t.at("promise1.promise.tick"));
        });
    });
    lp.next_tick(trace.at("tick2"));
    trace.log("sync");
    run_within(lp, LIMIT);
    trace.assert(&[
        "sync",
        "tick1",
        "tick2",
        "tick1.tick",
        "promise1",
        "tick1.promise",
        "promise1.promise",
        "promise1.tick",
        "promise1.promise.tick",
    ]);
}

/// 04-nexttick-recursion-before-loop
fn case_04_recursive_ticks_and_promise_chains_finish_before_the_loop(lp: &mut Loop) {
    let trace = Trace::default();
    lp.set_timeout(ms(0), trace.at("timeout"));
    lp.set_immediate(trace.at("immediate"));
    fn again(lp: &mut Loop, trace: Trace, n: u32) {
        trace.log(format!("tick{n}"));
        if n < 4 {
            lp.next_tick(move |lp| again(lp, trace, n + 1));
        }
    }
    let t = trace.clone();
    lp.next_tick(move |lp| again(lp, t, 1));
    let t = trace.clone();
    lp.queue_microtask(move |lp| {
        t.log("p1");
        let t = t.clone();
        lp.queue_microtask(move |lp| {
            t.log("p2");
            lp.queue_microtask(t.at("p3"));
        });
    });
    spin(10);
    trace.log("main-end");
    run_within(lp, LIMIT);
    trace.assert(&[
        "main-end",
        "tick1",
        "tick2",
        "tick3",
        "tick4",
        "p1",
        "p2",
        "p3",
        "timeout",
        "immediate",
    ]);
}

/// 05-timeout-vs-immediate-inside-io, as the script has it: the I/O
/// callback is `read_file`'s (on io_uring a reactor completion, on polling
/// a pool job's: both in the poll phase).
fn case_05_inside_an_io_callback_immediates_run_before_zero_timeouts(lp: &mut Loop) {
    let trace = Trace::default();
    let t = trace.clone();
    let path = env!("CARGO_MANIFEST_PATH");
    lp.fs().read_file(path, move |lp, contents| {
        assert!(!contents.expect("the manifest reads").is_empty());
        case_05_io_callback(lp, &t);
    });
    run_within(lp, LIMIT);
    case_05_assert(&trace);
}

/// 05 again with the I/O callback a pool work callback (`queue_work`'s
/// after), which runs in the poll phase too.
fn case_05_inside_a_work_callback_immediates_run_before_zero_timeouts(lp: &mut Loop) {
    let trace = Trace::default();
    let t = trace.clone();
    let path = env!("CARGO_MANIFEST_PATH");
    lp.queue_work(
        move || std::fs::read(path),
        move |lp, contents| {
            assert!(!contents.unwrap().expect("the manifest reads").is_empty());
            case_05_io_callback(lp, &t);
        },
    );
    run_within(lp, LIMIT);
    case_05_assert(&trace);
}

/// The script's I/O callback.
fn case_05_io_callback(lp: &mut Loop, t: &Trace) {
    t.log("io-callback");
    lp.set_timeout(ms(0), t.at("timeout"));
    lp.set_immediate(t.at("immediate"));
    lp.set_timeout(ms(0), t.at("timeout2"));
    lp.set_immediate(t.at("immediate2"));
}

fn case_05_assert(trace: &Trace) {
    trace.assert(&[
        "io-callback",
        "immediate",
        "immediate2",
        "timeout",
        "timeout2",
    ]);
}

/// 06-timeout-vs-immediate-main-after-spin
fn case_06_a_timer_due_when_the_loop_starts_runs_before_immediates(lp: &mut Loop) {
    let trace = Trace::default();
    lp.set_immediate(trace.at("immediate"));
    lp.set_timeout(ms(0), trace.at("timeout"));
    spin(10);
    run_within(lp, LIMIT);
    trace.assert(&["timeout", "immediate"]);
}

/// 08-equal-timeouts-fifo
fn case_08_equal_timeouts_fire_in_insertion_order(lp: &mut Loop) {
    let trace = Trace::default();
    lp.set_timeout(ms(10), trace.at("a"));
    lp.set_timeout(ms(10), trace.at("b"));
    spin(3);
    lp.set_timeout(ms(10), trace.at("c"));
    lp.set_timeout(ms(10), trace.at("d"));
    let t = trace.clone();
    lp.set_timeout(ms(10), move |lp| {
        t.log("e");
        lp.set_timeout(ms(10), t.at("g"));
        lp.set_timeout(ms(10), t.at("h"));
    });
    lp.set_timeout(ms(10), trace.at("f"));
    run_within(lp, LIMIT);
    trace.assert(&["a", "b", "c", "d", "e", "f", "g", "h"]);
}

/// 09-delay-coercion-to-1ms (Rust durations cannot be negative, NaN or
/// strings: the cases that remain are 1, 0, a fraction and 1.9 ms)
fn case_09_delays_below_one_ms_become_one_ms_and_fractions_truncate(lp: &mut Loop) {
    let trace = Trace::default();
    lp.set_timeout(ms(1), trace.at("delay-1"));
    lp.set_timeout(ms(0), trace.at("delay-0"));
    lp.set_timeout(std::time::Duration::from_micros(300), trace.at("delay-0.3"));
    lp.set_timeout(std::time::Duration::from_nanos(1), trace.at("delay-1ns"));
    lp.set_timeout(
        std::time::Duration::from_micros(1900),
        trace.at("delay-1.9"),
    );
    spin(10);
    run_within(lp, LIMIT);
    trace.assert(&["delay-1", "delay-0", "delay-0.3", "delay-1ns", "delay-1.9"]);
}

/// 10-expiry-order-across-durations
fn case_10_due_timers_run_in_order_of_expiry_not_creation(lp: &mut Loop) {
    let trace = Trace::default();
    lp.set_timeout(ms(60), trace.at("t60"));
    lp.set_timeout(ms(30), trace.at("t30"));
    lp.set_timeout(ms(1), trace.at("t1"));
    lp.set_timeout(ms(30), trace.at("t30-second"));
    spin(100);
    run_within(lp, LIMIT);
    trace.assert(&["t1", "t30", "t30-second", "t60"]);
}

/// 11-ticks-drain-between-timers
fn case_11_ticks_and_microtasks_drain_after_each_timer(lp: &mut Loop) {
    let trace = Trace::default();
    let t = trace.clone();
    lp.set_timeout(ms(1), move |lp| {
        t.log("timeoutA");
        lp.next_tick(t.at("timeoutA.tick"));
        lp.queue_microtask(t.at("timeoutA.promise"));
        lp.set_immediate(t.at("timeoutA.immediate"));
    });
    let t = trace.clone();
    lp.set_timeout(ms(1), move |lp| {
        t.log("timeoutB");
        lp.next_tick(t.at("timeoutB.tick"));
    });
    lp.set_timeout(ms(2), trace.at("timeoutC-other-list"));
    spin(10);
    run_within(lp, LIMIT);
    trace.assert(&[
        "timeoutA",
        "timeoutA.tick",
        "timeoutA.promise",
        "timeoutB",
        "timeoutB.tick",
        "timeoutC-other-list",
        "timeoutA.immediate",
    ]);
}

/// 13-immediate-from-immediate-next-iteration
fn case_13_immediates_queued_during_the_check_phase_wait_a_turn(lp: &mut Loop) {
    let trace = Trace::default();
    let t = trace.clone();
    lp.set_immediate(move |lp| {
        t.log("A");
        let t2 = t.clone();
        lp.set_immediate(move |lp| {
            t2.log("C");
            lp.set_immediate(t2.at("E"));
        });
        spin(5);
    });
    let t = trace.clone();
    lp.set_immediate(move |lp| {
        t.log("B");
        lp.set_immediate(t.at("D"));
    });
    run_within(lp, LIMIT);
    trace.assert(&["A", "B", "C", "D", "E"]);
}

/// 14-timer-from-timer-not-same-phase
fn case_14_a_timer_started_in_the_timers_phase_waits_for_a_later_phase(lp: &mut Loop) {
    let trace = Trace::default();
    let t = trace.clone();
    lp.set_timeout(ms(0), move |lp| {
        t.log("A");
        lp.set_timeout(ms(0), t.at("B-from-A"));
        lp.set_immediate(t.at("immediate-from-A"));
        spin(5);
    });
    lp.set_timeout(ms(0), trace.at("C"));
    spin(10);
    run_within(lp, LIMIT);
    trace.assert(&["A", "C", "immediate-from-A", "B-from-A"]);
}

/// 16-interval-reschedules-from-callback-start
fn case_16_an_interval_reschedules_from_when_its_callback_started(lp: &mut Loop) {
    let trace = Trace::default();
    let t = trace.clone();
    let mut n = 0;
    let mut end_of_first = std::time::Instant::now();
    lp.set_interval(ms(40), move |lp, id| {
        n += 1;
        t.log(format!("tick{n}"));
        if n == 1 {
            spin(30);
            end_of_first = std::time::Instant::now();
        } else {
            let gap = end_of_first.elapsed();
            t.log(if gap < ms(25) {
                "rescheduled-from-start"
            } else {
                "rescheduled-from-end"
            });
            lp.clear_timer(id);
        }
    });
    run_within(lp, LIMIT);
    trace.assert(&["tick1", "tick2", "rescheduled-from-start"]);
}

/// 18-clear-other-timers-in-callback
fn case_18_clearing_other_due_timers_stops_them_and_stale_clears_do_nothing(lp: &mut Loop) {
    let trace = Trace::default();
    let ids = std::rc::Rc::new(std::cell::Cell::new(None));
    let t = trace.clone();
    let shared = ids.clone();
    let a = lp.set_timeout(ms(1), move |lp| {
        t.log("A");
        let (a, b, c) = shared.get().expect("ids are set before the loop runs");
        assert!(lp.clear_timer(b));
        assert!(lp.clear_timer(c));
        assert!(!lp.clear_timer(a), "clearing a timer that fired is a no-op");
    });
    let b = lp.set_timeout(ms(1), trace.at("B-should-not-run"));
    let c = lp.set_timeout(ms(2), trace.at("C-should-not-run"));
    ids.set(Some((a, b, c)));
    lp.set_timeout(ms(2), trace.at("D"));
    lp.set_timeout(ms(1), trace.at("E"));
    spin(10);
    run_within(lp, LIMIT);
    trace.log("exit");
    trace.assert(&["A", "E", "D", "exit"]);
}

/// 19-clearinterval-self
fn case_19_an_interval_can_clear_itself_and_same_period_intervals_alternate(lp: &mut Loop) {
    let trace = Trace::default();
    let t = trace.clone();
    let mut n = 0;
    lp.set_interval(ms(1), move |lp, id| {
        n += 1;
        t.log(format!("tick{n}"));
        if n == 3 {
            lp.clear_timer(id);
        }
    });
    let t = trace.clone();
    let mut m = 0;
    lp.set_interval(ms(1), move |lp, id| {
        m += 1;
        t.log(format!("other{m}"));
        if m == 2 {
            lp.clear_timer(id);
        }
    });
    run_within(lp, LIMIT);
    trace.log("exit");
    trace.assert(&["tick1", "other1", "tick2", "other2", "tick3", "exit"]);
}

/// 21-unref-timer-does-not-keep-alive
fn case_21_an_unrefd_timer_does_not_keep_the_loop_alive(lp: &mut Loop) {
    let trace = Trace::default();
    let x = lp.set_timeout(ms(200), trace.at("X-unrefd-should-not-run"));
    lp.unref_timer(x);
    trace.log(format!("x.hasRef={}", lp.timer_has_ref(x)));
    let y = lp.set_timeout(ms(20), trace.at("Y-unref-then-ref"));
    lp.unref_timer(y);
    lp.ref_timer(y);
    trace.log(format!("y.hasRef={}", lp.timer_has_ref(y)));
    lp.set_timeout(ms(10), trace.at("Z"));
    lp.run().expect("the loop runs");
    trace.log("exit");
    trace.assert(&[
        "x.hasRef=false",
        "y.hasRef=true",
        "Z",
        "Y-unref-then-ref",
        "exit",
    ]);
}

/// 23-refresh-postpones
fn case_23_refresh_restarts_the_countdown_from_now(lp: &mut Loop) {
    let trace = Trace::default();
    let t = lp.set_timeout(ms(60), trace.at("T-60ms-refreshed-at-30ms"));
    let tr = trace.clone();
    lp.set_timeout(ms(30), move |lp| {
        tr.log("refresh-at-30");
        assert!(lp.refresh_timer(t));
    });
    lp.set_timeout(ms(70), trace.at("M-at-70"));
    run_within(lp, LIMIT);
    trace.assert(&["refresh-at-30", "M-at-70", "T-60ms-refreshed-at-30ms"]);
}

/// 25-beforeexit-and-exit: Node emits 'beforeExit' each time the loop runs
/// dry, and runs the loop again if a listener scheduled more. In Rust the
/// program does that itself: `run()` returns when the loop is empty, and
/// may be called again.
fn case_25_a_drained_loop_can_be_given_more_work_and_run_again(lp: &mut Loop) {
    let trace = Trace::default();
    trace.log("main");
    let mut n = 0;
    loop {
        run_within(lp, LIMIT);
        n += 1;
        trace.log(format!("beforeExit{n}"));
        match n {
            1 => {
                lp.set_timeout(ms(1), trace.at("timeout-from-beforeExit"));
            }
            2 => {
                lp.set_immediate(trace.at("immediate-from-beforeExit"));
            }
            _ => {}
        }
        if !lp.alive() {
            break;
        }
    }
    trace.log("exit0");
    trace.assert(&[
        "main",
        "beforeExit1",
        "timeout-from-beforeExit",
        "beforeExit2",
        "immediate-from-beforeExit",
        "beforeExit3",
        "exit0",
    ]);
}

/// 29-abortsignal-timeout-is-unrefd. `AbortSignal.timeout(50)` is an
/// unreferenced 50 ms timer whose firing would abort the signal; eventide
/// has no AbortSignal, so the signal is a flag and its timer an
/// unreferenced `set_timeout`.
fn case_29_an_unreferenced_timeout_alone_does_not_keep_the_loop_alive(lp: &mut Loop) {
    let trace = Trace::default();
    let aborted = std::rc::Rc::new(std::cell::Cell::new(false));
    let a = aborted.clone();
    let t = trace.clone();
    let timeout = lp.set_timeout(ms(50), move |_| {
        a.set(true);
        t.log("abort-should-not-run");
    });
    lp.unref_timer(timeout);
    trace.log("main");
    run_within(lp, LIMIT);
    trace.log(format!("exit-aborted-{}", aborted.get()));
    trace.assert(&["main", "exit-aborted-false"]);
}

/// A panic handler that logs `uncaught-<message>`, as the script's
/// `process.on('uncaughtException')`.
fn log_panics(lp: &mut Loop, trace: &Trace) {
    let t = trace.clone();
    lp.set_panic_handler(move |_, payload| {
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .unwrap_or("<not a str>");
        t.log(format!("uncaught-{message}"));
    });
}

/// Case 31's start: a panic handler logging `uncaught-<message>`, and
/// timer A (1 ms) that logs, queues `A.tick` and panics with "boom".
fn panicking_timer_a(lp: &mut Loop) -> Trace {
    let trace = Trace::default();
    log_panics(lp, &trace);
    let t = trace.clone();
    lp.set_timeout(ms(1), move |lp| {
        t.log("A");
        lp.next_tick(t.at("A.tick"));
        panic!("boom");
    });
    trace
}

/// 31-exception-in-timer-continues: a panic in a timer callback goes to
/// the panic handler at once and the other due timers still run; Node's
/// quirk: the panicking callback's next-tick runs after the next timer of
/// the same duration.
fn case_31_a_panicking_timer_leaves_the_other_due_timers_running(lp: &mut Loop) {
    let trace = panicking_timer_a(lp);
    lp.set_timeout(ms(1), trace.at("B"));
    lp.set_timeout(ms(2), trace.at("C"));
    spin(10);
    run_within(lp, LIMIT);
    trace.assert(&["A", "uncaught-boom", "B", "A.tick", "C"]);
}

/// Two variants of case 31, recorded with node 20 (`q31.js`, `q31c.js`
/// in the test's comment below): when the next due timer has another
/// duration, the ticks run first; with two more of the same duration, the
/// first runs before the ticks and the second after them.
///
/// ```js
/// process.on('uncaughtException', (e) => log('uncaught-' + e.message));
/// setTimeout(() => { log('A'); process.nextTick(() => log('A.tick'));
///   throw new Error('boom'); }, 1);
/// setTimeout(() => log('C'), 2); setTimeout(() => log('D'), 2);
/// spin(10);   // A uncaught-boom A.tick C D
/// // and with B (1 ms, queues B.tick) and B2 (1 ms) before C:
/// //            A uncaught-boom B A.tick B.tick B2 C
/// ```
fn case_31_variants_ticks_wait_only_for_a_timer_of_the_same_duration(lp: &mut Loop) {
    let trace = panicking_timer_a(lp);
    lp.set_timeout(ms(2), trace.at("C"));
    lp.set_timeout(ms(2), trace.at("D"));
    spin(10);
    run_within(lp, LIMIT);
    trace.assert(&["A", "uncaught-boom", "A.tick", "C", "D"]);

    let trace = panicking_timer_a(lp);
    let t = trace.clone();
    lp.set_timeout(ms(1), move |lp| {
        t.log("B");
        lp.next_tick(t.at("B.tick"));
    });
    lp.set_timeout(ms(1), trace.at("B2"));
    lp.set_timeout(ms(2), trace.at("C"));
    spin(10);
    run_within(lp, LIMIT);
    trace.assert(&["A", "uncaught-boom", "B", "A.tick", "B.tick", "B2", "C"]);
}

/// 35-close-callbacks-lifo: close callbacks of one close phase run in
/// reverse order of the closes (libuv's closing list is a stack).
fn case_35_close_callbacks_of_one_phase_run_in_reverse_order(lp: &mut Loop) {
    use eventide::net::ListenOptions;
    let trace = Trace::default();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = lp
        .tcp_listen(any, ListenOptions::default(), |_, _| {})
        .expect("listen");
    let addr = server.local_addr(lp).unwrap();
    server.unref(lp);
    let clients = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    for name in ["c1", "c2", "c3"] {
        let clients = clients.clone();
        let trace = trace.clone();
        lp.tcp_connect(addr, move |lp, connected| {
            let stream = connected.expect("connected");
            clients.borrow_mut().push((name, stream));
            if clients.borrow().len() < 3 {
                return;
            }
            // Destroyed in the scripts' order c1, c2, c3 (the order they
            // connected in may differ: sort by name).
            let mut all = clients.borrow().clone();
            all.sort_by_key(|(name, _)| *name);
            for (name, stream) in all {
                stream.close_then(
                    lp,
                    trace.at(match name {
                        "c1" => "close-c1",
                        "c2" => "close-c2",
                        _ => "close-c3",
                    }),
                );
            }
            lp.set_immediate(trace.at("immediate"));
            trace.log("destroyed-all");
        })
        .expect("connect");
    }
    run_within(lp, LIMIT);
    server.close(lp);
    run_within(lp, LIMIT);
    trace.assert(&[
        "destroyed-all",
        "immediate",
        "close-c3",
        "close-c2",
        "close-c1",
    ]);
}

on_every_backend_serial!(
    case_01_ticks_then_microtasks_after_the_main_program,
    case_02_whole_tick_queue_then_whole_microtask_queue_repeatedly,
    case_04_recursive_ticks_and_promise_chains_finish_before_the_loop,
    case_05_inside_an_io_callback_immediates_run_before_zero_timeouts,
    case_05_inside_a_work_callback_immediates_run_before_zero_timeouts,
    case_06_a_timer_due_when_the_loop_starts_runs_before_immediates,
    case_08_equal_timeouts_fire_in_insertion_order,
    case_09_delays_below_one_ms_become_one_ms_and_fractions_truncate,
    case_10_due_timers_run_in_order_of_expiry_not_creation,
    case_11_ticks_and_microtasks_drain_after_each_timer,
    case_13_immediates_queued_during_the_check_phase_wait_a_turn,
    case_14_a_timer_started_in_the_timers_phase_waits_for_a_later_phase,
    case_16_an_interval_reschedules_from_when_its_callback_started,
    case_18_clearing_other_due_timers_stops_them_and_stale_clears_do_nothing,
    case_19_an_interval_can_clear_itself_and_same_period_intervals_alternate,
    case_21_an_unrefd_timer_does_not_keep_the_loop_alive,
    case_23_refresh_restarts_the_countdown_from_now,
    case_25_a_drained_loop_can_be_given_more_work_and_run_again,
    case_29_an_unreferenced_timeout_alone_does_not_keep_the_loop_alive,
    case_31_a_panicking_timer_leaves_the_other_due_timers_running,
    case_31_variants_ticks_wait_only_for_a_timer_of_the_same_duration,
    case_35_close_callbacks_of_one_phase_run_in_reverse_order,
);
