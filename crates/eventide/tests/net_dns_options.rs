//! Node's `dns.lookup` options and `dns.lookupService` on every backend,
//! against names in /etc/hosts and the loopback addresses only (no
//! network here). The expectations are Node 20's answers on this
//! machine (`node -e "require('dns').lookup(...)"`), derived from
//! /etc/hosts where they depend on it.

mod util;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use eventide::Loop;
use eventide::net::{Family, Hints, LookupOptions};
use util::outcome;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const LOCALHOST6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

/// The addresses /etc/hosts gives `name`.
fn hosts(name: &str) -> Vec<IpAddr> {
    let text = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    text.lines()
        .map(|line| line.split('#').next().unwrap())
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let ip = words.next()?.parse::<IpAddr>().ok()?;
            words.any(|w| w == name).then_some(ip)
        })
        .collect()
}

/// A name of /etc/hosts with IPv4 addresses only, if there is one.
fn a_v4_only_name() -> Option<(String, Vec<IpAddr>)> {
    let text = std::fs::read_to_string("/etc/hosts").ok()?;
    text.lines()
        .filter_map(|line| line.split('#').next().unwrap().split_whitespace().nth(1))
        .map(|name| (name.to_owned(), hosts(name)))
        .find(|(_, ips)| !ips.is_empty() && ips.iter().all(IpAddr::is_ipv4))
}

fn one_address_by_default_all_on_request(lp: &mut Loop) {
    let one = outcome(lp, |lp, done| {
        lp.lookup_with("localhost", LookupOptions::default(), done)
    });
    let one = one.expect("localhost resolves");
    assert_eq!(one.len(), 1, "{one:?}");
    let all = outcome(lp, |lp, done| {
        lp.lookup_with("localhost", LookupOptions::default().all(true), done)
    });
    let all = all.expect("localhost resolves");
    assert_eq!(all[0], one[0]);
    assert!(all.contains(&LOCALHOST), "{all:?}");
    let v4 = outcome(lp, |lp, done| {
        let options = LookupOptions::default().family(Family::V4).all(true);
        lp.lookup_with("localhost", options, done)
    });
    assert_eq!(v4.unwrap(), vec![LOCALHOST]);
}

/// Node returns an address written out as it is, whatever the family
/// asked (`lookup('::1', { family: 4 })` gives `::1`), and an empty name
/// as no address.
fn an_address_written_out_ignores_the_family_and_an_empty_name_has_none(lp: &mut Loop) {
    let found = outcome(lp, |lp, done| {
        lp.lookup_with("::1", LookupOptions::default().family(Family::V4), done)
    });
    assert_eq!(found.unwrap(), vec![LOCALHOST6]);
    let found = outcome(lp, |lp, done| {
        let options = LookupOptions::default().family(Family::V6).all(true);
        lp.lookup_with("127.0.0.1", options, done)
    });
    assert_eq!(found.unwrap(), vec![LOCALHOST]);
    let found = outcome(lp, |lp, done| {
        lp.lookup_with("", LookupOptions::default().all(true), done)
    });
    assert_eq!(found.unwrap(), Vec::<IpAddr>::new());
}

/// `lookup(name, { family: 6 })` of a name with IPv4 addresses only:
/// `getaddrinfo ENOTFOUND name`; with `hints: dns.V4MAPPED`, the mapped
/// addresses (Node: `::ffff:127.0.0.1`).
fn v4mapped_maps_a_v4_only_name(lp: &mut Loop) {
    let Some((name, ips)) = a_v4_only_name() else {
        eprintln!("skipped: /etc/hosts has no IPv4-only name");
        return;
    };
    let n = name.clone();
    let found = outcome(lp, move |lp, done| {
        let options = LookupOptions::default().family(Family::V6).all(true);
        lp.lookup_with(&n, options, done)
    });
    let error = found.unwrap_err();
    assert_eq!(error.to_string(), format!("getaddrinfo ENOTFOUND {name}"));
    let n = name.clone();
    let found = outcome(lp, move |lp, done| {
        let options = LookupOptions::default()
            .family(Family::V6)
            .hints(Hints::V4MAPPED)
            .all(true);
        lp.lookup_with(&n, options, done)
    });
    let mapped: Vec<IpAddr> = ips
        .iter()
        .map(|ip| match ip {
            IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
            IpAddr::V6(v6) => IpAddr::V6(*v6),
        })
        .collect();
    let mut found = found.expect("mapped addresses");
    found.dedup();
    assert_eq!(found, mapped);
    let found = outcome(lp, move |lp, done| {
        let options = LookupOptions::default()
            .family(Family::V6)
            .hints(Hints::V4MAPPED | Hints::ALL);
        lp.lookup_with(&name, options, done)
    });
    assert_eq!(found.unwrap(), vec![mapped[0]]);
}

fn a_name_that_does_not_exist_fails_with_nodes_message(lp: &mut Loop) {
    let found = outcome(lp, |lp, done| {
        let options = LookupOptions::default().verbatim(false);
        lp.lookup_with("nosuch.invalid", options, done)
    });
    let error = found.unwrap_err();
    assert_eq!(error.to_string(), "getaddrinfo ENOTFOUND nosuch.invalid");
    assert_eq!(error.code(), Some("ENOTFOUND"));
}

/// Node: `lookupService('127.0.0.1', 22)` gives `localhost ssh`, a port
/// without a service its digits.
fn lookup_service_names_the_host_and_the_service(lp: &mut Loop) {
    let host = hosts("localhost")
        .contains(&LOCALHOST)
        .then_some("localhost");
    let found = outcome(lp, |lp, done| lp.lookup_service(LOCALHOST, 22, done));
    let (name, service) = found.expect("127.0.0.1 has a name");
    if let Some(host) = host {
        assert_eq!(name, host);
    }
    let ssh_known = std::fs::read_to_string("/etc/services").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("ssh") && l.contains("22/tcp"))
    });
    if ssh_known {
        assert_eq!(service, "ssh");
    }
    let found = outcome(lp, |lp, done| lp.lookup_service(LOCALHOST, 65000, done));
    assert_eq!(found.unwrap().1, "65000");
}

/// An address without a name: Node's `getnameinfo ENOTFOUND ::1` (here,
/// where /etc/hosts does not name ::1).
fn lookup_service_of_an_address_without_a_name_fails_as_nodes(lp: &mut Loop) {
    if !hosts("localhost").contains(&LOCALHOST6) && hosts("ip6-localhost").is_empty() {
        let found = outcome(lp, |lp, done| lp.lookup_service(LOCALHOST6, 22, done));
        let error = found.unwrap_err();
        assert_eq!(error.to_string(), "getnameinfo ENOTFOUND ::1");
        assert_eq!(error.code(), Some("ENOTFOUND"));
    } else {
        let found = outcome(lp, |lp, done| lp.lookup_service(LOCALHOST6, 22, done));
        assert!(!found.expect("::1 is named").0.is_empty());
    }
}

on_every_backend!(
    one_address_by_default_all_on_request,
    an_address_written_out_ignores_the_family_and_an_empty_name_has_none,
    v4mapped_maps_a_v4_only_name,
    a_name_that_does_not_exist_fails_with_nodes_message,
    lookup_service_names_the_host_and_the_service,
    lookup_service_of_an_address_without_a_name_fails_as_nodes,
);
