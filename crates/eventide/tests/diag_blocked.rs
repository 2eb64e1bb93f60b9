//! Issue 16's blocked-loop detector, on every compiled backend: one
//! callback running past the threshold is reported once while it runs and
//! once when it returns, naming its registration site; short callbacks are
//! not reported; a panicking one is still reported and the loop goes on.

mod util;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventide::diag::{BlockedReport, Kind};
use eventide::{BackendChoice, BackendKind, Loop};

const THRESHOLD: Duration = Duration::from_millis(80);

type Reports = Arc<Mutex<Vec<BlockedReport>>>;

/// A loop on `backend` with the detector on, and the reports it makes.
fn detecting_loop(backend: BackendKind) -> Option<(Loop, Reports)> {
    detecting_loop_with(backend, THRESHOLD)
}

/// As [`detecting_loop`], with another threshold.
fn detecting_loop_with(backend: BackendKind, threshold: Duration) -> Option<(Loop, Reports)> {
    let reports: Reports = Arc::default();
    let sink = Arc::clone(&reports);
    let built = Loop::builder()
        .backend(BackendChoice::Only(backend))
        .detect_blocking(threshold)
        .on_blocked(move |report| sink.lock().unwrap().push(*report))
        .build();
    match built {
        Ok(lp) => {
            assert_eq!(lp.blocking_threshold(), Some(threshold));
            Some((lp, reports))
        }
        Err(error) => {
            eprintln!("skipped on {backend}: {error}");
            None
        }
    }
}

/// Waits (bounded) until `n` reports are in, and returns them.
fn wait_for(reports: &Reports, n: usize) -> Vec<BlockedReport> {
    let end = Instant::now() + Duration::from_secs(5);
    while reports.lock().unwrap().len() < n && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
    // Anything more would come within a few samples.
    std::thread::sleep(THRESHOLD / 2);
    reports.lock().unwrap().clone()
}

/// Checks an incident's two reports: site, kind, so far then in all.
/// (Reports of other callbacks, which a thread descheduled for the
/// threshold on a loaded machine could make, are not this incident's.)
fn assert_incident(got: &[BlockedReport], kind: Kind, line: u32) {
    let got: Vec<BlockedReport> = got
        .iter()
        .filter(|r| r.site.is_some_and(|s| s.line() == line))
        .copied()
        .collect();
    assert_eq!(got.len(), 2, "one incident, two reports: {got:#?}");
    for report in &got {
        assert_eq!(report.kind, kind);
        let site = report.site.expect("the site is known");
        assert!(site.file().ends_with("tests/diag_blocked.rs"), "{site}");
        assert_eq!(site.line(), line, "{report}");
        assert!(report.elapsed >= THRESHOLD, "{report}");
        assert_eq!(report.threshold, THRESHOLD);
        assert!(
            report
                .to_string()
                .contains(&format!("diag_blocked.rs:{line}"))
        );
    }
    assert!(!got[0].finished && got[1].finished, "{got:#?}");
    assert!(got[1].elapsed >= got[0].elapsed, "{got:#?}");
}

fn reports_once_per_incident(backend: BackendKind) {
    let Some((mut lp, reports)) = detecting_loop(backend) else {
        return;
    };
    let line = line!() + 1;
    lp.set_timeout(Duration::from_millis(1), |_| util::spin(300));
    util::run_within(&mut lp, Duration::from_secs(20));
    assert_incident(&wait_for(&reports, 2), Kind::Timeout, line);
}

fn short_callbacks_not_reported(backend: BackendKind) {
    // A threshold far above the callbacks' 5 ms, so that a descheduled
    // thread on a loaded machine does not look like a blocked loop.
    let threshold = Duration::from_millis(200);
    let Some((mut lp, reports)) = detecting_loop_with(backend, threshold) else {
        return;
    };
    // Eighty 5 ms callbacks (and their 1 ms ticks): 480 ms of blocking
    // in all, more than twice the threshold, none long.
    lp.set_interval(Duration::from_millis(1), |lp, me| {
        util::spin(5);
        lp.next_tick(|_| util::spin(1));
        let n = lp.state_mut::<u32>().expect("inserted");
        *n += 1;
        if *n == 80 {
            lp.clear_timer(me);
        }
    });
    lp.insert_state(0u32);
    lp.set_immediate(|_| util::spin(5));
    util::run_within(&mut lp, Duration::from_secs(20));
    assert_eq!(lp.state::<u32>(), Some(&80));
    std::thread::sleep(threshold * 2);
    let got = reports.lock().unwrap().clone();
    assert!(got.is_empty(), "{got:#?}");
}

