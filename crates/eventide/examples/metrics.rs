//! The loop's metrics (issue 16): a small program that does a bit of
//! everything (timers, immediates, next-ticks, pool work, a file read, a
//! TCP exchange whose reader stalls for a while, one slow callback), then
//! prints what `Loop::metrics` saw.
//!
//!     cargo run --release -p eventide --example metrics

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use eventide::net::ListenOptions;
use eventide::{Loop, Result};

fn spin(ms: u64) {
    let end = Instant::now() + Duration::from_millis(ms);
    while Instant::now() < end {
        std::hint::spin_loop();
    }
}

fn main() -> Result<()> {
    let mut lp = Loop::new()?;
    lp.set_phase_timing(true);

    // Timers and immediates, each with a next-tick.
    lp.set_interval(Duration::from_millis(5), {
        let left = Cell::new(20);
        move |lp, me| {
            lp.next_tick(|_| {});
            left.set(left.get() - 1);
            if left.get() == 0 {
                lp.clear_timer(me);
            }
        }
    });
    for _ in 0..10 {
        lp.set_immediate(|_| {});
    }
    // One callback that blocks the loop for 40 ms: the delay histogram's
    // maximum.
    lp.set_timeout(Duration::from_millis(30), |_| spin(40));

    // Pool work: 32 jobs of 10 ms each, on 4 threads (they queue).
    for i in 0..32u64 {
        lp.queue_work(
            move || {
                std::thread::sleep(Duration::from_millis(10));
                i * i
            },
            |_, result| {
                result.expect("the job ran");
            },
        );
    }
    lp.fs().read_file(file!(), |_, bytes| {
        bytes.expect("this example's source");
    });

    // A TCP peer that does not read for 50 ms: 16 MiB wait in the write
    // queue meanwhile.
    let server_side = Rc::new(Cell::new(None));
    let s = Rc::clone(&server_side);
    let listener = lp.tcp_listen(
        "127.0.0.1:0".parse().expect("an address"),
        ListenOptions::default(),
        move |_, stream| s.set(stream.ok()),
    )?;
    let addr = listener.local_addr(&lp)?;
    let client = lp.tcp_connect(addr, |lp, stream| {
        let stream = stream.expect("connected");
        stream.write(lp, vec![1u8; 16 << 20], |_, result| {
            result.expect("written");
        });
    })?;
    lp.set_timeout(Duration::from_millis(50), move |lp| {
        println!("-- while the peer does not read --\n{}\n", lp.metrics());
        let Some(server) = server_side.take() else {
            return;
        };
        let received = Rc::new(Cell::new(0usize));
        server.read_start(
            lp,
            move |lp, server, chunk| {
                received.set(received.get() + chunk.len());
                if received.get() == 16 << 20 {
                    server.close(lp);
                    client.close(lp);
                    listener.close(lp);
                }
            },
            |_, _, _| {},
        );
    });

    let before = lp.utilization();
    lp.run()?;
    let metrics = lp.metrics();
    println!("-- at the end --\n{metrics}");
    let run = lp.utilization_since(before);
    println!(
        "\nutilization of the run (Node's eventLoopUtilization(before)): {:.1}% \
         ({:.1} ms active, {:.1} ms idle)",
        run.utilization * 100.0,
        run.active,
        run.idle
    );
    let h = lp.delay_histogram();
    print!("delay percentiles:");
    for p in [0.0, 50.0, 75.0, 90.0, 99.0, 100.0] {
        print!(" p{p}={:?}", h.percentile(p));
    }
    println!();
    Ok(())
}
