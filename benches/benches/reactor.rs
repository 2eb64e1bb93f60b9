//! W4 (tcp-pingpong) at the reactor level, one function per backend: one TCP
//! connection over 127.0.0.1, client and server on the same reactor and
//! thread; the client sends 64 bytes, the server echoes them, the client
//! checks them and sends again. Throughput is in round trips per second.
//!
//!     cargo bench -p eventide-benches --bench reactor

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use eventide_reactor::{BackendKind, Op, Reactor, Token};
use std::hint::black_box;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

const MSG: usize = 64;
const SRV_RECV: Token = Token(1);
const SRV_SEND: Token = Token(2);
const CLI_RECV: Token = Token(3);
const CLI_SEND: Token = Token(4);

/// The ping-pong state: both ends' buffers move between the reactor and here.
struct PingPong {
    r: Reactor,
    client: RawFd,
    server: RawFd,
    _sockets: (TcpStream, TcpStream),
    msg: Vec<u8>,
    cli_buf: Option<Vec<u8>>,
    cli_send_buf: Option<Vec<u8>>,
}

impl PingPong {
    fn new(kind: BackendKind) -> PingPong {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        for t in [&c, &s] {
            t.set_nodelay(true).unwrap();
            t.set_nonblocking(true).unwrap();
        }
        let mut r = Reactor::with_backend(kind).expect("backend");
        let server = s.as_raw_fd();
        r.submit(SRV_RECV, Op::recv(server, Vec::with_capacity(65536)))
            .unwrap();
        PingPong {
            r,
            client: c.as_raw_fd(),
            server,
            _sockets: (c, s),
            msg: (0..MSG as u8)
                .map(|i| i.wrapping_mul(7).wrapping_add(3))
                .collect(),
            cli_buf: Some(Vec::with_capacity(MSG)),
            cli_send_buf: Some(Vec::with_capacity(MSG)),
        }
    }

    /// One round trip, checked.
    fn round(&mut self, n: u64) {
        let mut out = self.cli_send_buf.take().unwrap();
        out.clear();
        out.extend_from_slice(&self.msg);
        out[..8].copy_from_slice(&n.to_le_bytes());
        let expect: [u8; 8] = n.to_le_bytes();
        self.r.submit(CLI_SEND, Op::send(self.client, out)).unwrap();
        let mut buf = self.cli_buf.take().unwrap();
        buf.clear();
        self.r.submit(CLI_RECV, Op::recv(self.client, buf)).unwrap();
        loop {
            self.r.wait(Some(Duration::from_secs(5))).unwrap();
            while let Some(c) = self.r.next_completion() {
                match c.token {
                    SRV_RECV => {
                        let n = c.result.expect("server recv");
                        assert!(n > 0, "server: end of stream");
                        self.r
                            .submit(SRV_SEND, Op::send(self.server, c.buf.unwrap()))
                            .unwrap();
                    }
                    SRV_SEND => {
                        let mut b = c.buf.unwrap();
                        assert_eq!(c.result.expect("server send"), b.len(), "short echo");
                        b.clear();
                        self.r.submit(SRV_RECV, Op::recv(self.server, b)).unwrap();
                    }
                    CLI_SEND => {
                        assert_eq!(c.result.expect("client send"), MSG);
                        self.cli_send_buf = c.buf;
                    }
                    CLI_RECV => {
                        c.result.expect("client recv");
                        let b = c.buf.unwrap();
                        if b.len() < MSG {
                            self.r.submit(CLI_RECV, Op::recv(self.client, b)).unwrap();
                            continue;
                        }
                        assert_eq!(b[..8], expect, "echo differs");
                        assert_eq!(b[8..], self.msg[8..], "echo differs");
                        self.cli_buf = Some(b);
                    }
                    t => panic!("unexpected {t:?}"),
                }
            }
            if self.cli_buf.is_some() && self.cli_send_buf.is_some() {
                return;
            }
        }
    }
}

fn w4(c: &mut Criterion) {
    let mut g = c.benchmark_group("W4");
    g.throughput(Throughput::Elements(1));
    for &kind in BackendKind::compiled() {
        if Reactor::with_backend(kind).is_err() {
            eprintln!("W4: the {kind} backend is not available here; skipped");
            continue;
        }
        g.bench_function(kind.name(), |b| {
            let mut pp = PingPong::new(kind);
            let mut n = 0u64;
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    pp.round(black_box(n));
                    n += 1;
                }
                start.elapsed()
            });
        });
    }
    g.finish();
}

criterion_group!(benches, w4);
criterion_main!(benches);
