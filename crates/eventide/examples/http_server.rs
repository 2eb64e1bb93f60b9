//! An HTTP/1.1 server: hyper 1.x on the loop (the `hyper` feature). One
//! task accepts, one task per connection runs hyper's connection over a
//! [`HyperStream`], with keep-alive and hyper's header-read timeout on a
//! [`LoopTimer`].
//!
//!     cargo run --release -p eventide --all-features --example http_server -- 127.0.0.1:8080
//!     curl -i http://127.0.0.1:8080/
//!
//! Routes: `GET /` answers `Hello, World!`; `POST /echo` answers with the
//! request's body (chunked or not); `GET /slow/MS` answers `Hello, ` at once
//! and `World!` MS milliseconds later (a body awaiting a loop timer); anything else
//! is a 404.
//!
//! On SIGTERM or SIGINT it stops gracefully: it stops accepting, tells
//! every connection to finish (hyper's `graceful_shutdown`: an idle
//! keep-alive connection closes at once, one with a request in flight
//! answers it, then closes), and exits with status 0 once the last one is
//! done. A second signal ends it at once (the default action is back).
//! `EVENTIDE_BACKEND=poll` (or `epoll`, `uring`) picks the backend.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use eventide::Loop;
use eventide::hyper::{HyperStream, LoopTimer};
use eventide::net::{ListenOptions, TcpStream};
use eventide::signal::{Signal, SignalListener};
use eventide::task::{self, net, with_loop};
use futures_core::Stream as _;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    run(&addr)
}

/// The stop signal every task watches: set once, waking each watcher.
#[derive(Default)]
pub(crate) struct Stop {
    stopped: Cell<bool>,
    next: Cell<u64>,
    watchers: RefCell<HashMap<u64, Waker>>,
}

impl Stop {
    /// Stops: every watcher is woken.
    pub(crate) fn trigger(&self) {
        self.stopped.set(true);
        let watchers = std::mem::take(&mut *self.watchers.borrow_mut());
        for waker in watchers.into_values() {
            waker.wake();
        }
    }

    /// A new watcher's id.
    fn watcher(&self) -> u64 {
        let id = self.next.get();
        self.next.set(id + 1);
        id
    }

    /// Ready once stopped; otherwise `cx` is woken by the stop.
    fn poll_stopped(&self, id: u64, cx: &Context<'_>) -> Poll<()> {
        if self.stopped.get() {
            return Poll::Ready(());
        }
        let mut watchers = self.watchers.borrow_mut();
        match watchers.get(&id) {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => {
                watchers.insert(id, cx.waker().clone());
            }
        }
        Poll::Pending
    }

    fn forget(&self, id: u64) {
        self.watchers.borrow_mut().remove(&id);
    }
}

/// Serves on `addr` until SIGTERM or SIGINT, then stops gracefully.
pub(crate) fn run(addr: &str) -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = addr.parse()?;
    let mut lp = Loop::new()?;
    let incoming = net::tcp_listen(&mut lp, addr, ListenOptions::default())?;
    println!(
        "serving http://{} ({} backend)",
        incoming.local_addr().expect("a TCP address"),
        lp.backend()
    );
    let stop = Rc::new(Stop::default());
    // Signal listeners do not keep the loop alive; the listener and the
    // connections do.
    let signals: Rc<RefCell<Vec<SignalListener>>> = Rc::default();
    for signal in [Signal::TERM, Signal::INT] {
        let (stop, all) = (Rc::clone(&stop), Rc::clone(&signals));
        let listener = lp.on_signal(signal, move |lp, me| {
            // The default action is back for a second signal.
            for listener in all.borrow_mut().drain(..) {
                listener.remove(lp);
            }
            println!(
                "{}: no longer accepting, finishing open requests",
                me.signal()
            );
            stop.trigger();
        })?;
        signals.borrow_mut().push(listener);
    }
    let timer = LoopTimer::new(&lp);
    lp.block_on(accept(incoming, stop, timer))?;
    // The listener is closed; the connections finish their requests.
    lp.run()?;
    println!("server stopped");
    Ok(())
}

