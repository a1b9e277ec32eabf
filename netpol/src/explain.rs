//! What the NetworkPolicies mean for one connection, as the Kubernetes documentation defines it:
//! a connection is allowed when the source's egress allows it AND the destination's ingress
//! allows it. A pod that no policy selects for a direction is open in that direction; a pod that
//! some do is isolated, and only what a rule of one of those policies admits passes. Replies are
//! not asked about (connection tracking lets them through). `palisade policy explain` prints
//! this, `palisade policy matrix` prints it for every pair, and the compiled tables are tested
//! against it.

use std::fmt;
use std::net::IpAddr;

use crate::model::{Cluster, NetworkPolicy, Peer, Pod, Port, PortRef, Proto, Rule, Selector};

/// One end of a connection: an address, and the pod that has it (if any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct End {
    /// The address.
    pub ip: IpAddr,
    /// The pod (index into the inventory's pods) that has this address.
    pub pod: Option<usize>,
}

impl End {
    /// The end at `ip`: the pod that has it, if any.
    pub fn at(cluster: &Cluster, ip: IpAddr) -> End {
        End {
            ip,
            pod: cluster.inventory.pod_at(ip),
        }
    }
}

/// A rule that admits: which policy (index into the cluster's policies) and which rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleRef {
    /// The policy.
    pub policy: usize,
    /// The rule's place in its `ingress` or `egress` list.
    pub rule: usize,
}

/// How one direction (the source's egress, or the destination's ingress) decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Side {
    /// This end is not a pod in the pod network (an outside address, a host-network pod):
    /// NetworkPolicy does not govern it.
    NotAPod,
    /// No policy selects this pod for the direction: it is open.
    NotIsolated,
    /// These policies select the pod for the direction; `admitted_by` are the rules that admit
    /// the connection (none: it is denied).
    Isolated {
        /// The policies that isolate it.
        policies: Vec<usize>,
        /// The rules that admit the connection.
        admitted_by: Vec<RuleRef>,
    },
}

impl Side {
    /// Whether this direction lets the connection through.
    pub fn allows(&self) -> bool {
        match self {
            Side::NotAPod | Side::NotIsolated => true,
            Side::Isolated { admitted_by, .. } => !admitted_by.is_empty(),
        }
    }
}

/// The answer for one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Whether it is allowed.
    pub allowed: bool,
    /// Both ends are the same pod: its traffic to itself never leaves it, and no policy applies.
    pub same_pod: bool,
    /// The source's egress.
    pub egress: Side,
    /// The destination's ingress.
    pub ingress: Side,
}

/// Decides one connection from `from` to `to` with `protocol` to `port`.
pub fn decide(cluster: &Cluster, from: &End, to: &End, protocol: Proto, port: u16) -> Verdict {
    if from.pod.is_some() && from.pod == to.pod {
        return Verdict {
            allowed: true,
            same_pod: true,
            egress: Side::NotIsolated,
            ingress: Side::NotIsolated,
        };
    }
    let pods = &cluster.inventory.pods;
    let to_pod = to.pod.map(|i| &pods[i]);
    let side = |end: &End, egress: bool| -> Side {
        let Some(pod) = end.pod.map(|i| &pods[i]).filter(|p| p.in_pod_network()) else {
            return Side::NotAPod;
        };
        let mut policies = Vec::new();
        let mut admitted_by = Vec::new();
        for (i, policy) in cluster.policies.iter().enumerate() {
            let isolates = if egress {
                policy.egress_isolation
            } else {
                policy.ingress_isolation
            };
            if !isolates || !policy.selects(pod) {
                continue;
            }
            policies.push(i);
            let (rules, peer) = if egress {
                (&policy.egress, to)
            } else {
                (&policy.ingress, from)
            };
            for rule in rules {
                if rule_admits(cluster, policy, rule, peer, to_pod, protocol, port) {
                    admitted_by.push(RuleRef {
                        policy: i,
                        rule: rule.index,
                    });
                }
            }
        }
        if policies.is_empty() {
            Side::NotIsolated
        } else {
            Side::Isolated {
                policies,
                admitted_by,
            }
        }
    };
    let egress = side(from, true);
    let ingress = side(to, false);
    Verdict {
        allowed: egress.allows() && ingress.allows(),
        same_pod: false,
        egress,
        ingress,
    }
}

/// Whether `rule` of `policy` admits the connection whose other end is `peer`, going to
/// `destination` (the pod that named ports are resolved on) with `protocol` and `port`.
pub fn rule_admits(
    cluster: &Cluster,
    policy: &NetworkPolicy,
    rule: &Rule,
    peer: &End,
    destination: Option<&Pod>,
    protocol: Proto,
    port: u16,
) -> bool {
    (rule.peers.is_empty()
        || rule
            .peers
            .iter()
            .any(|p| peer_matches(cluster, policy, p, peer)))
        && (rule.ports.is_empty()
            || rule
                .ports
                .iter()
                .any(|p| port_matches(p, destination, protocol, port)))
}

