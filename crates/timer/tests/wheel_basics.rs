//! The wheel's promises, one scenario each.

use eventide_timer::{Expired, Key, StaleKey, Wheel};

fn fire_all<T>(wheel: &mut Wheel<T>, now: u64) -> Vec<T> {
    wheel.advance(now).map(|e| e.payload).collect()
}

#[test]
fn equal_deadlines_fire_in_start_order() {
    let mut wheel = Wheel::new();
    for name in ["a", "b", "c", "d"] {
        wheel.insert(100, name);
    }
    assert_eq!(fire_all(&mut wheel, 100), ["a", "b", "c", "d"]);
}

#[test]
fn start_order_holds_when_earlier_timers_cascade_down_from_higher_levels() {
    let mut wheel = Wheel::new();
    // Filed on level 2 (deadline 5,000 is > 4,096 ms away).
    wheel.insert(5_000, "far-1");
    wheel.insert(5_000, "far-2");
    // Walk time forward: the level-2 slot cascades, then level 1.
    assert!(fire_all(&mut wheel, 4_096).is_empty());
    wheel.insert(5_000, "mid");
    assert!(fire_all(&mut wheel, 4_990).is_empty());
    // Now 5,000 is on level 0; a direct insert must still come last.
    wheel.insert(5_000, "near");
    wheel.insert(4_995, "earlier");
    assert_eq!(
        fire_all(&mut wheel, 5_000),
        ["earlier", "far-1", "far-2", "mid", "near"]
    );
}

#[test]
fn timers_fire_at_their_exact_deadline_never_a_slot_early() {
    let mut wheel = Wheel::new();
    wheel.insert(1_000_001, ());
    let mut fired_at = None;
    for now in (999_000..1_000_100).step_by(1) {
        if wheel.advance(now).next().is_some() {
            fired_at = Some(now);
            break;
        }
    }
    assert_eq!(fired_at, Some(1_000_001));
}

#[test]
fn cancel_returns_the_payload_once_and_a_stale_key_touches_nothing() {
    let mut wheel = Wheel::new();
    let old = wheel.insert(10, "old");
    assert_eq!(wheel.cancel(old), Some("old"));
    assert_eq!(wheel.cancel(old), None);
    // The entry is reused by the next timer; the old key must not reach it.
    let new = wheel.insert(10, "new");
    assert_eq!(wheel.cancel(old), None);
    assert_eq!(wheel.reset(old, 50), Err(StaleKey));
    assert_eq!(wheel.get(old), None);
    assert_eq!(wheel.deadline(new), Some(10));
    assert_eq!(fire_all(&mut wheel, 10), ["new"]);
}

#[test]
fn a_fired_timer_key_is_stale() {
    let mut wheel = Wheel::new();
    let key = wheel.insert(5, 1);
    let fired: Vec<Expired<i32>> = wheel.advance(5).collect();
    assert_eq!(
        fired,
        [Expired {
            key,
            deadline: 5,
            payload: 1
        }]
    );
    assert!(!wheel.contains(key));
    assert_eq!(wheel.reset(key, 10), Err(StaleKey));
    assert_eq!(wheel.cancel(key), None);
    assert_eq!(
        StaleKey.to_string(),
        "stale timer key: the timer already fired or was cancelled"
    );
}

#[test]
fn reset_postpones_and_puts_the_timer_after_those_started_before_it() {
    let mut wheel = Wheel::new();
    let a = wheel.insert(10, "a");
    wheel.insert(20, "b");
    wheel.reset(a, 20).unwrap();
    assert!(fire_all(&mut wheel, 19).is_empty());
    assert_eq!(fire_all(&mut wheel, 20), ["b", "a"]);
}

#[test]
fn next_deadline_is_exact_for_pending_timers_and_none_when_empty() {
    let mut wheel = Wheel::<()>::new();
    assert_eq!(wheel.next_deadline(), None);
    let far = wheel.insert(90_000, ());
    assert_eq!(wheel.next_deadline(), Some(90_000));
    wheel.insert(700, ());
    assert_eq!(wheel.next_deadline(), Some(700));
    wheel.insert(3, ());
    assert_eq!(wheel.next_deadline(), Some(3));
    assert_eq!(wheel.advance(3).count(), 1);
    assert_eq!(wheel.next_deadline(), Some(700));
    assert_eq!(wheel.advance(700).count(), 1);
    assert_eq!(wheel.next_deadline(), Some(90_000));
    wheel.cancel(far);
    assert_eq!(wheel.next_deadline(), None);
}

#[test]
fn next_deadline_after_cancelling_the_earliest_of_a_coarse_slot_is_a_lower_bound() {
    let mut wheel = Wheel::<()>::new();
    let first = wheel.insert(5_000, ());
    wheel.insert(5_050, ());
    wheel.cancel(first);
    let bound = wheel.next_deadline().unwrap();
    assert!(bound <= 5_050 && bound > 0);
    // One early wake-up at the bound, then the answer is exact again.
    assert_eq!(wheel.advance(bound).count(), 0);
    assert_eq!(wheel.next_deadline(), Some(5_050));
}

#[test]
fn a_timer_started_during_an_expiry_round_waits_for_the_next_advance() {
    let mut wheel = Wheel::new();
    wheel.insert(10, "first");
    wheel.insert(10, "second");
    wheel.advance_to(10);
    assert_eq!(wheel.pop_expired().map(|e| e.payload), Some("first"));
    // As a callback would: a 0 ms timer, already due, and a re-armed one.
    wheel.insert(10, "started-in-callback");
    wheel.insert(3, "overdue-in-callback");
    assert_eq!(wheel.pop_expired().map(|e| e.payload), Some("second"));
    assert_eq!(wheel.pop_expired().map(|e| e.payload), None);
    assert!(wheel.next_deadline().unwrap() <= 10);
    assert_eq!(
        fire_all(&mut wheel, 10),
        ["overdue-in-callback", "started-in-callback"]
    );
}

