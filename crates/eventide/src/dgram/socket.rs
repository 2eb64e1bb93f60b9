//! UDP sockets: receive on readiness, send through a queue, options,
//! multicast, close.
//!
//! Ground rules:
//! - At most one readable wait and one writable wait are in flight per
//!   socket (`recv_wait`, `send_wait`); each is a single-shot
//!   [`Op::poll`], submitted again while it is still wanted.
//! - No user callback runs while the socket table is borrowed: a callback
//!   is taken out of its socket, run, and put back if the socket is still
//!   there (it may have been closed by the callback).
//! - A completion that finds its socket gone (closed: the reactor's close
//!   cancelled the wait) does nothing.

use std::collections::VecDeque;
use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd, OwnedFd};

use eventide_reactor::{Completion, Interest, Op, Token};
use socket2::{MaybeUninitSlice, Socket};

use super::{MulticastInterface, table};
use crate::event_loop::{Loop, Task};
use crate::net::WriteBuf;
use crate::slab::Key;
use crate::{Error, Result};

type OnMessage = Box<dyn FnMut(&mut Loop, UdpSocket, &[u8], SocketAddr)>;
type OnError = Box<dyn FnMut(&mut Loop, UdpSocket, Error)>;
type OnSent = Box<dyn FnOnce(&mut Loop, Result<usize>)>;

/// Datagrams read per readiness before the socket is watched again
/// (libuv's count in `uv__udp_recvmsg`).
const READS_PER_WAKEUP: usize = 32;

/// A UDP socket's handle ([`Loop::udp_bind`]): `Copy`, and stale once
/// closed (see the [module documentation](super)). Dropping it does not
/// close the socket: [`UdpSocket::close`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[must_use = "dropping a UDP socket's handle does not close it: it stays bound until \
              closed with the handle"]
pub struct UdpSocket(Key);

pub(crate) struct Udp {
    socket: Socket,
    ipv6: bool,
    /// The peer of `connect`, if connected.
    peer: Option<SocketAddr>,
    reading: bool,
    /// Whether receiving keeps the loop alive (libuv's `uv_ref`).
    referenced: bool,
    /// `None` while it runs.
    on_message: Option<OnMessage>,
    /// `None` while it runs.
    on_error: Option<OnError>,
    /// The receive buffer's length (the loop's one buffer is at least this
    /// long, see `table::Sockets`).
    max_datagram: usize,
    /// The readable wait in flight.
    recv_wait: Option<Token>,
    /// Sends waiting for the socket to be writable, in order.
    sends: VecDeque<Queued>,
    /// Bytes in `sends`.
    queued: usize,
    /// The writable wait in flight.
    send_wait: Option<Token>,
    /// Readable waits cancelled by `recv_stop` whose completion is still
    /// to come (for `into_std`, which waits for them).
    stray: u32,
}

struct Queued {
    /// As the caller gave it: `sendto` takes it as it is.
    buf: WriteBuf,
    /// `None` on a connected socket's [`UdpSocket::send`].
    to: Option<SocketAddr>,
    on_sent: OnSent,
}

/// What one nonblocking `sendto` gave.
enum Sent {
    Done(usize),
    WouldBlock,
    Failed(Error),
}

impl UdpSocket {
    pub(super) fn insert(
        sockets: &mut table::Sockets,
        socket: Socket,
        ipv6: bool,
        max_datagram: usize,
    ) -> Self {
        let udp = Udp {
            socket,
            ipv6,
            peer: None,
            reading: false,
            referenced: true,
            on_message: None,
            on_error: None,
            max_datagram: max_datagram.max(1),
            recv_wait: None,
            sends: VecDeque::new(),
            queued: 0,
            send_wait: None,
            stray: 0,
        };
        UdpSocket(sockets.insert(udp))
    }

    /// Starts receiving: `on_message` runs with each datagram and its
    /// sender (the slice is valid during the call only), `on_error` with
    /// each receive error (`recvmsg ECONNREFUSED` after a connected
    /// socket's datagram was refused, `recvmsg EMSGSIZE` for a datagram
    /// over [`UdpOptions::max_datagram`](super::UdpOptions::max_datagram));
    /// receiving goes on after an error. Replaces the callbacks of an
    /// earlier `recv_start`. While receiving, the socket keeps the loop
    /// alive. On a closed socket, `on_error` gets [`Error::Stale`] in the
    /// next pending phase.
    pub fn recv_start(
        self,
        lp: &mut Loop,
        on_message: impl FnMut(&mut Loop, UdpSocket, &[u8], SocketAddr) + 'static,
        mut on_error: impl FnMut(&mut Loop, UdpSocket, Error) + 'static,
    ) {
        let table = table::of(lp);
        let mut sockets = table.borrow_mut();
        let Some(udp) = sockets.get_mut(self.0) else {
            let error = sockets.miss(self.0, WHAT);
            drop(sockets);
            lp.defer(move |lp| on_error(lp, self, error));
            return;
        };
        udp.reading = true;
        udp.on_message = Some(Box::new(on_message));
        udp.on_error = Some(Box::new(on_error));
        drop(sockets);
        self.wait_readable(lp);
    }

