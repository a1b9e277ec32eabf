//! A node's share of the NetworkPolicies, added to its `inet palisade` table.
//!
//! For each pod on the node (by `spec.nodeName`) that some policy isolates for ingress, its
//! address goes into `k8s_in_isolated_*`, and what its policies' ingress rules admit into
//! `k8s_in_any_*` (source range . pod) and `k8s_in_port_*` (source range . pod . protocol . port
//! range); the same for egress with the pod as the source (`k8s_out_*`). Named ports are resolved
//! here: on the pod itself for ingress, on each destination pod for egress. The forward chain
//! first jumps to `k8s`:
//!
//! ```text
//! chain k8s          ct state established,related return          (replies pass)
//!                    ip daddr @k8s_in_isolated_v4 jump k8s_ingress (and v6)
//!                    ip saddr @k8s_out_isolated_v4 jump k8s_egress (and v6)
//! chain k8s_ingress  ip saddr . ip daddr @k8s_in_any_v4 return, ... @k8s_in_port_v4 return, ...
//!                    counter drop
//! ```
//!
//! then to `decide`, the Palisade policy's chain (which accepts everything when there is none):
//! a connection passes only if both allow it. Only forwarded traffic is checked: a node's own
//! traffic to its pods (kubelet probes) always passes, as Kubernetes requires. The elements of
//! each set are made disjoint per pod (a sweep over the peer ranges), as the kernel's
//! concatenated-interval sets require.

use std::collections::{BTreeMap, BTreeSet};

use palisade_policy::addrs::{family_of, to_u128, Family};
use palisade_policy::compile::{
    proto_number, Chain, ChainId, ChainRule, Element, Key, Lookup, SetDef, SetId,
};
use palisade_policy::model::PortRange;
use palisade_policy::Ruleset;

use crate::model::{Cluster, NetworkPolicy, Peer, Pod, PortRef, Rule};

/// What a rule admits on a port entry: every protocol, or one protocol's port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Match {
    Any,
    Ports(u8, PortRange),
}

/// Adds `node`'s share of `cluster`'s NetworkPolicies to `base` (the Palisade policy's table
/// for the node, or [`Ruleset::open`]), and stamps the result's generation.
pub fn compile(cluster: &Cluster, node: &str, mut base: Ruleset) -> Ruleset {
    let local: Vec<&Pod> = cluster
        .inventory
        .pods
        .iter()
        .filter(|p| p.in_pod_network() && p.node.as_deref() == Some(node))
        .collect();
    let mut sets: BTreeMap<String, (Family, Key, Vec<Element>)> = BTreeMap::new();
    let mut isolated: BTreeMap<String, BTreeSet<u128>> = BTreeMap::new();
    let mut done_ips = BTreeSet::new();
    for pod in &local {
        for &ip in &pod.ips {
            if !done_ips.insert(ip) {
                continue;
            }
            let family = family_of(ip);
            let suffix = suffix(family);
            for egress in [false, true] {
                let policies: Vec<&NetworkPolicy> = cluster
                    .policies
                    .iter()
                    .filter(|p| {
                        p.selects(pod)
                            && if egress {
                                p.egress_isolation
                            } else {
                                p.ingress_isolation
                            }
                    })
                    .collect();
                if policies.is_empty() {
                    continue;
                }
                let dir = if egress { "out" } else { "in" };
                isolated
                    .entry(format!("k8s_{dir}_isolated_{suffix}"))
                    .or_default()
                    .insert(to_u128(ip));
                let mut entries: Vec<((u128, u128), Match)> = Vec::new();
                for policy in policies {
                    let rules = if egress {
                        &policy.egress
                    } else {
                        &policy.ingress
                    };
                    for rule in rules {
                        admitted(cluster, policy, rule, pod, egress, family, &mut entries);
                    }
                }
                let me = (to_u128(ip), to_u128(ip));
                for (range, m) in disjoint(entries) {
                    let (src, dst) = if egress { (me, range) } else { (range, me) };
                    let (kind, key, proto, ports) = match m {
                        Match::Any => ("any", ANY_KEY, 0, PortRange::ALL),
                        Match::Ports(p, r) => ("port", PORT_KEY, p, r),
                    };
                    sets.entry(format!("k8s_{dir}_{kind}_{suffix}"))
                        .or_insert_with(|| (family, key, Vec::new()))
                        .2
                        .push(Element {
                            src,
                            dst,
                            proto,
                            ports,
                        });
                }
            }
        }
    }
    if isolated.is_empty() {
        base.host = Some(node.to_owned());
        base.restamp();
        return base;
    }
    let mut id_of = BTreeMap::new();
    for (name, members) in &isolated {
        let family = if name.ends_with("v4") {
            Family::V4
        } else {
            Family::V6
        };
        id_of.insert(name.clone(), SetId(base.sets.len()));
        base.sets.push(SetDef {
            name: name.clone(),
            family,
            key: Key::ADDR,
            outside: None,
            elements: members
                .iter()
                .map(|&a| Element {
                    src: (a, a),
                    dst: (0, 0),
                    proto: 0,
                    ports: PortRange::ALL,
                })
                .collect(),
        });
    }
    for (name, (family, key, mut elements)) in sets {
        elements.sort();
        id_of.insert(name.clone(), SetId(base.sets.len()));
        base.sets.push(SetDef {
            name,
            family,
            key,
            outside: None,
            elements,
        });
    }
    let first_new = base.chains.len();
    let (k8s, ingress, egress) = (
        ChainId(first_new),
        ChainId(first_new + 1),
        ChainId(first_new + 2),
    );
    let mut entry = vec![ChainRule::ReturnEstablished];
    for (dir, source, chain) in [("in", false, ingress), ("out", true, egress)] {
        for family in [Family::V4, Family::V6] {
            if let Some(&set) = id_of.get(&format!("k8s_{dir}_isolated_{}", suffix(family))) {
                entry.push(ChainRule::JumpIf { set, source, chain });
            }
        }
    }
    let checks = |dir: &str| {
        let mut rules = Vec::new();
        for family in [Family::V4, Family::V6] {
            for kind in ["any", "port"] {
                if let Some(&set) = id_of.get(&format!("k8s_{dir}_{kind}_{}", suffix(family))) {
                    rules.push(ChainRule::Lookup {
                        set,
                        guard: None,
                        verdict: Lookup::Pass,
                    });
                }
            }
        }
        rules.push(ChainRule::Drop);
        rules
    };
    base.chains.push(Chain {
        name: "k8s".into(),
        hook: None,
        rules: entry,
    });
    base.chains.push(Chain {
        name: "k8s_ingress".into(),
        hook: None,
        rules: checks("in"),
    });
    base.chains.push(Chain {
        name: "k8s_egress".into(),
        hook: None,
        rules: checks("out"),
    });
    if let Some(forward) = base.chains.iter_mut().find(|c| c.name == "forward") {
        forward.rules.insert(0, ChainRule::Jump(k8s));
    }
    base.host = Some(node.to_owned());
    base.restamp();
    base
}

