//! Certificate making for the integration tests, with rcgen directly (never through
//! `palisade_ca::CertificateAuthority`), so that the tests can build certificates the library
//! would never issue.
//!
//! - [`TestCa`]: a root or intermediate CA, and [`LeafBuilder`]: a leaf that is a valid X.509-SVID
//!   until one method makes it break exactly one rule.
//! - [`World`]: the CAs every case needs, and the trust bundles the verifier is given.
//! - [`negative_cases`]: every presentable chain that must be refused, with the exact error.
//!   `svid_validation` runs each through `verify_svid`, `tls_handshake` through a real handshake.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use palisade_identity::{
    verify_svid, PeerRole, SpiffeId, SvidError, TrustBundle, TrustBundleSet, TrustDomain,
};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use time::{Duration, OffsetDateTime};

/// The trust domain whose bundle the verifier holds.
pub const TD1: &str = "example.org";
/// A trust domain the verifier has no bundle for.
pub const TD2: &str = "example.net";
pub const WORKLOAD: &str = "spiffe://example.org/workload";
pub const SERVER_ID: &str = "spiffe://example.org/server";
pub const CLIENT_ID: &str = "spiffe://example.org/client";

pub fn td(name: &str) -> TrustDomain {
    TrustDomain::parse(name).expect("valid trust domain")
}

pub fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).expect("valid SPIFFE ID")
}

/// Now, to the second: certificates hold whole seconds, so expected dates compare equal.
pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("zero nanoseconds is valid")
}

pub fn uri_san(uri: &str) -> SanType {
    SanType::URI(uri.try_into().expect("URI fits IA5String"))
}

pub fn dns_san(name: &str) -> SanType {
    SanType::DnsName(name.try_into().expect("DNS name fits IA5String"))
}

pub fn new_key() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key generation")
}

/// A subject of its own for every CA made in this process, so that webpki never mistakes one CA
/// for another's issuer (that would turn "unknown issuer" into "bad signature").
fn unique_subject(prefix: &str) -> DistinguishedName {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Palisade tests");
    dn.push(
        DnType::CommonName,
        format!("{prefix} {}", NEXT.fetch_add(1, Ordering::Relaxed)),
    );
    dn
}

/// CA parameters: CA:true, keyCertSign + cRLSign, valid from an hour ago for a day, and `uri` as
/// the only URI SAN (none when `None`). Change fields to break one rule.
pub fn ca_params(uri: Option<&str>) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = unique_subject("Test CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.subject_alt_names = uri.map(uri_san).into_iter().collect();
    params.not_before = now() - Duration::hours(1);
    params.not_after = now() + Duration::days(1);
    params.use_authority_key_identifier_extension = true;
    params
}

/// A CA made with rcgen: a root, or an intermediate signed by another `TestCa`.
pub struct TestCa {
    pub cert: CertificateDer<'static>,
    /// What a leaf of this CA presents after itself: this CA and those above it, root excluded
    /// (empty for a root).
    pub chain: Vec<CertificateDer<'static>>,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    /// A root CA of trust domain `td` (URI SAN `spiffe://td`).
    pub fn root(td: &str) -> TestCa {
        TestCa::self_signed(ca_params(Some(&format!("spiffe://{td}"))))
    }

    pub fn self_signed(params: CertificateParams) -> TestCa {
        let key = new_key();
        let cert = params
            .self_signed(&key)
            .expect("self-signed CA")
            .der()
            .clone();
        TestCa {
            cert,
            chain: Vec::new(),
            issuer: Issuer::new(params, key),
        }
    }

    /// An intermediate CA signed by this one, made from `params` (start from [`ca_params`]).
    pub fn intermediate(&self, params: CertificateParams) -> TestCa {
        let key = new_key();
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("intermediate CA")
            .der()
            .clone();
        let chain = std::iter::once(cert.clone())
            .chain(self.chain.iter().cloned())
            .collect();
        TestCa {
            cert,
            chain,
            issuer: Issuer::new(params, key),
        }
    }

    /// A valid leaf for `spiffe_id`, to be changed before [`LeafBuilder::build`].
    pub fn leaf(&self, spiffe_id: &str) -> LeafBuilder<'_> {
        let mut params = CertificateParams::default();
        // Empty subject, as an X.509-SVID usually has (rcgen then marks the SAN critical).
        params.distinguished_name = DistinguishedName::new();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.subject_alt_names = vec![uri_san(spiffe_id)];
        params.not_before = now() - Duration::hours(1);
        params.not_after = now() + Duration::hours(1);
        params.use_authority_key_identifier_extension = true;
        LeafBuilder { ca: self, params }
    }

    /// This CA's private key as PKCS#8 PEM.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// A bundle of trust domain `name` holding this CA only.
    pub fn bundle(&self, name: &str) -> TrustBundle {
        TrustBundle::new(td(name), vec![self.cert.clone()]).expect("valid bundle")
    }
}

