//! Spawns `sort`, writes lines to its stdin, ends it, prints the sorted
//! output and the exit code (Node's `child_process.spawn('sort')` with
//! `child.stdin.end()`).
//!
//! ```text
//! cargo run -p eventide --example sort_child
//! ```

use std::cell::RefCell;
use std::rc::Rc;

use eventide::Loop;
use eventide::process::{SpawnOptions, Stdio};

fn main() -> eventide::Result<()> {
    let mut lp = Loop::new()?;
    let options = SpawnOptions::new("sort")
        .stdin(Stdio::Pipe)
        .stdout(Stdio::Pipe);
    let child = lp.spawn(options, |_, status| {
        eprintln!(
            "sort exited: code {:?}, signal {:?}",
            status.code,
            status.signal_name()
        );
    })?;

    // Everything sort prints, kept until it is done.
    let sorted = Rc::new(RefCell::new(Vec::new()));
    let out = Rc::clone(&sorted);
    child.stdout().expect("piped").read_start(
        &mut lp,
        move |_, _, chunk| out.borrow_mut().extend_from_slice(chunk),
        |_, _, end| end.expect("sort's output"),
    );

    // The lines, then the end of its input: sort sorts once it has all.
    let stdin = child.stdin().expect("piped");
    for line in ["pear", "apple", "fig", "banana", "cherry"] {
        stdin.write(&mut lp, format!("{line}\n").into_bytes(), |_, r| {
            r.expect("written to sort");
        });
    }
    stdin.end(&mut lp);

    // Node's 'close': sort has exited and its output has ended.
    let exit_code = Rc::new(RefCell::new(None));
    let code = Rc::clone(&exit_code);
    child.on_close(move |_, status| {
        print!("{}", String::from_utf8_lossy(&sorted.borrow()));
        println!("exit code: {}", status.code.unwrap_or(-1));
        *code.borrow_mut() = status.code;
    });
    lp.run()?;
    let code = exit_code.borrow().unwrap_or(1);
    std::process::exit(code);
}
