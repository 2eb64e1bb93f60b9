//! A TCP echo client: sends a few messages to an echo server, checks that
//! each comes back, then half-closes and waits for the server to end.
//!
//!     cargo run --release --example echo_server &
//!     cargo run --release --example echo_client -- 127.0.0.1:7000

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;

use eventide::Loop;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7000".into())
        .parse()?;
    let messages = ["hello", "from", "eventide"];
    let expected: Vec<u8> = messages.concat().into_bytes();
    let echoed = Rc::new(RefCell::new(Vec::new()));
    let failure: Rc<RefCell<Option<eventide::Error>>> = Rc::default();
    let mut lp = Loop::new()?;
    let got = Rc::clone(&echoed);
    let failed = Rc::clone(&failure);
    lp.tcp_connect(addr, move |lp, connected| {
        let stream = match connected {
            Ok(stream) => stream,
            // Nothing to echo: main() reports it once the loop is done.
            Err(error) => return *failed.borrow_mut() = Some(error),
        };
        for message in messages {
            stream.write(lp, message.as_bytes().to_vec(), |_, res| {
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
                    // Everything came back: end our side; the server ends its.
                    stream.shutdown(lp, |_, res| {
                        if let Err(error) = res {
                            eprintln!("shutdown failed: {error}");
                        }
                    });
                }
            },
            |lp, stream, end| {
                if let Err(error) = end {
                    eprintln!("{error}");
                }
                stream.close(lp);
            },
        );
    })?;
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
