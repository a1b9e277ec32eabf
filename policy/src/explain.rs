//! The policy's meaning, as one function: may this source reach this destination with this
//! protocol and port, and which rule (or default) decides? `palisade policy explain` prints it,
//! and the end-to-end tests compare the kernel's behaviour against it, cell by cell.
//!
//! Order of decision (docs/POLICY.md):
//! 1. traffic between two addresses outside every segment is not governed by the policy: allowed
//!    (no host's table holds rules for it, so no rule may claim it either); between two
//!    identities in no segment it is denied (a sidecar admitting by the policy governs every
//!    identity it is asked about, and admits only whom the policy places and allows);
//! 2. a matching `deny` rule denies (deny beats allow);
//! 3. two ends that share a segment are allowed (a segment trusts its members);
//! 4. a matching `allow` rule allows;
//! 5. a destination outside every segment is allowed if a source segment has `egress_to_outside`;
//! 6. everything else is denied.

use std::fmt;

use crate::model::{Action, Endpoint, Policy, Protocol, SegmentRef};

/// What decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// A rule matched: the first matching deny rule, else the first matching allow rule.
    Rule {
        /// The rule's name.
        name: String,
        /// The line its entry starts on.
        line: usize,
    },
    /// Both ends are in this segment, and no deny rule matched.
    SameSegment(String),
    /// The destination is in no segment, and this segment of the source has `egress_to_outside`.
    EgressToOutside(String),
    /// Both ends are addresses in no segment: the policy does not govern it, so it is allowed.
    NotGoverned,
    /// Neither identity is in a segment: a sidecar that admits by the policy refuses it.
    IdentitiesInNoSegment,
    /// No rule allowed it.
    DefaultDeny,
}

/// The answer for one connection: allowed or not, what decided, and where each end sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the connection may be made.
    pub allowed: bool,
    /// What decided.
    pub reason: Reason,
    /// Segments of each end (`outside` when in none).
    pub from_segments: Vec<String>,
    /// Segments of the destination (`outside` when in none).
    pub to_segments: Vec<String>,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.allowed { "allowed" } else { "denied" };
        let why = match &self.reason {
            Reason::Rule { name, line } => format!("by rule `{name}` (line {line})"),
            Reason::SameSegment(s) => format!("within segment `{s}`"),
            Reason::EgressToOutside(s) => {
                format!("because segment `{s}` may reach addresses outside every segment")
            }
            Reason::NotGoverned => "because neither end is in a segment".into(),
            Reason::IdentitiesInNoSegment => {
                "because neither identity is in a segment (a sidecar admits only whom the policy places)".into()
            }
            Reason::DefaultDeny => "by default: no rule allows it".into(),
        };
        write!(f, "{verdict} {why}")
    }
}

/// Decides one connection. `port` is ignored for protocols without ports.
pub fn decide(
    policy: &Policy,
    from: &Endpoint,
    to: &Endpoint,
    protocol: Protocol,
    port: Option<u16>,
) -> Decision {
    let src = policy.segments_of(from);
    let dst = policy.segments_of(to);
    let identities = matches!(from, Endpoint::Identity(_)) || matches!(to, Endpoint::Identity(_));
    let (allowed, reason) = if identities && src.is_empty() && dst.is_empty() {
        (false, Reason::IdentitiesInNoSegment)
    } else {
        decide_segments(policy, &src, &dst, protocol, port)
    };
    let names = |segs: &[usize]| -> Vec<String> {
        if segs.is_empty() {
            vec![crate::OUTSIDE.to_owned()]
        } else {
            segs.iter()
                .map(|&i| policy.segments[i].name.clone())
                .collect()
        }
    };
    Decision {
        allowed,
        reason,
        from_segments: names(&src),
        to_segments: names(&dst),
    }
}

/// The decision for traffic from an address in segments `src` to an address in segments `dst`
/// (empty: outside every segment). [`decide`] adds the one rule that differs for identities.
pub fn decide_segments(
    policy: &Policy,
    src: &[usize],
    dst: &[usize],
    protocol: Protocol,
    port: Option<u16>,
) -> (bool, Reason) {
    let refs = |segs: &[usize]| -> Vec<SegmentRef> {
        if segs.is_empty() {
            vec![SegmentRef::Outside]
        } else {
            segs.iter().map(|&i| SegmentRef::Segment(i)).collect()
        }
    };
    if src.is_empty() && dst.is_empty() {
        return (true, Reason::NotGoverned);
    }
    let (src_refs, dst_refs) = (refs(src), refs(dst));
    let port = if protocol.has_ports() { port } else { None };
    let matching = |action: Action| {
        policy.rules.iter().find(|r| {
            r.action == action
                && r.from.iter().any(|f| src_refs.contains(f))
                && r.to.iter().any(|t| dst_refs.contains(t))
                && r.matches_traffic(protocol, port)
        })
    };
    let by_rule = |rule: &crate::model::Rule| Reason::Rule {
        name: rule.name.clone(),
        line: rule.pos.line,
    };
    if let Some(rule) = matching(Action::Deny) {
        return (false, by_rule(rule));
    }
    if let Some(&shared) = src.iter().find(|s| dst.contains(s)) {
        return (
            true,
            Reason::SameSegment(policy.segments[shared].name.clone()),
        );
    }
    if let Some(rule) = matching(Action::Allow) {
        return (true, by_rule(rule));
    }
    if dst.is_empty() {
        if let Some(&s) = src.iter().find(|&&s| policy.segments[s].egress_to_outside) {
            return (
                true,
                Reason::EgressToOutside(policy.segments[s].name.clone()),
            );
        }
        if src.is_empty() {
            return (true, Reason::NotGoverned);
        }
    }
    (false, Reason::DefaultDeny)
}
