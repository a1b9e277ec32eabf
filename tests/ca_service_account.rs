//! `palisade ca serve` taking Kubernetes service-account tokens, end to end with the real binary:
//! the test plays the cluster (its own RSA and P-256 signing keys, published in a JWKS file) and
//! the workload (`palisade cert request --service-account-token FILE`). A good RS256 or ES256
//! token gets `spiffe://example.org/ns/<namespace>/sa/<name>`, then renewal goes over mTLS; each
//! forgery or misuse is refused with exit code 1, its own code on stderr and in the audit line;
//! a key added to the JWKS file is taken into use without a restart.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};

use common::*;
use palisade_test_support::jwks::{ec_key, hand_made, publish_keys, rsa_key, sign, SigningKey};

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const AUDIENCE: &str = "palisade-ca";
const FRONTEND: &str = "spiffe://example.org/ns/shop/sa/frontend";

struct Keys {
    /// In the cluster's JWKS.
    rsa: SigningKey,
    /// In the cluster's JWKS.
    ec: SigningKey,
    /// Never in any JWKS: an outsider's.
    outsider: SigningKey,
    /// Added to the JWKS by the reload test.
    new_ec: SigningKey,
}

/// Made once for every test of this file: RSA key generation takes a moment.
fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        rsa: rsa_key("cluster-rsa"),
        ec: ec_key("cluster-ec"),
        outsider: rsa_key("outsider-rsa"),
        new_ec: ec_key("rotated-ec"),
    })
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after the epoch")
        .as_secs() as i64
}

/// Claims as the API server writes them for a projected token of `shop/frontend` in `pod`, good
/// for ten minutes.
fn claims(pod: &str) -> Value {
    let now = unix_now();
    json!({
        "aud": [ISSUER, AUDIENCE],
        "exp": now + 600,
        "iat": now - 10,
        "nbf": now - 10,
        "iss": ISSUER,
        "jti": "0b5ffd3b-21d7-4a3c-9f8c-5b0a9e3b7f31",
        "kubernetes.io": {
            "namespace": "shop",
            "node": {"name": "worker-1", "uid": "6a1c5c44-2f56-4b0c-9d39-2f3c3f0b8a11"},
            "pod": {"name": pod, "uid": "1f2e3d4c-5b6a-4987-8877-665544332211"},
            "serviceaccount": {"name": "frontend", "uid": "a9e8d7c6-b5a4-4392-8170-6f5e4d3c2b1a"},
        },
        "sub": "system:serviceaccount:shop:frontend",
    })
}

/// `claims(pod)` with `member` set to `value`.
fn claims_with(pod: &str, member: &str, value: Value) -> Value {
    let mut claims = claims(pod);
    claims[member] = value;
    claims
}

/// A token signed by `key`, with the key's algorithm and `kid`.
fn token(key: &SigningKey, claims: &Value) -> String {
    key.token(claims)
}

fn signed(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    sign(alg, kid, claims, key)
}

/// A two-level CA, the cluster's JWKS file next to it, and `ca serve` taking tokens for it.
struct Setup {
    ca: TwoLevelCa,
    jwks: PathBuf,
    server: CaProcess,
}

impl Setup {
    fn new(published: &[&SigningKey]) -> Self {
        let ca = TwoLevelCa::new();
        let jwks = ca.path().join("jwks.json");
        publish_keys(&jwks, published);
        let server = CaProcess::start(
            &ca.issuer(),
            &[
                "--jwks",
                jwks.to_str().unwrap(),
                "--jwt-issuer",
                ISSUER,
                "--jwt-audience",
                AUDIENCE,
            ],
        );
        Setup { ca, jwks, server }
    }

    /// `cert request --service-account-token <out>.token --svid-dir <out>`, as the workload in `out`.
    fn request(&self, token: &str, out: &str) -> Output {
        request_with(&self.ca, &self.server, token, out)
    }
}

