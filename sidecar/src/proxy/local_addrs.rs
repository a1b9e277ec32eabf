//! The pod's own addresses, for the transparent inbound listener. The redirect table sends the
//! sidecar every TCP connection that arrives for the pod; the sidecar carries one on only to an
//! address of its own network namespace, never to loopback. Otherwise a neighbour on the pod's
//! link could route a packet for another host (or for 127.0.0.1) through the pod and have the
//! sidecar, whose UID the redirect exempts, connect there for it: a relay past the node's table
//! and into what listens on loopback only.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How old the list may get before it is read again: an address added after start is seen
/// within this time, and a flood of connections costs one read of the kernel's list per period.
const REREAD_AFTER: Duration = Duration::from_secs(1);

/// The addresses of this network namespace's interfaces, read from the kernel (netlink) and
/// kept for [`REREAD_AFTER`].
pub(crate) struct LocalAddresses {
    known: Mutex<Known>,
}

struct Known {
    addrs: Vec<IpAddr>,
    read_at: Option<Instant>,
}

impl LocalAddresses {
    pub(crate) fn new() -> Self {
        LocalAddresses {
            known: Mutex::new(Known {
                addrs: Vec::new(),
                read_at: None,
            }),
        }
    }

    /// Whether `ip` is one of this namespace's own addresses and not loopback. When the list
    /// cannot be read the answer is no (fail closed; logged).
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if !may_be_a_destination(ip) {
            return false;
        }
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if known.read_at.is_none_or(|at| at.elapsed() >= REREAD_AFTER) {
            known.addrs = match interface_addresses() {
                Ok(addrs) => addrs,
                Err(error) => {
                    tracing::warn!(%error, "cannot read this pod's addresses; transparent inbound connections are refused until they can be read");
                    Vec::new()
                }
            };
            known.read_at = Some(Instant::now());
        }
        known.addrs.contains(&ip)
    }
}

/// What no redirected connection may be carried to, whatever the interfaces say: loopback (what
/// listens there trusts that only the pod reaches it), the unspecified address and multicast.
fn may_be_a_destination(ip: IpAddr) -> bool {
    !(ip.is_loopback() || ip.is_unspecified() || ip.is_multicast())
}

/// An IPv4 address seen through a dual-stack socket, as the IPv4 address it is.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn interface_addresses() -> nix::Result<Vec<IpAddr>> {
    Ok(nix::ifaddrs::getifaddrs()?
        .filter_map(|interface| {
            let address = interface.address?;
            if let Some(v4) = address.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                address.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_foreign_addresses_are_not_local_and_own_ones_are() {
        let local = LocalAddresses::new();
        for ip in [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
            "::",
            "224.0.0.1",
        ] {
            assert!(!local.contains(ip.parse().unwrap()), "{ip}");
        }
        // TEST-NET-3 and the documentation prefix: on no interface of a test machine.
        for ip in ["203.0.113.77", "2001:db8::77"] {
            assert!(!local.contains(ip.parse().unwrap()), "{ip}");
        }
        // Whatever non-loopback address this machine has is its own (a namespace with loopback
        // only has none, which the assertion then does not need).
        let own = interface_addresses().unwrap();
        for ip in own.into_iter().filter(|ip| may_be_a_destination(*ip)) {
            assert!(local.contains(ip), "{ip}");
        }
    }
}
