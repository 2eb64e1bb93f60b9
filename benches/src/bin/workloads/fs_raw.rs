//! W8's floor inside our own runner: the same files and the same untimed
//! setup as W8 (`fs::make_files`), read straight on io_uring with the
//! `io-uring` crate, no eventide, in one of three shapes per call:
//!
//! - `3op`: the shared raw anchor's shape (`anchors/limit/fs_read_uring.c`,
//!   chained mode): per file openat, then a read of 8 KiB at offset 0, then
//!   close, each queued from the completion of the one before; a short
//!   read is taken for the end of the file.
//! - `probe`: what eventide's `read_file` asks of the kernel without direct
//!   descriptors: openat; a read with `RWF_NOWAIT` at the file position
//!   hard-linked to a *probe* read of the rest of the buffer, which must
//!   return 0 to prove the end (a short read is not the end for pipes,
//!   `/proc` files or partly cached files); close.
//! - `probe-direct`: the same on direct descriptors (lane k opens into slot
//!   k of a 64-slot fixed-file table), as `read_file` does where it can.
//!
//! So `3op` against `probe` is the price of proving the end, and
//! `probe-direct` against `W8 --backend uring` is what eventide's own code
//! costs on top of the kernel work it asks for. 64 lanes, each with its own
//! 8 KiB buffer, one `submit_and_wait(1)` per loop turn, a 256-entry ring
//! (`SINGLE_ISSUER | DEFER_TASKRUN` if the kernel takes them, as eventide's
//! ring). Prints one RESULT line; fails (exit 1) on any error, a wrong byte
//! count or a wrong checksum.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::time::Instant;

use io_uring::{IoUring, cqueue, opcode, squeue, types};

use crate::common::{Run, cpu_now, fixed, secs};
use crate::fs::{FILE_SIZE, FILES, IN_FLIGHT, make_files, name, word_sum};

/// The request shape (see the module documentation).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Shape {
    ThreeOps,
    Probe,
    ProbeDirect,
}

impl Shape {
    pub(crate) fn parse(s: &str) -> Option<Shape> {
        match s {
            "3op" => Some(Shape::ThreeOps),
            "probe" => Some(Shape::Probe),
            "probe-direct" => Some(Shape::ProbeDirect),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Shape::ThreeOps => "3op",
            Shape::Probe => "probe",
            Shape::ProbeDirect => "probe-direct",
        }
    }
}

const BUF: usize = 2 * FILE_SIZE;
/// The probe's share of the buffer (the first read asks for the rest).
const PROBE: usize = 1024;

const OPEN: u64 = 1;
const READ: u64 = 2;
const PROBE_READ: u64 = 3;
const CLOSE: u64 = 4;

/// One of the 64 files in flight.
struct Lane {
    /// The file being read, `None` when the lane is idle.
    file: Option<usize>,
    /// The ordinary descriptor (`3op`, `probe`).
    fd: i32,
    /// Completions still expected before the next step.
    pending: u8,
    /// The first read's and the probe's results.
    first: i32,
    second: i32,
    buf: Box<[u8; BUF]>,
}

/// The loop: ring, lanes, paths and progress.
struct Floor {
    ring: IoUring,
    shape: Shape,
    lanes: Vec<Lane>,
    paths: Vec<CString>,
    next: usize,
    done: usize,
    checksum: u64,
}

fn ud(lane: usize, op: u64) -> u64 {
    ((lane as u64) << 8) | op
}

impl Floor {
    /// Queues `sqes` (kept together, for links), submitting first if the
    /// queue has no room.
    fn push(&mut self, sqes: &[squeue::Entry]) -> Result<(), String> {
        loop {
            // SAFETY: every pointer in these entries is a path in
            // `self.paths` or a lane's boxed buffer: both stay allocated
            // and in place until `run` has reaped every completion (the
            // lanes and paths are only dropped after the loop ends with
            // nothing in flight).
            if unsafe { self.ring.submission().push_multiple(sqes) }.is_ok() {
                return Ok(());
            }
            self.ring
                .submit()
                .map_err(|e| format!("io_uring submit: {e}"))?;
        }
    }

