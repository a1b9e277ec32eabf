//! A Kubernetes cluster's service-account signing keys as the tests play it: RSA and P-256 keys
//! made here, their JWKs to publish, tokens signed with them, and tokens put together by hand as
//! an attacker would. Used by ca-server/tests/service_account.rs (the verifier) and
//! tests/ca_service_account.rs (the real `ca serve`).

use std::path::Path;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// A signing key of the test's cluster: to sign tokens with, and its JWK to publish.
pub struct SigningKey {
    /// Its `kid`.
    pub kid: &'static str,
    /// RS256 or ES256.
    pub alg: Algorithm,
    /// The private key.
    pub signing: EncodingKey,
    /// The public key as a JWK (`use: sig`, with `kid` and `alg`).
    pub jwk: Value,
    /// RSA only: the public key as PKCS#1 RSAPublicKey DER and as SubjectPublicKeyInfo DER,
    /// what an attacker can make from the published JWK.
    pub rsa_public_der: Option<RsaPublicDer>,
}

/// An RSA public key in the two DER forms an attacker might try as an HMAC secret.
pub struct RsaPublicDer {
    /// PKCS#1 RSAPublicKey.
    pub pkcs1: Vec<u8>,
    /// SubjectPublicKeyInfo.
    pub spki: Vec<u8>,
}

impl SigningKey {
    /// A token for `claims` signed with this key, its `kid` in the header.
    pub fn token(&self, claims: &Value) -> String {
        sign(self.alg, Some(self.kid), claims, &self.signing)
    }

    /// RSA only: the public key as `PUBLIC KEY` and `RSA PUBLIC KEY` PEM.
    pub fn public_pems(&self) -> Vec<String> {
        self.rsa_public_der
            .iter()
            .flat_map(|der| {
                [
                    pem("PUBLIC KEY", &der.spki),
                    pem("RSA PUBLIC KEY", &der.pkcs1),
                ]
            })
            .collect()
    }
}

/// base64url without padding, as JWTs and JWKs write it.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `der` as PEM with `label`.
pub fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut text = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        text.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        text.push('\n');
    }
    text.push_str(&format!("-----END {label}-----\n"));
    text
}

/// A new RSA-2048 key for RS256.
pub fn rsa_key(kid: &'static str) -> SigningKey {
    let pair = RsaKeyPair::generate(KeySize::Rsa2048).expect("RSA key");
    let pkcs8: Pkcs8V1Der = pair.as_der().expect("PKCS#8");
    let signing = EncodingKey::from_rsa_pem(pem("PRIVATE KEY", pkcs8.as_ref()).as_bytes())
        .expect("RSA signing key");
    let public = pair.public_key();
    let spki: PublicKeyX509Der = public.as_der().expect("SPKI");
    let jwk = json!({
        "use": "sig",
        "kty": "RSA",
        "kid": kid,
        "alg": "RS256",
        "n": b64url(public.modulus().big_endian_without_leading_zero()),
        "e": b64url(public.exponent().big_endian_without_leading_zero()),
    });
    SigningKey {
        kid,
        alg: Algorithm::RS256,
        signing,
        jwk,
        rsa_public_der: Some(RsaPublicDer {
            pkcs1: public.as_ref().to_vec(),
            spki: spki.as_ref().to_vec(),
        }),
    }
}

/// A new P-256 key for ES256.
pub fn ec_key(kid: &'static str) -> SigningKey {
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("EC key");
    let pkcs8 = pair.to_pkcs8v1().expect("PKCS#8");
    // Uncompressed point: 0x04, x, y.
    let point = pair.public_key().as_ref();
    assert_eq!(point.len(), 65, "an uncompressed P-256 point");
    let jwk = json!({
        "use": "sig",
        "kty": "EC",
        "crv": "P-256",
        "kid": kid,
        "alg": "ES256",
        "x": b64url(&point[1..33]),
        "y": b64url(&point[33..]),
    });
    SigningKey {
        kid,
        alg: Algorithm::ES256,
        signing: EncodingKey::from_ec_der(pkcs8.as_ref()),
        jwk,
        rsa_public_der: None,
    }
}

/// A token for `claims` signed with `key` under `alg`, `kid` in the header if given.
pub fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("sign")
}

/// A token put together by hand, as an attacker would: any header, any signature bytes.
pub fn hand_made(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes()),
        b64url(signature)
    )
}

/// Writes a JWKS of `jwks` the way a careful operator (or a ConfigMap update) does: a temporary
/// file, then a rename over the old one, so a reader never sees half a file.
pub fn publish_jwks(path: &Path, jwks: &[&Value]) {
    let text = json!({ "keys": jwks }).to_string();
    let temp = path.with_extension("json.tmp");
    std::fs::write(&temp, text).expect("write JWKS");
    std::fs::rename(&temp, path).expect("rename JWKS");
}

/// [`publish_jwks`] of the keys' JWKs.
pub fn publish_keys(path: &Path, keys: &[&SigningKey]) {
    let jwks: Vec<&Value> = keys.iter().map(|k| &k.jwk).collect();
    publish_jwks(path, &jwks);
}
