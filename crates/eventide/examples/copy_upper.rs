//! Writes IN upper-cased to OUT, streamed: a read stream's chunks go
//! through an upper-casing step into a write stream, reading pausing while
//! the write stream is above its high-water mark (Node's backpressure), so
//! a file of any size is copied with a chunk or two in memory.
//!
//!     cargo run --example copy_upper -- IN OUT
//!
//! It is this Node program (`pipeline` reports the first error; an
//! uncaught error would print the same `Error: ...` line, with a stack):
//!
//! ```js
//! const decoder = new StringDecoder('utf8');
//! const upper = new Transform({
//!   transform(chunk, _, done) { done(null, decoder.write(chunk).toUpperCase()); },
//!   flush(done) { done(null, decoder.end().toUpperCase()); },
//! });
//! pipeline(fs.createReadStream(IN), upper, fs.createWriteStream(OUT), (error) => {
//!   if (error) { console.error(String(error)); process.exit(1); }
//! });
//! ```
//!
//! Upper-casing is Unicode's, as JavaScript's `toUpperCase` (`é` → `É`,
//! `ß` → `SS`). A chunk may end inside a multibyte UTF-8 character: its
//! first bytes wait for the next chunk, as Node's `StringDecoder` does
//! (a plain `chunk.toString().toUpperCase()` would break such a
//! character in two). Bytes that are not UTF-8 become U+FFFD, one per
//! maximal invalid sequence, as Node's decoder makes them.
//!
//! As Node's program: both files are opened first, so OUT is created (or
//! emptied) even when IN cannot be opened; IN's error wins when both fail;
//! an error is printed on stderr as Node prints it
//! (`Error: ENOENT: no such file or directory, open 'nosuch'`) and the
//! exit status is 1. Wrong usage prints a usage line and exits with 2.

use std::process::ExitCode;

use eventide::Loop;
use eventide::fs::{File, Flags, ReadStreamOptions, WriteStream, WriteStreamOptions};

/// The copy's state, on the loop (`lp.insert_state`).
struct Copy {
    output: WriteStream,
    upper: Utf8Upper,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output] = args.as_slice() else {
        eprintln!("usage: copy_upper IN OUT");
        return ExitCode::from(2);
    };
    match copy_upper(input, output) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn copy_upper(input: &str, output: &str) -> eventide::Result<()> {
    let mut lp = Loop::new()?;
    let (read, write) = (Flags::parse("r")?, Flags::parse("w")?);
    let out = output.to_owned();
    lp.fs().open(input, read, 0o666, move |lp, opened_in| {
        lp.fs().open(out, write, 0o666, |lp, opened_out| {
            // A failure ends `run()` with its error (the process exits
            // then, closing whichever file did open).
            match (opened_in, opened_out) {
                (Err(error), _) | (_, Err(error)) => lp.fail(error),
                (Ok(input), Ok(output)) => stream(lp, input, output),
            }
        });
    });
    lp.run()
}

/// Streams the open `input` upper-cased into the open `output`.
fn stream(lp: &mut Loop, input: File, output: File) {
    // The streams take the files (`fd`) and close them at their end.
    let reader = lp.fs().create_read_stream(
        "",
        ReadStreamOptions::default().fd(input),
        |lp, reader, chunk| {
            let copy = lp.state_mut::<Copy>().expect("inserted below");
            let upper = copy.upper.push(chunk);
            let output = copy.output;
            if !output.write(lp, upper) {
                // Above the write stream's high-water mark: wait for it.
                reader.pause(lp);
            }
        },
        |lp, ended| {
            if let Err(error) = ended {
                return lp.fail(error);
            }
            let copy = lp.state_mut::<Copy>().expect("inserted below");
            let (tail, output) = (copy.upper.finish(), copy.output);
            output.write(lp, tail);
            output.end(lp, |lp, finished| {
                if let Err(error) = finished {
                    lp.fail(error);
                }
            });
        },
    );
    // Drained: read on.
    let writer = lp.fs().create_write_stream(
        "",
        WriteStreamOptions::default().fd(output),
        move |lp, _| reader.resume(lp),
    );
    // A write that fails (ENOSPC, say) before the end, even while reading
    // waits for a drain that will never come: Node's `'error'`.
    writer.on_error(lp, |lp, error| lp.fail(error));
    // A stream given its file reads from the next turn: the state is
    // there before the first chunk.
    lp.insert_state(Copy {
        output: writer,
        upper: Utf8Upper::default(),
    });
}

/// Upper-cases UTF-8 text that arrives in chunks cut anywhere.
#[derive(Default)]
struct Utf8Upper {
    /// The first bytes of a character the last chunk ended inside (at
    /// most 3).
    carry: Vec<u8>,
}

impl Utf8Upper {
    /// The upper-cased text of `chunk`, after what the last chunk left.
    fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut bytes = std::mem::take(&mut self.carry);
        bytes.extend_from_slice(chunk);
        let mut out = String::with_capacity(bytes.len());
        let mut rest = bytes.as_slice();
        while !rest.is_empty() {
            let (text, bad) = match std::str::from_utf8(rest) {
                Ok(text) => (text, None),
                Err(error) => {
                    let (valid, after) = rest.split_at(error.valid_up_to());
                    let text = std::str::from_utf8(valid).expect("valid up to here");
                    (text, Some((error.error_len(), after)))
                }
            };
            out.push_str(&text.to_uppercase());
            rest = match bad {
                None => &[],
                // Not UTF-8: one replacement character for the sequence.
                Some((Some(len), after)) => {
                    out.push(char::REPLACEMENT_CHARACTER);
                    &after[len..]
                }
                // A character cut by the chunk's end: wait for the rest.
                Some((None, after)) => {
                    self.carry = after.to_vec();
                    &[]
                }
            };
        }
        out.into_bytes()
    }

    /// What is left at the end: a character the input ended inside
    /// becomes one replacement character.
    fn finish(&mut self) -> Vec<u8> {
        if std::mem::take(&mut self.carry).is_empty() {
            Vec::new()
        } else {
            char::REPLACEMENT_CHARACTER.to_string().into_bytes()
        }
    }
}
