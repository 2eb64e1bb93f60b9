//! `Loop::metrics` (issue 16): exact counts for a scripted loop, idle time
//! and utilization as libuv's and Node's, the delay histogram, the pool's
//! queues, write queues and reactor operations in flight. On every
//! compiled backend.

mod util;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use eventide::metrics::Utilization;
use eventide::net::ListenOptions;
use eventide::{BackendChoice, BackendKind, Loop};
use util::{ms, run_within, spin};

on_every_backend!(
    counts_are_exact_for_a_scripted_loop,
    idle_time_grows_while_waiting_not_while_busy,
    utilization_differences_are_nodes,
    delay_histogram_from_known_busy_turns,
    write_queue_bytes_while_the_peer_does_not_read,
    phase_times_only_when_asked,
);

fn counts_are_exact_for_a_scripted_loop(lp: &mut Loop) {
    let before = lp.metrics();
    assert_eq!(before.turns, 0);
    assert_eq!(before.callbacks.total(), 0);
    assert_eq!(before.utilization, Utilization::default());
    for _ in 0..3 {
        lp.set_timeout(ms(1), |_| {});
    }
    lp.set_immediate(|lp| lp.next_tick(|_| {}));
    lp.set_immediate(|lp| lp.queue_microtask(|_| {}));
    lp.fs().stat(env!("CARGO_MANIFEST_DIR"), |_, stats| {
        stats.expect("the crate's directory exists");
    });
    let handle = lp.handle();
    assert!(handle.post(|_| {}).is_ok(), "the loop is there");
    assert!(handle.post(|_| {}).is_ok(), "the loop is there");
    drop(handle);
    let sender = lp.channel(|_, _: u32| {});
    for value in 0..3 {
        sender.send(value).expect("the loop is there");
    }
    drop(sender);
    run_within(lp, Duration::from_secs(20));

    let m = lp.metrics();
    let c = m.callbacks;
    assert_eq!(c.timers, 3);
    assert_eq!(c.immediates, 2);
    assert_eq!(c.next_ticks, 1);
    assert_eq!(c.microtasks, 1);
    assert_eq!(c.posted, 2);
    assert_eq!(c.channels, 3);
    // The stat is an io_uring operation or a pool job, by backend.
    assert_eq!(c.io + c.pool, 1, "{c:?}");
    assert_eq!((c.hooks, c.closes, c.pending), (0, 0, 0), "{c:?}");
    assert_eq!(c.total(), 3 + 2 + 1 + 1 + 2 + 3 + 1);
    assert_eq!(m.events, c.io + c.pool + c.posted + c.channels);
    assert!(m.turns >= 1);
    assert_eq!(m.reactor_in_flight, 0);
    assert_eq!(m.write_queue_bytes, 0);
    assert_eq!((m.pool.normal.queued, m.pool.slow.queued), (0, 0));
    println!("{m}");
}

fn idle_time_grows_while_waiting_not_while_busy(lp: &mut Loop) {
    // Waiting on a timer: the poll phase blocks until it is due.
    lp.set_timeout(ms(100), |_| {});
    run_within(lp, Duration::from_secs(20));
    let waited = lp.metrics().idle_time;
    assert!(waited >= ms(50), "idle {waited:?} while waiting 100 ms");

    // Busy callbacks: a chain of immediates, 20 of 5 ms, while a listener
    // keeps an accept in flight. The poll phase calls the reactor every
    // turn (a delay sample each) but never blocks: not one nanosecond is
    // idle.
    let before = lp.utilization();
    let samples = lp.delay_histogram().count();
    let listener = lp
        .tcp_listen(
            "127.0.0.1:0".parse().unwrap(),
            ListenOptions::default(),
            |_, _| {},
        )
        .expect("listening");
    // The idle time when the last callback of the chain runs, with the
    // listener still open (its close waits for the kernel, legitimately
    // idle).
    let idle_at_end = Rc::new(Cell::new(None));
    fn busy(
        lp: &mut Loop,
        left: u32,
        listener: eventide::net::TcpListener,
        end: Rc<Cell<Option<(Duration, Utilization)>>>,
    ) {
        lp.set_immediate(move |lp| {
            spin(5);
            if left > 1 {
                busy(lp, left - 1, listener, end);
            } else {
                end.set(Some((lp.metrics().idle_time, lp.utilization())));
                listener.close(lp);
            }
        });
    }
    busy(lp, 20, listener, Rc::clone(&idle_at_end));
    run_within(lp, Duration::from_secs(20));
    let (idle, at_end) = idle_at_end.get().expect("the chain ran");
    assert_eq!(idle, waited);
    assert!(
        lp.delay_histogram().count() >= samples + 19,
        "the reactor was called each turn"
    );
    let busy = Utilization::between(at_end, before);
    assert_eq!(busy.idle, 0.0);
    assert!(busy.active >= 100.0, "{busy:?}");
    assert_eq!(busy.utilization, 1.0);
}

