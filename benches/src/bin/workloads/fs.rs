//! W8 fs-read-small and W9 fs-stat: a directory of 10,000 files of 4,096
//! bytes, made untimed in a temporary directory (content as the anchors'
//! `mkfiles`: little-endian words of an LCG seeded with the file's index),
//! read back to warm the page cache, and removed at the end. Their paths
//! are built untimed too, as the libuv and raw anchors do.
//!
//! The files are read twice before the timed part, as the anchors' harness
//! does (`mkfiles` writes and reads back, then runs again before each
//! program): a file read back in the same clock tick it was written keeps
//! `atime == mtime`, so with `relatime` its next read updates the access
//! time (an ext4 inode update and journal work), once. That belongs to the
//! setup, not to the timed reads: measured here, it cost a single-pass
//! setup about 10% of W8's rate.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use eventide::Loop;

use crate::common::{Run, cpu_now, fixed, secs};

pub(crate) const FILES: usize = 10_000;
pub(crate) const FILE_SIZE: usize = 4096;
pub(crate) const IN_FLIGHT: usize = 64;
const STATS: usize = 100_000;

/// The W8/W9 files, removed when dropped.
pub(crate) struct Files {
    pub(crate) dir: PathBuf,
    /// The sum of every file's `word_sum`.
    pub(crate) checksum: u64,
}

impl Drop for Files {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.dir) {
            eprintln!(
                "workloads: could not remove {}: {error}",
                self.dir.display()
            );
        }
    }
}

/// The path of file `i` (`fNNNNN`, as the anchors name them).
pub(crate) fn name(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("f{i:05}"))
}