/// Accepts until stopped, a task per connection; the listener closes
/// when `incoming` is dropped, at the end.
pub(crate) async fn accept(
    mut incoming: net::Incoming<TcpStream>,
    stop: Rc<Stop>,
    timer: LoopTimer,
) {
    let me = stop.watcher();
    loop {
        let next = poll_fn(|cx| {
            if stop.poll_stopped(me, cx).is_ready() {
                return Poll::Ready(None);
            }
            Pin::new(&mut incoming).poll_next(cx)
        })
        .await;
        match next {
            None => break,
            Some(Ok(stream)) => {
                let (stop, timer) = (Rc::clone(&stop), timer.clone());
                with_loop(|lp| {
                    // Detached: the connection reports its own end.
                    drop(lp.spawn_local(connection(stream, stop, timer)));
                });
            }
            Some(Err(error)) => eprintln!("accept: {error}"),
        }
    }
    stop.forget(me);
}

/// One connection: hyper's HTTP/1.1, keep-alive, until the client leaves
/// or the server stops.
async fn connection(stream: TcpStream, stop: Rc<Stop>, timer: LoopTimer) {
    with_loop(|lp| stream.set_nodelay(lp, true)).ok();
    let conn = http1::Builder::new()
        .timer(timer)
        .keep_alive(true)
        .serve_connection(HyperStream::new(stream), service_fn(respond));
    let mut conn = pin!(conn);
    let me = stop.watcher();
    let mut stopping = false;
    // The waker given to `stop`, kept here so that a poll with the same
    // waker (every poll, with eventide's tasks) skips the map.
    let mut watching: Option<Waker> = None;
    let served = poll_fn(|cx| {
        if !stopping {
            if stop.stopped.get() {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            } else if !watching.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                let _ = stop.poll_stopped(me, cx);
                watching = Some(cx.waker().clone());
            }
        }
        conn.as_mut().poll(cx)
    })
    .await;
    stop.forget(me);
    if let Err(error) = served {
        eprintln!("connection: {error:?}");
    }
}

/// A response body: all of it at once, or (`GET /slow/MS`) a first
/// part at once and the rest after a loop timer, as two chunks.
pub(crate) enum Reply {
    /// The whole body, taken by the first frame.
    Full(Option<Bytes>),
    /// A part now, then `rest` once `sleep` is done.
    Slow {
        first: Option<Bytes>,
        sleep: task::Sleep,
        rest: Option<Bytes>,
    },
}

impl Body for Reply {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Reply::Full(body) => Poll::Ready(body.take().map(|b| Ok(Frame::data(b)))),
            Reply::Slow { first, sleep, rest } => {
                if let Some(first) = first.take() {
                    return Poll::Ready(Some(Ok(Frame::data(first))));
                }
                if rest.is_none() {
                    return Poll::Ready(None);
                }
                std::task::ready!(Pin::new(sleep).poll(cx));
                Poll::Ready(rest.take().map(|b| Ok(Frame::data(b))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Reply::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Reply::Full(body) => SizeHint::with_exact(body.as_ref().map_or(0, |b| b.len() as u64)),
            Reply::Slow { .. } => SizeHint::default(),
        }
    }
}

fn text(status: StatusCode, body: Reply) -> Response<Reply> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    response
}

fn full(body: impl Into<Bytes>) -> Reply {
    Reply::Full(Some(body.into()))
}

async fn respond(req: Request<Incoming>) -> Result<Response<Reply>, hyper::Error> {
    let path = req.uri().path();
    if req.method() == Method::GET && path == "/" {
        return Ok(text(StatusCode::OK, full("Hello, World!")));
    }
    if req.method() == Method::POST && path == "/echo" {
        let body = req.into_body().collect().await?.to_bytes();
        return Ok(text(StatusCode::OK, full(body)));
    }
    if req.method() == Method::GET
        && let Some(ms) = path.strip_prefix("/slow/")
        && let Ok(ms) = ms.parse::<u64>()
    {
        let body = Reply::Slow {
            first: Some(Bytes::from_static(b"Hello, ")),
            sleep: task::sleep(Duration::from_millis(ms.min(60_000))),
            rest: Some(Bytes::from_static(b"World!")),
        };
        return Ok(text(StatusCode::OK, body));
    }
    Ok(text(StatusCode::NOT_FOUND, full("Not Found")))
}
