//! Issuing X.509-SVIDs: a root CA for a trust domain, and leaf certificates for workloads.
//!
//! The profile is fixed here, not by the caller and never by a CSR: a leaf carries exactly one URI
//! SAN (its SPIFFE ID, with a path), optional DNS SANs, critical key usage digitalSignature,
//! extended key usage serverAuth + clientAuth and CA:false. A CA certificate carries CA:true,
//! keyCertSign + cRLSign and the trust domain's ID (no path). Every certificate gets a random
//! 16-byte positive serial, NotBefore set back [`CLOCK_SKEW_ALLOWANCE`], and a NotAfter that never
//! passes its issuer's.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate, X509CertificationRequest};

use palisade_identity::{SpiffeId, TrustDomain};

/// How far NotBefore is set back, so that a peer whose clock is a little behind ours accepts a
/// certificate issued this second.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(45);

/// The key algorithms a CA or workload key can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyType {
    /// ECDSA on P-256 with SHA-256: the default, which every TLS stack reads.
    #[default]
    EcdsaP256,
    /// Ed25519.
    Ed25519,
}

impl KeyType {
    /// The name the command line takes and prints: `ecdsa-p256` or `ed25519`.
    pub fn name(self) -> &'static str {
        match self {
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::Ed25519 => "ed25519",
        }
    }

    fn algorithm(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            KeyType::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyType::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }

    /// The key type of a public key, if it is one we issue for.
    pub fn of_spki(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Option<KeyType> {
        use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_SIG_ED25519};
        let algorithm = &spki.algorithm;
        if algorithm.algorithm == OID_SIG_ED25519 {
            return Some(KeyType::Ed25519);
        }
        let curve = algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok());
        (algorithm.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY && curve == Some(OID_EC_P256))
            .then_some(KeyType::EcdsaP256)
    }

    /// Generates a fresh private key of this type.
    pub fn generate(self) -> Result<KeyPair, IssueError> {
        KeyPair::generate_for(self.algorithm()).map_err(IssueError::Crypto)
    }
}

impl std::str::FromStr for KeyType {
    type Err = IssueError;
    fn from_str(s: &str) -> Result<Self, IssueError> {
        match s {
            "ecdsa-p256" => Ok(KeyType::EcdsaP256),
            "ed25519" => Ok(KeyType::Ed25519),
            other => Err(IssueError::UnknownKeyType(other.to_owned())),
        }
    }
}

impl std::fmt::Display for KeyType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a certificate or CA was not made, or a CA not loaded.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// A key type name other than `ecdsa-p256` and `ed25519`.
    #[error("unknown key type \"{0}\" (expected ecdsa-p256 or ed25519)")]
    UnknownKeyType(String),
    /// The requested ID is a bare trust domain; a workload's ID has a path.
    #[error("a workload's SPIFFE ID needs a path, \"{0}\" has none")]
    IdWithoutPath(SpiffeId),
    /// The requested ID is in another trust domain than the CA's.
    #[error("{id} is outside this CA's trust domain {trust_domain}")]
    OtherTrustDomain {
        /// The ID asked for.
        id: SpiffeId,
        /// The CA's trust domain.
        trust_domain: TrustDomain,
    },
    /// A requested DNS SAN is not a valid DNS name (empty and trailing-dot names included).
    #[error("\"{0}\" is not a valid DNS name")]
    BadDnsName(String),
    /// A TTL of zero.
    #[error("the lifetime must be longer than zero")]
    ZeroLifetime,
    /// The CA is past its NotAfter (given), so it issues nothing.
    #[error("the CA certificate expired at {0}; it cannot issue anything")]
    CaExpired(OffsetDateTime),
    /// The CSR does not parse.
    #[error("the certificate signing request is not valid DER")]
    BadCsr,
    /// The CSR's signature does not verify: the caller has not shown that it holds the key.
    #[error("the certificate signing request's signature does not verify")]
    CsrSignature,
    /// The CSR's key is neither ECDSA P-256 nor Ed25519.
    #[error(
        "the certificate signing request's key type is not supported (use ECDSA P-256 or Ed25519)"
    )]
    CsrKeyType,
    /// An issuing CA was asked of a CA that is itself an issuer.
    #[error("an issuer can only be made from a root CA (this CA is itself an issuer)")]
    NotARoot,
    /// The CA certificate does not parse.
    #[error("the CA certificate cannot be parsed")]
    BadCaCertificate,
    /// The CA certificate lacks CA:true or keyCertSign.
    #[error("the CA certificate is not a CA (CA:true and keyCertSign are required)")]
    NotACa,
    /// The CA certificate's URI SAN is not one trust domain ID (`spiffe://td`, no path).
    #[error("the CA certificate does not name a SPIFFE trust domain in its URI SAN")]
    CaWithoutTrustDomain,
    /// The CA key is not the CA certificate's.
    #[error("the CA private key does not match the CA certificate")]
    KeyMismatch,
    /// The CA key is not a PEM private key that rcgen can load; rcgen's reason.
    #[error("the CA private key cannot be read: {0}")]
    BadCaKey(rcgen::Error),
    /// Making a key or signing failed; rcgen's reason.
    #[error("signing failed: {0}")]
    Crypto(rcgen::Error),
}

