//! Each listener's ALPN list: an inbound listener negotiates what it lists (openssl s_client
//! shows it) and refuses a client that offers only others; an outbound listener offers its list,
//! so two sidecars agree or fail the handshake as TLS says (RFC 7301 §3.2).

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn allow(id_path: &str) -> String {
    format!("spiffe://{TD}/{id_path}")
}

/// openssl s_client to `addr` as `client`, offering `alpn`: its stdout and stderr.
fn s_client(pki: &Pki, client: &str, addr: std::net::SocketAddr, alpn: &str) -> String {
    let mut cmd = Command::new("openssl");
    cmd.current_dir(pki.path()).args([
        "s_client",
        "-connect",
        &addr.to_string(),
        "-CAfile",
        "ca/ca-cert.pem",
        "-cert",
        &format!("{client}/cert.pem"),
        "-key",
        &format!("{client}/key.pem"),
        "-alpn",
        alpn,
    ]);
    let (out, _) = run_bounded(&mut cmd, b"", Duration::from_secs(10));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn an_inbound_listener_negotiates_its_alpn_and_refuses_clients_offering_only_others() {
    if !have("openssl") {
        return;
    }
    let pki = Pki::new();
    pki.issue("payments", "payments", &[]);
    pki.issue("frontend", "frontend", &[]);
    let app = spawn_app(http_ok);
    let sc = SidecarProcess::start(
        pki.path(),
        "payments.yaml",
        &format!(
            "{}inbound:\n  - name: h2\n    listen: 127.0.0.1:0\n    forward_to: {app}\n    allow: [{}]\n    alpn: [h2, http/1.1]\n  - name: plain\n    listen: 127.0.0.1:0\n    forward_to: {app}\n    allow: [{}]\nadmin:\n  listen: 127.0.0.1:0\n",
            pki.identity_yaml("payments"),
            allow("frontend"),
            allow("frontend"),
        ),
        &["h2", "plain"],
    );
    assert!(wait_until(Duration::from_secs(5), || sc
        .admin_get("/ready")
        .0
        == 200));

    let out = s_client(&pki, "frontend", sc.addr("h2"), "h2,http/1.1");
    assert!(out.contains("ALPN protocol: h2"), "{out}");
    let out = s_client(&pki, "frontend", sc.addr("h2"), "http/1.1");
    assert!(out.contains("ALPN protocol: http/1.1"), "{out}");
    let out = s_client(&pki, "frontend", sc.addr("h2"), "spdy/3");
    assert!(!out.contains("ALPN protocol: "), "{out}");
    assert!(
        out.contains("no application protocol") || out.contains("alert"),
        "{out}"
    );
    // A listener without a list negotiates nothing, whatever is offered.
    let out = s_client(&pki, "frontend", sc.addr("plain"), "h2");
    assert!(out.contains("No ALPN negotiated"), "{out}");
}

#[test]
fn two_sidecars_connect_when_their_alpn_lists_meet_and_not_otherwise() {
    let pki = Pki::new();
    pki.issue("payments", "payments", &[]);
    pki.issue("frontend", "frontend", &[]);
    let app = spawn_app(http_ok);
    let server = SidecarProcess::start(
        pki.path(),
        "payments.yaml",
        &format!(
            "{}inbound:\n  - name: api\n    listen: 127.0.0.1:0\n    forward_to: {app}\n    allow: [{}]\n    alpn: [h2]\nadmin:\n  listen: 127.0.0.1:0\n",
            pki.identity_yaml("payments"),
            allow("frontend"),
        ),
        &["api"],
    );
    let client = SidecarProcess::start(
        pki.path(),
        "frontend.yaml",
        &format!(
            "{}outbound:\n  - name: meets\n    listen: 127.0.0.1:0\n    connect_to: {api}\n    expect: [{payments}]\n    alpn: [http/1.1, h2]\n  - name: misses\n    listen: 127.0.0.1:0\n    connect_to: {api}\n    expect: [{payments}]\n    alpn: [spdy/3]\nadmin:\n  listen: 127.0.0.1:0\n",
            pki.identity_yaml("frontend"),
            api = server.addr("api"),
            payments = allow("payments"),
        ),
        &["meets", "misses"],
    );
    for sc in [&server, &client] {
        assert!(wait_until(Duration::from_secs(5), || sc
            .admin_get("/ready")
            .0
            == 200));
    }
    let (status, body) = http_request(client.addr("meets"), "GET", "/");
    assert_eq!((status, body.as_str()), (200, "hello from the app\n"));
    assert!(try_http_request(client.addr("misses"), "GET", "/").is_err());
    let refused =
        |sc: &SidecarProcess| sc.metric("palisade_sidecar_connections_refused_total", &[]);
    assert!(
        wait_until(Duration::from_secs(5), || refused(&server) >= 1.0
            && refused(&client) >= 1.0),
        "server:\n{}\nclient:\n{}",
        server.log_text(),
        client.log_text()
    );
}

#[test]
fn an_alpn_name_longer_than_255_bytes_is_refused_at_load() {
    let pki = Pki::new();
    pki.issue("payments", "payments", &[]);
    let config = pki.path().join("bad.yaml");
    std::fs::write(
        &config,
        format!(
            "{}inbound:\n  - name: api\n    listen: 127.0.0.1:0\n    forward_to: 127.0.0.1:1\n    allow: [{}]\n    alpn: [\"{}\"]\n",
            pki.identity_yaml("payments"),
            allow("frontend"),
            "x".repeat(256)
        ),
    )
    .unwrap();
    let out = palisade(
        &["sidecar", "run", "--config", config.to_str().unwrap()],
        pki.path(),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listener api: ALPN protocol"), "{err}");
}
