//! How exits are observed, both ways: through pidfds, and the `SIGCHLD`
//! way (the fallback where there is no `pidfd_open`, forced here by the
//! test hook `EVENTIDE_NO_PIDFD=1`: `whole_binary_again_without_pidfd`
//! runs this binary, and each `process_*` test binary, again with it).
//! Several loops each get their own children's exits, exact codes and
//! signals; a child the program made otherwise is left to it; the
//! program's own `SIGCHLD` listener still hears its signals; no zombie.

mod process_support;
mod util;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use eventide::Loop;
use eventide::process::{ExitStatus, SpawnOptions};
use eventide::signal::Signal;
use util::run_within;

const LIMIT: Duration = Duration::from_secs(60);

/// Whether `pid` is a zombie child of this process.
fn is_our_zombie(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let me = std::process::id().to_string();
    f.first() == Some(&"Z") && f.get(1) == Some(&me.as_str())
}

/// 24 children on `lp`, 4 alive at once: child `i` exits with code
/// `tag * 32 + i % 32`, except every 6th, which kills itself with
/// SIGTERM. Each exit callback checks its own status exactly. Returns
/// the pids.
fn spawn_batch(lp: &mut Loop, tag: i32) -> Vec<u32> {
    type Pids = Rc<RefCell<Vec<u32>>>;
    fn start(lp: &mut Loop, tag: i32, next: Rc<Cell<i32>>, done: Rc<Cell<i32>>, pids: Pids) {
        let i = next.get();
        if i == 24 {
            return;
        }
        next.set(i + 1);
        let code = tag * 32 + i % 32;
        let (script, want) = if i % 6 == 5 {
            (
                "kill -TERM $$; sleep 5".to_owned(),
                ExitStatus {
                    code: None,
                    signal: Some(libc::SIGTERM),
                },
            )
        } else {
            (
                format!("exit {code}"),
                ExitStatus {
                    code: Some(code),
                    signal: None,
                },
            )
        };
        let p = Rc::clone(&pids);
        let child = lp
            .spawn(
                SpawnOptions::new("/bin/sh").args(["-c", &script]),
                move |lp, st| {
                    assert_eq!(st, want, "loop {tag} child {i}");
                    done.set(done.get() + 1);
                    start(lp, tag, next, done, p);
                },
            )
            .unwrap();
        pids.borrow_mut().push(child.pid());
    }
    let next = Rc::new(Cell::new(0));
    let done = Rc::new(Cell::new(0));
    let pids: Pids = Rc::default();
    for _ in 0..4 {
        start(
            lp,
            tag,
            Rc::clone(&next),
            Rc::clone(&done),
            Rc::clone(&pids),
        );
    }
    run_within(lp, LIMIT);
    assert_eq!(done.get(), 24, "loop {tag}");
    pids.borrow().clone()
}

/// Three loops (this one and two on threads of their own) spawn at once;
/// each gets its own children's exits, exact; meanwhile a child made
/// with `std::process::Command` is not reaped by any loop: its own
/// `wait` gets its status. No zombie afterwards.
fn several_loops_each_reap_their_own(lp: &mut Loop) {
    let backend = lp.backend();
    let outsider = std::process::Command::new("/bin/sh")
        .args(["-c", "sleep 0.3; exit 42"])
        .spawn()
        .unwrap();
    let threads: Vec<_> = (1..3)
        .map(|tag| {
            std::thread::spawn(move || {
                let mut lp = util::new_loop(backend).expect("the backend the test runs on");
                spawn_batch(&mut lp, tag)
            })
        })
        .collect();
    let mut pids = spawn_batch(lp, 0);
    for t in threads {
        pids.extend(t.join().unwrap());
    }
    let mut outsider = outsider;
    assert_eq!(outsider.wait().unwrap().code(), Some(42));
    let zombies: Vec<u32> = pids.into_iter().filter(|&p| is_our_zombie(p)).collect();
    assert_eq!(zombies, Vec::<u32>::new());
}

/// The program's SIGCHLD listener hears its child's exit (once at least:
/// the kernel merges pending SIGCHLDs), beside the exit callback, which
/// has the exact status.
fn user_sigchld_listener_still_hears(lp: &mut Loop) {
    let heard = Rc::new(Cell::new(0));
    let h = Rc::clone(&heard);
    let listener = lp
        .on_signal(Signal::CHLD, move |_, _| h.set(h.get() + 1))
        .unwrap();
    let status = Rc::new(Cell::new(None));
    let s = Rc::clone(&status);
    lp.spawn(
        SpawnOptions::new("/bin/sh").args(["-c", "exit 9"]),
        move |_, st| s.set(Some(st)),
    )
    .unwrap();
    run_within(lp, LIMIT);
    assert_eq!(
        status.get(),
        Some(ExitStatus {
            code: Some(9),
            signal: None
        })
    );
    // The listener runs in the poll phase of the delivery that woke the
    // loop; let a late one in (the loop stays alive for a bounded time).
    lp.set_timeout(Duration::from_millis(200), |_| {});
    run_within(lp, LIMIT);
    assert!(
        heard.get() >= 1,
        "the program's SIGCHLD listener heard nothing"
    );
    assert!(listener.remove(lp));
}

