//! Whole-file conveniences: read_file, write_file, append_file, on every
//! backend: files larger than one read, files whose size stat does not
//! know, and each one's main errors as Node words them.

mod fs_support;
mod util;

use eventide::Loop;
use fs_support::{q, tmp};
use util::{assert_fs_error, outcome};

fn read_file_returns_a_large_file_whole(lp: &mut Loop) {
    let dir = tmp();
    let path = dir.path().join("big");
    let data: Vec<u8> = (0..(5 << 20) + 7u32)
        .map(|i| (i * 31 % 256) as u8)
        .collect();
    std::fs::write(&path, &data).unwrap();
    let got = outcome(lp, move |lp, done| lp.fs().read_file(path, done)).unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data);
}

fn read_file_reads_a_file_of_unknown_size_to_its_end(lp: &mut Loop) {
    // /proc files report size 0: read until a read returns 0.
    let got = outcome(lp, |lp, done| lp.fs().read_file("/proc/self/status", done)).unwrap();
    let text = String::from_utf8(got).unwrap();
    assert!(
        text.starts_with("Name:") && text.contains("\nPid:"),
        "{text}"
    );
    let empty = tmp();
    let path = empty.path().join("empty");
    std::fs::write(&path, b"").unwrap();
    assert!(
        outcome(lp, move |lp, done| lp.fs().read_file(path, done))
            .unwrap()
            .is_empty()
    );
    // A sysfs attribute reports a page (4096) and holds a line: the size
    // is an upper bound, the end is where a read returns 0.
    let attr = "/sys/kernel/mm/transparent_hugepage/enabled";
    if let Ok(want) = std::fs::read(attr) {
        assert!(std::fs::metadata(attr).unwrap().len() > want.len() as u64);
        let got = outcome(lp, |lp, done| lp.fs().read_file(attr, done)).unwrap();
        assert_eq!(got, want);
    }
}

fn read_file_errors_are_nodes(lp: &mut Loop) {
    let dir = tmp();
    let missing = dir.path().join("missing.txt");
    let m = missing.clone();
    let error = outcome(lp, move |lp, done| lp.fs().read_file(m, done)).unwrap_err();
    let message = format!("ENOENT: no such file or directory, open '{}'", q(&missing));
    assert_fs_error(&error, "ENOENT", &message);
    let d = dir.path().to_path_buf();
    let error = outcome(lp, move |lp, done| lp.fs().read_file(d, done)).unwrap_err();
    assert_fs_error(
        &error,
        "EISDIR",
        "EISDIR: illegal operation on a directory, read",
    );
}

fn write_file_replaces_and_append_file_appends(lp: &mut Loop) {
    let dir = tmp();
    let path = dir.path().join("w");
    std::fs::write(&path, b"a much longer previous content").unwrap();
    let p = path.clone();
    outcome(lp, move |lp, done| {
        lp.fs().write_file(p, b"first\n".to_vec(), done)
    })
    .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"first\n");
    let p = path.clone();
    outcome(lp, move |lp, done| {
        lp.fs().append_file(p, b"second\n".to_vec(), done)
    })
    .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"first\nsecond\n");
    let fresh = dir.path().join("fresh");
    let f = fresh.clone();
    outcome(lp, move |lp, done| {
        lp.fs().append_file(f, b"new".to_vec(), done)
    })
    .unwrap();
    assert_eq!(std::fs::read(&fresh).unwrap(), b"new");
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let (p, b) = (path.clone(), big.clone());
    outcome(lp, move |lp, done| lp.fs().write_file(p, b, done)).unwrap();
    assert!(std::fs::read(&path).unwrap() == big);
}

fn write_file_errors_are_nodes(lp: &mut Loop) {
    let dir = tmp();
    let d = dir.path().to_path_buf();
    let error = outcome(lp, move |lp, done| {
        lp.fs().write_file(d, b"x".to_vec(), done)
    })
    .unwrap_err();
    let message = format!(
        "EISDIR: illegal operation on a directory, open '{}'",
        q(dir.path())
    );
    assert_fs_error(&error, "EISDIR", &message);
    let under = dir.path().join("no/such/dir");
    let u = under.clone();
    let error = outcome(lp, move |lp, done| {
        lp.fs().append_file(u, b"x".to_vec(), done)
    })
    .unwrap_err();
    let message = format!("ENOENT: no such file or directory, open '{}'", q(&under));
    assert_fs_error(&error, "ENOENT", &message);
}

fn many_reads_in_flight_all_complete_while_the_loop_runs_timers(lp: &mut Loop) {
    use std::cell::Cell;
    use std::rc::Rc;
    let dir = tmp();
    for i in 0..100 {
        std::fs::write(dir.path().join(format!("f{i}")), vec![i as u8; 1000 + i]).unwrap();
    }
    let (done, ticks) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
    for i in 0..100usize {
        let done = Rc::clone(&done);
        lp.fs()
            .read_file(dir.path().join(format!("f{i}")), move |_, res| {
                assert_eq!(res.unwrap(), vec![i as u8; 1000 + i]);
                done.set(done.get() + 1);
            });
    }
    let t = Rc::clone(&ticks);
    lp.set_immediate(move |_| t.set(t.get() + 1));
    util::run_within(lp, std::time::Duration::from_secs(20));
    assert_eq!((done.get(), ticks.get()), (100, 1));
}

on_every_backend!(
    read_file_returns_a_large_file_whole,
    read_file_reads_a_file_of_unknown_size_to_its_end,
    read_file_errors_are_nodes,
    write_file_replaces_and_append_file_appends,
    write_file_errors_are_nodes,
    many_reads_in_flight_all_complete_while_the_loop_runs_timers,
);

/// The same cases on the io_uring backend with every file operation on
/// the pool (as on a kernel whose io_uring lacks them): same results.
#[test]
fn the_same_cases_pass_with_every_op_on_the_pool() {
    fs_support::rerun_uring_cases_on_the_pool();
}