/// A leaf under construction: valid until a method changes it.
pub struct LeafBuilder<'a> {
    ca: &'a TestCa,
    pub params: CertificateParams,
}

impl LeafBuilder<'_> {
    /// Replaces every SAN with these URI SANs.
    pub fn uris(mut self, uris: &[&str]) -> Self {
        self.params.subject_alt_names = uris.iter().map(|u| uri_san(u)).collect();
        self
    }

    /// Replaces every SAN with these DNS SANs.
    pub fn dns_only(mut self, names: &[&str]) -> Self {
        self.params.subject_alt_names = names.iter().map(|n| dns_san(n)).collect();
        self
    }

    pub fn basic_constraints(mut self, is_ca: IsCa) -> Self {
        self.params.is_ca = is_ca;
        self
    }

    pub fn key_usages(mut self, usages: &[KeyUsagePurpose]) -> Self {
        self.params.key_usages = usages.to_vec();
        self
    }

    pub fn extended_key_usages(mut self, usages: &[ExtendedKeyUsagePurpose]) -> Self {
        self.params.extended_key_usages = usages.to_vec();
        self
    }

    pub fn validity(mut self, not_before: OffsetDateTime, not_after: OffsetDateTime) -> Self {
        self.params.not_before = not_before;
        self.params.not_after = not_after;
        self
    }

    /// Any other change to the parameters.
    pub fn with(mut self, change: impl FnOnce(&mut CertificateParams)) -> Self {
        change(&mut self.params);
        self
    }

    /// Signs the leaf for a new key; the chain is the leaf then the CA's chain.
    pub fn build(self) -> Svid {
        let key = new_key();
        let cert = self
            .params
            .signed_by(&key, &self.ca.issuer)
            .expect("leaf")
            .der()
            .clone();
        let chain = std::iter::once(cert)
            .chain(self.ca.chain.iter().cloned())
            .collect();
        Svid { chain, key }
    }
}

/// A presented chain (leaf first) and the leaf's private key.
pub struct Svid {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: KeyPair,
}

impl Svid {
    /// The same chain with the last byte of the leaf flipped: inside the signature, which ends the
    /// DER, so the certificate still parses but its signature no longer verifies.
    pub fn tampered(mut self) -> Svid {
        let mut der = self.chain[0].to_vec();
        *der.last_mut().expect("non-empty DER") ^= 0x01;
        self.chain[0] = CertificateDer::from(der);
        self
    }

    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }
}

/// The CAs the cases need, and the bundles a verifier holds: only `ca`'s, for [`TD1`].
pub struct World {
    /// The root of TD1 in the bundle.
    pub ca: TestCa,
    /// Another root of TD1, not in the bundle.
    pub other_ca: TestCa,
    /// The root of TD2, for which there is no bundle.
    pub td2_ca: TestCa,
    pub bundles: TrustBundleSet,
}

impl World {
    pub fn new() -> World {
        let ca = TestCa::root(TD1);
        let bundles = TrustBundleSet::from(ca.bundle(TD1));
        World {
            ca,
            other_ca: TestCa::root(TD1),
            td2_ca: TestCa::root(TD2),
            bundles,
        }
    }

    pub fn verify(&self, svid: &Svid, role: PeerRole) -> Result<SpiffeId, SvidError> {
        verify_svid(&svid.chain, &self.bundles, role, UnixTime::now())
    }
}

impl Default for World {
    fn default() -> Self {
        World::new()
    }
}

/// A chain that must be refused, and the exact reason.
pub struct BadCase {
    pub name: &'static str,
    pub svid: Svid,
    pub expected: SvidError,
}

fn case(name: &'static str, svid: Svid, expected: SvidError) -> BadCase {
    BadCase {
        name,
        svid,
        expected,
    }
}

/// An intermediate of TD1's CA made from `params`, and a valid leaf under it.
fn leaf_under(w: &World, params: CertificateParams) -> Svid {
    w.ca.intermediate(params).leaf(WORKLOAD).build()
}

