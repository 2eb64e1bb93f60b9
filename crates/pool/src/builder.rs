//! Configuring a pool: its size (in code or from `EVENTIDE_THREADPOOL_SIZE`),
//! thread names, the completion notifier and how threads are spawned.

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::Job;
use crate::completions::{Completions, Notify};
use crate::error::ConfigError;
use crate::pool::Pool;

/// The pool's size unless configured otherwise: 4, as libuv's.
pub const DEFAULT_THREADS: usize = 4;

/// The largest pool allowed: 1024, as libuv's `UV_THREADPOOL_SIZE`.
pub const MAX_THREADS: usize = 1024;

/// The environment variable that sets the pool's size, read by
/// [`PoolBuilder::from_env`]; it plays the part of `UV_THREADPOOL_SIZE`.
pub const THREADPOOL_SIZE_ENV: &str = "EVENTIDE_THREADPOOL_SIZE";

/// Spawns the thread for a [`ThreadSpawn`] request.
pub(crate) type SpawnHandler = dyn Fn(ThreadSpawn) -> io::Result<JoinHandle<()>> + Send + Sync;

/// A request to start one worker thread, handed to a
/// [`PoolBuilder::spawn_handler`].
pub struct ThreadSpawn {
    index: usize,
    name: String,
    body: Box<dyn FnOnce() + Send + 'static>,
}

impl ThreadSpawn {
    pub(crate) fn new(index: usize, name: String, body: Box<dyn FnOnce() + Send>) -> Self {
        ThreadSpawn { index, name, body }
    }

    /// The worker's index, `0..threads`.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The thread name the pool would give it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The worker's main function, for handlers that spawn threads their
    /// own way; the returned handle must join the thread that runs it.
    pub fn into_body(self) -> Box<dyn FnOnce() + Send + 'static> {
        self.body
    }

    /// Spawns the worker the default way: a `std::thread::Builder` with the
    /// thread's name.
    pub fn spawn(self) -> io::Result<JoinHandle<()>> {
        std::thread::Builder::new().name(self.name).spawn(self.body)
    }
}

