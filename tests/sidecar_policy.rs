//! A sidecar whose inbound admission comes from the segmentation policy instead of an allow-list:
//! the same file that compiles to each host's nftables table decides which SPIFFE IDs get in, and
//! a changed policy is picked up without a restart.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{curl_as, have, spawn_app, wait_until, Pki, Rng, SidecarProcess};

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

/// The payments sidecar: inbound `api` admitting by `policy.yaml` for port 7443, to an HTTP app.
fn payments_by_policy(pki: &Pki) -> SidecarProcess {
    let app = spawn_app(common::http_ok);
    let config = format!(
        "{}inbound:\n  - name: api\n    listen: 127.0.0.1:0\n    forward_to: {app}\n    policy: {{ file: policy.yaml, port: 7443 }}\nadmin: {{ listen: 127.0.0.1:0 }}\n",
        pki.identity_yaml("payments")
    );
    SidecarProcess::start(pki.path(), "payments.yaml", &config, &["api"])
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
    let sidecar = payments_by_policy(&pki);
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
        sidecar.logged("policy.yaml:"),
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
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("give one of allow, policy and network_policy, not several"));
}

/// Review finding 1, as reproduced: an ID in `frontend` (allowed to payments) and in `ops` (denied)
/// was admitted by the sidecar while `policy explain` denied it.
#[test]
fn an_identity_in_an_allowed_and_a_denied_segment_is_refused() {
    assert!(have("curl"), "curl is required (scripts/test installs it)");
    let pki = Pki::new();
    pki.issue(
        "payments",
        "ns/shop/sa/payments",
        &["--dns", "payments.test"],
    );
    pki.issue("frontend", "ns/shop/sa/frontend", &[]);
    pki.issue("ops-frontend", "ns/ops/sa/frontend", &[]);
    std::fs::write(
        pki.path().join("policy.yaml"),
        "version: 1
trust_domain: example.org
segments:
  frontend: { identities: [\"spiffe://example.org/ns/*/sa/frontend\"] }
  ops: { identities: [\"spiffe://example.org/ns/ops/**\"] }
  payments: { identities: [spiffe://example.org/ns/shop/sa/payments] }
rules:
  - { name: web, from: frontend, to: payments, protocol: tcp, ports: [7443] }
  - { name: no-ops, from: ops, to: payments, action: deny }
",
    )
    .unwrap();
    let sidecar = payments_by_policy(&pki);
    let port = sidecar.addr("api").port();
    assert!(curl_as(&pki, "frontend", port), "{}", sidecar.log_text());
    assert!(
        !curl_as(&pki, "ops-frontend", port),
        "explain denies it by rule no-ops"
    );
    let out = common::palisade(
        &[
            "policy",
            "explain",
            "policy.yaml",
            "--from",
            "spiffe://example.org/ns/ops/sa/frontend",
            "--to",
            "spiffe://example.org/ns/shop/sa/payments",
            "--port",
            "7443",
        ],
        pki.path(),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("denied by rule `no-ops`"));
}

/// The workloads of the generated cases: (certificate directory, SPIFFE ID path).
const WORKLOADS: &[(&str, &str)] = &[
    ("shop-frontend", "ns/shop/sa/frontend"),
    ("shop-payments", "ns/shop/sa/payments"),
    ("shop-ledger", "ns/shop/sa/ledger"),
    ("ops-frontend", "ns/ops/sa/frontend"),
    ("ops-ops", "ns/ops/sa/ops"),
    ("guest-scanner", "ns/guest/sa/scanner"),
    ("guest-frontend", "ns/guest/sa/frontend"),
    ("batch", "batch/nightly"),
];

/// Patterns that overlap one another in many ways.
const PATTERNS: &[&str] = &[
    "spiffe://example.org/ns/shop/sa/frontend",
    "spiffe://example.org/ns/shop/sa/payments",
    "spiffe://example.org/ns/ops/sa/ops",
    "spiffe://example.org/ns/*/sa/frontend",
    "spiffe://example.org/ns/*/sa/payments",
    "spiffe://example.org/ns/shop/sa/*",
    "spiffe://example.org/ns/ops/**",
    "spiffe://example.org/ns/shop/**",
    "spiffe://example.org/ns/guest/**",
    "spiffe://example.org/ns/*/sa/*",
    "spiffe://example.org/batch/*",
    "spiffe://example.org/**",
];

const PORTS: [u16; 3] = [7001, 7002, 7003];

fn generated_policy(rng: &mut Rng) -> String {
    let segments = 3 + rng.below(3);
    let mut text = String::from("version: 1\ntrust_domain: example.org\nsegments:\n");
    for s in 0..segments {
        let mut patterns: Vec<&str> = Vec::new();
        for _ in 0..1 + rng.below(2) {
            let p = *rng.pick(PATTERNS);
            if !patterns.contains(&p) {
                patterns.push(p);
            }
        }
        let quoted: Vec<String> = patterns.iter().map(|p| format!("\"{p}\"")).collect();
        text.push_str(&format!(
            "  s{s}: {{ identities: [{}] }}\n",
            quoted.join(", ")
        ));
    }
    text.push_str("rules:\n");
    let end = |rng: &mut Rng| {
        if rng.below(6) == 0 {
            "outside".to_owned()
        } else {
            format!("s{}", rng.below(segments))
        }
    };
    for r in 0..2 + rng.below(5) {
        let action = if rng.below(3) == 0 { "deny" } else { "allow" };
        let (from, to) = (end(rng), end(rng));
        let traffic = match rng.below(5) {
            0 => "protocol: any".to_owned(),
            1 => "protocol: udp, ports: [7001-7003]".to_owned(),
            2 => "protocol: tcp".to_owned(),
            3 => format!("protocol: tcp, ports: [{}]", rng.pick(&PORTS)),
            _ => format!(
                "protocol: tcp, ports: [{}, {}]",
                rng.pick(&PORTS),
                rng.pick(&["7002-7003", "7000-7001", "9000"])
            ),
        };
        text.push_str(&format!(
            "  - {{ name: r{r}, from: {from}, to: {to}, action: {action}, {traffic} }}\n"
        ));
    }
    text
}

/// Review finding 1, generally: for generated policies whose segments' identity patterns overlap,
/// with deny rules and several ports, the real sidecar admits a peer exactly when `explain`
/// allows it, for every (policy, port, own ID, peer ID).
#[test]
fn sidecar_admission_equals_explain_over_generated_policies() {
    assert!(have("curl"), "curl is required (scripts/test installs it)");
    let mut rng = Rng::from_env(0x5eed_2026_1205);
    let pki = Pki::new();
    for (dir, path) in WORKLOADS {
        pki.issue(dir, path, &["--dns", "payments.test"]);
    }
    const POLICIES: usize = 6;
    let mut policies = Vec::new();
    for k in 0..POLICIES {
        let text = generated_policy(&mut rng);
        let file = pki.path().join(format!("p{k}.yaml"));
        std::fs::write(&file, &text).unwrap();
        let policy = palisade_policy::load_str(&text, &file)
            .unwrap_or_else(|e| panic!("generated policy does not load: {e}\n{text}"));
        policies.push((text, policy));
    }
    let app = spawn_app(common::http_ok);
    let (mut checked, mut admitted, mut mismatches) = (0, 0, Vec::new());
    // Three workloads take the sidecar's place: one in few segments, two in many.
    for own in ["shop-payments", "ops-ops", "guest-frontend"] {
        let mut listeners = String::new();
        let mut names = Vec::new();
        for k in 0..POLICIES {
            for port in PORTS {
                let name = format!("p{k}-{port}");
                listeners.push_str(&format!(
                    "  - name: {name}\n    listen: 127.0.0.1:0\n    forward_to: {app}\n    policy: {{ file: p{k}.yaml, port: {port} }}\n"
                ));
                names.push(name);
            }
        }
        let config = format!(
            "{}inbound:\n{listeners}admin: {{ listen: 127.0.0.1:0 }}\n",
            pki.identity_yaml(own)
        );
        let names_ref: Vec<&str> = names.iter().map(String::as_str).collect();
        let sidecar =
            SidecarProcess::start(pki.path(), &format!("{own}.yaml"), &config, &names_ref);
        let own_path = WORKLOADS.iter().find(|(d, _)| *d == own).unwrap().1;
        let own_id =
            palisade_identity::SpiffeId::parse(&format!("spiffe://example.org/{own_path}"))
                .unwrap();
        for (k, (text, policy)) in policies.iter().enumerate() {
            for port in PORTS {
                let listener_port = sidecar.addr(&format!("p{k}-{port}")).port();
                for (peer_dir, peer_path) in WORKLOADS {
                    let peer_id = palisade_identity::SpiffeId::parse(&format!(
                        "spiffe://example.org/{peer_path}"
                    ))
                    .unwrap();
                    let decision = palisade_policy::decide(
                        policy,
                        &palisade_policy::Endpoint::Identity(peer_id.clone()),
                        &palisade_policy::Endpoint::Identity(own_id.clone()),
                        palisade_policy::Protocol::Tcp,
                        Some(port),
                    );
                    let got = curl_as(&pki, peer_dir, listener_port);
                    checked += 1;
                    admitted += usize::from(got);
                    if got != decision.allowed {
                        mismatches.push(format!(
                            "{peer_id} -> {own_id} port {port}: sidecar {}, explain {decision}\n{text}",
                            if got { "admitted" } else { "refused" }
                        ));
                    }
                }
            }
        }
    }
    println!("{checked} cases, {admitted} admitted");
    assert!(
        mismatches.is_empty(),
        "{} of {checked} cases disagree; first:\n{}",
        mismatches.len(),
        mismatches[0]
    );
    // A generator that admits nobody (or everybody) would prove little.
    assert!(
        admitted > checked / 10 && admitted < checked * 9 / 10,
        "{admitted} of {checked} admitted"
    );
}

fn issue_with_ttl(pki: &Pki, ttl: &str) {
    pki.issue(
        "payments",
        "ns/shop/sa/payments",
        &["--dns", "payments.test", "--ttl", ttl],
    );
}

/// Review finding 2: a policy file that does not load, or is missing, keeps the last good
/// admission and never holds up a certificate rotation; the two are counted apart.
#[test]
fn a_bad_or_missing_policy_does_not_hold_up_a_certificate_rotation() {
    assert!(have("curl"), "curl is required (scripts/test installs it)");
    let pki = Pki::new();
    issue_with_ttl(&pki, "1h");
    pki.issue("frontend", "ns/shop/sa/frontend", &[]);
    pki.issue("scanner", "ns/guest/sa/scanner", &[]);
    let policy = pki.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let sidecar = payments_by_policy(&pki);
    let port = sidecar.addr("api").port();
    let expiry =
        |s: &SidecarProcess| s.metric("palisade_sidecar_certificate_expiry_timestamp_seconds", &[]);
    let reloads = |s: &SidecarProcess, files: &str, result: &str| {
        s.metric(
            "palisade_sidecar_reloads_total",
            &[("files", files), ("result", result)],
        )
    };
    assert!(curl_as(&pki, "frontend", port));
    let first = expiry(&sidecar);

    // A policy that does not load, then a rotation: the new certificate is used.
    replace(&policy, "version: 1\nsegments: [not, a, mapping]\n");
    assert!(wait_until(Duration::from_secs(5), || reloads(
        &sidecar, "policy", "failure"
    ) >= 1.0));
    issue_with_ttl(&pki, "2h");
    assert!(
        wait_until(Duration::from_secs(5), || expiry(&sidecar) > first + 3000.0),
        "the certificate was not rotated under a broken policy:\n{}",
        sidecar.log_text()
    );
    assert!(curl_as(&pki, "frontend", port), "last good policy admits");
    assert!(!curl_as(&pki, "scanner", port), "and still refuses");

    // The policy file is gone: the next rotation goes through as well.
    std::fs::remove_file(&policy).unwrap();
    let second = expiry(&sidecar);
    issue_with_ttl(&pki, "3h");
    assert!(
        wait_until(Duration::from_secs(5), || expiry(&sidecar)
            > second + 3000.0),
        "the certificate was not rotated with the policy missing:\n{}",
        sidecar.log_text()
    );
    assert!(curl_as(&pki, "frontend", port));
    assert!(reloads(&sidecar, "policy", "failure") >= 2.0);
    assert_eq!(reloads(&sidecar, "identity", "failure"), 0.0);
    assert!(reloads(&sidecar, "identity", "success") >= 3.0);
    assert_eq!(sidecar.admin_get("/ready").0, 200);
}

/// A sidecar whose policy file is missing at start loads its certificate, refuses everyone on
/// that listener and is not ready; once the policy appears it is.
#[test]
fn a_policy_missing_at_start_leaves_the_sidecar_not_ready_until_it_appears() {
    assert!(have("curl"), "curl is required (scripts/test installs it)");
    let pki = Pki::new();
    issue_with_ttl(&pki, "1h");
    pki.issue("frontend", "ns/shop/sa/frontend", &[]);
    let sidecar = payments_by_policy(&pki);
    let port = sidecar.addr("api").port();
    let (status, body) = sidecar.admin_get("/ready");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no policy loaded"), "{body}");
    assert!(
        sidecar.metric("palisade_sidecar_certificate_expiry_timestamp_seconds", &[]) > 0.0,
        "the certificate loads without the policy"
    );
    assert!(!curl_as(&pki, "frontend", port), "no policy admits nobody");
    replace(&pki.path().join("policy.yaml"), POLICY);
    assert!(wait_until(Duration::from_secs(5), || sidecar
        .admin_get("/ready")
        .0
        == 200));
    assert!(curl_as(&pki, "frontend", port));
}