    /// Starts lane `k` on the next file, or leaves it idle.
    fn start(&mut self, k: usize) -> Result<(), String> {
        if self.next == FILES {
            self.lanes[k].file = None;
            return Ok(());
        }
        let file = self.next;
        self.next += 1;
        let lane = &mut self.lanes[k];
        lane.file = Some(file);
        lane.pending = 1;
        lane.first = -1;
        lane.second = -1;
        let open = opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), self.paths[file].as_ptr());
        let open = if self.shape == Shape::ProbeDirect {
            let slot = types::DestinationSlot::try_from_slot_target(k as u32)
                .map_err(|k| format!("no slot {k}"))?;
            open.flags(libc::O_RDONLY).file_index(Some(slot)).build()
        } else {
            open.flags(libc::O_RDONLY | libc::O_CLOEXEC).build()
        };
        self.push(&[open.user_data(ud(k, OPEN))])
    }

    /// The close of lane `k`'s file.
    fn close(&mut self, k: usize) -> Result<(), String> {
        let close = match self.shape {
            Shape::ProbeDirect => opcode::Close::new(types::Fixed(k as u32)).build(),
            _ => opcode::Close::new(types::Fd(self.lanes[k].fd)).build(),
        };
        self.lanes[k].pending = 1;
        self.push(&[close.user_data(ud(k, CLOSE))])
    }

    fn on_cqe(&mut self, cqe: &cqueue::Entry) -> Result<(), String> {
        let k = (cqe.user_data() >> 8) as usize;
        let op = cqe.user_data() & 0xff;
        let res = cqe.result();
        let Some(file) = self.lanes.get(k).and_then(|l| l.file) else {
            return Err(format!("a completion for idle lane {k}"));
        };
        let what = |step: &str| format!("{step} {}", self.paths[file].to_string_lossy());
        let os = |res: i32| std::io::Error::from_raw_os_error(-res);
        match op {
            OPEN => {
                if res < 0 {
                    return Err(format!("{}: {}", what("open"), os(res)));
                }
                let lane = &mut self.lanes[k];
                lane.fd = res;
                let base = lane.buf.as_mut_ptr();
                match self.shape {
                    Shape::ThreeOps => {
                        let read = opcode::Read::new(types::Fd(res), base, BUF as u32)
                            .offset(0)
                            .build();
                        self.push(&[read.user_data(ud(k, READ))])
                    }
                    Shape::Probe | Shape::ProbeDirect => {
                        lane.pending = 2;
                        // SAFETY: `BUF - PROBE` is inside the lane's buffer.
                        let probe_at = unsafe { base.add(BUF - PROBE) };
                        let (first, second) = if self.shape == Shape::ProbeDirect {
                            let slot = types::Fixed(k as u32);
                            let a = opcode::Read::new(slot, base, (BUF - PROBE) as u32);
                            let b = opcode::Read::new(slot, probe_at, PROBE as u32);
                            (a, b)
                        } else {
                            let a = opcode::Read::new(types::Fd(res), base, (BUF - PROBE) as u32);
                            let b = opcode::Read::new(types::Fd(res), probe_at, PROBE as u32);
                            (a, b)
                        };
                        let first = first
                            .offset(u64::MAX)
                            .rw_flags(libc::RWF_NOWAIT)
                            .build()
                            .flags(squeue::Flags::IO_HARDLINK)
                            .user_data(ud(k, READ));
                        let second = second.offset(u64::MAX).build().user_data(ud(k, PROBE_READ));
                        self.push(&[first, second])
                    }
                }
            }
            READ | PROBE_READ => {
                let lane = &mut self.lanes[k];
                if op == READ {
                    lane.first = res;
                } else {
                    lane.second = res;
                }
                lane.pending -= 1;
                if lane.pending > 0 {
                    return Ok(());
                }
                let got = match self.shape {
                    Shape::ThreeOps if res < 0 => {
                        return Err(format!("{}: {}", what("read"), os(res)));
                    }
                    Shape::ThreeOps => res as usize,
                    _ => {
                        // What the first read left (not cached: EAGAIN)
                        // the probe read, at the same position.
                        let first = if lane.first == -libc::EAGAIN {
                            0
                        } else {
                            lane.first
                        };
                        if first < 0 || lane.second < 0 {
                            let bad = if first < 0 { first } else { lane.second };
                            return Err(format!("{}: {}", what("read"), os(bad)));
                        }
                        let (n, m) = (first as usize, lane.second as usize);
                        if m > 0 && n + m <= FILE_SIZE {
                            lane.buf.copy_within(BUF - PROBE..BUF - PROBE + m, n);
                        } else if m > 0 {
                            return Err(format!("{}: the probe found more", what("read")));
                        }
                        n + m
                    }
                };
                if got != FILE_SIZE {
                    return Err(format!("{}: {got} bytes, want {FILE_SIZE}", what("read")));
                }
                self.checksum += u64::from(word_sum(&lane.buf[..FILE_SIZE]));
                self.close(k)
            }
            CLOSE => {
                if res < 0 {
                    return Err(format!("{}: {}", what("close"), os(res)));
                }
                self.done += 1;
                self.start(k)
            }
            _ => Err(format!("unexpected completion {:#x}", cqe.user_data())),
        }
    }

    /// Runs all the files through; the lanes' buffers stay put throughout.
    fn run(&mut self) -> Result<(), String> {
        for k in 0..IN_FLIGHT {
            self.start(k)?;
        }
        let mut batch: Vec<cqueue::Entry> = Vec::with_capacity(256);
        while self.done < FILES {
            self.ring
                .submit_and_wait(1)
                .map_err(|e| format!("io_uring_enter: {e}"))?;
            batch.extend(self.ring.completion());
            for cqe in batch.drain(..) {
                self.on_cqe(&cqe)?;
            }
        }
        Ok(())
    }
}

