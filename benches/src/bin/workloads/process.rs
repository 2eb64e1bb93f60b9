//! W11 (spawn) and W12 (pipe) of `shared/bench/WORKLOADS.md`, and W12's
//! blocking baseline (`W12-blocking`: one thread, plain blocking
//! `write`/`read` on the same pipes, no loop).
//!
//! Shared by every peer in `benches/peers/` (same parameters, same checks):
//!
//! - W11: `/bin/true` 2,000 times, at most 8 alive, stdio ignored
//!   (`/dev/null`), each exit waited for and its code 0 checked.
//! - W12: one `cat` child, stdin and stdout piped, stderr inherited; 1 GiB
//!   written as 16,384 chunks of 64 KiB, one write in flight (the next
//!   after the previous one's completion or drain), read back and checked
//!   byte by byte. Chunk `j` is the 64 KiB block `P` XOR `(j mod 256)`,
//!   where `P[k]` is bits 33.. of the k-th step of the LCG
//!   `x = x * 6364136223846793005 + 1442695040888963407` from x = 1.

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::rc::Rc;
use std::time::Instant;

use eventide::Loop;
use eventide::process::{SpawnOptions, Stdio};

use crate::common::{Run, cpu_now, fixed, peak_rss_mb, secs};

const W11_SPAWNS: usize = 2_000;
const W11_PARALLEL: usize = 8;
const W12_CHUNK: usize = 64 * 1024;
const W12_CHUNKS: usize = 16_384;

/// The 256 chunk patterns of W12 (16 MiB): chunk `j` is `patterns[j % 256]`.
fn w12_patterns() -> Vec<Vec<u8>> {
    let mut x: u64 = 1;
    let mut base = vec![0u8; W12_CHUNK];
    for b in base.iter_mut() {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *b = (x >> 33) as u8;
    }
    (0..256)
        .map(|j| base.iter().map(|b| b ^ j as u8).collect())
        .collect()
}

pub(crate) fn w11_spawn(run: &mut Run) {
    struct State {
        started: Cell<usize>,
        done: Cell<usize>,
        failure: RefCell<Option<String>>,
    }
    fn start(lp: &mut Loop, st: &Rc<State>) {
        if st.started.get() == W11_SPAWNS {
            return;
        }
        st.started.set(st.started.get() + 1);
        let opts = SpawnOptions::new("/bin/true")
            .stdin(Stdio::Ignore)
            .stdout(Stdio::Ignore)
            .stderr(Stdio::Ignore);
        let s = Rc::clone(st);
        let spawned = lp.spawn(opts, move |lp, status| {
            if !status.success() {
                *s.failure.borrow_mut() = Some(format!("exit {status:?}"));
            }
            s.done.set(s.done.get() + 1);
            start(lp, &s);
        });
        if let Err(e) = spawned {
            *st.failure.borrow_mut() = Some(e.to_string());
        }
    }
    let st = Rc::new(State {
        started: Cell::new(0),
        done: Cell::new(0),
        failure: RefCell::new(None),
    });
    let c0 = cpu_now();
    let t0 = Instant::now();
    for _ in 0..W11_PARALLEL {
        start(&mut run.lp, &st);
    }
    if let Err(e) = run.lp.run() {
        run.fail(e);
    }
    let wall = secs(t0, Instant::now());
    let cpu = cpu_now() - c0;
    if let Some(f) = st.failure.borrow().as_ref() {
        run.fail(f);
    }
    if st.done.get() != W11_SPAWNS {
        run.fail(format!("{} of {W11_SPAWNS} children exited", st.done.get()));
    }
    run.result(
        "spawns_per_s",
        fixed(W11_SPAWNS as f64 / wall, 1),
        &[
            ("n", W11_SPAWNS.to_string()),
            ("wall_s", fixed(wall, 3)),
            ("cpu_s", fixed(cpu, 3)),
            ("rss_mb", fixed(peak_rss_mb(), 1)),
        ],
    );
}

