//! The loop's keys (`TimerId`, `ImmediateId`, `HookId`, `WorkId`, and
//! the sockets' `TcpListener`, `TcpStream`, `UdpSocket`...) name
//! handles only in the loop that made them: used with another loop they
//! are a no-op (or an error), never that loop's handle in the same slot.
//! Two fresh loops hand out the same slot and generation for their first
//! handles, so without the loop's id in the key they would collide.

mod util;

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use eventide::{Loop, Phase};
use util::{ms, new_loop, run_within};

const LIMIT: Duration = Duration::from_secs(10);

fn other_loop(lp: &Loop) -> Loop {
    new_loop(lp.backend()).expect("a second loop on the same backend")
}

fn a_timer_key_of_another_loop_is_a_no_op(a: &mut Loop) {
    let mut b = other_loop(a);
    let a_timer = a.set_timeout(ms(1), |_| {});
    let fired = Rc::new(Cell::new(0));
    let f = Rc::clone(&fired);
    let b_timer = b.set_timeout(ms(1), move |_| f.set(f.get() + 1));
    assert!(!b.clear_timer(a_timer), "a's key stops nothing in b");
    assert!(!b.refresh_timer(a_timer));
    assert!(!b.timer_is_active(a_timer));
    assert!(!b.timer_has_ref(a_timer));
    b.unref_timer(a_timer);
    assert!(b.timer_has_ref(b_timer), "b's timer is still referenced");
    assert!(b.timer_is_active(b_timer));
    run_within(&mut b, LIMIT);
    assert_eq!(fired.get(), 1, "b's timer fired");
    assert!(a.timer_is_active(a_timer));
    assert!(
        a.clear_timer(a_timer),
        "the key still works with its own loop"
    );
}

fn immediate_and_hook_keys_of_another_loop_are_no_ops(a: &mut Loop) {
    let mut b = other_loop(a);
    let a_immediate = a.set_immediate(|_| {});
    let a_hook = a.start_hook(Phase::Check, |lp, me| {
        lp.stop_hook(me);
    });
    let ran = Rc::new(Cell::new(0));
    let r = Rc::clone(&ran);
    b.set_immediate(move |_| r.set(r.get() + 1));
    let r = Rc::clone(&ran);
    b.start_hook(Phase::Check, move |lp, me| {
        r.set(r.get() + 10);
        lp.stop_hook(me);
    });
    assert!(!b.clear_immediate(a_immediate));
    assert!(!b.stop_hook(a_hook));
    b.unref_hook(a_hook);
    run_within(&mut b, LIMIT);
    assert_eq!(ran.get(), 11, "b's immediate and hook both ran");
    assert!(a.clear_immediate(a_immediate));
    assert!(a.stop_hook(a_hook));
}

fn a_work_key_of_another_loop_is_an_error(a: &mut Loop) {
    let mut b = other_loop(a);
    // b's first work request has a's slot and generation: a cancel that
    // reached it would be `Ok` (queued) or `AlreadyRunning`, not this.
    let a_work = a.queue_work(|| 1, |_, _| {});
    let result = Rc::new(Cell::new(None));
    let r = Rc::clone(&result);
    b.queue_work(|| 2, move |_, got| r.set(Some(got.is_ok())));
    let error = b
        .cancel_work(a_work)
        .expect_err("a's key cancels nothing in b");
    assert!(
        error.to_string().contains("another loop"),
        "a clear error: {error}"
    );
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    run_within(&mut b, LIMIT);
    assert_eq!(
        result.get(),
        Some(true),
        "b's work ran and was not cancelled"
    );
    run_within(a, LIMIT);
}

fn assert_foreign(error: eventide::Error, what: &str) {
    assert!(
        matches!(error, eventide::Error::ForeignHandle { .. }),
        "{what}: a foreign-handle error, not {error:?}"
    );
    assert!(
        error.to_string().contains("another loop"),
        "{what}: {error}"
    );
}

/// Loop `b`'s first listener, stream and UDP socket sit in the same slots,
/// at the same generations, as `a`'s: `a`'s keys must not reach them.
fn socket_keys_of_another_loop_are_errors_never_that_loops_sockets(a: &mut Loop) {
    use eventide::dgram::UdpOptions;
    use eventide::net::ListenOptions;
    let mut b = other_loop(a);
    let local = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let listen = |lp: &mut Loop| {
        lp.tcp_listen(local, ListenOptions::default(), |_, _| {})
            .expect("listen on 127.0.0.1")
    };
    let a_listener = listen(a);
    let b_listener = listen(&mut b);
    let b_port = b_listener.local_addr(&b).expect("b's listener").port();
    assert_foreign(
        b_listener_key_error(&b, a_listener),
        "a's listener key in b",
    );
    assert!(!a_listener.close(&mut b), "a's key closes nothing in b");
    assert_eq!(
        b_listener.local_addr(&b).expect("still open").port(),
        b_port,
        "b's listener is untouched"
    );

    let a_stream = a
        .tcp_connect(a_listener.local_addr(a).expect("a's"), |_, _| {})
        .expect("connect in a");
    let b_stream = b
        .tcp_connect(b_listener.local_addr(&b).expect("b's"), |_, _| {})
        .expect("connect in b");
    assert_foreign(
        a_stream.local_addr(&b).expect_err("a's stream key in b"),
        "a's stream key in b",
    );
    assert!(
        !a_stream.close(&mut b),
        "a's stream key closes nothing in b"
    );
    let wrote = Rc::new(Cell::new(None));
    let w = Rc::clone(&wrote);
    a_stream.write(&mut b, b"x".to_vec(), move |_, r| {
        w.set(Some(r.map_err(|e| {
            matches!(e, eventide::Error::ForeignHandle { .. })
        })))
    });
    assert!(b_stream.local_addr(&b).is_ok(), "b's stream is untouched");

    let a_udp = a.udp_bind(local, UdpOptions::default()).expect("udp in a");
    let b_udp = b.udp_bind(local, UdpOptions::default()).expect("udp in b");
    assert_foreign(
        a_udp.local_addr(&b).expect_err("a's UDP key in b"),
        "a's UDP key in b",
    );
    assert_foreign(
        a_udp.set_ttl(&mut b, 9).expect_err("a's UDP key in b"),
        "set_ttl with a's UDP key in b",
    );
    assert!(!a_udp.close(&mut b), "a's UDP key closes nothing in b");
    assert!(b_udp.local_addr(&b).is_ok(), "b's UDP socket is untouched");

    assert!(a_stream.close(a) && a_listener.close(a) && a_udp.close(a));
    assert!(b_stream.close(&mut b) && b_listener.close(&mut b) && b_udp.close(&mut b));
    run_within(&mut b, LIMIT);
    assert_eq!(
        wrote.get(),
        Some(Err(true)),
        "the write with a's key in b failed as foreign"
    );
    run_within(a, LIMIT);
}

fn b_listener_key_error(b: &Loop, key: eventide::net::TcpListener) -> eventide::Error {
    key.local_addr(b).expect_err("a's listener key in b")
}

on_every_backend!(
    socket_keys_of_another_loop_are_errors_never_that_loops_sockets,
    a_timer_key_of_another_loop_is_a_no_op,
    immediate_and_hook_keys_of_another_loop_are_no_ops,
    a_work_key_of_another_loop_is_an_error,
);
