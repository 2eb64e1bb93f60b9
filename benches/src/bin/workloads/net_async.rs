//! W4-async: W4's tcp-pingpong written with `async`/`await` on eventide's
//! executor (`Loop::spawn_local`, `task::net`), the same work as the
//! callback form in `net.rs` and as the tokio peer
//! (`benches/peers/tokio/src/bin/w4_pingpong.rs`).

use std::cell::Cell;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use eventide::net::ListenOptions;
use eventide::task::net::{self, AsyncStream};
use futures_io::{AsyncRead, AsyncWrite};

use crate::common::{Run, cpu_now, fixed, secs};

/// W4: bytes per message, run time, and the bound on the whole run.
const MSG: usize = 64;
const RUN: Duration = Duration::from_secs(5);
const WATCHDOG: Duration = Duration::from_secs(25);

async fn write_all(s: &mut AsyncStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let n = poll_fn(|cx| Pin::new(&mut *s).poll_write(cx, data)).await?;
        data = &data[n..];
    }
    Ok(())
}

async fn read(s: &mut AsyncStream, buf: &mut [u8]) -> io::Result<usize> {
    poll_fn(|cx| Pin::new(&mut *s).poll_read(cx, buf)).await
}

/// The server's side: echo every byte until the client's end; returns
/// the bytes echoed.
async fn serve(mut s: AsyncStream) -> Result<u64, String> {
    let mut buf = [0u8; 4096];
    let mut total = 0u64;
    loop {
        let n = read(&mut s, &mut buf)
            .await
            .map_err(|e| format!("server read: {e}"))?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
        write_all(&mut s, &buf[..n])
            .await
            .map_err(|e| format!("server write: {e}"))?;
    }
}

/// The client's side: send the message, read until all of it came back,
/// check it, count, again until `stop`. Returns the round trips and the
/// time of the first send and of the end of the last round trip.
async fn ping(mut s: AsyncStream, stop: Rc<Cell<bool>>) -> Result<(u64, Instant, Instant), String> {
    let mut sent = [0u8; MSG];
    for (i, byte) in sent.iter_mut().enumerate() {
        *byte = (i * 7 + 3) as u8;
    }
    let mut back = [0u8; MSG];
    let mut rounds = 0u64;
    let started = Instant::now();
    loop {
        sent[..8].copy_from_slice(&rounds.to_le_bytes());
        write_all(&mut s, &sent)
            .await
            .map_err(|e| format!("client write: {e}"))?;
        let mut got = 0;
        while got < MSG {
            let n = read(&mut s, &mut back[got..])
                .await
                .map_err(|e| format!("client read: {e}"))?;
            if n == 0 {
                return Err("client: unexpected end of stream".to_owned());
            }
            got += n;
        }
        if back != sent {
            return Err(format!(
                "round {rounds}: the echoed bytes differ from the sent bytes"
            ));
        }
        rounds += 1;
        if stop.get() {
            return Ok((rounds, started, Instant::now()));
        }
    }
}

/// W4-async: one connection over 127.0.0.1, both ends tasks on this loop;
/// 64 bytes there and back, the next message once all 64 came back, for
/// 5 s (a loop timer raises the stop flag, as in the callback form).
/// Round trips per second from the first send to the end of the last
/// round trip; every echo checked byte for byte, and the server's count.
pub(crate) fn w4_async_pingpong(run: &mut Run) {
    let c0 = cpu_now();
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut incoming = match net::tcp_listen(&mut run.lp, any, ListenOptions::default()) {
        Ok(incoming) => incoming,
        Err(error) => run.fail(error),
    };
    let Some(addr) = incoming.local_addr() else {
        run.fail("the listener has no address");
    };
    let stop = Rc::new(Cell::new(false));
    let server = run.lp.spawn_local(async move {
        let stream = incoming
            .accept()
            .await
            .map_err(|e| format!("accept: {e}"))?;
        // The one connection: no other is accepted (the listener closes).
        drop(incoming);
        eventide::task::with_loop(|lp| stream.set_nodelay(lp, true))
            .map_err(|e| format!("server nodelay: {e}"))?;
        serve(AsyncStream::new(stream)).await
    });
    let client_stop = Rc::clone(&stop);
    let client = run.lp.spawn_local(async move {
        let stream = net::tcp_connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        eventide::task::with_loop(|lp| stream.set_nodelay(lp, true))
            .map_err(|e| format!("client nodelay: {e}"))?;
        let stop_flag = Rc::clone(&client_stop);
        eventide::task::with_loop(|lp| lp.set_timeout(RUN, move |_| stop_flag.set(true)));
        // Dropping the stream at the end ends it: the server reads 0.
        ping(AsyncStream::new(stream), client_stop).await
    });
    let watchdog = run.lp.set_timeout(WATCHDOG, move |lp| {
        lp.fail(io::Error::other(format!("not done within {WATCHDOG:?}")));
    });
    run.lp.unref_timer(watchdog);
    let outcome = run.lp.block_on(async move {
        let client = client.await;
        let server = server.await;
        (client, server)
    });
    run.lp.clear_timer(watchdog);
    let cpu = cpu_now() - c0;
    let (client, server) = match outcome {
        Ok(both) => both,
        Err(error) => run.fail(format!("the loop failed: {error}")),
    };
    let (rounds, started, ended) = match client {
        Ok(Ok(done)) => done,
        Ok(Err(why)) => run.fail(why),
        Err(error) => run.fail(format!("the client task: {error}")),
    };
    let server_bytes = match server {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(why)) => run.fail(why),
        Err(error) => run.fail(format!("the server task: {error}")),
    };
    let wall = secs(started, ended);
    if rounds == 0 || wall <= 0.0 {
        run.fail("no round trip completed");
    }
    if server_bytes != rounds * MSG as u64 {
        run.fail(format!(
            "the server got {server_bytes} bytes for {rounds} round trips of {MSG}"
        ));
    }
    run.result(
        "roundtrips_per_s",
        fixed(rounds as f64 / wall, 1),
        &[
            ("n", rounds.to_string()),
            ("wall_s", fixed(wall, 3)),
            ("cpu_s", fixed(cpu, 3)),
            ("msg", MSG.to_string()),
        ],
    );
}
