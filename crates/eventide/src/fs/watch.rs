//! Node's `fs.watch` on Linux's inotify: [`Fs::watch`] and [`FsWatcher`].
//!
//! Ground rules (libuv's `uv_fs_event_t` on Linux, Node 20's recursive
//! watcher on top):
//! - One inotify descriptor per loop, nonblocking and close-on-exec, made
//!   with the first watcher and closed (through the reactor's
//!   [`Op::close`], which cancels its readiness wait first) with the last.
//!   Its readability is one single-shot [`Op::poll`], submitted again after
//!   each read; it keeps the loop alive while a referenced watcher is open.
//! - Several watchers (or several paths of one recursive watcher) naming
//!   the same inode share the kernel's watch descriptor: each descriptor
//!   keeps the list of what subscribed to it, in order, and is removed
//!   from the kernel when the list empties, as libuv's `watcher_list`.
//! - Events are read into a backlog in the loop's state before any
//!   callback runs, and delivered from it one at a time; each delivery
//!   looks its watcher up again (a callback may close it, or any other),
//!   so no user code runs while a structure is borrowed or half changed.
//!   A panic that leaves `run()` leaves the rest of the backlog for the
//!   next `run()`.
//! - Off Linux only the types and `ENOSYS` remain.

#![cfg_attr(not(target_os = "linux"), allow(dead_code, unused_imports))]

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use eventide_reactor::{Completion, Interest, Op, Token};

use super::Fs;
use crate::event_loop::Loop;
use crate::slab::{Slab, SlotId};
use crate::{Error, Result};

/// What changed, as Node's `fs.watch` listener receives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WatchEventType {
    /// An entry appeared, disappeared or was renamed (Node's `'rename'`).
    Rename,
    /// A file's contents or metadata changed (Node's `'change'`).
    Change,
}

impl WatchEventType {
    /// Node's name for it: `"rename"` or `"change"`.
    pub fn as_str(self) -> &'static str {
        match self {
            WatchEventType::Rename => "rename",
            WatchEventType::Change => "change",
        }
    }
}

impl fmt::Display for WatchEventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Options of [`Fs::watch`] (Node's `fs.watch` options):
/// `WatchOptions::new().recursive(true)`. New options may be added (it is
/// `#[non_exhaustive]`): build it from `new()` with the setters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
#[must_use = "options do nothing until given to `watch`"]
pub struct WatchOptions {
    /// Whether the watcher keeps the loop alive (Node's default: `true`;
    /// `false` is an unreferenced watcher, see [`FsWatcher::unref`]).
    pub persistent: bool,
    /// Watch a directory's whole tree, subdirectories created later
    /// included (Node 20's walk on Linux). Default `false`.
    pub recursive: bool,
}

impl Default for WatchOptions {
    fn default() -> WatchOptions {
        WatchOptions::new()
    }
}

impl WatchOptions {
    /// Node's defaults: persistent, not recursive.
    pub const fn new() -> WatchOptions {
        WatchOptions {
            persistent: true,
            recursive: false,
        }
    }

    /// Sets [`WatchOptions::persistent`].
    pub const fn persistent(mut self, persistent: bool) -> WatchOptions {
        self.persistent = persistent;
        self
    }

    /// Sets [`WatchOptions::recursive`].
    pub const fn recursive(mut self, recursive: bool) -> WatchOptions {
        self.recursive = recursive;
        self
    }
}

/// A file system watcher ([`Fs::watch`], Node's `FSWatcher`): a small
/// `Copy` key, stale once closed (its methods then return `false`) and on
/// another loop.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[must_use = "dropping a watcher's key does not stop it: `close` does"]
pub struct FsWatcher {
    slot: SlotId,
    table: u32,
}

impl fmt::Debug for FsWatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "FsWatcher({}v{}@{})",
            self.slot.index, self.slot.generation, self.table
        )
    }
}

/// A watcher's change listener.
type OnChange = Box<dyn FnMut(&mut Loop, FsWatcher, WatchEventType, &Path)>;
/// A watcher's error listener.
type OnError = Box<dyn FnMut(&mut Loop, FsWatcher, Error)>;

/// libuv's inotify mask for `uv_fs_event_start`.
#[cfg(target_os = "linux")]
const MASK: u32 = libc::IN_ATTRIB
    | libc::IN_CREATE
    | libc::IN_MODIFY
    | libc::IN_DELETE
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO;