    /// Whether a receiving socket keeps the loop alive (Node's
    /// `socket.ref()` / `socket.unref()`, libuv's `uv_ref` / `uv_unref`):
    /// an unreferenced one still receives while something else keeps the
    /// loop running, but does not keep it running by itself. Sends in
    /// flight keep the loop alive either way, as libuv's requests do.
    /// Returns `false` for a closed socket.
    pub fn set_ref(self, lp: &mut Loop, referenced: bool) -> bool {
        let table = table::of(lp);
        let mut sockets = table.borrow_mut();
        let Some(udp) = sockets.get_mut(self.0) else {
            return false;
        };
        udp.referenced = referenced;
        if let Some(token) = udp.recv_wait {
            lp.io.set_counted(token, referenced);
        }
        true
    }

    /// [`UdpSocket::set_ref`] with `false` (Node's `socket.unref()`).
    pub fn unref(self, lp: &mut Loop) -> bool {
        self.set_ref(lp, false)
    }

    /// Whether the socket is referenced (libuv's `uv_has_ref`); `false`
    /// once closed.
    pub fn has_ref(self, lp: &Loop) -> bool {
        table::of(lp)
            .borrow()
            .get(self.0)
            .is_some_and(|udp| udp.referenced)
    }

    /// Stops receiving: no `on_message` runs until the next
    /// [`UdpSocket::recv_start`], and the socket no longer keeps the loop
    /// alive for that. Datagrams that arrive meanwhile wait in the kernel's
    /// buffer (which drops what overflows it, as UDP does). Returns `false`
    /// for a closed socket.
    pub fn recv_stop(self, lp: &mut Loop) -> bool {
        let table = table::of(lp);
        let mut sockets = table.borrow_mut();
        let Some(udp) = sockets.get_mut(self.0) else {
            return false;
        };
        udp.reading = false;
        udp.on_message = None;
        udp.on_error = None;
        if let Some(token) = udp.recv_wait.take() {
            // Its completion (ECANCELED, or readiness that came first)
            // finds `recv_wait` no longer naming it, and ends there.
            lp.reactor.cancel(token);
            // Until its completion comes, it keeps the loop alive (as a
            // closing handle's operations do), for `into_std`'s sake.
            lp.io.set_counted(token, true);
            udp.stray += 1;
        }
        true
    }

    /// Sends `data` (a `Vec<u8>`, a `&'static [u8]`, a shared buffer:
    /// whatever converts into a [`WriteBuf`], sent as it is, never copied)
    /// as one datagram to `to`; `on_sent` runs with the bytes
    /// sent, or the error (`send EMSGSIZE 127.0.0.1:9`), never inside this
    /// call. When the datagram goes (or fails) at once, as nearly always,
    /// `on_sent` runs as Node's does: as a next-tick, after the next-ticks
    /// queued after this call (Node's send goes through a lookup tick
    /// first); when the kernel would block, the datagram waits in the
    /// socket's queue and `on_sent` runs from the poll phase that sends it.
    /// Datagrams go out in the order sent. On a connected socket, `to` must
    /// be the peer or the send fails with `EISCONN` (use
    /// [`UdpSocket::send`]); errors known before any system call (this one,
    /// [`Error::Stale`]) come in the next pending phase.
    pub fn send_to(
        self,
        lp: &mut Loop,
        data: impl Into<WriteBuf>,
        to: SocketAddr,
        on_sent: impl FnOnce(&mut Loop, Result<usize>) + 'static,
    ) {
        self.queue_send(lp, data.into(), Some(to), Box::new(on_sent));
    }

    /// Sends `data` to the peer of a connected socket
    /// ([`UdpSocket::connect`]), as [`UdpSocket::send_to`] (with no lookup
    /// tick: `on_sent` is the first next-tick queued after this call, as in
    /// Node); fails with `send EDESTADDRREQ` on a socket that is not
    /// connected.
    pub fn send(
        self,
        lp: &mut Loop,
        data: impl Into<WriteBuf>,
        on_sent: impl FnOnce(&mut Loop, Result<usize>) + 'static,
    ) {
        self.queue_send(lp, data.into(), None, Box::new(on_sent));
    }

    /// Bytes of datagrams waiting in the send queue (Node's
    /// `getSendQueueSize`); 0 for a closed socket.
    pub fn send_queue_size(self, lp: &Loop) -> usize {
        table::of(lp).borrow().get(self.0).map_or(0, |u| u.queued)
    }

    /// Datagrams waiting in the send queue (Node's `getSendQueueCount`);
    /// 0 for a closed socket.
    pub fn send_queue_count(self, lp: &Loop) -> usize {
        table::of(lp)
            .borrow()
            .get(self.0)
            .map_or(0, |u| u.sends.len())
    }

    /// Associates the socket with one peer (Node's `socket.connect`, done
    /// at once as libuv's `uv_udp_connect`): [`UdpSocket::send`] goes
    /// there, only its datagrams are received, and ICMP errors about it
    /// reach the receive error callback.
    ///
    /// # Errors
    ///
    /// [`Error::Stale`] once closed; `connect EISCONN` when already
    /// connected; the system's error otherwise.
    pub fn connect(self, lp: &mut Loop, peer: SocketAddr) -> Result<()> {
        self.with(lp, |udp| {
            let error = |e| Error::net("connect", Some(peer), e);
            if udp.peer.is_some() {
                return Err(error(errno(libc::EISCONN)));
            }
            udp.socket.connect(&peer.into()).map_err(error)?;
            udp.peer = Some(peer);
            Ok(())
        })
    }

