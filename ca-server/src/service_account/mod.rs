//! Attesting a caller of `POST /v1/sign` by its Kubernetes projected service-account token.
//!
//! A pod can mount a projected service-account token: a JWT that the API server signs, with an
//! audience we choose and a short life. Presented as `Authorization: Bearer <token>`, it proves
//! which namespace and service account the pod runs as, and this module turns it into
//! `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`: no join token has to be handed
//! out to workloads that Kubernetes already knows.
//!
//! The token is checked against the cluster's signing keys, the JWKS document the API server
//! publishes at `/openid/v1/jwks`: read from a file ([`JwksSource::File`]) that
//! [`ServiceAccountVerifier::reload`] re-reads, or fetched from the API server itself
//! ([`JwksSource::Url`], `discovery.rs`) again and again, and at once (within bounds) when a
//! token names a key the CA does not know; either way a key rotation needs no restart. Then its
//! issuer must be the cluster's, its audience must name this CA (so that a token meant for another
//! service cannot be replayed here), and it must be within its validity, give or take
//! [`CLOCK_SKEW`].
//!
//! # Why the algorithm rules matter
//!
//! A JWT names its own signature algorithm in its header, and the header is written by whoever
//! made the token. A verifier that lets the header choose can be made to accept forgeries:
//!
//! - `alg: none` says there is no signature at all;
//! - `HS256` makes the verifier compute an HMAC with "the key" as secret. The cluster's RSA public
//!   key is public (anyone can fetch the JWKS), so an attacker can compute that HMAC over claims
//!   of their choosing: the classic key-confusion attack;
//! - any other algorithm widens what a bug in one code path can let through.
//!
//! So here the algorithm comes from the key, never from the token alone: an RSA key verifies
//! RS256 and a P-256 key ES256, and nothing else. The header's `alg` must name that algorithm, and
//! so must the JWK's own `alg` when it has one; anything else is refused before a signature is
//! looked at. `jsonwebtoken` then verifies with a `Validation` that allows exactly that one
//! algorithm, so the same rule is enforced twice, by two pieces of code.
//!
//! Every refusal is a [`TokenRefusal`], with a sentence for people and a stable code
//! ([`TokenRefusal::code`]) for scripts and metrics. Strings taken from the token are cut to
//! [`MAX_PEER_CHARS`] characters in those sentences; they are not escaped here, the caller escapes
//! them for its logs.
//!
//! # Who does what
//!
//! The JWT library, `jsonwebtoken` (aws-lc-rs backend), reads the header
//! (`jsonwebtoken::decode_header`), turns JWKs into verifying keys (`jwk::Jwk`,
//! `DecodingKey::from_jwk`) and verifies signatures (`jsonwebtoken::decode` with one algorithm).
//! What stays ours, each for a reason given where it is:
//!
//! - `jwks.rs`: the set around the keys (one key the library cannot read must not make the whole
//!   file unusable), and the checks `from_jwk` does not make: curve, key size, point on the curve,
//!   `use` and `alg` of the JWK;
//! - `token.rs`: the size and shape bound before any parsing, the name of an algorithm the library
//!   does not know (for the refusal), `crit`, and the claims: issuer, audience and times against
//!   the caller's clock, each with its own refusal;
//! - `identity.rs`: the Kubernetes claims and the SPIFFE ID they map to.

mod discovery;
mod identity;
mod jwks;
mod token;

pub use discovery::{JwksFetcher, MIN_REFETCH, REFRESH};

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

use palisade_identity::{SpiffeId, TrustDomain};

use jwks::KeySet;

/// Longest token we look at, in bytes. Projected tokens are about 1 KiB; refusing longer ones
/// before any decoding bounds the work (base64, JSON, signature hashing) a caller can ask for.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// How far the CA's clock and the API server's may disagree: a token is still accepted this long
/// after its `exp`, and its `nbf` and `iat` may be this far in the future.
pub const CLOCK_SKEW: Duration = Duration::from_secs(30);

/// Largest JWKS file we read, in bytes. A cluster publishes a handful of keys (a few KiB); the
/// bound keeps a wrong path (a log file, a device) from being read whole, every reload.
pub const MAX_JWKS_LEN: u64 = 1024 * 1024;

/// Longest piece of a token (issuer, key ID, name, ...) quoted in a refusal's sentence, in
/// characters. A caller chooses those strings; the refusal must stay one short log line.
pub const MAX_PEER_CHARS: usize = 64;

/// [`CLOCK_SKEW`] in the unit of JWT times (seconds), for the comparisons below.
const SKEW_SECS: i64 = CLOCK_SKEW.as_secs() as i64;

