//! Shared by the net suites: what a test server does with each stream.

#![allow(dead_code, unreachable_pub)]

pub mod panics;

use eventide::Loop;
use eventide::net::Stream;

/// Echoes every chunk back (a failed write destroys the stream, which
/// ends its reading too) and closes the stream when its peer ends or
/// it fails.
pub fn echo(lp: &mut Loop, stream: impl Into<Stream>) {
    let stream: Stream = stream.into();
    stream.read_start(
        lp,
        |lp, stream, data| {
            stream.write(lp, data.to_vec(), |_, _| {});
        },
        |lp, stream, _| {
            stream.close(lp);
        },
    );
}

/// Reads and drops every chunk; closes the stream when its peer ends or
/// it fails.
pub fn discard(lp: &mut Loop, stream: impl Into<Stream>) {
    let stream: Stream = stream.into();
    stream.read_start(
        lp,
        |_, _, _| {},
        |lp, stream, _| {
            stream.close(lp);
        },
    );
}
