//! The process-wide side of signals: one `sigaction` handler for every
//! signal any loop listens to, a count of deliveries per signal, and one
//! wake-up descriptor per listening loop.
//!
//! The handler does only async-signal-safe work: it adds one to the
//! signal's count (a lock-free atomic) and `write(2)`s to the wake-up
//! descriptor of every loop that listens to the signal (an eventfd on
//! Linux, the write end of a self-pipe elsewhere), saving and restoring
//! `errno`. It takes no lock and allocates nothing, so it may run on any
//! thread, the pool's and the program's own included, at any moment, and
//! on several threads at once.
//!
//! A loop reads the counts, not the bytes: it drains its descriptor, then
//! compares each count with the one it saw last. A full pipe (or a
//! saturated eventfd) only means a wake-up is already pending, so no
//! delivery is ever lost, however many arrive between two turns.
//!
//! The wakers live as long as the process: a loop takes a free one (or
//! makes one) with its first listener and gives it back when it is
//! dropped; its descriptors are never closed, so the handler never writes
//! to a descriptor number that was closed and reused. They are few: as
//! many as loops listened at once.
//!
//! The dispositions are changed under a lock, never by the handler: the
//! first listener of a signal (over all loops) installs the handler and
//! keeps the disposition it replaced; the last one to go puts that back.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, Once};

/// The highest signal number eventide listens to (Linux's `SIGRTMAX`).
pub(crate) const MAX_SIGNAL: i32 = 64;

const SLOTS: usize = MAX_SIGNAL as usize + 1;

/// Deliveries of each signal since the process started (wrapping).
static DELIVERED: [AtomicU32; SLOTS] = [const { AtomicU32::new(0) }; SLOTS];

/// The wakers, newest first; never freed.
static WAKERS: AtomicPtr<Waker> = AtomicPtr::new(ptr::null_mut());

/// The dispositions eventide replaced, by signal, and how many loops
/// listen to each.
static REGISTRY: Mutex<[Installed; SLOTS]> = Mutex::new([const { Installed::NONE }; SLOTS]);

#[derive(Clone, Copy)]
struct Installed {
    /// Loops with at least one listener of the signal.
    loops: usize,
    /// The disposition the handler replaced, put back when `loops` drops
    /// to zero.
    previous: MaybeUninit<libc::sigaction>,
}

impl Installed {
    const NONE: Installed = Installed {
        loops: 0,
        previous: MaybeUninit::uninit(),
    };
}

/// The bit of `signal` in a waker's mask.
fn bit(signal: i32) -> u64 {
    1 << (signal - 1)
}

/// How many times `signal` was delivered so far (wrapping).
pub(crate) fn delivered(signal: i32) -> u32 {
    DELIVERED[signal as usize].load(Ordering::SeqCst)
}

/// One loop's wake-up descriptor, and the signals that loop listens to.
pub(crate) struct Waker {
    /// What the loop polls and drains.
    read_fd: RawFd,
    /// What the handler writes to (the same eventfd on Linux).
    write_fd: RawFd,
    /// Bit `n - 1` set: the loop listens to signal `n`.
    mask: AtomicU64,
    /// Whether a loop holds it.
    taken: AtomicBool,
    /// The next older waker; set before this one is published.
    next: *const Waker,
}

// SAFETY: every field is either immutable after the waker is published
// (the descriptors, `next`) or atomic; wakers are never freed.
unsafe impl Sync for Waker {}

