//! What every workload shares: the loop it runs on, the clocks, the RESULT
//! line and the failure path.

use std::fmt::Display;
use std::time::Instant;

use eventide::{BackendChoice, Loop};

/// The blocking pool's size everywhere (libuv's default).
pub(crate) const POOL_THREADS: usize = 4;

/// One workload's run: its name, the loop, and the system name printed.
pub(crate) struct Run {
    workload: String,
    system: String,
    /// False for a run that does not go through eventide (its RESULT line
    /// then names no backend or eventide version).
    through_eventide: bool,
    /// The backend asked for (another loop of the same run is built alike).
    backend: BackendChoice,
    /// The loop under test, built with the chosen backend and 4 pool threads.
    pub(crate) lp: Loop,
}

impl Run {
    /// Builds the loop; a backend the system refuses is a failure (exit 1).
    pub(crate) fn new(workload: String, backend: BackendChoice) -> Run {
        Run::with_pool(workload, backend, None)
    }

    /// [`Run::new`] whose loop uses `pool` (shared with other loops: W14's
    /// loops share one pool of 4 threads, as libuv's loops share one per
    /// process), or a pool of its own without one.
    pub(crate) fn with_pool(
        workload: String,
        backend: BackendChoice,
        pool: Option<eventide::SharedPool>,
    ) -> Run {
        let mut builder = Loop::builder().backend(backend);
        builder = match pool {
            Some(pool) => builder.pool(pool),
            None => builder.pool_threads(POOL_THREADS),
        };
        // The blocked-loop detector's cost (docs/diagnostics.md): on with
        // this threshold in ms, the system's name then ends in `+detector`.
        let detector = std::env::var("WORKLOADS_DETECT_BLOCKING_MS")
            .ok()
            .and_then(|ms| ms.parse::<u64>().ok());
        if let Some(ms) = detector {
            builder = builder.detect_blocking(std::time::Duration::from_millis(ms));
        }
        let lp = match builder.build() {
            Ok(lp) => lp,
            Err(error) => {
                eprintln!(
                    "FAIL workload={workload} system=eventide: cannot build the loop: {error}"
                );
                std::process::exit(1);
            }
        };
        let suffix = if detector.is_some() { "+detector" } else { "" };
        let system = format!("eventide-{}{suffix}", lp.backend());
        Run {
            workload,
            system,
            through_eventide: true,
            backend,
            lp,
        }
    }

    /// The backend this run was asked for.
    pub(crate) fn backend_choice(&self) -> BackendChoice {
        self.backend
    }

    /// Names the system measured when it is not eventide (a raw baseline
    /// run beside it, with the same setup).
    pub(crate) fn set_system(&mut self, system: &str) {
        self.system = system.to_owned();
        self.through_eventide = false;
    }

    /// Prints why the self-check failed, on stderr, and exits 1.
    pub(crate) fn fail(&self, why: impl Display) -> ! {
        eprintln!(
            "FAIL workload={} system={}: {why}",
            self.workload, self.system
        );
        std::process::exit(1);
    }

    /// Prints the one RESULT line on stdout.
    pub(crate) fn result(&self, metric: &str, value: String, extra: &[(&str, String)]) {
        let mut line = format!(
            "RESULT workload={} system={} metric={metric} value={value}",
            self.workload, self.system
        );
        for (key, value) in extra {
            line.push_str(&format!(" {key}={value}"));
        }
        if self.through_eventide {
            line.push_str(&format!(
                " backend={} eventide={}",
                self.lp.backend(),
                env!("CARGO_PKG_VERSION")
            ));
        }
        println!("{line}");
    }
}

/// Process CPU time (user + sys, all threads) in seconds, and peak RSS in MiB.
fn rusage() -> (f64, f64) {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage only writes into the struct it is given, which lives
    // for the whole call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    assert_eq!(
        rc,
        0,
        "getrusage failed: {}",
        std::io::Error::last_os_error()
    );
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    (
        secs(ru.ru_utime) + secs(ru.ru_stime),
        ru.ru_maxrss as f64 / 1024.0,
    )
}

/// Process CPU seconds (user + sys, all threads), from getrusage.
pub(crate) fn cpu_now() -> f64 {
    rusage().0
}

/// Peak resident set size of the process (ru_maxrss), MiB.
pub(crate) fn peak_rss_mb() -> f64 {
    rusage().1
}

/// Seconds from `from` to `to`.
pub(crate) fn secs(from: Instant, to: Instant) -> f64 {
    to.duration_since(from).as_secs_f64()
}

/// `x` with `decimals` decimals, for the RESULT line.
pub(crate) fn fixed(x: f64, decimals: usize) -> String {
    format!("{x:.decimals$}")
}