/// A loop's watchers: `fs.watch`'s (here) and `fs.watchFile`'s
/// ([`super::watch_file`]). Lives in the loop's I/O state.
pub(crate) struct Watches {
    id: u32,
    watchers: Slab<Watcher>,
    /// The open watchers, in the order they were made.
    order: Vec<SlotId>,
    /// The inotify descriptor, made with the first watcher.
    inotify: Option<OwnedFd>,
    /// Bumped each time a descriptor is made: events read from an earlier
    /// one are not delivered against the watch descriptors of a later one.
    instance: u32,
    /// The readability wait in flight on `inotify`.
    wait: Option<Token>,
    /// The kernel's watch descriptors and who subscribed to each.
    wds: HashMap<i32, Wd>,
    /// Events read and not yet delivered.
    backlog: VecDeque<RawEvent>,
    /// `fs.watchFile`'s pollers.
    pub(crate) stat: super::watch_file::StatWatchers,
}

impl Watches {
    /// The watchers of the loop `owner` (its id is in every key, so a key
    /// of one loop is stale on another).
    pub(crate) fn new(owner: u32) -> Watches {
        Watches {
            id: owner,
            watchers: Slab::default(),
            order: Vec::new(),
            inotify: None,
            instance: 0,
            wait: None,
            wds: HashMap::new(),
            backlog: VecDeque::new(),
            stat: super::watch_file::StatWatchers::new(owner),
        }
    }
}

/// One kernel watch descriptor: the path it was first added for (libuv
/// names a file's own events after it) and its subscribers, in order.
struct Wd {
    path: PathBuf,
    subs: Vec<(SlotId, PathBuf)>,
}

struct Watcher {
    /// The path as given.
    path: PathBuf,
    referenced: bool,
    /// `None` while it runs.
    on_change: Option<OnChange>,
    /// `None` while it runs.
    on_error: Option<OnError>,
    /// `None`: a plain watcher (one path, one descriptor).
    tree: Option<Tree>,
}

/// A recursive watcher's state (Node 20's `internal/fs/recursive_watch`):
/// every file and directory under the root is watched on its own, with
/// the stats it had when last seen.
struct Tree {
    root: PathBuf,
    /// The root is a file: its changes are reported under its base name.
    watching_file: bool,
    entries: HashMap<PathBuf, Entry>,
    /// Entries that are symbolic links (reported as renames).
    symbolic: HashSet<PathBuf>,
}

struct Entry {
    /// Whether the file had a birth time when last seen.
    born: bool,
}

/// One inotify event, as read.
#[derive(Debug)]
struct RawEvent {
    instance: u32,
    wd: i32,
    mask: u32,
    name: Option<PathBuf>,
}

