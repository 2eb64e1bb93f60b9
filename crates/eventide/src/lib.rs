//! eventide: the Node.js asynchronous model in Rust.
//!
//! One thread runs a [`Loop`] that calls your callbacks. Each callback
//! receives the loop, so it can start more work without globals or
//! `Rc<RefCell<…>>`; timers live in a hierarchical timer wheel; I/O goes to
//! the operating system (io_uring on Linux, readiness polling elsewhere), so
//! the loop never blocks; work the OS cannot do asynchronously goes to a
//! small pool of threads (4 by default) and comes back as a callback.
//!
//! ```
//! use std::time::Duration;
//!
//! // The program's state lives on the loop: every callback reaches it
//! // through the `&mut Loop` it is given.
//! #[derive(Default)]
//! struct Trace(Vec<&'static str>);
//! fn log(lp: &mut eventide::Loop, what: &'static str) {
//!     lp.state_mut::<Trace>().expect("inserted").0.push(what);
//! }
//!
//! let mut lp = eventide::Loop::new()?;
//! lp.insert_state(Trace::default());
//! lp.set_timeout(Duration::from_millis(1), |lp| log(lp, "timeout"));
//! lp.set_immediate(|lp| {
//!     log(lp, "immediate");
//!     lp.next_tick(|lp| log(lp, "tick after immediate"));
//! });
//! lp.queue_work(|| (1..=10u64).product::<u64>(), |lp, result| match result {
//!     Ok(product) if product == 3_628_800 => log(lp, "work"),
//!     // A callback that cannot go on ends run() with its error.
//!     Ok(product) => lp.fail(eventide::Error::other(format!("wrong product {product}"))),
//!     Err(error) => lp.fail(error),
//! });
//! lp.run()?;
//! let trace = &lp.state::<Trace>().expect("inserted").0;
//! assert!(trace.contains(&"timeout") && trace.contains(&"work"));
//! let immediate = trace.iter().position(|s| *s == "immediate").unwrap();
//! assert_eq!(trace[immediate + 1], "tick after immediate");
//! # Ok::<(), eventide::Error>(())
//! ```
//!
//! # State, errors and handles
//!
//! - State shared by callbacks goes on the loop ([`Loop::insert_state`],
//!   [`Loop::state_mut`], [`Loop::with_state`]), one value per type.
//! - A callback that cannot go on calls [`Loop::fail`]: [`Loop::run`]
//!   returns its error as soon as it returns.
//! - Handles are small `Copy` keys ([`TimerId`], [`WorkId`], streams,
//!   sockets) used with the loop: `lp.clear_timer(id)`. A key whose handle
//!   is gone, or that another loop made, names nothing: a no-op or an
//!   error, never another handle.
//!
//! # A turn of the loop
//!
//! Every turn runs these phases, in libuv's order:
//!
//! 1. **timers**: every timer due by the turn's cached time, in (deadline,
//!    start order);
//! 2. **pending**: callbacks deferred from the previous turn ([`Loop::defer`]:
//!    results known at once, so that no callback runs inside the call that
//!    asked for it);
//! 3. **idle** and 4. **prepare** hooks ([`Loop::start_hook`]);
//! 5. **poll**: wait for I/O up to the next timer's deadline (not at all
//!    when immediates, pending callbacks or idle hooks are waiting), then
//!    run what arrived: finished pool work, closures posted by
//!    [`LoopHandle`]s, values sent on [`Sender`]s ([`Loop::channel`]), and
//!    I/O completions;
//! 6. **check**: check hooks, then the immediates queued before the phase
//!    began ([`Loop::set_immediate`]);
//! 7. **close**: close callbacks ([`Loop::close_then`]).
//!
//! After every callback the next-tick queue ([`Loop::next_tick`]) and the
//! microtask queue ([`Loop::queue_microtask`]) drain completely, as Node's
//! do. Like `uv_run`, [`Loop::run`] runs the timers once before the first
//! turn, so a timer already due when the loop starts runs before the first
//! poll.
//!
//! # Liveness
//!
//! [`Loop::run`] returns when nothing keeps the loop alive: no referenced
//! timer, immediate, hook or work in flight, no closing handle, no open
//! [`LoopHandle`] or channel [`Sender`]. Unreferenced timers ([`Loop::unref_timer`]) still fire
//! while the loop runs, but do not keep it running.
//!
//! # The file system
//!
//! [`fs`] is Node's `fs` callback API: `lp.fs().read_file(path, |lp, res| ..)`.
//! On io_uring the kernel performs the operations it has; the rest, and
//! everything on polling, runs on the pool, with the same results and
//! errors worded as Node's.
//!
//! # Networking
//!
//! [`net`] is TCP and Unix domain stream sockets on the loop, libuv's
//! stream model with Node's errors: [`Loop::tcp_listen`] and
//! [`Loop::unix_listen`] call back with each accepted [`net::TcpStream`]
//! or [`net::UnixStream`],
//! [`Loop::tcp_connect`] and [`Loop::unix_connect`] with the connected
//! one; streams read (`read_start`/`read_stop`), write through a queue
//! with Node's backpressure (a high-water mark and `drain`), time out when
//! idle, shut down their writing side and close, all through small `Copy`
//! handles. [`Loop::lookup`] is Node's `dns.lookup`: getaddrinfo on the
//! pool's slow lane, so a hung resolver never delays file work;
//! [`Loop::tcp_connect_host`] connects to a host name through it.
//!
//! [`dgram`] is UDP on the loop, Node's `dgram` on libuv's `uv_udp_t`:
//! [`Loop::udp_bind`] makes a [`dgram::UdpSocket`] that receives
//! (`recv_start`/`recv_stop`), sends datagrams through a queue, connects to
//! one peer, joins multicast groups and sets TTLs, with Node's errors
//! (`bind EADDRINUSE 127.0.0.1:41234`).
//!
//! # Any descriptor, and sources of other crates
//!
//! [`source`] brings what the loop does not know to it: [`Loop::watch_fd`]
//! watches a descriptor you own for readiness (libuv's `uv_poll_t`:
//! readable, writable, priority, disconnect; level-triggered), and
//! [`source::EventSource`] lets another crate add its own kind of source,
//! built on the same reactor operations as the loop's sockets
//! ([`Loop::insert_source`]).
//!
//! # Signals
//!
//! [`signal`] is Node's `process.on('SIGINT', f)`: [`Loop::on_signal`]
//! adds a listener that runs on the loop once for every delivery of the
//! signal to the process. The first loop also ignores SIGPIPE, as Node
//! does: a write to a pipe or socket without a reader fails with `EPIPE`.
//!
//! # Backends
//!
//! The cargo features `uring`, `epoll` (both Linux only) and `poll` (all on
//! by default) compile the reactor backends. At run time the loop takes
//! io_uring if the system allows it and falls back to epoll (then polling)
//! otherwise (logged once); [`LoopBuilder::backend`] decides instead,
//! and the `EVENTIDE_BACKEND` variable (`uring`, `epoll`, `poll`, `auto`)
//! overrides both. [`Loop::backend`] says which one runs.
//!
//! The optional feature `hyper` adds `eventide::hyper`: hyper 1.x's
//! runtime traits (I/O, executor, timer) on the loop.

pub mod abort;
mod channel;
mod clock;
pub mod dgram;
pub mod diag;
mod error;
mod event_loop;
pub mod fs;
mod handle;
mod hooks;
#[cfg(feature = "hyper")]
pub mod hyper;
mod io;
pub mod metrics;
pub mod net;
pub mod process;
pub mod signal;
mod slab;
pub mod source;
pub mod task;
mod timer_callback;
mod timers;
mod work;

pub use channel::{SendError, Sender};
pub use clock::{ClockSource, LoopTime};
pub use error::{Error, Result};
pub use event_loop::{Loop, LoopBuilder, RunMode};
pub use eventide_reactor::uring_ext::UringInfo;
pub use eventide_reactor::{BackendChoice, BackendKind};
pub use handle::{LoopGone, LoopHandle};
pub use hooks::{Handle, HookId, ImmediateId, Phase};
pub use task::{JoinHandle, TaskError};
pub use timers::TimerId;
pub use work::{SharedPool, WorkClass, WorkId};
