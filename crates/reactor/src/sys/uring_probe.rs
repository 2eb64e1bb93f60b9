//! What the kernel's io_uring can do, found out at setup, never assumed.
//!
//! Every opcode, setup flag and feature the backend uses is listed here with
//! the kernel release that brought it. At setup the backend asks the kernel
//! (`IORING_REGISTER_PROBE` for opcodes, the feature bits of the setup
//! parameters, and one test request for cancel-by-descriptor, which has no
//! bit of its own) and uses only what it was told is there, with a tested
//! alternative for each missing piece:
//!
//! | missing | alternative |
//! |---|---|
//! | `IORING_FEAT_EXT_ARG` (5.11): a timeout argument to the wait | a `TIMEOUT` request submitted with the wait |
//! | cancel by descriptor (`IORING_ASYNC_CANCEL_FD`/`ALL`, 5.19) | a close cancels each of its descriptor's operations by `user_data`, then closes |
//! | `IORING_OP_SHUTDOWN` (5.11) | `shutdown(2)` at submission |
//! | multishot accept (5.19) | single-shot accepts, re-armed |
//! | multishot receive, provided-buffer rings (6.0) | single-shot receives, re-armed |
//! | `IORING_OP_FIXED_FD_INSTALL` (6.8) | ordinary descriptors for `read_file` |
//! | a file opcode (`OPENAT` 5.6 ... `MKDIRAT` 5.15) | the operation is refused (`Unsupported`); the facade runs it on its pool |
//! | `SINGLE_ISSUER`/`DEFER_TASKRUN` (6.0/6.1), `COOP_TASKRUN` (5.19) | setup without them |
//!
//! Without the probe itself (before 5.6), or without an opcode the backend
//! cannot do without (`READ` for the waker, `ACCEPT`, `CONNECT`, `SEND`,
//! `RECV`, `CLOSE`, `POLL_ADD`, `ASYNC_CANCEL`, and `TIMEOUT` where the
//! wait takes no timeout argument), the ring is refused with the reason,
//! and `auto` picks a readiness backend (epoll on Linux) and logs why, once.
//!
//! # Seeing an older kernel on a new one
//!
//! `EVENTIDE_URING_AS_KERNEL=5.15` (any `MAJOR.MINOR`) makes the backend
//! use only what that release had: every opcode, flag and feature newer
//! than it is treated as absent, whatever the running kernel answers. The
//! test suites run under `5.10`, `5.15` and `6.1` in CI, so each
//! alternative above is exercised on the machine at hand. (It cannot add
//! what the running kernel lacks.) An empty value means unset; a value that
//! does not parse is an error naming the variable.

use io_uring::opcode;
use std::fmt;
use std::io;

/// The environment variable that makes the backend see an older kernel.
pub(crate) const AS_KERNEL_ENV: &str = "EVENTIDE_URING_AS_KERNEL";

/// A kernel release, `major.minor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Release(pub(crate) u32, pub(crate) u32);

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

impl Release {
    /// Parses `MAJOR.MINOR` (a further `.patch` or `-suffix` is ignored).
    pub(crate) fn parse(s: &str) -> Option<Release> {
        let mut parts = s.trim().split(['.', '-']);
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(Release(major, minor))
    }
}

/// The release each opcode the backend uses first appeared in.
pub(crate) const OPCODES: &[(u8, &str, Release)] = &[
    (opcode::PollAdd::CODE, "POLL_ADD", Release(5, 1)),
    (opcode::Fsync::CODE, "FSYNC", Release(5, 1)),
    (opcode::Timeout::CODE, "TIMEOUT", Release(5, 4)),
    (opcode::Accept::CODE, "ACCEPT", Release(5, 5)),
    (opcode::AsyncCancel::CODE, "ASYNC_CANCEL", Release(5, 5)),
    (opcode::Connect::CODE, "CONNECT", Release(5, 5)),
    (opcode::OpenAt::CODE, "OPENAT", Release(5, 6)),
    (opcode::Close::CODE, "CLOSE", Release(5, 6)),
    (opcode::Statx::CODE, "STATX", Release(5, 6)),
    (opcode::Read::CODE, "READ", Release(5, 6)),
    (opcode::Write::CODE, "WRITE", Release(5, 6)),
    (opcode::Send::CODE, "SEND", Release(5, 6)),
    (opcode::Recv::CODE, "RECV", Release(5, 6)),
    (opcode::Shutdown::CODE, "SHUTDOWN", Release(5, 11)),
    (opcode::RenameAt::CODE, "RENAMEAT", Release(5, 11)),
    (opcode::UnlinkAt::CODE, "UNLINKAT", Release(5, 11)),
    (opcode::MkDirAt::CODE, "MKDIRAT", Release(5, 15)),
    (opcode::Socket::CODE, "SOCKET", Release(5, 19)),
    (opcode::SendZc::CODE, "SEND_ZC", Release(6, 0)),
    (
        opcode::FixedFdInstall::CODE,
        "FIXED_FD_INSTALL",
        Release(6, 8),
    ),
];

/// Opcodes the backend cannot work without (the wait's `TIMEOUT` is added
/// when the kernel lacks `EXT_ARG`).
const REQUIRED: &[u8] = &[
    opcode::Read::CODE,
    opcode::Accept::CODE,
    opcode::Connect::CODE,
    opcode::Send::CODE,
    opcode::Recv::CODE,
    opcode::Close::CODE,
    opcode::PollAdd::CODE,
    opcode::AsyncCancel::CODE,
];

