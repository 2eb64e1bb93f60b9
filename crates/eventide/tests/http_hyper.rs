//! hyper 1.x on eventide (the `hyper` feature), on every backend:
//! `examples/http_server.rs`'s own server code answers real requests
//! sent over 127.0.0.1 by plain `std` sockets on another thread
//! (keep-alive and pipelining on one connection, a chunked body echoed,
//! a client dribbling its bytes); hyper's client runs on the loop with
//! [`LocalExecutor`]; hyper's header-read timeout runs on [`LoopTimer`],
//! whose sleeps also work from another thread; and the example, in a
//! child process, stops gracefully on SIGTERM with requests in flight.

#![cfg(feature = "hyper")]

mod util;

#[allow(dead_code)]
#[path = "../examples/http_server.rs"]
mod http_server;

use std::future::Future;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::pin::{Pin, pin};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::mpsc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use eventide::hyper::{HyperStream, LocalExecutor, LoopTimer};
use eventide::net::ListenOptions;
use eventide::task::{net, with_loop};
use eventide::{BackendKind, Loop, LoopHandle};
use http_body_util::{BodyExt, Empty};
use hyper::rt::{Executor, Timer};

/// How long any one step may take.
const STEP: Duration = Duration::from_secs(20);

/// Starts the example's accept task on `lp` at 127.0.0.1:0; the stop is
/// kept in the loop's state, for [`stop_server`].
fn start(lp: &mut Loop) -> SocketAddr {
    let incoming = net::tcp_listen(lp, "127.0.0.1:0".parse().unwrap(), ListenOptions::default())
        .expect("listen");
    let addr = incoming.local_addr().unwrap();
    let stop = Rc::new(http_server::Stop::default());
    lp.insert_state(Rc::clone(&stop));
    drop(lp.spawn_local(http_server::accept(incoming, stop, LoopTimer::new(lp))));
    addr
}

/// Stops the server started by [`start`] (gracefully, as on SIGTERM).
fn stop_server(lp: &mut Loop) {
    if let Some(stop) = lp.remove_state::<Rc<http_server::Stop>>() {
        stop.trigger();
    }
}

/// Posts the server's stop when dropped: however the client thread ends.
struct StopOnDrop(Option<LoopHandle>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            let _ = handle.post(stop_server);
        }
    }
}

