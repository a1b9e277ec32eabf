//! What a stranger on the network can do to a sidecar before (and while) it is authenticated, each
//! test the regression test of one finding of the security review (issue 8): memory held for
//! unauthenticated connections, connection slots, log lines, resumed sessions and truncation.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{curl_as, have, spawn_app, wait_until, Pki, SidecarProcess};

const FRONTEND: &str = "spiffe://example.org/ns/shop/sa/frontend";

/// A payments sidecar admitting the frontend, forwarding to an HTTP app; `extra` is appended.
fn payments(pki: &Pki, extra: &str) -> SidecarProcess {
    let app = spawn_app(common::http_ok);
    let config = format!(
        "{}inbound:\n  - name: api\n    listen: 127.0.0.1:0\n    forward_to: {app}\n    allow: [{FRONTEND}]\nadmin: {{ listen: 127.0.0.1:0 }}\n{extra}",
        pki.identity_yaml("payments")
    );
    SidecarProcess::start(pki.path(), "payments.yaml", &config, &["api"])
}

fn pki() -> Pki {
    let pki = Pki::new();
    pki.issue(
        "payments",
        "ns/shop/sa/payments",
        &["--dns", "payments.test"],
    );
    pki.issue("frontend", "ns/shop/sa/frontend", &[]);
    pki
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

fn active(sidecar: &SidecarProcess) -> f64 {
    sidecar.metric(
        "palisade_sidecar_connections_active",
        &[("direction", "inbound")],
    )
}

/// A TLS record header announcing a 16 KiB handshake record, and a ClientHello header announcing
/// a 64 KiB message: rustls must keep what follows until the record is complete.
fn stalled_handshake(len: usize) -> Vec<u8> {
    let mut bytes = vec![0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0xff, 0xff];
    bytes.resize(len, 0x42);
    bytes
}

/// Review finding 3: connections that never finish their handshake cost little memory each
/// (no read-ahead or relay buffer before the handshake, and a budget on what rustls buffers), and
/// the memory goes back when they close. The bounds asserted here are the ones docs/SIDECAR.md
/// states. Before the fix: about 135 KiB per connection, kept after they closed.
#[test]
fn memory_held_for_unauthenticated_connections_is_bounded() {
    assert!(have("curl"), "curl is required (scripts/test installs it)");
    let _ = rlimit::increase_nofile_limit(8192);
    let pki = pki();
    let sidecar = payments(
        &pki,
        "limits:\n  max_handshakes: 2500\n  max_connections: 5000\n  first_byte_timeout: 60s\n  handshake_timeout: 60s\nworkers: 2\n",
    );
    let addr = sidecar.addr("api");
    let pid = sidecar.child.id();
    // Warm up every path a connection takes, so that what follows measures connections only.
    for _ in 0..20 {
        assert!(
            curl_as(&pki, "frontend", addr.port()),
            "{}",
            sidecar.log_text()
        );
    }
    thread::sleep(Duration::from_millis(300));
    let base = rss_kib(pid);
    const N: usize = 1000;

    let silent: Vec<TcpStream> = (0..N).map(|_| TcpStream::connect(addr).unwrap()).collect();
    assert!(wait_until(Duration::from_secs(20), || active(&sidecar) >= N as f64));
    thread::sleep(Duration::from_millis(500));
    let after_silent = rss_kib(pid);

    let partial = stalled_handshake(15_000);
    let mut stalled = Vec::new();
    for _ in 0..N {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&partial).unwrap();
        stalled.push(s);
    }
    assert!(wait_until(Duration::from_secs(20), || active(&sidecar)
        >= 2.0 * N as f64));
    thread::sleep(Duration::from_millis(1000));
    let after_stalled = rss_kib(pid);

    drop(silent);
    drop(stalled);
    assert!(wait_until(Duration::from_secs(20), || active(&sidecar) == 0.0));
    thread::sleep(Duration::from_millis(500));
    let after_close = rss_kib(pid);

    // The same again: memory freed by the first wave is used again, not added to.
    let again: Vec<TcpStream> = (0..2 * N)
        .map(|i| {
            let mut s = TcpStream::connect(addr).unwrap();
            if i >= N {
                s.write_all(&partial).unwrap();
            }
            s
        })
        .collect();
    assert!(wait_until(Duration::from_secs(20), || active(&sidecar)
        >= 2.0 * N as f64));
    thread::sleep(Duration::from_millis(1000));
    let second_wave = rss_kib(pid);
    drop(again);

    let per_silent = (after_silent.saturating_sub(base)) as f64 / N as f64;
    let per_stalled = (after_stalled.saturating_sub(after_silent)) as f64 / N as f64;
    println!(
        "rss: base {base} KiB, +{N} silent {after_silent} KiB ({per_silent:.1} KiB each), +{N} stalled handshakes {after_stalled} KiB ({per_stalled:.1} KiB each), all closed {after_close} KiB, the same again {second_wave} KiB"
    );
    // The bounds docs/SIDECAR.md gives, for this (debug) build; a release build needs less.
    assert!(
        per_silent <= 10.0,
        "{per_silent:.1} KiB per silent connection"
    );
    assert!(
        per_stalled <= 40.0,
        "{per_stalled:.1} KiB per stalled handshake"
    );
    // glibc keeps freed memory for reuse, somewhat fragmented: the second wave may need a little
    // more, not another wave's worth.
    assert!(
        second_wave <= after_stalled + (after_stalled - base) / 2,
        "a second wave grew the sidecar from {after_stalled} to {second_wave} KiB"
    );
    assert!(curl_as(&pki, "frontend", addr.port()), "still serves");
}

