//! Listening sockets (TCP and Unix domain): bind, listen, and a callback
//! per connection; libuv's answer to running out of descriptors.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use eventide_reactor::{Completion, Op};
use socket2::{SockAddr, Socket};

use super::stream::{Stream, StreamState};
use super::{TcpListener, TcpStream, UnixListener, UnixStream};
use crate::event_loop::{Loop, Task};
use crate::io::Direct;
use crate::slab::{Key, SlotId};
use crate::{Error, Result};

type OnConnection = Box<dyn FnMut(&mut Loop, Result<Stream>)>;

/// Options of [`Loop::tcp_listen`] and [`Loop::unix_listen`]:
/// `ListenOptions::default()`, then the setters (or the fields):
/// `ListenOptions::default().backlog(64).reuse_port(true)`. Non-exhaustive,
/// so that adding an option breaks no caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenOptions {
    /// The accept queue's length (Node's and libuv's default: 511).
    pub backlog: i32,
    /// Sets `SO_REUSEPORT`, so that several sockets (of this process or
    /// others) listen on the same address and the kernel spreads the
    /// connections (Node's `reusePort`). `SO_REUSEADDR` is always set.
    /// TCP only.
    pub reuse_port: bool,
    /// Node's `allowHalfOpen` server option, for every connection it
    /// accepts (see [`Stream::set_allow_half_open`]); `false` by default,
    /// as in Node: a connection whose peer ended ends itself once its
    /// queued writes are out.
    pub allow_half_open: bool,
}

impl ListenOptions {
    /// Sets [`ListenOptions::backlog`].
    #[must_use = "a setter returns the changed options"]
    pub fn backlog(mut self, backlog: i32) -> ListenOptions {
        self.backlog = backlog;
        self
    }

    /// Sets [`ListenOptions::reuse_port`].
    #[must_use = "a setter returns the changed options"]
    pub fn reuse_port(mut self, reuse_port: bool) -> ListenOptions {
        self.reuse_port = reuse_port;
        self
    }

    /// Sets [`ListenOptions::allow_half_open`].
    #[must_use = "a setter returns the changed options"]
    pub fn allow_half_open(mut self, allow_half_open: bool) -> ListenOptions {
        self.allow_half_open = allow_half_open;
        self
    }
}

impl Default for ListenOptions {
    fn default() -> ListenOptions {
        ListenOptions {
            backlog: 511,
            reuse_port: false,
            allow_half_open: false,
        }
    }
}

/// A listening socket's handle of either kind (Node's `net.Server`), for
/// code that serves both alike: what [`TcpListener`] and [`UnixListener`]
/// convert into (`Listener::from`). `Copy`, and stale once closed;
/// dropping it does not close the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[must_use = "dropping a listener's handle does not close it: it listens (and keeps \
              the loop alive) until closed with the handle"]
pub struct Listener(Key);

impl Listener {
    pub(crate) fn id(self) -> SlotId {
        self.0.slot
    }

    pub(crate) fn from_id(key: Key) -> Listener {
        Listener(key)
    }

    /// Its number in [`Loop::handles`].
    pub(crate) fn raw(self) -> u64 {
        crate::slab::raw(self.0.slot)
    }
}

/// Where a listener listens, for its messages.
pub(super) enum Place {
    Ip(SocketAddr),
    /// Unlinked when the listener closes, as libuv does.
    Path(PathBuf),
    /// An adopted Unix domain listener's path (empty if unnamed): its
    /// file belongs to whoever made it, and is never unlinked here.
    Adopted(PathBuf),
}

impl Place {
    fn error(&self, syscall: &'static str, e: std::io::Error) -> Error {
        match self {
            Place::Ip(addr) => Error::net(syscall, Some(*addr), e),
            Place::Path(path) | Place::Adopted(path) => Error::net_path(syscall, path, e),
        }
    }
}

pub(crate) struct ListenerState {
    socket: Socket,
    place: Place,
    /// Its entry in [`Servers`]: the connections it accepted.
    server: u32,
    /// `None` while it runs.
    on_connection: Option<OnConnection>,
    /// The multishot accept is armed.
    accepting: bool,
    referenced: bool,
    /// `ListenOptions::allow_half_open`, for its connections.
    allow_half_open: bool,
}

