//! eventide's reactor: one completion-style I/O API over io_uring and
//! readiness polling.
//!
//! # The completion model
//!
//! The event loop never blocks because the OS does the I/O. A caller
//! [`submit`](Reactor::submit)s an [`Op`] that owns its buffer and names it
//! with a [`Token`]; [`wait`](Reactor::wait)s up to a timeout (the loop
//! passes its next timer deadline); then drains
//! [`completions`](Reactor::completions), each a [`Completion`] carrying the
//! token, the result and the buffer back. On io_uring the kernel performs
//! the operation itself; on the polling backend the reactor waits for
//! readiness and performs the nonblocking system call then. Either way the
//! caller sees the same thing: one final completion per accepted operation.
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! use eventide_reactor::{Op, Reactor, Token};
//! use std::time::Duration;
//! # let sock: std::os::fd::RawFd = 3;
//! let mut reactor = Reactor::new()?;
//! reactor.submit(Token(1), Op::recv(sock, Vec::with_capacity(4096))).map_err(|e| e.error)?;
//! reactor.wait(Some(Duration::from_millis(100)))?;
//! for c in reactor.completions() {
//!     let buf = c.buf.expect("recv hands its buffer back");
//!     println!("token {:?}: {:?}, {} bytes", c.token, c.result, buf.len());
//! }
//! # Ok(()) }
//! ```
//!
//! # Buffer ownership, and why it is sound
//!
//! Operations take their buffers (`Vec<u8>`), paths (`CString`) and
//! addresses by value. While an operation is in flight these live in the
//! reactor's in-flight table; the kernel only ever holds pointers to their
//! heap blocks, which do not move when the table grows. A buffer is handed
//! back only when the kernel has posted the operation's final completion
//! (io_uring), or when no system call on it can be running (polling: the
//! calls are made synchronously by the reactor itself). A cancelled
//! operation keeps its buffer until its completion arrives; dropping the
//! reactor cancels everything in flight and waits (bounded) for the
//! kernel to let go; whatever the kernel still holds after that is leaked on
//! purpose, never freed under it.
//!
//! # Cancellation
//!
//! [`Reactor::cancel`] asks; the operation's final completion still comes,
//! with `ECANCELED` ([`Completion::is_cancelled`]) unless it had finished
//! first. Bytes received before the cancel won are delivered, not lost; a
//! descriptor produced by an accept or openat that completed after its
//! cancel is closed by the reactor (the caller said it no longer wants it).
//! [`Op::close`] cancels every operation on the descriptor, then closes it.
//!
//! # Backends, selection and fallback
//!
//! Cargo features `uring` (Linux), `epoll` (Linux) and `poll` pick the
//! compiled backends (all three by default). At run time [`Reactor::new`]
//! uses `EVENTIDE_BACKEND` (`uring`, `epoll`, `poll` or `auto`, the
//! default); `auto` tries io_uring and falls back to epoll (then polling)
//! when the kernel refuses it (ENOSYS on old kernels, EPERM from a seccomp
//! profile or the `kernel.io_uring_disabled` sysctl, ENOMEM from the locked
//! memory limit), logging the reason once through `log`. Forcing `uring`
//! where it is refused is an error. [`Reactor::backend`] tells which one
//! runs. The readiness backends (epoll, polling) refuse file operations with
//! [`io::ErrorKind::Unsupported`] so the caller can run them on a thread
//! pool, as libuv does; so does io_uring for a file operation outside
//! [`Reactor::file_ops`] (what the kernel's probe reports, narrowed by
//! `EVENTIDE_URING_FILE_OPS` for testing and diagnosis; see [`FileOps`]).
//! [`Op::read_file`] reads a whole small file in one operation.
//!
//! # Multishot and provided buffers
//!
//! [`Op::accept_multi`] and [`Op::recv_multi`] stay armed and complete many
//! times. On io_uring they map to multishot accept and multishot recv from a
//! provided-buffer ring when the kernel has them (probed at setup), and to
//! automatically re-armed single-shot operations otherwise; on polling they
//! are re-armed readiness waits. See [`uring_ext`] and the `uring` backend's
//! module docs for the buffer-ring strategy.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

mod config;
pub mod direct;
mod op;
mod sys;
pub mod uring_ext;

pub use config::{
    DEFAULT_SQ_ENTRIES, MAX_SQ_ENTRIES, URING_FILE_OPS_ENV, URING_NO_DIRECT_ENV, URING_NO_PBUF_ENV,
    UringConfig,
};

