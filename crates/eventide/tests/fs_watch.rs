//! `fs.watch` on every backend, against the event sequences Node v20.20
//! gives for the same steps (recorded with the script in the comment of
//! each case: each step runs in a timer 100 ms after the previous one,
//! wholly, before the loop reads the events it caused).

mod fs_support;
mod util;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use eventide::fs::{WatchEventType, WatchOptions};
use eventide::{Error, Loop};
use fs_support::tmp;
use util::run_within;

/// One step of a scenario: its name, and the file operations it does.
type Step = (&'static str, Box<dyn Fn(&Path)>);

fn step(name: &'static str, f: impl Fn(&Path) + 'static) -> Step {
    (name, Box::new(f))
}

/// Watches `target(dir)` with `options`, runs `steps` 100 ms apart in
/// timers, closes the watcher 200 ms after the last, and returns what was
/// seen, as the Node script prints it: `--step`, `rename a.txt`,
/// `error MESSAGE`.
fn scenario(
    lp: &mut Loop,
    setup: impl FnOnce(&Path),
    target: impl FnOnce(&Path) -> PathBuf,
    options: WatchOptions,
    steps: Vec<Step>,
) -> Vec<String> {
    let dir = tmp();
    setup(dir.path());
    let seen = Rc::new(RefCell::new(Vec::new()));
    let (s1, s2) = (Rc::clone(&seen), Rc::clone(&seen));
    let watcher = lp
        .fs()
        .watch(
            target(dir.path()),
            options,
            move |_, _, kind, name| s1.borrow_mut().push(format!("{kind} {}", name.display())),
            move |_, _, error| s2.borrow_mut().push(format!("error {error}")),
        )
        .expect("watching starts");
    // Each step's timer is started by the previous one's: the events a
    // step caused (all made before its callback returns) are read in the
    // poll phase right after it, before the next step can be due.
    next_step(
        lp,
        steps.into_iter().collect(),
        Rc::clone(&seen),
        dir.path().to_path_buf(),
        watcher,
    );
    run_within(lp, Duration::from_secs(20));
    seen.take()
}

/// Runs the first of `steps` in 100 ms, and from there the rest; closes
/// the watcher 200 ms after the last.
fn next_step(
    lp: &mut Loop,
    mut steps: std::collections::VecDeque<Step>,
    seen: Rc<RefCell<Vec<String>>>,
    path: PathBuf,
    watcher: eventide::fs::FsWatcher,
) {
    let Some((name, f)) = steps.pop_front() else {
        lp.set_timeout(Duration::from_millis(200), move |lp| {
            assert!(watcher.close(lp));
            assert!(!watcher.close(lp), "a second close does nothing");
        });
        return;
    };
    let mut step = Some((name, f, steps));
    lp.set_timeout(Duration::from_millis(100), move |lp| {
        let Some((name, f, steps)) = step.take() else {
            return;
        };
        seen.borrow_mut().push(format!("--{name}"));
        f(&path);
        next_step(lp, steps, Rc::clone(&seen), path.clone(), watcher);
    });
}

fn j(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

fn plain() -> WatchOptions {
    WatchOptions::new()
}

fn recursive() -> WatchOptions {
    WatchOptions::new().recursive(true)
}

fn create(dir: &Path) {
    std::fs::write(j(dir, "a.txt"), "x").unwrap();
}

fn append(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(b"y").unwrap();
}

fn dir_itself(d: &Path) -> PathBuf {
    d.to_path_buf()
}

// Node: dir create: ["--create","rename a.txt","change a.txt"]
fn a_file_created_in_a_directory(lp: &mut Loop) {
    let seen = scenario(
        lp,
        |_| {},
        dir_itself,
        plain(),
        vec![step("create", create)],
    );
    assert_eq!(seen, ["--create", "rename a.txt", "change a.txt"]);
}

// Node: dir write: ["--write","change a.txt"]
fn a_file_written_in_a_directory(lp: &mut Loop) {
    let seen = scenario(
        lp,
        create,
        dir_itself,
        plain(),
        vec![step("write", |d| append(&j(d, "a.txt")))],
    );
    assert_eq!(seen, ["--write", "change a.txt"]);
}

// Node: dir rename: ["--rename","rename a.txt","rename b.txt"]
fn a_file_renamed_in_a_directory(lp: &mut Loop) {
    let seen = scenario(
        lp,
        create,
        dir_itself,
        plain(),
        vec![step("rename", |d| {
            std::fs::rename(j(d, "a.txt"), j(d, "b.txt")).unwrap()
        })],
    );
    assert_eq!(seen, ["--rename", "rename a.txt", "rename b.txt"]);
}

// Node: dir delete: ["--delete","rename a.txt"]
fn a_file_deleted_in_a_directory(lp: &mut Loop) {
    let seen = scenario(
        lp,
        create,
        dir_itself,
        plain(),
        vec![step("delete", |d| {
            std::fs::remove_file(j(d, "a.txt")).unwrap()
        })],
    );
    assert_eq!(seen, ["--delete", "rename a.txt"]);
}

// Node: dir removed: ["--rmdir","rename w","rename w","--mkdir"]
fn the_watched_directory_removed(lp: &mut Loop) {
    let seen = scenario(
        lp,
        |d| std::fs::create_dir(j(d, "w")).unwrap(),
        |d| j(d, "w"),
        plain(),
        vec![
            step("rmdir", |d| std::fs::remove_dir(j(d, "w")).unwrap()),
            step("mkdir", |d| std::fs::create_dir(j(d, "w")).unwrap()),
        ],
    );
    assert_eq!(seen, ["--rmdir", "rename w", "rename w", "--mkdir"]);
}

// Node: dir moved: ["--mv","rename w","--create in moved","rename a","change a"]
fn the_watched_directory_moved(lp: &mut Loop) {
    let seen = scenario(
        lp,
        |d| std::fs::create_dir(j(d, "w")).unwrap(),
        |d| j(d, "w"),
        plain(),
        vec![
            step("mv", |d| std::fs::rename(j(d, "w"), j(d, "v")).unwrap()),
            step("create in moved", |d| {
                std::fs::write(d.join("v").join("a"), "x").unwrap()
            }),
        ],
    );
    assert_eq!(
        seen,
        [
            "--mv",
            "rename w",
            "--create in moved",
            "rename a",
            "change a"
        ]
    );
}

// Node: file write: ["--write","change a.txt"]; file chmod: ["--chmod","change a.txt"]
fn a_watched_file_written_and_chmodded(lp: &mut Loop) {
    use std::os::unix::fs::PermissionsExt;
    let seen = scenario(
        lp,
        create,
        |d| j(d, "a.txt"),
        plain(),
        vec![
            step("write", |d| append(&j(d, "a.txt"))),
            step("chmod", |d| {
                let p = std::fs::Permissions::from_mode(0o600);
                std::fs::set_permissions(j(d, "a.txt"), p).unwrap()
            }),
        ],
    );
    assert_eq!(seen, ["--write", "change a.txt", "--chmod", "change a.txt"]);
}

// Node: file delete: ["--delete","change a.txt","rename a.txt","rename a.txt","--recreate"]
fn the_watched_file_deleted(lp: &mut Loop) {
    let seen = scenario(
        lp,
        create,
        |d| j(d, "a.txt"),
        plain(),
        vec![
            step("delete", |d| std::fs::remove_file(j(d, "a.txt")).unwrap()),
            step("recreate", create),
        ],
    );
    assert_eq!(
        seen,
        [
            "--delete",
            "change a.txt",
            "rename a.txt",
            "rename a.txt",
            "--recreate"
        ]
    );
}

// Node: file moved: ["--mv","rename a.txt","--write moved","change a.txt"]
fn the_watched_file_moved(lp: &mut Loop) {
    let seen = scenario(
        lp,
        create,
        |d| j(d, "a.txt"),
        plain(),
        vec![
            step("mv", |d| {
                std::fs::rename(j(d, "a.txt"), j(d, "b.txt")).unwrap()
            }),
            step("write moved", |d| append(&j(d, "b.txt"))),
        ],
    );
    assert_eq!(
        seen,
        ["--mv", "rename a.txt", "--write moved", "change a.txt"]
    );
}

// Node: rec create: ["--create","rename a.txt"]
fn recursive_create(lp: &mut Loop) {
    let seen = scenario(
        lp,
        |_| {},
        dir_itself,
        recursive(),
        vec![step("create", create)],
    );
    assert_eq!(seen, ["--create", "rename a.txt"]);
}

// Node: rec write: ["--write","change a.txt"]
fn recursive_write(lp: &mut Loop) {
    let seen = scenario(
        lp,
        create,
        dir_itself,
        recursive(),
        vec![step("write", |d| append(&j(d, "a.txt")))],
    );
    assert_eq!(seen, ["--write", "change a.txt"]);
}

// Node: rec rename: ["--rename","rename b.txt","rename a.txt","change b.txt"]
fn recursive_rename(lp: &mut Loop) {
    let seen = scenario(
        lp,
        create,
        dir_itself,
        recursive(),
        vec![step("rename", |d| {
            std::fs::rename(j(d, "a.txt"), j(d, "b.txt")).unwrap()
        })],
    );
    assert_eq!(
        seen,
        ["--rename", "rename b.txt", "rename a.txt", "change b.txt"]
    );
}

// Node: rec delete: ["--delete","rename a.txt"]
fn recursive_delete(lp: &mut Loop) {
    let seen = scenario(
        lp,
        create,
        dir_itself,
        recursive(),
        vec![step("delete", |d| {
            std::fs::remove_file(j(d, "a.txt")).unwrap()
        })],
    );
    assert_eq!(seen, ["--delete", "rename a.txt"]);
}

// Node: rec sub: ["--mkdir","rename sub","--create","rename sub/b.txt",
// "--write","change sub/b.txt","--mkdir2","rename sub/deep","--create2",
// "rename sub/deep/c"]
fn recursive_subdirectories_created_later(lp: &mut Loop) {
    let seen = scenario(
        lp,
        |_| {},
        dir_itself,
        recursive(),
        vec![
            step("mkdir", |d| std::fs::create_dir(j(d, "sub")).unwrap()),
            step("create", |d| {
                std::fs::write(d.join("sub/b.txt"), "x").unwrap()
            }),
            step("write", |d| append(&d.join("sub/b.txt"))),
            step("mkdir2", |d| {
                std::fs::create_dir(d.join("sub/deep")).unwrap()
            }),
            step("create2", |d| {
                std::fs::write(d.join("sub/deep/c"), "x").unwrap()
            }),
        ],
    );
    assert_eq!(
        seen,
        [
            "--mkdir",
            "rename sub",
            "--create",
            "rename sub/b.txt",
            "--write",
            "change sub/b.txt",
            "--mkdir2",
            "rename sub/deep",
            "--create2",
            "rename sub/deep/c"
        ]
    );
}

// Node: rec existing sub: ["--write","change sub/b","--rmsub","rename sub/b","rename sub"]
fn recursive_existing_subdirectory_written_then_removed(lp: &mut Loop) {
    let seen = scenario(
        lp,
        |d| {
            std::fs::create_dir(j(d, "sub")).unwrap();
            std::fs::write(d.join("sub/b"), "x").unwrap();
        },
        dir_itself,
        recursive(),
        vec![
            step("write", |d| append(&d.join("sub/b"))),
            step("rmsub", |d| std::fs::remove_dir_all(j(d, "sub")).unwrap()),
        ],
    );
    assert_eq!(
        seen,
        [
            "--write",
            "change sub/b",
            "--rmsub",
            "rename sub/b",
            "rename sub"
        ]
    );
}

// Node: rec root removed: ["--rmdir","rename "]
fn recursive_root_removed(lp: &mut Loop) {
    let seen = scenario(
        lp,
        |d| std::fs::create_dir(j(d, "w")).unwrap(),
        |d| j(d, "w"),
        recursive(),
        vec![step("rmdir", |d| std::fs::remove_dir(j(d, "w")).unwrap())],
    );
    assert_eq!(seen, ["--rmdir", "rename "]);
}

// Node: rec file: ["--write","change a.txt","--delete","rename "]
fn recursive_on_a_file(lp: &mut Loop) {
    let seen = scenario(
        lp,
        create,
        |d| j(d, "a.txt"),
        recursive(),
        vec![
            step("write", |d| append(&j(d, "a.txt"))),
            step("delete", |d| std::fs::remove_file(j(d, "a.txt")).unwrap()),
        ],
    );
    assert_eq!(seen, ["--write", "change a.txt", "--delete", "rename "]);
}

// Node: rec mkdir -p: ["--mkdirp","rename x","rename x/y","rename x/y/z"]
fn recursive_nested_directories_at_once(lp: &mut Loop) {
    let seen = scenario(
        lp,
        |_| {},
        dir_itself,
        recursive(),
        vec![step("mkdirp", |d| {
            std::fs::create_dir_all(d.join("x/y")).unwrap();
            std::fs::write(d.join("x/y/z"), "1").unwrap();
        })],
    );
    assert_eq!(seen, ["--mkdirp", "rename x", "rename x/y", "rename x/y/z"]);
}

/// Node: `ENOENT: no such file or directory, watch '/nonexistent'`, errno
/// -2, syscall `watch`; recursive stats first (`stat`, the resolved path).
fn watching_a_missing_path_fails_as_node(lp: &mut Loop) {
    let dir = tmp();
    let missing = dir.path().join("missing");
    let error = lp
        .fs()
        .watch(&missing, plain(), |_, _, _, _| {}, |_, _, _| {})
        .unwrap_err();
    util::assert_fs_error(
        &error,
        "ENOENT",
        &format!(
            "ENOENT: no such file or directory, watch '{}'",
            missing.display()
        ),
    );
    assert_eq!(error.errno(), Some(libc::ENOENT));
    let error = lp
        .fs()
        .watch(&missing, recursive(), |_, _, _, _| {}, |_, _, _| {})
        .unwrap_err();
    util::assert_fs_error(
        &error,
        "ENOENT",
        &format!(
            "ENOENT: no such file or directory, stat '{}'",
            missing.display()
        ),
    );
    // What a failed watch made (the inotify descriptor) is closed by the
    // reactor: the loop ends at once.
    run_within(lp, Duration::from_secs(5));
    assert!(!lp.alive(), "a failed watch leaves nothing behind");
    let error = lp
        .fs()
        .watch("a\0b", plain(), |_, _, _, _| {}, |_, _, _| {})
        .unwrap_err();
    assert!(matches!(error, Error::InvalidArgValue { .. }), "{error}");
}

/// A watcher keeps the loop alive (Node's default, `persistent: true`);
/// an unreferenced one (`persistent: false` or `unref()`) does not.
fn a_watcher_keeps_the_loop_alive_unless_unreferenced(lp: &mut Loop) {
    let dir = tmp();
    let w = lp
        .fs()
        .watch(dir.path(), plain(), |_, _, _, _| {}, |_, _, _| {})
        .unwrap();
    assert!(w.has_ref(lp));
    assert!(lp.alive());
    assert!(w.unref(lp));
    assert!(!w.has_ref(lp));
    assert!(!lp.alive(), "an unreferenced watcher alone");
    run_within(lp, Duration::from_secs(5));
    assert!(w.is_open(lp), "the loop ended, the watcher is still open");
    assert!(w.ref_(lp));
    assert!(lp.alive());
    assert!(w.close(lp));
    assert!(!w.has_ref(lp) && !w.set_ref(lp, true));
    let q = lp
        .fs()
        .watch(
            dir.path(),
            plain().persistent(false),
            |_, _, _, _| {},
            |_, _, _| {},
        )
        .unwrap();
    assert!(!q.has_ref(lp));
    run_within(lp, Duration::from_secs(5));
    // An unreferenced watcher still reports while the loop runs.
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = Rc::clone(&seen);
    let p = lp
        .fs()
        .watch(
            dir.path(),
            plain().persistent(false),
            move |_, _, kind, name| s.borrow_mut().push(format!("{kind} {}", name.display())),
            |_, _, _| {},
        )
        .unwrap();
    let d = dir.path().to_path_buf();
    lp.set_timeout(Duration::from_millis(50), move |_| create(&d));
    // Something else keeps the loop running until both events are in.
    let s = Rc::clone(&seen);
    lp.set_interval(Duration::from_millis(10), move |lp, me| {
        if s.borrow().len() == 2 {
            lp.clear_timer(me);
        }
    });
    run_within(lp, Duration::from_secs(5));
    assert_eq!(*seen.borrow(), ["rename a.txt", "change a.txt"]);
    assert!(q.close(lp) && p.close(lp));
}

/// A watcher closed by its own callback hears nothing more; another one
/// on the same directory goes on.
fn a_callback_closes_its_own_watcher(lp: &mut Loop) {
    let dir = tmp();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = Rc::clone(&seen);
    let _watcher = lp
        .fs()
        .watch(
            dir.path(),
            plain(),
            move |lp, me, kind, name| {
                s.borrow_mut()
                    .push(format!("first {kind} {}", name.display()));
                assert!(me.close(lp));
                assert!(!me.is_open(lp));
            },
            |_, _, _| {},
        )
        .unwrap();
    let s = Rc::clone(&seen);
    let _watcher = lp
        .fs()
        .watch(
            dir.path(),
            plain(),
            move |lp, me, kind, name| {
                s.borrow_mut()
                    .push(format!("second {kind} {}", name.display()));
                if kind == WatchEventType::Change {
                    me.close(lp);
                }
            },
            |_, _, _| {},
        )
        .unwrap();
    let d = dir.path().to_path_buf();
    lp.set_timeout(Duration::from_millis(50), move |_| create(&d));
    run_within(lp, Duration::from_secs(20));
    assert_eq!(
        *seen.borrow(),
        [
            "first rename a.txt",
            "second rename a.txt",
            "second change a.txt"
        ]
    );
}

/// A listener that closes its watcher and starts another on the same
/// directory (the same kernel watch descriptor) from inside the
/// delivery: the new one hears what comes next, not what was being
/// delivered. A recursive watcher unreferenced lets the loop end (Node
/// 20's recursive `unref()` does nothing: a deliberate difference).
fn a_listener_replaces_its_watcher(lp: &mut Loop) {
    let dir = tmp();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = Rc::clone(&seen);
    let d = dir.path().to_path_buf();
    let _first = lp
        .fs()
        .watch(
            dir.path(),
            plain(),
            move |lp, me, kind, name| {
                s.borrow_mut()
                    .push(format!("first {kind} {}", name.display()));
                assert!(me.close(lp));
                let s = Rc::clone(&s);
                let second = lp
                    .fs()
                    .watch(
                        &d,
                        plain(),
                        move |lp, me, kind, name| {
                            s.borrow_mut()
                                .push(format!("second {kind} {}", name.display()));
                            me.close(lp);
                        },
                        |_, _, _| {},
                    )
                    .unwrap();
                assert!(second.is_open(lp));
                // The next step once this one is seen.
                let a = j(&d, "a.txt");
                lp.set_timeout(Duration::from_millis(50), move |_| {
                    std::fs::remove_file(&a).unwrap()
                });
            },
            |_, _, _| {},
        )
        .unwrap();
    let d = dir.path().to_path_buf();
    lp.set_timeout(Duration::from_millis(50), move |_| create(&d));
    run_within(lp, Duration::from_secs(20));
    assert_eq!(
        *seen.borrow(),
        ["first rename a.txt", "second rename a.txt"],
        "the first's `change a.txt` went with it; the second heard the delete"
    );
    let w = lp
        .fs()
        .watch(dir.path(), recursive(), |_, _, _, _| {}, |_, _, _| {})
        .unwrap();
    assert!(w.unref(lp));
    run_within(lp, Duration::from_secs(5));
    assert!(w.is_open(lp) && w.close(lp));
}

/// A callback that panics (no panic handler) leaves `run()`; the events
/// read with it are delivered by the next `run()`.
fn a_panicking_callback_loses_no_event(lp: &mut Loop) {
    let dir = tmp();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = Rc::clone(&seen);
    let _watcher = lp
        .fs()
        .watch(
            dir.path(),
            plain(),
            move |lp, me, kind, name| {
                let line = format!("{kind} {}", name.display());
                s.borrow_mut().push(line.clone());
                if line == "rename a" {
                    panic!("listener");
                }
                if line == "rename c" {
                    me.close(lp);
                }
            },
            |_, _, _| {},
        )
        .unwrap();
    let d = dir.path().to_path_buf();
    lp.set_timeout(Duration::from_millis(50), move |_| {
        for name in ["a", "b", "c"] {
            std::fs::File::create(d.join(name)).unwrap();
        }
    });
    let first = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_within(lp, Duration::from_secs(20))
    }));
    assert!(first.is_err(), "the panic left run()");
    assert_eq!(*seen.borrow(), ["rename a"]);
    run_within(lp, Duration::from_secs(20));
    assert_eq!(*seen.borrow(), ["rename a", "rename b", "rename c"]);
}

