//! The policy as the rest of the crate sees it: segments with their exact address sets,
//! rules with resolved segment references, hosts with their local segments. Built only by
//! [`crate::load`], so every value here has been checked.

use std::net::IpAddr;

use palisade_identity::{IdPattern, SpiffeId, TrustDomain};

use crate::addrs::{Addrs, Cidr};

/// Where something was written: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord)]
pub struct Pos {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
}

/// A checked policy: every segment reference, pattern and port in it is valid.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Every identity pattern of every segment is in this trust domain.
    pub trust_domain: TrustDomain,
    /// In file order; a [`SegmentRef::Segment`] or a host's segment is an index into it.
    pub segments: Vec<Segment>,
    /// In file order, which only picks the rule named when several match: deny beats allow
    /// wherever it is written.
    pub rules: Vec<Rule>,
    /// Which segments live on which host, in file order.
    pub hosts: Vec<Host>,
}

/// A named set of addresses and identities whose members may reach each other.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Lowercase letters, digits, `-` and `_`, starting with a letter, at most 48 bytes; never
    /// `outside`.
    pub name: String,
    /// The `addresses` entries, each with where it is written.
    pub addresses: Vec<(Cidr, Pos)>,
    /// The `except` entries, each with where it is written; each overlaps `addresses`.
    pub except: Vec<(Cidr, Pos)>,
    /// The `identities` patterns, each with where it is written.
    pub identities: Vec<(IdPattern, Pos)>,
    /// May reach addresses outside every segment without a rule saying so.
    pub egress_to_outside: bool,
    /// `addresses` minus `except`.
    pub members: Addrs,
    /// Where the segment's name is written.
    pub pos: Pos,
}

/// A rule's `from` or `to` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SegmentRef {
    /// A segment, by its index in [`Policy::segments`].
    Segment(usize),
    /// Every address that is in no segment.
    Outside,
}

/// The protocol a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP (protocol 6).
    Tcp,
    /// UDP (protocol 17).
    Udp,
    /// SCTP (protocol 132).
    Sctp,
    /// ICMP for IPv4 (protocol 1); a rule for it compiles to IPv4 sets only.
    Icmp,
    /// ICMPv6 (protocol 58); a rule for it compiles to IPv6 sets only.
    Icmpv6,
    /// Every protocol: a rule that names none.
    Any,
}

impl Protocol {
    /// The accepted names, as an error message lists them.
    pub const NAMES: &'static str = "tcp, udp, sctp, icmp, icmpv6 or any";

    /// The protocol of a policy's name for it (lowercase, as [`Protocol::NAMES`]); `None` for
    /// anything else.
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

    /// The name a policy writes.
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

/// Destination ports `first` to `last`, both included; one port when they are equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    /// The first port.
    pub first: u16,
    /// The last port, never below `first`.
    pub last: u16,
}

impl PortRange {
    /// Every port, 0 included: what a set element without a port stands for.
    pub const ALL: PortRange = PortRange {
        first: 0,
        last: u16::MAX,
    };

    /// Whether `port` is in the range.
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

/// What a rule does with the traffic it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Allows it, unless a matching deny rule denies it.
    Allow,
    /// Denies it, even between members of one segment: deny beats allow.
    Deny,
}

/// One entry of `rules`.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique in the policy; `rule-N` (N counting from 1) when the file gives none.
    pub name: String,
    /// Where the traffic comes from: any of these, each once, never empty.
    pub from: Vec<SegmentRef>,
    /// Where it goes: any of these, each once, never empty.
    pub to: Vec<SegmentRef>,
    /// [`Protocol::Any`] when the file names none.
    pub protocol: Protocol,
    /// Empty means every port (and always empty for protocols without ports).
    pub ports: Vec<PortRange>,
    /// [`Action::Allow`] when the file names none.
    pub action: Action,
    /// Log matching new connections, prefixed `palisade allow: ` or `palisade deny: `.
    pub log: bool,
    /// Where the rule's entry starts.
    pub pos: Pos,
}

impl Rule {
    /// Whether the rule's protocol and ports cover this traffic. `port` is `None` for protocols
    /// without ports, and then only a rule without ports matches.
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

/// One entry of `hosts`: the segments whose addresses live on a host.
#[derive(Debug, Clone)]
pub struct Host {
    /// Letters, digits, `.`, `-` and `_`, starting with a letter or digit, at most 253 bytes.
    pub name: String,
    /// Indices into [`Policy::segments`], each once; `outside` cannot be named here.
    pub segments: Vec<usize>,
    /// Where the host's name is written.
    pub pos: Pos,
}

/// One end of a connection, as `explain` and the compiler's tests name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// An address, placed by the segments' `addresses` and `except`.
    Address(IpAddr),
    /// A SPIFFE ID, placed by the segments' `identities`.
    Identity(SpiffeId),
}

/// Why a text names no endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// Starts with `spiffe:` but is not a valid SPIFFE ID.
    #[error("\"{text}\": {reason}")]
    BadSpiffeId {
        /// The text as given.
        text: String,
        /// The SPIFFE ID rule it breaks.
        reason: palisade_identity::IdError,
    },
    /// Neither an IP address nor a `spiffe:` ID.
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
    /// The name of a segment reference: the segment's, or `outside`. Panics on an index that is
    /// not from this policy.
    pub fn segment_name(&self, r: SegmentRef) -> &str {
        match r {
            SegmentRef::Segment(i) => &self.segments[i].name,
            SegmentRef::Outside => crate::OUTSIDE,
        }
    }

    /// The index of the segment called `name`, if there is one.
    pub fn segment_index(&self, name: &str) -> Option<usize> {
        self.segments.iter().position(|s| s.name == name)
    }

    /// The host called `name`, if the policy has one.
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
        Addrs::union_all(self.segments.iter().map(|s| &s.members))
    }
}
