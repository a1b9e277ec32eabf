//! End-to-end tests of the sidecar's identity side: the real `palisade sidecar run`, reached by
//! clients that are not ours (curl, openssl s_client) and by a second sidecar; admission and each
//! refusal reason as /metrics and the log show them; certificate and bundle reloads under a
//! steady request loop (write-then-rename and Kubernetes' `..data` symlink swap); corrupt
//! replacements; readiness; shutdown; configuration errors.
//!
//! Every listener binds port 0, every wait and loop is bounded; tests needing curl or openssl skip
//! when the tool is missing.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{have, http_ok, spawn_app, wait_until, Pki, SidecarProcess, TD};

const REFUSED: &str = "palisade_sidecar_connections_refused_total";
const RELOADS: &str = "palisade_sidecar_reloads_total";
const EXPIRY: &str = "palisade_sidecar_certificate_expiry_timestamp_seconds";
const APP_BODY: &str = "hello from the app\n";

// ---------------------------------------------------------------------------------------------
// helpers

fn id(path: &str) -> String {
    format!("spiffe://{TD}/{path}")
}

/// Waits (up to 5 s) until a metric reaches at least `want`; panics with the log otherwise.
fn wait_metric_at_least(sc: &SidecarProcess, name: &str, labels: &[(&str, &str)], want: f64) {
    let reached = wait_until(Duration::from_secs(5), || sc.metric(name, labels) >= want);
    assert!(
        reached,
        "{name}{labels:?} stayed at {} (< {want})\nlog:\n{}",
        sc.metric(name, labels),
        sc.log_text()
    );
}

/// Runs a command with `input` on stdin, killing it after `limit`.
fn run_bounded(cmd: &mut Command, input: &[u8], limit: Duration) -> Output {
    common::run_bounded(cmd, input, limit).0
}

