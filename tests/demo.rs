//! `palisade demo` is the README's first command: it must tell the whole story and exit 0.

mod common;

use std::process::Command;

#[test]
fn demo_runs_the_story_and_exits_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .arg("demo")
        .current_dir(tmp.path())
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed:\n{stdout}\n{stderr}");
    for expected in [
        "$ palisade ca init",
        "valid X.509-SVID, chains to ca/bundle.pem",
        "$ palisade sidecar run --config payments.yaml",
        "payments: charge accepted",
        "reason=\"not_admitted\"} 1",
        "payments' sidecar reloaded",
        "the connection opened before the rotation: HTTP/1.1 200 OK",
        "a new connection, with the new certificate: HTTP/1.1 200 OK",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(
        stderr.contains("is not admitted here"),
        "the refusal is logged: {stderr}"
    );
    // As root (scripts/test installs ip, nft and setpriv) the pods part runs, and must: two
    // nodes' tables and three pods' transparent sidecars from the same policy.
    if common::is_root() {
        for expected in [
            "$ palisade policy apply policy.yaml --host node-a",
            "$ palisade sidecar redirect --inbound-port 15006",
            "$ curl http://10.10.2.2:8080/charge   # in the frontend pod\nHTTP/1.1 200 OK\npayments: charge accepted",
            "palisade_sidecar_connections_opened_total{listener=\"transparent-inbound\"} 1)",
            "$ curl http://10.10.2.2:8080/charge   # in the scanner pod\n-> no answer",
            "refused_total{reason=\"connect_timeout\"} 1)",
            "10.10.9.2 (guest) -> 10.10.2.2 (payments) tcp port 8080: denied by default",
        ] {
            assert!(
                stdout.contains(expected),
                "missing {expected:?} in:\n{stdout}"
            );
        }
        assert!(!stdout.contains("(Not shown:"), "{stdout}");
    } else {
        assert!(stdout.contains("(Not shown: run it as root"), "{stdout}");
    }
}
