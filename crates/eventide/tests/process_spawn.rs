//! Child processes on every backend: output and exit codes, Node's spawn
//! errors, env/cwd/stdio options, kill, detached, close-on-exec of the
//! loop's descriptors, and `exec_file`'s timeout and max buffer (the
//! 1,000-spawn leak check is in `process_leaks.rs`, alone in its binary).

mod process_support;
mod util;

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::os::fd::{FromRawFd, OwnedFd};
use std::rc::Rc;
use std::time::Duration;

use eventide::Loop;
use eventide::process::{ExecOptions, ExitStatus, Output, SpawnOptions, Stdio};
use util::run_within;

const LIMIT: Duration = Duration::from_secs(60);

/// Runs `options` to its close; returns its stdout, stderr, and the
/// statuses the exit and close callbacks got, in the order they ran.
fn run_child(lp: &mut Loop, options: SpawnOptions) -> (Vec<u8>, Vec<u8>, Vec<String>) {
    let out = Rc::new(RefCell::new((Vec::new(), Vec::new())));
    let events = Rc::new(RefCell::new(Vec::new()));
    let ev = Rc::clone(&events);
    let child = lp
        .spawn(options, move |_, st| {
            ev.borrow_mut().push(format!("exit {st:?}"))
        })
        .expect("spawned");
    for (k, pipe) in [child.stdout(), child.stderr()].into_iter().enumerate() {
        let Some(pipe) = pipe else { continue };
        let o = Rc::clone(&out);
        pipe.read_start(
            lp,
            move |_, _, data| {
                let mut o = o.borrow_mut();
                if k == 0 { &mut o.0 } else { &mut o.1 }.extend_from_slice(data);
            },
            |_, _, end| end.unwrap(),
        );
    }
    let ev = Rc::clone(&events);
    child.on_close(move |_, st| ev.borrow_mut().push(format!("close {st:?}")));
    run_within(lp, LIMIT);
    let (o, e) = out.borrow().clone();
    let ev = events.borrow().clone();
    (o, e, ev)
}

fn exited(code: i32) -> ExitStatus {
    ExitStatus {
        code: Some(code),
        signal: None,
    }
}

fn piped(program: &str) -> SpawnOptions {
    SpawnOptions::new(program)
        .stdout(Stdio::Pipe)
        .stderr(Stdio::Pipe)
}

