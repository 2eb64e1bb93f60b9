//! W6 (pool-throughput) at the pool level, at the contract's full size:
//! 1,000,000 trivial jobs, completions consumed by one thread, for
//! eventide-pool and the libuv-structured mutex pool, alternating, several
//! runs each; then the CPU an idle, started eventide pool burns in 2 s.
//!
//!     cargo run --release -p eventide-benches --example w6_pool -- [RUNS] [N]
//!
//! `W6_ONLY=eventide-pool` (or `mutex-pool`) runs one pool alone, for
//! profiling.
//!
//! Prints one `RESULT` line per pool (the median run), then the ratio and
//! the idle CPU figure.

#[path = "../benches/w6/mod.rs"]
mod w6;

use std::time::Duration;

/// This process's CPU time, summed over its threads from
/// `/proc/self/task/*/schedstat` (nanoseconds; `/proc/self/stat` counts in
/// 10 ms ticks, too coarse for an idle pool).
fn process_cpu() -> Duration {
    let tasks = std::fs::read_dir("/proc/self/task").expect("Linux /proc");
    let nanos = tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

fn arg(position: usize, default: usize) -> usize {
    std::env::args()
        .nth(position)
        .map(|value| value.parse().expect("RUNS and N are whole numbers"))
        .unwrap_or(default)
}

fn median(mut rates: Vec<f64>) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

fn rate(n: usize, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64()
}

fn main() {
    let runs = arg(1, 5);
    let n = arg(2, 1_000_000);
    let slots = w6::slots(n);
    let mut eventide = w6::EventidePool::new();
    let mut mutex = w6::MutexBaseline::new();
    let (mut eventide_rates, mut mutex_rates) = (Vec::new(), Vec::new());
    let only = std::env::var("W6_ONLY").unwrap_or_default();
    for run in 0..runs {
        let e = match only.as_str() {
            "mutex-pool" => f64::NAN,
            _ => rate(n, w6::timed(n, || eventide.run(slots, n))),
        };
        let m = match only.as_str() {
            "eventide-pool" => f64::NAN,
            _ => rate(n, w6::timed(n, || mutex.run(slots, n))),
        };
        eprintln!(
            "run {run}: eventide-pool {e:.0}/s, mutex-pool {m:.0}/s, ratio {:.2}",
            e / m
        );
        eventide_rates.push(e);
        mutex_rates.push(m);
    }
    drop(mutex);
    let (e, m) = (median(eventide_rates), median(mutex_rates));
    for (system, value) in [("eventide-pool", e), ("mutex-pool", m)] {
        println!(
            "RESULT workload=W6 system={system} metric=items_per_s value={value:.0} n={n} runs={runs}"
        );
    }
    println!("ratio eventide-pool/mutex-pool = {:.2} (medians)", e / m);
    let before = process_cpu();
    std::thread::sleep(Duration::from_secs(2));
    let idle = process_cpu() - before;
    println!("idle: started eventide pool of 4 threads, process CPU over 2 s = {idle:?}");
    println!("(the measuring thread's own sleep and wake-up are included)");
    drop(eventide);
}