impl Waker {
    /// A free waker, or a new one.
    pub(crate) fn take() -> io::Result<&'static Waker> {
        let mut at = WAKERS.load(Ordering::Acquire);
        // SAFETY: wakers are leaked boxes, never freed: a published pointer
        // stays valid for the life of the process.
        while let Some(waker) = unsafe { at.as_ref() } {
            if waker
                .taken
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                waker.drain();
                return Ok(waker);
            }
            at = waker.next.cast_mut();
        }
        let (read_fd, write_fd) = wake_descriptors()?;
        let waker: &'static mut Waker = Box::leak(Box::new(Waker {
            read_fd,
            write_fd,
            mask: AtomicU64::new(0),
            taken: AtomicBool::new(true),
            next: ptr::null(),
        }));
        let mut head = WAKERS.load(Ordering::Acquire);
        loop {
            waker.next = head;
            match WAKERS.compare_exchange(head, waker, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(now) => head = now,
            }
        }
        Ok(waker)
    }

    /// Gives the waker back (its loop is gone): it listens to nothing.
    pub(crate) fn give_back(&'static self) {
        self.mask.store(0, Ordering::SeqCst);
        self.drain();
        self.taken.store(false, Ordering::Release);
    }

    /// The descriptor the loop polls for readability.
    pub(crate) fn fd(&self) -> RawFd {
        self.read_fd
    }

    /// From now on `signal`'s deliveries wake this waker's loop.
    pub(crate) fn listen(&self, signal: i32) {
        self.mask.fetch_or(bit(signal), Ordering::SeqCst);
    }

    /// `signal`'s deliveries no longer wake this waker's loop.
    pub(crate) fn unlisten(&self, signal: i32) {
        self.mask.fetch_and(!bit(signal), Ordering::SeqCst);
    }

    /// Empties the descriptor (nonblocking): what was written before is
    /// seen in the counts read after this.
    pub(crate) fn drain(&self) {
        let mut buf = [0u8; 64];
        loop {
            // SAFETY: reads into a live local buffer of the given length.
            let n = unsafe { libc::read(self.read_fd, buf.as_mut_ptr().cast(), buf.len()) };
            let again = n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted;
            // An eventfd is empty after one read; a pipe may hold more.
            if !(again || (cfg!(not(target_os = "linux")) && n == buf.len() as isize)) {
                break;
            }
        }
    }

    /// The handler's wake-up: one `write(2)`, whose failure (a full pipe,
    /// a saturated eventfd: a wake-up is pending anyway) is ignored.
    fn wake(&self) {
        #[cfg(target_os = "linux")]
        let one = 1u64.to_ne_bytes();
        #[cfg(not(target_os = "linux"))]
        let one = [1u8];
        // SAFETY: write(2) is async-signal-safe; it reads `one`, a live
        // local, and the descriptor is never closed (wakers live forever).
        unsafe {
            libc::write(self.write_fd, one.as_ptr().cast(), one.len());
        }
    }
}

/// A nonblocking, close-on-exec eventfd (read and write end at once).
#[cfg(target_os = "linux")]
fn wake_descriptors() -> io::Result<(RawFd, RawFd)> {
    // SAFETY: eventfd(2) takes no pointer.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((fd, fd))
}

/// A nonblocking, close-on-exec self-pipe: (read end, write end).
#[cfg(not(target_os = "linux"))]
fn wake_descriptors() -> io::Result<(RawFd, RawFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    for fd in fds {
        // SAFETY: fcntl(2) on a descriptor pipe(2) just made, no pointers.
        let ok = unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) == 0
                && libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) == 0
        };
        if !ok {
            let error = io::Error::last_os_error();
            // SAFETY: closes the two descriptors made above, once.
            unsafe {
                libc::close(fds[0]);
                libc::close(fds[1]);
            }
            return Err(error);
        }
    }
    Ok((fds[0], fds[1]))
}

/// The handler of every signal a loop listens to. Async-signal-safe:
/// atomics and `write(2)`, `errno` saved and restored.
extern "C" fn on_signal(signal: libc::c_int) {
    let saved = errno::get();
    if (1..=MAX_SIGNAL).contains(&signal) {
        DELIVERED[signal as usize].fetch_add(1, Ordering::SeqCst);
        let mut at = WAKERS.load(Ordering::Acquire);
        // SAFETY: wakers are never freed (see `Waker::take`).
        while let Some(waker) = unsafe { at.as_ref() } {
            if waker.mask.load(Ordering::SeqCst) & bit(signal) != 0 {
                waker.wake();
            }
            at = waker.next.cast_mut();
        }
    }
    errno::set(saved);
}

/// Whether eventide refuses to listen to `signal` (Node's
/// `uv_signal_start EINVAL`): out of range, `SIGKILL` and `SIGSTOP` (which
/// no process can catch), and the signals of a faulting instruction
/// (`SIGSEGV`, `SIGBUS`, `SIGFPE`, `SIGILL`), after which a handler that
/// returns runs the faulting instruction again, forever.
pub(crate) fn refused(signal: i32) -> bool {
    !(1..=MAX_SIGNAL).contains(&signal)
        || [
            libc::SIGKILL,
            libc::SIGSTOP,
            libc::SIGSEGV,
            libc::SIGBUS,
            libc::SIGFPE,
            libc::SIGILL,
        ]
        .contains(&signal)
}

