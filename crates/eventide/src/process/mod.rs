//! Child processes: Node's `child_process.spawn` and `execFile`, libuv's
//! `uv_spawn`, on the loop.
//!
//! ```no_run
//! use eventide::process::{SpawnOptions, Stdio};
//!
//! let mut lp = eventide::Loop::new()?;
//! let child = lp.spawn(
//!     SpawnOptions::new("sort").stdin(Stdio::Pipe).stdout(Stdio::Pipe),
//!     |_, status| println!("sort exited: {status:?}"),
//! )?;
//! let stdin = child.stdin().unwrap();
//! stdin.write(&mut lp, b"b\na\n".to_vec(), |_, r| r.unwrap());
//! stdin.end(&mut lp);
//! child.stdout().unwrap().read_start(
//!     &mut lp,
//!     |_, _, data| print!("{}", String::from_utf8_lossy(data)),
//!     |_, _, _| {},
//! );
//! lp.run()?;
//! # Ok::<(), eventide::Error>(())
//! ```
//!
//! # How a child is made
//!
//! On Linux with `clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD)` and only
//! async-signal-safe calls in the child before its `exec` (the private
//! `direct` module): no copy of the parent's page tables, the pidfd from
//! the same call, everything the child needs made beforehand. A failed
//! spawn leaves no child behind: the error, an exec's included, comes
//! back from the spawn call itself (the child writes its errno into the
//! suspended parent's memory), and a child that failed is reaped before
//! the call returns. Nothing but the descriptors asked for reaches the
//! child (every descriptor the loop owns is close-on-exec; the stdio ends
//! are put on 0, 1 and 2). The child starts, as Node's, with every
//! signal at its default disposition and none blocked. Elsewhere,
//! `std::process::Command`, with the same guarantees.
//!
//! # How an exit is observed
//!
//! Linux 5.3 and later: the child's `pidfd` (`pidfd_open`), watched for
//! readability through the reactor with a one-shot `Op::poll` (io_uring
//! `POLL_ADD`, or epoll/poll), then `waitpid(pid, WNOHANG)` reaps it: no
//! signal handler, nothing process-wide, any number of loops. The poll
//! keeps the loop alive until the exit (unless [`Child::unref`]).
//!
//! Where there is no `pidfd_open` (probed once per process: `ENOSYS` on
//! Linux before 5.3 or in a sandbox that refuses it; every other system)
//! exits are observed with `SIGCHLD`: a loop's first child made this way
//! adds the loop's internal `SIGCHLD` listener (the signal module's
//! process-wide dispatcher, so the program's own `SIGCHLD` listeners
//! still hear every delivery), before the child is made so that no exit
//! is missed; on each delivery the loop calls `waitpid(pid, WNOHANG)`
//! for each child it made and has not reaped yet, never `waitpid(-1)`:
//! children the program made otherwise are left to it. A delivery may
//! stand for several exits (the kernel merges a pending `SIGCHLD`), and
//! every loop hears every delivery, so each loop reaps its own children
//! and only those. The listener keeps the loop alive while the loop has
//! referenced children not reaped yet. [`Child::kill`] is then `kill(2)`
//! by pid, which cannot hit another process before the loop has reaped
//! the child.
//!
//! `EVENTIDE_NO_PIDFD=1` in the environment (read once, at the first
//! spawn) forces the `SIGCHLD` way where pidfds exist: a test hook, with
//! which the process tests run a second time.
//!
//! # Events, as Node's
//!
//! The exit callback of [`Loop::spawn`] is Node's `'exit'` (code, or the
//! signal that ended it). [`Child::on_close`] is Node's `'close'`: once
//! the child has exited and each of its readable stdio pipes (stdout,
//! stderr) has closed, in that order whatever order they happened in.
//! Unlike Node, a spawn that fails returns the error from
//! [`Loop::spawn`] (libuv's `uv_spawn` does too; Node turns it into an
//! `'error'` event and a `'close'` with the negative errno).

#[cfg(target_os = "linux")]
mod direct;
mod exec;

pub use exec::{DEFAULT_MAX_BUFFER, ExecOptions, Output};

use std::cell::RefCell;
use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io;
#[cfg(target_os = "linux")]
use std::os::fd::FromRawFd;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
#[cfg(not(target_os = "linux"))]
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::rc::Rc;

use eventide_reactor::{Interest, Op, Token};

