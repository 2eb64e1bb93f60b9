//! A kind of event source from outside eventide, written against its
//! public API only: a line reader over a pipe (or any readable, pollable
//! descriptor). Each line is one callback; the end of the pipe is one more.
//!
//! ```text
//! cargo run -p eventide --example line_source
//! ```
//!
//! A writer thread sends a few lines into a pipe and closes it; the loop
//! prints each line as it arrives and ends by itself after the end.

use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use eventide::Loop;
use eventide::source::{EventSource, Interest, SourceEvent, SourceKey};

/// What a [`LineSource`] calls with each line (without its `\n`).
pub type OnLine = Box<dyn FnMut(&mut Loop, Vec<u8>)>;
/// What it calls once at the end: `Ok` at the end of the input (after the
/// last line, also one without a `\n`), or the error that ended it.
pub type OnEnd = Box<dyn FnOnce(&mut Loop, io::Result<()>)>;

/// Reads lines from a descriptor it owns, on the loop: each complete line
/// goes to `on_line`, the end to `on_end`, after which the source removes
/// itself (and closes the descriptor).
pub struct LineSource {
    input: Option<std::fs::File>,
    pending: Vec<u8>,
    on_line: OnLine,
    on_end: Option<OnEnd>,
}

impl std::fmt::Debug for LineSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineSource")
            .field("input", &self.input)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl LineSource {
    /// Adds a line reader of `input` (made nonblocking here) to the loop.
    pub fn insert(
        lp: &mut Loop,
        input: OwnedFd,
        on_line: impl FnMut(&mut Loop, Vec<u8>) + 'static,
        on_end: impl FnOnce(&mut Loop, io::Result<()>) + 'static,
    ) -> eventide::Result<SourceKey> {
        set_nonblocking(&input).map_err(eventide::Error::other)?;
        let key = lp.insert_source(LineSource {
            input: None,
            pending: Vec::new(),
            on_line: Box::new(on_line),
            on_end: Some(Box::new(on_end)),
        });
        if let Err(error) = key.watch(lp, input.as_fd(), Interest::READABLE) {
            key.remove(lp);
            return Err(error);
        }
        key.with(lp, |me: &mut LineSource| me.input = Some(input.into()));
        Ok(key)
    }

    fn end(&mut self, lp: &mut Loop, key: SourceKey, outcome: io::Result<()>) {
        key.remove(lp);
        if let Some(on_end) = self.on_end.take() {
            on_end(lp, outcome);
        }
    }
}

impl EventSource for LineSource {
    fn process(&mut self, lp: &mut Loop, key: SourceKey, event: SourceEvent) {
        match event {
            SourceEvent::Ready { .. } => {
                let Some(input) = self.input.as_mut() else {
                    return;
                };
                // One read per readiness: the watch is level-triggered, so
                // what is left comes with the next turn.
                let mut buf = [0u8; 4096];
                match input.read(&mut buf) {
                    Ok(0) => {
                        if !self.pending.is_empty() {
                            let last = std::mem::take(&mut self.pending);
                            (self.on_line)(lp, last);
                        }
                        self.end(lp, key, Ok(()));
                    }
                    Ok(n) => {
                        self.pending.extend_from_slice(&buf[..n]);
                        while let Some(at) = self.pending.iter().position(|&b| b == b'\n') {
                            let mut line: Vec<u8> = self.pending.drain(..=at).collect();
                            line.pop();
                            (self.on_line)(lp, line);
                            if !key.is_alive(lp) {
                                return; // on_line removed this source.
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => self.end(lp, key, Err(e)),
                }
            }
            SourceEvent::WatchFailed { error, .. } => {
                self.end(lp, key, Err(io::Error::other(error)));
            }
            _ => {}
        }
    }
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    // SAFETY: fcntl on a descriptor the caller owns, with integer arguments.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A pipe's read and write ends.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    if pipe2(&mut fds, libc::O_CLOEXEC) != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: two new descriptors, owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (reader, writer) = pipe()?;
    let mut writer = std::fs::File::from(writer);
    let mut lp = Loop::new()?;
    LineSource::insert(
        &mut lp,
        reader,
        |_, line| println!("line: {}", String::from_utf8_lossy(&line)),
        |_, end| match end {
            Ok(()) => println!("end of the pipe"),
            Err(error) => println!("ended by {error}"),
        },
    )?;
    let thread = std::thread::spawn(move || {
        use std::io::Write;
        for line in ["first", "second", "third"] {
            writeln!(writer, "{line}").expect("write a line");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // Dropping the writer ends the pipe.
    });
    lp.run()?;
    thread.join().expect("the writer thread");
    Ok(())
}

/// `pipe2(2)`; macOS has none: `pipe(2)`, then the same flags by `fcntl`.
fn pipe2(fds: &mut [libc::c_int; 2], flags: libc::c_int) -> libc::c_int {
    #[cfg(not(target_vendor = "apple"))]
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    return unsafe { libc::pipe2(fds.as_mut_ptr(), flags) };
    #[cfg(target_vendor = "apple")]
    {
        // SAFETY: `fds` has room for the two descriptors pipe writes.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            return -1;
        }
        for &fd in fds.iter() {
            // SAFETY: fcntl with integer arguments on a descriptor just made.
            unsafe {
                if flags & libc::O_CLOEXEC != 0 {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                }
                if flags & libc::O_NONBLOCK != 0 {
                    libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK);
                }
            }
        }
        0
    }
}
