//! `palisade ca serve` end to end with the real binary: bootstrap by join token, renewal over
//! mTLS, the two-level chain, and every refusal with its own code and audit line. Clients are
//! the real `palisade cert request|renew` and curl (for requests our CLI never makes).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

fn request(
    ca: &TwoLevelCa,
    server: &CaProcess,
    token: &str,
    out: &str,
    extra: &[&str],
) -> std::process::Output {
    let url = server.url();
    let bundle = ca.bundle();
    let mut args = vec![
        "cert",
        "request",
        "--ca",
        &url,
        "--bundle",
        bundle.to_str().unwrap(),
        "--token",
        token,
        "--out",
        out,
    ];
    args.extend_from_slice(extra);
    palisade(&args, ca.path())
}

fn renew(server: &CaProcess, dir: &Path) -> std::process::Output {
    palisade(
        &[
            "cert",
            "renew",
            "--ca",
            &server.url(),
            "--dir",
            dir.to_str().unwrap(),
        ],
        dir,
    )
}

fn inspect(dir: &Path) -> serde_json::Value {
    let out = ok(palisade(
        &[
            "cert",
            "inspect",
            "cert.pem",
            "--bundle",
            "bundle.pem",
            "--json",
        ],
        dir,
    ));
    serde_json::from_str(&out).expect("inspect JSON")
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn bootstrap_with_a_join_token_then_renew_over_mtls_with_the_chain_through_the_issuer() {
    let ca = TwoLevelCa::new();
    let server = CaProcess::start(&ca.issuer(), &[]);
    let token = ca.token("ns/shop/sa/frontend", "10m");
    ok(request(&ca, &server, &token, "frontend", &[]));
    let dir = ca.path().join("frontend");
    let first = inspect(&dir);
    assert_eq!(
        first["spiffe_id"],
        "spiffe://example.org/ns/shop/sa/frontend"
    );
    assert_eq!(first["verdict"]["status"], "valid", "{first:#}");
    // Leaf then issuer in cert.pem; roots only in bundle.pem.
    let chain = std::fs::read_to_string(dir.join("cert.pem")).unwrap();
    assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
    let bundle = std::fs::read_to_string(dir.join("bundle.pem")).unwrap();
    assert_eq!(
        bundle,
        std::fs::read_to_string(ca.path().join("root/bundle.pem")).unwrap()
    );
    // OpenSSL agrees: the leaf verifies to the root through the issuer it presents.
    if have("openssl") {
        let verify = Command::new("openssl")
            .args([
                "verify",
                "-CAfile",
                "bundle.pem",
                "-untrusted",
                "cert.pem",
                "cert.pem",
            ])
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            verify.status.success(),
            "{}",
            String::from_utf8_lossy(&verify.stderr)
        );
    }
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.join("key.pem"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(key_mode & 0o777, 0o600);
    let issued = server.expect_audit("issued", None);
    assert_eq!(issued["credential"], "join_token");
    assert_eq!(
        issued["spiffe_id"],
        "spiffe://example.org/ns/shop/sa/frontend"
    );
    let old_key = std::fs::read(dir.join("key.pem")).unwrap();

    ok(renew(&server, &dir));
    let second = inspect(&dir);
    assert_eq!(second["spiffe_id"], first["spiffe_id"]);
    assert_ne!(second["serial"], first["serial"]);
    assert_ne!(
        std::fs::read(dir.join("key.pem")).unwrap(),
        old_key,
        "a new key each renewal"
    );
    let renewed = server
        .audit_lines()
        .into_iter()
        .find(|l| l["event"] == "issued" && l["endpoint"] == "renew")
        .expect("a renewal audit line");
    assert_eq!(renewed["credential"], "mtls");
    assert_eq!(
        server.metric("palisade_ca_issued_total", &[("credential", "mtls")]),
        1.0
    );
    assert_eq!(
        server.metric("palisade_ca_issued_total", &[("credential", "join_token")]),
        1.0
    );
}

#[test]
fn a_join_token_is_refused_when_reused_expired_or_for_another_id_each_with_its_code() {
    let ca = TwoLevelCa::new();
    let server = CaProcess::start(&ca.issuer(), &[]);

    let token = ca.token("ns/shop/sa/a", "10m");
    ok(request(&ca, &server, &token, "a", &[]));
    let again = request(&ca, &server, &token, "a2", &[]);
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("token_reused"),
        "{}",
        stderr(&again)
    );
    server.expect_audit("refused", Some("token_reused"));

    let other = ca.token("ns/shop/sa/b", "10m");
    let wrong = request(
        &ca,
        &server,
        &other,
        "b",
        &["--spiffe-id", "spiffe://example.org/ns/shop/sa/admin"],
    );
    assert_eq!(wrong.status.code(), Some(1));
    assert!(stderr(&wrong).contains("other_id"), "{}", stderr(&wrong));
    let line = server.expect_audit("refused", Some("other_id"));
    assert_eq!(line["spiffe_id"], "spiffe://example.org/ns/shop/sa/b");
    assert!(!ca.path().join("b/key.pem").exists());

    let short = ca.token("ns/shop/sa/c", "1s");
    std::thread::sleep(Duration::from_millis(1500));
    let late = request(&ca, &server, &short, "c", &[]);
    assert_eq!(late.status.code(), Some(1));
    assert!(stderr(&late).contains("token_expired"), "{}", stderr(&late));
    server.expect_audit("refused", Some("token_expired"));

    let unknown = format!("palisade-join-{}", "ab".repeat(32));
    let nope = request(&ca, &server, &unknown, "d", &[]);
    assert!(stderr(&nope).contains("token_unknown"), "{}", stderr(&nope));
    // No audit line carries a token.
    let audit = serde_json::to_string(&server.audit_lines()).unwrap();
    for t in [&token, &other, &short] {
        assert!(!audit.contains(&t[14..]), "a token reached the audit log");
    }
}

