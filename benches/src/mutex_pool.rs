//! A blocking pool built as libuv's threadpool is: one queue behind one
//! mutex, one condition variable for idle workers, and completions handed
//! back through a second locked queue with a coalesced notification (libuv's
//! `loop->wq` plus `uv_async_send`).
//!
//! It is the baseline that `eventide-pool` is measured against (W6 in
//! `shared/bench/WORKLOADS.md`): a fair, competent version of the structure,
//! running the same [`Job`]s with the same notifier and consumer. It has no
//! cancellation, slow lane or panic handling; a job that panics kills its
//! worker. On drop it stops its workers and discards the jobs still queued.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use eventide_pool::Job;

/// Jobs waiting to run, guarded by the pool's one mutex.
struct Queue<J> {
    jobs: VecDeque<(u64, J)>,
    idle: usize,
    shutdown: bool,
}

/// What the pool and its workers share.
struct Shared<J: Job> {
    queue: Mutex<Queue<J>>,
    available: Condvar,
    done: Mutex<Vec<(u64, J::Output)>>,
    pending: AtomicBool,
    notifier: Box<dyn Fn() + Send + Sync>,
}

/// A pool of worker threads fed from one `Mutex<VecDeque>` (see the module
/// docs). Completions are `(id, output)` pairs, ids in submission order.
pub struct MutexPool<J: Job> {
    shared: Arc<Shared<J>>,
    threads: Vec<JoinHandle<()>>,
    next_id: u64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<J: Job> MutexPool<J> {
    /// Starts `threads` workers; `notifier` is called when completions are
    /// waiting, once per batch, as `uv_async_send` coalesces.
    pub fn new(threads: usize, notifier: impl Fn() + Send + Sync + 'static) -> Self {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                idle: 0,
                shutdown: false,
            }),
            available: Condvar::new(),
            done: Mutex::new(Vec::new()),
            pending: AtomicBool::new(false),
            notifier: Box::new(notifier),
        });
        let threads = (0..threads)
            .map(|_| {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || shared.work())
            })
            .collect();
        MutexPool {
            shared,
            threads,
            next_id: 0,
        }
    }

    /// Queues a job, signalling an idle worker if there is one; returns its id.
    pub fn submit(&mut self, job: J) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let mut queue = lock(&self.shared.queue);
        queue.jobs.push_back((id, job));
        if queue.idle > 0 {
            self.shared.available.notify_one();
        }
        id
    }

    /// Hands every waiting completion to `f`; returns how many there were.
    pub fn drain(&self, mut f: impl FnMut(u64, J::Output)) -> usize {
        self.shared.pending.swap(false, Ordering::AcqRel);
        let done = std::mem::take(&mut *lock(&self.shared.done));
        let count = done.len();
        done.into_iter().for_each(|(id, output)| f(id, output));
        count
    }
}

impl<J: Job> Shared<J> {
    /// A worker's main loop, as libuv's `worker()`.
    fn work(&self) {
        let mut queue = lock(&self.queue);
        loop {
            while queue.jobs.is_empty() && !queue.shutdown {
                queue.idle += 1;
                queue = self
                    .available
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner);
                queue.idle -= 1;
            }
            if queue.shutdown {
                return;
            }
            let Some((id, job)) = queue.jobs.pop_front() else {
                continue;
            };
            drop(queue);
            let output = job.run();
            self.complete(id, output);
            queue = lock(&self.queue);
        }
    }

    fn complete(&self, id: u64, output: J::Output) {
        lock(&self.done).push((id, output));
        if !self.pending.swap(true, Ordering::AcqRel) {
            (self.notifier)();
        }
    }
}

impl<J: Job> Drop for MutexPool<J> {
    fn drop(&mut self) {
        lock(&self.shared.queue).shutdown = true;
        self.shared.available.notify_all();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl<J: Job> fmt::Debug for MutexPool<J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MutexPool")
            .field("threads", &self.threads.len())
            .field("submitted", &self.next_id)
            .finish()
    }
}
