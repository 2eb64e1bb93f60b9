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

on_every_backend!(
    listing_shows_timer_site_and_ref,
    listing_shows_immediates_hooks_work,
    unref_immediate_listed_not_alive,
);
