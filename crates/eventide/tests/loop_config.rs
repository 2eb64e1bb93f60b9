//! Configuration in code (`LoopBuilder`), the environment variables that
//! decide when the code does not, and the errors for invalid values
//! (docs/configuration.md). Tests that need an environment run a child
//! process (`util::run_child`), so that no test changes this process's
//! environment.

mod util;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventide::fs::FileOps;
use eventide::{BackendChoice, BackendKind, ClockSource, Error, Loop, LoopBuilder};
use util::{in_child, run_child};

/// Every variable the loop reads, removed from the children's environment
/// unless a test sets it (CI may run the suite with some of them set).
const VARS: [&str; 8] = [
    "EVENTIDE_BACKEND",
    "EVENTIDE_THREADPOOL_SIZE",
    "EVENTIDE_CLOCK",
    "EVENTIDE_URING_FILE_OPS",
    "EVENTIDE_URING_NO_DIRECT",
    "EVENTIDE_URING_NO_PBUF",
    "EVENTIDE_URING_AS_KERNEL",
    "EVENTIDE_URING_FILE_OPS_EINVAL",
];

/// Runs the `#[ignore]`d test `name` in a child with only `env` of
/// [`VARS`] set (the others blank, which means unset).
fn child(name: &str, env: &[(&str, &str)]) -> String {
    let mut all: Vec<(&str, &str)> = VARS
        .iter()
        .filter(|var| !env.iter().any(|(name, _)| name == *var))
        .map(|var| (*var, ""))
        .collect();
    all.extend_from_slice(env);
    run_child(name, &all)
}

/// The builder on exactly `kind`, or `None` (noted) when it is not
/// compiled in or refused here.
fn on(kind: BackendKind) -> Option<LoopBuilder> {
    match Loop::builder().backend(BackendChoice::Only(kind)).build() {
        Ok(_) => Some(Loop::builder().backend(BackendChoice::Only(kind))),
        Err(error) => {
            eprintln!("skipped on {kind}: {error}");
            None
        }
    }
}

fn all_backends() -> [BackendKind; 3] {
    [BackendKind::Uring, BackendKind::Epoll, BackendKind::Poll]
}

/// The `InvalidConfig` error's setting and value, or a failure.
fn invalid(result: eventide::Result<Loop>) -> (String, String, String) {
    match result {
        Err(error @ Error::InvalidConfig { .. }) => {
            let text = error.to_string();
            let Error::InvalidConfig { setting, value, .. } = error else {
                unreachable!()
            };
            assert_eq!(
                std::io::Error::from(Error::InvalidConfig {
                    setting,
                    value: value.clone(),
                    expected: String::new()
                })
                .kind(),
                std::io::ErrorKind::InvalidInput
            );
            (setting.to_owned(), value, text)
        }
        Err(other) => panic!("expected an invalid setting, got {other:?}"),
        Ok(_) => panic!("expected an invalid setting, the loop was built"),
    }
}

/// Runs `n` jobs that each wait (at most 5 s) until all `n` have started:
/// true if they all ran at once, so the pool has at least `n` threads.
/// Also returns the names of the threads they ran on.
fn run_concurrently(lp: &mut Loop, n: usize) -> (bool, HashSet<String>) {
    let started = Arc::new(AtomicUsize::new(0));
    let names = Arc::new(Mutex::new(HashSet::new()));
    let all = Arc::new(AtomicUsize::new(0));
    for _ in 0..n {
        let (started, names, all) = (started.clone(), names.clone(), all.clone());
        lp.queue_work(
            move || {
                let name = std::thread::current().name().unwrap_or("").to_owned();
                names.lock().unwrap().insert(name);
                started.fetch_add(1, Ordering::SeqCst);
                let deadline = Instant::now() + Duration::from_secs(5);
                while started.load(Ordering::SeqCst) < n && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
                if started.load(Ordering::SeqCst) >= n {
                    all.fetch_add(1, Ordering::SeqCst);
                }
            },
            |_, result| result.expect("the job ran"),
        );
    }
    util::run_within(lp, Duration::from_secs(30));
    let names = names.lock().unwrap().clone();
    (all.load(Ordering::SeqCst) == n, names)
}

