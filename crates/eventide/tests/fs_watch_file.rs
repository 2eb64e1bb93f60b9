//! `fs.watchFile` / `fs.unwatchFile` on every backend, against what Node
//! v20.20 reports for the same steps (interval 50 ms; steps 200 ms apart):
//!
//! ```text
//! l1 0/0/0/0/0 0/0/0/0/0        <- first stat: the file is missing
//! --create                       (writeFileSync 'xy')
//! l1 2/1/t/i/33188 0/0/0/0/0
//! --write                        (appendFileSync 'z')
//! l1 3/1/t/i/33188 2/1/t/i/33188
//! --delete
//! l1 0/0/0/0/0 3/1/t/i/33188
//! ```
//!
//! (size/nlink/mtime set/ino set/mode of the current, then the previous
//! stats). A second `watchFile` on the path returns the same watcher and
//! both listeners get each change; `unwatchFile(path, l2)` removes one.

mod fs_support;
mod util;

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use eventide::Loop;
use eventide::fs::{DEFAULT_INTERVAL, StatListener, Stats, WatchFileOptions, zeroed_stats};
use fs_support::tmp;
use util::run_within;

/// The script's summary of one stats value.
fn summary(s: &Stats) -> String {
    let t = if s.mtime > std::time::SystemTime::UNIX_EPOCH {
        "t"
    } else {
        "0"
    };
    let i = if s.ino > 0 { "i" } else { "0" };
    format!("{}/{}/{t}/{i}/{}", s.size, s.nlink, s.mode)
}