/// Output on both pipes, the exit code, then the close with it.
fn output_and_exit_code(lp: &mut Loop) {
    let (o, e, ev) = run_child(
        lp,
        piped("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
    );
    assert_eq!(o, b"out\n");
    assert_eq!(e, b"err\n");
    let st = exited(3);
    assert_eq!(ev, [format!("exit {st:?}"), format!("close {st:?}")]);
}

/// Node's error for a program that does not exist, with its errno and
/// path, and for a working directory that does not exist.
fn spawn_errors_are_nodes(lp: &mut Loop) {
    let e = lp
        .spawn(SpawnOptions::new("nosuchprog"), |_, _| {
            panic!("no child, no exit")
        })
        .unwrap_err();
    assert_eq!(e.to_string(), "spawn nosuchprog ENOENT");
    assert_eq!(e.code(), Some("ENOENT"));
    assert_eq!(e.errno(), Some(libc::ENOENT));
    match &e {
        eventide::Error::Process { syscall, path, .. } => {
            assert_eq!(syscall, "spawn nosuchprog");
            assert_eq!(path.as_deref(), Some(std::path::Path::new("nosuchprog")));
        }
        other => panic!("not a process error: {other:?}"),
    }
    let e = lp
        .spawn(
            SpawnOptions::new("/bin/true").cwd("/nonexistent/dir"),
            |_, _| panic!("no child, no exit"),
        )
        .unwrap_err();
    assert_eq!(e.to_string(), "spawn /bin/true ENOENT");
    let e = lp
        .spawn(SpawnOptions::new("/etc/passwd"), |_, _| {
            panic!("no child, no exit")
        })
        .unwrap_err();
    assert_eq!(e.to_string(), "spawn /etc/passwd EACCES");
    // Nothing in flight: the loop ends at once.
    run_within(lp, LIMIT);
}

/// The environment: inherited and extended, one removed, or cleared.
fn env_inherit_extend_remove_clear(lp: &mut Loop) {
    let show = "echo \"${EVENTIDE_A-unset} ${EVENTIDE_B-unset} ${HOME:+home}\"";
    // SAFETY: the variable is set before any thread of this test reads the
    // environment concurrently (tests only read it through children).
    unsafe { std::env::set_var("EVENTIDE_B", "b") };
    let (o, _, _) = run_child(
        lp,
        piped("/bin/sh").args(["-c", show]).env("EVENTIDE_A", "a"),
    );
    assert_eq!(String::from_utf8(o).unwrap(), "a b home\n");
    let (o, _, _) = run_child(
        lp,
        piped("/bin/sh").args(["-c", show]).env_remove("EVENTIDE_B"),
    );
    assert_eq!(String::from_utf8(o).unwrap(), "unset unset home\n");
    let (o, _, _) = run_child(
        lp,
        piped("/bin/sh")
            .args(["-c", show])
            .env_clear()
            .env("EVENTIDE_A", "only"),
    );
    assert_eq!(String::from_utf8(o).unwrap(), "only unset \n");
}

/// `cwd`, `Stdio::Ignore` and `Stdio::Fd`.
fn cwd_ignore_and_fd(lp: &mut Loop) {
    let (o, _, _) = run_child(lp, piped("pwd").cwd("/usr"));
    assert_eq!(o, b"/usr\n");
    // stdout to a descriptor of ours (a pipe's writing end), stderr ignored.
    let mut fds = [0; 2];
    assert_eq!(pipe2(&mut fds, libc::O_CLOEXEC), 0);
    // SAFETY: two new descriptors, owned here.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let r = lp.pipe_open(r).unwrap();
    let got = Rc::new(RefCell::new(Vec::new()));
    let g = Rc::clone(&got);
    r.read_start(
        lp,
        move |_, _, d| g.borrow_mut().extend_from_slice(d),
        |_, _, _| {},
    );
    let opts = SpawnOptions::new("sh")
        .args(["-c", "echo via-fd; echo hidden >&2"])
        .stdout(Stdio::Fd(w))
        .stderr(Stdio::Ignore);
    let child = lp.spawn(opts, |_, st| assert!(st.success())).unwrap();
    assert!(child.stdout().is_none());
    run_within(lp, LIMIT);
    assert_eq!(&*got.borrow(), b"via-fd\n");
}

/// kill with a signal: the exit reports it by name; after the reap,
/// kill is `ESRCH`.
fn kill_reports_the_signal(lp: &mut Loop) {
    let status = Rc::new(Cell::new(None));
    let s = Rc::clone(&status);
    let child = lp
        .spawn(SpawnOptions::new("sleep").arg("30"), move |_, st| {
            s.set(Some(st))
        })
        .unwrap();
    child.kill(libc::SIGKILL).unwrap();
    run_within(lp, LIMIT);
    let st = status.get().expect("exited");
    assert_eq!(st.code, None);
    assert_eq!(st.signal_name(), Some("SIGKILL"));
    assert_eq!(child.exit_status(), Some(st));
    assert_eq!(
        child.kill(libc::SIGTERM).unwrap_err().to_string(),
        "kill ESRCH"
    );
}

/// `detached`: the child leads a session of its own.
fn detached_child_leads_a_session(lp: &mut Loop) {
    let script = "echo $$ $(cut -d' ' -f6 /proc/$$/stat)";
    let (o, _, _) = run_child(lp, piped("sh").args(["-c", script]).detached(true));
    let o = String::from_utf8(o).unwrap();
    let v: Vec<&str> = o.split_whitespace().collect();
    assert_eq!(v.len(), 2, "{o}");
    assert_eq!(v[0], v[1], "session id is the child's pid");
    let (o, _, _) = run_child(lp, piped("sh").args(["-c", script]));
    let o = String::from_utf8(o).unwrap();
    let v: Vec<&str> = o.split_whitespace().collect();
    assert_ne!(v[0], v[1], "not detached: the parent's session");
}

/// uid/gid: as root the child runs as `nobody`; otherwise the spawn
/// fails with `EPERM` and leaves no child.
fn uid_and_gid(lp: &mut Loop) {
    // SAFETY: getuid takes no arguments.
    let root = unsafe { libc::getuid() } == 0;
    let opts = piped("id").arg("-u").uid(65534).gid(65534);
    if root {
        let (o, _, _) = run_child(lp, opts);
        assert_eq!(o, b"65534\n");
    } else {
        let e = lp.spawn(opts, |_, _| panic!("no child")).unwrap_err();
        assert_eq!(e.to_string(), "spawn id EPERM");
    }
}

/// Every descriptor the loop owns is close-on-exec: a child lists its
/// `/proc/self/fd`, and besides 0-2 and descriptors the test process
/// inherited without close-on-exec, only `ls`'s own directory handle is
/// there.
fn loop_descriptors_do_not_leak_into_children(lp: &mut Loop) {
    // Descriptors of the loop's making: pipes, a listener, a UDP socket.
    let (r, w) = lp.pipe_pair().unwrap();
    let l = lp
        .tcp_listen(
            "127.0.0.1:0".parse().unwrap(),
            eventide::net::ListenOptions::default(),
            |_, _| {},
        )
        .unwrap();
    // Accepting must not keep the loop running while the child runs.
    l.unref(lp);
    let (o, _, _) = run_child(lp, piped("ls").args(["-1", "/proc/self/fd"]));
    l.close(lp);
    r.close(lp);
    w.close(lp);
    run_within(lp, LIMIT);
    let listed: BTreeSet<i32> = String::from_utf8(o)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let inherited = |fd: i32| {
        // SAFETY: fcntl with F_GETFD takes no pointers.
        let f = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        f >= 0 && f & libc::FD_CLOEXEC == 0
    };
    let others: BTreeSet<i32> = listed
        .iter()
        .copied()
        .filter(|&fd| fd > 2 && !inherited(fd))
        .collect();
    assert!(
        others.len() <= 1,
        "leaked into the child: {others:?} of {listed:?}"
    );
    if let Some(&dir) = others.iter().next() {
        let lowest_free = (0..).find(|fd| !listed.contains(fd) || *fd == dir).unwrap();
        assert_eq!(dir, lowest_free, "only ls's directory: {listed:?}");
    }
}

/// `exec_file`: output collected; a timeout kills with SIGTERM
/// (`killed`); too much output is Node's max buffer error.
fn exec_file_collects_times_out_and_limits(lp: &mut Loop) {
    let got: Rc<RefCell<Vec<eventide::Result<Output>>>> = Rc::default();
    let g = Rc::clone(&got);
    lp.exec_file(
        SpawnOptions::new("sh").args(["-c", "echo hi; echo err >&2; exit 3"]),
        ExecOptions::default(),
        move |_, r| g.borrow_mut().push(r),
    )
    .unwrap();
    let g = Rc::clone(&got);
    lp.exec_file(
        SpawnOptions::new("sleep").arg("30"),
        ExecOptions {
            timeout: Some(Duration::from_millis(100)),
            ..ExecOptions::default()
        },
        move |_, r| g.borrow_mut().push(r),
    )
    .unwrap();
    run_within(lp, LIMIT);
    let g = Rc::clone(&got);
    lp.exec_file(
        SpawnOptions::new("yes"),
        ExecOptions {
            max_buffer: 100,
            ..ExecOptions::default()
        },
        move |_, r| g.borrow_mut().push(r),
    )
    .unwrap();
    run_within(lp, LIMIT);
    let got = got.borrow();
    let first = got[0].as_ref().unwrap();
    assert_eq!(first.status, exited(3));
    assert_eq!(first.stdout, b"hi\n");
    assert_eq!(first.stderr, b"err\n");
    assert!(!first.killed);
    let second = got[1].as_ref().unwrap();
    assert!(second.killed);
    assert_eq!(second.status.signal_name(), Some("SIGTERM"));
    let third = got[2].as_ref().unwrap_err();
    assert_eq!(third.to_string(), "stdout maxBuffer length exceeded");
    assert_eq!(third.code(), Some("ERR_CHILD_PROCESS_STDIO_MAXBUFFER"));
}

/// A child's stdin piped: what is written comes back through `cat`, and
/// the end of stdin is `cat`'s end.
fn stdin_to_cat_and_back(lp: &mut Loop) {
    let opts = piped("cat").stdin(Stdio::Pipe);
    let child = lp.spawn(opts, |_, st| assert!(st.success())).unwrap();
    let stdin = child.stdin().unwrap();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    stdin.write(lp, data.clone(), |_, r| r.unwrap());
    stdin.end(lp);
    let got = Rc::new(RefCell::new(Vec::new()));
    let g = Rc::clone(&got);
    child.stdout().unwrap().read_start(
        lp,
        move |_, _, d| g.borrow_mut().extend_from_slice(d),
        |_, _, e| e.unwrap(),
    );
    run_within(lp, LIMIT);
    assert_eq!(*got.borrow(), data);
}

/// `SO_SNDBUF` of a socket.
fn send_buffer(fd: std::os::fd::RawFd) -> usize {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are valid for writes, `len` holds `v`'s size.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&raw mut v).cast(),
            &mut len,
        )
    };
    assert_eq!(r, 0, "getsockopt: {}", std::io::Error::last_os_error());
    v as usize
}

