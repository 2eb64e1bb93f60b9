//! The guide's chapter "Backends" (docs/guide/backends.md): which backend a
//! loop runs on, choosing one, and what io_uring does natively.
//!
//!     cargo run --example guide_backends
//!     EVENTIDE_BACKEND=epoll cargo run --example guide_backends

use eventide::{BackendChoice, BackendKind, Loop};

fn main() {
    // Loop::new(): EVENTIDE_BACKEND decides (uring, epoll, poll, auto;
    // unset or empty is auto: io_uring if the system allows it, else epoll,
    // else polling).
    match Loop::new() {
        Ok(mut lp) => {
            println!("Loop::new() runs on: {}", lp.backend());
            println!(
                "file operations io_uring runs natively: {:?}",
                lp.fs().native_ops()
            );
        }
        Err(error) => println!("Loop::new() failed: {error}"),
    }

    // The builder decides in code, whatever the environment says.
    for kind in [BackendKind::Uring, BackendKind::Epoll, BackendKind::Poll] {
        match Loop::builder().backend(BackendChoice::Only(kind)).build() {
            Ok(lp) => println!("Only({kind}): runs on {}", lp.backend()),
            Err(error) => println!("Only({kind}): refused: {error}"),
        }
    }
    let lp = Loop::builder()
        .backend(BackendChoice::Auto)
        .pool_threads(2)
        .build();
    match lp {
        Ok(lp) => println!("Auto with 2 pool threads: {}", lp.backend()),
        Err(error) => println!("Auto refused: {error}"),
    }
}
