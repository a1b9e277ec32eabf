//! Kubernetes service-account tokens against `ServiceAccountVerifier`, through its public API, with
//! keys the tests make: good tokens map to the right SPIFFE ID, and every rule refuses what it
//! should, the classic JWT attacks (`alg: none`, HS256 keyed with the RSA public key, a key of
//! another type) included.

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use palisade_ca_server::service_account::{
    JwksError, JwksSource, ServiceAccountConfig, ServiceAccountVerifier, TokenRefusal,
    MAX_TOKEN_LEN,
};
use palisade_identity::TrustDomain;
use palisade_test_support::jwks::{
    b64url, ec_key, hand_made, pem, publish_jwks, rsa_key, sign, SigningKey,
};

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const AUDIENCE: &str = "palisade-ca";
/// The tests' "now" (Unix seconds): fixed, so that no test depends on the clock.
const NOW: i64 = 1_750_000_000;

struct Keys {
    /// In the cluster's JWKS.
    rsa: SigningKey,
    /// In the cluster's JWKS.
    ec: SigningKey,
    /// Not in the JWKS at first (the reload test adds it).
    other_rsa: SigningKey,
    /// Never in the JWKS.
    other_ec: SigningKey,
}

/// Made once for all tests: RSA key generation takes a moment.
fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        rsa: rsa_key("rsa-1"),
        ec: ec_key("ec-1"),
        other_rsa: rsa_key("rsa-2"),
        other_ec: ec_key("ec-2"),
    })
}

fn trust_domain() -> TrustDomain {
    TrustDomain::parse("example.org").expect("trust domain")
}

fn at(unix: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).expect("after the epoch"))
}

fn now() -> SystemTime {
    at(NOW)
}

/// A verifier for a cluster whose JWKS holds `jwks`, and the directory keeping its file.
fn verifier_with(jwks: &[&Value]) -> (ServiceAccountVerifier, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("jwks.json");
    publish_jwks(&path, jwks);
    let verifier = ServiceAccountVerifier::load(ServiceAccountConfig {
        jwks: JwksSource::File(path),
        issuer: ISSUER.to_owned(),
        audience: AUDIENCE.to_owned(),
    })
    .expect("load JWKS");
    (verifier, dir)
}

/// The cluster of most tests: one RSA and one EC key.
fn verifier() -> (ServiceAccountVerifier, tempfile::TempDir) {
    let k = keys();
    verifier_with(&[&k.rsa.jwk, &k.ec.jwk])
}

/// Claims as the API server writes them for a projected token of `shop/frontend`.
fn claims_for(namespace: &str, name: &str) -> Value {
    json!({
        "aud": ["https://kubernetes.default.svc.cluster.local", AUDIENCE],
        "exp": NOW + 600,
        "iat": NOW - 10,
        "nbf": NOW - 10,
        "iss": ISSUER,
        "jti": "0b5ffd3b-21d7-4a3c-9f8c-5b0a9e3b7f31",
        "kubernetes.io": {
            "namespace": namespace,
            "node": {"name": "worker-1", "uid": "6a1c5c44-2f56-4b0c-9d39-2f3c3f0b8a11"},
            "pod": {"name": "frontend-7d4b9c-xk2lp", "uid": "1f2e3d4c-5b6a-4987-8877-665544332211"},
            "serviceaccount": {"name": name, "uid": "a9e8d7c6-b5a4-4392-8170-6f5e4d3c2b1a"},
        },
        "sub": format!("system:serviceaccount:{namespace}:{name}"),
    })
}

fn claims() -> Value {
    claims_for("shop", "frontend")
}

fn rs256(key: &SigningKey, claims: &Value) -> String {
    sign(Algorithm::RS256, Some(key.kid), claims, &key.signing)
}

fn es256(key: &SigningKey, claims: &Value) -> String {
    sign(Algorithm::ES256, Some(key.kid), claims, &key.signing)
}

fn refusal(verifier: &ServiceAccountVerifier, token: &str) -> TokenRefusal {
    match verifier.verify(token, &trust_domain(), now()) {
        Ok(account) => panic!("token accepted as {account:?}"),
        Err(refusal) => refusal,
    }
}

/// `claims()` with `member` set to `value` (or removed, for `Value::Null`).
fn with(member: &str, value: Value) -> Value {
    let mut claims = claims();
    let object = claims.as_object_mut().expect("claims are an object");
    if value.is_null() {
        object.remove(member);
    } else {
        object.insert(member.to_owned(), value);
    }
    claims
}

#[test]
fn rs256_token_maps_to_the_service_accounts_spiffe_id() {
    let (verifier, _dir) = verifier();
    let account = verifier
        .verify(&rs256(&keys().rsa, &claims()), &trust_domain(), now())
        .expect("accepted");
    assert_eq!(account.namespace, "shop");
    assert_eq!(account.name, "frontend");
    assert_eq!(account.pod.as_deref(), Some("frontend-7d4b9c-xk2lp"));
    assert_eq!(
        account.spiffe_id.as_str(),
        "spiffe://example.org/ns/shop/sa/frontend"
    );
    assert_eq!(account.expires_at, NOW + 600);
}

