//! Post-quantum key exchange between our own peers: two sidecars, and a client of the CA
//! service, agree on the hybrid X25519MLKEM768 (rustls built with `prefer-post-quantum`); a
//! client that knows only classic groups (Debian's OpenSSL 3.0) still connects, on X25519 or on
//! the group it asks for. Read from the sidecars' `handshake_key_exchanges` metric and from the
//! TLS connection itself.

mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use std::time::Duration;

use common::*;

const HYBRID: &str = "X25519MLKEM768";

fn groups(sc: &SidecarProcess, listener: &str, group: &str) -> f64 {
    sc.metric(
        "palisade_sidecar_handshake_key_exchanges_total",
        &[("listener", listener), ("group", group)],
    )
}

#[test]
fn sidecars_agree_on_x25519mlkem768_and_classic_clients_still_connect() {
    assert!(
        have("openssl"),
        "openssl is required (scripts/test installs it)"
    );
    let pki = Pki::new();
    pki.issue("payments", "payments", &[]);
    pki.issue("frontend", "frontend", &[]);
    let app = spawn_app(http_ok);
    let server = SidecarProcess::start(
        pki.path(),
        "payments.yaml",
        &format!(
            "{}inbound:\n  - name: api\n    listen: 127.0.0.1:0\n    forward_to: {app}\n    allow: [spiffe://{TD}/frontend]\nadmin:\n  listen: 127.0.0.1:0\n",
            pki.identity_yaml("payments"),
        ),
        &["api"],
    );
    let client = SidecarProcess::start(
        pki.path(),
        "frontend.yaml",
        &format!(
            "{}outbound:\n  - name: to-api\n    listen: 127.0.0.1:0\n    connect_to: {}\n    expect: [spiffe://{TD}/payments]\nadmin:\n  listen: 127.0.0.1:0\n",
            pki.identity_yaml("frontend"),
            server.addr("api"),
        ),
        &["to-api"],
    );
    let (status, _) = http_request(client.addr("to-api"), "GET", "/");
    assert_eq!(status, 200);
    assert!(
        wait_until(Duration::from_secs(5), || groups(&server, "api", HYBRID)
            >= 1.0
            && groups(&client, "to-api", HYBRID) >= 1.0),
        "server:\n{}\nclient:\n{}",
        server.admin_get("/metrics").1,
        client.admin_get("/metrics").1
    );

    // OpenSSL 3.0 offers no ML-KEM: X25519 by default, P-256 when asked for.
    for (ask, group, temp_key) in [
        (None, "X25519", "X25519"),
        (Some("P-256"), "secp256r1", "ECDH, prime256v1"),
    ] {
        let mut cmd = Command::new("openssl");
        cmd.current_dir(pki.path()).args([
            "s_client",
            "-connect",
            &server.addr("api").to_string(),
            "-CAfile",
            "ca/ca-cert.pem",
            "-cert",
            "frontend/cert.pem",
            "-key",
            "frontend/key.pem",
        ]);
        if let Some(g) = ask {
            cmd.args(["-groups", g]);
        }
        let (out, _) = run_bounded(&mut cmd, b"", Duration::from_secs(10));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("Server Temp Key: {temp_key}")),
            "{text}"
        );
        assert!(
            wait_until(Duration::from_secs(5), || groups(&server, "api", group)
                >= 1.0),
            "{}",
            server.admin_get("/metrics").1
        );
    }
}

#[test]
fn the_ca_service_agrees_on_x25519mlkem768_with_a_rustls_client() {
    let ca = TwoLevelCa::new();
    let service = CaProcess::start(&ca.issuer(), &[]);
    let mut roots = rustls::RootCertStore::empty();
    let bundle = std::fs::read(ca.bundle()).unwrap();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&bundle) {
        roots.add(cert.unwrap()).unwrap();
    }
    // What every Palisade client of the CA service uses: the default provider of this build.
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    // The service's certificate names its SPIFFE ID, not this IP, so the name check may refuse
    // it (Palisade's clients pin the SPIFFE ID instead); the group is agreed in the ServerHello,
    // before any certificate is looked at, which is all this test reads.
    let server_name = rustls_pki_types::ServerName::IpAddress(service.api.ip().into());
    let mut conn = rustls::ClientConnection::new(Arc::new(config), server_name.to_owned()).unwrap();
    let mut tcp = std::net::TcpStream::connect(service.api).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    let _ = tls.write_all(b"GET /v1/bundle HTTP/1.1\r\nHost: ca\r\nConnection: close\r\n\r\n");
    let mut reply = Vec::new();
    let _ = tls.read_to_end(&mut reply);
    let group = conn
        .negotiated_key_exchange_group()
        .map(|g| format!("{:?}", g.name()));
    assert_eq!(
        group.as_deref(),
        Some(HYBRID),
        "{}",
        String::from_utf8_lossy(&reply)
    );
}