/// A peer that sends more than the handshake budget without finishing is read no further, and
/// refused and counted when its handshake time is up.
#[test]
fn a_handshake_larger_than_the_budget_is_refused() {
    let pki = pki();
    let sidecar = payments(&pki, "limits:\n  handshake_timeout: 1s\n");
    let mut s = TcpStream::connect(sidecar.addr("api")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // Two full records of a 64 KiB ClientHello: more than the 16 KiB budget.
    let mut bytes = stalled_handshake(16_389);
    bytes.extend_from_slice(&[0x16, 0x03, 0x01, 0x40, 0x00]);
    bytes.resize(bytes.len() + 16_384, 0x42);
    let _ = s.write_all(&bytes);
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(
        wait_until(Duration::from_secs(5), || sidecar.metric(
            "palisade_sidecar_connections_refused_total",
            &[("reason", "handshake_too_large")]
        ) == 1.0),
        "{}",
        sidecar.metrics()
    );
}

/// Review finding 4: silent sockets on the inbound port hold only handshake slots, for at most the
/// first-byte timeout; they take neither the app's outbound connections nor, once closed, the
/// legitimate peer's. Before the fix one cap was shared by every listener, and 200 silent sockets
/// kept both out for the whole handshake timeout.
#[test]
fn silent_sockets_cannot_take_outbound_or_inbound_connections_away() {
    assert!(have("curl"), "curl is required (scripts/test installs it)");
    let pki = pki();
    pki.issue("ledger", "ns/shop/sa/ledger", &[]);
    // The ledger: an inbound listener that the payments sidecar's outbound listener reaches.
    let app = spawn_app(common::http_ok);
    let ledger = SidecarProcess::start(
        pki.path(),
        "ledger.yaml",
        &format!(
            "{}inbound:\n  - name: in\n    listen: 127.0.0.1:0\n    forward_to: {app}\n    allow: [spiffe://example.org/ns/shop/sa/payments]\nadmin: {{ listen: 127.0.0.1:0 }}\n",
            pki.identity_yaml("ledger")
        ),
        &["in"],
    );
    let config = format!(
        "{}inbound:\n  - name: api\n    listen: 127.0.0.1:0\n    forward_to: {app}\n    allow: [{FRONTEND}]\noutbound:\n  - name: to-ledger\n    listen: 127.0.0.1:0\n    connect_to: {}\n    expect: [spiffe://example.org/ns/shop/sa/ledger]\nadmin: {{ listen: 127.0.0.1:0 }}\nlimits:\n  max_connections: 50\n  max_handshakes: 20\n  first_byte_timeout: 1s\n",
        pki.identity_yaml("payments"),
        ledger.addr("in")
    );
    let sidecar =
        SidecarProcess::start(pki.path(), "payments.yaml", &config, &["api", "to-ledger"]);
    let (inbound, outbound) = (sidecar.addr("api"), sidecar.addr("to-ledger"));

    let silent: Vec<TcpStream> = (0..200)
        .filter_map(|_| TcpStream::connect(inbound).ok())
        .collect();
    assert!(wait_until(Duration::from_secs(5), || sidecar.metric(
        "palisade_sidecar_connections_refused_total",
        &[("reason", "handshake_limit")]
    ) >= 150.0));
    // While the silent sockets hold every handshake slot, the app's outbound calls go through.
    let (status, body) = common::http_request(outbound, "GET", "/");
    assert_eq!(
        status, 200,
        "outbound refused under an inbound flood: {body}"
    );
    // And within the first-byte timeout the silent ones are gone, so a real peer gets in.
    assert!(
        wait_until(Duration::from_secs(5), || curl_as(
            &pki,
            "frontend",
            inbound.port()
        )),
        "{}",
        sidecar.metrics()
    );
    assert!(
        sidecar.metric(
            "palisade_sidecar_connections_refused_total",
            &[("reason", "first_byte_timeout")]
        ) >= 20.0
    );
    drop(silent);
}

/// A self-signed certificate whose URI SAN carries a newline and a fake log line.
fn forged_certificate(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let uri = format!("{FRONTEND}\n2026-12-05T00:00:00Z INFO admitted spiffe_id={FRONTEND}");
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        rcgen::string::Ia5String::try_from(uri).expect("IA5"),
    )];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.join("forged-cert.pem"), dir.join("forged-key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

/// Review finding 6: what a stranger's certificate says is escaped in the log, and refusal warnings
/// are limited per reason while the metric counts every one.
#[test]
fn peer_supplied_text_cannot_forge_log_lines_and_refusals_are_rate_limited() {
    assert!(have("curl"), "curl is required (scripts/test installs it)");
    let pki = pki();
    let sidecar = payments(&pki, "");
    let addr = sidecar.addr("api");
    let (cert, key) = forged_certificate(pki.path());
    let status = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "--max-time", "5", "-k"])
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .arg(format!("https://127.0.0.1:{}/", addr.port()))
        .status()
        .unwrap();
    assert!(!status.success());
    for _ in 0..60 {
        let mut s = TcpStream::connect(addr).unwrap();
        let _ = s.write_all(b"GET / HTTP/1.1\r\n\r\n");
    }
    assert!(wait_until(Duration::from_secs(5), || sidecar.metric(
        "palisade_sidecar_connections_refused_total",
        &[("reason", "not_tls")]
    ) == 60.0));
    let log = sidecar.log_text();
    let messages: Vec<String> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["fields"]["message"].as_str().map(str::to_owned))
        .collect();
    let forged: Vec<&String> = messages
        .iter()
        .filter(|m| m.contains("INFO admitted"))
        .collect();
    assert_eq!(forged.len(), 1, "{log}");
    assert!(
        !forged[0].chars().any(char::is_control) && forged[0].contains("\\n2026"),
        "the URI reached the log unescaped: {:?}",
        forged[0]
    );
    let not_tls = messages
        .iter()
        .filter(|m| m.contains("TLS handshake (plaintext?)"))
        .count();
    assert!(
        (1..=20).contains(&not_tls),
        "{not_tls} not_tls lines for 60 refusals"
    );
}

