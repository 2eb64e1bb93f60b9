//! Seeing inside the loop: what keeps it alive ([`Loop::handles`], libuv's
//! `uv_walk`, Node's why-is-node-running), the blocked-loop detector
//! ([`LoopBuilder::detect_blocking`]) and, with the `tracing` feature, a
//! span per callback. The design and its cost are in `docs/diagnostics.md`.
//!
//! # Registration sites
//!
//! The public calls that register a callback (`set_timeout`,
//! `set_interval`, `set_immediate`, `start_hook`, `next_tick`,
//! `queue_work`, ...) are `#[track_caller]`: each handle keeps the
//! [`Site`] of the call that made it, a `&'static Location` (one pointer),
//! shown in the listing and in the detector's reports.
//!
//! # The detector
//!
//! With the detector on, the loop thread writes, per callback, into
//! memory a watchdog thread samples: the callback's site pointer, a
//! counter, and a sequence word (the counter and the callback's kind)
//! when it starts; 0 when it returns. No clock is read per callback. The
//! watchdog samples every tenth of the threshold; a sequence word it sees
//! unchanged for the threshold is one callback running that long: it
//! reports once (so far), and again when the word changes (in all). Off,
//! the loop stores nothing per callback.

use std::fmt;
use std::panic::Location;
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering, fence};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::event_loop::{Loop, LoopBuilder};

/// Where a handle or request was registered: the file, line and column of
/// the call (`#[track_caller]`), as [`std::panic::Location::caller`] gives
/// it. A `&'static`, one pointer wide.
pub type Site = &'static Location<'static>;

/// What a handle, request or callback is.
///
/// Non-exhaustive: kinds may be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[repr(u8)]
pub enum Kind {
    /// A timeout ([`Loop::set_timeout`]).
    Timeout = 1,
    /// An interval ([`Loop::set_interval`]).
    Interval,
    /// An immediate ([`Loop::set_immediate`]).
    Immediate,
    /// An idle, prepare or check hook ([`Loop::start_hook`]).
    Hook,
    /// A next-tick ([`Loop::next_tick`]).
    NextTick,
    /// A microtask ([`Loop::queue_microtask`]) or a task's poll.
    Microtask,
    /// A deferred callback of the pending phase ([`Loop::defer`]).
    Pending,
    /// Work on the pool, and its `after` callback ([`Loop::queue_work`]).
    Work,
    /// A close callback ([`Loop::close_then`]).
    Close,
    /// A closure posted from another thread ([`crate::LoopHandle::post`]),
    /// or an open [`crate::LoopHandle`].
    Posted,
    /// A channel's receiver ([`Loop::channel`]).
    Channel,
    /// A task ([`Loop::spawn_local`]).
    Task,
    /// An I/O operation in flight on the reactor (a file system request,
    /// a socket's wait) and its completion callback.
    Io,
    /// A TCP or Unix stream.
    Stream,
    /// A TCP or Unix listener.
    Listener,
    /// A UDP socket.
    Udp,
    /// A signal listener.
    Signal,
    /// An event source ([`Loop::watch_fd`], [`Loop::insert_source`]).
    Source,
    /// A file watcher (`fs().watch`, `fs().watch_file`).
    Watch,
    /// A callback the loop does not classify further.
    Callback,
}

