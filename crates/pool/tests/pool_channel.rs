//! `channel` (a completion queue fed from any thread) and
//! `PoolBuilder::discard_results` (a pool whose jobs deliver their own
//! results): the pieces a pool shared by several event loops is made of.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use eventide_pool::{JobError, PoolBuilder, channel};

#[test]
fn a_channel_hands_out_what_any_thread_completes_and_notifies_once_per_batch() {
    let notified = Arc::new(AtomicUsize::new(0));
    let n = Arc::clone(&notified);
    let (completer, mut completions) = channel::<u32>(move || {
        n.fetch_add(1, Ordering::SeqCst);
    });
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let completer = completer.clone();
            std::thread::spawn(move || {
                for i in 0..100 {
                    completer.complete(t * 100 + i, Ok(i as u32));
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    completer.complete(1_000, Err(JobError::ShutDown));
    // However many deliveries, one notification until a drain.
    assert_eq!(notified.load(Ordering::SeqCst), 1);
    assert!(completions.is_due());
    let mut got = Vec::new();
    completions.drain(|handle, result| got.push((handle.id(), result)));
    assert_eq!(got.len(), 401);
    let mut ids: Vec<u64> = got.iter().map(|(id, _)| *id).collect();
    ids.sort_unstable();
    let mut expected: Vec<u64> = (0..400).collect();
    expected.push(1_000);
    assert_eq!(ids, expected);
    assert!(got.contains(&(1_000, Err(JobError::ShutDown))));
    assert!(got.contains(&(399, Ok(99))));
    // After a drain the next delivery notifies again.
    completer.complete(7, Ok(7));
    assert_eq!(notified.load(Ordering::SeqCst), 2);
}

#[test]
fn a_pool_that_discards_results_runs_its_jobs_and_queues_nothing() {
    let notified = Arc::new(AtomicUsize::new(0));
    let n = Arc::clone(&notified);
    let (pool, mut completions) = PoolBuilder::new()
        .threads(2)
        .notifier(move || {
            n.fetch_add(1, Ordering::SeqCst);
        })
        .discard_results()
        .build::<Box<dyn FnOnce() + Send>>()
        .unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    for i in 0..50u64 {
        let ran = Arc::clone(&ran);
        let job: Box<dyn FnOnce() + Send> = Box::new(move || {
            ran.fetch_add(1, Ordering::SeqCst);
            if i == 3 {
                panic!("a job's panic is not queued either");
            }
        });
        pool.submit_with_id(i, job);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while ran.load(Ordering::SeqCst) < 50 {
        assert!(Instant::now() < deadline, "the jobs ran");
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(pool);
    assert_eq!(notified.load(Ordering::SeqCst), 0);
    assert!(!completions.is_due());
    assert_eq!(completions.drain(|_, _| {}), 0);
}