/// Review finding 7: with resumption on, a resumed session is admitted only while the certificate
/// it was made with would be: once the 8-second client certificate has expired, resuming is
/// refused (before the fix it was admitted), while a full handshake with it fails as well.
#[test]
fn a_resumed_session_is_refused_once_its_certificate_has_expired() {
    assert!(
        have("openssl"),
        "openssl is required (scripts/test installs it)"
    );
    let pki = pki();
    pki.issue("short", "ns/shop/sa/frontend", &["--ttl", "8s"]);
    let issued = Instant::now();
    let sidecar = payments(&pki, "tls:\n  resumption: true\n");
    let addr = sidecar.addr("api");
    let session = pki.path().join("session.pem");
    let s_client = |session_arg: &str| {
        let dir = pki.path().join("short");
        let mut cmd = Command::new("openssl");
        cmd.args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-tls1_3",
            "-quiet",
        ])
        .arg("-cert")
        .arg(dir.join("cert.pem"))
        .arg("-key")
        .arg(dir.join("key.pem"))
        .arg("-CAfile")
        .arg(pki.path().join("ca/bundle.pem"))
        .arg(session_arg)
        .arg(&session)
        .arg("-ign_eof");
        let (out, _) = common::run_bounded(
            &mut cmd,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Duration::from_secs(10),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        s_client("-sess_out").contains("200 OK"),
        "first full handshake"
    );
    assert!(session.exists(), "openssl saved the session");
    let resumed = |s: &SidecarProcess| {
        s.metric(
            "palisade_sidecar_connections_refused_total",
            &[("reason", "expired")],
        )
    };
    assert!(
        s_client("-sess_in").contains("200 OK"),
        "resumed while valid"
    );
    assert_eq!(resumed(&sidecar), 0.0);
    let expiry = issued + Duration::from_secs(9);
    thread::sleep(expiry.saturating_duration_since(Instant::now()));
    let out = s_client("-sess_in");
    assert!(
        !out.contains("200 OK"),
        "an expired certificate was resumed: {out}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || resumed(&sidecar) >= 1.0),
        "{}",
        sidecar.metrics()
    );
}

