//! The guide's chapter "Files" (docs/guide/fs.md): write, read, stat,
//! streams, and an error worded as Node's.
//!
//!     cargo run --example guide_fs

use eventide::Loop;
use eventide::fs::{ReadStreamOptions, RmOptions, WriteStreamOptions};

fn main() -> eventide::Result<()> {
    let mut lp = Loop::new()?;
    let dir = std::env::temp_dir().join(format!("eventide-guide-fs-{}", std::process::id()));
    let file = dir.join("notes.txt");
    println!("backend: {}", lp.backend());

    let (d, f) = (dir.clone(), file.clone());
    lp.fs().mkdir_recursive(&dir, 0o777, move |lp, made| {
        made.expect("mkdir -p");
        // Paths are `impl AsRef<Path>`: pass a clone, keep the original.
        lp.fs().write_file(
            f.clone(),
            b"one\ntwo\nthree\n".to_vec(),
            move |lp, written| {
                written.expect("writeFile");
                lp.fs().stat(f.clone(), move |lp, stats| {
                    let stats = stats.expect("stat");
                    println!("stat: {} bytes, a file: {}", stats.size, stats.is_file());
                    copy_upper(lp, f, d);
                });
            },
        );
    });
    lp.run()?;

    // Errors read as Node's and carry Node's code.
    lp.fs().read_file(dir.join("missing.txt"), |_, result| {
        let error = result.unwrap_err();
        println!("error: {error}");
        println!("code:  {:?}", error.code());
    });
    lp.run()?;

    lp.fs().rm(
        &dir,
        RmOptions::new().recursive(true).force(false),
        |_, r| {
            r.expect("rm -r");
            println!("removed the directory");
        },
    );
    lp.run()?;
    Ok(())
}

/// Streams `from` into `<dir>/upper.txt` upper-cased, chunk by chunk, with
/// Node's backpressure, then reads the result back.
fn copy_upper(lp: &mut Loop, from: std::path::PathBuf, dir: std::path::PathBuf) {
    let to = dir.join("upper.txt");
    let out = lp
        .fs()
        .create_write_stream(&to, WriteStreamOptions::default(), |_, _| {});
    let writer = out;
    let options = ReadStreamOptions::default().high_water_mark(4);
    lp.fs().create_read_stream(
        &from,
        options,
        move |lp, input, chunk| {
            // `false`: the write queue is full; a careful copier pauses
            // `input` until the write stream's drain callback (not needed
            // for 14 bytes).
            let _more = writer.write(lp, chunk.to_ascii_uppercase());
            let _ = input;
        },
        move |lp, ended| {
            ended.expect("the read stream ends");
            out.end(lp, move |lp, finished| {
                finished.expect("the write stream finishes");
                lp.fs().read_file(&to, |_, bytes| {
                    let text = String::from_utf8(bytes.expect("readFile")).unwrap();
                    println!("upper.txt: {:?}", text);
                });
            });
        },
    );
}
