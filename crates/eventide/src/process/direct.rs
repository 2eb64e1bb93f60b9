//! Linux: a child made with `clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD)`
//! and nothing else before its `exec` (what glibc's `posix_spawn` does,
//! without its costs for options eventide never sets, and with the
//! pidfd from the same call).
//!
//! The child shares the parent's memory until its `exec` (or its exit)
//! and the parent's thread is suspended meanwhile (`CLONE_VFORK`), so:
//!
//! - everything the child uses is made in the parent before the `clone`
//!   ([`Plan`]: C strings, pointer arrays, descriptors), and the child
//!   only makes system calls through libc (async-signal-safe ones),
//!   reads the plan and writes one word, the errno of what failed, which
//!   the parent reads when it resumes: a failed `exec` (or `chdir`,
//!   `setuid`, ...) is the spawn's error, and that child is reaped before
//!   the spawn returns. No pipe, no half-made child;
//! - it runs on a stack of its own (one per thread, reused: the parent is
//!   suspended while a child uses it);
//! - every signal is blocked in the parent's thread across the `clone`,
//!   so no handler of the parent's runs in the child on shared memory
//!   (eventide's dispatcher counts deliveries in shared atomics). The
//!   child sets every signal's disposition to the default (as libuv's
//!   child does, so Node's children start with default dispositions,
//!   `SIGPIPE` included), then unblocks them all (an empty mask, as
//!   libuv and std give), then `exec`s.
//!
//! The program is looked up as `execvp` does, in the child's `PATH` (the
//! parent's unless the options set or clear it; `/bin:/usr/bin` when
//! unset): the candidates are made in the parent, the child tries them in
//! order, goes on after `ENOENT`, `ENOTDIR`, `ESTALE`, `ENODEV`,
//! `ETIMEDOUT` and `EACCES`, and reports `EACCES` if some candidate said
//! so, else the last error.

use std::cell::Cell;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicI32, Ordering};

/// The child's stack size: the child calls a few libc functions (their
/// first call may go through the dynamic linker's lazy binding, which
/// saves the vector registers on the stack).
const STACK_SIZE: usize = 64 * 1024;

/// What a spawned child is to be given.
pub(super) struct Request<'a> {
    pub(super) program: &'a OsStr,
    pub(super) args: &'a [OsString],
    pub(super) env_clear: bool,
    pub(super) env: &'a [(OsString, Option<OsString>)],
    pub(super) cwd: Option<&'a std::path::Path>,
    /// The descriptor to put on 0, 1 and 2, or -1 to leave the parent's.
    pub(super) stdio: [RawFd; 3],
    pub(super) detached: bool,
    pub(super) uid: Option<u32>,
    pub(super) gid: Option<u32>,
    /// Ask for a pidfd (`CLONE_PIDFD`).
    pub(super) pidfd: bool,
}

use super::Made;

/// Everything the child reads, made by the parent: raw pointers into
/// vectors the parent keeps alive (and does not touch) until the child
/// has `exec`d or exited.
struct Plan {
    /// Null-terminated array of paths to try, in order.
    candidates: *const *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    /// Null for none.
    cwd: *const libc::c_char,
    stdio: [RawFd; 3],
    detached: bool,
    setgroups: bool,
    gid: libc::gid_t,
    has_gid: bool,
    uid: libc::uid_t,
    has_uid: bool,
    /// The errno of the step that failed, written by the child.
    errno: AtomicI32,
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// The child's environment: the parent's (unless cleared) with the
/// options' changes, as `KEY=VALUE` strings; and its `PATH`.
fn environment(req: &Request<'_>) -> io::Result<(Vec<CString>, Option<OsString>)> {
    let mut vars: Vec<(OsString, OsString)> = if req.env_clear {
        Vec::new()
    } else {
        std::env::vars_os().collect()
    };
    for (key, value) in req.env {
        vars.retain(|(k, _)| k != key);
        if let Some(value) = value {
            vars.push((key.clone(), value.clone()));
        }
    }
    let path = vars
        .iter()
        .find(|(k, _)| k.as_bytes() == b"PATH")
        .map(|(_, v)| v.clone());
    let mut strings = Vec::with_capacity(vars.len());
    for (k, v) in &vars {
        let mut kv = Vec::with_capacity(k.len() + v.len() + 1);
        kv.extend_from_slice(k.as_bytes());
        kv.push(b'=');
        kv.extend_from_slice(v.as_bytes());
        strings.push(cstring(&kv)?);
    }
    Ok((strings, path))
}

/// The paths to try: the program itself if it has a `/`, else each
/// directory of `path` (an empty entry is the working directory).
fn candidates(program: &OsStr, path: Option<&OsStr>) -> io::Result<Vec<CString>> {
    let name = program.as_bytes();
    if name.is_empty() {
        return Err(io::Error::from_raw_os_error(libc::ENOENT));
    }
    if name.contains(&b'/') {
        return Ok(vec![cstring(name)?]);
    }
    let path = path.map_or(&b"/bin:/usr/bin"[..], |p| p.as_bytes());
    let mut out = Vec::new();
    for dir in path.split(|&b| b == b':') {
        let mut full = Vec::with_capacity(dir.len() + name.len() + 1);
        if !dir.is_empty() {
            full.extend_from_slice(dir);
            full.push(b'/');
        }
        full.extend_from_slice(name);
        out.push(cstring(&full)?);
    }
    Ok(out)
}

fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    let mut p: Vec<_> = strings.iter().map(|s| s.as_ptr()).collect();
    p.push(std::ptr::null());
    p
}

