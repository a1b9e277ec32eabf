//! End-to-end tests of the identity commands: the real `palisade` binary, checked by a tool that
//! is not ours (`openssl verify`, `openssl x509 -text`, `openssl req`).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const TD: &str = "example.org";

fn palisade(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run palisade")
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "command failed: {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The one sentence a failing command prints: exactly one line on stderr, starting "error: ".
fn failure_sentence(output: &Output) -> String {
    assert!(!output.status.success(), "expected failure, got success");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no error message");
    lines[0].to_owned()
}

fn openssl_available() -> bool {
    let found = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        common::skipping("openssl is not installed (scripts/test installs it)");
    }
    found
}

fn openssl(args: &[&str], cwd: &Path) -> Output {
    Command::new("openssl")
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run openssl")
}

fn init_ca(dir: &Path, extra: &[&str]) {
    let mut args = vec!["ca", "init", "--ca-dir", "ca", "--trust-domain", TD];
    args.extend_from_slice(extra);
    ok(&palisade(&args, dir));
}

fn mode(path: PathBuf) -> u32 {
    std::fs::metadata(&path).unwrap().permissions().mode() & 0o777
}

#[test]
fn openssl_verifies_every_issued_leaf_and_sees_the_profile() {
    if !openssl_available() {
        return;
    }
    for key_type in ["ecdsa-p256", "ed25519"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        init_ca(dir, &["--key-type", key_type]);
        assert_eq!(mode(dir.join("ca/ca-key.pem")), 0o600);
        let id = "spiffe://example.org/ns/shop/sa/frontend";
        ok(&palisade(
            &[
                "cert",
                "issue",
                "--ca-dir",
                "ca",
                "--spiffe-id",
                id,
                "--svid-dir",
                "w",
                "--key-type",
                key_type,
                "--dns",
                "frontend.shop.svc",
                "--ttl",
                "2h",
            ],
            dir,
        ));
        assert_eq!(mode(dir.join("w/key.pem")), 0o600);
        let verify = openssl(&["verify", "-CAfile", "w/bundle.pem", "w/cert.pem"], dir);
        assert!(
            verify.status.success(),
            "openssl verify failed for {key_type}: {}",
            String::from_utf8_lossy(&verify.stderr)
        );

        let text = ok(&openssl(
            &["x509", "-in", "w/cert.pem", "-noout", "-text"],
            dir,
        ));
        let after = |header: &str| -> String {
            let mut lines = text.lines();
            lines.find(|l| l.trim_start().starts_with(header));
            lines.next().unwrap_or_default().trim().to_owned()
        };
        assert!(
            text.contains("X509v3 Subject Alternative Name: critical"),
            "{text}"
        );
        assert_eq!(
            after("X509v3 Subject Alternative Name"),
            format!("URI:{id}, DNS:frontend.shop.svc")
        );
        assert!(text.contains("X509v3 Key Usage: critical"), "{text}");
        assert_eq!(after("X509v3 Key Usage"), "Digital Signature");
        assert_eq!(
            after("X509v3 Extended Key Usage"),
            "TLS Web Server Authentication, TLS Web Client Authentication"
        );
        assert!(
            text.contains("X509v3 Basic Constraints: critical"),
            "{text}"
        );
        assert_eq!(after("X509v3 Basic Constraints"), "CA:FALSE");
        assert!(text.contains("X509v3 Authority Key Identifier"), "{text}");
        assert_eq!(text.matches("URI:").count(), 1, "exactly one URI SAN");
        let serial = after("Serial Number:");
        assert_eq!(
            serial.split(':').count(),
            16,
            "16-byte serial, got {serial}"
        );

        let ca_text = ok(&openssl(
            &["x509", "-in", "ca/ca-cert.pem", "-noout", "-text"],
            dir,
        ));
        let mut ca_lines = ca_text.lines().map(str::trim);
        assert!(ca_lines.any(|l| l == "X509v3 Basic Constraints: critical"));
        assert_eq!(ca_lines.next(), Some("CA:TRUE"));
        assert!(ca_text.contains("Certificate Sign, CRL Sign"), "{ca_text}");
        assert!(ca_text.contains("URI:spiffe://example.org\n"), "{ca_text}");
    }
}

