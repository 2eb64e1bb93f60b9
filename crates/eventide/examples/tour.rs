//! A short tour of eventide: one event loop thread, callbacks that receive
//! the loop, the program's state kept on the loop, files, a TCP echo over
//! loopback, work on the pool, Node's ordering rules, and a callback that
//! ends `run()` with its error.
//!
//!     cargo run --release --example tour
//!     EVENTIDE_BACKEND=poll cargo run --release --example tour
//!
//! Every line it prints starts with the milliseconds since the start, so you
//! can see the interval keep ticking while the pool does the slow work.

use std::time::{Duration, Instant};

use eventide::net::ListenOptions;
use eventide::{Loop, TimerId};

/// The tour's own state, kept on the loop (`lp.insert_state`): every
/// callback reaches it through the loop, no `Rc<RefCell<..>>` needed.
struct Tour {
    /// The interval of step 2, for step 6 to clear.
    ticker: Option<TimerId>,
    /// How often it ticked.
    ticks: u32,
}

/// Counts the primes below `limit` the slow way (trial division), to keep a
/// pool thread busy for a few hundred milliseconds.
fn count_primes(limit: u64) -> u64 {
    let is_prime = |n: u64| {
        n >= 2
            && (2..)
                .take_while(|d| d * d <= n)
                .all(|d| !n.is_multiple_of(d))
    };
    (0..limit).filter(|&n| is_prime(n)).count() as u64
}

fn main() -> Result<(), eventide::Error> {
    let start = Instant::now();
    // Milliseconds since the tour started, for every line we print.
    let ms = move || start.elapsed().as_millis();

    // 1. The loop. `Loop::new()` takes io_uring if the system allows it and
    //    polling otherwise; EVENTIDE_BACKEND=uring|poll|auto decides instead.
    let mut lp = Loop::new()?;
    println!(
        "{:>5} ms  the loop runs on the {} backend",
        ms(),
        lp.backend()
    );

    // 2. An interval (Node's setInterval): ticks every 100 ms while the rest
    //    of the tour happens, until step 6 clears it. Its count lives in
    //    the tour's state on the loop, where any callback can read it.
    lp.insert_state(Tour {
        ticker: None,
        ticks: 0,
    });
    let ticker = lp.set_interval(Duration::from_millis(100), move |lp, _| {
        let tour = lp.state_mut::<Tour>().expect("inserted above");
        tour.ticks += 1;
        println!("{:>5} ms  tick {}", ms(), tour.ticks);
    });
    lp.state_mut::<Tour>().expect("inserted above").ticker = Some(ticker);

    // 3. Read a file with eventide::fs, as Node's fs.readFile: on io_uring
    //    the kernel does it, on the polling backend a pool thread does;
    //    either way the callback gets the bytes on the loop thread. Then a
    //    missing file, to show the error as Node words it.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    lp.fs().read_file(path, move |lp, result| {
        match result {
            Ok(bytes) => println!("{:>5} ms  read {path}: {} bytes", ms(), bytes.len()),
            Err(error) => println!("{:>5} ms  could not read {path}: {error}", ms()),
        }
        lp.fs().read_file("no-such-file.txt", move |_, result| {
            if let Err(error) = result {
                println!("{:>5} ms  and a missing file: {error}", ms());
            }
        });
        // We are in an I/O callback (the poll phase), where Node's
        // ordering is fully determined: show it.
        ordering_demo(lp, ms);
    });

    // 4. A TCP echo round trip over loopback, server and client on this one
    //    loop: the OS does the waiting (io_uring completions or readiness).
    echo_round_trip(&mut lp, ms)?;

    // 5. CPU work on the pool. The loop thread stays free: the ticks go on
    //    while a pool thread counts.
    let limit = 3_000_000;
    println!(
        "{:>5} ms  counting the primes below {limit} on the pool...",
        ms()
    );
    lp.queue_work(
        move || count_primes(limit),
        move |lp, result| {
            match result {
                Ok(count) => println!("{:>5} ms  there are {count} primes below {limit}", ms()),
                Err(error) => println!("{:>5} ms  the prime count failed: {error}", ms()),
            }
            // 6. Another thread posts a closure to the loop through a
            //    LoopHandle (libuv's uv_async_send). The closure runs on the
            //    loop thread, with the loop: here it clears the interval.
            //    The handle keeps the loop alive until the thread drops it.
            post_from_another_thread(lp, ms);
        },
    );

    // Runs until nothing is left: no timer, no work, no LoopHandle.
    lp.run()?;
    let ticks = lp.state::<Tour>().map_or(0, |tour| tour.ticks);
    println!(
        "{:>5} ms  the loop has nothing left to do: run() returned (the interval ticked {ticks} times)",
        ms()
    );

    // 7. A callback that cannot go on hands its error to `lp.fail`: run()
    //    returns it as soon as the callback returns, as an uncaught
    //    exception ends a Node program (here we print it instead).
    lp.fs()
        .read_file("no-such-config.toml", |lp, result| match result {
            Ok(bytes) => println!("config: {} bytes", bytes.len()),
            Err(error) => lp.fail(error),
        });
    match lp.run() {
        Ok(()) => println!("{:>5} ms  the config was there after all", ms()),
        Err(error) => println!("{:>5} ms  run() returned a callback's error: {error}", ms()),
    }
    Ok(())
}