fn request_with(ca: &TwoLevelCa, server: &CaProcess, token: &str, out: &str) -> Output {
    let token_file = ca.path().join(format!("{out}.token"));
    std::fs::write(&token_file, token).expect("write token");
    let url = server.url();
    palisade(
        &[
            "cert",
            "request",
            "--ca",
            &url,
            "--bundle",
            ca.bundle().to_str().unwrap(),
            "--service-account-token",
            token_file.to_str().unwrap(),
            "--svid-dir",
            out,
        ],
        ca.path(),
    )
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn inspect(dir: &Path) -> Value {
    let out = ok(palisade(
        &[
            "cert",
            "inspect",
            "cert.pem",
            "--bundle",
            "bundle.pem",
            "-o",
            "json",
        ],
        dir,
    ));
    serde_json::from_str(&out).expect("inspect JSON")
}

/// Waits (up to 5 s) for an audit line that `matches`, and returns it.
fn audit_line(server: &CaProcess, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
    let mut found = None;
    wait_until(Duration::from_secs(5), || {
        found = server.audit_lines().into_iter().find(|l| matches(l));
        found.is_some()
    });
    found.unwrap_or_else(|| {
        panic!(
            "no audit line {what} in:\n{:#?}\nlog:\n{}",
            server.audit_lines(),
            server.log_text()
        )
    })
}

/// The request must be refused as the CA refuses a token: exit code 1, `code` on stderr, a
/// `refused` audit line with `code` for a service-account credential, and nothing written.
fn assert_refused(setup: &Setup, output: &Output, out: &str, code: &str, what: &str) {
    assert_eq!(
        output.status.code(),
        Some(1),
        "{what}: exit code\n{}",
        stderr(output)
    );
    assert!(
        stderr(output).contains(code),
        "{what}: {code} not on stderr:\n{}",
        stderr(output)
    );
    let line = setup.server.expect_audit("refused", Some(code));
    assert_eq!(line["credential"], "service_account", "{what}: {line}");
    assert_eq!(line["endpoint"], "sign", "{what}: {line}");
    assert!(line.get("serial").is_none(), "{what}: {line}");
    assert!(
        !setup.ca.path().join(out).join("key.pem").exists(),
        "{what}: a refused request wrote a key"
    );
}

#[test]
fn rs256_and_es256_tokens_get_the_service_accounts_id_then_renew_over_mtls() {
    let k = keys();
    let setup = Setup::new(&[&k.rsa, &k.ec]);
    let server = &setup.server;

    for (key, pod, out) in [
        (&k.rsa, "frontend-7d4b9c-rsa01", "rsa"),
        (&k.ec, "frontend-7d4b9c-ec001", "ec"),
    ] {
        let token = token(key, &claims(pod));
        ok(setup.request(&token, out));
        let dir = setup.ca.path().join(out);
        let first = inspect(&dir);
        assert_eq!(first["spiffe_id"], FRONTEND, "{out}: {first:#}");
        assert_eq!(first["verdict"]["status"], "valid", "{out}: {first:#}");

        let issued = audit_line(server, &format!("issued for pod {pod}"), |l| {
            l["event"] == "issued" && l["subject"].as_str().is_some_and(|s| s.contains(pod))
        });
        assert_eq!(issued["credential"], "service_account", "{issued}");
        assert_eq!(issued["endpoint"], "sign", "{issued}");
        assert_eq!(issued["spiffe_id"], FRONTEND, "{issued}");
        let subject = issued["subject"].as_str().unwrap();
        assert!(
            subject.contains("shop/frontend"),
            "the subject names namespace/serviceaccount: {subject}"
        );
        // One serial format everywhere: the audit line and `cert inspect -o json` say the same.
        assert_eq!(
            issued["serial"], first["serial"],
            "the audit line names the serial issued: {issued} / {first:#}"
        );
        // The audit trail never holds a token, not even its signature.
        let signature = token.rsplit('.').next().unwrap();
        assert!(
            !serde_json::to_string(&server.audit_lines())
                .unwrap()
                .contains(signature),
            "a token reached the audit log"
        );

        // Renewal: over mTLS with the certificate just issued, same ID, new serial.
        let renewals_before = server.metric("palisade_ca_issued_total", &[("credential", "mtls")]);
        ok(palisade(
            &[
                "cert",
                "renew",
                "--ca",
                &server.url(),
                "--svid-dir",
                dir.to_str().unwrap(),
            ],
            &dir,
        ));
        let second = inspect(&dir);
        assert_eq!(second["spiffe_id"], FRONTEND);
        assert_ne!(
            second["serial"], first["serial"],
            "{out}: a new certificate"
        );
        assert_eq!(
            server.metric("palisade_ca_issued_total", &[("credential", "mtls")]),
            renewals_before + 1.0
        );
    }
    assert_eq!(
        server.metric(
            "palisade_ca_issued_total",
            &[("credential", "service_account")]
        ),
        2.0
    );
    let renewed = audit_line(server, "a renewal", |l| {
        l["event"] == "issued" && l["endpoint"] == "renew"
    });
    assert_eq!(renewed["credential"], "mtls");
    assert_eq!(renewed["spiffe_id"], FRONTEND);
}

#[test]
fn expired_misaddressed_foreign_and_forged_tokens_are_refused_each_with_its_code() {
    let k = keys();
    let setup = Setup::new(&[&k.rsa, &k.ec]);
    let pod = "frontend-7d4b9c-xk2lp";
    let now = unix_now();

    // Well past exp, beyond the CA's 30 s allowance for clock skew.
    let mut expired = claims_with(pod, "exp", json!(now - 120));
    expired["iat"] = json!(now - 720);
    expired["nbf"] = json!(now - 720);
    // Signed with the outsider's key: under its own kid, and claiming the cluster key's kid.
    let foreign = token(&k.outsider, &claims(pod));
    let foreign_as_cluster = signed(
        Algorithm::RS256,
        Some(k.rsa.kid),
        &claims(pod),
        &k.outsider.signing,
    );
    // No signature at all.
    let none = hand_made(
        &json!({"alg": "none", "typ": "JWT", "kid": k.rsa.kid}),
        &claims(pod),
        b"",
    );
    let mut cases: Vec<(&str, String, &str)> = vec![
        ("expired", token(&k.rsa, &expired), "jwt_expired"),
        (
            "audience",
            token(&k.rsa, &claims_with(pod, "aud", json!([ISSUER, "vault"]))),
            "jwt_wrong_audience",
        ),
        (
            "issuer",
            token(
                &k.ec,
                &claims_with(pod, "iss", json!("https://other-cluster.example")),
            ),
            "jwt_wrong_issuer",
        ),
        ("foreign", foreign, "jwt_unknown_key"),
        ("foreign-kid", foreign_as_cluster, "jwt_bad_signature"),
        ("alg-none", none, "jwt_algorithm_not_allowed"),
    ];
    // Key confusion: HS256 keyed with the cluster's public RSA key, as PEM (both encodings an
    // attacker would try), which anyone can build from the published JWK.
    for (i, public_pem) in k.rsa.public_pems().iter().enumerate() {
        let hs256 = signed(
            Algorithm::HS256,
            Some(k.rsa.kid),
            &claims(pod),
            &EncodingKey::from_secret(public_pem.as_bytes()),
        );
        cases.push((
            if i == 0 { "hs256-spki" } else { "hs256-pkcs1" },
            hs256,
            "jwt_algorithm_not_allowed",
        ));
    }

    for (what, token, code) in &cases {
        let output = setup.request(token, what);
        assert_refused(&setup, &output, what, code, what);
    }
    // Every one of them counted under its code, and none issued.
    let server = &setup.server;
    for code in [
        "jwt_expired",
        "jwt_wrong_audience",
        "jwt_wrong_issuer",
        "jwt_unknown_key",
        "jwt_bad_signature",
    ] {
        assert_eq!(
            server.metric("palisade_ca_requests_total", &[("code", code)]),
            1.0,
            "{code}"
        );
    }
    assert_eq!(
        server.metric(
            "palisade_ca_requests_total",
            &[("code", "jwt_algorithm_not_allowed")]
        ),
        3.0
    );
    // Audit lines reach the test through a reader thread: the last may still be on its way.
    let refusals = || {
        server
            .audit_lines()
            .iter()
            .filter(|l| l["event"] == "refused")
            .count()
    };
    wait_until(Duration::from_secs(5), || refusals() >= cases.len());
    assert_eq!(refusals(), cases.len(), "{:#?}", server.audit_lines());
    assert_eq!(
        server.metric(
            "palisade_ca_issued_total",
            &[("credential", "service_account")]
        ),
        0.0
    );

    // The same CA still takes a good token: the refusals were about the tokens.
    ok(setup.request(&token(&k.rsa, &claims(pod)), "good"));
    assert_eq!(
        inspect(&setup.ca.path().join("good"))["spiffe_id"],
        FRONTEND
    );
}

#[test]
fn a_key_added_to_the_jwks_file_is_accepted_within_seconds_without_a_restart() {
    let k = keys();
    let setup = Setup::new(&[&k.rsa]);
    let pod = "frontend-7d4b9c-rot01";
    let rotated = token(&k.new_ec, &claims(pod));

    let refused = setup.request(&rotated, "before");
    assert_refused(
        &setup,
        &refused,
        "before",
        "jwt_unknown_key",
        "a key not published yet",
    );

    // The cluster publishes its new key next to the old one.
    publish_keys(&setup.jwks, &[&k.rsa, &k.new_ec]);
    let published = Instant::now();
    let mut last = None;
    let mut attempt = 0;
    let accepted = wait_until(Duration::from_secs(10), || {
        attempt += 1;
        let output = setup.request(&rotated, &format!("after{attempt}"));
        let success = output.status.success();
        last = Some(output);
        success
    });
    let took = published.elapsed();
    let last = last.expect("at least one attempt");
    assert!(
        accepted,
        "a token of the new key is still refused {took:?} after the JWKS changed:\n{}\nlog:\n{}",
        stderr(&last),
        setup.server.log_text()
    );
    // --reload-interval 1s: picked up at the next reload, give or take a slow machine.
    assert!(
        took < Duration::from_secs(5),
        "accepted only after {took:?}"
    );
    let dir = setup.ca.path().join(format!("after{attempt}"));
    assert_eq!(inspect(&dir)["spiffe_id"], FRONTEND);
    let issued = setup.server.expect_audit("issued", None);
    assert_eq!(issued["credential"], "service_account");
    assert!(
        setup.server.metric(
            "palisade_ca_reloads_total",
            &[("files", "jwks"), ("result", "success")]
        ) >= 1.0
    );
    // The old key still verifies: it was published alongside.
    ok(setup.request(&token(&k.rsa, &claims(pod)), "old-key"));
}

#[test]
fn a_server_started_without_jwks_refuses_bearer_tokens_with_jwt_not_configured() {
    let k = keys();
    let ca = TwoLevelCa::new();
    let server = CaProcess::start(&ca.issuer(), &[]);
    let output = request_with(&ca, &server, &token(&k.rsa, &claims("p")), "sa");
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("jwt_not_configured"),
        "{}",
        stderr(&output)
    );
    let line = server.expect_audit("refused", Some("jwt_not_configured"));
    assert_eq!(line["credential"], "service_account", "{line}");
    assert!(!ca.path().join("sa/key.pem").exists());
}

