//! W4-async (shared/bench/WORKLOADS.md, W4 written with async/await) on
//! tokio: a `current_thread` runtime, one TCP connection over 127.0.0.1
//! with both ends tasks of the one thread (a `LocalSet`, as eventide's
//! tasks are local); the client sends 64 bytes, the server echoes them,
//! the client sends again once all 64 came back; 5 s. Every echo is
//! checked byte for byte, and the server's byte count at the end.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use process_peers_tokio::{cpu_s, fail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MSG: usize = 64;
const RUN: Duration = Duration::from_secs(5);

async fn serve(mut s: TcpStream) -> u64 {
    let mut buf = [0u8; 4096];
    let mut total = 0u64;
    loop {
        let n = s
            .read(&mut buf)
            .await
            .unwrap_or_else(|e| fail("W4-async", format!("server read: {e}")));
        if n == 0 {
            return total;
        }
        total += n as u64;
        s.write_all(&buf[..n])
            .await
            .unwrap_or_else(|e| fail("W4-async", format!("server write: {e}")));
    }
}

async fn ping(mut s: TcpStream, stop: Rc<Cell<bool>>) -> (u64, Instant, Instant) {
    let mut sent = [0u8; MSG];
    for (i, byte) in sent.iter_mut().enumerate() {
        *byte = (i * 7 + 3) as u8;
    }
    let mut back = [0u8; MSG];
    let mut rounds = 0u64;
    let started = Instant::now();
    loop {
        sent[..8].copy_from_slice(&rounds.to_le_bytes());
        s.write_all(&sent)
            .await
            .unwrap_or_else(|e| fail("W4-async", format!("client write: {e}")));
        let mut got = 0;
        while got < MSG {
            let n = s
                .read(&mut back[got..])
                .await
                .unwrap_or_else(|e| fail("W4-async", format!("client read: {e}")));
            if n == 0 {
                fail("W4-async", "client: unexpected end of stream");
            }
            got += n;
        }
        if back != sent {
            fail(
                "W4-async",
                format!("round {rounds}: the echoed bytes differ from the sent bytes"),
            );
        }
        rounds += 1;
        if stop.get() {
            return (rounds, started, Instant::now());
        }
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    let c0 = cpu_s();
    let (rounds, wall, server_bytes) = local.block_on(&rt, async {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| fail("W4-async", e));
        let addr = listener.local_addr().unwrap();
        let server = tokio::task::spawn_local(async move {
            let (s, _) = listener
                .accept()
                .await
                .unwrap_or_else(|e| fail("W4-async", format!("accept: {e}")));
            s.set_nodelay(true).unwrap();
            serve(s).await
        });
        let stop = Rc::new(Cell::new(false));
        let client_stop = Rc::clone(&stop);
        let client = tokio::task::spawn_local(async move {
            let s = TcpStream::connect(addr)
                .await
                .unwrap_or_else(|e| fail("W4-async", format!("connect: {e}")));
            s.set_nodelay(true).unwrap();
            // A timer raises the stop flag, as eventide's loop timer does.
            let flag = Rc::clone(&client_stop);
            tokio::task::spawn_local(async move {
                tokio::time::sleep(RUN).await;
                flag.set(true);
            });
            ping(s, client_stop).await
        });
        let (rounds, started, ended) = client.await.unwrap();
        let server_bytes = server.await.unwrap();
        (rounds, ended.duration_since(started).as_secs_f64(), server_bytes)
    });
    let cpu = cpu_s() - c0;
    if rounds == 0 || wall <= 0.0 {
        fail("W4-async", "no round trip completed");
    }
    if server_bytes != rounds * MSG as u64 {
        fail(
            "W4-async",
            format!("the server got {server_bytes} bytes for {rounds} round trips of {MSG}"),
        );
    }
    println!(
        "RESULT workload=W4-async system=tokio metric=roundtrips_per_s value={:.1} n={rounds} wall_s={wall:.3} cpu_s={cpu:.3} msg={MSG}",
        rounds as f64 / wall
    );
}