/// `curl https://payments.test:PORT/` through an inbound listener, verifying the server against
/// the CA and presenting `<client>/cert.pem` if given.
fn curl_mtls(pki: &Pki, client: Option<&str>, addr: SocketAddr) -> Output {
    let port = addr.port();
    let mut cmd = Command::new("curl");
    cmd.current_dir(pki.path()).args([
        "-sS",
        "--max-time",
        "5",
        "--cacert",
        "ca/ca-cert.pem",
        "--resolve",
        &format!("payments.test:{port}:127.0.0.1"),
    ]);
    if let Some(c) = client {
        cmd.args([
            "--cert",
            &format!("{c}/cert.pem"),
            "--key",
            &format!("{c}/key.pem"),
        ]);
    }
    cmd.arg(format!("https://payments.test:{port}/"));
    run_bounded(&mut cmd, b"", Duration::from_secs(10))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_admitted(out: &Output, what: &str) {
    assert!(
        out.status.success() && text(&out.stdout) == APP_BODY,
        "{what} should be admitted: {}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn assert_refused(out: &Output, what: &str) {
    assert!(
        !out.status.success() && !text(&out.stdout).contains("hello"),
        "{what} should be refused: {}\nstdout: {}",
        out.status,
        text(&out.stdout)
    );
}

/// One HTTP request over a new connection; Ok when the app answered 200 with its body.
fn http_get(addr: SocketAddr, path: &str) -> Result<(), String> {
    match common::try_http_request(addr, "GET", path)? {
        (200, body) if body == APP_BODY => Ok(()),
        (status, body) => Err(format!("unexpected response {status} {body:?}")),
    }
}

/// Writes `contents` to a temporary name in `path`'s directory, then renames it over `path`.
fn replace_file(path: &Path, contents: &[u8]) {
    let name = path.file_name().unwrap().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, contents).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename over");
}

/// A symlink made at a temporary name and renamed over `link` (atomic, as kubelet does).
fn replace_symlink(target: &str, link: &Path) {
    let name = link.file_name().unwrap().to_string_lossy();
    let tmp = link.with_file_name(format!("{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).expect("symlink");
    std::fs::rename(&tmp, link).expect("rename symlink over");
}

fn read(path: impl AsRef<Path>) -> Vec<u8> {
    std::fs::read(path.as_ref()).unwrap_or_else(|e| panic!("read {}: {e}", path.as_ref().display()))
}

/// The JSON log lines of a sidecar.
fn log_json(sc: &SidecarProcess) -> Vec<serde_json::Value> {
    sc.log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn inbound_yaml(name: &str, forward_to: SocketAddr, allow: &[&str]) -> String {
    let allow: Vec<String> = allow.iter().map(|a| id(a)).collect();
    format!(
        "  - name: {name}\n    listen: 127.0.0.1:0\n    forward_to: {forward_to}\n    allow: [{}]\n",
        allow.join(", ")
    )
}

fn outbound_yaml(name: &str, connect_to: SocketAddr, expect: &str) -> String {
    format!(
        "  - name: {name}\n    listen: 127.0.0.1:0\n    connect_to: {connect_to}\n    expect: [{}]\n",
        id(expect)
    )
}

const ADMIN: &str = "admin: { listen: 127.0.0.1:0 }\n";

// ---------------------------------------------------------------------------------------------
// 1. inbound mTLS against clients that are not ours

static API_APP_CONNECTIONS: AtomicUsize = AtomicUsize::new(0);

fn counted_http_ok(stream: TcpStream) {
    API_APP_CONNECTIONS.fetch_add(1, Ordering::SeqCst);
    http_ok(stream)
}

#[test]
fn inbound_admits_only_valid_allowed_client_certificates() {
    if !have("curl") || !have("openssl") {
        return;
    }
    let pki = Pki::new();
    // The expired one first, so its second of life runs out while the rest is set up.
    pki.issue("expired", "ns/shop/sa/frontend", &["--ttl", "1s"]);
    let expired_at = Instant::now() + Duration::from_millis(2200);
    pki.issue(
        "payments",
        "ns/shop/sa/payments",
        &["--dns", "payments.test"],
    );
    pki.issue("frontend", "ns/shop/sa/frontend", &[]);
    pki.issue("billing", "ns/shop/sa/billing", &[]);
    pki.issue_from_other_ca("stranger", "ns/shop/sa/frontend");

    let app = spawn_app(counted_http_ok);
    let config = format!(
        "{}inbound:\n{}{ADMIN}",
        pki.identity_yaml("payments"),
        inbound_yaml("api", app, &["ns/shop/sa/frontend"])
    );
    let sc = SidecarProcess::start(pki.path(), "payments.yaml", &config, &["api"]);
    let api = sc.addr("api");
    let refused = |reason| {
        sc.metric(
            REFUSED,
            &[
                ("listener", "api"),
                ("direction", "inbound"),
                ("reason", reason),
            ],
        )
    };
    assert_eq!(sc.admin_get("/ready").0, 200);

    // An allowed certificate from our CA: curl (OpenSSL) completes mTLS, the app answers.
    assert_admitted(&curl_mtls(&pki, Some("frontend"), api), "frontend");
    assert_eq!(API_APP_CONNECTIONS.load(Ordering::SeqCst), 1);

    // No client certificate at all: openssl s_client is refused.
    let mut s_client = Command::new("openssl");
    s_client.current_dir(pki.path()).args([
        "s_client",
        "-connect",
        &api.to_string(),
        "-servername",
        "payments.test",
        "-CAfile",
        "ca/ca-cert.pem",
        "-quiet",
    ]);
    let out = run_bounded(
        &mut s_client,
        b"GET / HTTP/1.1\r\nHost: payments.test\r\n\r\n",
        Duration::from_secs(10),
    );
    assert!(
        !text(&out.stdout).contains("hello"),
        "s_client without a certificate got through: {}",
        text(&out.stdout)
    );
    wait_metric_at_least(
        &sc,
        REFUSED,
        &[("listener", "api"), ("reason", "no_client_certificate")],
        1.0,
    );

    // Another CA of the same trust domain.
    assert_refused(
        &curl_mtls(&pki, Some("stranger"), api),
        "another CA's certificate",
    );
    wait_metric_at_least(
        &sc,
        REFUSED,
        &[("listener", "api"), ("reason", "untrusted")],
        1.0,
    );

    // A valid certificate whose ID is not in `allow`; the log names the ID.
    assert_refused(&curl_mtls(&pki, Some("billing"), api), "billing");
    wait_metric_at_least(
        &sc,
        REFUSED,
        &[("listener", "api"), ("reason", "not_admitted")],
        1.0,
    );
    let billing = id("ns/shop/sa/billing");
    let named = wait_until(Duration::from_secs(5), || {
        log_json(&sc).iter().any(|v| {
            let f = &v["fields"];
            f["reason"] == "not_admitted"
                && f["spiffe_id"] == billing.as_str()
                && f["listener"] == "api"
        })
    });
    assert!(named, "no log line names {billing}:\n{}", sc.log_text());

    // Plaintext HTTP to the mTLS port.
    let mut plain = Command::new("curl");
    plain.args(["-sS", "--max-time", "5", &format!("http://{api}/")]);
    assert_refused(
        &run_bounded(&mut plain, b"", Duration::from_secs(10)),
        "plaintext",
    );
    wait_metric_at_least(
        &sc,
        REFUSED,
        &[("listener", "api"), ("reason", "not_tls")],
        1.0,
    );

    // An expired certificate of an allowed ID.
    if let Some(left) = expired_at.checked_duration_since(Instant::now()) {
        thread::sleep(left);
    }
    assert_refused(
        &curl_mtls(&pki, Some("expired"), api),
        "expired certificate",
    );
    wait_metric_at_least(
        &sc,
        REFUSED,
        &[("listener", "api"), ("reason", "expired")],
        1.0,
    );

    // Each refusal counted once, under its own reason, and none reached the app.
    for reason in [
        "no_client_certificate",
        "untrusted",
        "not_admitted",
        "not_tls",
        "expired",
    ] {
        assert_eq!(refused(reason), 1.0, "{reason}\n{}", sc.metrics());
    }
    assert_eq!(
        API_APP_CONNECTIONS.load(Ordering::SeqCst),
        1,
        "a refused peer reached the app"
    );
    // And the listener still serves the allowed client.
    assert_admitted(&curl_mtls(&pki, Some("frontend"), api), "frontend, again");
}

#[test]
fn allow_list_patterns_match_whole_segments() {
    if !have("curl") {
        return;
    }
    let pki = Pki::new();
    pki.issue(
        "payments",
        "ns/shop/sa/payments",
        &["--dns", "payments.test"],
    );
    // (directory, ID path, admitted by `ns/shop/*`, admitted by `ns/ops/**`)
    let clients = [
        ("shop-one", "ns/shop/frontend", true, false),
        ("shop-two", "ns/shop/sa/frontend", false, false),
        ("shop-bare", "ns/shop", false, false),
        ("ops-one", "ns/ops/metrics", false, true),
        ("ops-deep", "ns/ops/sa/metrics/v2", false, true),
        ("ops-bare", "ns/ops", false, false),
        ("ops-prefix", "ns/opsx/sa/metrics", false, false),
    ];
    for (dir, path, ..) in clients {
        pki.issue(dir, path, &[]);
    }
    let app = spawn_app(http_ok);
    let config = format!(
        "{}inbound:\n{}{}{ADMIN}",
        pki.identity_yaml("payments"),
        inbound_yaml("one", app, &["ns/shop/*"]),
        inbound_yaml("many", app, &["ns/ops/**"]),
    );
    let sc = SidecarProcess::start(pki.path(), "payments.yaml", &config, &["one", "many"]);
    for (listener, column) in [("one", 0), ("many", 1)] {
        let mut refusals = 0.0;
        for (dir, path, one, many) in clients {
            let admitted = [one, many][column];
            let out = curl_mtls(&pki, Some(dir), sc.addr(listener));
            let what = format!("{} on listener {listener}", id(path));
            if admitted {
                assert_admitted(&out, &what);
            } else {
                assert_refused(&out, &what);
                refusals += 1.0;
            }
        }
        wait_metric_at_least(
            &sc,
            REFUSED,
            &[("listener", listener), ("reason", "not_admitted")],
            refusals,
        );
        assert_eq!(
            sc.metric(REFUSED, &[("listener", listener)]),
            refusals,
            "every refusal on {listener} is not_admitted:\n{}",
            sc.metrics()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 2. outbound: a sidecar pair, and a server that is not who the client expects

#[test]
fn outbound_reaches_expected_server_and_refuses_another_id() {
    let pki = Pki::new();
    pki.issue("frontend", "ns/shop/sa/frontend", &[]);
    pki.issue("payments", "ns/shop/sa/payments", &[]);
    pki.issue("billing", "ns/shop/sa/billing", &[]);
    let app = spawn_app(common::echo);
    let server_config = |name: &str| {
        format!(
            "{}inbound:\n{}{ADMIN}",
            pki.identity_yaml(name),
            inbound_yaml("in", app, &["ns/shop/sa/frontend"])
        )
    };
    let payments = SidecarProcess::start(
        pki.path(),
        "payments.yaml",
        &server_config("payments"),
        &["in"],
    );
    let billing = SidecarProcess::start(
        pki.path(),
        "billing.yaml",
        &server_config("billing"),
        &["in"],
    );
    let client_config = format!(
        "{}outbound:\n{}{}{ADMIN}",
        pki.identity_yaml("frontend"),
        outbound_yaml("to-payments", payments.addr("in"), "ns/shop/sa/payments"),
        outbound_yaml("to-impostor", billing.addr("in"), "ns/shop/sa/payments"),
    );
    let frontend = SidecarProcess::start(
        pki.path(),
        "frontend.yaml",
        &client_config,
        &["to-payments", "to-impostor"],
    );

    // Plain TCP in, mTLS between the sidecars, plain TCP to the app and back.
    let mut s =
        TcpStream::connect_timeout(&frontend.addr("to-payments"), Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"ping through the pair\n").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).expect("read the echo");
    assert_eq!(text(&answer), "ping through the pair\n");

    // The server at the other address is billing, not payments: refused on the outbound side,
    // and the app's connection is closed (not left hanging) without a byte of answer.
    let mut s =
        TcpStream::connect_timeout(&frontend.addr("to-impostor"), Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(b"secret for payments only\n");
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("expected the app connection to be closed, got {other:?}"),
    }
    wait_metric_at_least(
        &frontend,
        REFUSED,
        &[
            ("listener", "to-impostor"),
            ("direction", "outbound"),
            ("reason", "not_admitted"),
        ],
        1.0,
    );
    let impostor = id("ns/shop/sa/billing");
    // The count is taken just before the line is logged; the log arrives through a pipe.
    let named = wait_until(Duration::from_secs(5), || {
        log_json(&frontend)
            .iter()
            .any(|v| v["fields"]["spiffe_id"] == impostor.as_str())
    });
    assert!(
        named,
        "the outbound refusal should name {impostor}:\n{}",
        frontend.log_text()
    );
    assert_eq!(
        frontend.metric(REFUSED, &[("listener", "to-payments")]),
        0.0
    );
}

// ---------------------------------------------------------------------------------------------
// 3 and 4. reloads under a steady request loop

/// HTTP requests through the client sidecar's outbound listener, one new connection each (so
/// each makes new handshakes), until stopped, 400 requests or 30 s.
struct RequestLoop {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    thread: Option<thread::JoinHandle<()>>,
}

const LOOP_MAX_REQUESTS: usize = 400;

impl RequestLoop {
    fn start(addr: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let (s, d, f) = (stop.clone(), done.clone(), failures.clone());
        let thread = thread::spawn(move || {
            let started = Instant::now();
            for i in 0..LOOP_MAX_REQUESTS {
                if s.load(Ordering::SeqCst) || started.elapsed() > Duration::from_secs(30) {
                    break;
                }
                if let Err(e) = http_get(addr, &format!("/{i}")) {
                    f.lock()
                        .unwrap()
                        .push(format!("request {i} at {:?}: {e}", started.elapsed()));
                }
                d.fetch_add(1, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(15));
            }
        });
        RequestLoop {
            stop,
            done,
            failures,
            thread: Some(thread),
        }
    }

    fn done(&self) -> usize {
        self.done.load(Ordering::SeqCst)
    }

    /// Waits (up to 5 s) for `n` more requests to finish, so that each step runs under load.
    fn wait_more(&self, n: usize) {
        let target = self.done() + n;
        assert!(
            wait_until(Duration::from_secs(5), || self.done() >= target),
            "the request loop stalled at {} (failures: {:?})",
            self.done(),
            self.failures.lock().unwrap()
        );
    }

    /// Stops the loop; (requests made, failures).
    fn finish(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("request loop panicked");
        }
        (self.done(), self.failures.lock().unwrap().clone())
    }
}

impl Drop for RequestLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Client sidecar (frontend, outbound `out`) → server sidecar (payments, inbound `in`) → http_ok.
/// The server re-reads its files every `server_reload`.
fn sidecar_pair(pki: &Pki, server_reload: &str) -> (SidecarProcess, SidecarProcess) {
    let app = spawn_app(http_ok);
    let server_config = format!(
        "{}inbound:\n{}{ADMIN}",
        pki.identity_yaml("payments").replace(
            "reload_interval: 200ms",
            &format!("reload_interval: {server_reload}")
        ),
        inbound_yaml("in", app, &["ns/shop/sa/frontend"])
    );
    let server = SidecarProcess::start(pki.path(), "payments.yaml", &server_config, &["in"]);
    let client_config = format!(
        "{}outbound:\n{}{ADMIN}",
        pki.identity_yaml("frontend"),
        outbound_yaml("out", server.addr("in"), "ns/shop/sa/payments")
    );
    let client = SidecarProcess::start(pki.path(), "frontend.yaml", &client_config, &["out"]);
    (server, client)
}

fn reloads(sc: &SidecarProcess, result: &str) -> f64 {
    sc.metric(RELOADS, &[("result", result)])
}

/// Waits (up to 5 s) until the certificate expiry gauge differs from `old`; returns it.
fn wait_expiry_change(sc: &SidecarProcess, old: f64, what: &str) -> f64 {
    let mut now = old;
    let changed = wait_until(Duration::from_secs(5), || {
        now = sc.metric(EXPIRY, &[]);
        now != old
    });
    assert!(
        changed,
        "{what}: the certificate was not reloaded\nlog:\n{}",
        sc.log_text()
    );
    now
}

#[test]
fn reloads_certificates_and_bundle_under_load_without_failed_requests() {
    if !have("curl") {
        return;
    }
    let pki = Pki::new();
    pki.issue(
        "payments",
        "ns/shop/sa/payments",
        &["--dns", "payments.test", "--ttl", "2h"],
    );
    pki.issue("frontend", "ns/shop/sa/frontend", &[]);
    // A client of another CA; admitted only once the server's bundle trusts that CA too.
    pki.issue_from_other_ca("stranger", "ns/shop/sa/frontend");
    let (server, client) = sidecar_pair(&pki, "50ms");
    let srv = pki.path().join("payments");
    let successes_before = reloads(&server, "success");
    let mut expiry = server.metric(EXPIRY, &[]);
    assert!(expiry > 0.0);
    let first_expiry = expiry;

    let requests = RequestLoop::start(client.addr("out"));
    requests.wait_more(5);

    // Three rotations by write-then-rename: cert, then key, one after the other. The server
    // polls every 50 ms, so when the key follows 120 ms after the cert the watcher certainly looks
    // at the new cert beside the old key; its second look, 200 ms later, finds the pair. Such a
    // look is not a refusal: nothing is counted or logged as refused.
    let refusal_lines = || {
        log_json(&server)
            .iter()
            .filter(|v| {
                v["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("refused new identity files"))
            })
            .count()
    };
    for (round, gap_ms) in [(0, 0u64), (1, 120), (2, 120)] {
        let scratch = format!("scratch/r{round}");
        let ttl = format!("{}h", 3 + round);
        pki.issue(
            &scratch,
            "ns/shop/sa/payments",
            &["--dns", "payments.test", "--ttl", &ttl],
        );
        let new = pki.path().join(&scratch);
        let (cert, key) = (read(new.join("cert.pem")), read(new.join("key.pem")));
        let failures = reloads(&server, "failure");
        let started = Instant::now();
        replace_file(&srv.join("cert.pem"), &cert);
        thread::sleep(Duration::from_millis(gap_ms));
        replace_file(&srv.join("key.pem"), &key);
        let gap = started.elapsed();
        expiry = wait_expiry_change(&server, expiry, &format!("rotation {round}"));
        // A second look comes 200 ms after the first: a gap this short is always bridged. (Were
        // this thread descheduled past that, a refusal would be right, so only then skip.)
        if gap < Duration::from_millis(190) {
            assert_eq!(
                reloads(&server, "failure"),
                failures,
                "rotation {round}, gap {gap:?}"
            );
            assert_eq!(
                refusal_lines(),
                0,
                "rotation {round}:\n{}",
                server.log_text()
            );
        } else {
            eprintln!("rotation {round}: the renames took {gap:?}; not checking for refusals");
        }
        requests.wait_more(5);
    }

    // The bundle: before, the other CA's client is untrusted; after a bundle with both roots is
    // renamed into place, the same client is admitted (the bundle reloads, not only the leaf).
    let untrusted = || server.metric(REFUSED, &[("listener", "in"), ("reason", "untrusted")]);
    assert_refused(
        &curl_mtls(&pki, Some("stranger"), server.addr("in")),
        "stranger before",
    );
    wait_metric_at_least(
        &server,
        REFUSED,
        &[("listener", "in"), ("reason", "untrusted")],
        1.0,
    );
    let successes = reloads(&server, "success");
    let mut bundle = read(srv.join("bundle.pem"));
    bundle.extend_from_slice(&read(pki.path().join("stranger-ca/ca-cert.pem")));
    replace_file(&srv.join("bundle.pem"), &bundle);
    assert!(
        wait_until(Duration::from_secs(5), || server
            .metric("palisade_sidecar_bundle_roots", &[])
            == 2.0),
        "the new bundle was not loaded:\n{}",
        server.log_text()
    );
    assert!(reloads(&server, "success") > successes);
    assert_admitted(
        &curl_mtls(&pki, Some("stranger"), server.addr("in")),
        "stranger after",
    );
    assert_eq!(untrusted(), 1.0);
    requests.wait_more(5);

    // Kubernetes-style: cert.pem -> ..data/cert.pem, ..data -> a timestamped directory. First
    // move to that layout with the same contents (nothing to reload), then swap ..data to a new
    // directory with a new certificate in one rename, and delete the old directory, as kubelet
    // does.
    let first = "..2026_01_01_00_00_00.000000001";
    std::fs::create_dir(srv.join(first)).unwrap();
    for f in ["cert.pem", "key.pem", "bundle.pem"] {
        std::fs::write(srv.join(first).join(f), read(srv.join(f))).unwrap();
    }
    replace_symlink(first, &srv.join("..data"));
    for f in ["cert.pem", "key.pem", "bundle.pem"] {
        replace_symlink(&format!("..data/{f}"), &srv.join(f));
    }
    assert!(std::fs::symlink_metadata(srv.join("cert.pem"))
        .unwrap()
        .file_type()
        .is_symlink());
    requests.wait_more(5);
    pki.issue(
        "scratch/k8s",
        "ns/shop/sa/payments",
        &["--dns", "payments.test", "--ttl", "7h"],
    );
    let second = "..2026_01_01_00_00_01.000000002";
    std::fs::create_dir(srv.join(second)).unwrap();
    for f in ["cert.pem", "key.pem"] {
        std::fs::write(
            srv.join(second).join(f),
            read(pki.path().join("scratch/k8s").join(f)),
        )
        .unwrap();
    }
    std::fs::write(srv.join(second).join("bundle.pem"), &bundle).unwrap();
    replace_symlink(second, &srv.join("..data"));
    std::fs::remove_dir_all(srv.join(first)).unwrap();
    expiry = wait_expiry_change(&server, expiry, "the ..data swap");
    let at_last_reload = requests.done();
    requests.wait_more(10);

    let (made, failures) = requests.finish();
    assert!(
        made < LOOP_MAX_REQUESTS && made >= at_last_reload + 10,
        "the loop must still have been running after the last reload ({made} requests)"
    );
    assert!(
        failures.is_empty(),
        "{} of {made} requests failed during reloads: {failures:#?}\nserver log:\n{}\nclient log:\n{}",
        failures.len(),
        server.log_text(),
        client.log_text()
    );
    // 3 rotations, the bundle and the ..data swap: at least 5 successful reloads.
    assert!(
        reloads(&server, "success") >= successes_before + 5.0,
        "reloads: {}",
        server.metrics()
    );
    assert_ne!(expiry, first_expiry);
    // NotAfter is now + 7h (whole seconds) from the last issue.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (expiry - (now + 7.0 * 3600.0)).abs() < 120.0,
        "expiry {expiry}, now {now}"
    );
    assert_eq!(server.admin_get("/ready").0, 200);
}

#[test]
fn corrupt_replacements_keep_the_old_identity() {
    let pki = Pki::new();
    pki.issue("payments", "ns/shop/sa/payments", &[]);
    pki.issue("frontend", "ns/shop/sa/frontend", &[]);
    pki.issue("scratch/other", "ns/shop/sa/payments", &[]);
    let (server, client) = sidecar_pair(&pki, "200ms");
    let srv = pki.path().join("payments");
    let good_cert = read(srv.join("cert.pem"));
    let good_key = read(srv.join("key.pem"));
    let expiry = server.metric(EXPIRY, &[]);
    let requests = RequestLoop::start(client.addr("out"));
    requests.wait_more(5);

    let refusal_lines = |needle: &str| {
        log_json(&server)
            .iter()
            .filter(|v| {
                let f = &v["fields"];
                f["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("refused new identity files"))
                    && f["reason"].as_str().is_some_and(|r| r.contains(needle))
            })
            .count()
    };

    for (what, file, bad, good, needle) in [
        (
            "garbage in cert.pem",
            "cert.pem",
            b"not a certificate\n".to_vec(),
            &good_cert,
            "no PEM certificate",
        ),
        (
            "the key of another certificate",
            "key.pem",
            read(pki.path().join("scratch/other/key.pem")),
            &good_key,
            "does not belong",
        ),
    ] {
        let failures = reloads(&server, "failure");
        let successes = reloads(&server, "success");
        replace_file(&srv.join(file), &bad);
        wait_metric_at_least(&server, RELOADS, &[("result", "failure")], failures + 1.0);
        assert!(
            wait_until(Duration::from_secs(5), || refusal_lines(needle) > 0),
            "{what}: no log line about the refused files:\n{}",
            server.log_text()
        );
        // The old identity stays in use: requests keep working, still ready, same certificate.
        requests.wait_more(10);
        // Several polls later the same bad files were refused once: one count, one line.
        assert_eq!(reloads(&server, "failure"), failures + 1.0, "{what}");
        assert_eq!(refusal_lines(needle), 1, "{what}:\n{}", server.log_text());
        assert_eq!(server.admin_get("/ready").0, 200, "{what}");
        assert_eq!(server.metric(EXPIRY, &[]), expiry, "{what}");
        assert_eq!(reloads(&server, "success"), successes, "{what}");
        // Good files back: the next reload succeeds.
        replace_file(&srv.join(file), good);
        wait_metric_at_least(&server, RELOADS, &[("result", "success")], successes + 1.0);
        requests.wait_more(5);
    }
    let (made, failures) = requests.finish();
    assert!(
        failures.is_empty(),
        "{} of {made} requests failed: {failures:#?}\nserver log:\n{}",
        failures.len(),
        server.log_text()
    );
}

// ---------------------------------------------------------------------------------------------
// 5. readiness, liveness, shutdown

#[test]
fn not_ready_without_certificate_until_files_appear_then_shutdown() {
    if !have("curl") {
        return;
    }
    let pki = Pki::new();
    pki.issue("frontend", "ns/shop/sa/frontend", &[]);
    let app = spawn_app(http_ok);
    // payments/ does not exist yet.
    let config = format!(
        "{}inbound:\n{}{ADMIN}",
        pki.identity_yaml("payments"),
        inbound_yaml("api", app, &["ns/shop/sa/frontend"])
    );
    let mut sc = SidecarProcess::start(pki.path(), "payments.yaml", &config, &["api"]);
    assert_eq!(sc.admin_get("/live").0, 200);
    let (status, body) = sc.admin_get("/ready");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no valid certificate"), "{body}");
    assert_eq!(sc.metric(EXPIRY, &[]), 0.0);

    assert_refused(
        &curl_mtls(&pki, Some("frontend"), sc.addr("api")),
        "before a certificate",
    );
    wait_metric_at_least(
        &sc,
        REFUSED,
        &[("listener", "api"), ("reason", "no_certificate_loaded")],
        1.0,
    );
    assert_eq!(
        sc.child.try_wait().unwrap(),
        None,
        "the sidecar must stay up"
    );

    // The files appear (cert issue writes them atomically, one after the other).
    pki.issue(
        "payments",
        "ns/shop/sa/payments",
        &["--dns", "payments.test"],
    );
    let appeared = Instant::now();
    assert!(
        wait_until(Duration::from_secs(3), || sc.admin_get("/ready").0 == 200),
        "not ready 3 s after the files appeared:\n{}",
        sc.log_text()
    );
    assert!(
        appeared.elapsed() < Duration::from_secs(2),
        "ready after {:?}",
        appeared.elapsed()
    );
    assert_admitted(
        &curl_mtls(&pki, Some("frontend"), sc.addr("api")),
        "after the files appeared",
    );
    assert!(sc.metric(EXPIRY, &[]) > 0.0);
    assert_eq!(sc.admin_get("/live").0, 200);

    let (status, body) = common::http_request(sc.admin, "POST", "/shutdown");
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        sc.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        sc.log_text()
    );
}

// ---------------------------------------------------------------------------------------------
// 6. configuration errors

#[test]
fn unknown_config_field_names_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let config = "\
identity:
  cert: /nonexistent/cert.pem
  key: /nonexistent/key.pem
  bundle: /nonexistent/bundle.pem
  colour: blue
inbound:
  - name: api
    listen: 127.0.0.1:0
    forward_to: 127.0.0.1:9
    allow: [spiffe://example.org/ns/shop/sa/frontend]
";
    std::fs::write(dir.path().join("bad.yaml"), config).unwrap();
    let mut cmd = Command::new(common::BIN);
    cmd.current_dir(dir.path())
        .args(["sidecar", "run", "--config", "bad.yaml"]);
    let out = run_bounded(&mut cmd, b"", Duration::from_secs(10));
    assert!(
        !out.status.success() && out.status.code().is_some(),
        "{}",
        out.status
    );
    let stderr = text(&out.stderr);
    // A service says it once, as an ERROR line of its log (docs/CLI.md).
    let sentence = stderr
        .lines()
        .find(|l| l.contains(" ERROR ") && l.contains("invalid sidecar configuration: "))
        .unwrap_or_else(|| panic!("no error sentence:\n{stderr}"));
    assert!(
        sentence.contains("bad.yaml:5:3:") && sentence.contains("unknown field `colour`"),
        "{sentence}"
    );
    assert_eq!(
        stderr.matches("unknown field `colour`").count(),
        1,
        "{stderr}"
    );
    // And the file is not half-used: nothing was listened on.
    assert!(!stderr.contains("listening"), "{stderr}");
}

/// Times in the log read as RFC 3339 (docs/CLI.md), as the rest of Palisade prints them: the
/// identity's expiry in the `loaded identity` line parses as one.
#[test]
fn the_log_says_times_in_rfc_3339() {
    let pki = Pki::new();
    pki.issue("payments", "ns/shop/sa/payments", &[]);
    let app = spawn_app(counted_http_ok);
    let config = format!(
        "{}inbound:\n{}{ADMIN}",
        pki.identity_yaml("payments"),
        inbound_yaml("api", app, &["ns/shop/sa/frontend"])
    );
    let sc = SidecarProcess::start(pki.path(), "payments.yaml", &config, &["api"]);
    let mut not_after = None;
    assert!(
        wait_until(Duration::from_secs(5), || {
            not_after = sc.log_text().lines().find_map(|line| {
                let json: serde_json::Value = serde_json::from_str(line).ok()?;
                let fields = &json["fields"];
                (fields["message"].as_str()?.starts_with("loaded identity"))
                    .then(|| fields["not_after"].as_str().map(str::to_owned))?
            });
            not_after.is_some()
        }),
        "{}",
        sc.log_text()
    );
    let not_after = not_after.unwrap();
    assert!(
        time::OffsetDateTime::parse(&not_after, &time::format_description::well_known::Rfc3339)
            .is_ok(),
        "{not_after}"
    );
}