#[test]
fn of_concurrent_uses_of_one_token_exactly_one_succeeds() {
    let ca = TwoLevelCa::new();
    let server = CaProcess::start(&ca.issuer(), &["--rate-limit", "0"]);
    let token = ca.token("ns/shop/sa/race", "10m");
    let outcomes: Vec<bool> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let (ca, server, token) = (&ca, &server, &token);
                scope.spawn(move || {
                    request(ca, server, token, &format!("r{i}"), &[])
                        .status
                        .success()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(outcomes.iter().filter(|ok| **ok).count(), 1, "{outcomes:?}");
    assert_eq!(
        server.metric("palisade_ca_requests_total", &[("code", "token_reused")]),
        7.0
    );
}

#[test]
fn renewal_is_refused_with_an_expired_or_untrusted_certificate_or_for_another_id() {
    if !have("curl") {
        return;
    }
    let ca = TwoLevelCa::new();
    let server = CaProcess::start(&ca.issuer(), &[]);
    // A certificate from the issuer that expires in 2 s (NotBefore is set back 45 s).
    ok(palisade(
        &[
            "cert",
            "issue",
            "--ca-dir",
            "issuer",
            "--spiffe-id",
            "spiffe://example.org/short",
            "--ttl",
            "2s",
            "--out",
            "short",
        ],
        ca.path(),
    ));
    // Validity is checked in whole seconds: NotAfter's own second still counts as valid.
    std::thread::sleep(Duration::from_millis(3500));
    let expired = renew(&server, &ca.path().join("short"));
    // Our CLI refuses to use an expired certificate before it asks: the CA's own check is
    // exercised with curl below.
    assert_ne!(expired.status.code(), Some(0));
    let (status, body) = curl_renew(&server, &ca.path().join("short"), &[]);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("renew_certificate_expired"), "{body}");
    server.expect_audit("refused", Some("renew_certificate_expired"));

    // Another CA's certificate of the same trust domain.
    let stranger = tempfile::tempdir().unwrap();
    ok(palisade(
        &["ca", "init", "--dir", "ca", "--trust-domain", TD],
        stranger.path(),
    ));
    ok(palisade(
        &[
            "cert",
            "issue",
            "--ca-dir",
            "ca",
            "--spiffe-id",
            "spiffe://example.org/intruder",
            "--out",
            "x",
        ],
        stranger.path(),
    ));
    let (status, body) = curl_renew(&server, &stranger.path().join("x"), &[]);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("renew_certificate_untrusted"), "{body}");

    // A valid certificate asking for another ID.
    ok(palisade(
        &[
            "cert",
            "issue",
            "--ca-dir",
            "issuer",
            "--spiffe-id",
            "spiffe://example.org/web",
            "--out",
            "web",
        ],
        ca.path(),
    ));
    let (status, body) = curl_renew(
        &server,
        &ca.path().join("web"),
        &["-H", "Palisade-Spiffe-Id: spiffe://example.org/admin"],
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("\"other_id\""), "{body}");
    let line = server.expect_audit("refused", Some("other_id"));
    assert_eq!(line["credential"], "mtls");

    // Without a certificate at all.
    let (status, body) = curl(&server, &["-X", "POST", "--data-binary", "x"], "/v1/renew");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("renew_no_certificate"), "{body}");
}

