//! A UDP echo server and a client on one loop, over loopback.
//!
//!     cargo run --example udp_echo              # 127.0.0.1
//!     cargo run --example udp_echo -- ::1       # IPv6 loopback
//!
//! The server sends every datagram back to its sender; the client sends
//! three, prints each echo with its sender, and when the last comes back
//! closes both sockets, so the loop ends. `EVENTIDE_BACKEND=poll` or
//! `=uring` picks the backend.

use std::cell::Cell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

use eventide::Loop;
use eventide::dgram::UdpOptions;

const MESSAGES: [&str; 3] = ["ping", "pong?", "bye"];

fn main() -> eventide::Result<()> {
    let ip: IpAddr = match std::env::args().nth(1) {
        Some(text) => text
            .parse()
            .expect("an IP address, such as 127.0.0.1 or ::1"),
        None => IpAddr::from([127, 0, 0, 1]),
    };
    let mut lp = Loop::new()?;
    println!("backend: {}", lp.backend());

    let server = lp.udp_bind(SocketAddr::new(ip, 0), UdpOptions::default())?;
    server.recv_start(
        &mut lp,
        |lp, server, data, from| {
            server.send_to(lp, data.to_vec(), from, |_, sent| {
                if let Err(error) = sent {
                    eprintln!("server: {error}");
                }
            });
        },
        |_, _, error| eprintln!("server: {error}"),
    );
    let to = server.local_addr(&lp)?;
    println!("server: listening on {to}");

    let client = lp.udp_bind(SocketAddr::new(ip, 0), UdpOptions::default())?;
    let echoed = Rc::new(Cell::new(0));
    client.recv_start(
        &mut lp,
        move |lp, client, data, from| {
            println!(
                "client: {:?} back from {from}",
                String::from_utf8_lossy(data)
            );
            echoed.set(echoed.get() + 1);
            if echoed.get() == MESSAGES.len() {
                client.close(lp);
                server.close_then(lp, |_| println!("closed"));
            }
        },
        |_, _, error| eprintln!("client: {error}"),
    );
    for message in MESSAGES {
        client.send_to(
            &mut lp,
            message, // a `&'static str`, sent from where it is
            to,
            move |_, sent| match sent {
                Ok(n) => println!("client: sent {message:?} ({n} bytes)"),
                Err(error) => eprintln!("client: {error}"),
            },
        );
    }
    lp.run()
}
