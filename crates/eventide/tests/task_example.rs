//! examples/async_echo.rs as its users run it, on every backend: it
//! prints its address, echoes one connection (`--once`) and exits 0.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

fn example() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let mut cargo = Command::new(env!("CARGO"));
            cargo.args(["build", "--quiet", "--message-format=json"]);
            cargo.args(["--manifest-path", env!("CARGO_MANIFEST_PATH")]);
            cargo.args(["--example", "async_echo"]);
            let features: Vec<&str> = [
                ("uring", cfg!(feature = "uring")),
                ("epoll", cfg!(feature = "epoll")),
                ("poll", cfg!(feature = "poll")),
            ]
            .into_iter()
            .filter_map(|(name, on)| on.then_some(name))
            .collect();
            cargo.args(["--no-default-features", "--features", &features.join(",")]);
            if !cfg!(debug_assertions) {
                cargo.arg("--release");
            }
            let out = cargo.stderr(Stdio::inherit()).output().expect("run cargo");
            assert!(out.status.success(), "cargo build --example failed");
            let text = String::from_utf8(out.stdout).expect("UTF-8");
            text.lines()
                .filter_map(|line| {
                    let at = line.find("\"executable\":\"")? + "\"executable\":\"".len();
                    let end = line[at..].find('"')?;
                    Some(PathBuf::from(&line[at..at + end]))
                })
                .find(|p| p.file_name().is_some_and(|f| f == "async_echo"))
                .expect("cargo built async_echo")
        })
        .clone()
}

fn echo_once(backend: &str) {
    let mut child = Command::new(example())
        .args(["127.0.0.1:0", "--once"])
        .env("EVENTIDE_BACKEND", backend)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start async_echo");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    out.read_line(&mut first).expect("its address");
    if !first.starts_with("async echo on ") {
        let _ = child.kill();
        let _ = child.wait();
        eprintln!("skipped on {backend}: {first}");
        return;
    }
    let addr = first["async echo on ".len()..]
        .split_whitespace()
        .next()
        .expect("an address");
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // 256 KiB: past both sides' high-water marks. Written from a thread,
    // read here, as the echo needs both going at once.
    let data: Vec<u8> = (0..256 * 1024).map(|i| (i % 253) as u8).collect();
    let mut w = s.try_clone().unwrap();
    let sent = data.clone();
    let writer = std::thread::spawn(move || {
        w.write_all(&sent).expect("write");
        w.shutdown(Shutdown::Write).expect("shutdown");
    });
    let mut back = Vec::new();
    s.read_to_end(&mut back).expect("read the echo");
    writer.join().unwrap();
    assert!(
        back == data,
        "{} bytes came back of {}",
        back.len(),
        data.len()
    );
    let mut rest = String::new();
    out.read_to_string(&mut rest).expect("the rest of stdout");
    assert_eq!(rest.trim(), format!("echoed {} bytes", data.len()));
    assert!(child.wait().expect("exit").success());
}

#[test]
fn async_echo_on_uring() {
    echo_once("uring");
}

#[test]
fn async_echo_on_epoll() {
    echo_once("epoll");
}

#[test]
fn async_echo_on_poll() {
    echo_once("poll");
}
