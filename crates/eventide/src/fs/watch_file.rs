//! Node's `fs.watchFile` / `fs.unwatchFile`: stat polling (libuv's
//! `uv_fs_poll_t`), one poller per path shared by its listeners.
//!
//! Ground rules:
//! - A poller stats its path with [`Fs::stat`] (io_uring's statx where the
//!   kernel has it, else the pool: never on the loop thread), then waits
//!   on a timer for the rest of its interval, measured from the start of
//!   the stat (libuv's `interval - (now - start) % interval`).
//! - It calls back as libuv does: the first stat only records (unless it
//!   fails), later ones when the stats differ (ctime, mtime, birth time,
//!   size, mode, owner, inode, device) or the stat starts or stops
//!   failing, or fails differently; a failure gives zeroed current stats.
//! - Before the listeners run, the poller's state is up to date and its
//!   next stat scheduled: a listener may unwatch, watch again, or panic.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{Fs, Stats};
use crate::event_loop::Loop;
use crate::slab::{Slab, SlotId};
use crate::timers::TimerId;
use crate::{Error, Result};

/// Node's default `interval` of `fs.watchFile`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(5007);

/// Options of [`Fs::watch_file`] (Node's `fs.watchFile` options). New
/// options may be added (it is `#[non_exhaustive]`): build it from `new()`
/// with the setters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
#[must_use = "options do nothing until given to `watch_file`"]
pub struct WatchFileOptions {
    /// How often the file is stat'ed (Node's default 5007 ms).
    pub interval: Duration,
    /// Whether the poller keeps the loop alive (default `true`).
    pub persistent: bool,
}

impl Default for WatchFileOptions {
    fn default() -> WatchFileOptions {
        WatchFileOptions::new()
    }
}

impl WatchFileOptions {
    /// Node's defaults: every 5007 ms, persistent.
    pub const fn new() -> WatchFileOptions {
        WatchFileOptions {
            interval: DEFAULT_INTERVAL,
            persistent: true,
        }
    }

    /// Sets [`WatchFileOptions::interval`].
    pub const fn interval(mut self, interval: Duration) -> WatchFileOptions {
        self.interval = interval;
        self
    }

    /// Sets [`WatchFileOptions::persistent`].
    pub const fn persistent(mut self, persistent: bool) -> WatchFileOptions {
        self.persistent = persistent;
        self
    }
}

/// The poller of one path (Node's `StatWatcher`, what `fs.watchFile`
/// returns): shared by every listener on that path, a small `Copy` key,
/// stale once the last listener is gone.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatWatcher {
    slot: SlotId,
    table: u32,
}

impl fmt::Debug for StatWatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "StatWatcher({}v{}@{})",
            self.slot.index, self.slot.generation, self.table
        )
    }
}

/// One listener of [`Fs::watch_file`]: give it to [`Fs::unwatch_file`] to
/// remove that listener only (Node's `unwatchFile(path, listener)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StatListener {
    watcher: StatWatcher,
    id: u64,
}

impl StatListener {
    /// The poller it listens to.
    pub fn watcher(self) -> StatWatcher {
        self.watcher
    }
}

/// A listener: current stats, then previous ones.
type Listener = Box<dyn FnMut(&mut Loop, &Stats, &Stats)>;

/// A loop's pollers.
pub(crate) struct StatWatchers {
    id: u32,
    by_path: HashMap<PathBuf, SlotId>,
    pollers: Slab<Poller>,
    next_listener: u64,
}

impl StatWatchers {
    /// The pollers of the loop `owner`.
    pub(crate) fn new(owner: u32) -> StatWatchers {
        StatWatchers {
            id: owner,
            by_path: HashMap::new(),
            pollers: Slab::default(),
            next_listener: 0,
        }
    }
}

struct Poller {
    path: PathBuf,
    interval_ms: u64,
    /// In order; the listener is `None` while it runs.
    listeners: Vec<(u64, Option<Listener>)>,
    /// The last stats seen (zeroed before any).
    prev: Stats,
    /// libuv's `busy_polling`: 0 before the first stat, 1 after a
    /// success, the negative errno after a failure.
    status: i32,
    /// Node's `kOldStatus`: -1 until the first change is reported.
    node_status: i32,
    /// The wait for the next stat.
    timer: Option<TimerId>,
    /// When the stat in flight started (loop time, ms).
    started: u64,
    /// Node's reference counts (`KFSStatWatcherRefCount` and its maximum).
    refs: u32,
    max_refs: u32,
    /// Whether the poller keeps the loop alive.
    referenced: bool,
}

