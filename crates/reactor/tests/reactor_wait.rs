//! Conformance: waiting, waking and timeouts, once per compiled backend.

mod util;

use eventide_reactor::{Interest, Op, Reactor, Token};
use std::time::{Duration, Instant};
use util::*;

conformance!(
    a_waker_on_another_thread_ends_a_blocked_wait,
    many_wakes_before_a_wait_coalesce_into_one_return,
    a_wake_racing_the_reset_of_the_last_one_is_never_lost,
    wait_returns_after_its_timeout_within_a_few_ms,
    a_zero_timeout_wait_with_nothing_pending_returns_at_once,
    thousands_of_completions_in_one_turn_are_all_delivered,
    poll_reports_writability_of_a_connected_socket,
);

fn a_waker_on_another_thread_ends_a_blocked_wait(r: &mut Reactor) {
    let w = r.waker();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        w.wake().unwrap();
    });
    let start = Instant::now();
    r.wait(Some(LIMIT)).unwrap();
    let took = start.elapsed();
    t.join().unwrap();
    assert!(took < LIMIT / 2, "wait was not woken ({took:?})");
    assert!(
        took >= Duration::from_millis(40),
        "wait returned before the wake ({took:?})"
    );
    // Again, with a wait without a timeout at all.
    let w = r.waker();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        w.clone().wake().unwrap();
    });
    r.wait(None).unwrap();
    t.join().unwrap();
}

fn many_wakes_before_a_wait_coalesce_into_one_return(r: &mut Reactor) {
    let w = r.waker();
    std::thread::scope(|s| {
        for _ in 0..4 {
            let w = w.clone();
            s.spawn(move || (0..1000).for_each(|_| w.wake().unwrap()));
        }
    });
    let start = Instant::now();
    r.wait(Some(LIMIT)).unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "the wakes did not end the wait"
    );
    // Coalesced: the next wait is not woken by leftovers of those 4000 wakes.
    let start = Instant::now();
    r.wait(Some(Duration::from_millis(100))).unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(90),
        "a stale wake ended the second wait"
    );
    assert_eq!(r.ready(), 0);
}

/// Ping-pong with another thread, 20,000 rounds: it publishes a round and
/// wakes; the loop thread takes what is published, else waits. The wakes
/// land anywhere around the end of a wait and the reset of the flag that
/// coalesces them (before, during, after it), and a wait with nothing new
/// published must still be ended by the next wake: a lost one shows as a
/// wait that runs to its limit.
fn a_wake_racing_the_reset_of_the_last_one_is_never_lost(r: &mut Reactor) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    const ROUNDS: u64 = 20_000;
    let published = Arc::new(AtomicU64::new(0));
    let taken = Arc::new(AtomicU64::new(0));
    let w = r.waker();
    let t = {
        let (published, taken) = (Arc::clone(&published), Arc::clone(&taken));
        std::thread::spawn(move || {
            for round in 1..=ROUNDS {
                published.store(round, Ordering::Release);
                w.wake().unwrap();
                let give_up = Instant::now() + LIMIT;
                while taken.load(Ordering::Acquire) < round && Instant::now() < give_up {
                    std::hint::spin_loop();
                }
            }
        })
    };
    let mut seen = 0;
    while seen < ROUNDS {
        let now = published.load(Ordering::Acquire);
        if now > seen {
            seen = now;
            taken.store(seen, Ordering::Release);
            continue;
        }
        let start = Instant::now();
        r.wait(Some(LIMIT)).unwrap();
        assert!(
            start.elapsed() < LIMIT,
            "a wake was lost: round {} published, the wait ran to its limit",
            published.load(Ordering::Acquire)
        );
    }
    t.join().unwrap();
}

fn wait_returns_after_its_timeout_within_a_few_ms(r: &mut Reactor) {
    for ms in [5u64, 30, 100] {
        let want = Duration::from_millis(ms);
        let start = Instant::now();
        let n = r.wait(Some(want)).unwrap();
        let took = start.elapsed();
        assert_eq!(n, 0);
        assert!(took >= want, "returned early: {took:?} < {want:?}");
        // Loose: a loaded 2-core machine may add scheduling delay.
        assert!(
            took < want + Duration::from_millis(250),
            "returned late: {took:?} for {want:?}"
        );
    }
}

fn a_zero_timeout_wait_with_nothing_pending_returns_at_once(r: &mut Reactor) {
    let start = Instant::now();
    for _ in 0..10_000 {
        assert_eq!(r.wait(Some(Duration::ZERO)).unwrap(), 0);
    }
    assert!(start.elapsed() < Duration::from_secs(5));
}

fn thousands_of_completions_in_one_turn_are_all_delivered(r: &mut Reactor) {
    // More completions than the io_uring completion queue holds (overflow).
    const N: u64 = 6000;
    let (c, s) = tcp_pair(r);
    for i in 0..N {
        r.submit(Token(i), Op::poll(c, Interest::WRITABLE)).unwrap();
    }
    let mut seen = vec![false; N as usize];
    let mut count = 0;
    let deadline = Instant::now() + LIMIT;
    while count < N {
        assert!(Instant::now() < deadline, "only {count} of {N} completions");
        r.wait(Some(Duration::from_millis(200))).unwrap();
        for cpl in r.completions() {
            let got = cpl.readiness().expect("poll result");
            assert!(got.is_writable());
            assert!(!seen[cpl.token.0 as usize], "duplicate completion");
            seen[cpl.token.0 as usize] = true;
            count += 1;
        }
    }
    assert_eq!(r.in_flight(), 0);
    close(c);
    close(s);
}

fn poll_reports_writability_of_a_connected_socket(r: &mut Reactor) {
    let (c, s) = tcp_pair(r);
    let done = run_op(r, Token(1), Op::poll(c, Interest::BOTH));
    let got = done.readiness().unwrap();
    assert!(got.is_writable() && !got.is_readable(), "got {got:?}");
    run_op(r, Token(2), Op::send(s, vec![1])).result.unwrap();
    let done = run_op(r, Token(3), Op::poll(c, Interest::READABLE));
    assert!(done.readiness().unwrap().is_readable());
    close(c);
    close(s);
}
