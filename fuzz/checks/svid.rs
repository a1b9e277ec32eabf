//! The oracle for certificates as the validator sees them, in one place: `check` reads the input
//! as PEM (certificates, bundles, keys, CSRs), as a raw DER leaf, and as an intermediate under a
//! leaf that verifies alone, and every chain goes through `verify_svid` in both roles against a
//! fixed bundle, `not_after`, and `CertInfo::inspect` with and without the bundle, for the chain
//! and for each of its certificates as a leaf (`inspect` runs `check_leaf`, `spiffe_id_of` and
//! `uri_sans`). Nothing may panic and every refusal says something. What verifies must carry an
//! ID with a path in the bundle's trust domain; its leaf must pass the leaf checks alone with the
//! same ID; `inspect` must say `valid` exactly when `verify_svid` accepts.
//!
//! The fixed bundle is the seeds' own root (fuzz/seeds/svid/bundle.pem, built in, read once) and
//! "now" is a day into its validity, so that the seeds verify on any date and their mutations
//! start close to valid.
//!
//! Included by path, so that the two harnesses cannot drift apart, by the libFuzzer target
//! fuzz/fuzz_targets/svid.rs and by the stable smoke test tests/pem_fuzz_smoke.rs
//! (docs/FUZZING.md). It goes through `CertInfo::inspect` rather than `check_leaf` on an
//! `X509Certificate` because the root crate, whose tests include it, does not depend on
//! x509-parser; and through `palisade_ca`, which re-exports palisade-identity, because the root
//! crate does not depend on palisade-identity directly.

use std::sync::OnceLock;
use std::time::Duration;

use palisade_identity::pem::{certificates_from_pem, csr_from_pem, private_key_from_pem};
use palisade_identity::{
    not_after, verify_svid, CertInfo, PeerRole, TrustBundle, TrustBundleSet, TrustDomain, Verdict,
};
use rustls_pki_types::{CertificateDer, UnixTime};

struct Fixed {
    bundles: TrustBundleSet,
    trust_domain: TrustDomain,
    /// A day into the root's validity, so that the seeds stay valid whenever this runs.
    now: UnixTime,
    /// A leaf that verifies alone, to put the input under as an intermediate.
    valid_leaf: CertificateDer<'static>,
}

/// Made once: libFuzzer calls `check` millions of times.
fn fixed() -> &'static Fixed {
    static FIXED: OnceLock<Fixed> = OnceLock::new();
    FIXED.get_or_init(|| {
        let bundle = TrustBundle::from_pem_own_domain(include_bytes!("../seeds/svid/bundle.pem"))
            .expect("the seeds' bundle");
        let root = CertInfo::inspect(&bundle.roots()[..1], None, UnixTime::now()).unwrap();
        let now = UnixTime::since_unix_epoch(Duration::from_secs(
            (root.not_before.unix_timestamp() + 86_400) as u64,
        ));
        let valid_leaf = certificates_from_pem(include_bytes!("../seeds/svid/leaf-root.pem"))
            .expect("the seeds' leaf")
            .remove(0);
        Fixed {
            trust_domain: bundle.trust_domain().clone(),
            bundles: bundle.into(),
            now,
            valid_leaf,
        }
    })
}

/// One chain through the validator; true when it verified in either role.
fn check_chain(fixed: &Fixed, chain: &[CertificateDer<'_>]) -> bool {
    let client = verify_svid(chain, &fixed.bundles, PeerRole::Client, fixed.now);
    let server = verify_svid(chain, &fixed.bundles, PeerRole::Server, fixed.now);
    for id in [&client, &server].into_iter().flatten() {
        assert!(id.has_path(), "a verified leaf without a path: {id}");
        assert_eq!(id.trust_domain(), &fixed.trust_domain);
    }
    for (index, der) in chain.iter().enumerate() {
        let _ = not_after(der);
        // Each certificate as a leaf alone, without the bundle: `check_leaf`, `spiffe_id_of`
        // and `uri_sans` on it. The leaf of a chain that verified passes the leaf checks alone,
        // with the same ID.
        let alone = CertInfo::inspect(std::slice::from_ref(der), None, fixed.now);
        if let (0, Ok(verified)) = (index, &client) {
            let alone = alone.expect("a verified leaf parses");
            assert_eq!(
                alone.verdict,
                Verdict::ValidUnverified,
                "leaf checks of {verified}"
            );
            assert_eq!(alone.spiffe_id, Some(verified.to_string()));
        }
    }
    match CertInfo::inspect(chain, Some(&fixed.bundles), fixed.now) {
        Ok(info) => {
            assert_eq!(
                info.verdict == Verdict::Valid,
                client.is_ok(),
                "inspect and verify_svid disagree"
            );
            let unverified = CertInfo::inspect(chain, None, fixed.now)
                .expect("inspect parses the leaf with or without a bundle");
            if info.verdict == Verdict::Valid {
                assert_eq!(unverified.verdict, Verdict::ValidUnverified);
                assert_eq!(info.spiffe_id, unverified.spiffe_id);
                assert!(info.spiffe_id.is_some(), "valid without an ID");
            }
        }
        Err(error) => {
            assert!(!error.to_string().is_empty());
            let _ = CertInfo::inspect(chain, None, fixed.now);
        }
    }
    client.is_ok() || server.is_ok()
}

/// Every reader on one input; how many of its readings (as PEM, as a raw DER leaf) verified, for
/// the smoke test's counts.
pub fn check(input: &[u8]) -> usize {
    let fixed = fixed();
    let mut verified = 0;
    match certificates_from_pem(input) {
        Ok(chain) => {
            assert!(!chain.is_empty(), "Ok with no certificate");
            verified += usize::from(check_chain(fixed, &chain));
        }
        Err(error) => assert!(!error.to_string().is_empty()),
    }
    if let Ok(bundle) = TrustBundle::from_pem(fixed.trust_domain.clone(), input) {
        assert!(!bundle.roots().is_empty(), "a bundle without roots");
    }
    if let Ok(bundle) = TrustBundle::from_pem_own_domain(input) {
        assert!(!bundle.roots().is_empty(), "a bundle without roots");
    }
    let _ = private_key_from_pem(input);
    let _ = csr_from_pem(input);
    let der = CertificateDer::from(input);
    verified += usize::from(check_chain(fixed, std::slice::from_ref(&der)));
    // As an intermediate under a leaf that verifies alone: webpki reads it while building paths.
    let _ = check_chain(fixed, &[fixed.valid_leaf.clone(), der]);
    verified
}