/// Every chain a peer can present that `verify_svid` must refuse, each a valid SVID but for one
/// thing. (A root with a path in the bundle is refused earlier, by `TrustBundle::new`.)
pub fn negative_cases(w: &World) -> Vec<BadCase> {
    use ExtendedKeyUsagePurpose as Eku;
    use KeyUsagePurpose as Ku;
    let expired_at = now() - Duration::days(1);
    let valid_from = now() + Duration::days(1);
    vec![
        case(
            "two URI SANs",
            w.ca.leaf(WORKLOAD)
                .uris(&[WORKLOAD, "spiffe://example.org/other"])
                .build(),
            SvidError::MultipleUriSans(2),
        ),
        case(
            "https URI SAN",
            w.ca.leaf(WORKLOAD)
                .uris(&["https://example.org/workload"])
                .build(),
            SvidError::NotSpiffeUri("https://example.org/workload".into()),
        ),
        case(
            "no URI SAN (DNS only)",
            w.ca.leaf(WORKLOAD)
                .dns_only(&["workload.example.org"])
                .build(),
            SvidError::NoUriSan,
        ),
        case(
            "leaf with CA:true",
            w.ca.leaf(WORKLOAD)
                .basic_constraints(IsCa::Ca(BasicConstraints::Unconstrained))
                .build(),
            SvidError::LeafIsCa,
        ),
        case(
            "leaf with keyCertSign",
            w.ca.leaf(WORKLOAD)
                .key_usages(&[Ku::DigitalSignature, Ku::KeyCertSign])
                .build(),
            SvidError::LeafHasKeyCertSign,
        ),
        case(
            "leaf with cRLSign",
            w.ca.leaf(WORKLOAD)
                .key_usages(&[Ku::DigitalSignature, Ku::CrlSign])
                .build(),
            SvidError::LeafHasCrlSign,
        ),
        case(
            "leaf without basic constraints",
            w.ca.leaf(WORKLOAD).basic_constraints(IsCa::NoCa).build(),
            SvidError::LeafMissingBasicConstraints,
        ),
        case(
            "leaf ID without a path",
            w.ca.leaf("spiffe://example.org").build(),
            SvidError::LeafIdWithoutPath(id("spiffe://example.org")),
        ),
        case(
            "leaf without key usage",
            w.ca.leaf(WORKLOAD).key_usages(&[]).build(),
            SvidError::MissingKeyUsage,
        ),
        case(
            "key usage without digitalSignature",
            w.ca.leaf(WORKLOAD).key_usages(&[Ku::KeyAgreement]).build(),
            SvidError::MissingDigitalSignature,
        ),
        case(
            "key usage not critical",
            w.ca.leaf(WORKLOAD)
                .key_usages(&[])
                .with(|p| {
                    // keyUsage (2.5.29.15) = BIT STRING digitalSignature, not marked critical.
                    let ku =
                        CustomExtension::from_oid_content(&[2, 5, 29, 15], vec![3, 2, 7, 0x80]);
                    assert!(!ku.criticality());
                    p.custom_extensions.push(ku);
                })
                .build(),
            SvidError::KeyUsageNotCritical,
        ),
        case(
            "extended key usage serverAuth only",
            w.ca.leaf(WORKLOAD)
                .extended_key_usages(&[Eku::ServerAuth])
                .build(),
            SvidError::ExtendedKeyUsage,
        ),
        case(
            "expired",
            w.ca.leaf(WORKLOAD)
                .validity(expired_at - Duration::days(1), expired_at)
                .build(),
            SvidError::Expired(expired_at),
        ),
        case(
            "not yet valid",
            w.ca.leaf(WORKLOAD)
                .validity(valid_from, valid_from + Duration::days(1))
                .build(),
            SvidError::NotYetValid(valid_from),
        ),
        case(
            "other trust domain",
            w.td2_ca.leaf("spiffe://example.net/workload").build(),
            SvidError::NoBundleForTrustDomain(td(TD2)),
        ),
        case(
            "other CA of the same trust domain",
            w.other_ca.leaf(WORKLOAD).build(),
            SvidError::UnknownIssuer(td(TD1)),
        ),
        case(
            "tampered signature",
            w.ca.leaf(WORKLOAD).build().tampered(),
            SvidError::BadSignature,
        ),
        case(
            "intermediate whose ID has a path",
            leaf_under(w, ca_params(Some("spiffe://example.org/ca"))),
            SvidError::SigningCertIdHasPath {
                index: 1,
                id: id("spiffe://example.org/ca"),
            },
        ),
        case(
            "intermediate of another trust domain",
            leaf_under(w, ca_params(Some("spiffe://example.net"))),
            SvidError::SigningCertOtherTrustDomain {
                index: 1,
                found: td(TD2),
                expected: td(TD1),
            },
        ),
        case(
            "intermediate without keyCertSign",
            leaf_under(w, {
                let mut params = ca_params(Some("spiffe://example.org"));
                params.key_usages = vec![Ku::DigitalSignature, Ku::CrlSign];
                params
            }),
            SvidError::SigningCertCannotSign { index: 1 },
        ),
    ]
}

/// The case of `negative_cases` named `name`.
pub fn negative_case(w: &World, name: &str) -> BadCase {
    negative_cases(w)
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no case named {name:?}"))
}
