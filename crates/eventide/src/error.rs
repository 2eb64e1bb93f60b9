//! The facade's one error type.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
    /// A file system operation failed (`eventide::fs`). Displays exactly as
    /// Node's error message does, e.g.
    /// `ENOENT: no such file or directory, open 'missing.txt'` or
    /// `EEXIST: file already exists, rename 'a' -> 'b'`.
    ///
    /// One error is Node's `SystemError` rather than a plain errno error:
    /// `rm` of a directory without `recursive` has the code
    /// `"ERR_FS_EISDIR"` (its errno is still `EISDIR`) and reads
    /// `Path is a directory: rm returned EISDIR (is a directory) p`.
    #[error("{}", FsMessage { code, syscall, path, dest, source })]
    Fs {
        /// Node's code for the errno, e.g. `"ENOENT"` (`"UNKNOWN"` when
        /// libuv has no name for it), or `"ERR_FS_EISDIR"` (see above).
        code: &'static str,
        /// The system call as Node names it, e.g. `"open"`, `"scandir"`.
        syscall: &'static str,
        /// The path it was called on, if any.
        path: Option<PathBuf>,
        /// The second path (rename, link, symlink, copyfile), if any.
        dest: Option<PathBuf>,
        /// What the system said (with its raw errno).
        #[source]
        source: io::Error,
    },
    /// A network operation failed (`eventide::net`). Displays as Node's
    /// error message does: `connect ECONNREFUSED 127.0.0.1:9`,
    /// `read ECONNRESET`, or for listen (which also names the error)
    /// `listen EADDRINUSE: address already in use 127.0.0.1:8080`.
    #[error("{}", NetMessage { code, syscall, address, source })]
    Net {
        /// Node's code for the errno, e.g. `"ECONNREFUSED"` (`"UNKNOWN"`
        /// when libuv has no name for it).
        code: &'static str,
        /// The system call as Node names it: `"connect"`, `"listen"`,
        /// `"read"`, `"write"`, `"shutdown"`, `"accept"`.
        syscall: &'static str,
        /// The address it was called with, if any (connect, listen).
        address: Option<SocketAddr>,
        /// What the system said (with its raw errno).
        #[source]
        source: io::Error,
    },
    /// A network operation on a Unix domain socket failed
    /// (`eventide::net`). Displays as Node's message does, with the path:
    /// `connect ENOENT /tmp/app.sock`, or for listen
    /// `listen EADDRINUSE: address already in use /tmp/app.sock`.
    #[error("{}", NetPathMessage { code, syscall, path, source })]
    NetPath {
        /// Node's code for the errno, e.g. `"ENOENT"`.
        code: &'static str,
        /// The system call as Node names it: `"connect"`, `"listen"`.
        syscall: &'static str,
        /// The socket's path.
        path: PathBuf,
        /// What the system said (with its raw errno).
        #[source]
        source: io::Error,
    },
    /// A child process could not be spawned or signalled
    /// (`eventide::process`). Displays as Node's message does:
    /// `spawn nosuchprog ENOENT`, `kill ESRCH`.
    #[error("{syscall} {code}")]
    Process {
        /// Node's code for the errno, e.g. `"ENOENT"`.
        code: &'static str,
        /// The system call as Node names it: `"spawn nosuchprog"` (with
        /// the program, as Node's `err.syscall`), `"kill"`.
        syscall: String,
        /// The program, for a spawn (Node's `err.path`).
        path: Option<PathBuf>,
        /// What the system said (with its raw errno).
        #[source]
        source: io::Error,
    },
    /// A child's output went past `exec_file`'s max buffer. Displays as
    /// Node's message does: `stdout maxBuffer length exceeded`; its code
    /// is Node's `ERR_CHILD_PROCESS_STDIO_MAXBUFFER`.
    #[error("{stream} maxBuffer length exceeded")]
    MaxBuffer {
        /// `"stdout"` or `"stderr"`.
        stream: &'static str,
    },
    /// A host name could not be resolved (`eventide::net::Loop::lookup`,
    /// and connects to a host name). Displays as Node's message does:
    /// `getaddrinfo ENOTFOUND nosuchhost.invalid`.
    #[error("{syscall} {code} {hostname}")]
    Dns {
        /// Node's code: `"ENOTFOUND"` for a name that does not exist (or
        /// has no address of the family asked), else the resolver's own
        /// (`"EAI_AGAIN"`, `"EAI_FAIL"`, ...) or, for a system error, the
        /// errno's (`"EMFILE"`).
        code: &'static str,
        /// `"getaddrinfo"`, as Node names it.
        syscall: &'static str,
        /// The name that was looked up.
        hostname: String,
    },
    /// An argument is invalid (Node's `ERR_INVALID_ARG_VALUE`), e.g. an
    /// unknown open flag string
    /// (`The argument 'flags' is invalid. Received 'rw'`) or a path with a
    /// NUL byte (`The argument 'path' must be a string, Uint8Array, or URL
    /// without null bytes. Received 'a\x00b'`).
    #[error("The argument '{name}' {reason}. Received {received}")]
    InvalidArgValue {
        /// The argument's name, as Node's documentation calls it.
        name: &'static str,
        /// Why, in Node's words: `"is invalid"` unless Node says more.
        reason: &'static str,
        /// What was received, quoted as Node's `util.inspect` quotes it.
        received: String,
    },
    /// A number is outside the range its argument allows (Node's
    /// `ERR_OUT_OF_RANGE`), e.g. a read stream's `start` after its `end`:
    /// `The value of "start" is out of range. It must be <= "end" (here:
    /// 2). Received 5`.
    #[error("The value of \"{name}\" is out of range. It must be {range}. Received {received}")]
    OutOfRange {
        /// The argument's name, as Node's documentation calls it.
        name: &'static str,
        /// What it must be, as Node words it (`<= "end" (here: 2)`).
        range: String,
        /// What was received.
        received: String,
    },
    /// A stream was used after it was destroyed (Node's
    /// `ERR_STREAM_DESTROYED`): `Cannot call end after a stream was
    /// destroyed`.
    #[error("Cannot call {method} after a stream was destroyed")]
    StreamDestroyed {
        /// The method called, e.g. `"end"`.
        method: &'static str,
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
    /// The handle was made by another loop: a key names a handle only in
    /// the loop that made it.
    #[error("foreign handle: {what} belongs to another loop")]
    ForeignHandle {
        /// What kind of handle, e.g. `"work request"`.
        what: &'static str,
    },
    /// `run` was called from inside a callback of the same loop.
    #[error("Loop::run called from inside one of the loop's own callbacks")]
    Reentrant,
    /// The reactor backend could not be set up.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The pool configuration is invalid.
    #[error(transparent)]
    PoolConfig(#[from] ConfigError),
    /// A setting of [`crate::LoopBuilder`] or an environment variable it
    /// reads holds a value it does not accept (see
    /// `docs/configuration.md`): `EVENTIDE_CLOCK="fast": expected std or tsc`.
    #[error("{setting}={value:?}: expected {expected}")]
    InvalidConfig {
        /// The environment variable (`EVENTIDE_CLOCK`) or the builder
        /// method (`LoopBuilder::pool_threads`).
        setting: &'static str,
        /// The refused value, as text.
        value: String,
        /// What the setting accepts.
        expected: String,
    },
    /// An error of the program's own, made with [`Error::other`]: what a
    /// callback hands [`crate::Loop::fail`] for `run()` to return.
    /// Displays as the inner error does; `downcast_ref` it back with
    /// [`Error::get_ref`].
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync + 'static>),
}

/// `Result` with [`Error`] as its error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an error of the program's own (any error type, or a string)
    /// as [`Error::Other`], to stop the loop with it
    /// ([`crate::Loop::fail`]) or return it where an eventide error goes.
    ///
    /// ```
    /// #[derive(Debug)]
    /// struct BadInput;
    /// impl std::fmt::Display for BadInput {
    ///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    ///         f.write_str("bad input")
    ///     }
    /// }
    /// impl std::error::Error for BadInput {}
    ///
    /// let mut lp = eventide::Loop::new()?;
    /// lp.set_immediate(|lp| lp.fail(eventide::Error::other(BadInput)));
    /// let error = lp.run().unwrap_err();
    /// assert_eq!(error.to_string(), "bad input");
    /// assert!(error.get_ref().is_some_and(|e| e.is::<BadInput>()));
    /// # Ok::<(), eventide::Error>(())
    /// ```
    pub fn other(error: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Error {
        Error::Other(error.into())
    }

    /// The program's own error inside an [`Error::Other`], to downcast.
    pub fn get_ref(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        match self {
            Error::Other(inner) => Some(&**inner),
            _ => None,
        }
    }

    pub(crate) fn io(op: &'static str, source: io::Error) -> Error {
        Error::Io { op, source }
    }

    /// A file system error, as Node reports it.
    pub(crate) fn fs(
        syscall: &'static str,
        path: Option<PathBuf>,
        dest: Option<PathBuf>,
        source: io::Error,
    ) -> Error {
        // Node's rm checks the kind before it removes anything and throws
        // ERR_FS_EISDIR (a SystemError) for a directory without
        // `recursive`; that is the one step whose syscall is "rm".
        let code = if syscall == "rm" && source.raw_os_error() == Some(libc::EISDIR) {
            ERR_FS_EISDIR
        } else {
            code_of(&source)
        };
        Error::Fs {
            code,
            syscall,
            path,
            dest,
            source,
        }
    }

    /// A network error, as Node reports it.
    pub(crate) fn net(
        syscall: &'static str,
        address: Option<SocketAddr>,
        source: io::Error,
    ) -> Error {
        Error::Net {
            code: code_of(&source),
            syscall,
            address,
            source,
        }
    }

    /// A network error on a Unix domain socket, as Node reports it.
    pub(crate) fn process(syscall: String, path: Option<PathBuf>, source: io::Error) -> Error {
        Error::Process {
            code: code_of(&source),
            syscall,
            path,
            source,
        }
    }

    pub(crate) fn net_path(syscall: &'static str, path: &Path, source: io::Error) -> Error {
        Error::NetPath {
            code: code_of(&source),
            syscall,
            path: path.to_path_buf(),
            source,
        }
    }

    /// Node's error code, for errors that have one: `"ENOENT"`, `"EEXIST"`
    /// ... for system errors of fs operations, `"ERR_INVALID_ARG_VALUE"`
    /// for invalid arguments, `"ERR_OUT_OF_RANGE"`, `"ERR_STREAM_DESTROYED"`. Match on it as on Node's `err.code`.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            Error::Fs { code, .. }
            | Error::Net { code, .. }
            | Error::NetPath { code, .. }
            | Error::Dns { code, .. }
            | Error::Process { code, .. } => Some(code),
            Error::MaxBuffer { .. } => Some("ERR_CHILD_PROCESS_STDIO_MAXBUFFER"),
            Error::InvalidArgValue { .. } => Some("ERR_INVALID_ARG_VALUE"),
            Error::OutOfRange { .. } => Some("ERR_OUT_OF_RANGE"),
            Error::StreamDestroyed { .. } => Some("ERR_STREAM_DESTROYED"),
            // An aborted operation's error (`task::TaskError`): ABORT_ERR.
            Error::Other(inner) => inner
                .downcast_ref::<crate::task::TaskError>()
                .and_then(crate::task::TaskError::code),
            _ => None,
        }
    }

    /// The raw OS error number, for errors that come from a system call.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Fs { source, .. }
            | Error::Io { source, .. }
            | Error::Net { source, .. }
            | Error::NetPath { source, .. }
            | Error::Process { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// The [`io::ErrorKind`] that best describes this error.
    ///
    /// System errors keep their errno's kind. The loop's own errors are
    /// mapped so that a generic retry loop (one that retries
    /// [`io::ErrorKind::Interrupted`], as `std::io::Read::read_exact`
    /// does, or [`io::ErrorKind::WouldBlock`], as non-blocking code does)
    /// never retries what another try cannot fix:
    ///
    /// - [`Error::Cancelled`] is [`io::ErrorKind::Other`]: the work was
    ///   cancelled on purpose ([`crate::Loop::cancel_work`]); running it
    ///   again would undo that decision. (`Interrupted` means "a signal
    ///   cut the call short, try again"; tokio's `JoinError` for a
    ///   cancelled task also becomes `Other`.)
    /// - [`Error::Reentrant`] is [`io::ErrorKind::Other`]: `run` called
    ///   from inside the loop's own callback is a bug in the calling
    ///   code, and it fails the same way every time. (`WouldBlock` means
    ///   "not ready yet, try again when it is".)
    /// - [`Error::Panicked`] and [`Error::NotRun`] are `Other` too, as
    ///   is [`Error::Other`] unless it holds an `io::Error` (then its kind);
    ///   [`Error::AlreadyRunning`] is [`io::ErrorKind::ResourceBusy`]
    ///   and [`Error::Stale`] [`io::ErrorKind::NotFound`], neither of
    ///   which std or tokio retries; [`Error::ForeignHandle`] is
    ///   [`io::ErrorKind::InvalidInput`] (a bug in the calling code).
    ///
    /// No error of this crate maps to `Interrupted` or `WouldBlock` unless
    /// the system call itself answered `EINTR` or `EAGAIN`.
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            Error::Io { source, .. }
            | Error::Fs { source, .. }
            | Error::Net { source, .. }
            | Error::NetPath { source, .. }
            | Error::Process { source, .. } => source.kind(),
            Error::MaxBuffer { .. } => io::ErrorKind::FileTooLarge,
            Error::Dns { code, .. } if *code == "ENOTFOUND" => io::ErrorKind::NotFound,
            Error::Dns { .. } => io::ErrorKind::Other,
            Error::InvalidArgValue { .. } | Error::OutOfRange { .. } => io::ErrorKind::InvalidInput,
            Error::StreamDestroyed { .. } => io::ErrorKind::BrokenPipe,
            Error::Cancelled => io::ErrorKind::Other,
            Error::Panicked { .. } | Error::NotRun(_) => io::ErrorKind::Other,
            Error::AlreadyRunning => io::ErrorKind::ResourceBusy,
            Error::Stale { .. } => io::ErrorKind::NotFound,
            Error::ForeignHandle { .. } => io::ErrorKind::InvalidInput,
            Error::Reentrant => io::ErrorKind::Other,
            Error::Backend(BackendError::Refused { source, .. }) => source.kind(),
            Error::Backend(BackendError::NotCompiled(_)) => io::ErrorKind::Unsupported,
            Error::Backend(_) | Error::PoolConfig(_) | Error::InvalidConfig { .. } => {
                io::ErrorKind::InvalidInput
            }
            // The program's own: an io::Error keeps its kind.
            Error::Other(inner) => inner
                .downcast_ref::<io::Error>()
                .map_or(io::ErrorKind::Other, io::Error::kind),
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

/// Node's code for `rm` of a directory without `recursive`.
const ERR_FS_EISDIR: &str = "ERR_FS_EISDIR";

/// `value` quoted as Node's `util.inspect` quotes a string in an error
/// message: single quotes, or double quotes when it holds a `'` and no
/// `"`, or backticks when it holds both and no `` ` `` or `${`; control
/// characters (and U+007F to U+009F) as `\xNN` but for `\b \t \n \f
/// \r`, and `\\` for a backslash.
pub(crate) fn inspect_str(value: &str) -> String {
    let quote = if !value.contains('\'') {
        '\''
    } else if !value.contains('"') {
        '"'
    } else if !value.contains('`') && !value.contains("${") {
        '`'
    } else {
        '\''
    };
    let mut out = String::with_capacity(value.len() + 2);
    out.push(quote);
    for c in value.chars() {
        match c {
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            '\\' => out.push_str("\\\\"),
            '\'' if quote == '\'' => out.push_str("\\'"),
            c if (c as u32) < 0x20 || (0x7f..=0x9f).contains(&(c as u32)) => {
                out.push_str(&format!("\\x{:02X}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Node's code for a system error, `"UNKNOWN"` for one without a number.
fn code_of(source: &io::Error) -> &'static str {
    match source.raw_os_error() {
        Some(errno) => crate::fs::error::describe(errno).0,
        None => "UNKNOWN",
    }
}

/// Node's message for a net error: `syscall CODE address:port`; listen
/// also names the error (`listen CODE: message address:port`), as Node's
/// `UVExceptionWithHostPort` does and its `ExceptionWithHostPort` does not.
struct NetMessage<'a> {
    code: &'a str,
    syscall: &'a str,
    address: &'a Option<SocketAddr>,
    source: &'a io::Error,
}

/// `syscall CODE`, and for listen `: message` after it (Node's
/// `UVExceptionWithHostPort`), the start of every net error's message.
fn write_syscall_code(
    f: &mut fmt::Formatter<'_>,
    syscall: &str,
    code: &str,
    source: &io::Error,
) -> fmt::Result {
    write!(f, "{syscall} {code}")?;
    if syscall == "listen" {
        match source.raw_os_error() {
            Some(errno) => write!(f, ": {}", crate::fs::error::describe(errno).1)?,
            None => write!(f, ": {source}")?,
        }
    }
    Ok(())
}

impl fmt::Display for NetMessage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_syscall_code(f, self.syscall, self.code, self.source)?;
        match self.address {
            // Node leaves port 0 out (`listen EADDRNOTAVAIL: address not
            // available 10.254.254.254`).
            Some(address) if address.port() == 0 => write!(f, " {}", address.ip())?,
            // Node writes `::1:9`, without brackets.
            Some(address) => write!(f, " {}:{}", address.ip(), address.port())?,
            None => {}
        }
        Ok(())
    }
}

/// Node's message for a net error on a path: `syscall CODE path`, listen
/// as for addresses (`listen CODE: message path`).
struct NetPathMessage<'a> {
    code: &'a str,
    syscall: &'a str,
    path: &'a Path,
    source: &'a io::Error,
}

impl fmt::Display for NetPathMessage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_syscall_code(f, self.syscall, self.code, self.source)?;
        write!(f, " {}", self.path.display())
    }
}

