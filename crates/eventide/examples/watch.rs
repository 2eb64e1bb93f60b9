//! Watches a path and prints one line per event, `EVENT FILENAME`, as
//! Node's `fs.watch` listener receives them (recursive for a directory):
//!
//!     cargo run --example watch -- /tmp/dir
//!
//! The same as
//! `node -e "require('fs').watch(process.argv[1],{recursive:true},(e,f)=>console.log(e,f))" /tmp/dir`.
//! Runs until Ctrl-C. An error ends it (`ENOENT: no such file or
//! directory, stat '/tmp/dir'`), except a queue overflow, which is
//! reported on stderr as watching goes on.

use std::io::Write;

use eventide::Loop;
use eventide::fs::WatchOptions;

fn main() {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: watch PATH");
        std::process::exit(2);
    };
    if let Err(error) = run(path.as_ref()) {
        eprintln!("{error}");
        std::process::exit(1);
    }
}

fn run(path: &std::path::Path) -> eventide::Result<()> {
    let mut lp = Loop::new()?;
    let options = WatchOptions::new().recursive(true);
    let _watcher = lp.fs().watch(
        path,
        options,
        |_, _, event, filename| {
            let mut out = std::io::stdout().lock();
            // A closed stdout (`| head`) ends the program quietly.
            if writeln!(out, "{event} {}", filename.display())
                .and_then(|()| out.flush())
                .is_err()
            {
                std::process::exit(0);
            }
        },
        |lp, watcher, error| {
            eprintln!("{error}");
            if error.code() != Some("ENOBUFS") {
                watcher.close(lp);
                lp.fail(error);
            }
        },
    )?;
    lp.run()
}
