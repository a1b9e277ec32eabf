//! The example sidecar configurations run as they are: same files, same relative certificate
//! paths; only their fixed ports are swapped for free ones so that tests can run in parallel.

mod common;

use std::path::Path;

use common::{http_request, ok, palisade, spawn_app, SidecarProcess};

fn example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/sidecar")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_example_config_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sidecar");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            palisade_sidecar::SidecarConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
            seen += 1;
        }
    }
    assert!(seen >= 2, "found {seen} example configs");
}

#[test]
fn the_sidecar_examples_carry_a_request() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // The steps of examples/sidecar/README.md.
    ok(palisade(
        &[
            "ca",
            "init",
            "--ca-dir",
            "ca",
            "--trust-domain",
            "example.org",
        ],
        dir,
    ));
    for name in ["payments", "frontend"] {
        let id = format!("spiffe://example.org/ns/shop/sa/{name}");
        ok(palisade(
            &[
                "cert",
                "issue",
                "--ca-dir",
                "ca",
                "--spiffe-id",
                &id,
                "--svid-dir",
                name,
            ],
            dir,
        ));
    }
    let app = spawn_app(common::http_ok);

    let payments_yaml = example("payments.yaml")
        .replace("listen: 127.0.0.1:7443", "listen: 127.0.0.1:0")
        .replace("forward_to: 127.0.0.1:8080", &format!("forward_to: {app}"))
        .replace("listen: 127.0.0.1:7901", "listen: 127.0.0.1:0");
    let payments = SidecarProcess::start(dir, "payments.yaml", &payments_yaml, &["payments-api"]);
    let frontend_yaml = example("frontend.yaml")
        .replace("listen: 127.0.0.1:7001", "listen: 127.0.0.1:0")
        .replace(
            "connect_to: 127.0.0.1:7443",
            &format!("connect_to: {}", payments.addr("payments-api")),
        )
        .replace("listen: 127.0.0.1:7902", "listen: 127.0.0.1:0");
    let frontend = SidecarProcess::start(dir, "frontend.yaml", &frontend_yaml, &["to-payments"]);

    let (status, body) = http_request(frontend.addr("to-payments"), "GET", "/");
    assert_eq!(status, 200, "{}", payments.log_text());
    assert_eq!(body, "hello from the app\n");
    assert_eq!(
        payments.metric(
            "palisade_sidecar_connections_opened_total",
            &[("listener", "payments-api")]
        ),
        1.0
    );
}
