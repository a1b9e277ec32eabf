//! What is legal but suspicious in a policy: `palisade policy check` prints these as warnings
//! (exit 0 unless `--strict`).

use std::collections::HashMap;
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

/// Whether deny rule `d` matches everything allow rule `rule` could: every source and
/// destination of the allow is among the deny's, the deny's protocol covers the allow's, and its
/// ports (if it names any) cover the allow's.
fn shadows(d: &crate::model::Rule, rule: &crate::model::Rule) -> bool {
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

    // Rules that can never match, or that a deny above or below always wins over. A deny can
    // shadow an allow only if its `from` holds the allow's first source: the denies are indexed
    // by each of their sources, so each allow is compared with a few candidates, in file order,
    // not with every rule (quadratic at 100,000 rules).
    let mut denies_from: HashMap<SegmentRef, Vec<&crate::model::Rule>> = HashMap::new();
    for d in policy.rules.iter().filter(|d| d.action == Action::Deny) {
        let mut sources = d.from.clone();
        sources.sort_unstable();
        sources.dedup();
        for f in sources {
            denies_from.entry(f).or_default().push(d);
        }
    }
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
            let candidates = rule
                .from
                .first()
                .and_then(|f| denies_from.get(f))
                .map_or(&[][..], Vec::as_slice);
            if let Some(deny) = candidates.iter().find(|d| shadows(d, rule)) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The shadowing check as first written: every allow against every rule, in file order
    /// (the index only chooses which denies to compare; `shadows` is the comparison).
    fn shadowed_pairwise(policy: &Policy) -> Vec<(String, String)> {
        let only_outside = |refs: &[SegmentRef]| refs.iter().all(|r| *r == SegmentRef::Outside);
        policy
            .rules
            .iter()
            // Outside to outside gets its own warning ("no effect") instead.
            .filter(|r| {
                r.action == Action::Allow && !(only_outside(&r.from) && only_outside(&r.to))
            })
            .filter_map(|r| {
                policy
                    .rules
                    .iter()
                    .find(|d| shadows(d, r))
                    .map(|d| (r.name.clone(), d.name.clone()))
            })
            .collect()
    }

    #[test]
    fn indexed_shadowing_equals_every_pair_compared() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut below = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let mut found = 0;
        for _ in 0..300 {
            let mut text = String::from("version: 1\ntrust_domain: x.org\nsegments:\n");
            for s in 0..4 {
                text += &format!("  s{s}: {{addresses: [10.{s}.0.0/16]}}\n");
            }
            text += "rules:\n";
            for r in 0..2 + below(12) {
                let mut side = || {
                    let names = ["s0", "s1", "s2", "s3", "outside"];
                    let a = names[below(5) as usize];
                    if below(3) == 0 {
                        let b = names[below(5) as usize];
                        if a == b {
                            a.to_owned()
                        } else {
                            format!("[{a}, {b}]")
                        }
                    } else {
                        a.to_owned()
                    }
                };
                let (from, to) = (side(), side());
                let action = if below(2) == 0 { "deny" } else { "allow" };
                let traffic = match below(4) {
                    0 => "protocol: any".to_owned(),
                    1 => "protocol: tcp".to_owned(),
                    2 => format!(
                        "protocol: tcp, ports: [{}]",
                        ["80", "80-90", "443"][below(3) as usize]
                    ),
                    _ => "protocol: udp, ports: [53]".to_owned(),
                };
                text += &format!(
                    "  - {{name: r{r}, from: {from}, to: {to}, action: {action}, {traffic}}}\n"
                );
            }
            let policy =
                crate::load_str(&text, "p.yaml".as_ref()).unwrap_or_else(|e| panic!("{e}\n{text}"));
            let expected = shadowed_pairwise(&policy);
            let got: Vec<(String, String)> = lint(&policy)
                .into_iter()
                .filter_map(|w| {
                    let rest = w.message.strip_prefix("rule `")?;
                    let (rule, rest) = rest.split_once('`')?;
                    let deny = rest
                        .strip_prefix(" is shadowed by deny rule `")?
                        .split_once('`')?
                        .0;
                    Some((rule.to_owned(), deny.to_owned()))
                })
                .collect();
            assert_eq!(got, expected, "{text}");
            found += expected.len();
        }
        assert!(found > 50, "only {found} shadowed rules generated");
    }
}