/// The sum of the file's little-endian u32 words, mod 2^32.
pub(crate) fn word_sum(bytes: &[u8]) -> u32 {
    bytes.chunks_exact(4).fold(0u32, |sum, w| {
        sum.wrapping_add(u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
    })
}

/// Untimed: makes the files, reads them back (warming the page cache) and
/// once more (see the module documentation), and returns them with the
/// expected checksum.
pub(crate) fn make_files(run: &Run) -> Files {
    let dir = std::env::temp_dir().join(format!("eventide-w8w9-{}", std::process::id()));
    if let Err(error) = std::fs::create_dir_all(&dir) {
        run.fail(format!("cannot make {}: {error}", dir.display()));
    }
    let mut files = Files { dir, checksum: 0 };
    let mut buf = vec![0u8; FILE_SIZE];
    for i in 0..FILES {
        let mut x = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(12_345);
        for word in buf.chunks_exact_mut(4) {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            word.copy_from_slice(&x.to_le_bytes());
        }
        let path = name(&files.dir, i);
        if let Err(error) = std::fs::write(&path, &buf) {
            run.fail(format!("cannot write {}: {error}", path.display()));
        }
        match std::fs::read(&path) {
            Ok(back) if back == buf => files.checksum += u64::from(word_sum(&back)),
            Ok(_) => run.fail(format!("{} reads back wrong", path.display())),
            Err(error) => run.fail(format!("cannot read {}: {error}", path.display())),
        }
    }
    for i in 0..FILES {
        let path = name(&files.dir, i);
        if let Err(error) = std::fs::read(&path) {
            run.fail(format!("cannot read {}: {error}", path.display()));
        }
    }
    files
}

/// Progress shared by the chains.
#[derive(Default)]
struct Tally {
    next: Cell<usize>,
    done: Cell<usize>,
    checksum: Cell<u64>,
    failures: Cell<usize>,
}

/// What one timed run of the chains measured.
struct Timed {
    wall: f64,
    cpu: f64,
    /// Operations that went to the ring, and to the pool, during the run.
    native_ops: u64,
    pool_ops: u64,
}

/// Starts `IN_FLIGHT` chains with `start` and runs the loop until they end,
/// timed (wall clock and process CPU), with the routes the operations took.
fn run_chains(
    run: &mut Run,
    paths: &Rc<Vec<PathBuf>>,
    tally: &Rc<Tally>,
    start: fn(&mut Loop, Rc<Vec<PathBuf>>, Rc<Tally>),
) -> Timed {
    let before = eventide::fs::stats();
    let c0 = cpu_now();
    let w0 = Instant::now();
    for _ in 0..IN_FLIGHT {
        start(&mut run.lp, Rc::clone(paths), Rc::clone(tally));
    }
    if let Err(error) = run.lp.run() {
        run.fail(format!("the loop failed: {error}"));
    }
    let w1 = Instant::now();
    let c1 = cpu_now();
    let after = eventide::fs::stats();
    Timed {
        wall: secs(w0, w1),
        cpu: c1 - c0,
        native_ops: after.native - before.native,
        pool_ops: after.pool - before.pool,
    }
}

/// One chain: read the next file whole, then the one after, until none is
/// left.
fn read_next(lp: &mut Loop, paths: Rc<Vec<PathBuf>>, tally: Rc<Tally>) {
    let i = tally.next.get();
    if i == FILES {
        return;
    }
    tally.next.set(i + 1);
    let rest = Rc::clone(&paths);
    lp.fs().read_file(&paths[i], move |lp, result| {
        match result {
            Ok(bytes) if bytes.len() == FILE_SIZE => {
                let sum = tally.checksum.get() + u64::from(word_sum(&bytes));
                tally.checksum.set(sum);
            }
            Ok(bytes) => {
                eprintln!("file {i}: {} bytes", bytes.len());
                tally.failures.set(tally.failures.get() + 1);
            }
            Err(error) => {
                eprintln!("file {i}: {error}");
                tally.failures.set(tally.failures.get() + 1);
            }
        }
        tally.done.set(tally.done.get() + 1);
        read_next(lp, rest, tally);
    });
}

/// W8 fs-read-small: read all 10,000 files with `read_file`, 64 chains in
/// flight; files per second, wall clock; checks the checksum of all bytes.
/// On io_uring each file is one reactor operation (open, a read and a probe
/// read linked in the kernel, close: `native_ops` counts 1 per file); on
/// the pool one job per file.
pub(crate) fn w8_fs_read_small(run: &mut Run) {
    let files = make_files(run);
    let paths: Rc<Vec<PathBuf>> = Rc::new((0..FILES).map(|i| name(&files.dir, i)).collect());
    let tally = Rc::new(Tally::default());
    let timed = run_chains(run, &paths, &tally, read_next);
    if tally.failures.get() > 0 || tally.done.get() != FILES {
        run.fail(format!(
            "{} files read, {} failed",
            tally.done.get(),
            tally.failures.get()
        ));
    }
    if tally.checksum.get() != files.checksum {
        run.fail(format!(
            "checksum {} != {}",
            tally.checksum.get(),
            files.checksum
        ));
    }
    run.result(
        "files_per_s",
        fixed(FILES as f64 / timed.wall, 1),
        &[
            ("n", FILES.to_string()),
            ("inflight", IN_FLIGHT.to_string()),
            ("wall_s", fixed(timed.wall, 4)),
            ("cpu_s", fixed(timed.cpu, 3)),
            ("checksum", files.checksum.to_string()),
            ("native_ops", timed.native_ops.to_string()),
            ("pool_ops", timed.pool_ops.to_string()),
        ],
    );
}

/// One chain of stats, round robin over the files.
fn stat_next(lp: &mut Loop, paths: Rc<Vec<PathBuf>>, tally: Rc<Tally>) {
    let i = tally.next.get();
    if i == STATS {
        return;
    }
    tally.next.set(i + 1);
    let rest = Rc::clone(&paths);
    lp.fs().stat(&paths[i % FILES], move |lp, result| {
        match result {
            Ok(stats) if stats.is_file() && stats.size == FILE_SIZE as u64 => {}
            Ok(stats) => {
                eprintln!("stat {i}: {stats:?}");
                tally.failures.set(tally.failures.get() + 1);
            }
            Err(error) => {
                eprintln!("stat {i}: {error}");
                tally.failures.set(tally.failures.get() + 1);
            }
        }
        tally.done.set(tally.done.get() + 1);
        stat_next(lp, rest, tally);
    });
}

/// W9 fs-stat: 100,000 `stat` calls round robin over the W8 files, 64 in
/// flight; stats per second, wall clock; checks every result is a regular
/// file of 4,096 bytes.
pub(crate) fn w9_fs_stat(run: &mut Run) {
    let files = make_files(run);
    let paths: Rc<Vec<PathBuf>> = Rc::new((0..FILES).map(|i| name(&files.dir, i)).collect());
    let tally = Rc::new(Tally::default());
    let timed = run_chains(run, &paths, &tally, stat_next);
    if tally.failures.get() > 0 || tally.done.get() != STATS {
        run.fail(format!(
            "{} stats, {} failed",
            tally.done.get(),
            tally.failures.get()
        ));
    }
    run.result(
        "stats_per_s",
        fixed(STATS as f64 / timed.wall, 1),
        &[
            ("n", STATS.to_string()),
            ("files", FILES.to_string()),
            ("inflight", IN_FLIGHT.to_string()),
            ("wall_s", fixed(timed.wall, 4)),
            ("cpu_s", fixed(timed.cpu, 3)),
            ("native_ops", timed.native_ops.to_string()),
            ("pool_ops", timed.pool_ops.to_string()),
        ],
    );
}
