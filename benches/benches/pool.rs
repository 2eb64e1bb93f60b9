//! Criterion bench for W6 (pool-throughput) at the pool level: eventide-pool
//! against the libuv-structured mutex pool, on the same work.
//!
//! `W6_N` sets the items per iteration (default 100,000, to keep criterion
//! runs short); `cargo run --release -p eventide-benches --example w6_pool`
//! runs the contract's full 1,000,000 once per pool.
//!
//!     cargo bench -p eventide-benches --bench pool

mod w6;

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn items_per_iteration() -> usize {
    std::env::var("W6_N")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000)
}

fn w6(c: &mut Criterion) {
    let n = items_per_iteration();
    let slots = w6::slots(n);
    let mut group = c.benchmark_group("W6");
    group.throughput(Throughput::Elements(n as u64));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(10));
    let mut eventide = w6::EventidePool::new();
    group.bench_function("eventide-pool", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| w6::timed(n, || eventide.run(slots, n)))
                .sum()
        })
    });
    let mut mutex = w6::MutexBaseline::new();
    group.bench_function("mutex-pool", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| w6::timed(n, || mutex.run(slots, n)))
                .sum()
        })
    });
    group.finish();
}

criterion_group!(benches, w6);
criterion_main!(benches);
