//! What the tokio peers share: the clocks and the RESULT line.

use std::time::Instant;

/// Process CPU seconds (user + system).
pub fn cpu_s() -> f64 {
    // SAFETY: rusage is plain old data; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid rusage to fill.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// Peak RSS in MB.
pub fn rss_mb() -> f64 {
    // SAFETY: as in `cpu_s`.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as in `cpu_s`.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    ru.ru_maxrss as f64 / 1024.0
}

/// Seconds since `t0`.
pub fn since(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64()
}

/// Prints why on stderr and exits 1.
pub fn fail(workload: &str, why: impl std::fmt::Display) -> ! {
    eprintln!("FAIL workload={workload} system=tokio: {why}");
    std::process::exit(1);
}