/// `IORING_FEAT_EXT_ARG`.
pub(crate) const EXT_ARG_SINCE: Release = Release(5, 11);
/// `IORING_ASYNC_CANCEL_FD` and `_ALL`.
pub(crate) const CANCEL_FD_SINCE: Release = Release(5, 19);
/// `IORING_SETUP_COOP_TASKRUN` and `TASKRUN_FLAG`.
pub(crate) const COOP_TASKRUN_SINCE: Release = Release(5, 19);
/// `IORING_SETUP_DEFER_TASKRUN` (with `SINGLE_ISSUER`, 6.0).
pub(crate) const DEFER_TASKRUN_SINCE: Release = Release(6, 1);

/// The value of the environment variable `name`, trimmed, or `None` when
/// it is unset or empty. The one rule for every variable the backend reads:
/// empty means the default, as unset does; a value that does not parse is
/// an error naming the variable (the backend is then refused, and `auto`
/// says why as it falls back).
pub(crate) fn env_value(name: &'static str) -> io::Result<Option<String>> {
    match std::env::var(name) {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => Ok(Some(v.trim().to_owned())),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(v)) => {
            Err(bad_value(name, &v.to_string_lossy(), "UTF-8"))
        }
    }
}

/// The error for `name=value` where `expected` was: made into
/// [`BackendError::InvalidSetting`](crate::BackendError::InvalidSetting)
/// when the backend is opened, so that `auto` does not fall back over it.
pub(crate) fn bad_value(name: &'static str, value: &str, expected: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        crate::config::BadSetting {
            setting: name,
            value: value.to_owned(),
            expected: expected.to_owned(),
        },
    )
}

/// The release the backend should act as if it ran on: `None` for the
/// running kernel as it is; an error for a value that does not parse.
pub(crate) fn as_kernel() -> io::Result<Option<Release>> {
    let Some(value) = env_value(AS_KERNEL_ENV)? else {
        return Ok(None);
    };
    match Release::parse(&value) {
        Some(r) => Ok(Some(r)),
        None => Err(bad_value(
            AS_KERNEL_ENV,
            &value,
            "a kernel release such as 5.15",
        )),
    }
}

/// Says once per process which release the backend acts as.
pub(crate) fn log_limit(limit: Option<Release>) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    if let Some(r) = limit {
        ONCE.call_once(|| {
            log::info!("eventide-reactor: {AS_KERNEL_ENV}={r}: using only what {r} had");
        });
    }
}

/// Whether something that came in `since` may be used when acting as
/// `limit`.
pub(crate) fn allowed(limit: Option<Release>, since: Release) -> bool {
    limit.is_none_or(|l| l >= since)
}

/// The opcodes the kernel has, as the probe said and `limit` allows.
#[derive(Clone)]
pub(crate) struct Opcodes {
    have: [bool; 256],
}

impl fmt::Debug for Opcodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = OPCODES
            .iter()
            .filter(|(code, _, _)| self.has(*code))
            .map(|(_, name, _)| *name)
            .collect();
        f.debug_set().entries(names).finish()
    }
}

impl Opcodes {
    /// What `probe` found, less whatever came after `limit`.
    pub(crate) fn from_probe(probe: &io_uring::Probe, limit: Option<Release>) -> Opcodes {
        let mut have = [false; 256];
        for &(code, _, since) in OPCODES {
            have[usize::from(code)] = probe.is_supported(code) && allowed(limit, since);
        }
        Opcodes { have }
    }

    pub(crate) fn has(&self, code: u8) -> bool {
        self.have[usize::from(code)]
    }

    /// The first opcode the backend needs that is missing, by name.
    pub(crate) fn missing_required(&self, ext_arg: bool) -> Option<&'static str> {
        let timeout = (!ext_arg).then_some(opcode::Timeout::CODE);
        REQUIRED
            .iter()
            .copied()
            .chain(timeout)
            .find(|code| !self.has(*code))
            .map(name_of)
    }
}

fn name_of(code: u8) -> &'static str {
    OPCODES
        .iter()
        .find(|(c, _, _)| *c == code)
        .map_or("?", |(_, name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_parse_and_order() {
        assert_eq!(Release::parse("5.15"), Some(Release(5, 15)));
        assert_eq!(Release::parse(" 6.1.0-rc2 "), Some(Release(6, 1)));
        assert_eq!(Release::parse("6"), None);
        assert_eq!(Release::parse("six.one"), None);
        assert!(Release(5, 19) < Release(6, 0));
        assert!(Release(5, 9) < Release(5, 10));
        assert!(allowed(None, Release(9, 9)));
        assert!(allowed(Some(Release(5, 15)), Release(5, 11)));
        assert!(!allowed(Some(Release(5, 15)), Release(5, 19)));
    }

    #[test]
    fn the_table_is_in_release_order_and_names_each_opcode_once() {
        for w in OPCODES.windows(2) {
            assert!(w[0].2 <= w[1].2, "{} after {}", w[1].1, w[0].1);
        }
        for (i, a) in OPCODES.iter().enumerate() {
            assert!(OPCODES[i + 1..].iter().all(|b| b.0 != a.0), "{}", a.1);
        }
    }
}
