//! `examples/multi_loop_echo.rs`: the example's own `run`, with 2 loops on
//! port 0, serves in a child process (this test binary, re-run with one
//! ignored test, on one backend). Both loops listen on the one port the
//! kernel picked (`SO_REUSEPORT`); the test opens 32 connections, gets
//! every one's echo, then sends the signal: every connection gets a clean
//! end (EOF), each loop reports the connections it served (both served
//! some: with 32 connections hashed over 2 listeners, all on one would
//! happen once in 2^31 runs), they add up to 32, and the child exits 0.

mod util;

#[allow(dead_code)]
#[path = "../examples/multi_loop_echo.rs"]
mod multi_loop_echo;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use eventide::BackendKind;
use eventide::signal::Signal;

/// How long any one step may take.
const STEP: Duration = Duration::from_secs(20);
/// Connections the test opens.
const CONNS: usize = 32;

#[test]
#[ignore = "run in a child process by the tests below"]
fn child_multi_loop_echo() {
    if !util::in_child() {
        return;
    }
    let served = multi_loop_echo::run("127.0.0.1:0", 2).expect("the server ran and stopped");
    println!("server returned after {served} connection(s)");
}

/// The child, killed (if still there) and reaped when the test ends.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for a line of the child's containing `what`; returns it.
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

/// The number before " connection(s)" in `line`.
fn count(line: &str) -> usize {
    let end = line.find(" connection(s)").unwrap();
    let start = line[..end].rfind(' ').unwrap() + 1;
    line[start..end].parse().unwrap()
}

fn two_loops(backend: Option<BackendKind>, signal: Signal) {
    if let Some(kind) = backend
        && util::new_loop(kind).is_none()
    {
        return;
    }
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "child_multi_loop_echo",
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
    let out = child.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let line = wait_for(&rx, "echoing on ", &mut seen);
    assert!(line.contains("with 2 loop(s)"), "{line}");
    let at = line.find("echoing on ").unwrap() + "echoing on ".len();
    let addr: SocketAddr = line[at..].split(' ').next().unwrap().parse().unwrap();
    if let Some(kind) = backend {
        assert!(line.contains(&format!("({kind} backend)")), "{line}");
    }

    let mut conns = Vec::new();
    for i in 0..CONNS {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(STEP)).unwrap();
        let msg = format!("hello {i:02}");
        c.write_all(msg.as_bytes()).unwrap();
        let mut back = vec![0u8; msg.len()];
        c.read_exact(&mut back).unwrap();
        assert_eq!(back, msg.as_bytes());
        conns.push(c);
    }

    // SAFETY: kill(2) with the child's id and a valid signal.
    assert_eq!(unsafe { libc::kill(pid, signal.as_raw()) }, 0);
    for c in &mut conns {
        let mut rest = Vec::new();
        match c.read_to_end(&mut rest) {
            Ok(_) => assert!(rest.is_empty(), "unexpected bytes {rest:?}"),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("reading to the server's end: {e}"),
        }
    }
    drop(conns);
    let first = count(&wait_for(&rx, "loop 0: stopped after", &mut seen));
    let second = count(&wait_for(&rx, "loop 1: stopped after", &mut seen));
    assert!(
        first > 0 && second > 0,
        "one loop took every connection: {first} and {second}"
    );
    assert_eq!(first + second, CONNS);
    let total = count(&wait_for(&rx, "server returned after", &mut seen));
    assert_eq!(total, CONNS);
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn two_loops_share_a_port_on_uring() {
    two_loops(Some(BackendKind::Uring), Signal::TERM);
}

#[test]
fn two_loops_share_a_port_on_epoll() {
    two_loops(Some(BackendKind::Epoll), Signal::TERM);
}

#[test]
fn two_loops_share_a_port_on_poll() {
    two_loops(Some(BackendKind::Poll), Signal::INT);
}
