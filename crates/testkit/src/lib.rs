//! Test support shared by eventide's crates (not published).
//!
//! Docker's default seccomp profile, and others like it, make
//! `io_uring_setup` fail with `EPERM`. [`deny_io_uring_setup`] installs the
//! same refusal on the calling thread (and everything it starts or
//! executes afterwards), so the fallback to polling can be tested on any
//! machine. The `no-uring` binary runs a whole command under it:
//!
//! ```text
//! cargo run -p eventide-testkit --bin no-uring -- cargo test --workspace
//! ```

use std::io;

/// Installs a seccomp filter on the calling thread under which
/// `io_uring_setup` fails with `EPERM` and every other system call is
/// allowed. It is inherited by threads created and programs executed
/// afterwards, and cannot be removed. Sets `PR_SET_NO_NEW_PRIVS`, which a
/// filter needs without `CAP_SYS_ADMIN`.
///
/// # Errors
///
/// The `prctl` or `seccomp` call's error; `Unsupported` on an architecture
/// this filter does not know (it names x86-64 and AArch64).
#[cfg(target_os = "linux")]
pub fn deny_io_uring_setup() -> io::Result<()> {
    #[cfg(target_arch = "x86_64")]
    const ARCH: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
    #[cfg(target_arch = "aarch64")]
    const ARCH: u32 = 0xc000_00b7; // AUDIT_ARCH_AARCH64
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    return Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "the io_uring seccomp filter knows x86-64 and AArch64 only",
    ));
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
        const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
        const RET_K: u16 = 0x06; // BPF_RET | BPF_K
        let f = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
        let filter = [
            f(LD_W_ABS, 0, 0, 4), // seccomp_data.arch
            f(JEQ_K, 0, 3, ARCH), // another architecture: allow
            f(LD_W_ABS, 0, 0, 0), // seccomp_data.nr
            f(JEQ_K, 0, 1, libc::SYS_io_uring_setup as u32),
            f(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
            f(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
        ];
        let prog = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_ptr().cast_mut(),
        };
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `prog` points to a valid filter program (the array above),
        // both alive for the call; the kernel copies it.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &raw const prog,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Whether `io_uring_setup` is refused here (a filter, a sysctl): asks the
/// kernel for a one-entry ring and closes it.
#[cfg(target_os = "linux")]
pub fn io_uring_refused() -> bool {
    let mut params = [0u8; 120]; // struct io_uring_params, zeroed
    // SAFETY: io_uring_setup writes at most sizeof(io_uring_params) = 120
    // bytes into `params`, which is that large and alive for the call.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    if fd < 0 {
        return true;
    }
    // SAFETY: `fd` is the ring descriptor just made, owned by nobody else.
    unsafe { libc::close(fd as i32) };
    false
}

/// Outside Linux there is no io_uring: nothing to refuse, `Ok` at once
/// (the Linux version installs a seccomp filter).
#[cfg(not(target_os = "linux"))]
pub fn deny_io_uring_setup() -> io::Result<()> {
    Ok(())
}

/// Outside Linux there is no io_uring: always refused.
#[cfg(not(target_os = "linux"))]
pub fn io_uring_refused() -> bool {
    true
}