use crate::event_loop::Loop;
use crate::net::Pipe;
use crate::signal::{Signal, SignalListener};
use crate::{Error, Result};

/// What a child's standard descriptor is connected to (Node's `stdio`
/// option).
///
/// [`Stdio::Pipe`] is a Unix socketpair, as libuv's `UV_CREATE_PIPE` (so
/// Node's `'pipe'`) is: a socket buffers more than a pipe's 64 KiB, which
/// W12 measures; its writing end asks for a 256 KiB send buffer (Linux
/// doubles it: 512 KiB in flight, or 2 x `net.core.wmem_max` if that is
/// less), about twice the default. The loop's end is shut down in the direction it does not
/// use, and is a [`Pipe`] on the `read(2)`/`write(2)` path (64 KiB reads;
/// ending the stdin closes it); nonblocking on the readiness backends,
/// blocking on io_uring (the ring waits in the kernel).
#[derive(Debug, Default)]
pub enum Stdio {
    /// A new pipe; the loop's end is a [`Pipe`] on the [`Child`]
    /// (Node's `'pipe'`).
    Pipe,
    /// The parent's own descriptor (Node's `'inherit'`); the default.
    #[default]
    Inherit,
    /// `/dev/null` (Node's `'ignore'`).
    Ignore,
    /// This descriptor (Node's stream or number): the child gets a copy
    /// of it; it is closed in the parent once the child is made.
    Fd(OwnedFd),
}

/// What a child is to run and how (Node's `spawn(command, args, options)`).
#[derive(Debug)]
pub struct SpawnOptions {
    program: OsString,
    args: Vec<OsString>,
    env_clear: bool,
    env: Vec<(OsString, Option<OsString>)>,
    cwd: Option<PathBuf>,
    stdio: [Stdio; 3],
    detached: bool,
    uid: Option<u32>,
    gid: Option<u32>,
}

impl SpawnOptions {
    /// Runs `program` (looked up in `PATH` unless it has a `/`), with no
    /// arguments, the parent's environment and working directory, and
    /// the parent's stdio.
    pub fn new(program: impl AsRef<OsStr>) -> SpawnOptions {
        SpawnOptions {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env_clear: false,
            env: Vec::new(),
            cwd: None,
            stdio: [Stdio::Inherit, Stdio::Inherit, Stdio::Inherit],
            detached: false,
            uid: None,
            gid: None,
        }
    }

    /// Adds an argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> SpawnOptions {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> SpawnOptions
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable for the child (extends, or overrides,
    /// the inherited environment).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> SpawnOptions {
        self.env
            .push((key.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    /// Removes an inherited environment variable.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> SpawnOptions {
        self.env.push((key.as_ref().to_owned(), None));
        self
    }

    /// Inherits no environment: the child has only the variables set
    /// with [`SpawnOptions::env`] (Node's `env: {...}`).
    pub fn env_clear(mut self) -> SpawnOptions {
        self.env_clear = true;
        self.env.clear();
        self
    }

    /// The child's working directory (Node's `cwd`).
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> SpawnOptions {
        self.cwd = Some(dir.into());
        self
    }

    /// The child's standard input.
    pub fn stdin(mut self, stdio: Stdio) -> SpawnOptions {
        self.stdio[0] = stdio;
        self
    }

    /// The child's standard output.
    pub fn stdout(mut self, stdio: Stdio) -> SpawnOptions {
        self.stdio[1] = stdio;
        self
    }

    /// The child's standard error.
    pub fn stderr(mut self, stdio: Stdio) -> SpawnOptions {
        self.stdio[2] = stdio;
        self
    }

    /// Node's `detached`: the child leads a new session (`setsid`), so
    /// that it outlives its parent's terminal and process group.
    pub fn detached(mut self, detached: bool) -> SpawnOptions {
        self.detached = detached;
        self
    }

    /// The child's user id (`setuid` before the exec).
    pub fn uid(mut self, uid: u32) -> SpawnOptions {
        self.uid = Some(uid);
        self
    }

    /// The child's group id (`setgid` before the exec).
    pub fn gid(mut self, gid: u32) -> SpawnOptions {
        self.gid = Some(gid);
        self
    }

    /// The program, as given.
    pub fn program(&self) -> &OsStr {
        &self.program
    }
}

/// How a child ended: an exit code, or the signal that killed it (Node's
/// `'exit'` arguments `code, signal`: exactly one is `Some`, but for a
/// child that something outside the loop reaped first, a `SIGCHLD` set
/// to `SIG_IGN` say, whose status is lost: then both are `None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitStatus {
    /// The exit code, if it exited.
    pub code: Option<i32>,
    /// The signal's number, if a signal ended it.
    pub signal: Option<i32>,
}

impl ExitStatus {
    fn from_wait(status: libc::c_int) -> ExitStatus {
        if libc::WIFSIGNALED(status) {
            ExitStatus {
                code: None,
                signal: Some(libc::WTERMSIG(status)),
            }
        } else {
            ExitStatus {
                code: Some(libc::WEXITSTATUS(status)),
                signal: None,
            }
        }
    }