#[test]
fn es256_token_maps_to_the_service_accounts_spiffe_id() {
    let (verifier, _dir) = verifier();
    let token = es256(&keys().ec, &claims_for("payments", "ledger.writer"));
    let account = verifier
        .verify(&token, &trust_domain(), now())
        .expect("accepted");
    assert_eq!(
        account.spiffe_id.as_str(),
        "spiffe://example.org/ns/payments/sa/ledger.writer"
    );
    let other_td = TrustDomain::parse("prod.example.com").expect("trust domain");
    let account = verifier.verify(&token, &other_td, now()).expect("accepted");
    assert_eq!(
        account.spiffe_id.as_str(),
        "spiffe://prod.example.com/ns/payments/sa/ledger.writer"
    );
}

#[test]
fn token_without_kid_is_verified_with_the_keys_of_its_type() {
    let k = keys();
    let (verifier, _dir) = verifier_with(&[&k.other_rsa.jwk, &k.rsa.jwk, &k.ec.jwk]);
    let rsa = sign(Algorithm::RS256, None, &claims(), &k.rsa.signing);
    let ec = sign(Algorithm::ES256, None, &claims(), &k.ec.signing);
    for token in [rsa, ec] {
        verifier
            .verify(&token, &trust_domain(), now())
            .expect("accepted");
    }
    // No kid and no key of the header's type.
    let (rsa_only, _dir) = verifier_with(&[&k.rsa.jwk]);
    let ec = sign(Algorithm::ES256, None, &claims(), &k.ec.signing);
    assert_eq!(
        refusal(&rsa_only, &ec),
        TokenRefusal::NoKeyForAlgorithm { alg: "ES256" }
    );
}

#[test]
fn expired_token_is_refused_after_the_clock_skew() {
    let (verifier, _dir) = verifier();
    let rsa = &keys().rsa;
    // 29 s past exp: within the 30 s skew.
    verifier
        .verify(
            &rs256(rsa, &with("exp", json!(NOW - 29))),
            &trust_domain(),
            now(),
        )
        .expect("within the skew");
    let refused = refusal(&verifier, &rs256(rsa, &with("exp", json!(NOW - 31))));
    assert_eq!(refused, TokenRefusal::Expired { exp: NOW - 31 });
    assert_eq!(refused.code(), "jwt_expired");
    // The same token, verified at a later `now`.
    let token = rs256(rsa, &claims());
    assert!(matches!(
        verifier.verify(&token, &trust_domain(), at(NOW + 3600)),
        Err(TokenRefusal::Expired { .. })
    ));
}

#[test]
fn token_without_exp_is_refused() {
    let (verifier, _dir) = verifier();
    let refused = refusal(&verifier, &rs256(&keys().rsa, &with("exp", Value::Null)));
    assert_eq!(refused, TokenRefusal::MissingClaim { claim: "exp" });
}

#[test]
fn token_not_yet_valid_is_refused() {
    let (verifier, _dir) = verifier();
    let rsa = &keys().rsa;
    let refused = refusal(&verifier, &rs256(rsa, &with("nbf", json!(NOW + 120))));
    assert_eq!(
        refused,
        TokenRefusal::NotYetValid {
            claim: "nbf",
            at: NOW + 120
        }
    );
    assert_eq!(refused.code(), "jwt_not_yet_valid");
    let refused = refusal(&verifier, &rs256(rsa, &with("iat", json!(NOW + 120))));
    assert_eq!(
        refused,
        TokenRefusal::NotYetValid {
            claim: "iat",
            at: NOW + 120
        }
    );
    // A clock 20 s behind the API server's is tolerated.
    verifier
        .verify(
            &rs256(rsa, &with("nbf", json!(NOW + 20))),
            &trust_domain(),
            now(),
        )
        .expect("within the skew");
}

#[test]
fn token_for_another_audience_is_refused() {
    let (verifier, _dir) = verifier();
    let rsa = &keys().rsa;
    for aud in [
        json!("https://kubernetes.default.svc.cluster.local"),
        json!(["https://kubernetes.default.svc.cluster.local", "vault"]),
        json!([]),
        json!("palisade-ca-staging"),
    ] {
        let refused = refusal(&verifier, &rs256(rsa, &with("aud", aud.clone())));
        assert!(
            matches!(refused, TokenRefusal::WrongAudience { .. }),
            "{aud}: {refused:?}"
        );
        assert_eq!(refused.code(), "jwt_wrong_audience");
    }
    let refused = refusal(&verifier, &rs256(rsa, &with("aud", Value::Null)));
    assert_eq!(refused, TokenRefusal::MissingClaim { claim: "aud" });
}

