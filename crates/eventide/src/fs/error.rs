//! Node's names and messages for system errors (libuv's `uv_err_name` and
//! `uv_strerror`), so that an fs error reads as Node's does:
//! `ENOENT: no such file or directory, open 'missing.txt'`.

/// The code (`"ENOENT"`) and libuv's message for an errno value, or
/// `("UNKNOWN", "unknown error")` for one libuv does not name.
pub(crate) fn describe(errno: i32) -> (&'static str, &'static str) {
    match errno {
        libc::EPERM => ("EPERM", "operation not permitted"),
        libc::ENOENT => ("ENOENT", "no such file or directory"),
        libc::ESRCH => ("ESRCH", "no such process"),
        libc::EINTR => ("EINTR", "interrupted system call"),
        libc::EIO => ("EIO", "i/o error"),
        libc::ENXIO => ("ENXIO", "no such device or address"),
        libc::E2BIG => ("E2BIG", "argument list too long"),
        libc::EBADF => ("EBADF", "bad file descriptor"),
        libc::EAGAIN => ("EAGAIN", "resource temporarily unavailable"),
        libc::ENOMEM => ("ENOMEM", "not enough memory"),
        libc::EACCES => ("EACCES", "permission denied"),
        libc::EFAULT => ("EFAULT", "bad address in system call argument"),
        libc::EBUSY => ("EBUSY", "resource busy or locked"),
        libc::EEXIST => ("EEXIST", "file already exists"),
        libc::EXDEV => ("EXDEV", "cross-device link not permitted"),
        libc::ENODEV => ("ENODEV", "no such device"),
        libc::ENOTDIR => ("ENOTDIR", "not a directory"),
        libc::EISDIR => ("EISDIR", "illegal operation on a directory"),
        libc::EINVAL => ("EINVAL", "invalid argument"),
        libc::ENFILE => ("ENFILE", "file table overflow"),
        libc::EMFILE => ("EMFILE", "too many open files"),
        libc::ENOTTY => ("ENOTTY", "inappropriate ioctl for device"),
        libc::ETXTBSY => ("ETXTBSY", "text file is busy"),
        libc::EFBIG => ("EFBIG", "file too large"),
        libc::ENOSPC => ("ENOSPC", "no space left on device"),
        libc::ESPIPE => ("ESPIPE", "invalid seek"),
        libc::EROFS => ("EROFS", "read-only file system"),
        libc::EMLINK => ("EMLINK", "too many links"),
        libc::EPIPE => ("EPIPE", "broken pipe"),
        libc::ERANGE => ("ERANGE", "result too large"),
        libc::ENAMETOOLONG => ("ENAMETOOLONG", "name too long"),
        libc::ENOSYS => ("ENOSYS", "function not implemented"),
        libc::ENOTEMPTY => ("ENOTEMPTY", "directory not empty"),
        libc::ELOOP => ("ELOOP", "too many symbolic links encountered"),
        #[cfg(target_os = "linux")]
        libc::EUNATCH => ("EUNATCH", "protocol driver not attached"),
        #[cfg(any(target_os = "linux", target_vendor = "apple"))]
        libc::ENODATA => ("ENODATA", "no data available"),
        #[cfg(target_os = "linux")]
        libc::ENONET => ("ENONET", "machine is not on the network"),
        libc::EPROTO => ("EPROTO", "protocol error"),
        libc::EOVERFLOW => ("EOVERFLOW", "value too large for defined data type"),
        libc::EILSEQ => ("EILSEQ", "illegal byte sequence"),
        libc::ENOTSOCK => ("ENOTSOCK", "socket operation on non-socket"),
        libc::EDESTADDRREQ => ("EDESTADDRREQ", "destination address required"),
        libc::EMSGSIZE => ("EMSGSIZE", "message too long"),
        libc::EPROTOTYPE => ("EPROTOTYPE", "protocol wrong type for socket"),
        libc::ENOPROTOOPT => ("ENOPROTOOPT", "protocol not available"),
        libc::EPROTONOSUPPORT => ("EPROTONOSUPPORT", "protocol not supported"),
        libc::ESOCKTNOSUPPORT => ("ESOCKTNOSUPPORT", "socket type not supported"),
        libc::ENOTSUP => ("ENOTSUP", "operation not supported on socket"),
        libc::EAFNOSUPPORT => ("EAFNOSUPPORT", "address family not supported"),
        libc::EADDRINUSE => ("EADDRINUSE", "address already in use"),
        libc::EADDRNOTAVAIL => ("EADDRNOTAVAIL", "address not available"),
        libc::ENETDOWN => ("ENETDOWN", "network is down"),
        libc::ENETUNREACH => ("ENETUNREACH", "network is unreachable"),
        libc::ECONNABORTED => ("ECONNABORTED", "software caused connection abort"),
        libc::ECONNRESET => ("ECONNRESET", "connection reset by peer"),
        libc::ENOBUFS => ("ENOBUFS", "no buffer space available"),
        libc::EISCONN => ("EISCONN", "socket is already connected"),
        libc::ENOTCONN => ("ENOTCONN", "socket is not connected"),
        libc::ESHUTDOWN => ("ESHUTDOWN", "cannot send after transport endpoint shutdown"),
        libc::ETIMEDOUT => ("ETIMEDOUT", "connection timed out"),
        libc::ECONNREFUSED => ("ECONNREFUSED", "connection refused"),
        libc::EHOSTDOWN => ("EHOSTDOWN", "host is down"),
        libc::EHOSTUNREACH => ("EHOSTUNREACH", "host is unreachable"),
        libc::EALREADY => ("EALREADY", "connection already in progress"),
        #[cfg(target_os = "linux")]
        libc::EREMOTEIO => ("EREMOTEIO", "remote I/O error"),
        libc::ECANCELED => ("ECANCELED", "operation canceled"),
        _ => ("UNKNOWN", "unknown error"),
    }
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[test]
    fn names_and_messages_are_libuvs() {
        assert_eq!(
            describe(libc::ENOENT),
            ("ENOENT", "no such file or directory")
        );
        assert_eq!(
            describe(libc::EISDIR),
            ("EISDIR", "illegal operation on a directory")
        );
        assert_eq!(
            describe(libc::EWOULDBLOCK),
            ("EAGAIN", "resource temporarily unavailable")
        );
        assert_eq!(describe(-7), ("UNKNOWN", "unknown error"));
    }
}
