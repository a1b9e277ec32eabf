//! Attesting a caller of `POST /v1/sign` by its Kubernetes projected service-account token.
//!
//! A pod can mount a projected service-account token: a JWT that the API server signs, with an
//! audience we choose and a short life. Presented as `Authorization: Bearer <token>`, it proves
//! which namespace and service account the pod runs as, and this module turns it into
//! `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`: no join token has to be handed
//! out to workloads that Kubernetes already knows.
//!
//! The token is checked against the cluster's signing keys, the JWKS document the API server
//! publishes at `/openid/v1/jwks`, read from a file ([`ServiceAccountConfig::jwks_path`]) that
//! [`ServiceAccountVerifier::reload`] re-reads so that a key rotation needs no restart. Then its
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
//! looked at. `jsonwebtoken` then verifies with a [`Validation`] that allows exactly that one
//! algorithm, so the same rule is enforced twice, by two pieces of code.
//!
//! Every refusal is a [`TokenRefusal`], with a sentence for people and a stable code
//! ([`TokenRefusal::code`]) for scripts and metrics. Strings taken from the token are cut to
//! [`MAX_PEER_CHARS`] characters in those sentences; they are not escaped here, the caller escapes
//! them for its logs.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use palisade_identity::{SpiffeId, TrustDomain};

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

/// `sub` of a service-account token: `system:serviceaccount:<namespace>:<name>`.
const SA_SUBJECT_PREFIX: &str = "system:serviceaccount:";

/// Longest Kubernetes namespace name (a DNS-1123 label).
const MAX_LABEL_LEN: usize = 63;
/// Longest Kubernetes object name such as a service account's (a DNS-1123 subdomain).
const MAX_SUBDOMAIN_LEN: usize = 253;

/// Where the cluster's signing keys are and what a token for this CA must say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccountConfig {
    /// The JWKS document of the cluster's API server (`kubectl get --raw /openid/v1/jwks`), kept
    /// up to date by whoever deploys the CA.
    pub jwks_path: PathBuf,
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
#[derive(Debug)]
pub struct ServiceAccountVerifier {
    config: ServiceAccountConfig,
    // Behind an ArcSwap so that a reload never blocks or tears a verification: each verification
    // works on the one set it loaded, old or new.
    keys: ArcSwap<KeySet>,
}

impl ServiceAccountVerifier {
    /// Reads the JWKS file and checks the settings. Fails when the file cannot be read or parsed,
    /// when it has no usable key, or when the issuer or audience is empty.
    pub fn load(config: ServiceAccountConfig) -> Result<Self, JwksError> {
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
        let bytes = read_bounded(&config.jwks_path)?;
        let keys = KeySet::parse(&config.jwks_path, bytes)?;
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
        let bytes = read_bounded(&self.config.jwks_path)?;
        let current = self.keys.load();
        // The common case, every period: nothing changed, and nothing needs parsing.
        if bytes == current.source {
            return Ok(false);
        }
        let next = KeySet::parse(&self.config.jwks_path, bytes)?;
        // A file rewritten with the same keys (other spacing, other member order) is stored, so
        // the next reload compares bytes again, but it is not reported as a key change.
        let changed = next.jwks != current.jwks;
        self.keys.store(Arc::new(next));
        Ok(changed)
    }

    /// The settings this verifier was loaded with.
    pub fn config(&self) -> &ServiceAccountConfig {
        &self.config
    }

    /// How many keys of the current set can verify tokens (RS256 or ES256).
    pub fn usable_keys(&self) -> usize {
        self.keys
            .load()
            .keys
            .iter()
            .filter(|k| k.usable.is_some())
            .count()
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
        let header_part = header_part(token)?;
        let header = parse_header(header_part)?;
        let alg = SigningAlg::from_header(&header.alg).ok_or_else(|| {
            TokenRefusal::AlgorithmNotAllowed {
                alg: peer_text(&header.alg),
            }
        })?;
        // RFC 7515 §4.1.11: extensions listed as critical must be understood or the token
        // refused; we understand none.
        if header.crit.is_some() {
            return Err(TokenRefusal::Malformed {
                reason: "the header lists critical extensions, which this CA does not support",
            });
        }
        let keys = self.keys.load();
        let candidates = keys.candidates(header.kid.as_deref(), alg)?;
        let claims = verify_signature(token, alg, &candidates)?;
        self.check_claims(claims, trust_domain, unix_seconds(now))
    }