#[test]
fn audience_may_be_a_string_or_an_array_that_contains_ours() {
    let (verifier, _dir) = verifier();
    let rsa = &keys().rsa;
    for aud in [
        json!(AUDIENCE),
        json!([AUDIENCE]),
        json!(["vault", AUDIENCE, "https://kubernetes.default.svc"]),
    ] {
        verifier
            .verify(
                &rs256(rsa, &with("aud", aud.clone())),
                &trust_domain(),
                now(),
            )
            .unwrap_or_else(|refusal| panic!("{aud} refused: {refusal}"));
    }
}

#[test]
fn token_from_another_issuer_is_refused() {
    let (verifier, _dir) = verifier();
    let rsa = &keys().rsa;
    let refused = refusal(
        &verifier,
        &rs256(rsa, &with("iss", json!("https://other-cluster.example"))),
    );
    assert_eq!(
        refused,
        TokenRefusal::WrongIssuer {
            issuer: "https://other-cluster.example".to_owned()
        }
    );
    assert_eq!(refused.code(), "jwt_wrong_issuer");
    // Compared exactly: no trailing slash, no case folding.
    let refused = refusal(
        &verifier,
        &rs256(rsa, &with("iss", json!(format!("{ISSUER}/")))),
    );
    assert!(matches!(refused, TokenRefusal::WrongIssuer { .. }));
    let refused = refusal(&verifier, &rs256(rsa, &with("iss", Value::Null)));
    assert_eq!(refused, TokenRefusal::MissingClaim { claim: "iss" });
}

#[test]
fn token_signed_by_a_key_not_in_the_jwks_is_refused() {
    let (verifier, _dir) = verifier();
    let k = keys();
    // An outsider's key, claiming the cluster key's kid.
    let forged = sign(
        Algorithm::RS256,
        Some(k.rsa.kid),
        &claims(),
        &k.other_rsa.signing,
    );
    let refused = refusal(&verifier, &forged);
    assert_eq!(refused, TokenRefusal::BadSignature);
    assert_eq!(refused.code(), "jwt_bad_signature");
    // Without a kid, every RSA key of the cluster is tried, and none verifies it.
    let forged = sign(Algorithm::RS256, None, &claims(), &k.other_rsa.signing);
    assert_eq!(refusal(&verifier, &forged), TokenRefusal::BadSignature);
    let forged = sign(
        Algorithm::ES256,
        Some(k.ec.kid),
        &claims(),
        &k.other_ec.signing,
    );
    assert_eq!(refusal(&verifier, &forged), TokenRefusal::BadSignature);
}

#[test]
fn token_with_claims_changed_after_signing_is_refused() {
    let (verifier, _dir) = verifier();
    let token = rs256(&keys().rsa, &claims());
    let mut parts: Vec<&str> = token.split('.').collect();
    let admin = b64url(claims_for("kube-system", "admin").to_string().as_bytes());
    parts[1] = &admin;
    assert_eq!(
        refusal(&verifier, &parts.join(".")),
        TokenRefusal::BadSignature
    );
}

#[test]
fn token_naming_a_kid_not_in_the_jwks_is_refused() {
    let (verifier, _dir) = verifier();
    let other = &keys().other_rsa;
    let refused = refusal(&verifier, &rs256(other, &claims()));
    assert_eq!(
        refused,
        TokenRefusal::UnknownKey {
            kid: "rsa-2".to_owned()
        }
    );
    assert_eq!(refused.code(), "jwt_unknown_key");
}

#[test]
fn alg_none_is_refused() {
    let (verifier, _dir) = verifier();
    for alg in ["none", "None", "NONE", "nOnE"] {
        for header in [
            json!({"alg": alg, "typ": "JWT"}),
            json!({"alg": alg, "kid": "rsa-1"}),
        ] {
            let token = hand_made(&header, &claims(), b"");
            assert!(
                token.ends_with('.'),
                "an unsigned token ends with its last dot"
            );
            let refused = refusal(&verifier, &token);
            assert_eq!(
                refused,
                TokenRefusal::AlgorithmNotAllowed {
                    alg: alg.to_owned()
                }
            );
            assert_eq!(refused.code(), "jwt_algorithm_not_allowed");
        }
    }
    // A real RS256 signature does not help a header that says "none".
    let signed = rs256(&keys().rsa, &claims());
    let signature = signed.rsplit('.').next().expect("three parts");
    let header = b64url(
        json!({"alg": "none", "kid": "rsa-1"})
            .to_string()
            .as_bytes(),
    );
    let payload = signed.split('.').nth(1).expect("three parts");
    let token = format!("{header}.{payload}.{signature}");
    assert!(matches!(
        refusal(&verifier, &token),
        TokenRefusal::AlgorithmNotAllowed { .. }
    ));
}