impl Fs<'_> {
    /// Watches `path` for changes (Node's `fs.watch`): `on_change` runs
    /// with each event's type and file name, exactly as Node's listener
    /// receives them (`rename a.txt`, `change a.txt`), and `on_error` with
    /// each error. Returns the watcher, which runs until
    /// [`FsWatcher::close`].
    ///
    /// - **A directory:** the name is the entry's, relative to it; a
    ///   directory removed or moved reports `rename` with its own base
    ///   name (twice for a removal: the removal, then the watch's end) and
    ///   then nothing more.
    /// - **A file:** the name is the file's base name: `change` for a
    ///   write or metadata change, `rename` when it is moved (events still
    ///   follow the moved file) or removed (a `change` for its link count,
    ///   then `rename` twice, and nothing more).
    /// - **Recursive** ([`WatchOptions::recursive`]), as Node 20 does it on
    ///   Linux: each file and directory in the tree is watched, new ones
    ///   as they appear (found by reading a directory when an event names
    ///   it); names are relative to the root (`sub/b.txt`); an entry that
    ///   appears is one `rename`, a file's change one `change`, a removal
    ///   one `rename`. The walk's reads and stats run on the loop thread,
    ///   as Node's do.
    ///
    /// The inotify queue overflowing (events lost) is an error
    /// (`ENOBUFS: no buffer space available, watch 'dir'`) given to every
    /// watcher, which stay open (a recursive one reads its directories
    /// again, reporting what appeared); Node is silent there. Delivery
    /// follows the kernel's coalescing of identical successive events, so
    /// how many `change` events one write gives depends on timing, as in
    /// Node.
    ///
    /// ```
    /// use eventide::fs::WatchOptions;
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let dir = dir.path().to_path_buf();
    /// let mut lp = eventide::Loop::new()?;
    /// let watcher = lp.fs().watch(
    ///     &dir,
    ///     WatchOptions::new(),
    ///     |lp, watcher, event, filename| {
    ///         assert_eq!((event.as_str(), filename.to_str()), ("rename", Some("a.txt")));
    ///         watcher.close(lp);
    ///     },
    ///     |_, _, error| panic!("{error}"),
    /// )?;
    /// let file = dir.join("a.txt");
    /// lp.set_timeout(std::time::Duration::from_millis(10), move |_| {
    ///     std::fs::File::create(&file).unwrap();
    /// });
    /// lp.run()?; // Ends once the watcher is closed.
    /// assert!(!watcher.is_open(&lp));
    /// # Ok::<(), eventide::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Node's, at once: `ENOENT: no such file or directory, watch 'p'` (a
    /// recursive watch stats first: `..., stat 'p'`), and for the
    /// system's limit on watches `ENOSPC: System limit for number of file
    /// watchers reached, watch 'p'`, with the errno and the syscall
    /// `watch`; [`Error::InvalidArgValue`] for a path with a NUL byte;
    /// `ENOSYS: function not implemented, watch 'p'` (of kind
    /// [`io::ErrorKind::Unsupported`]) off Linux.
    #[track_caller]
    pub fn watch(
        self,
        path: impl AsRef<Path>,
        options: WatchOptions,
        on_change: impl FnMut(&mut Loop, FsWatcher, WatchEventType, &Path) + 'static,
        on_error: impl FnMut(&mut Loop, FsWatcher, Error) + 'static,
    ) -> Result<FsWatcher> {
        let path = path.as_ref();
        let site = std::panic::Location::caller();
        super::ops::c_path("filename", path)?;
        let watcher = start(
            self.lp,
            path,
            options,
            Box::new(on_change),
            Box::new(on_error),
        )?;
        let id = crate::slab::raw(watcher.slot);
        self.lp.remember_site(crate::diag::Kind::Watch, id, site);
        Ok(watcher)
    }
}

impl FsWatcher {
    /// Stops watching (Node's `watcher.close()`): no callback of this
    /// watcher runs afterwards, the key is stale, and with the loop's last
    /// watcher the inotify descriptor goes. Returns `false`, doing
    /// nothing, if already closed. Allowed anywhere, the watcher's own
    /// callbacks included.
    pub fn close(self, lp: &mut Loop) -> bool {
        let Some(slot) = self.mine(lp) else {
            return false;
        };
        let Some(watcher) = lp.io.watch.watchers.remove(slot) else {
            return false;
        };
        drop(watcher);
        lp.io.watch.order.retain(|s| *s != slot);
        // Every subscription of this watcher goes; a descriptor left
        // without any goes from the kernel.
        let mut emptied = Vec::new();
        for (&wd, entry) in lp.io.watch.wds.iter_mut() {
            entry.subs.retain(|(owner, _)| *owner != slot);
            if entry.subs.is_empty() {
                emptied.push(wd);
            }
        }
        for wd in emptied {
            remove_wd(lp, wd);
        }
        update_wait(lp);
        true
    }

    /// Whether the watcher keeps the loop alive (Node's `watcher.ref()` /
    /// `watcher.unref()`; by default it does, unless made with
    /// `persistent: false`): an unreferenced watcher still reports events
    /// while something else keeps the loop running. Returns `false` for a
    /// closed watcher.
    pub fn set_ref(self, lp: &mut Loop, referenced: bool) -> bool {
        let Some(slot) = self.mine(lp) else {
            return false;
        };
        let Some(watcher) = lp.io.watch.watchers.get_mut(slot) else {
            return false;
        };
        watcher.referenced = referenced;
        update_wait(lp);
        true
    }

    /// [`FsWatcher::set_ref`] with `true` (Node's `watcher.ref()`).
    pub fn ref_(self, lp: &mut Loop) -> bool {
        self.set_ref(lp, true)
    }

    /// [`FsWatcher::set_ref`] with `false` (Node's `watcher.unref()`).
    pub fn unref(self, lp: &mut Loop) -> bool {
        self.set_ref(lp, false)
    }

    /// Whether the watcher is referenced; `false` once closed.
    pub fn has_ref(self, lp: &Loop) -> bool {
        self.mine(lp)
            .and_then(|slot| lp.io.watch.watchers.get(slot))
            .is_some_and(|w| w.referenced)
    }

