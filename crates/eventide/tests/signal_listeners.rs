//! Signal listeners (`Loop::on_signal`), on every backend: a delivery
//! reaches each listener once, on its loop; two loops on two threads each
//! hear it; a listener does not keep the loop alive unless referenced;
//! the last listener's removal restores the previous disposition (queried
//! with sigaction, and shown in a child process that a second SIGINT
//! kills); SIGCHLD from a real child; panicking, self-removing,
//! re-entering listeners.
//!
//! The tests change process-wide state (dispositions) and raise signals
//! at the whole process, so they run one at a time (`serial()`), in this
//! binary of their own.

mod util;

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::{Arc, Barrier, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use eventide::signal::{Signal, SignalListener};
use eventide::{BackendKind, Loop};
use util::{new_loop, run_within};

const LIMIT: Duration = Duration::from_secs(10);

/// One test at a time: they all raise signals at the whole process.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sends `signal` to the whole process (any thread may take it).
fn kill_self(signal: Signal) {
    // SAFETY: kill(2) with this process's id and a valid signal.
    assert_eq!(unsafe { libc::kill(libc::getpid(), signal.as_raw()) }, 0);
}

/// The signal's current handler (`SIG_DFL`, `SIG_IGN`, or a function).
fn disposition(signal: Signal) -> libc::sighandler_t {
    // SAFETY: an all-zero sigaction is a valid buffer; a null new action
    // only queries.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        assert_eq!(
            libc::sigaction(signal.as_raw(), std::ptr::null(), &mut old),
            0
        );
        old.sa_sigaction
    }
}

fn set_disposition(signal: Signal, handler: libc::sighandler_t) {
    // SAFETY: an all-zero sigaction with SIG_DFL or SIG_IGN is valid.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler;
        assert_eq!(
            libc::sigaction(signal.as_raw(), &action, std::ptr::null_mut()),
            0
        );
    }
}

/// Who ran, in order.
#[derive(Clone, Default)]
struct Log(Rc<RefCell<Vec<String>>>);

impl Log {
    fn push(&self, what: impl Into<String>) {
        self.0.borrow_mut().push(what.into());
    }
    fn all(&self) -> Vec<String> {
        self.0.borrow().clone()
    }
}

/// Two listeners of SIGUSR1 and one of SIGUSR2 on one loop; one SIGUSR1
/// reaches both SIGUSR1 listeners once, in the order added, on the loop's
/// thread, and not the SIGUSR2 one. Then the listeners remove themselves
/// and the loop ends (the timer that kept it alive is cleared).
fn each_listener_once_on_its_loop(lp: &mut Loop) {
    let _serial = serial();
    let log = Log::default();
    let me = thread::current().id();
    // Keeps the loop alive until the delivery; raised from the loop.
    let keep = lp.set_timeout(LIMIT, |_| panic!("the signal never came"));
    for name in ["a", "b"] {
        let log = log.clone();
        lp.on_signal(Signal::USR1, move |lp, listener| {
            assert_eq!(thread::current().id(), me, "on the loop's thread");
            assert_eq!(listener.signal(), Signal::USR1);
            log.push(name);
            assert!(listener.remove(lp));
            assert!(!listener.remove(lp), "removed once");
            if name == "b" {
                lp.clear_timer(keep);
            }
        })
        .unwrap();
    }
    let l = log.clone();
    let other = lp
        .on_signal(Signal::USR2, move |_, _| l.push("usr2"))
        .unwrap();
    lp.set_immediate(|_| kill_self(Signal::USR1));
    run_within(lp, LIMIT * 2);
    assert_eq!(log.all(), ["a", "b"]);
    assert!(other.remove(lp));
    assert_eq!(disposition(Signal::USR1), libc::SIG_DFL);
}

/// Three deliveries before the loop looks: three calls (eventide merges
/// none; each raise(3) is taken by this thread before it returns).
fn every_delivery_counts(lp: &mut Loop) {
    let _serial = serial();
    let calls = Rc::new(Cell::new(0));
    let keep = lp.set_timeout(LIMIT, |_| panic!("the signals never came"));
    let c = Rc::clone(&calls);
    let listener = lp
        .on_signal(Signal::USR2, move |lp, _| {
            c.set(c.get() + 1);
            if c.get() == 3 {
                // A fourth call, if any, would come in this same turn.
                lp.clear_timer(keep);
            }
        })
        .unwrap();
    for _ in 0..3 {
        // SAFETY: raise(3) sends a valid signal to this thread.
        assert_eq!(unsafe { libc::raise(libc::SIGUSR2) }, 0);
    }
    run_within(lp, LIMIT * 2);
    assert_eq!(calls.get(), 3);
    listener.remove(lp);
}