/// The key-confusion attack: the RSA public key is public, so an attacker computes an HS256 MAC
/// with its bytes as the secret. A verifier that lets the header pick HMAC and feeds it "the key"
/// would accept it.
#[test]
fn hs256_keyed_with_the_rsa_public_key_is_refused() {
    let (verifier, _dir) = verifier();
    let rsa = &keys().rsa;
    let admin = claims_for("kube-system", "admin");
    let secrets: Vec<Vec<u8>> = vec![
        rsa.rsa_public_der.as_ref().unwrap().pkcs1.clone(),
        rsa.rsa_public_der.as_ref().unwrap().spki.clone(),
        pem("PUBLIC KEY", &rsa.rsa_public_der.as_ref().unwrap().spki).into_bytes(),
        pem(
            "RSA PUBLIC KEY",
            &rsa.rsa_public_der.as_ref().unwrap().pkcs1,
        )
        .into_bytes(),
        rsa.jwk.to_string().into_bytes(),
        json!({"keys": [&rsa.jwk]}).to_string().into_bytes(),
    ];
    for secret in &secrets {
        for kid in [Some(rsa.kid), None] {
            let mut header = json!({"alg": "HS256", "typ": "JWT"});
            if let Some(kid) = kid {
                header["kid"] = json!(kid);
            }
            let signing_input = format!(
                "{}.{}",
                b64url(header.to_string().as_bytes()),
                b64url(admin.to_string().as_bytes())
            );
            let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
            let mac = aws_lc_rs::hmac::sign(&key, signing_input.as_bytes());
            let token = format!("{signing_input}.{}", b64url(mac.as_ref()));

            // The forgery is a genuine one: an HS256 verifier keyed with these bytes takes it.
            let mut naive = jsonwebtoken::Validation::new(Algorithm::HS256);
            naive.validate_exp = false;
            naive.validate_aud = false;
            jsonwebtoken::decode::<Value>(
                &token,
                &jsonwebtoken::DecodingKey::from_secret(secret),
                &naive,
            )
            .expect("the forgery verifies as HS256 with the public key as secret");

            assert_eq!(
                refusal(&verifier, &token),
                TokenRefusal::AlgorithmNotAllowed {
                    alg: "HS256".to_owned()
                }
            );
        }
    }
}

#[test]
fn algorithms_other_than_rs256_and_es256_are_refused() {
    let (verifier, _dir) = verifier();
    let k = keys();
    // Properly signed with the cluster's own RSA key, but not RS256.
    for alg in [Algorithm::RS384, Algorithm::RS512, Algorithm::PS256] {
        let token = sign(alg, Some(k.rsa.kid), &claims(), &k.rsa.signing);
        assert!(
            matches!(
                refusal(&verifier, &token),
                TokenRefusal::AlgorithmNotAllowed { .. }
            ),
            "{alg:?}"
        );
    }
    // HS256 and HS512 with some secret, and names we do not know, by hand.
    let hs = sign(
        Algorithm::HS512,
        Some(k.rsa.kid),
        &claims(),
        &EncodingKey::from_secret(b"s"),
    );
    assert_eq!(
        refusal(&verifier, &hs),
        TokenRefusal::AlgorithmNotAllowed {
            alg: "HS512".to_owned()
        }
    );
    for alg in ["ES384", "EdDSA", "rs256", "RS256 ", "", "HS256"] {
        let token = hand_made(&json!({"alg": alg, "kid": "ec-1"}), &claims(), b"sig");
        assert!(
            matches!(
                refusal(&verifier, &token),
                TokenRefusal::AlgorithmNotAllowed { .. }
            ),
            "{alg:?}"
        );
    }
}

#[test]
fn rs256_header_with_an_ec_keys_kid_is_refused() {
    let (verifier, _dir) = verifier();
    let k = keys();
    let token = sign(Algorithm::RS256, Some(k.ec.kid), &claims(), &k.rsa.signing);
    let refused = refusal(&verifier, &token);
    assert_eq!(
        refused,
        TokenRefusal::KeyAlgorithmMismatch {
            kid: "ec-1".to_owned(),
            alg: "RS256"
        }
    );
    assert_eq!(refused.code(), "jwt_key_algorithm_mismatch");
    // And the other way round.
    let token = sign(Algorithm::ES256, Some(k.rsa.kid), &claims(), &k.ec.signing);
    assert_eq!(
        refusal(&verifier, &token),
        TokenRefusal::KeyAlgorithmMismatch {
            kid: "rsa-1".to_owned(),
            alg: "ES256"
        }
    );
}

#[test]
fn jwk_alg_must_agree_with_the_header() {
    let k = keys();
    // The cluster's RSA key, published for another algorithm than RS256.
    let mut rs512 = k.rsa.jwk.clone();
    rs512["alg"] = json!("RS512");
    rs512["kid"] = json!("rsa-512");
    let (verifier, _dir) = verifier_with(&[&rs512, &k.ec.jwk]);
    let token = sign(Algorithm::RS256, Some("rsa-512"), &claims(), &k.rsa.signing);
    assert_eq!(
        refusal(&verifier, &token),
        TokenRefusal::KeyAlgorithmMismatch {
            kid: "rsa-512".to_owned(),
            alg: "RS256"
        }
    );
    // Without a kid, that key is not among the RS256 keys either.
    let token = sign(Algorithm::RS256, None, &claims(), &k.rsa.signing);
    assert_eq!(
        refusal(&verifier, &token),
        TokenRefusal::NoKeyForAlgorithm { alg: "RS256" }
    );
    // A JWK without "alg" is fine: its type decides.
    let mut no_alg = k.rsa.jwk.clone();
    no_alg.as_object_mut().expect("object").remove("alg");
    let (verifier, _dir) = verifier_with(&[&no_alg]);
    verifier
        .verify(&rs256(&k.rsa, &claims()), &trust_domain(), now())
        .expect("accepted");
}