    /// Whether the watcher is open (not closed, and of this loop).
    pub fn is_open(self, lp: &Loop) -> bool {
        self.mine(lp)
            .is_some_and(|slot| lp.io.watch.watchers.get(slot).is_some())
    }

    /// The path it watches, as given; `None` once closed.
    pub fn path(self, lp: &Loop) -> Option<PathBuf> {
        let slot = self.mine(lp)?;
        lp.io.watch.watchers.get(slot).map(|w| w.path.clone())
    }

    fn mine(self, lp: &Loop) -> Option<SlotId> {
        (self.table == lp.io.watch.id).then_some(self.slot)
    }
}

/// `ENOSYS` for `watch` on a system without inotify.
#[cfg(not(target_os = "linux"))]
fn start(
    _lp: &mut Loop,
    path: &Path,
    _options: WatchOptions,
    _on_change: OnChange,
    _on_error: OnError,
) -> Result<FsWatcher> {
    Err(watch_error(path, errno(libc::ENOSYS)))
}

#[cfg(not(target_os = "linux"))]
fn remove_wd(_lp: &mut Loop, _wd: i32) {}

#[cfg(not(target_os = "linux"))]
fn update_wait(_lp: &mut Loop) {}

/// Node's error for `watch` on `path`: its message for the system's limit
/// on watches, libuv's otherwise.
pub(crate) fn watch_error(path: &Path, source: io::Error) -> Error {
    Error::fs("watch", Some(path.to_path_buf()), None, source)
}

fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

#[cfg(target_os = "linux")]
fn start(
    lp: &mut Loop,
    path: &Path,
    options: WatchOptions,
    on_change: OnChange,
    on_error: OnError,
) -> Result<FsWatcher> {
    let tree = if options.recursive {
        let root = absolute(path);
        // Node's recursive watcher stats the root first.
        let meta =
            std::fs::metadata(&root).map_err(|e| Error::fs("stat", Some(root.clone()), None, e))?;
        Some(Tree {
            watching_file: meta.is_file(),
            root,
            entries: HashMap::new(),
            symbolic: HashSet::new(),
        })
    } else {
        None
    };
    ensure_inotify(lp).map_err(|e| watch_error(path, e))?;
    let slot = lp.io.watch.watchers.insert(Watcher {
        path: path.to_path_buf(),
        referenced: options.persistent,
        on_change: Some(on_change),
        on_error: Some(on_error),
        tree,
    });
    lp.io.watch.order.push(slot);
    let watcher = FsWatcher {
        slot,
        table: lp.io.watch.id,
    };
    let started = if options.recursive {
        start_tree(lp, slot)
    } else {
        add_watch(lp, slot, path, path)
    };
    if let Err(error) = started {
        watcher.close(lp);
        return Err(error);
    }
    update_wait(lp);
    Ok(watcher)
}

/// The recursive watcher's first walk: the root, then (a directory) its
/// tree. What it finds is not reported (Node's listener is not attached
/// yet when its walk reports).
#[cfg(target_os = "linux")]
fn start_tree(lp: &mut Loop, slot: SlotId) -> Result<()> {
    let (root, is_dir) = {
        let tree = tree_of(lp, slot).expect("just made");
        (tree.root.clone(), !tree.watching_file)
    };
    watch_entry(lp, slot, &root)?;
    if is_dir {
        let mut found = Vec::new();
        walk(lp, slot, &root, &mut found)?;
    }
    Ok(())
}

/// The absolute form of `path` (Node's `path.resolve`: lexical).
pub(crate) fn absolute(path: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let mut out = PathBuf::new();
    for part in joined.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(target_os = "linux")]
fn tree_of(lp: &mut Loop, slot: SlotId) -> Option<&mut Tree> {
    lp.io.watch.watchers.get_mut(slot)?.tree.as_mut()
}

/// Makes the loop's inotify descriptor if there is none.
#[cfg(target_os = "linux")]
fn ensure_inotify(lp: &mut Loop) -> io::Result<()> {
    if lp.io.watch.inotify.is_some() {
        return Ok(());
    }
    // SAFETY: inotify_init1 takes only flags and returns a new descriptor
    // or -1.
    let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just made and is owned by nothing else.
    lp.io.watch.inotify = Some(unsafe { OwnedFd::from_raw_fd(fd) });
    lp.io.watch.instance = lp.io.watch.instance.wrapping_add(1);
    Ok(())
}