fn utilization_differences_are_nodes(lp: &mut Loop) {
    // Before the loop ever ran, Node's reading is all zero.
    let a = lp.utilization();
    assert_eq!(a, Utilization::default());
    lp.set_timeout(ms(30), |_| spin(30));
    run_within(lp, Duration::from_secs(20));
    let b = lp.utilization();
    assert!(b.idle > 0.0 && b.active >= 30.0, "{b:?}");
    assert_eq!(b.idle, lp.metrics().idle_time.as_secs_f64() * 1e3);
    assert_eq!(b.utilization, b.active / (b.idle + b.active));
    // node v20: eventLoopUtilization(b, a) is b - a; (a, b) negates the
    // times and keeps the utilization; (b, b) is NaN.
    assert_eq!(Utilization::between(b, a), b);
    let reversed = Utilization::between(a, b);
    assert_eq!((reversed.idle, reversed.active), (-b.idle, -b.active));
    assert_eq!(reversed.utilization, b.utilization);
    assert!(Utilization::between(b, b).utilization.is_nan());
    // The one-argument form: since `b`, nothing was idle.
    let since = lp.utilization_since(b);
    assert_eq!(since.idle, 0.0);
    assert!(since.active >= 0.0);
}

/// Five timers in a chain, each 50 ms after the last one's callback (so
/// the loop waits for each: it reaches the poll phase long before), each
/// busy for 20 ms. Samples: the run's start to the first wait, then the
/// stretch after each of the first four callbacks (the fifth is followed
/// by no wait: the loop ends).
fn delay_histogram_from_known_busy_turns(lp: &mut Loop) {
    fn chain(lp: &mut Loop, left: u32) {
        lp.set_timeout(ms(50), move |lp| {
            spin(20);
            if left > 1 {
                chain(lp, left - 1);
            }
        });
    }
    chain(lp, 5);
    let started = Instant::now();
    run_within(lp, Duration::from_secs(20));
    let elapsed = started.elapsed();
    let idle = lp.metrics().idle_time;
    let h = lp.delay_histogram();
    assert_eq!(h.count(), 5, "{h:?}");
    // The samples lie between the waits: with the idle time they never
    // add up to more than the run took.
    assert!(
        h.mean() * 5 + idle <= elapsed,
        "{h:?} + {idle:?} > {elapsed:?}"
    );
    assert!(h.min() <= h.percentile(50.0));
    assert!(h.percentile(50.0) >= ms(20), "{h:?}");
    assert!(h.max() >= ms(20), "{h:?}");
    assert!(h.mean() >= ms(16), "{h:?}");
    assert!(h.stddev() > Duration::ZERO);
    assert_eq!(h.percentile(100.0), h.max());
    let summary = lp.metrics().delay;
    assert_eq!(summary.count, 5);
    assert_eq!(summary.p50, h.percentile(50.0));
    lp.reset_delay_histogram();
    assert_eq!(lp.delay_histogram().count(), 0);
}

