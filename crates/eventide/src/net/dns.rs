//! Name resolution: Node's `dns.lookup` (its options: `family`, `all`,
//! `hints`, `verbatim`) and `dns.lookupService`, getaddrinfo and
//! getnameinfo on the pool's slow lane, as libuv's `uv_getaddrinfo` and
//! `uv_getnameinfo`.
//!
//! The resolver is the C library's `getaddrinfo` called through libc on a
//! pool thread (not std's `ToSocketAddrs`, which folds the resolver's own
//! error codes into an unnamed error: Node's `ENOTFOUND` and `EAI_AGAIN`
//! need them). Hints as Node gives them: the family asked, `SOCK_STREAM`
//! (so each address comes once), the flags of [`Hints`]. Addresses are
//! returned in the resolver's order (Node's `verbatim`, its default since
//! v17), or IPv4 first with `verbatim: false`. The jobs run in
//! [`WorkClass::SlowIo`]: lookups may hold at most half the pool's
//! threads, so a hung resolver never delays file work.

use std::ffi::{CStr, CString};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::event_loop::Loop;
use crate::work::WorkClass;
use crate::{Error, Result};

/// Which addresses [`Loop::lookup`] asks for (Node's `family` option).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4 and IPv6 (Node's `0`).
    #[default]
    Any,
    /// IPv4 only (`4`).
    V4,
    /// IPv6 only (`6`).
    V6,
}

/// getaddrinfo's flags as Node's `hints` option takes them
/// (`dns.ADDRCONFIG | dns.V4MAPPED`): combine with `|`. Empty by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Hints(u8);

impl Hints {
    /// No flag (Node's `0`).
    pub const NONE: Hints = Hints(0);
    /// `AI_ADDRCONFIG` (Node's `dns.ADDRCONFIG`): only the families the
    /// system has a non-loopback address of.
    pub const ADDRCONFIG: Hints = Hints(1);
    /// `AI_V4MAPPED` (Node's `dns.V4MAPPED`): with [`Family::V6`], IPv4
    /// addresses as IPv4-mapped IPv6 ones (`::ffff:127.0.0.1`) when the
    /// name has no IPv6 address.
    pub const V4MAPPED: Hints = Hints(2);
    /// `AI_ALL` (Node's `dns.ALL`): with [`Hints::V4MAPPED`], the mapped
    /// IPv4 addresses as well as the IPv6 ones.
    pub const ALL: Hints = Hints(4);

    /// Whether every flag of `other` is set.
    pub fn contains(self, other: Hints) -> bool {
        self.0 & other.0 == other.0
    }

    /// getaddrinfo's `ai_flags`.
    fn ai_flags(self) -> libc::c_int {
        let mut flags = 0;
        if self.contains(Hints::ADDRCONFIG) {
            flags |= libc::AI_ADDRCONFIG;
        }
        if self.contains(Hints::V4MAPPED) {
            flags |= libc::AI_V4MAPPED;
        }
        if self.contains(Hints::ALL) {
            flags |= libc::AI_ALL;
        }
        flags
    }
}

impl std::ops::BitOr for Hints {
    type Output = Hints;

    fn bitor(self, other: Hints) -> Hints {
        Hints(self.0 | other.0)
    }
}

/// The options of [`Loop::lookup_with`], as Node's `dns.lookup` options:
/// `LookupOptions::default()` (Node's defaults: any family, one address,
/// no hints, the resolver's order), then the setters:
/// `LookupOptions::default().all(true).family(Family::V4)`.
/// Non-exhaustive, so that adding an option breaks no caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LookupOptions {
    /// The family asked (Node's `family`: 0, 4 or 6).
    pub family: Family,
    /// Every address (`true`), or the first one only (Node's `all`).
    pub all: bool,
    /// getaddrinfo's flags (Node's `hints`).
    pub hints: Hints,
    /// The resolver's order (`true`, Node's default since v17), or the
    /// IPv4 addresses before the IPv6 ones (`false`, Node's `ipv4first`).
    pub verbatim: bool,
}