/// More events than the inotify queue holds (16384 by default): the
/// watcher is told (`ENOBUFS`, where Node is silent), stays open, and
/// reports what comes after.
fn a_queue_overflow_is_an_error_and_watching_goes_on(lp: &mut Loop) {
    use std::os::unix::fs::PermissionsExt;
    let limit: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(16384);
    if limit > 100_000 {
        eprintln!("skipped: max_queued_events is {limit}");
        return;
    }
    let dir = tmp();
    let (a, b) = (j(dir.path(), "a"), j(dir.path(), "b"));
    std::fs::write(&a, "").unwrap();
    std::fs::write(&b, "").unwrap();
    let errors = Rc::new(RefCell::new(Vec::new()));
    let changes = Rc::new(RefCell::new(0usize));
    let late = Rc::new(RefCell::new(false));
    let (e, c, l) = (Rc::clone(&errors), Rc::clone(&changes), Rc::clone(&late));
    let d = dir.path().to_path_buf();
    // `late` is made once the overflow is told (its event then finds room
    // in the queue), and the watcher closed once `late` is seen: no step
    // depends on timing.
    let _w = lp
        .fs()
        .watch(
            dir.path(),
            plain(),
            move |lp, me, _, name| {
                *c.borrow_mut() += 1;
                if name == Path::new("late") {
                    *l.borrow_mut() = true;
                    assert!(me.close(lp));
                }
            },
            move |lp, me, error| {
                assert!(me.is_open(lp), "still open when told");
                e.borrow_mut().push(error);
                let late = d.join("late");
                lp.set_immediate(move |_| std::fs::write(late, "").unwrap());
            },
        )
        .unwrap();
    lp.set_timeout(Duration::from_millis(20), move |_| {
        // Alternating files: the kernel does not merge the events.
        for i in 0..limit / 2 + 100 {
            let mode = if i % 2 == 0 { 0o600 } else { 0o644 };
            std::fs::set_permissions(&a, std::fs::Permissions::from_mode(mode)).unwrap();
            std::fs::set_permissions(&b, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    });
    run_within(lp, Duration::from_secs(30));
    let errors = errors.borrow();
    assert_eq!(errors.len(), 1, "{errors:?}");
    util::assert_fs_error(
        &errors[0],
        "ENOBUFS",
        &format!(
            "ENOBUFS: no buffer space available, watch '{}'",
            dir.path().display()
        ),
    );
    assert_eq!(*changes.borrow(), limit + 1, "the queue, then `late`");
    assert!(*late.borrow(), "events after the overflow still come");
}

/// The loop's inotify descriptor is nonblocking and close-on-exec (read
/// from `/proc/self/fdinfo`: every inotify descriptor of this process is
/// one of the loops'), and a key of another loop names nothing.
fn the_descriptor_is_nonblocking_and_cloexec_and_keys_are_per_loop(lp: &mut Loop) {
    let dir = tmp();
    let w = lp
        .fs()
        .watch(dir.path(), plain(), |_, _, _, _| {}, |_, _, _| {})
        .unwrap();
    let mut seen = 0;
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if target != Path::new("anon_inode:inotify") {
            continue;
        }
        let fd = entry.file_name().into_string().unwrap();
        let Ok(info) = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")) else {
            continue; // Closed meanwhile by another test's loop.
        };
        if !info.contains("inotify wd:") {
            continue; // Reused meanwhile, or a loop's without watches yet.
        }
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .map(|f| i32::from_str_radix(f.trim(), 8).unwrap())
            .unwrap();
        assert_ne!(flags & libc::O_NONBLOCK, 0, "fd {fd}: {flags:o}");
        assert_ne!(flags & libc::O_CLOEXEC, 0, "fd {fd}: {flags:o}");
        seen += 1;
    }
    assert!(seen >= 1, "this loop's inotify descriptor was found");
    let mut other = Loop::new().unwrap();
    assert!(!w.is_open(&other) && !w.close(&mut other) && !w.unref(&mut other));
    assert!(w.is_open(lp) && w.path(lp).as_deref() == Some(dir.path()));
    assert!(w.close(lp));
    assert_eq!(w.path(lp), None);
    run_within(lp, Duration::from_secs(5));
}