#[test]
fn oversized_token_is_refused_before_parsing() {
    let (verifier, _dir) = verifier();
    // Validly signed, but too long.
    let padded = with("padding", json!("x".repeat(MAX_TOKEN_LEN)));
    let token = rs256(&keys().rsa, &padded);
    let refused = refusal(&verifier, &token);
    assert_eq!(refused, TokenRefusal::TooLarge { len: token.len() });
    assert_eq!(refused.code(), "jwt_too_large");
    // Not even a JWT: the length is checked first.
    let junk = "\u{0}".repeat(MAX_TOKEN_LEN + 1);
    assert!(matches!(
        refusal(&verifier, &junk),
        TokenRefusal::TooLarge { .. }
    ));
    // At the limit, it is looked at (and found malformed).
    let junk = "a".repeat(MAX_TOKEN_LEN);
    assert!(matches!(
        refusal(&verifier, &junk),
        TokenRefusal::Malformed { .. }
    ));
}

#[test]
fn malformed_tokens_are_refused() {
    let (verifier, _dir) = verifier();
    let good = rs256(&keys().rsa, &claims());
    let header = good.split('.').next().expect("header");
    for token in [
        String::new(),
        "abc".to_owned(),
        "a.b".to_owned(),
        "a.b.c.d".to_owned(),
        format!("Bearer {good}"),
        format!("{good}.x"),
        format!("{header}..sig"),
        format!("{}.e30.c2ln", b64url(b"not json")),
        format!("{}.e30.c2ln", b64url(br#"{"alg": 256}"#)),
        format!("{}.e30.c2ln", b64url(br#"{"kid": "rsa-1"}"#)),
        format!("{good}="),
    ] {
        let refused = refusal(&verifier, &token);
        assert!(
            matches!(refused, TokenRefusal::Malformed { .. }),
            "{token:?}: {refused:?}"
        );
        assert_eq!(refused.code(), "jwt_malformed");
    }
    // Signed, but `exp` is not a number.
    let token = rs256(&keys().rsa, &with("exp", json!("tomorrow")));
    assert!(matches!(
        refusal(&verifier, &token),
        TokenRefusal::Malformed { .. }
    ));
    // A critical header extension we do not know.
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa-1".to_owned());
    header.crit = Some(vec!["exp".to_owned()]);
    let token = jsonwebtoken::encode(&header, &claims(), &keys().rsa.signing).expect("sign");
    assert!(matches!(
        refusal(&verifier, &token),
        TokenRefusal::Malformed { .. }
    ));
}

#[test]
fn token_without_kubernetes_claims_is_refused() {
    let (verifier, _dir) = verifier();
    let rsa = &keys().rsa;
    let mut bare = with("kubernetes.io", Value::Null);
    bare.as_object_mut().expect("object").remove("sub");
    let refused = refusal(&verifier, &rs256(rsa, &bare));
    assert_eq!(refused, TokenRefusal::NoKubernetesClaims);
    assert_eq!(refused.code(), "jwt_no_kubernetes_claims");
    // A sub that is not a service account's does not stand in for the claim.
    let mut user = bare.clone();
    user["sub"] = json!("system:node:worker-1");
    assert_eq!(
        refusal(&verifier, &rs256(rsa, &user)),
        TokenRefusal::NoKubernetesClaims
    );
    // A kubernetes.io claim without a service account.
    let mut no_sa = claims();
    no_sa["kubernetes.io"]
        .as_object_mut()
        .expect("object")
        .remove("serviceaccount");
    assert_eq!(
        refusal(&verifier, &rs256(rsa, &no_sa)),
        TokenRefusal::NoKubernetesClaims
    );
}

#[test]
fn legacy_subject_is_used_alone_and_must_agree_with_the_claim() {
    let (verifier, _dir) = verifier();
    let rsa = &keys().rsa;
    // Only the sub: accepted, without a pod.
    let legacy = with("kubernetes.io", Value::Null);
    let account = verifier
        .verify(&rs256(rsa, &legacy), &trust_domain(), now())
        .expect("accepted");
    assert_eq!(
        account.spiffe_id.as_str(),
        "spiffe://example.org/ns/shop/sa/frontend"
    );
    assert_eq!(account.pod, None);
    // Only the claim: accepted.
    verifier
        .verify(
            &rs256(rsa, &with("sub", Value::Null)),
            &trust_domain(),
            now(),
        )
        .expect("accepted");
    // Both, disagreeing: refused, whichever way.
    for sub in [
        "system:serviceaccount:kube-system:admin",
        "system:serviceaccount:shop:backend",
        "system:serviceaccount:shop:frontend:x",
        "frontend",
    ] {
        let refused = refusal(&verifier, &rs256(rsa, &with("sub", json!(sub))));
        assert_eq!(
            refused,
            TokenRefusal::SubjectMismatch {
                subject: sub.to_owned()
            }
        );
        assert_eq!(refused.code(), "jwt_subject_mismatch");
    }
}

#[test]
fn names_that_kubernetes_would_not_make_are_refused() {
    let (verifier, _dir) = verifier();
    let rsa = &keys().rsa;
    let long_namespace = "a".repeat(64);
    for (namespace, name) in [
        ("Shop", "frontend"),
        ("shop_1", "frontend"),
        ("shop/../kube-system", "frontend"),
        ("-shop", "frontend"),
        ("", "frontend"),
        (long_namespace.as_str(), "frontend"),
        ("shop", "front/end"),
        ("shop", "front end"),
        ("shop", ".."),
        ("shop", "Frontend"),
        ("shop", "front%2Fend"),
    ] {
        let token = rs256(rsa, &claims_for(namespace, name));
        let refused = refusal(&verifier, &token);
        assert!(
            matches!(refused, TokenRefusal::InvalidName { .. }),
            "{namespace:?}/{name:?}: {refused:?}"
        );
        assert_eq!(refused.code(), "jwt_invalid_name");
    }
    // The same, through the legacy sub alone.
    let mut legacy = with("kubernetes.io", Value::Null);
    legacy["sub"] = json!("system:serviceaccount:shop:front:end");
    assert!(matches!(
        refusal(&verifier, &rs256(rsa, &legacy)),
        TokenRefusal::InvalidName { .. }
    ));
}

#[test]
fn strings_from_the_token_are_cut_in_refusals() {
    let (verifier, _dir) = verifier();
    let rsa = &keys().rsa;
    let long = format!("https://{}.example", "evil".repeat(200));
    let refused = refusal(&verifier, &rs256(rsa, &with("iss", json!(long))));
    let TokenRefusal::WrongIssuer { issuer } = &refused else {
        panic!("{refused:?}");
    };
    assert!(issuer.chars().count() <= 64, "{issuer}");
    assert!(refused.to_string().len() < 200, "{refused}");
    let refused = refusal(
        &verifier,
        &rs256(rsa, &with("aud", json!(vec![long.as_str(); 10]))),
    );
    assert!(refused.to_string().len() < 200, "{refused}");
    let token = sign(
        Algorithm::RS256,
        Some(long.as_str()),
        &claims(),
        &rsa.signing,
    );
    let refused = refusal(&verifier, &token);
    assert!(matches!(refused, TokenRefusal::UnknownKey { .. }));
    assert!(refused.to_string().len() < 200, "{refused}");
}

#[test]
fn reload_picks_up_a_new_key_and_a_broken_jwks_keeps_the_old_keys() {
    let k = keys();
    let (verifier, dir) = verifier_with(&[&k.rsa.jwk]);
    let path = dir.path().join("jwks.json");
    let new_key_token = rs256(&k.other_rsa, &claims());
    let old_key_token = rs256(&k.rsa, &claims());
    assert!(matches!(
        refusal(&verifier, &new_key_token),
        TokenRefusal::UnknownKey { .. }
    ));
    assert!(!verifier.reload().expect("reload"), "nothing changed yet");

    // The cluster rotates: the new key is published next to the old one.
    publish_jwks(&path, &[&k.rsa.jwk, &k.other_rsa.jwk]);
    assert!(verifier.reload().expect("reload"), "a new key");
    assert_eq!(verifier.usable_keys(), 2);
    verifier
        .verify(&new_key_token, &trust_domain(), now())
        .expect("the new key verifies");
    verifier
        .verify(&old_key_token, &trust_domain(), now())
        .expect("the old key still verifies");
    assert!(!verifier.reload().expect("reload"), "same file");
    // Same keys, other formatting: read again, but not a change of keys.
    let pretty = serde_json::to_string_pretty(&json!({"keys": [&k.rsa.jwk, &k.other_rsa.jwk]}))
        .expect("json");
    std::fs::write(&path, pretty).expect("write");
    assert!(!verifier.reload().expect("reload"), "same keys");

    // A broken file: an error, and the keys in use stay.
    for broken in [
        "{\"keys\": [",
        "",
        "not json",
        "{\"keys\": []}",
        "{\"keys\": [{\"kty\": \"oct\", \"k\": \"c2VjcmV0\"}]}",
    ] {
        std::fs::write(&path, broken).expect("write");
        assert!(verifier.reload().is_err(), "{broken:?} is not usable");
        verifier
            .verify(&new_key_token, &trust_domain(), now())
            .expect("the keys in use stay");
    }
    std::fs::remove_file(&path).expect("remove");
    assert!(matches!(verifier.reload(), Err(JwksError::Read { .. })));
    verifier
        .verify(&new_key_token, &trust_domain(), now())
        .expect("the keys in use stay");

    // The old key is retired.
    publish_jwks(&path, &[&k.other_rsa.jwk]);
    assert!(verifier.reload().expect("reload"));
    assert!(matches!(
        refusal(&verifier, &old_key_token),
        TokenRefusal::UnknownKey { .. }
    ));
    verifier
        .verify(&new_key_token, &trust_domain(), now())
        .expect("the new key verifies");
}

#[test]
fn jwks_errors_at_load() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("jwks.json");
    let config = |path: &Path| ServiceAccountConfig {
        jwks: JwksSource::File(path.to_owned()),
        issuer: ISSUER.to_owned(),
        audience: AUDIENCE.to_owned(),
    };
    assert!(matches!(
        ServiceAccountVerifier::load(config(&path)),
        Err(JwksError::Read { .. })
    ));
    std::fs::write(&path, "[1, 2").expect("write");
    assert!(matches!(
        ServiceAccountVerifier::load(config(&path)),
        Err(JwksError::Parse { .. })
    ));
    std::fs::write(&path, vec![b' '; 2 * 1024 * 1024]).expect("write");
    assert!(matches!(
        ServiceAccountVerifier::load(config(&path)),
        Err(JwksError::TooLarge { .. })
    ));

    let k = keys();
    // Keys we cannot use: symmetric, encryption-only, another curve, a 1024-bit RSA key, an EC
    // point off the curve.
    let oct = json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"});
    let mut enc = k.rsa.jwk.clone();
    enc["use"] = json!("enc");
    let mut p384 = k.ec.jwk.clone();
    p384["crv"] = json!("P-384");
    let mut short_rsa = k.rsa.jwk.clone();
    let n = URL_SAFE_NO_PAD
        .decode(k.rsa.jwk["n"].as_str().expect("n"))
        .expect("base64url");
    short_rsa["n"] = json!(b64url(&n[..128]));
    let mut off_curve = k.ec.jwk.clone();
    off_curve["y"] = json!(b64url(&[7u8; 32]));
    let unusable = [&oct, &enc, &p384, &short_rsa, &off_curve];
    publish_jwks(&path, &unusable);
    assert!(matches!(
        ServiceAccountVerifier::load(config(&path)),
        Err(JwksError::NoUsableKey { .. })
    ));

    // Among them a good key, and a key type we do not know: the good key is used.
    let unknown = json!({"kty": "AKP", "kid": "pq", "alg": "ML-DSA-44", "pub": "AAAA"});
    let mut keys_json: Vec<&Value> = unusable.to_vec();
    keys_json.push(&unknown);
    keys_json.push(&k.ec.jwk);
    publish_jwks(&path, &keys_json);
    let verifier = ServiceAccountVerifier::load(config(&path)).expect("load");
    assert_eq!(verifier.usable_keys(), 1);
    verifier
        .verify(&es256(&k.ec, &claims()), &trust_domain(), now())
        .expect("accepted");
    // Naming an unusable key is "not a key for this algorithm", not "unknown".
    let token = sign(Algorithm::RS256, Some("hmac"), &claims(), &k.rsa.signing);
    assert!(matches!(
        refusal(&verifier, &token),
        TokenRefusal::KeyAlgorithmMismatch { .. }
    ));

    // Empty settings.
    for (issuer, audience) in [("", AUDIENCE), (ISSUER, "")] {
        let result = ServiceAccountVerifier::load(ServiceAccountConfig {
            jwks: JwksSource::File(path.clone()),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        });
        assert!(matches!(result, Err(JwksError::Config { .. })));
    }
}

/// A token over header and claims given as JSON text (which a `Value` could not hold: duplicate
/// members), signed by `key` with RS256.
fn signed_text(header: &str, claims: &str, key: &EncodingKey) -> String {
    let message = format!(
        "{}.{}",
        b64url(header.as_bytes()),
        b64url(claims.as_bytes())
    );
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), key, Algorithm::RS256).expect("sign");
    format!("{message}.{signature}")
}

/// `claims()` as JSON text with `extra` members appended (after those it has).
fn claims_text_with(extra: &str) -> String {
    let text = claims().to_string();
    let open = text.strip_suffix('}').expect("an object");
    format!("{open},{extra}}}")
}

#[test]
fn header_members_that_bring_a_key_or_a_url_are_never_used() {
    // Decided: ignored, never fetched and never trusted. The key comes from the JWKS file alone;
    // a token signed by a key of the attacker's is refused whatever its header offers, and one
    // signed by the cluster is accepted for its claims whatever else its header says.
    let k = keys();
    let (verifier, _dir) = verifier();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let url = format!("http://{}/jwks", listener.local_addr().expect("address"));
    let attacker_jwk = &k.other_rsa.jwk;
    let header = |kid: &str| {
        json!({
            "alg": "RS256",
            "kid": kid,
            "jku": url,
            "x5u": url,
            "jwk": attacker_jwk,
            "x5c": [STANDARD.encode(&k.other_rsa.rsa_public_der.as_ref().unwrap().spki)],
        })
        .to_string()
    };
    // Signed by the attacker's key, which the header carries and points to.
    for kid in ["rsa-2", "rsa-1"] {
        let forged = signed_text(&header(kid), &claims().to_string(), &k.other_rsa.signing);
        let refused = refusal(&verifier, &forged);
        assert!(
            matches!(
                refused,
                TokenRefusal::BadSignature | TokenRefusal::UnknownKey { .. }
            ),
            "{kid}: {refused:?}"
        );
    }
    // Signed by the cluster: the same header members change nothing.
    let genuine = signed_text(&header("rsa-1"), &claims().to_string(), &k.rsa.signing);
    let account = verifier
        .verify(&genuine, &trust_domain(), now())
        .expect("accepted");
    assert_eq!(
        account.spiffe_id.as_str(),
        "spiffe://example.org/ns/shop/sa/frontend"
    );
    // Nothing was fetched.
    assert_eq!(
        listener.accept().map(|_| ()).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::WouldBlock)
    );
}