/// Listens on a free loopback port, connects to it, sends a line and prints
/// it when the server has echoed it back; then both ends close.
fn echo_round_trip(lp: &mut Loop, ms: impl Fn() -> u128 + Copy + 'static) -> eventide::Result<()> {
    let any_port = "127.0.0.1:0".parse().expect("a literal address");
    let server = lp.tcp_listen(any_port, ListenOptions::default(), |lp, accepted| {
        let Ok(peer) = accepted else { return };
        // Echo whatever arrives (pausing while the echoes wait unread);
        // at the client's end, the echoes still queued go out, then the
        // connection closes.
        peer.pipe(lp, peer);
    })?;
    let addr = server.local_addr(lp)?;
    let sent = Instant::now();
    lp.tcp_connect(addr, move |lp, connected| {
        let client = match connected {
            Ok(client) => client,
            Err(error) => return println!("{:>5} ms  connect failed: {error}", ms()),
        };
        client.write(lp, b"hello over loopback".to_vec(), |_, _| {});
        client.read_start(
            lp,
            move |lp, client, data| {
                let text = String::from_utf8_lossy(data);
                println!(
                    "{:>5} ms  the echo server sent back {text:?} ({:?} round trip)",
                    ms(),
                    sent.elapsed()
                );
                client.close(lp);
                server.close(lp);
            },
            |_, _, _| {},
        );
    })?;
    Ok(())
}

/// Starts a thread that posts one closure to the loop, which clears the
/// tour's interval: with it gone, nothing keeps the loop alive.
fn post_from_another_thread(lp: &mut Loop, ms: impl Fn() -> u128 + Send + 'static) {
    let handle = lp.handle();
    std::thread::spawn(move || {
        let sender = format!("{:?}", std::thread::current().id());
        let start = Instant::now();
        let posted = handle.post(move |lp| {
            let waited = start.elapsed();
            println!(
                "{:>5} ms  a closure posted by thread {sender} runs on the loop thread, {waited:?} later",
                ms()
            );
            println!("{:>5} ms  it clears the interval: nothing is left to keep the loop alive", ms());
            if let Some(ticker) = lp.state::<Tour>().and_then(|tour| tour.ticker) {
                lp.clear_timer(ticker);
            }
        });
        if posted.is_err() {
            eprintln!("the loop was gone before the closure was posted");
        }
        // `handle` is dropped here: the loop no longer waits for this thread.
    });
}

/// Node's ordering, seen from an I/O callback: everything is queued here in
/// the reverse of the order it runs, and each prints when it runs.
fn ordering_demo(lp: &mut Loop, ms: impl Fn() -> u128 + Copy + 'static) {
    println!(
        "{:>5} ms  ordering: queued setTimeout(0), setImmediate, microtask, nextTick",
        ms()
    );
    lp.set_timeout(Duration::ZERO, move |_| {
        println!(
            "{:>5} ms    4. setTimeout(0): the timers phase of a later turn, once 1 ms passed (0 means 1)",
            ms()
        );
    });
    lp.set_immediate(move |_| {
        println!(
            "{:>5} ms    3. setImmediate: the check phase, right after this turn's poll phase",
            ms()
        );
    });
    lp.queue_microtask(move |_| {
        println!(
            "{:>5} ms    2. microtask: after the next-ticks, still before any other callback",
            ms()
        );
    });
    lp.next_tick(move |_| {
        println!(
            "{:>5} ms    1. nextTick: as soon as the current callback returns",
            ms()
        );
    });
}
