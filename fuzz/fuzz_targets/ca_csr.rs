//! CSRs at the CA service, on arbitrary bytes. An input is a request body, optionally after a
//! first line naming the SPIFFE ID a credential grants (`spiffe://…\n`; without one, a fixed ID of
//! the CA's trust domain). The body goes through `palisade_ca_server::csr_from_body` (what /v1/sign
//! and /v1/renew do with the body they read); a CSR that checks out goes through `issue_for_csr`
//! of an issuing CA made once. Nothing may panic; refusals are typed; a certificate is issued
//! exactly when the ID has a path in the CA's trust domain, and it must verify, with its chain, to
//! the root as an X.509-SVID of that ID.
//!
//! cargo +nightly fuzz run ca_csr fuzz/corpus/ca_csr fuzz/seeds/ca_csr (docs/FUZZING.md). The same
//! checks run on stable in tests/csr_fuzz_smoke.rs.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use palisade_ca::{
    verify_svid, CertificateAuthority, IssueError, KeyType, LeafRequest, PeerRole, SpiffeId,
    TrustBundle, TrustBundleSet, TrustDomain,
};
use palisade_ca_server::{csr_from_body, Refusal};
use rustls_pki_types::UnixTime;

struct Ca {
    issuer: CertificateAuthority,
    bundles: TrustBundleSet,
}

fn ca() -> &'static Ca {
    static CA: OnceLock<Ca> = OnceLock::new();
    CA.get_or_init(|| {
        let td = TrustDomain::parse("example.org").unwrap();
        let year = Duration::from_secs(365 * 86_400);
        let root = CertificateAuthority::generate_root(&td, KeyType::EcdsaP256, year).unwrap();
        let issuer = root.generate_issuer(KeyType::EcdsaP256, year).unwrap();
        let bundle = TrustBundle::new(td, vec![root.certificate().clone()]).unwrap();
        Ca {
            issuer,
            bundles: bundle.into(),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let ca = ca();
    let (id, body) = match data.iter().position(|&b| b == b'\n') {
        Some(end) if data.starts_with(b"spiffe:") => {
            let Some(id) = std::str::from_utf8(&data[..end])
                .ok()
                .and_then(|text| SpiffeId::parse(text).ok())
            else {
                return;
            };
            (id, &data[end + 1..])
        }
        _ => (
            SpiffeId::parse("spiffe://example.org/ns/shop/sa/fuzz").unwrap(),
            data,
        ),
    };
    let csr = match csr_from_body(body) {
        Ok(csr) => csr,
        Err(Refusal::Csr(
            IssueError::BadCsr | IssueError::CsrSignature | IssueError::CsrKeyType,
        )) => return,
        Err(other) => panic!("a CSR refused with {other:?}"),
    };
    let ours = id.has_path() && id.trust_domain() == ca.issuer.trust_domain();
    match ca.issuer.issue_for_csr(
        &csr,
        &LeafRequest::new(id.clone(), Duration::from_secs(3600)),
    ) {
        Ok(issued) => {
            assert!(ours, "issued for {id}");
            let chain: Vec<_> = std::iter::once(issued.cert.clone())
                .chain(issued.chain.iter().cloned())
                .collect();
            for role in [PeerRole::Client, PeerRole::Server] {
                assert_eq!(
                    verify_svid(&chain, &ca.bundles, role, UnixTime::now()).as_ref(),
                    Ok(&id)
                );
            }
        }
        Err(IssueError::IdWithoutPath(_) | IssueError::OtherTrustDomain { .. }) => assert!(!ours),
        Err(other) => panic!("issuing for {id}: {other:?}"),
    }
});
