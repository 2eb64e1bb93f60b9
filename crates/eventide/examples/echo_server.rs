//! An echo server: every byte a client sends comes back. It listens on a
//! TCP address, or on a Unix domain socket when given a path; it respects
//! backpressure (a client that does not read its echoes is not read
//! either until they drain) and closes connections idle for a minute.
//!
//!     cargo run --release --example echo_server -- 127.0.0.1:7000
//!     cargo run --release --example echo_server -- /tmp/echo.sock
//!     EVENTIDE_BACKEND=poll cargo run --release --example echo_server
//!
//! Try it with `cargo run --example echo_client -- 127.0.0.1:7000` (or
//! `localhost:7000`, or `/tmp/echo.sock`).

use std::net::SocketAddr;
use std::time::Duration;

use eventide::net::{ListenOptions, Stream};
use eventide::{Loop, Result};

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let place = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7000".into());
    let mut lp = Loop::new()?;
    let on_connection = |lp: &mut Loop, accepted: Result<Stream>| match accepted {
        Ok(stream) => serve(lp, stream),
        Err(error) => eprintln!("accept failed: {error}"),
    };
    if place.contains('/') {
        lp.unix_listen(&place, ListenOptions::default(), on_connection)?;
        println!("echoing on {place} ({} backend)", lp.backend());
    } else {
        let addr: SocketAddr = place.parse()?;
        let server = lp.tcp_listen(addr, ListenOptions::default(), on_connection)?;
        let addr = server.local_addr(&lp)?;
        println!("echoing on {addr} ({} backend)", lp.backend());
    }
    lp.run()?;
    Ok(())
}

/// Echoes one connection.
fn serve(lp: &mut Loop, stream: Stream) {
    if let Ok(peer) = stream.peer_addr(lp) {
        println!("{peer} connected");
    } else {
        println!("a client connected");
    }
    stream.set_timeout(lp, Duration::from_secs(60), |lp, stream| {
        println!("a client was idle for a minute: closing it");
        stream.close(lp);
    });
    // Once the echoes the client has not read drained, read again.
    stream.on_drain(lp, read_and_echo);
    read_and_echo(lp, stream);
}

fn read_and_echo(lp: &mut Loop, stream: Stream) {
    stream.read_start(
        lp,
        |lp, stream, data| {
            let below_mark = stream.write(lp, data.to_vec(), |_, res| {
                if let Err(error) = res {
                    eprintln!("write failed: {error}");
                }
            });
            if !below_mark {
                // Backpressure (Node's `if (!socket.write(data))
                // socket.pause()`): the client is not keeping up with its
                // echoes.
                stream.read_stop(lp);
            }
        },
        |lp, stream, end| {
            match end {
                Ok(()) => println!("a client left"),
                Err(error) => println!("a client failed: {error}"),
            }
            // After an error the stream is already closed: this is a no-op.
            stream.close(lp);
        },
    );
}