    /// Undoes [`UdpSocket::connect`] (Node's `socket.disconnect`).
    ///
    /// # Errors
    ///
    /// [`Error::Stale`] once closed; `disconnect ENOTCONN` when not
    /// connected; the system's error otherwise.
    pub fn disconnect(self, lp: &mut Loop) -> Result<()> {
        self.with(lp, |udp| {
            let error = |e| Error::net("disconnect", None, e);
            if udp.peer.is_none() {
                return Err(error(errno(libc::ENOTCONN)));
            }
            dissolve(&udp.socket).map_err(error)?;
            udp.peer = None;
            Ok(())
        })
    }

    /// Allows sending to broadcast addresses (`SO_BROADCAST`, Node's
    /// `setBroadcast`).
    ///
    /// # Errors
    ///
    /// [`Error::Stale`] once closed; the system's error otherwise
    /// (`setBroadcast EBADF`).
    pub fn set_broadcast(self, lp: &mut Loop, on: bool) -> Result<()> {
        self.with(lp, |udp| {
            let error = |e| Error::net("setBroadcast", None, e);
            udp.socket.set_broadcast(on).map_err(error)
        })
    }

    /// Sets the unicast time to live, 1 to 255 (`IP_TTL`, or
    /// `IPV6_UNICAST_HOPS` on IPv6; Node's `setTTL`).
    ///
    /// # Errors
    ///
    /// [`Error::Stale`] once closed; `setTTL EINVAL` out of range; the
    /// system's error otherwise.
    pub fn set_ttl(self, lp: &mut Loop, ttl: u32) -> Result<()> {
        self.with(lp, |udp| {
            let error = |e| Error::net("setTTL", None, e);
            if !(1..=255).contains(&ttl) {
                return Err(error(errno(libc::EINVAL)));
            }
            let set = if udp.ipv6 {
                udp.socket.set_unicast_hops_v6(ttl)
            } else {
                udp.socket.set_ttl_v4(ttl)
            };
            set.map_err(error)
        })
    }

    /// Sets the multicast time to live, 0 to 255 (`IP_MULTICAST_TTL`, or
    /// `IPV6_MULTICAST_HOPS`; Node's `setMulticastTTL`).
    ///
    /// # Errors
    ///
    /// [`Error::Stale`] once closed; `setMulticastTTL EINVAL` out of
    /// range; the system's error otherwise.
    pub fn set_multicast_ttl(self, lp: &mut Loop, ttl: u32) -> Result<()> {
        self.with(lp, |udp| {
            let error = |e| Error::net("setMulticastTTL", None, e);
            if ttl > 255 {
                return Err(error(errno(libc::EINVAL)));
            }
            let set = if udp.ipv6 {
                udp.socket.set_multicast_hops_v6(ttl)
            } else {
                udp.socket.set_multicast_ttl_v4(ttl)
            };
            set.map_err(error)
        })
    }

    /// Whether multicast datagrams this socket sends are looped back to
    /// the host's own members (`IP_MULTICAST_LOOP`; Node's
    /// `setMulticastLoopback`). On by default.
    ///
    /// # Errors
    ///
    /// [`Error::Stale`] once closed; the system's error otherwise.
    pub fn set_multicast_loopback(self, lp: &mut Loop, on: bool) -> Result<()> {
        self.with(lp, |udp| {
            let error = |e| Error::net("setMulticastLoopback", None, e);
            let set = if udp.ipv6 {
                udp.socket.set_multicast_loop_v6(on)
            } else {
                udp.socket.set_multicast_loop_v4(on)
            };
            set.map_err(error)
        })
    }

    /// The interface multicast datagrams leave by (`IP_MULTICAST_IF`, or
    /// `IPV6_MULTICAST_IF`; Node's `setMulticastInterface`).
    ///
    /// # Errors
    ///
    /// [`Error::Stale`] once closed; `setMulticastInterface EINVAL` for an
    /// interface of the other family; the system's error otherwise.
    pub fn set_multicast_interface(
        self,
        lp: &mut Loop,
        interface: MulticastInterface,
    ) -> Result<()> {
        self.with(lp, |udp| {
            let error = |e| Error::net("setMulticastInterface", None, e);
            let set = match (udp.ipv6, interface) {
                (false, MulticastInterface::Default) => udp
                    .socket
                    .set_multicast_if_v4(&std::net::Ipv4Addr::UNSPECIFIED),
                (false, MulticastInterface::V4(address)) => {
                    udp.socket.set_multicast_if_v4(&address)
                }
                (true, MulticastInterface::Default) => udp.socket.set_multicast_if_v6(0),
                (true, MulticastInterface::V6(index)) => udp.socket.set_multicast_if_v6(index),
                _ => Err(errno(libc::EINVAL)),
            };
            set.map_err(error)
        })
    }

    /// Joins the multicast `group` on `interface` (Node's
    /// `addMembership`): an IPv4 group on an IPv4 socket (or a dual-stack
    /// IPv6 one), an IPv6 group on an IPv6 socket.
    ///
    /// # Errors
    ///
    /// [`Error::Stale`] once closed; as Node: `addMembership EINVAL` for an
    /// address that is not multicast (or an interface of the other family
    /// than the group), `addMembership ENOPROTOOPT` for an IPv6 group on an
    /// IPv4 socket, `addMembership EADDRINUSE` for a group already joined
    /// there; the system's error otherwise.
    pub fn add_membership(
        self,
        lp: &mut Loop,
        group: IpAddr,
        interface: MulticastInterface,
    ) -> Result<()> {
        self.membership(lp, group, interface, true)
    }