fn panicking_callback_reported_loop_goes_on(backend: BackendKind) {
    let Some((mut lp, reports)) = detecting_loop(backend) else {
        return;
    };
    let caught = Arc::new(Mutex::new(0));
    let count = Arc::clone(&caught);
    lp.set_panic_handler(move |_, _| *count.lock().unwrap() += 1);
    let line = line!() + 1;
    lp.set_immediate(|_| {
        util::spin(250);
        panic!("blocked, then panicked");
    });
    let after = Arc::new(Mutex::new(false));
    let ran = Arc::clone(&after);
    lp.set_timeout(Duration::from_millis(20), move |_| {
        *ran.lock().unwrap() = true
    });
    util::run_within(&mut lp, Duration::from_secs(20));
    assert_eq!(*caught.lock().unwrap(), 1);
    assert!(*after.lock().unwrap(), "the loop went on");
    assert_incident(&wait_for(&reports, 2), Kind::Immediate, line);
}

/// Without a panic handler the panic leaves `run()` (an immediate's: no
/// frame catches it on the way): the incident still ends with its
/// report, and the loop runs again.
fn panic_out_of_run_still_reported(backend: BackendKind) {
    let Some((mut lp, reports)) = detecting_loop(backend) else {
        return;
    };
    let line = line!() + 1;
    lp.set_immediate(|_| {
        util::spin(250);
        panic!("out of run");
    });
    let outcome = catch_unwind(AssertUnwindSafe(|| lp.run()));
    assert!(outcome.is_err(), "the panic left run()");
    // The callback ends as the panic leaves `run()`: its final report
    // comes without anything else running on the loop.
    assert_incident(&wait_for(&reports, 2), Kind::Immediate, line);
    // The loop goes on: another incident is reported on its own.
    let line = line!() + 1;
    lp.next_tick(|_| util::spin(250));
    util::run_within(&mut lp, Duration::from_secs(20));
    let got = wait_for(&reports, 4);
    assert_incident(&got, Kind::NextTick, line);
}

/// A callback of an accepted connection (its data callback, blocking) is
/// reported with its listener's site: a connection has no call of its own.
fn accepted_connection_reported_at_its_listeners_site(backend: BackendKind) {
    use eventide::net::ListenOptions;
    let Some((mut lp, reports)) = detecting_loop(backend) else {
        return;
    };
    let any = "127.0.0.1:0".parse().unwrap();
    let line = line!() + 1;
    let listener = lp.tcp_listen(any, ListenOptions::default(), |lp, accepted| {
        let stream = accepted.expect("accepted");
        let listener = lp.state_mut::<Option<eventide::net::TcpListener>>();
        if let Some(listener) = listener.and_then(Option::take) {
            listener.close(lp);
        }
        stream.read_start(
            lp,
            |_, _, _| util::spin(300),
            |lp, stream, _| {
                stream.close(lp);
            },
        );
    });
    let listener = listener.expect("listen");
    let addr = listener.local_addr(&lp).expect("its address");
    lp.insert_state(Some(listener));
    lp.tcp_connect(addr, move |lp, connected| {
        let client = connected.expect("connected");
        client.write(lp, b"block".to_vec(), |_, r| r.expect("written"));
        client.end(lp);
    })
    .expect("connect");
    util::run_within(&mut lp, Duration::from_secs(20));
    assert_incident(&wait_for(&reports, 2), Kind::Stream, line);
}

macro_rules! every_backend {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn uring() {
                    super::$name(eventide::BackendKind::Uring);
                }
                #[test]
                fn epoll() {
                    super::$name(eventide::BackendKind::Epoll);
                }
                #[test]
                fn poll() {
                    super::$name(eventide::BackendKind::Poll);
                }
            }
        )*
    };
}

every_backend!(
    accepted_connection_reported_at_its_listeners_site,
    reports_once_per_incident,
    short_callbacks_not_reported,
    panicking_callback_reported_loop_goes_on,
    panic_out_of_run_still_reported,
);
