//! The guide's chapter "Errors" (docs/guide/errors.md): Node's messages
//! and codes, io::ErrorKind, conversion to io::Error, and getting an error
//! out of a callback.
//!
//!     cargo run --example guide_errors

use eventide::fs::{Flags, RmOptions};
use eventide::{Error, Loop};

fn show(what: &str, error: &Error) {
    println!("{what}");
    println!("  message: {error}");
    println!("  code:    {:?}", error.code());
    println!("  errno:   {:?}", error.errno());
    println!("  kind:    {:?}", error.kind());
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut lp = Loop::new()?;

    lp.fs()
        .open("missing.txt", Flags::parse("r")?, 0o666, |_, r| {
            show("fs.open of a missing file", &r.unwrap_err())
        });
    lp.fs()
        .rm(std::env::temp_dir(), RmOptions::default(), |_, r| {
            // Node's SystemError: the path is the system's temp directory.
            let error = r.unwrap_err();
            println!("fs.rm of a directory without recursive");
            println!("  code:    {:?}", error.code());
            println!("  kind:    {:?}", error.kind());
        });
    lp.fs().stat("a\0b", |_, r| {
        show("a path with a NUL byte", &r.unwrap_err())
    });
    lp.tcp_connect("127.0.0.1:9".parse()?, |_, r| {
        show("net.connect to a closed port", &r.unwrap_err())
    })?;
    let bad_flags = Flags::parse("rw").unwrap_err();
    show("a flag string Node does not know", &bad_flags);
    lp.run()?;

    // The loop's own errors have kinds no retry loop retries.
    let queued = lp.queue_work(|| (), |_, r| show("cancelled work", &r.unwrap_err()));
    let _ = lp.cancel_work(queued);
    lp.set_immediate(|lp| show("run() from inside a callback", &lp.run().unwrap_err()));
    lp.run()?;

    // An error becomes an io::Error with the same kind; the eventide
    // error is inside it.
    let io: std::io::Error = Flags::parse("rw").unwrap_err().into();
    println!(
        "as io::Error: kind {:?}, inner is eventide::Error: {}",
        io.kind(),
        io.get_ref().is_some_and(|e| e.is::<Error>())
    );

    // A callback that cannot go on stops the loop with its error:
    // run() returns it as soon as the callback returns (its next-ticks,
    // the rest of the phase, wait for a later run()).
    lp.fs().read_file("also-missing.txt", |lp, r| match r {
        Ok(bytes) => println!("{} bytes", bytes.len()),
        Err(error) => {
            lp.next_tick(|_| println!("(a later run() runs this tick)"));
            lp.fail(error);
        }
    });
    match lp.run() {
        Ok(()) => println!("run() succeeded"),
        Err(error) => println!("run() returned: {error}"),
    }

    // An error of the program's own goes the same way, through
    // Error::other, and downcasts back. (This run() first runs the tick
    // the failed one left behind.)
    lp.set_immediate(|lp| lp.fail(Error::other("bad record 7")));
    let error = lp.run().unwrap_err();
    println!(
        "run() returned the program's own error: {error} (a String inside: {})",
        error
            .get_ref()
            .is_some_and(|e| e.to_string() == "bad record 7")
    );
    Ok(())
}
