//! W11 (shared/bench/WORKLOADS.md) on tokio: `tokio::process::Command`
//! `/bin/true` 2,000 times, at most 8 alive (8 tasks on a current-thread
//! runtime), stdio null, each exit checked for code 0.

use std::cell::Cell;
use std::process::Stdio;
use std::rc::Rc;
use std::time::Instant;

use process_peers_tokio::{cpu_s, fail, rss_mb, since};

const SPAWNS: usize = 2000;
const PARALLEL: usize = 8;

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    let c0 = cpu_s();
    let t0 = Instant::now();
    let left = Rc::new(Cell::new(SPAWNS));
    local.block_on(&rt, async {
        let mut tasks = Vec::new();
        for _ in 0..PARALLEL {
            let left = Rc::clone(&left);
            tasks.push(tokio::task::spawn_local(async move {
                let mut n = 0;
                while left.get() > 0 {
                    left.set(left.get() - 1);
                    let status = tokio::process::Command::new("/bin/true")
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .await
                        .unwrap_or_else(|e| fail("W11", e));
                    if !status.success() {
                        fail("W11", format!("exit {status}"));
                    }
                    n += 1;
                }
                n
            }));
        }
        let mut done = 0;
        for t in tasks {
            done += t.await.unwrap();
        }
        if done != SPAWNS {
            fail("W11", format!("{done} of {SPAWNS}"));
        }
    });
    let wall = since(t0);
    println!(
        "RESULT workload=W11 system=tokio metric=spawns_per_s value={:.1} n={SPAWNS} wall_s={wall:.3} cpu_s={:.3} rss_mb={:.1}",
        SPAWNS as f64 / wall,
        cpu_s() - c0,
        rss_mb()
    );
}