/// No delivery is lost: 2,000 real-time signals (which the kernel queues,
/// never merges) sent from another thread, which blocks them so that the
/// loop's thread (or another) takes each asynchronously while the loop
/// runs, reach the listener 2,000 times.
#[cfg(target_os = "linux")]
fn no_delivery_lost(lp: &mut Loop) {
    const SENT: u32 = 2_000;
    let _serial = serial();
    let signal = Signal::from_raw(libc::SIGRTMIN() + 3);
    let calls = Rc::new(Cell::new(0u32));
    let c = Rc::clone(&calls);
    let listener = lp
        .on_signal(signal, move |lp, me| {
            c.set(c.get() + 1);
            if c.get() == SENT {
                me.unref(lp);
            }
        })
        .unwrap();
    listener.set_ref(lp, true);
    let sender = thread::spawn(move || {
        // SAFETY: blocks one signal in this thread only; `set` is a live
        // local.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, signal.as_raw());
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        }
        for _ in 0..SENT {
            kill_self(signal);
        }
    });
    run_within(lp, LIMIT * 3);
    sender.join().unwrap();
    assert_eq!(calls.get(), SENT);
    listener.remove(lp);
}

/// A listener alone does not keep the loop alive (Node: a script with
/// only `process.on('SIGUSR2', f)` exits); a referenced one does, until
/// it is removed.
fn listeners_are_unreferenced_by_default(lp: &mut Loop) {
    let _serial = serial();
    let listener = lp.on_signal(Signal::USR2, |_, _| {}).unwrap();
    assert!(!listener.has_ref(lp));
    assert!(!lp.alive(), "an unreferenced listener keeps nothing alive");
    run_within(lp, LIMIT);
    assert!(listener.is_active(lp), "and it is still there");

    let ran = Rc::new(Cell::new(false));
    let r = Rc::clone(&ran);
    let referenced = lp
        .on_signal(Signal::USR2, move |lp, me| {
            r.set(true);
            me.remove(lp);
        })
        .unwrap();
    assert!(referenced.set_ref(lp, true) && referenced.has_ref(lp));
    assert!(lp.alive());
    // The signal comes from a timer: the loop must still be running
    // (kept alive by the listener alone) when it does.
    lp.set_timeout(Duration::from_millis(20), |_| kill_self(Signal::USR2));
    run_within(lp, LIMIT);
    assert!(
        ran.get(),
        "the loop ran until the referenced listener was called"
    );
    assert!(!referenced.is_active(lp) && !referenced.has_ref(lp));
    // Unreferencing works the other way too.
    let again = lp.on_signal(Signal::USR2, |_, _| {}).unwrap();
    again.set_ref(lp, true);
    assert!(lp.alive());
    again.unref(lp);
    assert!(!lp.alive());
    again.remove(lp);
    listener.remove(lp);
    assert_eq!(disposition(Signal::USR2), libc::SIG_DFL);
}