/// The ring, as eventide sets its own up (best flags first).
fn ring() -> std::io::Result<(IoUring, &'static str)> {
    let mut b = IoUring::builder();
    b.setup_single_issuer().setup_defer_taskrun();
    match b.build(256) {
        Ok(ring) => Ok((ring, "defer_taskrun")),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok((IoUring::new(256)?, "none")),
        Err(e) => Err(e),
    }
}

/// `workloads W8-raw SHAPE`: see the module documentation.
pub(crate) fn w8_raw(run: &mut Run, shape: Shape) {
    run.set_system("raw-uring");
    let files = make_files(run);
    let paths = (0..FILES)
        .map(|i| CString::new(name(&files.dir, i).as_os_str().as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| run.fail(format!("a path with a NUL byte: {e}")));
    let (ring, setup) = ring().unwrap_or_else(|e| run.fail(format!("io_uring_setup: {e}")));
    if shape == Shape::ProbeDirect
        && let Err(e) = ring.submitter().register_files_sparse(IN_FLIGHT as u32)
    {
        run.fail(format!("registering {IN_FLIGHT} direct descriptors: {e}"));
    }
    let lanes = (0..IN_FLIGHT)
        .map(|_| Lane {
            file: None,
            fd: -1,
            pending: 0,
            first: -1,
            second: -1,
            buf: Box::new([0; BUF]),
        })
        .collect();
    let mut floor = Floor {
        ring,
        shape,
        lanes,
        paths,
        next: 0,
        done: 0,
        checksum: 0,
    };
    let c0 = cpu_now();
    let w0 = Instant::now();
    if let Err(error) = floor.run() {
        // Lanes may still be in the kernel: keep their buffers and paths
        // (the process exits at once).
        std::mem::forget(floor);
        run.fail(format!("case={}: {error}", shape.name()));
    }
    let w1 = Instant::now();
    let c1 = cpu_now();
    if floor.checksum != files.checksum {
        run.fail(format!(
            "case={}: checksum {} != {}",
            shape.name(),
            floor.checksum,
            files.checksum
        ));
    }
    let wall = secs(w0, w1);
    run.result(
        "files_per_s",
        fixed(FILES as f64 / wall, 1),
        &[
            ("case", shape.name().to_owned()),
            ("n", FILES.to_string()),
            ("inflight", IN_FLIGHT.to_string()),
            ("wall_s", fixed(wall, 4)),
            ("cpu_s", fixed(c1 - c0, 3)),
            ("checksum", files.checksum.to_string()),
            ("setup", setup.to_owned()),
        ],
    );
}
