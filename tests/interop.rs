//! Interop (issue 14): the keys and certificates Palisade writes work in the stacks users run, for
//! each key type, with the files exactly as `cert issue` writes them — OpenSSL (`pkey`, `verify`,
//! `s_server`, `s_client`), curl, Python's `ssl`, py-spiffe — and X.509-SVIDs made by another tool
//! (Python `cryptography`) are accepted by the validator and the sidecar, or refused for a defect.
//!
//! Python runs from `target/interop-venv` (py-spiffe and cryptography from PyPI), which
//! `scripts/test` makes; `tests/interop/svid_tool.py` does the Python side.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{curl_as, have, palisade, spawn_app, wait_until, Pki, SidecarProcess, TD};

const KEY_TYPES: [&str; 2] = ["ecdsa-p256", "ed25519"];
const FRONTEND: &str = "ns/shop/sa/frontend";
const PAYMENTS: &str = "ns/shop/sa/payments";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The virtual environment's python, or None (the test then skips, or fails under strict).
fn python() -> Option<PathBuf> {
    let python = root().join("target/interop-venv/bin/python");
    let ready = Command::new(&python)
        .args(["-c", "import spiffe, cryptography"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ready {
        Some(python)
    } else {
        common::skipping("target/interop-venv with py-spiffe is missing (scripts/test makes it)");
        None
    }
}

fn tool(python: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(python);
    cmd.arg(root().join("tests/interop/svid_tool.py"))
        .args(args);
    common::run_bounded(&mut cmd, b"", Duration::from_secs(30)).0
}

/// A PKI of `key_type` with the frontend and payments workloads issued with that key type.
fn pki(key_type: &str) -> Pki {
    let pki = Pki::with_key_type(key_type);
    for (name, path) in [("frontend", FRONTEND), ("payments", PAYMENTS)] {
        pki.issue(
            name,
            path,
            &["--key-type", key_type, "--dns", "payments.test"],
        );
    }
    pki
}

fn id(path: &str) -> String {
    format!("spiffe://{TD}/{path}")
}

/// A payments sidecar: inbound `api` admitting the frontend (or `allow`), to an HTTP app.
fn payments_sidecar(pki: &Pki, bundle: &Path, allow: &str) -> SidecarProcess {
    let app = spawn_app(common::http_ok);
    let d = pki.path().join("payments");
    let config = format!(
        "identity:\n  cert: {}\n  key: {}\n  bundle: {}\ninbound:\n  - name: api\n    listen: 127.0.0.1:0\n    forward_to: {app}\n    allow: [\"{allow}\"]\nadmin: {{ listen: 127.0.0.1:0 }}\n",
        d.join("cert.pem").display(),
        d.join("key.pem").display(),
        bundle.display(),
    );
    SidecarProcess::start(pki.path(), "payments.yaml", &config, &["api"])
}

#[test]
fn openssl_python_and_py_spiffe_load_what_cert_issue_writes() {
    assert!(have("openssl"));
    let Some(python) = python() else { return };
    for key_type in KEY_TYPES {
        let pki = pki(key_type);
        let dir = pki.path().join("frontend");
        for key in [dir.join("key.pem"), pki.path().join("ca/ca-key.pem")] {
            let out = Command::new("openssl")
                .args(["pkey", "-noout", "-in"])
                .arg(&key)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{key_type}: openssl pkey {}: {}",
                key.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let out = Command::new("openssl")
            .args(["verify", "-CAfile"])
            .arg(dir.join("bundle.pem"))
            .arg(dir.join("cert.pem"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{key_type}: openssl verify");
        let out = tool(
            &python,
            &[
                "load",
                dir.join("cert.pem").to_str().unwrap(),
                dir.join("key.pem").to_str().unwrap(),
                dir.join("bundle.pem").to_str().unwrap(),
                TD,
            ],
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("{} 1", id(FRONTEND)),
            "{key_type}: py-spiffe: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn curl_openssl_and_python_clients_with_our_svids_are_admitted_inbound() {
    assert!(have("openssl") && have("curl"));
    let Some(python) = python() else { return };
    for key_type in KEY_TYPES {
        let pki = pki(key_type);
        let bundle = pki.path().join("ca/bundle.pem");
        let sidecar = payments_sidecar(&pki, &bundle, &id(FRONTEND));
        let port = sidecar.addr("api").port();
        assert!(curl_as(&pki, "frontend", port), "{key_type}: curl");

        let dir = pki.path().join("frontend");
        let mut s_client = Command::new("openssl");
        s_client
            .args([
                "s_client",
                "-quiet",
                "-connect",
                &format!("127.0.0.1:{port}"),
            ])
            .arg("-cert")
            .arg(dir.join("cert.pem"))
            .arg("-key")
            .arg(dir.join("key.pem"))
            .arg("-CAfile")
            .arg(&bundle)
            .args(["-verify_return_error", "-ign_eof"]);
        let (out, _) = common::run_bounded(
            &mut s_client,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Duration::from_secs(10),
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).starts_with("HTTP/1.1 200"),
            "{key_type}: openssl s_client: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        let out = tool(
            &python,
            &[
                "get",
                &port.to_string(),
                dir.join("cert.pem").to_str().unwrap(),
                dir.join("key.pem").to_str().unwrap(),
                bundle.to_str().unwrap(),
            ],
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "HTTP/1.1 200 OK",
            "{key_type}: python ssl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Kills the server when the test ends, however it ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn openssl_s_server_with_our_svid_is_reached_through_an_outbound_listener() {
    assert!(have("openssl"));
    for key_type in KEY_TYPES {
        let pki = pki(key_type);
        let dir = pki.path().join("payments");
        // s_server cannot listen on port 0 and say which port it got: take a free one.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = Command::new("openssl")
            .args(["s_server", "-quiet", "-rev", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(dir.join("cert.pem"))
            .arg("-key")
            .arg(dir.join("key.pem"))
            .arg("-CAfile")
            .arg(dir.join("bundle.pem"))
            .args(["-Verify", "1", "-verify_return_error"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let _server = KillOnDrop(server);
        assert!(wait_until(Duration::from_secs(5), || TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()));
        let config = format!(
            "{}outbound:\n  - name: to-payments\n    listen: 127.0.0.1:0\n    connect_to: 127.0.0.1:{port}\n    expect: [\"{}\"]\nadmin: {{ listen: 127.0.0.1:0 }}\n",
            pki.identity_yaml("frontend"),
            id(PAYMENTS)
        );
        let sidecar = SidecarProcess::start(pki.path(), "frontend.yaml", &config, &["to-payments"]);
        let mut app = TcpStream::connect(sidecar.addr("to-payments")).unwrap();
        app.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        app.write_all(b"palisade\n").unwrap();
        let mut line = String::new();
        BufReader::new(&app).read_line(&mut line).unwrap();
        assert_eq!(
            line.trim(),
            "edasilap",
            "{key_type}: s_server's reply through the sidecar:\n{}",
            sidecar.log_text()
        );
    }
}

#[test]
fn svids_made_by_another_tool_are_accepted_and_their_defects_refused() {
    assert!(have("curl"));
    let Some(python) = python() else { return };
    for (key_type, ours) in [("p256", "ecdsa-p256"), ("ed25519", "ed25519")] {
        let pki = pki(ours);
        let cases = [
            (None, "valid X.509-SVID", true),
            (Some("ca-leaf"), "CA:true", false),
            (Some("two-uris"), "2 URI SANs", false),
            (Some("ku-not-critical"), "not marked critical", false),
            (
                Some("no-digital-signature"),
                "lacks digitalSignature",
                false,
            ),
        ];
        for (defect, says, admitted) in cases {
            let name = format!("other-{}", defect.unwrap_or("good"));
            let dir = pki.path().join(&name);
            std::fs::create_dir_all(&dir).unwrap();
            let mut args = vec![
                "make",
                dir.to_str().unwrap(),
                key_type,
                "spiffe://example.org/ns/shop/sa/frontend",
            ];
            args.extend(defect);
            let out = tool(&python, &args);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );

            // The validator, through `cert inspect`.
            let out = palisade(
                &[
                    "cert",
                    "inspect",
                    dir.join("cert.pem").to_str().unwrap(),
                    "--bundle",
                    dir.join("ca.pem").to_str().unwrap(),
                ],
                pki.path(),
            );
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(out.status.success(), admitted, "{key_type} {name}: {text}");
            assert!(text.contains(says), "{key_type} {name}: {text}");

            // The sidecar, trusting our root and the other tool's (one trust domain, two roots).
            let bundle = pki.path().join(format!("{name}-bundle.pem"));
            let both = [
                std::fs::read(pki.path().join("ca/bundle.pem")).unwrap(),
                std::fs::read(dir.join("ca.pem")).unwrap(),
            ]
            .concat();
            std::fs::write(&bundle, both).unwrap();
            let sidecar = payments_sidecar(&pki, &bundle, &id(FRONTEND));
            let got = Command::new("curl")
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--max-time",
                    "5",
                    "-k",
                ])
                .arg("--cert")
                .arg(dir.join("cert.pem"))
                .arg("--key")
                .arg(dir.join("key.pem"))
                .arg(format!("https://127.0.0.1:{}/", sidecar.addr("api").port()))
                .output()
                .unwrap();
            assert_eq!(
                got.stdout == b"200",
                admitted,
                "{key_type} {name}: sidecar\n{}",
                sidecar.log_text()
            );
        }
    }
}
