//! Remembers chains that passed [`crate::verify_svid`], so that a peer reconnecting with the same
//! certificate costs no chain validation (one ECDSA verification and two parses, about a third of
//! the CPU of a full mTLS handshake on each side).
//!
//! Sound because the key is the SHA-256 of the exact bytes presented (and the role), the result of
//! validating the same bytes against the same bundle can only change with time, and the cached
//! validity window is checked on every hit. A cache belongs to one verifier, which belongs to one
//! trust bundle: a new bundle brings new verifiers and empty caches. The TLS handshake still checks
//! the peer's signature with the certificate's key, so possession is proven on every connection.

use std::collections::HashMap;
use std::sync::Mutex;

use aws_lc_rs::digest;
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::svid::{PeerRole, VerifiedSvid};
use crate::SpiffeId;

/// Entries kept at most; past that the cache starts over (cheap, and bounded whatever the load).
const CAPACITY: usize = 4096;

#[derive(Debug, Default)]
pub(crate) struct VerifyCache {
    entries: Mutex<HashMap<[u8; 32], VerifiedSvid>>,
}

pub(crate) type CacheKey = [u8; 32];

impl VerifyCache {
    pub fn key(
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        role: PeerRole,
    ) -> CacheKey {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(&[role as u8]);
        for cert in std::iter::once(end_entity).chain(intermediates) {
            // Length-prefixed, so that no two different chains hash the same input.
            ctx.update(&(cert.len() as u64).to_be_bytes());
            ctx.update(cert);
        }
        ctx.finish()
            .as_ref()
            .try_into()
            .expect("SHA-256 is 32 bytes")
    }

    /// The ID of a chain verified before, if `now` is inside its validity window.
    pub fn get(&self, key: &CacheKey, now: UnixTime) -> Option<SpiffeId> {
        let now = now.as_secs() as i64;
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(key)
            .filter(|v| v.valid_from <= now && now <= v.valid_until)
            .map(|v| v.id.clone())
    }

    pub fn insert(&self, key: CacheKey, verified: VerifiedSvid) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(key, verified);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_secs(secs))
    }

    fn verified(from: i64, until: i64) -> VerifiedSvid {
        VerifiedSvid {
            id: SpiffeId::parse("spiffe://td/w").unwrap(),
            valid_from: from,
            valid_until: until,
        }
    }

    #[test]
    fn hits_only_inside_the_validity_window() {
        let cache = VerifyCache::default();
        let leaf = CertificateDer::from(vec![1u8, 2, 3]);
        let key = VerifyCache::key(&leaf, &[], PeerRole::Client);
        cache.insert(key, verified(100, 200));
        assert!(cache.get(&key, at(99)).is_none(), "not yet valid");
        assert!(cache.get(&key, at(100)).is_some());
        assert!(cache.get(&key, at(200)).is_some());
        assert!(cache.get(&key, at(201)).is_none(), "expired");
    }

    #[test]
    fn the_key_covers_role_and_every_certificate() {
        let leaf = CertificateDer::from(vec![1u8, 2, 3]);
        let other = CertificateDer::from(vec![1u8, 2, 4]);
        let inter = CertificateDer::from(vec![9u8]);
        let base = VerifyCache::key(&leaf, &[], PeerRole::Client);
        assert_ne!(base, VerifyCache::key(&leaf, &[], PeerRole::Server));
        assert_ne!(base, VerifyCache::key(&other, &[], PeerRole::Client));
        assert_ne!(
            base,
            VerifyCache::key(&leaf, std::slice::from_ref(&inter), PeerRole::Client)
        );
        // Moving bytes between certificates changes the key (length prefixes).
        let a = CertificateDer::from(vec![1u8, 2]);
        let b = CertificateDer::from(vec![3u8]);
        let c = CertificateDer::from(vec![1u8]);
        let d = CertificateDer::from(vec![2u8, 3]);
        assert_ne!(
            VerifyCache::key(&a, std::slice::from_ref(&b), PeerRole::Client),
            VerifyCache::key(&c, std::slice::from_ref(&d), PeerRole::Client)
        );
    }

    #[test]
    fn stays_bounded() {
        let cache = VerifyCache::default();
        for i in 0..(CAPACITY + 10) {
            let leaf = CertificateDer::from(i.to_be_bytes().to_vec());
            cache.insert(
                VerifyCache::key(&leaf, &[], PeerRole::Client),
                verified(0, 1),
            );
        }
        assert!(cache.len() <= CAPACITY);
    }
}