/// Serves on `lp` while `client` runs on a thread against the server;
/// then stops the server and runs the loop to its end. Returns what the
/// client returned (its panic fails the test).
fn with_client<T: Send + 'static>(
    lp: &mut Loop,
    client: impl FnOnce(SocketAddr) -> T + Send + 'static,
) -> T {
    let addr = start(lp);
    let handle = lp.handle();
    let thread = thread::spawn(move || {
        let _stop = StopOnDrop(Some(handle));
        client(addr)
    });
    util::run_within(lp, Duration::from_secs(60));
    match thread.join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// A client connection: a reader and a writer on one socket.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(STEP)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("send");
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("read a line");
        assert!(line.ends_with("\r\n"), "a cut line: {line:?}");
        line.truncate(line.len() - 2);
        line
    }

    /// The head of a response: its status and its headers (names in
    /// lower case).
    fn head(&mut self) -> (u16, Vec<(String, String)>) {
        let status = self.line();
        let code = status
            .strip_prefix("HTTP/1.1 ")
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("a status line: {status:?}"));
        let mut headers = Vec::new();
        loop {
            let line = self.line();
            if line.is_empty() {
                return (code, headers);
            }
            let (name, value) = line.split_once(':').expect("a header");
            headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
        }
    }

    /// A whole response: status, headers, body (by its length, or its
    /// chunks).
    fn response(&mut self) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let (code, headers) = self.head();
        let body = self.body(&headers);
        (code, headers, body)
    }

    fn body(&mut self, headers: &[(String, String)]) -> Vec<u8> {
        if let Some(len) = header(headers, "content-length") {
            let mut body = vec![0; len.parse().unwrap()];
            self.reader.read_exact(&mut body).expect("the body");
            return body;
        }
        assert_eq!(header(headers, "transfer-encoding"), Some("chunked"));
        let mut body = Vec::new();
        loop {
            let size = usize::from_str_radix(&self.line(), 16).expect("a chunk size");
            let mut chunk = vec![0; size];
            self.reader.read_exact(&mut chunk).expect("a chunk");
            assert_eq!(self.line(), "", "the chunk's end");
            if size == 0 {
                return body;
            }
            body.extend_from_slice(&chunk);
        }
    }

    /// Reads to the server's end; fails on a reset or a timeout.
    fn rest(&mut self) -> Vec<u8> {
        let mut got = Vec::new();
        match self.reader.read_to_end(&mut got) {
            Ok(_) => got,
            Err(e) => panic!("reading to the server's end: {e} after {got:?}"),
        }
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n";

fn assert_hello(response: (u16, Vec<(String, String)>, Vec<u8>)) {
    let (code, headers, body) = response;
    assert_eq!(code, 200, "{headers:?}");
    assert_eq!(body, b"Hello, World!");
    assert_eq!(header(&headers, "content-type"), Some("text/plain"));
    assert_ne!(header(&headers, "connection"), Some("close"));
}

/// Several requests on one connection, one after the other, then
/// pipelined (three sent at once): every answer in order, the connection
/// kept.
fn keep_alive(lp: &mut Loop) {
    let answered = with_client(lp, |addr| {
        let mut client = Client::connect(addr);
        let mut answered = 0;
        for _ in 0..5 {
            client.send(GET);
            assert_hello(client.response());
            answered += 1;
        }
        client.send(&[GET, b"GET /nowhere HTTP/1.1\r\nHost: test\r\n\r\n", GET].concat());
        assert_hello(client.response());
        let (code, _, body) = client.response();
        assert_eq!((code, body.as_slice()), (404, &b"Not Found"[..]));
        assert_hello(client.response());
        answered + 3
    });
    assert_eq!(answered, 8);
}

/// A chunked request body of 100 KiB and more (past the stream's read
/// high-water mark) in chunks of uneven sizes, echoed whole; the
/// connection then serves another request.
fn chunked_body(lp: &mut Loop) {
    with_client(lp, |addr| {
        let mut client = Client::connect(addr);
        let sizes = [1usize, 1000, 100_000, 7, 30_000];
        let data: Vec<u8> = (0..sizes.iter().sum::<usize>())
            .map(|i| (i % 251) as u8)
            .collect();
        let mut request =
            b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        let mut at = 0;
        for size in sizes {
            request.extend_from_slice(format!("{size:x}\r\n").as_bytes());
            request.extend_from_slice(&data[at..at + size]);
            request.extend_from_slice(b"\r\n");
            at += size;
        }
        request.extend_from_slice(b"0\r\n\r\n");
        // Written from another thread while this one reads: the server
        // may answer only once it has the whole body, and the socket
        // buffers need not hold it all.
        let mut writer = client.writer.try_clone().unwrap();
        let sender = thread::spawn(move || writer.write_all(&request).expect("send"));
        let (code, headers, body) = client.response();
        sender.join().unwrap();
        assert_eq!(code, 200, "{headers:?}");
        assert_eq!(header(&headers, "content-length"), Some("131008"));
        assert!(body == data, "the echo differs ({} bytes)", body.len());
        client.send(GET);
        assert_hello(client.response());
    });
}

/// A client sending its request a byte at a time, pausing between
/// bytes (the head, then a body of known length): answered all the
/// same, and the connection kept.
fn slow_client(lp: &mut Loop) {
    with_client(lp, |addr| {
        let mut client = Client::connect(addr);
        for byte in GET {
            client.send(&[*byte]);
            thread::sleep(Duration::from_millis(3));
        }
        assert_hello(client.response());
        let post = b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 9\r\n\r\ndribbled!";
        for part in post.chunks(4) {
            client.send(part);
            thread::sleep(Duration::from_millis(5));
        }
        let (code, _, body) = client.response();
        assert_eq!((code, body.as_slice()), (200, &b"dribbled!"[..]));
    });
}

/// hyper's client on the loop: the connection future runs as a task
/// spawned by [`LocalExecutor`]; three requests on it get their answers.
fn hyper_client(lp: &mut Loop) {
    let addr = start(lp);
    let bodies = lp
        .block_on(async move {
            let stream = net::tcp_connect(addr).await.expect("connect");
            let (mut send, conn) = hyper::client::conn::http1::handshake(HyperStream::new(stream))
                .await
                .expect("handshake");
            LocalExecutor.execute(conn);
            let mut bodies = Vec::new();
            for path in ["/", "/slow/20", "/"] {
                let request = hyper::Request::get(path)
                    .header("host", "test")
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let response = send.send_request(request).await.expect("a response");
                assert_eq!(response.status(), 200);
                let body = response.into_body().collect().await.expect("the body");
                bodies.push(body.to_bytes());
            }
            bodies
        })
        .expect("the client ran");
    assert_eq!(bodies, ["Hello, World!"; 3]);
    stop_server(lp);
    util::run_within(lp, Duration::from_secs(20));
}

/// hyper's header-read timeout on [`LoopTimer`]: a first request is
/// answered (the timer started, then dropped or reset), a second head
/// that never ends is cut off once the timeout has passed, not before,
/// and the connection ends with hyper's timeout error.
fn header_timeout(lp: &mut Loop) {
    const LIMIT: Duration = Duration::from_millis(300);
    let mut incoming =
        net::tcp_listen(lp, "127.0.0.1:0".parse().unwrap(), ListenOptions::default()).unwrap();
    let addr = incoming.local_addr().unwrap();
    let timer = LoopTimer::new(lp);
    let served = lp.spawn_local(async move {
        let stream = incoming.accept().await.expect("accept");
        drop(incoming);
        hyper::server::conn::http1::Builder::new()
            .timer(timer)
            .header_read_timeout(LIMIT)
            .serve_connection(
                HyperStream::new(stream),
                hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(Bytes::from_static(b"Hello, World!")),
                    ))
                }),
            )
            .await
    });
    let client = thread::spawn(move || {
        let mut client = Client::connect(addr);
        // The second head's timeout starts once the first answer is out
        // (hyper times the idle wait too): after this.
        let start = Instant::now();
        client.send(GET);
        let (code, _, body) = client.response();
        assert_eq!((code, body.as_slice()), (200, &b"Hello, World!"[..]));
        client.send(b"GET / HTTP/1.1\r\nHost: te");
        let rest = client.rest();
        (start.elapsed(), rest)
    });
    let result = Rc::new(std::cell::RefCell::new(None));
    let slot = Rc::clone(&result);
    served.on_done(lp, move |_, r| *slot.borrow_mut() = Some(r));
    util::run_within(lp, Duration::from_secs(30));
    let (waited, rest) = client.join().unwrap();
    assert!(waited >= LIMIT, "cut off after {waited:?}");
    // hyper answers a timed-out head with nothing or a 408.
    assert!(
        rest.is_empty() || rest.starts_with(b"HTTP/1.1 408"),
        "{:?}",
        String::from_utf8_lossy(&rest)
    );
    let outcome = result.borrow_mut().take().expect("the connection ended");
    let error = outcome.expect("the task ran").expect_err("a timeout");
    assert!(error.is_timeout(), "{error}");
}

