//! The async write path of [`AsyncStream`] and (with the `hyper` feature)
//! [`HyperStream`], on every backend: a write goes to the kernel at once
//! ([`Stream::try_write`]) and only what the kernel does not take is
//! queued. Here the peer reads nothing until the writer has seen bytes
//! queued, so writes are cut short by a full socket buffer (a partial
//! send, then `EAGAIN` while the queue drains); every byte must still
//! arrive once, in order, and the end after them.

mod util;

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use eventide::Loop;
use eventide::net::{ListenOptions, Stream, TcpStream};
use eventide::task::net::{self, AsyncStream};
use eventide::task::with_loop;
use futures_io::AsyncWrite;

const LOCAL: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// The byte at offset `at` of the stream written.
fn pattern(at: u64) -> u8 {
    (at % 251) as u8
}

/// Past this much written without a byte queued, the test fails (the
/// kernel took everything: the queue was never exercised).
const LIMIT: u64 = 256 * 1024 * 1024;

/// Written on after the first queued byte was seen: writes that meet the
/// queue (refused by `try_write`, queued whole) and the drain's waits.
const AFTER_QUEUED: u64 = 4 * 1024 * 1024;

/// What the peer saw.
#[derive(Default)]
struct Received {
    bytes: u64,
    /// The offset of the first byte that was not the pattern's.
    first_wrong: Option<u64>,
    ended: bool,
    error: Option<String>,
}

/// Starts reading `peer` into `received`, checking each byte.
fn read_peer(lp: &mut Loop, peer: Stream, received: &Rc<RefCell<Received>>) {
    let on_data = Rc::clone(received);
    let on_end = Rc::clone(received);
    peer.read_start(
        lp,
        move |_, _, chunk| {
            let mut r = on_data.borrow_mut();
            if r.first_wrong.is_none() {
                for (i, &byte) in chunk.iter().enumerate() {
                    let at = r.bytes + i as u64;
                    if byte != pattern(at) {
                        r.first_wrong = Some(at);
                        break;
                    }
                }
            }
            r.bytes += chunk.len() as u64;
        },
        move |lp, s, result| {
            let mut r = on_end.borrow_mut();
            r.ended = true;
            if let Err(error) = result {
                r.error = Some(error.to_string());
            }
            s.close(lp);
        },
    );
}

/// A connected pair on `lp`: the accepted side (the writer's) and the
/// connecting side (the peer, not reading yet).
async fn pair() -> (TcpStream, TcpStream) {
    let mut incoming =
        with_loop(|lp| net::tcp_listen(lp, LOCAL, ListenOptions::default())).expect("listen");
    let addr = incoming.local_addr().expect("a TCP address");
    let peer = net::tcp_connect(addr).await.expect("connect");
    let mine = incoming.accept().await.expect("accept");
    (mine, peer)
}

/// Writes the pattern through `write` in chunks of varying sizes until
/// `stream` has had bytes queued, then starts `peer` reading and writes
/// [`AFTER_QUEUED`] more; returns the bytes written.
async fn write_pattern<W>(
    stream: Stream,
    peer: Stream,
    received: &Rc<RefCell<Received>>,
    mut write: W,
) -> io::Result<u64>
where
    W: FnMut(&mut Context<'_>, &[u8]) -> Poll<io::Result<usize>>,
{
    let mut written = 0u64;
    let mut queued_at: Option<u64> = None;
    let mut chunk = Vec::new();
    for k in 0u64.. {
        if queued_at.is_some_and(|at| written >= at + AFTER_QUEUED) {
            break;
        }
        assert!(written < LIMIT, "{written} bytes written, none ever queued");
        // Sizes from 1 byte to 1 MiB: a large one fills the socket's
        // buffer midway (the kernel takes part of it), and short sends
        // stop at odd offsets.
        let size = 1 + (k * 104_729 % 1_048_573) as usize;
        chunk.clear();
        chunk.extend((0..size as u64).map(|i| pattern(written + i)));
        let mut data = &chunk[..];
        while !data.is_empty() {
            let n = poll_fn(|cx| write(cx, data)).await?;
            assert!(n > 0 && n <= data.len(), "{n} of {}", data.len());
            data = &data[n..];
            written += n as u64;
        }
        if queued_at.is_none() && with_loop(|lp| stream.write_queue_size(lp)) > 0 {
            queued_at = Some(written);
            // Only now does the peer read: the queue drains from here.
            with_loop(|lp| read_peer(lp, peer, received));
        }
    }
    Ok(written)
}

/// Runs `f` on `lp` with a watchdog, to completion.
fn run<T: 'static>(lp: &mut Loop, f: impl Future<Output = T> + 'static) -> T {
    let watchdog = lp.set_timeout(Duration::from_secs(60), |_| {
        panic!("the test was still running after its time limit")
    });
    lp.unref_timer(watchdog);
    let out = lp.block_on(f).expect("block_on");
    lp.clear_timer(watchdog);
    out
}

/// Runs the loop until the peer has seen the end (it closes its side
/// then, the last handle), then checks every byte.
fn check_received(lp: &mut Loop, written: u64, received: &Rc<RefCell<Received>>) {
    let watchdog = lp.set_timeout(Duration::from_secs(60), |_| {
        panic!("the peer never saw the end")
    });
    lp.unref_timer(watchdog);
    lp.run().expect("run");
    assert!(
        received.borrow().ended,
        "the loop ended before the peer's end"
    );
    lp.clear_timer(watchdog);
    let r = received.borrow();
    assert_eq!(r.error, None);
    assert_eq!(r.first_wrong, None, "a byte out of place");
    assert_eq!(r.bytes, written, "bytes received");
}

fn async_stream_queues_what_the_kernel_refuses(lp: &mut Loop) {
    let received = Rc::new(RefCell::new(Received::default()));
    let into = Rc::clone(&received);
    let written = run(lp, async move {
        let (mine, peer) = pair().await;
        let mut s = AsyncStream::new(mine);
        let stream = s.stream();
        let written = write_pattern(stream, peer.stream(), &into, |cx, data| {
            Pin::new(&mut s).poll_write(cx, data)
        })
        .await
        .expect("write");
        poll_fn(|cx| Pin::new(&mut s).poll_flush(cx))
            .await
            .expect("flush");
        assert_eq!(with_loop(|lp| stream.write_queue_size(lp)), 0);
        poll_fn(|cx| Pin::new(&mut s).poll_close(cx))
            .await
            .expect("close");
        written
    });
    check_received(lp, written, &received);
}

#[cfg(feature = "hyper")]
fn hyper_stream_queues_what_the_kernel_refuses(lp: &mut Loop) {
    use eventide::hyper::HyperStream;
    use hyper::rt::Write;

    let received = Rc::new(RefCell::new(Received::default()));
    let into = Rc::clone(&received);
    let written = run(lp, async move {
        let (mine, peer) = pair().await;
        let mut s = HyperStream::new(mine);
        let stream = s.stream();
        let written = write_pattern(stream, peer.stream(), &into, |cx, data| {
            Pin::new(&mut s).poll_write(cx, data)
        })
        .await
        .expect("write");
        poll_fn(|cx| Pin::new(&mut s).poll_shutdown(cx))
            .await
            .expect("shutdown");
        assert_eq!(with_loop(|lp| stream.write_queue_size(lp)), 0);
        written
    });
    check_received(lp, written, &received);
}

on_every_backend!(async_stream_queues_what_the_kernel_refuses);

#[cfg(feature = "hyper")]
mod hyper_stream {
    use super::*;
    on_every_backend!(hyper_stream_queues_what_the_kernel_refuses);
}