#[test]
fn issues_from_an_openssl_csr_and_ignores_its_sans() {
    if !openssl_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    init_ca(dir, &[]);
    ok(&openssl(
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "w.key",
            "-out",
            "w.csr",
            "-subj",
            "/CN=please-trust-me",
            "-addext",
            "subjectAltName=URI:spiffe://example.org/admin,DNS:evil.example",
        ],
        dir,
    ));
    let id = "spiffe://example.org/ns/shop/sa/payments";
    ok(&palisade(
        &[
            "cert",
            "issue",
            "--ca-dir",
            "ca",
            "--spiffe-id",
            id,
            "--csr",
            "w.csr",
            "--svid-dir",
            "w",
        ],
        dir,
    ));
    assert!(
        !dir.join("w/key.pem").exists(),
        "no key is written for a CSR"
    );
    let verify = openssl(&["verify", "-CAfile", "w/bundle.pem", "w/cert.pem"], dir);
    assert!(verify.status.success());
    let text = ok(&openssl(
        &["x509", "-in", "w/cert.pem", "-noout", "-text"],
        dir,
    ));
    assert!(text.contains(&format!("URI:{id}")), "{text}");
    assert!(!text.contains("admin") && !text.contains("evil") && !text.contains("please"));
    // The certificate is for the CSR's key.
    let cert_key = ok(&openssl(
        &["x509", "-in", "w/cert.pem", "-noout", "-pubkey"],
        dir,
    ));
    let csr_key = ok(&openssl(&["pkey", "-in", "w.key", "-pubout"], dir));
    assert_eq!(cert_key, csr_key);
}

#[test]
fn inspect_reports_and_exit_code_follows_the_verdict() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    init_ca(dir, &[]);
    let id = "spiffe://example.org/ns/a/sa/b";
    ok(&palisade(
        &[
            "cert",
            "issue",
            "--ca-dir",
            "ca",
            "--spiffe-id",
            id,
            "--svid-dir",
            "w",
            "--ttl",
            "1h",
        ],
        dir,
    ));
    let json = ok(&palisade(
        &[
            "cert",
            "inspect",
            "w/cert.pem",
            "--bundle",
            "ca/bundle.pem",
            "-o",
            "json",
        ],
        dir,
    ));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["spiffe_id"], id);
    assert_eq!(v["verdict"]["status"], "valid");
    assert_eq!(v["key_algorithm"], "ecdsa-p256");
    let remaining = v["remaining_seconds"].as_i64().unwrap();
    assert!((3500..=3600).contains(&remaining), "{remaining}");
    assert!(v["issuer"].as_str().unwrap().contains("Palisade CA"));
    // 16 random bytes, as lowercase hex without separators (the one serial format).
    let serial = v["serial"].as_str().unwrap();
    assert!(
        serial.len() == 32
            && serial
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
        "{serial}"
    );

    let text = ok(&palisade(&["cert", "inspect", "w/cert.pem"], dir));
    assert!(
        text.contains(id) && text.contains("chain not checked"),
        "{text}"
    );

    // Another CA of the same trust domain: well-formed, but it does not chain to that bundle.
    ok(&palisade(
        &["ca", "init", "--ca-dir", "other", "--trust-domain", TD],
        dir,
    ));
    let out = palisade(
        &[
            "cert",
            "inspect",
            "w/cert.pem",
            "--bundle",
            "other/bundle.pem",
            "-o",
            "json",
        ],
        dir,
    );
    assert_eq!(out.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"]["status"], "invalid");
    assert!(v["verdict"]["reason"]
        .as_str()
        .unwrap()
        .contains("does not lead to a root"));

    // A bundle of another trust domain.
    ok(&palisade(
        &[
            "ca",
            "init",
            "--ca-dir",
            "td2",
            "--trust-domain",
            "other.org",
        ],
        dir,
    ));
    let out = palisade(
        &[
            "cert",
            "inspect",
            "w/cert.pem",
            "--bundle",
            "td2/bundle.pem",
        ],
        dir,
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).contains("INVALID"));

    // A CA certificate is not a workload's SVID.
    let out = palisade(&["cert", "inspect", "ca/ca-cert.pem"], dir);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).contains("has no path"));
}

#[test]
fn inspect_refuses_an_expired_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    init_ca(dir, &[]);
    ok(&palisade(
        &[
            "cert",
            "issue",
            "--ca-dir",
            "ca",
            "--spiffe-id",
            "spiffe://example.org/x",
            "--svid-dir",
            "w",
            "--ttl",
            "1s",
        ],
        dir,
    ));
    // Whole seconds: wait until NotAfter is strictly in the past.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let out = palisade(
        &[
            "cert",
            "inspect",
            "w/cert.pem",
            "--bundle",
            "ca/bundle.pem",
            "-o",
            "json",
        ],
        dir,
    );
    assert_eq!(out.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["verdict"]["reason"].as_str().unwrap().contains("expired"),
        "{v}"
    );
    assert!(v["remaining_seconds"].as_i64().unwrap() < 0);
}