/// Runs `n` short jobs; the names of the threads they ran on.
fn run_concurrently_briefly(lp: &mut Loop, n: usize) -> (usize, HashSet<String>) {
    let names = Arc::new(Mutex::new(HashSet::new()));
    for _ in 0..n {
        let names = names.clone();
        lp.queue_work(
            move || {
                let name = std::thread::current().name().unwrap_or("").to_owned();
                names.lock().unwrap().insert(name);
                std::thread::sleep(Duration::from_millis(5));
            },
            |_, result| result.expect("the job ran"),
        );
    }
    util::run_within(lp, Duration::from_secs(30));
    let names = names.lock().unwrap().clone();
    (n, names)
}

// ---- backend ----

#[test]
fn the_backend_set_in_code_is_used_on_every_backend() {
    for kind in all_backends() {
        if let Some(builder) = on(kind) {
            assert_eq!(builder.build().unwrap().backend(), kind);
        }
    }
}

#[test]
fn the_backend_variable_overrides_the_code() {
    let out = child("child_prints_backends", &[("EVENTIDE_BACKEND", "poll")]);
    assert!(out.contains("env-only: poll"), "{out}");
    if BackendKind::compiled().contains(&BackendKind::Epoll) {
        assert!(out.contains("code: poll"), "{out}");
    }
    // Empty counts as unset: the code decides.
    let out = child("child_prints_backends", &[("EVENTIDE_BACKEND", "")]);
    if BackendKind::compiled().contains(&BackendKind::Epoll) {
        assert!(out.contains("code: epoll"), "{out}");
    }
}

#[test]
#[ignore = "child entry point"]
fn child_prints_backends() {
    assert!(in_child());
    println!("env-only: {}", Loop::new().unwrap().backend());
    if let Some(builder) = on(BackendKind::Epoll) {
        println!("code: {}", builder.build().unwrap().backend());
    }
}

#[test]
fn an_invalid_backend_variable_is_an_error_naming_it() {
    let out = child(
        "child_reports_the_error",
        &[("EVENTIDE_BACKEND", "fastest")],
    );
    assert!(
        out.contains(
            "ERROR EVENTIDE_BACKEND \"fastest\": EVENTIDE_BACKEND=\"fastest\": \
             expected uring, epoll, poll or auto"
        ),
        "{out}"
    );
}

/// Prints the error `Loop::new()` gives in this environment.
#[test]
#[ignore = "child entry point"]
fn child_reports_the_error() {
    assert!(in_child());
    let (setting, value, text) = invalid(Loop::new());
    println!("ERROR {setting} {value:?}: {text}");
}

// ---- pool threads ----

#[test]
fn pool_threads_sets_the_pool_size_on_every_backend() {
    for kind in all_backends() {
        let Some(builder) = on(kind) else { continue };
        let mut lp = builder.pool_threads(3).build().unwrap();
        let (together, names) = run_concurrently(&mut lp, 3);
        assert!(together, "3 jobs ran at once on {kind}");
        let allowed: HashSet<String> = (0..3).map(|i| format!("eventide-pool-{i}")).collect();
        assert!(names.is_subset(&allowed), "{names:?}");
    }
}

#[test]
fn an_invalid_pool_size_in_code_is_an_error_naming_the_method() {
    for kind in all_backends() {
        let Some(builder) = on(kind) else { continue };
        for threads in [0, 1025] {
            let (setting, value, text) = invalid(builder.clone().pool_threads(threads).build());
            assert_eq!(setting, "LoopBuilder::pool_threads");
            assert_eq!(value, threads.to_string());
            assert_eq!(
                text,
                format!(
                    "LoopBuilder::pool_threads=\"{threads}\": expected a number from 1 to 1024"
                )
            );
        }
    }
}

#[test]
fn the_pool_size_variable_overrides_the_code() {
    let out = child("child_runs_pool_jobs", &[("EVENTIDE_THREADPOOL_SIZE", "2")]);
    assert!(out.contains("env: 2 at once true, names ok true"), "{out}");
    assert!(
        out.contains("code 3, env 2: names ok true, shared new(3): 2"),
        "{out}"
    );
    assert!(out.contains("shared from env: 2"), "{out}");
    // Unset, the code decides.
    let out = child("child_runs_pool_jobs", &[]);
    assert!(out.contains("code: 3 at once true"), "{out}");
}

