//! One blocking pool shared by several loops (`SharedPool`,
//! `LoopBuilder::pool`): each loop gets its own results only, N loops run
//! the pool's threads and no more, a dropped loop's work is cancelled or
//! finished cleanly, and one loop's panicking job does not disturb another.
//!
//! The tests count the process's `eventide-pool-*` threads, so they run
//! one at a time (`LOCK`), and each leaves no pool behind.

mod util;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use eventide::{BackendChoice, BackendKind, Error, Loop, LoopBuilder, SharedPool};

static LOCK: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The process's threads named `eventide-pool-*`, from /proc.
fn pool_threads_alive() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.starts_with("eventide-pool"))
        .count()
}

/// Waits (at most 10 s) until `f` holds.
fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits (at most 10 s) until `n` pool threads are alive: a thread
/// names itself once it runs, and leaves /proc once it has ended.
fn pool_threads_become(n: usize) {
    eventually(&format!("{n} pool threads alive"), || {
        pool_threads_alive() == n
    });
}

/// The backends compiled in and allowed here.
fn backends() -> Vec<BackendKind> {
    [BackendKind::Uring, BackendKind::Epoll, BackendKind::Poll]
        .into_iter()
        .filter(|&kind| match builder(kind).build() {
            Ok(_) => true,
            Err(error) => {
                eprintln!("skipped on {kind}: {error}");
                false
            }
        })
        .collect()
}

fn builder(kind: BackendKind) -> LoopBuilder {
    Loop::builder().backend(BackendChoice::Only(kind))
}

const JOBS: u64 = 300;

/// A loop on its own thread, on `pool`: queues [`JOBS`] jobs that return
/// `(tag, i)`, and checks that every result is its own, each once.
/// `at_peak` runs on the loop thread once the first result is in (while
/// the other loop also runs).
fn run_loop_on(
    kind: BackendKind,
    pool: SharedPool,
    tag: u64,
    both_running: Arc<std::sync::Barrier>,
) -> std::thread::JoinHandle<Vec<u64>> {
    std::thread::spawn(move || {
        let mut lp = builder(kind).pool(pool).build().unwrap();
        let got = Rc::new(std::cell::RefCell::new(Vec::new()));
        both_running.wait();
        for i in 0..JOBS {
            let got = got.clone();
            lp.queue_work(
                move || {
                    // Long enough for the two loops' jobs to interleave.
                    std::thread::sleep(Duration::from_micros(200));
                    (tag, i)
                },
                move |_, result| {
                    let (from, i) = result.expect("the job ran");
                    assert_eq!(from, tag, "a result of another loop came to loop {tag}");
                    got.borrow_mut().push(i);
                },
            );
        }
        util::run_within(&mut lp, Duration::from_secs(60));
        let mut got = got.borrow().clone();
        got.sort_unstable();
        got
    })
}

#[test]
fn two_loops_on_two_threads_share_four_pool_threads_and_each_gets_only_its_own_results() {
    let _serial = serial();
    for kind in backends() {
        pool_threads_become(0);
        let pool = SharedPool::new(4).unwrap();
        let both = Arc::new(std::sync::Barrier::new(3));
        let a = run_loop_on(kind, pool.clone(), 1, both.clone());
        let b = run_loop_on(kind, pool.clone(), 2, both.clone());
        both.wait();
        // While both loops run their work: 4 pool threads, not 8.
        eventually("the pool's threads start", || pool.started_threads() == 4);
        pool_threads_become(4);
        let expected: Vec<u64> = (0..JOBS).collect();
        assert_eq!(a.join().unwrap(), expected, "loop 1 on {kind}");
        assert_eq!(b.join().unwrap(), expected, "loop 2 on {kind}");
        assert_eq!(pool.threads(), 4);
        pool_threads_become(4);
        drop(pool);
        pool_threads_become(0);
    }
}

#[test]
fn without_a_shared_pool_two_loops_have_eight_pool_threads() {
    // The control for the test above: the count is of the pools in use.
    let _serial = serial();
    let Some(&kind) = backends().first() else {
        return;
    };
    let mut loops: Vec<Loop> = (0..2).map(|_| builder(kind).build().unwrap()).collect();
    for lp in &mut loops {
        lp.queue_work(|| (), |_, result| result.unwrap());
        util::run_within(lp, Duration::from_secs(10));
    }
    pool_threads_become(8);
    drop(loops);
    pool_threads_become(0);
}

