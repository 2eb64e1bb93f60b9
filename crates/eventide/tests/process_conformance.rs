//! Node-recorded orderings of a child's events (`'exit'`, its stdio's
//! data and end, `'close'`), ported from `tests/conformance/process-*.js`
//! with the traces Node v20 printed, on every compiled backend.

mod process_support;
mod util;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use eventide::Loop;
use eventide::process::{ExitStatus, SpawnOptions, Stdio};
use util::{Trace, run_within};

const LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The trace Node recorded for `case`, from `tests/conformance/`.
fn recorded(case: &str) -> Vec<String> {
    let path = format!(
        "{}/tests/conformance/{case}.expected",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines().map(str::to_owned).collect()
}

/// Node's `code + ' ' + signal` of `'exit'` and `'close'`.
fn node_args(st: ExitStatus) -> String {
    let code = st.code.map_or("null".to_owned(), |c| c.to_string());
    let signal = st.signal_name().unwrap_or("null");
    format!("{code} {signal}")
}

fn process_1_exit_before_late_output(lp: &mut Loop) {
    let trace = Trace::default();
    let t = trace.clone();
    let opts = SpawnOptions::new("sh")
        .args(["-c", "(sleep 0.3; echo late) & exit 0"])
        .stdin(Stdio::Ignore)
        .stdout(Stdio::Pipe)
        .stderr(Stdio::Ignore);
    let child = lp
        .spawn(opts, move |_, st| t.log(format!("exit {}", node_args(st))))
        .unwrap();
    let (t1, t2) = (trace.clone(), trace.clone());
    child.stdout().unwrap().read_start(
        lp,
        move |_, _, d| {
            let text = String::from_utf8_lossy(d).replace('\n', "\\n");
            t1.log(format!("data \"{text}\""));
        },
        move |_, _, end| {
            end.unwrap();
            t2.log("stdout end");
        },
    );
    let t = trace.clone();
    child.on_close(move |_, st| t.log(format!("close {}", node_args(st))));
    run_within(lp, LIMIT);
    assert_eq!(
        trace.tokens(),
        recorded("process-1-exit-before-late-output")
    );
}

fn process_2_killed_close_after_both_ends(lp: &mut Loop) {
    let trace = Trace::default();
    let ends = Rc::new(Cell::new(0));
    let exited = Rc::new(Cell::new(false));
    let opts = SpawnOptions::new("sleep")
        .arg("10")
        .stdin(Stdio::Ignore)
        .stdout(Stdio::Pipe)
        .stderr(Stdio::Pipe);
    let (t, x) = (trace.clone(), Rc::clone(&exited));
    let child = lp
        .spawn(opts, move |_, st| {
            x.set(true);
            t.log(format!("exit {}", node_args(st)));
        })
        .unwrap();
    for pipe in [child.stdout().unwrap(), child.stderr().unwrap()] {
        let e = Rc::clone(&ends);
        pipe.read_start(lp, |_, _, _| {}, move |_, _, _| e.set(e.get() + 1));
    }
    let (t, e, x) = (trace.clone(), Rc::clone(&ends), Rc::clone(&exited));
    child.on_close(move |_, st| {
        t.log(format!(
            "close {} ends={} exited={}",
            node_args(st),
            e.get(),
            x.get()
        ));
    });
    child.kill(libc::SIGKILL).unwrap();
    run_within(lp, LIMIT);
    assert_eq!(
        trace.tokens(),
        recorded("process-2-killed-close-after-both-ends")
    );
}

fn process_3_stdin_through_cat(lp: &mut Loop) {
    let trace = Trace::default();
    let out = Rc::new(RefCell::new(Vec::new()));
    let exited = Rc::new(Cell::new(false));
    let opts = SpawnOptions::new("sort")
        .stdin(Stdio::Pipe)
        .stdout(Stdio::Pipe);
    let x = Rc::clone(&exited);
    let child = lp.spawn(opts, move |_, _| x.set(true)).unwrap();
    let o = Rc::clone(&out);
    child.stdout().unwrap().read_start(
        lp,
        move |_, _, d| o.borrow_mut().extend_from_slice(d),
        |_, _, _| {},
    );
    let (t, o, x) = (trace.clone(), Rc::clone(&out), Rc::clone(&exited));
    child.on_close(move |_, st| {
        let out = String::from_utf8(o.borrow().clone()).unwrap();
        for l in out.lines().filter(|l| !l.is_empty()) {
            t.log(format!("line {l}"));
        }
        t.log(format!("close {} exited={}", node_args(st), x.get()));
    });
    let stdin = child.stdin().unwrap();
    stdin.write(lp, b"pear\napple\n", |_, r| r.unwrap());
    stdin.write(lp, b"fig\n", |_, r| r.unwrap());
    stdin.end(lp);
    run_within(lp, LIMIT);
    assert_eq!(trace.tokens(), recorded("process-3-stdin-through-cat"));
}

on_every_backend!(
    process_1_exit_before_late_output,
    process_2_killed_close_after_both_ends,
    process_3_stdin_through_cat,
);

/// This binary again, with exits watched the `SIGCHLD` way (the
/// fallback where there is no `pidfd_open`; `EVENTIDE_NO_PIDFD=1`).
#[test]
fn whole_binary_again_without_pidfd() {
    if process_support::forced_sigchld() {
        return;
    }
    process_support::rerun_without_pidfd("whole_binary_again_without_pidfd", 9);
}