    /// Whether it exited with code 0.
    pub fn success(self) -> bool {
        self.code == Some(0)
    }

    /// The signal's name as Node gives it (`"SIGTERM"`), if a signal
    /// ended it.
    pub fn signal_name(self) -> Option<&'static str> {
        self.signal.map(signal_name)
    }
}

/// Node's name of a signal number (`"SIGKILL"`), `"UNKNOWN"` for one
/// without a name here.
pub fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGCONT => "SIGCONT",
        libc::SIGSTOP => "SIGSTOP",
        libc::SIGTSTP => "SIGTSTP",
        libc::SIGTTIN => "SIGTTIN",
        libc::SIGTTOU => "SIGTTOU",
        libc::SIGURG => "SIGURG",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGVTALRM => "SIGVTALRM",
        libc::SIGPROF => "SIGPROF",
        libc::SIGWINCH => "SIGWINCH",
        libc::SIGIO => "SIGIO",
        #[cfg(target_os = "linux")]
        libc::SIGPWR => "SIGPWR",
        libc::SIGSYS => "SIGSYS",
        _ => "UNKNOWN",
    }
}

type OnExit = Box<dyn FnOnce(&mut Loop, ExitStatus)>;
type OnClose = Box<dyn FnOnce(&mut Loop, ExitStatus)>;

/// A child's shared state (the handle and the loop's callbacks hold it).
struct State {
    pid: u32,
    /// Open until reaped.
    pidfd: Option<OwnedFd>,
    /// The exit's poll, while in flight.
    watch: Option<Token>,
    status: Option<ExitStatus>,
    /// Readable stdio pipes not closed yet (Node's `_closesNeeded`
    /// without the exit).
    open_readers: usize,
    on_close: Option<OnClose>,
    closed: bool,
    unref: bool,
}

/// A child process (Node's `ChildProcess`): its pid, its stdio pipes,
/// [`Child::kill`], [`Child::on_close`]. Cloning it clones the handle;
/// dropping every clone neither kills nor forgets the child: the loop
/// still reaps it and runs its callbacks.
#[derive(Clone)]
pub struct Child {
    state: Rc<RefCell<State>>,
    stdio: [Option<Pipe>; 3],
}

impl std::fmt::Debug for Child {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Child")
            .field("pid", &self.pid())
            .field("stdio", &self.stdio)
            .finish()
    }
}

