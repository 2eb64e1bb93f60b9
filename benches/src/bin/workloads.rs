//! The workloads runner: one workload of the benchmark contract
//! (`shared/bench/WORKLOADS.md`) per call, through eventide's public API,
//! printing exactly one `RESULT` line on stdout (everything else on stderr).
//!
//! ```text
//! cargo run --release -p eventide-benches --bin workloads -- W1 --backend uring
//! ```
//!
//! W1, W2, W2b, W3, W4, W4-async, W6, W7, W8 and W9 run whole here; for W5 and W10,
//! which need the anchors' load generator, `echo-server` is the server
//! their harness drives, and `echo-server --loops 2` W14's
//! (`benches/run-scaling.sh`).

#[path = "workloads/common.rs"]
mod common;
#[path = "workloads/dispatch.rs"]
mod dispatch;
#[path = "workloads/fs.rs"]
mod fs;
#[cfg(target_os = "linux")]
#[path = "workloads/fs_raw.rs"]
mod fs_raw;
#[path = "workloads/net.rs"]
mod net;
#[path = "workloads/net_async.rs"]
mod net_async;
#[path = "workloads/pool.rs"]
mod pool;
#[path = "workloads/post.rs"]
mod post;
#[path = "workloads/process.rs"]
mod process;
#[path = "workloads/timers.rs"]
mod timers;

use std::process::ExitCode;
use std::time::Duration;

use eventide::{BackendChoice, BackendKind};

use crate::common::Run;

const USAGE: &str = "\
usage: workloads <WORKLOAD> [--backend uring|epoll|poll|auto]
       workloads echo-server [--backend uring|epoll|poll|auto] [--loops N [--pin]] PORT LIFETIME_S

workloads (shared/bench/WORKLOADS.md):
  W1   timers-fire         1M one-shot timers, run until all fired (CPU s)
  W2   timers-cancel       1M starts then 1M cancels (ns per pair, cpu_ns=)
  W2b  timers-rearm        10,000 timers re-armed 100 times each (ns per re-arm)
  W3   dispatch            a 10M setImmediate chain (ns per callback)
  W4   tcp-pingpong        64 bytes there and back over one 127.0.0.1
                           connection, both ends on one loop, 5 s (round trips/s)
  W4-async                 W4 with async/await: both ends tasks on the loop's
                           executor, through task::net::AsyncStream
  W6   pool-throughput     1M queue_work items on 4 pool threads (items/s)
  W7   cross-thread-post   1M LoopHandle posts from a foreign thread (msgs/s)
  W8   fs-read-small       read_file of 10,000 files of 4 KiB, 64 in flight (files/s)
  W9   fs-stat             100,000 stats over those files, 64 in flight (stats/s)
  W11  spawn               /bin/true 2,000 times, 8 alive at once (spawns/s)
  W12  pipe                1 GiB through a cat child, every byte checked (MB/s)
  W12-blocking             W12 without a loop: one thread, blocking write and
                           read of each 64 KiB chunk (system=blocking)
  W8-raw SHAPE             W8's files, the same setup, read on raw io_uring
                           without eventide (Linux): SHAPE 3op (the anchors'
                           floor: open, read, close; a short read is the end),
                           probe (eventide's requests: a NOWAIT read hard-linked
                           to a probe read that proves the end) or probe-direct
                           (the same on direct descriptors)
  echo-server PORT LIFETIME_S
                           the W5/W10 echo server on 127.0.0.1:PORT, for the
                           anchors' harness (anchors/io/run, system 'custom');
                           exits by itself after LIFETIME_S seconds; with
                           --loops N (W14), N loops on N threads, each with
                           its own listener on the port (SO_REUSEPORT); --pin:
                           loop i only on the i-th CPU the process may use

--backend: the reactor backend (default auto: io_uring if allowed, else
epoll, else poll).
Prints one RESULT line on stdout; exits 1 if the workload's self-check fails,
2 on a usage error.";

/// `W8-raw SHAPE` (see `fs_raw`).
#[cfg(target_os = "linux")]
fn w8_raw(positional: &[String], backend: BackendChoice) -> ExitCode {
    let [_, shape] = positional else {
        return usage_error("W8-raw needs one SHAPE: 3op, probe or probe-direct");
    };
    let Some(shape) = fs_raw::Shape::parse(shape) else {
        return usage_error(&format!(
            "unknown W8-raw shape '{shape}' (3op, probe or probe-direct)"
        ));
    };
    let mut run = Run::new("W8".to_owned(), backend);
    fs_raw::w8_raw(&mut run, shape);
    ExitCode::SUCCESS
}

/// `W8-raw` talks to io_uring, which only Linux has.
#[cfg(not(target_os = "linux"))]
fn w8_raw(_: &[String], _: BackendChoice) -> ExitCode {
    usage_error("W8-raw needs Linux (io_uring)")
}