/// Adds a kernel watch on `target` for the watcher in `slot`, subscribed
/// as `entry` (the path its events are judged by). `shown` is the path
/// errors name.
#[cfg(target_os = "linux")]
fn add_watch(lp: &mut Loop, slot: SlotId, target: &Path, shown: &Path) -> Result<()> {
    let c_path = super::ops::c_path("filename", target)?;
    let fd = lp
        .io
        .watch
        .inotify
        .as_ref()
        .map(AsRawFd::as_raw_fd)
        .ok_or_else(|| watch_error(shown, errno(libc::EBADF)))?;
    // SAFETY: `fd` is the loop's open inotify descriptor and `c_path` a
    // live NUL-terminated string.
    let wd = unsafe { libc::inotify_add_watch(fd, c_path.as_ptr(), MASK) };
    if wd < 0 {
        return Err(watch_error(shown, io::Error::last_os_error()));
    }
    lp.io
        .watch
        .wds
        .entry(wd)
        .or_insert_with(|| Wd {
            path: target.to_path_buf(),
            subs: Vec::new(),
        })
        .subs
        .push((slot, target.to_path_buf()));
    Ok(())
}

/// Removes `wd` from the kernel and the table.
#[cfg(target_os = "linux")]
fn remove_wd(lp: &mut Loop, wd: i32) {
    if lp.io.watch.wds.remove(&wd).is_none() {
        return;
    }
    if let Some(fd) = lp.io.watch.inotify.as_ref() {
        // SAFETY: plain system call on the loop's open inotify
        // descriptor; a watch the kernel already dropped is EINVAL,
        // harmless.
        unsafe { libc::inotify_rm_watch(fd.as_raw_fd(), wd) };
    }
}

/// Puts the readability wait in line with the watchers: one wait while
/// any is open, counted (keeping the loop alive) while any is referenced;
/// without watchers, the wait is cancelled and the descriptor closed.
#[cfg(target_os = "linux")]
fn update_wait(lp: &mut Loop) {
    let watches = &mut lp.io.watch;
    if watches.watchers.len() == 0 {
        watches.backlog.clear();
        watches.wds.clear();
        let wait = watches.wait.take();
        let fd = watches.inotify.take();
        if let Some(token) = wait {
            lp.reactor.cancel(token);
        }
        if let Some(fd) = fd {
            let op = Op::close(fd.as_raw_fd());
            if lp.submit_io(op, |_, _| {}).is_ok() {
                // The reactor owns the descriptor now.
                let _ = fd.into_raw_fd();
            }
        }
        return;
    }
    let referenced = any_referenced(&lp.io.watch);
    match lp.io.watch.wait {
        Some(token) => lp.io.set_counted(token, referenced),
        None => {
            let Some(fd) = lp.io.watch.inotify.as_ref().map(AsRawFd::as_raw_fd) else {
                return;
            };
            let op = Op::poll(fd, Interest::READABLE);
            match lp.submit_io(op, on_readable) {
                Ok(token) => {
                    lp.io.watch.wait = Some(token);
                    lp.io.set_counted(token, referenced);
                }
                Err(refused) => {
                    // Nothing can tell when events come: every watcher
                    // hears it and closes.
                    let error = refused.error;
                    fail_all(lp, error);
                }
            }
        }
    }
}

#[cfg(target_os = "linux")]
fn any_referenced(watches: &Watches) -> bool {
    watches
        .order
        .iter()
        .any(|&slot| watches.watchers.get(slot).is_some_and(|w| w.referenced))
}

/// Every open watcher gets `error` (in the next pending phase) and is
/// closed.
#[cfg(target_os = "linux")]
fn fail_all(lp: &mut Loop, error: io::Error) {
    let id = lp.io.watch.id;
    let code = error.raw_os_error().unwrap_or(libc::EIO);
    // All go at once (the descriptor goes with them), then each hears it.
    let slots = std::mem::take(&mut lp.io.watch.order);
    lp.io.watch.wds.clear();
    let mut closed = Vec::new();
    for slot in slots {
        if let Some(w) = lp.io.watch.watchers.remove(slot) {
            closed.push((FsWatcher { slot, table: id }, w));
        }
    }
    update_wait(lp);
    for (watcher, w) in closed {
        if let Some(mut on_error) = w.on_error {
            let error = watch_error(&w.path, errno(code));
            lp.defer(move |lp| on_error(lp, watcher, error));
        }
    }
}