/// Counts drops of what it is put in.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_loop_dropped_while_its_work_is_queued_cancels_it_frees_it_and_the_pool_serves_others() {
    let _serial = serial();
    for kind in backends() {
        let pool = SharedPool::new(1).unwrap();
        let mut lp = builder(kind).pool(pool.clone()).build().unwrap();
        let running = Arc::new(AtomicBool::new(false));
        let release = Arc::new(AtomicBool::new(false));
        let finished = Arc::new(AtomicBool::new(false));
        let works_run = Arc::new(AtomicUsize::new(0));
        let works_dropped = Arc::new(AtomicUsize::new(0));
        let results_dropped = Arc::new(AtomicUsize::new(0));
        let afters_dropped = Rc::new(Cell::new(0));
        let afters_run = Rc::new(Cell::new(0));

        /// `after`'s state: `!Send`, dropped with `after` on the loop thread.
        struct After(Rc<Cell<usize>>);
        impl Drop for After {
            fn drop(&mut self) {
                self.0.set(self.0.get() + 1);
            }
        }

        // The one pool thread takes this job and blocks in it.
        {
            let (running, release, finished) = (running.clone(), release.clone(), finished.clone());
            let guard = Counted(works_dropped.clone());
            let results_dropped = results_dropped.clone();
            let after = After(afters_dropped.clone());
            let afters_run = afters_run.clone();
            lp.queue_work(
                move || {
                    let _guard = guard;
                    let result = Counted(results_dropped);
                    running.store(true, Ordering::SeqCst);
                    let deadline = Instant::now() + Duration::from_secs(20);
                    while !release.load(Ordering::SeqCst) && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    finished.store(true, Ordering::SeqCst);
                    result
                },
                move |_, _| {
                    let _after = after;
                    afters_run.set(afters_run.get() + 1);
                },
            );
        }
        lp.run_mode(eventide::RunMode::NoWait).unwrap();
        eventually("the first job runs", || running.load(Ordering::SeqCst));
        // These stay queued behind it.
        for _ in 0..10 {
            let guard = Counted(works_dropped.clone());
            let works_run = works_run.clone();
            let results_dropped = results_dropped.clone();
            let after = After(afters_dropped.clone());
            let afters_run = afters_run.clone();
            lp.queue_work(
                move || {
                    let _guard = guard;
                    works_run.fetch_add(1, Ordering::SeqCst);
                    Counted(results_dropped)
                },
                move |_, _| {
                    let _after = after;
                    afters_run.set(afters_run.get() + 1);
                },
            );
        }
        drop(lp);
        // The drop did not wait for the running job, ran no callback, and
        // dropped every `after` here, on the loop's thread.
        assert!(
            !finished.load(Ordering::SeqCst),
            "the drop waited for a job"
        );
        assert_eq!(afters_run.get(), 0);
        assert_eq!(afters_dropped.get(), 11);
        // Another loop on the same pool: its work waits for the blocked
        // thread, then runs; the dropped loop's queued jobs do not.
        let mut other = builder(kind).pool(pool.clone()).build().unwrap();
        let got = Rc::new(Cell::new(None));
        let g = got.clone();
        other.queue_work(|| 42, move |_, result| g.set(Some(result.unwrap())));
        release.store(true, Ordering::SeqCst);
        util::run_within(&mut other, Duration::from_secs(30));
        assert_eq!(got.get(), Some(42));
        assert!(finished.load(Ordering::SeqCst));
        assert_eq!(works_run.load(Ordering::SeqCst), 0, "a cancelled job ran");
        // Everything of the dropped loop is freed: the running job's work
        // and result when it was delivered, the queued ones' closures when
        // the pool skipped them.
        eventually("the dropped loop's jobs are freed", || {
            works_dropped.load(Ordering::SeqCst) == 11
        });
        assert_eq!(results_dropped.load(Ordering::SeqCst), 1);
        drop(other);
        assert_eq!(pool.started_threads(), 1);
        drop(pool);
        pool_threads_become(0);
    }
}

#[test]
fn a_loop_that_holds_the_last_handle_shuts_the_pool_down_when_dropped() {
    let _serial = serial();
    for kind in backends() {
        let mut lp = builder(kind)
            .pool(SharedPool::new(2).unwrap())
            .build()
            .unwrap();
        let got = Rc::new(Cell::new(0));
        let g = got.clone();
        lp.queue_work(|| 7, move |_, result| g.set(result.unwrap()));
        util::run_within(&mut lp, Duration::from_secs(10));
        assert_eq!(got.get(), 7);
        pool_threads_become(2);
        drop(lp);
        pool_threads_become(0);
    }
}

