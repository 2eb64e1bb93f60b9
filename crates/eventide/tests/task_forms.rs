//! The awaitable forms: timers, pool work, fs, TCP/Unix, UDP, lookup,
//! and the AsyncRead/AsyncWrite adapter, on every backend.

mod util;

use std::cell::Cell;
use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use eventide::Loop;
use eventide::dgram::UdpOptions;
use eventide::fs::{FileType, Flags};
use eventide::net::{Family, ListenOptions};
use eventide::task::{self, TaskError, fs, net, with_loop};
use futures_core::Stream;
use futures_io::{AsyncRead, AsyncWrite};
use util::ms;

const LOCAL: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// block_on, bounded: a watchdog (unreferenced) fails a test that would
/// otherwise wait forever.
fn run<T: 'static>(lp: &mut Loop, f: impl std::future::Future<Output = T> + 'static) -> T {
    let watchdog = lp.set_timeout(Duration::from_secs(20), |_| {
        panic!("the test was still running after its time limit")
    });
    lp.unref_timer(watchdog);
    let out = lp.block_on(f).expect("block_on");
    lp.clear_timer(watchdog);
    out
}

async fn write_all(w: &mut (impl AsyncWrite + Unpin), mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let n = poll_fn(|cx| Pin::new(&mut *w).poll_write(cx, data)).await?;
        data = &data[n..];
    }
    Ok(())
}

async fn read_to_end(r: &mut (impl AsyncRead + Unpin)) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = poll_fn(|cx| Pin::new(&mut *r).poll_read(cx, &mut buf)).await?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

async fn next<S: Stream + Unpin>(s: &mut S) -> Option<S::Item> {
    poll_fn(|cx| Pin::new(&mut *s).poll_next(cx)).await
}

fn sleep_waits_its_delay(lp: &mut Loop) {
    let elapsed = run(lp, async {
        let start = Instant::now();
        task::sleep(ms(15)).await;
        start.elapsed()
    });
    assert!(elapsed >= ms(14), "{elapsed:?}");
}

fn timeout_both_ways(lp: &mut Loop) {
    let (fast, slow) = run(lp, async {
        let fast = task::timeout(ms(500), async {
            task::sleep(ms(1)).await;
            "in time"
        })
        .await;
        let slow = task::timeout(ms(5), task::sleep(Duration::from_secs(60))).await;
        (fast, slow)
    });
    assert_eq!(fast.expect("in time"), "in time");
    let error = slow.expect_err("timed out");
    assert_eq!(TaskError::of(&error), Some(&TaskError::TimedOut));
    assert_eq!(
        error.to_string(),
        "The operation was aborted due to timeout"
    );
    // The 60 s sleep was dropped with the timeout: its timer is cleared.
    assert!(!lp.alive(), "a dropped sleep left its timer");
}

fn interval_is_a_stream(lp: &mut Loop) {
    let ticks = run(lp, async {
        let mut every = task::interval(ms(2));
        let mut n = 0;
        while n < 5 {
            next(&mut every).await.expect("an interval never ends");
            n += 1;
        }
        every.tick().await;
        n + 1
    });
    assert_eq!(ticks, 6);
    assert!(!lp.alive(), "the dropped interval was cleared");
}

fn work_runs_on_the_pool(lp: &mut Loop) {
    let main = std::thread::current().id();
    let (value, other_thread) = run(lp, async move {
        task::work(move || (21 * 2, std::thread::current().id() != main))
            .await
            .expect("work")
    });
    assert_eq!(value, 42);
    assert!(other_thread);
    let panicked = run(lp, async {
        task::work(|| -> u8 { panic!("job boom") }).await
    });
    assert!(matches!(panicked, Err(eventide::Error::Panicked { .. })));
}

