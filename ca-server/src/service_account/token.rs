//! One token: its shape, its header (read by `jsonwebtoken::decode_header`), its signature
//! (verified by `jsonwebtoken::decode` with exactly one algorithm, the key's), and its claims.
//!
//! Kept here rather than left to the library:
//!
//! - the shape check before anything is decoded: only base64url and dots, exactly three parts.
//!   The library splits at the last two dots, so `a.b.c.d` would reach it as a header `a.b`; here
//!   that is refused as what it is;
//! - the name of an algorithm the library does not know. Its `Header::alg` is an `Algorithm`, so
//!   `none` or `rs256` fail to parse with no name to report; the refusal
//!   ([`TokenRefusal::AlgorithmNotAllowed`]) quotes it, so the header's `alg` is read again alone;
//! - `crit`, which the library parses and leaves to the caller (RFC 7515 §4.1.11);
//! - the claims. `Validation` reads the system clock, where [`super::ServiceAccountVerifier::verify`]
//!   takes the time from its caller; it does not check `iat`; and its errors carry neither the
//!   claim's value nor which of `nbf` and `iat` it was, which our refusals report. So the library
//!   checks the signature only, and [`Claims::check`] the rest.
//!
//! Duplicate members: the library's `Header` refuses a second `alg`, `kid`, `crit` or any other
//! registered member, and [`Claims`] (and the `kubernetes.io` claim within) refuse a second member
//! of theirs, since serde's derived code does for structs without `flatten`. Members we never read
//! may appear twice: nothing reads either value. So no separate pre-check is needed, and
//! `duplicate_members_are_refused_never_read_from_a_second_value` (tests/service_account.rs) pins
//! it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::identity::KubernetesClaim;
use super::jwks::SigningAlg;
use super::{peer_text, ServiceAccountConfig, TokenRefusal, SKEW_SECS};

/// What the header says that we act on. The rest is ignored: `jku`, `jwk`, `x5u` and `x5c`
/// would let the token bring its own key, so they are never read (the library parses them).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct TokenHeader {
    /// The algorithm, one we accept.
    pub(super) alg: SigningAlg,
    /// The key the token names, if it does.
    pub(super) kid: Option<String>,
}

