//! Streams on every backend: backpressure (the high-water mark and
//! `drain`), the idle timeout, and ref/unref of streams and listeners.

mod net_support;
mod util;

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use eventide::net::{DEFAULT_HIGH_WATER_MARK, ListenOptions, TcpListener, TcpStream};
use eventide::{Loop, RunMode};
use util::{Trace, run_within};

const LIMIT: Duration = Duration::from_secs(60);

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A server that hands each accepted stream to `on_stream`.
fn server(
    lp: &mut Loop,
    on_stream: impl Fn(&mut Loop, TcpStream) + 'static,
) -> (TcpListener, SocketAddr) {
    let server = lp
        .tcp_listen(loopback(), ListenOptions::default(), move |lp, accepted| {
            on_stream(lp, accepted.expect("accepted"));
        })
        .expect("listen");
    let addr = server.local_addr(lp).expect("its address");
    (server, addr)
}

/// The byte at `offset` of the test stream: cheap to make and to check.
fn byte_at(offset: usize) -> u8 {
    (offset.wrapping_mul(31) ^ (offset >> 11)) as u8
}

fn chunk_at(offset: usize, len: usize) -> Vec<u8> {
    (offset..offset + len).map(byte_at).collect()
}

fn drain_runs_once_after_the_write_that_empties_the_queue(lp: &mut Loop) {
    let (server, addr) = server(lp, net_support::discard);
    let trace = Trace::default();
    let t = trace.clone();
    let client = lp
        .tcp_connect(addr, |_, connected| {
            connected.expect("connected");
        })
        .unwrap();
    assert_eq!(client.high_water_mark(lp), DEFAULT_HIGH_WATER_MARK);
    assert!(client.set_high_water_mark(lp, 8));
    assert_eq!(client.high_water_mark(lp), 8);
    let d = trace.clone();
    client.on_drain(lp, move |lp, stream| {
        d.log(format!("drain, queue {}", stream.write_queue_size(lp)));
        // A small write after the drain: below the mark, no second drain.
        let d2 = d.clone();
        let below = stream.write(lp, b"!".to_vec(), move |lp, res| {
            d2.log(format!("written !: {res:?}"));
            stream.close(lp);
            server.close(lp);
            // Node's write on a destroyed socket returns false too.
            let d3 = d2.clone();
            let below = stream.write(lp, b"?".to_vec(), move |_, res| {
                d3.log(format!("written ?: {}", res.unwrap_err()));
            });
            d2.log(format!("write ? returned {below}"));
        });
        d.log(format!("write ! returned {below}"));
        assert_eq!(below, !stream.need_drain(lp));
    });
    // What write returns is Node's: queued < mark, after queueing.
    let below = client.write(lp, b"1234".to_vec(), {
        let t = t.clone();
        move |_, res| t.log(format!("written 4: {res:?}"))
    });
    t.log(format!("write 4 returned {below}"));
    assert_eq!(below, !client.need_drain(lp));
    let below = client.write(lp, b"5678".to_vec(), {
        let t = t.clone();
        move |_, res| t.log(format!("written 8: {res:?}"))
    });
    t.log(format!(
        "write 8 returned {below}, queued {}",
        client.write_queue_size(lp)
    ));
    assert_eq!(below, !client.need_drain(lp));
    let t2 = t.clone();
    let below = client.write(lp, b"9".to_vec(), move |_, res| {
        t2.log(format!("written 9: {res:?}"));
    });
    t.log(format!("write 9 returned {below}"));
    run_within(lp, LIMIT);
    trace.assert(&[
        "write 4 returned true",
        "write 8 returned false, queued 8",
        "write 9 returned false",
        "written 4: Ok(())",
        "written 8: Ok(())",
        "written 9: Ok(())",
        "drain, queue 0",
        "write ! returned true",
        "written !: Ok(())",
        "write ? returned false",
        "written ?: stale handle: stream has already finished or been closed",
    ]);
}

