//! rustls verifiers for X.509-SVIDs: [`SpiffeServerVerifier`] (a client checking the server it
//! reached) and [`SpiffeClientVerifier`] (a server requiring and checking client certificates).
//!
//! Both run [`crate::verify_svid`] (chain validation without a DNS-name check, every SPIFFE leaf
//! rule), then ask an [`AuthorizeId`] whether the peer's ID may connect. A refusal becomes a TLS
//! alert; [`peer_error`] gets our reason back out of the rustls error for logs and metrics.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::svid::{verify_svid_parts, PeerRole, SvidError, TrustBundleSet};
use crate::verify_cache::VerifyCache;
use crate::SpiffeId;

/// Decides whether a peer that holds a valid SVID may connect.
pub trait AuthorizeId: Send + Sync + fmt::Debug {
    /// Whether `peer`, whose SVID has already verified, may connect; `false` fails the handshake.
    fn authorize(&self, peer: &SpiffeId) -> bool;
}

/// Admits every ID whose chain verifies to its trust domain's bundle.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnyTrustedId;

impl AuthorizeId for AnyTrustedId {
    fn authorize(&self, _peer: &SpiffeId) -> bool {
        true
    }
}

/// Admits exactly one ID (a client's expectation of the server it dials).
#[derive(Debug, Clone)]
pub struct ExactId(pub SpiffeId);

impl AuthorizeId for ExactId {
    fn authorize(&self, peer: &SpiffeId) -> bool {
        *peer == self.0
    }
}

/// Admits the IDs of a list.
impl AuthorizeId for Vec<SpiffeId> {
    fn authorize(&self, peer: &SpiffeId) -> bool {
        self.contains(peer)
    }
}

/// Why a peer was refused during the handshake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// The presented chain is not a valid SVID under our bundles.
    #[error("{0}")]
    Invalid(#[from] SvidError),
    /// A valid SVID whose ID the authorizer does not admit.
    #[error("{0} is not admitted here")]
    NotAdmitted(SpiffeId),
}

/// Our reason for a refusal, if `error` is a certificate refusal made by one of our verifiers.
pub fn peer_error(error: &rustls::Error) -> Option<&PeerError> {
    match error {
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
            other.0.downcast_ref::<PeerError>()
        }
        _ => None,
    }
}

/// The SPIFFE ID of the peer of a finished handshake (`conn.peer_certificates()`). Only meaningful
/// on connections whose certificates one of our verifiers accepted.
pub fn peer_spiffe_id(peer_certificates: Option<&[CertificateDer<'_>]>) -> Option<SpiffeId> {
    let leaf = peer_certificates?.first()?;
    let (_, cert) = X509Certificate::from_der(leaf).ok()?;
    crate::svid::spiffe_id_of(&cert).ok()
}

/// What both verifiers share: the bundles, who is admitted, and the signature algorithms.
struct Checker {
    bundles: Arc<TrustBundleSet>,
    verified: VerifyCache,
    authorizer: Arc<dyn AuthorizeId>,
    signatures: HandshakeSignatures,
}

impl Checker {
    fn new(bundles: Arc<TrustBundleSet>, authorizer: Arc<dyn AuthorizeId>) -> Self {
        let provider = CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
        Checker {
            bundles,
            verified: VerifyCache::default(),
            authorizer,
            signatures: HandshakeSignatures { provider },
        }
    }

    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        role: PeerRole,
        now: UnixTime,
    ) -> Result<SpiffeId, rustls::Error> {
        let key = VerifyCache::key(end_entity, intermediates, role);
        let id = match self.verified.get(&key, now) {
            Some(id) => id,
            None => {
                let verified =
                    verify_svid_parts(end_entity, intermediates, &self.bundles, role, now)
                        .map_err(|e| to_rustls(PeerError::Invalid(e)))?;
                let id = verified.id.clone();
                self.verified.insert(key, verified);
                id
            }
        };
        if !self.authorizer.authorize(&id) {
            return Err(to_rustls(PeerError::NotAdmitted(id)));
        }
        Ok(id)
    }
}

/// Checks the signatures a peer makes in the handshake (CertificateVerify) with a provider's
/// algorithms: the proof that it holds the key of the certificate it presents.
#[derive(Debug)]
struct HandshakeSignatures {
    provider: Arc<CryptoProvider>,
}

impl HandshakeSignatures {
    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl fmt::Debug for Checker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checker")
            .field(
                "trust_domains",
                &self.bundles.trust_domains().collect::<Vec<_>>(),
            )
            .field("authorizer", &self.authorizer)
            .finish()
    }
}

/// Wraps our refusal in the rustls error (sent as a bad_certificate alert), keeping our reason
/// inside for [`peer_error`].
fn to_rustls(error: PeerError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(error))))
}

/// Checks the certificate of the server a client connects to. The TLS server name is not checked
/// against the certificate: SVIDs name workloads by URI SAN, which the authorizer checks instead.
#[derive(Debug)]
pub struct SpiffeServerVerifier(Checker);

impl SpiffeServerVerifier {
    /// Verifies servers against `bundles`, then admits those `authorizer` allows. Chains that
    /// verified are remembered for this verifier's lifetime (their validity is rechecked on use).
    pub fn new(bundles: Arc<TrustBundleSet>, authorizer: Arc<dyn AuthorizeId>) -> Arc<Self> {
        Arc::new(SpiffeServerVerifier(Checker::new(bundles, authorizer)))
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0
            .check(end_entity, intermediates, PeerRole::Server, now)
            .map(|_| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.signatures.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.signatures.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signatures.schemes()
    }
}

/// Requires a client certificate and checks it.
#[derive(Debug)]
pub struct SpiffeClientVerifier(Checker);

impl SpiffeClientVerifier {
    /// Verifies clients against `bundles`, then admits those `authorizer` allows. Chains that
    /// verified are remembered for this verifier's lifetime (their validity is rechecked on use).
    pub fn new(bundles: Arc<TrustBundleSet>, authorizer: Arc<dyn AuthorizeId>) -> Arc<Self> {
        Arc::new(SpiffeClientVerifier(Checker::new(bundles, authorizer)))
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No CA hints: SVID clients have one identity to present, whatever we would hint.
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0
            .check(end_entity, intermediates, PeerRole::Client, now)
            .map(|_| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.signatures.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.signatures.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signatures.schemes()
    }
}

/// Asks for a client certificate, requires none, and checks only that a client presenting one
/// holds its key (the TLS 1.3 CertificateVerify signature). The application must verify the
/// chain itself, with [`crate::verify_svid`], before it trusts anything about the peer: the CA
/// service does so that a renewal with an expired certificate gets an answer in words and a code,
/// not a bare TLS alert, and so that a caller without a certificate can still ask to bootstrap.
#[derive(Debug)]
pub struct DeferredClientVerifier {
    signatures: HandshakeSignatures,
}

impl DeferredClientVerifier {
    /// A verifier checking handshake signatures with `provider`'s algorithms.
    pub fn new(provider: Arc<CryptoProvider>) -> Arc<Self> {
        Arc::new(DeferredClientVerifier {
            signatures: HandshakeSignatures { provider },
        })
    }
}

impl ClientCertVerifier for DeferredClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Deferred by design (see the type's doc): the chain is verified by the application.
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.schemes()
    }
}