    /// Leaves a multicast group joined with [`UdpSocket::add_membership`]
    /// (Node's `dropMembership`).
    ///
    /// # Errors
    ///
    /// As [`UdpSocket::add_membership`], with `dropMembership
    /// EADDRNOTAVAIL` for a group not joined.
    pub fn drop_membership(
        self,
        lp: &mut Loop,
        group: IpAddr,
        interface: MulticastInterface,
    ) -> Result<()> {
        self.membership(lp, group, interface, false)
    }

    /// The address it is bound to (with the port the system chose).
    ///
    /// # Errors
    ///
    /// [`Error::Stale`] once closed; the system's error otherwise.
    pub fn local_addr(self, lp: &Loop) -> Result<SocketAddr> {
        let table = table::of(lp);
        let sockets = table.borrow();
        let udp = sockets
            .get(self.0)
            .ok_or_else(|| sockets.miss(self.0, WHAT))?;
        as_socket_addr(udp.socket.local_addr()).map_err(|e| Error::net("getsockname", None, e))
    }

    /// The peer of a connected socket (Node's `remoteAddress`).
    ///
    /// # Errors
    ///
    /// [`Error::Stale`] once closed; `getpeername ENOTCONN` when not
    /// connected.
    pub fn remote_addr(self, lp: &Loop) -> Result<SocketAddr> {
        let table = table::of(lp);
        let sockets = table.borrow();
        let udp = sockets
            .get(self.0)
            .ok_or_else(|| sockets.miss(self.0, WHAT))?;
        let error = |e| Error::net("getpeername", None, e);
        udp.peer.ok_or_else(|| error(errno(libc::ENOTCONN)))
    }

    /// Closes the socket at once: receiving stops, the descriptor is
    /// released, the handle is stale, and sends still queued get
    /// `ECANCELED` in this turn's close phase. Returns `false`, doing
    /// nothing, if already closed. Allowed anywhere, the socket's own
    /// callbacks included.
    pub fn close(self, lp: &mut Loop) -> bool {
        self.close_with(lp, None)
    }

    /// As [`UdpSocket::close`], and `on_close` runs right after the
    /// current callback, as a next-tick (when Node emits a dgram socket's
    /// `'close'`), never inside this call.
    pub fn close_then(self, lp: &mut Loop, on_close: impl FnOnce(&mut Loop) + 'static) -> bool {
        self.close_with(lp, Some(Box::new(on_close)))
    }

    fn close_with(self, lp: &mut Loop, on_close: Option<Task>) -> bool {
        let Some(udp) = table::of(lp).borrow_mut().remove(self.0) else {
            return false;
        };
        let Udp { socket, sends, .. } = udp;
        close_socket(lp, socket);
        if let Some(on_close) = on_close {
            lp.next_tick(on_close);
        }
        if !sends.is_empty() {
            lp.push_closing(Some(Box::new(move |lp: &mut Loop| {
                // One callback each, each followed by its next-ticks, as
                // libuv's `uv__udp_finish_close` calls them and Node wraps
                // every one.
                let mut panicked = None;
                for send in sends {
                    let error = Error::net("send", send.to, errno(libc::ECANCELED));
                    // Each gets its error, even after one panicked.
                    let called =
                        catch(|| lp.invoke(move |lp: &mut Loop| (send.on_sent)(lp, Err(error))));
                    if let Err(payload) = called {
                        panicked.get_or_insert(payload);
                    }
                }
                if let Some(payload) = panicked {
                    std::panic::resume_unwind(payload);
                }
            })));
        }
        true
    }

    /// Runs `f` on the socket's state; [`Error::Stale`] once closed.
    fn with<T>(self, lp: &Loop, f: impl FnOnce(&mut Udp) -> Result<T>) -> Result<T> {
        let table = table::of(lp);
        let mut sockets = table.borrow_mut();
        let miss = sockets.miss(self.0, WHAT);
        f(sockets.get_mut(self.0).ok_or(miss)?)
    }

    fn membership(
        self,
        lp: &mut Loop,
        group: IpAddr,
        interface: MulticastInterface,
        join: bool,
    ) -> Result<()> {
        self.with(lp, |udp| {
            let syscall = if join {
                "addMembership"
            } else {
                "dropMembership"
            };
            // As libuv: the group's family picks the option, and the
            // kernel judges the rest (a unicast group is EINVAL, an IPv6
            // group on an IPv4 socket ENOPROTOOPT; an IPv4 group on a
            // dual-stack IPv6 socket works).
            let socket = &udp.socket;
            let done = match (group, interface) {
                (IpAddr::V4(group), MulticastInterface::Default | MulticastInterface::V4(_)) => {
                    let interface = match interface {
                        MulticastInterface::V4(address) => address,
                        _ => std::net::Ipv4Addr::UNSPECIFIED,
                    };
                    if join {
                        socket.join_multicast_v4(&group, &interface)
                    } else {
                        socket.leave_multicast_v4(&group, &interface)
                    }
                }
                (IpAddr::V6(group), MulticastInterface::Default | MulticastInterface::V6(_)) => {
                    let index = match interface {
                        MulticastInterface::V6(index) => index,
                        _ => 0,
                    };
                    if join {
                        socket.join_multicast_v6(&group, index)
                    } else {
                        socket.leave_multicast_v6(&group, index)
                    }
                }
                // An interface of the other family than the group.
                _ => Err(errno(libc::EINVAL)),
            };
            done.map_err(|e| Error::net(syscall, None, e))
        })
    }

