//! W13's tokio peer: hyper 1.x serving HTTP/1.1 on tokio's
//! `current_thread` runtime, configured as examples/http_server.rs is on
//! eventide (keep-alive, a timer for hyper's header-read timeout, nodelay,
//! `GET /` answering `Hello, World!` as text/plain, else 404). A
//! connection is a `spawn_local` task on a `LocalSet`, as eventide's are
//! local tasks. Exits on SIGTERM.
//!
//!     w13-http-tokio 127.0.0.1:PORT

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    response
}

async fn respond(
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    if req.method() == Method::GET && req.uri().path() == "/" {
        return Ok(text(StatusCode::OK, "Hello, World!"));
    }
    Ok(text(StatusCode::NOT_FOUND, "Not Found"))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into())
        .parse()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = TcpListener::bind(addr).await?;
        println!("serving http://{} (tokio current_thread)", listener.local_addr()?);
        let mut term = signal(SignalKind::terminate())?;
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, _) = match accepted {
                        Ok(pair) => pair,
                        Err(error) => { eprintln!("accept: {error}"); continue; }
                    };
                    stream.set_nodelay(true).ok();
                    tokio::task::spawn_local(async move {
                        let served = http1::Builder::new()
                            .timer(TokioTimer::new())
                            .keep_alive(true)
                            .serve_connection(TokioIo::new(stream), service_fn(respond))
                            .await;
                        if let Err(error) = served {
                            eprintln!("connection: {error}");
                        }
                    });
                }
                _ = term.recv() => break,
            }
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}
