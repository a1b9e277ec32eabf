//! The cluster's signing keys: the JWKS file, read within a bound, its keys turned into verifying
//! keys by `jsonwebtoken` (`jwk::Jwk`, `DecodingKey::from_jwk`), each tied to the one algorithm it
//! may verify.
//!
//! Kept here rather than left to the library:
//!
//! - the set around the keys. `jwk::JwkSet` holds a `Vec<Jwk>`, so a single key the library cannot
//!   read (a key type it does not know, such as `AKP`) would make the whole file unreadable, and
//!   lock every workload out the day the API server publishes one. Here each key is read on its
//!   own, and one we cannot read is kept as its `kid` only, so that a token naming it is told "not
//!   a key for this algorithm" rather than "unknown key";
//! - the checks `DecodingKey::from_jwk` does not make: it takes `x` and `y` whatever the curve and
//!   length, and `n` whatever the size, and reads neither `use` nor `alg`. A key it accepts and
//!   aws-lc then refuses at every verification would show as "bad signature" on every token; a
//!   key refused here shows at load as "no usable key".

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, EllipticCurveKeyParameters, Jwk, KeyAlgorithm,
    PublicKeyUse, RSAKeyParameters,
};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::de::IgnoredAny;
use serde::Deserialize;

use super::{peer_text, JwksError, TokenRefusal, MAX_JWKS_LEN};

/// The two algorithms we accept, each tied to one key type: the algorithm comes from the key.
/// jsonwebtoken's `Algorithm` names twelve, and its `DecodingKey` knows only a key's family (an
/// RSA key would verify RS512 and PS256 too), hence this narrower type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SigningAlg {
    /// RSASSA-PKCS1-v1_5 with SHA-256: RSA keys, what the API server uses by default.
    Rs256,
    /// ECDSA P-256 with SHA-256: EC P-256 keys.
    Es256,
}

impl SigningAlg {
    /// The algorithm a header names, if we accept it.
    pub(super) fn from_algorithm(alg: Algorithm) -> Option<Self> {
        match alg {
            Algorithm::RS256 => Some(SigningAlg::Rs256),
            Algorithm::ES256 => Some(SigningAlg::Es256),
            _ => None,
        }
    }

    /// The JWA name, as headers and refusals write it.
    pub(super) fn name(self) -> &'static str {
        match self {
            SigningAlg::Rs256 => "RS256",
            SigningAlg::Es256 => "ES256",
        }
    }

    /// The one algorithm jsonwebtoken is allowed to verify with.
    pub(super) fn jsonwebtoken(self) -> Algorithm {
        match self {
            SigningAlg::Rs256 => Algorithm::RS256,
            SigningAlg::Es256 => Algorithm::ES256,
        }
    }

    /// What a JWK's own `alg` says when it is for this algorithm.
    fn key_algorithm(self) -> KeyAlgorithm {
        match self {
            SigningAlg::Rs256 => KeyAlgorithm::RS256,
            SigningAlg::Es256 => KeyAlgorithm::ES256,
        }
    }
}

/// The cluster's keys as of one read of the JWKS file.
#[derive(Debug)]
pub(super) struct KeySet {
    /// The file as read, to tell an unchanged file at the next reload without parsing it.
    source: Vec<u8>,
    /// The keys as parsed, to tell a change of keys from a change of formatting.
    jwks: Vec<JwkEntry>,
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

/// The JWKS document, each key read on its own (see the module's documentation for why not
/// `jwk::JwkSet`).
#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<JwkEntry>,
}

/// One member of `keys`. Tried in this order: a JWK the library reads; else an object with a
/// string `kid`; else anything at all, skipped. A key with a member twice is not a `Jwk` (serde's
/// derived code refuses the second one), so it is never read from either value.
#[derive(Debug, PartialEq, Deserialize)]
#[serde(untagged)]
enum JwkEntry {
    Key(Box<Jwk>),
    Named { kid: String },
    Other(IgnoredAny),
}

impl KeySet {
    pub(super) fn parse(path: &Path, source: Vec<u8>) -> Result<Self, JwksError> {
        let raw: RawJwks = serde_json::from_slice(&source).map_err(|error| JwksError::Parse {
            path: path.to_owned(),
            error,
        })?;
        let keys: Vec<KeyEntry> = raw
            .keys
            .iter()
            .filter_map(|entry| match entry {
                JwkEntry::Key(jwk) => Some(KeyEntry {
                    kid: jwk.common.key_id.clone(),
                    usable: usable_key(jwk),
                }),
                JwkEntry::Named { kid } => Some(KeyEntry {
                    kid: Some(kid.clone()),
                    usable: None,
                }),
                JwkEntry::Other(_) => None,
            })
            .collect();
        if !keys.iter().any(|k| k.usable.is_some()) {
            return Err(JwksError::NoUsableKey {
                path: path.to_owned(),
            });
        }
        Ok(KeySet {
            source,
            jwks: raw.keys,
            keys,
        })
    }

    /// Whether `bytes` are the very bytes this set was parsed from.
    pub(super) fn same_source(&self, bytes: &[u8]) -> bool {
        self.source == bytes
    }

    /// Whether `other` holds the same keys, however the file was formatted.
    pub(super) fn same_keys(&self, other: &KeySet) -> bool {
        self.jwks == other.jwks
    }

    /// How many keys can verify tokens.
    pub(super) fn usable(&self) -> usize {
        self.keys.iter().filter(|k| k.usable.is_some()).count()
    }

