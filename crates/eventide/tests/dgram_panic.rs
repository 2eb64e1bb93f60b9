//! A panicking UDP or DNS callback leaves the loop consistent, on every
//! backend, with a panic handler and unwinding out of `run`: the socket
//! keeps its callbacks
//! and keeps receiving, its queued sends still go, lookups still answer.

mod net_support;
mod util;

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;

use eventide::Loop;
use eventide::dgram::{UdpOptions, UdpSocket};
use eventide::net::Family;
use net_support::panics::{Mode, boom, run_through_panics};

fn bind(lp: &mut Loop) -> UdpSocket {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    lp.udp_bind(any, UdpOptions::default()).expect("bind")
}

fn on_message(lp: &mut Loop, mode: Mode) {
    // Every other datagram's callback panics: all 40 still arrive, in
    // order, to the same callback, and the socket closes at the last.
    let receiver = bind(lp);
    let to = receiver.local_addr(lp).unwrap();
    let got = Rc::new(RefCell::new(Vec::new()));
    let g = Rc::clone(&got);
    receiver.recv_start(
        lp,
        move |lp, socket, data, _| {
            g.borrow_mut().push(data[0]);
            if data[0] == 39 {
                socket.close(lp);
            } else if data[0] % 2 == 0 {
                boom();
            }
        },
        |_, _, error| panic!("{error}"),
    );
    let sender = bind(lp);
    for i in 0..40u8 {
        sender.send_to(lp, vec![i], to, |_, res| {
            res.unwrap();
        });
    }
    sender.close(lp);
    let panics = run_through_panics(lp, mode);
    assert_eq!(*got.borrow(), (0..40).collect::<Vec<u8>>());
    assert_eq!(panics, 20);
}

fn on_sent(lp: &mut Loop, mode: Mode) {
    // Many sends queue (more than the socket takes at once); every other
    // send's callback panics: the rest still go and call back.
    let receiver = bind(lp);
    let to = receiver.local_addr(lp).unwrap();
    receiver.recv_start(lp, |_, _, _, _| {}, |_, _, _| {});
    receiver.unref(lp);
    let sender = bind(lp);
    let done = Rc::new(Cell::new(0));
    let total = 2000;
    for i in 0..total {
        let d = Rc::clone(&done);
        sender.send_to(lp, vec![0; 8192], to, move |lp, res| {
            res.unwrap();
            d.set(d.get() + 1);
            if d.get() == total {
                sender.close(lp);
                receiver.close(lp);
            }
            if i % 2 == 0 {
                boom();
            }
        });
    }
    let panics = run_through_panics(lp, mode);
    assert_eq!(done.get(), total);
    assert_eq!(panics, total / 2);
}

fn lookup(lp: &mut Loop, mode: Mode) {
    // A lookup's callback panics (an address written out: answered from
    // the pending phase; a name: from the pool); the next lookups answer.
    let found = Rc::new(RefCell::new(Vec::new()));
    for host in ["127.0.0.1", "localhost"] {
        lp.lookup(host, Family::V4, |_, res| {
            res.unwrap();
            boom();
        });
        let f = Rc::clone(&found);
        lp.lookup(host, Family::V4, move |_, res| {
            f.borrow_mut().push(res.unwrap());
        });
    }
    let panics = run_through_panics(lp, mode);
    assert_eq!(found.borrow().len(), 2);
    assert_eq!(panics, 2);
}

mod with_handler {
    pub(super) fn on_message(lp: &mut eventide::Loop) {
        super::on_message(lp, super::Mode::Handler);
    }
    pub(super) fn on_sent(lp: &mut eventide::Loop) {
        super::on_sent(lp, super::Mode::Handler);
    }
    pub(super) fn lookup(lp: &mut eventide::Loop) {
        super::lookup(lp, super::Mode::Handler);
    }
    crate::on_every_backend!(on_message, on_sent, lookup);
}

mod unwinding {
    pub(super) fn lookup(lp: &mut eventide::Loop) {
        super::lookup(lp, super::Mode::Unwind);
    }
    crate::on_every_backend!(lookup);
}

#[test]
fn unwinding_out_of_on_message() {
    for &backend in eventide::BackendKind::compiled() {
        if let Some(mut lp) = util::new_loop(backend) {
            on_message(&mut lp, Mode::Unwind);
        }
    }
}

#[test]
fn unwinding_out_of_on_sent() {
    for &backend in eventide::BackendKind::compiled() {
        if let Some(mut lp) = util::new_loop(backend) {
            on_sent(&mut lp, Mode::Unwind);
        }
    }
}