const ANY_KEY: Key = Key {
    src: true,
    dst: true,
    proto: false,
    port: false,
};

const PORT_KEY: Key = Key {
    src: true,
    dst: true,
    proto: true,
    port: true,
};

fn suffix(family: Family) -> &'static str {
    match family {
        Family::V4 => "v4",
        Family::V6 => "v6",
    }
}

/// What one rule of `policy` admits for `pod` (the selected pod): peer ranges of `family` with
/// what is admitted from (ingress) or to (egress) them.
fn admitted(
    cluster: &Cluster,
    policy: &NetworkPolicy,
    rule: &Rule,
    pod: &Pod,
    egress: bool,
    family: Family,
    out: &mut Vec<((u128, u128), Match)>,
) {
    let full = match family {
        Family::V4 => (0, u32::MAX as u128),
        Family::V6 => (0, u128::MAX),
    };
    // The peers' ranges of this family.
    let mut ranges: Vec<(u128, u128)> = Vec::new();
    if rule.peers.is_empty() {
        ranges.push(full);
    }
    for peer in &rule.peers {
        match peer {
            Peer::IpBlock { addrs, .. } => ranges.extend_from_slice(addrs.get(family).ranges()),
            Peer::Pods { pods, namespaces } => {
                for other in &cluster.inventory.pods {
                    if !crate::explain::pod_in_peer(cluster, policy, pods, namespaces, other) {
                        continue;
                    }
                    ranges.extend(
                        other
                            .ips
                            .iter()
                            .filter(|ip| family_of(**ip) == family)
                            .map(|ip| (to_u128(*ip), to_u128(*ip))),
                    );
                }
            }
        }
    }
    if rule.ports.is_empty() {
        out.extend(ranges.iter().map(|&r| (r, Match::Any)));
        return;
    }
    for entry in &rule.ports {
        let proto = proto_number(entry.protocol.protocol());
        match &entry.port {
            None => out.extend(
                ranges
                    .iter()
                    .map(|&r| (r, Match::Ports(proto, PortRange::ALL))),
            ),
            Some(PortRef::Number(first)) => {
                let ports = PortRange {
                    first: *first,
                    last: entry.end_port.unwrap_or(*first),
                };
                out.extend(ranges.iter().map(|&r| (r, Match::Ports(proto, ports))));
            }
            Some(PortRef::Name(name)) if !egress => {
                // Resolved on the selected pod, the destination.
                if let Some(port) = pod.named_port(name, entry.protocol) {
                    let ports = PortRange {
                        first: port,
                        last: port,
                    };
                    out.extend(ranges.iter().map(|&r| (r, Match::Ports(proto, ports))));
                }
            }
            Some(PortRef::Name(name)) => {
                // Resolved on each destination pod inside the peers' ranges.
                let peers = palisade_policy::addrs::AddrSet::from_ranges(ranges.clone());
                for other in cluster.inventory.pods.iter().filter(|p| p.in_pod_network()) {
                    let Some(port) = other.named_port(name, entry.protocol) else {
                        continue;
                    };
                    for ip in other.ips.iter().filter(|ip| family_of(**ip) == family) {
                        let a = to_u128(*ip);
                        if peers.contains(a) {
                            out.push((
                                (a, a),
                                Match::Ports(
                                    proto,
                                    PortRange {
                                        first: port,
                                        last: port,
                                    },
                                ),
                            ));
                        }
                    }
                }
            }
        }
    }
}

