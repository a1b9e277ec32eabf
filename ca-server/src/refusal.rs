//! Every way the CA service says no: an HTTP status, a stable code for scripts, and a sentence.
//! The code is also the `code` label of `palisade_ca_requests_total` and the audit line's `code`.

use hyper::StatusCode;
use palisade_ca::{IssueError, JoinTokenRefusal};
use palisade_identity::SvidError;

use crate::service_account::TokenRefusal;

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// No `Authorization` header on a sign request.
    #[error("no credential: send Authorization: JoinToken <token> or Authorization: Bearer <service-account token>")]
    NoCredential,
    /// An `Authorization` scheme we do not take.
    #[error("unsupported Authorization scheme (use JoinToken or Bearer)")]
    UnsupportedCredential,
    /// A join token that does not admit the caller.
    #[error("{0}")]
    JoinToken(#[from] JoinTokenRefusal),
    /// A service-account token that does not admit the caller.
    #[error("{0}")]
    ServiceAccount(#[from] TokenRefusal),
    /// A service-account token while the service was started without `--jwks`.
    #[error("this CA does not take service-account tokens (it was started without --jwks)")]
    ServiceAccountsNotConfigured,
    /// The credential is for another ID than the one the caller asked for.
    #[error("the credential is for {granted}, not {asked}")]
    OtherId {
        /// What the credential grants.
        granted: String,
        /// What the `Palisade-Spiffe-Id` header asked for.
        asked: String,
    },
    /// The credential grants the CA service's own ID, which is never issued to a workload.
    #[error("{0} is the CA service's own identity and is never issued")]
    ReservedId(String),
    /// `/v1/renew` without a client certificate.
    #[error("renewal needs the current certificate as the TLS client certificate")]
    RenewWithoutCertificate,
    /// The presented certificate has expired: renewal is not a way back in.
    #[error("the presented certificate has expired ({0}); bootstrap again with a credential")]
    RenewCertificateExpired(SvidError),
    /// The presented certificate does not verify to our bundle.
    #[error("the presented certificate is not trusted: {0}")]
    RenewCertificateUntrusted(SvidError),
    /// Body larger than the limit.
    #[error("the request body is larger than {0} bytes")]
    TooLarge(usize),
    /// The body did not arrive in time.
    #[error("the request body did not arrive within {0} s")]
    BodyTimeout(u64),
    /// On a connection without a verified client certificate, the request (head and body) did
    /// not arrive within its deadline.
    #[error("the request did not arrive within {} ms (head and body together)", .0.as_millis())]
    RequestDeadline(std::time::Duration),
    /// The body is neither a PEM nor a DER CSR, or its signature does not verify, or its key type
    /// is not one we sign.
    #[error("{0}")]
    Csr(IssueError),
    /// The `Palisade-Spiffe-Id` header is not a valid SPIFFE ID.
    #[error("the Palisade-Spiffe-Id header is not a valid SPIFFE ID")]
    BadIdHeader,
    /// The client sent more requests than its rate allows.
    #[error("too many requests from this client; retry later")]
    RateLimited,
    /// Every signing slot stayed busy.
    #[error("the CA is busy; retry later")]
    Busy,
    /// The CA cannot sign now (no usable key, or it expired).
    #[error("the CA cannot sign now: {0}")]
    Unavailable(String),
    /// The certificate was signed but its audit line could not be written, so it is not
    /// delivered: the CA issues nothing it cannot account for.
    #[error("the CA cannot write its audit trail; retry later")]
    AuditUnavailable,
    /// No such endpoint.
    #[error("no such endpoint")]
    NotFound,
    /// Wrong method for the endpoint.
    #[error("method not allowed")]
    MethodNotAllowed,
}

impl Refusal {
    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::NoCredential => "no_credential",
            Refusal::UnsupportedCredential => "unsupported_credential",
            Refusal::JoinToken(r) => r.code(),
            Refusal::ServiceAccount(r) => r.code(),
            Refusal::ServiceAccountsNotConfigured => "jwt_not_configured",
            Refusal::OtherId { .. } => "other_id",
            Refusal::ReservedId(_) => "reserved_id",
            Refusal::RenewWithoutCertificate => "renew_no_certificate",
            Refusal::RenewCertificateExpired(_) => "renew_certificate_expired",
            Refusal::RenewCertificateUntrusted(_) => "renew_certificate_untrusted",
            Refusal::TooLarge(_) => "request_too_large",
            Refusal::BodyTimeout(_) | Refusal::RequestDeadline(_) => "request_timeout",
            Refusal::Csr(IssueError::CsrSignature) => "csr_signature",
            Refusal::Csr(IssueError::CsrKeyType) => "csr_key_type",
            Refusal::Csr(_) => "csr_invalid",
            Refusal::BadIdHeader => "bad_spiffe_id_header",
            Refusal::RateLimited => "rate_limited",
            Refusal::Busy => "busy",
            Refusal::Unavailable(_) => "ca_unavailable",
            Refusal::AuditUnavailable => "audit_unavailable",
            Refusal::NotFound => "not_found",
            Refusal::MethodNotAllowed => "method_not_allowed",
        }
    }

    /// The HTTP status: 4xx when retrying the same request cannot help (429 aside), 5xx when
    /// it may.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::NoCredential
            | Refusal::UnsupportedCredential
            | Refusal::RenewWithoutCertificate
            | Refusal::RenewCertificateExpired(_)
            | Refusal::RenewCertificateUntrusted(_)
            | Refusal::ServiceAccount(_) => StatusCode::UNAUTHORIZED,
            Refusal::JoinToken(JoinTokenRefusal::Store(_)) => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::JoinToken(_) => StatusCode::UNAUTHORIZED,
            Refusal::ServiceAccountsNotConfigured
            | Refusal::OtherId { .. }
            | Refusal::ReservedId(_) => StatusCode::FORBIDDEN,
            Refusal::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::BodyTimeout(_) | Refusal::RequestDeadline(_) => StatusCode::REQUEST_TIMEOUT,
            Refusal::Csr(_) | Refusal::BadIdHeader => StatusCode::BAD_REQUEST,
            Refusal::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Refusal::Busy | Refusal::Unavailable(_) | Refusal::AuditUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Refusal::NotFound => StatusCode::NOT_FOUND,
            Refusal::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }
}