/// A client that resets the connection while a large answer is being
/// sent: the failed send (or receive) ends hyper's connection with an
/// error; it does not wait forever for a drain that cannot come.
fn reset_while_answering(lp: &mut Loop) {
    let mut incoming =
        net::tcp_listen(lp, "127.0.0.1:0".parse().unwrap(), ListenOptions::default()).unwrap();
    let addr = incoming.local_addr().unwrap();
    let served = lp.spawn_local(async move {
        let stream = incoming.accept().await.expect("accept");
        drop(incoming);
        hyper::server::conn::http1::Builder::new()
            .serve_connection(
                HyperStream::new(stream),
                hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(Bytes::from(vec![b'x'; 8 << 20])),
                    ))
                }),
            )
            .await
    });
    let client = thread::spawn(move || {
        let mut client = Client::connect(addr);
        client.send(GET);
        let (code, _) = client.head();
        assert_eq!(code, 200);
        // A reset (RST, not FIN): linger on, with a zero timeout.
        socket2::SockRef::from(&client.writer)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    });
    let result = Rc::new(std::cell::RefCell::new(None));
    let slot = Rc::clone(&result);
    served.on_done(lp, move |_, r| *slot.borrow_mut() = Some(r));
    util::run_within(lp, Duration::from_secs(30));
    client.join().unwrap();
    let outcome = result.borrow_mut().take().expect("the connection ended");
    let error = outcome.expect("the task ran").expect_err("an error");
    eprintln!("the connection ended with: {error:?}");
}