#[test]
#[ignore = "child entry point"]
fn child_runs_pool_jobs() {
    assert!(in_child());
    let mut lp = Loop::new().unwrap();
    let (together, names) = run_concurrently(&mut lp, 2);
    let allowed: HashSet<String> = (0..2).map(|i| format!("eventide-pool-{i}")).collect();
    println!(
        "env: 2 at once {together}, names ok {}",
        names.is_subset(&allowed)
    );
    let mut lp = Loop::builder().pool_threads(3).build().unwrap();
    if std::env::var_os("EVENTIDE_THREADPOOL_SIZE").is_some_and(|v| !v.is_empty()) {
        // Two threads, whatever the code asked: 6 jobs run on those two.
        let (_, names) = run_concurrently_briefly(&mut lp, 6);
        let allowed: HashSet<String> = (0..2).map(|i| format!("eventide-pool-{i}")).collect();
        let shared = eventide::SharedPool::new(3).unwrap();
        println!(
            "code 3, env 2: names ok {}, shared new(3): {}",
            names.is_subset(&allowed) && !names.is_empty(),
            shared.threads()
        );
        let shared = eventide::SharedPool::from_env().unwrap();
        println!("shared from env: {}", shared.threads());
    } else {
        let (together, _) = run_concurrently(&mut lp, 3);
        println!("code: 3 at once {together}");
    }
}

#[test]
fn an_invalid_pool_size_variable_is_an_error_naming_it_even_when_the_code_sets_the_size() {
    for value in ["lots", "0", "1025"] {
        let out = child(
            "child_reports_the_error",
            &[("EVENTIDE_THREADPOOL_SIZE", value)],
        );
        assert!(
            out.contains(&format!(
                "ERROR EVENTIDE_THREADPOOL_SIZE {value:?}: EVENTIDE_THREADPOOL_SIZE={value:?}: \
                 expected a whole number from 1 to 1024"
            )),
            "{out}"
        );
    }
    // The variables override the code, so they are read, and checked,
    // whatever the code set.
    for (name, value, expected) in [
        (
            "EVENTIDE_THREADPOOL_SIZE",
            "lots",
            "expected a whole number from 1 to 1024",
        ),
        ("EVENTIDE_CLOCK", "fast", "expected tsc or std"),
        (
            "EVENTIDE_BACKEND",
            "fastest",
            "expected uring, epoll, poll or auto",
        ),
    ] {
        let out = child("child_builds_with_code_settings", &[(name, value)]);
        assert!(
            out.contains(&format!(
                "ERROR {name} {value:?}: {name}={value:?}: {expected}"
            )),
            "{out}"
        );
    }
    let out = child("child_builds_with_code_settings", &[]);
    assert!(out.contains("BUILT"), "{out}");
}

#[test]
fn a_shared_pool_from_an_invalid_variable_is_an_error_naming_it() {
    let out = child(
        "child_reports_the_shared_pool_error",
        &[("EVENTIDE_THREADPOOL_SIZE", "0")],
    );
    assert!(
        out.contains(
            "SHARED EVENTIDE_THREADPOOL_SIZE=\"0\": expected a whole number from 1 to 1024"
        ),
        "{out}"
    );
}

#[test]
#[ignore = "child entry point"]
fn child_reports_the_shared_pool_error() {
    assert!(in_child());
    println!("SHARED {}", eventide::SharedPool::from_env().unwrap_err());
}

/// Builds a loop whose every user setting is set in code: prints `BUILT`,
/// or the error an overriding variable gives.
#[test]
#[ignore = "child entry point"]
fn child_builds_with_code_settings() {
    assert!(in_child());
    let built = Loop::builder()
        .backend(BackendChoice::Auto)
        .pool_threads(2)
        .clock(ClockSource::Std)
        .build();
    match built {
        Ok(lp) => {
            assert_eq!(lp.clock_source(), ClockSource::Std);
            println!("BUILT");
        }
        Err(_) => {
            let (setting, value, text) = invalid(built);
            println!("ERROR {setting} {value:?}: {text}");
        }
    }
}

#[test]
fn pool_threads_with_a_shared_pool_is_an_error() {
    let pool = eventide::SharedPool::new(1).unwrap();
    let (setting, _, text) = invalid(Loop::builder().pool(pool).pool_threads(2).build());
    assert_eq!(setting, "LoopBuilder::pool_threads");
    assert!(text.contains("LoopBuilder::pool"), "{text}");
}

// ---- clock ----