impl Kind {
    /// The kind's name, in lower case: `"timeout"`, `"immediate"`, ...
    pub fn name(self) -> &'static str {
        match self {
            Kind::Timeout => "timeout",
            Kind::Interval => "interval",
            Kind::Immediate => "immediate",
            Kind::Hook => "hook",
            Kind::NextTick => "next-tick",
            Kind::Microtask => "microtask",
            Kind::Pending => "pending",
            Kind::Work => "work",
            Kind::Close => "close",
            Kind::Posted => "posted",
            Kind::Channel => "channel",
            Kind::Task => "task",
            Kind::Io => "io",
            Kind::Stream => "stream",
            Kind::Listener => "listener",
            Kind::Udp => "udp",
            Kind::Signal => "signal",
            Kind::Source => "source",
            Kind::Watch => "watch",
            Kind::Callback => "callback",
        }
    }

    const ALL: [Kind; 20] = [
        Kind::Timeout,
        Kind::Interval,
        Kind::Immediate,
        Kind::Hook,
        Kind::NextTick,
        Kind::Microtask,
        Kind::Pending,
        Kind::Work,
        Kind::Close,
        Kind::Posted,
        Kind::Channel,
        Kind::Task,
        Kind::Io,
        Kind::Stream,
        Kind::Listener,
        Kind::Udp,
        Kind::Signal,
        Kind::Source,
        Kind::Watch,
        Kind::Callback,
    ];

    fn from_u8(value: u8) -> Kind {
        Kind::ALL
            .get(usize::from(value).wrapping_sub(1))
            .copied()
            .unwrap_or(Kind::Callback)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One live handle or request of a loop, as [`Loop::handles`] lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HandleInfo {
    /// What it is.
    pub kind: Kind,
    /// Its number among the loop's handles of its kind (for timers, the
    /// same as [`crate::TimerId`]'s; for kinds the loop only counts, such
    /// as open [`crate::LoopHandle`]s, 0, 1, 2, ...).
    pub id: u64,
    /// Whether it is referenced (libuv's `uv_has_ref`): an unreferenced
    /// handle is listed, but does not keep the loop alive.
    pub referenced: bool,
    /// Whether it keeps the loop alive now. A referenced handle that is
    /// not active (a timer whose callback is running, say) does not.
    pub keeps_alive: bool,
    /// Where it was registered, when the loop knows it.
    pub site: Option<Site>,
}

impl fmt::Display for HandleInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} #{}", self.kind, self.id)?;
        if !self.referenced {
            f.write_str(" (unref)")?;
        }
        match self.site {
            Some(site) => write!(f, " at {site}"),
            None => f.write_str(" at an unknown site"),
        }
    }
}

/// Every live handle and request of a loop ([`Loop::handles`]): what
/// keeps it alive, and what does not.
///
/// `Display` prints it as why-is-node-running does: the ones that keep the
/// loop alive first, each with its registration site.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Handles {
    list: Vec<HandleInfo>,
}

impl Handles {
    /// The handles and requests that keep the loop alive.
    pub fn keeping_alive(&self) -> impl Iterator<Item = &HandleInfo> {
        self.list.iter().filter(|h| h.keeps_alive)
    }

    /// The entry for the handle of `kind` numbered `id`, if it is live.
    pub fn find(&self, kind: Kind, id: u64) -> Option<&HandleInfo> {
        self.list.iter().find(|h| h.kind == kind && h.id == id)
    }

    /// The entry for a timer, if it is live.
    pub fn timer(&self, id: crate::TimerId) -> Option<&HandleInfo> {
        let raw = id.raw();
        self.list
            .iter()
            .find(|h| matches!(h.kind, Kind::Timeout | Kind::Interval) && h.id == raw)
    }

    /// Takes the list out.
    pub fn into_vec(self) -> Vec<HandleInfo> {
        self.list
    }
}

impl std::ops::Deref for Handles {
    type Target = [HandleInfo];

    fn deref(&self) -> &[HandleInfo] {
        &self.list
    }
}

impl fmt::Display for Handles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let alive = self.keeping_alive().count();
        writeln!(
            f,
            "{alive} handle(s) keep the loop alive{}",
            if alive == 0 { "" } else { ":" }
        )?;
        for h in self.keeping_alive() {
            writeln!(f, "  {h}")?;
        }
        let others = self.list.len() - alive;
        if others > 0 {
            writeln!(f, "{others} more do not:")?;
            for h in self.list.iter().filter(|h| !h.keeps_alive) {
                writeln!(f, "  {h}")?;
            }
        }
        Ok(())
    }
}

