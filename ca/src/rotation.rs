//! Replacing a trust domain's root without a moment in which a peer cannot verify another, in
//! three steps (`palisade ca rotate prepare|activate|retire`):
//!
//! 1. prepare: a new root is made (kept in `ROOT/next/`) and joins the bundle, in the root
//!    directory and in the issuer directory the CA service serves from. Workloads receive the
//!    new bundle with their next certificate.
//! 2. activate: once the new bundle has been served for a whole leaf lifetime (so every workload
//!    has renewed at least once since, and trusts the new root), the new root takes the old one's
//!    place and a new issuer under it starts signing. The old root stays in the bundle.
//! 3. retire: once every leaf the old issuer signed has expired (a leaf lifetime after
//!    activation), the old root leaves the bundle.
//!
//! Each step refuses, with the time it will be safe, when it comes too early (`--force`
//! overrides: for a compromised root). The state between steps is `ROOT/rotation.json`.
//! Activating or retiring too early is exactly the outage of linkerd/linkerd2#4287.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ca_dir::{CaDir, CaDirError};
use crate::{KeyType, CLOCK_SKEW_ALLOWANCE};
use palisade_identity::files::{write_atomic, PUBLIC};
use palisade_identity::TrustBundle;

const STATE_FILE: &str = "rotation.json";
const NEXT_DIR: &str = "next";

/// Why a rotation step did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    /// A CA directory could not be used.
    #[error("{0}")]
    Dir(#[from] CaDirError),
    /// The step does not follow the last one.
    #[error("{0}")]
    OutOfOrder(String),
    /// Too early: peers could be left unable to verify each other.
    #[error("{why}; it is safe from {safe_at} (pass --force to do it anyway)")]
    TooEarly {
        /// What is not yet true.
        why: String,
        /// When it will be.
        safe_at: OffsetDateTime,
    },
    /// The state file cannot be read or written.
    #[error("cannot {action} {path}: {error}")]
    State {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The reason.
        error: std::io::Error,
    },
}

/// Where a rotation stands.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RotationState {
    /// `prepared` or `activated`.
    pub step: String,
    /// Longest lifetime of the leaves the CA service issues, seconds.
    pub leaf_ttl_seconds: u64,
    /// When the new root joined the bundle (Unix seconds).
    pub prepared_at: i64,
    /// When the new root took over (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activated_at: Option<i64>,
    /// The old root, PEM: a record of what is being retired, for the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_root_pem: Option<String>,
}

/// A root rotation over a root directory and the issuer directory it feeds.
#[derive(Debug, Clone)]
pub struct RootRotation {
    root: CaDir,
    issuer: CaDir,
}

impl RootRotation {
    /// The rotation of the root in `root`, whose issuer (served by `ca serve`) is in `issuer`.
    pub fn new(root: CaDir, issuer: CaDir) -> Self {
        RootRotation { root, issuer }
    }

    /// The rotation's state, `None` when none is in progress.
    pub fn state(&self) -> Result<Option<RotationState>, RotationError> {
        let path = self.root.path().join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| RotationError::State {
                        action: "parse",
                        path,
                        error: std::io::Error::other(e),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(RotationError::State {
                action: "read",
                path,
                error,
            }),
        }
    }

    fn save(&self, state: Option<&RotationState>) -> Result<(), RotationError> {
        let path = self.root.path().join(STATE_FILE);
        let result = match state {
            Some(state) => write_atomic(
                &path,
                &serde_json::to_vec_pretty(state)
                    .map_err(std::io::Error::other)
                    .map_err(|error| RotationError::State {
                        action: "write",
                        path: path.clone(),
                        error,
                    })?,
                PUBLIC,
            ),
            None => std::fs::remove_file(&path),
        };
        result.map_err(|error| RotationError::State {
            action: "write",
            path,
            error,
        })
    }

    /// Step 1: makes the new root and adds it to both bundles. Returns the new bundle.
    pub fn prepare(
        &self,
        leaf_ttl: Duration,
        key_type: KeyType,
        root_ttl: Duration,
        now: OffsetDateTime,
    ) -> Result<TrustBundle, RotationError> {
        if let Some(state) = self.state()? {
            return Err(RotationError::OutOfOrder(format!(
                "a root rotation is already {}; finish it with `ca rotate {}` first",
                state.step,
                if state.step == "prepared" {
                    "activate"
                } else {
                    "retire"
                }
            )));
        }
        let (current, bundle) = self.root.load()?;
        let next = CaDir::new(self.root.path().join(NEXT_DIR));
        let (new_root, _) = next.init(current.trust_domain(), key_type, root_ttl, true)?;
        let mut roots = bundle.roots().to_vec();
        roots.push(new_root.certificate().clone());
        let bundle = self.write_bundles(roots)?;
        self.save(Some(&RotationState {
            step: "prepared".into(),
            leaf_ttl_seconds: leaf_ttl.as_secs(),
            prepared_at: now.unix_timestamp(),
            activated_at: None,
            old_root_pem: None,
        }))?;
        Ok(bundle)
    }