/// Where the cluster's signing keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// The JWKS document of the cluster's API server (`kubectl get --raw /openid/v1/jwks`) in a
    /// file, kept up to date by whoever deploys the CA.
    File(PathBuf),
    /// Fetched over HTTPS: the JWKS itself (`https://kubernetes.default.svc/openid/v1/jwks`), or
    /// an OIDC discovery document whose `jwks_uri` names it.
    Url(JwksUrl),
}

/// Where to fetch the JWKS, and how to be let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksUrl {
    /// `https://...`: the JWKS, or an OpenID discovery document.
    pub url: String,
    /// PEM: the roots the server's certificate must chain to (in a pod, the API server's:
    /// `/var/run/secrets/kubernetes.io/serviceaccount/ca.crt`). The system's are never used.
    pub roots: PathBuf,
    /// A bearer token file sent as `Authorization` (read again at each fetch: the kubelet
    /// rotates it); none sends no credential.
    pub token: Option<PathBuf>,
}

impl JwksSource {
    /// What error messages call it: the file, or the URL.
    pub fn label(&self) -> PathBuf {
        match self {
            JwksSource::File(path) => path.clone(),
            JwksSource::Url(url) => PathBuf::from(&url.url),
        }
    }
}

/// Where the cluster's signing keys are and what a token for this CA must say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccountConfig {
    /// The cluster's signing keys.
    pub jwks: JwksSource,
    /// The `iss` the API server writes (its `--service-account-issuer`), compared exactly.
    pub issuer: String,
    /// The audience the pods request for their projected token (for example `palisade-ca`); a
    /// token must list it in `aud`. It should be one no other service accepts, so that a token
    /// stolen from that service cannot be replayed here, nor one of ours there.
    pub audience: String,
}

/// A service account that a token proved to be, and the SPIFFE ID it maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    /// The service account's namespace.
    pub namespace: String,
    /// The service account's name.
    pub name: String,
    /// The pod the token was issued to, when the token says (projected tokens do).
    pub pod: Option<String>,
    /// `spiffe://<trust domain>/ns/<namespace>/sa/<name>`.
    pub spiffe_id: SpiffeId,
    /// The token's `exp` (Unix seconds): the CA may keep the SVID from outliving it.
    pub expires_at: i64,
}

/// Why a service-account token does not admit its bearer. Each variant is one rule; the sentence
/// is for people, [`TokenRefusal::code`] for scripts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    /// Longer than [`MAX_TOKEN_LEN`]: not looked at any further.
    #[error("the token is {len} bytes long, more than the {MAX_TOKEN_LEN} bytes accepted")]
    TooLarge {
        /// The token's length in bytes.
        len: usize,
    },
    /// Not three base64url parts, or the parts do not decode to a JWT header and claims.
    #[error("the token is not a well-formed JWT: {reason}")]
    Malformed {
        /// What is wrong, in our words (nothing taken from the token).
        reason: &'static str,
    },
    /// The header names an algorithm other than RS256 and ES256 (`none` and HS256 included).
    #[error("the token's algorithm \"{alg}\" is not allowed (only RS256 and ES256 are)")]
    AlgorithmNotAllowed {
        /// The header's `alg`, cut to [`MAX_PEER_CHARS`].
        alg: String,
    },
    /// The header's `kid` is not among the cluster's keys.
    #[error("the token names key \"{kid}\", which is not among the cluster's signing keys")]
    UnknownKey {
        /// The header's `kid`, cut to [`MAX_PEER_CHARS`].
        kid: String,
    },
    /// No `kid`, and the cluster has no key of the type the header's algorithm needs.
    #[error("the cluster has no signing key for {alg} tokens")]
    NoKeyForAlgorithm {
        /// The header's algorithm.
        alg: &'static str,
    },
    /// The key the header names cannot make signatures of the header's algorithm: its type, or
    /// the `alg` of its JWK, says otherwise (an RS256 header with an EC key's `kid`, say).
    #[error("the token's key \"{kid}\" is not a key for {alg} signatures")]
    KeyAlgorithmMismatch {
        /// The header's `kid`, cut to [`MAX_PEER_CHARS`].
        kid: String,
        /// The header's algorithm.
        alg: &'static str,
    },
    /// The signature does not verify with the key (or any of the keys) it may be made with.
    #[error("the token's signature does not verify with the cluster's signing keys")]
    BadSignature,
    /// A claim we require (`exp`, `iss`, `aud`) is missing.
    #[error("the token has no \"{claim}\" claim")]
    MissingClaim {
        /// The missing claim's name.
        claim: &'static str,
    },
    /// `exp` is past, by more than [`CLOCK_SKEW`].
    #[error("the token expired at {exp} (Unix time)")]
    Expired {
        /// The token's `exp`.
        exp: i64,
    },
    /// `nbf` or `iat` is in the future, by more than [`CLOCK_SKEW`].
    #[error("the token is not valid yet: its \"{claim}\" is {at} (Unix time)")]
    NotYetValid {
        /// `nbf` or `iat`.
        claim: &'static str,
        /// That claim's value.
        at: i64,
    },
    /// `iss` is not the configured issuer: the token is from another cluster or another issuer.
    #[error("the token's issuer \"{issuer}\" is not the cluster's")]
    WrongIssuer {
        /// The token's `iss`, cut to [`MAX_PEER_CHARS`].
        issuer: String,
    },
    /// `aud` does not list the configured audience: the token is meant for another service.
    #[error("the token is not meant for this CA: its audience is \"{audience}\"")]
    WrongAudience {
        /// The token's `aud` (its values joined with ", "), cut to [`MAX_PEER_CHARS`].
        audience: String,
    },
    /// Neither a `kubernetes.io` claim naming a namespace and service account, nor a `sub` of the
    /// form `system:serviceaccount:<namespace>:<name>`.
    #[error("the token names no Kubernetes service account")]
    NoKubernetesClaims,
    /// The `sub` names another service account than the `kubernetes.io` claim (or is not of the
    /// service-account form while the claim is there).
    #[error("the token's subject \"{subject}\" disagrees with its kubernetes.io claim")]
    SubjectMismatch {
        /// The token's `sub`, cut to [`MAX_PEER_CHARS`].
        subject: String,
    },
    /// A namespace that is not a DNS-1123 label, or a service account or pod name that is not a
    /// DNS-1123 subdomain: Kubernetes would not have made it.
    #[error("the token's {kind} name \"{name}\" is not a valid Kubernetes name")]
    InvalidName {
        /// `namespace`, `service account` or `pod`.
        kind: &'static str,
        /// The name, cut to [`MAX_PEER_CHARS`].
        name: String,
    },
    /// The service account does not make a valid SPIFFE ID in this trust domain.
    #[error("the service account does not make a valid SPIFFE ID: {reason}")]
    NotASpiffeId {
        /// Why, in our words.
        reason: String,
    },
}