/// Collects the listing; each part of the loop adds its own.
pub(crate) struct Listing {
    pub(crate) list: Vec<HandleInfo>,
}

impl Listing {
    /// Adds one entry.
    pub(crate) fn add(
        &mut self,
        kind: Kind,
        id: u64,
        referenced: bool,
        keeps_alive: bool,
        site: Option<Site>,
    ) {
        self.list.push(HandleInfo {
            kind,
            id,
            referenced,
            keeps_alive,
            site,
        });
    }
}

impl Loop {
    /// Every live handle and request of the loop, and which of them keep
    /// it alive (libuv's `uv_walk`, Node's why-is-node-running): timers,
    /// immediates, hooks, pool work, tasks, closing handles, open
    /// [`crate::LoopHandle`]s and channels, I/O operations in flight,
    /// sockets, watchers, signal listeners and sources, with their kind,
    /// number, reference state and, where known, registration site.
    ///
    /// ```
    /// let mut lp = eventide::Loop::new()?;
    /// let t = lp.set_timeout(std::time::Duration::from_secs(60), |_| {});
    /// let handles = lp.handles();
    /// let info = handles.timer(t).expect("listed");
    /// assert!(info.keeps_alive);
    /// assert_eq!(info.site.unwrap().file(), file!());
    /// println!("{handles}");
    /// lp.clear_timer(t);
    /// assert!(lp.handles().timer(t).is_none());
    /// # Ok::<(), eventide::Error>(())
    /// ```
    ///
    /// It walks every table: O(handles), for a human or a test, not a hot
    /// path. `{:#?}` of the loop prints it too.
    pub fn handles(&self) -> Handles {
        let mut listing = Listing { list: Vec::new() };
        self.list_timers(&mut listing);
        self.list_hooks(&mut listing);
        self.list_work(&mut listing);
        self.list_loop(&mut listing);
        self.list_io(&mut listing);
        Handles { list: listing.list }
    }

    /// The threshold of the blocked-loop detector, or `None` when it is
    /// off ([`LoopBuilder::detect_blocking`]).
    pub fn blocking_threshold(&self) -> Option<Duration> {
        self.detector.as_ref().map(|d| d.threshold)
    }

    /// Before a callback runs: marks it as running for the detector
    /// (two relaxed stores and a release store; nothing when it is off).
    #[inline(always)]
    pub(crate) fn diag_begin(&self, call: Call) {
        if let Some(detector) = &self.detector {
            detector.watch.begin(call.kind, call.site);
        }
    }

    /// After a callback (returned or panicked): the loop is between
    /// callbacks again (one store; nothing when the detector is off).
    #[inline(always)]
    pub(crate) fn diag_end(&self) {
        if let Some(detector) = &self.detector {
            detector.watch.end();
        }
    }

    /// Says what the next callback the loop runs is: its kind and site,
    /// for the detector's reports and the tracing spans, read by the next
    /// `Loop::guarded` or `Loop::catching`. Nothing (not even a store)
    /// when neither is on. (The hot paths pass the same to
    /// `Loop::guarded_as` or `Loop::catching_as` instead.)
    #[inline(always)]
    pub(crate) fn note_call(&mut self, kind: Kind, site: Option<Site>) {
        if !matches!(self.call_mode, CallMode::Plain) {
            self.call = Call { kind, site };
        }
    }

    /// What `note_call` said, taken (the next callback's own), or the
    /// default when no one is listening.
    #[inline(always)]
    pub(crate) fn take_call(&mut self) -> Call {
        if matches!(self.call_mode, CallMode::Plain) {
            Call::default()
        } else {
            std::mem::take(&mut self.call)
        }
    }
}