/// Whether `end` is one of the addresses or pods `peer` names, for a rule of `policy`.
pub fn peer_matches(cluster: &Cluster, policy: &NetworkPolicy, peer: &Peer, end: &End) -> bool {
    match peer {
        Peer::IpBlock { addrs, .. } => addrs.contains(end.ip),
        Peer::Pods { pods, namespaces } => end.pod.is_some_and(|i| {
            pod_in_peer(
                cluster,
                policy,
                pods,
                namespaces,
                &cluster.inventory.pods[i],
            )
        }),
    }
}

/// Whether `pod` is one of the pods a `podSelector`/`namespaceSelector` peer of `policy` names:
/// in the pod network, in a namespace `namespaces` selects (the policy's own when absent), with
/// labels `pods` selects (any when absent).
pub fn pod_in_peer(
    cluster: &Cluster,
    policy: &NetworkPolicy,
    pods: &Option<Selector>,
    namespaces: &Option<Selector>,
    pod: &Pod,
) -> bool {
    pod.in_pod_network()
        && match namespaces {
            Some(selector) => selector.matches(&cluster.inventory.namespace_labels(&pod.namespace)),
            None => pod.namespace == policy.namespace,
        }
        && pods.as_ref().is_none_or(|s| s.matches(&pod.labels))
}

/// Whether a rule's port entry covers `protocol`/`port` on `destination`.
pub fn port_matches(entry: &Port, destination: Option<&Pod>, protocol: Proto, port: u16) -> bool {
    entry.protocol == protocol
        && match &entry.port {
            None => true,
            Some(PortRef::Number(first)) => match entry.end_port {
                Some(last) => (*first..=last).contains(&port),
                None => port == *first,
            },
            Some(PortRef::Name(name)) => {
                destination.and_then(|d| d.named_port(name, protocol)) == Some(port)
            }
        }
}

/// A verdict in words, with the ends, the policies and the rules named.
pub struct Explained<'a> {
    /// The objects.
    pub cluster: &'a Cluster,
    /// The source.
    pub from: End,
    /// The destination.
    pub to: End,
    /// The protocol.
    pub protocol: Proto,
    /// The port.
    pub port: u16,
    /// What [`decide`] said.
    pub verdict: &'a Verdict,
}

impl fmt::Display for Explained<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cluster = self.cluster;
        let name = |end: &End| match end.pod {
            Some(i) => format!("{} ({})", cluster.inventory.pods[i].key(), end.ip),
            None => end.ip.to_string(),
        };
        let v = self.verdict;
        writeln!(
            f,
            "{} -> {} {} port {}: {}",
            name(&self.from),
            name(&self.to),
            self.protocol.name(),
            self.port,
            if v.allowed { "allowed" } else { "denied" }
        )?;
        if v.same_pod {
            return writeln!(
                f,
                "  both ends are the same pod: its traffic to itself never leaves it"
            );
        }
        for (side, what, end) in [
            (&v.egress, "egress", &self.from),
            (&v.ingress, "ingress", &self.to),
        ] {
            write!(f, "  {what} of {}: ", name(end))?;
            match side {
                Side::NotAPod => {
                    writeln!(f, "not a pod in the pod network: no NetworkPolicy applies")?
                }
                Side::NotIsolated => {
                    writeln!(f, "not isolated (no NetworkPolicy selects it for {what})")?
                }
                Side::Isolated {
                    policies,
                    admitted_by,
                } => {
                    let names: Vec<String> = policies
                        .iter()
                        .map(|&i| {
                            let p = &cluster.policies[i];
                            format!("{} ({})", p.key(), p.source)
                        })
                        .collect();
                    writeln!(f, "isolated by {}", names.join(", "))?;
                    if admitted_by.is_empty() {
                        writeln!(f, "    no {what} rule of those policies admits it")?;
                    }
                    for r in admitted_by {
                        let p = &cluster.policies[r.policy];
                        let rules = if what == "egress" {
                            &p.egress
                        } else {
                            &p.ingress
                        };
                        let at = rules
                            .iter()
                            .find(|x| x.index == r.rule)
                            .map(|x| x.source.to_string())
                            .unwrap_or_default();
                        writeln!(
                            f,
                            "    admitted by {} {what} rule {} ({at})",
                            p.key(),
                            r.rule + 1
                        )?;
                    }
                }
            }
        }
        Ok(())
    }
}