impl TokenRefusal {
    /// The stable code the CA service answers with (and counts refusals by).
    pub fn code(&self) -> &'static str {
        match self {
            TokenRefusal::TooLarge { .. } => "jwt_too_large",
            TokenRefusal::Malformed { .. } => "jwt_malformed",
            TokenRefusal::AlgorithmNotAllowed { .. } => "jwt_algorithm_not_allowed",
            TokenRefusal::UnknownKey { .. } => "jwt_unknown_key",
            TokenRefusal::NoKeyForAlgorithm { .. } => "jwt_no_key_for_algorithm",
            TokenRefusal::KeyAlgorithmMismatch { .. } => "jwt_key_algorithm_mismatch",
            TokenRefusal::BadSignature => "jwt_bad_signature",
            TokenRefusal::MissingClaim { .. } => "jwt_missing_claim",
            TokenRefusal::Expired { .. } => "jwt_expired",
            TokenRefusal::NotYetValid { .. } => "jwt_not_yet_valid",
            TokenRefusal::WrongIssuer { .. } => "jwt_wrong_issuer",
            TokenRefusal::WrongAudience { .. } => "jwt_wrong_audience",
            TokenRefusal::NoKubernetesClaims => "jwt_no_kubernetes_claims",
            TokenRefusal::SubjectMismatch { .. } => "jwt_subject_mismatch",
            TokenRefusal::InvalidName { .. } => "jwt_invalid_name",
            TokenRefusal::NotASpiffeId { .. } => "jwt_not_a_spiffe_id",
        }
    }
}

/// Why the cluster's JWKS file, or the settings that come with it, cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The file cannot be opened or read.
    #[error("cannot read the cluster's JWKS {path}: {error}")]
    Read {
        /// The JWKS file.
        path: PathBuf,
        /// What the system said.
        error: io::Error,
    },
    /// The file is larger than [`MAX_JWKS_LEN`].
    #[error("the cluster's JWKS {path} is larger than {MAX_JWKS_LEN} bytes")]
    TooLarge {
        /// The JWKS file.
        path: PathBuf,
    },
    /// The file is not a JSON object with a `keys` array.
    #[error("the cluster's JWKS {path} is not a JSON Web Key Set: {error}")]
    Parse {
        /// The JWKS file.
        path: PathBuf,
        /// What the JSON parser said.
        error: serde_json::Error,
    },
    /// No key in the file can verify RS256 or ES256 signatures.
    #[error(
        "the cluster's JWKS {path} has no key usable for RS256 or ES256 signatures \
         (RSA of 2048 to 8192 bits, or EC P-256, for use \"sig\")"
    )]
    NoUsableKey {
        /// The JWKS file.
        path: PathBuf,
    },
    /// The JWKS could not be fetched.
    #[error("cannot fetch the cluster's JWKS from {url}: {reason}")]
    Fetch {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The issuer or the audience is empty.
    #[error("the service-account settings are not usable: {reason}")]
    Config {
        /// Which setting, in our words.
        reason: &'static str,
    },
}

