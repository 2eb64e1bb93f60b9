//! Read and write streams on every backend: chunks in order, ranges,
//! pause and resume, end callbacks, backpressure with drain, errors.

mod fs_support;
mod util;

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use eventide::Loop;
use eventide::fs::{Flags, ReadStream, ReadStreamOptions, WriteStream, WriteStreamOptions};
use fs_support::tmp;
use util::{assert_fs_error, outcome, run_within};

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

/// Reads `path` with a stream; returns the chunks and the end result.
fn stream_chunks(
    lp: &mut Loop,
    path: &Path,
    options: ReadStreamOptions,
) -> (Vec<Vec<u8>>, eventide::Result<()>) {
    let chunks = Rc::new(RefCell::new(Vec::new()));
    let c = Rc::clone(&chunks);
    let end = outcome(lp, move |lp, done| {
        lp.fs().create_read_stream(
            path,
            options,
            move |_, _, chunk| c.borrow_mut().push(chunk.to_vec()),
            done,
        );
    });
    let chunks = chunks.take();
    (chunks, end)
}

fn a_read_stream_delivers_every_chunk_in_order_then_ends(lp: &mut Loop) {
    let dir = tmp();
    let path = dir.path().join("r");
    let data = pattern(200_000);
    std::fs::write(&path, &data).unwrap();
    let (chunks, end) = stream_chunks(lp, &path, ReadStreamOptions::default());
    end.unwrap();
    assert!(chunks.iter().all(|c| !c.is_empty() && c.len() <= 64 * 1024));
    assert_eq!(chunks.len(), 4, "three full chunks and the rest");
    assert!(chunks.concat() == data);
}

fn a_read_stream_reads_only_its_range(lp: &mut Loop) {
    let dir = tmp();
    let path = dir.path().join("r");
    let data = pattern(10_000);
    std::fs::write(&path, &data).unwrap();
    let options = ReadStreamOptions::default()
        .high_water_mark(1000)
        .start(100)
        .end(2_599);
    let (chunks, end) = stream_chunks(lp, &path, options);
    end.unwrap();
    assert_eq!(chunks.len(), 3);
    assert_eq!(chunks.concat(), &data[100..2_600]);
}

fn a_paused_read_stream_delivers_nothing_until_resumed(lp: &mut Loop) {
    let dir = tmp();
    let path = dir.path().join("r");
    std::fs::write(&path, pattern(5_000)).unwrap();
    let options = ReadStreamOptions::default().high_water_mark(1000);
    let seen = Rc::new(Cell::new(0));
    let ended = Rc::new(Cell::new(false));
    let (s, e) = (Rc::clone(&seen), Rc::clone(&ended));
    lp.fs().create_read_stream(
        &path,
        options,
        move |lp, stream, _| {
            s.set(s.get() + 1);
            if s.get() == 1 {
                stream.pause(lp);
                assert!(stream.is_paused(lp));
                let (s, stream) = (Rc::clone(&s), stream);
                lp.set_timeout(Duration::from_millis(20), move |lp| {
                    assert_eq!(s.get(), 1, "nothing while paused");
                    stream.resume(lp);
                });
            }
        },
        move |_, end| {
            end.unwrap();
            e.set(true);
        },
    );
    run_within(lp, Duration::from_secs(20));
    assert_eq!((seen.get(), ended.get()), (5, true));
}

fn a_read_stream_of_a_missing_file_ends_with_enoent(lp: &mut Loop) {
    let dir = tmp();
    let path = dir.path().join("missing");
    let (chunks, end) = stream_chunks(lp, &path, ReadStreamOptions::default());
    assert!(chunks.is_empty());
    let message = format!(
        "ENOENT: no such file or directory, open '{}'",
        path.display()
    );
    assert_fs_error(&end.unwrap_err(), "ENOENT", &message);
}