/// What the caller asks for in a leaf; the rest of the profile is not negotiable.
#[derive(Debug, Clone)]
pub struct LeafRequest {
    /// The ID the leaf carries: it must have a path and be in the CA's trust domain.
    pub spiffe_id: SpiffeId,
    /// How long the leaf is valid from now: not zero, and cut to the CA's own NotAfter.
    pub ttl: Duration,
    /// DNS SANs beside the SPIFFE ID; none by default.
    pub dns_names: Vec<String>,
}

impl LeafRequest {
    /// A request for `spiffe_id`, valid for `ttl`, without DNS names.
    pub fn new(spiffe_id: SpiffeId, ttl: Duration) -> Self {
        LeafRequest {
            spiffe_id,
            ttl,
            dns_names: Vec::new(),
        }
    }
}

/// A certificate just issued, with the chain that a workload presents with it.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// The new certificate.
    pub cert: CertificateDer<'static>,
    /// The certificates between it and a root, leaf's issuer first (empty when a root signed it).
    pub chain: Vec<CertificateDer<'static>>,
    /// Start of validity: the time of issue minus [`CLOCK_SKEW_ALLOWANCE`].
    pub not_before: OffsetDateTime,
    /// End of validity: the time of issue plus the TTL, never past the CA's own.
    pub not_after: OffsetDateTime,
    /// The serial number: 16 random bytes, big-endian, positive.
    pub serial: Vec<u8>,
}

impl IssuedCert {
    /// The certificate then its chain, as PEM: what `cert.pem` holds.
    pub fn chain_pem(&self) -> String {
        std::iter::once(&self.cert)
            .chain(&self.chain)
            .map(|der| palisade_identity::pem::certificate_to_pem(der))
            .collect()
    }
}

/// A CSR whose signature verifies and whose key is of a type we sign for: the caller holds the
/// key. Checking apart from issuing lets a service refuse a bad CSR before it spends a one-time
/// credential on it.
#[derive(Debug, Clone)]
pub struct CheckedCsr {
    spki_der: Vec<u8>,
}

impl CheckedCsr {
    /// Parses `csr_der`, verifies its signature and checks its key type.
    pub fn check(csr_der: &[u8]) -> Result<CheckedCsr, IssueError> {
        let (_, csr) =
            X509CertificationRequest::from_der(csr_der).map_err(|_| IssueError::BadCsr)?;
        csr.verify_signature()
            .map_err(|_| IssueError::CsrSignature)?;
        let spki = &csr.certification_request_info.subject_pki;
        if KeyType::of_spki(spki).is_none() {
            return Err(IssueError::CsrKeyType);
        }
        Ok(CheckedCsr {
            spki_der: spki.raw.to_vec(),
        })
    }
}