impl Child {
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.state.borrow().pid
    }

    /// The loop's end of the child's standard input, if [`Stdio::Pipe`].
    pub fn stdin(&self) -> Option<Pipe> {
        self.stdio[0]
    }

    /// The loop's end of the child's standard output, if [`Stdio::Pipe`].
    pub fn stdout(&self) -> Option<Pipe> {
        self.stdio[1]
    }

    /// The loop's end of the child's standard error, if [`Stdio::Pipe`].
    pub fn stderr(&self) -> Option<Pipe> {
        self.stdio[2]
    }

    /// How it ended, once its exit was observed (the exit callback ran).
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.state.borrow().status
    }

    /// Sends `signal` (`libc::SIGTERM`, ...) to the child (Node's
    /// `child.kill(signal)`), through its pidfd: never to another process
    /// that reused its pid. Signal 0 checks that it is still there.
    ///
    /// # Errors
    ///
    /// [`Error::Process`] `kill ESRCH` once it has been reaped (its exit
    /// callback ran); `kill EINVAL` for a signal that does not exist.
    pub fn kill(&self, signal: i32) -> Result<()> {
        let st = self.state.borrow();
        let error = |e| Error::process("kill".into(), None, e);
        if let Some(pidfd) = st.pidfd.as_ref() {
            return pidfd_send_signal(pidfd.as_raw_fd(), signal).map_err(error);
        }
        if st.status.is_some() {
            return Err(error(io::Error::from_raw_os_error(libc::ESRCH)));
        }
        // Watched the SIGCHLD way: not reaped yet, so the pid is still
        // this child's (a zombie at worst).
        // SAFETY: kill takes no pointers.
        if unsafe { libc::kill(st.pid as libc::pid_t, signal) } < 0 {
            return Err(error(io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Node's `'close'` event: `on_close` runs once the child has exited
    /// and each of its readable stdio pipes (stdout, stderr: Node counts
    /// the readable ones) has closed, after the exit callback, with the
    /// same status. Replaces an earlier one. A pipe that nobody reads
    /// never ends: read it (or close it) for the close to come.
    pub fn on_close(&self, on_close: impl FnOnce(&mut Loop, ExitStatus) + 'static) {
        let mut st = self.state.borrow_mut();
        if !st.closed {
            st.on_close = Some(Box::new(on_close));
        }
    }

    /// Node's `child.unref()`: waiting for its exit does not keep the
    /// loop alive (its pipes are streams, with their own
    /// [`Pipe::unref`]).
    pub fn unref(&self, lp: &mut Loop) {
        self.set_ref(lp, false);
    }

    /// Node's `child.ref()`, or `unref` with `false`.
    pub fn set_ref(&self, lp: &mut Loop, referenced: bool) {
        let mut st = self.state.borrow_mut();
        let was = !st.unref;
        st.unref = !referenced;
        if let Some(token) = st.watch {
            lp.io.set_counted(token, referenced);
        } else if st.status.is_none() && st.pidfd.is_none() && was != referenced {
            // In the loop's SIGCHLD list, not reaped yet.
            drop(st);
            let children = Rc::clone(&lp.io.children);
            let mut c = children.borrow_mut();
            if referenced {
                c.referenced += 1;
            } else {
                c.referenced -= 1;
            }
            drop(c);
            sigchld_ref(lp);
        }
    }
}

/// Whether this kernel has `pidfd_open` (probed once).
fn pidfd_supported() -> bool {
    use std::sync::OnceLock;
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| match pidfd_open(std::process::id()) {
        Ok(_) => true,
        // Missing, or refused by a sandbox (seccomp says ENOSYS or
        // EPERM); any other error (out of descriptors) is momentary.
        Err(e) => !matches!(
            e.raw_os_error(),
            Some(libc::ENOSYS | libc::EPERM | libc::EACCES)
        ),
    })
}

/// `pidfd_send_signal(2)`, Linux 5.1 and later.
#[cfg(target_os = "linux")]
fn pidfd_send_signal(pidfd: RawFd, signal: i32) -> io::Result<()> {
    // SAFETY: pidfd_send_signal with a null siginfo takes no other
    // pointer; the caller's pidfd is open.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd,
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Pidfds are Linux's: elsewhere no child ever has one (exits go the
/// `SIGCHLD` way and `kill` by pid), so this is never reached.
#[cfg(not(target_os = "linux"))]
fn pidfd_send_signal(_pidfd: RawFd, _signal: i32) -> io::Result<()> {
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
}

/// `pidfd_open(2)`, Linux 5.3 and later.
#[cfg(target_os = "linux")]
fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes no pointers.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = fd as RawFd;
    // A pidfd is close-on-exec from the kernel.
    // SAFETY: a new descriptor, owned here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Pidfds are Linux's: elsewhere `pidfd_open` is `ENOSYS`, and exits go
/// the `SIGCHLD` way.
#[cfg(not(target_os = "linux"))]
fn pidfd_open(_pid: u32) -> io::Result<OwnedFd> {
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
}

/// Whether exits are watched through pidfds: the kernel has
/// `pidfd_open` and `EVENTIDE_NO_PIDFD` (a test hook) does not say
/// otherwise. Decided once per process: the two ways never mix.
fn use_pidfd() -> bool {
    use std::sync::OnceLock;
    static PIDFD: OnceLock<bool> = OnceLock::new();
    *PIDFD.get_or_init(|| {
        let forced_off =
            std::env::var_os("EVENTIDE_NO_PIDFD").is_some_and(|v| !v.is_empty() && v != "0");
        !forced_off && pidfd_supported()
    })
}

/// One loop's children watched the `SIGCHLD` way (`Io::children`).
#[derive(Default)]
pub(crate) struct Reaper {
    /// The loop's internal `SIGCHLD` listener, from its first such child
    /// on (removed with the loop).
    listener: Option<SignalListener>,
    /// Children made and not reaped yet, in spawn order, with their exit
    /// callbacks.
    waiting: Vec<(Rc<RefCell<State>>, OnExit)>,
    /// Reaped children whose exit callbacks have not run yet (left by a
    /// callback that panicked: run from the next pending phase).
    ready: VecDeque<(Rc<RefCell<State>>, OnExit)>,
    /// Of `waiting`, those that keep the loop alive (not unref'd).
    referenced: usize,
    /// `ready`'s run is deferred to the pending phase.
    drain_deferred: bool,
}

/// A loop's [`Reaper`], shared so that a borrow can be held while the
/// loop runs something else.
pub(crate) type Reapers = Rc<RefCell<Reaper>>;

/// Adds the loop's internal `SIGCHLD` listener if it has none: before a
/// child is made, so that its exit is counted by the dispatcher.
fn sigchld_listen(lp: &mut Loop) -> io::Result<()> {
    if lp.io.children.borrow().listener.is_some() {
        return Ok(());
    }
    let listener = lp
        .on_signal_internal(Signal::CHLD, |lp, _| on_sigchld(lp))
        .map_err(|e| match e.errno() {
            Some(errno) => io::Error::from_raw_os_error(errno),
            None => io::Error::other(e.to_string()),
        })?;
    lp.io.children.borrow_mut().listener = Some(listener);
    Ok(())
}

/// The internal listener keeps the loop alive while a referenced child
/// is not reaped.
fn sigchld_ref(lp: &mut Loop) {
    let (listener, referenced) = {
        let c = lp.io.children.borrow();
        (c.listener, c.referenced > 0)
    };
    if let Some(listener) = listener {
        listener.set_ref(lp, referenced);
    }
}

/// `waitpid(pid, WNOHANG)`: `None` while it runs; its status once
/// reaped here; both codes `None` if something else reaped it.
fn try_reap(pid: u32) -> Option<ExitStatus> {
    let mut status: libc::c_int = 0;
    let rc = loop {
        // SAFETY: `status` is valid for the write waitpid makes.
        let rc = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
        if rc < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        break rc;
    };
    if rc == 0 {
        return None;
    }
    if rc < 0 {
        // ECHILD: somebody else reaped it (a SIGCHLD set to SIG_IGN, a
        // waitpid(-1) elsewhere); the status is lost.
        log::warn!(
            "child {pid} was reaped elsewhere: {}",
            io::Error::last_os_error()
        );
        return Some(ExitStatus {
            code: None,
            signal: None,
        });
    }
    Some(ExitStatus::from_wait(status))
}

/// A `SIGCHLD` reached this loop: reap whichever of its children exited
/// (each by its pid), then run their exit callbacks in spawn order.
fn on_sigchld(lp: &mut Loop) {
    let children = Rc::clone(&lp.io.children);
    {
        let mut c = children.borrow_mut();
        let mut i = 0;
        while i < c.waiting.len() {
            let pid = c.waiting[i].0.borrow().pid;
            let Some(exit) = try_reap(pid) else {
                i += 1;
                continue;
            };
            let (state, on_exit) = c.waiting.remove(i);
            let unref = {
                let mut s = state.borrow_mut();
                s.status = Some(exit);
                s.unref
            };
            if !unref {
                c.referenced -= 1;
            }
            c.ready.push_back((state, on_exit));
        }
    }
    sigchld_ref(lp);
    run_ready(lp);
}

/// Runs the exit callbacks (then the closes) of the reaped children, one
/// by one, each followed by its ticks. A panic leaves the rest queued, to
/// run in the next pending phase.
fn run_ready(lp: &mut Loop) {
    let children = Rc::clone(&lp.io.children);
    loop {
        let Some((state, on_exit)) = children.borrow_mut().ready.pop_front() else {
            return;
        };
        let Some(exit) = state.borrow().status else {
            continue;
        };
        let outcome = lp.catching(|lp: &mut Loop| {
            let panicked =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| on_exit(lp, exit)));
            maybe_close(lp, &state);
            if let Err(payload) = panicked {
                std::panic::resume_unwind(payload);
            }
        });
        if let Err(payload) = outcome.and_then(|()| lp.drain_ticks_catching()) {
            let mut c = children.borrow_mut();
            if !c.ready.is_empty() && !c.drain_deferred {
                c.drain_deferred = true;
                drop(c);
                lp.defer(|lp| {
                    lp.io.children.borrow_mut().drain_deferred = false;
                    run_ready(lp);
                });
            } else {
                drop(c);
            }
            lp.panicked(payload);
        }
    }
}

/// A child just made: its pid, and its pidfd when exits are watched
/// through pidfds.
struct Made {
    pid: u32,
    pidfd: Option<OwnedFd>,
}

/// What the child gets on one of 0, 1, 2.
enum Theirs {
    Inherit,
    Null,
    Fd(OwnedFd),
}

/// The stdio ends: the loop's (for pipes) and the child's.
fn stdio_ends(stdio: [Stdio; 3]) -> io::Result<([Option<OwnedFd>; 3], [Theirs; 3])> {
    let mut ours: [Option<OwnedFd>; 3] = [None, None, None];
    let mut theirs = [Theirs::Inherit, Theirs::Inherit, Theirs::Inherit];
    for (i, stdio) in stdio.into_iter().enumerate() {
        theirs[i] = match stdio {
            Stdio::Inherit => Theirs::Inherit,
            Stdio::Ignore => Theirs::Null,
            Stdio::Fd(fd) => Theirs::Fd(fd),
            Stdio::Pipe => {
                // A socketpair, as libuv's (and so Node's) child stdio:
                // the loop's end is a stream on the sockets' path, whose
                // end is a real half-close, and whose buffers hold more
                // than a pipe's 64 KiB.
                let (mine, child) = std::os::unix::net::UnixStream::pair()?;
                // Each end one way: the loop writes the child's stdin
                // and reads its stdout and stderr.
                let ours_how = if i == 0 {
                    std::net::Shutdown::Read
                } else {
                    std::net::Shutdown::Write
                };
                mine.shutdown(ours_how)?;
                let writer = if i == 0 { &mine } else { &child };
                set_send_buffer(writer.as_raw_fd(), STDIO_SNDBUF);
                ours[i] = Some(OwnedFd::from(mine));
                Theirs::Fd(OwnedFd::from(child))
            }
        };
    }
    Ok((ours, theirs))
}

/// The send buffer asked for on the writing end of a [`Stdio::Pipe`]
/// socketpair (the loop's end of the child's stdin, the child's end of its
/// stdout and stderr). Linux doubles it for its bookkeeping and caps it at
/// `net.core.wmem_max` (2 x 208 KiB by default), so the writer may have
/// 512 KiB (or 416 KiB) in flight where the default is 208 KiB. W12's
/// loop then sleeps less often (on epoll about 5,900 context switches per
/// GiB instead of 9,100), at the same CPU per byte; asking for 1 MiB cut
/// them further but cost about 12% more CPU (the bytes in flight outgrow
/// the caches).
const STDIO_SNDBUF: libc::c_int = 256 * 1024;

/// Sets `SO_SNDBUF` on a socket, best effort (a failure leaves the
/// system's default, which works, only slower).
fn set_send_buffer(fd: RawFd, size: libc::c_int) {
    // SAFETY: the pointer and length describe `size`, alive for the call;
    // `fd` is an open socket owned by the caller.
    let _ = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&raw const size).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// `/dev/null`, opened once per process (close-on-exec), for
/// [`Stdio::Ignore`].
#[cfg(target_os = "linux")]
fn dev_null() -> io::Result<RawFd> {
    use std::sync::OnceLock;
    static NULL: OnceLock<std::result::Result<OwnedFd, i32>> = OnceLock::new();
    let opened = NULL.get_or_init(|| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map(OwnedFd::from)
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
    });
    match opened {
        Ok(fd) => Ok(fd.as_raw_fd()),
        Err(errno) => Err(io::Error::from_raw_os_error(*errno)),
    }
}

