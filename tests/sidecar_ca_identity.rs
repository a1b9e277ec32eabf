//! A sidecar that gets its identity from `palisade ca serve` (`identity.ca`), end to end with the
//! real binary: started before its CA, it is not ready and refuses inbound mTLS, keeps trying,
//! and is ready within seconds of the CA coming up, with its key in memory only. A configuration
//! naming both identity sources is refused at start.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const SERVER_ID: &str = "spiffe://example.org/palisade/ca";
const REFUSED: &str = "palisade_sidecar_connections_refused_total";
const RENEWALS: &str = "palisade_sidecar_identity_renewals_total";

/// One request through the frontend's outbound listener: Ok when the app's answer came back.
fn through(addr: SocketAddr) -> Result<(), String> {
    match try_http_request(addr, "GET", "/")? {
        (200, body) if body == "hello from the app\n" => Ok(()),
        (status, body) => Err(format!("status {status}, body {body:?}")),
    }
}

/// Every file under `dir`, relative to it, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path.clone());
            }
            found.push(
                path.strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    found.sort();
    found
}

#[test]
fn a_sidecar_started_before_its_ca_is_not_ready_then_ready_within_seconds_with_the_key_in_memory() {
    let ca = TwoLevelCa::new();
    let listen = format!("127.0.0.1:{}", free_port());
    // The sidecar's own directory: its configuration and its join token, nothing else.
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("payments.token"),
        ca.token("ns/shop/sa/payments", "10m"),
    )
    .unwrap();
    let app = spawn_app(http_ok);
    let mut payments = SidecarProcess::start(
        home.path(),
        "payments.yaml",
        &format!(
            "identity:\n  ca:\n    url: https://{listen}\n    server_id: {SERVER_ID}\n    bundle: {}\n    join_token_file: payments.token\n    spiffe_id: spiffe://example.org/ns/shop/sa/payments\ninbound:\n  - name: api\n    listen: 127.0.0.1:0\n    forward_to: {app}\n    allow: [spiffe://example.org/ns/shop/sa/frontend]\nadmin:\n  listen: 127.0.0.1:0\n",
            ca.bundle().display()
        ),
        &["api"],
    );
    // A client sidecar with its certificate from files, issued by the same issuer.
    let frontend_dir = ca.path().join("frontend");
    ok(palisade(
        &[
            "cert",
            "issue",
            "--ca-dir",
            "issuer",
            "--spiffe-id",
            "spiffe://example.org/ns/shop/sa/frontend",
            "--svid-dir",
            "frontend",
        ],
        ca.path(),
    ));
    let frontend = SidecarProcess::start(
        ca.path(),
        "frontend.yaml",
        &format!(
            "identity:\n  cert: {}\n  key: {}\n  bundle: {}\noutbound:\n  - name: to-api\n    listen: 127.0.0.1:0\n    connect_to: {}\n    expect: [spiffe://example.org/ns/shop/sa/payments]\nadmin:\n  listen: 127.0.0.1:0\n",
            frontend_dir.join("cert.pem").display(),
            frontend_dir.join("key.pem").display(),
            frontend_dir.join("bundle.pem").display(),
            payments.addr("api"),
        ),
        &["to-api"],
    );
    assert!(
        wait_until(Duration::from_secs(10), || frontend.admin_get("/ready").0
            == 200),
        "the frontend did not load its files:\n{}",
        frontend.log_text()
    );
    let to_api = frontend.addr("to-api");

    // No CA yet: not ready, and an mTLS client is turned away.
    assert_eq!(payments.admin_get("/live").0, 200);
    let (status, body) = payments.admin_get("/ready");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no valid certificate"), "{body}");
    let refused = through(to_api);
    assert!(
        refused.is_err(),
        "a request got through before payments had a certificate"
    );
    assert!(
        wait_until(Duration::from_secs(5), || payments.metric(
            REFUSED,
            &[("listener", "api"), ("reason", "no_certificate_loaded")]
        ) >= 1.0),
        "no inbound refusal counted:\n{}",
        payments.log_text()
    );
    // It keeps trying, and counts each failure (the metrics follow the renewer once a second).
    assert!(
        wait_until(Duration::from_secs(5), || payments
            .metric(RENEWALS, &[("result", "failure")])
            > 0.0),
        "no failed attempt counted with the CA down:\n{}",
        payments.log_text()
    );
    assert_eq!(payments.admin_get("/ready").0, 503);
    assert_eq!(payments.child.try_wait().unwrap(), None, "it must stay up");

    // The CA comes up where the sidecar looks for it.
    let server = CaProcess::start_on(&ca.issuer(), &listen, &[]);
    let ca_up = Instant::now();
    assert!(
        wait_until(Duration::from_secs(15), || payments.admin_get("/ready").0
            == 200),
        "not ready 15 s after the CA started:\n{}",
        payments.log_text()
    );
    let ready_after = ca_up.elapsed();
    // Backoff after the failures is at most a few seconds.
    assert!(
        ready_after < Duration::from_secs(8),
        "ready only {ready_after:?} after the CA started"
    );
    let issued = server.expect_audit("issued", None);
    assert_eq!(issued["credential"], "join_token");
    assert_eq!(
        issued["spiffe_id"],
        "spiffe://example.org/ns/shop/sa/payments"
    );

    // mTLS to it works now, with the identity from the CA.
    let mut last = Err(String::new());
    assert!(
        wait_until(Duration::from_secs(5), || {
            last = through(to_api);
            last.is_ok()
        }),
        "requests still fail once payments is ready: {last:?}\npayments:\n{}\nfrontend:\n{}",
        payments.log_text(),
        frontend.log_text()
    );
    assert!(
        wait_until(Duration::from_secs(5), || payments
            .metric(RENEWALS, &[("result", "success")])
            >= 1.0),
        "the success was not counted"
    );
    let failures = payments.metric(RENEWALS, &[("result", "failure")]);
    assert!(failures > 0.0, "the failures while the CA was down count");
    assert_eq!(
        payments.metric("palisade_sidecar_identity_renewal_failures_in_a_row", &[]),
        0.0
    );
    assert!(payments.metric("palisade_sidecar_certificate_expiry_timestamp_seconds", &[]) > 0.0);

    // The key stayed in memory: the sidecar's directory holds what the test put there.
    assert_eq!(
        files_under(home.path()),
        ["payments.token", "payments.yaml"],
        "the sidecar wrote to its directory"
    );
    println!(
        "sidecar: ready {ready_after:?} after the CA started, {failures} failed attempts before"
    );
}

#[test]
fn a_config_with_both_identity_ca_and_identity_cert_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("both.yaml");
    std::fs::write(
        &config,
        format!(
            "identity:\n  cert: cert.pem\n  ca:\n    url: https://127.0.0.1:{}\n    server_id: {SERVER_ID}\n    bundle: bundle.pem\n    join_token_file: token\noutbound:\n  - name: out\n    listen: 127.0.0.1:0\n    connect_to: 127.0.0.1:9\n    expect: [spiffe://example.org/x]\n",
            free_port()
        ),
    )
    .unwrap();
    let (output, timed_out) = run_bounded(
        Command::new(BIN)
            .args(["sidecar", "run", "--config"])
            .arg(&config),
        b"",
        Duration::from_secs(10),
    );
    assert!(!timed_out, "the sidecar started with both identity sources");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "exit 0 with both identity sources"
    );
    assert!(
        stderr.contains("give either ca or the files cert, key and bundle, not both"),
        "{stderr}"
    );
    assert!(stderr.contains("both.yaml"), "names the file: {stderr}");
    assert!(
        output.stdout.is_empty(),
        "it listened: {}",
        String::from_utf8_lossy(&output.stdout)
    );
}
