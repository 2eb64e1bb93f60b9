//! A panicking fs callback, or a panicking stream callback, leaves the
//! loop and the stream consistent (issue 12, point 3, the fs part): with a
//! panic handler installed (the loop goes on) and without one (the panic
//! unwinds out of `run`; `run` called again goes on and returns once
//! nothing is left). Each case on both backends, in both modes.

mod fs_support;
mod util;

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use eventide::Loop;
use eventide::fs::{ReadStreamOptions, WriteStreamOptions};
use fs_support::tmp;

const LIMIT: &str = "the loop was still running after its time limit";

fn message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "?".into()
    }
}

/// Runs the loop to its end through the callbacks' panics and returns
/// their messages: with a handler (`handled`), one `run`; without, `run`
/// again after each panic that unwinds out of it. Each `run` is bounded
/// (a loop kept alive by a leak fails, it does not hang).
fn run_through_panics(lp: &mut Loop, handled: bool) -> Vec<String> {
    let seen = Rc::new(RefCell::new(Vec::new()));
    if handled {
        let s = seen.clone();
        lp.set_panic_handler(move |_, payload| s.borrow_mut().push(message(&*payload)));
    }
    for _ in 0..10 {
        let watchdog = lp.set_timeout(Duration::from_secs(10), |_| panic!("{LIMIT}"));
        lp.unref_timer(watchdog);
        let result = panic::catch_unwind(AssertUnwindSafe(|| lp.run()));
        lp.clear_timer(watchdog);
        match result {
            Ok(ran) => {
                ran.expect("the loop runs");
                let messages = seen.borrow().clone();
                assert!(!messages.iter().any(|m| m == LIMIT), "{messages:?}");
                assert!(!lp.alive(), "nothing left once run returned");
                return messages;
            }
            Err(payload) => {
                assert!(!handled, "a handled panic never leaves run");
                let message = message(&*payload);
                assert_ne!(message, LIMIT, "the loop hung after {:?}", seen.borrow());
                seen.borrow_mut().push(message);
            }
        }
    }
    panic!("run never returned: {:?}", seen.borrow());
}