fn dropped_work_is_cancelled_while_queued(lp: &mut Loop) {
    // Occupy every pool thread, queue one more job, drop its future: it
    // never runs.
    let threads = 4;
    let gate = Arc::new(Barrier::new(threads + 1));
    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let ran = Arc::new(AtomicBool::new(false));
    let r = Arc::clone(&ran);
    let g = Arc::clone(&gate);
    run(lp, async move {
        let mut blockers = Vec::new();
        for _ in 0..threads {
            let g = Arc::clone(&g);
            let s = Arc::clone(&started);
            blockers.push(with_loop(|lp| {
                lp.spawn_local(task::work(move || {
                    s.fetch_add(1, Ordering::SeqCst);
                    g.wait();
                }))
            }));
        }
        // Every pool thread holds a blocker before the job is queued.
        while started.load(Ordering::SeqCst) < threads {
            task::sleep(ms(1)).await;
        }
        let r2 = Arc::clone(&r);
        let queued = task::timeout(ms(20), task::work(move || r2.store(true, Ordering::SeqCst)));
        assert!(
            queued.await.is_err(),
            "the job cannot run: the pool is busy"
        );
        g.wait();
        for b in blockers {
            b.await.expect("task").expect("work");
        }
    });
    lp.run().expect("run");
    assert!(!ran.load(Ordering::SeqCst), "the dropped job ran");
}

fn fs_promises(lp: &mut Loop) {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().to_path_buf();
    run(lp, async move {
        let sub = base.join("sub");
        fs::mkdir(&sub, 0o755).await.expect("mkdir");
        let a = sub.join("a.txt");
        fs::write_file(&a, "hello ").await.expect("write_file");
        fs::append_file(&a, "world").await.expect("append_file");
        assert_eq!(fs::read_file(&a).await.expect("read_file"), b"hello world");
        assert_eq!(fs::stat(&a).await.expect("stat").size, 11);
        let b = sub.join("b.txt");
        fs::rename(&a, &b).await.expect("rename");
        let entries = fs::readdir(&sub).await.expect("readdir");
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].name, "b.txt");
        assert_eq!(entries[0].file_type, FileType::File);

        let file = fs::open(&b, Flags::parse("r+").unwrap(), 0o644)
            .await
            .expect("open");
        let (n, _) = fs::write(file, b"HELLO".to_vec(), Some(0)).await;
        assert_eq!(n.expect("write"), 5);
        let (n, buf) = fs::read(file, Vec::with_capacity(64), Some(0)).await;
        assert_eq!(n.expect("read"), 11);
        assert_eq!(buf, b"HELLO world");
        assert_eq!(fs::fstat(file).await.expect("fstat").size, 11);
        fs::close(file).await.expect("close");

        fs::unlink(&b).await.expect("unlink");
        let missing = fs::stat(&b).await.expect_err("gone");
        assert_eq!(missing.code(), Some("ENOENT"));
        assert_eq!(
            missing.to_string(),
            format!("ENOENT: no such file or directory, stat '{}'", b.display())
        );
        fs::rmdir(&sub).await.expect("rmdir");
        assert!(
            fs::mkdir_recursive(base.join("x/y"), 0o755)
                .await
                .expect("mkdir -p")
                .is_some()
        );
    });
}

fn tcp_echo_with_async_read_write(lp: &mut Loop) {
    let mut incoming = net::tcp_listen(lp, LOCAL, ListenOptions::default()).expect("listen");
    let addr = incoming.local_addr().expect("bound");
    // 1 MiB each way: far past the high-water marks on both sides.
    let payload: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let expected = payload.clone();
    let echoed = run(lp, async move {
        let server = with_loop(|lp| {
            lp.spawn_local(async move {
                let stream = incoming.accept().await.expect("accept");
                let mut s = net::AsyncStream::new(stream);
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = poll_fn(|cx| Pin::new(&mut s).poll_read(cx, &mut buf))
                        .await
                        .expect("server read");
                    if n == 0 {
                        break;
                    }
                    write_all(&mut s, &buf[..n]).await.expect("server write");
                }
                poll_fn(|cx| Pin::new(&mut s).poll_close(cx))
                    .await
                    .expect("server close");
            })
        });
        let stream = net::tcp_connect(addr).await.expect("connect");
        let c = Rc::new(net::AsyncStream::new(stream));
        // Write while reading: the echo needs both going at once.
        let w = Rc::clone(&c);
        let writer = with_loop(|lp| {
            lp.spawn_local(async move {
                write_all(&mut &*w, &payload).await.expect("client write");
                poll_fn(|cx| Pin::new(&mut &*w).poll_close(cx))
                    .await
                    .expect("client close");
            })
        });
        let got = read_to_end(&mut &*c).await.expect("client read");
        writer.await.expect("writer");
        server.await.expect("server");
        got
    });
    assert_eq!(echoed.len(), expected.len());
    assert!(echoed == expected);
}

