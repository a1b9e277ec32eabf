//! Issuing workload identities: a trust domain's CA, the X.509-SVIDs it signs, and its state on
//! disk. Everything about checking an identity (SPIFFE IDs, bundles, PEM, verification) is in
//! `palisade-identity`; callers name that crate for it, so a use shows which side it is on.
//!
//! - [`CertificateAuthority`]: a trust domain's root; issues X.509-SVIDs from CSRs
//!   ([`CertificateAuthority::issue_from_csr`]) or with a key made for the caller.
//! - [`CaDir`]: a CA's state on disk (key 0600, written atomically); [`CaDir::init_issuer`] makes
//!   an issuing CA under a root so the root key can stay offline.
//! - [`RootRotation`]: prepare, activate, retire a new root, each step refused while unsafe.
//! - [`JoinTokens`]: one-time tokens bound to a SPIFFE ID, stored hashed, consumed atomically.

#![warn(missing_docs)]

mod ca_dir;
mod issue;
mod join_token;
mod rotation;

pub use ca_dir::{CaDir, CaDirError};
pub use issue::{
    private_key_pem, CertificateAuthority, CheckedCsr, IssueError, IssuedCert, KeyType,
    LeafRequest, CLOCK_SKEW_ALLOWANCE,
};
pub use join_token::{JoinTokenRefusal, JoinTokens, TOKEN_PREFIX};
pub use rotation::{
    activate_wait, retire_wait, RootRotation, RotationError, RotationState,
    RELOAD_MARGIN as ROTATION_RELOAD_MARGIN,
};
