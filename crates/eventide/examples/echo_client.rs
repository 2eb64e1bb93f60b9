//! An echo client: sends a few messages to an echo server, checks that
//! each comes back, then half-closes and waits for the server to end. The
//! server is `host:port` (a name is looked up first, as Node's
//! `net.connect(port, host)` does) or the path of a Unix domain socket.
//!
//!     cargo run --release --example echo_server &
//!     cargo run --release --example echo_client -- 127.0.0.1:7000
//!     cargo run --release --example echo_client -- localhost:7000

use std::cell::RefCell;
use std::rc::Rc;

use eventide::Loop;
use eventide::net::Stream;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7000".into());
    let messages = ["hello", "from", "eventide"];
    let expected: Vec<u8> = messages.concat().into_bytes();
    let echoed = Rc::new(RefCell::new(Vec::new()));
    let failure: Rc<RefCell<Option<eventide::Error>>> = Rc::default();
    let mut lp = Loop::new()?;
    let got = Rc::clone(&echoed);
    let failed = Rc::clone(&failure);
    // Either kind of stream, served as the `Stream` both convert into.
    let on_connect = move |lp: &mut Loop, connected: eventide::Result<Stream>| {
        let stream = match connected {
            Ok(stream) => stream,
            // Nothing to echo: main() reports it once the loop is done.
            Err(error) => return *failed.borrow_mut() = Some(error),
        };
        for message in messages {
            // A `&'static str` is written as it is: no `to_vec()`.
            stream.write(lp, message, |_, res| {
                if let Err(error) = res {
                    eprintln!("write failed: {error}");
                }
            });
        }
        let want = expected.len();
        stream.read_start(
            lp,
            move |lp, stream, data| {
                got.borrow_mut().extend_from_slice(data);
                println!("echoed: {:?}", String::from_utf8_lossy(data));
                if got.borrow().len() >= want {
                    // Everything came back: end our side (Node's
                    // `socket.end()`); the stream closes once the server
                    // has ended its side too.
                    stream.end(lp);
                }
            },
            |_, _, end| {
                // After an error the stream is closed already; after the
                // server's end it closes by itself.
                if let Err(error) = end {
                    eprintln!("{error}");
                }
            },
        );
    };
    if server.contains('/') {
        lp.unix_connect(&server, move |lp, c| on_connect(lp, c.map(Stream::from)))?;
    } else {
        let (host, port) = server
            .rsplit_once(':')
            .ok_or("expected host:port or a path")?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        lp.tcp_connect_host(host, port.parse()?, move |lp, c| {
            on_connect(lp, c.map(Stream::from));
        });
    }
    lp.run()?;
    if let Some(error) = failure.take() {
        eprintln!("{error}");
        std::process::exit(1);
    }
    let echoed = echoed.take();
    if echoed != messages.concat().as_bytes() {
        return Err(format!("the echo differs: {:?}", String::from_utf8_lossy(&echoed)).into());
    }
    println!("all {} bytes came back", echoed.len());
    Ok(())
}
