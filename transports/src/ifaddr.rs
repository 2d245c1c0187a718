//! Network interfaces: list them (`getifaddrs(3)`) and pick the one to use.
//!
//! Selection follows NCCL's `NCCL_SOCKET_IFNAME` syntax (NCCL's `src/misc/socket.cc`,
//! `ncclFindInterfaces` / `matchIfList`): a comma-separated list of name prefixes
//! (`eth,ib` matches `eth0` and `ib1`); a leading `^` turns the list into exclusions
//! (`^docker,lo`); a leading `=` (after any `^`) makes the names exact (`=eth0`). As in NCCL,
//! with no list we avoid `docker*` bridges and loopback, falling back to loopback when nothing
//! else is up; among matches IPv4 comes before IPv6, then the kernel's order.

use dmsc_core::error::{Error, Result};
use std::ffi::CStr;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The variable whose value is usually passed to [`select`], named in its errors.
pub const IFNAME_ENV: &str = "DMSC_SOCKET_IFNAME";

/// One address of one network interface (an interface with two addresses appears twice).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// Kernel name, e.g. `eth0`.
    pub name: String,
    /// The address (IPv4 or IPv6).
    pub addr: IpAddr,
    /// `IFF_UP` is set.
    pub up: bool,
    /// `IFF_LOOPBACK` is set.
    pub loopback: bool,
}

impl Interface {
    /// True for an IPv4 address.
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.addr)?;
        if !self.up {
            f.write_str(" (down)")?;
        }
        Ok(())
    }
}

/// Frees the list returned by `getifaddrs` when dropped.
struct IfAddrs(*mut libc::ifaddrs);

impl Drop for IfAddrs {
    fn drop(&mut self) {
        // SAFETY: the pointer came from a successful getifaddrs and is freed exactly once,
        // here; no reference into the list outlives this guard.
        unsafe { libc::freeifaddrs(self.0) }
    }
}

/// Every IPv4 and IPv6 address of every interface, in the kernel's order. Interfaces without
/// an IP address (e.g. `AF_PACKET` entries) are skipped.
pub fn list() -> Result<Vec<Interface>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: `head` is a valid out-pointer; on success the kernel list is ours to free.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(Error::io(
            "listing network interfaces (getifaddrs)",
            &std::io::Error::last_os_error(),
        ));
    }
    let guard = IfAddrs(head);
    let mut out = Vec::new();
    let mut cur = guard.0;
    while !cur.is_null() {
        // SAFETY: `cur` is a non-null node of the list owned by `guard`, alive until it drops.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if let Some(addr) = ip_of(ifa.ifa_addr) {
            if ifa.ifa_name.is_null() {
                continue;
            }
            // SAFETY: a non-null ifa_name is a NUL-terminated string owned by the list.
            let name = unsafe { CStr::from_ptr(ifa.ifa_name) };
            let flags = ifa.ifa_flags as libc::c_int;
            out.push(Interface {
                name: name.to_string_lossy().into_owned(),
                addr,
                up: flags & libc::IFF_UP != 0,
                loopback: flags & libc::IFF_LOOPBACK != 0,
            });
        }
    }
    Ok(out)
}

/// The IP address a `sockaddr` holds, if it is IPv4 or IPv6.
fn ip_of(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: a non-null ifa_addr points to a sockaddr at least as large as its family's
    // struct; we read the family first and then only the struct that family promises.
    // read_unaligned because the kernel gives no alignment guarantee for the larger types.
    unsafe {
        match i32::from((*sa).sa_family) {
            libc::AF_INET => {
                let sin = std::ptr::read_unaligned(sa as *const libc::sockaddr_in);
                Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))))
            }
            libc::AF_INET6 => {
                let sin6 = std::ptr::read_unaligned(sa as *const libc::sockaddr_in6);
                Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
            }
            _ => None,
        }
    }
}

/// A parsed `NCCL_SOCKET_IFNAME`-style list.
struct Spec<'a> {
    exclude: bool,
    exact: bool,
    names: Vec<&'a str>,
}

impl<'a> Spec<'a> {
    fn parse(s: &'a str) -> Spec<'a> {
        let s = s.trim();
        let (exclude, s) = match s.strip_prefix('^') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (exact, s) = match s.strip_prefix('=') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let names = s
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect();
        Spec {
            exclude,
            exact,
            names,
        }
    }

    fn matches(&self, name: &str) -> bool {
        let hit = self.names.iter().any(|n| {
            if self.exact {
                name == *n
            } else {
                name.starts_with(n)
            }
        });
        hit != self.exclude
    }
}

/// Pick an interface from the machine's list; see [`select_from`].
pub fn select(spec: Option<&str>, prefer_loopback: bool) -> Result<Interface> {
    select_from(&list()?, spec, prefer_loopback)
}

/// Pick an up interface from `ifaces`.
///
/// With `spec` (NCCL_SOCKET_IFNAME syntax, see the module docs), the first match, IPv4 first.
/// Without: loopback when `prefer_loopback` (the store is on 127.x or localhost, so the job is
/// on one host), else the first non-loopback, non-`docker*` IPv4 interface, else loopback.
/// When nothing fits, the error lists every interface with its address, e.g.
/// `DMSC_SOCKET_IFNAME=eth9 matches no interface; interfaces: lo 127.0.0.1, eth0 10.1.2.3`.
pub fn select_from(
    ifaces: &[Interface],
    spec: Option<&str>,
    prefer_loopback: bool,
) -> Result<Interface> {
    let up = || ifaces.iter().filter(|i| i.up);
    let first_v4_then_v6 = |pred: &dyn Fn(&Interface) -> bool| {
        up().find(|i| i.is_ipv4() && pred(i))
            .or_else(|| up().find(|i| !i.is_ipv4() && pred(i)))
            .cloned()
    };
    let found = match spec.map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) => {
            let parsed = Spec::parse(s);
            let hit = first_v4_then_v6(&|i| parsed.matches(&i.name));
            return hit.ok_or_else(|| {
                Error::invalid(format!(
                    "{IFNAME_ENV}={s} matches no interface that is up; interfaces: {}",
                    describe(ifaces)
                ))
            });
        }
        None if prefer_loopback => first_v4_then_v6(&|i| i.loopback),
        None => up()
            .find(|i| i.is_ipv4() && !i.loopback && !i.name.starts_with("docker"))
            .cloned(),
    };
    found
        .or_else(|| first_v4_then_v6(&|i| i.loopback))
        .ok_or_else(|| {
            Error::invalid(format!(
                "no usable network interface is up; interfaces: {}",
                describe(ifaces)
            ))
        })
}