/// Writes `data` in `chunk`-byte pieces, honouring backpressure: stops
/// when `write` says so and goes on in `on_drain`.
fn feed(
    lp: &mut Loop,
    stream: WriteStream,
    data: &Rc<Vec<u8>>,
    at: &Rc<Cell<usize>>,
    chunk: usize,
    refused: &Rc<Cell<usize>>,
    done: Rc<RefCell<Option<eventide::Result<()>>>>,
) {
    while at.get() < data.len() {
        let end = (at.get() + chunk).min(data.len());
        let piece = data[at.get()..end].to_vec();
        at.set(end);
        if !stream.write(lp, piece) {
            refused.set(refused.get() + 1);
            return;
        }
    }
    stream.end(lp, move |_, result| *done.borrow_mut() = Some(result));
}

fn a_write_stream_applies_backpressure_and_writes_everything(lp: &mut Loop) {
    let dir = tmp();
    let path = dir.path().join("w");
    let data = Rc::new(pattern(1_000_000));
    let at = Rc::new(Cell::new(0));
    let (refused, drains) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
    let done = Rc::new(RefCell::new(None));
    let (d, a, r, n, fin) = (
        Rc::clone(&data),
        Rc::clone(&at),
        Rc::clone(&refused),
        Rc::clone(&drains),
        Rc::clone(&done),
    );
    let stream =
        lp.fs()
            .create_write_stream(&path, WriteStreamOptions::default(), move |lp, stream| {
                n.set(n.get() + 1);
                assert_eq!(stream.queued(lp), 0, "drain comes when the queue is empty");
                feed(lp, stream, &d, &a, 8192, &r, Rc::clone(&fin));
            });
    feed(lp, stream, &data, &at, 8192, &refused, Rc::clone(&done));
    run_within(lp, Duration::from_secs(20));
    done.take().expect("the stream finished").unwrap();
    assert!(
        refused.get() > 0,
        "write said 'wait' at the high-water mark"
    );
    assert_eq!(drains.get(), refused.get(), "one drain per refusal");
    assert!(std::fs::read(&path).unwrap() == *data);
}

/// A write that fails before `end` (ENOSPC on /dev/full) destroys the
/// stream at once and goes to `on_error` with Node's message, then the
/// close callback runs; no drain comes; later writes are refused and
/// `end` fails (checked with node: `error ENOSPC ENOSPC: no space left on
/// device, write`, `close`; a later write or end gets
/// ERR_STREAM_DESTROYED; here the stream is gone, so its key is stale).
/// Before: the error waited for an `end` the paused writer never called,
/// and `run()` returned `Ok`.
fn a_write_error_before_end_goes_to_on_error_then_close(lp: &mut Loop) {
    let events = Rc::new(RefCell::new(Vec::<String>::new()));
    let e = Rc::clone(&events);
    let stream =
        lp.fs()
            .create_write_stream("/dev/full", WriteStreamOptions::default(), move |_, _| {
                e.borrow_mut().push("drain".into())
            });
    let e = Rc::clone(&events);
    stream.on_error(lp, move |_, error| {
        assert_fs_error(&error, "ENOSPC", "ENOSPC: no space left on device, write");
        e.borrow_mut().push("error".into());
    });
    let e = Rc::clone(&events);
    stream.on_close(lp, move |_| e.borrow_mut().push("close".into()));
    assert!(
        !stream.write(lp, vec![b'x'; 20_000]),
        "above the high-water mark: wait for a drain"
    );
    run_within(lp, Duration::from_secs(20));
    assert_eq!(*events.borrow(), ["error", "close"]);
    assert!(stream.is_destroyed(lp));
    assert!(
        !stream.write(lp, b"after".to_vec()),
        "no writes after the error"
    );
    let end = outcome(lp, move |lp, done| stream.end(lp, done));
    let error = end.expect_err("end after the error");
    assert!(matches!(error, eventide::Error::Stale { .. }), "{error:?}");
}