/// Plain fs callbacks that panic: one on the ring (stat, on io_uring) and
/// one on the pool (chmod, on both); the other operations, and those
/// started after the panics, complete.
fn fs_callbacks_that_panic(lp: &mut Loop, handled: bool) {
    let dir = tmp();
    let path = dir.path().join("f");
    std::fs::write(&path, b"contents").unwrap();
    let done = Rc::new(Cell::new(0));
    lp.fs().stat(&path, |_, _| panic!("boom in stat"));
    lp.fs().chmod(&path, 0o600, |_, _| panic!("boom in chmod"));
    let (d, p) = (done.clone(), path.clone());
    lp.fs().read_file(&path, move |lp, read| {
        assert_eq!(read.unwrap(), b"contents");
        d.set(d.get() + 1);
        lp.fs().stat(&p, move |_, stat| {
            assert_eq!(stat.unwrap().size, 8);
            d.set(d.get() + 1);
        });
    });
    let mut panics = run_through_panics(lp, handled);
    panics.sort();
    assert_eq!(panics, ["boom in chmod", "boom in stat"]);
    assert_eq!(done.get(), 2);
    // The loop is still fine for more.
    let d = done.clone();
    lp.fs().stat(&path, move |_, stat| {
        stat.unwrap();
        d.set(d.get() + 1);
    });
    assert!(run_through_panics(lp, handled).is_empty());
    assert_eq!(done.get(), 3);
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

/// A read stream whose `on_data` panics on the first chunk reads on: every
/// byte arrives, then the end and the close.
fn a_read_stream_whose_data_callback_panics_reads_on(lp: &mut Loop, handled: bool) {
    let dir = tmp();
    let path = dir.path().join("r");
    let data = pattern(100);
    std::fs::write(&path, &data).unwrap();
    let got = Rc::new(RefCell::new(Vec::new()));
    let events = Rc::new(RefCell::new(Vec::new()));
    let (g, e) = (got.clone(), events.clone());
    let options = ReadStreamOptions::default().high_water_mark(16);
    let stream = lp.fs().create_read_stream(
        &path,
        options,
        move |_, _, chunk| {
            let first = g.borrow().is_empty();
            g.borrow_mut().extend_from_slice(chunk);
            if first {
                panic!("boom in on_data");
            }
        },
        move |_, result| {
            result.unwrap();
            e.borrow_mut().push("end");
        },
    );
    let e = events.clone();
    stream.on_close(lp, move |_| e.borrow_mut().push("close"));
    assert_eq!(run_through_panics(lp, handled), ["boom in on_data"]);
    assert!(*got.borrow() == data, "every byte arrived");
    assert_eq!(*events.borrow(), ["end", "close"]);
    assert!(stream.file(lp).is_none(), "the file was closed");
}

/// A read stream's `on_end` that panics (after a clean end, and with an
/// error) does not lose the close callback.
fn read_stream_end_callbacks_that_panic_still_close(lp: &mut Loop, handled: bool) {
    let dir = tmp();
    let path = dir.path().join("r");
    std::fs::write(&path, b"some bytes").unwrap();
    let closed = Rc::new(Cell::new(0));
    for (name, end) in [("r", "boom in on_end"), ("missing", "boom in on_end(Err)")] {
        let stream = lp.fs().create_read_stream(
            dir.path().join(name),
            ReadStreamOptions::default(),
            |_, _, _| {},
            move |_, _| panic!("{end}"),
        );
        let c = closed.clone();
        stream.on_close(lp, move |_| c.set(c.get() + 1));
    }
    let mut panics = run_through_panics(lp, handled);
    panics.sort();
    assert_eq!(panics, ["boom in on_end", "boom in on_end(Err)"]);
    assert_eq!(closed.get(), 2, "both closed");
}

fn write_stream(lp: &mut Loop, path: &Path, on_drain_panics: bool) -> eventide::fs::WriteStream {
    let options = WriteStreamOptions::default().high_water_mark(16);
    lp.fs().create_write_stream(path, options, move |_, _| {
        if on_drain_panics {
            panic!("boom in on_drain");
        }
    })
}

/// A write stream whose `on_drain` panics goes on: what was queued is
/// written, `end` finishes, the close callback runs.
fn a_write_stream_whose_drain_callback_panics_writes_on(lp: &mut Loop, handled: bool) {
    let dir = tmp();
    let path = dir.path().join("w");
    let stream = write_stream(lp, &path, true);
    assert!(stream.write(lp, b"0123456789".to_vec()));
    assert!(!stream.write(lp, b"abcdefghij".to_vec()), "over the mark");
    let events = Rc::new(RefCell::new(Vec::new()));
    let e = events.clone();
    stream.end(lp, move |_, result| {
        result.unwrap();
        e.borrow_mut().push("finish");
    });
    let e = events.clone();
    stream.on_close(lp, move |_| e.borrow_mut().push("close"));
    assert_eq!(run_through_panics(lp, handled), ["boom in on_drain"]);
    assert_eq!(std::fs::read(&path).unwrap(), b"0123456789abcdefghij");
    assert_eq!(*events.borrow(), ["finish", "close"]);
}

/// A write stream's `end` callback that panics does not lose the close
/// callback.
fn a_write_stream_end_callback_that_panics_still_closes(lp: &mut Loop, handled: bool) {
    let dir = tmp();
    let path = dir.path().join("w");
    let stream = write_stream(lp, &path, false);
    stream.write(lp, b"data".to_vec());
    stream.end(lp, |_, _| panic!("boom in end"));
    let closed = Rc::new(Cell::new(false));
    let c = closed.clone();
    stream.on_close(lp, move |_| c.set(true));
    assert_eq!(run_through_panics(lp, handled), ["boom in end"]);
    assert!(closed.get());
    assert_eq!(std::fs::read(&path).unwrap(), b"data");
}

/// Instantiates each scenario per backend and per mode.
macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        mod uring {
            $(
                pub(crate) mod $name {
                    #[test]
                    fn with_a_panic_handler() {
                        if let Some(mut lp) = crate::util::new_loop(eventide::BackendKind::Uring) {
                            crate::$name(&mut lp, true);
                        }
                    }
                    #[test]
                    fn unwinding_out_of_run() {
                        if let Some(mut lp) = crate::util::new_loop(eventide::BackendKind::Uring) {
                            crate::$name(&mut lp, false);
                        }
                    }
                }
            )*
        }
        mod poll {
            $(
                pub(crate) mod $name {
                    #[test]
                    fn with_a_panic_handler() {
                        if let Some(mut lp) = crate::util::new_loop(eventide::BackendKind::Poll) {
                            crate::$name(&mut lp, true);
                        }
                    }
                    #[test]
                    fn unwinding_out_of_run() {
                        if let Some(mut lp) = crate::util::new_loop(eventide::BackendKind::Poll) {
                            crate::$name(&mut lp, false);
                        }
                    }
                }
            )*
        }
    };
}

cases!(
    fs_callbacks_that_panic,
    a_read_stream_whose_data_callback_panics_reads_on,
    read_stream_end_callbacks_that_panic_still_close,
    a_write_stream_whose_drain_callback_panics_writes_on,
    a_write_stream_end_callback_that_panics_still_closes,
);

/// The io_uring cases again with every file operation on the pool (the
/// route whose completions are pool work).
#[test]
fn the_same_cases_pass_with_every_op_on_the_pool() {
    fs_support::rerun_uring_cases_on_the_pool();
}