/// The inotify descriptor is readable: read what it holds into the
/// backlog, wait again, then deliver.
#[cfg(target_os = "linux")]
fn on_readable(lp: &mut Loop, c: Completion) {
    if lp.io.watch.wait != Some(c.token) {
        return; // Cancelled: the descriptor went with the last watcher.
    }
    lp.io.watch.wait = None;
    if let Err(error) = c.result {
        return fail_all(lp, error);
    }
    if let Err(error) = read_events(lp) {
        return fail_all(lp, error);
    }
    update_wait(lp);
    deliver(lp);
}

/// Reads every event the descriptor holds into the backlog.
#[cfg(target_os = "linux")]
fn read_events(lp: &mut Loop) -> io::Result<()> {
    let Some(fd) = lp.io.watch.inotify.as_ref().map(AsRawFd::as_raw_fd) else {
        return Ok(());
    };
    let instance = lp.io.watch.instance;
    // Room for many events at once; an event is at most header + NAME_MAX + 1.
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: reads into a live buffer of its own length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let error = io::Error::last_os_error();
            match error.kind() {
                io::ErrorKind::WouldBlock => return Ok(()),
                io::ErrorKind::Interrupted => continue,
                _ => return Err(error),
            }
        }
        let n = n as usize;
        if n == 0 {
            return Ok(());
        }
        let header = std::mem::size_of::<libc::inotify_event>();
        let mut at = 0;
        while at + header <= n {
            // SAFETY: the kernel wrote a whole `inotify_event` header at
            // `at` (events are never split across reads); it is read
            // unaligned, the buffer being a byte vector.
            let event: libc::inotify_event =
                unsafe { std::ptr::read_unaligned(buf.as_ptr().add(at).cast()) };
            let len = event.len as usize;
            let name_bytes = &buf[at + header..(at + header + len).min(n)];
            let name = name_bytes
                .iter()
                .position(|&b| b == 0)
                .map_or(name_bytes, |end| &name_bytes[..end]);
            let name = (!name.is_empty()).then(|| PathBuf::from(OsStr::from_bytes(name)));
            lp.io.watch.backlog.push_back(RawEvent {
                instance,
                wd: event.wd,
                mask: event.mask,
                name,
            });
            at += header + len;
        }
    }
}

#[cfg(target_os = "linux")]
/// What one subscriber makes of an event: what to tell the user.
enum Outcome {
    Change(WatchEventType, PathBuf),
    Error(Error),
}

/// Delivers the backlog, one event at a time. A callback's panic without
/// a panic handler leaves the rest for the next `run()`.
#[cfg(target_os = "linux")]
fn deliver(lp: &mut Loop) {
    while let Some(event) = lp.io.watch.backlog.pop_front() {
        if event.instance != lp.io.watch.instance {
            continue; // Read from a descriptor closed since.
        }
        let panicked = if event.mask & libc::IN_Q_OVERFLOW != 0 {
            overflowed(lp)
        } else {
            on_event(lp, &event)
        };
        if event.mask & libc::IN_IGNORED != 0 {
            // The kernel dropped the watch (its file is gone, or it was
            // removed): it reports nothing more.
            lp.io.watch.wds.remove(&event.wd);
        }
        if let Some(payload) = panicked {
            if !lp.io.watch.backlog.is_empty() {
                lp.defer(deliver);
            }
            std::panic::resume_unwind(payload);
        }
    }
}

/// Events were lost: every watcher hears it (`ENOBUFS`), and a recursive
/// one reads its directories again.
#[cfg(target_os = "linux")]
fn overflowed(lp: &mut Loop) -> Option<Payload> {
    let mut panicked = None;
    for slot in lp.io.watch.order.clone() {
        let Some(w) = lp.io.watch.watchers.get(slot) else {
            continue;
        };
        let mut outcomes = vec![Outcome::Error(watch_error(&w.path, errno(libc::ENOBUFS)))];
        if w.tree.is_some() {
            let mut dirs: Vec<PathBuf> = tree_of(lp, slot)
                .map(|t| {
                    let mut dirs: Vec<PathBuf> = t.entries.keys().cloned().collect();
                    dirs.sort();
                    dirs
                })
                .unwrap_or_default();
            dirs.retain(|d| std::fs::metadata(d).is_ok_and(|m| m.is_dir()));
            for dir in dirs {
                if let Err(error) = walk(lp, slot, &dir, &mut outcomes) {
                    outcomes.push(Outcome::Error(error));
                }
            }
        }
        if let Some(payload) = tell(lp, slot, outcomes) {
            panicked.get_or_insert(payload);
        }
    }
    panicked
}

