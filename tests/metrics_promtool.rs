//! Every service's `/metrics` as Prometheus reads it: `promtool check metrics` (Debian's
//! prometheus package) passes on the Prometheus text format, which is what a scraper gets when it
//! does not ask for OpenMetrics; a scraper that asks for OpenMetrics (as Prometheus does) gets it,
//! ending with `# EOF`; and every endpoint names the binary in `palisade_build_info`. The
//! sidecar, `ca serve`, `cert renew --watch` and `inject serve` run here as the real binary; `policy sync` runs in
//! a network namespace of its own (it writes nftables). Every metric the alerting rules and the
//! dashboard of examples/monitoring/ name is among what the services expose.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// What Prometheus 2.x sends.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// `curl` of `http://<admin>/metrics` with `accept`, run by `prefix` (e.g. `ip netns exec ns`):
/// the Content-Type and the body.
fn scrape(prefix: &[&str], admin: SocketAddr, accept: &str) -> (String, String) {
    let url = format!("http://{admin}/metrics");
    let header = format!("Accept: {accept}");
    let mut args: Vec<&str> = prefix.to_vec();
    args.extend([
        "curl",
        "-s",
        "--max-time",
        "5",
        "-H",
        &header,
        "-w",
        "\n%{content_type}",
        &url,
    ]);
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("curl");
    assert!(out.status.success(), "curl {url}: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, content_type) = text.rsplit_once('\n').expect("the content type line");
    (
        content_type.to_owned(),
        format!("{body}\n").replace("\n\n", "\n"),
    )
}

/// The metric names the alerting rules and the dashboard of examples/monitoring/ use.
fn monitoring_names() -> BTreeSet<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/monitoring");
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("alerts.yaml")).unwrap()).unwrap();
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("dashboard.json")).unwrap())
            .unwrap();
    let mut exprs: Vec<String> = Vec::new();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            exprs.push(rule["expr"].as_str().unwrap().to_owned());
        }
    }
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    exprs
        .iter()
        .flat_map(|e| {
            e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("palisade_"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The metric names in a Prometheus text exposition (TYPE lines and samples).
fn exposed_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| match l.strip_prefix("# TYPE ") {
            Some(rest) => rest.split_whitespace().next(),
            None if !l.starts_with('#') => l.split(['{', ' ']).next(),
            None => None,
        })
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Every name the monitoring files use with one of `prefixes` is among `exposed`.
fn assert_monitoring_names_exposed(exposed: &BTreeSet<String>, prefixes: &[&str]) {
    let missing: Vec<String> = monitoring_names()
        .into_iter()
        .filter(|n| prefixes.iter().any(|p| n.starts_with(p)))
        .filter(|n| !exposed.contains(n))
        .collect();
    assert!(
        missing.is_empty(),
        "examples/monitoring names metrics no service exposes: {missing:?}"
    );
}

/// The checks on one endpoint, named `what` in failures; its Prometheus text.
fn check_endpoint(what: &str, prefix: &[&str], admin: SocketAddr) -> String {
    let (content_type, text) = scrape(prefix, admin, "text/plain");
    let prometheus_text = text.clone();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{what}: {content_type}"
    );
    assert!(!text.contains("# EOF"), "{what}: {text}");
    assert!(
        text.contains("palisade_build_info{version=\""),
        "{what}: no build info in:\n{text}"
    );
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    use std::io::Write;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{what}: promtool check metrics failed:\n{}{}\non:\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let (content_type, text) = scrape(prefix, admin, PROMETHEUS_ACCEPT);
    assert!(
        content_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "{what}: {content_type}"
    );
    assert!(text.ends_with("# EOF\n"), "{what}: {text}");
    assert_eq!(text.matches("# EOF").count(), 1, "{what}");
    prometheus_text
}

#[test]
fn the_sidecar_ca_and_renewer_endpoints_pass_promtool_in_both_formats() {
    if !(have("curl") && have("promtool")) {
        return;
    }
    let pki = Pki::new();
    pki.issue("payments", "payments", &[]);
    let app = spawn_app(http_ok);
    let config = format!(
        "{}inbound:\n  - name: api\n    listen: 127.0.0.1:0\n    forward_to: {app}\n    allow: [spiffe://{TD}/frontend]\nadmin:\n  listen: 127.0.0.1:0\nmetrics:\n  listen: 127.0.0.1:0\n",
        pki.identity_yaml("payments"),
    );
    let sidecar = SidecarProcess::start(pki.path(), "payments.yaml", &config, &["api"]);
    // A refused connection (plaintext on an mTLS listener), so that the refusals' family has a
    // sample to show.
    {
        use std::io::{Read, Write};
        let mut plain = std::net::TcpStream::connect(sidecar.addr("api")).unwrap();
        let _ = plain.write_all(b"GET / HTTP/1.1\r\n\r\n");
        let _ = plain.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = plain.read(&mut [0u8; 64]);
    }
    assert!(wait_until(Duration::from_secs(5), || {
        sidecar.metric("palisade_sidecar_connections_refused_total", &[]) >= 1.0
    }));
    let mut exposed = exposed_names(&check_endpoint("sidecar", &[], sidecar.admin));
    // The read-only listener serves the same metrics (and no /shutdown).
    let read_only = sidecar.metrics.expect("the metrics listener's address");
    exposed.extend(exposed_names(&check_endpoint(
        "sidecar's metrics listener",
        &[],
        read_only,
    )));
    let (status, _) = http_request(read_only, "POST", "/shutdown");
    assert_eq!(status, 404);
    assert!(sidecar.admin_get("/live").0 == 200, "still running");

    let ca = TwoLevelCa::new();
    let ca_metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let server = CaProcess::start(&ca.issuer(), &["--metrics", &ca_metrics.to_string()]);
    exposed.extend(exposed_names(&check_endpoint(
        "ca serve",
        &[],
        server.admin,
    )));

    let token = ca.token("ns/shop/sa/web", "5m");
    std::fs::write(ca.path().join("token"), token).unwrap();
    ok(palisade(
        &[
            "cert",
            "request",
            "--ca",
            &server.url(),
            "--bundle",
            ca.bundle().to_str().unwrap(),
            "--token-file",
            "token",
            "--svid-dir",
            "web",
        ],
        ca.path(),
    ));
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let renew_metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut watcher = Command::new(BIN)
        .args([
            "cert",
            "renew",
            "--watch",
            "--ca",
            &server.url(),
            "--svid-dir",
        ])
        .arg(ca.path().join("web"))
        .args(["--admin", &admin.to_string()])
        .args(["--metrics", &renew_metrics.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cert renew --watch");
    let up = wait_until(Duration::from_secs(10), || {
        try_http_request(admin, "GET", "/live").is_ok_and(|(status, _)| status == 200)
    });
    if up {
        exposed.extend(exposed_names(&check_endpoint(
            "cert renew --watch",
            &[],
            admin,
        )));
    }
    let _ = watcher.kill();
    let _ = watcher.wait();
    assert!(up, "cert renew --watch did not serve its admin server");
    // After an issuance, so that the CA's request and issuance families have samples.
    exposed.extend(exposed_names(&check_endpoint(
        "ca serve",
        &[],
        server.admin,
    )));
    // Its read-only listener: the same metrics, /live and /ready for the kubelet, no /shutdown.
    exposed.extend(exposed_names(&check_endpoint(
        "ca serve's metrics listener",
        &[],
        ca_metrics,
    )));
    for path in ["/live", "/ready"] {
        assert_eq!(http_request(ca_metrics, "GET", path).0, 200, "{path}");
    }
    assert_eq!(http_request(ca_metrics, "POST", "/shutdown").0, 404);

    // The admission webhook's read-only listener.
    let pki = Pki::new();
    pki.issue("webhook", "palisade/webhook", &["--dns", "localhost"]);
    let webhook_metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut webhook = Command::new(BIN)
        .args(["inject", "serve", "--listen", "127.0.0.1:0", "--metrics"])
        .arg(webhook_metrics.to_string())
        .args(["--cert", "webhook/cert.pem", "--key", "webhook/key.pem"])
        .current_dir(pki.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("inject serve");
    let up = wait_until(Duration::from_secs(10), || {
        try_http_request(webhook_metrics, "GET", "/ready").is_ok_and(|(status, _)| status == 200)
    });
    if up {
        exposed.extend(exposed_names(&check_endpoint(
            "inject serve",
            &[],
            webhook_metrics,
        )));
    }
    let _ = webhook.kill();
    let _ = webhook.wait();
    assert!(up, "inject serve did not serve its metrics listener");
    assert_monitoring_names_exposed(
        &exposed,
        &[
            "palisade_sidecar_",
            "palisade_ca_",
            "palisade_renew_",
            "palisade_build_info",
        ],
    );
}

#[test]
#[ignore = "needs root: a network namespace for policy sync's nftables"]
fn the_policy_agents_endpoint_passes_promtool_in_both_formats() {
    require_root("a network namespace for policy sync's nftables");
    if !(have("ip") && have("nft") && have("curl") && have("promtool")) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let policy = tmp.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!("version: 1\ntrust_domain: {TD}\nsegments:\n  a: {{ addresses: [10.1.0.0/24] }}\nhosts:\n  h: {{ segments: [a] }}\nrules: []\n"),
    )
    .unwrap();
    let mut netns = Netns::new();
    let ns = netns.add("sync");
    let admin: SocketAddr = "127.0.0.1:15100".parse().unwrap();
    netns.spawn(
        &ns,
        &[
            BIN,
            "policy",
            "sync",
            policy.to_str().unwrap(),
            "--host",
            "h",
            "--admin",
            &admin.to_string(),
            "--metrics",
            "127.0.0.1:15190",
        ],
    );
    let prefix = ["ip", "netns", "exec", ns.as_str()];
    let up = wait_until(Duration::from_secs(10), || {
        Command::new("ip")
            .args(["netns", "exec", &ns, "curl", "-sf", "--max-time", "1"])
            .arg(format!("http://{admin}/ready"))
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    assert!(up, "policy sync did not become ready in its namespace");
    // A policy that does not load, so that the failures' family has a sample to show (the last
    // good table stays).
    std::fs::write(&policy, "version: 1\nsegments: [not, a, mapping]\n").unwrap();
    let failed = wait_until(Duration::from_secs(10), || {
        scrape(&prefix, admin, "text/plain")
            .1
            .contains("palisade_sync_failures_total{")
    });
    assert!(failed, "policy sync did not count the failed load");
    let exposed = exposed_names(&check_endpoint("policy sync", &prefix, admin));
    check_endpoint(
        "policy sync --metrics",
        &prefix,
        "127.0.0.1:15190".parse().unwrap(),
    );
    assert_monitoring_names_exposed(&exposed, &["palisade_sync_"]);
}