/// The same error with no `on_error`: `run()` returns it (Node's uncaught
/// `'error'` ends the process), it is never lost.
/// An `on_error` callback that panics: the panic leaves `run()`, the
/// close callback still runs (from the next pending phase), and the
/// stream is gone, its key stale; the loop runs on afterwards.
fn a_panicking_on_error_still_closes_the_stream(lp: &mut Loop) {
    let closed = Rc::new(Cell::new(false));
    let stream = lp
        .fs()
        .create_write_stream("/dev/full", WriteStreamOptions::default(), |_, _| {});
    stream.on_error(lp, |_, _| panic!("on_error panics"));
    let c = Rc::clone(&closed);
    stream.on_close(lp, move |_| c.set(true));
    stream.write(lp, b"lost".to_vec());
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| lp.run()));
    assert!(unwound.is_err(), "the panic left run()");
    run_within(lp, Duration::from_secs(20));
    assert!(closed.get(), "the close callback ran after the panic");
    assert!(stream.is_destroyed(lp));
    assert!(!stream.write(lp, b"after".to_vec()));
}

fn a_write_error_nobody_listens_to_ends_run(lp: &mut Loop) {
    let stream = lp
        .fs()
        .create_write_stream("/dev/full", WriteStreamOptions::default(), |_, _| {});
    stream.write(lp, b"lost".to_vec());
    let error = lp.run().expect_err("run() returns the write's error");
    assert_fs_error(&error, "ENOSPC", "ENOSPC: no space left on device, write");
    run_within(lp, Duration::from_secs(20));
}

fn a_write_stream_that_cannot_open_reports_it_at_end(lp: &mut Loop) {
    let dir = tmp();
    let path = dir.path().join("no/such/dir/file");
    let stream = lp
        .fs()
        .create_write_stream(&path, WriteStreamOptions::default(), |_, _| {});
    let s = stream;
    let end = outcome(lp, move |lp, done| {
        s.write(lp, b"lost".to_vec());
        s.end(lp, done);
    });
    let message = format!(
        "ENOENT: no such file or directory, open '{}'",
        path.display()
    );
    assert_fs_error(&end.unwrap_err(), "ENOENT", &message);
    assert!(!stream.write(lp, b"after".to_vec()), "no writes after end");
}

/// Files under `dir` this process holds open (tests run in parallel
/// threads: only our own directory's files are counted).
fn open_under(dir: &Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|entries| {
            entries
                .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|target| target.starts_with(dir))
                .count()
        })
        .unwrap_or(0)
}

/// What a read stream reported: chunks, the end, and close callbacks.
#[derive(Default)]
struct Seen {
    chunks: RefCell<Vec<Vec<u8>>>,
    end: RefCell<Option<eventide::Result<()>>>,
    closes: Cell<usize>,
}

fn watch(
    lp: &mut Loop,
    path: &Path,
    options: ReadStreamOptions,
    on_chunk: impl Fn(&mut Loop, ReadStream) + 'static,
) -> (ReadStream, Rc<Seen>) {
    let seen = Rc::new(Seen::default());
    let (a, b, c) = (Rc::clone(&seen), Rc::clone(&seen), Rc::clone(&seen));
    let stream = lp.fs().create_read_stream(
        path,
        options,
        move |lp, stream, chunk| {
            a.chunks.borrow_mut().push(chunk.to_vec());
            on_chunk(lp, stream);
        },
        move |_, end| {
            assert!(b.end.borrow().is_none(), "one end");
            *b.end.borrow_mut() = Some(end);
        },
    );
    stream.on_close(lp, move |_| c.closes.set(c.closes.get() + 1));
    (stream, seen)
}