#[test]
fn the_clock_set_in_code_is_used_on_every_backend() {
    for kind in all_backends() {
        let Some(builder) = on(kind) else { continue };
        let mut lp = builder.clone().clock(ClockSource::Std).build().unwrap();
        assert_eq!(lp.clock_source(), ClockSource::Std);
        // Its timers still run on time.
        let fired = std::rc::Rc::new(std::cell::Cell::new(false));
        let f = fired.clone();
        let start = lp.now();
        lp.set_timeout(Duration::from_millis(5), move |lp| {
            assert!(lp.now().saturating_duration_since(start) >= Duration::from_millis(5));
            f.set(true);
        });
        util::run_within(&mut lp, Duration::from_secs(10));
        assert!(fired.get());
        // `Tsc` is a permission: used where the machine has an invariant TSC.
        let lp = builder.clock(ClockSource::Tsc).build().unwrap();
        assert!(matches!(
            lp.clock_source(),
            ClockSource::Tsc | ClockSource::Std
        ));
    }
}

#[test]
fn the_clock_variable_overrides_the_code_and_an_invalid_one_is_named() {
    let out = child("child_prints_clock", &[("EVENTIDE_CLOCK", "std")]);
    assert!(out.contains("CLOCK Std"), "{out}");
    assert!(out.contains("CODE TSC -> Std"), "{out}");
    let out = child("child_reports_the_error", &[("EVENTIDE_CLOCK", "fast")]);
    assert!(
        out.contains("ERROR EVENTIDE_CLOCK \"fast\": EVENTIDE_CLOCK=\"fast\": expected tsc or std"),
        "{out}"
    );
}

#[test]
#[ignore = "child entry point"]
fn child_prints_clock() {
    assert!(in_child());
    println!("CLOCK {:?}", Loop::new().unwrap().clock_source());
    let lp = Loop::builder().clock(ClockSource::Tsc).build().unwrap();
    println!("CODE TSC -> {:?}", lp.clock_source());
}

// ---- io_uring settings ----

/// A loop on io_uring with `f` applied to its builder, or `None` when
/// io_uring is refused here.
fn uring(f: impl FnOnce(LoopBuilder) -> LoopBuilder) -> Option<Loop> {
    on(BackendKind::Uring).map(|builder| f(builder).build().unwrap())
}

#[test]
fn uring_file_ops_narrows_what_runs_natively_and_the_rest_runs_on_the_pool() {
    let Some(mut default) = uring(|b| b) else {
        return;
    };
    let probed = default.fs().native_ops();
    let keep = FileOps::READ.union(FileOps::OPENAT);
    let Some(mut lp) = uring(|b| b.uring_file_ops(keep)) else {
        return;
    };
    assert_eq!(lp.fs().native_ops(), probed.intersection(keep));
    // A statx, now not native, still works (on the pool).
    let stat = util::outcome(&mut lp, |lp, done| {
        lp.fs().stat(env!("CARGO_MANIFEST_DIR"), done)
    });
    assert!(stat.expect("stat").is_dir());
    let Some(mut lp) = uring(|b| b.uring_file_ops(FileOps::NONE)) else {
        return;
    };
    assert!(lp.fs().native_ops().is_empty());
}

#[test]
fn the_file_ops_variable_narrows_what_the_code_allows() {
    let out = child(
        "child_prints_uring",
        &[("EVENTIDE_URING_FILE_OPS", "read,statx")],
    );
    if out.contains("NO URING") {
        return;
    }
    // Code: all but statx; the variable: read and statx; so only read.
    assert!(out.contains("code-and-env ops FileOps(read)\n"), "{out}");
    let out = child(
        "child_reports_the_error",
        &[("EVENTIDE_URING_FILE_OPS", "read,bogus")],
    );
    assert!(
        out.contains("ERROR EVENTIDE_URING_FILE_OPS \"read,bogus\": EVENTIDE_URING_FILE_OPS="),
        "{out}"
    );
    assert!(out.contains("\"bogus\" is not one"), "{out}");
}

/// Prints what io_uring uses with the code's settings and the
/// environment's.
#[test]
#[ignore = "child entry point"]
fn child_prints_uring() {
    assert!(in_child());
    let Some(mut lp) = uring(|b| b.uring_file_ops(FileOps::ALL.difference(FileOps::STATX))) else {
        println!("NO URING");
        return;
    };
    println!("code-and-env ops {:?}", lp.fs().native_ops());
    let Some(lp) = uring(|b| {
        b.uring_direct_descriptors(true)
            .uring_provided_buffers(true)
    }) else {
        return;
    };
    let info = lp.uring_info().unwrap();
    println!("pbuf {} direct {}", info.provided_buffers, direct_slots(lp));
}