/// A write after `shutdown` fails (`EPIPE`) and returns `false`, as
/// Node's write after `end()` does.
fn a_write_after_shutdown_returns_false(lp: &mut Loop) {
    let (server, addr) = server(lp, net_support::discard);
    let trace = Trace::default();
    let t = trace.clone();
    lp.tcp_connect(addr, move |lp, connected| {
        let stream = connected.expect("connected");
        stream.shutdown(lp, move |lp, res| {
            res.expect("shut down");
            stream.close(lp);
            server.close(lp);
        });
        let t2 = t.clone();
        let below = stream.write(lp, b"late".to_vec(), move |_, res| {
            t2.log(format!("written: {}", res.unwrap_err()));
        });
        t.log(format!("write returned {below}"));
    })
    .unwrap();
    run_within(lp, LIMIT);
    trace.assert(&["write returned false", "written: write EPIPE"]);
}

/// What the "peer that stops reading" scenario saw.
#[derive(Default)]
struct Flow {
    /// Bytes handed to `write`.
    written: Cell<usize>,
    /// Bytes whose write callback ran.
    done: Cell<usize>,
    /// The queue at the last watchdog tick.
    last_queue: Cell<usize>,
    /// The queue, and whether a drain was due, when the writer was seen
    /// stalled.
    stalled_with: Cell<Option<(usize, bool)>>,
    max_queue: Cell<usize>,
    drains: Cell<usize>,
    received: Cell<usize>,
    corrupt: Cell<bool>,
    server_stream: Cell<Option<TcpStream>>,
}

const TOTAL: usize = 48 << 20;
const CHUNK: usize = 64 << 10;
const MARK: usize = 256 << 10;

/// Writes chunks until the mark says stop; `drain` starts it again.
fn write_while_below_the_mark(lp: &mut Loop, stream: TcpStream, flow: &Rc<Flow>) {
    while flow.written.get() < TOTAL && !stream.need_drain(lp) {
        let offset = flow.written.get();
        let len = CHUNK.min(TOTAL - offset);
        let f = Rc::clone(flow);
        stream.write(lp, chunk_at(offset, len), move |_, res| {
            res.expect("written");
            f.done.set(f.done.get() + len);
        });
        flow.written.set(offset + len);
        let queued = stream.write_queue_size(lp);
        flow.max_queue.set(flow.max_queue.get().max(queued));
    }
}

fn a_peer_that_stops_reading_makes_the_queue_reach_the_mark_and_loses_nothing(lp: &mut Loop) {
    let flow = Rc::new(Flow::default());
    let f = Rc::clone(&flow);
    // The server accepts and does not read until told to.
    let (server, addr) = server(lp, move |_, stream| f.server_stream.set(Some(stream)));
    let f = Rc::clone(&flow);
    let client = lp
        .tcp_connect(addr, move |lp, connected| {
            let stream = connected.expect("connected");
            write_while_below_the_mark(lp, stream, &f);
        })
        .unwrap();
    client.set_high_water_mark(lp, MARK);
    let f = Rc::clone(&flow);
    client.on_drain(lp, move |lp, stream| {
        f.drains.set(f.drains.get() + 1);
        write_while_below_the_mark(lp, stream, &f);
    });
    // The watchdog: once the queue has not moved between two ticks, the
    // kernel's buffers are full; the peer resumes reading.
    let f = Rc::clone(&flow);
    lp.set_interval(Duration::from_millis(50), move |lp, id| {
        let queue = client.write_queue_size(lp);
        let stalled = queue == f.last_queue.get() && queue > 0;
        f.last_queue.set(queue);
        if !stalled || f.stalled_with.get().is_some() {
            return;
        }
        let Some(peer) = f.server_stream.get() else {
            return;
        };
        f.stalled_with.set(Some((queue, client.need_drain(lp))));
        lp.clear_timer(id);
        let g = Rc::clone(&f);
        peer.read_start(
            lp,
            move |lp, peer, data| {
                let at = g.received.get();
                if data.iter().enumerate().any(|(i, b)| *b != byte_at(at + i)) {
                    g.corrupt.set(true);
                }
                g.received.set(at + data.len());
                if g.received.get() == TOTAL {
                    peer.close(lp);
                    client.close(lp);
                    server.close(lp);
                }
            },
            |_, _, end| panic!("the stream ended early: {end:?}"),
        );
    });
    run_within(lp, LIMIT);
    let (queued, need_drain) = flow.stalled_with.get().expect("the writer stalled");
    assert!(queued > 0);
    assert!(
        need_drain,
        "stalled with {queued} bytes queued and no drain due"
    );
    // The queue grew to the mark, and the writer respected it: never more
    // than one chunk over it.
    let max = flow.max_queue.get();
    assert!(
        (MARK..MARK + CHUNK).contains(&max),
        "the queue peaked at {max}"
    );
    assert!(flow.drains.get() >= 1, "drain never ran");
    assert_eq!(flow.done.get(), TOTAL);
    assert_eq!(flow.received.get(), TOTAL);
    assert!(!flow.corrupt.get(), "bytes arrived changed");
}

