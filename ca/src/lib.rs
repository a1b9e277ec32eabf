//! Workload identity for Palisade: who a workload is, how it gets a certificate saying so, and how
//! a peer checks that certificate.
//!
//! - [`SpiffeId`], [`TrustDomain`]: identities, parsed exactly as the SPIFFE ID spec says.
//! - [`CertificateAuthority`]: a trust domain's root; issues X.509-SVIDs from CSRs
//!   ([`CertificateAuthority::issue_from_csr`]) or with a key made for the caller.
//! - [`verify_svid`]: the one check of a presented chain against a [`TrustBundleSet`], returning the
//!   peer's ID; [`SpiffeServerVerifier`] and [`SpiffeClientVerifier`] are the same check for rustls.
//! - [`IdPattern`], [`AllowList`]: SPIFFE ID patterns (`*`, trailing `/**`) saying who is admitted.
//! - [`CaDir`]: a CA's state on disk (key 0600, written atomically).
//! - [`CertInfo`]: what `palisade cert inspect` reports about a certificate.

mod ca_dir;
pub mod files;
mod inspect;
mod issue;
mod pattern;
pub mod pem;
mod spiffe_id;
mod svid;
mod tls;
mod verify_cache;

pub use ca_dir::{CaDir, CaDirError};
pub use inspect::{CertInfo, Verdict};
pub use issue::{
    CertificateAuthority, IssueError, IssuedCert, KeyType, LeafRequest, CLOCK_SKEW_ALLOWANCE,
};
pub use pattern::{AllowList, IdPattern, PatternError};
pub use spiffe_id::{IdError, SpiffeId, TrustDomain, MAX_ID_LEN, MAX_TRUST_DOMAIN_LEN};
pub use svid::{
    check_leaf, not_after, spiffe_id_of, verify_svid, BundleError, PeerRole, SvidError,
    TrustBundle, TrustBundleSet,
};
pub use tls::{
    peer_error, peer_spiffe_id, AnyTrustedId, AuthorizeId, ExactId, PeerError,
    SpiffeClientVerifier, SpiffeServerVerifier,
};
