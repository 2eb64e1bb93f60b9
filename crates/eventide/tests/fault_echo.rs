//! The fault suite: `examples/echo_server.rs` (its own `serve`, compiled
//! in here) on each backend, on 127.0.0.1, driven by clients that
//! misbehave: many short connections, resets before and in the middle of
//! an echo, half-closes after 16 MiB, slow readers, slowloris, random
//! binary data, clients killed mid-transfer. Every echoed byte is
//! compared; afterwards the server is alive, answers, and its descriptor
//! count is back to its baseline.
//!
//! The server runs in this process, on a thread of its own with its own
//! loop: an example is not built for an integration test (no
//! `CARGO_BIN_EXE_` for it, and `cargo test --test fault_echo` does not
//! build examples), so its source is included as a module instead, and
//! its `serve` function handles every connection exactly as the example
//! does. Its descriptors are then this process's, counted in
//! `/proc/self/fd` once the clients are done.
//!
//! The figures (scaled down from the to stay under 60 s per
//! backend on 2 cores in a debug build) are the constants below.

mod util;

#[allow(dead_code)]
#[path = "../examples/echo_server.rs"]
mod echo_server;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream as StdStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use eventide::net::ListenOptions;
use eventide::{BackendChoice, BackendKind, Loop};

/// Short connections, over `SHORT_THREADS`.
const SHORT_CONNECTIONS: usize = 20_000;
const SHORT_THREADS: usize = 8;
/// Connections reset before sending anything, and after part of an echo.
const RESETS_BEFORE: usize = 1000;
const RESETS_MID: usize = 200;
/// Half-closing clients, each sending this much.
const HALF_CLOSERS: usize = 2;
const HALF_CLOSE_BYTES: usize = 16 << 20;
/// Slow readers, each sending this much as fast as the server takes it
/// and reading 32 KiB per 10 ms (every byte compared as it comes).
const SLOW_READERS: usize = 20;
const SLOW_READER_BYTES: usize = 64 << 20;
/// Slowloris clients: one byte per 50 ms, checked, for this long.
const SLOWLORIS: usize = 20;
const SLOWLORIS_FOR: Duration = Duration::from_secs(3);
/// Clients killed (SIGKILL) mid-transfer.
const KILLED: usize = 4;

const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Set in the child process a killed client runs in.
const CHILD_ADDR: &str = "EVENTIDE_FAULT_ECHO_ADDR";

/// A small xorshift generator: random payloads without a dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(n);
        out
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn connect(addr: SocketAddr) -> StdStream {
    let s = StdStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

fn reset(s: StdStream) {
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(s);
}

/// A random byte stream, made again by the reader to compare as it goes
/// (64 MiB per client need not be kept).
struct Gen {
    rng: Rng,
    word: [u8; 8],
    at: usize,
}

impl Gen {
    fn new(seed: u64) -> Gen {
        Gen {
            rng: Rng::new(seed),
            word: [0; 8],
            at: 8,
        }
    }

    fn fill(&mut self, out: &mut [u8]) {
        for b in out {
            if self.at == 8 {
                self.word = self.rng.next().to_le_bytes();
                self.at = 0;
            }
            *b = self.word[self.at];
            self.at += 1;
        }
    }
}

/// Sends `data` from a second thread, then half-closes; reads the echo to
/// EOF; checks it byte for byte.
fn echo_whole(addr: SocketAddr, data: Vec<u8>) {
    let s = connect(addr);
    let mut w = s.try_clone().unwrap();
    let len = data.len();
    let sender = thread::spawn(move || {
        w.write_all(&data).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
        data
    });
    let mut back = Vec::with_capacity(len);
    let mut r = s;
    r.read_to_end(&mut back).expect("the echo, then EOF");
    let data = sender.join().unwrap();
    assert_eq!(back.len(), len, "echo length");
    if back != data {
        let at = back.iter().zip(&data).position(|(a, b)| a != b);
        panic!("the echo differs at offset {at:?}");
    }
}

/// A server thread running the example's `serve` on `backend`; `stop`
/// closes its listener, and the thread ends when its loop does.
struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<()>,
}

