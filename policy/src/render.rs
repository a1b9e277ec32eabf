//! A compiled [`Ruleset`] as nft text: what `palisade policy compile --format nft` prints and
//! what `nft -c -f` checks. The hook chains and their priorities are public contract (docs/POLICY.md).

use std::fmt::Write;

use crate::addrs::{range_text, Family};
use crate::compile::{
    proto_name, ChainRule, Element, Key, Lookup, Mark, OutsideEnd, Ruleset, SetDef, BASELINE_MARK,
    TABLE,
};

/// The whole table as an `nft -f` script: a comment naming the host, then `table inet palisade`
/// with its sets and chains, tab-indented.
pub fn nft_text(ruleset: &Ruleset) -> String {
    let mut out = String::new();
    let host = ruleset.host.as_deref().unwrap_or("all hosts");
    let _ = writeln!(out, "# palisade policy for {host}");
    let _ = writeln!(out, "table inet {TABLE} {{");
    for set in &ruleset.sets {
        render_set(&mut out, set);
    }
    for chain in &ruleset.chains {
        let _ = writeln!(out, "\tchain {} {{", chain.name);
        if let Some(hook) = chain.hook {
            let policy = if hook.accept { "accept" } else { "drop" };
            let _ = writeln!(
                out,
                "\t\ttype filter hook {} priority filter; policy {policy};",
                hook.name
            );
        }
        for rule in &chain.rules {
            let _ = writeln!(out, "\t\t{}", rule_text(ruleset, rule));
        }
        let _ = writeln!(out, "\t}}");
    }
    let _ = writeln!(out, "}}");
    out
}

/// One rule as nft text. `palisade-nft`'s JSON printer turns the same rules into JSON.
pub fn rule_text(ruleset: &Ruleset, rule: &ChainRule) -> String {
    match rule {
        ChainRule::AcceptEstablished(mark) => {
            let comment = match mark {
                Mark::Generation => format!("palisade generation {}", ruleset.generation),
                Mark::Baseline => BASELINE_MARK.to_owned(),
            };
            format!("ct state established,related accept comment \"{comment}\"")
        }
        ChainRule::DropInvalid => "ct state invalid counter drop".to_owned(),
        ChainRule::AcceptNeighbourDiscovery { redirect } => format!(
            "icmpv6 type {{ {} }} accept",
            neighbour_discovery(*redirect).join(", ")
        ),
        ChainRule::Lookup {
            set,
            guard,
            verdict,
        } => {
            let s = &ruleset.sets[set.0];
            let verdict = match verdict {
                Lookup::Log(prefix) => format!("log prefix \"{prefix}\""),
                Lookup::Deny => "counter drop".to_owned(),
                Lookup::Allow => "accept".to_owned(),
                Lookup::Pass => "return".to_owned(),
            };
            let guard = match (s.outside, guard) {
                (Some(end), Some(g)) => format!(
                    "{} {} != @{} ",
                    ip_of(s.family),
                    end_field(end),
                    ruleset.sets[g.0].name
                ),
                _ => String::new(),
            };
            format!("{guard}{} @{} {verdict}", key_expr(s.family, s.key), s.name)
        }
        ChainRule::DropLocal { set, source } => {
            let s = &ruleset.sets[set.0];
            let field = if *source { "saddr" } else { "daddr" };
            format!("{} {field} @{} counter drop", ip_of(s.family), s.name)
        }
        ChainRule::Jump(chain) => format!("jump {}", ruleset.chains[chain.0].name),
        ChainRule::ReturnEstablished => "ct state established,related return".to_owned(),
        ChainRule::JumpIf { set, source, chain } => {
            let s = &ruleset.sets[set.0];
            let field = if *source { "saddr" } else { "daddr" };
            format!(
                "{} {field} @{} jump {}",
                ip_of(s.family),
                s.name,
                ruleset.chains[chain.0].name
            )
        }
        ChainRule::Drop => "counter drop".to_owned(),
    }
}

/// The ICMPv6 types of neighbour discovery, with redirects or without.
pub fn neighbour_discovery(redirect: bool) -> Vec<&'static str> {
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

/// The packet field of an end of a tuple.
pub fn end_field(end: OutsideEnd) -> &'static str {
    match end {
        OutsideEnd::Src => "saddr",
        OutsideEnd::Dst => "daddr",
    }
}

/// nft's name for a family's address header: `ip` or `ip6`.
pub fn ip_of(family: Family) -> &'static str {
    match family {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    }
}

/// The suffix of a family's set names: `v4` or `v6`.
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

pub(crate) fn key_expr(family: Family, key: Key) -> String {
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

/// One set element as nft writes it: the parts `key` names, in key order, joined by ` . `.
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