    // ---- receiving ----

    /// Watches the socket for a datagram, if it reads and is not watched.
    fn wait_readable(self, lp: &mut Loop) {
        let table = table::of(lp);
        let mut sockets = table.borrow_mut();
        let Some(udp) = sockets.get_mut(self.0) else {
            return;
        };
        if !udp.reading || udp.recv_wait.is_some() {
            return;
        }
        let op = Op::poll(udp.socket.as_raw_fd(), Interest::READABLE);
        match lp.submit_io(op, move |lp, c| self.on_readable(lp, c)) {
            Ok(token) => {
                udp.recv_wait = Some(token);
                if !udp.referenced {
                    lp.io.set_counted(token, false);
                }
            }
            Err(refused) => {
                drop(sockets);
                let error = Error::net("recvmsg", None, refused.error);
                self.stop_on_error(lp, error);
            }
        }
    }

    fn on_readable(self, lp: &mut Loop, c: Completion) {
        {
            let table = table::of(lp);
            let mut sockets = table.borrow_mut();
            let Some(udp) = sockets.get_mut(self.0) else {
                // Closed, or being handed back (`into_std`): then this may
                // be the last wait it was waiting for.
                let handed_back = sockets.hand_back_waited(self);
                drop(sockets);
                if let Some(handed_back) = handed_back {
                    handed_back.finish(lp);
                }
                return;
            };
            if udp.recv_wait != Some(c.token) {
                udp.stray = udp.stray.saturating_sub(1);
                return; // Cancelled by recv_stop (whatever it says).
            }
            udp.recv_wait = None;
        }
        let panicked = match c.result {
            Ok(_) => self.read_ready(lp),
            Err(error) => {
                // The wait itself failed: nothing will make it succeed.
                return self.stop_on_error(lp, Error::net("recvmsg", None, error));
            }
        };
        self.wait_readable(lp);
        if let Some(payload) = panicked {
            std::panic::resume_unwind(payload);
        }
    }