pub use op::{
    Completion, FileOps, FileStat, Interest, Op, RawStat, ReadFileStep, SendOwner, Shutdown, Token,
};

/// How many [`Op::recv_multi`] buffers a reactor lends out at most before it
/// waits for some to come back through [`Reactor::recycle`].
///
/// Past this many (16 MiB of 16 KiB buffers), `recv_multi` operations stop
/// receiving (they stay armed; TCP flow control holds the peer back) until
/// the caller recycles buffers. A caller that keeps or drops its buffers
/// instead of recycling them therefore stalls its receives rather than
/// making the reactor allocate without bound. (On io_uring the
/// provided-buffer ring holds up to 256 more, which are not counted.)
pub const RECV_MULTI_LEND_LIMIT: usize = 1024;

/// The environment variable that picks the backend of [`Reactor::new`].
pub const BACKEND_ENV: &str = "EVENTIDE_BACKEND";

/// A backend implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// io_uring (Linux).
    Uring,
    /// Readiness polling (epoll, kqueue, event ports, ... via `polling`).
    Poll,
    /// Readiness on raw epoll (Linux): the polling backend's behaviour, with
    /// one `epoll_wait` per turn and nothing else (no timerfd, no notifier
    /// re-arming), the one `auto` falls back to when io_uring is refused.
    Epoll,
}

impl BackendKind {
    /// The backends compiled into this build, best first.
    pub fn compiled() -> &'static [BackendKind] {
        sys::compiled()
    }

    /// The lowercase name (`uring`, `epoll`, `poll`), as `EVENTIDE_BACKEND`
    /// spells it.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Uring => "uring",
            BackendKind::Poll => "poll",
            BackendKind::Epoll => "epoll",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What to run: one backend, or the best the system allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum BackendChoice {
    /// io_uring if compiled and allowed, else the best readiness backend
    /// compiled (epoll on Linux, then polling), logged once.
    #[default]
    Auto,
    /// Exactly this backend, or an error.
    Only(BackendKind),
}

impl BackendChoice {
    /// Reads `EVENTIDE_BACKEND`; unset or empty means [`BackendChoice::Auto`].
    pub fn from_env() -> Result<BackendChoice, BackendError> {
        match std::env::var(BACKEND_ENV) {
            Ok(v) => v.parse(),
            Err(std::env::VarError::NotPresent) => Ok(BackendChoice::Auto),
            Err(std::env::VarError::NotUnicode(v)) => {
                Err(BackendError::BadChoice(v.to_string_lossy().into_owned()))
            }
        }
    }
}

impl std::str::FromStr for BackendChoice {
    type Err = BackendError;

    fn from_str(s: &str) -> Result<BackendChoice, BackendError> {
        match s.trim() {
            "" | "auto" => Ok(BackendChoice::Auto),
            "uring" | "io_uring" => Ok(BackendChoice::Only(BackendKind::Uring)),
            "poll" | "polling" => Ok(BackendChoice::Only(BackendKind::Poll)),
            "epoll" => Ok(BackendChoice::Only(BackendKind::Epoll)),
            other => Err(BackendError::BadChoice(other.to_owned())),
        }
    }
}

/// Why a reactor could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend was not compiled in (cargo features `uring`, `epoll`,
    /// `poll`).
    #[error("the {0} backend is not compiled into this build (cargo feature `{0}`)")]
    NotCompiled(BackendKind),
    /// The system refused the backend (seccomp, sysctl, limits, old kernel).
    #[error("the {backend} backend is not available here: {source}")]
    Refused {
        /// Which backend.
        backend: BackendKind,
        /// The system's answer.
        #[source]
        source: io::Error,
    },
    /// `EVENTIDE_BACKEND` holds something other than uring, epoll, poll or
    /// auto.
    #[error("{BACKEND_ENV}={0:?}: expected uring, epoll, poll or auto")]
    BadChoice(String),
    /// A setting (an environment variable, or a value set in code) holds
    /// something it does not accept.
    #[error("{setting}={value:?}: expected {expected}")]
    InvalidSetting {
        /// The environment variable or the setting's name in code.
        setting: &'static str,
        /// The refused value.
        value: String,
        /// What it accepts.
        expected: String,
    },
}

