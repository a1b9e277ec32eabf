//! Checking a presented X.509-SVID chain: the one function every part of Palisade trusts a peer
//! through ([`verify_svid`]), and the trust bundles it checks against ([`TrustBundle`],
//! [`TrustBundleSet`]).
//!
//! Order matters and follows X509-SVID §5 and the Workload API §4.6: read the leaf's single URI
//! SAN, pick the bundle by the *peer's* trust domain (none means untrusted), check the leaf
//! profile, then let webpki validate the chain (RFC 5280, no name check: webpki cannot match URI
//! SANs), and check every signing certificate on the path.

use std::cell::RefCell;
use std::collections::HashMap;

use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{IdError, SpiffeId, TrustDomain};

/// Why a presented chain is not a valid X.509-SVID for us. One variant per rule, so that logs,
/// metrics and tests can tell them apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SvidError {
    /// The chain is empty.
    #[error("no certificate was presented")]
    NoCertificate,
    /// A certificate of the chain, or an extension the checks read, does not parse.
    #[error("certificate {index} of the chain cannot be parsed")]
    BadCertificate {
        /// Position in the chain, 0 being the leaf.
        index: usize,
    },
    /// The leaf has no URI SAN.
    #[error("the certificate has no URI SAN, so it carries no SPIFFE ID")]
    NoUriSan,
    /// The leaf has more than one URI SAN; how many.
    #[error("the certificate has {0} URI SANs; an X.509-SVID has exactly one")]
    MultipleUriSans(usize),
    /// The leaf's URI SAN does not have the `spiffe:` scheme.
    #[error("the URI SAN \"{0}\" is not a spiffe:// URI")]
    NotSpiffeUri(String),
    /// The leaf's URI SAN is a `spiffe:` URI that breaks a SPIFFE ID rule.
    #[error("the URI SAN \"{uri}\" is not a valid SPIFFE ID: {reason}")]
    InvalidSpiffeId {
        /// The URI SAN as written.
        uri: String,
        /// The rule it breaks.
        reason: IdError,
    },
    /// The leaf carries a bare trust domain ID, which only a CA may carry.
    #[error("the leaf's SPIFFE ID {0} has no path; only a trust domain's CA may carry such an ID")]
    LeafIdWithoutPath(SpiffeId),
    /// The leaf says CA:true.
    #[error("the leaf certificate is a CA (CA:true)")]
    LeafIsCa,
    /// The leaf has no basic constraints extension, which an SVID must have.
    #[error("the leaf certificate has no basic constraints extension")]
    LeafMissingBasicConstraints,
    /// The leaf's key usage includes keyCertSign.
    #[error("the leaf certificate may sign certificates (keyCertSign)")]
    LeafHasKeyCertSign,
    /// The leaf's key usage includes cRLSign.
    #[error("the leaf certificate may sign CRLs (cRLSign)")]
    LeafHasCrlSign,
    /// The leaf has no key usage extension.
    #[error("the certificate has no key usage extension")]
    MissingKeyUsage,
    /// The leaf's key usage extension is not marked critical.
    #[error("the certificate's key usage extension is not marked critical")]
    KeyUsageNotCritical,
    /// The leaf's key usage lacks digitalSignature.
    #[error("the leaf's key usage lacks digitalSignature")]
    MissingDigitalSignature,
    /// The leaf's extended key usage, when present, lacks serverAuth or clientAuth: an SVID
    /// allows both, whichever side presents it.
    #[error("the leaf's extended key usage lacks serverAuth or clientAuth")]
    ExtendedKeyUsage,
    /// We hold no bundle for the leaf's trust domain, so none of its IDs is trusted.
    #[error("no trust bundle for trust domain {0}")]
    NoBundleForTrustDomain(TrustDomain),
    /// `now` is past the NotAfter (given) of the leaf or a CA on the path.
    #[error("the certificate expired at {0}")]
    Expired(OffsetDateTime),
    /// `now` is before the NotBefore (given) of the leaf or a CA on the path.
    #[error("the certificate is not valid before {0}")]
    NotYetValid(OffsetDateTime),
    /// The chain does not lead to a root of the bundle of the leaf's trust domain (given).
    #[error("the chain does not lead to a root in the trust bundle of {0}")]
    UnknownIssuer(TrustDomain),
    /// A signature in the chain does not verify, or its algorithm does not fit the issuer's key.
    #[error("a signature in the chain does not verify")]
    BadSignature,
    /// A CA on the path carries a workload ID (one with a path).
    #[error(
        "signing certificate {index} of the chain carries the SPIFFE ID {id}, which has a path"
    )]
    SigningCertIdHasPath {
        /// Position in the chain, 0 being the leaf.
        index: usize,
        /// The ID it carries.
        id: SpiffeId,
    },
    /// A CA on the path carries the ID of another trust domain than the leaf's.
    #[error(
        "signing certificate {index} of the chain belongs to trust domain {found}, not {expected}"
    )]
    SigningCertOtherTrustDomain {
        /// Position in the chain, 0 being the leaf.
        index: usize,
        /// The trust domain of the CA's ID.
        found: TrustDomain,
        /// The leaf's trust domain.
        expected: TrustDomain,
    },
    /// A CA on the path lacks CA:true or keyCertSign.
    #[error("signing certificate {index} of the chain lacks keyCertSign")]
    SigningCertCannotSign {
        /// Position in the chain, 0 being the leaf.
        index: usize,
    },
    /// Any other webpki refusal, in webpki's words (its `Debug` form).
    #[error("the chain is not valid: {0}")]
    Chain(String),
}