/// Wakes a thread parked in [`block_on_thread`].
struct Unpark(thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `future` on this thread until it completes, parking between
/// polls.
fn block_on_thread<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(value) = future.as_mut().poll(&mut cx) {
            return value;
        }
        thread::park();
    }
}

/// Polls `future` once on this thread.
fn poll_once<F: Future + Unpin>(future: &mut F) {
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let _ = Pin::new(future).poll(&mut Context::from_waker(&waker));
}

/// [`LoopTimer`]'s sleeps are `Send + Sync`: made, polled, reset and
/// dropped on another thread, they reach the loop by posting; each
/// completes, never before its deadline; the loop ends once the thread
/// is done (the timers do not keep it alive).
fn timer_from_another_thread(lp: &mut Loop) {
    let timer = LoopTimer::new(lp);
    let handle = lp.handle();
    let thread = thread::spawn(move || {
        let start = Instant::now();
        block_on_thread(timer.sleep(Duration::from_millis(30)));
        let first = start.elapsed();
        // An hour, moved to 20 ms from now: done in 20 ms.
        let mut sleep = timer.sleep(Duration::from_secs(3600));
        // Polled once (its loop timer asked for), then reset.
        poll_once(&mut sleep);
        let start = Instant::now();
        timer.reset(&mut sleep, Instant::now() + Duration::from_millis(20));
        block_on_thread(sleep);
        let second = start.elapsed();
        // Polled, then dropped: its timer is cleared.
        let mut dropped = timer.sleep(Duration::from_millis(10));
        poll_once(&mut dropped);
        drop(dropped);
        drop(handle);
        (first, second)
    });
    util::run_within(lp, Duration::from_secs(20));
    let (first, second) = thread.join().unwrap();
    assert!(first >= Duration::from_millis(30), "{first:?}");
    assert!(second >= Duration::from_millis(20), "{second:?}");
}

/// Runs `future` as a task of `lp` to its end; a referenced watchdog
/// keeps the loop alive meanwhile (the sleeps' timers do not) and fails
/// the test if it takes over [`STEP`].
fn block_on_within<T: 'static>(lp: &mut Loop, future: impl Future<Output = T> + 'static) -> T {
    let watchdog = lp.set_timeout(STEP, |_| {
        panic!("the task was still pending after its time limit")
    });
    let output = lp.block_on(future).expect("the task ran");
    lp.clear_timer(watchdog);
    output
}

/// Polls `sleep` once from the running task; it must be pending.
async fn poll_pending(sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>) {
    std::future::poll_fn(|cx| {
        assert!(sleep.as_mut().poll(cx).is_pending(), "pending at once");
        Poll::Ready(())
    })
    .await;
}

/// The loop timers [`LoopTimer`] has pending on the running task's loop.
fn hyper_timers() -> Vec<u64> {
    with_loop(|lp| {
        lp.handles()
            .iter()
            .filter(|h| h.site.is_some_and(|s| s.file().ends_with("src/hyper.rs")))
            .map(|h| h.id)
            .collect()
    })
}

