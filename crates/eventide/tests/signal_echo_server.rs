//! `examples/echo_server.rs` stops gracefully on SIGTERM and SIGINT: the
//! example's own `run` serves in a child process (this test binary,
//! re-run with one ignored test, on one backend); the test connects,
//! sends, gets its echo, leaves a second connection idle and a third with
//! 256 KiB it does not read yet, then sends the signal to the child: no
//! new connection is accepted, every connection gets its queued echoes
//! then a clean end (EOF, not a reset), and the child exits with 0.

mod util;

#[allow(dead_code)]
#[path = "../examples/echo_server.rs"]
mod echo_server;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use eventide::BackendKind;
use eventide::signal::Signal;

/// How long any one step may take.
const STEP: Duration = Duration::from_secs(20);

#[test]
#[ignore = "run in a child process by the tests below"]
fn child_echo_server() {
    if !util::in_child() {
        return;
    }
    echo_server::run("127.0.0.1:0").expect("the server ran and stopped");
    println!("server returned");
}

/// The child, killed (if still there) and reaped when the test ends,
/// failed or not.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The child's stdout, line by line, through a channel (so every wait on
/// it is bounded).
fn lines(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line containing `what`; returns it.
fn wait_for(rx: &mpsc::Receiver<String>, what: &str, seen: &mut Vec<String>) -> String {
    loop {
        let line = rx
            .recv_timeout(STEP)
            .unwrap_or_else(|e| panic!("no {what:?} from the server ({e}); saw {seen:?}"));
        seen.push(line.clone());
        if line.contains(what) {
            return line;
        }
    }
}

/// Reads until EOF; fails on a reset or a timeout.
fn read_to_eof(stream: &mut TcpStream) -> Vec<u8> {
    stream.set_read_timeout(Some(STEP)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("reading to the server's end: {e} after {} bytes", got.len()),
        }
    }
}

fn graceful_stop(backend: Option<BackendKind>, signal: Signal) {
    if let Some(kind) = backend
        && util::new_loop(kind).is_none()
    {
        return;
    }
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "child_echo_server",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("EVENTIDE_TEST_CHILD", "1")
    .env_remove("EVENTIDE_BACKEND")
    .stdout(Stdio::piped());
    if let Some(kind) = backend {
        cmd.env("EVENTIDE_BACKEND", kind.to_string());
    }
    let mut child = Reaped(cmd.spawn().unwrap());
    let pid = child.0.id() as libc::pid_t;
    let rx = lines(&mut child.0);
    let mut seen = Vec::new();
    let line = wait_for(&rx, "echoing on ", &mut seen);
    let at = line.find("echoing on ").unwrap() + "echoing on ".len();
    let addr: SocketAddr = line[at..].split(' ').next().unwrap().parse().unwrap();

    // One that is echoed, one idle, one that sends a lot without reading.
    let mut echoed = TcpStream::connect(addr).unwrap();
    echoed.write_all(b"hello").unwrap();
    let mut back = [0u8; 5];
    echoed.set_read_timeout(Some(STEP)).unwrap();
    echoed.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"hello");
    let mut idle = TcpStream::connect(addr).unwrap();
    let mut busy = TcpStream::connect(addr).unwrap();
    let sent: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
    busy.set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut written = 0;
    while written < sent.len() {
        // Stops when the server, whose echoes are not read, stops reading.
        match busy.write(&sent[written..(written + 4096).min(sent.len())]) {
            Ok(n) => written += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("writing to the server: {e}"),
        }
    }
    for _ in 0..3 {
        wait_for(&rx, "connected", &mut seen);
    }

    // SAFETY: kill(2) with the child's id and a valid signal.
    assert_eq!(unsafe { libc::kill(pid, signal.as_raw()) }, 0);
    let stopping = wait_for(&rx, "no longer accepting", &mut seen);
    assert_eq!(
        stopping,
        format!("{signal}: no longer accepting, ending 3 connection(s)")
    );
    // The listener is closed (on io_uring the close itself completes a
    // moment after the callback that asked for it: a connect in between
    // lands in the closing socket's backlog, and is reset).
    let deadline = std::time::Instant::now() + STEP;
    loop {
        match TcpStream::connect(addr) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => break,
            other => assert!(
                std::time::Instant::now() < deadline,
                "still accepting: {other:?}"
            ),
        }
        thread::sleep(Duration::from_millis(5));
    }

    // Each connection: its echoes (a prefix of what it sent), then EOF.
    assert_eq!(read_to_eof(&mut echoed), b"");
    assert_eq!(read_to_eof(&mut idle), b"");
    let got = read_to_eof(&mut busy);
    assert!(
        !got.is_empty() && got.len() <= written,
        "{} of {written}",
        got.len()
    );
    assert_eq!(got, sent[..got.len()], "the echoes, in order");
    eprintln!("busy: {written} bytes sent, {} echoed", got.len());
    drop((echoed, idle, busy));

    for _ in 0..3 {
        wait_for(&rx, "a client left", &mut seen);
    }
    wait_for(&rx, "server returned", &mut seen);
    let status = child.0.wait().unwrap();
    assert!(
        status.success(),
        "{status:?} (signal {:?})",
        status.signal()
    );
}

#[test]
fn sigterm_on_uring() {
    graceful_stop(Some(BackendKind::Uring), Signal::TERM);
}

#[test]
fn sigterm_on_epoll() {
    graceful_stop(Some(BackendKind::Epoll), Signal::TERM);
}

#[test]
fn sigterm_on_poll() {
    graceful_stop(Some(BackendKind::Poll), Signal::TERM);
}

#[test]
fn sigint() {
    graceful_stop(None, Signal::INT);
}