/// A listener that panics (with a panic handler, then without one), one
/// that removes a later one, one that adds a listener, and one that calls
/// `run` (which refuses): the others run, each once, and the loop stays
/// consistent.
fn panicking_and_reentrant_listeners(lp: &mut Loop) {
    let _serial = serial();
    // What SIGHUP had before (ignored under `nohup`): it comes back.
    let original = disposition(Signal::HUP);
    // With a panic handler, then, on a new loop, without one.
    let mut fresh = None;
    for with_handler in [true, false] {
        let lp = if with_handler {
            &mut *lp
        } else {
            fresh.insert(new_loop(lp.backend()).unwrap())
        };
        let log = Log::default();
        if with_handler {
            let l = log.clone();
            lp.set_panic_handler(move |_, _| l.push("handler"));
        }
        let later: Rc<Cell<Option<SignalListener>>> = Rc::default();
        let l = log.clone();
        let p = lp
            .on_signal(Signal::HUP, move |_, _| {
                l.push("panics");
                panic!("listener panic");
            })
            .unwrap();
        let l = log.clone();
        let lt = Rc::clone(&later);
        let remover = lp
            .on_signal(Signal::HUP, move |lp, _| {
                l.push("remover");
                let Some(later) = lt.take() else {
                    return;
                };
                assert!(later.remove(lp));
                assert!(matches!(lp.run(), Err(eventide::Error::Reentrant)));
                let l = l.clone();
                lp.on_signal(Signal::HUP, move |lp, me| {
                    l.push("added");
                    me.remove(lp);
                })
                .unwrap();
            })
            .unwrap();
        let l = log.clone();
        later.set(Some(
            lp.on_signal(Signal::HUP, move |_, _| l.push("removed"))
                .unwrap(),
        ));
        let l = log.clone();
        let last = lp
            .on_signal(Signal::HUP, move |_, _| l.push("last"))
            .unwrap();
        for listener in [p, remover, last] {
            listener.set_ref(lp, true);
        }
        // Runs the loop for a while (the referenced listeners keep it
        // alive); returns whether a panic left run().
        let run = |lp: &mut Loop| {
            let watchdog = lp.set_timeout(Duration::from_millis(300), |lp| lp.stop());
            lp.unref_timer(watchdog);
            match catch_unwind(AssertUnwindSafe(|| lp.run())) {
                Ok(result) => {
                    result.unwrap();
                    false
                }
                Err(_) => {
                    lp.clear_timer(watchdog);
                    true
                }
            }
        };
        kill_self(Signal::HUP);
        if with_handler {
            assert!(!run(lp), "the handler took the panic");
            assert_eq!(log.all(), ["panics", "handler", "remover", "last"]);
        } else {
            assert!(run(lp), "the panic left run()");
            assert_eq!(log.all(), ["panics"]);
            // The rest of the delivery runs at the next run(), from the
            // pending phase.
            assert!(!run(lp));
            assert_eq!(log.all(), ["panics", "remover", "last"]);
        }
        // The added listener hears the next delivery, after the others.
        let before = log.all().len();
        kill_self(Signal::HUP);
        if with_handler {
            assert!(!run(lp));
        } else {
            assert!(run(lp));
            assert!(!run(lp));
        }
        let all = log.all();
        let expected: &[&str] = if with_handler {
            &["panics", "handler", "remover", "last", "added"]
        } else {
            &["panics", "remover", "last", "added"]
        };
        assert_eq!(&all[before..], expected, "{all:?}");
        for listener in [p, remover, last] {
            assert!(listener.remove(lp));
        }
        // The added listener removed itself: nothing is left.
        assert_eq!(disposition(Signal::HUP), original, "{all:?}");
        assert!(!lp.alive());
    }
}

/// SIGKILL, SIGSTOP and the fault signals are refused with Node's error.
fn refused_signals(lp: &mut Loop) {
    for signal in [
        Signal::KILL,
        Signal::STOP,
        Signal::SEGV,
        Signal::BUS,
        Signal::FPE,
        Signal::ILL,
        Signal::from_raw(0),
        Signal::from_raw(65),
    ] {
        let error = lp.on_signal(signal, |_, _| {}).unwrap_err();
        assert_eq!(error.to_string(), "uv_signal_start EINVAL");
        assert_eq!(error.code(), Some("EINVAL"));
    }
    assert!(!lp.alive());
}

/// A user's SIGCHLD listener hears a child's exit.
fn sigchld_from_a_child(lp: &mut Loop) {
    let _serial = serial();
    let child: Rc<RefCell<Option<std::process::Child>>> = Rc::default();
    let exited = Rc::new(Cell::new(false));
    let (c, e) = (Rc::clone(&child), Rc::clone(&exited));
    let listener = lp
        .on_signal(Signal::CHLD, move |lp, me| {
            let status = c.borrow_mut().take().expect("spawned").wait().unwrap();
            assert!(status.success());
            e.set(true);
            me.remove(lp);
        })
        .unwrap();
    listener.set_ref(lp, true);
    *child.borrow_mut() = Some(
        std::process::Command::new("true")
            .spawn()
            .expect("spawn true"),
    );
    run_within(lp, LIMIT);
    assert!(exited.get(), "the listener ran");
    assert_eq!(disposition(Signal::CHLD), libc::SIG_DFL);
}

#[cfg(target_os = "linux")]
on_every_backend! {
    each_listener_once_on_its_loop,
    no_delivery_lost,
    every_delivery_counts,
    listeners_are_unreferenced_by_default,
    panicking_and_reentrant_listeners,
    refused_signals,
    sigchld_from_a_child,
}

#[cfg(not(target_os = "linux"))]
on_every_backend! {
    each_listener_once_on_its_loop,
    every_delivery_counts,
    listeners_are_unreferenced_by_default,
    panicking_and_reentrant_listeners,
    refused_signals,
    sigchld_from_a_child,
}

