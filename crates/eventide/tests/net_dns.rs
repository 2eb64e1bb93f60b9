//! Name resolution on every backend: lookups of names in /etc/hosts, a
//! name that must fail with Node's message, connects by name, and the
//! pool's rule that a hung lookup never delays file work.

mod util;

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use eventide::net::{Family, ListenOptions};
use eventide::{BackendChoice, Error, Loop, WorkClass};
use util::{Trace, outcome, run_within};

const LIMIT: Duration = Duration::from_secs(30);
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn a_name_in_etc_hosts_resolves_to_its_addresses(lp: &mut Loop) {
    let found = outcome(lp, |lp, done| lp.lookup("localhost", Family::Any, done));
    let found = found.expect("localhost resolves");
    assert!(found.contains(&LOCALHOST), "{found:?}");
    let found = outcome(lp, |lp, done| lp.lookup("localhost", Family::V4, done));
    assert_eq!(found.expect("localhost resolves"), vec![LOCALHOST]);
}

fn an_address_written_out_is_returned_as_it_is(lp: &mut Loop) {
    let found = outcome(lp, |lp, done| lp.lookup("::1", Family::Any, done));
    assert_eq!(found.unwrap(), vec!["::1".parse::<IpAddr>().unwrap()]);
    let found = outcome(lp, |lp, done| lp.lookup("127.0.0.1", Family::V4, done));
    assert_eq!(found.unwrap(), vec![LOCALHOST]);
}

fn assert_not_found(error: &Error, host: &str) {
    assert_eq!(error.code(), Some("ENOTFOUND"), "{error}");
    assert_eq!(error.to_string(), format!("getaddrinfo ENOTFOUND {host}"));
    assert_eq!(error.kind(), std::io::ErrorKind::NotFound);
}

fn a_name_that_does_not_exist_fails_with_nodes_message(lp: &mut Loop) {
    // The .invalid top-level domain never resolves (RFC 6761): the
    // resolver answers at once, without the network.
    let found = outcome(lp, |lp, done| {
        lp.lookup("nosuchhost.invalid", Family::Any, done)
    });
    assert_not_found(&found.unwrap_err(), "nosuchhost.invalid");
}

fn a_name_with_a_nul_byte_is_an_invalid_argument(lp: &mut Loop) {
    let found = outcome(lp, |lp, done| lp.lookup("a\0b", Family::Any, done));
    assert_eq!(found.unwrap_err().code(), Some("ERR_INVALID_ARG_VALUE"));
}

fn connecting_to_a_host_name_resolves_it_first(lp: &mut Loop) {
    let server = lp
        .tcp_listen(
            "127.0.0.1:0".parse().unwrap(),
            ListenOptions::default(),
            |lp, accepted| {
                let stream = accepted.unwrap();
                stream.write(lp, b"hi by name".to_vec(), move |lp, _| {
                    stream.close(lp);
                });
            },
        )
        .unwrap();
    let port = server.local_addr(lp).unwrap().port();
    let got = Rc::new(RefCell::new(Vec::new()));
    let g = Rc::clone(&got);
    lp.tcp_connect_host("localhost", port, move |lp, connected| {
        let stream = connected.expect("connected by name");
        assert_eq!(
            stream.peer_addr(lp).unwrap(),
            SocketAddr::new(LOCALHOST, port)
        );
        stream.read_start(
            lp,
            move |_, _, data| g.borrow_mut().extend_from_slice(data),
            move |lp, stream, end| {
                end.unwrap();
                stream.close(lp);
                server.close(lp);
            },
        );
    });
    run_within(lp, LIMIT);
    assert_eq!(&got.borrow()[..], b"hi by name");
}

fn connecting_to_a_name_that_does_not_exist_fails_with_the_lookups_error(lp: &mut Loop) {
    let result = outcome(lp, |lp, done| {
        lp.tcp_connect_host("nosuchhost.invalid", 80, |lp, res| done(lp, res.map(drop)));
    });
    assert_not_found(&result.unwrap_err(), "nosuchhost.invalid");
}

fn connecting_by_name_to_a_closed_port_is_refused_with_the_address(lp: &mut Loop) {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let result = outcome(lp, |lp, done| {
        lp.tcp_connect_host("localhost", port, |lp, res| done(lp, res.map(drop)));
    });
    let error = result.unwrap_err();
    assert_eq!(error.code(), Some("ECONNREFUSED"));
    assert_eq!(
        error.to_string(),
        format!("connect ECONNREFUSED 127.0.0.1:{port}")
    );
}

fn a_hung_slow_lane_job_does_not_delay_normal_work(lp: &mut Loop) {
    // Four threads: slow work (lookups) may hold two.
    let mut lp = Loop::builder()
        .backend(BackendChoice::Only(lp.backend()))
        .pool_threads(4)
        .build()
        .unwrap();
    let lp = &mut lp;
    let trace = Trace::default();
    let mut releases = Vec::new();
    for _ in 0..2 {
        let (release, hung) = mpsc::channel::<()>();
        releases.push(release);
        let t = trace.clone();
        lp.queue_work_in(
            WorkClass::SlowIo,
            move || hung.recv_timeout(Duration::from_secs(20)).is_ok(),
            move |_, released| {
                assert!(released.unwrap(), "released");
                t.log("hung job done");
            },
        );
    }
    // Behind the hung jobs in the slow lane.
    let t = trace.clone();
    lp.lookup("localhost", Family::V4, move |_, found| {
        assert_eq!(found.unwrap(), vec![LOCALHOST]);
        t.log("lookup");
    });
    // Normal work runs on the other two threads meanwhile.
    let left = Rc::new(RefCell::new(20));
    let releases = Rc::new(RefCell::new(releases));
    for i in 0..20u64 {
        let t = trace.clone();
        let left = Rc::clone(&left);
        let releases = Rc::clone(&releases);
        lp.queue_work(
            move || i * 2,
            move |lp, doubled| {
                assert_eq!(doubled.unwrap(), i * 2);
                *left.borrow_mut() -= 1;
                if *left.borrow() > 0 {
                    return;
                }
                t.log("normal work done");
                // Long enough for a lookup on a free thread to have come
                // back (were it not held in the slow lane).
                let mut releases = releases.take();
                let t = t.clone();
                lp.set_timeout(Duration::from_millis(100), move |_| {
                    t.log("released");
                    for release in releases.drain(..) {
                        release.send(()).unwrap();
                    }
                });
            },
        );
    }
    run_within(lp, LIMIT);
    let tokens = trace.tokens();
    assert_eq!(&tokens[..2], ["normal work done", "released"], "{tokens:?}");
    let lookup = tokens.iter().position(|t| t == "lookup").unwrap();
    let hung = tokens.iter().position(|t| t == "hung job done").unwrap();
    assert!(hung < lookup, "{tokens:?}");
    assert_eq!(tokens.len(), 5);
}

on_every_backend!(
    a_name_in_etc_hosts_resolves_to_its_addresses,
    an_address_written_out_is_returned_as_it_is,
    a_name_that_does_not_exist_fails_with_nodes_message,
    a_name_with_a_nul_byte_is_an_invalid_argument,
    connecting_to_a_host_name_resolves_it_first,
    connecting_to_a_name_that_does_not_exist_fails_with_the_lookups_error,
    connecting_by_name_to_a_closed_port_is_refused_with_the_address,
    a_hung_slow_lane_job_does_not_delay_normal_work,
);
