//! Issuing workload identities: a trust domain's CA, the X.509-SVIDs it signs, and its state on
//! disk. Everything about checking an identity is in `palisade-identity`, re-exported here for
//! the command line's convenience.
//!
//! - [`CertificateAuthority`]: a trust domain's root; issues X.509-SVIDs from CSRs
//!   ([`CertificateAuthority::issue_from_csr`]) or with a key made for the caller.
//! - [`CaDir`]: a CA's state on disk (key 0600, written atomically).
//! - [`files::write_atomic`]: how every key and certificate reaches the disk.

#![warn(missing_docs)]

mod ca_dir;
pub mod files;
mod issue;

pub use ca_dir::{CaDir, CaDirError};
pub use issue::{
    private_key_pem, CertificateAuthority, IssueError, IssuedCert, KeyType, LeafRequest,
    CLOCK_SKEW_ALLOWANCE,
};
pub use palisade_identity::*;