/// The writing end of a piped stdio asks for a 256 KiB send buffer (W12:
/// fewer sleeps of reader and writer), which Linux doubles and caps at
/// `net.core.wmem_max`: the loop's end of stdin has it; the child's end of
/// stdout has it too, so a child writes 256 KiB and goes on (its stderr
/// says so) before anyone reads its stdout, where the default 208 KiB
/// would hold it.
fn piped_stdio_has_a_larger_send_buffer(lp: &mut Loop) {
    if !cfg!(target_os = "linux") {
        return; // Linux's doubling and `/proc/sys` are assumed below.
    }
    let wmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/wmem_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let want = 2 * wmem_max.min(256 * 1024);
    let opts = piped("sh")
        .args(["-c", "head -c 262144 /dev/zero; echo done >&2"])
        .stdin(Stdio::Pipe);
    let child = lp.spawn(opts, |_, st| assert!(st.success())).unwrap();
    let stdin = child.stdin().unwrap();
    assert_eq!(send_buffer(stdin.stream().raw_fd(lp).unwrap()), want);
    stdin.end(lp);
    // Read stdout only once the child said it wrote everything (or, where
    // it could not, after 10 s, so that the test ends and fails).
    let said = Rc::new(Cell::new(false));
    let out = Rc::new(Cell::new(0usize));
    let stdout = child.stdout().unwrap();
    let read_stdout = {
        let out = Rc::clone(&out);
        move |lp: &mut Loop| {
            let out = Rc::clone(&out);
            stdout.read_start(
                lp,
                move |_, _, d| out.set(out.get() + d.len()),
                |_, _, e| e.unwrap(),
            );
        }
    };
    let started = Rc::new(Cell::new(false));
    let start = {
        let started = Rc::clone(&started);
        move |lp: &mut Loop| {
            if !started.replace(true) {
                read_stdout(lp);
            }
        }
    };
    let start = Rc::new(start);
    let (s, st, reading) = (Rc::clone(&said), Rc::clone(&start), Rc::clone(&started));
    child.stderr().unwrap().read_start(
        lp,
        move |lp, _, d| {
            if d.ends_with(b"done\n") {
                // Said before its stdout was read (not after the timer).
                s.set(!reading.get());
                st(lp);
            }
        },
        |_, _, e| e.unwrap(),
    );
    let st = Rc::clone(&start);
    let timer = lp.set_timeout(Duration::from_secs(10), move |lp| st(lp));
    lp.unref_timer(timer);
    run_within(lp, LIMIT);
    assert!(
        said.get(),
        "the child wrote 256 KiB before its stdout was read"
    );
    assert_eq!(out.get(), 262_144);
}

