//! The pool's errors: why a job produced no value, why a cancel could not
//! take effect, and why a configuration was refused.

/// Why a job completed without a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// The job was cancelled with [`Pool::cancel`](crate::Pool::cancel)
    /// while still queued; it never ran.
    #[error("the job was cancelled before it started")]
    Cancelled,
    /// The pool was dropped while the job was still queued; it never ran.
    #[error("the pool shut down before the job started")]
    ShutDown,
    /// The job panicked; the worker caught the panic and lives on.
    #[error("the job panicked: {message}")]
    Panicked {
        /// The panic's message (`"<non-string panic payload>"` when the
        /// payload was neither a `&str` nor a `String`).
        message: String,
    },
    /// No worker thread was running and none could be started, so the job
    /// could not run (see [`PoolBuilder`](crate::PoolBuilder), "Thread start").
    #[error("no worker thread could be started: {message}")]
    NoThreads {
        /// The operating system's reason, from the last failed spawn.
        message: String,
    },
}

/// Why [`Pool::cancel`](crate::Pool::cancel) could not cancel a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CancelError {
    /// A worker has started the job; it will complete with its own result.
    #[error("the job is already running")]
    Running,
    /// The job has finished; its completion is (or soon will be) delivered.
    #[error("the job has already completed")]
    Finished,
    /// The job was already cancelled; its `Cancelled` completion was
    /// delivered by the first cancel.
    #[error("the job was already cancelled")]
    AlreadyCancelled,
    /// The handle came from another pool.
    #[error("the handle belongs to another pool")]
    ForeignHandle,
}

/// A configuration the pool refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The thread count set in code is outside `1..=1024`.
    #[error("invalid thread pool size {threads}: expected 1 to {max}")]
    InvalidThreads {
        /// The refused count.
        threads: usize,
        /// The largest count allowed ([`MAX_THREADS`](crate::MAX_THREADS)).
        max: usize,
    },
    /// The environment variable holds something other than a whole number
    /// in `1..=1024`; the default size is used instead.
    #[error(
        "invalid {variable}={value:?}: expected a whole number from 1 to {max}; \
         using the default of {default} threads"
    )]
    InvalidThreadsEnv {
        /// The variable's name ([`THREADPOOL_SIZE_ENV`](crate::THREADPOOL_SIZE_ENV)).
        variable: &'static str,
        /// The refused value, lossily converted to UTF-8.
        value: String,
        /// The largest count allowed.
        max: usize,
        /// The size used instead.
        default: usize,
    },
}