/// The span of a callback (`tracing` feature).
#[cfg(feature = "tracing")]
pub(crate) fn callback_span(call: Call) -> tracing::Span {
    match call.site {
        Some(site) => tracing::trace_span!(
            "eventide::callback",
            kind = call.kind.name(),
            site = %site
        ),
        None => tracing::trace_span!("eventide::callback", kind = call.kind.name()),
    }
}

/// Where the loop's I/O handles were registered, by (kind, number): a side
/// table, so that the sockets' own slots stay as small as they are (a
/// stream's is 32 bytes, W10). Filled by the registering calls, read by
/// the listing and (only with the detector or tracing on) by dispatch.
/// Entries of closed handles are dropped when the table has doubled since
/// the last sweep.
#[derive(Default)]
pub(crate) struct Sites {
    map: std::collections::HashMap<(Kind, u64), Site, BuildIdHasher>,
    sweep_at: usize,
}

/// A hasher for the site table's keys, a kind and a slot number the loop
/// made (no input from outside, nothing to defend against): each word
/// folded in with a rotate, a xor and a multiply by an odd constant (the
/// dispatch of an I/O completion looks a site up with the detector on).
#[derive(Default, Clone, Copy)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u8(&mut self, value: u8) {
        self.write_u64(u64::from(value));
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = (self.0.rotate_left(5) ^ value).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn write_usize(&mut self, value: usize) {
        self.write_u64(value as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type BuildIdHasher = std::hash::BuildHasherDefault<IdHasher>;

impl Loop {
    /// Records where the handle of `kind` numbered `id` was registered.
    pub(crate) fn remember_site(&mut self, kind: Kind, id: u64, site: Site) {
        self.sites.map.insert((kind, id), site);
        if self.sites.map.len() >= self.sites.sweep_at.max(64) {
            let live: std::collections::HashSet<(Kind, u64), BuildIdHasher> =
                self.handles().iter().map(|h| (h.kind, h.id)).collect();
            self.sites.map.retain(|key, _| live.contains(key));
            self.sites.sweep_at = self.sites.map.len() * 2;
        }
    }

    /// Where the handle of `kind` numbered `id` was registered, if known.
    pub(crate) fn site_of(&self, kind: Kind, id: u64) -> Option<Site> {
        self.sites.map.get(&(kind, id)).copied()
    }

    /// Where the handle of `kind` numbered `id` was registered, for a
    /// callback about to run: looked up only when the detector or tracing
    /// is on.
    #[inline(always)]
    pub(crate) fn call_site_of(&self, kind: Kind, id: u64) -> Option<Site> {
        if matches!(self.call_mode, CallMode::Plain) {
            None
        } else {
            self.site_of(kind, id).or_else(|| match kind {
                // An accepted connection: its listener's site, as listed.
                Kind::Stream => self.accepted_site(id),
                _ => None,
            })
        }
    }

    /// [`Loop::note_call`] for an I/O handle, its site from the side table
    /// (looked up only when the detector or tracing is on).
    #[inline]
    pub(crate) fn note_call_of(&mut self, kind: Kind, id: u64) {
        if !matches!(self.call_mode, CallMode::Plain) {
            let site = self.site_of(kind, id);
            self.call = Call { kind, site };
        }
    }
}

/// The callback about to run, as far as the loop knows (`Loop::note_call`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Call {
    pub(crate) kind: Kind,
    pub(crate) site: Option<Site>,
}

impl Default for Call {
    fn default() -> Call {
        Call {
            kind: Kind::Callback,
            site: None,
        }
    }
}

/// A report of the blocked-loop detector: one callback ran longer than
/// the threshold. Each incident is reported twice: once while the
/// callback still runs (`finished == false`, `elapsed` so far), once when
/// it returns or panics (`finished == true`, `elapsed` in all).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BlockedReport {
    /// What the callback is.
    pub kind: Kind,
    /// Where it was registered, when the loop knows it.
    pub site: Option<Site>,
    /// How long it has run so far (`finished == false`) or ran in all.
    /// Measured by the watchdog's samples, every tenth of the threshold:
    /// from the first that saw it running (up to a tenth short) to the
    /// first that saw it over (up to a tenth long).
    pub elapsed: Duration,
    /// Whether the callback has returned (or panicked).
    pub finished: bool,
    /// The detector's threshold.
    pub threshold: Duration,
}

