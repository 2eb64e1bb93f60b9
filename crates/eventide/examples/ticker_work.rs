//! An interval ticking on the loop thread while the pool computes: the
//! primes below LIMIT are counted by trial division in JOBS ranges, each a
//! job on the pool (`queue_work`); each result comes back as a callback on
//! the loop; when the last one is in, the interval is cleared, the total
//! printed, and `run()` returns, nothing being left to do.
//!
//!     cargo run --release --example ticker_work
//!     cargo run --example ticker_work -- [LIMIT [PERIOD_MS]]
//!
//! LIMIT is 10,000,000 by default (664,579 primes: about 2 s of CPU in a
//! debug build, shared by the pool's 4 threads), PERIOD_MS 100. Every
//! line starts with the loop's time (`lp.now()`, milliseconds since the
//! loop was made). A usage error exits with 2.

use std::process::ExitCode;
use std::time::Duration;

use eventide::{Loop, TimerId};

/// How many jobs the range is cut into.
const JOBS: u64 = 8;

/// The program's state, on the loop (`lp.insert_state`).
struct Progress {
    ticker: TimerId,
    ticks: u32,
    jobs_done: u64,
    primes: u64,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize, default: u64| args.get(i).map_or(Ok(default), |a| a.parse::<u64>());
    let (Ok(limit), Ok(period), true) = (number(0, 10_000_000), number(1, 100), args.len() <= 2)
    else {
        eprintln!("usage: ticker_work [LIMIT [PERIOD_MS]]");
        return ExitCode::from(2);
    };
    match ticker_work(limit, Duration::from_millis(period)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn ticker_work(limit: u64, period: Duration) -> eventide::Result<()> {
    let mut lp = Loop::new()?;
    let ticker = lp.set_interval(period, |lp, _| {
        let now = lp.now().as_millis();
        let progress = lp.state_mut::<Progress>().expect("inserted below");
        progress.ticks += 1;
        println!(
            "{now:>5} ms  tick {} ({} of {JOBS} jobs done)",
            progress.ticks, progress.jobs_done
        );
    });
    lp.insert_state(Progress {
        ticker,
        ticks: 0,
        jobs_done: 0,
        primes: 0,
    });
    for job in 0..JOBS {
        let range = (limit * job / JOBS, limit * (job + 1) / JOBS);
        lp.queue_work(
            move || count_primes(range.0, range.1),
            move |lp, counted| {
                // A job that panicked (it cannot here) would end `run()`.
                let counted = match counted {
                    Ok(counted) => counted,
                    Err(error) => return lp.fail(error),
                };
                let now = lp.now().as_millis();
                let progress = lp.state_mut::<Progress>().expect("inserted above");
                progress.jobs_done += 1;
                progress.primes += counted;
                println!(
                    "{now:>5} ms  {counted} primes in [{}, {})",
                    range.0, range.1
                );
                if progress.jobs_done == JOBS {
                    let (ticker, ticks, primes) =
                        (progress.ticker, progress.ticks, progress.primes);
                    lp.clear_timer(ticker);
                    println!("{now:>5} ms  {primes} primes below {limit} ({ticks} ticks)");
                }
            },
        );
    }
    println!(
        "{:>5} ms  {JOBS} jobs queued on the pool",
        lp.now().as_millis()
    );
    lp.run()
}

/// The primes in `[from, to)`, by trial division: slow on purpose.
fn count_primes(from: u64, to: u64) -> u64 {
    (from..to).filter(|&n| is_prime(n)).count() as u64
}

fn is_prime(n: u64) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n.is_multiple_of(2) {
        return false;
    }
    let mut divisor = 3;
    while divisor * divisor <= n {
        if n.is_multiple_of(divisor) {
            return false;
        }
        divisor += 2;
    }
    true
}
