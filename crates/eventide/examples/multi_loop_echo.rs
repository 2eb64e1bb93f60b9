//! An echo server on every core: one event loop per thread, one thread per
//! core, and each loop with a listener of its own on the same address
//! (`SO_REUSEPORT`, `ListenOptions::reuse_port`), so that the kernel
//! spreads the incoming connections over the loops. The loops share
//! nothing: each accepts, reads and writes its own connections, as
//! several single-threaded Node processes behind one port would (without
//! Node cluster's primary handing the connections out).
//!
//!     cargo run --release --example multi_loop_echo                     # one loop per core, 127.0.0.1:7000
//!     cargo run --release --example multi_loop_echo -- 127.0.0.1:7000 4 # 4 loops
//!     EVENTIDE_BACKEND=epoll cargo run --release --example multi_loop_echo
//!
//! The first argument is the address (default 127.0.0.1:7000; port 0 picks
//! a free one, which every loop then shares), the second the number of
//! loops (default: `std::thread::available_parallelism`). Every accepted
//! connection gets TCP_NODELAY and its bytes back through `Stream::pipe`
//! (with backpressure: reading pauses while the client does not take its
//! echoes). On SIGINT (Ctrl-C) or SIGTERM every loop hears the signal and
//! stops gracefully, as `examples/echo_server.rs` does: it closes its
//! listener, ends each of its connections once its queued echoes are out,
//! and its thread returns when the last one has closed; the process
//! prints how many connections each loop served and exits with 0. A second
//! signal ends it at once. Try it with `cargo run --example echo_client --
//! 127.0.0.1:7000`, or the W14 benchmark (`benches/run-scaling.sh`).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::mpsc;
use std::thread;

use eventide::Loop;
use eventide::net::{ListenOptions, Stream, TcpListener, TcpStream};
use eventide::signal::{Signal, SignalListener};

/// Errors of the example's own setup (an address that does not parse, a
/// port in use, a thread that cannot start).
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One loop's server, in the loop's state: its listener, its open
/// connections, its signal listeners, and how many it accepted.
#[derive(Default)]
pub(crate) struct LoopServer {
    listener: Option<TcpListener>,
    open: HashSet<Stream>,
    signals: Vec<SignalListener>,
    served: u64,
}

fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:7000".into());
    let loops = match args.next() {
        Some(n) => n
            .parse::<NonZeroUsize>()
            .map_err(|e| format!("bad loop count '{n}': {e}"))?,
        None => thread::available_parallelism().unwrap_or(NonZeroUsize::MIN),
    };
    let served = run(&addr, loops.get())?;
    println!("stopped: {served} connection(s) served in all");
    Ok(())
}

/// The server on `addr` with `loops` loops, until a signal stops it;
/// returns the number of connections served, in all. A loop that cannot
/// be built or cannot listen is an error returned at once (the loops
/// already listening are left to the process's exit, which `main` is).
pub(crate) fn run(addr: &str, loops: usize) -> Result<u64, BoxError> {
    let addr: SocketAddr = addr.parse()?;
    // Loop 0, on this thread, listens first: with port 0 the kernel picks
    // the port, and the other loops join that one.
    let mut first = Loop::new()?;
    let addr = listen(&mut first, addr)?;
    // Each other loop is built on its own thread (a loop stays on the
    // thread that made it) and says whether it could listen.
    let mut others = Vec::new();
    for i in 1..loops {
        let (tx, rx) = mpsc::channel();
        let thread = thread::Builder::new().name(format!("loop-{i}")).spawn(
            move || -> Result<u64, String> {
                let mut lp = match Loop::new().map_err(|e| e.to_string()) {
                    Ok(lp) => lp,
                    Err(e) => {
                        let _ = tx.send(Err(e.clone()));
                        return Err(e);
                    }
                };
                match listen(&mut lp, addr) {
                    Ok(_) => {
                        let _ = tx.send(Ok(()));
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return Err(e.to_string());
                    }
                }
                serve(&mut lp).map_err(|e| e.to_string())
            },
        )?;
        match rx.recv() {
            Ok(Ok(())) => others.push(thread),
            Ok(Err(e)) => return Err(format!("loop {i}: {e}").into()),
            Err(_) => return Err(format!("loop {i} ended before listening").into()),
        }
    }
    println!(
        "echoing on {addr} with {loops} loop(s) ({} backend)",
        first.backend()
    );
    let mut served = serve(&mut first)?;
    println!("loop 0: stopped after {served} connection(s)");
    for (i, thread) in others.into_iter().enumerate() {
        let n = thread
            .join()
            .map_err(|_| format!("loop {} panicked", i + 1))??;
        println!("loop {}: stopped after {n} connection(s)", i + 1);
        served += n;
    }
    Ok(served)
}

/// Listens on `addr` with `SO_REUSEPORT`, and on SIGINT and SIGTERM;
/// returns the address bound (the port the kernel picked for port 0).
fn listen(lp: &mut Loop, addr: SocketAddr) -> eventide::Result<SocketAddr> {
    let options = ListenOptions::default().reuse_port(true);
    let listener = lp.tcp_listen(addr, options, |lp, accepted| match accepted {
        Ok(stream) => echo(lp, stream),
        Err(error) => eprintln!("accept failed: {error}"),
    })?;
    let bound = listener.local_addr(lp)?;
    let mut server = LoopServer {
        listener: Some(listener),
        ..LoopServer::default()
    };
    // Signal listeners do not keep the loop alive (as in Node); every
    // loop's listeners hear every delivery.
    for signal in [Signal::INT, Signal::TERM] {
        server.signals.push(lp.on_signal(signal, stop)?);
    }
    lp.insert_state(server);
    Ok(bound)
}

/// Runs the loop until its listener and connections are gone; returns how
/// many connections it served.
fn serve(lp: &mut Loop) -> eventide::Result<u64> {
    lp.run()?;
    Ok(lp.state_mut::<LoopServer>().map_or(0, |s| s.served))
}

/// Echoes one connection (`Stream::pipe` into itself), and keeps it in the
/// set the graceful stop ends.
fn echo(lp: &mut Loop, stream: TcpStream) {
    // A failure here leaves Nagle on: slower, still correct.
    let _ = stream.set_nodelay(lp, true);
    let stream = Stream::from(stream);
    if let Some(server) = lp.state_mut::<LoopServer>() {
        server.open.insert(stream);
        server.served += 1;
    }
    stream.on_close(lp, |lp, stream, _had_error| {
        if let Some(server) = lp.state_mut::<LoopServer>() {
            server.open.remove(&stream);
        }
    });
    stream.pipe(lp, stream);
}

/// This loop's graceful stop, at the first SIGINT or SIGTERM (each loop
/// runs its own): no more accepting; every connection ends once the
/// echoes already queued are out; `run` returns when the last has closed.
/// The signal listeners go first, so that once every loop has removed its
/// own the signals' default action is back: a second Ctrl-C ends the
/// process.
fn stop(lp: &mut Loop, _me: SignalListener) {
    let Some(server) = lp.state_mut::<LoopServer>() else {
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
    for stream in open {
        // Drop what comes from now on (it replaces the echo of `pipe`),
        // so that nothing more is queued after the end.
        stream.read_start(lp, |_, _, _| {}, |_, _, _| {});
        stream.end(lp);
    }
}
