//! A TCP echo server written with async/await on the loop: one task
//! accepts (the listener as a stream of connections), one task per
//! connection copies what it reads back through `futures-io`'s
//! `AsyncRead`/`AsyncWrite`, each `await` resuming from the loop's
//! microtask queue as a Node `async` function would.
//!
//!     cargo run --release --example async_echo -- 127.0.0.1:7001
//!     cargo run --release --example echo_client -- 127.0.0.1:7001
//!
//! With `--once` it serves one connection and exits (how it is tested).

use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;

use eventide::Loop;
use eventide::net::ListenOptions;
use eventide::task::{net, with_loop};
use futures_io::{AsyncRead, AsyncWrite};

/// Copies `stream`'s bytes back to it until the peer ends, then ends too.
async fn echo(stream: eventide::net::TcpStream) -> std::io::Result<u64> {
    let mut s = net::AsyncStream::new(stream);
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0u64;
    loop {
        let n = poll_fn(|cx| Pin::new(&mut s).poll_read(cx, &mut buf)).await?;
        if n == 0 {
            break;
        }
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            // Waits for the write queue's drain once it is full: a slow
            // reader slows this writer down (backpressure).
            let written = poll_fn(|cx| Pin::new(&mut s).poll_write(cx, rest)).await?;
            rest = &rest[written..];
        }
        total += n as u64;
    }
    poll_fn(|cx| Pin::new(&mut s).poll_close(cx)).await?;
    Ok(total)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:7001").parse()?;
    let once = args.next().as_deref() == Some("--once");
    let mut lp = Loop::new()?;
    let mut incoming = net::tcp_listen(&mut lp, addr, ListenOptions::default())?;
    println!(
        "async echo on {} ({})",
        incoming.local_addr().expect("a TCP address"),
        lp.backend()
    );
    lp.block_on(async move {
        loop {
            let stream = match incoming.accept().await {
                Ok(stream) => stream,
                Err(error) => {
                    eprintln!("accept: {error}");
                    continue;
                }
            };
            let connection = with_loop(|lp| lp.spawn_local(echo(stream)));
            if once {
                // Wait for this one, then the listener closes (dropped).
                let echoed = connection.await;
                println!("echoed {} bytes", echoed??);
                return Ok::<(), Box<dyn std::error::Error>>(());
            }
            // Detached: the task runs on; its result is reported by itself.
            with_loop(|lp| {
                connection.on_done(lp, |_, result| match result {
                    Ok(Ok(bytes)) => println!("connection done, {bytes} bytes echoed"),
                    Ok(Err(error)) => eprintln!("connection failed: {error}"),
                    Err(error) => eprintln!("connection task: {error}"),
                });
            });
        }
    })??;
    Ok(())
}