impl fmt::Debug for ThreadSpawn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadSpawn")
            .field("index", &self.index)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Pool`] and its [`Completions`].
///
/// # Size
///
/// [`DEFAULT_THREADS`] (4) unless [`PoolBuilder::threads`] sets it in code, or
/// [`PoolBuilder::from_env`] reads [`THREADPOOL_SIZE_ENV`]. An invalid value
/// in the environment is not ignored silently and does not panic: it is
/// logged with `log::warn!`, kept as [`PoolBuilder::config_warning`] for the
/// caller to surface, and the default size is used. (The library never
/// prints.) A size set in code that is out of range makes
/// [`PoolBuilder::build`] fail.
///
/// # Thread start
///
/// Threads start lazily, all of them on the first submission (as libuv's).
/// A thread that fails to spawn (say `EAGAIN`) is logged, and retried on each
/// later submission until every thread runs. Its jobs are never lost: they
/// stay queued for the threads that did start. If no thread at all runs and
/// none can be started, the jobs queued at that moment complete at once
/// with [`JobError::NoThreads`](crate::JobError::NoThreads) instead of
/// waiting forever.
pub struct PoolBuilder {
    threads: usize,
    thread_name: String,
    notifier: Option<Arc<dyn Notify>>,
    spawn: Option<Arc<SpawnHandler>>,
    warning: Option<ConfigError>,
    discard: bool,
}

impl PoolBuilder {
    /// A builder for a pool of [`DEFAULT_THREADS`] threads, which ignores
    /// the environment.
    pub fn new() -> Self {
        PoolBuilder {
            threads: DEFAULT_THREADS,
            thread_name: "eventide-pool".to_owned(),
            notifier: None,
            spawn: None,
            warning: None,
            discard: false,
        }
    }

    /// A builder whose size comes from [`THREADPOOL_SIZE_ENV`] when it is
    /// set and valid (see "Size" above).
    pub fn from_env() -> Self {
        Self::from_env_value(std::env::var_os(THREADPOOL_SIZE_ENV).as_deref())
    }

    /// As [`PoolBuilder::from_env`], with the variable's value given by the
    /// caller (`None` when unset), for callers that keep their own
    /// environment.
    pub fn from_env_value(value: Option<&OsStr>) -> Self {
        let mut builder = Self::new();
        // Empty (or blank) means unset, as for every eventide variable.
        let value = value.filter(|v| !v.to_string_lossy().trim().is_empty());
        if let Some(value) = value {
            match parse_threads(value) {
                Some(threads) => builder.threads = threads,
                None => builder.warn_invalid_env(value),
            }
        }
        builder
    }

    fn warn_invalid_env(&mut self, value: &OsStr) {
        let warning = ConfigError::InvalidThreadsEnv {
            variable: THREADPOOL_SIZE_ENV,
            value: value.to_string_lossy().into_owned(),
            max: MAX_THREADS,
            default: DEFAULT_THREADS,
        };
        log::warn!("eventide-pool: {warning}");
        self.warning = Some(warning);
    }

    /// The problem found in the environment, if any (the default size was
    /// used instead).
    pub fn config_warning(&self) -> Option<&ConfigError> {
        self.warning.as_ref()
    }

    /// Sets the number of threads, `1..=1024`; overrides the environment.
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// The number of threads the pool will have.
    pub fn thread_count(&self) -> usize {
        self.threads
    }

    /// Sets the threads' name prefix (default `eventide-pool`); worker `i`
    /// is named `<prefix>-<i>`.
    pub fn thread_name(mut self, prefix: impl Into<String>) -> Self {
        self.thread_name = prefix.into();
        self
    }

    /// Sets the notifier called when completions are waiting (default: none,
    /// for a consumer that polls [`Completions::drain`]).
    pub fn notifier(mut self, notifier: impl Notify) -> Self {
        self.notifier = Some(Arc::new(notifier));
        self
    }

    /// Spawns worker threads with `handler` instead of
    /// [`ThreadSpawn::spawn`]: to set stack sizes or affinity, or to inject
    /// spawn failures. An `Err` is handled as a failed spawn (see "Thread
    /// start" above).
    pub fn spawn_handler(
        mut self,
        handler: impl Fn(ThreadSpawn) -> io::Result<JoinHandle<()>> + Send + Sync + 'static,
    ) -> Self {
        self.spawn = Some(Arc::new(handler));
        self
    }

    /// Drops every job's result instead of queueing it for the
    /// [`Completions`], which then stay empty and never notify: for jobs
    /// that deliver their results themselves (the event loop's jobs on a
    /// pool shared by several loops each send theirs to their own loop).
    /// A job that panics or never runs is then reported by nobody: such a
    /// job must catch its own panics, and tell its owner from its `Drop`
    /// when it is dropped unrun (at shutdown).
    pub fn discard_results(mut self) -> Self {
        self.discard = true;
        self
    }

    /// Builds the pool (no thread starts yet) and the receiver of its
    /// completions.
    pub fn build<J: Job>(self) -> Result<(Pool<J>, Completions<J::Output>), ConfigError> {
        if !(1..=MAX_THREADS).contains(&self.threads) {
            let threads = self.threads;
            return Err(ConfigError::InvalidThreads {
                threads,
                max: MAX_THREADS,
            });
        }
        let notifier = self.notifier.unwrap_or_else(|| Arc::new(|| {}));
        let spawn = self.spawn.unwrap_or_else(|| Arc::new(ThreadSpawn::spawn));
        let discard = self.discard;
        Ok(Pool::new(
            self.threads,
            self.thread_name,
            notifier,
            spawn,
            discard,
        ))
    }
}

/// Parses a thread count as `UV_THREADPOOL_SIZE` is meant: a whole number in
/// `1..=1024`, surrounding blanks allowed.
fn parse_threads(value: &OsStr) -> Option<usize> {
    let threads = value.to_str()?.trim().parse::<usize>().ok()?;
    (1..=MAX_THREADS).contains(&threads).then_some(threads)
}

impl Default for PoolBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("threads", &self.threads)
            .field("thread_name", &self.thread_name)
            .field("notifier", &self.notifier.is_some())
            .field("spawn_handler", &self.spawn.is_some())
            .field("warning", &self.warning)
            .field("discard_results", &self.discard)
            .finish()
    }
}