/// A loop starts listening to `signal`: the first one installs the
/// handler.
pub(crate) fn acquire(signal: i32) -> io::Result<()> {
    if refused(signal) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    let installed = &mut registry[signal as usize];
    if installed.loops == 0 {
        // SAFETY: an all-zero sigaction is a valid value to fill in.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // Restart the system calls the signal interrupts; block every
        // signal while the handler runs (it is short).
        action.sa_flags = libc::SA_RESTART;
        // SAFETY: fills the mask of a live local.
        unsafe { libc::sigfillset(&mut action.sa_mask) };
        let mut previous = MaybeUninit::<libc::sigaction>::uninit();
        // SAFETY: both pointers are to live locals; sigaction(2) fills
        // `previous` on success.
        if unsafe { libc::sigaction(signal, &action, previous.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        installed.previous = previous;
    }
    installed.loops += 1;
    Ok(())
}

/// A loop no longer listens to `signal`: the last one puts back the
/// disposition the handler replaced.
pub(crate) fn release(signal: i32) {
    let mut registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    let installed = &mut registry[signal as usize];
    debug_assert!(installed.loops > 0);
    installed.loops = installed.loops.saturating_sub(1);
    if installed.loops == 0 {
        // SAFETY: `previous` was filled by the sigaction(2) that installed
        // the handler (`loops` went from 0 to 1 only then).
        let rc = unsafe { libc::sigaction(signal, installed.previous.as_ptr(), ptr::null_mut()) };
        if rc != 0 {
            log::error!(
                "eventide: restoring the disposition of signal {signal}: {}",
                io::Error::last_os_error()
            );
        }
    }
}

/// Ignores `SIGPIPE` process-wide, once, if its disposition is still the
/// default (a program's own handler, or an ignore, is left alone): a
/// write to a pipe or socket whose reader is gone then fails with `EPIPE`
/// instead of killing the process, as in Node (and libuv's programs).
pub(crate) fn ignore_sigpipe() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SIGXFSZ too, as Node does: a write past RLIMIT_FSIZE is then an
        // EFBIG error to its callback, not the end of the process.
        for signal in [libc::SIGPIPE, libc::SIGXFSZ] {
            ignore_if_default(signal);
        }
    });
}

/// Sets `signal` to SIG_IGN if its disposition is the default.
fn ignore_if_default(signal: libc::c_int) {
    let mut current = MaybeUninit::<libc::sigaction>::uninit();
    // SAFETY: a null new action only queries; `current` is a live local
    // that sigaction(2) fills on success.
    if unsafe { libc::sigaction(signal, ptr::null(), current.as_mut_ptr()) } != 0 {
        return;
    }
    // SAFETY: filled by the successful call above.
    let current = unsafe { current.assume_init() };
    if current.sa_sigaction == libc::SIG_DFL {
        // SAFETY: an all-zero sigaction is valid; SIG_IGN is a valid
        // disposition for SIGPIPE and SIGXFSZ.
        unsafe {
            let mut ignore: libc::sigaction = std::mem::zeroed();
            ignore.sa_sigaction = libc::SIG_IGN;
            libc::sigaction(signal, &ignore, ptr::null_mut());
        }
    }
}

/// `errno`, read and written the way each libc names its location.
mod errno {
    #[cfg(any(target_os = "android", target_os = "netbsd", target_os = "openbsd"))]
    use libc::__errno as location;
    #[cfg(any(target_os = "linux", target_os = "redox"))]
    use libc::__errno_location as location;
    #[cfg(any(
        target_os = "macos",
        target_os = "ios",
        target_os = "freebsd",
        target_os = "dragonfly"
    ))]
    use libc::__error as location;

    /// Whether this system's errno location is known (elsewhere errno is
    /// left as the handler's write(2) set it).
    macro_rules! known {
        ($($item:item)*) => {$(
            #[cfg(any(
                target_os = "linux",
                target_os = "redox",
                target_os = "macos",
                target_os = "ios",
                target_os = "freebsd",
                target_os = "dragonfly",
                target_os = "android",
                target_os = "netbsd",
                target_os = "openbsd"
            ))]
            $item
        )*};
    }

    known! {
        pub(super) fn get() -> i32 {
            // SAFETY: the thread's errno location is always valid.
            unsafe { *location() }
        }
        pub(super) fn set(value: i32) {
            // SAFETY: as above.
            unsafe { *location() = value }
        }
    }

    #[cfg(not(any(
        target_os = "linux",
        target_os = "redox",
        target_os = "macos",
        target_os = "ios",
        target_os = "freebsd",
        target_os = "dragonfly",
        target_os = "android",
        target_os = "netbsd",
        target_os = "openbsd"
    )))]
    mod unknown {
        pub(in super::super) fn get() -> i32 {
            0
        }
        pub(in super::super) fn set(_: i32) {}
    }
    #[cfg(not(any(
        target_os = "linux",
        target_os = "redox",
        target_os = "macos",
        target_os = "ios",
        target_os = "freebsd",
        target_os = "dragonfly",
        target_os = "android",
        target_os = "netbsd",
        target_os = "openbsd"
    )))]
    pub(super) use unknown::{get, set};
}
