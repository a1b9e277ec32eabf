//! The pod's redirect table: `inet palisade_redirect`, written inside a pod's network namespace
//! by `palisade sidecar redirect`, so that an unmodified app's TCP goes through its sidecar.
//!
//! ```text
//! table inet palisade_redirect {
//!   chain output {        # the app's outbound connections -> the sidecar's outbound port
//!     type nat hook output priority -100; policy accept;
//!     meta skuid <proxy uid> return            # the sidecar's own connections: never again
//!     ip daddr 127.0.0.0/8 return; ip6 daddr ::1 return
//!     ip daddr <excluded> return; ip6 daddr <excluded> return
//!     tcp dport { <excluded outbound ports> } return
//!     meta l4proto tcp redirect to :<outbound port>
//!   }
//!   chain guard {         # before the redirect: what the pod must not carry on for anyone
//!     type filter hook prerouting priority -150; policy accept;
//!     iif "lo" accept
//!     ip daddr 127.0.0.0/8 drop; ip6 daddr ::1 drop
//!     meta l4proto tcp fib daddr type != local drop
//!   }
//!   chain guard_out {     # the sidecar's UDP: DNS only
//!     type filter hook output priority 0; policy accept;
//!     meta skuid <proxy uid> meta l4proto udp udp dport != 53 drop
//!   }
//!   chain prerouting {    # connections to the pod -> the sidecar's inbound port
//!     type nat hook prerouting priority -100; policy accept;
//!     tcp dport { <excluded inbound ports> } return
//!     meta l4proto tcp redirect to :<inbound port>
//!   }
//! }
//! ```
//!
//! Written like the host table: one transaction that adds, deletes and recreates the table (so
//! applying twice equals applying once, and a refused transaction changes nothing), then read
//! back. Priority -100 is dstnat's number: nft 1.0.6 refuses the name on the output hook.
//!
//! Only TCP addressed to the pod reaches the redirect; the guard drops the rest. A neighbour on
//! the pod's link can route a packet for any address through it (its MAC as the next hop): were
//! that redirected, the sidecar, exempt from the redirect, would connect onward for the
//! neighbour, past the node's table. Letting it go on instead is no better: a pod's namespace
//! inherits the node's IPv4 settings, so it usually forwards (`ip_forward=1`) and, where
//! kube-proxy set it, takes 127.0.0.0/8 from the wire (`route_localnet=1`): the kernel would
//! carry the packet to the other host, or to what listens on the pod's loopback, itself. So the
//! guard drops, not returns: loopback from any interface but `lo` (the kernel's fib calls all of
//! 127.0.0.0/8 local), and TCP whose destination is not one of the pod's addresses (`fib daddr
//! type`): a meshed pod routes no TCP for others. The sidecar refuses such destinations too
//! (palisade-sidecar's `local_addrs.rs`), for tables written before the guard.

use palisade_policy::addrs::Cidr;
use serde_json::{json, Value};

use crate::apply::ApplyError;

/// The table's name.
pub const REDIRECT_TABLE: &str = "palisade_redirect";
/// Comment on the table's last rule, identifying a table we wrote and its settings.
const MARK: &str = "palisade redirect";

/// What the redirect does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// The sidecar's transparent inbound port.
    pub inbound_port: u16,
    /// The sidecar's transparent outbound port.
    pub outbound_port: u16,
    /// The UID the sidecar runs as: its own connections are never redirected.
    pub proxy_uid: u32,
    /// Ports on which connections to the pod reach the app directly (kubelet probes, say).
    pub exclude_inbound_ports: Vec<u16>,
    /// Ports to which the app connects directly.
    pub exclude_outbound_ports: Vec<u16>,
    /// Networks the app reaches directly.
    pub exclude_cidrs: Vec<Cidr>,
}