/// A signing authority for one trust domain: its certificate and private key.
pub struct CertificateAuthority {
    trust_domain: TrustDomain,
    cert: CertificateDer<'static>,
    /// Certificates above this CA up to, not including, the root; empty for a root CA.
    chain: Vec<CertificateDer<'static>>,
    /// Self-issued (subject = issuer): a root, which its leaves do not present.
    is_root: bool,
    not_after: OffsetDateTime,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.trust_domain)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Makes a new self-signed root CA for `trust_domain`, valid for `ttl` from now.
    pub fn generate_root(
        trust_domain: &TrustDomain,
        key_type: KeyType,
        ttl: Duration,
    ) -> Result<Self, IssueError> {
        let key = key_type.generate()?;
        let now = now_in_whole_seconds();
        let params = ca_params(
            trust_domain,
            BasicConstraints::Unconstrained,
            now,
            now + nonzero(ttl)?,
        )?;
        let cert = params.self_signed(&key).map_err(IssueError::Crypto)?;
        Ok(CertificateAuthority {
            trust_domain: trust_domain.clone(),
            cert: cert.der().clone(),
            chain: Vec::new(),
            is_root: true,
            not_after: params.not_after,
            issuer: Issuer::new(params, key),
        })
    }

    /// Makes a new issuing (intermediate) CA under this root, so that the root's key can stay
    /// offline: CA:true with pathLen 0 (it signs leaves only), the trust domain's ID, valid for
    /// `ttl` but never past the root. Its leaves present the chain leaf → issuer; bundles hold
    /// roots only.
    pub fn generate_issuer(&self, key_type: KeyType, ttl: Duration) -> Result<Self, IssueError> {
        if !self.is_root {
            return Err(IssueError::NotARoot);
        }
        let now = now_in_whole_seconds();
        if now >= self.not_after {
            return Err(IssueError::CaExpired(self.not_after));
        }
        let key = key_type.generate()?;
        let mut params = ca_params(
            &self.trust_domain,
            BasicConstraints::Constrained(0),
            now,
            (now + nonzero(ttl)?).min(self.not_after),
        )?;
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(IssueError::Crypto)?;
        Ok(CertificateAuthority {
            trust_domain: self.trust_domain.clone(),
            cert: cert.der().clone(),
            chain: Vec::new(),
            is_root: false,
            not_after: params.not_after,
            issuer: Issuer::new(params, key),
        })
    }

    /// Whether this CA is a self-signed root (else an issuer under one).
    pub fn is_root(&self) -> bool {
        self.is_root
    }

    /// Loads a CA from its certificate (DER) and PKCS#8 private key (PEM), checking that they
    /// belong together and that the certificate is a CA of a SPIFFE trust domain.
    pub fn from_parts(
        cert: CertificateDer<'static>,
        chain: Vec<CertificateDer<'static>>,
        key_pem: &str,
    ) -> Result<Self, IssueError> {
        let key = KeyPair::from_pem(key_pem).map_err(IssueError::BadCaKey)?;
        let (_, parsed) =
            X509Certificate::from_der(&cert).map_err(|_| IssueError::BadCaCertificate)?;
        let is_ca = parsed
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|bc| bc.value.ca);
        let signs = parsed
            .key_usage()
            .ok()
            .flatten()
            .is_some_and(|ku| ku.value.key_cert_sign());
        if !is_ca || !signs {
            return Err(IssueError::NotACa);
        }
        if parsed.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(IssueError::KeyMismatch);
        }
        let trust_domain = palisade_identity::uri_sans(&parsed)
            .ok()
            .and_then(|uris| match uris.as_slice() {
                [uri] => SpiffeId::parse(uri).ok(),
                _ => None,
            })
            .filter(|id| !id.has_path())
            .map(|id| id.trust_domain().clone())
            .ok_or(IssueError::CaWithoutTrustDomain)?;
        let is_root = parsed.subject().as_raw() == parsed.issuer().as_raw();
        let not_after = parsed.validity().not_after.to_datetime();
        let issuer = Issuer::from_ca_cert_der(&cert, key).map_err(IssueError::Crypto)?;
        Ok(CertificateAuthority {
            trust_domain,
            cert,
            chain,
            is_root,
            not_after,
            issuer,
        })
    }

    /// The trust domain it issues for.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// Its own certificate (DER).
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// Certificates above this CA, up to but not including the root (empty for a root).
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// When its certificate expires; nothing it issues outlives it.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// The CA's private key as PKCS#8 PEM, to be stored 0600 (see [`private_key_pem`]).
    pub fn key_pem(&self) -> String {
        private_key_pem(self.issuer.key())
    }

    /// Issues a leaf for the public key of a CSR. The CSR's signature must verify (proof that the
    /// caller holds the key); everything else in it (subject, SANs, extensions) is ignored: the
    /// request decides the identity.
    pub fn issue_from_csr(
        &self,
        csr_der: &[u8],
        request: &LeafRequest,
    ) -> Result<IssuedCert, IssueError> {
        self.issue_for_csr(&CheckedCsr::check(csr_der)?, request)
    }

    /// Issues a leaf for a CSR already checked with [`CheckedCsr::check`].
    pub fn issue_for_csr(
        &self,
        csr: &CheckedCsr,
        request: &LeafRequest,
    ) -> Result<IssuedCert, IssueError> {
        let public_key = rcgen::SubjectPublicKeyInfo::from_der(&csr.spki_der)
            .map_err(|_| IssueError::CsrKeyType)?;
        self.issue_for_key(&public_key, request)
    }

    /// Generates a key for the caller and issues a leaf for it.
    pub fn issue_with_new_key(
        &self,
        request: &LeafRequest,
        key_type: KeyType,
    ) -> Result<(IssuedCert, KeyPair), IssueError> {
        let key = key_type.generate()?;
        let issued = self.issue_for_key(&key, request)?;
        Ok((issued, key))
    }

    fn issue_for_key(
        &self,
        public_key: &impl rcgen::PublicKeyData,
        request: &LeafRequest,
    ) -> Result<IssuedCert, IssueError> {
        let id = &request.spiffe_id;
        if !id.has_path() {
            return Err(IssueError::IdWithoutPath(id.clone()));
        }
        if id.trust_domain() != &self.trust_domain {
            return Err(IssueError::OtherTrustDomain {
                id: id.clone(),
                trust_domain: self.trust_domain.clone(),
            });
        }
        if request.ttl.is_zero() {
            return Err(IssueError::ZeroLifetime);
        }
        let now = now_in_whole_seconds();
        if now >= self.not_after {
            return Err(IssueError::CaExpired(self.not_after));
        }
        let mut params = CertificateParams::default();
        let serial = random_serial();
        params.serial_number = Some(serial.clone());
        params.not_before = now - CLOCK_SKEW_ALLOWANCE;
        params.not_after = (now + request.ttl).min(self.not_after);
        // An empty subject makes rcgen mark the SAN extension critical, as X509-SVID §3.1 asks.
        params.distinguished_name = DistinguishedName::new();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.subject_alt_names = std::iter::once(uri_san(id))
            .chain(request.dns_names.iter().map(|name| dns_san(name)))
            .collect::<Result<_, _>>()?;
        let cert = params
            .signed_by(public_key, &self.issuer)
            .map_err(IssueError::Crypto)?;
        Ok(IssuedCert {
            cert: cert.der().clone(),
            // The leaf's issuer first: this CA, unless it is a root, then those above it.
            chain: (!self.is_root)
                .then(|| self.cert.clone())
                .into_iter()
                .chain(self.chain.iter().cloned())
                .collect(),
            not_before: params.not_before,
            not_after: params.not_after,
            serial: serial.to_bytes(),
        })
    }
}