impl Default for LookupOptions {
    fn default() -> LookupOptions {
        LookupOptions {
            family: Family::Any,
            all: false,
            hints: Hints::NONE,
            verbatim: true,
        }
    }
}

impl LookupOptions {
    /// Sets [`LookupOptions::family`].
    #[must_use = "a setter returns the changed options"]
    pub fn family(mut self, family: Family) -> LookupOptions {
        self.family = family;
        self
    }

    /// Sets [`LookupOptions::all`].
    #[must_use = "a setter returns the changed options"]
    pub fn all(mut self, all: bool) -> LookupOptions {
        self.all = all;
        self
    }

    /// Sets [`LookupOptions::hints`].
    #[must_use = "a setter returns the changed options"]
    pub fn hints(mut self, hints: Hints) -> LookupOptions {
        self.hints = hints;
        self
    }

    /// Sets [`LookupOptions::verbatim`].
    #[must_use = "a setter returns the changed options"]
    pub fn verbatim(mut self, verbatim: bool) -> LookupOptions {
        self.verbatim = verbatim;
        self
    }
}

/// How getaddrinfo or getnameinfo failed: its own code, or
/// (`EAI_SYSTEM`) an errno.
#[derive(Debug)]
enum Failure {
    Resolver(i32),
    System(i32),
}

impl Loop {
    /// Resolves `host` to all its addresses (Node's
    /// `dns.lookup(host, { family, all: true }, callback)`): as
    /// [`Loop::lookup_with`] with `all` and the default order.
    pub fn lookup(
        &mut self,
        host: &str,
        family: Family,
        on_found: impl FnOnce(&mut Loop, Result<Vec<IpAddr>>) + 'static,
    ) {
        let options = LookupOptions::default().family(family).all(true);
        self.lookup_with(host, options, on_found);
    }

    /// Resolves `host` (Node's `dns.lookup(host, options, callback)`);
    /// `on_found` runs on the loop with the addresses, in the resolver's
    /// order (or IPv4 first, `verbatim: false`), the first one alone
    /// unless `options.all`, or with [`Error::Dns`] (`getaddrinfo
    /// ENOTFOUND nosuchhost.invalid`). As in Node, an IP address written
    /// out is returned as it is, whatever the family asked, and an empty
    /// name finds no address (`Ok` of an empty list), both without the
    /// resolver (in the next pending phase); a name goes to `getaddrinfo`
    /// on the pool's slow lane ([`WorkClass::SlowIo`]). The lookup keeps
    /// the loop alive until `on_found` has run.
    pub fn lookup_with(
        &mut self,
        host: &str,
        options: LookupOptions,
        on_found: impl FnOnce(&mut Loop, Result<Vec<IpAddr>>) + 'static,
    ) {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.defer(move |lp| on_found(lp, Ok(vec![ip])));
        }
        if host.is_empty() {
            return self.defer(move |lp| on_found(lp, Ok(Vec::new())));
        }
        let Ok(name) = CString::new(host) else {
            let error = Error::InvalidArgValue {
                name: "hostname",
                reason: "is invalid",
                received: format!("'{host}'"),
            };
            return self.defer(move |lp| on_found(lp, Err(error)));
        };
        let hostname = host.to_owned();
        self.queue_work_in(
            WorkClass::SlowIo,
            move || getaddrinfo(&name, options.family, options.hints),
            move |lp, result| {
                let found = match result {
                    Ok(Ok(addresses)) => Ok(arrange(addresses, options)),
                    Ok(Err(failure)) => Err(dns_error(failure, "getaddrinfo", hostname)),
                    Err(error) => Err(error),
                };
                on_found(lp, found);
            },
        );
    }

    /// Resolves an address and port to a host name and a service name
    /// (Node's `dns.lookupService(address, port, callback)`, libuv's
    /// `uv_getnameinfo`): `on_found` runs on the loop with them
    /// (`("localhost", "ssh")` for 127.0.0.1 port 22; the port in digits
    /// when it names no service), or with [`Error::Dns`] as Node's
    /// (`getnameinfo ENOTFOUND ::1` for an address without a name: the
    /// name is required, as Node asks with `NI_NAMEREQD`). getnameinfo
    /// runs on the pool's slow lane ([`WorkClass::SlowIo`]); the call
    /// keeps the loop alive until `on_found` has run.
    pub fn lookup_service(
        &mut self,
        address: IpAddr,
        port: u16,
        on_found: impl FnOnce(&mut Loop, Result<(String, String)>) + 'static,
    ) {
        self.queue_work_in(
            WorkClass::SlowIo,
            move || getnameinfo(SocketAddr::new(address, port)),
            move |lp, result| {
                let found = match result {
                    Ok(Ok(names)) => Ok(names),
                    Ok(Err(failure)) => Err(dns_error(failure, "getnameinfo", address.to_string())),
                    Err(error) => Err(error),
                };
                on_found(lp, found);
            },
        );
    }
}