/// The whole transaction for `redirect`: add, delete and recreate the table.
pub fn redirect_transaction(redirect: &Redirect) -> Value {
    let table = json!({"family": "inet", "name": REDIRECT_TABLE});
    let chain = |name: &str, hook: &str| {
        json!({"chain": {"family": "inet", "table": REDIRECT_TABLE, "name": name,
            "type": "nat", "hook": hook, "prio": -100, "policy": "accept"}})
    };
    let rule = |chain: &str, expr: Vec<Value>| json!({"rule": {"family": "inet", "table": REDIRECT_TABLE, "chain": chain, "expr": expr}});
    let ret = json!({"return": null});
    let daddr = |net: &Cidr| {
        let protocol = if net.addr.is_ipv4() { "ip" } else { "ip6" };
        json!({"match": {"op": "==",
            "left": {"payload": {"protocol": protocol, "field": "daddr"}},
            "right": {"prefix": {"addr": net.addr.to_string(), "len": net.len}}}})
    };
    let dports = |ports: &[u16]| {
        json!({"match": {"op": "==",
            "left": {"payload": {"protocol": "tcp", "field": "dport"}},
            "right": {"set": ports}}})
    };
    let tcp = json!({"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}});
    let redirect_to = |port: u16| json!({"redirect": {"port": port}});

    let mut output = vec![rule(
        "output",
        vec![
            json!({"match": {"op": "==", "left": {"meta": {"key": "skuid"}}, "right": redirect.proxy_uid}}),
            ret.clone(),
        ],
    )];
    let loopback = [
        Cidr {
            addr: [127, 0, 0, 0].into(),
            len: 8,
        },
        Cidr {
            addr: std::net::Ipv6Addr::LOCALHOST.into(),
            len: 128,
        },
    ];
    for net in loopback.iter().chain(&redirect.exclude_cidrs) {
        output.push(rule("output", vec![daddr(net), ret.clone()]));
    }
    if !redirect.exclude_outbound_ports.is_empty() {
        output.push(rule(
            "output",
            vec![dports(&redirect.exclude_outbound_ports), ret.clone()],
        ));
    }
    let mut last_out = rule(
        "output",
        vec![tcp.clone(), redirect_to(redirect.outbound_port)],
    );
    last_out["rule"]["comment"] = json!(format!("{MARK} {}", settings(redirect)));
    output.push(last_out);

    let drop = json!({"drop": null});
    let mut guard = vec![rule(
        "guard",
        vec![
            json!({"match": {"op": "==", "left": {"meta": {"key": "iif"}}, "right": "lo"}}),
            json!({"accept": null}),
        ],
    )];
    guard.extend(
        loopback
            .iter()
            .map(|net| rule("guard", vec![daddr(net), drop.clone()])),
    );
    guard.push(rule(
        "guard",
        vec![
            tcp.clone(),
            json!({"match": {"op": "!=",
                "left": {"fib": {"result": "type", "flags": ["daddr"]}},
                "right": "local"}}),
            drop.clone(),
        ],
    ));
    // The sidecar's UDP: DNS only. Its system call filter allows UDP only where a name is
    // looked up, and cannot see where a datagram goes; here the kernel can.
    let guard_out = vec![rule(
        "guard_out",
        vec![
            json!({"match": {"op": "==", "left": {"meta": {"key": "skuid"}}, "right": redirect.proxy_uid}}),
            json!({"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "udp"}}),
            json!({"match": {"op": "!=",
                "left": {"payload": {"protocol": "udp", "field": "dport"}},
                "right": 53}}),
            drop,
        ],
    )];
    let mut prerouting = Vec::new();
    if !redirect.exclude_inbound_ports.is_empty() {
        prerouting.push(rule(
            "prerouting",
            vec![dports(&redirect.exclude_inbound_ports), ret],
        ));
    }
    prerouting.push(rule(
        "prerouting",
        vec![tcp, redirect_to(redirect.inbound_port)],
    ));

    let mut objects = vec![
        json!({"add": {"table": table}}),
        json!({"delete": {"table": table}}),
        json!({"add": {"table": table}}),
        json!({"add": chain("output", "output")}),
        json!({"add": {"chain": {"family": "inet", "table": REDIRECT_TABLE, "name": "guard",
            "type": "filter", "hook": "prerouting", "prio": -150, "policy": "accept"}}}),
        json!({"add": chain("prerouting", "prerouting")}),
        json!({"add": {"chain": {"family": "inet", "table": REDIRECT_TABLE, "name": "guard_out",
            "type": "filter", "hook": "output", "prio": 0, "policy": "accept"}}}),
    ];
    objects.extend(
        output
            .into_iter()
            .chain(guard)
            .chain(guard_out)
            .chain(prerouting)
            .map(|r| json!({"add": r})),
    );
    json!({"nftables": objects})
}

/// The settings, as stamped into the table (so a read-back can tell them).
fn settings(r: &Redirect) -> String {
    format!(
        "inbound={} outbound={} uid={}",
        r.inbound_port, r.outbound_port, r.proxy_uid
    )
}

/// Installs (or replaces) the redirect table in one transaction, then reads it back.
pub fn apply_redirect(redirect: &Redirect) -> Result<(), ApplyError> {
    run(&redirect_transaction(redirect))?;
    let live = live_redirect()?.ok_or_else(|| {
        ApplyError::Read(format!(
            "{REDIRECT_TABLE} is missing right after it was written"
        ))
    })?;
    let wanted = format!("{MARK} {}", settings(redirect));
    if !crate::apply::rule_comments(&live).any(|c| c == wanted) {
        return Err(ApplyError::Read(format!(
            "the table read back is not the one written (no rule says {wanted:?})"
        )));
    }
    Ok(())
}

/// Removes the redirect table; `Ok(false)` when there was none.
pub fn remove_redirect() -> Result<bool, ApplyError> {
    if live_redirect()?.is_none() {
        return Ok(false);
    }
    run(&json!({"nftables": [{"delete": {"table": {"family": "inet", "name": REDIRECT_TABLE}}}]}))?;
    Ok(true)
}

/// The live redirect table as nft's JSON, or None.
pub fn live_redirect() -> Result<Option<Value>, ApplyError> {
    crate::apply::live_inet_table(REDIRECT_TABLE)
}

fn run(payload: &Value) -> Result<(), ApplyError> {
    crate::apply::run_json(&payload.to_string())
}