/// This thread's child stack (the bottom page a guard), made at its
/// first spawn and kept for the thread's life.
fn stack_top() -> io::Result<*mut libc::c_void> {
    thread_local! {
        static STACK: Cell<usize> = const { Cell::new(0) };
    }
    // SAFETY: sysconf takes no pointers.
    let guard = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
    let base = STACK.with(Cell::get);
    let base = if base != 0 {
        base
    } else {
        // SAFETY: an anonymous private mapping: no pointer is read.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                STACK_SIZE + guard,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the first page of the mapping just made.
        if unsafe { libc::mprotect(p, guard, libc::PROT_NONE) } != 0 {
            let e = io::Error::last_os_error();
            // SAFETY: the mapping just made, unused.
            unsafe { libc::munmap(p, STACK_SIZE + guard) };
            return Err(e);
        }
        let base = p as usize;
        STACK.with(|s| s.set(base));
        base
    };
    // The stack grows down from the end of the mapping (16-aligned:
    // the mapping is page-aligned).
    Ok((base + guard + STACK_SIZE) as *mut libc::c_void)
}

/// Makes the child, or returns why it could not be made (no child then
/// exists).
pub(super) fn spawn(req: &Request<'_>) -> io::Result<Made> {
    let (env, path) = environment(req)?;
    let candidates = candidates(req.program, path.as_deref())?;
    let mut argv = vec![cstring(req.program.as_bytes())?];
    for a in req.args {
        argv.push(cstring(a.as_bytes())?);
    }
    let cwd = req
        .cwd
        .map(|c| cstring(c.as_os_str().as_bytes()))
        .transpose()?;
    let candidate_ptrs = pointers(&candidates);
    let argv_ptrs = pointers(&argv);
    let env_ptrs = pointers(&env);
    // SAFETY: getuid takes no arguments.
    let root = req.uid.is_some() && unsafe { libc::getuid() } == 0;
    let plan = Plan {
        candidates: candidate_ptrs.as_ptr(),
        argv: argv_ptrs.as_ptr(),
        envp: env_ptrs.as_ptr(),
        cwd: cwd.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
        stdio: req.stdio,
        detached: req.detached,
        setgroups: root,
        gid: req.gid.unwrap_or(0),
        has_gid: req.gid.is_some(),
        uid: req.uid.unwrap_or(0),
        has_uid: req.uid.is_some(),
        errno: AtomicI32::new(0),
    };
    let top = stack_top()?;
    let mut flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD;
    if req.pidfd {
        flags |= libc::CLONE_PIDFD;
    }
    let mut pidfd: libc::c_int = -1;
    // Every signal blocked in this thread across the clone (the child
    // starts with this mask and unblocks after resetting the handlers).
    // SAFETY: sigset_t is plain data; sigfillset initialises it.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above, for the old mask pthread_sigmask writes.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `all` is a valid sigset_t to fill.
    unsafe { libc::sigfillset(&mut all) };
    // SAFETY: both sets are valid for pthread_sigmask's read and write.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old) };
    // SAFETY: `child` only makes async-signal-safe libc calls and reads
    // `plan`, which (with every vector its pointers point into) outlives
    // the call: CLONE_VFORK suspends this thread until the child has
    // exec'd or exited, and nothing here runs meanwhile. The stack is
    // this thread's, used by one child at a time for the same reason.
    // With CLONE_PIDFD the kernel writes the pidfd into `pidfd`.
    let pid = unsafe {
        libc::clone(
            child,
            top,
            flags,
            (&raw const plan).cast_mut().cast(),
            &raw mut pidfd,
        )
    };
    let clone_error = io::Error::last_os_error();
    // SAFETY: `old` is the mask read above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    if pid < 0 {
        return Err(clone_error);
    }
    let pidfd = (req.pidfd && pidfd >= 0).then(|| {
        // SAFETY: a new descriptor from the kernel, owned here.
        unsafe { OwnedFd::from_raw_fd(pidfd) }
    });
    let mut failed = plan.errno.load(Ordering::Acquire);
    if failed == 0 && req.pidfd && pidfd.is_none() {
        // A kernel that ignored CLONE_PIDFD (cannot be, where
        // pidfd_open exists): nothing would watch the child; it goes.
        // SAFETY: kill takes no pointers; the child is not reaped yet.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        failed = libc::ENOSYS;
    }
    if failed != 0 {
        // The child reported and is exiting (or was killed): reaped
        // here, so that the failure leaves no child.
        let mut status = 0;
        loop {
            // SAFETY: `status` is valid for the write.
            let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
            if rc >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                break;
            }
        }
        drop(pidfd);
        return Err(io::Error::from_raw_os_error(failed));
    }
    // Kept alive until here, for the child.
    drop((
        candidate_ptrs,
        argv_ptrs,
        env_ptrs,
        candidates,
        argv,
        env,
        cwd,
    ));
    Ok(Made {
        pid: pid as u32,
        pidfd,
    })
}

