//! The io_uring backend's settings, in code ([`UringConfig`]) and from the
//! environment ([`UringConfig::with_env`]).

use crate::{BackendError, FileOps};

/// `EVENTIDE_URING_FILE_OPS`: narrows the file operations io_uring runs
/// natively (a list as [`FileOps::parse`] takes).
pub const URING_FILE_OPS_ENV: &str = "EVENTIDE_URING_FILE_OPS";
/// `EVENTIDE_URING_NO_DIRECT`: set to 1, `read_file` never uses direct
/// descriptors.
pub const URING_NO_DIRECT_ENV: &str = "EVENTIDE_URING_NO_DIRECT";
/// `EVENTIDE_URING_NO_PBUF`: set to 1, `recv_multi` never uses a
/// provided-buffer ring.
pub const URING_NO_PBUF_ENV: &str = "EVENTIDE_URING_NO_PBUF";

/// The submission queue size used unless [`UringConfig::sq_entries`] says
/// otherwise.
pub const DEFAULT_SQ_ENTRIES: u32 = 256;
/// The largest submission queue the kernel accepts (`IORING_MAX_ENTRIES`).
pub const MAX_SQ_ENTRIES: u32 = 32_768;

/// How the io_uring backend sets itself up; ignored by the other backends.
///
/// Each switch can only take away from what the running kernel offers:
/// a feature the kernel lacks stays off whatever is asked here.
///
/// ```
/// use eventide_reactor::{FileOps, UringConfig};
///
/// let mut config = UringConfig::default();
/// config.file_ops = FileOps::ALL.difference(FileOps::STATX);
/// config.provided_buffers = false;
/// assert_eq!(config.sq_entries, 256);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct UringConfig {
    /// The file operations to run natively where the kernel has them;
    /// the others are refused with `Unsupported` (a caller such as
    /// eventide's `fs` then runs them on its pool). Default: all.
    pub file_ops: FileOps,
    /// Whether `read_file` opens into direct descriptors (a fixed-file
    /// table, kernel 6.8+). Default: true.
    pub direct_descriptors: bool,
    /// Whether `recv_multi` uses multishot recv from a provided-buffer
    /// ring (kernel 6.0+). Default: true.
    pub provided_buffers: bool,
    /// Submission queue entries, 1 to [`MAX_SQ_ENTRIES`] (the kernel
    /// rounds up to a power of two); the completion queue gets 16 times
    /// as many. Default: [`DEFAULT_SQ_ENTRIES`].
    pub sq_entries: u32,
}

impl Default for UringConfig {
    fn default() -> Self {
        UringConfig {
            file_ops: FileOps::ALL,
            direct_descriptors: true,
            provided_buffers: true,
            sq_entries: DEFAULT_SQ_ENTRIES,
        }
    }
}

impl UringConfig {
    /// This configuration narrowed by the environment:
    /// [`URING_FILE_OPS_ENV`] keeps only the operations it lists,
    /// [`URING_NO_DIRECT_ENV`] and [`URING_NO_PBUF_ENV`] set to 1 turn
    /// their feature off. The variables are switches for testing and
    /// diagnosis, so they act whatever the code asked: they can only turn
    /// things off. Unset or empty variables change nothing.
    ///
    /// # Errors
    ///
    /// [`BackendError::InvalidSetting`] naming the variable, its value and
    /// what it accepts.
    pub fn with_env(mut self) -> Result<Self, BackendError> {
        if let Some(value) = env_value(URING_FILE_OPS_ENV)? {
            let ops = FileOps::parse(&value).map_err(|word| {
                invalid(
                    URING_FILE_OPS_ENV,
                    &value,
                    format!(
                        "a comma-separated list of file operations (all, none, openat, read, \
                         write, statx, fsync, unlinkat, renameat, mkdirat, close, -NAME); \
                         {word:?} is not one"
                    ),
                )
            })?;
            log::info!("eventide-reactor: {URING_FILE_OPS_ENV}={value}: {ops:?}");
            self.file_ops = self.file_ops.intersection(ops);
        }
        if env_flag(URING_NO_DIRECT_ENV)? {
            self.direct_descriptors = false;
        }
        if env_flag(URING_NO_PBUF_ENV)? {
            self.provided_buffers = false;
        }
        Ok(self)
    }

    /// Checks the values set in code.
    ///
    /// # Errors
    ///
    /// [`BackendError::InvalidSetting`] for `sq_entries` outside
    /// 1..=[`MAX_SQ_ENTRIES`].
    pub fn validate(&self) -> Result<(), BackendError> {
        if !(1..=MAX_SQ_ENTRIES).contains(&self.sq_entries) {
            return Err(invalid(
                "UringConfig::sq_entries",
                &self.sq_entries.to_string(),
                format!("a number from 1 to {MAX_SQ_ENTRIES}"),
            ));
        }
        Ok(())
    }
}

fn invalid(setting: &'static str, value: &str, expected: String) -> BackendError {
    BackendError::InvalidSetting {
        setting,
        value: value.to_owned(),
        expected,
    }
}

/// A setting's refused value, carried inside an `io::Error` out of a
/// backend's setup (see [`BadSetting::from_io`]).
#[derive(Debug)]
#[cfg_attr(not(all(feature = "uring", target_os = "linux")), allow(dead_code))]
pub(crate) struct BadSetting {
    pub(crate) setting: &'static str,
    pub(crate) value: String,
    pub(crate) expected: String,
}

impl std::fmt::Display for BadSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let BadSetting {
            setting,
            value,
            expected,
        } = self;
        write!(f, "{setting}={value:?}: expected {expected}")
    }
}

impl std::error::Error for BadSetting {}

#[cfg_attr(not(all(feature = "uring", target_os = "linux")), allow(dead_code))]
impl BadSetting {
    /// The backend's setup error as a [`BackendError`]: an invalid setting
    /// when it carries a [`BadSetting`], else `Refused`.
    pub(crate) fn from_io(backend: crate::BackendKind, source: std::io::Error) -> BackendError {
        if !source.get_ref().is_some_and(|e| e.is::<BadSetting>()) {
            return BackendError::Refused { backend, source };
        }
        let bad = source
            .into_inner()
            .and_then(|e| e.downcast::<BadSetting>().ok())
            .expect("the error was seen to carry a BadSetting");
        let BadSetting {
            setting,
            value,
            expected,
        } = *bad;
        BackendError::InvalidSetting {
            setting,
            value,
            expected,
        }
    }
}

/// The variable's value, trimmed; `None` when unset or blank.
fn env_value(name: &'static str) -> Result<Option<String>, BackendError> {
    match std::env::var(name) {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => Ok(Some(v.trim().to_owned())),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(v)) => {
            Err(invalid(name, &v.to_string_lossy(), "UTF-8 text".to_owned()))
        }
    }
}

/// A switch: `1`/`true`/`yes`/`on`, or `0`/`false`/`no`/`off` (or unset).
fn env_flag(name: &'static str) -> Result<bool, BackendError> {
    match env_value(name)?.as_deref() {
        None => Ok(false),
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(invalid(
                name,
                v,
                "1 or 0 (true/false, yes/no, on/off)".to_owned(),
            )),
        },
    }
}
