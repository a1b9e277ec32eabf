//! A compiled [`Ruleset`] as nft text: what `palisade policy compile --format nft` prints and
//! what `nft -c -f` checks. The hook chains and their priorities are public contract
//! (docs/POLICY.md). It spells the parts of `parts.rs`, as `json.rs` does in JSON.

use std::fmt::Write;

use palisade_policy::addrs::Family;
use palisade_policy::compile::{Element, Key, Ruleset, SetDef, TABLE};

use crate::parts::{element_values, fields, rule_parts, Action, Field, Match, Value};

/// The whole table as an `nft -f` script: a comment naming the host, then `table inet palisade`
/// with its sets and chains, tab-indented.
pub fn nft_text(ruleset: &Ruleset) -> String {
    let mut out = String::new();
    let host = ruleset.host.as_deref().unwrap_or("all hosts");
    let _ = writeln!(out, "# palisade policy for {host}");
    let _ = writeln!(out, "table inet {TABLE} {{");
    for set in &ruleset.sets {
        set_text(&mut out, set);
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
            let parts = rule_parts(ruleset, rule);
            let mut words: Vec<String> = parts.matches.iter().map(match_text).collect();
            words.extend(parts.actions.iter().map(action_text));
            if let Some(comment) = parts.comment {
                words.push(format!("comment \"{comment}\""));
            }
            let _ = writeln!(out, "\t\t{}", words.join(" "));
        }
        let _ = writeln!(out, "\t}}");
    }
    let _ = writeln!(out, "}}");
    out
}

fn match_text(m: &Match<'_>) -> String {
    match m {
        Match::CtState(states) => format!("ct state {}", states.join(",")),
        Match::Icmpv6Type(types) => format!("icmpv6 type {{ {} }}", types.join(", ")),
        Match::InSet {
            family,
            key,
            set,
            negated,
        } => {
            let op = if *negated { "!= " } else { "" };
            format!("{} {op}@{set}", key_expr(*family, *key))
        }
    }
}

fn action_text(a: &Action<'_>) -> String {
    match a {
        Action::Counter => "counter".to_owned(),
        Action::Log(prefix) => format!("log prefix \"{prefix}\""),
        Action::Accept => "accept".to_owned(),
        Action::Drop => "drop".to_owned(),
        Action::Return => "return".to_owned(),
        Action::Jump(chain) => format!("jump {chain}"),
    }
}

/// The packet fields of a key, concatenated: `ip saddr . meta l4proto`.
fn key_expr(family: Family, key: Key) -> String {
    fields(key)
        .map(|f| {
            let (protocol, field) = f.names(family);
            format!("{protocol} {field}")
        })
        .collect::<Vec<_>>()
        .join(" . ")
}

/// A set's type: the nft types of its key's fields, concatenated.
fn key_type(family: Family, key: Key) -> String {
    fields(key)
        .map(|f| match (f, family) {
            (Field::Saddr | Field::Daddr, Family::V4) => "ipv4_addr",
            (Field::Saddr | Field::Daddr, Family::V6) => "ipv6_addr",
            (Field::L4proto, _) => "inet_proto",
            (Field::Dport, _) => "inet_service",
        })
        .collect::<Vec<_>>()
        .join(" . ")
}

/// One set element as nft writes it: the values `key` names, in key order, joined by ` . `.
/// Also the notation `apply::diff` compares set elements in.
pub(crate) fn element_text(family: Family, key: Key, e: &Element) -> String {
    element_values(family, key, e)
        .map(|v| match v {
            Value::Addresses(form) => form.to_string(),
            Value::Proto(name) => name.to_owned(),
            Value::Port(port) => port.to_string(),
            Value::Ports(first, last) => format!("{first}-{last}"),
        })
        .collect::<Vec<_>>()
        .join(" . ")
}

fn set_text(out: &mut String, set: &SetDef) {
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