#[test]
fn duplicate_members_are_refused_never_read_from_a_second_value() {
    let k = keys();
    let (verifier, _dir) = verifier();
    let header = r#"{"alg":"RS256","kid":"rsa-1"}"#;
    // The claims the verifier checks, then a second answer to "who is this" or "for whom".
    for extra in [
        r#""sub":"system:serviceaccount:kube-system:admin""#,
        r#""aud":"someone-else""#,
        r#""iss":"https://evil.example""#,
        r#""exp":9999999999"#,
        r#""kubernetes.io":{"namespace":"kube-system","serviceaccount":{"name":"admin"}}"#,
    ] {
        let token = signed_text(header, &claims_text_with(extra), &k.rsa.signing);
        let refused = refusal(&verifier, &token);
        assert!(
            matches!(refused, TokenRefusal::Malformed { .. }),
            "{extra}: {refused:?}"
        );
    }
    // Inside the kubernetes.io claim.
    let nested = json!({
        "aud": AUDIENCE,
        "exp": NOW + 600,
        "iss": ISSUER,
    })
    .to_string();
    let nested = format!(
        "{},{}}}",
        nested.strip_suffix('}').expect("object"),
        r#""kubernetes.io":{"namespace":"shop","namespace":"kube-system","serviceaccount":{"name":"frontend"}}"#
    );
    let refused = refusal(&verifier, &signed_text(header, &nested, &k.rsa.signing));
    assert!(
        matches!(refused, TokenRefusal::Malformed { .. }),
        "{refused:?}"
    );
    // In the header: a second alg or kid.
    for header in [
        r#"{"alg":"none","alg":"RS256","kid":"rsa-1"}"#,
        r#"{"alg":"RS256","kid":"rsa-2","kid":"rsa-1"}"#,
    ] {
        let token = signed_text(header, &claims().to_string(), &k.rsa.signing);
        let refused = refusal(&verifier, &token);
        assert!(
            matches!(refused, TokenRefusal::Malformed { .. }),
            "{header}: {refused:?}"
        );
    }
}

