//! PEM in and out: certificates, chains and keys as the files on disk hold them.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer, PrivateKeyDer};

/// Why a PEM file yields no certificates.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PemError {
    /// The input parsed but held no `CERTIFICATE` block.
    #[error("it holds no PEM certificate")]
    NoCertificate,
    /// A block is malformed (bad base64, no END line); the parser's reason.
    #[error("it is not valid PEM: {0}")]
    Invalid(String),
}

/// Every `CERTIFICATE` block of a PEM file, in order; other blocks are skipped.
pub fn certificates_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError::Invalid(e.to_string()))?;
    if certs.is_empty() {
        return Err(PemError::NoCertificate);
    }
    Ok(certs)
}

/// The first private key (PKCS#8, SEC1 or PKCS#1) of a PEM file.
pub fn private_key_from_pem(pem: &[u8]) -> Option<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem).ok()
}

/// The first `CERTIFICATE REQUEST` of a PEM file.
pub fn csr_from_pem(pem: &[u8]) -> Option<CertificateSigningRequestDer<'static>> {
    CertificateSigningRequestDer::from_pem_slice(pem).ok()
}

/// One `CERTIFICATE` PEM block with LF line endings, as the files we write hold it.
pub fn certificate_to_pem(der: &CertificateDer<'_>) -> String {
    ::pem::encode_config(
        &::pem::Pem::new("CERTIFICATE", der.as_ref()),
        ::pem::EncodeConfig::new().set_line_ending(::pem::LineEnding::LF),
    )
}