fn tcp_connect_refused(lp: &mut Loop) {
    // A port nobody listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind(LOCAL)
        .unwrap()
        .local_addr()
        .unwrap();
    let error = run(lp, async move {
        net::tcp_connect(port).await.expect_err("refused")
    });
    assert_eq!(error.code(), Some("ECONNREFUSED"));
    assert_eq!(error.to_string(), format!("connect ECONNREFUSED {port}"));
}

fn unix_connect_and_accept_stream(lp: &mut Loop) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.sock");
    let mut incoming = net::unix_listen(lp, &path, ListenOptions::default()).expect("listen");
    let got = run(lp, async move {
        let client = with_loop(|lp| {
            lp.spawn_local(async move {
                let s = net::unix_connect(&path).await.expect("connect");
                let mut s = net::AsyncStream::new(s);
                write_all(&mut s, b"over unix").await.expect("write");
                poll_fn(|cx| Pin::new(&mut s).poll_close(cx))
                    .await
                    .expect("close");
            })
        });
        let accepted = next(&mut incoming).await.expect("a stream never ends");
        let mut s = net::AsyncStream::new(accepted.expect("accept"));
        let got = read_to_end(&mut s).await.expect("read");
        client.await.expect("client");
        got
    });
    assert_eq!(got, b"over unix");
}

fn udp_send_and_recv(lp: &mut Loop) {
    let a = lp.udp_bind(LOCAL, UdpOptions::default()).expect("bind a");
    let b = lp.udp_bind(LOCAL, UdpOptions::default()).expect("bind b");
    let b_addr = b.local_addr(lp).expect("b addr");
    let a_addr = a.local_addr(lp).expect("a addr");
    let (bytes, from) = run(lp, async move {
        let mut inbox = net::udp_recv(b);
        // Start receiving before the send.
        let recv = with_loop(|lp| lp.spawn_local(async move { inbox.recv().await }));
        task::yield_now().await;
        let sent = net::udp_send_to(a, b"datagram".to_vec(), b_addr)
            .await
            .expect("send");
        assert_eq!(sent, 8);
        recv.await.expect("task").expect("recv")
    });
    assert_eq!(bytes, b"datagram");
    assert_eq!(from, a_addr);
    a.close(lp);
    b.close(lp);
    lp.run().expect("run");
}

fn lookup_an_address(lp: &mut Loop) {
    let found = run(lp, async { net::lookup("127.0.0.1", Family::Any).await });
    assert_eq!(
        found.expect("lookup"),
        vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]
    );
}

fn dropping_a_sleep_inside_a_task_clears_it(lp: &mut Loop) {
    let woke = Rc::new(Cell::new(false));
    let w = Rc::clone(&woke);
    let handle = lp.spawn_local(async move {
        task::sleep(Duration::from_secs(60)).await;
        w.set(true);
    });
    lp.set_timeout(ms(2), move |_| handle.abort());
    util::run_within(lp, Duration::from_secs(20));
    assert!(!woke.get());
}

/// Connections accepted but never taken are closed with the listener
/// stream: the peer reads its end instead of waiting forever.
fn dropping_incoming_closes_untaken_connections(lp: &mut Loop) {
    use std::io::Read;
    let incoming = net::tcp_listen(lp, LOCAL, ListenOptions::default()).expect("listen");
    let addr = incoming.local_addr().expect("bound");
    let mut client = std::net::TcpStream::connect(addr).expect("connect");
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    run(lp, async move {
        while incoming.pending() == 0 {
            task::sleep(ms(1)).await;
        }
        drop(incoming);
    });
    util::run_within(lp, Duration::from_secs(20));
    let mut buf = [0u8; 8];
    let n = client.read(&mut buf).expect("an end, not a timeout");
    assert_eq!(n, 0);
}