impl From<BackendError> for io::Error {
    fn from(e: BackendError) -> io::Error {
        let kind = match &e {
            BackendError::NotCompiled(_) => io::ErrorKind::Unsupported,
            BackendError::Refused { source, .. } => source.kind(),
            BackendError::BadChoice(_) | BackendError::InvalidSetting { .. } => {
                io::ErrorKind::InvalidInput
            }
        };
        io::Error::new(kind, e)
    }
}

/// A refused submission: the reason, and the operation handed back whole
/// (with its buffer).
#[derive(Debug, thiserror::Error)]
#[error("submission refused: {error}")]
pub struct SubmitError {
    /// Why: `AlreadyExists` (token in flight), `Unsupported` (a file
    /// operation on a readiness backend), or a system error.
    #[source]
    pub error: io::Error,
    /// The operation, untouched.
    pub op: Op,
}

/// Wakes a reactor blocked in [`Reactor::wait`] from any thread.
///
/// Cheap to clone; many wakes before the wait returns cost one system call
/// and make it return once.
#[derive(Clone, Debug)]
pub struct Waker {
    shared: Arc<sys::WakeShared>,
}

impl Waker {
    /// Makes the current or next [`Reactor::wait`] return.
    pub fn wake(&self) -> io::Result<()> {
        self.shared.wake()
    }
}

/// The reactor: submit operations, wait, collect completions.
///
/// It is bound to the thread that made it (`!Send`): io_uring is set up
/// with `SINGLE_ISSUER`, so only that thread may submit. Use a [`Waker`]
/// from other threads.
pub struct Reactor {
    backend: sys::Backend,
    ready: VecDeque<Completion>,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl fmt::Debug for Reactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reactor")
            .field("backend", &self.backend.kind())
            .field("in_flight", &self.backend.in_flight())
            .field("ready", &self.ready.len())
            .finish()
    }
}

impl Reactor {
    /// A reactor on the backend `EVENTIDE_BACKEND` names, `auto` if unset,
    /// with the io_uring settings the environment gives (see
    /// [`UringConfig::with_env`]).
    pub fn new() -> Result<Reactor, BackendError> {
        Reactor::with_choice(BackendChoice::from_env()?)
    }

    /// A reactor on exactly `kind`: an error if it is not compiled in or
    /// the system refuses it. Ignores `EVENTIDE_BACKEND`.
    pub fn with_backend(kind: BackendKind) -> Result<Reactor, BackendError> {
        Reactor::with_choice(BackendChoice::Only(kind))
    }

    /// A reactor as `choice` says, with the io_uring settings the
    /// environment gives (see [`UringConfig::with_env`]). Ignores
    /// `EVENTIDE_BACKEND`.
    pub fn with_choice(choice: BackendChoice) -> Result<Reactor, BackendError> {
        Reactor::with_config(choice, &UringConfig::default().with_env()?)
    }

    /// A reactor as `choice` says, its io_uring backend set up as `uring`
    /// says (the environment is not read, but for the test hooks
    /// `EVENTIDE_URING_AS_KERNEL` and `EVENTIDE_URING_FILE_OPS_EINVAL`).
    ///
    /// # Errors
    ///
    /// As [`Reactor::with_choice`], and [`BackendError::InvalidSetting`]
    /// for a value of `uring` out of range ([`UringConfig::validate`]) or
    /// an invalid test hook.
    pub fn with_config(
        choice: BackendChoice,
        uring: &UringConfig,
    ) -> Result<Reactor, BackendError> {
        uring.validate()?;
        let backend = match choice {
            BackendChoice::Only(kind) => sys::Backend::open(kind, uring)?,
            BackendChoice::Auto => open_auto(uring)?,
        };
        Ok(Reactor {
            backend,
            ready: VecDeque::with_capacity(256),
            _not_send: std::marker::PhantomData,
        })
    }

    /// The backend this reactor runs on.
    pub fn backend(&self) -> BackendKind {
        self.backend.kind()
    }

    /// Hands `op` to the reactor under `token`. On refusal the operation
    /// (and its buffer) comes back in the error.
    pub fn submit(&mut self, token: Token, op: Op) -> Result<(), SubmitError> {
        self.backend
            .submit(token, op, &mut self.ready)
            .map_err(|(error, op)| SubmitError { error, op })
    }

    /// Asks the operation under `token` to end; see the crate docs for what
    /// its completion then says. Returns whether it was in flight.
    pub fn cancel(&mut self, token: Token) -> bool {
        self.backend.cancel(token, &mut self.ready)
    }