fn read_stream_ranges_follow_node(lp: &mut Loop) {
    let dir = tmp();
    let path = dir.path().join("r");
    std::fs::write(&path, b"abcdefghij").unwrap();
    type Case = (Option<u64>, Option<u64>, usize, &'static [u8]);
    let cases: [Case; 5] = [
        (Some(20), None, 64, b""),      // start past the end: no chunk
        (Some(2), Some(4), 64, b"cde"), // end inclusive
        (None, Some(0), 64, b"a"),      // end 0: one byte
        (None, None, 3, b"abcdefghij"), // chunks of 3
        (Some(9), Some(100), 64, b"j"), // end past the file
    ];
    for (start, end, hwm, want) in cases {
        let options = ReadStreamOptions::default()
            .start(start)
            .end(end)
            .high_water_mark(hwm);
        let (_, seen) = watch(lp, &path, options, |_, _| {});
        run_within(lp, Duration::from_secs(20));
        let chunks = seen.chunks.take();
        assert!(chunks.iter().all(|c| !c.is_empty() && c.len() <= hwm));
        assert_eq!(chunks.concat(), want, "start {start:?} end {end:?}");
        seen.end.take().expect("ended").unwrap();
        assert_eq!(seen.closes.get(), 1, "closed once, after the end");
    }
    // start after end: an error at once, nothing opened, no close.
    let options = ReadStreamOptions::default().start(5).end(2);
    let (_, seen) = watch(lp, &path, options, |_, _| {});
    run_within(lp, Duration::from_secs(20));
    let error = seen.end.take().expect("ended").unwrap_err();
    assert_eq!(error.code(), Some("ERR_OUT_OF_RANGE"), "{error}");
    assert_eq!(
        error.to_string(),
        "The value of \"start\" is out of range. It must be <= \"end\" (here: 2). Received 5"
    );
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    assert_eq!(seen.closes.get(), 0);
    assert!(seen.chunks.borrow().is_empty());
}

fn read_stream_on_a_given_file_reads_from_its_position(lp: &mut Loop) {
    let dir = tmp();
    let path = dir.path().join("r");
    std::fs::write(&path, b"abcdefghij").unwrap();
    let file = outcome(lp, |lp, done| {
        lp.fs().open(&path, Flags::parse("r").unwrap(), 0, done)
    })
    .unwrap();
    let moved = outcome(lp, |lp, done| {
        lp.fs()
            .read(file, Vec::with_capacity(3), None, move |lp, n, _| {
                done(lp, n)
            })
    });
    assert_eq!(moved.unwrap(), 3);
    // autoClose off: the file stays open, no close callback.
    let options = ReadStreamOptions::default().fd(file).auto_close(false);
    let (stream, seen) = watch(lp, Path::new("ignored"), options, |_, _| {});
    run_within(lp, Duration::from_secs(20));
    assert_eq!(seen.chunks.take().concat(), b"defghij");
    seen.end.take().expect("ended").unwrap();
    assert_eq!(seen.closes.get(), 0, "no close without autoClose");
    assert!(
        file.fd(lp).is_some() && stream.file(lp).is_some(),
        "still open"
    );
    // The default closes it; emitClose off: no close callback.
    let options = ReadStreamOptions::default()
        .fd(file)
        .start(8)
        .emit_close(false);
    let (_, seen) = watch(lp, Path::new("ignored"), options, |_, _| {});
    run_within(lp, Duration::from_secs(20));
    assert_eq!(seen.chunks.take().concat(), b"ij");
    seen.end.take().expect("ended").unwrap();
    assert_eq!(seen.closes.get(), 0);
    assert_eq!(file.fd(lp), None, "autoClose closed it");
    assert_eq!(open_under(dir.path()), 0);
}

fn read_stream_destroyed_in_a_chunk_ends_with_close_only(lp: &mut Loop) {
    let dir = tmp();
    let path = dir.path().join("r");
    std::fs::write(&path, pattern(10_000)).unwrap();
    let options = ReadStreamOptions::default().high_water_mark(1000);
    let (stream, seen) = watch(lp, &path, options, |lp, stream| stream.destroy(lp));
    run_within(lp, Duration::from_secs(20));
    assert_eq!(seen.chunks.borrow().len(), 1, "nothing after destroy");
    assert!(seen.end.borrow().is_none(), "no end after destroy (Node)");
    assert_eq!(seen.closes.get(), 1);
    assert!(stream.is_destroyed(lp));
    assert_eq!(open_under(dir.path()), 0, "the file was closed");
    // Destroyed at once: only the close.
    let (stream, seen) = watch(lp, &path, ReadStreamOptions::default(), |_, _| {});
    stream.destroy(lp);
    stream.destroy(lp);
    run_within(lp, Duration::from_secs(20));
    assert!(seen.chunks.borrow().is_empty() && seen.end.borrow().is_none());
    assert_eq!(seen.closes.get(), 1);
    assert_eq!(open_under(dir.path()), 0, "opened after destroy: closed");
}

fn read_stream_destroyed_with_a_read_in_flight_waits_for_it(lp: &mut Loop) {
    let dir = tmp();
    let fifo = dir.path().join("fifo");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a live NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // A writer holding the pipe open without writing: the stream's read
    // waits in the kernel (io_uring) or on a pool thread.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let path = fifo.clone();
    let writer = std::thread::spawn(move || {
        let w = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        let _ = rx.recv();
        drop(w); // the pool's read then returns 0
    });
    let (stream, seen) = watch(lp, &fifo, ReadStreamOptions::default(), |_, _| {});
    let s = stream;
    let release = Rc::new(Cell::new(Some(tx)));
    let r = Rc::clone(&release);
    // Once the read is surely in flight, destroy; release the writer a bit
    // later (a pool read can only end that way).
    lp.set_timeout(Duration::from_millis(50), move |lp| {
        s.destroy(lp);
        let r = Rc::clone(&r);
        lp.set_timeout(Duration::from_millis(50), move |_| {
            if let Some(tx) = r.take() {
                let _ = tx.send(());
            }
        });
    });
    run_within(lp, Duration::from_secs(20));
    writer.join().unwrap();
    assert!(seen.chunks.borrow().is_empty() && seen.end.borrow().is_none());
    assert_eq!(seen.closes.get(), 1, "closed once the read came back");
    assert_eq!(open_under(dir.path()), 0);
    drop(release);
}

fn write_stream_options_and_destroy_follow_node(lp: &mut Loop) {
    let dir = tmp();
    let path = dir.path().join("w");
    std::fs::write(&path, b"0123456789").unwrap();
    // flags r+ and start: written in place (Node: 012XY56789).
    let options = WriteStreamOptions::default()
        .flags(Flags::parse("r+").unwrap())
        .start(3);
    let stream = lp.fs().create_write_stream(&path, options, |_, _| {});
    let closes = Rc::new(Cell::new(0));
    let c = Rc::clone(&closes);
    stream.on_close(lp, move |_| c.set(c.get() + 1));
    let s = stream;
    let end = outcome(lp, move |lp, done| {
        s.write(lp, b"XY".to_vec());
        s.end(lp, done);
    });
    end.unwrap();
    assert_eq!(closes.get(), 1);
    assert_eq!(std::fs::read(&path).unwrap(), b"012XY56789");
    // Destroy with chunks queued: end's callback errs, close runs once.
    let stream = lp
        .fs()
        .create_write_stream(&path, WriteStreamOptions::default(), |_, _| {});
    let closes = Rc::new(Cell::new(0));
    let c = Rc::clone(&closes);
    stream.on_close(lp, move |_| c.set(c.get() + 1));
    let s = stream;
    let again_seen = Rc::new(RefCell::new(None));
    let a2 = Rc::clone(&again_seen);
    let end = outcome(lp, move |lp, done| {
        let again_seen = a2;
        s.write(lp, b"abc".to_vec());
        s.end(lp, done);
        s.destroy(lp);
        assert!(!s.write(lp, b"late".to_vec()));
        // end called after destroy, the stream still closing: Node's error.
        let again = Rc::clone(&again_seen);
        s.end(lp, move |_, result| *again.borrow_mut() = Some(result));
    });
    let again = again_seen.borrow_mut().take().expect("the second end ran");
    let error = again.expect_err("end after destroy fails");
    assert_eq!(error.code(), Some("ERR_STREAM_DESTROYED"), "{error}");
    let error = end.expect_err("a pending end fails when destroyed");
    assert_eq!(error.code(), Some("ERR_STREAM_DESTROYED"), "{error}");
    assert_eq!(
        error.to_string(),
        "Cannot call end after a stream was destroyed"
    );
    assert_eq!(closes.get(), 1);
    // Closed, the stream is gone: its key is stale (every handle's model).
    let s = stream;
    let late = outcome(lp, move |lp, done| s.end(lp, done));
    let error = late.expect_err("end on a stream that is gone fails");
    assert_eq!(
        error.to_string(),
        "stale handle: write stream has already finished or been closed"
    );
    assert!(stream.is_destroyed(lp) && stream.file(lp).is_none());
    assert_eq!(closes.get(), 1, "no second close");
    assert_eq!(open_under(dir.path()), 0);
    // A given file, autoClose off: written at its position, left open.
    let file = outcome(lp, |lp, done| {
        lp.fs().open(&path, Flags::parse("w").unwrap(), 0o600, done)
    })
    .unwrap();
    let options = WriteStreamOptions::default().fd(file).auto_close(false);
    let stream = lp.fs().create_write_stream("ignored", options, |_, _| {});
    let s = stream;
    outcome(lp, move |lp, done| {
        s.write(lp, b"kept ".to_vec());
        s.write(lp, b"open".to_vec());
        s.end(lp, done);
    })
    .unwrap();
    assert!(file.fd(lp).is_some(), "autoClose off leaves it open");
    outcome(lp, |lp, done| lp.fs().close(file, done)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"kept open");
}

/// A stream's key is stale once the stream has finished: it never reaches
/// a stream made since in the same slot (write, pause, destroy, end all
/// leave that one alone), and queries answer as for a destroyed stream.
fn a_finished_streams_key_never_reaches_a_newer_stream(lp: &mut Loop) {
    let dir = tmp();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let old = lp
        .fs()
        .create_write_stream(&a, WriteStreamOptions::default(), |_, _| {});
    outcome(lp, move |lp, done| {
        old.write(lp, b"old".to_vec());
        old.end(lp, done);
    })
    .unwrap();
    let options = WriteStreamOptions::default().high_water_mark(4);
    let new = lp.fs().create_write_stream(&b, options, |_, _| {});
    assert!(!old.write(lp, b"stale!".to_vec()), "refused");
    old.destroy(lp);
    assert!(old.is_destroyed(lp) && !new.is_destroyed(lp));
    assert_eq!(new.queued(lp), 0, "nothing reached the new stream");
    assert!(new.write(lp, b"new".to_vec()));
    outcome(lp, move |lp, done| new.end(lp, done)).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), b"old");
    assert_eq!(std::fs::read(&b).unwrap(), b"new");
    // The same for read streams: pause and destroy on the old key.
    std::fs::write(&a, pattern(5000)).unwrap();
    let (first, seen) = watch(lp, &a, ReadStreamOptions::default(), |_, _| {});
    run_within(lp, Duration::from_secs(20));
    seen.end.take().expect("ended").unwrap();
    let options = ReadStreamOptions::default().high_water_mark(1000);
    let (second, seen) = watch(lp, &a, options, |_, _| {});
    first.pause(lp);
    first.destroy(lp);
    assert!(!second.is_paused(lp) && !second.is_destroyed(lp));
    run_within(lp, Duration::from_secs(20));
    seen.end.take().expect("the new stream ended").unwrap();
    assert_eq!(seen.chunks.take().concat(), pattern(5000));
    assert_eq!(open_under(dir.path()), 0);
}

