//! What the service signs with and serves, loaded from the CA directory and kept current: the
//! signing CA, the bundle (as PEM and as a SPIFFE bundle document), and the service's own TLS
//! identity, an SVID issued by the same CA to itself.
//!
//! The directory is read again every reload interval; new contents that load and check out
//! replace the old as one [`Material`] (an issuer rotation by `ca init-issuer`, a root rotation
//! by `ca rotate`), contents that do not are refused and the old material kept. The service's
//! own certificate is re-issued when the material changes and at half its lifetime.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use palisade_ca::{CaDir, CaDirError, CertificateAuthority, IssueError, KeyType, LeafRequest};
use palisade_identity::DeferredClientVerifier;
use palisade_identity::{SpiffeId, TrustBundle, TrustBundleSet};
use rustls::crypto::CryptoProvider;
use rustls::ServerConfig;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Why the CA directory could not be put to use.
#[derive(Debug, thiserror::Error)]
pub enum MaterialError {
    /// The directory does not load (missing files, key and certificate not matching, ...).
    #[error("{0}")]
    Dir(#[from] CaDirError),
    /// The service's own certificate could not be issued.
    #[error("cannot issue the service's own certificate: {0}")]
    ServerCertificate(IssueError),
    /// rustls refused the configuration.
    #[error("cannot build the TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// Who the service is on the wire.
#[derive(Debug, Clone)]
pub struct ServerIdentity {
    /// The SPIFFE ID in the service's own certificate, which clients pin.
    pub id: SpiffeId,
    /// DNS names added to it, for clients that check names (curl, kubelet probes ignore them).
    pub dns_names: Vec<String>,
    /// Lifetime of the service's own certificate.
    pub ttl: Duration,
}

/// One consistent set of what the service runs from.
pub struct Material {
    /// The signing CA (an issuer under an offline root, or a root).
    pub ca: CertificateAuthority,
    /// The roots trusted now.
    pub bundles: Arc<TrustBundleSet>,
    /// The roots as PEM.
    pub bundle_pem: String,
    /// The roots as a SPIFFE bundle document (JWKS with `x509-svid` keys).
    pub bundle_jwks: String,
    /// Roots in the bundle.
    pub roots: usize,
    /// Earliest NotAfter of the roots.
    pub root_not_after: OffsetDateTime,
    /// The TLS configuration new connections use.
    pub tls: Arc<ServerConfig>,
    /// When the service's own certificate should be re-issued.
    pub server_cert_refresh_at: OffsetDateTime,
    /// The file contents this was made from, to notice changes.
    pub(crate) source: Vec<Vec<u8>>,
}

impl Material {
    /// Loads the directory and issues the service's own certificate from it.
    pub fn load(
        dir: &CaDir,
        server: &ServerIdentity,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Material, MaterialError> {
        let source = read_sources(dir);
        let (ca, bundle) = dir.load()?;
        let bundle_written = std::fs::metadata(dir.bundle_path())
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs() as i64);
        Material::build(ca, bundle, bundle_written, server, provider, source)
    }

    /// The files' contents now, to compare with [`Material::source`] (a missing file reads as
    /// empty, which differs from any contents that loaded).
    pub fn changed(&self, dir: &CaDir) -> bool {
        read_sources(dir) != self.source
    }

    fn build(
        ca: CertificateAuthority,
        bundle: TrustBundle,
        bundle_written: i64,
        server: &ServerIdentity,
        provider: &Arc<CryptoProvider>,
        source: Vec<Vec<u8>>,
    ) -> Result<Material, MaterialError> {
        let mut request = LeafRequest::new(server.id.clone(), server.ttl);
        request.dns_names = server.dns_names.clone();
        let (issued, key) = ca
            .issue_with_new_key(&request, KeyType::EcdsaP256)
            .map_err(MaterialError::ServerCertificate)?;
        let chain: Vec<_> = std::iter::once(issued.cert.clone())
            .chain(issued.chain.iter().cloned())
            .collect();
        let key_der = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let mut tls = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(DeferredClientVerifier::new(provider.clone()))
            .with_single_cert(chain, key_der)?;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        // Half of the lifetime from now, not from NotBefore, which is set back for clock skew.
        let issued_at = OffsetDateTime::now_utc();
        let lifetime = issued.not_after - issued_at;
        let root_not_after = bundle
            .roots()
            .iter()
            .filter_map(|der| palisade_identity::not_after(der).ok())
            .min()
            .unwrap_or(ca.not_after());
        Ok(Material {
            bundle_pem: bundle.to_pem(),
            bundle_jwks: bundle_document(&bundle, bundle_written),
            roots: bundle.roots().len(),
            root_not_after,
            bundles: Arc::new(TrustBundleSet::from(bundle)),
            ca,
            tls: Arc::new(tls),
            server_cert_refresh_at: issued_at + lifetime / 2,
            source,
        })
    }

    /// The same CA and bundle with a fresh certificate for the service itself.
    pub fn with_new_server_certificate(
        &self,
        dir: &CaDir,
        server: &ServerIdentity,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Material, MaterialError> {
        // Reloading is simplest and keeps one code path; the files are unchanged (else the
        // caller would have reloaded for that reason).
        Material::load(dir, server, provider)
    }
}

fn read_sources(dir: &CaDir) -> Vec<Vec<u8>> {
    [dir.key_path(), dir.cert_path(), dir.bundle_path()]
        .iter()
        .map(|p| std::fs::read(p).unwrap_or_default())
        .collect()
}

/// Seconds a bundle consumer should wait before fetching the bundle again (SPIFFE bundle
/// `spiffe_refresh_hint`; the spec suggests five minutes when absent).
const REFRESH_HINT_SECONDS: u64 = 300;

/// The bundle as a SPIFFE trust bundle document: one JWK per root with `use: x509-svid`, the
/// certificate in `x5c`, no `kid` (SPIFFE Trust Domain and Bundle §4, X509-SVID §6). The sequence
/// must grow whenever the contents change: it is the time `bundle.pem` was last written (every
/// rotation step writes it, and replicas serving one directory agree on it), or the latest
/// NotBefore among the roots if that is later.
pub fn bundle_document(bundle: &TrustBundle, bundle_written: i64) -> String {
    let std64 = base64::engine::general_purpose::STANDARD;
    let url64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut sequence = bundle_written;
    let keys: Vec<serde_json::Value> = bundle
        .roots()
        .iter()
        .filter_map(|der| {
            let (_, cert) = X509Certificate::from_der(der).ok()?;
            sequence = sequence.max(cert.validity().not_before.timestamp());
            let spki = cert.public_key();
            let point = spki.subject_public_key.data.as_ref();
            let oid = spki.algorithm.algorithm.to_id_string();
            let mut key = match oid.as_str() {
                // id-ecPublicKey; we only make P-256 CAs: 0x04 || x || y.
                "1.2.840.10045.2.1" if point.len() == 65 && point[0] == 4 => serde_json::json!({
                    "kty": "EC", "crv": "P-256",
                    "x": url64.encode(&point[1..33]), "y": url64.encode(&point[33..]),
                }),
                "1.3.101.112" => serde_json::json!({
                    "kty": "OKP", "crv": "Ed25519", "x": url64.encode(point),
                }),
                _ => return None,
            };
            key["use"] = "x509-svid".into();
            key["x5c"] = serde_json::json!([std64.encode(der.as_ref())]);
            Some(key)
        })
        .collect();
    serde_json::json!({
        "keys": keys,
        "spiffe_sequence": sequence,
        "spiffe_refresh_hint": REFRESH_HINT_SECONDS,
    })
    .to_string()
}
