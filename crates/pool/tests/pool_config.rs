//! Configuration: the default size, `EVENTIDE_THREADPOOL_SIZE`, the builder,
//! and clear reports of invalid values.

#![cfg(not(loom))]

mod util;

use std::ffi::OsStr;
use std::process::Command;

use eventide_pool::{
    ConfigError, DEFAULT_THREADS, DynJob, MAX_THREADS, PoolBuilder, THREADPOOL_SIZE_ENV,
};

fn size_from(value: &str) -> PoolBuilder {
    PoolBuilder::from_env_value(Some(OsStr::new(value)))
}

#[test]
fn the_default_size_is_four_threads() {
    assert_eq!(DEFAULT_THREADS, 4);
    assert_eq!(PoolBuilder::new().thread_count(), 4);
    assert_eq!(PoolBuilder::from_env_value(None).thread_count(), 4);
    let (pool, _) = PoolBuilder::new().build::<DynJob<()>>().unwrap();
    assert_eq!(pool.threads(), 4);
}

#[test]
fn a_valid_variable_sets_the_size_from_one_to_1024() {
    for (value, threads) in [("1", 1), ("8", 8), (" 16\n", 16), ("1024", 1024)] {
        let builder = size_from(value);
        assert_eq!(builder.thread_count(), threads, "{value:?}");
        assert_eq!(builder.config_warning(), None);
    }
}

/// One rule for every eventide variable: set to the empty string (or
/// blanks) it means what unset means, silently.
#[test]
fn an_empty_variable_is_the_default_without_a_warning() {
    for value in ["", "  ", "\n"] {
        let builder = size_from(value);
        assert_eq!(builder.thread_count(), DEFAULT_THREADS, "{value:?}");
        assert_eq!(builder.config_warning(), None, "{value:?}");
    }
}

#[test]
fn an_invalid_variable_is_reported_and_the_default_used() {
    for value in ["0", "1025", "-3", "four", "4.5", "99999999999999999999999"] {
        let builder = size_from(value);
        assert_eq!(builder.thread_count(), DEFAULT_THREADS, "{value:?}");
        let expected = ConfigError::InvalidThreadsEnv {
            variable: THREADPOOL_SIZE_ENV,
            value: value.to_owned(),
            max: MAX_THREADS,
            default: DEFAULT_THREADS,
        };
        assert_eq!(builder.config_warning(), Some(&expected));
    }
}

#[test]
fn the_report_names_the_variable_the_value_and_the_fallback() {
    let message = size_from("lots").config_warning().unwrap().to_string();
    assert_eq!(
        message,
        "invalid EVENTIDE_THREADPOOL_SIZE=\"lots\": expected a whole number from 1 to 1024; \
         using the default of 4 threads"
    );
}

#[test]
fn the_builder_overrides_the_variable() {
    let builder = size_from("8").threads(2);
    assert_eq!(builder.thread_count(), 2);
}

#[test]
fn an_out_of_range_size_in_code_fails_the_build() {
    for threads in [0, MAX_THREADS + 1] {
        let error = PoolBuilder::new()
            .threads(threads)
            .build::<DynJob<()>>()
            .unwrap_err();
        assert_eq!(
            error,
            ConfigError::InvalidThreads {
                threads,
                max: MAX_THREADS
            }
        );
    }
}

#[test]
fn a_pool_built_with_one_thread_runs_everything_on_it() {
    let (pool, mut completions, signal) = util::pool::<String>(1);
    for _ in 0..10 {
        pool.submit(util::job(|| {
            std::thread::current().name().unwrap().to_owned()
        }));
    }
    let names: Vec<_> = util::collect(&mut completions, &signal, 10)
        .into_iter()
        .map(|(_, name)| name.unwrap())
        .collect();
    assert!(
        names.iter().all(|name| name == "eventide-pool-0"),
        "{names:?}"
    );
}

/// Runs [`from_env_sees_the_process_environment`] in a child process with
/// the variable set, since setting it here would race other tests.
#[test]
fn from_env_reads_the_process_environment() {
    for (value, expected) in [
        ("7", "threads=7 warning=false"),
        ("x", "threads=4 warning=true"),
    ] {
        let output = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "from_env_sees_the_process_environment",
                "--ignored",
            ])
            .args(["--nocapture", "--test-threads=1"])
            .env(THREADPOOL_SIZE_ENV, value)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{stdout}");
        assert!(stdout.contains(expected), "{value:?}: {stdout}");
    }
}

#[test]
#[ignore = "run by from_env_reads_the_process_environment in a child process"]
fn from_env_sees_the_process_environment() {
    let builder = PoolBuilder::from_env();
    let warning = builder.config_warning().is_some();
    println!("threads={} warning={warning}", builder.thread_count());
}
