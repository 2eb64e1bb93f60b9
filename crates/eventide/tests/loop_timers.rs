//! Timer edge cases beyond the Node conformance cases, on every backend.

mod util;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use eventide::Loop;
use util::{ms, run_within};

const LIMIT: Duration = Duration::from_secs(10);

fn an_interval_that_unrefs_itself_lets_the_loop_end(lp: &mut Loop) {
    let runs = Rc::new(Cell::new(0));
    let r = runs.clone();
    // Long enough that it cannot be due again in the one extra turn a
    // default run makes after its first timers phase (as uv_run does).
    lp.set_interval(ms(20), move |lp, id| {
        r.set(r.get() + 1);
        lp.unref_timer(id);
        assert!(!lp.timer_has_ref(id));
    });
    run_within(lp, LIMIT);
    assert_eq!(
        runs.get(),
        1,
        "unref'd, the interval no longer keeps the loop alive"
    );
    assert!(!lp.alive());
}

fn refresh_and_clear_of_fired_or_cleared_timers_do_nothing(lp: &mut Loop) {
    let fired = lp.set_timeout(ms(1), |_| {});
    let cleared = lp.set_timeout(ms(50), |_| panic!("cleared"));
    assert!(lp.timer_is_active(cleared));
    assert!(lp.clear_timer(cleared));
    assert!(!lp.timer_is_active(cleared));
    run_within(lp, LIMIT);
    assert!(!lp.timer_is_active(fired));
    assert!(!lp.refresh_timer(fired));
    assert!(!lp.refresh_timer(cleared));
    assert!(!lp.clear_timer(fired));
    assert!(!lp.timer_has_ref(fired));
    lp.unref_timer(fired); // no-op, no panic
    lp.ref_timer(fired);
    assert!(!lp.alive());
}

fn a_timer_far_in_the_future_keeps_the_loop_alive_until_cleared(lp: &mut Loop) {
    let far = lp.set_timeout(Duration::MAX, |_| panic!("not in this lifetime"));
    assert!(lp.alive());
    lp.set_timeout(ms(2), move |lp| assert!(lp.clear_timer(far)));
    run_within(lp, LIMIT);
    assert!(!lp.alive());
}

fn many_timers_fire_in_deadline_order_each_once(lp: &mut Loop) {
    let fired = Rc::new(RefCell::new(Vec::new()));
    for i in 0..5_000u64 {
        let f = fired.clone();
        lp.set_timeout(ms(i % 25 + 1), move |lp| {
            f.borrow_mut().push((i % 25, i, lp.now()))
        });
    }
    run_within(lp, LIMIT);
    let fired = fired.borrow();
    assert_eq!(fired.len(), 5_000);
    // The loop's time never goes back from one timer to the next, and
    // timers of one delay (started in order) fire in start order.
    assert!(fired.windows(2).all(|pair| pair[0].2 <= pair[1].2));
    for delay in 0..25 {
        let order: Vec<u64> = fired.iter().filter(|f| f.0 == delay).map(|f| f.1).collect();
        assert!(
            order.windows(2).all(|pair| pair[0] < pair[1]),
            "delay {delay}: {order:?}"
        );
    }
}

fn a_timer_never_fires_before_its_delay_has_passed(lp: &mut Loop) {
    let started = std::time::Instant::now();
    let elapsed = Rc::new(Cell::new(Duration::ZERO));
    let e = elapsed.clone();
    lp.set_timeout(ms(30), move |_| e.set(started.elapsed()));
    run_within(lp, LIMIT);
    assert!(elapsed.get() >= ms(30), "fired after {:?}", elapsed.get());
}

fn timers_of_every_callback_size_fire_once_and_unfired_ones_are_dropped(lp: &mut Loop) {
    let fired = Rc::new(RefCell::new(Vec::new()));
    let dropped = Rc::new(Cell::new(0));
    struct CountDrop(Rc<Cell<u32>>);
    impl Drop for CountDrop {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }
    // One word (inline), two words and larger (boxed).
    let f = fired.clone();
    lp.set_timeout(ms(1), move |_| f.borrow_mut().push("one word"));
    let (f, word) = (fired.clone(), 1u64);
    lp.set_timeout(ms(1), move |_| {
        f.borrow_mut()
            .push(if word == 1 { "two words" } else { "?" })
    });
    let (f, big) = (fired.clone(), [7u64; 8]);
    lp.set_timeout(ms(2), move |_| {
        f.borrow_mut().push(if big[7] == 7 { "boxed" } else { "?" })
    });
    let (f, guard, big) = (fired.clone(), CountDrop(dropped.clone()), [1u64; 8]);
    let mut n = 0;
    lp.set_interval(ms(1), move |lp, id| {
        n += big[0];
        let _ = &guard;
        if n == 3 {
            f.borrow_mut().push("interval x3");
            lp.clear_timer(id);
        }
    });
    let never = CountDrop(dropped.clone());
    let cleared = lp.set_timeout(ms(50), move |_| {
        let _ = &never;
    });
    assert!(lp.clear_timer(cleared));
    assert_eq!(
        dropped.get(),
        1,
        "a cleared timer's closure is dropped at once"
    );
    run_within(lp, LIMIT);
    assert_eq!(dropped.get(), 2, "a cleared interval's closure is dropped");
    let mut fired = fired.borrow().clone();
    fired.sort();
    assert_eq!(fired, ["boxed", "interval x3", "one word", "two words"]);
}

fn a_panicking_interval_under_a_panic_handler_stops_without_harm(lp: &mut Loop) {
    let panics = Rc::new(Cell::new(0));
    let p = panics.clone();
    lp.set_panic_handler(move |_, _| p.set(p.get() + 1));
    let big = [0u8; 64];
    let interval = lp.set_interval(ms(1), move |_, _| panic!("interval {}", big[0]));
    lp.set_timeout(ms(20), move |lp| {
        // The interval panicked once and was stopped: nothing is left.
        assert!(!lp.timer_is_active(interval));
        assert!(!lp.clear_timer(interval));
    });
    run_within(lp, LIMIT);
    assert_eq!(panics.get(), 1);
}

/// The deprecated ways to stop a timer still do what `clear_timer` does,
/// so that code written against them keeps working until it moves.
#[allow(deprecated)]
fn the_deprecated_aliases_still_stop_timers(lp: &mut Loop) {
    let timeout = lp.set_timeout(ms(50), |_| panic!("cleared with clear_timeout"));
    let interval = lp.set_interval(ms(5), |_, _| panic!("cleared with clear_interval"));
    let closed = lp.set_timeout(ms(50), |_| panic!("closed with close"));
    assert!(lp.clear_timeout(timeout));
    assert!(lp.clear_interval(interval));
    assert!(lp.close(closed));
    assert!(!lp.clear_timeout(timeout), "a second stop is a no-op");
    assert!(!lp.clear_interval(interval));
    assert!(!lp.close(closed));
    run_within(lp, LIMIT);
    assert!(!lp.alive());
}

on_every_backend!(
    the_deprecated_aliases_still_stop_timers,
    an_interval_that_unrefs_itself_lets_the_loop_end,
    refresh_and_clear_of_fired_or_cleared_timers_do_nothing,
    a_timer_far_in_the_future_keeps_the_loop_alive_until_cleared,
    many_timers_fire_in_deadline_order_each_once,
    a_timer_never_fires_before_its_delay_has_passed,
    timers_of_every_callback_size_fire_once_and_unfired_ones_are_dropped,
    a_panicking_interval_under_a_panic_handler_stops_without_harm,
);
