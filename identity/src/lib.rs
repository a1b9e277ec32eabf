//! Who a workload is, and how a peer checks it: what every sidecar needs, and nothing of issuance
//! (no rcgen; `palisade-ca` issues).
//!
//! - [`SpiffeId`], [`TrustDomain`]: identities, parsed exactly as the SPIFFE ID spec says.
//! - [`verify_svid`]: the one check of a presented chain against a [`TrustBundleSet`], returning the
//!   peer's ID; [`SpiffeServerVerifier`] and [`SpiffeClientVerifier`] are the same check for rustls.
//! - [`IdPattern`], [`AllowList`]: SPIFFE ID patterns (`*`, trailing `/**`) saying who is admitted.
//! - [`CertInfo`]: what `palisade cert inspect` reports about a certificate.
//! - [`pem`]: certificates, chains and keys as files hold them; [`files`]: writing them atomically;
//!   [`SvidDir`]: a workload's key, certificate and bundle in one directory.
//! - [`ca_api`]: the CA service's requests, answers and error codes, shared by server and clients.
//!
//! Where a presented certificate travels: `tls.rs` (rustls asks) → `verify_cache.rs` (seen these
//! bytes?) → `svid.rs` (leaf profile, bundle of its trust domain, webpki chain) → an
//! [`AuthorizeId`] (an allow-list from `pattern.rs`, or the policy's admission).

#![warn(missing_docs)]

pub mod ca_api;
pub mod files;
mod inspect;
mod pattern;
pub mod pem;
mod spiffe_id;
mod svid;
mod svid_dir;
mod text;
mod tls;
mod verify_cache;

pub use inspect::{CertInfo, Verdict};
pub use pattern::{AllowList, IdPattern, PatternError};
pub use pem::PemError;
pub use spiffe_id::{IdError, SpiffeId, TrustDomain, MAX_ID_LEN, MAX_TRUST_DOMAIN_LEN};
pub use svid::{
    check_leaf, not_after, spiffe_id_of, uri_sans, verify_svid, BundleError, PeerRole, SvidError,
    TrustBundle, TrustBundleSet,
};
pub use svid_dir::{SvidDir, SvidDirError};
pub use text::{rfc3339, rfc3339_system, serial_hex};
pub use tls::{
    peer_error, peer_spiffe_id, AnyTrustedId, AuthorizeId, DeferredClientVerifier, ExactId,
    PeerError, SpiffeClientVerifier, SpiffeServerVerifier,
};