fn start_server(backend: BackendKind) -> Option<Server> {
    let (tx, rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stop);
    let thread = thread::spawn(move || {
        let mut lp = match Loop::builder()
            .backend(BackendChoice::Only(backend))
            .build()
        {
            Ok(lp) => lp,
            Err(error) => {
                eprintln!("skipped on {backend}: {error}");
                tx.send(None).unwrap();
                return;
            }
        };
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let listener = lp
            .tcp_listen(
                any,
                ListenOptions::default(),
                |lp, accepted| match accepted {
                    Ok(stream) => echo_server::serve(lp, stream),
                    Err(error) => eprintln!("accept failed: {error}"),
                },
            )
            .unwrap();
        tx.send(Some(listener.local_addr(&lp).unwrap())).unwrap();
        lp.set_interval(Duration::from_millis(20), move |lp, me| {
            if s.load(Ordering::Relaxed) {
                listener.close(lp);
                lp.clear_timer(me);
            }
        });
        lp.run().expect("the server's loop");
    });
    let addr = rx.recv().unwrap()?;
    Some(Server { addr, stop, thread })
}

/// The child process of a killed client: sends random data and reads
/// the echo until it is killed.
#[test]
#[ignore = "run by the fault suite in a child process"]
fn fault_child_sender() {
    let Ok(addr) = std::env::var(CHILD_ADDR) else {
        return;
    };
    let s = connect(addr.parse().unwrap());
    let mut r = s.try_clone().unwrap();
    thread::spawn(move || {
        let mut buf = vec![0; 64 * 1024];
        while matches!(r.read(&mut buf), Ok(n) if n > 0) {}
    });
    let mut rng = Rng::new(7);
    let mut w = s;
    println!("sending");
    loop {
        let chunk = rng.bytes(64 * 1024);
        if w.write_all(&chunk).is_err() {
            return;
        }
    }
}

fn spawn_killed_client(addr: SocketAddr) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["fault_child_sender", "--exact", "--ignored", "--nocapture"])
        .env(CHILD_ADDR, addr.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the child client")
}

