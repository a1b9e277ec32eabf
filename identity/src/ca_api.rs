//! The CA service's wire format (`palisade ca serve`), shared by the server and its clients so
//! that both ends name paths, headers and error codes the same way.
//!
//! ```text
//! POST /v1/sign    body: a CSR, PEM or DER      Authorization: JoinToken <token>
//!                                               Authorization: Bearer <service-account JWT>
//!                                               Palisade-Spiffe-Id: <ID> (optional: the ID expected)
//! POST /v1/renew   body: a CSR                  TLS client certificate: the caller's current SVID
//! GET  /v1/bundle  the roots as PEM; with `Accept: application/json`, a SPIFFE bundle (JWKS)
//! GET  /live, /ready
//! ```
//!
//! A signed certificate comes back as [`SignResponse`] (JSON); a refusal as [`ErrorResponse`]
//! with an HTTP status and a stable [`ErrorBody::code`] that scripts can match on.

use serde::{Deserialize, Serialize};

/// Path of the bootstrap endpoint.
pub const SIGN_PATH: &str = "/v1/sign";
/// Path of the renewal endpoint (mTLS).
pub const RENEW_PATH: &str = "/v1/renew";
/// Path of the trust bundle.
pub const BUNDLE_PATH: &str = "/v1/bundle";
/// Header naming the SPIFFE ID the caller expects to be given (optional).
pub const SPIFFE_ID_HEADER: &str = "palisade-spiffe-id";
/// `Authorization` scheme of a one-time join token.
pub const JOIN_TOKEN_SCHEME: &str = "JoinToken";
/// `Authorization` scheme of a Kubernetes service-account token (a JWT).
pub const BEARER_SCHEME: &str = "Bearer";
/// Largest request body the server reads: a CSR is well under 2 KiB.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;

/// A certificate the CA signed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SignResponse {
    /// The identity the certificate carries.
    pub spiffe_id: String,
    /// The certificate then its chain up to (not including) a root, PEM: what `cert.pem` holds.
    pub certificate_chain: String,
    /// Every root trusted now, PEM: what `bundle.pem` holds.
    pub bundle: String,
    /// The certificate's serial number, lowercase hex.
    pub serial: String,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
}

/// A refusal, as the body of every non-2xx answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorResponse {
    /// What went wrong.
    pub error: ErrorBody,
}

/// A refusal's code and sentence.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// Stable, machine-readable: `token_reused`, `jwt_expired`, `renew_certificate_expired`, ...
    /// (the full list is in docs/IDENTITY.md).
    pub code: String,
    /// One sentence for a person.
    pub message: String,
}
