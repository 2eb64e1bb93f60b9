//! A panicking job becomes an error carrying its message; its worker lives on.

#![cfg(not(loom))]

mod util;

use eventide_pool::JobError;
use util::{collect, job};

fn panicked(message: &str) -> Result<u32, JobError> {
    Err(JobError::Panicked {
        message: message.to_owned(),
    })
}

#[test]
fn a_panicking_job_completes_with_its_message() {
    let (pool, mut completions, signal) = util::pool::<u32>(1);
    let handle = pool.submit(job(|| panic!("disk on fire")));
    assert_eq!(
        collect(&mut completions, &signal, 1),
        vec![(handle, panicked("disk on fire"))]
    );
}

#[test]
fn a_formatted_panic_message_is_kept_whole() {
    let (pool, mut completions, signal) = util::pool::<u32>(1);
    let code = 28;
    pool.submit(job(move || panic!("write failed: errno {code}")));
    assert_eq!(
        collect(&mut completions, &signal, 1)[0].1,
        panicked("write failed: errno 28")
    );
}

#[test]
fn a_panic_with_a_non_string_payload_is_reported_as_such() {
    let (pool, mut completions, signal) = util::pool::<u32>(1);
    pool.submit(job(|| std::panic::panic_any(7_u8)));
    assert_eq!(
        collect(&mut completions, &signal, 1)[0].1,
        panicked("<non-string panic payload>")
    );
}

#[test]
fn the_worker_survives_a_panic_and_runs_the_next_jobs() {
    let (pool, mut completions, signal) = util::pool::<u32>(1);
    for i in 0..10 {
        pool.submit(job(move || if i % 2 == 0 { panic!("even {i}") } else { i }));
    }
    let done = collect(&mut completions, &signal, 10);
    let values: Vec<_> = done.into_iter().map(|(_, result)| result).collect();
    let expected: Vec<_> = (0..10)
        .map(|i| {
            if i % 2 == 0 {
                panicked(&format!("even {i}"))
            } else {
                Ok(i)
            }
        })
        .collect();
    assert_eq!(values, expected);
    assert_eq!(pool.started_threads(), 1);
}