/// How many direct-descriptor slots a whole-file read registered.
fn direct_slots(mut lp: Loop) -> u32 {
    let data = util::outcome(&mut lp, |lp, done| {
        lp.fs()
            .read_file(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"), done)
    });
    assert!(!data.expect("read_file").is_empty());
    lp.uring_info().unwrap().direct_files
}

#[test]
fn uring_direct_descriptors_off_reads_whole_files_with_ordinary_descriptors() {
    let Some(default) = uring(|b| b) else { return };
    let default_slots = direct_slots(default);
    eprintln!("direct descriptor slots by default: {default_slots}");
    let Some(off) = uring(|b| b.uring_direct_descriptors(false)) else {
        return;
    };
    assert_eq!(direct_slots(off), 0);
    if default_slots == 0 {
        eprintln!("this kernel has no direct descriptors: only the off case is checked");
    }
}

#[test]
fn uring_provided_buffers_off_leaves_the_buffer_ring_out() {
    let Some(default) = uring(|b| b) else { return };
    let Some(off) = uring(|b| b.uring_provided_buffers(false)) else {
        return;
    };
    let info = off.uring_info().unwrap();
    assert_eq!(info.provided_buffers, 0);
    assert!(!info.multishot_recv);
    if default.uring_info().unwrap().provided_buffers == 0 {
        eprintln!("this kernel has no provided-buffer ring: only the off case is checked");
    }
}

#[test]
fn the_switch_variables_turn_features_off_whatever_the_code_says() {
    let out = child(
        "child_prints_uring",
        &[
            ("EVENTIDE_URING_NO_PBUF", "1"),
            ("EVENTIDE_URING_NO_DIRECT", "yes"),
        ],
    );
    if out.contains("NO URING") {
        return;
    }
    assert!(out.contains("pbuf 0 direct 0"), "{out}");
    for name in ["EVENTIDE_URING_NO_PBUF", "EVENTIDE_URING_NO_DIRECT"] {
        let out = child("child_reports_the_error", &[(name, "maybe")]);
        assert!(
            out.contains(&format!(
                "ERROR {name} \"maybe\": {name}=\"maybe\": expected 1 or 0"
            )),
            "{out}"
        );
    }
}

#[test]
fn uring_entries_sizes_the_rings() {
    let Some(lp) = uring(|b| b.uring_entries(64)) else {
        return;
    };
    let info = lp.uring_info().unwrap();
    assert_eq!(info.sq_entries, 64);
    assert_eq!(info.cq_entries, 64 * 16);
    // The kernel rounds up to a power of two.
    let Some(lp) = uring(|b| b.uring_entries(100)) else {
        return;
    };
    assert_eq!(lp.uring_info().unwrap().sq_entries, 128);
    let Some(lp) = uring(|b| b) else { return };
    assert_eq!(lp.uring_info().unwrap().sq_entries, 256);
}

#[test]
fn the_uring_settings_are_ignored_by_the_other_backends_but_still_checked() {
    for kind in [BackendKind::Epoll, BackendKind::Poll] {
        let Some(builder) = on(kind) else { continue };
        let lp = builder
            .clone()
            .uring_file_ops(FileOps::NONE)
            .uring_direct_descriptors(false)
            .uring_provided_buffers(false)
            .uring_entries(8)
            .build()
            .unwrap();
        assert!(lp.uring_info().is_none());
        for entries in [0, 32_769] {
            let (setting, value, text) = invalid(builder.clone().uring_entries(entries).build());
            assert_eq!(setting, "LoopBuilder::uring_entries");
            assert_eq!(value, entries.to_string());
            assert_eq!(
                text,
                format!(
                    "LoopBuilder::uring_entries=\"{entries}\": expected a number from 1 to 32768"
                )
            );
        }
    }
    if let Some(builder) = on(BackendKind::Uring) {
        let (setting, ..) = invalid(builder.uring_entries(0).build());
        assert_eq!(setting, "LoopBuilder::uring_entries");
    }
}

#[test]
fn an_invalid_test_hook_is_an_error_and_auto_does_not_fall_back_over_it() {
    if on(BackendKind::Uring).is_none() {
        return;
    }
    for (name, value, expected) in [
        (
            "EVENTIDE_URING_AS_KERNEL",
            "latest",
            "expected a kernel release such as 5.15",
        ),
        (
            "EVENTIDE_URING_FILE_OPS_EINVAL",
            "bogus",
            "expected a list of file operations",
        ),
    ] {
        // `Loop::new()` is `auto`: it reports the mistake rather than
        // falling back to epoll.
        let out = child("child_reports_the_error", &[(name, value)]);
        assert!(
            out.contains(&format!(
                "ERROR {name} {value:?}: {name}={value:?}: {expected}"
            )),
            "{out}"
        );
    }
}
