//! W7 cross-thread-post: a foreign thread posts 1M messages into the loop.

use std::cell::Cell;
use std::time::Instant;

use crate::common::{Run, cpu_now, fixed, peak_rss_mb, secs};

const N: u64 = 1_000_000;

thread_local! {
    /// Messages received, their sum, and FIFO violations (loop thread).
    static RECEIVED: Cell<u64> = const { Cell::new(0) };
    static SUM: Cell<u64> = const { Cell::new(0) };
    static NEXT_EXPECTED: Cell<u64> = const { Cell::new(1) };
    static OUT_OF_ORDER: Cell<u64> = const { Cell::new(0) };
    /// When the last message was consumed: wall clock and process CPU.
    static END: Cell<Option<(Instant, f64)>> = const { Cell::new(None) };
}

/// What the loop does with one message.
fn consume(value: u64) {
    if value != NEXT_EXPECTED.get() {
        OUT_OF_ORDER.set(OUT_OF_ORDER.get() + 1);
    }
    NEXT_EXPECTED.set(value + 1);
    SUM.set(SUM.get() + value);
    let received = RECEIVED.get() + 1;
    RECEIVED.set(received);
    if received == N {
        END.set(Some((Instant::now(), cpu_now())));
    }
}

/// W7 cross-thread-post: one foreign thread sends the values 1..=N through
/// a typed channel into the loop ([`eventide::Loop::channel`]: a locked
/// queue swapped out whole, one wake-up per burst, as libuv's program and
/// tokio's mpsc do); the loop sums them. Checks
/// the count, the sum and FIFO order. Figure of merit: messages per second,
/// wall clock from starting the sender to consuming the last message.
pub(crate) fn w7_cross_thread_post(run: &mut Run) {
    let channel = run.lp.channel(|_, value: u64| consume(value));
    let c0 = cpu_now();
    let w0 = Instant::now();
    let sender = std::thread::Builder::new()
        .name("w7-sender".into())
        .spawn(move || {
            for value in 1..=N {
                if channel.send(value).is_err() {
                    return Err(format!("message {value}: the loop is gone"));
                }
            }
            // Dropping the last sender lets the loop end once it has drained.
            Ok(())
        });
    let sender = match sender {
        Ok(sender) => sender,
        Err(error) => run.fail(format!("cannot start the sender: {error}")),
    };
    if let Err(error) = run.lp.run() {
        run.fail(format!("the loop failed: {error}"));
    }
    match sender.join() {
        Ok(Ok(())) => {}
        Ok(Err(why)) => run.fail(why),
        Err(_) => run.fail("the sender panicked"),
    }

    let (received, sum) = (RECEIVED.get(), SUM.get());
    let want = N * (N + 1) / 2;
    if received != N {
        run.fail(format!("received {received} messages, want {N}"));
    }
    if sum != want {
        run.fail(format!("sum {sum}, want {want}"));
    }
    let out_of_order = OUT_OF_ORDER.get();
    if out_of_order != 0 {
        run.fail(format!("{out_of_order} messages out of order"));
    }
    let Some((w1, c1)) = END.get() else {
        run.fail("the last message left no end time");
    };
    run.result(
        "msgs_per_s",
        fixed(N as f64 / secs(w0, w1), 0),
        &[
            ("wall_s", fixed(secs(w0, w1), 4)),
            ("cpu_s", fixed(c1 - c0, 4)),
            ("rss_mb", fixed(peak_rss_mb(), 1)),
            ("n", N.to_string()),
            ("sum", sum.to_string()),
        ],
    );
}