    /// Reads and delivers up to [`READS_PER_WAKEUP`] datagrams, until the
    /// socket would block, an error, the reader goes, or a callback
    /// panics without a panic handler (the panic is returned).
    fn read_ready(self, lp: &mut Loop) -> Option<Payload> {
        for _ in 0..READS_PER_WAKEUP {
            let table = table::of(lp);
            let mut sockets = table.borrow_mut();
            let reading = sockets.get(self.0).filter(|udp| udp.reading);
            let max = reading.map(|udp| udp.max_datagram)?;
            let mut buf = sockets.take_buffer(max);
            let udp = sockets.get(self.0).expect("looked up just above");
            let received = receive(&udp.socket, &mut buf[..max]);
            drop(sockets);
            let mut panicked = None;
            let go_on = match received {
                Ok((n, false, from)) => {
                    panicked = self.deliver(lp, &buf[..n], from);
                    true
                }
                Ok((_, true, _)) => {
                    let error = Error::net("recvmsg", None, errno(libc::EMSGSIZE));
                    panicked = self.report(lp, error);
                    true
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
                Err(e) => {
                    // As libuv: report, and wait for the next readiness.
                    panicked = self.report(lp, Error::net("recvmsg", None, e));
                    false
                }
            };
            table.borrow_mut().give_buffer(buf);
            if panicked.is_some() {
                return panicked;
            }
            if !go_on {
                return None;
            }
        }
        None
    }

    /// Runs `on_message` with the datagram, then its next-ticks (each
    /// datagram is its own callback, as each of Node's `'message'` events
    /// is: the ticks one queues run before the next datagram). A panic
    /// leaves the callback in place (receiving goes on); without a panic
    /// handler it is returned, to be resumed once the socket is waiting
    /// for its next datagram again.
    fn deliver(self, lp: &mut Loop, data: &[u8], from: SocketAddr) -> Option<Payload> {
        let on_message = table::of(lp)
            .borrow_mut()
            .get_mut(self.0)
            .and_then(|udp| udp.on_message.take());
        let mut on_message = on_message?;
        let panicked = catch(|| {
            lp.note_call_of(crate::diag::Kind::Udp, self.raw());
            lp.guarded(|lp: &mut Loop| on_message(lp, self, data, from));
            lp.drain_ticks();
        });
        // Closed by the callback: nothing to put back. A recv_start inside
        // it brought new callbacks (or a recv_stop took them away): keep
        // that.
        if let Some(udp) = table::of(lp).borrow_mut().get_mut(self.0)
            && udp.reading
            && udp.on_message.is_none()
        {
            udp.on_message = Some(on_message);
        }
        panicked.err()
    }

    /// Runs the receive error callback with `error` (a panic: as in
    /// `deliver`).
    fn report(self, lp: &mut Loop, error: Error) -> Option<Payload> {
        let on_error = table::of(lp)
            .borrow_mut()
            .get_mut(self.0)
            .and_then(|udp| udp.on_error.take());
        let mut on_error = on_error?;
        let panicked = catch(|| {
            lp.note_call_of(crate::diag::Kind::Udp, self.raw());
            lp.guarded(|lp: &mut Loop| on_error(lp, self, error));
            lp.drain_ticks();
        });
        if let Some(udp) = table::of(lp).borrow_mut().get_mut(self.0)
            && udp.reading
            && udp.on_error.is_none()
        {
            udp.on_error = Some(on_error);
        }
        panicked.err()
    }

    /// Receiving cannot go on: it stops at once, and the error goes to the
    /// error callback in the next pending phase (this may run inside
    /// `recv_start`, whose callbacks never run inside it).
    fn stop_on_error(self, lp: &mut Loop, error: Error) {
        let on_error = {
            let table = table::of(lp);
            let mut sockets = table.borrow_mut();
            let Some(udp) = sockets.get_mut(self.0) else {
                return;
            };
            udp.reading = false;
            udp.on_message = None;
            udp.on_error.take()
        };
        if let Some(mut on_error) = on_error {
            lp.defer(move |lp| on_error(lp, self, error));
        }
    }

    // ---- sending ----

    fn queue_send(self, lp: &mut Loop, buf: WriteBuf, to: Option<SocketAddr>, on_sent: OnSent) {
        let table = table::of(lp);
        let mut sockets = table.borrow_mut();
        let Some(udp) = sockets.get_mut(self.0) else {
            let error = sockets.miss(self.0, WHAT);
            drop(sockets);
            lp.defer(move |lp| on_sent(lp, Err(error)));
            return;
        };
        let refused = match (to, udp.peer) {
            (Some(to), Some(peer)) if to != peer => {
                Some(Error::net("send", Some(to), errno(libc::EISCONN)))
            }
            (None, None) => Some(Error::net("send", None, errno(libc::EDESTADDRREQ))),
            _ => None,
        };
        if let Some(error) = refused {
            drop(sockets);
            lp.defer(move |lp| on_sent(lp, Err(error)));
            return;
        }
        // Connected: the peer was checked, and send(2) is enough.
        let connected = udp.peer.is_some();
        let to = if connected { None } else { to };
        if udp.sends.is_empty() {
            let outcome = send_one(&udp.socket, buf.as_slice(), to);
            if !matches!(outcome, Sent::WouldBlock) {
                drop(sockets);
                let result = match outcome {
                    Sent::Done(n) => Ok(n),
                    Sent::Failed(error) => Err(error),
                    Sent::WouldBlock => unreachable!("matched above"),
                };
                // Node's `doSend` calls back with `process.nextTick`; an
                // unconnected socket's send first goes through a lookup of
                // the address, itself a tick (`afterDns`): so one tick
                // later, behind the ticks queued after `send_to`.
                if connected {
                    lp.next_tick(move |lp| on_sent(lp, result));
                } else {
                    lp.next_tick(move |lp| lp.next_tick(move |lp| on_sent(lp, result)));
                }
                return;
            }
        }
        udp.queued += buf.len();
        udp.sends.push_back(Queued { buf, to, on_sent });
        drop(sockets);
        self.wait_writable(lp);
    }

    /// Watches the socket for room to send, if sends wait and it is not
    /// watched.
    fn wait_writable(self, lp: &mut Loop) {
        let table = table::of(lp);
        let mut sockets = table.borrow_mut();
        let Some(udp) = sockets.get_mut(self.0) else {
            return;
        };
        if udp.sends.is_empty() || udp.send_wait.is_some() {
            return;
        }
        let op = Op::poll(udp.socket.as_raw_fd(), Interest::WRITABLE);
        match lp.submit_io(op, move |lp, c| self.on_writable(lp, c)) {
            Ok(token) => udp.send_wait = Some(token),
            Err(refused) => {
                // No way to learn when it is writable: fail what waits.
                let sends = std::mem::take(&mut udp.sends);
                udp.queued = 0;
                drop(sockets);
                let errno = refused.error.raw_os_error().unwrap_or(libc::EIO);
                for send in sends {
                    let error = Error::net("send", send.to, io::Error::from_raw_os_error(errno));
                    lp.defer(move |lp| (send.on_sent)(lp, Err(error)));
                }
            }
        }
    }

    fn on_writable(self, lp: &mut Loop, c: Completion) {
        let failed = {
            let table = table::of(lp);
            let mut sockets = table.borrow_mut();
            let Some(udp) = sockets.get_mut(self.0) else {
                return; // Closed: the close phase fails what was queued.
            };
            udp.send_wait = None;
            c.result.err()
        };
        if let Some(error) = failed {
            return self.fail_sends(lp, error);
        }
        let panicked = self.flush(lp);
        self.wait_writable(lp);
        if let Some(payload) = panicked {
            std::panic::resume_unwind(payload);
        }
    }

    /// Sends from the head of the queue until it is empty or the socket
    /// would block; each callback runs as its datagram goes (or fails).
    /// Returns a panic that unwound out of a callback (no panic handler).
    fn flush(self, lp: &mut Loop) -> Option<Payload> {
        loop {
            let (send, result) = {
                let table = table::of(lp);
                let mut sockets = table.borrow_mut();
                let udp = sockets.get_mut(self.0)?;
                let head = udp.sends.front()?;
                let result = match send_one(&udp.socket, head.buf.as_slice(), head.to) {
                    Sent::WouldBlock => return None,
                    Sent::Done(n) => Ok(n),
                    Sent::Failed(error) => Err(error),
                };
                let send = udp.sends.pop_front().expect("the head is there");
                udp.queued -= send.buf.len();
                (send, result)
            };
            // Unwinding (no panic handler): the rest of the queue waits
            // for the next writable wait, armed by the caller first.
            if let Err(payload) =
                catch(|| lp.invoke(move |lp: &mut Loop| (send.on_sent)(lp, result)))
            {
                return Some(payload);
            }
        }
    }

    /// The writable wait failed: every queued send gets the error.
    fn fail_sends(self, lp: &mut Loop, error: io::Error) {
        let sends = {
            let table = table::of(lp);
            let mut sockets = table.borrow_mut();
            let Some(udp) = sockets.get_mut(self.0) else {
                return;
            };
            udp.queued = 0;
            std::mem::take(&mut udp.sends)
        };
        let errno = error.raw_os_error().unwrap_or(libc::EIO);
        let mut panicked = None;
        for send in sends {
            let error = Error::net("send", send.to, io::Error::from_raw_os_error(errno));
            // Each gets its error, even after one panicked (unwinding).
            if let Err(payload) =
                catch(|| lp.invoke(move |lp: &mut Loop| (send.on_sent)(lp, Err(error))))
            {
                panicked.get_or_insert(payload);
            }
        }
        if let Some(payload) = panicked {
            std::panic::resume_unwind(payload);
        }
    }
}

/// A panic caught from a callback, resumed once the socket's state is in
/// order.
type Payload = Box<dyn std::any::Any + Send>;

/// Runs user code, catching a panic for the caller to resume.
fn catch<R>(f: impl FnOnce() -> R) -> std::result::Result<R, Payload> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
}