/// `unref`: a child's exit does not keep the loop alive; `set_ref(true)`
/// makes it so again, and the exit is then observed and reaped.
fn unref_child_lets_the_loop_end(lp: &mut Loop) {
    let status = Rc::new(Cell::new(None));
    let s = Rc::clone(&status);
    let child = lp
        .spawn(SpawnOptions::new("sleep").arg("30"), move |_, st| {
            s.set(Some(st))
        })
        .unwrap();
    child.unref(lp);
    run_within(lp, LIMIT);
    // Had the watch kept the loop alive, it would have run to the exit
    // 30 s later (within LIMIT) and the status would be in.
    assert!(status.get().is_none(), "the loop ended before the exit");
    child.set_ref(lp, true);
    child.kill(libc::SIGTERM).unwrap();
    run_within(lp, LIMIT);
    assert_eq!(
        status.get().and_then(ExitStatus::signal_name),
        Some("SIGTERM")
    );
}

/// A child starts with every signal at its default disposition and none
/// blocked, as Node's (libuv resets them all): not with the `SIGPIPE` and
/// `SIGXFSZ` the loop ignores, nor a handler's signal blocked.
fn child_starts_with_default_dispositions(lp: &mut Loop) {
    let listener = lp
        .on_signal(eventide::signal::Signal::USR2, |_, _| {})
        .unwrap();
    let (o, _, _) = run_child(
        lp,
        piped("grep").args(["-E", "^Sig(Ign|Blk):", "/proc/self/status"]),
    );
    listener.remove(lp);
    assert_eq!(
        String::from_utf8(o).unwrap(),
        "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n"
    );
}