#[test]
fn a_panicking_job_of_one_loop_does_not_disturb_the_other() {
    let _serial = serial();
    for kind in backends() {
        let pool = SharedPool::new(4).unwrap();
        let both = Arc::new(std::sync::Barrier::new(2));
        let panicker = {
            let (pool, both) = (pool.clone(), both.clone());
            std::thread::spawn(move || {
                let mut lp = builder(kind).pool(pool).build().unwrap();
                let got = Rc::new(std::cell::RefCell::new(Vec::new()));
                both.wait();
                for i in 0..20 {
                    let got = got.clone();
                    lp.queue_work(
                        move || {
                            if i % 2 == 0 {
                                panic!("job {i} panics");
                            }
                            i
                        },
                        move |_, result| got.borrow_mut().push(result),
                    );
                }
                util::run_within(&mut lp, Duration::from_secs(30));
                let got = got.borrow();
                let panics = got
                    .iter()
                    .filter(|r| matches!(r, Err(Error::Panicked { message }) if message.ends_with("panics")))
                    .count();
                let values = got.iter().filter(|r| r.is_ok()).count();
                (panics, values)
            })
        };
        let quiet = run_loop_on(kind, pool.clone(), 9, Arc::new(std::sync::Barrier::new(1)));
        both.wait();
        assert_eq!(panicker.join().unwrap(), (10, 10), "on {kind}");
        assert_eq!(quiet.join().unwrap(), (0..JOBS).collect::<Vec<_>>());
        // No pool thread died of it.
        pool_threads_become(4);
        drop(pool);
        pool_threads_become(0);
    }
}

#[test]
fn cancel_and_slow_io_work_on_a_shared_pool() {
    let _serial = serial();
    for kind in backends() {
        let pool = SharedPool::new(1).unwrap();
        let mut lp = builder(kind).pool(pool.clone()).build().unwrap();
        let release = Arc::new(AtomicBool::new(false));
        let r = release.clone();
        let order = Rc::new(std::cell::RefCell::new(Vec::new()));
        let o = order.clone();
        lp.queue_work_in(
            eventide::WorkClass::SlowIo,
            move || {
                let deadline = Instant::now() + Duration::from_secs(20);
                while !r.load(Ordering::SeqCst) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
            },
            move |_, result| {
                result.unwrap();
                o.borrow_mut().push("slow");
            },
        );
        let o = order.clone();
        let id = lp.queue_work(
            || (),
            move |_, result| {
                assert!(matches!(result, Err(Error::Cancelled)), "{result:?}");
                o.borrow_mut().push("cancelled");
            },
        );
        lp.cancel_work(id).unwrap();
        release.store(true, Ordering::SeqCst);
        util::run_within(&mut lp, Duration::from_secs(30));
        let mut order = order.borrow().clone();
        order.sort_unstable();
        assert_eq!(order, ["cancelled", "slow"]);
        drop(lp);
        drop(pool);
    }
}

#[test]
fn an_invalid_shared_pool_size_is_an_error_naming_it() {
    for threads in [0, 1025] {
        let error = SharedPool::new(threads).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("SharedPool::new=\"{threads}\": expected a number from 1 to 1024")
        );
    }
    let a = SharedPool::new(1).unwrap();
    assert!(a.same_pool(&a.clone()));
    assert!(!a.same_pool(&SharedPool::new(1).unwrap()));
}

/// A job that holds the pool's last handle (its loop dropped meanwhile)
/// drops the pool on one of the pool's own threads: the shutdown must not
/// join that thread from itself (a deadlock the system refuses, a panic
/// in the worker); every thread ends, and nothing panics.
#[test]
fn a_job_that_holds_the_last_handle_shuts_the_pool_down_from_its_own_thread() {
    let _serial = serial();
    for kind in backends() {
        let pool = SharedPool::new(2).unwrap();
        let mut lp = builder(kind).pool(pool.clone()).build().unwrap();
        let started = Arc::new(std::sync::Barrier::new(2));
        let s = Arc::clone(&started);
        let finished = Arc::new(AtomicBool::new(false));
        let f = Arc::clone(&finished);
        let panicked = Arc::new(AtomicBool::new(false));
        let p = Arc::clone(&panicked);
        let job_pool = pool.clone();
        lp.queue_work(
            move || {
                s.wait();
                // The loop and the test's handle go meanwhile.
                std::thread::sleep(Duration::from_millis(100));
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    drop(job_pool);
                }));
                p.store(outcome.is_err(), Ordering::SeqCst);
                f.store(true, Ordering::SeqCst);
            },
            |_, _| {},
        );
        started.wait();
        drop(pool);
        drop(lp);
        eventually("the job dropped the pool", || {
            finished.load(Ordering::SeqCst)
        });
        assert!(
            !panicked.load(Ordering::SeqCst),
            "dropping the last handle on a pool thread panicked"
        );
        pool_threads_become(0);
    }
}
