//! W4 tcp-pingpong, and the echo server the anchors' harness drives for W5
//! and W10, through `eventide::net` (the facade's public TCP API).

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use eventide::net::{ListenOptions, Stream, TcpListener, TcpStream};
use eventide::{Loop, TimerId};

use crate::common::{Run, cpu_now, fixed, secs};

/// W4: bytes per message, run time, and the bound on the whole run.
const MSG: usize = 64;
const RUN: Duration = Duration::from_secs(5);
const WATCHDOG: Duration = Duration::from_secs(25);

/// The W4 state shared by the callbacks of the one loop.
struct Pingpong {
    /// The message in flight: bytes 0..8 the round counter (little-endian),
    /// the rest a fixed pattern (as the libuv anchor's).
    sent: RefCell<[u8; MSG]>,
    /// What came back of it so far.
    received: RefCell<Vec<u8>>,
    rounds: Cell<u64>,
    server_bytes: Cell<u64>,
    server_conns: Cell<u32>,
    stop: Cell<bool>,
    started: Cell<Option<Instant>>,
    ended: Cell<Option<Instant>>,
    listener: Cell<Option<TcpListener>>,
    watchdog: Cell<Option<TimerId>>,
    /// The first check that failed; the loop is wound down and `run` fails.
    failure: RefCell<Option<String>>,
}

impl Pingpong {
    /// Records the first failure and winds everything down; `stream`, if
    /// any, is closed.
    fn fail(&self, lp: &mut Loop, stream: Option<TcpStream>, why: String) {
        if self.failure.borrow().is_none() {
            *self.failure.borrow_mut() = Some(why);
        }
        self.finish(lp, stream);
        lp.stop();
    }

    /// Closes the client (the server side then sees its end and closes),
    /// the listener and the watchdog.
    fn finish(&self, lp: &mut Loop, client: Option<TcpStream>) {
        if let Some(client) = client {
            client.close(lp);
        }
        if let Some(listener) = self.listener.take() {
            listener.close(lp);
        }
        if let Some(watchdog) = self.watchdog.take() {
            lp.clear_timer(watchdog);
        }
    }

    /// Sends the next message: the round counter, then the pattern.
    fn send_next(&self, lp: &mut Loop, client: TcpStream) {
        let mut sent = self.sent.borrow_mut();
        sent[..8].copy_from_slice(&self.rounds.get().to_le_bytes());
        if let Err(error) = write_all(lp, client.stream(), &sent[..]) {
            drop(sent);
            self.fail(lp, Some(client), format!("client write: {error}"));
        }
    }
}

/// Writes `data` as the libuv anchor's `write_all` does: what the kernel
/// takes now (`try_write`, libuv's `uv_try_write`), and a queued write of
/// a copy of the rest, whose failure closes the stream (its reader then
/// reports the error).
fn write_all(lp: &mut Loop, stream: Stream, data: &[u8]) -> eventide::Result<()> {
    let sent = match stream.try_write(lp, data) {
        Ok(sent) => sent,
        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => 0,
        Err(error) => return Err(error),
    };
    if sent < data.len() {
        stream.write(lp, data[sent..].to_vec(), move |lp, written| {
            if written.is_err() {
                stream.close(lp);
            }
        });
    }
    Ok(())
}

/// The server's side of W4: count and echo every byte; close at the end.
fn on_server_connection(
    lp: &mut Loop,
    state: &Rc<Pingpong>,
    accepted: eventide::Result<TcpStream>,
) {
    let stream = match accepted {
        Ok(stream) => stream,
        Err(error) => return state.fail(lp, None, format!("accept: {error}")),
    };
    state.server_conns.set(state.server_conns.get() + 1);
    if state.server_conns.get() > 1 {
        stream.close(lp);
        return state.fail(lp, None, "a second connection was accepted".to_owned());
    }
    if let Err(error) = stream.set_nodelay(lp, true) {
        return state.fail(lp, Some(stream), format!("server nodelay: {error}"));
    }
    let data_state = Rc::clone(state);
    let end_state = Rc::clone(state);
    stream.read_start(
        lp,
        move |lp, stream, data| {
            let state = &data_state;
            state
                .server_bytes
                .set(state.server_bytes.get() + data.len() as u64);
            if let Err(error) = write_all(lp, stream.stream(), data) {
                state.fail(lp, Some(stream), format!("server write: {error}"));
            }
        },
        move |lp, stream, end| {
            stream.close(lp);
            if let Err(error) = end {
                end_state.fail(lp, None, format!("server read: {error}"));
            }
        },
    );
}