    /// Step 2: the new root replaces the old in the root directory and a new issuer under it is
    /// installed in the issuer directory; the bundle keeps both roots.
    pub fn activate(
        &self,
        issuer_ttl: Duration,
        key_type: KeyType,
        force: bool,
        now: OffsetDateTime,
    ) -> Result<(), RotationError> {
        let mut state = match self.state()? {
            Some(state) if state.step == "prepared" => state,
            Some(state) => {
                return Err(RotationError::OutOfOrder(format!(
                    "the rotation is already {}; the next step is `ca rotate retire`",
                    state.step
                )))
            }
            None => {
                return Err(RotationError::OutOfOrder(
                    "no root rotation is prepared; start with `ca rotate prepare`".into(),
                ))
            }
        };
        let safe_at = at(state.prepared_at) + activate_wait(&state);
        if now < safe_at && !force {
            return Err(RotationError::TooEarly {
                why: "the new bundle has not yet been served for one leaf lifetime, so some \
                      workloads may not trust the new root yet"
                    .into(),
                safe_at,
            });
        }
        // Everything is made and checked before anything is written, so a refusal leaves the
        // rotation exactly where it was.
        let next = CaDir::new(self.root.path().join(NEXT_DIR));
        let (new_root, _) = next.load()?;
        let (old_root, bundle) = self.root.load()?;
        if self.issuer.path() == self.root.path() {
            return Err(RotationError::OutOfOrder(
                "the issuer directory must not be the root directory".into(),
            ));
        }
        if let Ok((existing, _)) = self.issuer.load() {
            if existing.is_root() {
                return Err(RotationError::OutOfOrder(format!(
                    "{} holds a root CA, not an issuer; give the directory `ca serve` runs from",
                    self.issuer.path().display()
                )));
            }
        }
        let new_issuer = new_root
            .generate_issuer(key_type, issuer_ttl)
            .map_err(|error| CaDirError::Ca {
                path: next.path().to_owned(),
                error,
            })?;
        // The state first: if a write below fails, a second `activate` must not take the new
        // root (already in place) for the old one.
        state.step = "activated".into();
        state.activated_at = Some(now.unix_timestamp());
        state.old_root_pem = Some(palisade_identity::pem::certificate_to_pem(
            old_root.certificate(),
        ));
        self.save(Some(&state))?;
        // The root directory now holds the new root with the two-root bundle, and the issuer
        // directory an issuer under it.
        self.root.install(&new_root, &bundle)?;
        self.issuer.install(&new_issuer, &bundle)?;
        let _ = std::fs::remove_dir_all(next.path());
        Ok(())
    }

    /// Step 3: the old root leaves both bundles.
    pub fn retire(&self, force: bool, now: OffsetDateTime) -> Result<TrustBundle, RotationError> {
        let state = match self.state()? {
            Some(state) if state.step == "activated" => state,
            _ => {
                return Err(RotationError::OutOfOrder(
                    "no activated root rotation to finish (prepare, then activate, first)".into(),
                ))
            }
        };
        let activated_at = state.activated_at.unwrap_or(state.prepared_at);
        let safe_at = at(activated_at) + retire_wait(&state);
        if now < safe_at && !force {
            return Err(RotationError::TooEarly {
                why: "certificates signed under the old root may still be valid".into(),
                safe_at,
            });
        }
        let (root, _) = self.root.load()?;
        let bundle = self.write_bundles(vec![root.certificate().clone()])?;
        self.save(None)?;
        Ok(bundle)
    }

    fn write_bundles(
        &self,
        roots: Vec<rustls_pki_types::CertificateDer<'static>>,
    ) -> Result<TrustBundle, RotationError> {
        let (root, _) = self.root.load()?;
        let bundle = TrustBundle::new(root.trust_domain().clone(), roots).map_err(|error| {
            CaDirError::Bundle {
                path: self.root.bundle_path(),
                error,
            }
        })?;
        self.root.write_bundle(&bundle)?;
        self.issuer.write_bundle(&bundle)?;
        Ok(bundle)
    }
}

/// How long the CA service may take to notice a changed directory (its default reload interval
/// is 5 s), added to the waits so that "served for a leaf lifetime" counts from when it served.
pub const RELOAD_MARGIN: Duration = Duration::from_secs(10);

/// Before activation: every workload renews at least once per leaf lifetime (at about half of
/// it), so one lifetime after the new bundle is served, every workload holds it.
pub fn activate_wait(state: &RotationState) -> Duration {
    Duration::from_secs(state.leaf_ttl_seconds) + RELOAD_MARGIN
}

/// Before retirement: the last leaf the old issuer signed expires one lifetime after activation;
/// a peer whose clock is behind by the skew allowance still takes it that much longer.
pub fn retire_wait(state: &RotationState) -> Duration {
    Duration::from_secs(state.leaf_ttl_seconds) + RELOAD_MARGIN + CLOCK_SKEW_ALLOWANCE
}

fn at(unix: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}
