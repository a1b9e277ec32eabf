//! The policy as the rest of the crate sees it: segments with their exact address sets,
//! rules with resolved segment references, hosts with their local segments. Built only by
//! [`crate::load`], so every value here has been checked.

use std::net::IpAddr;

use palisade_identity::{IdPattern, SpiffeId, TrustDomain};

use crate::addrs::{Addrs, Cidr};

/// Where something was written: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub trust_domain: TrustDomain,
    pub segments: Vec<Segment>,
    pub rules: Vec<Rule>,
    pub hosts: Vec<Host>,
}

#[derive(Debug, Clone)]
pub struct Segment {
    pub name: String,
    pub addresses: Vec<(Cidr, Pos)>,
    pub except: Vec<(Cidr, Pos)>,
    pub identities: Vec<(IdPattern, Pos)>,
    /// May reach addresses outside every segment without a rule saying so.
    pub egress_to_outside: bool,
    /// `addresses` minus `except`.
    pub members: Addrs,
    pub pos: Pos,
}

/// A rule's `from` or `to` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SegmentRef {
    Segment(usize),
    /// Every address that is in no segment.
    Outside,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
    Icmp,
    Icmpv6,
    Any,
}

impl Protocol {
    pub const NAMES: &'static str = "tcp, udp, sctp, icmp, icmpv6 or any";

    pub fn parse(s: &str) -> Option<Protocol> {
        Some(match s {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "sctp" => Protocol::Sctp,
            "icmp" => Protocol::Icmp,
            "icmpv6" => Protocol::Icmpv6,
            "any" => Protocol::Any,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
            Protocol::Icmp => "icmp",
            Protocol::Icmpv6 => "icmpv6",
            Protocol::Any => "any",
        }
    }

    /// Protocols with ports.
    pub fn has_ports(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Udp | Protocol::Sctp)
    }

    /// Whether a rule for `self` covers traffic of `other` (a concrete protocol).
    pub fn covers(self, other: Protocol) -> bool {
        self == Protocol::Any || self == other
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub const ALL: PortRange = PortRange {
        first: 0,
        last: u16::MAX,
    };

    pub fn contains(&self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Allow,
    Deny,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub from: Vec<SegmentRef>,
    pub to: Vec<SegmentRef>,
    pub protocol: Protocol,
    /// Empty means every port (and always empty for protocols without ports).
    pub ports: Vec<PortRange>,
    pub action: Action,
    pub log: bool,
    pub pos: Pos,
}

impl Rule {
    pub fn matches_traffic(&self, protocol: Protocol, port: Option<u16>) -> bool {
        if !self.protocol.covers(protocol) {
            return false;
        }
        if self.ports.is_empty() {
            return true;
        }
        port.is_some_and(|p| self.ports.iter().any(|r| r.contains(p)))
    }
}

#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub segments: Vec<usize>,
    pub pos: Pos,
}

/// One end of a connection, as `explain` and the compiler's tests name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Address(IpAddr),
    Identity(SpiffeId),
}

/// Why a text names no endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("\"{text}\": {reason}")]
    BadSpiffeId {
        text: String,
        reason: palisade_identity::IdError,
    },
    #[error("\"{0}\" is neither an IP address nor a SPIFFE ID")]
    Neither(String),
}

impl std::str::FromStr for Endpoint {
    type Err = EndpointError;
    fn from_str(s: &str) -> Result<Self, EndpointError> {
        if s.starts_with("spiffe:") {
            SpiffeId::parse(s)
                .map(Endpoint::Identity)
                .map_err(|reason| EndpointError::BadSpiffeId {
                    text: s.to_owned(),
                    reason,
                })
        } else {
            s.parse::<IpAddr>()
                .map(Endpoint::Address)
                .map_err(|_| EndpointError::Neither(s.to_owned()))
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Address(a) => write!(f, "{a}"),
            Endpoint::Identity(id) => write!(f, "{id}"),
        }
    }
}

impl Policy {
    pub fn segment_name(&self, r: SegmentRef) -> &str {
        match r {
            SegmentRef::Segment(i) => &self.segments[i].name,
            SegmentRef::Outside => crate::OUTSIDE,
        }
    }

    pub fn segment_index(&self, name: &str) -> Option<usize> {
        self.segments.iter().position(|s| s.name == name)
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// The segments an endpoint is in: by address, or by identity pattern.
    pub fn segments_of(&self, endpoint: &Endpoint) -> Vec<usize> {
        (0..self.segments.len())
            .filter(|&i| {
                let s = &self.segments[i];
                match endpoint {
                    Endpoint::Address(a) => s.members.contains(*a),
                    Endpoint::Identity(id) => s.identities.iter().any(|(p, _)| p.matches(id)),
                }
            })
            .collect()
    }

    /// Every address in some segment.
    pub fn all_members(&self) -> Addrs {
        self.segments
            .iter()
            .fold(Addrs::default(), |acc, s| acc.union(&s.members))
    }
}
