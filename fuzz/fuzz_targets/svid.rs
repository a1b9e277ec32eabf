//! Certificates as the validator sees them, on arbitrary bytes: the input is read as PEM
//! (certificates, bundles, keys, CSRs), as a raw DER leaf, and as an intermediate under a leaf
//! that verifies, and goes through `verify_svid` against a fixed bundle (the root of the seeds in
//! fuzz/seeds/svid, so that mutations of them come close to valid), `check_leaf`, `spiffe_id_of`,
//! `uri_sans`, `not_after` and `CertInfo::inspect`. Nothing may panic; what verifies must carry an
//! ID with a path in the bundle's trust domain, and the leaf checks and `inspect` must agree.
//!
//! cargo +nightly fuzz run svid fuzz/corpus/svid fuzz/seeds/svid (docs/FUZZING.md). The same
//! checks run on stable in tests/pem_fuzz_smoke.rs.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use palisade_identity::pem::{certificates_from_pem, csr_from_pem, private_key_from_pem};
use palisade_identity::{
    check_leaf, not_after, spiffe_id_of, uri_sans, verify_svid, CertInfo, PeerRole, TrustBundle,
    TrustBundleSet, TrustDomain, Verdict,
};
use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};

struct Fixed {
    bundles: TrustBundleSet,
    trust_domain: TrustDomain,
    /// A day into the root's validity, so that the seeds stay valid whenever this runs.
    now: UnixTime,
    valid_leaf: CertificateDer<'static>,
}

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
            .unwrap()
            .remove(0);
        Fixed {
            trust_domain: bundle.trust_domain().clone(),
            bundles: bundle.into(),
            now,
            valid_leaf,
        }
    })
}

fn check_chain(fixed: &Fixed, chain: &[CertificateDer<'_>]) {
    let verified = verify_svid(chain, &fixed.bundles, PeerRole::Client, fixed.now);
    let _ = verify_svid(chain, &fixed.bundles, PeerRole::Server, fixed.now);
    if let Ok(id) = &verified {
        assert!(id.has_path());
        assert_eq!(id.trust_domain(), &fixed.trust_domain);
    }
    for (index, der) in chain.iter().enumerate() {
        let _ = not_after(der);
        if let Ok((_, cert)) = X509Certificate::from_der(der) {
            let leaf = check_leaf(&cert);
            let _ = uri_sans(&cert);
            let id = spiffe_id_of(&cert);
            // The leaf of a chain that verified passes the leaf checks alone, with the same ID.
            if let (0, Ok(verified)) = (index, &verified) {
                assert_eq!(leaf.as_ref().ok(), Some(verified));
                assert_eq!(id.as_ref().ok(), Some(verified));
            }
        }
    }
    if let Ok(info) = CertInfo::inspect(chain, Some(&fixed.bundles), fixed.now) {
        assert_eq!(info.verdict == Verdict::Valid, verified.is_ok());
    }
    let _ = CertInfo::inspect(chain, None, fixed.now);
}

fuzz_target!(|data: &[u8]| {
    let fixed = fixed();
    if let Ok(chain) = certificates_from_pem(data) {
        assert!(!chain.is_empty());
        check_chain(fixed, &chain);
    }
    let _ = TrustBundle::from_pem(fixed.trust_domain.clone(), data);
    let _ = TrustBundle::from_pem_own_domain(data);
    let _ = private_key_from_pem(data);
    let _ = csr_from_pem(data);
    let der = CertificateDer::from(data);
    check_chain(fixed, std::slice::from_ref(&der));
    check_chain(fixed, &[fixed.valid_leaf.clone(), der]);
});
