//! `verify_svid` against certificates made here with rcgen (see `common`), and issuance by
//! `CertificateAuthority` checked from the outside.
//!
//! Every refused case in `common::negative_cases` is a valid SVID but for one rule, and must be
//! refused with that rule's own `SvidError`, for a peer in either role.

mod common;

use std::time::Duration as StdDuration;

use common::*;
use palisade_ca::{CertificateAuthority, IssueError, KeyType, LeafRequest, CLOCK_SKEW_ALLOWANCE};
use palisade_identity::{
    verify_svid, BundleError, PeerRole, SvidError, TrustBundle, TrustBundleSet,
};
use rcgen::{CertificateParams, IsCa, KeyUsagePurpose};
use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

const HOUR: StdDuration = StdDuration::from_secs(3600);
const DAY: StdDuration = StdDuration::from_secs(24 * 3600);
const ROLES: [PeerRole; 2] = [PeerRole::Client, PeerRole::Server];

fn parse<'a>(der: &'a CertificateDer<'_>) -> X509Certificate<'a> {
    X509Certificate::from_der(der)
        .expect("certificate parses")
        .1
}

fn uri_sans(cert: &X509Certificate<'_>) -> Vec<String> {
    all_sans(cert)
        .into_iter()
        .filter_map(|san| san.strip_prefix("URI:").map(str::to_owned))
        .collect()
}

fn all_sans(cert: &X509Certificate<'_>) -> Vec<String> {
    let Some(sans) = cert.subject_alternative_name().expect("SAN parses") else {
        return Vec::new();
    };
    sans.value
        .general_names
        .iter()
        .map(|name| match name {
            GeneralName::URI(uri) => format!("URI:{uri}"),
            GeneralName::DNSName(dns) => format!("DNS:{dns}"),
            other => format!("{other:?}"),
        })
        .collect()
}

fn subject_key_id(cert: &X509Certificate<'_>) -> Vec<u8> {
    cert.extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(ski) => Some(ski.0.to_vec()),
            _ => None,
        })
        .expect("CA certificate has a subject key identifier")
}

fn bundle_of(ca: &CertificateAuthority) -> TrustBundleSet {
    TrustBundleSet::from(
        TrustBundle::new(ca.trust_domain().clone(), vec![ca.certificate().clone()])
            .expect("a generated root is a valid bundle"),
    )
}

fn root(key_type: KeyType) -> CertificateAuthority {
    CertificateAuthority::generate_root(&td(TD1), key_type, DAY).expect("root CA")
}

