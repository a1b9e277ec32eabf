//! A sidecar whose inbound admission comes from the segmentation policy instead of an allow-list:
//! the same file that compiles to each host's nftables table decides which SPIFFE IDs get in, and
//! a changed policy is picked up without a restart.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{have, spawn_app, wait_until, Pki, SidecarProcess};

const POLICY: &str = "\
version: 1
trust_domain: example.org
segments:
  frontend:
    identities: [spiffe://example.org/ns/shop/sa/frontend]
  payments:
    identities: [spiffe://example.org/ns/shop/sa/payments]
  guests:
    identities: [\"spiffe://example.org/ns/guest/**\"]
rules:
  - name: frontend-to-payments
    from: frontend
    to: payments
    protocol: tcp
    ports: [7443]
";

const GUESTS_TOO: &str = "
  - name: guests-to-payments
    from: guests
    to: payments
    protocol: tcp
    ports: [7000-7999]
";

fn curl_as(pki: &Pki, client: &str, port: u16) -> bool {
    let dir = pki.path().join(client);
    Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
        ])
        .arg("--resolve")
        .arg(format!("payments.test:{port}:127.0.0.1"))
        .arg("--cert")
        .arg(dir.join("cert.pem"))
        .arg("--key")
        .arg(dir.join("key.pem"))
        .arg("--cacert")
        .arg(pki.path().join("ca/bundle.pem"))
        .arg(format!("https://payments.test:{port}/"))
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout == b"200")
}

fn replace(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn admission_follows_the_policy_file_and_its_changes() {
    if !have("curl") {
        return;
    }
    let pki = Pki::new();
    pki.issue(
        "payments",
        "ns/shop/sa/payments",
        &["--dns", "payments.test"],
    );
    pki.issue("frontend", "ns/shop/sa/frontend", &[]);
    pki.issue("scanner", "ns/guest/sa/scanner", &[]);
    let policy = pki.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let app = spawn_app(common::http_ok);
    let config = format!(
        "{}inbound:\n  - name: api\n    listen: 127.0.0.1:0\n    forward_to: {app}\n    policy: {{ file: policy.yaml, port: 7443 }}\nadmin: {{ listen: 127.0.0.1:0 }}\n",
        pki.identity_yaml("payments")
    );
    let sidecar = SidecarProcess::start(pki.path(), "payments.yaml", &config, &["api"]);
    let port = sidecar.addr("api").port();

    assert!(curl_as(&pki, "frontend", port), "{}", sidecar.log_text());
    assert!(
        !curl_as(&pki, "scanner", port),
        "guests are not admitted yet"
    );
    assert_eq!(
        sidecar.metric(
            "palisade_sidecar_connections_refused_total",
            &[("reason", "not_admitted")]
        ),
        1.0
    );

    // The policy now lets guests in: the sidecar picks it up without a restart.
    replace(&policy, &format!("{POLICY}{GUESTS_TOO}"));
    assert!(
        wait_until(Duration::from_secs(5), || curl_as(&pki, "scanner", port)),
        "the changed policy was not applied:\n{}",
        sidecar.log_text()
    );
    assert!(curl_as(&pki, "frontend", port));

    // A broken policy is refused and the last good one stays in force.
    let failures =
        |s: &SidecarProcess| s.metric("palisade_sidecar_reloads_total", &[("result", "failure")]);
    replace(&policy, "version: 1\nsegments: [not, a, mapping]\n");
    assert!(wait_until(Duration::from_secs(5), || failures(&sidecar) >= 1.0));
    assert!(
        curl_as(&pki, "scanner", port),
        "the last good policy still admits guests"
    );
    assert!(curl_as(&pki, "frontend", port));
    assert!(
        sidecar.log_text().contains("policy.yaml:"),
        "the log names the file and position"
    );
}

#[test]
fn a_listener_needs_either_an_allow_list_or_a_policy() {
    let pki = Pki::new();
    let both = format!(
        "{}inbound:\n  - name: api\n    listen: 127.0.0.1:0\n    forward_to: 127.0.0.1:1\n    allow: [spiffe://example.org/x]\n    policy: {{ file: p.yaml, port: 1 }}\n",
        pki.identity_yaml("x")
    );
    std::fs::write(pki.path().join("both.yaml"), both).unwrap();
    let out = common::palisade(&["sidecar", "run", "--config", "both.yaml"], pki.path());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("either allow or policy"));
}