impl Loop {
    /// Listens on `addr` (port 0: one the system picks, see
    /// [`TcpListener::local_addr`]); `on_connection` runs with each
    /// accepted connection, or with an error of `accept`. The listener
    /// keeps the loop alive until closed (or [`Listener::unref`]).
    ///
    /// # Errors
    ///
    /// [`Error::Net`] with syscall `"listen"` when the socket cannot be
    /// made, bound or put to listen (`listen EADDRINUSE: address already in
    /// use 127.0.0.1:8080`).
    #[track_caller]
    pub fn tcp_listen(
        &mut self,
        addr: SocketAddr,
        options: ListenOptions,
        mut on_connection: impl FnMut(&mut Loop, Result<TcpStream>) + 'static,
    ) -> Result<TcpListener> {
        let on_connection =
            move |lp: &mut Loop, r: Result<Stream>| on_connection(lp, r.map(TcpStream));
        let place = Place::Ip(addr);
        let error = |e| place.error("listen", e);
        let socket = super::tcp_socket(addr).map_err(error)?;
        socket.set_reuse_address(true).map_err(error)?;
        if options.reuse_port {
            socket.set_reuse_port(true).map_err(error)?;
        }
        socket.bind(&addr.into()).map_err(error)?;
        socket.listen(options.backlog).map_err(error)?;
        let listener = self.listen_on(socket, place, options, Box::new(on_connection))?;
        Ok(TcpListener(listener))
    }

    /// Listens on a Unix domain stream socket at `path` (Node's
    /// `server.listen(path)`); `on_connection` runs with each accepted
    /// connection ([`UnixStream`]s, with the API every stream has). The socket
    /// file is made by the bind and removed when the listener closes, as
    /// libuv and Node do; an existing file at `path` is an error
    /// (`listen EADDRINUSE: address already in use /tmp/app.sock`), never
    /// removed first. `options.reuse_port` is ignored.
    ///
    /// # Errors
    ///
    /// [`Error::NetPath`] with syscall `"listen"` when the socket cannot be
    /// made, bound or put to listen.
    #[track_caller]
    pub fn unix_listen(
        &mut self,
        path: impl AsRef<Path>,
        options: ListenOptions,
        mut on_connection: impl FnMut(&mut Loop, Result<UnixStream>) + 'static,
    ) -> Result<UnixListener> {
        let on_connection =
            move |lp: &mut Loop, r: Result<Stream>| on_connection(lp, r.map(UnixStream));
        let path = path.as_ref();
        let error = |e| Error::net_path("listen", path, e);
        let socket = super::unix_socket().map_err(error)?;
        let addr = SockAddr::unix(path).map_err(error)?;
        socket.bind(&addr).map_err(error)?;
        let place = Place::Path(path.to_path_buf());
        if let Err(e) = socket.listen(options.backlog) {
            let _ = std::fs::remove_file(path);
            return Err(error(e));
        }
        let listener = self.listen_on(socket, place, options, Box::new(on_connection))?;
        Ok(UnixListener(listener))
    }

    /// Listens on `socket`; the listener's registration site (for the
    /// listing, the detector, and the connections it accepts) is the
    /// caller's (`#[track_caller]` through the public constructors).
    #[track_caller]
    pub(super) fn listen_on(
        &mut self,
        socket: Socket,
        place: Place,
        options: ListenOptions,
        on_connection: OnConnection,
    ) -> Result<Listener> {
        let site = std::panic::Location::caller();
        self.io.net.ensure_reserve();
        let fd = socket.as_raw_fd();
        let server = self.io.net.servers.open(site);
        let listener = ListenerState {
            socket,
            place,
            server,
            on_connection: Some(on_connection),
            accepting: false,
            referenced: true,
            allow_half_open: options.allow_half_open,
        };
        let id = Listener(self.io.net.listeners.insert(listener));
        if let Err(refused) = id.arm(self, fd) {
            let listener = self.io.net.listeners.remove(id.0).expect("just inserted");
            drop(self.io.net.servers.close(listener.server, None));
            let error = listener.place.error("listen", refused);
            listener.unlink();
            return Err(error);
        }
        self.remember_site(crate::diag::Kind::Listener, id.raw(), site);
        Ok(id)
    }
}