/// Makes the child (Linux: [`direct::spawn`], with its pidfd from the
/// same call when `pidfd_way`); returns it and the loop's stdio ends.
#[cfg(target_os = "linux")]
fn make_child(options: SpawnOptions, pidfd_way: bool) -> io::Result<(Made, [Option<OwnedFd>; 3])> {
    let (ours, theirs) = stdio_ends(options.stdio)?;
    let null = if theirs.iter().any(|t| matches!(t, Theirs::Null)) {
        dev_null()?
    } else {
        -1
    };
    let raw = |t: &Theirs| match t {
        Theirs::Inherit => -1,
        Theirs::Null => null,
        Theirs::Fd(fd) => fd.as_raw_fd(),
    };
    let made = direct::spawn(&direct::Request {
        program: &options.program,
        args: &options.args,
        env_clear: options.env_clear,
        env: &options.env,
        cwd: options.cwd.as_deref(),
        stdio: [raw(&theirs[0]), raw(&theirs[1]), raw(&theirs[2])],
        detached: options.detached,
        uid: options.uid,
        gid: options.gid,
        pidfd: pidfd_way,
    })?;
    // The child's ends are closed here: it has its copies.
    drop(theirs);
    Ok((made, ours))
}

/// Makes the child with `std::process::Command` (exits are watched the
/// `SIGCHLD` way here: no pidfds); returns it and the loop's stdio ends.
#[cfg(not(target_os = "linux"))]
fn make_child(options: SpawnOptions, _pidfd_way: bool) -> io::Result<(Made, [Option<OwnedFd>; 3])> {
    let (ours, theirs) = stdio_ends(options.stdio)?;
    let mut cmd = std::process::Command::new(&options.program);
    cmd.args(&options.args);
    if options.env_clear {
        cmd.env_clear();
    }
    for (k, v) in &options.env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    if let Some(cwd) = &options.cwd {
        cmd.current_dir(cwd);
    }
    if let Some(uid) = options.uid {
        cmd.uid(uid);
    }
    if let Some(gid) = options.gid {
        cmd.gid(gid);
    }
    if options.detached {
        // SAFETY: the closure runs in the forked child before exec and
        // only calls setsid, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    for (i, t) in theirs.into_iter().enumerate() {
        let t = match t {
            Theirs::Inherit => std::process::Stdio::inherit(),
            Theirs::Null => std::process::Stdio::null(),
            Theirs::Fd(fd) => std::process::Stdio::from(fd),
        };
        match i {
            0 => cmd.stdin(t),
            1 => cmd.stdout(t),
            _ => cmd.stderr(t),
        };
    }
    let child = cmd.spawn()?;
    // The child's ends are closed here with the command.
    drop(cmd);
    Ok((
        Made {
            pid: child.id(),
            pidfd: None,
        },
        ours,
    ))
}