    /// Everything after the signature: issuer, audience, times, then the service account.
    fn check_claims(
        &self,
        claims: Claims,
        trust_domain: &TrustDomain,
        now: i64,
    ) -> Result<ServiceAccount, TokenRefusal> {
        let issuer = claims
            .iss
            .as_deref()
            .ok_or(TokenRefusal::MissingClaim { claim: "iss" })?;
        if issuer != self.config.issuer {
            return Err(TokenRefusal::WrongIssuer {
                issuer: peer_text(issuer),
            });
        }
        let audience = claims
            .aud
            .as_ref()
            .ok_or(TokenRefusal::MissingClaim { claim: "aud" })?;
        if !audience.contains(&self.config.audience) {
            return Err(TokenRefusal::WrongAudience {
                audience: audience.describe(),
            });
        }
        // A token without `exp` would be good forever: projected tokens always have one.
        let exp = claims
            .exp
            .ok_or(TokenRefusal::MissingClaim { claim: "exp" })?;
        if now >= exp.saturating_add(SKEW_SECS) {
            return Err(TokenRefusal::Expired { exp });
        }
        for (claim, at) in [("nbf", claims.nbf), ("iat", claims.iat)] {
            if let Some(at) = at.filter(|&at| at > now.saturating_add(SKEW_SECS)) {
                return Err(TokenRefusal::NotYetValid { claim, at });
            }
        }

        let (namespace, name, pod) = service_account_of(&claims)?;
        if !is_dns1123_label(&namespace) {
            return Err(TokenRefusal::InvalidName {
                kind: "namespace",
                name: peer_text(&namespace),
            });
        }
        if !is_dns1123_subdomain(&name) {
            return Err(TokenRefusal::InvalidName {
                kind: "service account",
                name: peer_text(&name),
            });
        }
        if let Some(pod) = &pod {
            if !is_dns1123_subdomain(pod) {
                return Err(TokenRefusal::InvalidName {
                    kind: "pod",
                    name: peer_text(pod),
                });
            }
        }
        let spiffe_id = spiffe_id_for(trust_domain, &namespace, &name)?;
        Ok(ServiceAccount {
            namespace,
            name,
            pod,
            spiffe_id,
            expires_at: exp,
        })
    }
}

/// jsonwebtoken picks its crypto backend from its crate features, and when both of its backends
/// end up compiled in (features add up across a dependency graph) it falls back to a provider
/// that panics on first use. Installing the aws-lc-rs one explicitly rules that out. An error only
/// says that a provider was installed already, by an earlier load or deliberately by the program.
fn install_crypto_provider() {
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}

/// The two algorithms we accept, each tied to one key type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SigningAlg {
    /// RSASSA-PKCS1-v1_5 with SHA-256: RSA keys, what the API server uses by default.
    Rs256,
    /// ECDSA P-256 with SHA-256: EC P-256 keys.
    Es256,
}

impl SigningAlg {
    /// The algorithm a header's `alg` names, if we accept it. Exact and case-sensitive, as JWA
    /// names are.
    fn from_header(alg: &str) -> Option<Self> {
        match alg {
            "RS256" => Some(SigningAlg::Rs256),
            "ES256" => Some(SigningAlg::Es256),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            SigningAlg::Rs256 => "RS256",
            SigningAlg::Es256 => "ES256",
        }
    }

    fn jsonwebtoken(self) -> Algorithm {
        match self {
            SigningAlg::Rs256 => Algorithm::RS256,
            SigningAlg::Es256 => Algorithm::ES256,
        }
    }
}

/// The cluster's keys as of one read of the JWKS file.
#[derive(Debug)]
struct KeySet {
    /// The file as read, to tell an unchanged file at the next reload without parsing it.
    source: Vec<u8>,
    /// The keys as parsed, to tell a change of keys from a change of formatting.
    jwks: Vec<RawJwk>,
    /// The same keys, ready for verification, in the file's order.
    keys: Vec<KeyEntry>,
}