/// `verify_svid` refuses the case named `name` with its own error, in both roles.
fn assert_refused(name: &str) {
    let w = World::new();
    let case = negative_case(&w, name);
    for role in ROLES {
        assert_eq!(
            w.verify(&case.svid, role),
            Err(case.expected.clone()),
            "{} ({role:?})",
            case.name
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Refused chains
// ---------------------------------------------------------------------------------------------

macro_rules! refused {
    ($($test:ident => $name:literal,)*) => {
        $(
            #[test]
            fn $test() {
                assert_refused($name);
            }
        )*

        /// Every case of the shared table has a test of its own here.
        #[test]
        fn every_negative_case_has_a_test() {
            let mut tested = vec![$($name),*];
            let mut table: Vec<_> = negative_cases(&World::new()).into_iter().map(|c| c.name).collect();
            tested.sort_unstable();
            table.sort_unstable();
            assert_eq!(tested, table);
        }
    };
}

refused! {
    two_uri_sans => "two URI SANs",
    non_spiffe_uri => "https URI SAN",
    no_uri_san => "no URI SAN (DNS only)",
    leaf_is_ca => "leaf with CA:true",
    leaf_with_key_cert_sign => "leaf with keyCertSign",
    leaf_with_crl_sign => "leaf with cRLSign",
    leaf_without_basic_constraints => "leaf without basic constraints",
    leaf_id_without_path => "leaf ID without a path",
    missing_key_usage => "leaf without key usage",
    key_usage_without_digital_signature => "key usage without digitalSignature",
    key_usage_not_critical => "key usage not critical",
    eku_server_auth_only => "extended key usage serverAuth only",
    expired => "expired",
    not_yet_valid => "not yet valid",
    other_trust_domain => "other trust domain",
    other_ca_of_same_trust_domain => "other CA of the same trust domain",
    tampered_signature => "tampered signature",
    intermediate_id_with_path => "intermediate whose ID has a path",
    intermediate_of_other_trust_domain => "intermediate of another trust domain",
    intermediate_without_key_cert_sign => "intermediate without keyCertSign",
}

#[test]
fn empty_chain_is_refused() {
    let w = World::new();
    assert_eq!(
        verify_svid(&[], &w.bundles, PeerRole::Client, UnixTime::now()),
        Err(SvidError::NoCertificate)
    );
}

#[test]
fn root_whose_id_has_a_path_is_refused_by_the_bundle() {
    let root = TestCa::self_signed(ca_params(Some("spiffe://example.org/ca")));
    assert_eq!(
        TrustBundle::new(td(TD1), vec![root.cert.clone()]).err(),
        Some(BundleError::RootIdHasPath {
            index: 0,
            id: id("spiffe://example.org/ca"),
        })
    );
}

#[test]
fn root_of_another_trust_domain_is_refused_by_the_bundle() {
    let root = TestCa::root(TD2);
    assert_eq!(
        TrustBundle::new(td(TD1), vec![root.cert.clone()]).err(),
        Some(BundleError::OtherTrustDomain {
            index: 0,
            found: td(TD2),
            expected: td(TD1),
        })
    );
}

#[test]
fn leaf_is_refused_as_a_bundle_root() {
    let w = World::new();
    let leaf = w.ca.leaf(WORKLOAD).build();
    assert_eq!(
        TrustBundle::new(td(TD1), vec![leaf.chain[0].clone()]).err(),
        Some(BundleError::NotACa { index: 0 })
    );
}

/// Expiry is judged at the `now` given, not the wall clock: the same valid leaf is refused a
/// second after its NotAfter and before its NotBefore.
#[test]
fn validity_is_judged_at_the_given_time() {
    let w = World::new();
    let svid = w.ca.leaf(WORKLOAD).build();
    let not_before = svid_time(&svid, |v| v.not_before.timestamp());
    let not_after = svid_time(&svid, |v| v.not_after.timestamp());
    let at = |secs: i64| UnixTime::since_unix_epoch(StdDuration::from_secs(secs as u64));
    let verify = |t| verify_svid(&svid.chain, &w.bundles, PeerRole::Client, t);
    assert_eq!(verify(at(not_after)), Ok(id(WORKLOAD)));
    assert_eq!(verify(at(not_before)), Ok(id(WORKLOAD)));
    assert!(matches!(
        verify(at(not_after + 1)),
        Err(SvidError::Expired(t)) if t.unix_timestamp() == not_after
    ));
    assert!(matches!(
        verify(at(not_before - 1)),
        Err(SvidError::NotYetValid(t)) if t.unix_timestamp() == not_before
    ));
}

fn svid_time(svid: &Svid, f: impl Fn(&x509_parser::certificate::Validity) -> i64) -> i64 {
    f(parse(&svid.chain[0]).validity())
}

/// The index of a refused signing certificate is its place in the verified path: here the second
/// intermediate above the leaf.
#[test]
fn refused_signing_certificate_is_named_by_its_place_in_the_path() {
    let w = World::new();
    let upper =
        w.ca.intermediate(ca_params(Some("spiffe://example.org/upper")));
    let lower = upper.intermediate(ca_params(Some("spiffe://example.org")));
    let svid = lower.leaf(WORKLOAD).build();
    assert_eq!(svid.chain.len(), 3);
    assert_eq!(
        w.verify(&svid, PeerRole::Client),
        Err(SvidError::SigningCertIdHasPath {
            index: 2,
            id: id("spiffe://example.org/upper"),
        })
    );
    // The same two intermediates, both without a path, verify.
    let upper = w.ca.intermediate(ca_params(Some("spiffe://example.org")));
    let lower = upper.intermediate(ca_params(None));
    assert_eq!(
        w.verify(&lower.leaf(WORKLOAD).build(), PeerRole::Client),
        Ok(id(WORKLOAD))
    );
}

/// An expired intermediate is caught by webpki's chain check, not the leaf check.
#[test]
fn expired_intermediate_is_refused() {
    let w = World::new();
    let expired_at = now() - time::Duration::days(1);
    let mut params = ca_params(Some("spiffe://example.org"));
    params.not_before = expired_at - time::Duration::days(1);
    params.not_after = expired_at;
    let svid = w.ca.intermediate(params).leaf(WORKLOAD).build();
    assert_eq!(
        w.verify(&svid, PeerRole::Client),
        Err(SvidError::Expired(expired_at))
    );
}

// ---------------------------------------------------------------------------------------------
// Accepted chains
// ---------------------------------------------------------------------------------------------

/// The baseline every negative case departs from is itself valid.
#[test]
fn test_ca_leaf_verifies() {
    let w = World::new();
    let svid = w.ca.leaf(WORKLOAD).build();
    for role in ROLES {
        assert_eq!(w.verify(&svid, role), Ok(id(WORKLOAD)), "{role:?}");
    }
}

/// A leaf may also leave out extended key usage: webpki then accepts it for either role.
#[test]
fn leaf_without_extended_key_usage_verifies() {
    let w = World::new();
    let svid = w.ca.leaf(WORKLOAD).extended_key_usages(&[]).build();
    for role in ROLES {
        assert_eq!(w.verify(&svid, role), Ok(id(WORKLOAD)), "{role:?}");
    }
}

#[test]
fn palisade_leaf_verifies_for_both_roles() {
    for ca_key in [KeyType::EcdsaP256, KeyType::Ed25519] {
        for leaf_key in [KeyType::EcdsaP256, KeyType::Ed25519] {
            let ca = root(ca_key);
            let request = LeafRequest::new(id(WORKLOAD), HOUR);
            let (issued, _key) = ca.issue_with_new_key(&request, leaf_key).expect("issued");
            assert!(issued.chain.is_empty(), "a root's leaf has no chain");
            for role in ROLES {
                assert_eq!(
                    verify_svid(
                        std::slice::from_ref(&issued.cert),
                        &bundle_of(&ca),
                        role,
                        UnixTime::now()
                    ),
                    Ok(id(WORKLOAD)),
                    "CA {ca_key}, leaf {leaf_key}, {role:?}"
                );
            }
        }
    }
}

#[test]
fn leaf_via_intermediate_verifies() {
    let w = World::new();
    let intermediate = w.ca.intermediate(ca_params(Some("spiffe://example.org")));
    let svid = intermediate.leaf(WORKLOAD).build();
    assert_eq!(svid.chain.len(), 2);
    for role in ROLES {
        assert_eq!(w.verify(&svid, role), Ok(id(WORKLOAD)), "{role:?}");
    }
    // An intermediate may also carry no SPIFFE ID at all.
    let svid = w.ca.intermediate(ca_params(None)).leaf(WORKLOAD).build();
    assert_eq!(w.verify(&svid, PeerRole::Client), Ok(id(WORKLOAD)));
    // Without the intermediate, the leaf leads nowhere.
    assert_eq!(
        verify_svid(
            &svid.chain[..1],
            &w.bundles,
            PeerRole::Client,
            UnixTime::now()
        ),
        Err(SvidError::UnknownIssuer(td(TD1)))
    );
}

/// A Palisade CA loaded as an intermediate (`from_parts`, as `CaDir::load` does) hands out, with
/// every leaf, the chain from the leaf's issuer up to the root, and that chain verifies.
#[test]
fn palisade_intermediate_ca_issues_verifiable_chains() {
    let w = World::new();
    let intermediate = w.ca.intermediate(ca_params(Some("spiffe://example.org")));
    // cert.pem of an intermediate directly under the root: itself, nothing above it.
    let ca = CertificateAuthority::from_parts(
        intermediate.cert.clone(),
        Vec::new(),
        &intermediate.key_pem(),
    )
    .expect("intermediate CA loads");
    let request = LeafRequest::new(id(WORKLOAD), HOUR);
    let (issued, _) = ca
        .issue_with_new_key(&request, KeyType::EcdsaP256)
        .expect("issued");
    assert_eq!(
        issued.chain,
        vec![intermediate.cert.clone()],
        "leaf's issuer first"
    );
    let chain: Vec<_> = std::iter::once(issued.cert).chain(issued.chain).collect();
    assert_eq!(
        verify_svid(&chain, &w.bundles, PeerRole::Server, UnixTime::now()),
        Ok(id(WORKLOAD))
    );
}

#[test]
fn bundle_with_two_roots_verifies_leaves_of_either() {
    let old = root(KeyType::EcdsaP256);
    let new = root(KeyType::EcdsaP256);
    let bundles = TrustBundleSet::from(
        TrustBundle::new(
            td(TD1),
            vec![old.certificate().clone(), new.certificate().clone()],
        )
        .expect("two roots make a bundle"),
    );
    for ca in [&old, &new] {
        let request = LeafRequest::new(id(WORKLOAD), HOUR);
        let (issued, _) = ca
            .issue_with_new_key(&request, KeyType::EcdsaP256)
            .expect("issued");
        assert_eq!(
            verify_svid(&[issued.cert], &bundles, PeerRole::Client, UnixTime::now()),
            Ok(id(WORKLOAD))
        );
    }
    // A third root of the same trust domain is not trusted by that bundle.
    let stranger = root(KeyType::EcdsaP256);
    let (issued, _) = stranger
        .issue_with_new_key(&LeafRequest::new(id(WORKLOAD), HOUR), KeyType::EcdsaP256)
        .expect("issued");
    assert_eq!(
        verify_svid(&[issued.cert], &bundles, PeerRole::Client, UnixTime::now()),
        Err(SvidError::UnknownIssuer(td(TD1)))
    );
}

// ---------------------------------------------------------------------------------------------
// Issuance
// ---------------------------------------------------------------------------------------------

/// A CSR asking for other names than the request's.
fn greedy_csr(key: &rcgen::KeyPair) -> Vec<u8> {
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![
        dns_san("admin.example.org"),
        uri_san("spiffe://example.org/admin"),
    ];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    params
        .serialize_request(key)
        .expect("CSR")
        .der()
        .as_ref()
        .to_vec()
}

#[test]
fn csr_gets_exactly_the_requested_id() {
    let ca = root(KeyType::EcdsaP256);
    let key = new_key();
    let request = LeafRequest::new(id(WORKLOAD), HOUR);
    let issued = ca
        .issue_from_csr(&greedy_csr(&key), &request)
        .expect("issued");
    let cert = parse(&issued.cert);
    assert_eq!(all_sans(&cert), vec![format!("URI:{WORKLOAD}")]);
    assert_eq!(uri_sans(&cert), vec![WORKLOAD.to_owned()]);
    assert_eq!(
        cert.public_key().raw,
        rcgen::PublicKeyData::subject_public_key_info(&key).as_slice(),
        "the leaf certifies the CSR's key"
    );
    assert!(!cert.is_ca());
    assert_eq!(
        verify_svid(
            std::slice::from_ref(&issued.cert),
            &bundle_of(&ca),
            PeerRole::Client,
            UnixTime::now()
        ),
        Ok(id(WORKLOAD))
    );
}

#[test]
fn csr_with_bad_signature_is_refused() {
    let ca = root(KeyType::EcdsaP256);
    let mut csr = greedy_csr(&new_key());
    *csr.last_mut().unwrap() ^= 0x01;
    let request = LeafRequest::new(id(WORKLOAD), HOUR);
    assert!(matches!(
        ca.issue_from_csr(&csr, &request),
        Err(IssueError::CsrSignature)
    ));
}

#[test]
fn csr_for_a_key_type_we_do_not_issue_for_is_refused() {
    let ca = root(KeyType::EcdsaP256);
    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("P-384 key");
    let request = LeafRequest::new(id(WORKLOAD), HOUR);
    assert!(matches!(
        ca.issue_from_csr(&greedy_csr(&p384), &request),
        Err(IssueError::CsrKeyType)
    ));
    let ed25519 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("Ed25519 key");
    assert!(ca.issue_from_csr(&greedy_csr(&ed25519), &request).is_ok());
}

#[test]
fn issuance_refuses_other_trust_domain_and_ids_without_path() {
    let ca = root(KeyType::EcdsaP256);
    let other = LeafRequest::new(id("spiffe://example.net/workload"), HOUR);
    assert!(matches!(
        ca.issue_with_new_key(&other, KeyType::EcdsaP256),
        Err(IssueError::OtherTrustDomain { id: i, trust_domain })
            if i == id("spiffe://example.net/workload") && trust_domain == td(TD1)
    ));
    let no_path = LeafRequest::new(id("spiffe://example.org"), HOUR);
    assert!(matches!(
        ca.issue_with_new_key(&no_path, KeyType::EcdsaP256),
        Err(IssueError::IdWithoutPath(i)) if i == id("spiffe://example.org")
    ));
    let csr = greedy_csr(&new_key());
    assert!(matches!(
        ca.issue_from_csr(&csr, &other),
        Err(IssueError::OtherTrustDomain { .. })
    ));
    assert!(matches!(
        ca.issue_from_csr(&csr, &no_path),
        Err(IssueError::IdWithoutPath(_))
    ));
}

#[test]
fn leaf_not_after_is_clamped_to_the_ca() {
    let ca = CertificateAuthority::generate_root(&td(TD1), KeyType::EcdsaP256, HOUR).expect("CA");
    let request = LeafRequest::new(id(WORKLOAD), 10 * HOUR);
    let (issued, _) = ca
        .issue_with_new_key(&request, KeyType::EcdsaP256)
        .expect("issued");
    let leaf = parse(&issued.cert);
    let root = parse(ca.certificate());
    assert_eq!(
        leaf.validity().not_after.timestamp(),
        root.validity().not_after.timestamp()
    );
    assert_eq!(issued.not_after, ca.not_after());
    // A shorter TTL is kept as asked.
    let (short, _) = ca
        .issue_with_new_key(
            &LeafRequest::new(id(WORKLOAD), HOUR / 2),
            KeyType::EcdsaP256,
        )
        .expect("issued");
    assert!(short.not_after < ca.not_after());
}

#[test]
fn serials_are_random_16_bytes_and_positive() {
    let ca = root(KeyType::EcdsaP256);
    let csr = greedy_csr(&new_key());
    let request = LeafRequest::new(id(WORKLOAD), HOUR);
    let first = ca.issue_from_csr(&csr, &request).expect("issued");
    let second = ca.issue_from_csr(&csr, &request).expect("issued");
    assert_ne!(first.serial, second.serial, "same key, same ID, new serial");
    for issued in [&first, &second] {
        let cert = parse(&issued.cert);
        let raw = cert.raw_serial();
        assert_eq!(raw, issued.serial.as_slice());
        assert_eq!(raw.len(), 16);
        assert_eq!(raw[0] & 0x80, 0, "top bit clear: a positive serial");
    }
    let root_serial = parse(ca.certificate()).raw_serial().to_vec();
    assert_eq!(root_serial.len(), 16);
    assert_eq!(root_serial[0] & 0x80, 0);
}

#[test]
fn every_root_has_its_own_subject_and_key_id() {
    let roots: Vec<_> = (0..4).map(|_| root(KeyType::EcdsaP256)).collect();
    let subjects: Vec<_> = roots
        .iter()
        .map(|ca| parse(ca.certificate()).subject().as_raw().to_vec())
        .collect();
    let key_ids: Vec<_> = roots
        .iter()
        .map(|ca| subject_key_id(&parse(ca.certificate())))
        .collect();
    for i in 0..roots.len() {
        for j in i + 1..roots.len() {
            assert_ne!(subjects[i], subjects[j], "subjects of roots {i} and {j}");
            assert_ne!(key_ids[i], key_ids[j], "key IDs of roots {i} and {j}");
        }
    }
}

#[test]
fn not_before_is_set_back_30_to_60_seconds() {
    assert!((30..=60).contains(&CLOCK_SKEW_ALLOWANCE.as_secs()));
    let ca = root(KeyType::EcdsaP256);
    let (issued, _) = ca
        .issue_with_new_key(&LeafRequest::new(id(WORKLOAD), HOUR), KeyType::EcdsaP256)
        .expect("issued");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for cert in [ca.certificate(), &issued.cert] {
        let back = now - parse(cert).validity().not_before.timestamp();
        assert!(
            (30..=60).contains(&back),
            "NotBefore is {back} s before now"
        );
    }
}