/// Node's zeroed stats, for a file that cannot be stat'ed.
pub fn zeroed_stats() -> Stats {
    Stats {
        dev: 0,
        ino: 0,
        mode: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        size: 0,
        blksize: 0,
        blocks: 0,
        atime: SystemTime::UNIX_EPOCH,
        mtime: SystemTime::UNIX_EPOCH,
        ctime: SystemTime::UNIX_EPOCH,
        birthtime: SystemTime::UNIX_EPOCH,
    }
}

/// libuv's `statbuf_eq`, on the fields eventide has.
fn same(a: &Stats, b: &Stats) -> bool {
    a.ctime == b.ctime
        && a.mtime == b.mtime
        && a.birthtime == b.birthtime
        && a.size == b.size
        && a.mode == b.mode
        && a.uid == b.uid
        && a.gid == b.gid
        && a.ino == b.ino
        && a.dev == b.dev
}

/// Node's `ERR_OUT_OF_RANGE` shows an integer over 2^32 with `_`
/// between groups of three digits.
fn received(n: u64) -> String {
    let digits = n.to_string();
    if n <= 1 << 32 {
        return digits;
    }
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('_');
        }
        out.push(c);
    }
    out
}

impl Fs<'_> {
    /// Polls `path`'s stats (Node's `fs.watchFile`): `listener` runs with
    /// the current and the previous stats each time they change (zeroed
    /// stats, as Node's, for a file that is missing: its creation has
    /// zeroed previous stats, its removal zeroed current ones). The first
    /// stat, right away, is only recorded, unless it fails: a missing file
    /// calls back once with both zeroed, as in Node.
    ///
    /// One poller serves each path (made absolute as Node's
    /// `path.resolve` does): a second `watch_file` on it adds a listener,
    /// and its options are ignored, as Node ignores them. Returns the
    /// listener's key, for [`Fs::unwatch_file`]; its
    /// [`StatListener::watcher`] is the shared poller (Node's returned
    /// `StatWatcher`), for [`StatWatcher::unref`].
    ///
    /// ```
    /// use eventide::fs::WatchFileOptions;
    /// let mut lp = eventide::Loop::new()?;
    /// // A missing file: called back once, both stats zeroed (as Node).
    /// lp.fs().watch_file("no-such-file", WatchFileOptions::new(), |lp, current, previous| {
    ///     assert_eq!((current.nlink, previous.nlink), (0, 0));
    ///     lp.fs().unwatch_file("no-such-file", None);
    /// })?;
    /// lp.run()?; // Ends once nothing is watched.
    /// # Ok::<(), eventide::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgValue`] for a path with a NUL byte, and
    /// [`Error::OutOfRange`] for an interval over `u32::MAX` ms (Node's
    /// `validateUint32`), at once.
    pub fn watch_file(
        self,
        path: impl AsRef<Path>,
        options: WatchFileOptions,
        listener: impl FnMut(&mut Loop, &Stats, &Stats) + 'static,
    ) -> Result<StatListener> {
        let lp = self.lp;
        let given = path.as_ref();
        super::ops::c_path("filename", given)?;
        let interval_ms = u64::try_from(options.interval.as_millis()).unwrap_or(u64::MAX);
        if interval_ms > u64::from(u32::MAX) {
            return Err(Error::OutOfRange {
                name: "interval",
                range: format!(">= 0 && <= {}", u32::MAX),
                received: received(interval_ms),
            });
        }
        let path = super::watch::absolute(given);
        let table = &mut lp.io.watch.stat;
        let id = table.next_listener;
        table.next_listener += 1;
        let table_id = table.id;
        if let Some(&slot) = table.by_path.get(&path)
            && let Some(poller) = table.pollers.get_mut(slot)
        {
            poller.listeners.push((id, Some(Box::new(listener))));
            poller.refs += 1;
            poller.max_refs += 1;
            let watcher = StatWatcher {
                slot,
                table: table_id,
            };
            return Ok(StatListener { watcher, id });
        }
        let slot = table.pollers.insert(Poller {
            path: path.clone(),
            interval_ms: interval_ms.max(1),
            listeners: vec![(id, Some(Box::new(listener)))],
            prev: zeroed_stats(),
            status: 0,
            node_status: -1,
            timer: None,
            started: 0,
            refs: 1,
            max_refs: 1,
            referenced: true,
        });
        table.by_path.insert(path, slot);
        let watcher = StatWatcher {
            slot,
            table: table_id,
        };
        if !options.persistent {
            watcher.unref(lp);
        }
        poll(lp, slot);
        Ok(StatListener { watcher, id })
    }

    /// Removes a listener of [`Fs::watch_file`] on `path` (Node's
    /// `fs.unwatchFile`): `Some(listener)` that one, `None` all of them.
    /// The poller stops with its last listener (a stat in flight is then
    /// ignored). Returns whether a listener was removed.
    pub fn unwatch_file(self, path: impl AsRef<Path>, listener: Option<StatListener>) -> bool {
        let lp = self.lp;
        let path = super::watch::absolute(path.as_ref());
        let table = &mut lp.io.watch.stat;
        let Some(&slot) = table.by_path.get(&path) else {
            return false;
        };
        let table_id = table.id;
        let Some(poller) = table.pollers.get_mut(slot) else {
            return false;
        };
        let watcher = StatWatcher {
            slot,
            table: table_id,
        };
        let removed = match listener {
            Some(one) => {
                if one.watcher != watcher {
                    return false;
                }
                let before = poller.listeners.len();
                poller.listeners.retain(|(id, _)| *id != one.id);
                let removed = poller.listeners.len() < before;
                if removed {
                    // Node's 'clean': one fewer holder, and one unref.
                    poller.max_refs = poller.max_refs.saturating_sub(1);
                    watcher.unref(lp);
                }
                removed
            }
            None => {
                let removed = !poller.listeners.is_empty();
                poller.listeners.clear();
                poller.refs = 0;
                poller.max_refs = 0;
                set_referenced(lp, slot, false);
                removed
            }
        };
        let empty = lp
            .io
            .watch
            .stat
            .pollers
            .get(slot)
            .is_some_and(|p| p.listeners.is_empty());
        if empty {
            stop(lp, slot);
        }
        removed
    }
}