/// hyper makes a header-read timeout for every request on a keep-alive
/// connection, polls it once while the next head is awaited, and drops
/// it once the head is in. On the loop's thread, each such sleep takes
/// over the loop timer the one before it left pending (it fires no
/// later than the new deadline), instead of starting a timer and
/// clearing it again: fifty sleeps, one loop timer.
fn successive_sleeps_share_one_loop_timer(lp: &mut Loop) {
    let timer = LoopTimer::new(lp);
    let ids = block_on_within(lp, async move {
        let mut ids = std::collections::HashSet::new();
        for _ in 0..50 {
            let mut sleep = timer.sleep(Duration::from_secs(30));
            poll_pending(&mut sleep).await;
            let pending = hyper_timers();
            assert_eq!(pending.len(), 1, "one timer pending: {pending:?}");
            ids.insert(pending[0]);
            drop(sleep);
        }
        ids
    });
    assert_eq!(ids.len(), 1, "one timer for every sleep: {ids:?}");
}

/// A sleep that takes over a pending timer firing before its own
/// deadline ends at its deadline, not at the timer's: the timer starts
/// itself again for the rest.
fn a_sleep_taking_over_an_earlier_timer_waits_for_its_deadline(lp: &mut Loop) {
    let timer = LoopTimer::new(lp);
    let waited = block_on_within(lp, async move {
        let mut first = timer.sleep(Duration::from_millis(20));
        poll_pending(&mut first).await;
        drop(first);
        let start = Instant::now();
        timer.sleep(Duration::from_millis(120)).await;
        start.elapsed()
    });
    assert!(
        waited >= Duration::from_millis(120),
        "done after {waited:?}"
    );
}

/// A sleep whose deadline comes before the pending timer's gets a timer
/// of its own: it does not wait for the longer one (an hour here; the
/// watchdog fails the test long before).
fn a_sleep_shorter_than_the_pending_timer_gets_its_own(lp: &mut Loop) {
    let timer = LoopTimer::new(lp);
    let waited = block_on_within(lp, async move {
        let mut long = timer.sleep(Duration::from_secs(3600));
        poll_pending(&mut long).await;
        drop(long);
        let start = Instant::now();
        timer.sleep(Duration::from_millis(30)).await;
        start.elapsed()
    });
    assert!(waited >= Duration::from_millis(30), "done after {waited:?}");
}

/// hyper's `Timer::reset` of a sleep waiting on the loop's thread: moved
/// earlier, it ends at the new deadline (not the old one); moved later,
/// at the new one too (not the old timer's, still pending).
fn reset_on_the_loop(lp: &mut Loop) {
    let timer = LoopTimer::new(lp);
    let (earlier, later) = block_on_within(lp, async move {
        let mut sleep = timer.sleep(Duration::from_secs(3600));
        poll_pending(&mut sleep).await;
        let start = Instant::now();
        timer.reset(&mut sleep, Instant::now() + Duration::from_millis(30));
        sleep.await;
        let earlier = start.elapsed();
        let mut sleep = timer.sleep(Duration::from_millis(10));
        poll_pending(&mut sleep).await;
        let start = Instant::now();
        timer.reset(&mut sleep, Instant::now() + Duration::from_millis(100));
        sleep.await;
        (earlier, start.elapsed())
    });
    assert!(earlier >= Duration::from_millis(30), "{earlier:?}");
    assert!(earlier < Duration::from_secs(3600), "{earlier:?}");
    assert!(later >= Duration::from_millis(100), "{later:?}");
}

/// A sleep first polled by a task of its loop, then sent to another
/// thread and polled there to its end: it completes, not before its
/// deadline; another, dropped on that thread, gives its place back by a
/// post to the loop.
fn a_sleep_polled_on_the_loop_then_on_another_thread(lp: &mut Loop) {
    let timer = LoopTimer::new(lp);
    let handle = lp.handle();
    let (tx, rx) = mpsc::channel();
    block_on_within(lp, async move {
        let start = Instant::now();
        let mut sleep = timer.sleep(Duration::from_millis(40));
        let mut dropped = timer.sleep(Duration::from_millis(10));
        poll_pending(&mut sleep).await;
        poll_pending(&mut dropped).await;
        tx.send((sleep, dropped, start, handle)).unwrap();
    });
    let thread = thread::spawn(move || {
        let (sleep, dropped, start, handle) = rx.recv().unwrap();
        drop(dropped);
        block_on_thread(sleep);
        let waited = start.elapsed();
        drop(handle);
        waited
    });
    util::run_within(lp, STEP);
    let waited = thread.join().unwrap();
    assert!(waited >= Duration::from_millis(40), "{waited:?}");
}

