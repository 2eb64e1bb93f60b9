//! The guide's chapter "TCP and Unix sockets" (docs/guide/net.md): an echo
//! server and its client over TCP on loopback, then the same over a Unix
//! domain socket, on one loop.
//!
//!     cargo run --example guide_net

use std::net::SocketAddr;

use eventide::net::{ListenOptions, Listener, Stream};
use eventide::{Loop, Result};

/// What the server does with each connection, TCP or Unix domain (both
/// convert into a `Stream`): echo every chunk, close when the client ends
/// its side.
fn echo<S: Into<Stream>>(lp: &mut Loop, accepted: Result<S>) {
    let peer: Stream = match accepted {
        Ok(peer) => peer.into(),
        Err(error) => return eprintln!("accept: {error}"),
    };
    peer.read_start(
        lp,
        |lp, peer, data| {
            peer.write(lp, data.to_vec(), |_, _| {});
        },
        |lp, peer, ended| {
            if let Err(error) = ended {
                eprintln!("server: {error}");
            }
            peer.close(lp);
        },
    );
}

/// The client side: send `line`, print the echo, end our side; when the
/// server closes, close the stream and the listener.
fn talk<S: Into<Stream>>(
    lp: &mut Loop,
    connected: Result<S>,
    line: &'static str,
    server: impl Into<Listener>,
) {
    let server = server.into();
    let client: Stream = match connected {
        Ok(client) => client.into(),
        Err(error) => return eprintln!("connect: {error}"),
    };
    client.write(lp, line, |_, _| {});
    client.read_start(
        lp,
        |lp, client, data| {
            println!("  echoed: {:?}", String::from_utf8_lossy(data));
            client.shutdown(lp, |_, _| {});
        },
        move |lp, client, _| {
            client.close(lp);
            server.close_then(lp, |_| println!("  server closed"));
        },
    );
}

fn main() -> Result<()> {
    let mut lp = Loop::new()?;

    // TCP: port 0 lets the system pick a free port.
    let any: SocketAddr = "127.0.0.1:0".parse().expect("an address");
    let server = lp.tcp_listen(any, ListenOptions::default(), echo)?;
    let addr = server.local_addr(&lp)?;
    println!("TCP server on 127.0.0.1 (a free port)");
    lp.tcp_connect(addr, move |lp, c| {
        // TCP's own options are on `TcpStream` only.
        if let Ok(stream) = &c {
            stream.set_nodelay(lp, true).expect("TCP_NODELAY");
        }
        talk(lp, c, "hello over TCP", server)
    })?;
    lp.run()?;

    // A Unix domain socket: the same streams, at a path.
    let path = std::env::temp_dir().join(format!("eventide-guide-{}.sock", std::process::id()));
    let server = lp.unix_listen(&path, ListenOptions::default(), echo)?;
    println!("Unix server on a socket file in the temp directory");
    lp.unix_connect(&path, move |lp, c| {
        talk(lp, c, "hello over a Unix socket", server)
    })?;
    lp.run()?;
    println!("socket file removed on close: {}", !path.exists());

    // Errors read as Node's: nothing listens on port 9 of loopback.
    lp.tcp_connect("127.0.0.1:9".parse().expect("an address"), |_, c| {
        println!("connect to port 9: {}", c.unwrap_err());
    })?;
    lp.run()
}
