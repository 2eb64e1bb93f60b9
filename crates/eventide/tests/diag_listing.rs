//! Issue 16, "why is the loop alive?": `Loop::handles` lists every live
//! handle with its kind, reference state and registration site, on every
//! backend.

mod util;

use std::time::Duration;

use eventide::Loop;
use eventide::diag::Kind;

/// A timer's entry names the line that set it, and its reference state;
/// an unref'd timer is listed but keeps nothing alive; a cleared one is
/// gone.
fn listing_shows_timer_site_and_ref(lp: &mut Loop) {
    let line = line!() + 1;
    let kept = lp.set_timeout(Duration::from_secs(60), |_| {});
    let unref = lp.set_interval(Duration::from_secs(60), |_, _| {});
    lp.unref_timer(unref);

    let handles = lp.handles();
    let info = handles.timer(kept).expect("the timeout is listed");
    assert_eq!(info.kind, Kind::Timeout);
    assert!(info.referenced && info.keeps_alive);
    let site = info.site.expect("a timer knows its site");
    assert!(site.file().ends_with("tests/diag_listing.rs"), "{site}");
    assert_eq!(site.line(), line);

    let info = handles.timer(unref).expect("an unref'd timer is listed");
    assert_eq!(info.kind, Kind::Interval);
    assert!(!info.referenced && !info.keeps_alive);
    assert_eq!(info.site.unwrap().line(), line + 1);
    assert_eq!(handles.keeping_alive().count(), 1, "{handles}");
    // Display names the site, as why-is-node-running does.
    let text = handles.to_string();
    assert!(text.contains(&format!("diag_listing.rs:{line}")), "{text}");

    lp.clear_timer(kept);
    lp.clear_timer(unref);
    let handles = lp.handles();
    assert!(handles.timer(kept).is_none() && handles.timer(unref).is_none());
    assert_eq!(handles.keeping_alive().count(), 0, "{handles}");
    assert!(!lp.alive());
}

/// Immediates, hooks and work are listed with their sites; `{:#?}` of the
/// loop prints the listing; once run or stopped they vanish.
fn listing_shows_immediates_hooks_work(lp: &mut Loop) {
    let line = line!() + 1;
    let immediate = lp.set_immediate(|_| {});
    let hook = lp.start_hook(eventide::Phase::Check, |_, _| {});
    lp.unref_hook(hook);
    let work = lp.queue_work(|| 7, |_, _| {});
    let _ = work;

    let handles = lp.handles();
    let imm = handles
        .find(Kind::Immediate, immediate.raw())
        .expect("the immediate is listed");
    assert_eq!(imm.site.unwrap().line(), line);
    assert!(imm.keeps_alive);
    let h = handles.find(Kind::Hook, hook.raw()).expect("the hook");
    assert_eq!(h.site.unwrap().line(), line + 1);
    assert!(!h.referenced && !h.keeps_alive);
    let w = handles
        .iter()
        .find(|h| h.kind == Kind::Work)
        .expect("the work");
    assert_eq!(w.site.unwrap().line(), line + 3);
    assert!(w.keeps_alive);
    let debug = format!("{lp:#?}");
    assert!(debug.contains("handles"), "{debug}");
    assert!(debug.contains("Immediate"), "{debug}");

    util::run_within(lp, Duration::from_secs(20));
    lp.stop_hook(hook);
    // What is left: run_within's unref'd watchdog timer, nothing else.
    let handles = lp.handles();
    assert_eq!(handles.keeping_alive().count(), 0, "{handles}");
    assert!(
        handles
            .iter()
            .all(|h| h.kind == Kind::Timeout && !h.referenced),
        "{handles}"
    );
}

/// An unref'd immediate is listed, not keeping the loop alive.
fn unref_immediate_listed_not_alive(lp: &mut Loop) {
    let id = lp.set_immediate(|_| {});
    lp.unref_immediate(id);
    let handles = lp.handles();
    let info = handles.find(Kind::Immediate, id.raw()).expect("listed");
    assert!(!info.referenced && !info.keeps_alive);
    assert!(!lp.alive());
    lp.clear_immediate(id);
    assert!(lp.handles().is_empty());
}