#[test]
fn refuses_to_overwrite_a_ca_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    init_ca(dir, &[]);
    let before = std::fs::read(dir.join("ca/ca-key.pem")).unwrap();
    let out = palisade(&["ca", "init", "--ca-dir", "ca", "--trust-domain", TD], dir);
    let sentence = failure_sentence(&out);
    assert!(
        sentence.contains("already exists") && sentence.contains("--force"),
        "{sentence}"
    );
    assert_eq!(std::fs::read(dir.join("ca/ca-key.pem")).unwrap(), before);
    init_ca(dir, &["--force"]);
    assert_ne!(std::fs::read(dir.join("ca/ca-key.pem")).unwrap(), before);
    assert_eq!(mode(dir.join("ca/ca-key.pem")), 0o600);
}

#[test]
fn bad_input_gets_one_clear_sentence_and_a_failure_code() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    init_ca(dir, &[]);
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "cert",
                "issue",
                "--ca-dir",
                "ca",
                "--spiffe-id",
                "spiffe://example.org/a//b",
                "--svid-dir",
                "w",
            ],
            "empty segments",
        ),
        (
            &[
                "cert",
                "issue",
                "--ca-dir",
                "ca",
                "--spiffe-id",
                "https://example.org/a",
                "--svid-dir",
                "w",
            ],
            "spiffe://",
        ),
        (
            &[
                "cert",
                "issue",
                "--ca-dir",
                "ca",
                "--spiffe-id",
                "spiffe://other.org/a",
                "--svid-dir",
                "w",
            ],
            "outside this CA's trust domain",
        ),
        (
            &[
                "cert",
                "issue",
                "--ca-dir",
                "ca",
                "--spiffe-id",
                "spiffe://example.org",
                "--svid-dir",
                "w",
            ],
            "needs a path",
        ),
        (
            &[
                "cert",
                "issue",
                "--ca-dir",
                "ca",
                "--spiffe-id",
                "spiffe://example.org/a",
                "--svid-dir",
                "w",
                "--dns",
                "not a name",
            ],
            "not a valid DNS name",
        ),
        (
            &[
                "ca",
                "init",
                "--ca-dir",
                "ca2",
                "--trust-domain",
                TD,
                "--key-type",
                "rsa",
            ],
            "invalid value 'rsa'",
        ),
        (
            &[
                "ca",
                "init",
                "--ca-dir",
                "ca2",
                "--trust-domain",
                "Example.ORG",
            ],
            "lowercase",
        ),
        (
            &[
                "ca",
                "init",
                "--ca-dir",
                "ca2",
                "--trust-domain",
                TD,
                "--ttl",
                "soon",
            ],
            "not a duration",
        ),
        (
            &[
                "cert",
                "issue",
                "--ca-dir",
                "no-such-dir",
                "--spiffe-id",
                "spiffe://example.org/a",
                "--svid-dir",
                "w",
            ],
            "no-such-dir",
        ),
        (
            &[
                "cert",
                "issue",
                "--ca-dir",
                ".",
                "--spiffe-id",
                "spiffe://example.org/a",
                "--svid-dir",
                "w",
            ],
            "holds no CA",
        ),
        (
            &["cert", "inspect", "missing.pem"],
            "cannot read missing.pem",
        ),
        (
            &["cert", "inspect", "ca/ca-key.pem"],
            "holds no PEM certificate",
        ),
    ];
    for (args, expected) in cases {
        let out = palisade(args, dir);
        assert_ne!(out.status.code(), Some(0), "{args:?} succeeded");
        let sentence = failure_sentence(&out);
        assert!(
            sentence.contains(expected),
            "{args:?}: expected {expected:?} in {sentence:?}"
        );
    }
    assert!(
        !dir.join("w").exists(),
        "nothing written for refused requests"
    );

    // An unreadable CA directory (root reads everything, so use a file where a directory belongs).
    std::fs::write(dir.join("plainfile"), "x").unwrap();
    let out = palisade(
        &[
            "cert",
            "issue",
            "--ca-dir",
            "plainfile",
            "--spiffe-id",
            "spiffe://example.org/a",
            "--svid-dir",
            "w",
        ],
        dir,
    );
    let sentence = failure_sentence(&out);
    assert!(sentence.contains("plainfile"), "{sentence}");
}

#[test]
fn every_command_has_help_with_an_example() {
    let tmp = tempfile::tempdir().unwrap();
    for cmd in [
        &["ca", "init"][..],
        &["cert", "issue"],
        &["cert", "inspect"],
        &["sidecar", "run"],
        &["policy", "check"],
        &["policy", "compile"],
        &["policy", "explain"],
        &["policy", "apply"],
        &["policy", "sync"],
        &["demo"],
    ] {
        let mut args = cmd.to_vec();
        args.push("--help");
        let help = ok(&palisade(&args, tmp.path()));
        assert!(
            help.contains("Example"),
            "{cmd:?} --help has no example:\n{help}"
        );
    }
}
