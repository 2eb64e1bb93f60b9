//! The facade's one error type.

use std::io;

use eventide_pool::{ConfigError, JobError};
use eventide_reactor::BackendError;

/// What went wrong, and in which operation.
///
/// Converts into [`std::io::Error`] (keeping a matching
/// [`io::ErrorKind`]) and from it, so it fits wherever `io::Result` does.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call failed during `op`.
    #[error("{op}: {source}")]
    Io {
        /// The operation, e.g. `"poll"` or `"open"`.
        op: &'static str,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The work was cancelled while still queued ([`crate::Loop::cancel_work`]).
    #[error("the work was cancelled before it started")]
    Cancelled,
    /// The work panicked on the pool; the message is the panic's.
    #[error("the work panicked: {message}")]
    Panicked {
        /// The panic's message (`"<non-string panic payload>"` if it had none).
        message: String,
    },
    /// The work could not run: the pool shut down, or no pool thread could
    /// be started at all.
    #[error("the work could not run: {0}")]
    NotRun(String),
    /// The work is already running (or done), so it cannot be cancelled.
    #[error("the work is already running and cannot be cancelled")]
    AlreadyRunning,
    /// The handle names nothing: what it named has finished, been closed or
    /// cancelled.
    #[error("stale handle: {what} has already finished or been closed")]
    Stale {
        /// What kind of handle, e.g. `"work request"`.
        what: &'static str,
    },
    /// `run` was called from inside a callback of the same loop.
    #[error("Loop::run called from inside one of the loop's own callbacks")]
    Reentrant,
    /// The reactor backend could not be set up.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The pool configuration is invalid (e.g. `EVENTIDE_THREADPOOL_SIZE`).
    #[error(transparent)]
    PoolConfig(#[from] ConfigError),
}

/// `Result` with [`Error`] as its error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(op: &'static str, source: io::Error) -> Error {
        Error::Io { op, source }
    }

    /// The [`io::ErrorKind`] that best describes this error.
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            Error::Io { source, .. } => source.kind(),
            Error::Cancelled => io::ErrorKind::Interrupted,
            Error::Panicked { .. } | Error::NotRun(_) => io::ErrorKind::Other,
            Error::AlreadyRunning => io::ErrorKind::ResourceBusy,
            Error::Stale { .. } => io::ErrorKind::NotFound,
            Error::Reentrant => io::ErrorKind::WouldBlock,
            Error::Backend(BackendError::Refused { source, .. }) => source.kind(),
            Error::Backend(BackendError::NotCompiled(_)) => io::ErrorKind::Unsupported,
            Error::Backend(_) | Error::PoolConfig(_) => io::ErrorKind::InvalidInput,
        }
    }
}

impl From<JobError> for Error {
    fn from(error: JobError) -> Error {
        match error {
            JobError::Cancelled => Error::Cancelled,
            JobError::Panicked { message } => Error::Panicked { message },
            other => Error::NotRun(other.to_string()),
        }
    }
}

impl From<io::Error> for Error {
    fn from(source: io::Error) -> Error {
        Error::Io { op: "io", source }
    }
}

impl From<Error> for io::Error {
    fn from(error: Error) -> io::Error {
        match error {
            Error::Io { source, .. } => source,
            other => io::Error::new(other.kind(), other),
        }
    }
}