#[test]
fn times_at_the_edges_of_the_integers_neither_overflow_nor_pass_unchecked() {
    let (verifier, _dir) = verifier();
    let rsa = &keys().rsa;
    // The cluster signed an `exp` as far off as an i64 goes: accepted (the SVID's lifetime is the
    // CA's leaf TTL, never the token's), and no arithmetic on it overflows.
    let account = verifier
        .verify(
            &rs256(rsa, &with("exp", json!(i64::MAX))),
            &trust_domain(),
            now(),
        )
        .expect("accepted");
    assert_eq!(account.expires_at, i64::MAX);
    // Beyond i64, or not an integer: malformed, not wrapped around or rounded into the past.
    for exp in [json!(u64::MAX), json!(1e300), json!(-1e300), json!(1.5)] {
        let refused = refusal(&verifier, &rs256(rsa, &with("exp", exp.clone())));
        assert!(
            matches!(refused, TokenRefusal::Malformed { .. }),
            "{exp}: {refused:?}"
        );
    }
    // As far back as an i64 goes: expired.
    assert_eq!(
        refusal(&verifier, &rs256(rsa, &with("exp", json!(i64::MIN)))),
        TokenRefusal::Expired { exp: i64::MIN }
    );
    // nbf and iat at the far end: not yet valid.
    for claim in ["nbf", "iat"] {
        let refused = refusal(&verifier, &rs256(rsa, &with(claim, json!(i64::MAX))));
        assert!(
            matches!(refused, TokenRefusal::NotYetValid { .. }),
            "{claim}: {refused:?}"
        );
    }
    // And a verifier whose clock is at the far end does not overflow either: expired.
    let far = UNIX_EPOCH + Duration::from_secs(u64::MAX / 4);
    let refused = verifier
        .verify(&rs256(rsa, &claims()), &trust_domain(), far)
        .expect_err("expired");
    assert!(
        matches!(refused, TokenRefusal::Expired { .. }),
        "{refused:?}"
    );
}
