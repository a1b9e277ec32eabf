//! A compiled [`Ruleset`] as nftables JSON, built with the `nftables` crate: the form `policy
//! apply` sends in one transaction. It mirrors `render.rs` rule for rule.
//!
//! Crate gaps minded here: CIDRs are `Prefix` expressions (a CIDR string is taken for a host name),
//! ranges are `Range` expressions, and no named verdict map is used (the crate cannot read one
//! back).

use std::borrow::Cow;
use std::collections::HashSet;

use nftables::expr::{
    Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, Prefix, Range, SetItem, CT,
};
use nftables::schema::{
    Chain, NfCmd, NfListObject, NfObject, Nftables, Rule, Set, SetFlag, SetType, SetTypeValue,
    Table,
};
use nftables::stmt::{Counter, JumpTarget, Log, Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use palisade_policy::addrs::{from_u128, prefix_len, Family};
use palisade_policy::compile::{
    proto_name, ChainRule, Element, Key, Lookup, Mark, Ruleset, SetDef, SetId, BASELINE_MARK, TABLE,
};
use palisade_policy::render::{end_field, ip_of, neighbour_discovery};

/// The `add` commands that create the table, its sets and its chains.
pub fn nft_json(ruleset: &Ruleset) -> Nftables<'static> {
    let mut objects: Vec<NfObject<'static>> = vec![add(NfListObject::Table(Table {
        family: NfFamily::INet,
        name: TABLE.into(),
        handle: None,
    }))];
    for set in &ruleset.sets {
        objects.push(add(NfListObject::Set(Box::new(set_object(set)))));
    }
    // Every chain before any rule: a rule may jump to a chain declared after its own.
    for chain in &ruleset.chains {
        let hook = chain.hook;
        objects.push(add(NfListObject::Chain(Chain {
            family: NfFamily::INet,
            table: TABLE.into(),
            name: chain.name.clone().into(),
            newname: None,
            handle: None,
            _type: hook.map(|_| NfChainType::Filter),
            hook: hook.map(|h| match h.name {
                "input" => NfHook::Input,
                "forward" => NfHook::Forward,
                _ => NfHook::Output,
            }),
            prio: hook.map(|_| 0),
            dev: None,
            policy: hook.map(|h| {
                if h.accept {
                    NfChainPolicy::Accept
                } else {
                    NfChainPolicy::Drop
                }
            }),
        })));
    }
    for chain in &ruleset.chains {
        for r in &chain.rules {
            let (statements, comment) = rule_statements(ruleset, r);
            objects.push(rule(&chain.name, statements, comment));
        }
    }
    Nftables {
        objects: Cow::Owned(objects),
    }
}

fn add(object: NfListObject<'static>) -> NfObject<'static> {
    NfObject::CmdObject(NfCmd::Add(object))
}

fn rule(chain: &str, expr: Vec<Statement<'static>>, comment: Option<String>) -> NfObject<'static> {
    add(NfListObject::Rule(Rule {
        family: NfFamily::INet,
        table: TABLE.into(),
        chain: chain.to_owned().into(),
        expr: Cow::Owned(expr),
        handle: None,
        index: None,
        comment: comment.map(Cow::Owned),
    }))
}

fn payload(protocol: &str, field: &str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.to_owned().into(),
            field: field.to_owned().into(),
        },
    )))
}

fn matches(
    left: Expression<'static>,
    right: Expression<'static>,
    op: Operator,
) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}

fn ct_state() -> Expression<'static> {
    Expression::Named(NamedExpression::CT(CT {
        key: "state".into(),
        family: None,
        dir: None,
    }))
}

fn string(s: &str) -> Expression<'static> {
    Expression::String(s.to_owned().into())
}

fn counter() -> Statement<'static> {
    Statement::Counter(Counter::Anonymous(None))
}

fn key_expression(family: Family, key: Key) -> Expression<'static> {
    let ip = ip_of(family);
    let mut parts = Vec::new();
    if key.src {
        parts.push(payload(ip, "saddr"));
    }
    if key.dst {
        parts.push(payload(ip, "daddr"));
    }
    if key.proto {
        parts.push(Expression::Named(NamedExpression::Meta(Meta {
            key: MetaKey::L4proto,
        })));
    }
    if key.port {
        parts.push(payload("th", "dport"));
    }
    if parts.len() == 1 {
        parts.pop().expect("one part")
    } else {
        Expression::Named(NamedExpression::Concat(parts))
    }
}

