//! A compiled [`Ruleset`] as nft text: what `palisade policy compile --format nft` prints and
//! what `nft -c -f` checks. The hook chains and their priorities are public contract (docs/POLICY.md).

use std::fmt::Write;

use crate::addrs::{range_text, Family};
use crate::compile::{proto_name, Element, Key, Lookup, OutsideEnd, Ruleset, SetDef, TABLE};

/// Base chains: every hook a packet of a local segment can cross, at priority `filter` (0), after
/// DNAT (-100), so that they see real endpoint addresses.
pub const HOOKS: [&str; 3] = ["input", "forward", "output"];

pub fn nft_text(ruleset: &Ruleset) -> String {
    let mut out = String::new();
    let host = ruleset.host.as_deref().unwrap_or("all hosts");
    let _ = writeln!(out, "# palisade policy for {host}");
    let _ = writeln!(out, "table inet {TABLE} {{");
    for set in &ruleset.sets {
        render_set(&mut out, set);
    }
    for hook in HOOKS {
        let _ = writeln!(
            out,
            "\tchain {hook} {{\n\t\ttype filter hook {hook} priority filter; policy accept;\n\t\tjump decide\n\t}}"
        );
    }
    let _ = writeln!(out, "\tchain decide {{");
    for rule in decide_rules(ruleset) {
        let _ = writeln!(out, "\t\t{rule}");
    }
    let _ = writeln!(out, "\t}}");
    let _ = writeln!(out, "}}");
    out
}

/// The decision chain's rules as nft text. The JSON renderer builds the same rules.
pub fn decide_rules(ruleset: &Ruleset) -> Vec<String> {
    let mut rules = vec![
        format!(
            "ct state established,related accept comment \"palisade generation {}\"",
            ruleset.generation
        ),
        "ct state invalid counter drop".to_owned(),
        // IPv6 cannot work without neighbour discovery, whatever the segments say.
        "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert, nd-redirect } accept".to_owned(),
    ];
    for (name, lookup) in &ruleset.lookups {
        let set = ruleset
            .sets
            .iter()
            .find(|s| &s.name == name)
            .expect("every lookup names a set");
        if set.elements.is_empty() {
            continue;
        }
        let verdict = match lookup {
            Lookup::Log(prefix) => format!("log prefix \"{prefix}\""),
            Lookup::Deny => "counter drop".to_owned(),
            Lookup::Allow => "accept".to_owned(),
        };
        let guard = match set.outside {
            None => String::new(),
            Some(end) => format!("{} ", outside_guard(set.family, end)),
        };
        rules.push(format!(
            "{guard}{} @{name} {verdict}",
            key_expr(set.family, set.key)
        ));
    }
    for family in [Family::V4, Family::V6] {
        let ip = ip_of(family);
        let local = format!("local_{}", suffix(family));
        if ruleset
            .sets
            .iter()
            .any(|s| s.name == local && !s.elements.is_empty())
        {
            rules.push(format!("{ip} saddr @{local} counter drop"));
            rules.push(format!("{ip} daddr @{local} counter drop"));
        }
    }
    rules
}

pub fn ip_of(family: Family) -> &'static str {
    match family {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    }
}

pub fn suffix(family: Family) -> &'static str {
    match family {
        Family::V4 => "v4",
        Family::V6 => "v6",
    }
}

fn addr_type(family: Family) -> &'static str {
    match family {
        Family::V4 => "ipv4_addr",
        Family::V6 => "ipv6_addr",
    }
}

/// The condition that an end is outside every segment: it is in no segment's addresses.
pub fn outside_guard(family: Family, end: OutsideEnd) -> String {
    let field = match end {
        OutsideEnd::Src => "saddr",
        OutsideEnd::Dst => "daddr",
    };
    format!("{} {field} != @segmented_{}", ip_of(family), suffix(family))
}

/// The parts of a key, in concatenation order: (nft expression, nft type).
fn key_parts(family: Family, key: Key) -> Vec<(String, &'static str)> {
    let ip = ip_of(family);
    let mut parts = Vec::new();
    if key.src {
        parts.push((format!("{ip} saddr"), addr_type(family)));
    }
    if key.dst {
        parts.push((format!("{ip} daddr"), addr_type(family)));
    }
    if key.proto {
        parts.push(("meta l4proto".to_owned(), "inet_proto"));
    }
    if key.port {
        parts.push(("th dport".to_owned(), "inet_service"));
    }
    parts
}

pub fn key_expr(family: Family, key: Key) -> String {
    key_parts(family, key)
        .into_iter()
        .map(|(e, _)| e)
        .collect::<Vec<_>>()
        .join(" . ")
}

fn key_type(family: Family, key: Key) -> String {
    key_parts(family, key)
        .into_iter()
        .map(|(_, t)| t)
        .collect::<Vec<_>>()
        .join(" . ")
}

pub fn element_text(family: Family, key: Key, e: &Element) -> String {
    let mut parts = Vec::new();
    if key.src {
        parts.push(range_text(family, e.src));
    }
    if key.dst {
        parts.push(range_text(family, e.dst));
    }
    if key.proto {
        parts.push(proto_name(e.proto).to_owned());
    }
    if key.port {
        parts.push(if e.ports.first == e.ports.last {
            e.ports.first.to_string()
        } else {
            format!("{}-{}", e.ports.first, e.ports.last)
        });
    }
    parts.join(" . ")
}

fn render_set(out: &mut String, set: &SetDef) {
    let _ = writeln!(out, "\tset {} {{", set.name);
    let _ = writeln!(out, "\t\ttype {}", key_type(set.family, set.key));
    let _ = writeln!(out, "\t\tflags interval");
    if !set.elements.is_empty() {
        let _ = writeln!(out, "\t\telements = {{");
        for (i, e) in set.elements.iter().enumerate() {
            let comma = if i + 1 < set.elements.len() { "," } else { "" };
            let _ = writeln!(out, "\t\t\t{}{comma}", element_text(set.family, set.key, e));
        }
        let _ = writeln!(out, "\t\t}}");
    }
    let _ = writeln!(out, "\t}}");
}
