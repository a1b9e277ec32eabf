//! The oracle for CSRs at the CA service, in one place: `check` takes a request body, optionally
//! after a first line naming the SPIFFE ID a credential grants (`spiffe://…` then a newline);
//! without one, the body is tried for each of `IDS`, IDs in and out of the CA's trust domain. The
//! body goes through `palisade_ca_server::csr_from_body` (what /v1/sign and /v1/renew do with the
//! body they read), whose refusal must be `Refusal::Csr` with `BadCsr`, `CsrSignature` or
//! `CsrKeyType`; a CSR that checks out goes through `issue_for_csr` of an issuing CA made once
//! (root and issuer of example.org). A certificate is issued exactly when the ID has a path in the
//! CA's trust domain (otherwise `IdWithoutPath` or `OtherTrustDomain`), and what is issued must
//! verify, with its chain, to the root with `verify_svid` in both roles as an X.509-SVID of exactly
//! that ID, and carry exactly one URI SAN, the ID, and no DNS name from the CSR.
//!
//! Included by path, so that the two harnesses cannot drift apart, by the libFuzzer target
//! fuzz/fuzz_targets/ca_csr.rs and by the stable smoke test tests/csr_fuzz_smoke.rs
//! (docs/FUZZING.md). It only uses crates both of them depend on.

use std::sync::OnceLock;
use std::time::Duration;

use palisade_ca::{CertificateAuthority, IssueError, KeyType, LeafRequest};
use palisade_ca_server::{csr_from_body, Refusal};
use palisade_identity::{
    verify_svid, CertInfo, PeerRole, SpiffeId, TrustBundle, TrustBundleSet, TrustDomain, Verdict,
};
use rustls_pki_types::UnixTime;

/// IDs a credential could grant, for a body without an ID line: in the CA's trust domain with a
/// path (issued), the bare trust domain and another trust domain (refused).
const IDS: &[&str] = &[
    "spiffe://example.org/ns/shop/sa/frontend",
    "spiffe://example.org/a/b/c/d-e_f.g",
    "spiffe://example.org",
    "spiffe://other.example/ns/shop/sa/frontend",
];

struct Ca {
    issuer: CertificateAuthority,
    bundles: TrustBundleSet,
    ids: Vec<SpiffeId>,
}

/// Made once: generating keys and signing the root and issuer would dwarf one check, and
/// libFuzzer calls `check` millions of times. Valid for a year, longer than any run.
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
            ids: IDS.iter().map(|id| SpiffeId::parse(id).unwrap()).collect(),
        }
    })
}

/// One input (an optional ID line, then a body) through the service's reader and, if it holds a
/// good CSR, the CA; how many certificates were issued, for the smoke test's counts. An ID line
/// that is not a SPIFFE ID is no input at all: the service only ever has IDs it parsed.
pub fn check(data: &[u8]) -> usize {
    let ca = ca();
    let line_id;
    let (ids, body) = match data.iter().position(|&b| b == b'\n') {
        Some(end) if data.starts_with(b"spiffe:") => {
            let Some(id) = std::str::from_utf8(&data[..end])
                .ok()
                .and_then(|text| SpiffeId::parse(text).ok())
            else {
                return 0;
            };
            line_id = [id];
            (&line_id[..], &data[end + 1..])
        }
        _ => (&ca.ids[..], data),
    };
    let csr = match csr_from_body(body) {
        Ok(csr) => csr,
        Err(Refusal::Csr(
            IssueError::BadCsr | IssueError::CsrSignature | IssueError::CsrKeyType,
        )) => return 0,
        Err(other) => panic!("a CSR refused with {other:?}"),
    };
    let mut issued = 0;
    for id in ids {
        let request = LeafRequest::new(id.clone(), Duration::from_secs(3600));
        let ours = id.has_path() && id.trust_domain() == ca.issuer.trust_domain();
        match ca.issuer.issue_for_csr(&csr, &request) {
            Ok(cert) => {
                assert!(ours, "issued for {id}");
                let chain: Vec<_> = std::iter::once(cert.cert.clone())
                    .chain(cert.chain.iter().cloned())
                    .collect();
                for role in [PeerRole::Client, PeerRole::Server] {
                    let verified = verify_svid(&chain, &ca.bundles, role, UnixTime::now());
                    assert_eq!(verified.as_ref(), Ok(id), "what was issued for {id}");
                }
                let info = CertInfo::inspect(&chain, Some(&ca.bundles), UnixTime::now()).unwrap();
                assert_eq!(info.verdict, Verdict::Valid);
                assert_eq!(info.uri_sans, vec![id.to_string()], "one URI SAN, the ID");
                assert!(info.dns_names.is_empty(), "a DNS name from the CSR");
                issued += 1;
            }
            Err(IssueError::IdWithoutPath(_) | IssueError::OtherTrustDomain { .. }) => {
                assert!(!ours, "refused {id}")
            }
            Err(other) => panic!("issuing for {id}: {other:?}"),
        }
    }
    issued
}