/// Sockets: a listener, a connecting stream and a UDP socket are listed
/// with their sites; an unref'd listener is listed but keeps nothing
/// alive; closed ones vanish once their close has run.
fn listing_shows_sockets(lp: &mut Loop) {
    use eventide::net::ListenOptions;
    let any = "127.0.0.1:0".parse().unwrap();
    let line = line!() + 1;
    let listener = lp.tcp_listen(any, ListenOptions::default(), |_, _| {});
    let listener = listener.expect("listen");
    let addr = listener.local_addr(lp).expect("its address");
    let udp = lp.udp_bind(any, Default::default()).expect("bind");
    let stream = lp.tcp_connect(addr, |_, _| {}).expect("connect");

    let handles = lp.handles();
    let at = |kind: Kind| {
        let listed: Vec<_> = handles.iter().filter(|h| h.kind == kind).collect();
        assert_eq!(listed.len(), 1, "one {kind}: {handles}");
        *listed[0]
    };
    let l = at(Kind::Listener);
    assert_eq!(l.site.expect("the listener's site").line(), line);
    assert!(l.referenced && l.keeps_alive, "{handles}");
    let u = at(Kind::Udp);
    assert_eq!(u.site.expect("the socket's site").line(), line + 3);
    let s = at(Kind::Stream);
    assert_eq!(s.site.expect("the stream's site").line(), line + 4);
    // The connect in flight keeps the loop alive (an I/O operation).
    assert!(
        handles.keeping_alive().any(|h| h.kind == Kind::Io),
        "{handles}"
    );

    stream.close(lp);
    udp.close(lp);
    listener.unref(lp);
    let handles = lp.handles();
    let l = handles
        .iter()
        .find(|h| h.kind == Kind::Listener)
        .expect("an unref'd listener is listed");
    assert!(!l.referenced && !l.keeps_alive, "{handles}");
    listener.close(lp);
    util::run_within(lp, Duration::from_secs(20));
    let handles = lp.handles();
    assert!(
        handles
            .iter()
            .all(|h| !matches!(h.kind, Kind::Listener | Kind::Stream | Kind::Udp | Kind::Io)),
        "{handles}"
    );
    assert_eq!(handles.keeping_alive().count(), 0, "{handles}");
}

/// Whatever is registered, the loop is alive exactly when something in
/// the listing keeps it alive.
fn alive_matches_listing(lp: &mut Loop) {
    let check = |lp: &Loop| {
        let handles = lp.handles();
        assert_eq!(lp.alive(), handles.keeping_alive().count() > 0, "{handles}");
    };
    check(lp);
    let t = lp.set_timeout(Duration::from_secs(60), |_| {});
    check(lp);
    lp.unref_timer(t);
    check(lp);
    let h = lp.start_hook(eventide::Phase::Idle, |_, _| {});
    check(lp);
    lp.unref_hook(h);
    check(lp);
    lp.next_tick(|_| {});
    lp.defer(|_| {});
    check(lp);
    let handle = lp.handle();
    lp.run_mode(eventide::RunMode::NoWait).expect("a turn");
    check(lp);
    drop(handle);
    check(lp);
    lp.close_then(h, |_| {});
    check(lp);
    lp.run_mode(eventide::RunMode::NoWait).expect("a turn");
    check(lp);
    let sender = lp.channel(|_, _: u32| {});
    check(lp);
    drop(sender);
    lp.run_mode(eventide::RunMode::NoWait).expect("a turn");
    check(lp);
    lp.clear_timer(t);
    check(lp);
}