/// The errno of the last failed call, in the child.
fn errno() -> i32 {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

/// Reports `errno` to the parent and exits.
///
/// # Safety
///
/// Only in the child, with `plan` the parent's plan.
unsafe fn fail(plan: &Plan, errno: i32) -> libc::c_int {
    plan.errno.store(errno, Ordering::Release);
    // SAFETY: _exit ends the child without running anything of the
    // parent's (no atexit handlers, no flushing of shared buffers).
    unsafe { libc::_exit(127) }
}

/// The child, on its own stack, sharing the parent's memory until exec.
/// Nothing here allocates, locks, panics or touches the parent's memory
/// but the plan's errno word.
extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `&Plan`, alive while the parent is
    // suspended (CLONE_VFORK).
    let plan = unsafe { &*(arg as *const Plan) };
    // SAFETY: every call below is an async-signal-safe libc call on
    // values of the plan (descriptors, C strings and null-terminated
    // arrays the parent made), or on local plain data.
    unsafe {
        if plan.detached && libc::setsid() < 0 {
            return fail(plan, errno());
        }
        // The system calls themselves, not glibc's wrappers: those
        // broadcast the change to every thread they know of, which in a
        // child sharing the parent's memory are the parent's threads.
        // The kernel's call changes the calling thread's credentials: the
        // child's, its only thread.
        if plan.setgroups
            && libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) < 0
        {
            return fail(plan, errno());
        }
        if plan.has_gid && libc::syscall(libc::SYS_setgid, plan.gid) < 0 {
            return fail(plan, errno());
        }
        if plan.has_uid && libc::syscall(libc::SYS_setuid, plan.uid) < 0 {
            return fail(plan, errno());
        }
        // Sources on 0-2 that go elsewhere move out of the way first.
        let mut src = plan.stdio;
        for (i, fd) in src.iter_mut().enumerate() {
            if *fd >= 0 && *fd < 3 && *fd != i as RawFd {
                let moved = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 3);
                if moved < 0 {
                    return fail(plan, errno());
                }
                *fd = moved;
            }
        }
        for (i, &fd) in src.iter().enumerate() {
            let target = i as RawFd;
            if fd < 0 {
                continue;
            }
            let rc = if fd == target {
                // Already there: only the close-on-exec flag to clear.
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, target)
            };
            if rc < 0 {
                return fail(plan, errno());
            }
        }
        if !plan.cwd.is_null() && libc::chdir(plan.cwd) < 0 {
            return fail(plan, errno());
        }
        // Every disposition to the default, then the mask emptied.
        reset_dispositions();
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        let mut last = libc::ENOENT;
        let mut denied = false;
        let mut c = plan.candidates;
        while !(*c).is_null() {
            libc::execve(*c, plan.argv, plan.envp);
            last = errno();
            match last {
                libc::EACCES => denied = true,
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                // Found but not runnable: that is the error.
                other => return fail(plan, other),
            }
            c = c.add(1);
        }
        fail(plan, if denied { libc::EACCES } else { last })
    }
}

/// Sets every signal's disposition to the default, in the child. With
/// the system call itself where its structure is known: glibc's
/// `sigaction` refuses its own two internal signals (32 and 33), whose
/// ignored disposition would otherwise survive the `exec`.
///
/// # Safety
///
/// Only in the child (it changes the calling process's dispositions).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
unsafe fn reset_dispositions() {
    /// The kernel's `struct sigaction` on x86-64 and AArch64.
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: libc::c_ulong,
        restorer: usize,
        mask: u64,
    }
    let dfl = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=64 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: `dfl` is a valid kernel sigaction for the call's
            // read, with the kernel's 8-byte signal set size.
            unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    &raw const dfl,
                    std::ptr::null_mut::<KernelSigaction>(),
                    8usize,
                )
            };
        }
    }
}

/// [`reset_dispositions`] through libc where the kernel's structure is
/// not spelled out here (libc's internal signals keep theirs).
///
/// # Safety
///
/// Only in the child.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
unsafe fn reset_dispositions() {
    // SAFETY: sigaction is plain data; zeroed is SIG_DFL, no flags.
    let mut dfl: libc::sigaction = unsafe { std::mem::zeroed() };
    dfl.sa_sigaction = libc::SIG_DFL;
    for sig in 1..libc::SIGRTMAX() + 1 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: `dfl` is valid for the read.
            unsafe { libc::sigaction(sig, &dfl, std::ptr::null_mut()) };
        }
    }
}