/// Every up interface `spec` names, one address each (IPv4 when it has one), for paths:
/// in the order of the names in `spec` (`=sp0,sp1` gives sp0 then sp1), then the kernel's.
/// Without a spec, or with an exclusion list, the single interface [`select_from`] picks.
pub fn select_all_from(
    ifaces: &[Interface],
    spec: Option<&str>,
    prefer_loopback: bool,
) -> Result<Vec<Interface>> {
    let first = select_from(ifaces, spec, prefer_loopback)?;
    let Some(s) = spec.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(vec![first]);
    };
    let parsed = Spec::parse(s);
    if parsed.exclude {
        return Ok(vec![first]);
    }
    let mut picked: Vec<(usize, usize, Interface)> = Vec::new();
    for (k, i) in ifaces.iter().enumerate().filter(|(_, i)| i.up) {
        let Some(rank) = parsed.names.iter().position(|n| {
            if parsed.exact {
                i.name == *n
            } else {
                i.name.starts_with(n)
            }
        }) else {
            continue;
        };
        match picked.iter_mut().find(|p| p.2.name == i.name) {
            Some(p) if !p.2.is_ipv4() && i.is_ipv4() => *p = (rank, k, i.clone()),
            Some(_) => {}
            None => picked.push((rank, k, i.clone())),
        }
    }
    picked.sort_by_key(|p| (p.0, p.1));
    Ok(picked.into_iter().map(|p| p.2).collect())
}

/// [`select_all_from`] on the machine's list.
pub fn select_all(spec: Option<&str>, prefer_loopback: bool) -> Result<Vec<Interface>> {
    select_all_from(&list()?, spec, prefer_loopback)
}

/// `lo 127.0.0.1, eth0 10.1.2.3`, or `none` for an empty list.
fn describe(ifaces: &[Interface]) -> String {
    if ifaces.is_empty() {
        return "none".into();
    }
    ifaces
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, addr: &str, up: bool) -> Interface {
        Interface {
            name: name.into(),
            addr: addr.parse().unwrap(),
            up,
            loopback: name == "lo",
        }
    }

    fn sample() -> Vec<Interface> {
        vec![
            iface("lo", "127.0.0.1", true),
            iface("docker0", "172.17.0.1", true),
            iface("eth0", "fe80::1", true),
            iface("eth0", "10.1.2.3", true),
            iface("eth1", "10.9.9.9", false),
            iface("ib0", "192.168.0.7", true),
            iface("lo", "::1", true),
        ]
    }

    fn pick(spec: Option<&str>, lo: bool) -> String {
        select_from(&sample(), spec, lo).unwrap().to_string()
    }

    #[test]
    fn lists_loopback() {
        let all = list().unwrap();
        assert!(
            all.iter()
                .any(|i| i.name == "lo" && i.loopback && i.addr == Ipv4Addr::LOCALHOST),
            "{all:?}"
        );
    }

    #[test]
    fn default_choice() {
        assert_eq!(pick(None, false), "eth0 10.1.2.3");
        assert_eq!(pick(None, true), "lo 127.0.0.1");
        assert_eq!(pick(Some(" "), false), "eth0 10.1.2.3");
        let only_lo = vec![
            iface("lo", "::1", true),
            iface("docker0", "172.17.0.1", true),
        ];
        assert_eq!(
            select_from(&only_lo, None, false).unwrap().to_string(),
            "lo ::1"
        );
    }

    #[test]
    fn nccl_syntax() {
        assert_eq!(pick(Some("ib"), false), "ib0 192.168.0.7");
        assert_eq!(pick(Some("eth"), false), "eth0 10.1.2.3");
        assert_eq!(pick(Some("=eth1,ib0"), false), "ib0 192.168.0.7");
        assert_eq!(pick(Some("^lo,docker,eth"), false), "ib0 192.168.0.7");
        assert_eq!(pick(Some("^=lo,docker0,eth0"), false), "ib0 192.168.0.7");
        assert!(select_from(&sample(), Some("=eth"), false).is_err());
    }

    #[test]
    fn no_match_lists_every_interface() {
        let e = select_from(&sample(), Some("eth9"), false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("DMSC_SOCKET_IFNAME=eth9 matches no interface"),
            "{e}"
        );
        assert!(
            e.contains("lo 127.0.0.1, docker0 172.17.0.1, eth0 fe80::1, eth0 10.1.2.3, eth1 10.9.9.9 (down)"),
            "{e}"
        );
        let e = select_from(&[], None, false).unwrap_err().to_string();
        assert!(e.contains("interfaces: none"), "{e}");
    }
}
