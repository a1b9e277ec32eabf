//! `palisade policy explain --kubernetes` and `policy matrix` on examples/kubernetes/netpol, as
//! a user runs them: outputs equal the golden files beside them (`PALISADE_BLESS=1` rewrites
//! them), exit codes say allowed (0) or denied (3), and bad input is one located sentence.

mod common;

use std::path::{Path, PathBuf};

use common::*;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn golden(name: &str, actual: &str) {
    let path = root().join("tests/golden-cli/netpol").join(name);
    if std::env::var("PALISADE_BLESS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (PALISADE_BLESS=1 writes it)", path.display()));
    assert_eq!(
        actual,
        expected,
        "{} differs (PALISADE_BLESS=1 rewrites it)",
        path.display()
    );
}

fn run(args: &[&str]) -> std::process::Output {
    palisade(args, &root())
}

const EXAMPLE: &str = "examples/kubernetes/netpol";

#[test]
fn the_matrix_of_the_example_for_both_families_and_protocols() {
    for (name, extra) in [
        ("matrix-tcp-80.txt", vec!["--port", "80"]),
        (
            "matrix-tcp-81-ipv6.txt",
            vec!["--port", "81", "--family", "ipv6"],
        ),
        (
            "matrix-udp-53.txt",
            vec!["--port", "53", "--protocol", "udp"],
        ),
    ] {
        let mut args = vec!["policy", "matrix", "--kubernetes", EXAMPLE];
        args.extend(extra);
        golden(name, &ok(run(&args)));
    }
}

#[test]
fn explain_names_the_isolating_policies_and_the_admitting_rule_and_exits_3_when_denied() {
    let allowed = run(&[
        "policy",
        "explain",
        "--kubernetes",
        EXAMPLE,
        "--from",
        "y/b",
        "--to",
        "x/a",
        "--port",
        "80",
    ]);
    assert_eq!(allowed.status.code(), Some(0));
    golden(
        "explain-y-b-to-x-a.txt",
        &String::from_utf8_lossy(&allowed.stdout),
    );
    let denied = run(&[
        "policy",
        "explain",
        "--kubernetes",
        EXAMPLE,
        "--from",
        "z/a",
        "--to",
        "x/b",
        "--port",
        "80",
    ]);
    assert_eq!(denied.status.code(), Some(3));
    golden(
        "explain-z-a-to-x-b.txt",
        &String::from_utf8_lossy(&denied.stdout),
    );
    // An address outside the cluster, over IPv6, into an isolated pod.
    let outside = run(&[
        "policy",
        "explain",
        "--kubernetes",
        EXAMPLE,
        "--from",
        "2001:db8::1",
        "--to",
        "x/a",
        "--port",
        "80",
        "--family",
        "ipv6",
    ]);
    assert_eq!(outside.status.code(), Some(3));
    golden(
        "explain-outside-to-x-a.txt",
        &String::from_utf8_lossy(&outside.stdout),
    );
}

#[test]
fn bad_input_is_one_located_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec:\n  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/8]}\n",
    )
    .unwrap();
    let out = palisade(
        &[
            "policy",
            "matrix",
            "--kubernetes",
            bad.to_str().unwrap(),
            "--port",
            "80",
        ],
        Path::new("."),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml:8:44: `11.0.0.0/8` is not inside the block's cidr `10.0.0.0/8`"),
        "{err}"
    );
    let out = run(&[
        "policy",
        "explain",
        "--kubernetes",
        EXAMPLE,
        "--from",
        "x/nope",
        "--to",
        "x/a",
        "--port",
        "80",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("there is no pod `x/nope` in the manifests")
    );
    let out = run(&[
        "policy",
        "matrix",
        "--kubernetes",
        EXAMPLE,
        "--port",
        "80",
        "--protocol",
        "icmp",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("NetworkPolicy governs TCP, UDP and SCTP only"));
}