pub(crate) fn w12_pipe(run: &mut Run) {
    struct State {
        /// Leaked: each write sends its chunk where it is (a `&'static`
        /// slice is sent without a copy), as the C peer does.
        patterns: &'static [Vec<u8>],
        written: Cell<usize>,
        /// Bytes read and checked.
        read: Cell<usize>,
        ended: Cell<bool>,
        failure: RefCell<Option<String>>,
    }
    fn write_next(lp: &mut Loop, stdin: eventide::net::Pipe, st: &Rc<State>) {
        while st.written.get() < W12_CHUNKS {
            let j = st.written.get();
            st.written.set(j + 1);
            let chunk: &'static [u8] = &st.patterns[j % 256];
            let s = Rc::clone(st);
            let below = stdin.write(lp, chunk, move |_, r| {
                if let Err(e) = r {
                    *s.failure.borrow_mut() = Some(format!("write: {e}"));
                }
            });
            if !below {
                return;
            }
        }
        stdin.end(lp);
    }
    let st = Rc::new(State {
        patterns: Vec::leak(w12_patterns()),
        written: Cell::new(0),
        read: Cell::new(0),
        ended: Cell::new(false),
        failure: RefCell::new(None),
    });
    let c0 = cpu_now();
    let t0 = Instant::now();
    let opts = SpawnOptions::new("cat")
        .stdin(Stdio::Pipe)
        .stdout(Stdio::Pipe);
    let s = Rc::clone(&st);
    let child = match run.lp.spawn(opts, move |_, status| {
        if !status.success() {
            *s.failure.borrow_mut() = Some(format!("cat: {status:?}"));
        }
    }) {
        Ok(child) => child,
        Err(e) => run.fail(e),
    };
    let (Some(stdin), Some(stdout)) = (child.stdin(), child.stdout()) else {
        run.fail("no pipes");
    };
    let s = Rc::clone(&st);
    stdin.on_drain(&mut run.lp, move |lp, p| write_next(lp, p, &s));
    write_next(&mut run.lp, stdin, &st);
    let (s, e) = (Rc::clone(&st), Rc::clone(&st));
    stdout.read_start(
        &mut run.lp,
        move |lp, p, mut data| {
            let mut at = s.read.get();
            while !data.is_empty() {
                let (j, k) = (at / W12_CHUNK, at % W12_CHUNK);
                let n = data.len().min(W12_CHUNK - k);
                if j >= W12_CHUNKS || data[..n] != s.patterns[j % 256][k..k + n] {
                    *s.failure.borrow_mut() = Some(format!("wrong bytes at {at}"));
                    p.close(lp);
                    return;
                }
                at += n;
                data = &data[n..];
            }
            s.read.set(at);
        },
        move |_, _, r| {
            if let Err(err) = r {
                *e.failure.borrow_mut() = Some(format!("read: {err}"));
            }
            e.ended.set(true);
        },
    );
    if let Err(e) = run.lp.run() {
        run.fail(e);
    }
    let wall = secs(t0, Instant::now());
    let cpu = cpu_now() - c0;
    if let Some(f) = st.failure.borrow().as_ref() {
        run.fail(f);
    }
    let total = W12_CHUNK * W12_CHUNKS;
    if st.read.get() != total || !st.ended.get() {
        run.fail(format!("read {} of {total} bytes", st.read.get()));
    }
    w12_result(run, total, wall, cpu);
}

fn w12_result(run: &Run, total: usize, wall: f64, cpu: f64) {
    run.result(
        "mb_per_s",
        fixed(total as f64 / 1e6 / wall, 1),
        &[
            ("bytes", total.to_string()),
            ("wall_s", fixed(wall, 3)),
            ("cpu_s", fixed(cpu, 3)),
            ("rss_mb", fixed(peak_rss_mb(), 1)),
        ],
    );
}

/// W12 with no loop: one thread writes a chunk to `cat` and reads it back
/// whole, blocking, 16,384 times (a pipe holds 64 KiB, so a chunk never
/// waits for the reader), checking every byte: the floor W12 is compared
/// with.
pub(crate) fn w12_blocking(run: &mut Run) {
    run.set_system("blocking");
    let patterns = w12_patterns();
    let c0 = cpu_now();
    let t0 = Instant::now();
    let mut child = match std::process::Command::new("cat")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => run.fail(format!("spawn cat: {e}")),
    };
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");
    let mut buf = vec![0u8; W12_CHUNK];
    for j in 0..W12_CHUNKS {
        let chunk = &patterns[j % 256];
        if let Err(e) = stdin.write_all(chunk) {
            run.fail(format!("write: {e}"));
        }
        if let Err(e) = stdout.read_exact(&mut buf) {
            run.fail(format!("read: {e}"));
        }
        if buf != *chunk {
            run.fail(format!("wrong bytes in chunk {j}"));
        }
    }
    drop(stdin);
    let mut rest = Vec::new();
    let _ = stdout.read_to_end(&mut rest);
    if !rest.is_empty() {
        run.fail("bytes after the end");
    }
    match child.wait() {
        Ok(st) if st.success() => {}
        other => run.fail(format!("cat: {other:?}")),
    }
    let wall = secs(t0, Instant::now());
    w12_result(run, W12_CHUNK * W12_CHUNKS, wall, cpu_now() - c0);
}