/// One key of the set. Keys we cannot use are kept (without a verifying key) so that a token
/// naming one is told "not a key for this algorithm" rather than "unknown key".
#[derive(Debug)]
struct KeyEntry {
    kid: Option<String>,
    usable: Option<(SigningAlg, DecodingKey)>,
}

impl KeyEntry {
    /// The key, if it verifies `alg` signatures.
    fn key_for(&self, alg: SigningAlg) -> Option<&DecodingKey> {
        match &self.usable {
            Some((key_alg, key)) if *key_alg == alg => Some(key),
            _ => None,
        }
    }
}

/// The JWKS document, keys left unparsed: one key we cannot read must not make the whole set
/// unreadable (the API server may publish key types later that we do not know).
#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

/// The members of a JWK (RFC 7517) that we use.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct RawJwk {
    kty: String,
    kid: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    alg: Option<String>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

impl KeySet {
    fn parse(path: &Path, source: Vec<u8>) -> Result<Self, JwksError> {
        let raw: RawJwks = serde_json::from_slice(&source).map_err(|error| JwksError::Parse {
            path: path.to_owned(),
            error,
        })?;
        let mut jwks = Vec::with_capacity(raw.keys.len());
        let mut keys = Vec::with_capacity(raw.keys.len());
        for value in raw.keys {
            let Ok(jwk) = serde_json::from_value::<RawJwk>(value) else {
                continue;
            };
            keys.push(KeyEntry {
                kid: jwk.kid.clone(),
                usable: usable_key(&jwk),
            });
            jwks.push(jwk);
        }
        if !keys.iter().any(|k| k.usable.is_some()) {
            return Err(JwksError::NoUsableKey {
                path: path.to_owned(),
            });
        }
        Ok(KeySet { source, jwks, keys })
    }

    /// The keys a token with this header may be verified with. With a `kid`, only the key of that
    /// ID, and only if it is a key for `alg`; without one, every key for `alg` (a cluster has few).
    fn candidates(
        &self,
        kid: Option<&str>,
        alg: SigningAlg,
    ) -> Result<Vec<&DecodingKey>, TokenRefusal> {
        match kid {
            Some(kid) => {
                let mut named = self
                    .keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid))
                    .peekable();
                if named.peek().is_none() {
                    return Err(TokenRefusal::UnknownKey {
                        kid: peer_text(kid),
                    });
                }
                let keys: Vec<&DecodingKey> = named.filter_map(|k| k.key_for(alg)).collect();
                if keys.is_empty() {
                    return Err(TokenRefusal::KeyAlgorithmMismatch {
                        kid: peer_text(kid),
                        alg: alg.name(),
                    });
                }
                Ok(keys)
            }
            None => {
                let keys: Vec<&DecodingKey> =
                    self.keys.iter().filter_map(|k| k.key_for(alg)).collect();
                if keys.is_empty() {
                    return Err(TokenRefusal::NoKeyForAlgorithm { alg: alg.name() });
                }
                Ok(keys)
            }
        }
    }
}

/// The verifying key a JWK makes and the one algorithm it is for, or `None` when we cannot use it
/// for RS256 or ES256 signatures.
fn usable_key(jwk: &RawJwk) -> Option<(SigningAlg, DecodingKey)> {
    // An encryption key ("enc") must not verify signatures, whatever its type.
    if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
        return None;
    }
    let (alg, key) = match jwk.kty.as_str() {
        "RSA" => (SigningAlg::Rs256, rsa_key(jwk)?),
        "EC" => (SigningAlg::Es256, ec_p256_key(jwk)?),
        _ => return None,
    };
    // A JWK that names its algorithm is for that one only (RFC 7517 §4.4): an RSA key marked
    // PS256 or RS512 is not one we may verify RS256 with.
    match jwk.alg.as_deref() {
        Some(key_alg) if key_alg != alg.name() => None,
        _ => Some((alg, key)),
    }
}

