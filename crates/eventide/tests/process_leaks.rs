//! 1,000 spawns leave the process's descriptors and memory where they
//! were, and no zombie, on every backend. Alone in its test binary, and
//! the backends one at a time: it measures the whole process.

mod process_support;
mod util;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Mutex;
use std::time::Duration;

use eventide::Loop;
use eventide::process::{SpawnOptions, Stdio};
use util::run_within;

const LIMIT: Duration = Duration::from_secs(60);

/// One backend at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// The open descriptors and resident memory of this process.
fn fds_and_rss() -> (usize, usize) {
    let fds = std::fs::read_dir("/proc/self/fd").unwrap().count();
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    (fds, pages * 4096)
}

/// 1,000 spawns of `/bin/true` (8 at a time, with stdout piped) leave the
/// process's descriptor count where it was and its RSS within 8 MiB of
/// where it was after a warm-up (the allocator keeps some memory), and
/// no child unreaped.
fn thousand_spawns_leak_nothing(lp: &mut Loop) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    type Pids = Rc<RefCell<Vec<u32>>>;
    fn start(lp: &mut Loop, left: Rc<Cell<usize>>, done: Rc<Cell<usize>>, pids: Pids) {
        if left.get() == 0 {
            return;
        }
        left.set(left.get() - 1);
        let opts = SpawnOptions::new("/bin/true").stdout(Stdio::Pipe);
        let p = Rc::clone(&pids);
        let child = lp
            .spawn(opts, move |lp, st| {
                assert!(st.success());
                done.set(done.get() + 1);
                start(lp, left, done, p);
            })
            .unwrap();
        pids.borrow_mut().push(child.pid());
        child
            .stdout()
            .unwrap()
            .read_start(lp, |_, _, _| {}, |_, _, _| {});
    }
    let pids: Pids = Rc::default();
    let round = |lp: &mut Loop, n: usize| {
        let left = Rc::new(Cell::new(n));
        let done = Rc::new(Cell::new(0));
        for _ in 0..8 {
            start(lp, Rc::clone(&left), Rc::clone(&done), Rc::clone(&pids));
        }
        run_within(lp, LIMIT);
        assert_eq!(done.get(), n);
    };
    round(lp, 50);
    let (fds0, rss0) = fds_and_rss();
    round(lp, 1000);
    let (fds1, rss1) = fds_and_rss();
    assert!(fds1 <= fds0, "descriptors {fds0} -> {fds1}");
    assert!(
        rss1 <= rss0 + (8 << 20),
        "RSS {rss0} -> {rss1} after 1,000 spawns"
    );
    // No zombie: every child this loop made was reaped (a zombie keeps its
    // /proc entry, in state Z, with this process as its parent; a pid
    // reused since by another process has another parent or state).
    let me = std::process::id().to_string();
    let zombies: Vec<u32> = pids
        .borrow()
        .iter()
        .copied()
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let after = stat.rsplit(')').next().unwrap_or("");
            let f: Vec<&str> = after.split_whitespace().collect();
            f.first() == Some(&"Z") && f.get(1) == Some(&me.as_str())
        })
        .collect();
    assert_eq!(zombies, Vec::<u32>::new());
}

on_every_backend!(thousand_spawns_leak_nothing);

/// This binary again, with exits watched the `SIGCHLD` way (the
/// fallback where there is no `pidfd_open`; `EVENTIDE_NO_PIDFD=1`).
#[test]
fn whole_binary_again_without_pidfd() {
    if process_support::forced_sigchld() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    process_support::rerun_without_pidfd("whole_binary_again_without_pidfd", 3);
}
