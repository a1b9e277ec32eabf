//! A compiled [`Ruleset`] as nft text: what `palisade policy compile --format nft` prints and
//! what `nft -c -f` checks. The hook chains and their priorities are public contract (docs/POLICY.md).

use std::fmt::Write;

use crate::addrs::{range_text, Family};
use crate::compile::{proto_name, Element, Key, Lookup, Ruleset, SetDef, TABLE};

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
        rules.push(format!(
            "{} @{name} {verdict}",
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

pub fn key_expr(family: Family, key: Key) -> String {
    let ip = ip_of(family);
    match key {
        Key::Addr => format!("{ip} saddr"),
        Key::Pair => format!("{ip} saddr . {ip} daddr"),
        Key::Proto => format!("{ip} saddr . {ip} daddr . meta l4proto"),
        Key::Port => format!("{ip} saddr . {ip} daddr . meta l4proto . th dport"),
    }
}

fn key_type(family: Family, key: Key) -> String {
    let a = addr_type(family);
    match key {
        Key::Addr => a.to_owned(),
        Key::Pair => format!("{a} . {a}"),
        Key::Proto => format!("{a} . {a} . inet_proto"),
        Key::Port => format!("{a} . {a} . inet_proto . inet_service"),
    }
}

pub fn element_text(family: Family, key: Key, e: &Element) -> String {
    let src = range_text(family, e.src);
    let dst = range_text(family, e.dst);
    let ports = if e.ports.first == e.ports.last {
        e.ports.first.to_string()
    } else {
        format!("{}-{}", e.ports.first, e.ports.last)
    };
    match key {
        Key::Addr => src,
        Key::Pair => format!("{src} . {dst}"),
        Key::Proto => format!("{src} . {dst} . {}", proto_name(e.proto)),
        Key::Port => format!("{src} . {dst} . {} . {ports}", proto_name(e.proto)),
    }
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