/// One rule as JSON statements and its comment; `render::rule_text` is the same rule as text.
fn rule_statements(
    ruleset: &Ruleset,
    rule: &ChainRule,
) -> (Vec<Statement<'static>>, Option<String>) {
    match rule {
        ChainRule::AcceptEstablished(mark) => (
            vec![
                matches(
                    ct_state(),
                    Expression::List(vec![string("established"), string("related")]),
                    Operator::IN,
                ),
                Statement::Accept(None),
            ],
            Some(match mark {
                Mark::Generation => format!("palisade generation {}", ruleset.generation),
                Mark::Baseline => BASELINE_MARK.to_owned(),
            }),
        ),
        ChainRule::DropInvalid => (
            vec![
                matches(ct_state(), string("invalid"), Operator::IN),
                counter(),
                Statement::Drop(None),
            ],
            None,
        ),
        ChainRule::AcceptNeighbourDiscovery { redirect } => (
            vec![
                matches(
                    payload("icmpv6", "type"),
                    Expression::Named(NamedExpression::Set(
                        neighbour_discovery(*redirect)
                            .iter()
                            .map(|t| SetItem::Element(string(t)))
                            .collect(),
                    )),
                    Operator::EQ,
                ),
                Statement::Accept(None),
            ],
            None,
        ),
        ChainRule::Lookup {
            set,
            guard,
            verdict,
        } => {
            let s = &ruleset.sets[set.0];
            let mut statements = Vec::new();
            if let (Some(end), Some(g)) = (s.outside, guard) {
                statements.push(matches(
                    payload(ip_of(s.family), end_field(end)),
                    string(&format!("@{}", ruleset.sets[g.0].name)),
                    Operator::NEQ,
                ));
            }
            statements.push(matches(
                key_expression(s.family, s.key),
                string(&format!("@{}", s.name)),
                Operator::EQ,
            ));
            match verdict {
                Lookup::Log(prefix) => statements.push(Statement::Log(Some(Log {
                    prefix: Some((*prefix).into()),
                    ..Log::new(None)
                }))),
                Lookup::Deny => statements.extend([counter(), Statement::Drop(None)]),
                Lookup::Allow => statements.push(Statement::Accept(None)),
                Lookup::Pass => statements.push(Statement::Return(None)),
            }
            (statements, None)
        }
        ChainRule::DropLocal { set, source } => (
            vec![
                address_in(ruleset, *set, *source),
                counter(),
                Statement::Drop(None),
            ],
            None,
        ),
        ChainRule::Jump(chain) => (
            vec![Statement::Jump(JumpTarget {
                target: ruleset.chains[chain.0].name.clone().into(),
            })],
            None,
        ),
        ChainRule::ReturnEstablished => (
            vec![
                matches(
                    ct_state(),
                    Expression::List(vec![string("established"), string("related")]),
                    Operator::IN,
                ),
                Statement::Return(None),
            ],
            None,
        ),
        ChainRule::JumpIf { set, source, chain } => (
            vec![
                address_in(ruleset, *set, *source),
                Statement::Jump(JumpTarget {
                    target: ruleset.chains[chain.0].name.clone().into(),
                }),
            ],
            None,
        ),
        ChainRule::Drop => (vec![counter(), Statement::Drop(None)], None),
    }
}

/// `ip saddr @set` (or `daddr`, or the `ip6` forms): the packet's address is in an address set.
fn address_in(ruleset: &Ruleset, set: SetId, source: bool) -> Statement<'static> {
    let s = &ruleset.sets[set.0];
    let field = if source { "saddr" } else { "daddr" };
    matches(
        payload(ip_of(s.family), field),
        string(&format!("@{}", s.name)),
        Operator::EQ,
    )
}

fn set_object(set: &SetDef) -> Set<'static> {
    let addr = match set.family {
        Family::V4 => SetType::Ipv4Addr,
        Family::V6 => SetType::Ipv6Addr,
    };
    let mut types = Vec::new();
    if set.key.src {
        types.push(addr);
    }
    if set.key.dst {
        types.push(addr);
    }
    if set.key.proto {
        types.push(SetType::InetProto);
    }
    if set.key.port {
        types.push(SetType::InetService);
    }
    let set_type = if types.len() == 1 {
        SetTypeValue::Single(types[0])
    } else {
        SetTypeValue::Concatenated(Cow::Owned(types))
    };
    let elements: Vec<Expression<'static>> = set
        .elements
        .iter()
        .map(|e| element(set.family, set.key, e))
        .collect();
    Set {
        family: NfFamily::INet,
        table: TABLE.into(),
        name: set.name.clone().into(),
        handle: None,
        set_type,
        policy: None,
        flags: Some(HashSet::from([SetFlag::Interval])),
        elem: (!elements.is_empty()).then_some(Cow::Owned(elements)),
        timeout: None,
        gc_interval: None,
        size: None,
        comment: None,
    }
}

/// An address range as a `Prefix` (or a plain address) when it is one, a `Range` otherwise.
fn address(family: Family, (a, b): (u128, u128)) -> Expression<'static> {
    let first = string(&from_u128(family, a).to_string());
    match prefix_len(family, a, b) {
        Some(len) if u128::from(len) == full_len(family) => first,
        Some(len) => Expression::Named(NamedExpression::Prefix(Prefix {
            addr: Box::new(first),
            len: u32::from(len),
        })),
        None => Expression::Range(Box::new(Range {
            range: [first, string(&from_u128(family, b).to_string())],
        })),
    }
}

fn full_len(family: Family) -> u128 {
    match family {
        Family::V4 => 32,
        Family::V6 => 128,
    }
}

fn element(family: Family, key: Key, e: &Element) -> Expression<'static> {
    let mut parts = Vec::new();
    if key.src {
        parts.push(address(family, e.src));
    }
    if key.dst {
        parts.push(address(family, e.dst));
    }
    if key.proto {
        parts.push(string(proto_name(e.proto)));
    }
    if key.port {
        parts.push(if e.ports.first == e.ports.last {
            Expression::Number(u32::from(e.ports.first))
        } else {
            Expression::Range(Box::new(Range {
                range: [
                    Expression::Number(u32::from(e.ports.first)),
                    Expression::Number(u32::from(e.ports.last)),
                ],
            }))
        });
    }
    if parts.len() == 1 {
        parts.pop().expect("one part")
    } else {
        Expression::Named(NamedExpression::Concat(parts))
    }
}