/// A signal listener, an fd watcher and a task are listed with the lines
/// that made them, and vanish once removed, closed or finished; the
/// loop's own internal handles do not stand in for them.
fn listing_shows_signals_sources_tasks(lp: &mut Loop) {
    use eventide::signal::Signal;
    let (mine, _theirs) = std::os::unix::net::UnixStream::pair().expect("a socket pair");
    let line = line!() + 1;
    let signal = lp.on_signal(Signal::USR2, |_, _| {}).expect("listen");
    let watcher = lp.watch_fd(&mine).expect("watch");
    let task = lp.spawn_local(async { 7 });

    let handles = lp.handles();
    let one = |kind: Kind| {
        let listed: Vec<_> = handles.iter().filter(|h| h.kind == kind).collect();
        assert_eq!(listed.len(), 1, "one {kind}: {handles}");
        *listed[0]
    };
    assert_eq!(one(Kind::Signal).site.expect("a site").line(), line);
    assert_eq!(one(Kind::Source).site.expect("a site").line(), line + 1);
    let t = one(Kind::Task);
    assert_eq!(t.site.expect("a site").line(), line + 2);
    assert!(!t.keeps_alive, "a task keeps nothing alive by itself");

    signal.remove(lp);
    watcher.close(lp);
    util::run_within(lp, Duration::from_secs(20));
    assert!(task.is_finished());
    let handles = lp.handles();
    assert!(
        handles
            .iter()
            .all(|h| !matches!(h.kind, Kind::Signal | Kind::Source | Kind::Task)),
        "{handles}"
    );
}

/// An accepted connection is listed with its listener's site (where the
/// server was set up: a connection has no call of its own), and so is one
/// accepted after its listener closed; a listener made from a std one has
/// the site of the `from_std` call.
fn accepted_connections_show_their_listeners_site(lp: &mut Loop) {
    use eventide::net::{ListenOptions, TcpListener, TcpStream};
    use std::cell::Cell;
    use std::rc::Rc;
    let any = "127.0.0.1:0".parse().unwrap();
    let accepted: Rc<Cell<Option<TcpStream>>> = Rc::default();
    let a = Rc::clone(&accepted);
    let line = line!() + 1;
    let listener = lp.tcp_listen(any, ListenOptions::default(), move |_, s| {
        a.set(Some(s.expect("accepted")));
    });
    let listener = listener.expect("listen");
    let addr = listener.local_addr(lp).expect("its address");
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("std bind");
    let std_line = line!() + 1;
    let adopted = TcpListener::from_std(lp, std_listener, |_, _| {}).expect("adopt");
    let client = lp.tcp_connect(addr, |_, _| {}).expect("connect");
    let started = std::time::Instant::now();
    while accepted.get().is_none() {
        assert!(started.elapsed() < Duration::from_secs(10), "no accept");
        lp.run_mode(eventide::RunMode::Once).expect("a turn");
    }
    let server_side = accepted.get().unwrap();
    listener.close(lp);
    adopted.close(lp);
    lp.run_mode(eventide::RunMode::NoWait).expect("a turn");
    let handles = lp.handles();
    let streams: Vec<_> = handles.iter().filter(|h| h.kind == Kind::Stream).collect();
    assert_eq!(streams.len(), 2, "{handles}");
    let sites: Vec<u32> = streams
        .iter()
        .map(|h| h.site.expect("every stream has a site").line())
        .collect();
    // The client's is its connect's; the accepted one's, the listener's.
    assert!(
        sites.contains(&line),
        "no stream at the listener's line {line}: {handles}"
    );
    assert!(
        sites.contains(&(std_line + 1)),
        "the client's connect: {handles}"
    );
    server_side.close(lp);
    client.close(lp);
    util::run_within(lp, Duration::from_secs(20));
}

/// A listener adopted from std is listed with the `from_std` call's site.
fn adopted_listeners_show_their_site(lp: &mut Loop) {
    use eventide::net::TcpListener;
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("std bind");
    let line = line!() + 1;
    let adopted = TcpListener::from_std(lp, std_listener, |_, _| {}).expect("adopt");
    let handles = lp.handles();
    let l = handles
        .iter()
        .find(|h| h.kind == Kind::Listener)
        .expect("the adopted listener is listed");
    let site = l.site.expect("an adopted listener has a site");
    assert!(site.file().ends_with("tests/diag_listing.rs"), "{site}");
    assert_eq!(site.line(), line);
    adopted.close(lp);
    util::run_within(lp, Duration::from_secs(20));
}

on_every_backend!(
    accepted_connections_show_their_listeners_site,
    adopted_listeners_show_their_site,
    listing_shows_signals_sources_tasks,
    listing_shows_sockets,
    alive_matches_listing,
    listing_shows_timer_site_and_ref,
    listing_shows_immediates_hooks_work,
    unref_immediate_listed_not_alive,
);