/// A sleep polled by one task and then awaited by another: the second
/// task's waker replaces the first's, and it is the one woken.
fn a_sleep_awaited_by_another_task(lp: &mut Loop) {
    let timer = LoopTimer::new(lp);
    let waited = block_on_within(lp, async move {
        let mut sleep = timer.sleep(Duration::from_millis(30));
        poll_pending(&mut sleep).await;
        let start = Instant::now();
        let other = with_loop(|lp| lp.spawn_local(sleep));
        other.await.expect("the other task ran");
        start.elapsed()
    });
    assert!(waited >= Duration::from_millis(20), "{waited:?}");
}

/// Two loops on one thread: a sleep of the second does not count on a
/// timer the first left pending (the first never runs again), however
/// early that timer would fire.
fn sleeps_of_two_loops_on_one_thread(lp: &mut Loop) {
    let Some(mut other) = util::new_loop(lp.backend()) else {
        return;
    };
    let other_timer = LoopTimer::new(&other);
    block_on_within(&mut other, async move {
        let mut sleep = other_timer.sleep(Duration::from_millis(5));
        poll_pending(&mut sleep).await;
    });
    let timer = LoopTimer::new(lp);
    let waited = block_on_within(lp, async move {
        let start = Instant::now();
        timer.sleep(Duration::from_millis(50)).await;
        start.elapsed()
    });
    assert!(waited >= Duration::from_millis(50), "{waited:?}");
    drop(other);
}

/// Sleeps first polled by a task of their loop keep their wakers in a
/// table of the loop's thread; sent to another thread and dropped there,
/// one while the loop is still there (its post to give the slot back is
/// never run: the loop is dropped first) and one after the loop is gone
/// (no loop to post to), they cannot give their slots back. The loop's
/// drop frees the slots of its sleeps, and with them the wakers they
/// kept (before: both kept for the thread's lifetime).
fn sleeps_dropped_elsewhere_around_their_loops_drop(lp: &mut Loop) {
    let Some(mut other) = util::new_loop(lp.backend()) else {
        return;
    };
    let timer = LoopTimer::new(&other);
    let counted = Arc::new(Unpark(thread::current()));
    let waker = Waker::from(Arc::clone(&counted));
    let sleeps = block_on_within(&mut other, async move {
        let mut cx = Context::from_waker(&waker);
        let mut sleeps = [
            timer.sleep(Duration::from_secs(3600)),
            timer.sleep(Duration::from_secs(3600)),
        ];
        for sleep in &mut sleeps {
            assert!(sleep.as_mut().poll(&mut cx).is_pending());
        }
        sleeps
    });
    assert_eq!(Arc::strong_count(&counted), 3, "each slot keeps the waker");
    let [before, after] = sleeps;
    thread::spawn(move || drop(before)).join().unwrap();
    drop(other);
    thread::spawn(move || drop(after)).join().unwrap();
    assert_eq!(
        Arc::strong_count(&counted),
        1,
        "the slots still keep the sleeps' wakers"
    );
}

on_every_backend!(
    keep_alive,
    sleeps_dropped_elsewhere_around_their_loops_drop,
    successive_sleeps_share_one_loop_timer,
    a_sleep_taking_over_an_earlier_timer_waits_for_its_deadline,
    a_sleep_shorter_than_the_pending_timer_gets_its_own,
    reset_on_the_loop,
    a_sleep_polled_on_the_loop_then_on_another_thread,
    a_sleep_awaited_by_another_task,
    sleeps_of_two_loops_on_one_thread,
    chunked_body,
    slow_client,
    hyper_client,
    header_timeout,
    reset_while_answering,
    timer_from_another_thread
);

#[test]
#[ignore = "run in a child process by the sigterm tests below"]
fn child_http_server() {
    if !util::in_child() {
        return;
    }
    http_server::run("127.0.0.1:0").expect("the server ran and stopped");
}