fn rsa_key(jwk: &RawJwk) -> Option<DecodingKey> {
    let n = URL_SAFE_NO_PAD.decode(jwk.n.as_deref()?).ok()?;
    let e = URL_SAFE_NO_PAD.decode(jwk.e.as_deref()?).ok()?;
    let first = n.iter().position(|&b| b != 0)?;
    let n = &n[first..];
    // aws-lc verifies RS256 with keys of 2048 to 8192 bits only, and would refuse every token
    // signed with another size; saying so at load time ("no usable key") is easier to act on.
    if !(256..=1024).contains(&n.len()) || e.is_empty() {
        return None;
    }
    Some(DecodingKey::from_rsa_raw_components(n, &e))
}

fn ec_p256_key(jwk: &RawJwk) -> Option<DecodingKey> {
    if jwk.crv.as_deref() != Some("P-256") {
        return None;
    }
    let (x, y) = (jwk.x.as_deref()?, jwk.y.as_deref()?);
    let (x_bytes, y_bytes) = (
        URL_SAFE_NO_PAD.decode(x).ok()?,
        URL_SAFE_NO_PAD.decode(y).ok()?,
    );
    if x_bytes.len() != 32 || y_bytes.len() != 32 {
        return None;
    }
    // Parsed once here so that a point off the curve is found at load time, not by every token.
    let mut point = Vec::with_capacity(65);
    point.push(0x04);
    point.extend_from_slice(&x_bytes);
    point.extend_from_slice(&y_bytes);
    aws_lc_rs::signature::ParsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
        &point,
    )
    .ok()?;
    DecodingKey::from_ec_components(x, y).ok()
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, JwksError> {
    let read_error = |error: io::Error| JwksError::Read {
        path: path.to_owned(),
        error,
    };
    let file = File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(MAX_JWKS_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_JWKS_LEN {
        return Err(JwksError::TooLarge {
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

/// The header members we act on; the rest is ignored (and never used: `jku`, `jwk`, `x5u` and
/// `x5c` would let the token bring its own key).
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    kid: Option<String>,
    crit: Option<serde_json::Value>,
}

/// The first part of a compact JWS, once the token is known to be three base64url parts.
fn header_part(token: &str) -> Result<&str, TokenRefusal> {
    let base64url = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    if !token.bytes().all(|b| base64url(b) || b == b'.') {
        return Err(TokenRefusal::Malformed {
            reason: "it holds characters other than base64url and dots",
        });
    }
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        // The signature part may be empty here: `alg: none` tokens have none, and are refused
        // for their algorithm, which says more than "malformed".
        (Some(header), Some(payload), Some(_), None)
            if !header.is_empty() && !payload.is_empty() =>
        {
            Ok(header)
        }
        _ => Err(TokenRefusal::Malformed {
            reason: "a JWT is three base64url parts separated by dots",
        }),
    }
}

fn parse_header(part: &str) -> Result<RawHeader, TokenRefusal> {
    let json = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenRefusal::Malformed {
            reason: "the header is not base64url",
        })?;
    serde_json::from_slice(&json).map_err(|_| TokenRefusal::Malformed {
        reason: "the header is not a JSON object with a string \"alg\"",
    })
}

/// Verifies the signature with each candidate key in turn (one, when the header has a `kid`) and
/// returns the claims of the first that verifies.
fn verify_signature(
    token: &str,
    alg: SigningAlg,
    keys: &[&DecodingKey],
) -> Result<Claims, TokenRefusal> {
    // Exactly one algorithm, the one the key is for (equal to the header's, checked above):
    // jsonwebtoken refuses a header naming any other, so it cannot take the algorithm from the
    // token either.
    let mut validation = Validation::new(alg.jsonwebtoken());
    // The claims are checked by `check_claims`, against the caller's `now` (jsonwebtoken reads
    // the system clock) and with our own refusals; here only the signature is.
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    for key in keys {
        match jsonwebtoken::decode::<Claims>(token, key, &validation) {
            Ok(data) => return Ok(data.claims),
            // Another key of the cluster may have made it; if none did, BadSignature below.
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::InvalidSignature
                        | ErrorKind::InvalidKeyFormat
                        | ErrorKind::InvalidRsaKey(_)
                        | ErrorKind::InvalidEcdsaKey
                ) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::InvalidAlgorithm
                        | ErrorKind::InvalidAlgorithmName
                        | ErrorKind::MissingAlgorithm
                ) =>
            {
                return Err(TokenRefusal::AlgorithmNotAllowed {
                    alg: alg.name().to_owned(),
                });
            }
            // Base64 or JSON that does not decode, whatever the key: no point trying another.
            Err(_) => {
                return Err(TokenRefusal::Malformed {
                    reason: "the parts do not decode to a JWT header, claims and signature",
                });
            }
        }
    }
    Err(TokenRefusal::BadSignature)
}

