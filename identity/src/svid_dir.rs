//! A workload's identity on disk: one directory with its key, its certificate chain and the
//! trust bundle, each replaced atomically. `cert issue`, `cert request` and `cert renew` write it;
//! the sidecar's file source reads it.
//!
//! ```text
//! DIR/key.pem      PKCS#8 private key, mode 0600
//! DIR/cert.pem     the X.509-SVID, then the chain up to (not including) a root
//! DIR/bundle.pem   every root trusted now
//! ```

use std::io;
use std::path::{Path, PathBuf};

use crate::files::{create_private_dir, write_atomic, PRIVATE, PUBLIC};

/// Why an SVID directory could not be written or read.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {path}: {error}")]
pub struct SvidDirError {
    /// What was being done: "create the directory", "write", "read".
    pub action: &'static str,
    /// The file or directory concerned.
    pub path: PathBuf,
    /// The operating system's reason.
    pub error: io::Error,
}

/// The directory holding one workload's key, certificate and bundle.
#[derive(Debug, Clone)]
pub struct SvidDir {
    path: PathBuf,
}

/// The file names inside an SVID directory.
impl SvidDir {
    /// The private key's file name.
    pub const KEY: &'static str = "key.pem";
    /// The certificate chain's file name.
    pub const CERT: &'static str = "cert.pem";
    /// The trust bundle's file name.
    pub const BUNDLE: &'static str = "bundle.pem";

    /// The directory at `path` (not touched until written or read).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SvidDir { path: path.into() }
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `DIR/key.pem`.
    pub fn key_path(&self) -> PathBuf {
        self.path.join(Self::KEY)
    }

    /// `DIR/cert.pem`.
    pub fn cert_path(&self) -> PathBuf {
        self.path.join(Self::CERT)
    }

    /// `DIR/bundle.pem`.
    pub fn bundle_path(&self) -> PathBuf {
        self.path.join(Self::BUNDLE)
    }

    /// Writes the files, creating the directory (0700) if needed. The key goes first and the
    /// bundle last: a new bundle may trust a root that only the new certificate needs, and a
    /// reader that sees a new key beside an old certificate (for the moment between two renames)
    /// finds them not matching and looks again, which the sidecar does.
    pub fn write(
        &self,
        key_pem: Option<&[u8]>,
        chain_pem: &[u8],
        bundle_pem: &[u8],
    ) -> Result<(), SvidDirError> {
        create_private_dir(&self.path).map_err(|error| SvidDirError {
            action: "create the directory",
            path: self.path.clone(),
            error,
        })?;
        let write = |path: PathBuf, contents: &[u8], mode: u32| {
            write_atomic(&path, contents, mode).map_err(|error| SvidDirError {
                action: "write",
                path,
                error,
            })
        };
        if let Some(key) = key_pem {
            write(self.key_path(), key, PRIVATE)?;
        }
        write(self.cert_path(), chain_pem, PUBLIC)?;
        write(self.bundle_path(), bundle_pem, PUBLIC)
    }

    /// Reads one of the files.
    pub fn read(&self, name: &str) -> Result<Vec<u8>, SvidDirError> {
        let path = self.path.join(name);
        std::fs::read(&path).map_err(|error| SvidDirError {
            action: "read",
            path,
            error,
        })
    }
}