/// Two loops on two threads (each on `backend`), one listener each: one
/// SIGUSR1 sent to the process reaches both, each on its own thread.
fn two_loops_on_two_threads(backend: BackendKind) {
    let _serial = serial();
    if new_loop(backend).is_none() {
        return;
    }
    let ready = Arc::new(Barrier::new(3));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let ready = Arc::clone(&ready);
            thread::spawn(move || {
                let mut lp = new_loop(backend).unwrap();
                let calls = Rc::new(Cell::new(0));
                let c = Rc::clone(&calls);
                let me = thread::current().id();
                let listener = lp
                    .on_signal(Signal::USR1, move |lp, listener| {
                        assert_eq!(thread::current().id(), me);
                        c.set(c.get() + 1);
                        // Stays a little, in case a second call comes.
                        listener.unref(lp);
                        lp.set_timeout(Duration::from_millis(50), move |lp| {
                            listener.remove(lp);
                        });
                    })
                    .unwrap();
                listener.set_ref(&mut lp, true);
                ready.wait();
                run_within(&mut lp, LIMIT);
                calls.get()
            })
        })
        .collect();
    ready.wait();
    kill_self(Signal::USR1);
    let calls: Vec<u32> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(calls, [1, 1]);
    assert_eq!(disposition(Signal::USR1), libc::SIG_DFL);
}

/// The disposition a signal had before its first listener comes back
/// when its last listener (over every loop) goes, or its loop is dropped:
/// the default, or an ignore.
fn last_listener_restores_the_disposition(backend: BackendKind) {
    let _serial = serial();
    let (Some(mut a), Some(mut b)) = (new_loop(backend), new_loop(backend)) else {
        return;
    };
    assert_eq!(disposition(Signal::USR2), libc::SIG_DFL);
    let one = a.on_signal(Signal::USR2, |_, _| {}).unwrap();
    let two = a.on_signal(Signal::USR2, |_, _| {}).unwrap();
    let three = b.on_signal(Signal::USR2, |_, _| {}).unwrap();
    let handled = disposition(Signal::USR2);
    assert_ne!(handled, libc::SIG_DFL);
    assert_ne!(handled, libc::SIG_IGN);
    assert!(
        !three.remove(&mut a),
        "a key of loop b names nothing in loop a"
    );
    assert!(one.remove(&mut a));
    assert!(three.remove(&mut b));
    assert_eq!(disposition(Signal::USR2), handled, "`two` is still there");
    assert!(two.remove(&mut a));
    assert_eq!(disposition(Signal::USR2), libc::SIG_DFL);

    // An ignored signal is ignored again afterwards; a dropped loop
    // releases its listeners.
    set_disposition(Signal::WINCH, libc::SIG_IGN);
    let _kept = b.on_signal(Signal::WINCH, |_, _| {}).unwrap();
    assert_eq!(disposition(Signal::WINCH), handled);
    drop(b);
    assert_eq!(disposition(Signal::WINCH), libc::SIG_IGN);
    set_disposition(Signal::WINCH, libc::SIG_DFL);
}

macro_rules! per_backend {
    ($($name:ident),*) => {
        mod threads {
            $(
                mod $name {
                    use eventide::BackendKind;
                    #[test]
                    fn uring() {
                        super::super::$name(BackendKind::Uring);
                    }
                    #[test]
                    fn epoll() {
                        super::super::$name(BackendKind::Epoll);
                    }
                    #[test]
                    fn poll() {
                        super::super::$name(BackendKind::Poll);
                    }
                }
            )*
        }
    };
}

per_backend!(
    two_loops_on_two_threads,
    last_listener_restores_the_disposition
);

/// In a child process: a SIGINT listener that removes itself (Node's
/// `process.once('SIGINT')`) hears the first SIGINT; the second kills
/// the process, as Node's second Ctrl-C does.
#[test]
#[ignore = "run in a child process by second_sigint_kills"]
fn child_second_sigint() {
    if !util::in_child() {
        return;
    }
    // SIGINT's default action before the first listener (a shell starts a
    // background job with SIGINT ignored, and the last listener's removal
    // restores what was there).
    set_disposition(Signal::INT, libc::SIG_DFL);
    let mut lp = Loop::new().unwrap();
    let listener = lp
        .on_signal(Signal::INT, |lp, me| {
            println!("first SIGINT heard");
            me.remove(lp);
            kill_self(Signal::INT);
            // Not reached: the default action ends the process.
            std::thread::sleep(Duration::from_secs(5));
            println!("still alive after the second SIGINT");
        })
        .unwrap();
    listener.set_ref(&mut lp, true);
    kill_self(Signal::INT);
    run_within(&mut lp, LIMIT);
}

#[test]
fn second_sigint_kills() {
    use std::os::unix::process::ExitStatusExt;
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "child_second_sigint",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("EVENTIDE_TEST_CHILD", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("first SIGINT heard"), "{text}");
    assert!(!text.contains("still alive"), "{text}");
    assert_eq!(out.status.signal(), Some(libc::SIGINT), "{:?}", out.status);
}