/// Verifies Kubernetes service-account tokens against the cluster's signing keys. Shared by every
/// request: [`ServiceAccountVerifier::verify`] takes `&self` and reads the keys without a lock,
/// while [`ServiceAccountVerifier::reload`] swaps in a new set.
/// Verifies Kubernetes service-account tokens against the cluster's signing keys. Shared by every
/// request: [`ServiceAccountVerifier::verify`] takes `&self` and reads the keys without a lock,
/// while [`ServiceAccountVerifier::reload`] swaps in a new set.
#[derive(Debug)]
pub struct ServiceAccountVerifier {
    config: ServiceAccountConfig,
    // Behind an ArcSwap so that a reload never blocks or tears a verification: each verification
    // works on the one set it loaded, old or new.
    keys: ArcSwap<KeySet>,
}

impl ServiceAccountVerifier {
    /// Reads the JWKS file and checks the settings. Fails when the file cannot be read or parsed,
    /// when it has no usable key, or when the issuer or audience is empty. For
    /// [`JwksSource::Url`], [`ServiceAccountVerifier::with_keys`] takes the first fetch instead.
    pub fn load(config: ServiceAccountConfig) -> Result<Self, JwksError> {
        let JwksSource::File(path) = &config.jwks else {
            return Err(JwksError::Config {
                reason: "a JWKS fetched from a URL is given with with_keys",
            });
        };
        let bytes = jwks::read_bounded(path)?;
        Self::with_keys(config, bytes)
    }

    /// The settings, checked, and the keys of `bytes` (a JWKS document): what [`load`] reads from
    /// a file, or the first fetch of a URL.
    ///
    /// [`load`]: ServiceAccountVerifier::load
    pub fn with_keys(config: ServiceAccountConfig, bytes: Vec<u8>) -> Result<Self, JwksError> {
        if config.issuer.is_empty() {
            return Err(JwksError::Config {
                reason: "the issuer is empty",
            });
        }
        // An empty audience would admit tokens requested with no particular audience in mind.
        if config.audience.is_empty() {
            return Err(JwksError::Config {
                reason: "the audience is empty",
            });
        }
        install_crypto_provider();
        let keys = KeySet::parse(&config.jwks.label(), bytes)?;
        Ok(ServiceAccountVerifier {
            config,
            keys: ArcSwap::from_pointee(keys),
        })
    }

    /// Re-reads the JWKS file: returns `Ok(true)` when the set of keys changed and is now in use,
    /// `Ok(false)` when it is the same. A file that cannot be read, does not parse or has no
    /// usable key is an error, and the keys in use stay as they were: a half-written or broken
    /// file must not lock every workload out.
    pub fn reload(&self) -> Result<bool, JwksError> {
        match &self.config.jwks {
            JwksSource::File(path) => self.replace(jwks::read_bounded(path)?),
            // Fetched by the service's JwksFetcher, which calls `replace`.
            JwksSource::Url(_) => Ok(false),
        }
    }

    /// Puts the keys of `bytes` (a JWKS document) in use, as [`reload`] does with the file's:
    /// `Ok(true)` when the set of keys changed. A document that does not parse or has no usable
    /// key leaves the keys in use as they were.
    ///
    /// [`reload`]: ServiceAccountVerifier::reload
    pub fn replace(&self, bytes: Vec<u8>) -> Result<bool, JwksError> {
        let current = self.keys.load();
        // The common case, every period: nothing changed, and nothing needs parsing.
        if current.same_source(&bytes) {
            return Ok(false);
        }
        let next = KeySet::parse(&self.config.jwks.label(), bytes)?;
        // A file rewritten with the same keys (other spacing, other member order) is stored, so
        // the next reload compares bytes again, but it is not reported as a key change.
        let changed = !next.same_keys(&current);
        self.keys.store(Arc::new(next));
        Ok(changed)
    }