#[test]
fn oversized_requests_and_clients_over_their_rate_are_refused() {
    if !have("curl") {
        return;
    }
    let ca = TwoLevelCa::new();
    let server = CaProcess::start(&ca.issuer(), &["--rate-limit", "0.01", "--rate-burst", "3"]);
    let big = ca.path().join("big.bin");
    std::fs::write(&big, vec![b'A'; 64 * 1024]).unwrap();
    let (status, body) = curl(
        &server,
        &[
            "-X",
            "POST",
            "--data-binary",
            &format!("@{}", big.display()),
            "-H",
            "Authorization: JoinToken x",
        ],
        "/v1/sign",
    );
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("request_too_large"), "{body}");
    server.expect_audit("refused", Some("request_too_large"));
    // Two more requests use the burst up; the next is limited.
    for _ in 0..2 {
        let (status, _) = curl(&server, &["-X", "POST", "--data-binary", "x"], "/v1/sign");
        assert_eq!(status, 400);
    }
    let (status, body) = curl(&server, &["-X", "POST", "--data-binary", "x"], "/v1/sign");
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("rate_limited"), "{body}");
    server.expect_audit("refused", Some("rate_limited"));
    // The bundle is not rate limited, and comes as PEM and as a SPIFFE bundle.
    let (status, pem) = curl(&server, &[], "/v1/bundle");
    assert_eq!(status, 200);
    assert_eq!(pem, std::fs::read_to_string(ca.bundle()).unwrap());
    let (status, jwks) = curl(&server, &["-H", "Accept: application/json"], "/v1/bundle");
    assert_eq!(status, 200);
    let jwks: serde_json::Value = serde_json::from_str(&jwks).unwrap();
    assert_eq!(jwks["keys"][0]["use"], "x509-svid");
    assert_eq!(jwks["keys"][0]["kty"], "EC");
    assert!(jwks["keys"][0].get("kid").is_none());
    assert!(jwks["spiffe_sequence"].as_i64().unwrap() > 0);
}

/// curl to the CA service, trusting its roots and pinning nothing but the chain (curl checks
/// names; the service's certificate has none for 127.0.0.1, so `-k` plus `--cacert` is not
/// enough; the tests only need the status and body).
fn curl(server: &CaProcess, extra: &[&str], path: &str) -> (u16, String) {
    let url = format!("{}{path}", server.url());
    let out = Command::new("curl")
        .args(["-sk", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(extra)
        .arg(&url)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// POST /v1/renew with a fresh CSR, presenting `dir`'s certificate and key.
fn curl_renew(server: &CaProcess, dir: &Path, extra: &[&str]) -> (u16, String) {
    let csr = dir.join("renew.csr");
    let key = dir.join("renew.key");
    let made = Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&csr)
        .output()
        .expect("openssl req");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let cert = dir.join("cert.pem");
    let own_key = dir.join("key.pem");
    let data = format!("@{}", csr.display());
    let mut args = vec![
        "-X",
        "POST",
        "--data-binary",
        &data,
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        own_key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    curl(server, &args, "/v1/renew")
}
