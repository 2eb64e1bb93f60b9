//! The guide's chapter "UDP" (docs/guide/udp.md): two sockets on loopback,
//! send_to, a connected socket, and a receive error.
//!
//!     cargo run --example guide_udp

use std::net::SocketAddr;

use eventide::dgram::UdpOptions;
use eventide::{Loop, Result};

fn main() -> Result<()> {
    let mut lp = Loop::new()?;
    let any: SocketAddr = "127.0.0.1:0".parse().expect("an address");

    // A port nobody listens on, for the end: bind, note the port, close
    // (the close is done by the time the loop has run).
    let gone = lp.udp_bind(any, UdpOptions::default())?;
    let closed_port = gone.local_addr(&lp)?;
    gone.close(&mut lp);

    // A server that answers each datagram with its length.
    let server = lp.udp_bind(any, UdpOptions::default())?;
    server.recv_start(
        &mut lp,
        |lp, server, data, from| {
            let reply = format!("{} bytes", data.len()).into_bytes();
            server.send_to(lp, reply, from, |_, _| {});
        },
        |_, _, error| eprintln!("server: {error}"),
    );
    let server_addr = server.local_addr(&lp)?;

    // A client connected to the server: `send` needs no address, and only
    // the server's datagrams are received.
    let client = lp.udp_bind(any, UdpOptions::default())?;
    client.connect(&mut lp, server_addr)?;
    let mut replies = 0;
    client.recv_start(
        &mut lp,
        move |lp, client, data, _| {
            println!("reply: {}", String::from_utf8_lossy(data));
            replies += 1;
            if replies == 2 {
                client.close(lp);
                server.close(lp);
            }
        },
        |_, _, error| eprintln!("client: {error}"),
    );
    for text in ["hi", "hello, server"] {
        // A `&'static str` is sent as it is (no copy, no `to_vec()`).
        client.send(&mut lp, text, move |_, sent| {
            println!("sent {text:?}: {} bytes", sent.expect("sent"));
        });
    }
    lp.run()?;

    // A connected socket learns that nobody listens (ICMP port
    // unreachable) through its receive error callback.
    let lonely = lp.udp_bind(any, UdpOptions::default())?;
    lonely.connect(&mut lp, closed_port)?;
    lonely.recv_start(
        &mut lp,
        |_, _, _, _| {},
        |lp, lonely, error| {
            println!("receive error: {} (code {:?})", error, error.code());
            lonely.close(lp);
        },
    );
    lonely.send(&mut lp, b"anyone?", |_, _| {});
    lp.run()
}