impl StatWatcher {
    /// Node's `StatWatcher.ref()`: undoes one [`StatWatcher::unref`]
    /// (never more than the listeners that hold it); the poller keeps the
    /// loop alive again once referenced. Returns `false` when stopped.
    pub fn ref_(self, lp: &mut Loop) -> bool {
        let Some(poller) = self.poller(lp) else {
            return false;
        };
        if poller.refs == poller.max_refs {
            return true;
        }
        poller.refs += 1;
        if poller.refs == 1 {
            set_referenced(lp, self.slot, true);
        }
        true
    }

    /// Node's `StatWatcher.unref()`: one holder fewer; at none the poller
    /// no longer keeps the loop alive (it still polls while the loop
    /// runs). Returns `false` when stopped.
    pub fn unref(self, lp: &mut Loop) -> bool {
        let Some(poller) = self.poller(lp) else {
            return false;
        };
        if poller.refs == 0 {
            return true;
        }
        poller.refs -= 1;
        if poller.refs == 0 {
            set_referenced(lp, self.slot, false);
        }
        true
    }

    /// Whether the poller keeps the loop alive; `false` once stopped.
    pub fn has_ref(self, lp: &Loop) -> bool {
        (self.table == lp.io.watch.stat.id)
            .then(|| lp.io.watch.stat.pollers.get(self.slot))
            .flatten()
            .is_some_and(|p| p.referenced)
    }

    /// Whether the poller runs (it has listeners).
    pub fn is_active(self, lp: &Loop) -> bool {
        self.table == lp.io.watch.stat.id && lp.io.watch.stat.pollers.get(self.slot).is_some()
    }

    fn poller(self, lp: &mut Loop) -> Option<&mut Poller> {
        if self.table != lp.io.watch.stat.id {
            return None;
        }
        lp.io.watch.stat.pollers.get_mut(self.slot)
    }
}