    /// Starts what was submitted and waits until a completion is ready,
    /// `timeout` passes (`None`: no limit) or a [`Waker`] fires. Returns how
    /// many completions are ready. Does not block when some already are.
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        self.backend.wait(timeout, &mut self.ready)?;
        Ok(self.ready.len())
    }

    /// Takes the next ready completion.
    pub fn next_completion(&mut self) -> Option<Completion> {
        self.ready.pop_front()
    }

    /// Drains the ready completions.
    pub fn completions(&mut self) -> std::collections::vec_deque::Drain<'_, Completion> {
        self.ready.drain(..)
    }

    /// How many completions are ready to be taken.
    pub fn ready(&self) -> usize {
        self.ready.len()
    }

    /// How many operations are in flight (submitted, final completion not
    /// yet produced).
    pub fn in_flight(&self) -> usize {
        self.backend.in_flight()
    }

    /// A handle that wakes this reactor from any thread.
    pub fn waker(&self) -> Waker {
        Waker {
            shared: self.backend.notifier(),
        }
    }

    /// Gives a buffer back for the reactor to reuse for [`Op::recv_multi`]
    /// (buffers of another capacity are simply dropped). Every buffer a
    /// `recv_multi` completion carries counts against
    /// [`RECV_MULTI_LEND_LIMIT`] until it is recycled.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        self.backend.recycle(buf);
    }

    /// Takes a buffer a [`Op::recv_multi`] completion carried out of the
    /// lending count, for a caller that keeps it beyond its delivery (a
    /// stream piped into another sends the received buffer on as it is):
    /// it then no longer holds back the receives of others while it waits
    /// in a send queue. Returns it. Hand it back with [`Reactor::offer`],
    /// not [`Reactor::recycle`] (it is no longer lent).
    pub fn take_lent(&mut self, buf: Vec<u8>) -> Vec<u8> {
        self.backend.take_lent();
        buf
    }

    /// Offers a buffer that is not lent (one [`Reactor::take_lent`] took
    /// out of the count) for future [`Op::recv_multi`] receives: kept if it
    /// has their capacity and the reactor keeps fewer spares than it may
    /// lend, else dropped.
    pub fn offer(&mut self, buf: Vec<u8>) {
        self.backend.offer(buf);
    }

    /// The file operations this reactor runs natively: on io_uring what the
    /// kernel's probe reports, narrowed by `EVENTIDE_URING_FILE_OPS` (read
    /// at [`Reactor::new`]: a list as [`FileOps::parse`] takes, for testing
    /// and diagnosis) and by [`Reactor::restrict_file_ops`]; empty on
    /// polling. A file operation needing one outside it is refused with
    /// [`io::ErrorKind::Unsupported`], its buffer handed back.
    pub fn file_ops(&self) -> FileOps {
        self.backend.file_ops()
    }

    /// Narrows [`Reactor::file_ops`] to what is also in `keep` (for testing
    /// and diagnosis: the reactor then behaves as on a kernel without the
    /// others). Operations in flight are not affected.
    pub fn restrict_file_ops(&mut self, keep: FileOps) {
        self.backend.restrict_file_ops(keep);
    }

    /// io_uring details (setup flags, probed features); `None` on polling.
    pub fn uring_info(&self) -> Option<uring_ext::UringInfo> {
        #[cfg(all(feature = "uring", target_os = "linux"))]
        if let Some(u) = self.backend.uring() {
            return Some(u.info());
        }
        None
    }
}

fn open_auto(uring: &UringConfig) -> Result<sys::Backend, BackendError> {
    let mut last = None;
    for &kind in sys::compiled() {
        match sys::Backend::open(kind, uring) {
            Ok(b) => {
                if let Some(e) = &last {
                    log_fallback_once(e, kind);
                }
                return Ok(b);
            }
            // A setting that does not parse is the caller's mistake, not
            // the system's refusal: no fallback hides it.
            Err(e @ BackendError::InvalidSetting { .. }) => return Err(e),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or(BackendError::NotCompiled(BackendKind::Poll)))
}

fn log_fallback_once(why: &BackendError, chosen: BackendKind) {
    static LOGGED: std::sync::Once = std::sync::Once::new();
    LOGGED.call_once(|| {
        log::warn!("eventide-reactor: {why}; using the {chosen} backend");
    });
}