/// Writes `data` to `path` at once, as far as a stat on another thread
/// can tell (a temporary file renamed into place): the poller's stat runs
/// on the pool or in the kernel while the loop thread writes, and could
/// see a plain write half done (created but empty), as Node's could.
fn put(path: &Path, data: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn fast() -> WatchFileOptions {
    WatchFileOptions::new().interval(Duration::from_millis(50))
}

type Log = Rc<RefCell<Vec<String>>>;

fn logger(log: &Log, name: &'static str) -> impl FnMut(&mut Loop, &Stats, &Stats) + 'static {
    let log = Rc::clone(log);
    move |_, current, previous| {
        log.borrow_mut()
            .push(format!("{name} {} {}", summary(current), summary(previous)));
    }
}

fn node_sequence_with_two_listeners(lp: &mut Loop) {
    let dir = tmp();
    let path = dir.path().join("a");
    let log: Log = Rc::default();
    // Each step runs once l1 has seen the previous one (in an immediate,
    // after the whole emit), so no step depends on timing.
    let mut l1_log = logger(&log, "l1");
    let calls = Rc::new(Cell::new(0));
    let l2_slot: Rc<Cell<Option<StatListener>>> = Rc::default();
    let (p, steps, c, l2_of) = (
        path.clone(),
        Rc::clone(&log),
        Rc::clone(&calls),
        Rc::clone(&l2_slot),
    );
    let l1 = lp
        .fs()
        .watch_file(&path, fast(), move |lp, current, previous| {
            l1_log(lp, current, previous);
            c.set(c.get() + 1);
            let (p, steps, n, l2) = (p.clone(), Rc::clone(&steps), c.get(), l2_of.get());
            lp.set_immediate(move |lp| {
                let step = |name: &str| steps.borrow_mut().push(format!("--{name}"));
                match n {
                    1 => {
                        step("create");
                        put(&p, "xy");
                    }
                    2 => {
                        use std::io::Write;
                        step("write");
                        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
                        f.write_all(b"z").unwrap();
                    }
                    3 => {
                        step("unwatch l2");
                        let l2 = l2.expect("l2 is set");
                        assert!(lp.fs().unwatch_file(&p, Some(l2)));
                        assert!(!lp.fs().unwatch_file(&p, Some(l2)), "already gone");
                        step("delete");
                        std::fs::remove_file(&p).unwrap();
                    }
                    _ => assert!(lp.fs().unwatch_file(&p, None)),
                }
            });
        })
        .unwrap();
    // The second one's options are ignored: it shares the 50 ms poller.
    let l2 = lp
        .fs()
        .watch_file(&path, WatchFileOptions::new(), logger(&log, "l2"))
        .unwrap();
    l2_slot.set(Some(l2));
    assert_eq!(l1.watcher(), l2.watcher(), "one poller per path");
    run_within(lp, Duration::from_secs(20));
    assert!(
        !l1.watcher().is_active(lp),
        "stopped with its last listener"
    );
    assert_eq!(calls.get(), 4);
    let mode = 0o100000 | (0o666 & !umask());
    let full = |size| format!("{size}/1/t/i/{mode}");
    let zero = "0/0/0/0/0".to_string();
    assert_eq!(
        *log.borrow(),
        [
            format!("l1 {zero} {zero}"),
            format!("l2 {zero} {zero}"),
            "--create".to_string(),
            format!("l1 {} {zero}", full(2)),
            format!("l2 {} {zero}", full(2)),
            "--write".to_string(),
            format!("l1 {} {}", full(3), full(2)),
            format!("l2 {} {}", full(3), full(2)),
            "--unwatch l2".to_string(),
            "--delete".to_string(),
            format!("l1 {zero} {}", full(3)),
        ]
    );
}

fn umask() -> u32 {
    // SAFETY: umask(2) cannot fail; it is set back at once.
    let mask = unsafe { libc::umask(0o022) };
    // SAFETY: as above.
    unsafe { libc::umask(mask) };
    #[allow(clippy::unnecessary_cast)] // `mode_t` is `u16` on macOS and FreeBSD
    let mask = mask as u32;
    mask
}

/// An existing file: the first stat only records; nothing is reported
/// while nothing changes.
fn an_unchanged_file_reports_nothing(lp: &mut Loop) {
    let dir = tmp();
    let path = fs_support::file_with(dir.path(), "a", b"x");
    let log: Log = Rc::default();
    let _l = lp
        .fs()
        .watch_file(&path, fast(), logger(&log, "l"))
        .unwrap();
    let p = path.clone();
    lp.set_timeout(Duration::from_millis(300), move |lp| {
        assert!(lp.fs().unwatch_file(&p, None));
    });
    run_within(lp, Duration::from_secs(20));
    assert!(log.borrow().is_empty(), "{:?}", log.borrow());
}

/// Node's defaults: every 5007 ms, persistent; the poller keeps the loop
/// alive unless unreferenced (`persistent: false`, or `unref()`).
fn defaults_and_references(lp: &mut Loop) {
    assert_eq!(DEFAULT_INTERVAL, Duration::from_millis(5007));
    assert_eq!(WatchFileOptions::new().interval, DEFAULT_INTERVAL);
    assert!(WatchFileOptions::default().persistent);
    let dir = tmp();
    let path = fs_support::file_with(dir.path(), "a", b"x");
    let l = lp
        .fs()
        .watch_file(&path, WatchFileOptions::new(), |_, _, _| {})
        .unwrap();
    let w = l.watcher();
    assert!(w.has_ref(lp) && lp.alive());
    assert!(w.unref(lp));
    assert!(!w.has_ref(lp));
    // The first stat in flight still ends; then nothing keeps the loop.
    run_within(lp, Duration::from_secs(5));
    assert!(w.is_active(lp), "still polling, unreferenced");
    assert!(w.ref_(lp));
    assert!(w.has_ref(lp) && lp.alive());
    assert!(lp.fs().unwatch_file(&path, None));
    assert!(!w.is_active(lp) && !w.has_ref(lp) && !w.unref(lp));
    run_within(lp, Duration::from_secs(5));
    // persistent: false.
    let l = lp
        .fs()
        .watch_file(&path, fast().persistent(false), |_, _, _| {})
        .unwrap();
    assert!(!l.watcher().has_ref(lp));
    run_within(lp, Duration::from_secs(5));
    // Node's reference count, quirks included: a second listener counts
    // as a holder without referencing the poller again, so one `ref()`
    // does not either (Node v20: `watchFile(p, {persistent: false});
    // watchFile(p); w.ref()` lets the process exit).
    let a = lp.fs().watch_file(&path, fast(), |_, _, _| {}).unwrap();
    assert!(!a.watcher().has_ref(lp), "the poller's first options stand");
    assert!(a.watcher().ref_(lp));
    assert!(!a.watcher().has_ref(lp));
    assert!(lp.fs().unwatch_file(&path, None));
    run_within(lp, Duration::from_secs(5));
    // Two holders, one unref: still referenced (Node keeps running).
    let a = lp.fs().watch_file(&path, fast(), |_, _, _| {}).unwrap();
    let _b = lp.fs().watch_file(&path, fast(), |_, _, _| {}).unwrap();
    assert!(a.watcher().unref(lp));
    assert!(a.watcher().has_ref(lp));
    assert!(a.watcher().unref(lp));
    assert!(!a.watcher().has_ref(lp), "the second unref");
    // Removing one listener is one unref too (Node's 'clean').
    assert!(a.watcher().ref_(lp) && a.watcher().ref_(lp));
    assert!(lp.fs().unwatch_file(&path, Some(a)));
    assert!(a.watcher().has_ref(lp), "one holder left, referenced");
    assert!(lp.fs().unwatch_file(&path, None));
    run_within(lp, Duration::from_secs(5));
}

/// A listener that unwatches itself, one that panics: the poller stays
/// consistent and goes on.
fn listeners_that_unwatch_or_panic(lp: &mut Loop) {
    let dir = tmp();
    let path = dir.path().join("a");
    let log: Log = Rc::default();
    let p = path.clone();
    let l1_log = Rc::clone(&log);
    let _l1 = lp
        .fs()
        .watch_file(&path, fast(), move |lp, current, _| {
            l1_log.borrow_mut().push(format!("l1 {}", current.size));
            // The next step once this one is seen: no timing involved.
            let next = match current.size {
                0 => "x",
                1 => "xy",
                _ => {
                    assert!(lp.fs().unwatch_file(&p, None), "all, itself included");
                    return;
                }
            };
            let p = p.clone();
            lp.set_immediate(move |_| put(&p, next));
        })
        .unwrap();
    let l2_log = Rc::clone(&log);
    let _l2 = lp
        .fs()
        .watch_file(&path, fast(), move |_, current, _| {
            l2_log.borrow_mut().push(format!("l2 {}", current.size));
            if current.size == 1 {
                panic!("listener");
            }
        })
        .unwrap();
    let first = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_within(lp, Duration::from_secs(20))
    }));
    assert!(first.is_err(), "the listener's panic left run()");
    run_within(lp, Duration::from_secs(20));
    assert_eq!(
        *log.borrow(),
        ["l1 0", "l2 0", "l1 1", "l2 1", "l1 2"],
        "the poller went on after the panic, and stopped when unwatched"
    );
    assert!(!lp.alive());
}

