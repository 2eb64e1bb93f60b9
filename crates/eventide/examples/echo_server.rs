//! A TCP echo server: every byte a client sends comes back.
//!
//!     cargo run --release --example echo_server -- 127.0.0.1:7000
//!     EVENTIDE_BACKEND=poll cargo run --release --example echo_server
//!
//! Try it with `cargo run --example echo_client -- 127.0.0.1:7000`.

use std::net::SocketAddr;

use eventide::Loop;
use eventide::net::ListenOptions;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7000".into())
        .parse()?;
    let mut lp = Loop::new()?;
    let server = lp.tcp_listen(addr, ListenOptions::default(), |lp, accepted| {
        let stream = match accepted {
            Ok(stream) => stream,
            Err(error) => return eprintln!("accept failed: {error}"),
        };
        if let Ok(peer) = stream.peer_addr(lp) {
            println!("{peer} connected");
        }
        stream.read_start(
            lp,
            |lp, stream, data| {
                stream.write(lp, data.to_vec(), |_, res| {
                    if let Err(error) = res {
                        eprintln!("write failed: {error}");
                    }
                });
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
    })?;
    println!(
        "echoing on {} ({} backend)",
        server.local_addr(&lp)?,
        lp.backend()
    );
    lp.run()?;
    Ok(())
}
