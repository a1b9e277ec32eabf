//! The objects, typed: the pods and namespaces a cluster has (the inventory) and its
//! NetworkPolicies, with the defaults of the API already applied, and label selectors.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use palisade_policy::addrs::{Addrs, Cidr};

/// Labels of a pod or namespace.
pub type Labels = BTreeMap<String, String>;

/// The label every namespace carries with its own name (set by Kubernetes since 1.22; added here
/// when a manifest leaves it out).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Where an object or field was read: file, line, column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The file as named when loading.
    pub file: Arc<str>,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// A transport protocol a NetworkPolicy port may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// TCP, the default.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Proto {
    /// The API's spelling.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
            Proto::Sctp => "SCTP",
        }
    }

    /// The same protocol in the policy crate's terms (for the compiled table).
    pub fn protocol(self) -> palisade_policy::Protocol {
        match self {
            Proto::Tcp => palisade_policy::Protocol::Tcp,
            Proto::Udp => palisade_policy::Protocol::Udp,
            Proto::Sctp => palisade_policy::Protocol::Sctp,
        }
    }

    /// Parses the API's spelling (`TCP`, `UDP`, `SCTP`).
    pub fn parse(s: &str) -> Option<Proto> {
        match s {
            "TCP" => Some(Proto::Tcp),
            "UDP" => Some(Proto::Udp),
            "SCTP" => Some(Proto::Sctp),
            _ => None,
        }
    }
}

/// A port a container declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPort {
    /// Its name, which NetworkPolicy ports may use.
    pub name: Option<String>,
    /// The number.
    pub port: u16,
    /// Its protocol (TCP by default).
    pub protocol: Proto,
}

/// A pod of the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: Labels,
    /// Its addresses (`status.podIPs`, else `status.podIP`); none while it has none.
    pub ips: Vec<IpAddr>,
    /// The node it runs on (`spec.nodeName`).
    pub node: Option<String>,
    /// Every container's declared ports.
    pub ports: Vec<ContainerPort>,
    /// `spec.serviceAccountName` (`default` when absent).
    pub service_account: String,
    /// `spec.hostNetwork`: such a pod has its node's addresses, and NetworkPolicy does not apply
    /// to it; selectors never match it.
    pub host_network: bool,
    /// Where it was read.
    pub source: Source,
}

impl Pod {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Whether NetworkPolicies select or match this pod: it has an address of its own.
    pub fn in_pod_network(&self) -> bool {
        !self.host_network && !self.ips.is_empty()
    }

    /// The port number a NetworkPolicy's named port means on this pod, for `protocol`.
    pub fn named_port(&self, name: &str, protocol: Proto) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name) && p.protocol == protocol)
            .map(|p| p.port)
    }
}

/// What a cluster has: its namespaces (with labels) and pods.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Namespace name to labels; a namespace that only pods name gets just its name label.
    pub namespaces: BTreeMap<String, Labels>,
    /// Every pod, in the order read.
    pub pods: Vec<Pod>,
}

impl Inventory {
    /// The labels of namespace `name` (its name label at least).
    ///
    /// Borrowed when the namespace is known, as it is for every pod the loader read: compiling
    /// asks this for every pod a peer might name.
    pub fn namespace_labels(&self, name: &str) -> std::borrow::Cow<'_, Labels> {
        match self.namespaces.get(name) {
            Some(labels) => std::borrow::Cow::Borrowed(labels),
            None => std::borrow::Cow::Owned(Labels::from([(
                NAMESPACE_NAME_LABEL.to_owned(),
                name.to_owned(),
            )])),
        }
    }

    /// The pod `namespace/name`.
    pub fn pod(&self, key: &str) -> Option<usize> {
        let (namespace, name) = key.split_once('/')?;
        self.pods
            .iter()
            .position(|p| p.namespace == namespace && p.name == name)
    }

    /// The pod (in the pod network) that has address `ip`.
    pub fn pod_at(&self, ip: IpAddr) -> Option<usize> {
        self.pods
            .iter()
            .position(|p| p.in_pod_network() && p.ips.contains(&ip))
    }
}

