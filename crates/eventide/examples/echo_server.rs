//! An echo server: every byte a client sends comes back. It listens on a
//! TCP address, or on a Unix domain socket when given a path; it respects
//! backpressure (a client that does not read its echoes is not read
//! either until they drain), ends a connection gracefully when its client
//! ends (every echo still goes out) and closes connections idle for a
//! minute. On SIGINT (Ctrl-C) or SIGTERM it stops gracefully: it stops
//! accepting, ends every connection once its queued echoes are out, and
//! exits with status 0 when the last one has closed; a second signal
//! ends it at once, as a Node server's does.
//!
//!     cargo run --release --example echo_server -- 127.0.0.1:7000
//!     cargo run --release --example echo_server -- /tmp/echo.sock
//!     EVENTIDE_BACKEND=poll cargo run --release --example echo_server
//!
//! Try it with `cargo run --example echo_client -- 127.0.0.1:7000` (or
//! `localhost:7000`, or `/tmp/echo.sock`).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use eventide::net::{ListenOptions, Listener, Stream};
use eventide::signal::{Signal, SignalListener};
use eventide::{Loop, Result};

/// What the graceful stop needs, on the loop: the listener, the open
/// connections, and the signal listeners.
#[derive(Default)]
pub(crate) struct Server {
    listener: Option<Listener>,
    open: HashSet<Stream>,
    signals: Vec<SignalListener>,
}

/// What both kinds of listener do with each connection (a `TcpStream` or
/// a `UnixStream`, served as the `Stream` both convert into).
fn on_connection<S: Into<Stream>>(lp: &mut Loop, accepted: Result<S>) {
    match accepted {
        Ok(stream) => serve(lp, stream),
        Err(error) => eprintln!("accept failed: {error}"),
    }
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let place = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7000".into());
    run(&place)
}

/// The server on `place` (an address, or a path), until it is stopped.
pub(crate) fn run(place: &str) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let mut lp = Loop::new()?;
    let listener: Listener = if place.contains('/') {
        let server = lp.unix_listen(place, ListenOptions::default(), |lp, accepted| {
            if accepted.is_ok() {
                println!("a client connected");
            }
            on_connection(lp, accepted);
        })?;
        println!("echoing on {place} ({} backend)", lp.backend());
        server.into()
    } else {
        let addr: SocketAddr = place.parse()?;
        let server = lp.tcp_listen(addr, ListenOptions::default(), |lp, accepted| {
            if let Ok(peer) = accepted.as_ref().map(|s| s.peer_addr(lp)) {
                println!(
                    "{} connected",
                    peer.map_or("a client".into(), |p| p.to_string())
                );
            }
            on_connection(lp, accepted);
        })?;
        let addr = server.local_addr(&lp)?;
        println!("echoing on {addr} ({} backend)", lp.backend());
        server.into()
    };
    let mut server = Server {
        listener: Some(listener),
        ..Server::default()
    };
    // Signal listeners do not keep the loop alive (as in Node): the
    // listener and the connections do.
    for signal in [Signal::INT, Signal::TERM] {
        server.signals.push(lp.on_signal(signal, stop)?);
    }
    lp.insert_state(server);
    lp.run()?;
    Ok(())
}

/// The graceful stop, at the first SIGINT or SIGTERM: no more accepting;
/// every connection ends once the echoes already queued are out (what
/// its client sends from now on is read and dropped); `run` returns when
/// the last one has closed. The signal listeners go first, so that the
/// signals' default action is back: a second Ctrl-C ends the process at
/// once.
fn stop(lp: &mut Loop, me: SignalListener) {
    let Some(server) = lp.state_mut::<Server>() else {
        return;
    };
    let signals = std::mem::take(&mut server.signals);
    let listener = server.listener.take();
    let open: Vec<Stream> = server.open.iter().copied().collect();
    for signal in signals {
        signal.remove(lp);
    }
    if let Some(listener) = listener {
        listener.close(lp);
    }
    println!(
        "{}: no longer accepting, ending {} connection(s)",
        me.signal(),
        open.len()
    );
    for stream in open {
        // A reader that drops what comes (it replaces the echo of
        // `pipe`), so that nothing more is queued after the end.
        stream.read_start(lp, |_, _, _| {}, |_, _, _| {});
        stream.end(lp);
    }
}

/// Echoes one connection. (`tests/fault_echo.rs` drives this function,
/// the example's own code, with faults.)
pub(crate) fn serve(lp: &mut Loop, stream: impl Into<Stream>) {
    let stream = stream.into();
    stream.set_idle_timeout(lp, Duration::from_secs(60), |lp, stream| {
        println!("a client was idle for a minute: closing it");
        stream.close(lp);
    });
    // One place for the end of the connection, however it ends (Node's
    // `'close'` event): the client ended and got all its echoes, or an
    // error (a reset, say) destroyed the stream.
    if let Some(server) = lp.state_mut::<Server>() {
        server.open.insert(stream);
    }
    stream.on_close(lp, |lp, stream, had_error| {
        if let Some(server) = lp.state_mut::<Server>() {
            server.open.remove(&stream);
        }
        if had_error {
            println!("a client failed");
        } else {
            println!("a client left");
        }
    });
    // Every byte back (Node's `socket.pipe(socket)`): reading pauses while
    // the echoes the client has not read are above the high-water mark,
    // and resumes once they drained. At the client's end (it half-closes,
    // say), the echoes still queued go out, then the FIN, then the
    // connection closes: nothing is cut short.
    //
    // By hand, that is: `read_start` with `if !stream.write(..) {
    // stream.read_stop(lp) }`, `on_drain` calling `read_start` again, and
    // nothing to do at the end (streams end themselves once their peer
    // has, unless `set_allow_half_open(true)`; never `close` there, which
    // drops the queued echoes).
    stream.pipe(lp, stream);
}
