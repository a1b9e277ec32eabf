//! A compiled [`Ruleset`] as nftables JSON, built with the `nftables` crate: the form `policy
//! apply` sends in one transaction. It spells the parts of `parts.rs`, as `text.rs` does in text.
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
use nftables::stmt::{self, Counter, JumpTarget, Log, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use palisade_policy::addrs::{Family, RangeForm};
use palisade_policy::compile::{ChainRule, Element, Key, Ruleset, SetDef, TABLE};

use crate::parts::{element_values, fields, rule_parts, Action, Field, Match, Value};

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
    Statement::Match(stmt::Match { left, right, op })
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

/// Several expressions as one `concat`; a single one as itself.
fn concat(mut parts: Vec<Expression<'static>>) -> Expression<'static> {
    if parts.len() == 1 {
        parts.pop().expect("one part")
    } else {
        Expression::Named(NamedExpression::Concat(parts))
    }
}

/// The packet fields of a key, concatenated.
fn key_expression(family: Family, key: Key) -> Expression<'static> {
    concat(
        fields(key)
            .map(|f| match f {
                Field::L4proto => Expression::Named(NamedExpression::Meta(Meta {
                    key: MetaKey::L4proto,
                })),
                _ => {
                    let (protocol, field) = f.names(family);
                    payload(protocol, field)
                }
            })
            .collect(),
    )
}

/// One rule as JSON statements and its comment: the parts of `parts.rs`, as `text.rs` spells them
/// in text.
fn rule_statements(
    ruleset: &Ruleset,
    rule: &ChainRule,
) -> (Vec<Statement<'static>>, Option<String>) {
    let parts = rule_parts(ruleset, rule);
    let mut statements: Vec<Statement<'static>> =
        parts.matches.iter().map(match_statement).collect();
    statements.extend(parts.actions.iter().map(action_statement));
    (statements, parts.comment)
}

fn match_statement(m: &Match<'_>) -> Statement<'static> {
    match m {
        Match::CtState([state]) => matches(ct_state(), string(state), Operator::IN),
        Match::CtState(states) => matches(
            ct_state(),
            Expression::List(states.iter().map(|s| string(s)).collect()),
            Operator::IN,
        ),
        Match::Icmpv6Type(types) => matches(
            payload("icmpv6", "type"),
            Expression::Named(NamedExpression::Set(
                types.iter().map(|t| SetItem::Element(string(t))).collect(),
            )),
            Operator::EQ,
        ),
        Match::InSet {
            family,
            key,
            set,
            negated,
        } => matches(
            key_expression(*family, *key),
            string(&format!("@{set}")),
            if *negated {
                Operator::NEQ
            } else {
                Operator::EQ
            },
        ),
    }
}

fn action_statement(a: &Action<'_>) -> Statement<'static> {
    match a {
        Action::Counter => Statement::Counter(Counter::Anonymous(None)),
        Action::Log(prefix) => Statement::Log(Some(Log {
            prefix: Some((*prefix).into()),
            ..Log::new(None)
        })),
        Action::Accept => Statement::Accept(None),
        Action::Drop => Statement::Drop(None),
        Action::Return => Statement::Return(None),
        Action::Jump(chain) => Statement::Jump(JumpTarget {
            target: (*chain).to_owned().into(),
        }),
    }
}

fn set_object(set: &SetDef) -> Set<'static> {
    let types: Vec<SetType> = fields(set.key)
        .map(|f| match (f, set.family) {
            (Field::Saddr | Field::Daddr, Family::V4) => SetType::Ipv4Addr,
            (Field::Saddr | Field::Daddr, Family::V6) => SetType::Ipv6Addr,
            (Field::L4proto, _) => SetType::InetProto,
            (Field::Dport, _) => SetType::InetService,
        })
        .collect();
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

/// One element: its values for the key's fields, concatenated.
fn element(family: Family, key: Key, e: &Element) -> Expression<'static> {
    concat(
        element_values(family, key, e)
            .map(|v| match v {
                Value::Addresses(form) => address(form),
                Value::Proto(name) => string(name),
                Value::Port(port) => Expression::Number(u32::from(port)),
                Value::Ports(first, last) => Expression::Range(Box::new(Range {
                    range: [
                        Expression::Number(u32::from(first)),
                        Expression::Number(u32::from(last)),
                    ],
                })),
            })
            .collect(),
    )
}

/// Addresses as a plain address, a `Prefix` or a `Range` (a CIDR string would be taken for a host
/// name).
fn address(form: RangeForm) -> Expression<'static> {
    match form {
        RangeForm::Address(a) => string(&a.to_string()),
        RangeForm::Prefix(a, len) => Expression::Named(NamedExpression::Prefix(Prefix {
            addr: Box::new(string(&a.to_string())),
            len: u32::from(len),
        })),
        RangeForm::Span(a, b) => Expression::Range(Box::new(Range {
            range: [string(&a.to_string()), string(&b.to_string())],
        })),
    }
}