/// The way exits are watched follows the test hook: with
/// `EVENTIDE_NO_PIDFD=1` the process holds no pidfd while a child runs;
/// without it (on this kernel, which has pidfds) it does.
fn pidfd_or_not_as_the_hook_says(lp: &mut Loop) {
    let status = Rc::new(Cell::new(None));
    let s = Rc::clone(&status);
    let child = lp
        .spawn(SpawnOptions::new("sleep").arg("30"), move |_, st| {
            s.set(Some(st))
        })
        .unwrap();
    let holds = process_support::holds_a_pidfd();
    child.kill(libc::SIGKILL).unwrap();
    run_within(lp, LIMIT);
    assert_eq!(
        status.get().and_then(ExitStatus::signal_name),
        Some("SIGKILL")
    );
    if process_support::forced_sigchld() {
        assert!(!holds, "a pidfd with EVENTIDE_NO_PIDFD=1");
    } else {
        assert!(holds, "no pidfd on a kernel that has them");
    }
}

on_every_backend!(
    several_loops_each_reap_their_own,
    user_sigchld_listener_still_hears,
    pidfd_or_not_as_the_hook_says,
);

/// This binary again, the `SIGCHLD` way.
#[test]
fn whole_binary_again_without_pidfd() {
    if process_support::forced_sigchld() {
        return;
    }
    process_support::rerun_without_pidfd("whole_binary_again_without_pidfd", 9);
}

/// A kernel without `pidfd_open`, made with a seccomp filter that answers
/// it `ENOSYS` (as a kernel before 5.3 does), in a child process: the
/// probe finds it missing and exits are watched the `SIGCHLD` way, with
/// no test hook, on every backend.
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
#[test]
fn without_pidfd_open_in_the_kernel() {
    if process_support::forced_sigchld() {
        return;
    }
    let out = util::run_child("child_without_pidfd_open", &[]);
    assert!(out.contains("no pidfd_open: ok"), "{out}");
}

#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
#[test]
#[ignore = "child entry point: run by without_pidfd_open_in_the_kernel"]
fn child_without_pidfd_open() {
    assert!(util::in_child());
    deny_pidfd_open();
    // SAFETY: pidfd_open takes no pointers.
    let rc = unsafe { libc::syscall(libc::SYS_pidfd_open, std::process::id(), 0) };
    assert_eq!(rc, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ENOSYS)
    );
    for &backend in eventide::BackendKind::compiled() {
        let Some(mut lp) = util::new_loop(backend) else {
            continue;
        };
        pidfd_or_not_as_the_hook_says_without_hook(&mut lp);
        several_loops_each_reap_their_own(&mut lp);
        user_sigchld_listener_still_hears(&mut lp);
    }
    println!("no pidfd_open: ok");
}

/// [`pidfd_or_not_as_the_hook_says`] where the kernel has none: no pidfd,
/// the exit comes, exact.
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
fn pidfd_or_not_as_the_hook_says_without_hook(lp: &mut Loop) {
    let status = Rc::new(Cell::new(None));
    let s = Rc::clone(&status);
    let child = lp
        .spawn(SpawnOptions::new("sleep").arg("30"), move |_, st| {
            s.set(Some(st))
        })
        .unwrap();
    assert!(!process_support::holds_a_pidfd());
    child.kill(libc::SIGUSR1).unwrap();
    run_within(lp, LIMIT);
    assert_eq!(
        status.get().and_then(ExitStatus::signal_name),
        Some("SIGUSR1")
    );
}

/// Installs, on this thread and what it starts, a seccomp filter under
/// which `pidfd_open` fails with `ENOSYS`.
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
fn deny_pidfd_open() {
    #[cfg(target_arch = "x86_64")]
    const ARCH: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
    #[cfg(target_arch = "aarch64")]
    const ARCH: u32 = 0xc000_00b7; // AUDIT_ARCH_AARCH64
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    let f = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let filter = [
        f(LD_W_ABS, 0, 0, 4), // seccomp_data.arch
        f(JEQ_K, 0, 3, ARCH), // another architecture: allow
        f(LD_W_ABS, 0, 0, 0), // seccomp_data.nr
        f(JEQ_K, 0, 1, libc::SYS_pidfd_open as u32),
        f(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        f(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: prctl with integer arguments only.
    let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    assert_eq!(r, 0);
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
    assert_eq!(r, 0, "seccomp: {}", std::io::Error::last_os_error());
}