/// The claims we read. Every member is optional here so that a missing one gets its own refusal;
/// a member of the wrong type (or twice) makes the token malformed.
#[derive(Deserialize)]
struct Claims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Audience>,
    exp: Option<i64>,
    nbf: Option<i64>,
    iat: Option<i64>,
    #[serde(rename = "kubernetes.io")]
    kubernetes: Option<KubernetesClaim>,
}

/// `aud`: one string or an array of them (RFC 7519 §4.1.3).
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, audience: &str) -> bool {
        match self {
            Audience::One(one) => one == audience,
            Audience::Many(many) => many.iter().any(|a| a == audience),
        }
    }

    fn describe(&self) -> String {
        match self {
            Audience::One(one) => peer_text(one),
            Audience::Many(many) => peer_text(&many.join(", ")),
        }
    }
}

/// `{"namespace": ..., "serviceaccount": {"name": ..., "uid": ...}, "pod": {"name": ..., ...}}`.
#[derive(Deserialize)]
struct KubernetesClaim {
    namespace: Option<String>,
    serviceaccount: Option<ObjectRef>,
    pod: Option<ObjectRef>,
}

#[derive(Deserialize)]
struct ObjectRef {
    name: Option<String>,
}

/// Namespace, service account and pod, from the `kubernetes.io` claim when there is one (what
/// projected tokens carry), else from a `sub` of the service-account form. When both are there
/// they must agree: two answers to "who is this" mean we cannot tell which one was meant.
fn service_account_of(claims: &Claims) -> Result<(String, String, Option<String>), TokenRefusal> {
    let from_claim = match &claims.kubernetes {
        Some(k) => {
            let name = k.serviceaccount.as_ref().and_then(|sa| sa.name.as_ref());
            match (&k.namespace, name) {
                (Some(namespace), Some(name)) => Some((
                    namespace.clone(),
                    name.clone(),
                    k.pod.as_ref().and_then(|p| p.name.clone()),
                )),
                _ => return Err(TokenRefusal::NoKubernetesClaims),
            }
        }
        None => None,
    };
    let subject = claims.sub.as_deref();
    match (from_claim, subject) {
        (Some(account), Some(subject)) => {
            if parse_sa_subject(subject) == Some((account.0.as_str(), account.1.as_str())) {
                Ok(account)
            } else {
                Err(TokenRefusal::SubjectMismatch {
                    subject: peer_text(subject),
                })
            }
        }
        (Some(account), None) => Ok(account),
        (None, Some(subject)) => match parse_sa_subject(subject) {
            Some((namespace, name)) => Ok((namespace.to_owned(), name.to_owned(), None)),
            None => Err(TokenRefusal::NoKubernetesClaims),
        },
        (None, None) => Err(TokenRefusal::NoKubernetesClaims),
    }
}

/// `system:serviceaccount:<namespace>:<name>` → `(namespace, name)`. The name keeps any further
/// `:`, and then fails the name check.
fn parse_sa_subject(subject: &str) -> Option<(&str, &str)> {
    subject.strip_prefix(SA_SUBJECT_PREFIX)?.split_once(':')
}

