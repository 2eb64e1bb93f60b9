//! Running a loop through deliberate panics, in both of its modes.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::Once;
use std::time::Duration;

use eventide::Loop;

const LIMIT: Duration = Duration::from_secs(60);

/// What the tests' callbacks panic with.
pub const BOOM: &str = "boom (a test's deliberate panic)";

#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// A panic handler catches each panic.
    Handler,
    /// No handler: each panic unwinds out of `run`, called again.
    Unwind,
}

/// Keeps the deliberate panics quiet (thousands of them), and every other
/// panic as loud as usual.
fn quiet_booms() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() != Some(&BOOM) {
                default(info);
            }
        }));
    });
}

pub fn boom() -> ! {
    panic::panic_any(BOOM)
}

pub fn is_boom(payload: &(dyn std::any::Any + Send)) -> bool {
    payload.downcast_ref::<&str>() == Some(&BOOM)
}

/// Runs the loop to its end in `mode`; returns how many panics it went
/// through. Fails if it is still running after `LIMIT`, or on a panic
/// that is not a test's deliberate one.
pub fn run_through_panics(lp: &mut Loop, mode: Mode) -> usize {
    quiet_booms();
    let timed_out = Rc::new(Cell::new(false));
    let t = Rc::clone(&timed_out);
    let watchdog = lp.set_timeout(LIMIT, move |lp| {
        t.set(true);
        lp.stop();
    });
    lp.unref_timer(watchdog);
    let panics = Rc::new(Cell::new(0));
    match mode {
        Mode::Handler => {
            let p = Rc::clone(&panics);
            lp.set_panic_handler(move |_, payload| {
                assert!(is_boom(&*payload), "an unexpected panic");
                p.set(p.get() + 1);
            });
            lp.run().expect("the loop runs");
        }
        Mode::Unwind => loop {
            match panic::catch_unwind(AssertUnwindSafe(|| lp.run())) {
                Ok(result) => break result.expect("the loop runs"),
                Err(payload) => {
                    if !is_boom(&*payload) {
                        panic::resume_unwind(payload);
                    }
                    panics.set(panics.get() + 1);
                }
            }
        },
    }
    assert!(
        !timed_out.get(),
        "the loop was still running after its time limit"
    );
    lp.clear_timer(watchdog);
    panics.get()
}
