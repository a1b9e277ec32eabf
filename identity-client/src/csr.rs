//! A workload's key, made where it will be used and never sent anywhere: only the CSR (its
//! public half, signed by it) goes to the CA.

use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls_pki_types::PrivateKeyDer;

/// Why a key or CSR could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot make a key and CSR: {0}")]
pub struct CsrError(rcgen::Error);

/// A fresh ECDSA P-256 key and a CSR for it (empty subject, no extensions: the CA decides the
/// identity from the credential, never from the CSR).
pub struct KeyAndCsr {
    key: KeyPair,
    /// The CSR, DER.
    pub csr_der: Vec<u8>,
}

impl KeyAndCsr {
    /// Makes a new key and its CSR.
    pub fn generate() -> Result<KeyAndCsr, CsrError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CsrError)?;
        let csr = CertificateParams::default()
            .serialize_request(&key)
            .map_err(CsrError)?;
        Ok(KeyAndCsr {
            csr_der: csr.der().to_vec(),
            key,
        })
    }

    /// The private key, PKCS#8 DER (for rustls).
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.serialize_der().into())
    }

    /// The private key, PKCS#8 PEM (for `key.pem`, mode 0600).
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }
}

impl std::fmt::Debug for KeyAndCsr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("KeyAndCsr").finish_non_exhaustive()
    }
}