/// Builds the ID as text and parses it, then checks that it came out as the four segments meant:
/// the names were checked already, but the ID is what the certificate will say, so it is not taken
/// on trust from a concatenation.
fn spiffe_id_for(
    trust_domain: &TrustDomain,
    namespace: &str,
    name: &str,
) -> Result<SpiffeId, TokenRefusal> {
    let text = format!(
        "spiffe://{}/ns/{namespace}/sa/{name}",
        trust_domain.as_str()
    );
    let id = SpiffeId::parse(&text).map_err(|e| TokenRefusal::NotASpiffeId {
        reason: e.to_string(),
    })?;
    let segments: Vec<&str> = id.segments().collect();
    if id.trust_domain() != trust_domain || segments != ["ns", namespace, "sa", name] {
        return Err(TokenRefusal::NotASpiffeId {
            reason: "it does not come out as ns/<namespace>/sa/<name>".to_owned(),
        });
    }
    Ok(id)
}

/// A DNS-1123 label, what a namespace name must be: 1 to 63 of `[a-z0-9-]`, starting and ending
/// with a letter or digit.
fn is_dns1123_label(s: &str) -> bool {
    s.len() <= MAX_LABEL_LEN && is_label(s)
}

/// A DNS-1123 subdomain, what a service account or pod name must be: at most 253 characters,
/// labels as above (without their length limit, as Kubernetes checks it) joined by dots.
fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_SUBDOMAIN_LEN && s.split('.').all(is_label)
}

fn is_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    let alphanumeric = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            alphanumeric(first)
                && alphanumeric(last)
                && bytes.iter().all(|b| alphanumeric(b) || *b == b'-')
        }
        _ => false,
    }
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
    fn namespaces_must_be_dns1123_labels() {
        let longest = "a".repeat(63);
        let too_long = "a".repeat(64);
        for good in ["shop", "a", "kube-system", "ns1", "1ns", longest.as_str()] {
            assert!(is_dns1123_label(good), "{good} should be a label");
        }
        for bad in [
            "",
            "Shop",
            "shop_1",
            "-shop",
            "shop-",
            "sh.op",
            "sh/op",
            "..",
            "shöp",
            too_long.as_str(),
        ] {
            assert!(!is_dns1123_label(bad), "{bad:?} should not be a label");
        }
    }

    #[test]
    fn service_account_names_must_be_dns1123_subdomains() {
        let longest = "a".repeat(253);
        let too_long = "a".repeat(254);
        for good in [
            "frontend",
            "front-end",
            "front.end",
            "a.b.c",
            longest.as_str(),
        ] {
            assert!(is_dns1123_subdomain(good), "{good} should be a subdomain");
        }
        for bad in [
            "",
            ".",
            "..",
            "front..end",
            ".frontend",
            "frontend.",
            "front/end",
            "front end",
            "Frontend",
            "front_end",
            "front.-end",
            too_long.as_str(),
        ] {
            assert!(
                !is_dns1123_subdomain(bad),
                "{bad:?} should not be a subdomain"
            );
        }
    }

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
    fn legacy_subject_parses_into_namespace_and_name() {
        assert_eq!(
            parse_sa_subject("system:serviceaccount:shop:frontend"),
            Some(("shop", "frontend"))
        );
        assert_eq!(
            parse_sa_subject("system:serviceaccount:shop:front:end"),
            Some(("shop", "front:end"))
        );
        assert_eq!(parse_sa_subject("system:serviceaccount:shop"), None);
        assert_eq!(parse_sa_subject("system:node:worker-1"), None);
        assert_eq!(parse_sa_subject("alice"), None);
    }

    #[test]
    fn spiffe_id_is_parsed_not_concatenated() {
        let td = TrustDomain::parse("example.org").expect("trust domain");
        let id = spiffe_id_for(&td, "shop", "frontend").expect("id");
        assert_eq!(id.as_str(), "spiffe://example.org/ns/shop/sa/frontend");
        // Were a name with a slash ever to get this far, it must not add path segments.
        assert!(matches!(
            spiffe_id_for(&td, "shop", "front/sa/admin"),
            Err(TokenRefusal::NotASpiffeId { .. })
        ));
        assert!(matches!(
            spiffe_id_for(&td, "shop", "front%2Fend"),
            Err(TokenRefusal::NotASpiffeId { .. })
        ));
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