/// The header of `token`, once the token has the shape of a compact JWS and its header names an
/// algorithm we accept and no critical extension.
pub(super) fn read_header(token: &str) -> Result<TokenHeader, TokenRefusal> {
    let header_part = header_part(token)?;
    let header = jsonwebtoken::decode_header(token).map_err(|e| header_refusal(header_part, &e))?;
    let alg = SigningAlg::from_algorithm(header.alg).ok_or_else(|| {
        TokenRefusal::AlgorithmNotAllowed {
            // The enum's variants are named as JWA names them ("HS256", "EdDSA").
            alg: format!("{:?}", header.alg),
        }
    })?;
    // RFC 7515 §4.1.11: extensions listed as critical must be understood or the token refused;
    // we understand none.
    if header.crit.is_some() {
        return Err(TokenRefusal::Malformed {
            reason: "the header lists critical extensions, which this CA does not support",
        });
    }
    Ok(TokenHeader {
        alg,
        kid: header.kid,
    })
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

/// Why the library could not read the header. When its JSON has a string `alg` (and one only)
/// that is not RS256 or ES256, the algorithm is the reason, named as the token wrote it; else the
/// header is malformed.
fn header_refusal(header_part: &str, error: &jsonwebtoken::errors::Error) -> TokenRefusal {
    /// The header's `alg` alone; a second `alg` is refused, as the library's `Header` does.
    #[derive(Deserialize)]
    struct AlgOnly {
        alg: String,
    }
    if matches!(error.kind(), ErrorKind::Base64(_)) {
        return TokenRefusal::Malformed {
            reason: "the header is not base64url",
        };
    }
    let alg = URL_SAFE_NO_PAD
        .decode(header_part)
        .ok()
        .and_then(|json| serde_json::from_slice::<AlgOnly>(&json).ok())
        .map(|header| header.alg);
    match alg {
        Some(alg)
            if alg
                .parse::<Algorithm>()
                .ok()
                .and_then(SigningAlg::from_algorithm)
                .is_none() =>
        {
            TokenRefusal::AlgorithmNotAllowed {
                alg: peer_text(&alg),
            }
        }
        _ => TokenRefusal::Malformed {
            reason: "the header is not a JSON object with a string \"alg\" and registered members \
                     of their types",
        },
    }
}

/// Verifies the signature with each candidate key in turn (one, when the header has a `kid`) and
/// returns the claims of the first that verifies.
pub(super) fn verify_signature(
    token: &str,
    alg: SigningAlg,
    keys: &[&DecodingKey],
) -> Result<Claims, TokenRefusal> {
    // Exactly one algorithm, the one the key is for (equal to the header's, checked above):
    // jsonwebtoken refuses a header naming any other, so it cannot take the algorithm from the
    // token either.
    let mut validation = Validation::new(alg.jsonwebtoken());
    // The claims are checked by `Claims::check` (see the module's documentation for why); here
    // only the signature is.
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
pub(super) struct Claims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Audience>,
    exp: Option<i64>,
    nbf: Option<i64>,
    iat: Option<i64>,
    #[serde(rename = "kubernetes.io")]
    kubernetes: Option<KubernetesClaim>,
}

impl Claims {
    /// Issuer, audience and times, at `now` (Unix seconds); returns `exp`.
    pub(super) fn check(
        &self,
        config: &ServiceAccountConfig,
        now: i64,
    ) -> Result<i64, TokenRefusal> {
        let issuer = self
            .iss
            .as_deref()
            .ok_or(TokenRefusal::MissingClaim { claim: "iss" })?;
        if issuer != config.issuer {
            return Err(TokenRefusal::WrongIssuer {
                issuer: peer_text(issuer),
            });
        }
        let audience = self
            .aud
            .as_ref()
            .ok_or(TokenRefusal::MissingClaim { claim: "aud" })?;
        if !audience.contains(&config.audience) {
            return Err(TokenRefusal::WrongAudience {
                audience: audience.describe(),
            });
        }
        // A token without `exp` would be good forever: projected tokens always have one.
        let exp = self
            .exp
            .ok_or(TokenRefusal::MissingClaim { claim: "exp" })?;
        if now >= exp.saturating_add(SKEW_SECS) {
            return Err(TokenRefusal::Expired { exp });
        }
        for (claim, at) in [("nbf", self.nbf), ("iat", self.iat)] {
            if let Some(at) = at.filter(|&at| at > now.saturating_add(SKEW_SECS)) {
                return Err(TokenRefusal::NotYetValid { claim, at });
            }
        }
        Ok(exp)
    }

    /// The `kubernetes.io` claim, if the token has one.
    pub(super) fn kubernetes(&self) -> Option<&KubernetesClaim> {
        self.kubernetes.as_ref()
    }

    /// The `sub`, if the token has one.
    pub(super) fn subject(&self) -> Option<&str> {
        self.sub.as_deref()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn token_with_header(header: &str) -> String {
        format!("{}.e30.c2ln", URL_SAFE_NO_PAD.encode(header))
    }

    #[test]
    fn the_header_names_the_algorithm_and_the_key() {
        assert_eq!(
            read_header(&token_with_header(
                r#"{"alg":"ES256","kid":"k","typ":"JWT"}"#
            )),
            Ok(TokenHeader {
                alg: SigningAlg::Es256,
                kid: Some("k".to_owned())
            })
        );
        assert_eq!(
            read_header(&token_with_header(r#"{"alg":"RS256"}"#)),
            Ok(TokenHeader {
                alg: SigningAlg::Rs256,
                kid: None
            })
        );
    }

    #[test]
    fn an_algorithm_the_library_does_not_know_is_named_in_the_refusal() {
        for (header, alg) in [
            (r#"{"alg":"none"}"#, "none"),
            (r#"{"alg":"rs256","kid":"k"}"#, "rs256"),
            (r#"{"alg":"HS256"}"#, "HS256"),
            (r#"{"alg":"EdDSA"}"#, "EdDSA"),
            // Known to the library but not ours, with a member it cannot read: still the alg.
            (r#"{"alg":"PS256","x5c":"not an array"}"#, "PS256"),
        ] {
            assert_eq!(
                read_header(&token_with_header(header)),
                Err(TokenRefusal::AlgorithmNotAllowed {
                    alg: alg.to_owned()
                }),
                "{header}"
            );
        }
    }

    #[test]
    fn a_header_it_cannot_read_is_malformed() {
        for header in [
            // Ours, but a registered member of the wrong type.
            r#"{"alg":"RS256","jwk":5}"#,
            r#"{"alg":"RS256","crit":"exp"}"#,
            // Twice: never read from either value.
            r#"{"alg":"none","alg":"RS256"}"#,
            r#"{"alg":"RS256","kid":"a","kid":"b"}"#,
            // Listed as critical.
            r#"{"alg":"RS256","crit":[]}"#,
            r#"{"kid":"k"}"#,
            "[]",
        ] {
            assert!(
                matches!(
                    read_header(&token_with_header(header)),
                    Err(TokenRefusal::Malformed { .. })
                ),
                "{header}"
            );
        }
    }
}