impl ListenerState {
    /// Removes a Unix socket's file.
    fn unlink(&self) {
        if let Place::Path(path) = &self.place {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl TcpListener {
    /// The address it listens on (with the port the system chose).
    ///
    /// # Errors
    ///
    /// [`Error::Stale`] once closed; the system's error otherwise.
    pub fn local_addr(self, lp: &Loop) -> Result<SocketAddr> {
        let listener = lp
            .io
            .net
            .listeners
            .get(self.0.0)
            .ok_or_else(|| lp.io.net.listeners.miss(self.0.0, WHAT))?;
        super::socket_addr(listener.socket.local_addr())
            .map_err(|e| Error::net("getsockname", None, e))
    }
}

impl UnixListener {
    /// The path it listens on (removed when it closes).
    ///
    /// # Errors
    ///
    /// [`Error::Stale`] once closed.
    pub fn path(self, lp: &Loop) -> Result<PathBuf> {
        match &lp
            .io
            .net
            .listeners
            .get(self.0.0)
            .ok_or_else(|| lp.io.net.listeners.miss(self.0.0, WHAT))?
            .place
        {
            Place::Path(path) | Place::Adopted(path) => Ok(path.clone()),
            Place::Ip(_) => unreachable!("a UnixListener listens on a path"),
        }
    }
}

impl Listener {
    /// Stops listening and closes the socket (and removes a Unix socket's
    /// file) at once: the handle is stale from now on and no connection
    /// callback runs after this. Connections accepted by the kernel and
    /// not yet delivered are reset, as the ones waiting in the backlog
    /// are; the connections already delivered stay open. Returns `false`,
    /// doing nothing, if already closed.
    pub fn close(self, lp: &mut Loop) -> bool {
        self.close_with(lp, None)
    }

    /// As [`Listener::close`], and `on_close` runs once the listener is
    /// closed *and* every connection it delivered has been closed or
    /// destroyed (Node's `server.close(callback)`, its `'close'` event):
    /// as a next-tick queued by this call if no connection is open, else
    /// queued by the [`Stream::close`] (or the error that destroys a
    /// stream) that closes the last one, before the ticks its caller
    /// queues after it and before that stream's own close callback.
    /// Returns `false`, dropping `on_close`, if already closed (Node calls
    /// a second `close`'s callback with `ERR_SERVER_NOT_RUNNING`).
    ///
    /// An open connection that does nothing does not keep the loop alive
    /// (libuv's rule, see the [module documentation](super)): if the loop
    /// ends before it is closed, `on_close` does not run.
    pub fn close_then(self, lp: &mut Loop, on_close: impl FnOnce(&mut Loop) + 'static) -> bool {
        self.close_with(lp, Some(Box::new(on_close)))
    }

    /// Lets the loop end while this listener waits for connections
    /// (libuv's `uv_unref`, Node's `server.unref()`); it still accepts
    /// while the loop runs. Returns `false` for a closed listener.
    pub fn unref(self, lp: &mut Loop) -> bool {
        self.set_ref(lp, false)
    }

    /// Makes the listener keep the loop alive again (`true`, libuv's
    /// `uv_ref`, Node's `server.ref()`), or not (`false`). Returns `false`
    /// for a closed listener.
    pub fn set_ref(self, lp: &mut Loop, referenced: bool) -> bool {
        let Some(listener) = lp.io.net.listeners.get_mut(self.0) else {
            return false;
        };
        if listener.accepting && listener.referenced != referenced {
            // The accept in flight starts or stops keeping the loop alive.
            if referenced {
                lp.io.sockets += 1;
            } else {
                lp.io.sockets -= 1;
            }
        }
        listener.referenced = referenced;
        true
    }

    /// The connections this listener delivered that are still open
    /// (Node's `server.getConnections()`); 0 for a closed listener.
    pub fn connections(self, lp: &Loop) -> usize {
        lp.io
            .net
            .listeners
            .get(self.0)
            .map_or(0, |l| lp.io.net.servers.connections(l.server))
    }

    /// Whether the listener keeps the loop alive (libuv's `uv_has_ref`);
    /// `false` for a closed listener.
    pub fn has_ref(self, lp: &Loop) -> bool {
        lp.io
            .net
            .listeners
            .get(self.0)
            .is_some_and(|l| l.referenced)
    }

    fn close_with(self, lp: &mut Loop, on_close: Option<Task>) -> bool {
        let Some(listener) = lp.io.net.listeners.remove(self.0) else {
            return false;
        };
        if listener.accepting && !listener.referenced {
            // Its accept's final completion is still to come and finds no
            // listener: it keeps the loop alive from now on.
            lp.io.sockets += 1;
        }
        listener.unlink();
        super::close_socket(lp, listener.socket);
        // The handle closes as libuv's do (the loop lives on to the close
        // phase); the callback waits for the connections (Node's
        // `_emitCloseIfDrained`).
        lp.push_closing(None);
        if let Some(on_close) = lp.io.net.servers.close(listener.server, on_close) {
            lp.next_tick(on_close);
        }
        true
    }

    /// Submits the multishot accept.
    fn arm(self, lp: &mut Loop, fd: RawFd) -> std::io::Result<()> {
        let referenced = lp.io.net.listeners.get(self.0).is_none_or(|l| l.referenced);
        lp.submit_direct(Op::accept_multi(fd), Direct::Accepted(self), referenced)
            .map_err(|refused| refused.error)?;
        if let Some(listener) = lp.io.net.listeners.get_mut(self.0) {
            listener.accepting = true;
        }
        Ok(())
    }

    pub(crate) fn on_accept(self, lp: &mut Loop, c: Completion) {
        if !c.more {
            self.accept_ended(lp);
        }
        if lp.io.net.hand_backs.has_listener(self) {
            return super::adopt::accepted_while_handing_back(lp, self, c);
        }
        let accepted = match c.result {
            Ok(fd) => {
                let fd = RawFd::try_from(fd).expect("a descriptor fits in RawFd");
                // SAFETY: the reactor hands over the descriptor accept just
                // made: open, and owned by nobody else.
                Ok(unsafe { Socket::from_raw_fd(fd) })
            }
            Err(error) if c.is_cancelled() => return drop(error),
            Err(error) => Err(error),
        };
        let Some(listener) = lp.io.net.listeners.get_mut(self.0) else {
            // Closed meanwhile: the connection is reset, as the ones left
            // in the backlog are when the listening socket closes.
            if let Ok(socket) = accepted {
                let _ = socket.set_linger(Some(std::time::Duration::ZERO));
            }
            return;
        };
        let fd = listener.socket.as_raw_fd();
        let server = listener.server;
        let allow_half_open = listener.allow_half_open;
        let error = match accepted {
            Ok(socket) => {
                let mut state = StreamState::new(socket);
                state.set_server(server);
                state.set_allow_half_open(allow_half_open);
                lp.io.net.servers.accepted(server);
                let stream = Stream::insert(lp, state);
                self.report(lp, Ok(stream));
                // A multishot accept may also end on a connection (the
                // kernel drops it, on a full completion queue say): arm
                // it again if still listening.
                if !c.more
                    && lp
                        .io
                        .net
                        .listeners
                        .get(self.0)
                        .is_some_and(|l| !l.accepting)
                    && let Err(refused) = self.arm(lp, fd)
                {
                    self.fail(lp, "accept", refused);
                }
                return;
            }
            Err(error) => error,
        };
        let out_of_fds = matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
        // libuv's answer to running out of descriptors: with the reserve
        // descriptor released, take the waiting connections and close them
        // (their clients see the connection end instead of hanging), then
        // keep listening. The connections already open are untouched.
        if out_of_fds && lp.io.net.shed_waiting_connections(fd) {
            log::debug!("eventide: accept ran out of descriptors; dropped waiting connections");
        } else if out_of_fds || !transient(&error) {
            // Anything else ends the accepting: reported, the listener
            // stays open until closed.
            return self.fail(lp, "accept", error);
        }
        if !c.more
            && let Err(refused) = self.arm(lp, fd)
        {
            self.fail(lp, "accept", refused);
        }
    }

    /// Reports an error of `syscall` to the connection callback.
    fn fail(self, lp: &mut Loop, syscall: &'static str, error: std::io::Error) {
        let Some(listener) = lp.io.net.listeners.get(self.0) else {
            return;
        };
        let error = listener.place.error(syscall, error);
        self.report(lp, Err(error));
    }

    /// The multishot accept's final completion: it no longer keeps the
    /// loop alive (a closed listener's always did, see `close_with`).
    fn accept_ended(self, lp: &mut Loop) {
        match lp.io.net.listeners.get_mut(self.0) {
            Some(listener) => {
                if listener.referenced {
                    lp.io.sockets -= 1;
                }
                listener.accepting = false;
            }
            None => lp.io.sockets -= 1,
        }
    }

    /// Runs the connection callback, and puts it back if still listening.
    fn report(self, lp: &mut Loop, result: Result<Stream>) {
        let Some(listener) = lp.io.net.listeners.get_mut(self.0) else {
            return;
        };
        let Some(mut on_connection) = listener.on_connection.take() else {
            return;
        };
        let panicked = super::stream::catch(|| on_connection(lp, result));
        if let Some(listener) = lp.io.net.listeners.get_mut(self.0) {
            listener.on_connection = Some(on_connection);
        }
        if let Err(payload) = panicked {
            // The callback is back; the accepting goes on (re-armed from
            // the next pending phase if it ended with this connection).
            lp.defer(move |lp| self.rearm(lp));
            std::panic::resume_unwind(payload);
        }
    }

    /// Arms the accept again if the listener is open and not accepting.
    fn rearm(self, lp: &mut Loop) {
        let Some(listener) = lp.io.net.listeners.get(self.0) else {
            return;
        };
        if listener.accepting {
            return;
        }
        let fd = listener.socket.as_raw_fd();
        if let Err(refused) = self.arm(lp, fd) {
            self.fail(lp, "accept", refused);
        }
    }
}

/// Node's `server._connections` for every listener: how many of the
/// connections it delivered are still open, and the callback of
/// [`Listener::close_then`] waiting for them. An entry outlives its
/// listener until the last of them is closed; streams name it by index
/// (a slot is not reused while a stream names it, so no generation is
/// needed, which keeps the stream's slot small: W10).
#[derive(Default)]
pub(crate) struct Servers {
    slots: Vec<Option<Server>>,
    free: Vec<u32>,
}

struct Server {
    /// Where its listener was made: the site of the connections it
    /// accepted, in the listing (one pointer per listener, none per
    /// connection: W10 counts every byte of an idle one).
    site: crate::diag::Site,
    connections: usize,
    /// The listener is closed: the entry goes when `connections` is 0.
    closed: bool,
    on_close: Option<Task>,
}

impl Servers {
    /// Where the listener of entry `index` was made (`None` for no entry).
    pub(crate) fn site(&self, index: u32) -> Option<crate::diag::Site> {
        self.slots.get(index as usize)?.as_ref().map(|s| s.site)
    }

    /// A new entry, for a listener.
    fn open(&mut self, site: crate::diag::Site) -> u32 {
        let server = Server {
            site,
            connections: 0,
            closed: false,
            on_close: None,
        };
        if let Some(index) = self.free.pop() {
            self.slots[index as usize] = Some(server);
            return index;
        }
        let index = u32::try_from(self.slots.len()).expect("eventide: more than 2^32 listeners");
        self.slots.push(Some(server));
        index
    }

    fn get(&mut self, index: u32) -> &mut Server {
        self.slots[index as usize]
            .as_mut()
            .expect("a listener's or open stream's server entry")
    }

    fn connections(&self, index: u32) -> usize {
        self.slots[index as usize]
            .as_ref()
            .map_or(0, |s| s.connections)
    }

    /// A connection was delivered.
    fn accepted(&mut self, index: u32) {
        self.get(index).connections += 1;
    }

    /// The listener closed: returns `on_close` if it may run now (no
    /// connection open), else keeps it for the last connection's close.
    fn close(&mut self, index: u32, on_close: Option<Task>) -> Option<Task> {
        let server = self.get(index);
        server.closed = true;
        server.on_close = on_close;
        self.release_if_drained(index)
    }

    /// A delivered connection was closed or destroyed: returns the
    /// listener's close callback if it may run now.
    pub(super) fn left(&mut self, index: u32) -> Option<Task> {
        self.get(index).connections -= 1;
        self.release_if_drained(index)
    }

    fn release_if_drained(&mut self, index: u32) -> Option<Task> {
        let server = self.get(index);
        if !server.closed || server.connections > 0 {
            return None;
        }
        let on_close = self.slots[index as usize].take().and_then(|s| s.on_close);
        self.free.push(index);
        on_close
    }
}

impl super::Sockets {
    /// Opens the reserve descriptor if it is not open yet (it may have
    /// been spent in an earlier shortage).
    fn ensure_reserve(&mut self) {
        if self.reserve.is_none() {
            self.reserve = std::fs::File::open("/dev/null").ok().map(OwnedFd::from);
        }
    }

    /// libuv's `uv__emfile_trick`: close the reserve descriptor, accept
    /// and close every connection waiting on `listener` (it is
    /// nonblocking), then open the reserve again. Returns `false`, doing
    /// nothing, without a reserve (then accepting must stop, or it would
    /// spin on the same error).
    fn shed_waiting_connections(&mut self, listener: RawFd) -> bool {
        if self.reserve.take().is_none() {
            return false;
        }
        loop {
            let fd = accept_and_close_on_exec(listener);
            if fd < 0 {
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                break;
            }
            // SAFETY: accept4 just made `fd`; nobody else owns it.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        self.ensure_reserve();
        true
    }
}

impl Listener {
    /// The listening socket's descriptor, borrowed from the loop.
    pub(super) fn socket_fd(self, lp: &Loop) -> Result<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        lp.io
            .net
            .listeners
            .get(self.0)
            .map(|l| l.socket.as_fd())
            .ok_or_else(|| lp.io.net.listeners.miss(self.0, WHAT))
    }

    /// Takes the listener out of the table for `into_std`: the handle is
    /// stale from now on, its connection callback dropped, the
    /// connections it delivered stay open (and [`Listener::close_then`]
    /// no longer applies); a Unix socket's file is kept. Its accept, if
    /// armed, is cancelled: its final completion is still to come (`true`).
    pub(super) fn take_for_std(self, lp: &mut Loop) -> Result<(Socket, bool)> {
        let Some(listener) = lp.io.net.listeners.remove(self.0) else {
            return Err(lp.io.net.listeners.miss(self.0, WHAT));
        };
        if listener.accepting && !listener.referenced {
            // Its accept's final completion is still to come and finds no
            // listener: it keeps the loop alive from now on.
            lp.io.sockets += 1;
        }
        if listener.accepting {
            lp.reactor.cancel(Direct::Accepted(self).token());
        }
        drop(lp.io.net.servers.close(listener.server, None));
        Ok((listener.socket, listener.accepting))
    }
}

/// One `accept` on `listener` for a connection closed at once: close-on-
/// exec from the start where `accept4` exists, else (macOS) not at all
/// for the instant it lives.
fn accept_and_close_on_exec(listener: RawFd) -> RawFd {
    #[cfg(any(
        target_os = "linux",
        target_os = "android",
        target_os = "freebsd",
        target_os = "netbsd",
        target_os = "openbsd",
        target_os = "dragonfly"
    ))]
    {
        // SAFETY: accept4 with null address pointers only returns a new
        // descriptor, which the caller owns; `listener` is the listener's
        // open socket.
        unsafe {
            libc::accept4(
                listener,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        }
    }
    #[cfg(not(any(
        target_os = "linux",
        target_os = "android",
        target_os = "freebsd",
        target_os = "netbsd",
        target_os = "openbsd",
        target_os = "dragonfly"
    )))]
    {
        // SAFETY: as above, with accept.
        unsafe { libc::accept(listener, std::ptr::null_mut(), std::ptr::null_mut()) }
    }
}

/// Accept errors that concern one connection only: accept again.
fn transient(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ECONNABORTED | libc::EINTR | libc::EAGAIN | libc::EPROTO | libc::EPERM)
    )
}

/// What a listener is called in errors.
const WHAT: &str = "listener";

impl Loop {
    /// The listeners, for [`Loop::handles`]; returns how many of the
    /// socket operations counted in `Io::sockets` they account for.
    pub(crate) fn list_listeners(&self, listing: &mut crate::diag::Listing) -> usize {
        let mut ops = 0;
        for (slot, l) in self.io.net.listeners.iter() {
            let id = crate::slab::raw(slot);
            let keeps = l.accepting && l.referenced;
            ops += usize::from(keeps);
            let kind = crate::diag::Kind::Listener;
            listing.add(kind, id, l.referenced, keeps, self.site_of(kind, id));
        }
        ops
    }
}