/// One backend at a time: the descriptor count is the process's.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn fault_suite(backend: BackendKind) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(server) = start_server(backend) else {
        return;
    };
    let addr = server.addr;
    let start = Instant::now();
    // The baseline: the server listening, idle; no client yet.
    echo_whole(addr, b"warm up".to_vec());
    thread::sleep(Duration::from_millis(100));
    let baseline = open_fds();

    let mut threads = Vec::new();
    // Many short connections with random data of random sizes.
    let short_done = Arc::new(AtomicUsize::new(0));
    for t in 0..SHORT_THREADS {
        let done = Arc::clone(&short_done);
        threads.push(thread::spawn(move || {
            let mut rng = Rng::new(100 + t as u64);
            for _ in 0..SHORT_CONNECTIONS / SHORT_THREADS {
                let n = 1 + rng.below(2000);
                echo_whole(addr, rng.bytes(n));
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Resets before anything, and in the middle of an echo.
    threads.push(thread::spawn(move || {
        for _ in 0..RESETS_BEFORE {
            reset(connect(addr));
        }
    }));
    threads.push(thread::spawn(move || {
        let mut rng = Rng::new(3);
        for _ in 0..RESETS_MID {
            let mut s = connect(addr);
            let data = rng.bytes(256 * 1024);
            s.write_all(&data).unwrap();
            let mut back = vec![0; 1 + rng.below(128 * 1024)];
            s.read_exact(&mut back).unwrap();
            assert_eq!(back, data[..back.len()], "the echo so far");
            reset(s);
        }
    }));
    // Half-closes after 16 MiB.
    for i in 0..HALF_CLOSERS {
        threads.push(thread::spawn(move || {
            echo_whole(addr, Rng::new(50 + i as u64).bytes(HALF_CLOSE_BYTES));
        }));
    }
    // Slow readers: send everything as fast as the server takes it, read
    // 32 KiB per 10 ms, compare all of it.
    for i in 0..SLOW_READERS {
        threads.push(thread::spawn(move || {
            let seed = 70 + i as u64;
            let s = connect(addr);
            let mut w = s.try_clone().unwrap();
            let sender = thread::spawn(move || {
                let mut data = Gen::new(seed);
                let mut buf = vec![0; 64 * 1024];
                let mut sent = 0;
                while sent < SLOW_READER_BYTES {
                    let n = buf.len().min(SLOW_READER_BYTES - sent);
                    data.fill(&mut buf[..n]);
                    w.write_all(&buf[..n]).unwrap();
                    sent += n;
                }
                w.shutdown(Shutdown::Write).unwrap();
            });
            let mut r = s;
            let mut expected = Gen::new(seed);
            let mut got = 0;
            let mut buf = vec![0; 32 * 1024];
            let mut want = vec![0; 32 * 1024];
            loop {
                let n = match r.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => panic!("slow reader: {e}"),
                };
                expected.fill(&mut want[..n]);
                assert!(
                    buf[..n] == want[..n],
                    "a slow reader's echo differs near {got}"
                );
                got += n;
                thread::sleep(Duration::from_millis(10));
            }
            sender.join().unwrap();
            assert_eq!(got, SLOW_READER_BYTES, "a slow reader's echo length");
        }));
    }
    // Slowloris: a byte at a time, each echo checked.
    for i in 0..SLOWLORIS {
        threads.push(thread::spawn(move || {
            let mut s = connect(addr);
            let until = Instant::now() + SLOWLORIS_FOR;
            let mut rng = Rng::new(900 + i as u64);
            let mut b = [0u8; 1];
            while Instant::now() < until {
                let byte = rng.next() as u8;
                s.write_all(&[byte]).unwrap();
                s.read_exact(&mut b).unwrap();
                assert_eq!(b[0], byte);
                thread::sleep(Duration::from_millis(50));
            }
            s.shutdown(Shutdown::Write).unwrap();
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).unwrap();
            assert!(rest.is_empty());
        }));
    }
    // Clients killed mid-transfer.
    let mut children: Vec<Child> = (0..KILLED).map(|_| spawn_killed_client(addr)).collect();
    for child in &mut children {
        // Its first line says it is sending.
        let mut out = child.stdout.take().unwrap();
        let mut line = [0u8; 7];
        out.read_exact(&mut line)
            .expect("the child started sending");
    }
    thread::sleep(Duration::from_millis(200));
    for mut child in children {
        child.kill().unwrap();
        child.wait().unwrap();
    }

    for t in threads {
        t.join().expect("a client failed");
    }
    assert_eq!(
        short_done.load(Ordering::Relaxed),
        SHORT_CONNECTIONS / SHORT_THREADS * SHORT_THREADS
    );

    // Alive and answering.
    echo_whole(addr, Rng::new(1).bytes(100_000));
    // Back to the baseline (the server closes its side asynchronously).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut fds = open_fds();
    while fds != baseline && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
        fds = open_fds();
    }
    assert_eq!(fds, baseline, "descriptors after the faults");
    eprintln!(
        "{backend}: {} short connections, {} + {} resets, {} x {} MiB half-closed, \
         {} slow readers of {} MiB, {} slowloris for {:?}, {} killed: {:?}, fds {baseline}",
        SHORT_CONNECTIONS,
        RESETS_BEFORE,
        RESETS_MID,
        HALF_CLOSERS,
        HALF_CLOSE_BYTES >> 20,
        SLOW_READERS,
        SLOW_READER_BYTES >> 20,
        SLOWLORIS,
        SLOWLORIS_FOR,
        KILLED,
        start.elapsed()
    );

    server.stop.store(true, Ordering::Relaxed);
    server.thread.join().expect("the server's thread");
}

#[test]
fn fault_suite_on_uring() {
    fault_suite(BackendKind::Uring);
}

#[test]
fn fault_suite_on_poll() {
    fault_suite(BackendKind::Poll);
}

#[test]
fn fault_suite_on_epoll() {
    fault_suite(BackendKind::Epoll);
}