fn set_referenced(lp: &mut Loop, slot: SlotId, referenced: bool) {
    let Some(poller) = lp.io.watch.stat.pollers.get_mut(slot) else {
        return;
    };
    poller.referenced = referenced;
    if let Some(timer) = poller.timer {
        if referenced {
            lp.ref_timer(timer);
        } else {
            lp.unref_timer(timer);
        }
    }
}

/// Stops the poller in `slot`: its timer goes, its stat in flight finds
/// nothing when it ends.
fn stop(lp: &mut Loop, slot: SlotId) {
    let table = &mut lp.io.watch.stat;
    let Some(poller) = table.pollers.remove(slot) else {
        return;
    };
    if table.by_path.get(&poller.path) == Some(&slot) {
        table.by_path.remove(&poller.path);
    }
    if let Some(timer) = poller.timer {
        lp.clear_timer(timer);
    }
}

/// Starts one stat of the poller in `slot`.
fn poll(lp: &mut Loop, slot: SlotId) {
    let now = lp.now_ms();
    let Some(poller) = lp.io.watch.stat.pollers.get_mut(slot) else {
        return;
    };
    poller.timer = None;
    poller.started = now;
    let path = poller.path.clone();
    lp.fs()
        .stat(path, move |lp, result| on_stat(lp, slot, result));
}

/// A stat ended: compare, schedule the next, then call the listeners.
fn on_stat(lp: &mut Loop, slot: SlotId, result: Result<Stats>) {
    let now = lp.now_ms();
    let Some(poller) = lp.io.watch.stat.pollers.get_mut(slot) else {
        return; // Stopped meanwhile.
    };
    // libuv's poll_cb: what to report, as (status, current, previous).
    let report = match result {
        Err(error) => {
            let status = -error.errno().unwrap_or(libc::EIO);
            let report = (poller.status != status).then(|| (status, zeroed_stats(), poller.prev));
            poller.status = status;
            report
        }
        Ok(stats) => {
            let changed = poller.status < 0 || (poller.status > 0 && !same(&poller.prev, &stats));
            let report = changed.then_some((0, stats, poller.prev));
            poller.prev = stats;
            poller.status = 1;
            report
        }
    };
    let interval = poller.interval_ms;
    let elapsed = now.saturating_sub(poller.started);
    let wait = interval - elapsed % interval;
    let referenced = poller.referenced;
    let timer = lp.set_timeout(Duration::from_millis(wait), move |lp| poll(lp, slot));
    if !referenced {
        lp.unref_timer(timer);
    }
    let Some(poller) = lp.io.watch.stat.pollers.get_mut(slot) else {
        lp.clear_timer(timer);
        return;
    };
    poller.timer = Some(timer);
    let Some((status, current, previous)) = report else {
        return;
    };
    // Node's onchange: a first failure with EPERM (-1) and the same link
    // count is not reported; else the status is kept and 'change' emitted.
    if poller.node_status == -1 && status == -1 && current.nlink == previous.nlink {
        return;
    }
    poller.node_status = status;
    emit(lp, slot, &current, &previous);
}

/// Node's `emit('change', current, previous)`: every listener there when
/// it starts, in order, then the next-ticks.
fn emit(lp: &mut Loop, slot: SlotId, current: &Stats, previous: &Stats) {
    let ids: Vec<u64> = match lp.io.watch.stat.pollers.get(slot) {
        Some(poller) => poller.listeners.iter().map(|(id, _)| *id).collect(),
        None => return,
    };
    for id in ids {
        let taken = lp
            .io
            .watch
            .stat
            .pollers
            .get_mut(slot)
            .and_then(|p| p.listeners.iter_mut().find(|(i, _)| *i == id))
            .and_then(|(_, l)| l.take());
        let Some(mut listener) = taken else {
            continue; // Removed by an earlier one (or running).
        };
        let called = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            lp.note_call(crate::diag::Kind::Watch, None);
            lp.guarded(|lp: &mut Loop| listener(lp, current, previous));
        }));
        if let Some(entry) = lp
            .io
            .watch
            .stat
            .pollers
            .get_mut(slot)
            .and_then(|p| p.listeners.iter_mut().find(|(i, _)| *i == id))
            && entry.1.is_none()
        {
            entry.1 = Some(listener);
        }
        if let Err(payload) = called {
            std::panic::resume_unwind(payload);
        }
    }
    lp.drain_ticks();
}