/// The client's side of W4: collect the echo, check it, count the round,
/// and send the next message (or stop).
fn on_client_data(lp: &mut Loop, state: &Pingpong, client: TcpStream, data: &[u8]) {
    let complete = {
        let mut received = state.received.borrow_mut();
        if received.len() + data.len() > MSG {
            drop(received);
            return state.fail(
                lp,
                Some(client),
                "the server echoed more than was sent".to_owned(),
            );
        }
        received.extend_from_slice(data);
        if received.len() < MSG {
            return;
        }
        let same = received[..] == state.sent.borrow()[..];
        received.clear();
        same
    };
    if !complete {
        return state.fail(
            lp,
            Some(client),
            format!(
                "round {}: the echoed bytes differ from the sent bytes",
                state.rounds.get()
            ),
        );
    }
    state.rounds.set(state.rounds.get() + 1);
    if state.stop.get() {
        state.ended.set(Some(Instant::now()));
        state.finish(lp, Some(client));
        return;
    }
    state.send_next(lp, client);
}

fn on_connected(lp: &mut Loop, state: &Rc<Pingpong>, connected: eventide::Result<TcpStream>) {
    let client = match connected {
        Ok(client) => client,
        Err(error) => return state.fail(lp, None, format!("{error}")),
    };
    if let Err(error) = client.set_nodelay(lp, true) {
        return state.fail(lp, Some(client), format!("client nodelay: {error}"));
    }
    let data_state = Rc::clone(state);
    let end_state = Rc::clone(state);
    client.read_start(
        lp,
        move |lp, client, data| on_client_data(lp, &data_state, client, data),
        move |lp, client, end| {
            let why = match end {
                Ok(()) => "client: unexpected end of stream".to_owned(),
                Err(error) => format!("client read: {error}"),
            };
            end_state.fail(lp, Some(client), why);
        },
    );
    state.started.set(Some(Instant::now()));
    let stop_state = Rc::clone(state);
    lp.set_timeout(RUN, move |_| stop_state.stop.set(true));
    state.send_next(lp, client);
}