    /// The settings this verifier was loaded with.
    pub fn config(&self) -> &ServiceAccountConfig {
        &self.config
    }

    /// How many keys of the current set can verify tokens (RS256 or ES256).
    pub fn usable_keys(&self) -> usize {
        self.keys.load().usable()
    }

    /// Verifies `token` (without `Bearer `) at time `now` and returns the service account it
    /// proves, with its SPIFFE ID in `trust_domain`; or the first rule it breaks.
    pub fn verify(
        &self,
        token: &str,
        trust_domain: &TrustDomain,
        now: SystemTime,
    ) -> Result<ServiceAccount, TokenRefusal> {
        // Before anything else: the length is all we know of a token we have not parsed.
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenRefusal::TooLarge { len: token.len() });
        }
        // Algorithm and key ID, from the header; the algorithm only if it is one we accept.
        let header = token::read_header(token)?;
        let keys = self.keys.load();
        // The keys that may have signed it, each for exactly the header's algorithm.
        let candidates = keys.candidates(header.kid.as_deref(), header.alg)?;
        let claims = token::verify_signature(token, header.alg, &candidates)?;
        let expires_at = claims.check(&self.config, unix_seconds(now))?;
        identity::service_account(
            claims.kubernetes(),
            claims.subject(),
            trust_domain,
            expires_at,
        )
    }
}

/// jsonwebtoken picks its crypto backend from its crate features, and when both of its backends
/// end up compiled in (features add up across a dependency graph) it falls back to a provider
/// that panics on first use. Installing the aws-lc-rs one explicitly rules that out. An error only
/// says that a provider was installed already, by an earlier load or deliberately by the program.
fn install_crypto_provider() {
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}

/// `s` cut to [`MAX_PEER_CHARS`] characters (the last one then `…`), for quoting a string the
/// caller chose in a refusal.
fn peer_text(s: &str) -> String {
    if s.chars().count() <= MAX_PEER_CHARS {
        return s.to_owned();
    }
    let mut cut: String = s.chars().take(MAX_PEER_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// Seconds since the Unix epoch, negative before it; saturating rather than failing, since a
/// clock that far off refuses every token anyway.
fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_text_is_cut_to_64_characters() {
        assert_eq!(peer_text("short"), "short");
        let exact = "x".repeat(MAX_PEER_CHARS);
        assert_eq!(peer_text(&exact), exact);
        let long = "é".repeat(1000);
        let cut = peer_text(&long);
        assert_eq!(cut.chars().count(), MAX_PEER_CHARS);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn unix_seconds_handles_both_sides_of_the_epoch() {
        assert_eq!(unix_seconds(UNIX_EPOCH + Duration::from_secs(42)), 42);
        assert_eq!(unix_seconds(UNIX_EPOCH - Duration::from_secs(42)), -42);
    }

    #[test]
    fn every_refusal_has_its_own_stable_code() {
        let all = [
            TokenRefusal::TooLarge { len: 1 },
            TokenRefusal::Malformed { reason: "r" },
            TokenRefusal::AlgorithmNotAllowed { alg: "none".into() },
            TokenRefusal::UnknownKey { kid: "k".into() },
            TokenRefusal::NoKeyForAlgorithm { alg: "RS256" },
            TokenRefusal::KeyAlgorithmMismatch {
                kid: "k".into(),
                alg: "RS256",
            },
            TokenRefusal::BadSignature,
            TokenRefusal::MissingClaim { claim: "exp" },
            TokenRefusal::Expired { exp: 1 },
            TokenRefusal::NotYetValid {
                claim: "nbf",
                at: 1,
            },
            TokenRefusal::WrongIssuer { issuer: "i".into() },
            TokenRefusal::WrongAudience {
                audience: "a".into(),
            },
            TokenRefusal::NoKubernetesClaims,
            TokenRefusal::SubjectMismatch {
                subject: "s".into(),
            },
            TokenRefusal::InvalidName {
                kind: "namespace",
                name: "N".into(),
            },
            TokenRefusal::NotASpiffeId { reason: "r".into() },
        ];
        let mut codes: Vec<&str> = all.iter().map(TokenRefusal::code).collect();
        for code in &codes {
            assert!(code.starts_with("jwt_"), "{code}");
            assert!(
                code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{code} is not snake_case"
            );
        }
        for refusal in &all {
            assert!(!refusal.to_string().is_empty());
        }
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len(), "two refusals share a code");
        assert_eq!(
            TokenRefusal::Expired { exp: 1 }.code(),
            "jwt_expired",
            "codes are an interface: scripts and metrics match on them"
        );
    }

    #[test]
    fn verifier_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ServiceAccountVerifier>();
    }
}