/// The program is looked up in the child's `PATH`, as Node's
/// (recorded: `spawn('sh', [], {env: {PATH: '/nonexistent'}})` is
/// `spawn sh ENOENT`; a file found but not executable is `EACCES`; a
/// later directory that has it wins).
fn path_lookup_uses_the_childs_path(lp: &mut Loop) {
    let dir = std::env::temp_dir().join(format!(
        "eventide-path-{}-{}",
        std::process::id(),
        lp.backend()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let noexec = dir.join("eventide-noexec");
    std::fs::write(&noexec, "#!/bin/sh\necho hi\n").unwrap();
    let path = |p: &str| SpawnOptions::new("sh").env_clear().env("PATH", p);
    let e = lp
        .spawn(path("/nonexistent"), |_, _| panic!("no child"))
        .unwrap_err();
    assert_eq!(e.to_string(), "spawn sh ENOENT");
    let both = format!("/nonexistent:{}", dir.display());
    let opts = SpawnOptions::new("eventide-noexec").env("PATH", &both);
    let e = lp.spawn(opts, |_, _| panic!("no child")).unwrap_err();
    assert_eq!(e.to_string(), "spawn eventide-noexec EACCES");
    let status = Rc::new(Cell::new(None));
    let s = Rc::clone(&status);
    let opts = path(&format!("{both}:/bin:/usr/bin")).args(["-c", "exit 5"]);
    lp.spawn(opts, move |_, st| s.set(Some(st))).unwrap();
    run_within(lp, LIMIT);
    assert_eq!(status.get(), Some(exited(5)));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The loop's ends of a child's stdio: nonblocking on the readiness
/// backends (which read until `EAGAIN`), blocking on io_uring, which then
/// waits inside the kernel instead of failing each read or write that
/// would wait with `EAGAIN` (a poll and a second submission each: W12).
/// Data flows both ways either way (`stdin_to_cat_and_back`).
fn stdio_ends_block_only_on_uring(lp: &mut Loop) {
    let opts = piped("cat").stdin(Stdio::Pipe);
    let child = lp.spawn(opts, |_, _| {}).unwrap();
    for pipe in [child.stdin(), child.stdout(), child.stderr()] {
        let fd = pipe.unwrap().stream().raw_fd(lp).unwrap();
        // SAFETY: fcntl with F_GETFL takes no pointers.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        let nonblocking = flags & libc::O_NONBLOCK != 0;
        assert_eq!(nonblocking, lp.backend() != eventide::BackendKind::Uring);
    }
    child.stdin().unwrap().end(lp);
    for pipe in [child.stdout(), child.stderr()] {
        pipe.unwrap().read_start(lp, |_, _, _| {}, |_, _, _| {});
    }
    run_within(lp, LIMIT);
}

/// One descriptor given for both stdout and stderr (two copies of it):
/// both streams reach it, and stdin from `/dev/null` ends at once.
fn one_descriptor_for_stdout_and_stderr(lp: &mut Loop) {
    let mut fds = [0; 2];
    assert_eq!(pipe2(&mut fds, libc::O_CLOEXEC), 0);
    // SAFETY: two new descriptors, owned here.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let w2 = w.try_clone().unwrap();
    let r = lp.pipe_open(r).unwrap();
    let got = Rc::new(RefCell::new(Vec::new()));
    let g = Rc::clone(&got);
    r.read_start(
        lp,
        move |_, _, d| g.borrow_mut().extend_from_slice(d),
        |_, _, _| {},
    );
    let opts = SpawnOptions::new("sh")
        .args(["-c", "cat; echo out; echo err >&2"])
        .stdin(Stdio::Ignore)
        .stdout(Stdio::Fd(w))
        .stderr(Stdio::Fd(w2));
    lp.spawn(opts, |_, st| assert!(st.success())).unwrap();
    run_within(lp, LIMIT);
    assert_eq!(&*got.borrow(), b"out\nerr\n");
}

on_every_backend!(
    one_descriptor_for_stdout_and_stderr,
    stdio_ends_block_only_on_uring,
    path_lookup_uses_the_childs_path,
    child_starts_with_default_dispositions,
    unref_child_lets_the_loop_end,
    output_and_exit_code,
    spawn_errors_are_nodes,
    env_inherit_extend_remove_clear,
    cwd_ignore_and_fd,
    kill_reports_the_signal,
    detached_child_leads_a_session,
    uid_and_gid,
    loop_descriptors_do_not_leak_into_children,
    exec_file_collects_times_out_and_limits,
    stdin_to_cat_and_back,
    piped_stdio_has_a_larger_send_buffer,
);

/// `pipe2(2)`; macOS has none: `pipe(2)`, then the same flags by `fcntl`.
fn pipe2(fds: &mut [libc::c_int; 2], flags: libc::c_int) -> libc::c_int {
    #[cfg(not(target_vendor = "apple"))]
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    return unsafe { libc::pipe2(fds.as_mut_ptr(), flags) };
    #[cfg(target_vendor = "apple")]
    {
        // SAFETY: `fds` has room for the two descriptors pipe writes.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            return -1;
        }
        for &fd in fds.iter() {
            // SAFETY: fcntl with integer arguments on a descriptor just made.
            unsafe {
                if flags & libc::O_CLOEXEC != 0 {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                }
                if flags & libc::O_NONBLOCK != 0 {
                    libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK);
                }
            }
        }
        0
    }
}

/// This binary again, with exits watched the `SIGCHLD` way (the
/// fallback where there is no `pidfd_open`; `EVENTIDE_NO_PIDFD=1`).
#[test]
fn whole_binary_again_without_pidfd() {
    if process_support::forced_sigchld() {
        return;
    }
    process_support::rerun_without_pidfd("whole_binary_again_without_pidfd", 45);
}
