//! A CA's state on disk: one directory holding its key (0600), its certificate and the trust
//! bundle that workloads verify peers against. Every file is written atomically.
//!
//! ```text
//! DIR/ca-key.pem    PKCS#8 private key, mode 0600
//! DIR/ca-cert.pem   the CA certificate
//! DIR/bundle.pem    every root trusted now (one today; old and new during a root rotation)
//! ```

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::CertificateDer;

use crate::{CertificateAuthority, IssueError, KeyType};
use palisade_identity::files::{write_atomic, PRIVATE, PUBLIC};
use palisade_identity::BundleError;
use palisade_identity::{TrustBundle, TrustDomain};

pub const KEY_FILE: &str = "ca-key.pem";
pub const CERT_FILE: &str = "ca-cert.pem";
pub const BUNDLE_FILE: &str = "bundle.pem";

/// Why a CA directory could not be created, written or loaded.
#[derive(Debug, thiserror::Error)]
pub enum CaDirError {
    /// A CA (for [`CaDir::init_issuer`]: a root) is there already, and `force` was not given.
    #[error("a CA already exists in {0} (pass --force to replace it)")]
    AlreadyExists(PathBuf),
    /// The directory exists but holds no CA key.
    #[error("{0} holds no CA (no {KEY_FILE}); create one with `palisade ca init`")]
    NoCa(PathBuf),
    /// The directory does not exist.
    #[error("the CA directory {0} does not exist")]
    NoDirectory(PathBuf),
    // The underlying errors are part of the sentence, not a `source` chain, so that a CLI printing
    // the chain does not say them twice.
    /// A file or directory could not be created, read or written.
    #[error("cannot {action} {path}: {error}")]
    Io {
        /// What was being done: `read`, `write`, `create the directory`.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's reason.
        error: io::Error,
    },
    /// The key and certificate do not make a CA, or making one failed.
    #[error("{path}: {error}")]
    Ca {
        /// The CA directory concerned.
        path: PathBuf,
        /// Why.
        error: IssueError,
    },
    /// A certificate file or the bundle is not a valid trust bundle.
    #[error("{path}: {error}")]
    Bundle {
        /// The file read.
        path: PathBuf,
        /// Why.
        error: BundleError,
    },
}

/// The directory a CA lives in.
#[derive(Debug, Clone)]
pub struct CaDir {
    path: PathBuf,
}

impl CaDir {
    /// The directory at `path`; nothing is read or created until used.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        CaDir { path: path.into() }
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `DIR/bundle.pem`: every root trusted now.
    pub fn bundle_path(&self) -> PathBuf {
        self.path.join(BUNDLE_FILE)
    }

    /// `DIR/ca-cert.pem`: the CA certificate, then any chain up to (not including) the root.
    pub fn cert_path(&self) -> PathBuf {
        self.path.join(CERT_FILE)
    }

    /// `DIR/ca-key.pem`: the CA's private key, mode 0600.
    pub fn key_path(&self) -> PathBuf {
        self.path.join(KEY_FILE)
    }

    /// Creates a new root CA here. Refuses to replace an existing CA unless `force`.
    pub fn init(
        &self,
        trust_domain: &TrustDomain,
        key_type: KeyType,
        ttl: Duration,
        force: bool,
    ) -> Result<(CertificateAuthority, TrustBundle), CaDirError> {
        create_private_dir(&self.path)?;
        if !force && (self.key_path().exists() || self.cert_path().exists()) {
            return Err(CaDirError::AlreadyExists(self.path.clone()));
        }
        let ca =
            CertificateAuthority::generate_root(trust_domain, key_type, ttl).map_err(|error| {
                CaDirError::Ca {
                    path: self.path.clone(),
                    error,
                }
            })?;
        let bundle = TrustBundle::new(trust_domain.clone(), vec![ca.certificate().clone()])
            .map_err(|error| CaDirError::Bundle {
                path: self.bundle_path(),
                error,
            })?;
        self.install(&ca, &bundle)?;
        Ok((ca, bundle))
    }

