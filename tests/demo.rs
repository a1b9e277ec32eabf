//! `palisade demo` is the README's first command: it must tell the whole story and exit 0.

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
}
