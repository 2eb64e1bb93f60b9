//! A property of the loop under panics: random sequences of loop
//! operations, in which random callbacks panic, with a panic handler or
//! without one. After each `run()` (returned, or left by a panic),
//! `alive()` agrees with what is still registered; a further `run()`
//! always comes back (bounded: a watchdog timer fails the case instead of
//! hanging), and in the end every callback ran as often as it should have:
//! nothing lost, nothing run twice.
//!
//! The model is a set of tags of the things that keep the loop alive (a
//! timer, an immediate, a hook, work, a posted closure, a channel with
//! messages, a closing handle, a deferred callback, a file operation). A callback removes
//! its tag when it starts the call that ends it (a one-shot's only call,
//! a repeating one's last, or the call that panics, which stops it).
//! Next-ticks and microtasks do not keep the loop alive; they are tracked
//! apart and must all have run when the loop ends.

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::time::Duration;

use eventide::{BackendKind, Loop, Phase, TimerId};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Something a callback does the first time it runs, before it panics (if
/// it does).
#[derive(Clone, Debug)]
enum Child {
    Tick {
        panics: bool,
    },
    Microtask {
        panics: bool,
    },
    Immediate {
        panics: bool,
    },
    Timeout {
        panics: bool,
    },
    Work {
        panics: bool,
    },
    /// Clears one of the top-level timeouts (by position), if pending.
    ClearTimer(usize),
}

#[derive(Clone, Debug)]
enum Kind {
    Timeout {
        delay: u64,
    },
    Interval {
        period: u64,
        calls: u8,
    },
    Immediate,
    Tick,
    Microtask,
    Defer,
    Hook {
        phase: u8,
        calls: u8,
    },
    Work,
    Post,
    Channel {
        messages: u8,
    },
    Close,
    /// A file system operation: a boxed I/O handler on io_uring, pool work
    /// on polling.
    Stat,
}

#[derive(Clone, Debug)]
struct Op {
    kind: Kind,
    /// The call (1-based; for a channel, the message) that panics.
    panic_at: Option<u8>,
    child: Option<Child>,
}

fn child() -> impl Strategy<Value = Child> {
    prop_oneof![
        any::<bool>().prop_map(|panics| Child::Tick { panics }),
        any::<bool>().prop_map(|panics| Child::Microtask { panics }),
        any::<bool>().prop_map(|panics| Child::Immediate { panics }),
        any::<bool>().prop_map(|panics| Child::Timeout { panics }),
        any::<bool>().prop_map(|panics| Child::Work { panics }),
        (0..8usize).prop_map(Child::ClearTimer),
    ]
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        (0..4u64).prop_map(|delay| Kind::Timeout { delay }),
        (1..3u64, 1..4u8).prop_map(|(period, calls)| Kind::Interval { period, calls }),
        Just(Kind::Immediate),
        Just(Kind::Tick),
        Just(Kind::Microtask),
        Just(Kind::Defer),
        (0..3u8, 1..4u8).prop_map(|(phase, calls)| Kind::Hook { phase, calls }),
        Just(Kind::Work),
        Just(Kind::Post),
        (1..4u8).prop_map(|messages| Kind::Channel { messages }),
        Just(Kind::Close),
        Just(Kind::Stat),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    (
        kind(),
        prop::option::weighted(0.4, 1..4u8),
        prop::option::weighted(0.3, child()),
    )
        .prop_map(|(kind, panic_at, child)| Op {
            kind,
            panic_at,
            child,
        })
}

/// One case: batches of operations, each started and then run until the
/// loop ends; with a panic handler or without.
fn case() -> impl Strategy<Value = (bool, Vec<Vec<Op>>)> {
    (
        any::<bool>(),
        prop::collection::vec(prop::collection::vec(op(), 1..8), 1..3),
    )
}

#[derive(Default)]
struct Model {
    next: u32,
    /// What keeps the loop alive.
    alive: BTreeSet<u32>,
    /// Ticks and microtasks not run yet.
    ticks: BTreeSet<u32>,
    /// Calls made, per tag.
    calls: BTreeMap<u32, u32>,
    /// Calls each tag must have had in the end.
    expected: BTreeMap<u32, u32>,
    /// The top-level timeouts, for `Child::ClearTimer`.
    timers: Vec<(u32, TimerId)>,
    /// Panics the callbacks raised (handled or not).
    raised: u32,
}

type Shared = Arc<Mutex<Model>>;

fn lock(model: &Shared) -> MutexGuard<'_, Model> {
    model
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Model {
    fn tag(&mut self, expected: u32, keeps_alive: bool) -> u32 {
        self.next += 1;
        let tag = self.next;
        self.expected.insert(tag, expected);
        if keeps_alive {
            self.alive.insert(tag);
        } else {
            self.ticks.insert(tag);
        }
        tag
    }
}

/// The body of every callback: records the call, removes the tag on the
/// ending call, makes the child on the first, then panics if told to.
/// Returns whether this call ends it (and the caller must stop it).
fn body(lp: &mut Loop, model: &Shared, tag: u32, call: u8, last: bool, op: &Op) -> bool {
    body_of(lp, model, tag, call, last, op, true)
}

/// [`body`], where `panic_ends` says whether a panicking call ends the
/// thing (a hook, an interval) or not (a channel: the other messages
/// still arrive).
fn body_of(
    lp: &mut Loop,
    model: &Shared,
    tag: u32,
    call: u8,
    last: bool,
    op: &Op,
    panic_ends: bool,
) -> bool {
    let panics = op.panic_at == Some(call);
    {
        let mut m = lock(model);
        *m.calls.entry(tag).or_default() += 1;
        if last || (panics && panic_ends) {
            m.alive.remove(&tag);
            m.ticks.remove(&tag);
        }
        if panics {
            m.raised += 1;
        }
    }
    if call == 1
        && let Some(child) = &op.child
    {
        make_child(lp, model, child);
    }
    if panics {
        panic!("boom {tag}");
    }
    last
}

fn one_shot(panics: bool) -> Op {
    Op {
        kind: Kind::Immediate,
        panic_at: panics.then_some(1),
        child: None,
    }
}

fn make_child(lp: &mut Loop, model: &Shared, child: &Child) {
    match *child {
        Child::Tick { panics } | Child::Microtask { panics } => {
            let tag = lock(model).tag(1, false);
            let (m, op) = (model.clone(), one_shot(panics));
            let f = move |lp: &mut Loop| {
                body(lp, &m, tag, 1, true, &op);
            };
            if matches!(child, Child::Tick { .. }) {
                lp.next_tick(f);
            } else {
                lp.queue_microtask(f);
            }
        }
        Child::Immediate { panics } => {
            let tag = lock(model).tag(1, true);
            let (m, op) = (model.clone(), one_shot(panics));
            lp.set_immediate(move |lp| {
                body(lp, &m, tag, 1, true, &op);
            });
        }
        Child::Timeout { panics } => {
            let tag = lock(model).tag(1, true);
            let (m, op) = (model.clone(), one_shot(panics));
            lp.set_timeout(Duration::from_millis(1), move |lp| {
                body(lp, &m, tag, 1, true, &op);
            });
        }
        Child::Work { panics } => {
            let tag = lock(model).tag(1, true);
            let (m, op) = (model.clone(), one_shot(panics));
            lp.queue_work(
                || (),
                move |lp, _| {
                    body(lp, &m, tag, 1, true, &op);
                },
            );
        }
        Child::ClearTimer(index) => {
            let mut m = lock(model);
            if m.timers.is_empty() {
                return;
            }
            let (tag, id) = m.timers[index % m.timers.len()];
            if lp.clear_timer(id) {
                assert!(m.alive.remove(&tag), "a pending timer is registered");
                m.expected.insert(tag, 0);
            }
        }
    }
}

fn start(lp: &mut Loop, model: &Shared, op: &Op) {
    let m = model.clone();
    let o = op.clone();
    match op.kind {
        Kind::Timeout { delay } => {
            let tag = lock(model).tag(1, true);
            let id = lp.set_timeout(Duration::from_millis(delay), move |lp| {
                body(lp, &m, tag, 1, true, &o);
            });
            lock(model).timers.push((tag, id));
        }
        Kind::Interval { period, calls } => {
            let ends = op.panic_at.unwrap_or(calls).min(calls);
            let tag = lock(model).tag(u32::from(ends), true);
            let mut call = 0;
            lp.set_interval(Duration::from_millis(period), move |lp, id| {
                call += 1;
                if body(lp, &m, tag, call, call == calls, &o) {
                    lp.clear_timer(id);
                }
            });
        }
        Kind::Immediate => {
            let tag = lock(model).tag(1, true);
            lp.set_immediate(move |lp| {
                body(lp, &m, tag, 1, true, &o);
            });
        }
        Kind::Tick | Kind::Microtask => {
            let tag = lock(model).tag(1, false);
            let f = move |lp: &mut Loop| {
                body(lp, &m, tag, 1, true, &o);
            };
            if matches!(op.kind, Kind::Tick) {
                lp.next_tick(f);
            } else {
                lp.queue_microtask(f);
            }
        }
        Kind::Defer => {
            let tag = lock(model).tag(1, true);
            lp.defer(move |lp| {
                body(lp, &m, tag, 1, true, &o);
            });
        }
        Kind::Hook { phase, calls } => {
            let ends = op.panic_at.unwrap_or(calls).min(calls);
            let tag = lock(model).tag(u32::from(ends), true);
            let phase = [Phase::Idle, Phase::Prepare, Phase::Check][usize::from(phase)];
            let mut call = 0;
            lp.start_hook(phase, move |lp, id| {
                call += 1;
                if body(lp, &m, tag, call, call == calls, &o) {
                    lp.stop_hook(id);
                }
            });
        }
        Kind::Work => {
            let tag = lock(model).tag(1, true);
            lp.queue_work(
                || (),
                move |lp, result| {
                    result.expect("the work ran");
                    body(lp, &m, tag, 1, true, &o);
                },
            );
        }
        Kind::Post => {
            let tag = lock(model).tag(1, true);
            let handle = lp.handle();
            handle
                .post(move |lp| {
                    body(lp, &m, tag, 1, true, &o);
                })
                .unwrap_or_else(|_| panic!("the loop is there"));
        }
        Kind::Channel { messages } => {
            let tag = lock(model).tag(u32::from(messages), true);
            let sender = lp.channel(move |lp, message: u8| {
                body_of(lp, &m, tag, message, message == messages, &o, false);
            });
            for message in 1..=messages {
                sender.send(message).unwrap();
            }
        }
        Kind::Stat => {
            let tag = lock(model).tag(1, true);
            lp.fs().stat("/", move |lp, result| {
                result.expect("stat /");
                body(lp, &m, tag, 1, true, &o);
            });
        }
        Kind::Close => {
            let tag = lock(model).tag(1, true);
            let hook = lp.start_hook(Phase::Check, |_, _| {});
            lp.close_then(hook, move |lp| {
                body(lp, &m, tag, 1, true, &o);
            });
        }
    }
}

const LIMIT: Duration = Duration::from_secs(10);

/// One `run()`, bounded; returns whether a panic left it.
fn run_once(lp: &mut Loop) -> bool {
    let expired = Arc::new(Mutex::new(false));
    let e = expired.clone();
    let watchdog = lp.set_timeout(LIMIT, move |lp| {
        *e.lock().unwrap() = true;
        lp.stop();
    });
    lp.unref_timer(watchdog);
    let outcome = catch_unwind(AssertUnwindSafe(|| lp.run()));
    lp.clear_timer(watchdog);
    assert!(!*expired.lock().unwrap(), "run() did not come back");
    match outcome {
        Ok(result) => {
            result.expect("the loop runs");
            false
        }
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_default();
            assert!(
                message.starts_with("boom"),
                "a panic of the loop: {message}"
            );
            true
        }
    }
}

