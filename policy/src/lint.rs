//! What is legal but suspicious in a policy: `palisade policy check` prints these as warnings
//! (exit 0 unless `--strict`).

use std::fmt;

use crate::addrs::Addrs;
use crate::model::{Action, Policy, Pos, SegmentRef};

/// Something legal but suspicious in a policy, and where it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Where it is written.
    pub pos: Pos,
    /// One sentence: what looks wrong and why.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: warning: {}",
            self.pos.line, self.pos.column, self.message
        )
    }
}

/// Every warning about `policy`, sorted by position; empty when nothing looks wrong.
pub fn lint(policy: &Policy) -> Vec<Warning> {
    let mut out = Vec::new();
    let warn = |out: &mut Vec<Warning>, pos, message: String| out.push(Warning { pos, message });
    let segs = &policy.segments;

    // Overlapping segments: an address or identity in two segments is trusted by both, and
    // a deny rule of either applies to it.
    for ((i, j), both) in crate::overlap::address_overlaps(policy) {
        warn(
            &mut out,
            segs[j].pos,
            format!(
                "segments `{}` and `{}` overlap ({}); their common addresses belong to both",
                segs[i].name,
                segs[j].name,
                describe(&both)
            ),
        );
    }
    for ((i, j), (p, q)) in crate::overlap::identity_overlaps(policy) {
        warn(
            &mut out,
            segs[j].pos,
            format!(
                "segments `{}` and `{}` have overlapping identity patterns (`{p}` and `{q}`); an identity matching both belongs to both, and a deny rule of either applies to it",
                segs[i].name, segs[j].name
            ),
        );
    }
    for a in segs {
        if a.members.is_empty() && !a.addresses.is_empty() {
            warn(
                &mut out,
                a.pos,
                format!("segment `{}`: `except` removes every address", a.name),
            );
        }
    }

    // Rules that can never match, or that a deny above or below always wins over.
    for rule in &policy.rules {
        let empty = |refs: &[SegmentRef]| {
            refs.iter().all(|r| match r {
                SegmentRef::Segment(i) => {
                    segs[*i].members.is_empty() && segs[*i].identities.is_empty()
                }
                SegmentRef::Outside => false,
            })
        };
        let only_outside = |refs: &[SegmentRef]| refs.iter().all(|r| *r == SegmentRef::Outside);
        if only_outside(&rule.from) && only_outside(&rule.to) {
            warn(
                &mut out,
                rule.pos,
                format!(
                    "rule `{}` is from `outside` to `outside`: traffic between addresses in no segment is not governed by the policy, so the rule has no effect",
                    rule.name
                ),
            );
            continue;
        }
        if empty(&rule.from) || empty(&rule.to) {
            warn(
                &mut out,
                rule.pos,
                format!(
                    "rule `{}` can never match: one side has no addresses or identities",
                    rule.name
                ),
            );
            continue;
        }
        if rule.action == Action::Allow {
            // Only `from: [x]` to `to: [x]`: with two segments on a side, the rule also allows
            // traffic between them, which is not allowed anyway.
            if rule.from.len() == 1 && rule.from == rule.to && rule.from[0] != SegmentRef::Outside {
                warn(
                    &mut out,
                    rule.pos,
                    format!(
                        "rule `{}` only allows traffic within its own segments, which is allowed anyway",
                        rule.name
                    ),
                );
            }
            if let Some(deny) = policy.rules.iter().find(|d| {
                d.action == Action::Deny
                    && rule.from.iter().all(|f| d.from.contains(f))
                    && rule.to.iter().all(|t| d.to.contains(t))
                    && d.protocol.covers(rule.protocol)
                    && (d.ports.is_empty()
                        || (!rule.ports.is_empty()
                            && rule.ports.iter().all(|p| {
                                d.ports
                                    .iter()
                                    .any(|q| q.first <= p.first && p.last <= q.last)
                            })))
            }) {
                warn(
                    &mut out,
                    rule.pos,
                    format!(
                        "rule `{}` is shadowed by deny rule `{}` (line {}): it can never allow anything",
                        rule.name, deny.name, deny.pos.line
                    ),
                );
            }
        }
    }

    // Segments no rule, host or egress setting uses (marked in one pass: asking every rule and
    // host about every segment is quadratic at many segments).
    let mut used = vec![false; segs.len()];
    let refs = policy.rules.iter().flat_map(|r| r.from.iter().chain(&r.to));
    for r in refs {
        if let SegmentRef::Segment(i) = r {
            used[*i] = true;
        }
    }
    for &i in policy.hosts.iter().flat_map(|h| &h.segments) {
        used[i] = true;
    }
    for (s, used) in segs.iter().zip(used) {
        if !used && !s.egress_to_outside {
            warn(
                &mut out,
                s.pos,
                format!("segment `{}` is used by no rule and no host", s.name),
            );
        }
    }
    out.sort_by_key(|w| w.pos);
    out
}

fn describe(addrs: &Addrs) -> String {
    let mut parts = Vec::new();
    for family in [crate::addrs::Family::V4, crate::addrs::Family::V6] {
        for &r in addrs.get(family).ranges().iter().take(3) {
            parts.push(crate::addrs::range_text(family, r));
        }
    }
    parts.join(", ")
}
