//! Read and write streams on every backend: chunks in order, ranges,
//! pause and resume, end callbacks, backpressure with drain, errors.

mod util;

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use eventide::Loop;
use eventide::fs::{ReadStreamOptions, WriteStream, WriteStreamOptions};
use util::{assert_fs_error, outcome, run_within};

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

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
    let options = ReadStreamOptions {
        high_water_mark: 1000,
        start: 100,
        end: Some(2_599),
    };
    let (chunks, end) = stream_chunks(lp, &path, options);
    end.unwrap();
    assert_eq!(chunks.len(), 3);
    assert_eq!(chunks.concat(), &data[100..2_600]);
}

fn a_paused_read_stream_delivers_nothing_until_resumed(lp: &mut Loop) {
    let dir = tmp();
    let path = dir.path().join("r");
    std::fs::write(&path, pattern(5_000)).unwrap();
    let options = ReadStreamOptions {
        high_water_mark: 1000,
        ..ReadStreamOptions::default()
    };
    let seen = Rc::new(Cell::new(0));
    let ended = Rc::new(Cell::new(false));
    let (s, e) = (Rc::clone(&seen), Rc::clone(&ended));
    lp.fs().create_read_stream(
        &path,
        options,
        move |lp, stream, _| {
            s.set(s.get() + 1);
            if s.get() == 1 {
                stream.pause();
                assert!(stream.is_paused());
                let (s, stream) = (Rc::clone(&s), stream.clone());
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
    stream: &WriteStream,
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
                assert_eq!(stream.queued(), 0, "drain comes when the queue is empty");
                feed(lp, stream, &d, &a, 8192, &r, Rc::clone(&fin));
            });
    feed(lp, &stream, &data, &at, 8192, &refused, Rc::clone(&done));
    run_within(lp, Duration::from_secs(20));
    done.take().expect("the stream finished").unwrap();
    assert!(
        refused.get() > 0,
        "write said 'wait' at the high-water mark"
    );
    assert_eq!(drains.get(), refused.get(), "one drain per refusal");
    assert!(std::fs::read(&path).unwrap() == *data);
}

fn a_write_stream_that_cannot_open_reports_it_at_end(lp: &mut Loop) {
    let dir = tmp();
    let path = dir.path().join("no/such/dir/file");
    let stream = lp
        .fs()
        .create_write_stream(&path, WriteStreamOptions::default(), |_, _| {});
    let s = stream.clone();
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

on_every_backend!(
    a_read_stream_delivers_every_chunk_in_order_then_ends,
    a_read_stream_reads_only_its_range,
    a_paused_read_stream_delivers_nothing_until_resumed,
    a_read_stream_of_a_missing_file_ends_with_enoent,
    a_write_stream_applies_backpressure_and_writes_everything,
    a_write_stream_that_cannot_open_reports_it_at_end,
);