    /// The keys a token with this header may be verified with. With a `kid`, only the key of that
    /// ID, and only if it is a key for `alg`; without one, every key for `alg` (a cluster has few).
    pub(super) fn candidates(
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
fn usable_key(jwk: &Jwk) -> Option<(SigningAlg, DecodingKey)> {
    // An encryption key ("enc") must not verify signatures, whatever its type.
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return None;
    }
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) if rsa_size_is_usable(rsa) => SigningAlg::Rs256,
        AlgorithmParameters::EllipticCurve(ec) if is_p256_point(ec) => SigningAlg::Es256,
        _ => return None,
    };
    // A JWK that names its algorithm is for that one only (RFC 7517 §4.4): an RSA key marked
    // PS256 or RS512 is not one we may verify RS256 with.
    if jwk
        .common
        .key_algorithm
        .is_some_and(|key_alg| key_alg != alg.key_algorithm())
    {
        return None;
    }
    Some((alg, DecodingKey::from_jwk(jwk).ok()?))
}

/// aws-lc verifies RS256 with keys of 2048 to 8192 bits only, and would refuse every token signed
/// with another size; saying so at load time ("no usable key") is easier to act on.
fn rsa_size_is_usable(rsa: &RSAKeyParameters) -> bool {
    let (Ok(n), Ok(e)) = (
        URL_SAFE_NO_PAD.decode(&rsa.n),
        URL_SAFE_NO_PAD.decode(&rsa.e),
    ) else {
        return false;
    };
    let significant = n
        .iter()
        .position(|&b| b != 0)
        .map_or(0, |first| n.len() - first);
    (256..=1024).contains(&significant) && !e.is_empty()
}

/// A P-256 key whose point is on the curve. Parsed once here so that a point off the curve is
/// found at load time, not by every token (`from_jwk` copies the coordinates unchecked).
fn is_p256_point(ec: &EllipticCurveKeyParameters) -> bool {
    if ec.curve != EllipticCurve::P256 {
        return false;
    }
    let (Ok(x), Ok(y)) = (URL_SAFE_NO_PAD.decode(&ec.x), URL_SAFE_NO_PAD.decode(&ec.y)) else {
        return false;
    };
    if x.len() != 32 || y.len() != 32 {
        return false;
    }
    let mut point = Vec::with_capacity(65);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    aws_lc_rs::signature::ParsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
        &point,
    )
    .is_ok()
}

/// The file's bytes, or an error when it cannot be read or is larger than [`MAX_JWKS_LEN`]: a
/// wrong path (a log file, a device) is not read whole, every reload.
pub(super) fn read_bounded(path: &Path) -> Result<Vec<u8>, JwksError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    const N: &str = "AQAB";

    fn parse(json: &str) -> Result<KeySet, JwksError> {
        KeySet::parse(Path::new("jwks.json"), json.as_bytes().to_vec())
    }

    fn p256_jwk(kid: &str) -> String {
        // The P-256 generator point: a valid public key.
        format!(
            r#"{{"kty":"EC","crv":"P-256","kid":"{kid}","x":"axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY","y":"T-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU"}}"#
        )
    }

    #[test]
    fn one_unreadable_key_does_not_make_the_set_unreadable() {
        // A key type the library does not know, a number, an RSA key whose `n` appears twice:
        // skipped, or kept as a name only; the P-256 key is used.
        let set = parse(&format!(
            r#"{{"keys":[{{"kty":"AKP","kid":"pq","pub":"AAAA"}},7,
                {{"kty":"RSA","kid":"twice","n":"{N}","n":"{N}","e":"{N}"}},{}]}}"#,
            p256_jwk("ec-1")
        ))
        .expect("parse");
        assert_eq!(set.usable(), 1);
        assert_eq!(set.keys.len(), 3, "the number is skipped");
        for kid in ["pq", "twice"] {
            assert_eq!(
                set.candidates(Some(kid), SigningAlg::Es256).err(),
                Some(TokenRefusal::KeyAlgorithmMismatch {
                    kid: kid.to_owned(),
                    alg: "ES256"
                })
            );
        }
        assert_eq!(
            set.candidates(Some("ec-1"), SigningAlg::Es256)
                .map(|k| k.len()),
            Ok(1)
        );
    }

    #[test]
    fn a_key_is_for_the_algorithm_of_its_type_and_its_alg() {
        let jwk = |json: &str| serde_json::from_str::<Jwk>(json).expect("JWK");
        let ec = jwk(&p256_jwk("ec-1"));
        assert_eq!(usable_key(&ec).map(|(alg, _)| alg), Some(SigningAlg::Es256));
        let mut es384 = ec.clone();
        es384.common.key_algorithm = Some(KeyAlgorithm::ES384);
        assert!(usable_key(&es384).is_none());
        let mut unknown = ec.clone();
        unknown.common.key_algorithm = Some(KeyAlgorithm::UNKNOWN_ALGORITHM);
        assert!(usable_key(&unknown).is_none());
        let mut enc = ec.clone();
        enc.common.public_key_use = Some(PublicKeyUse::Encryption);
        assert!(usable_key(&enc).is_none());
        // An RSA modulus of 1024 bits (with a leading zero byte that does not count).
        let small = URL_SAFE_NO_PAD.encode([[0u8].as_slice(), &[0xc5; 128]].concat());
        let rsa = jwk(&format!(r#"{{"kty":"RSA","n":"{small}","e":"{N}"}}"#));
        assert!(usable_key(&rsa).is_none());
        let big = URL_SAFE_NO_PAD.encode([[0u8].as_slice(), &[0xc5; 256]].concat());
        let rsa = jwk(&format!(r#"{{"kty":"RSA","n":"{big}","e":"{N}"}}"#));
        assert_eq!(
            usable_key(&rsa).map(|(alg, _)| alg),
            Some(SigningAlg::Rs256)
        );
    }
}