impl fmt::Display for BlockedReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "eventide: the loop was blocked by a {} callback",
            self.kind
        )?;
        match self.site {
            Some(site) => write!(f, " registered at {site}")?,
            None => f.write_str(" (registration site unknown)")?,
        }
        let ms = self.elapsed.as_secs_f64() * 1e3;
        if self.finished {
            write!(f, ": it ran for {ms:.0} ms in all")?;
        } else {
            write!(f, ": it has run for {ms:.0} ms so far")?;
        }
        write!(f, " (threshold {} ms)", self.threshold.as_secs_f64() * 1e3)
    }
}

/// The user's hook for reports ([`LoopBuilder::on_blocked`]).
type ReportHook = Arc<dyn Fn(&BlockedReport) + Send + Sync>;

/// The detector's settings, kept in the builder.
#[derive(Clone)]
pub(crate) struct BlockingConfig {
    threshold: Duration,
    hook: Option<ReportHook>,
}

impl fmt::Debug for BlockingConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockingConfig")
            .field("threshold", &self.threshold)
            .field("hook", &self.hook.is_some())
            .finish()
    }
}

/// The detector's default threshold, 100 ms.
pub const DEFAULT_BLOCKING_THRESHOLD: Duration = Duration::from_millis(100);

impl LoopBuilder {
    /// Turns the blocked-loop detector on: a watchdog thread notices one
    /// callback running longer than `threshold` ([`DEFAULT_BLOCKING_THRESHOLD`]
    /// is 100 ms) and reports it, once per incident, through `log` (a
    /// warning) and the hook of [`LoopBuilder::on_blocked`]: its kind, its
    /// registration site, how long it has run so far, and when it returns,
    /// how long it ran in all ([`BlockedReport`]).
    ///
    /// Off (the default) it costs nothing. On, the loop thread writes
    /// four words per callback (no clock read, no read-modify-write), and
    /// the watchdog wakes every tenth of the threshold (at least 1 ms). A
    /// threshold below 1 ms is 1 ms.
    pub fn detect_blocking(mut self, threshold: Duration) -> Self {
        let threshold = threshold.max(Duration::from_millis(1));
        let hook = self.blocking.take().and_then(|c| c.hook);
        self.blocking = Some(BlockingConfig { threshold, hook });
        self
    }

    /// Calls `hook` with each report of the blocked-loop detector (besides
    /// logging it), and turns the detector on with the default threshold
    /// if [`LoopBuilder::detect_blocking`] did not. It is called on the
    /// watchdog thread (the loop may be blocked), not on the loop's.
    pub fn on_blocked(mut self, hook: impl Fn(&BlockedReport) + Send + Sync + 'static) -> Self {
        let threshold = self
            .blocking
            .as_ref()
            .map_or(DEFAULT_BLOCKING_THRESHOLD, |c| c.threshold);
        self.blocking = Some(BlockingConfig {
            threshold,
            hook: Some(Arc::new(hook)),
        });
        self
    }
}

/// What the loop thread and the watchdog share. Never freed: a loop's
/// hot path holds it across a callback as a `&'static` (a callback may
/// even drop its loop), and a dropped detector's is reused by the next
/// (`SPARE`), so there are never more than loops with detectors alive
/// at once.
pub(crate) struct Watch {
    /// The running callback's sequence word: a counter (bits 8..64) and
    /// its kind (bits 0..8); 0 between callbacks. Written by the loop
    /// thread only.
    word: AtomicU64,
    /// The running callback's site (null: unknown); written before `word`.
    site: AtomicPtr<Location<'static>>,
    /// The counter of `word`, in its bits 8..64: the loop thread's alone
    /// (an atomic only so that it can live here; loaded and stored, never
    /// read-modify-written).
    seq: AtomicU64,
    /// Set to stop the watchdog.
    stop: Mutex<bool>,
    wake: Condvar,
}