/// One event on a watch descriptor: each of its subscribers, in order.
#[cfg(target_os = "linux")]
fn on_event(lp: &mut Loop, event: &RawEvent) -> Option<Payload> {
    let Some(wd) = lp.io.watch.wds.get(&event.wd) else {
        return None; // Stale: no subscriber left.
    };
    let subs = wd.subs.clone();
    let own_name = wd.path.file_name().map(PathBuf::from).unwrap_or_default();
    let kind = if event.mask & !(libc::IN_ATTRIB | libc::IN_MODIFY) != 0 {
        WatchEventType::Rename
    } else {
        WatchEventType::Change
    };
    let mut panicked = None;
    for (slot, entry) in subs {
        let Some(w) = lp.io.watch.watchers.get(slot) else {
            continue; // Closed by an earlier callback.
        };
        let outcomes = if w.tree.is_some() {
            judge(lp, slot, &entry)
        } else {
            let name = event.name.clone().unwrap_or_else(|| own_name.clone());
            vec![Outcome::Change(kind, name)]
        };
        if let Some(payload) = tell(lp, slot, outcomes) {
            panicked.get_or_insert(payload);
        }
    }
    panicked
}

/// A recursive watcher's judgement of an event on `entry` (Node 20's
/// listener of each file's own watcher): stat it again; gone, a rename
/// (and it and what is under it are forgotten); the watched file itself,
/// a change under its base name; a symbolic link, a rename; a directory,
/// read again for new entries; a file, a change.
#[cfg(target_os = "linux")]
fn judge(lp: &mut Loop, slot: SlotId, entry: &Path) -> Vec<Outcome> {
    let Some(tree) = tree_of(lp, slot) else {
        return Vec::new();
    };
    let Some(was) = tree.entries.get(entry) else {
        return Vec::new(); // Forgotten meanwhile.
    };
    let now = std::fs::metadata(entry).ok();
    let gone = match &now {
        None => true,
        Some(meta) => !born(meta) && was.born,
    };
    let relative = relative(&tree.root, entry);
    if gone {
        forget(lp, slot, entry);
        return vec![Outcome::Change(WatchEventType::Rename, relative)];
    }
    let meta = now.expect("not gone");
    tree.entries
        .insert(entry.to_path_buf(), Entry { born: born(&meta) });
    if entry == tree.root && tree.watching_file {
        let name = entry.file_name().map(PathBuf::from).unwrap_or_default();
        return vec![Outcome::Change(WatchEventType::Change, name)];
    }
    if tree.symbolic.contains(entry) {
        return vec![Outcome::Change(WatchEventType::Rename, relative)];
    }
    if meta.is_dir() {
        let mut outcomes = Vec::new();
        if let Err(error) = walk(lp, slot, entry, &mut outcomes) {
            outcomes.push(Outcome::Error(error));
        }
        return outcomes;
    }
    vec![Outcome::Change(WatchEventType::Change, relative)]
}

/// Forgets `entry` and everything under it: their subscriptions go.
#[cfg(target_os = "linux")]
fn forget(lp: &mut Loop, slot: SlotId, entry: &Path) {
    let Some(tree) = tree_of(lp, slot) else {
        return;
    };
    tree.symbolic.retain(|p| !p.starts_with(entry));
    tree.entries.retain(|p, _| !p.starts_with(entry));
    let mut emptied = Vec::new();
    for (&wd, w) in lp.io.watch.wds.iter_mut() {
        w.subs
            .retain(|(owner, path)| !(*owner == slot && path.starts_with(entry)));
        if w.subs.is_empty() {
            emptied.push(wd);
        }
    }
    for wd in emptied {
        remove_wd(lp, wd);
    }
}