/// The CA service restricts itself with Landlock (docs/IDENTITY.md): it may read its JWKS only in
/// the file's own directory. A JWKS swapped for a symlink to a file elsewhere (publishing a key
/// the cluster never had) is refused with "Permission denied"; the keys in force stay.
#[test]
fn the_ca_service_cannot_read_a_jwks_outside_its_directory() {
    let k = keys();
    let ca = TwoLevelCa::new();
    let jwks_dir = ca.path().join("jwks");
    let elsewhere = ca.path().join("elsewhere");
    std::fs::create_dir(&jwks_dir).unwrap();
    std::fs::create_dir(&elsewhere).unwrap();
    let jwks = jwks_dir.join("jwks.json");
    publish_keys(&jwks, &[&k.rsa]);
    publish_keys(&elsewhere.join("jwks.json"), &[&k.rsa, &k.new_ec]);
    let server = CaProcess::start(
        &ca.issuer(),
        &[
            "--jwks",
            jwks.to_str().unwrap(),
            "--jwt-issuer",
            ISSUER,
            "--jwt-audience",
            AUDIENCE,
        ],
    );
    assert!(
        wait_until(Duration::from_secs(5), || server
            .log_text()
            .contains("sandbox: Landlock enforced")),
        "{}",
        server.log_text()
    );
    let pod = "frontend-7d4b9c-sbx01";
    let first = request_with(&ca, &server, &token(&k.rsa, &claims(pod)), "first");
    assert!(first.status.success(), "{}", stderr(&first));

    let link = jwks_dir.join("jwks.json.new");
    std::os::unix::fs::symlink(elsewhere.join("jwks.json"), &link).unwrap();
    std::fs::rename(&link, &jwks).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || server
            .log_text()
            .contains("Permission denied")),
        "the JWKS outside its directory was not refused:\n{}",
        server.log_text()
    );
    let outsider = request_with(&ca, &server, &token(&k.new_ec, &claims(pod)), "outsider");
    assert!(
        !outsider.status.success(),
        "a key from outside the JWKS directory was accepted"
    );
    let again = request_with(&ca, &server, &token(&k.rsa, &claims(pod)), "again");
    assert!(again.status.success(), "{}", stderr(&again));
}