fn scenario(backend: BackendKind, with_handler: bool, batches: &[Vec<Op>]) {
    let Some(mut lp) = util::new_loop(backend) else {
        return;
    };
    let handled = Arc::new(Mutex::new(0u32));
    if with_handler {
        let h = handled.clone();
        lp.set_panic_handler(move |_, _| *h.lock().unwrap() += 1);
    }
    // Keeps prepare and check hooks turning (alone they let the poll
    // phase block); unreferenced, so it keeps nothing alive.
    let driver = lp.start_hook(Phase::Idle, |_, _| {});
    lp.unref_hook(driver);
    let model: Shared = Arc::default();
    let mut uncaught = 0;
    for batch in batches {
        for op in batch {
            start(&mut lp, &model, op);
        }
        let mut runs = 0;
        loop {
            runs += 1;
            assert!(runs <= 200, "run() keeps panicking");
            let panicked = run_once(&mut lp);
            let m = lock(&model);
            assert_eq!(
                lp.alive(),
                !m.alive.is_empty(),
                "alive() after a run (panicked: {panicked}); registered: {:?}",
                m.alive
            );
            if !panicked {
                break;
            }
            assert!(!with_handler, "a panic left run() despite a handler");
            uncaught += 1;
        }
        let m = lock(&model);
        assert!(m.alive.is_empty(), "left registered: {:?}", m.alive);
        assert!(m.ticks.is_empty(), "ticks not run: {:?}", m.ticks);
    }
    let m = lock(&model);
    for (tag, expected) in &m.expected {
        assert_eq!(
            m.calls.get(tag).copied().unwrap_or(0),
            *expected,
            "calls of {tag}"
        );
    }
    let seen = if with_handler {
        *handled.lock().unwrap()
    } else {
        uncaught
    };
    assert_eq!(seen, m.raised, "every panic raised was seen once");
    assert!(!lp.alive());
}

/// The intended panics ("boom ...") are not printed: thousands of them
/// would bury a real failure.
fn quiet_booms() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let boom = info
                .payload()
                .downcast_ref::<String>()
                .is_some_and(|m| m.starts_with("boom"));
            if !boom {
                default(info);
            }
        }));
    });
}

fn check(backend: BackendKind) {
    if util::new_loop(backend).is_none() {
        return;
    }
    quiet_booms();
    // PROPTEST_CASES asks for more (or fewer) cases.
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(256);
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    runner
        .run(&case(), |(with_handler, batches)| {
            scenario(backend, with_handler, &batches);
            Ok(())
        })
        .unwrap();
}

#[test]
fn alive_agrees_with_what_is_registered_after_every_run_on_uring() {
    check(BackendKind::Uring);
}

#[test]
fn alive_agrees_with_what_is_registered_after_every_run_on_poll() {
    check(BackendKind::Poll);
}