on_every_backend!(
    the_descriptor_is_nonblocking_and_cloexec_and_keys_are_per_loop,
    a_file_created_in_a_directory,
    a_file_written_in_a_directory,
    a_file_renamed_in_a_directory,
    a_file_deleted_in_a_directory,
    the_watched_directory_removed,
    the_watched_directory_moved,
    a_watched_file_written_and_chmodded,
    the_watched_file_deleted,
    the_watched_file_moved,
    recursive_create,
    recursive_write,
    recursive_rename,
    recursive_delete,
    recursive_subdirectories_created_later,
    recursive_existing_subdirectory_written_then_removed,
    recursive_root_removed,
    recursive_on_a_file,
    recursive_nested_directories_at_once,
    watching_a_missing_path_fails_as_node,
    a_watcher_keeps_the_loop_alive_unless_unreferenced,
    a_callback_closes_its_own_watcher,
    a_listener_replaces_its_watcher,
    a_panicking_callback_loses_no_event,
    a_queue_overflow_is_an_error_and_watching_goes_on,
);

/// The system's limit on watches, lowered to 3 in a user namespace (no
/// root needed): the fourth watch fails with Node's words, errno ENOSPC
/// and syscall `watch` (Node v20: `ENOSPC: System limit for number of
/// file watchers reached, watch '/usr'`, run the same way); a recursive
/// watch over more entries than that fails whole.
#[test]
fn the_watch_limit_is_worded_as_node() {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new("unshare")
        .args(["-U", "-r", "sh", "-c"])
        .arg("echo 3 > /proc/sys/user/max_inotify_watches && exec \"$0\" \"$@\"")
        .arg(&exe)
        .args([
            "watch_limit_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env_remove("EVENTIDE_BACKEND")
        .output();
    let out = match out {
        Ok(out) => out,
        Err(error) => {
            eprintln!("skipped: no unshare ({error})");
            return;
        }
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() && !text.contains("running 1 test") {
        eprintln!("skipped: no user namespace here:\n{text}");
        return;
    }
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(text.contains("1 passed"), "child did not run:\n{text}");
}

#[test]
#[ignore = "run by the_watch_limit_is_worded_as_node in a user namespace"]
fn watch_limit_child() {
    let limit = std::fs::read_to_string("/proc/sys/user/max_inotify_watches").unwrap();
    assert_eq!(limit.trim(), "3", "runs with the lowered limit");
    for backend in [
        eventide::BackendKind::Uring,
        eventide::BackendKind::Epoll,
        eventide::BackendKind::Poll,
    ] {
        let Some(mut lp) = util::new_loop(backend) else {
            continue;
        };
        let lp = &mut lp;
        let dir = tmp();
        let mut watchers = Vec::new();
        for name in ["a", "b", "c", "d"] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        for name in ["a", "b", "c"] {
            let w = lp
                .fs()
                .watch(
                    dir.path().join(name),
                    plain(),
                    |_, _, _, _| {},
                    |_, _, _| {},
                )
                .unwrap();
            watchers.push(w);
        }
        let fourth = dir.path().join("d");
        let error = lp
            .fs()
            .watch(&fourth, plain(), |_, _, _, _| {}, |_, _, _| {})
            .unwrap_err();
        util::assert_fs_error(
            &error,
            "ENOSPC",
            &format!(
                "ENOSPC: System limit for number of file watchers reached, watch '{}'",
                fourth.display()
            ),
        );
        assert_eq!(error.errno(), Some(libc::ENOSPC));
        assert!(matches!(
            error,
            Error::Fs {
                syscall: "watch",
                ..
            }
        ));
        // One freed: a recursive watch of `d` (itself and two entries)
        // still does not fit; the failure leaves no watch behind.
        assert!(watchers.pop().unwrap().close(lp));
        std::fs::write(fourth.join("x"), "").unwrap();
        std::fs::write(fourth.join("y"), "").unwrap();
        let error = lp
            .fs()
            .watch(&fourth, recursive(), |_, _, _, _| {}, |_, _, _| {})
            .unwrap_err();
        assert_eq!(error.code(), Some("ENOSPC"), "{error}");
        let w = lp
            .fs()
            .watch(&fourth, plain(), |_, _, _, _| {}, |_, _, _| {})
            .expect("the failed recursive watch gave its watches back");
        for w in watchers.drain(..).chain([w]) {
            assert!(w.close(lp));
        }
        run_within(lp, Duration::from_secs(5));
        assert!(!lp.alive());
    }
}