    /// Makes (or replaces: that is an issuer rotation) an issuing CA here, signed by the root in
    /// `root`, and copies the root's bundle beside it: what `palisade ca serve` runs from, so the
    /// root key can stay offline. A directory holding a root is never replaced unless `force`.
    pub fn init_issuer(
        &self,
        root: &CaDir,
        key_type: KeyType,
        ttl: Duration,
        force: bool,
    ) -> Result<(CertificateAuthority, TrustBundle), CaDirError> {
        let (root_ca, bundle) = root.load()?;
        if !root_ca.is_root() {
            return Err(CaDirError::Ca {
                path: root.path.clone(),
                error: IssueError::NotARoot,
            });
        }
        create_private_dir(&self.path)?;
        if !force && self.key_path().exists() {
            if let Ok((existing, _)) = self.load() {
                if existing.is_root() {
                    return Err(CaDirError::AlreadyExists(self.path.clone()));
                }
            }
        }
        let issuer = root_ca
            .generate_issuer(key_type, ttl)
            .map_err(|error| CaDirError::Ca {
                path: root.path.clone(),
                error,
            })?;
        self.install(&issuer, &bundle)?;
        Ok((issuer, bundle))
    }

    /// Writes a CA's key and certificate (with its chain) and a bundle here, key first. A reader
    /// that catches a new key beside the old certificate finds them not matching and keeps what
    /// it had (`palisade ca serve` looks again at its next reload).
    pub fn install(
        &self,
        ca: &CertificateAuthority,
        bundle: &TrustBundle,
    ) -> Result<(), CaDirError> {
        let cert_pem: String = std::iter::once(ca.certificate())
            .chain(ca.chain())
            .map(palisade_identity::pem::certificate_to_pem)
            .collect();
        self.write(&self.key_path(), ca.key_pem().as_bytes(), PRIVATE)?;
        self.write(&self.cert_path(), cert_pem.as_bytes(), PUBLIC)?;
        self.write_bundle(bundle)
    }

    /// Replaces the trust bundle.
    pub fn write_bundle(&self, bundle: &TrustBundle) -> Result<(), CaDirError> {
        self.write(&self.bundle_path(), bundle.to_pem().as_bytes(), PUBLIC)
    }

    /// Loads the CA and its trust bundle, checking that key and certificate belong together.
    pub fn load(&self) -> Result<(CertificateAuthority, TrustBundle), CaDirError> {
        if !self.path.exists() {
            return Err(CaDirError::NoDirectory(self.path.clone()));
        }
        let key_path = self.key_path();
        let key_pem = match std::fs::read_to_string(&key_path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && self.path.is_dir() => {
                return Err(CaDirError::NoCa(self.path.clone()))
            }
            other => other.map_err(|source| io_error("read", &key_path, source))?,
        };
        let cert_path = self.cert_path();
        let cert_pem =
            std::fs::read(&cert_path).map_err(|source| io_error("read", &cert_path, source))?;
        let bundle_err = |path: &Path| {
            let path = path.to_owned();
            move |error: BundleError| CaDirError::Bundle { path, error }
        };
        let mut certs: Vec<CertificateDer<'static>> =
            palisade_identity::pem::certificates_from_pem(&cert_pem)
                .map_err(|e| bundle_err(&cert_path)(e.into()))?;
        let cert = certs.remove(0);
        let ca = CertificateAuthority::from_parts(cert, certs, &key_pem).map_err(|error| {
            CaDirError::Ca {
                path: self.path.clone(),
                error,
            }
        })?;
        let bundle_path = self.bundle_path();
        let bundle_pem =
            std::fs::read(&bundle_path).map_err(|source| io_error("read", &bundle_path, source))?;
        let bundle = TrustBundle::from_pem(ca.trust_domain().clone(), &bundle_pem)
            .map_err(bundle_err(&bundle_path))?;
        Ok((ca, bundle))
    }

    fn write(&self, path: &Path, contents: &[u8], mode: u32) -> Result<(), CaDirError> {
        write_atomic(path, contents, mode).map_err(|source| io_error("write", path, source))
    }
}

/// Creates `path` (mode 0700) if it is missing; an existing directory is kept as it is.
pub(crate) fn create_private_dir(path: &Path) -> Result<(), CaDirError> {
    palisade_identity::files::create_private_dir(path)
        .map_err(|source| io_error("create the directory", path, source))
}

fn io_error(action: &'static str, path: &Path, error: io::Error) -> CaDirError {
    CaDirError::Io {
        action,
        path: path.to_owned(),
        error,
    }
}