/// Node's message for an fs error: `CODE: message, syscall 'path' -> 'dest'`.
struct FsMessage<'a> {
    code: &'a str,
    syscall: &'a str,
    path: &'a Option<PathBuf>,
    dest: &'a Option<PathBuf>,
    source: &'a io::Error,
}

impl fmt::Display for FsMessage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.code == ERR_FS_EISDIR {
            // Node's SystemError: `prefix: syscall returned CODE (message)
            // path`, with its own message for the errno.
            write!(
                f,
                "Path is a directory: {} returned EISDIR (is a directory)",
                self.syscall
            )?;
            if let Some(path) = self.path {
                write!(f, " {}", path.display())?;
            }
            if let Some(dest) = self.dest {
                write!(f, " => {}", dest.display())?;
            }
            return Ok(());
        }
        match self.source.raw_os_error() {
            // Node's own words for the watch limit (`fs.watch`).
            Some(libc::ENOSPC) if self.syscall == "watch" => write!(
                f,
                "{}: System limit for number of file watchers reached, {}",
                self.code, self.syscall
            )?,
            Some(errno) => {
                let (_, message) = crate::fs::error::describe(errno);
                write!(f, "{}: {message}, {}", self.code, self.syscall)?;
            }
            None => write!(f, "{}: {}, {}", self.code, self.source, self.syscall)?,
        }
        if let Some(path) = self.path {
            write!(f, " '{}'", path.display())?;
        }
        if let Some(dest) = self.dest {
            write!(f, " -> '{}'", dest.display())?;
        }
        Ok(())
    }
}

impl From<Error> for io::Error {
    /// `Error::Io` gives its source back; every other error (an fs error
    /// too, so that its message keeps the path) becomes an `io::Error` of
    /// the same [`Error::kind`] wrapping it: `get_ref()` downcasts to
    /// [`Error`], whose [`Error::errno`] has the raw number.
    fn from(error: Error) -> io::Error {
        match error {
            Error::Io { source, .. } => source,
            other => io::Error::new(other.kind(), other),
        }
    }
}