/// Review finding 11 (relay): a TLS peer whose connection ends without close_notify may have been
/// cut short by someone on the path; the app gets a reset, not a clean end of stream.
#[test]
fn a_tls_stream_cut_without_close_notify_resets_the_app() {
    assert!(
        have("openssl"),
        "openssl is required (scripts/test installs it)"
    );
    let pki = pki();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let app = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut got = Vec::new();
            let end = s.read_to_end(&mut got);
            let _ = tx.send((got, end.map_err(|e| e.kind())));
        }
    });
    let config = format!(
        "{}inbound:\n  - name: api\n    listen: 127.0.0.1:0\n    forward_to: {app}\n    allow: [{FRONTEND}]\nadmin: {{ listen: 127.0.0.1:0 }}\n",
        pki.identity_yaml("payments")
    );
    let sidecar = SidecarProcess::start(pki.path(), "payments.yaml", &config, &["api"]);
    let dir = pki.path().join("frontend");
    let mut client = Command::new("openssl")
        .args(["s_client", "-quiet", "-connect"])
        .arg(sidecar.addr("api").to_string())
        .arg("-cert")
        .arg(dir.join("cert.pem"))
        .arg("-key")
        .arg(dir.join("key.pem"))
        .arg("-CAfile")
        .arg(pki.path().join("ca/bundle.pem"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    client
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"part of a message\n")
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || sidecar.metric(
        "palisade_sidecar_bytes_total",
        &[("flow", "peer_to_app")]
    ) >= 18.0));
    // SIGKILL: the kernel ends the TCP connection; no close_notify is sent.
    client.kill().unwrap();
    let _ = client.wait();
    let (got, end) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the app saw an end");
    assert_eq!(got, b"part of a message\n");
    assert_eq!(
        end,
        Err(std::io::ErrorKind::ConnectionReset),
        "the app must see a reset, not a clean end"
    );
    assert!(wait_until(Duration::from_secs(5), || sidecar.metric(
        "palisade_sidecar_connections_closed_total",
        &[("reason", "truncated")]
    ) == 1.0));
}

/// Review finding 10, against the real binary: the admin server refuses what a web page could
/// send (an Origin header, a rebound Host), so a browser on the host cannot shut the sidecar down.
#[test]
fn the_admin_server_refuses_requests_a_web_page_could_send() {
    let pki = pki();
    let sidecar = payments(&pki, "");
    let admin = sidecar.admin;
    let send = |head: &str| {
        let mut s = TcpStream::connect(admin).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(head.as_bytes()).unwrap();
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        reply
    };
    let reply = send(&format!(
        "POST /shutdown HTTP/1.1\r\nHost: {admin}\r\nOrigin: http://evil.example\r\nContent-Length: 0\r\n\r\n"
    ));
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
    let reply = send("POST /shutdown HTTP/1.1\r\nHost: evil.example\r\nContent-Length: 0\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
    assert_eq!(
        sidecar.admin_get("/ready").0,
        200,
        "still running and ready"
    );
}
