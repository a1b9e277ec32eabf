//! The one walk both printers share: a typed rule taken apart into nft's terms (what it matches,
//! what it then does, its comment), a set's key into its packet fields, an element into its
//! values. `text.rs` and `json.rs` only spell these parts, each in its form, so the nft text and
//! the JSON of one ruleset cannot say different things; which rule means which matches is
//! decided here once.

use palisade_policy::addrs::{range_form, Family, RangeForm};
use palisade_policy::compile::{
    ChainRule, Element, Key, Lookup, Mark, OutsideEnd, Ruleset, SetId, BASELINE_MARK,
};

/// What the comment of a compiled table's first rule says before the generation: written here,
/// read back by `apply.rs` to recognise our table.
pub(crate) const GENERATION_COMMENT: &str = "palisade generation ";

/// A rule in nft's terms: every match must hold, then the actions run in order.
pub(crate) struct RuleParts<'r> {
    /// The conditions, in the rule's order.
    pub matches: Vec<Match<'r>>,
    /// What the rule does when they hold (a counter, a log, a verdict).
    pub actions: Vec<Action<'r>>,
    /// The rule's comment: the table's mark, on its first rule only.
    pub comment: Option<String>,
}

/// One condition of a rule.
pub(crate) enum Match<'r> {
    /// The connection's `ct state` is one of these.
    CtState(&'static [&'static str]),
    /// The `icmpv6 type` is one of these.
    Icmpv6Type(Vec<&'static str>),
    /// The packet's fields that `key` names are in the named set (not in it, if `negated`).
    InSet {
        /// The family of the set's addresses.
        family: Family,
        /// Which packet fields are looked up.
        key: Key,
        /// The set's name.
        set: &'r str,
        /// `!=` rather than `==`.
        negated: bool,
    },
}

/// One statement after the matches.
pub(crate) enum Action<'r> {
    /// `counter`: count the packet (the drops, so that they can be seen).
    Counter,
    /// `log prefix "…"`.
    Log(&'static str),
    /// `accept`.
    Accept,
    /// `drop`.
    Drop,
    /// `return`.
    Return,
    /// `jump` to the named chain.
    Jump(&'r str),
}

/// Established and related connections: what a chain lets through (or leaves) first.
const ESTABLISHED: &[&str] = &["established", "related"];

/// A typed rule in nft's terms.
pub(crate) fn rule_parts<'r>(ruleset: &'r Ruleset, rule: &ChainRule) -> RuleParts<'r> {
    let (matches, actions, comment) = match rule {
        ChainRule::AcceptEstablished(mark) => (
            vec![Match::CtState(ESTABLISHED)],
            vec![Action::Accept],
            Some(match mark {
                Mark::Generation => format!("{GENERATION_COMMENT}{}", ruleset.generation),
                Mark::Baseline => BASELINE_MARK.to_owned(),
            }),
        ),
        ChainRule::DropInvalid => (
            vec![Match::CtState(&["invalid"])],
            vec![Action::Counter, Action::Drop],
            None,
        ),
        ChainRule::AcceptNeighbourDiscovery { redirect } => (
            vec![Match::Icmpv6Type(neighbour_discovery(*redirect))],
            vec![Action::Accept],
            None,
        ),
        ChainRule::Lookup {
            set,
            guard,
            verdict,
        } => {
            let s = &ruleset.sets[set.0];
            let mut matches = Vec::new();
            // A tuple with an end outside every segment is looked up only when that end really
            // is outside: not in the `segmented_*` set.
            if let (Some(end), Some(g)) = (s.outside, guard) {
                matches.push(address_in(ruleset, *g, end == OutsideEnd::Src, true));
            }
            matches.push(Match::InSet {
                family: s.family,
                key: s.key,
                set: &s.name,
                negated: false,
            });
            let actions = match verdict {
                Lookup::Log(prefix) => vec![Action::Log(prefix)],
                Lookup::Deny => vec![Action::Counter, Action::Drop],
                Lookup::Allow => vec![Action::Accept],
                Lookup::Pass => vec![Action::Return],
            };
            (matches, actions, None)
        }
        ChainRule::DropLocal { set, source } => (
            vec![address_in(ruleset, *set, *source, false)],
            vec![Action::Counter, Action::Drop],
            None,
        ),
        ChainRule::Jump(chain) => (
            Vec::new(),
            vec![Action::Jump(&ruleset.chains[chain.0].name)],
            None,
        ),
        ChainRule::ReturnEstablished => (
            vec![Match::CtState(ESTABLISHED)],
            vec![Action::Return],
            None,
        ),
        ChainRule::JumpIf { set, source, chain } => (
            vec![address_in(ruleset, *set, *source, false)],
            vec![Action::Jump(&ruleset.chains[chain.0].name)],
            None,
        ),
        ChainRule::Drop => (Vec::new(), vec![Action::Counter, Action::Drop], None),
    };
    RuleParts {
        matches,
        actions,
        comment,
    }
}