/// A stat that fails differently is reported again; the same failure is
/// not (libuv compares the error).
fn a_path_through_a_file_fails_once(lp: &mut Loop) {
    let dir = tmp();
    let file = fs_support::file_with(dir.path(), "f", b"");
    let path = file.join("x");
    let log: Log = Rc::default();
    let mut log_it = logger(&log, "l");
    let (p, l) = (path.clone(), Rc::clone(&log));
    let _l = lp
        .fs()
        .watch_file(&path, fast(), move |lp, current, previous| {
            log_it(lp, current, previous);
            // The next step once this one is seen: no timing involved.
            if l.borrow().len() == 1 {
                std::fs::remove_file(&file).unwrap();
            } else {
                assert!(lp.fs().unwatch_file(&p, None));
            }
        })
        .unwrap();
    run_within(lp, Duration::from_secs(20));
    // ENOTDIR, then ENOENT: both have zeroed stats.
    assert_eq!(
        *log.borrow(),
        ["l 0/0/0/0/0 0/0/0/0/0", "l 0/0/0/0/0 0/0/0/0/0"]
    );
    assert_eq!(zeroed_stats().nlink, 0);
}

fn bad_arguments_are_refused(lp: &mut Loop) {
    let error = lp
        .fs()
        .watch_file("a\0b", fast(), |_, _, _| {})
        .unwrap_err();
    assert!(
        matches!(error, eventide::Error::InvalidArgValue { .. }),
        "{error}"
    );
    let error = lp
        .fs()
        .watch_file(
            Path::new("x"),
            fast().interval(Duration::from_secs(5_000_000)),
            |_, _, _| {},
        )
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "The value of \"interval\" is out of range. It must be >= 0 && <= 4294967295. \
         Received 5_000_000_000"
    );
    assert!(!lp.fs().unwatch_file("never-watched", None));
    assert!(!lp.alive());
}

on_every_backend!(
    node_sequence_with_two_listeners,
    an_unchanged_file_reports_nothing,
    defaults_and_references,
    listeners_that_unwatch_or_panic,
    a_path_through_a_file_fails_once,
    bad_arguments_are_refused,
);