/// An operator of a label selector's expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// The label is one of the values.
    In,
    /// The label is absent, or none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The label's key.
    pub key: String,
    /// The operator.
    pub operator: Operator,
    /// The values (`In`, `NotIn`: at least one; `Exists`, `DoesNotExist`: none).
    pub values: Vec<String>,
}

/// A label selector: every `matchLabels` pair and every expression must hold; the empty
/// selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    /// `matchLabels`.
    pub match_labels: Labels,
    /// `matchExpressions`.
    pub match_expressions: Vec<Requirement>,
}

impl Selector {
    /// Whether `labels` satisfy the selector.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let value = labels.get(&r.key);
                match r.operator {
                    Operator::In => value.is_some_and(|v| r.values.contains(v)),
                    Operator::NotIn => value.is_none_or(|v| !r.values.contains(v)),
                    Operator::Exists => value.is_some(),
                    Operator::DoesNotExist => value.is_none(),
                }
            })
    }

    /// Whether it is the empty selector (which selects everything).
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return write!(f, "{{}}");
        }
        let mut parts: Vec<String> = self
            .match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for r in &self.match_expressions {
            parts.push(match r.operator {
                Operator::In => format!("{} in ({})", r.key, r.values.join(",")),
                Operator::NotIn => format!("{} notin ({})", r.key, r.values.join(",")),
                Operator::Exists => r.key.clone(),
                Operator::DoesNotExist => format!("!{}", r.key),
            });
        }
        write!(f, "{}", parts.join(","))
    }
}

/// One peer of a rule (`from` or `to` entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// Pods chosen by labels: `pods` in the namespaces `namespaces` selects, or in the policy's
    /// own namespace when there is no namespace selector; all pods of those namespaces when
    /// there is no pod selector.
    Pods {
        /// `podSelector`.
        pods: Option<Selector>,
        /// `namespaceSelector`.
        namespaces: Option<Selector>,
    },
    /// `ipBlock`: addresses in `cidr` but in none of `except`.
    IpBlock {
        /// The block.
        cidr: Cidr,
        /// Carved out of it.
        except: Vec<Cidr>,
        /// `cidr` minus `except`, for lookups.
        addrs: Addrs,
    },
}

/// A port of a rule, by number or by a name the destination pod declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortRef {
    /// A number.
    Number(u16),
    /// A container port's name, resolved on the destination pod.
    Name(String),
}

/// One `ports` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// Its protocol (TCP when absent).
    pub protocol: Proto,
    /// The port; every port of the protocol when absent.
    pub port: Option<PortRef>,
    /// With a numeric port: the last port of the range.
    pub end_port: Option<u16>,
}

/// One ingress or egress rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Where it starts in its file.
    pub source: Source,
    /// Its 0-based place in the policy's `ingress` or `egress` list.
    pub index: usize,
    /// The peers: empty when `from`/`to` is absent or empty, which means every address.
    pub peers: Vec<Peer>,
    /// The ports: empty when `ports` is absent or empty, which means every port and protocol.
    pub ports: Vec<Port>,
}

/// A NetworkPolicy, with `policyTypes` defaulted as the API server does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPolicy {
    /// Its namespace (`default` when the manifest names none).
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Where the object starts.
    pub source: Source,
    /// `spec.podSelector`: the pods of its namespace it applies to.
    pub pod_selector: Selector,
    /// Whether it isolates the selected pods for ingress.
    pub ingress_isolation: bool,
    /// Whether it isolates them for egress.
    pub egress_isolation: bool,
    /// `spec.ingress`.
    pub ingress: Vec<Rule>,
    /// `spec.egress`.
    pub egress: Vec<Rule>,
}

impl NetworkPolicy {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Whether it applies to `pod`.
    pub fn selects(&self, pod: &Pod) -> bool {
        pod.in_pod_network()
            && pod.namespace == self.namespace
            && self.pod_selector.matches(&pod.labels)
    }
}

/// Everything one load produced: the inventory and the policies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cluster {
    /// Pods and namespaces.
    pub inventory: Inventory,
    /// NetworkPolicies, in the order read.
    pub policies: Vec<NetworkPolicy>,
}
