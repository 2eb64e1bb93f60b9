//! W1, W2 and W2b at the timer-store level: eventide's wheel against a
//! libuv-style binary heap on the same work (`eventide_benches::timer_work`).
//!
//! Each workload runs twice per store: *warm* (one store reused across
//! iterations, as an event loop's is: the figure of merit) and *cold* (a
//! fresh store each iteration, so slab growth and page faults are counted).
//!
//! Run: `cargo bench -p eventide-benches --bench timers`.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use eventide_benches::heap::HeapTimers;
use eventide_benches::timer_work::{
    W2B_PASSES, W2B_TIMERS, w1_heap, w1_wheel, w2_heap, w2_wheel, w2b_heap, w2b_wheel,
};
use eventide_timer::Wheel;

/// The contract's N for W1 and W2.
const N: u64 = 1_000_000;

fn w1_timers_fire(c: &mut Criterion) {
    let mut group = c.benchmark_group("W1-timers-fire");
    group.throughput(Throughput::Elements(N));
    let mut wheel = Wheel::new();
    group.bench_function("wheel", |b| b.iter(|| w1_wheel(&mut wheel, N)));
    let mut heap = HeapTimers::default();
    group.bench_function("heap", |b| b.iter(|| w1_heap(&mut heap, N)));
    group.bench_function("wheel-cold", |b| b.iter(|| w1_wheel(&mut Wheel::new(), N)));
    group.bench_function("heap-cold", |b| {
        b.iter(|| w1_heap(&mut HeapTimers::default(), N))
    });
    group.finish();
}

fn w2_timers_cancel(c: &mut Criterion) {
    let mut group = c.benchmark_group("W2-timers-cancel");
    group.throughput(Throughput::Elements(N));
    let (mut wheel, mut wheel_keys) = (Wheel::new(), Vec::new());
    group.bench_function("wheel", |b| {
        b.iter(|| w2_wheel(&mut wheel, &mut wheel_keys, N as _))
    });
    let (mut heap, mut heap_keys) = (HeapTimers::default(), Vec::new());
    group.bench_function("heap", |b| {
        b.iter(|| w2_heap(&mut heap, &mut heap_keys, N as _))
    });
    group.bench_function("wheel-cold", |b| {
        b.iter(|| w2_wheel(&mut Wheel::new(), &mut Vec::new(), N as _))
    });
    group.bench_function("heap-cold", |b| {
        b.iter(|| w2_heap(&mut HeapTimers::default(), &mut Vec::new(), N as _))
    });
    group.finish();
}

fn w2b_timers_rearm(c: &mut Criterion) {
    let mut group = c.benchmark_group("W2b-timers-rearm");
    group.throughput(Throughput::Elements(W2B_TIMERS as u64 * W2B_PASSES));
    let (mut wheel, mut wheel_keys) = (Wheel::new(), Vec::new());
    group.bench_function("wheel", |b| {
        b.iter(|| w2b_wheel(&mut wheel, &mut wheel_keys))
    });
    let (mut heap, mut heap_keys) = (HeapTimers::default(), Vec::new());
    group.bench_function("heap", |b| b.iter(|| w2b_heap(&mut heap, &mut heap_keys)));
    group.bench_function("wheel-cold", |b| {
        b.iter(|| w2b_wheel(&mut Wheel::new(), &mut Vec::new()))
    });
    group.bench_function("heap-cold", |b| {
        b.iter(|| w2b_heap(&mut HeapTimers::default(), &mut Vec::new()))
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
}

criterion_group! {
    name = timers;
    config = config();
    targets = w1_timers_fire, w2_timers_cancel, w2b_timers_rearm
}
criterion_main!(timers);