/// Reads `dir` for entries the watcher does not know: each is reported
/// (`rename`, relative to the root) and watched, and a new directory is
/// read in turn (Node 20's `#watchFolder`). An entry gone meanwhile is
/// skipped.
#[cfg(target_os = "linux")]
fn walk(lp: &mut Loop, slot: SlotId, dir: &Path, found: &mut Vec<Outcome>) -> Result<()> {
    let read = std::fs::read_dir(dir)
        .map_err(|e| Error::fs("scandir", Some(dir.to_path_buf()), None, e))?;
    for item in read {
        let item = item.map_err(|e| Error::fs("scandir", Some(dir.to_path_buf()), None, e))?;
        let path = item.path();
        let Some(tree) = tree_of(lp, slot) else {
            return Ok(()); // Closed.
        };
        if tree.entries.contains_key(&path) {
            continue;
        }
        found.push(Outcome::Change(
            WatchEventType::Rename,
            relative(&tree.root, &path),
        ));
        let file_type = item.file_type().ok();
        let symlink = file_type.is_some_and(|t| t.is_symlink());
        if symlink {
            tree.symbolic.insert(path.clone());
        }
        match watch_entry(lp, slot, &path) {
            Ok(()) => {}
            Err(error) if error.code() == Some("ENOENT") => continue,
            Err(error) => return Err(error),
        }
        if file_type.is_some_and(|t| t.is_dir()) {
            walk(lp, slot, &path, found)?;
        }
    }
    Ok(())
}

/// Watches one entry of a recursive watcher: its stats, its kernel watch.
#[cfg(target_os = "linux")]
fn watch_entry(lp: &mut Loop, slot: SlotId, path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::fs("stat", Some(path.to_path_buf()), None, e))?;
    let Some(tree) = tree_of(lp, slot) else {
        return Ok(());
    };
    tree.entries
        .insert(path.to_path_buf(), Entry { born: born(&meta) });
    if let Err(error) = add_watch(lp, slot, path, path) {
        if let Some(tree) = tree_of(lp, slot) {
            tree.entries.remove(path);
        }
        return Err(error);
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn born(meta: &std::fs::Metadata) -> bool {
    meta.created()
        .is_ok_and(|t| t != std::time::SystemTime::UNIX_EPOCH)
}

#[cfg(target_os = "linux")]
/// `path` relative to `root` (Node's `path.relative`, for a path under
/// the root; the root itself is empty).
fn relative(root: &Path, path: &Path) -> PathBuf {
    path.strip_prefix(root)
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(target_os = "linux")]
/// A panic caught from a callback, resumed once the state is in order.
type Payload = Box<dyn std::any::Any + Send>;

#[cfg(target_os = "linux")]
/// Runs user code, catching a panic for the caller to resume.
fn catch<R>(f: impl FnOnce() -> R) -> std::result::Result<R, Payload> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
}

/// Tells the watcher in `slot` each outcome, while it stays open: each is
/// its own callback, followed by its next-ticks. A panic stops the rest
/// (without a handler) and is returned.
#[cfg(target_os = "linux")]
fn tell(lp: &mut Loop, slot: SlotId, outcomes: Vec<Outcome>) -> Option<Payload> {
    let watcher = FsWatcher {
        slot,
        table: lp.io.watch.id,
    };
    for outcome in outcomes {
        let w = lp.io.watch.watchers.get_mut(slot)?;
        let called = match outcome {
            Outcome::Change(kind, name) => {
                let Some(mut on_change) = w.on_change.take() else {
                    continue; // Running (a nested run from its own callback).
                };
                let called = catch(|| {
                    lp.note_call_of(crate::diag::Kind::Watch, crate::slab::raw(slot));
                    lp.guarded(|lp: &mut Loop| on_change(lp, watcher, kind, &name));
                    lp.drain_ticks();
                });
                if let Some(w) = lp.io.watch.watchers.get_mut(slot)
                    && w.on_change.is_none()
                {
                    w.on_change = Some(on_change);
                }
                called
            }
            Outcome::Error(error) => {
                let Some(mut on_error) = w.on_error.take() else {
                    continue;
                };
                let called = catch(|| {
                    lp.note_call_of(crate::diag::Kind::Watch, crate::slab::raw(slot));
                    lp.guarded(|lp: &mut Loop| on_error(lp, watcher, error));
                    lp.drain_ticks();
                });
                if let Some(w) = lp.io.watch.watchers.get_mut(slot)
                    && w.on_error.is_none()
                {
                    w.on_error = Some(on_error);
                }
                called
            }
        };
        if let Err(payload) = called {
            return Some(payload);
        }
    }
    None
}

impl Loop {
    /// The file watchers (`fs().watch`), for [`Loop::handles`].
    pub(crate) fn list_watchers(&self, listing: &mut crate::diag::Listing) {
        for (slot, watcher) in self.io.watch.watchers.iter() {
            let id = crate::slab::raw(slot);
            let kind = crate::diag::Kind::Watch;
            listing.add(
                kind,
                id,
                watcher.referenced,
                watcher.referenced,
                self.site_of(kind, id),
            );
        }
    }
}