/// A stream key of another loop is stale on this one, even where this
/// loop has a stream in the same slot at the same generation.
fn a_stream_of_another_loop_is_stale_here(lp: &mut Loop) {
    let dir = tmp();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let Some(mut other) = util::new_loop(lp.backend()) else {
        return;
    };
    let theirs = other
        .fs()
        .create_write_stream(&a, WriteStreamOptions::default(), |_, _| {});
    let mine = lp
        .fs()
        .create_write_stream(&b, WriteStreamOptions::default(), |_, _| {});
    assert!(!theirs.write(lp, b"foreign".to_vec()), "refused here");
    theirs.destroy(lp);
    assert_eq!(mine.queued(lp), 0);
    assert!(!mine.is_destroyed(lp) && theirs.is_destroyed(lp));
    assert!(!theirs.is_destroyed(&other), "still alive on its own loop");
    outcome(lp, move |lp, done| {
        mine.write(lp, b"mine".to_vec());
        mine.end(lp, done);
    })
    .unwrap();
    outcome(&mut other, move |lp, done| theirs.end(lp, done)).unwrap();
    assert_eq!(std::fs::read(&b).unwrap(), b"mine");
    assert_eq!(std::fs::read(&a).unwrap(), b"");
}

/// Without `auto_close` an ended stream stays, with its file (Node's
/// `stream.fd`), until `destroy`, which lets the key go and runs the close
/// callback once; the file stays the caller's (as on every `destroy`
/// without `auto_close` here).
fn an_ended_stream_without_auto_close_stays_until_destroyed(lp: &mut Loop) {
    let dir = tmp();
    let path = dir.path().join("r");
    std::fs::write(&path, b"abc").unwrap();
    let file = outcome(lp, |lp, done| {
        lp.fs().open(&path, Flags::parse("r+").unwrap(), 0, done)
    })
    .unwrap();
    let options = ReadStreamOptions::default().fd(file).auto_close(false);
    let (stream, seen) = watch(lp, Path::new("ignored"), options, |_, _| {});
    run_within(lp, Duration::from_secs(20));
    seen.end.take().expect("ended").unwrap();
    assert_eq!(stream.file(lp), Some(file), "still there after the end");
    assert!(!stream.is_destroyed(lp));
    stream.destroy(lp);
    stream.destroy(lp);
    assert_eq!(seen.closes.get(), 0, "never inside destroy");
    run_within(lp, Duration::from_secs(20));
    assert_eq!(seen.closes.get(), 1, "close runs once");
    assert!(stream.is_destroyed(lp) && stream.file(lp).is_none(), "gone");
    assert!(file.fd(lp).is_some(), "the file stays the caller's");
    // A write stream the same way.
    let options = WriteStreamOptions::default().fd(file).auto_close(false);
    let ws = lp.fs().create_write_stream("ignored", options, |_, _| {});
    let closes = Rc::new(Cell::new(0));
    let c = Rc::clone(&closes);
    ws.on_close(lp, move |_| c.set(c.get() + 1));
    outcome(lp, move |lp, done| {
        ws.write(lp, b"xyz".to_vec());
        ws.end(lp, done);
    })
    .unwrap();
    assert_eq!(closes.get(), 0, "no close without autoClose");
    assert_eq!(ws.file(lp), Some(file));
    ws.destroy(lp);
    run_within(lp, Duration::from_secs(20));
    assert_eq!(closes.get(), 1);
    assert!(ws.is_destroyed(lp) && ws.file(lp).is_none());
    outcome(lp, move |lp, done| lp.fs().close(file, done)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"abcxyz");
}

