//! The loop's typed state store (`insert_state`, `state`, `state_mut`,
//! `with_state`, `remove_state`) and its clock type (`LoopTime`), on every
//! backend.

mod util;

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use eventide::{Loop, LoopTime};
use util::{ms, run_within};

const LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug, Default, PartialEq)]
struct Counter(u32);

#[derive(Debug, Default, PartialEq)]
struct Names(Vec<&'static str>);

fn one_value_per_type_and_replacing_returns_the_old_one(lp: &mut Loop) {
    assert_eq!(lp.state::<Counter>(), None);
    assert_eq!(lp.insert_state(Counter(1)), None);
    assert_eq!(lp.insert_state(Names(vec!["a"])), None);
    assert_eq!(lp.insert_state(Counter(2)), Some(Counter(1)));
    assert_eq!(lp.state::<Counter>(), Some(&Counter(2)));
    assert_eq!(lp.state::<Names>(), Some(&Names(vec!["a"])));
    lp.state_mut::<Counter>().unwrap().0 += 5;
    assert_eq!(lp.remove_state::<Counter>(), Some(Counter(7)));
    assert_eq!(lp.remove_state::<Counter>(), None);
    assert_eq!(lp.state_mut::<Counter>(), None);
    assert_eq!(lp.state::<Names>(), Some(&Names(vec!["a"])));
}

fn callbacks_of_every_kind_reach_the_state(lp: &mut Loop) {
    lp.insert_state(Names::default());
    fn log(lp: &mut Loop, name: &'static str) {
        lp.state_mut::<Names>().unwrap().0.push(name);
    }
    lp.set_timeout(ms(1), |lp| log(lp, "timeout"));
    lp.set_immediate(|lp| {
        log(lp, "immediate");
        lp.next_tick(|lp| log(lp, "tick"));
    });
    lp.queue_work(|| 1, |lp, _| log(lp, "work"));
    let handle = lp.handle();
    let poster = std::thread::spawn(move || {
        handle.post(|lp| log(lp, "posted")).unwrap();
    });
    poster.join().unwrap();
    run_within(lp, LIMIT);
    let mut names = lp.state::<Names>().unwrap().0.clone();
    let immediate = names.iter().position(|n| *n == "immediate").unwrap();
    assert_eq!(names[immediate + 1], "tick");
    names.sort_unstable();
    assert_eq!(names, ["immediate", "posted", "tick", "timeout", "work"]);
}

fn with_state_lends_the_loop_and_the_state_together(lp: &mut Loop) {
    lp.insert_state(Counter(0));
    lp.set_interval(ms(1), |lp, me| {
        let done = lp
            .with_state(|lp, counter: &mut Counter| {
                counter.0 += 1;
                // The state is out of the store while lent.
                assert!(lp.state::<Counter>().is_none());
                assert!(lp.with_state(|_, _: &mut Counter| ()).is_none());
                if counter.0 == 3 {
                    lp.clear_timer(me);
                }
                counter.0
            })
            .unwrap();
        assert!(done <= 3);
    });
    run_within(lp, LIMIT);
    assert_eq!(lp.state::<Counter>(), Some(&Counter(3)));
    assert_eq!(lp.with_state(|_, _: &mut Names| ()), None, "no such state");
}

fn with_state_keeps_a_value_stored_meanwhile(lp: &mut Loop) {
    lp.insert_state(Counter(1));
    lp.with_state(|lp, counter: &mut Counter| {
        counter.0 = 10;
        lp.insert_state(Counter(20));
    });
    assert_eq!(lp.state::<Counter>(), Some(&Counter(20)));
}

fn with_state_puts_the_state_back_when_its_closure_panics(lp: &mut Loop) {
    let panics = Rc::new(Cell::new(0));
    let p = Rc::clone(&panics);
    lp.set_panic_handler(move |_, _| p.set(p.get() + 1));
    lp.insert_state(Counter(0));
    lp.set_immediate(|lp| {
        lp.with_state(|_, counter: &mut Counter| {
            counter.0 = 5;
            panic!("inside with_state");
        });
    });
    run_within(lp, LIMIT);
    assert_eq!(panics.get(), 1);
    assert_eq!(lp.state::<Counter>(), Some(&Counter(5)));
}

fn the_state_is_dropped_with_the_loop(lp: &mut Loop) {
    struct Dropped(Rc<Cell<bool>>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.set(true);
        }
    }
    let dropped = Rc::new(Cell::new(false));
    lp.insert_state(Dropped(Rc::clone(&dropped)));
    let lp = std::mem::replace(lp, Loop::new().unwrap());
    assert!(!dropped.get());
    drop(lp);
    assert!(dropped.get());
}

fn now_is_a_loop_time_that_timers_agree_with(lp: &mut Loop) {
    lp.update_time();
    let start = lp.now();
    assert!(start >= LoopTime::ZERO);
    let fired_at = Rc::new(Cell::new(None));
    let f = Rc::clone(&fired_at);
    lp.set_timeout(ms(15), move |lp| f.set(Some(lp.now())));
    run_within(lp, LIMIT);
    let fired_at = fired_at.get().expect("the timer fired");
    // A timer never fires before its delay (counted from its start, which
    // is not before `start`).
    assert!(fired_at >= start + ms(15), "{fired_at} < {start} + 15ms");
    assert!(fired_at - start >= ms(15));
    assert_eq!(
        fired_at.as_millis() - start.as_millis(),
        (fired_at - start).as_millis() as u64
    );
}

#[test]
fn loop_time_arithmetic_and_formatting() {
    let t = LoopTime::from_millis(1_500);
    assert_eq!(t.as_millis(), 1_500);
    assert_eq!(t.since_start(), Duration::from_millis(1_500));
    assert_eq!(
        t + Duration::from_micros(2_999),
        LoopTime::from_millis(1_502)
    );
    let mut u = t;
    u += Duration::from_secs(1);
    assert_eq!(u, LoopTime::from_millis(2_500));
    assert_eq!(u - t, Duration::from_secs(1));
    assert_eq!(t - u, Duration::ZERO, "saturates, as Instant does");
    assert_eq!(t.saturating_duration_since(u), Duration::ZERO);
    assert_eq!(
        LoopTime::from_millis(u64::MAX) + Duration::from_secs(1),
        LoopTime::from_millis(u64::MAX)
    );
    assert_eq!(t.to_string(), "1500ms");
    assert_eq!(format!("{t:>8}|{t:<7}|"), "  1500ms|1500ms |");
    assert_eq!(format!("{t:?}"), "LoopTime(1500)");
    assert!(LoopTime::ZERO < t);
    assert_eq!(LoopTime::default(), LoopTime::ZERO);
}

on_every_backend!(
    one_value_per_type_and_replacing_returns_the_old_one,
    callbacks_of_every_kind_reach_the_state,
    with_state_lends_the_loop_and_the_state_together,
    with_state_keeps_a_value_stored_meanwhile,
    with_state_puts_the_state_back_when_its_closure_panics,
    the_state_is_dropped_with_the_loop,
    now_is_a_loop_time_that_timers_agree_with,
);
