//! `ca serve --check-sandbox`: the CA service's sandbox, applied as it would be, tried from inside.
//! It writes exactly its CA directory, its token store and its audit log file, never the directory above one that
//! did not exist yet (the store is made first), connects nowhere, and makes no socket Landlock's
//! port rules cannot see (MPTCP, TCP Fast Open, UDP, Unix). No root needed: Landlock and the filter are for any
//! user.

mod common;

use std::process::Command;

use common::*;

fn check_sandbox(
    ca: &TwoLevelCa,
    tokens: &std::path::Path,
    audit: &std::path::Path,
) -> (Option<i32>, serde_json::Value) {
    let out = Command::new(BIN)
        .args(["ca", "serve", "--ca-dir"])
        .arg(ca.issuer())
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .arg("--tokens-dir")
        .arg(tokens)
        .arg("--audit-log")
        .arg(audit)
        .args(["--landlock", "required", "--check-sandbox"])
        .current_dir(ca.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(stdout.lines().last().unwrap_or("null"))
        .unwrap_or_else(|e| panic!("{e}: {stdout}{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code(), report)
}

#[test]
fn the_ca_service_writes_only_its_directories_connects_nowhere_and_makes_no_other_sockets() {
    let ca = TwoLevelCa::new();
    // The token store two levels below a directory that exists: X/palisade does not exist yet.
    let x = ca.path().join("X");
    std::fs::create_dir(&x).unwrap();
    let tokens = x.join("palisade/tokens");
    // The audit log in a directory of its own that does not hold it yet (/var/log, say).
    let logs = ca.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let audit = logs.join("audit.jsonl");
    let (code, report) = check_sandbox(&ca, &tokens, &audit);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["landlock"], "fully enforced", "{report}");
    assert_eq!(
        report["allowed"]["write"],
        serde_json::json!([
            ca.issuer().display().to_string(),
            tokens.display().to_string(),
            audit.display().to_string()
        ]),
        "{report}"
    );
    for dir in ["pending", "used"] {
        assert!(tokens.join(dir).is_dir(), "{dir}");
    }
    let tried = report["tried"].as_array().unwrap();
    let refused = |prefix: &str| {
        tried
            .iter()
            .find(|t| t["try"].as_str().unwrap().starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {report}"))["refused"]
            == true
    };
    let beside = format!(
        "write {}",
        x.join("palisade/.palisade-sandbox-check").display()
    );
    for what in [
        beside.as_str(),
        "bind 127.0.0.1",
        "connect 127.0.0.1",
        "connect over MPTCP",
        "connect with TCP Fast Open",
        "send UDP",
        "connect to a Unix socket",
        "run /bin/sh",
    ] {
        assert!(refused(what), "{what} was not refused: {report}");
    }
    // Nothing was left behind by the attempts, in X or beside the store.
    assert_eq!(
        std::fs::read_dir(&x).unwrap().count(),
        1,
        "only palisade/ in {}",
        x.display()
    );
}