/// The child, killed (if still there) and reaped when the test ends.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for a line of the child's containing `what`.
fn wait_for(rx: &mpsc::Receiver<String>, what: &str) -> String {
    loop {
        let line = rx
            .recv_timeout(STEP)
            .unwrap_or_else(|e| panic!("no {what:?} from the server ({e})"));
        if line.contains(what) {
            return line;
        }
    }
}

/// `examples/http_server.rs` (its `run`, in a child process) on SIGTERM
/// with requests in flight: one connection idle after an answer, one
/// halfway through a response (`/slow`: head and first part received),
/// one halfway through its request (an upload whose body the server has
/// asked for with `100 Continue`, the rest sent after the signal). The
/// server stops accepting, the idle connection ends, both requests in
/// flight are answered whole, each connection ends after its answer,
/// and the child exits with status 0.
fn sigterm_in_flight(backend: BackendKind) {
    if util::new_loop(backend).is_none() {
        return;
    }
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "child_http_server",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("EVENTIDE_TEST_CHILD", "1")
    .env("EVENTIDE_BACKEND", backend.to_string())
    .stdout(Stdio::piped());
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
    let line = wait_for(&rx, "serving http://");
    let at = line.find("serving http://").unwrap() + "serving http://".len();
    let addr: SocketAddr = line[at..].split(' ').next().unwrap().parse().unwrap();
    assert!(line.contains(&format!("({backend} backend)")), "{line}");

    let mut idle = Client::connect(addr);
    idle.send(GET);
    assert_hello(idle.response());

    let mut slow = Client::connect(addr);
    slow.send(b"GET /slow/300 HTTP/1.1\r\nHost: test\r\n\r\n");
    let (code, slow_headers) = slow.head();
    assert_eq!(code, 200);
    let mut first = [0u8; 12]; // "7\r\nHello, \r\n"
    slow.reader.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"7\r\nHello, \r\n");

    let mut upload = Client::connect(addr);
    upload.send(
        b"POST /echo HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    let (code, _) = upload.head();
    assert_eq!(code, 100, "the server asks for the body");

    // SAFETY: kill(2) with the child's id and a valid signal.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    wait_for(&rx, "no longer accepting");
    upload.send(b"5\r\nafter\r\n7\r\n signal\r\n0\r\n\r\n");

    // The idle connection ends at once, with nothing more.
    assert_eq!(idle.rest(), b"");
    // The response under way is finished, then the connection ends.
    let mut rest = slow.body(&slow_headers);
    rest.splice(0..0, b"Hello, ".iter().copied());
    assert_eq!(rest, b"Hello, World!");
    assert_eq!(slow.rest(), b"");
    // The upload is answered whole, then the connection ends.
    let (code, headers, body) = upload.response();
    assert_eq!((code, body.as_slice()), (200, &b"after signal"[..]));
    assert_eq!(header(&headers, "connection"), Some("close"));
    assert_eq!(upload.rest(), b"");
    // Nothing new is accepted.
    match TcpStream::connect(addr) {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionRefused),
        Ok(mut late) => {
            // Still in the closing listener's backlog (io_uring closes a
            // moment later): reset or ended, never answered.
            late.set_read_timeout(Some(STEP)).unwrap();
            let _ = late.write_all(GET);
            let mut got = Vec::new();
            let _ = late.read_to_end(&mut got);
            assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
        }
    }
    // The server is gone although these clients are still open: each
    // connection closed once hyper had closed it in order.
    wait_for(&rx, "server stopped");
    let status = child.0.wait().unwrap();
    assert!(
        status.success(),
        "{status:?} (signal {:?})",
        status.signal()
    );
    drop((idle, slow, upload));
}

#[test]
fn sigterm_on_uring() {
    sigterm_in_flight(BackendKind::Uring);
}

#[test]
fn sigterm_on_epoll() {
    sigterm_in_flight(BackendKind::Epoll);
}

#[test]
fn sigterm_on_poll() {
    sigterm_in_flight(BackendKind::Poll);
}