/// The same admissions as disjoint elements: the address line cut where any entry starts or
/// ends, each piece given the union of what covers it (every protocol when one entry says so,
/// else per protocol the merged port ranges), neighbouring pieces with the same union joined.
fn disjoint(entries: Vec<((u128, u128), Match)>) -> Vec<((u128, u128), Match)> {
    if entries.is_empty() {
        return Vec::new();
    }
    // Events: at `start` an entry begins, after `end` it stops (`None`: at the end of the space).
    let mut points: BTreeSet<u128> = BTreeSet::new();
    for ((a, b), _) in &entries {
        points.insert(*a);
        if let Some(next) = b.checked_add(1) {
            points.insert(next);
        }
    }
    let points: Vec<u128> = points.into_iter().collect();
    let mut starting: BTreeMap<u128, Vec<usize>> = BTreeMap::new();
    let mut stopping: BTreeMap<u128, Vec<usize>> = BTreeMap::new();
    for (i, ((a, b), _)) in entries.iter().enumerate() {
        starting.entry(*a).or_default().push(i);
        if let Some(next) = b.checked_add(1) {
            stopping.entry(next).or_default().push(i);
        }
    }
    let mut active: BTreeMap<usize, ()> = BTreeMap::new();
    let mut pieces: Vec<((u128, u128), Vec<Match>)> = Vec::new();
    for (k, &point) in points.iter().enumerate() {
        for i in stopping.get(&point).into_iter().flatten() {
            active.remove(i);
        }
        for &i in starting.get(&point).into_iter().flatten() {
            active.insert(i, ());
        }
        if active.is_empty() {
            continue;
        }
        let last = match points.get(k + 1) {
            Some(next) => next - 1,
            None => entries
                .iter()
                .enumerate()
                .filter(|(i, _)| active.contains_key(i))
                .map(|(_, ((_, b), _))| *b)
                .max()
                .unwrap_or(point),
        };
        let union = merge(active.keys().map(|&i| entries[i].1));
        match pieces.last_mut() {
            Some(((_, end), prev)) if *prev == union && end.checked_add(1) == Some(point) => {
                *end = last;
            }
            _ => pieces.push(((point, last), union)),
        }
    }
    pieces
        .into_iter()
        .flat_map(|(range, matches)| matches.into_iter().map(move |m| (range, m)))
        .collect()
}

/// The union of matches: `[Any]`, or per protocol its port ranges merged, sorted.
fn merge(matches: impl Iterator<Item = Match>) -> Vec<Match> {
    let mut by_proto: BTreeMap<u8, Vec<PortRange>> = BTreeMap::new();
    for m in matches {
        match m {
            Match::Any => return vec![Match::Any],
            Match::Ports(p, r) => by_proto.entry(p).or_default().push(r),
        }
    }
    let mut out = Vec::new();
    for (proto, mut ranges) in by_proto {
        ranges.sort_by_key(|r| (r.first, r.last));
        let mut merged: Vec<PortRange> = Vec::new();
        for r in ranges {
            match merged.last_mut() {
                Some(m) if u32::from(r.first) <= u32::from(m.last) + 1 => {
                    m.last = m.last.max(r.last)
                }
                _ => merged.push(r),
            }
        }
        out.extend(merged.into_iter().map(|r| Match::Ports(proto, r)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_admissions_become_disjoint_pieces_with_merged_ports() {
        let tcp = |a, b| Match::Ports(6, PortRange { first: a, last: b });
        let got = disjoint(vec![
            ((10, 20), tcp(80, 80)),
            ((15, 30), tcp(81, 90)),
            ((25, 40), Match::Any),
        ]);
        assert_eq!(
            got,
            vec![
                ((10, 14), tcp(80, 80)),
                ((15, 20), tcp(80, 90)),
                ((21, 24), tcp(81, 90)),
                ((25, 40), Match::Any),
            ]
        );
        // The whole IPv6 space, whose end has no successor.
        let all = disjoint(vec![((0, u128::MAX), Match::Any), ((5, 5), tcp(1, 1))]);
        assert_eq!(all, vec![((0, u128::MAX), Match::Any)]);
    }
}