impl Loop {
    /// Spawns a child process (Node's `child_process.spawn`, libuv's
    /// `uv_spawn`); `on_exit` runs once, on this loop, when it has exited
    /// (Node's `'exit'`), after which it is reaped. Its stdio pipes are
    /// on the returned [`Child`].
    ///
    /// # Errors
    ///
    /// [`Error::Process`] worded as Node's: `spawn nosuchprog ENOENT`
    /// (no such program, or no such working directory), `spawn ./x
    /// EACCES`, ..., with the errno and the program as the path. No child
    /// is left behind: a failed exec is reported by the spawn itself and
    /// the failed child already reaped.
    pub fn spawn(
        &mut self,
        options: SpawnOptions,
        on_exit: impl FnOnce(&mut Loop, ExitStatus) + 'static,
    ) -> Result<Child> {
        let program = options.program.clone();
        let error = |e: io::Error| {
            let name = program.to_string_lossy();
            Error::process(format!("spawn {name}"), Some(PathBuf::from(&program)), e)
        };
        let pidfd_way = use_pidfd();
        if !pidfd_way {
            sigchld_listen(self).map_err(error)?;
        }
        let (made, ours) = make_child(options, pidfd_way).map_err(error)?;
        let (pid, pidfd) = (made.pid, made.pidfd);
        let state = Rc::new(RefCell::new(State {
            pid,
            pidfd,
            watch: None,
            status: None,
            open_readers: 0,
            on_close: None,
            closed: false,
            unref: false,
        }));
        let mut stdio = [None, None, None];
        for (i, fd) in ours.into_iter().enumerate() {
            let Some(fd) = fd else { continue };
            // io_uring waits inside the kernel (its internal poll) on a
            // blocking descriptor, where a nonblocking one ends each read
            // or write that would wait with EAGAIN, and the stream then
            // waits with a poll of its own and submits again: three
            // operations for one (W12). The end is the loop's alone (a
            // socketpair it made), so its flag changes nothing for
            // anyone else. The readiness backends need it nonblocking.
            if self.backend() != crate::BackendKind::Uring {
                let _ = set_nonblocking(fd.as_raw_fd());
            }
            let (readable, writable) = (i != 0, i == 0);
            let pipe = self.pipe_insert_rw(fd, readable, writable);
            if readable {
                state.borrow_mut().open_readers += 1;
                let st = Rc::clone(&state);
                pipe.stream().watch_close(self, move |lp| {
                    st.borrow_mut().open_readers -= 1;
                    maybe_close(lp, &st);
                });
            }
            stdio[i] = Some(pipe);
        }
        let handle = Child {
            state: Rc::clone(&state),
            stdio,
        };
        if pidfd_way {
            watch_exit(self, state, Box::new(on_exit));
        } else {
            let children = Rc::clone(&self.io.children);
            let mut c = children.borrow_mut();
            c.waiting.push((state, Box::new(on_exit)));
            c.referenced += 1;
            drop(c);
            sigchld_ref(self);
        }
        Ok(handle)
    }
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl with F_GETFL/F_SETFL takes no pointers.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Arms the one-shot readability poll of the child's pidfd; on it, reaps
/// and runs `on_exit` (or polls again if it was not an exit).
fn watch_exit(lp: &mut Loop, state: Rc<RefCell<State>>, on_exit: OnExit) {
    let fd = match state.borrow().pidfd.as_ref() {
        Some(fd) => fd.as_raw_fd(),
        None => return,
    };
    let st = Rc::clone(&state);
    let mut on_exit = Some(on_exit);
    let submitted = lp.submit_io(Op::poll(fd, Interest::READABLE), move |lp, _c| {
        let Some(on_exit) = on_exit.take() else {
            return;
        };
        st.borrow_mut().watch = None;
        reaped(lp, &st, on_exit);
    });
    match submitted {
        Ok(token) => {
            let mut s = state.borrow_mut();
            s.watch = Some(token);
            if s.unref {
                lp.io.set_counted(token, false);
            }
        }
        // Refused (should not happen for a poll): waited for on the pool
        // would need another thread per child; reap by blocking instead is
        // wrong on the loop. Report it as the exit's absence: the child is
        // killed and reaped so that none is left behind.
        Err(refused) => {
            log::error!("cannot watch a child's exit: {}", refused.error);
            let pid = state.borrow().pid;
            // SAFETY: kill and waitpid take no pointers but the status,
            // which is valid.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
                let mut status = 0;
                libc::waitpid(pid as libc::pid_t, &mut status, 0);
            }
        }
    }
}

