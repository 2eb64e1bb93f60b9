//! `recv`, `read`, `send` and `write` made as the system calls themselves
//! on Linux, for the readiness backends and the facade's `try_write`.
//!
//! glibc's wrappers of these calls are cancellation points: once the
//! process has a second thread (a second loop, the pool), each call
//! brackets the system call with two atomic updates of the thread's
//! cancellation state (about 45 instructions per call,
//! `benches/callgrind-echo.sh`). Nothing here is ever cancelled (Rust does
//! not use `pthread_cancel`), so these skip them; result and `errno` are
//! the same. Elsewhere they are the C library's calls.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;

/// A `-1` result as the `errno` it set, else the count.
fn result(r: libc::c_long) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// `recv(fd, buf, buf.len(), 0)` into memory that need not be initialised:
/// the bytes received (the first that many of `buf` are then initialised).
///
/// # Errors
///
/// The system call's error (`EAGAIN` on an empty nonblocking socket).
pub fn recv(fd: RawFd, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    {
        let null = std::ptr::null_mut::<libc::c_void>();
        // SAFETY: `buf` is writable memory of `buf.len()` bytes for the
        // call; recvfrom with null address pointers is recv. (Every
        // argument is passed a register wide: `syscall` reads `long`s.)
        result(unsafe {
            libc::syscall(
                libc::SYS_recvfrom,
                libc::c_long::from(fd),
                buf.as_mut_ptr(),
                buf.len(),
                0 as libc::c_long,
                null,
                null,
            )
        })
    }
    #[cfg(not(target_os = "linux"))]
    // SAFETY: as above, through the C library.
    result(unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) } as libc::c_long)
}

/// `read(fd, buf, buf.len())` into memory that need not be initialised
/// (see [`recv`]).
///
/// # Errors
///
/// The system call's error.
pub fn read(fd: RawFd, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    // SAFETY: `buf` is writable memory of `buf.len()` bytes for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_read,
            libc::c_long::from(fd),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    #[cfg(not(target_os = "linux"))]
    // SAFETY: as above, through the C library.
    let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) } as libc::c_long;
    result(r)
}

/// `send(fd, data, data.len(), flags)`: the bytes the kernel took.
///
/// # Errors
///
/// The system call's error (`EAGAIN` on a full nonblocking socket, `EPIPE`
/// after the peer is gone; pass `MSG_NOSIGNAL` to get that error instead
/// of the signal).
pub fn send(fd: RawFd, data: &[u8], flags: libc::c_int) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    {
        let null = std::ptr::null::<libc::c_void>();
        // SAFETY: `data` is a live slice for the call and the kernel only
        // reads its bytes; sendto with no address is send.
        result(unsafe {
            libc::syscall(
                libc::SYS_sendto,
                libc::c_long::from(fd),
                data.as_ptr(),
                data.len(),
                libc::c_long::from(flags),
                null,
                0 as libc::c_long,
            )
        })
    }
    #[cfg(not(target_os = "linux"))]
    // SAFETY: as above, through the C library.
    result(unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), flags) } as libc::c_long)
}

/// `write(fd, data, data.len())`: the bytes the kernel took.
///
/// # Errors
///
/// The system call's error.
pub fn write(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    // SAFETY: `data` is a live slice for the call and the kernel only
    // reads its bytes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_write,
            libc::c_long::from(fd),
            data.as_ptr(),
            data.len(),
        )
    };
    #[cfg(not(target_os = "linux"))]
    // SAFETY: as above, through the C library.
    let r = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) } as libc::c_long;
    result(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_four_calls_move_bytes_and_report_errno() {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors.
        let rc = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        assert_eq!(rc, 0);
        let [a, b] = fds;
        let mut buf = [MaybeUninit::<u8>::uninit(); 16];
        let empty = recv(b, &mut buf).unwrap_err();
        assert_eq!(empty.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(send(a, b"hello", libc::MSG_NOSIGNAL).unwrap(), 5);
        assert_eq!(write(a, b" world").unwrap(), 6);
        assert_eq!(recv(b, &mut buf[..5]).unwrap(), 5);
        assert_eq!(read(b, &mut buf[5..]).unwrap(), 6);
        // SAFETY: the two calls initialised the first 11 bytes.
        let got: Vec<u8> = buf[..11]
            .iter()
            .map(|b| unsafe { b.assume_init() })
            .collect();
        assert_eq!(got, b"hello world");
        // SAFETY: `b` is ours; the peer is then gone.
        unsafe { libc::close(b) };
        let gone = send(a, b"x", libc::MSG_NOSIGNAL).unwrap_err();
        assert_eq!(gone.raw_os_error(), Some(libc::EPIPE));
        assert_eq!(
            write(-1, b"x").unwrap_err().raw_os_error(),
            Some(libc::EBADF)
        );
        // SAFETY: `a` is ours.
        unsafe { libc::close(a) };
    }
}