/// One nonblocking `recvfrom` into `buf`: the length, whether the datagram
/// was longer than `buf` (and cut), and the sender.
fn receive(socket: &Socket, buf: &mut [u8]) -> io::Result<(usize, bool, SocketAddr)> {
    // SAFETY: `MaybeUninit<u8>` has the layout of `u8`, and the slice only
    // goes to `recvfrom`, which writes initialised bytes (or nothing) into
    // it: `buf` stays fully initialised.
    let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
    let mut bufs = [MaybeUninitSlice::new(uninit)];
    let (n, flags, from) = socket.recv_from_vectored(&mut bufs)?;
    let from = as_socket_addr(Ok(from))?;
    Ok((n, flags.is_truncated(), from))
}

/// One nonblocking `sendto` (or `send` when `to` is `None`).
fn send_one(socket: &Socket, buf: &[u8], to: Option<SocketAddr>) -> Sent {
    loop {
        let sent = match to {
            Some(to) => socket.send_to(buf, &to.into()),
            None => socket.send(buf),
        };
        return match sent {
            Ok(n) => Sent::Done(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Sent::WouldBlock,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Sent::Failed(Error::net("send", to, e)),
        };
    }
}

/// Dissolves a UDP socket's association (`connect` to `AF_UNSPEC`, as
/// libuv's `uv__udp_disconnect`).
fn dissolve(socket: &Socket) -> io::Result<()> {
    // SAFETY: an all-zero `sockaddr` is a valid value of the plain C
    // struct; its family is then set to AF_UNSPEC.
    let mut addr: libc::sockaddr = unsafe { std::mem::zeroed() };
    addr.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
    let len = std::mem::size_of::<libc::sockaddr>() as libc::socklen_t;
    // SAFETY: `addr` is a valid, initialised sockaddr of `len` bytes that
    // outlives the call; the descriptor is the socket's own, open.
    let rc = unsafe { libc::connect(socket.as_raw_fd(), &addr, len) };
    if rc == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    // Linux and the BSDs may answer EAFNOSUPPORT though it worked.
    if error.raw_os_error() == Some(libc::EAFNOSUPPORT) {
        return Ok(());
    }
    Err(error)
}

/// Hands `socket` to the reactor to close (after cancelling the waits on
/// it); closes it here if the reactor refuses.
fn close_socket(lp: &mut Loop, socket: Socket) {
    let op = Op::close(socket.as_raw_fd());
    if lp.submit_io(op, |_, _| {}).is_ok() {
        // The reactor owns the descriptor now.
        let _ = socket.into_raw_fd();
    }
}

fn as_socket_addr(addr: io::Result<socket2::SockAddr>) -> io::Result<SocketAddr> {
    addr?
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::Unsupported, "not an IP address"))
}

fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// What a UDP socket is called in errors.
const WHAT: &str = "UDP socket";

// ---- Adopting a std UDP socket and handing it back. ----

type OnHandedBack = Box<dyn FnOnce(&mut Loop, Result<std::net::UdpSocket>)>;

/// A UDP socket on its way back to the user ([`UdpSocket::into_std`]):
/// out of the table, waiting for the completions of its cancelled
/// readiness waits.
pub(crate) struct HandingBack {
    id: UdpSocket,
    socket: Socket,
    /// Waits whose completion is still to come.
    pending: u32,
    on_done: OnHandedBack,
}

impl HandingBack {
    fn finish(self, lp: &mut Loop) {
        (self.on_done)(lp, Ok(self.socket.into()));
    }
}