/// The addresses in the order asked, all or the first.
fn arrange(mut addresses: Vec<IpAddr>, options: LookupOptions) -> Vec<IpAddr> {
    if !options.verbatim {
        // Stable: each family keeps the resolver's order.
        addresses.sort_by_key(IpAddr::is_ipv6);
    }
    if !options.all {
        addresses.truncate(1);
    }
    addresses
}

/// Node's error for a failed lookup (its `dnsException`).
fn dns_error(failure: Failure, syscall: &'static str, hostname: String) -> Error {
    let code = match failure {
        Failure::System(errno) => crate::fs::error::describe(errno).0,
        Failure::Resolver(code) => resolver_code(code),
    };
    Error::Dns {
        code,
        syscall,
        hostname,
    }
}

/// libuv's names for getaddrinfo's codes, with Node's `ENOTFOUND` for a
/// name that has no address.
fn resolver_code(code: i32) -> &'static str {
    match code {
        libc::EAI_NONAME => "ENOTFOUND",
        // glibc's and musl's code for a name without an address of the
        // family asked (other systems answer EAI_NONAME).
        #[cfg(any(target_os = "linux", target_os = "android"))]
        libc::EAI_NODATA => "ENOTFOUND",
        libc::EAI_AGAIN => "EAI_AGAIN",
        libc::EAI_FAIL => "EAI_FAIL",
        libc::EAI_FAMILY => "EAI_FAMILY",
        libc::EAI_MEMORY => "EAI_MEMORY",
        libc::EAI_SERVICE => "EAI_SERVICE",
        libc::EAI_SOCKTYPE => "EAI_SOCKTYPE",
        libc::EAI_BADFLAGS => "EAI_BADFLAGS",
        libc::EAI_OVERFLOW => "EAI_OVERFLOW",
        _ => "UNKNOWN",
    }
}

/// Calls getaddrinfo (blocking: on a pool thread) and collects the
/// addresses.
fn getaddrinfo(
    host: &CStr,
    family: Family,
    flags: Hints,
) -> std::result::Result<Vec<IpAddr>, Failure> {
    // SAFETY: `addrinfo` is plain data; all zeroes is a valid value (null
    // pointers, no flags).
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_family = match family {
        Family::Any => libc::AF_UNSPEC,
        Family::V4 => libc::AF_INET,
        Family::V6 => libc::AF_INET6,
    };
    hints.ai_socktype = libc::SOCK_STREAM;
    hints.ai_flags = flags.ai_flags();
    let mut list: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: `host` is a NUL-terminated string, `hints` a valid addrinfo,
    // `list` a place for the result; a null service is allowed.
    let code = unsafe { libc::getaddrinfo(host.as_ptr(), std::ptr::null(), &hints, &mut list) };
    if code == libc::EAI_SYSTEM {
        let errno = std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        return Err(Failure::System(errno));
    }
    if code != 0 {
        return Err(Failure::Resolver(code));
    }
    let mut addresses = Vec::new();
    let mut entry = list;
    while !entry.is_null() {
        // SAFETY: `entry` is a node of the list getaddrinfo returned, not
        // freed until `freeaddrinfo` below.
        let info = unsafe { &*entry };
        // SAFETY: as above; `ai_addr` points to a socket address of the
        // family `ai_family` names, of `ai_addrlen` bytes.
        if let Some(ip) = unsafe { ip_of(info) } {
            addresses.push(ip);
        }
        entry = info.ai_next;
    }
    // SAFETY: `list` came from a successful getaddrinfo and is freed once.
    unsafe { libc::freeaddrinfo(list) };
    Ok(addresses)
}