/// Why a set of certificates cannot serve as a trust bundle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// No certificate given, or a PEM that holds none.
    #[error("the trust bundle holds no certificates")]
    Empty,
    /// The PEM does not parse; the parser's reason.
    #[error("the trust bundle is not valid PEM: {0}")]
    Pem(String),
    /// A certificate does not parse, or webpki cannot take it as a trust anchor.
    #[error("bundle certificate {index} cannot be parsed")]
    BadCertificate {
        /// Position in the bundle, from 0.
        index: usize,
    },
    /// A certificate lacks CA:true or keyCertSign, or has a URI SAN that is not one valid
    /// SPIFFE ID.
    #[error("bundle certificate {index} is not a CA certificate (CA:true with keyCertSign)")]
    NotACa {
        /// Position in the bundle, from 0.
        index: usize,
    },
    /// A certificate carries a workload ID (one with a path).
    #[error("bundle certificate {index} carries the SPIFFE ID {id}, which has a path; a CA's ID has none")]
    RootIdHasPath {
        /// Position in the bundle, from 0.
        index: usize,
        /// The ID it carries.
        id: SpiffeId,
    },
    /// No root carries a `spiffe://<trust-domain>` URI SAN to say which trust domain it is for.
    #[error("no bundle certificate names its trust domain (a URI SAN spiffe://<trust-domain>)")]
    NoTrustDomain,
    /// A certificate carries the ID of another trust domain than the bundle's.
    #[error("bundle certificate {index} belongs to trust domain {found}, not {expected}")]
    OtherTrustDomain {
        /// Position in the bundle, from 0.
        index: usize,
        /// The trust domain of the certificate's ID.
        found: TrustDomain,
        /// The trust domain the bundle is for.
        expected: TrustDomain,
    },
}

impl From<crate::pem::PemError> for BundleError {
    fn from(e: crate::pem::PemError) -> Self {
        match e {
            crate::pem::PemError::NoCertificate => BundleError::Empty,
            crate::pem::PemError::Invalid(why) => BundleError::Pem(why),
        }
    }
}

/// Which side of a TLS handshake the peer is: decides the extended key usage webpki requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRole {
    /// The peer is a TLS client presenting a client certificate.
    Client,
    /// The peer is a TLS server.
    Server,
}

/// The CA certificates trusted for one trust domain.
#[derive(Debug, Clone)]
pub struct TrustBundle {
    trust_domain: TrustDomain,
    roots: Vec<CertificateDer<'static>>,
    anchors: Vec<TrustAnchor<'static>>,
}