fn an_idle_stream_times_out_once_and_stays_open(lp: &mut Loop) {
    let (server, addr) = server(lp, |lp, stream| {
        net_support::echo(lp, stream);
    });
    let trace = Trace::default();
    let t = trace.clone();
    lp.tcp_connect(addr, move |lp, connected| {
        let stream = connected.unwrap();
        let t2 = t.clone();
        stream.read_start(
            lp,
            move |lp, stream, data| {
                t2.log(format!("echo {}", String::from_utf8_lossy(data)));
                stream.close(lp);
                server.close(lp);
            },
            |_, _, _| {},
        );
        // Keeps the loop running past the timeout (the idle timer itself
        // does not), and shows the timeout fires once only.
        let t3 = t.clone();
        lp.set_timeout(Duration::from_millis(150), move |lp| {
            t3.log("later");
            stream.write(lp, b"still open".to_vec(), |_, res| res.unwrap());
        });
        let t4 = t.clone();
        assert!(
            stream.set_idle_timeout(lp, Duration::from_millis(20), move |_, _| t4.log("timeout"))
        );
    })
    .unwrap();
    run_within(lp, LIMIT);
    trace.assert(&["timeout", "later", "echo still open"]);
}

fn activity_restarts_the_idle_countdown(lp: &mut Loop) {
    // The timeout is long against the writes' spacing (10 ms against
    // 400 ms): it fires after the last write, never between them.
    let (server, addr) = server(lp, net_support::discard);
    let trace = Trace::default();
    let t = trace.clone();
    let writes = Rc::new(Cell::new(0));
    lp.tcp_connect(addr, move |lp, connected| {
        let stream = connected.unwrap();
        let t2 = t.clone();
        let w = Rc::clone(&writes);
        stream.set_idle_timeout(lp, Duration::from_millis(400), move |lp, stream| {
            t2.log(format!("timeout after {} writes", w.get()));
            stream.close(lp);
            server.close(lp);
        });
        let t3 = t.clone();
        lp.set_interval(Duration::from_millis(10), move |lp, id| {
            writes.set(writes.get() + 1);
            stream.write(lp, b"x".to_vec(), |_, _| {});
            if writes.get() == 60 {
                t3.log("wrote 60");
                lp.clear_timer(id);
            }
        });
    })
    .unwrap();
    run_within(lp, LIMIT);
    trace.assert(&["wrote 60", "timeout after 60 writes"]);
}

fn a_zero_idle_timeout_disables_it(lp: &mut Loop) {
    let (server, addr) = server(lp, net_support::discard);
    let fired = Rc::new(Cell::new(false));
    let f = Rc::clone(&fired);
    lp.tcp_connect(addr, move |lp, connected| {
        let stream = connected.unwrap();
        let f2 = Rc::clone(&f);
        stream.set_idle_timeout(lp, Duration::from_millis(10), move |_, _| f2.set(true));
        assert!(stream.set_idle_timeout(lp, Duration::ZERO, |_, _| panic!("disabled")));
        lp.set_timeout(Duration::from_millis(100), move |lp| {
            stream.close(lp);
            server.close(lp);
        });
    })
    .unwrap();
    run_within(lp, LIMIT);
    assert!(!fired.get());
}

fn an_unreferenced_listener_lets_the_loop_end(lp: &mut Loop) {
    let (server, _) = server(lp, |_, _| panic!("nobody connects"));
    assert!(server.has_ref(lp));
    assert!(server.unref(lp));
    assert!(!server.has_ref(lp));
    // Nothing else keeps it alive: run returns with the listener open.
    run_within(lp, LIMIT);
    assert!(server.local_addr(lp).is_ok(), "still listening");
    // Referenced again, it keeps the loop alive until closed.
    assert!(server.set_ref(lp, true));
    let closed = Rc::new(Cell::new(false));
    let c = Rc::clone(&closed);
    lp.set_timeout(Duration::from_millis(20), move |lp| {
        c.set(true);
        server.close(lp);
    });
    run_within(lp, LIMIT);
    assert!(closed.get());
    assert!(!server.has_ref(lp), "closed");
    assert!(!server.unref(lp), "closed");
}