#[test]
fn a_callback_can_cancel_or_reset_a_timer_due_in_the_same_round() {
    let mut wheel = Wheel::new();
    wheel.insert(10, "a");
    let b = wheel.insert(10, "b");
    let c = wheel.insert(10, "c");
    wheel.advance_to(10);
    assert_eq!(wheel.pop_expired().map(|e| e.payload), Some("a"));
    assert_eq!(wheel.cancel(b), Some("b"));
    wheel.reset(c, 15).unwrap();
    assert_eq!(wheel.pop_expired().map(|e| e.payload), None);
    assert_eq!(fire_all(&mut wheel, 15), ["c"]);
}

#[test]
fn overdue_timers_inserted_out_of_order_fire_sorted_by_deadline() {
    let mut wheel = Wheel::new();
    assert_eq!(wheel.advance(1_000).count(), 0);
    for deadline in [900, 200, 950, 200, 0, 999, 1_000] {
        wheel.insert(deadline, deadline);
    }
    wheel.insert(1_001, 1_001);
    assert_eq!(
        fire_all(&mut wheel, 1_001),
        [0, 200, 200, 900, 950, 999, 1_000, 1_001]
    );
}

#[test]
fn ready_timers_left_unpopped_come_first_and_merge_with_overdue_ones_in_order() {
    let mut wheel = Wheel::new();
    for deadline in [5, 8, 10] {
        wheel.insert(deadline, deadline);
    }
    assert_eq!(wheel.advance(10).next().map(|e| e.payload), Some(5));
    wheel.insert(7, 7);
    wheel.insert(12, 12);
    assert_eq!(fire_all(&mut wheel, 12), [7, 8, 10, 12]);
}

#[test]
fn deadlines_across_the_whole_u64_range_fire_in_order() {
    let mut wheel = Wheel::new();
    let deadlines = [
        u64::MAX,
        1 << 63,
        (1 << 60) + 5,
        1 << 36,
        u64::MAX - 1,
        70,
        u64::MAX,
    ];
    for (i, deadline) in deadlines.iter().enumerate() {
        wheel.insert(*deadline, i);
    }
    assert_eq!(wheel.next_deadline(), Some(70));
    let mut fired = Vec::new();
    // Jump in a few big steps, as a long-idle loop would.
    for now in [
        100,
        1 << 40,
        (1 << 60) + 4,
        (1 << 60) + 5,
        u64::MAX - 2,
        u64::MAX,
    ] {
        fired.extend(wheel.advance(now).map(|e| (e.deadline, e.payload)));
    }
    let expected = [
        (70, 5),
        (1 << 36, 3),
        ((1 << 60) + 5, 2),
        (1 << 63, 1),
        (u64::MAX - 1, 4),
        (u64::MAX, 0),
        (u64::MAX, 6),
    ];
    assert_eq!(fired, expected);
    assert!(wheel.is_empty());
}

#[test]
fn time_never_moves_backwards() {
    let mut wheel = Wheel::new();
    assert_eq!(wheel.advance(500).count(), 0);
    wheel.insert(400, "past");
    wheel.insert(600, "future");
    assert_eq!(fire_all(&mut wheel, 100), ["past"]);
    assert_eq!(wheel.elapsed(), 500);
    assert_eq!(fire_all(&mut wheel, 599), Vec::<&str>::new());
    assert_eq!(fire_all(&mut wheel, 600), ["future"]);
}

#[test]
fn dropping_the_advance_iterator_early_leaves_the_rest_ready() {
    let mut wheel = Wheel::new();
    for i in 0..5u64 {
        wheel.insert(i, i);
    }
    assert_eq!(
        wheel
            .advance(4)
            .take(2)
            .map(|e| e.payload)
            .collect::<Vec<_>>(),
        [0, 1]
    );
    assert_eq!(wheel.len(), 3);
    assert_eq!(wheel.next_deadline(), Some(2));
    assert_eq!(fire_all(&mut wheel, 0), [2, 3, 4]);
}

#[test]
fn a_warm_wheel_does_not_allocate_for_start_cancel_or_reset() {
    let mut wheel = Wheel::with_capacity(1_000);
    let capacity = wheel.capacity();
    assert!(capacity >= 1_000);
    for round in 0..10u64 {
        let keys: Vec<Key> = (0..1_000)
            .map(|i| wheel.insert(round * 10_000 + i * 97, i))
            .collect();
        for key in &keys[..500] {
            wheel.reset(*key, round * 10_000 + 5_000).unwrap();
        }
        for key in &keys {
            wheel.cancel(*key).unwrap();
        }
    }
    assert_eq!(
        wheel.capacity(),
        capacity,
        "the slab grew although it had room"
    );
}

#[test]
fn payloads_can_be_read_and_changed_through_live_keys() {
    let mut wheel = Wheel::new();
    let key = wheel.insert(10, String::from("a"));
    wheel.get_mut(key).unwrap().push('b');
    assert_eq!(wheel.get(key).map(String::as_str), Some("ab"));
    assert_eq!(Key::from_raw(key.into_raw()), key);
    assert_eq!(
        wheel.cancel(Key::from_raw(key.into_raw())).as_deref(),
        Some("ab")
    );
}
