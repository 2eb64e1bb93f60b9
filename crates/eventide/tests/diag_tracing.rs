//! Issue 16's `tracing` feature: a span per callback with its kind and
//! registration site, events for errors. A tiny subscriber records what
//! it is given. On every compiled backend.
#![cfg(feature = "tracing")]

mod util;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventide::Loop;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// What the subscriber saw: spans (name, fields) and events (level, fields).
#[derive(Default)]
struct Seen {
    spans: Vec<(String, Vec<(String, String)>)>,
    events: Vec<(tracing::Level, Vec<(String, String)>)>,
}

struct Capture {
    seen: Arc<Mutex<Seen>>,
    next: AtomicU64,
}

#[derive(Default)]
struct Fields(Vec<(String, String)>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut fields = Fields::default();
        span.record(&mut fields);
        let name = span.metadata().name().to_owned();
        self.seen.lock().unwrap().spans.push((name, fields.0));
        Id::from_u64(self.next.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let level = *event.metadata().level();
        self.seen.lock().unwrap().events.push((level, fields.0));
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

fn spans_per_callback_with_site(lp: &mut Loop) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let subscriber = Capture {
        seen: Arc::clone(&seen),
        next: AtomicU64::new(0),
    };
    let line = line!() + 4;
    tracing::subscriber::with_default(subscriber, || {
        lp.set_panic_handler(|_, _| {});
        // The three lines the spans must name: line, line + 1, line + 2.
        lp.set_immediate(|_| panic!("traced"));
        lp.set_timeout(Duration::from_millis(1), |lp| {
            lp.next_tick(|lp| lp.fail(eventide::Error::other("traced failure")));
        });
        let error = lp.run().expect_err("the tick failed the loop");
        assert_eq!(error.to_string(), "traced failure");
    });
    let seen = seen.lock().unwrap();
    let field = |fields: &[(String, String)], name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let callbacks: Vec<(String, String)> = seen
        .spans
        .iter()
        .filter(|(name, _)| name == "eventide::callback")
        .map(|(_, f)| {
            (
                field(f, "kind").unwrap(),
                field(f, "site").unwrap_or_default(),
            )
        })
        .collect();
    let site = |l: u32| format!("diag_tracing.rs:{l}:");
    let at = |kind: &str, l: u32| {
        callbacks
            .iter()
            .any(|(k, s)| k == kind && s.contains(&site(l)))
    };
    assert!(at("immediate", line), "{callbacks:?}");
    assert!(at("timeout", line + 1), "{callbacks:?}");
    assert!(at("next-tick", line + 2), "{callbacks:?}");
    let errors: Vec<&Vec<(String, String)>> = seen
        .events
        .iter()
        .filter(|(level, _)| *level == tracing::Level::ERROR)
        .map(|(_, f)| f)
        .collect();
    assert!(
        errors
            .iter()
            .any(|f| field(f, "message").is_some_and(|m| m.contains("panicked"))),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|f| field(f, "error").is_some_and(|e| e.contains("traced failure"))),
        "{errors:?}"
    );
}

on_every_backend!(spans_per_callback_with_site);