fn write_queue_bytes_while_the_peer_does_not_read(lp: &mut Loop) {
    let accepted = Rc::new(Cell::new(None));
    let a = Rc::clone(&accepted);
    let server = lp
        .tcp_listen(
            "127.0.0.1:0".parse().unwrap(),
            ListenOptions::default(),
            move |_, stream| a.set(Some(stream.expect("accepted"))),
        )
        .expect("listening");
    let addr = server.local_addr(lp).expect("its address");
    let client = lp
        .tcp_connect(addr, |lp, stream| {
            // Far more than the kernel's buffers hold: the rest stays
            // queued, as the server never reads.
            let stream = stream.expect("connected");
            stream.write(lp, vec![7u8; 64 << 20], |_, _| {});
        })
        .expect("connecting");
    let checked = Rc::new(Cell::new(false));
    let done = Rc::clone(&checked);
    // Until the kernel has stopped taking bytes: the queue stays the same
    // between two looks 20 ms apart.
    let last = Rc::new(Cell::new(usize::MAX));
    lp.set_interval(ms(20), move |lp, me| {
        let queued = client.write_queue_size(lp);
        if queued == 0 || queued != last.replace(queued) {
            return;
        }
        let m = lp.metrics();
        assert_eq!(m.write_queue_bytes, queued);
        assert!(queued > 0 && queued < 64 << 20);
        // The client's write and the server's accept (or the accepted
        // stream's watch) at least.
        assert!(m.reactor_in_flight >= 1, "{m:?}");
        done.set(true);
        lp.clear_timer(me);
        client.close(lp);
        server.close(lp);
        if let Some(stream) = accepted.take() {
            stream.close(lp);
        }
    });
    run_within(lp, Duration::from_secs(20));
    assert!(checked.get());
    assert_eq!(lp.metrics().write_queue_bytes, 0);
}

fn phase_times_only_when_asked(lp: &mut Loop) {
    lp.set_immediate(|_| spin(5));
    run_within(lp, Duration::from_secs(20));
    assert_eq!(lp.metrics().phases, None);
    lp.set_phase_timing(true);
    lp.set_immediate(|_| spin(30));
    lp.set_timeout(ms(1), |_| spin(20));
    run_within(lp, Duration::from_secs(20));
    let phases = lp.metrics().phases.expect("timed");
    assert!(phases.check >= ms(30), "{phases:?}");
    assert!(phases.timers >= ms(20), "{phases:?}");
    assert!(phases.poll >= phases.poll_wait, "{phases:?}");
    // Off again: the figures stay, and grow no more.
    lp.set_phase_timing(false);
    lp.set_immediate(|_| spin(10));
    run_within(lp, Duration::from_secs(20));
    assert_eq!(lp.metrics().phases, Some(phases));
}

/// One pool thread, held by a job: the 16 jobs queued behind it are the
/// normal lane's depth, exactly; once it is released they all run, and the
/// sampled ones (jobs 0, 8 and 16) report their wait.
#[test]
fn pool_queue_depth_and_wait_with_a_blocked_worker() {
    for kind in [BackendKind::Uring, BackendKind::Epoll, BackendKind::Poll] {
        let built = Loop::builder()
            .backend(BackendChoice::Only(kind))
            .pool_threads(1)
            .build();
        let Ok(mut lp) = built else {
            eprintln!("skipped on {kind}");
            continue;
        };
        let (started_tx, started_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        lp.queue_work(
            move || {
                started_tx.send(()).unwrap();
                release_rx.recv_timeout(Duration::from_secs(20)).is_ok()
            },
            |_, released| assert!(released.expect("ran")),
        );
        for _ in 0..16 {
            lp.queue_work(|| (), |_, done| done.expect("ran"));
        }
        let queued_at = Instant::now();
        let release_tx = Rc::new(Cell::new(Some(release_tx)));
        lp.set_interval(ms(1), move |lp, me| {
            if started_rx.try_recv().is_err() {
                return; // the worker has not started the blocker yet
            }
            let m = lp.metrics();
            assert_eq!(m.pool.normal.queued, 16, "{m:?}");
            assert_eq!(m.pool.slow.queued, 0);
            // Held at least 30 ms after the 16 were queued.
            spin(30u64.saturating_sub(queued_at.elapsed().as_millis() as u64));
            lp.clear_timer(me);
            if let Some(tx) = release_tx.take() {
                tx.send(()).unwrap();
            }
        });
        run_within(&mut lp, Duration::from_secs(20));
        let m = lp.metrics();
        assert_eq!(m.callbacks.pool, 17);
        assert_eq!(m.pool.normal.queued, 0);
        assert_eq!(m.pool.normal.sampled, 3, "{m:?}");
        // Jobs 8 and 16 waited for the release.
        assert!(m.pool.normal.max_wait >= ms(30), "{m:?}");
        assert!(m.pool.normal.mean_wait <= m.pool.normal.max_wait);
    }
}
