//! The sidecar's half of the policy: which peer identities a workload admits on a port.
//!
//! A peer is admitted to workload W on port P when some segment holding the peer's identity may
//! reach some segment holding W's identity on P over TCP, by the same decision as `explain`.
//! Because identities are patterns, the answer is a list of patterns: those of every segment whose
//! members may connect.

use palisade_ca::{IdPattern, SpiffeId};

use crate::explain::decide_segments;
use crate::model::{Endpoint, Policy, Protocol};

/// The identity patterns admitted to `own` on TCP `port`, in policy order, without duplicates.
pub fn admitted_identities(policy: &Policy, own: &SpiffeId, port: u16) -> Vec<IdPattern> {
    let own_segments = policy.segments_of(&Endpoint::Identity(own.clone()));
    let mut out: Vec<IdPattern> = Vec::new();
    for (index, segment) in policy.segments.iter().enumerate() {
        let admitted = own_segments
            .iter()
            .any(|&dst| decide_segments(policy, &[index], &[dst], Protocol::Tcp, Some(port)).0);
        if !admitted {
            continue;
        }
        for (pattern, _) in &segment.identities {
            if !out.contains(pattern) {
                out.push(pattern.clone());
            }
        }
    }
    out
}
