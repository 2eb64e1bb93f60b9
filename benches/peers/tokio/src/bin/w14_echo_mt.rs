//! W14 (shared/bench/WORKLOADS.md) on tokio: W5's echo server on a
//! `multi_thread` runtime with 2 workers (or WORKERS): one listener on
//! 127.0.0.1:PORT (backlog 511, as the other servers), one task per
//! connection, spawned onto the work-stealing scheduler; each task owns a
//! 4 KiB buffer, awaits `read`, then `write_all`s the bytes back (the
//! anchors' W5 tokio server, `buf` mode, on the multi-threaded runtime).
//! Every accepted socket gets TCP_NODELAY. Exits by itself after MAX_SECS
//! (SIGTERM ends it at once). The load generator measures it.
//!
//! usage: w14_echo_mt PORT [MAX_SECS] [WORKERS]

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

const BUF: usize = 4096;

async fn serve(mut s: TcpStream) {
    let mut buf = vec![0u8; BUF];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if s.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn listen(port: u16) -> std::io::Result<TcpListener> {
    // TcpListener::bind would listen with a backlog of 128.
    let sock = TcpSocket::new_v4()?;
    sock.set_reuseaddr(true)?;
    sock.bind(std::net::SocketAddr::from(([127, 0, 0, 1], port)))?;
    sock.listen(511)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = || -> ! {
        eprintln!("usage: w14_echo_mt PORT [MAX_SECS] [WORKERS]");
        std::process::exit(64);
    };
    let Some(Ok(port)) = args.get(1).map(|p| p.parse::<u16>()) else {
        usage()
    };
    let max_secs: f64 = match args.get(2).map(|s| s.parse()) {
        None => 60.0,
        Some(Ok(s)) => s,
        Some(Err(_)) => usage(),
    };
    let workers: usize = match args.get(3).map(|s| s.parse()) {
        None => 2,
        Some(Ok(n)) if n >= 1 => n,
        Some(_) => usage(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = match listen(port) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("tokio w14_echo_mt: bind/listen: {e}");
                std::process::exit(1);
            }
        };
        eprintln!(
            "tokio w14_echo_mt: listening on 127.0.0.1:{port}, multi_thread with {workers} workers"
        );
        let accept_loop = async {
            loop {
                match listener.accept().await {
                    Ok((s, _)) => {
                        let _ = s.set_nodelay(true);
                        tokio::spawn(serve(s));
                    }
                    Err(e) => eprintln!("tokio w14_echo_mt: accept: {e}"),
                }
            }
        };
        tokio::select! {
            _ = accept_loop => {}
            _ = tokio::time::sleep(Duration::from_secs_f64(max_secs)) => {
                eprintln!("tokio w14_echo_mt: lifetime over, exiting");
            }
        }
    });
    std::process::exit(0);
}