/// A stand-in for the API server's two endpoints, over HTTPS (argv[1] cert, argv[2] key): the
/// OpenID discovery document and the JWKS (argv[3], read at each request), both only for
/// `Authorization: Bearer <argv[4]>` (401 otherwise); each JWKS request appends a line to argv[5].
/// Prints its port.
const API_SERVER: &str = r#"
import http.server, json, socketserver, ssl, sys
cert, key, jwks, token, counter = sys.argv[1:6]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.headers.get("Authorization") != "Bearer " + token:
            self.send_response(401); self.send_header("Content-Length", "0"); self.end_headers(); return
        if self.path == "/.well-known/openid-configuration":
            port = self.server.server_address[1]
            body = json.dumps({"issuer": "https://kubernetes.default.svc.cluster.local",
                               "jwks_uri": "https://localhost:%d/openid/v1/jwks" % port}).encode()
        elif self.path == "/openid/v1/jwks":
            body = open(jwks, "rb").read()
            open(counter, "a").write("fetch\n")
        else:
            self.send_response(404); self.send_header("Content-Length", "0"); self.end_headers(); return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
s = S(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(cert, key)
s.socket = ctx.wrap_socket(s.socket, server_side=True)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

/// Issue 23, point 5: the CA takes the cluster's keys from the API server itself (its OIDC
/// discovery document, then its jwks_uri, with the pod's token, trusting only the roots given):
/// a token of the published key is accepted; a key the cluster rotates in is fetched as soon as a
/// token names it; tokens naming keys nobody publishes cannot make the CA fetch more than once per
/// 5 s; without the right credential the CA does not start, and says why.
#[test]
fn the_jwks_is_fetched_from_the_api_server_and_again_when_a_token_names_a_new_key() {
    if !have("python3") {
        return;
    }
    let k = keys();
    let ca = TwoLevelCa::new();
    let dir = ca.path();
    // The stand-in's own TLS: a CA of its own, as a cluster's API server has.
    let api_pki = Pki::new();
    api_pki.issue("apiserver", "apiserver", &["--dns", "localhost"]);
    let jwks = dir.join("jwks.json");
    publish_keys(&jwks, &[&k.rsa]);
    let counter = dir.join("fetches");
    std::fs::write(&counter, "").unwrap();
    let sa_token = dir.join("sa-token");
    std::fs::write(&sa_token, "the-ca-pods-own-token\n").unwrap();
    let api = api_pki.path().join("apiserver");
    let mut server = std::process::Command::new("python3")
        .args(["-c", API_SERVER])
        .arg(api.join("cert.pem"))
        .arg(api.join("key.pem"))
        .arg(&jwks)
        .arg("the-ca-pods-own-token")
        .arg(&counter)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut port = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().unwrap()),
        &mut port,
    )
    .unwrap();
    let discovery = format!(
        "https://localhost:{}/.well-known/openid-configuration",
        port.trim()
    );
    let roots = api_pki.path().join("ca/bundle.pem");
    let fetches = || std::fs::read_to_string(&counter).unwrap().lines().count();

    // A wrong credential: the CA does not start, and says why.
    std::fs::write(dir.join("wrong-token"), "someone-else").unwrap();
    let mut refused = std::process::Command::new(BIN);
    refused
        .args(["ca", "serve", "--ca-dir"])
        .arg(ca.issuer())
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .args(["--jwks-url", &discovery, "--jwks-ca"])
        .arg(&roots)
        .arg("--jwks-token")
        .arg(dir.join("wrong-token"))
        .args(["--jwt-issuer", ISSUER]);
    let (out, timed_out) = run_bounded(&mut refused, b"", Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!timed_out && !out.status.success(), "{err}");
    assert!(
        err.contains("cannot fetch the cluster's JWKS") && err.contains("401"),
        "{err}"
    );

    let setup = Setup {
        server: CaProcess::start(
            &ca.issuer(),
            &[
                "--jwks-url",
                &discovery,
                "--jwks-ca",
                roots.to_str().unwrap(),
                "--jwks-token",
                sa_token.to_str().unwrap(),
                "--jwt-issuer",
                ISSUER,
                "--jwt-audience",
                AUDIENCE,
            ],
        ),
        jwks: jwks.clone(),
        ca,
    };
    let pod = "frontend-7d4b9c-fetch";
    ok(setup.request(&token(&k.rsa, &claims(pod)), "first"));
    assert_eq!(fetches(), 1, "fetched once, at start");

    // The cluster rotates a key in: the first token naming it makes the CA fetch at once.
    publish_keys(&jwks, &[&k.rsa, &k.new_ec]);
    let rotated = token(&k.new_ec, &claims(pod));
    let mut attempt = 0;
    let accepted = wait_until(Duration::from_secs(15), || {
        attempt += 1;
        setup
            .request(&rotated, &format!("rotated{attempt}"))
            .status
            .success()
    });
    assert!(
        accepted,
        "a token of the new key was never accepted:\n{}",
        setup.server.log_text()
    );
    assert!(fetches() >= 2);

    // A flood of tokens naming a key nobody publishes: refused, and the CA fetches at most once
    // per 5 s meanwhile (the loop is bounded: 30 requests).
    let before = fetches();
    let started = std::time::Instant::now();
    let outsider = token(&k.outsider, &claims(pod));
    for i in 0..30 {
        assert!(!setup
            .request(&outsider, &format!("outsider{i}"))
            .status
            .success());
    }
    let bound = 2 + (started.elapsed().as_secs() / 5) as usize;
    assert!(
        fetches() - before <= bound,
        "{} fetches for 30 unknown-key tokens in {:?}",
        fetches() - before,
        started.elapsed()
    );
    let _ = server.kill();
    let _ = server.wait();
}