/// A reader that does not read stops the loop reading (past
/// `READ_HIGH_WATER` buffered): the kernel buffers fill and the writing
/// peer's queue stays full, instead of the loop buffering all 32 MiB.
/// Then the reader takes everything, in order.
fn async_read_applies_backpressure(lp: &mut Loop) {
    const TOTAL: usize = 32 * 1024 * 1024;
    let mut incoming = net::tcp_listen(lp, LOCAL, ListenOptions::default()).expect("listen");
    let addr = incoming.local_addr().expect("bound");
    let got = run(lp, async move {
        let sender = with_loop(|lp| {
            lp.spawn_local(async move {
                let stream = incoming.accept().await.expect("accept");
                let done = Rc::new(Cell::new(false));
                let d = Rc::clone(&done);
                with_loop(|lp| {
                    let data: Vec<u8> = (0..TOTAL).map(|i| (i % 239) as u8).collect();
                    stream.write(lp, data, move |_, r| {
                        r.expect("the big write");
                        d.set(true);
                    });
                });
                (stream, done)
            })
        });
        let client = net::tcp_connect(addr).await.expect("connect");
        let mut c = net::AsyncStream::new(client);
        let mut first = [0u8; 1];
        let n = poll_fn(|cx| Pin::new(&mut c).poll_read(cx, &mut first))
            .await
            .expect("first byte");
        assert_eq!(n, 1);
        let (server, done) = sender.await.expect("sender");
        // Give the loop time to read on, were it to ignore the mark.
        task::sleep(ms(200)).await;
        assert!(!done.get(), "32 MiB went into a reader that took 1 byte");
        assert!(with_loop(|lp| server.write_queue_size(lp)) > 0);
        let mut rest = vec![0u8; 64 * 1024];
        let mut total = 1usize;
        let mut ok = first[0] == 0;
        while total < TOTAL {
            let n = poll_fn(|cx| Pin::new(&mut c).poll_read(cx, &mut rest))
                .await
                .expect("read");
            assert!(n > 0, "early end at {total}");
            ok &= rest[..n]
                .iter()
                .enumerate()
                .all(|(i, &b)| b == ((total + i) % 239) as u8);
            total += n;
        }
        // The write's callback may follow the last bytes' arrival.
        while !done.get() {
            task::sleep(ms(1)).await;
        }
        with_loop(|lp| server.close(lp));
        (total, ok, done.get())
    });
    assert_eq!(got, (TOTAL, true, true));
}

on_every_backend!(
    async_read_applies_backpressure,
    dropping_incoming_closes_untaken_connections,
    sleep_waits_its_delay,
    timeout_both_ways,
    interval_is_a_stream,
    work_runs_on_the_pool,
    dropped_work_is_cancelled_while_queued,
    fs_promises,
    tcp_echo_with_async_read_write,
    tcp_connect_refused,
    unix_connect_and_accept_stream,
    udp_send_and_recv,
    lookup_an_address,
    dropping_a_sleep_inside_a_task_clears_it,
    aborting_in_flight_fs_reads_is_safe,
);

/// Tasks aborted while their reads are in flight (on io_uring: in the
/// kernel): the buffers stay with the loop until the completions come,
/// which are then dropped; the loop runs on and later reads are right.
fn aborting_in_flight_fs_reads_is_safe(lp: &mut Loop) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("big");
    let data: Vec<u8> = (0..512 * 1024).map(|i| (i % 241) as u8).collect();
    std::fs::write(&path, &data).expect("write");
    let mut handles = Vec::new();
    for _ in 0..8 {
        let p = path.clone();
        handles.push(lp.spawn_local(async move { fs::read_file(&p).await }));
        let p = path.clone();
        handles.push(lp.spawn_local(async move {
            let file = fs::open(&p, Flags::parse("r").unwrap(), 0).await?;
            let (n, _buf) = fs::read(file, Vec::with_capacity(256 * 1024), Some(0)).await;
            fs::close(file).await?;
            n.map(|_| Vec::new())
        }));
    }
    // Abort them once their operations are submitted (after the first
    // polls, in the microtask queue), before any completion.
    lp.set_immediate(move |_| {
        for h in &handles {
            h.abort();
        }
    });
    util::run_within(lp, Duration::from_secs(20));
    assert_eq!(lp.tasks_pending(), 0);
    let p = path.clone();
    let again = run(
        lp,
        async move { fs::read_file(&p).await.expect("read_file") },
    );
    assert!(again == data);
}