impl table::Sockets {
    /// One wait of `id` completed after it left the table: if it is being
    /// handed back and that was its last wait, returns it to finish.
    fn hand_back_waited(&mut self, id: UdpSocket) -> Option<HandingBack> {
        let at = self.hand_backs.iter().position(|h| h.id == id)?;
        let h = &mut self.hand_backs[at];
        h.pending -= 1;
        (h.pending == 0).then(|| self.hand_backs.swap_remove(at))
    }
}

impl UdpSocket {
    /// Adopts a std UDP socket (Node's `dgram.createSocket` then
    /// `bind({ fd })`, tokio's `UdpSocket::from_std`): made nonblocking
    /// and close-on-exec, owned by the loop from now on (closing the
    /// handle closes it), not receiving until [`UdpSocket::recv_start`].
    /// A connected socket stays connected ([`UdpSocket::send`] works).
    /// The receive buffer is [`UdpOptions::default`](super::UdpOptions)'s.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgValue`] if it is not a UDP socket (`The
    /// argument 'socket' must be a UDP socket. Received a TCP socket
    /// (AF_INET, SOCK_STREAM)`): the descriptor is then closed.
    pub fn from_std(lp: &mut Loop, socket: std::net::UdpSocket) -> Result<UdpSocket> {
        UdpSocket::from_fd(lp, socket.into())
    }

    /// [`UdpSocket::from_std`] for a descriptor (checked).
    ///
    /// # Errors
    ///
    /// As [`UdpSocket::from_std`].
    pub fn from_fd(lp: &mut Loop, fd: OwnedFd) -> Result<UdpSocket> {
        let socket = crate::net::adopt::adopt(fd, crate::net::adopt::Want::Udp)?;
        let ipv6 = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .is_some_and(|a| a.is_ipv6());
        let peer = socket.peer_addr().ok().and_then(|a| a.as_socket());
        let table = table::of(lp);
        let mut sockets = table.borrow_mut();
        let max_datagram = super::UdpOptions::default().max_datagram;
        let id = UdpSocket::insert(&mut sockets, socket, ipv6, max_datagram);
        if let Some(udp) = sockets.get_mut(id.0) {
            udp.peer = peer;
        }
        Ok(id)
    }

    /// Hands the socket back to std: the handle is stale at once, its
    /// callbacks dropped (as [`UdpSocket::close`] drops them); `on_done`
    /// runs, never inside this call, with the socket (still nonblocking)
    /// once no readiness wait of the loop is in flight on it any more
    /// (a receive's is cancelled first). A datagram is never lost: the
    /// waits only watch, the loop reads nothing more.
    ///
    /// # Errors
    ///
    /// In `on_done`: `into_std EBUSY` while sends are queued (nothing is
    /// changed); [`Error::Stale`] once closed.
    pub fn into_std(
        self,
        lp: &mut Loop,
        on_done: impl FnOnce(&mut Loop, Result<std::net::UdpSocket>) + 'static,
    ) {
        let table = table::of(lp);
        let mut sockets = table.borrow_mut();
        let refused = match sockets.get(self.0) {
            None => Some(sockets.miss(self.0, WHAT)),
            Some(udp) if !udp.sends.is_empty() || udp.send_wait.is_some() => {
                Some(Error::net("into_std", None, errno(libc::EBUSY)))
            }
            Some(_) => None,
        };
        if let Some(error) = refused {
            drop(sockets);
            return lp.defer(move |lp| on_done(lp, Err(error)));
        }
        let udp = sockets.remove(self.0).expect("just found");
        let mut pending = udp.stray;
        if let Some(token) = udp.recv_wait {
            lp.reactor.cancel(token);
            // Its completion must come before the loop may end.
            lp.io.set_counted(token, true);
            pending += 1;
        }
        let on_done: OnHandedBack = Box::new(on_done);
        if pending == 0 {
            drop(sockets);
            let socket = udp.socket;
            return lp.defer(move |lp| on_done(lp, Ok(socket.into())));
        }
        sockets.hand_backs.push(HandingBack {
            id: self,
            socket: udp.socket,
            pending,
            on_done,
        });
    }

    /// The socket's descriptor, borrowed from the loop (for a socket
    /// option eventide does not wrap): the loop owns it; it must not be
    /// closed, read or made blocking through it.
    ///
    /// # Errors
    ///
    /// [`Error::Stale`] once closed.
    pub fn fd(self, lp: &Loop) -> Result<BorrowedFd<'_>> {
        let fd = self.with(lp, |udp| Ok(udp.socket.as_raw_fd()))?;
        // SAFETY: the socket is open and stays open while `lp` is
        // borrowed: closing it (or handing it back) takes `&mut Loop`.
        Ok(unsafe { BorrowedFd::borrow_raw(fd) })
    }
}

impl UdpSocket {
    /// Its number in [`Loop::handles`].
    pub(crate) fn raw(self) -> u64 {
        crate::slab::raw(self.0.slot)
    }
}

impl Loop {
    /// The UDP sockets, for [`Loop::handles`] (their operations are boxed
    /// ones, listed apart: none of `Io::sockets`).
    pub(crate) fn list_udp(&self, listing: &mut crate::diag::Listing) -> usize {
        let table = table::of(self);
        let sockets = table.borrow();
        for (slot, udp) in sockets.iter() {
            let id = crate::slab::raw(slot);
            let kind = crate::diag::Kind::Udp;
            let keeps = udp.referenced && (udp.reading || !udp.sends.is_empty());
            listing.add(kind, id, udp.referenced, keeps, self.site_of(kind, id));
        }
        0
    }
}