/// W4 tcp-pingpong: one connection over 127.0.0.1, both ends on this loop;
/// 64 bytes there and back, the next message once all 64 came back, for
/// 5 s. Round trips per second, from the first send to the end of the last
/// round trip; checks every echo byte for byte, and the server's byte count.
pub(crate) fn w4_tcp_pingpong(run: &mut Run) {
    let mut pattern = [0u8; MSG];
    for (i, byte) in pattern.iter_mut().enumerate() {
        *byte = (i * 7 + 3) as u8;
    }
    let state = Rc::new(Pingpong {
        sent: RefCell::new(pattern),
        received: RefCell::new(Vec::with_capacity(MSG)),
        rounds: Cell::new(0),
        server_bytes: Cell::new(0),
        server_conns: Cell::new(0),
        stop: Cell::new(false),
        started: Cell::new(None),
        ended: Cell::new(None),
        listener: Cell::new(None),
        watchdog: Cell::new(None),
        failure: RefCell::new(None),
    });
    let c0 = cpu_now();
    let any: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
    let server_state = Rc::clone(&state);
    let listener = match run
        .lp
        .tcp_listen(any, ListenOptions::default(), move |lp, accepted| {
            on_server_connection(lp, &server_state, accepted)
        }) {
        Ok(listener) => listener,
        Err(error) => run.fail(error),
    };
    state.listener.set(Some(listener));
    let addr = match listener.local_addr(&run.lp) {
        Ok(addr) => addr,
        Err(error) => run.fail(error),
    };
    let client_state = Rc::clone(&state);
    if let Err(error) = run.lp.tcp_connect(addr, move |lp, connected| {
        on_connected(lp, &client_state, connected)
    }) {
        run.fail(error);
    }
    let watchdog_state = Rc::clone(&state);
    let watchdog = run.lp.set_timeout(WATCHDOG, move |lp| {
        watchdog_state.watchdog.set(None);
        watchdog_state.fail(lp, None, format!("not done within {WATCHDOG:?}"));
    });
    state.watchdog.set(Some(watchdog));
    if let Err(error) = run.lp.run() {
        run.fail(format!("the loop failed: {error}"));
    }
    let cpu = cpu_now() - c0;
    if let Some(why) = state.failure.borrow_mut().take() {
        run.fail(why);
    }
    let rounds = state.rounds.get();
    let (Some(started), Some(ended)) = (state.started.get(), state.ended.get()) else {
        run.fail(format!("the run did not finish ({rounds} round trips)"));
    };
    let wall = secs(started, ended);
    if rounds == 0 || wall <= 0.0 {
        run.fail("no round trip completed");
    }
    if state.server_bytes.get() != rounds * MSG as u64 {
        run.fail(format!(
            "the server got {} bytes for {rounds} round trips of {MSG}",
            state.server_bytes.get()
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

/// Raises the soft limit of open files to the hard one (W10 holds 10,000
/// connections), as the libuv anchor's server does.
fn raise_nofile() {
    // SAFETY: an all-zero rlimit is a valid value of this plain C struct.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: getrlimit/setrlimit only read or write the struct given,
    // which lives for the whole call.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// `echo-server [--loops N] PORT LIFETIME_S`: the W5/W10 server, and
/// W14's. One loop on this thread, listening on 127.0.0.1:PORT (backlog
/// 511); every accepted connection gets TCP_NODELAY and echoes every byte
/// back through `Stream::pipe` (reading pauses while the client's echoes
/// wait above the high-water mark); at the client's end the queued echoes
/// still go out, then the FIN; an error closes it. After LIFETIME_S seconds
/// a timer closes the listener and stops the loop, and the process exits 0
/// (the remaining connections close with it). Prints nothing on stdout.
///
/// With `loops` > 1 (W14), `loops - 1` more threads each build a loop of
/// their own (same backend, own pool) and every loop listens on the same
/// port with `SO_REUSEPORT`, so that the kernel spreads the connections
/// over the loops; nothing is shared between them. The loops are all built
/// before any of them listens, so that the group of listeners is complete
/// (within microseconds) before the first client can see the port open.
///
/// With `pin`, loop i runs only on the i-th CPU of the process's affinity
/// set (modulo its size): one loop per core, instead of wherever the
/// scheduler's wake-up placement puts each thread.
pub(crate) fn echo_server(
    run: &mut Run,
    port: u16,
    lifetime: Duration,
    loops: usize,
    pin: bool,
    pool: Option<eventide::SharedPool>,
) {
    raise_nofile();
    let cpus: Arc<[usize]> = if pin {
        allowed_cpus().into()
    } else {
        Arc::new([])
    };
    if loops <= 1 {
        pin_loop(&cpus, 0);
        serve_echo(run, port, lifetime, false, None);
        return;
    }
    let backend = run.backend_choice();
    let ready = Arc::new(Barrier::new(loops));
    let others: Vec<_> = (1..loops)
        .map(|i| {
            let ready = Arc::clone(&ready);
            let cpus = Arc::clone(&cpus);
            let pool = pool.clone();
            std::thread::Builder::new()
                .name(format!("echo-loop-{i}"))
                .spawn(move || {
                    pin_loop(&cpus, i);
                    let mut run = Run::with_pool("echo-server".to_owned(), backend, pool);
                    serve_echo(&mut run, port, lifetime, true, Some(&ready));
                })
        })
        .collect();
    let others: Vec<_> = match others.into_iter().collect() {
        Ok(others) => others,
        Err(error) => run.fail(format!("cannot start a loop thread: {error}")),
    };
    pin_loop(&cpus, 0);
    serve_echo(run, port, lifetime, true, Some(&ready));
    for thread in others {
        if thread.join().is_err() {
            run.fail("a loop thread panicked");
        }
    }
}

/// Pins the calling thread, loop `i`'s, to the i-th of `cpus` (modulo
/// their count); nothing if `cpus` is empty. A failure is reported and
/// leaves the thread where the scheduler puts it.
fn pin_loop(cpus: &[usize], i: usize) {
    if let Some(&cpu) = cpus.get(i % cpus.len().max(1))
        && let Err(error) = pin_thread(cpu)
    {
        eprintln!("workloads echo-server: cannot pin loop {i} to CPU {cpu}: {error}");
    }
}

/// The CPUs this process may run on, in order (empty if unknown).
#[cfg(target_os = "linux")]
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: an all-zero cpu_set_t is the empty set, a valid value.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: sched_getaffinity writes at most size_of::<cpu_set_t>() bytes
    // into `set`, which lives for the whole call.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0
    {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: CPU_ISSET reads bit `cpu` of the set; `cpu` is below CPU_SETSIZE.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// The CPUs this process may run on: unknown off Linux.
#[cfg(not(target_os = "linux"))]
fn allowed_cpus() -> Vec<usize> {
    Vec::new()
}

/// Restricts the calling thread to `cpu`.
#[cfg(target_os = "linux")]
fn pin_thread(cpu: usize) -> std::io::Result<()> {
    // SAFETY: an all-zero cpu_set_t is the empty set, a valid value.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET writes bit `cpu` of the set; callers pass CPUs from
    // allowed_cpus, all below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: sched_setaffinity reads size_of::<cpu_set_t>() bytes of `set`,
    // which lives for the whole call; pid 0 is the calling thread.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Off Linux no thread is pinned (allowed_cpus is empty, so this is not called).
#[cfg(not(target_os = "linux"))]
fn pin_thread(_cpu: usize) -> std::io::Result<()> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

/// One loop of the echo server: listens (with `SO_REUSEPORT` if
/// `reuse_port`, once every loop is built when `ready` is given) and runs
/// until its lifetime is over.
fn serve_echo(
    run: &mut Run,
    port: u16,
    lifetime: Duration,
    reuse_port: bool,
    ready: Option<&Barrier>,
) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    if let Some(ready) = ready {
        ready.wait();
    }
    let options = ListenOptions::default().reuse_port(reuse_port);
    let listener = match run.lp.tcp_listen(addr, options, |lp, accepted| {
        let stream = match accepted {
            Ok(stream) => stream,
            Err(error) => {
                eprintln!("workloads echo-server: {error}");
                return;
            }
        };
        // A failure here leaves Nagle on: slower, still correct.
        let _ = stream.set_nodelay(lp, true);
        // Every byte back, with backpressure (reading pauses while the
        // client has not taken its echoes); at the client's end, the
        // queued echoes go out, then the FIN, then the stream closes.
        // An error destroys it.
        stream.pipe(lp, stream);
    }) {
        Ok(listener) => listener,
        Err(error) => run.fail(error),
    };
    run.lp.set_timeout(lifetime, move |lp| {
        eprintln!("workloads echo-server: lifetime over, exiting");
        listener.close(lp);
        lp.stop();
    });
    eprintln!(
        "workloads echo-server: listening on {addr} (backend {}, eventide {}{})",
        run.lp.backend(),
        env!("CARGO_PKG_VERSION"),
        if reuse_port { ", SO_REUSEPORT" } else { "" }
    );
    if let Err(error) = run.lp.run() {
        run.fail(format!("the loop failed: {error}"));
    }
}