/// The pidfd is readable (or its poll ended): reap the child; if it has
/// not exited after all (the poll ended otherwise), poll again.
fn reaped(lp: &mut Loop, state: &Rc<RefCell<State>>, on_exit: OnExit) {
    let pid = state.borrow().pid;
    let Some(exit) = try_reap(pid) else {
        // Not exited yet (a spurious wake-up): watch again.
        return watch_exit(lp, Rc::clone(state), on_exit);
    };
    let pidfd = {
        let mut s = state.borrow_mut();
        s.status = Some(exit);
        s.pidfd.take()
    };
    if let Some(pidfd) = pidfd {
        // Closed through the reactor, which forgets its registration
        // first (the readiness backends keep one per descriptor number,
        // and the next pidfd may get the same number).
        let fd = pidfd.as_raw_fd();
        if lp.submit_io(Op::close(fd), |_, _| {}).is_ok() {
            // The reactor owns the descriptor now.
            let _ = std::os::fd::IntoRawFd::into_raw_fd(pidfd);
        }
    }
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| on_exit(lp, exit)));
    maybe_close(lp, state);
    if let Err(payload) = panicked {
        std::panic::resume_unwind(payload);
    }
}

/// Node's `'close'`: once the exit is in and every readable pipe closed.
fn maybe_close(lp: &mut Loop, state: &Rc<RefCell<State>>) {
    let (status, on_close) = {
        let mut s = state.borrow_mut();
        let Some(status) = s.status else { return };
        if s.open_readers > 0 || s.closed {
            return;
        }
        s.closed = true;
        (status, s.on_close.take())
    };
    if let Some(on_close) = on_close {
        on_close(lp, status);
    }
}