/// The watches of dropped detectors, for the next ones.
static SPARE: Mutex<Vec<&'static Watch>> = Mutex::new(Vec::new());

/// How a loop runs its callbacks (`Loop::guarded_as`): plainly, with the
/// detector's stores only, or the general way (a panic handler, tracing).
#[derive(Clone, Copy)]
pub(crate) enum CallMode {
    /// No panic handler, no detector, no tracing.
    Plain,
    /// The detector, and no panic handler or tracing.
    Watched(&'static Watch),
    /// A panic handler or tracing (and maybe the detector).
    General,
}

/// What the watchdog needs besides the shared words.
struct Settings {
    threshold: Duration,
    hook: Option<ReportHook>,
}

impl Settings {
    fn report(&self, report: &BlockedReport) {
        diag_event!(warn, "{report}");
        if let Some(hook) = &self.hook {
            hook(report);
        }
    }
}

/// A site pointer as stored (null: unknown).
fn site_ptr(site: Option<Site>) -> *mut Location<'static> {
    site.map_or(ptr::null_mut(), |s| ptr::from_ref(s).cast_mut())
}

/// A site pointer back.
fn site_from(ptr: *mut Location<'static>) -> Option<Site> {
    // SAFETY: every non-null pointer stored is a `&'static Location`
    // (`site_ptr`), never written through.
    unsafe { ptr.cast_const().as_ref() }
}

/// Logs through `log` and, with the `tracing` feature, emits the same as
/// a `tracing` event: `diag_event!(warn, "...", args)`.
macro_rules! diag_event {
    ($level:ident, $($arg:tt)+) => {{
        log::$level!($($arg)+);
        #[cfg(feature = "tracing")]
        tracing::$level!(target: "eventide", $($arg)+);
    }};
}
pub(crate) use diag_event;

/// After a loop is built: a `tracing` event naming its backend, and a
/// warning when the automatic choice fell back from io_uring.
pub(crate) fn note_backend(choice: Option<crate::BackendChoice>, backend: crate::BackendKind) {
    #[cfg(feature = "tracing")]
    {
        let choice = choice.or_else(|| crate::BackendChoice::from_env().ok());
        let forced = choice.is_some_and(|c| c != crate::BackendChoice::Auto);
        tracing::debug!(target: "eventide", backend = %backend, forced, "loop built");
        let uring_first = cfg!(all(target_os = "linux", feature = "uring"));
        if !forced && uring_first && backend != crate::BackendKind::Uring {
            tracing::warn!(
                target: "eventide",
                backend = %backend,
                "io_uring refused: readiness fallback"
            );
        }
    }
    let _ = (choice, backend);
}

/// A callback's panic reached the loop (a handler takes it, or it leaves
/// `run()`): a `tracing` error event.
#[inline]
pub(crate) fn note_panic() {
    #[cfg(feature = "tracing")]
    tracing::error!(target: "eventide", "a callback panicked");
}

/// A callback failed the loop ([`Loop::fail`]): a `tracing` error event.
#[inline]
pub(crate) fn note_failure(error: &crate::Error) {
    #[cfg(feature = "tracing")]
    tracing::error!(target: "eventide", error = %error, "the loop failed");
    let _ = error;
}

impl Watch {
    /// A callback starts (loop thread).
    #[inline(always)]
    pub(crate) fn begin(&self, kind: Kind, site: Option<Site>) {
        // The counter is kept shifted: its low byte is always 0.
        let seq = self.seq.load(Ordering::Relaxed).wrapping_add(1 << 8);
        self.seq.store(seq, Ordering::Relaxed);
        self.site.store(site_ptr(site), Ordering::Relaxed);
        self.word
            .store(seq | u64::from(kind as u8), Ordering::Release);
    }

