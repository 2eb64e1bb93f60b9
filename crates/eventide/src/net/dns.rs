//! Name resolution: Node's `dns.lookup` (`all: true`), getaddrinfo on the
//! pool's slow lane, as libuv's `uv_getaddrinfo`.
//!
//! The resolver is the C library's `getaddrinfo` called through libc on a
//! pool thread (not std's `ToSocketAddrs`, which folds the resolver's own
//! error codes into an unnamed error: Node's `ENOTFOUND` and `EAI_AGAIN`
//! need them). Hints as Node gives them: the family asked, `SOCK_STREAM`
//! (so each address comes once), no flags. Addresses are returned in the
//! resolver's order (Node's `verbatim`, its default since v17). The job
//! runs in [`WorkClass::SlowIo`]: lookups may hold at most half the
//! pool's threads, so a hung resolver never delays file work.

use std::ffi::{CStr, CString};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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

/// How getaddrinfo failed: its own code, or (`EAI_SYSTEM`) an errno.
#[derive(Debug)]
enum Failure {
    Resolver(i32),
    System(i32),
}

impl Loop {
    /// Resolves `host` to all its addresses (Node's
    /// `dns.lookup(host, { family, all: true }, callback)`); `on_found`
    /// runs on the loop with them, in the resolver's order, or with
    /// [`Error::Dns`] (`getaddrinfo ENOTFOUND nosuchhost.invalid`). An IP
    /// address written out is returned as it is, without the resolver (in
    /// the next pending phase); a name goes to `getaddrinfo` on the pool's
    /// slow lane ([`WorkClass::SlowIo`]). The lookup keeps the loop alive
    /// until `on_found` has run.
    pub fn lookup(
        &mut self,
        host: &str,
        family: Family,
        on_found: impl FnOnce(&mut Loop, Result<Vec<IpAddr>>) + 'static,
    ) {
        if let Ok(ip) = host.parse::<IpAddr>() {
            let fits = match family {
                Family::Any => true,
                Family::V4 => ip.is_ipv4(),
                Family::V6 => ip.is_ipv6(),
            };
            if fits {
                return self.defer(move |lp| on_found(lp, Ok(vec![ip])));
            }
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
            move || getaddrinfo(&name, family),
            move |lp, result| {
                let found = match result {
                    Ok(Ok(addresses)) => Ok(addresses),
                    Ok(Err(failure)) => Err(dns_error(failure, hostname)),
                    Err(error) => Err(error),
                };
                on_found(lp, found);
            },
        );
    }
}

/// Node's error for a failed lookup (its `dnsException`).
fn dns_error(failure: Failure, hostname: String) -> Error {
    let code = match failure {
        Failure::System(errno) => crate::fs::error::describe(errno).0,
        Failure::Resolver(code) => resolver_code(code),
    };
    Error::Dns {
        code,
        syscall: "getaddrinfo",
        hostname,
    }
}

/// libuv's names for getaddrinfo's codes, with Node's `ENOTFOUND` for a
/// name that has no address.
fn resolver_code(code: i32) -> &'static str {
    match code {
        libc::EAI_NONAME | libc::EAI_NODATA => "ENOTFOUND",
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
fn getaddrinfo(host: &CStr, family: Family) -> std::result::Result<Vec<IpAddr>, Failure> {
    // SAFETY: `addrinfo` is plain data; all zeroes is a valid value (null
    // pointers, no flags).
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_family = match family {
        Family::Any => libc::AF_UNSPEC,
        Family::V4 => libc::AF_INET,
        Family::V6 => libc::AF_INET6,
    };
    hints.ai_socktype = libc::SOCK_STREAM;
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
