//! Work on the pool, awaited: [`work`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::oneshot::{self, Receiver};
use super::{try_with_loop, with_loop};
use crate::{Result, WorkId};

/// Runs `job` on the loop's blocking pool ([`crate::Loop::queue_work`])
/// and resolves to its result: `Ok(value)`, or [`crate::Error::Panicked`]
/// if it panicked. The job is queued at the first poll. Dropping the
/// future while the job is still queued cancels it
/// ([`crate::Loop::cancel_work`]); once it runs, it runs to the end and
/// its result is dropped.
pub fn work<R, F>(job: F) -> Work<R>
where
    R: Send + 'static,
    F: FnOnce() -> R + Send + 'static,
{
    Work {
        job: Some(Box::new(job)),
        queued: None,
    }
}

/// The future of [`work`].
#[must_use = "futures do nothing unless awaited"]
pub struct Work<R> {
    job: Option<Box<dyn FnOnce() -> R + Send>>,
    queued: Option<(WorkId, Receiver<Result<R>>)>,
}

impl<R> std::fmt::Debug for Work<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Work")
            .field("queued", &self.queued.as_ref().map(|(id, _)| id))
            .finish()
    }
}

impl<R> Unpin for Work<R> {}

impl<R: Send + 'static> Future for Work<R> {
    type Output = Result<R>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<R>> {
        if let Some(job) = self.job.take() {
            let (tx, rx) = oneshot::channel();
            let id = with_loop(|lp| lp.queue_work(job, move |_, result| tx.send(result)));
            self.queued = Some((id, rx));
        }
        let Some((_, rx)) = self.queued.as_mut() else {
            panic!("eventide: Work polled after it completed");
        };
        match Pin::new(rx).poll(cx) {
            Poll::Ready(result) => {
                self.queued = None;
                Poll::Ready(result)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<R> Drop for Work<R> {
    fn drop(&mut self) {
        if let Some((id, _)) = self.queued.take() {
            // Still queued: cancelled (its `after` then drops the result
            // slot); running or done: an error, ignored.
            let _ = try_with_loop(|lp| lp.cancel_work(id));
        }
    }
}