/// A usage error: the message, then the usage text, on stderr; exit 2.
fn usage_error(message: &str) -> ExitCode {
    eprintln!("workloads: {message}\n\n{USAGE}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut positional: Vec<String> = Vec::new();
    let mut backend = BackendChoice::Auto;
    let mut loops: Option<usize> = None;
    let mut pin = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--pin" {
            pin = true;
            continue;
        }
        if arg == "--loops" || arg.starts_with("--loops=") {
            let value = match arg.strip_prefix("--loops=") {
                Some(value) => value.to_owned(),
                None => match args.next() {
                    Some(value) => value,
                    None => return usage_error("--loops needs a count"),
                },
            };
            match value.parse::<usize>() {
                Ok(n) if n >= 1 => loops = Some(n),
                _ => return usage_error(&format!("bad --loops '{value}' (a count >= 1)")),
            }
            continue;
        }
        let value = match arg.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "--backend" => match args.next() {
                Some(value) => value,
                None => return usage_error("--backend needs a value: uring, epoll, poll or auto"),
            },
            other if other.starts_with("--backend=") => other["--backend=".len()..].to_owned(),
            other if other.starts_with('-') => {
                return usage_error(&format!("unknown flag '{other}'"));
            }
            other => {
                positional.push(other.to_owned());
                continue;
            }
        };
        backend = match value.as_str() {
            "uring" => BackendChoice::Only(BackendKind::Uring),
            "epoll" => BackendChoice::Only(BackendKind::Epoll),
            "poll" => BackendChoice::Only(BackendKind::Poll),
            "auto" => BackendChoice::Auto,
            other => {
                return usage_error(&format!(
                    "unknown backend '{other}' (uring, epoll, poll or auto)"
                ));
            }
        };
    }
    let Some(workload) = positional.first().cloned() else {
        return usage_error("no workload given");
    };
    if workload.eq_ignore_ascii_case("echo-server") {
        let [_, port, lifetime] = positional.as_slice() else {
            return usage_error("echo-server needs PORT and LIFETIME_S");
        };
        let Ok(port) = port.parse::<u16>() else {
            return usage_error(&format!("bad PORT '{port}'"));
        };
        let lifetime = match lifetime.parse::<f64>() {
            Ok(secs) if secs.is_finite() && secs > 0.0 => Duration::from_secs_f64(secs),
            _ => return usage_error(&format!("bad LIFETIME_S '{lifetime}'")),
        };
        let loops = loops.unwrap_or(1);
        // Several loops share one pool (none of them uses it here, but N
        // loops need not mean 4N threads).
        let pool = if loops > 1 {
            match eventide::SharedPool::new(common::POOL_THREADS) {
                Ok(pool) => Some(pool),
                Err(error) => {
                    eprintln!("FAIL workload=echo-server: cannot start the shared pool: {error}");
                    return ExitCode::FAILURE;
                }
            }
        } else {
            None
        };
        let mut run = Run::with_pool("echo-server".to_owned(), backend, pool.clone());
        net::echo_server(&mut run, port, lifetime, loops, pin, pool);
        return ExitCode::SUCCESS;
    }
    if loops.is_some() || pin {
        return usage_error("--loops and --pin are for echo-server only");
    }
    if workload.eq_ignore_ascii_case("W8-raw") {
        return w8_raw(&positional, backend);
    }
    if let Some(extra) = positional.get(1) {
        return usage_error(&format!(
            "one workload per call: got '{workload}' and '{extra}'"
        ));
    }
    let body: fn(&mut Run) = match workload.to_ascii_uppercase().as_str() {
        "W1" => timers::w1_timers_fire,
        "W2" => timers::w2_timers_cancel,
        "W2B" => timers::w2b_timers_rearm,
        "W3" => dispatch::w3_dispatch,
        "W4" => net::w4_tcp_pingpong,
        "W4-ASYNC" => net_async::w4_async_pingpong,
        "W6" => pool::w6_pool_throughput,
        "W7" => post::w7_cross_thread_post,
        "W8" => fs::w8_fs_read_small,
        "W9" => fs::w9_fs_stat,
        "W11" => process::w11_spawn,
        "W12" => process::w12_pipe,
        "W12-BLOCKING" => process::w12_blocking,
        "W5" | "W10" => {
            return usage_error(&format!(
                "{workload} needs the anchors' load generator: run `workloads echo-server` \
                 under anchors/io/run (see shared/bench/WORKLOADS.md)"
            ));
        }
        _ => return usage_error(&format!("unknown workload '{workload}'")),
    };
    let name = match workload.to_ascii_uppercase().as_str() {
        "W2B" => "W2b".to_owned(),
        "W12-BLOCKING" => "W12".to_owned(),
        "W4-ASYNC" => "W4-async".to_owned(),
        upper => upper.to_owned(),
    };
    let mut run = Run::new(name, backend);
    body(&mut run);
    ExitCode::SUCCESS
}