impl TrustBundle {
    /// Builds a bundle from CA certificates. Each must be a CA, and if it carries a SPIFFE ID,
    /// that ID must be `trust_domain`'s own (no path).
    pub fn new(
        trust_domain: TrustDomain,
        roots: Vec<CertificateDer<'static>>,
    ) -> Result<Self, BundleError> {
        if roots.is_empty() {
            return Err(BundleError::Empty);
        }
        let mut anchors = Vec::with_capacity(roots.len());
        for (index, der) in roots.iter().enumerate() {
            let (_, cert) = X509Certificate::from_der(der)
                .map_err(|_| BundleError::BadCertificate { index })?;
            if !is_signing_cert(&cert) {
                return Err(BundleError::NotACa { index });
            }
            if let Some(id) = signing_cert_id(&cert).map_err(|_| BundleError::NotACa { index })? {
                if id.has_path() {
                    return Err(BundleError::RootIdHasPath { index, id });
                }
                if id.trust_domain() != &trust_domain {
                    return Err(BundleError::OtherTrustDomain {
                        index,
                        found: id.trust_domain().clone(),
                        expected: trust_domain,
                    });
                }
            }
            let anchor = webpki::anchor_from_trusted_cert(der)
                .map_err(|_| BundleError::BadCertificate { index })?
                .to_owned();
            anchors.push(anchor);
        }
        Ok(TrustBundle {
            trust_domain,
            roots,
            anchors,
        })
    }

    /// Reads a bundle from PEM (any number of `CERTIFICATE` blocks).
    pub fn from_pem(trust_domain: TrustDomain, pem: &[u8]) -> Result<Self, BundleError> {
        TrustBundle::new(trust_domain, crate::pem::certificates_from_pem(pem)?)
    }

    /// Reads a bundle whose roots name their trust domain (the `spiffe://<td>` URI SAN every
    /// Palisade CA carries): what a client holding only `bundle.pem` starts from.
    pub fn from_pem_own_domain(pem: &[u8]) -> Result<Self, BundleError> {
        let roots = crate::pem::certificates_from_pem(pem)?;
        let trust_domain = roots
            .iter()
            .find_map(|der| {
                let (_, cert) = X509Certificate::from_der(der).ok()?;
                signing_cert_id(&cert).ok().flatten()
            })
            .map(|id| id.trust_domain().clone())
            .ok_or(BundleError::NoTrustDomain)?;
        TrustBundle::new(trust_domain, roots)
    }

    /// The trust domain whose IDs this bundle vouches for.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The CA certificates (DER), in the order given.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// The bundle as PEM, as `bundle.pem` holds it.
    pub fn to_pem(&self) -> String {
        self.roots
            .iter()
            .map(crate::pem::certificate_to_pem)
            .collect()
    }
}

/// Trust bundles by trust domain: the peer's trust domain picks the one its chain must verify to.
#[derive(Debug, Clone, Default)]
pub struct TrustBundleSet {
    bundles: HashMap<TrustDomain, TrustBundle>,
}

impl TrustBundleSet {
    /// An empty set: every peer is untrusted until a bundle is inserted.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a bundle, replacing any earlier one for the same trust domain.
    pub fn insert(&mut self, bundle: TrustBundle) {
        self.bundles.insert(bundle.trust_domain.clone(), bundle);
    }

    /// The bundle for `trust_domain`, if we hold one.
    pub fn get(&self, trust_domain: &TrustDomain) -> Option<&TrustBundle> {
        self.bundles.get(trust_domain)
    }

    /// The trust domains we hold bundles for, in no particular order.
    pub fn trust_domains(&self) -> impl Iterator<Item = &TrustDomain> {
        self.bundles.keys()
    }
}

impl From<TrustBundle> for TrustBundleSet {
    fn from(bundle: TrustBundle) -> Self {
        let mut set = TrustBundleSet::new();
        set.insert(bundle);
        set
    }
}