    /// The callback returned or panicked (loop thread).
    #[inline(always)]
    pub(crate) fn end(&self) {
        self.word.store(0, Ordering::Release);
    }
}

/// The detector: the watch shared with the watchdog, and the watchdog,
/// stopped and joined on drop.
pub(crate) struct Detector {
    pub(crate) watch: &'static Watch,
    threshold: Duration,
    thread: Option<JoinHandle<()>>,
}

impl Detector {
    /// Starts the watchdog for a loop built with `config`.
    pub(crate) fn start(config: &BlockingConfig) -> crate::Result<Detector> {
        let spare = SPARE.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let watch: &'static Watch = spare.unwrap_or_else(|| {
            Box::leak(Box::new(Watch {
                word: AtomicU64::new(0),
                site: AtomicPtr::new(ptr::null_mut()),
                seq: AtomicU64::new(0),
                stop: Mutex::new(false),
                wake: Condvar::new(),
            }))
        });
        watch.word.store(0, Ordering::Relaxed);
        *watch.stop.lock().unwrap_or_else(|e| e.into_inner()) = false;
        let settings = Settings {
            threshold: config.threshold,
            hook: config.hook.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("eventide-watchdog".into())
            .spawn(move || watchdog(watch, &settings));
        match thread {
            Ok(thread) => Ok(Detector {
                watch,
                threshold: config.threshold,
                thread: Some(thread),
            }),
            Err(error) => {
                SPARE.lock().unwrap_or_else(|e| e.into_inner()).push(watch);
                Err(crate::Error::io("spawn the blocked-loop watchdog", error))
            }
        }
    }
}

impl Drop for Detector {
    fn drop(&mut self) {
        *self.watch.stop.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.watch.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        SPARE
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(self.watch);
    }
}

/// The watchdog thread: samples the sequence word every tenth of the
/// threshold. A running word seen unchanged for the threshold is one
/// callback running that long: reported once; when the word changes
/// (the callback returned, panicked, or another one started) it is
/// reported again, in all.
fn watchdog(watch: &Watch, settings: &Settings) {
    let threshold = settings.threshold;
    let interval = (threshold / 10).max(Duration::from_millis(1));
    // The word last seen, when it was first seen, its site, and whether
    // it was reported.
    let mut tracked = 0u64;
    let mut first_seen = Instant::now();
    let mut site: Option<Site> = None;
    let mut reported = false;
    let mut stop = watch.stop.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let (guard, _) = watch
            .wake
            .wait_timeout(stop, interval)
            .unwrap_or_else(|e| e.into_inner());
        stop = guard;
        let now = Instant::now();
        // The loop is being dropped: no callback runs any more.
        let word = if *stop {
            0
        } else {
            watch.word.load(Ordering::Acquire)
        };
        if word != tracked {
            if reported {
                settings.report(&BlockedReport {
                    kind: Kind::from_u8(tracked as u8),
                    site,
                    elapsed: now.saturating_duration_since(first_seen),
                    finished: true,
                    threshold,
                });
            }
            if *stop {
                return;
            }
            reported = false;
            first_seen = now;
            tracked = word;
            if word != 0 {
                // A seqlock read: the site belongs to `word` if the word
                // is still the same after it.
                site = site_from(watch.site.load(Ordering::Relaxed));
                fence(Ordering::Acquire);
                if watch.word.load(Ordering::Relaxed) != word {
                    // Gone already: look again at the next sample.
                    tracked = 0;
                }
            }
            continue;
        }
        if *stop {
            return;
        }
        if word == 0 || reported {
            continue;
        }
        let elapsed = now.saturating_duration_since(first_seen);
        if elapsed >= threshold {
            reported = true;
            settings.report(&BlockedReport {
                kind: Kind::from_u8(word as u8),
                site,
                elapsed,
                finished: false,
                threshold,
            });
        }
    }
}