fn an_unreferenced_reading_stream_lets_the_loop_end_and_still_reads(lp: &mut Loop) {
    let got = Rc::new(RefCell::new(Vec::new()));
    let (server, addr) = server(lp, |lp, stream| {
        stream.write(lp, b"hello".to_vec(), |_, res| res.unwrap());
    });
    server.unref(lp);
    let g = Rc::clone(&got);
    let client = lp
        .tcp_connect(addr, move |lp, connected| {
            let stream = connected.unwrap();
            stream.read_start(
                lp,
                move |_, _, data| g.borrow_mut().extend_from_slice(data),
                |_, _, _| {},
            );
            assert!(stream.unref(lp));
        })
        .unwrap();
    // The connect keeps the loop alive (a request, as in libuv); the
    // reading does not: the loop ends after the connect, even though the
    // greeting may not have arrived.
    run_within(lp, LIMIT);
    assert!(!client.has_ref(lp));
    // Turns of the loop with something else alive still deliver it.
    let mut turns = 0;
    while got.borrow().len() < 5 {
        let keep = lp.set_timeout(Duration::from_millis(5), |_| {});
        lp.run_mode(RunMode::Once).unwrap();
        lp.clear_timer(keep);
        turns += 1;
        assert!(turns < 2000, "the greeting never arrived");
    }
    assert_eq!(&got.borrow()[..], b"hello");
    // Referenced again, it keeps the loop alive.
    assert!(client.set_ref(lp, true));
    assert!(client.has_ref(lp));
    assert!(
        lp.run_mode(RunMode::NoWait).unwrap(),
        "a referenced reader keeps it alive"
    );
    client.close(lp);
    server.close(lp);
    run_within(lp, LIMIT);
}

fn unreferenced_sockets_closed_while_armed_let_the_loop_end(lp: &mut Loop) {
    // Each unreferenced receive and accept is closed while still armed
    // (and one stream is referenced again first): the loop ends once the
    // closes are done, neither hanging nor ending early.
    let trace = Trace::default();
    let t = trace.clone();
    let (server, addr) = server(lp, move |lp, stream| {
        stream.read_start(lp, |_, _, _| {}, |_, _, _| {});
        stream.unref(lp);
        let t = t.clone();
        lp.set_timeout(Duration::from_millis(10), move |lp| {
            let t = t.clone();
            stream.close_then(lp, move |_| t.log("server side closed"));
        });
    });
    server.unref(lp);
    let t = trace.clone();
    lp.tcp_connect(addr, move |lp, connected| {
        let stream = connected.unwrap();
        // Open until closed below, though the server side ends first.
        stream.set_allow_half_open(lp, true);
        stream.read_start(lp, |_, _, _| {}, |_, _, _| {});
        stream.unref(lp);
        stream.set_ref(lp, true);
        stream.unref(lp);
        let t = t.clone();
        lp.set_timeout(Duration::from_millis(30), move |lp| {
            let (t1, t2) = (t.clone(), t.clone());
            stream.close_then(lp, move |_| t2.log("client closed"));
            server.close_then(lp, move |_| t1.log("listener closed"));
        });
    })
    .unwrap();
    run_within(lp, LIMIT);
    // The listener's callback is a next-tick (its connection is closed
    // already), the client's runs in the close phase.
    trace.assert(&["server side closed", "listener closed", "client closed"]);
    assert!(!lp.alive(), "nothing left in flight");
}

on_every_backend!(
    unreferenced_sockets_closed_while_armed_let_the_loop_end,
    a_write_after_shutdown_returns_false,
    drain_runs_once_after_the_write_that_empties_the_queue,
    a_peer_that_stops_reading_makes_the_queue_reach_the_mark_and_loses_nothing,
    an_idle_stream_times_out_once_and_stays_open,
    activity_restarts_the_idle_countdown,
    a_zero_idle_timeout_disables_it,
    an_unreferenced_listener_lets_the_loop_end,
    an_unreferenced_reading_stream_lets_the_loop_end_and_still_reads,
);