/// `ip saddr @set` (or `daddr`, `!=`, the `ip6` forms): the packet's address in an address set.
fn address_in(ruleset: &Ruleset, set: SetId, source: bool, negated: bool) -> Match<'_> {
    let s = &ruleset.sets[set.0];
    Match::InSet {
        family: s.family,
        key: Key {
            src: source,
            dst: !source,
            proto: false,
            port: false,
        },
        set: &s.name,
        negated,
    }
}

/// The ICMPv6 types of neighbour discovery, with redirects or without.
fn neighbour_discovery(redirect: bool) -> Vec<&'static str> {
    let mut types = vec![
        "nd-neighbor-solicit",
        "nd-neighbor-advert",
        "nd-router-solicit",
        "nd-router-advert",
    ];
    if redirect {
        types.push("nd-redirect");
    }
    types
}

/// One packet field of a set's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    /// The source address.
    Saddr,
    /// The destination address.
    Daddr,
    /// The layer-4 protocol.
    L4proto,
    /// The transport header's destination port.
    Dport,
}

impl Field {
    /// nft's names for the field: its protocol (`ip`, `ip6`, `meta`, `th`) and its key.
    pub(crate) fn names(self, family: Family) -> (&'static str, &'static str) {
        match self {
            Field::Saddr => (ip_of(family), "saddr"),
            Field::Daddr => (ip_of(family), "daddr"),
            Field::L4proto => ("meta", "l4proto"),
            Field::Dport => ("th", "dport"),
        }
    }
}

/// The fields `key` names, in concatenation order (the order of a set's type and its elements).
pub(crate) fn fields(key: Key) -> impl Iterator<Item = Field> {
    [
        (key.src, Field::Saddr),
        (key.dst, Field::Daddr),
        (key.proto, Field::L4proto),
        (key.port, Field::Dport),
    ]
    .into_iter()
    .filter_map(|(named, field)| named.then_some(field))
}

/// One value of a set element.
pub(crate) enum Value {
    /// Addresses: one, a prefix or a range.
    Addresses(RangeForm),
    /// A protocol by nft's name.
    Proto(&'static str),
    /// One port.
    Port(u16),
    /// A range of ports, first to last.
    Ports(u16, u16),
}

/// An element's values for the fields of `key`, in key order.
pub(crate) fn element_values(
    family: Family,
    key: Key,
    e: &Element,
) -> impl Iterator<Item = Value> + '_ {
    fields(key).map(move |field| match field {
        Field::Saddr => Value::Addresses(range_form(family, e.src)),
        Field::Daddr => Value::Addresses(range_form(family, e.dst)),
        Field::L4proto => Value::Proto(proto_name(e.proto)),
        Field::Dport if e.ports.first == e.ports.last => Value::Port(e.ports.first),
        Field::Dport => Value::Ports(e.ports.first, e.ports.last),
    })
}

/// nft's name for a protocol number of `compile::proto_number` (`ipv6-icmp` for 58); `any` for
/// any other.
fn proto_name(n: u8) -> &'static str {
    match n {
        1 => "icmp",
        6 => "tcp",
        17 => "udp",
        58 => "ipv6-icmp",
        132 => "sctp",
        _ => "any",
    }
}

/// nft's name for a family's address header: `ip` or `ip6`.
fn ip_of(family: Family) -> &'static str {
    match family {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    }
}