/// The profile every CA certificate of ours shares. A subject of its own for every CA: verifiers
/// that meet two CAs with one subject try both and can give up (spiffe/spire#4415). The key
/// identifier is the key's SHA-256.
fn ca_params(
    trust_domain: &TrustDomain,
    constraints: BasicConstraints,
    now: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, IssueError> {
    let mut params = CertificateParams::default();
    params.serial_number = Some(random_serial());
    params.not_before = now - CLOCK_SKEW_ALLOWANCE;
    params.not_after = not_after;
    let mut subject = DistinguishedName::new();
    subject.push(DnType::OrganizationName, trust_domain.as_str());
    let role = match constraints {
        BasicConstraints::Unconstrained => "CA",
        BasicConstraints::Constrained(_) => "issuer",
    };
    subject.push(
        DnType::CommonName,
        format!("Palisade {role} {}", hex(&random_bytes::<6>())),
    );
    params.distinguished_name = subject;
    params.is_ca = IsCa::Ca(constraints);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.subject_alt_names = vec![uri_san(&trust_domain.id())?];
    Ok(params)
}

fn nonzero(ttl: Duration) -> Result<Duration, IssueError> {
    if ttl.is_zero() {
        return Err(IssueError::ZeroLifetime);
    }
    Ok(ttl)
}

fn uri_san(id: &SpiffeId) -> Result<SanType, IssueError> {
    let uri = id
        .as_str()
        .to_owned()
        .try_into()
        .map_err(IssueError::Crypto)?;
    Ok(SanType::URI(uri))
}

fn dns_san(name: &str) -> Result<SanType, IssueError> {
    let valid = rustls_pki_types::DnsName::try_from(name).is_ok()
        && !name.is_empty()
        && !name.ends_with('.');
    if !valid {
        return Err(IssueError::BadDnsName(name.to_owned()));
    }
    let ia5 = name
        .to_owned()
        .try_into()
        .map_err(|_| IssueError::BadDnsName(name.to_owned()))?;
    Ok(SanType::DnsName(ia5))
}

/// 16 random bytes, kept positive and of full length (RFC 5280 §4.1.2.2 wants a positive
/// integer; a leading 0x40 bit keeps DER from shortening it). rcgen's default serial is a hash of
/// the public key, which repeats whenever a key is re-certified.
fn random_serial() -> SerialNumber {
    let mut bytes = random_bytes::<16>();
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

/// Certificates hold whole seconds; computing in whole seconds keeps what we report equal to
/// what we signed.
fn now_in_whole_seconds() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0).unwrap_or(now)
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system random number generator failed");
    bytes
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// DER prefix of an Ed25519 PKCS#8 v2 key (RFC 8410 OneAsymmetricKey, version 1 = v2) up to its
/// 32-byte seed, and of the same key as PKCS#8 v1 (RFC 5208 PrivateKeyInfo, version 0).
const ED25519_PKCS8_V2_PREFIX: [u8; 16] = [
    0x30, 0x51, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
const ED25519_PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// A private key as PKCS#8 PEM in the form every common reader accepts. aws-lc writes Ed25519
/// keys as PKCS#8 v2 (the public key included, RFC 8410), which OpenSSL 3.0 ("STORE routines:
/// unsupported", and so curl, nginx and HAProxy) and Python's `cryptography` cannot read; the v1
/// form (RFC 5208: version 0, the 32-byte seed only) reads everywhere, our own loaders included.
/// P-256 keys are written as they are.
pub fn private_key_pem(key: &KeyPair) -> String {
    let der = key.serialize_der();
    let v1 = match der.strip_prefix(&ED25519_PKCS8_V2_PREFIX[..]) {
        Some(rest) if rest.len() >= 32 => {
            let mut v1 = ED25519_PKCS8_V1_PREFIX.to_vec();
            v1.extend_from_slice(&rest[..32]);
            v1
        }
        _ => der,
    };
    ::pem::encode_config(
        &::pem::Pem::new("PRIVATE KEY", v1),
        ::pem::EncodeConfig::new().set_line_ending(::pem::LineEnding::LF),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 14: Ed25519 keys are written as PKCS#8 v1, and both forms still load, in rcgen (the
    /// CA reading its own key) and in rustls (the sidecar reading a workload's key).
    #[test]
    fn ed25519_keys_are_written_as_pkcs8_v1_and_both_forms_load() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let v2 = key.serialize_pem();
        let v1 = private_key_pem(&key);
        let der = ::pem::parse(&v1).unwrap().into_contents();
        assert_eq!(der.len(), 48, "v1: the 16-byte header and the 32-byte seed");
        assert_eq!(der[..16], ED25519_PKCS8_V1_PREFIX);
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        for pem in [&v1, &v2] {
            let again = KeyPair::from_pem(pem).unwrap();
            assert_eq!(again.public_key_raw(), key.public_key_raw());
            let for_rustls = palisade_identity::pem::private_key_from_pem(pem.as_bytes()).unwrap();
            assert!(provider.key_provider.load_private_key(for_rustls).is_ok());
        }
        let p256 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        assert_eq!(
            private_key_pem(&p256),
            p256.serialize_pem(),
            "P-256 as it was"
        );
    }
}