/// Verifies a presented chain (leaf first) against the bundle of the leaf's trust domain and every
/// X.509-SVID rule, and returns the peer's SPIFFE ID. Authorization (is this ID allowed here?)
/// is the caller's next step, never part of this one.
pub fn verify_svid(
    chain: &[CertificateDer<'_>],
    bundles: &TrustBundleSet,
    role: PeerRole,
    now: UnixTime,
) -> Result<SpiffeId, SvidError> {
    let (leaf, intermediates) = chain.split_first().ok_or(SvidError::NoCertificate)?;
    verify_svid_parts(leaf, intermediates, bundles, role, now).map(|verified| verified.id)
}

/// A chain that passed [`verify_svid`], and the span of time in which it would pass again: the
/// overlap of the validity of every certificate on the verified path.
#[derive(Debug, Clone)]
pub(crate) struct VerifiedSvid {
    pub id: SpiffeId,
    pub valid_from: i64,
    pub valid_until: i64,
}

/// [`verify_svid`] for a leaf and its intermediates held apart, as rustls hands them over.
pub(crate) fn verify_svid_parts(
    leaf_der: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    bundles: &TrustBundleSet,
    role: PeerRole,
    now: UnixTime,
) -> Result<VerifiedSvid, SvidError> {
    let (_, leaf) =
        X509Certificate::from_der(leaf_der).map_err(|_| SvidError::BadCertificate { index: 0 })?;
    let id = check_leaf(&leaf)?;
    let bundle = bundles
        .get(id.trust_domain())
        .ok_or_else(|| SvidError::NoBundleForTrustDomain(id.trust_domain().clone()))?;
    check_validity(&leaf, now)?;

    let end_entity = webpki::EndEntityCert::try_from(leaf_der)
        .map_err(|_| SvidError::BadCertificate { index: 0 })?;
    let usage = match role {
        PeerRole::Client => webpki::KeyUsage::client_auth(),
        PeerRole::Server => webpki::KeyUsage::server_auth(),
    };
    let validity = leaf.validity();
    let window = RefCell::new((
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    ));
    // webpki reports only its own error from the path callback; keep ours aside to return it.
    let path_error: RefCell<Option<SvidError>> = RefCell::new(None);
    let check_path = |path: &webpki::VerifiedPath<'_>| -> Result<(), webpki::Error> {
        for (offset, cert) in path.intermediate_certificates().enumerate() {
            match check_intermediate(&cert.der(), offset + 1, id.trust_domain()) {
                Ok((from, until)) => {
                    let mut w = window.borrow_mut();
                    *w = (w.0.max(from), w.1.min(until));
                }
                Err(e) => {
                    *path_error.borrow_mut() = Some(e);
                    return Err(webpki::Error::CaUsedAsEndEntity);
                }
            }
        }
        Ok(())
    };
    let result = end_entity.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &bundle.anchors,
        intermediates,
        now,
        usage,
        None,
        Some(&check_path),
    );
    match result {
        Ok(_) => {
            let (valid_from, valid_until) = window.into_inner();
            Ok(VerifiedSvid {
                id,
                valid_from,
                valid_until,
            })
        }
        Err(e) => Err(path_error
            .into_inner()
            .unwrap_or_else(|| chain_error(e, id.trust_domain()))),
    }
}

/// Checks the leaf profile of X509-SVID §4 and §5.2 and returns the leaf's SPIFFE ID.
/// Needs no bundle: `cert inspect` uses it on its own.
pub fn check_leaf(leaf: &X509Certificate<'_>) -> Result<SpiffeId, SvidError> {
    let id = spiffe_id_of(leaf)?;
    if !id.has_path() {
        return Err(SvidError::LeafIdWithoutPath(id));
    }
    match leaf.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => return Err(SvidError::LeafIsCa),
        Ok(Some(_)) => {}
        Ok(None) => return Err(SvidError::LeafMissingBasicConstraints),
        Err(_) => return Err(SvidError::BadCertificate { index: 0 }),
    }
    let key_usage = match leaf.key_usage() {
        Ok(Some(ku)) => ku,
        Ok(None) => return Err(SvidError::MissingKeyUsage),
        Err(_) => return Err(SvidError::BadCertificate { index: 0 }),
    };
    if key_usage.value.key_cert_sign() {
        return Err(SvidError::LeafHasKeyCertSign);
    }
    if key_usage.value.crl_sign() {
        return Err(SvidError::LeafHasCrlSign);
    }
    if !key_usage.value.digital_signature() {
        return Err(SvidError::MissingDigitalSignature);
    }
    if !key_usage.critical {
        return Err(SvidError::KeyUsageNotCritical);
    }
    match leaf.extended_key_usage() {
        Ok(Some(eku)) if !(eku.value.server_auth && eku.value.client_auth) => {
            return Err(SvidError::ExtendedKeyUsage)
        }
        Ok(_) => {}
        Err(_) => return Err(SvidError::BadCertificate { index: 0 }),
    }
    Ok(id)
}

/// A certificate's NotAfter.
pub fn not_after(der: &CertificateDer<'_>) -> Result<OffsetDateTime, SvidError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|_| SvidError::BadCertificate { index: 0 })?;
    Ok(cert.validity().not_after.to_datetime())
}