/// The IP address of one getaddrinfo entry.
///
/// # Safety
///
/// `info.ai_addr` must be null or point to a socket address of the family
/// `info.ai_family` says, at least `info.ai_addrlen` bytes long.
unsafe fn ip_of(info: &libc::addrinfo) -> Option<IpAddr> {
    if info.ai_addr.is_null() {
        return None;
    }
    let len = info.ai_addrlen as usize;
    match info.ai_family {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the caller's promise: an AF_INET address of this size.
            let sin = unsafe { &*info.ai_addr.cast::<libc::sockaddr_in>() };
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                sin.sin_addr.s_addr,
            ))))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the caller's promise: an AF_INET6 address of this size.
            let sin6 = unsafe { &*info.ai_addr.cast::<libc::sockaddr_in6>() };
            Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

/// Calls getnameinfo (blocking: on a pool thread) with `NI_NAMEREQD`, as
/// Node does.
fn getnameinfo(addr: SocketAddr) -> std::result::Result<(String, String), Failure> {
    let addr = socket2::SockAddr::from(addr);
    // NI_MAXHOST and NI_MAXSERV of <netdb.h>.
    let mut host = [0 as libc::c_char; 1025];
    let mut service = [0 as libc::c_char; 32];
    // SAFETY: `addr` is a socket address of `addr.len()` bytes; `host`
    // and `service` are buffers of the lengths given, which getnameinfo
    // fills with NUL-terminated strings.
    let code = unsafe {
        libc::getnameinfo(
            addr.as_ptr().cast(),
            addr.len(),
            host.as_mut_ptr(),
            host.len() as _,
            service.as_mut_ptr(),
            service.len() as _,
            libc::NI_NAMEREQD,
        )
    };
    if code == libc::EAI_SYSTEM {
        let errno = std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        return Err(Failure::System(errno));
    }
    if code != 0 {
        return Err(Failure::Resolver(code));
    }
    // SAFETY: getnameinfo succeeded: both buffers hold NUL-terminated
    // strings.
    let (host, service) = unsafe {
        (
            CStr::from_ptr(host.as_ptr()),
            CStr::from_ptr(service.as_ptr()),
        )
    };
    Ok((
        host.to_string_lossy().into_owned(),
        service.to_string_lossy().into_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::{LookupOptions, arrange};
    use std::net::IpAddr;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    /// `verbatim: false` is Node's `ipv4first`: the IPv4 addresses first,
    /// each family in the resolver's order; `true` keeps that order.
    #[test]
    fn verbatim_false_puts_ipv4_first_and_keeps_each_familys_order() {
        let resolved = ips(&["::1", "10.0.0.2", "fe80::1", "10.0.0.1"]);
        let all = LookupOptions::default().all(true);
        assert_eq!(arrange(resolved.clone(), all), resolved);
        assert_eq!(
            arrange(resolved.clone(), all.verbatim(false)),
            ips(&["10.0.0.2", "10.0.0.1", "::1", "fe80::1"])
        );
        let first = LookupOptions::default().verbatim(false);
        assert_eq!(arrange(resolved, first), ips(&["10.0.0.2"]));
    }
}
