//! An idle pool sleeps: its started workers burn no CPU.
//!
//! Alone in its test binary, so that the process CPU time it reads is the
//! pool's and this test's only.

#![cfg(not(loom))]

mod util;

use std::time::Duration;

use util::{collect, job};

/// This process's user + system CPU time, from `/proc/self/stat`.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("Linux /proc");
    let after_name = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of stat(5), utime and stime, counted after the name.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

#[test]
fn a_started_idle_pool_burns_no_cpu() {
    let (pool, mut completions, signal) = util::pool::<()>(4);
    pool.submit(job(|| ()));
    collect(&mut completions, &signal, 1);
    assert_eq!(pool.started_threads(), 4);
    let before = process_cpu();
    std::thread::sleep(Duration::from_millis(500));
    let spent = process_cpu() - before;
    // Four spinning workers would spend about 1 s of CPU here (2 cores);
    // sleeping ones spend nothing measurable at the 10 ms tick.
    assert!(
        spent <= Duration::from_millis(50),
        "idle pool spent {spent:?} of CPU"
    );
}
