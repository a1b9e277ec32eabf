//! What `palisade cert inspect` says about a certificate chain: identity, issuer, serial,
//! validity, and whether it holds up as an X.509-SVID (against a bundle, when one is given).

use rustls_pki_types::{CertificateDer, UnixTime};
use serde::Serialize;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::svid::{
    check_leaf, check_validity, spiffe_id_of, uri_sans, verify_svid, PeerRole, SvidError,
};
use crate::TrustBundleSet;

/// The outcome of the checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Verdict {
    /// A valid X.509-SVID whose chain verified to the bundle.
    Valid,
    /// A well-formed, unexpired X.509-SVID; no bundle was given to check its chain against.
    ValidUnverified,
    /// Not acceptable; `reason` says why.
    Invalid {
        /// The first check that failed, as its error message.
        reason: String,
    },
}

impl Verdict {
    /// False only for [`Verdict::Invalid`]: an unverified but well-formed SVID counts as valid.
    pub fn is_valid(&self) -> bool {
        !matches!(self, Verdict::Invalid { .. })
    }
}

/// A certificate's facts, ready to print or serialize.
#[derive(Debug, Clone, Serialize)]
pub struct CertInfo {
    /// The ID in the leaf's single URI SAN; `None` when it has none, several, or an invalid one.
    pub spiffe_id: Option<String>,
    /// Every URI SAN of the leaf, SPIFFE or not.
    pub uri_sans: Vec<String>,
    /// Every DNS SAN of the leaf (an SVID needs none).
    pub dns_names: Vec<String>,
    /// The leaf's subject distinguished name as text; empty when the leaf has none.
    pub subject: String,
    /// The distinguished name of the certificate that signed the leaf.
    pub issuer: String,
    /// Hex, colon-separated, as openssl prints it.
    pub serial: String,
    /// Start of the leaf's validity (RFC 3339 in JSON).
    #[serde(with = "rfc3339")]
    pub not_before: OffsetDateTime,
    /// End of the leaf's validity, inclusive (RFC 3339 in JSON).
    #[serde(with = "rfc3339")]
    pub not_after: OffsetDateTime,
    /// Seconds until NotAfter; negative once expired.
    pub remaining_seconds: i64,
    /// The leaf's key: `ecdsa-p256`, `ed25519`, `ecdsa (N bits)`, `rsa (N bits)`, else the OID.
    pub key_algorithm: String,
    /// Whether the leaf says CA:true (an SVID must not).
    pub is_ca: bool,
    /// Certificates in the file, leaf included.
    pub chain_length: usize,
    /// Whether the chain holds up as an X.509-SVID, and if not, why.
    pub verdict: Verdict,
}

impl CertInfo {
    /// Inspects `chain` (leaf first). With `bundles`, the verdict includes chain validation.
    pub fn inspect(
        chain: &[CertificateDer<'_>],
        bundles: Option<&TrustBundleSet>,
        now: UnixTime,
    ) -> Result<CertInfo, SvidError> {
        let leaf_der = chain.first().ok_or(SvidError::NoCertificate)?;
        let (_, leaf) = X509Certificate::from_der(leaf_der)
            .map_err(|_| SvidError::BadCertificate { index: 0 })?;
        let verdict = match bundles {
            Some(bundles) => {
                verify_svid(chain, bundles, PeerRole::Client, now).map(|_| Verdict::Valid)
            }
            None => check_leaf(&leaf)
                .and_then(|_| check_validity(&leaf, now))
                .map(|_| Verdict::ValidUnverified),
        }
        .unwrap_or_else(|e| Verdict::Invalid {
            reason: e.to_string(),
        });
        let dns_names = leaf
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let not_after = leaf.validity().not_after.to_datetime();
        Ok(CertInfo {
            spiffe_id: spiffe_id_of(&leaf).ok().map(|id| id.to_string()),
            uri_sans: uri_sans(&leaf)
                .unwrap_or_default()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            dns_names,
            subject: leaf.subject().to_string(),
            issuer: leaf.issuer().to_string(),
            serial: crate::text::serial_hex(leaf.raw_serial()),
            not_before: leaf.validity().not_before.to_datetime(),
            not_after,
            remaining_seconds: not_after.unix_timestamp() - now.as_secs() as i64,
            key_algorithm: key_algorithm(&leaf),
            is_ca: leaf.is_ca(),
            chain_length: chain.len(),
            verdict,
        })
    }
}

fn key_algorithm(cert: &X509Certificate<'_>) -> String {
    use x509_parser::public_key::PublicKey;
    match cert.public_key().parsed() {
        Ok(PublicKey::EC(point)) if point.key_size() == 256 => "ecdsa-p256".into(),
        Ok(PublicKey::EC(point)) => format!("ecdsa ({} bits)", point.key_size()),
        Ok(PublicKey::RSA(rsa)) => format!("rsa ({} bits)", rsa.key_size()),
        _ if cert.public_key().algorithm.algorithm
            == x509_parser::oid_registry::OID_SIG_ED25519 =>
        {
            "ed25519".into()
        }
        _ => cert.public_key().algorithm.algorithm.to_id_string(),
    }
}

mod rfc3339 {
    use super::*;
    pub fn serialize<S: serde::Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::text::rfc3339(*t))
    }
}
