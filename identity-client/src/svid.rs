//! An X.509-SVID the CA returned, checked before anything uses it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use palisade_identity::ca_api::SignResponse;
use palisade_identity::pem::{certificates_from_pem, private_key_from_pem};
use palisade_identity::{
    verify_svid, PeerRole, SpiffeId, SvidDir, SvidDirError, TrustBundle, TrustBundleSet,
};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

use crate::client::ClientError;
use crate::csr::KeyAndCsr;

/// A certificate, its key and the bundle it came with, known to belong together: the chain
/// verifies to the bundle, the leaf carries the ID expected, and the key is the leaf's.
pub struct Svid {
    /// The identity.
    pub id: SpiffeId,
    /// Leaf first, then the chain up to (not including) a root.
    pub chain: Vec<CertificateDer<'static>>,
    key_pkcs8: Vec<u8>,
    /// The roots trusted now.
    pub bundle: TrustBundle,
    /// Start of validity (the CA sets it back for clock skew, so it is not when it was issued).
    pub not_before: SystemTime,
    /// When we received it (or, read from files, when they were written): the start of the
    /// lifetime the renewal schedule divides. NotBefore would not do: a CA sets it back for clock
    /// skew (45 s for ours), which on a 10-second certificate would make renewal always due.
    pub obtained_at: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// The leaf's serial (hex), for logs.
    pub serial: String,
    /// The chain as PEM (`cert.pem`).
    pub chain_pem: String,
    /// The bundle as PEM (`bundle.pem`).
    pub bundle_pem: String,
}

impl std::fmt::Debug for Svid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Svid")
            .field("id", &self.id)
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Svid {
    /// Checks the CA's answer to a request made with `key`. `expect`, when given, is the only ID
    /// accepted (a renewal keeps its ID).
    pub fn from_response(
        response: SignResponse,
        key: &KeyAndCsr,
        expect: Option<&SpiffeId>,
    ) -> Result<Svid, ClientError> {
        let PrivateKeyDer::Pkcs8(pkcs8) = key.key_der() else {
            return Err(ClientError::BadResponse("the key is not PKCS#8".into()));
        };
        Svid::check(
            response.certificate_chain.as_bytes(),
            pkcs8.secret_pkcs8_der().to_vec(),
            response.bundle.as_bytes(),
            expect,
            SystemTime::now(),
        )
    }

    /// Reads an SVID from PEM files' contents (what `cert request` wrote), checked the same way;
    /// `written_at` is when the certificate file was written, if known.
    pub fn from_pem(
        chain_pem: &[u8],
        key_pem: &[u8],
        bundle_pem: &[u8],
        written_at: Option<SystemTime>,
    ) -> Result<Svid, ClientError> {
        let key = match private_key_from_pem(key_pem) {
            Some(PrivateKeyDer::Pkcs8(k)) => k.secret_pkcs8_der().to_vec(),
            _ => {
                return Err(ClientError::BadResponse(
                    "key.pem holds no PKCS#8 key".into(),
                ))
            }
        };
        Svid::check(
            chain_pem,
            key,
            bundle_pem,
            None,
            written_at.unwrap_or(SystemTime::UNIX_EPOCH),
        )
    }

    fn check(
        chain_pem: &[u8],
        key_pkcs8: Vec<u8>,
        bundle_pem: &[u8],
        expect: Option<&SpiffeId>,
        obtained_at: SystemTime,
    ) -> Result<Svid, ClientError> {
        let bad = |what: &str| ClientError::BadResponse(what.to_owned());
        let chain = certificates_from_pem(chain_pem).map_err(|e| bad(&format!("chain: {e}")))?;
        let leaf = palisade_identity::spiffe_id_of(
            &x509_parser::parse_x509_certificate(&chain[0])
                .map_err(|_| bad("the certificate does not parse"))?
                .1,
        )
        .map_err(|e| bad(&e.to_string()))?;
        let bundle = TrustBundle::from_pem(leaf.trust_domain().clone(), bundle_pem)
            .map_err(|e| bad(&format!("bundle: {e}")))?;
        let bundles = TrustBundleSet::from(bundle.clone());
        // Verified now as a peer would: a certificate nobody can verify is no use to us.
        let id = verify_svid(&chain, &bundles, PeerRole::Client, UnixTime::now()).map_err(|e| {
            bad(&format!(
                "the certificate does not verify to its bundle: {e}"
            ))
        })?;
        if let Some(expect) = expect {
            if &id != expect {
                return Err(bad(&format!("the certificate is for {id}, not {expect}")));
            }
        }
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let signing_key = provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(key_pkcs8.clone().into()))
            .map_err(ClientError::OwnCredentials)?;
        if CertifiedKey::new(chain.clone(), signing_key)
            .keys_match()
            .is_err()
        {
            return Err(bad("the certificate is not for our key"));
        }
        let (_, parsed) = x509_parser::parse_x509_certificate(&chain[0])
            .map_err(|_| bad("the certificate does not parse"))?;
        let unix = |t: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
        let not_before = unix(parsed.validity().not_before.timestamp());
        let not_after = unix(parsed.validity().not_after.timestamp());
        let serial = palisade_identity::serial_hex(parsed.raw_serial());
        let chain_pem = chain
            .iter()
            .map(palisade_identity::pem::certificate_to_pem)
            .collect();
        Ok(Svid {
            id,
            chain,
            key_pkcs8,
            bundle_pem: bundle.to_pem(),
            bundle,
            not_before,
            // Within the validity window whatever the file times say.
            obtained_at: obtained_at.max(not_before).min(not_after),
            not_after,
            serial,
            chain_pem,
        })
    }

    /// The private key, for rustls.
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key_pkcs8.clone().into())
    }

    /// The private key as PKCS#8 PEM (for `key.pem`, 0600).
    pub fn key_pem(&self) -> String {
        ::pem::encode_config(
            &::pem::Pem::new("PRIVATE KEY", self.key_pkcs8.clone()),
            ::pem::EncodeConfig::new().set_line_ending(::pem::LineEnding::LF),
        )
    }

    /// Writes key.pem (0600), cert.pem and bundle.pem into `dir`, key first and bundle last, each
    /// atomically (palisade_identity::SvidDir).
    pub fn write_to(&self, dir: &SvidDir) -> Result<(), SvidDirError> {
        dir.write(
            Some(self.key_pem().as_bytes()),
            self.chain_pem.as_bytes(),
            self.bundle_pem.as_bytes(),
        )
    }

    /// Whether it is still valid at `now`.
    pub fn valid_at(&self, now: SystemTime) -> bool {
        now < self.not_after
    }

    /// The bundle as a set, for verifiers.
    pub fn bundles(&self) -> Arc<TrustBundleSet> {
        Arc::new(TrustBundleSet::from(self.bundle.clone()))
    }
}