/// The SPIFFE ID in a certificate's single URI SAN.
pub fn spiffe_id_of(cert: &X509Certificate<'_>) -> Result<SpiffeId, SvidError> {
    let uris = uri_sans(cert)?;
    let uri = match uris.as_slice() {
        [] => return Err(SvidError::NoUriSan),
        [uri] => *uri,
        many => return Err(SvidError::MultipleUriSans(many.len())),
    };
    if !uri.starts_with("spiffe:") {
        return Err(SvidError::NotSpiffeUri(uri.to_owned()));
    }
    SpiffeId::parse(uri).map_err(|reason| SvidError::InvalidSpiffeId {
        uri: uri.to_owned(),
        reason,
    })
}

/// Every URI SAN of a certificate; an unparseable SAN extension is an error, not "none".
pub fn uri_sans<'a>(cert: &'a X509Certificate<'_>) -> Result<Vec<&'a str>, SvidError> {
    let sans = cert
        .subject_alternative_name()
        .map_err(|_| SvidError::BadCertificate { index: 0 })?;
    Ok(sans
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::URI(uri) => Some(*uri),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

/// NotBefore <= now <= NotAfter, with the error naming the bound that failed.
pub(crate) fn check_validity(cert: &X509Certificate<'_>, now: UnixTime) -> Result<(), SvidError> {
    let now = now.as_secs() as i64;
    let validity = cert.validity();
    if now < validity.not_before.timestamp() {
        return Err(SvidError::NotYetValid(validity.not_before.to_datetime()));
    }
    if now > validity.not_after.timestamp() {
        return Err(SvidError::Expired(validity.not_after.to_datetime()));
    }
    Ok(())
}

/// X509-SVID §3.2 and §4 for a signing certificate on the verified path: it can sign, and if it
/// carries a SPIFFE ID, that ID is its trust domain's own. Returns its validity (Unix seconds).
fn check_intermediate(
    der: &[u8],
    index: usize,
    trust_domain: &TrustDomain,
) -> Result<(i64, i64), SvidError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|_| SvidError::BadCertificate { index })?;
    if !is_signing_cert(&cert) {
        return Err(SvidError::SigningCertCannotSign { index });
    }
    let validity = (
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    );
    match signing_cert_id(&cert) {
        Ok(None) => Ok(validity),
        Ok(Some(id)) if id.has_path() => Err(SvidError::SigningCertIdHasPath { index, id }),
        Ok(Some(id)) if id.trust_domain() != trust_domain => {
            Err(SvidError::SigningCertOtherTrustDomain {
                index,
                found: id.trust_domain().clone(),
                expected: trust_domain.clone(),
            })
        }
        Ok(Some(_)) => Ok(validity),
        Err(_) => Err(SvidError::BadCertificate { index }),
    }
}

/// CA:true and, since X509-SVID §4.3 requires key usage on every SVID, keyCertSign.
fn is_signing_cert(cert: &X509Certificate<'_>) -> bool {
    let ca = matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
    let signs = matches!(cert.key_usage(), Ok(Some(ku)) if ku.value.key_cert_sign());
    ca && signs
}

/// A signing certificate's SPIFFE ID, if it has one (it MAY omit it).
fn signing_cert_id(cert: &X509Certificate<'_>) -> Result<Option<SpiffeId>, SvidError> {
    match spiffe_id_of(cert) {
        Ok(id) => Ok(Some(id)),
        Err(SvidError::NoUriSan) => Ok(None),
        Err(e) => Err(e),
    }
}

fn chain_error(error: webpki::Error, trust_domain: &TrustDomain) -> SvidError {
    use webpki::Error as E;
    match error {
        E::UnknownIssuer => SvidError::UnknownIssuer(trust_domain.clone()),
        E::CertExpired { not_after, .. } => SvidError::Expired(unix_to_datetime(not_after)),
        E::CertNotValidYet { not_before, .. } => {
            SvidError::NotYetValid(unix_to_datetime(not_before))
        }
        E::InvalidSignatureForPublicKey
        | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => SvidError::BadSignature,
        E::RequiredEkuNotFoundContext(_) => SvidError::ExtendedKeyUsage,
        other => SvidError::Chain(format!("{other:?}")),
    }
}

fn unix_to_datetime(t: UnixTime) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(t.as_secs() as i64).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}
