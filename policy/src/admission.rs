//! The sidecar's half of the policy: may this peer open a TCP connection to this workload on this
//! port?
//!
//! The answer is [`decide`] for the two identities, nothing else: a peer whose ID sits in two
//! segments is denied when a deny rule matches either of them, exactly as `palisade policy explain`
//! says. (An earlier version turned the policy into a list of admitted patterns, segment by
//! segment, and so admitted IDs that a deny rule of another of their segments refused.)
//!
//! Deciding walks every segment's patterns and the rules, so [`Admission`] remembers each peer ID's
//! answer. An `Admission` belongs to one loaded policy (one generation): a new policy gets a new
//! `Admission` and so an empty memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use palisade_identity::{AuthorizeId, SpiffeId};

use crate::explain::{decide, Decision};
use crate::model::{Endpoint, Policy, Protocol};

/// Peer IDs remembered per admission. Only peers whose chain verified reach the question, so the
/// memory fills only with IDs our CA issued; past this many it starts over rather than grow.
const REMEMBERED_PEERS: usize = 4096;

/// Who may reach workload `own` on TCP `port`, by one policy.
pub struct Admission {
    policy: Arc<Policy>,
    own: SpiffeId,
    port: u16,
    decided: Mutex<HashMap<SpiffeId, bool>>,
}

impl Admission {
    /// Decides, by `policy`, who may reach workload `own` on TCP `port`; remembers nothing yet.
    pub fn new(policy: Arc<Policy>, own: SpiffeId, port: u16) -> Self {
        Admission {
            policy,
            own,
            port,
            decided: Mutex::new(HashMap::new()),
        }
    }

    /// The policy this admission decides by.
    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// The workload whose inbound connections are decided.
    pub fn own(&self) -> &SpiffeId {
        &self.own
    }

    /// The TCP port peers connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The full decision, with the rule that made it (not remembered).
    pub fn decide(&self, peer: &SpiffeId) -> Decision {
        decide(
            &self.policy,
            &Endpoint::Identity(peer.clone()),
            &Endpoint::Identity(self.own.clone()),
            Protocol::Tcp,
            Some(self.port),
        )
    }

    /// Whether `peer` is admitted; the same answer as [`Admission::decide`], remembered.
    pub fn admits(&self, peer: &SpiffeId) -> bool {
        if let Some(&known) = self.remembered().get(peer) {
            return known;
        }
        let allowed = self.decide(peer).allowed;
        let mut decided = self.remembered();
        if decided.len() >= REMEMBERED_PEERS {
            decided.clear();
        }
        decided.insert(peer.clone(), allowed);
        allowed
    }
}

impl Admission {
    fn remembered(&self) -> std::sync::MutexGuard<'_, HashMap<SpiffeId, bool>> {
        // A panic elsewhere while holding the lock leaves a map that is still correct.
        self.decided
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("own", &self.own.as_str())
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl AuthorizeId for Admission {
    fn authorize(&self, peer: &SpiffeId) -> bool {
        self.admits(peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    /// The review's reproduction: an ID in `frontend` (allowed) and in `ops` (denied) is denied.
    #[test]
    fn deny_of_one_segment_beats_allow_of_another() {
        let policy = crate::load_str(
            "version: 1
trust_domain: example.org
segments:
  frontend: { identities: [\"spiffe://example.org/ns/*/sa/frontend\"] }
  ops: { identities: [\"spiffe://example.org/ns/ops/**\"] }
  payments: { identities: [spiffe://example.org/ns/shop/sa/payments] }
rules:
  - { name: web, from: frontend, to: payments, protocol: tcp, ports: [7443] }
  - { name: no-ops, from: ops, to: payments, action: deny }
",
            "p.yaml".as_ref(),
        )
        .unwrap();
        let admission = Admission::new(
            Arc::new(policy),
            id("spiffe://example.org/ns/shop/sa/payments"),
            7443,
        );
        assert!(admission.admits(&id("spiffe://example.org/ns/shop/sa/frontend")));
        let both = id("spiffe://example.org/ns/ops/sa/frontend");
        assert!(!admission.admits(&both));
        assert!(!admission.admits(&both), "remembered the same way");
        assert!(admission.decide(&both).to_string().contains("no-ops"));
    }

    #[test]
    fn identities_in_no_segment_are_refused() {
        let policy = crate::load_str(
            "version: 1\ntrust_domain: example.org\nsegments:\n  a: { identities: [spiffe://example.org/a] }\n",
            "p.yaml".as_ref(),
        )
        .unwrap();
        let admission = Admission::new(Arc::new(policy), id("spiffe://example.org/me"), 1);
        assert!(!admission.admits(&id("spiffe://example.org/you")));
    }
}