on_every_backend!(
    a_write_error_before_end_goes_to_on_error_then_close,
    a_write_error_nobody_listens_to_ends_run,
    a_panicking_on_error_still_closes_the_stream,
    read_stream_ranges_follow_node,
    read_stream_on_a_given_file_reads_from_its_position,
    read_stream_destroyed_in_a_chunk_ends_with_close_only,
    read_stream_destroyed_with_a_read_in_flight_waits_for_it,
    write_stream_options_and_destroy_follow_node,
    a_read_stream_delivers_every_chunk_in_order_then_ends,
    a_read_stream_reads_only_its_range,
    a_paused_read_stream_delivers_nothing_until_resumed,
    a_read_stream_of_a_missing_file_ends_with_enoent,
    a_write_stream_applies_backpressure_and_writes_everything,
    a_write_stream_that_cannot_open_reports_it_at_end,
    a_finished_streams_key_never_reaches_a_newer_stream,
    a_stream_of_another_loop_is_stale_here,
    an_ended_stream_without_auto_close_stays_until_destroyed,
);

/// The same cases on the io_uring backend with every file operation on
/// the pool (as on a kernel whose io_uring lacks them): same results.
#[test]
fn the_same_cases_pass_with_every_op_on_the_pool() {
    fs_support::rerun_uring_cases_on_the_pool();
}
