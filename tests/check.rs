//! `palisade check`, the host preflight, run as the real binary inside a network namespace of the
//! test's own (its nft checks load nothing, but run where nothing of the machine's is): every check
//! passes on a sound host with a loadable policy and sidecar configuration, a fresh certificate and
//! a running CA; each broken input fails its own check with a sentence, and the exit status is 1.

mod common;

use std::time::Duration;

use common::*;

fn run_check(nets: &Netns, ns: &str, args: &[&str]) -> (bool, serde_json::Value) {
    let mut cmd: Vec<&str> = vec![BIN, "check", "-o", "json"];
    cmd.extend_from_slice(args);
    let out = nets.exec(ns, &cmd, None);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(report["ok"], out.status.success(), "{report}");
    (out.status.success(), report)
}

fn status<'a>(report: &'a serde_json::Value, check: &str) -> (&'a str, &'a str) {
    let found = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == check)
        .unwrap_or_else(|| panic!("no {check} check in {report}"));
    (
        found["status"].as_str().unwrap(),
        found["detail"].as_str().unwrap(),
    )
}

#[test]
#[ignore = "needs root: a network namespace, nft -c"]
fn a_sound_host_passes_and_each_broken_input_fails_its_own_check() {
    require_root("a network namespace, nft -c");
    if !have("nft") {
        return;
    }
    let mut nets = Netns::new();
    let ns = nets.add("check");
    nets.exec_ok(&ns, &["ip", "link", "set", "lo", "up"], None);
    let ca = TwoLevelCa::new();
    let dir = ca.path();
    let policy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policy/shop.yaml");
    let policy = policy.to_str().unwrap();
    let sidecar =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sidecar/frontend.yaml");
    let sidecar = sidecar.to_str().unwrap();
    ok(palisade(
        &[
            "cert",
            "issue",
            "--ca-dir",
            ca.issuer().to_str().unwrap(),
            "--spiffe-id",
            &format!("spiffe://{TD}/ns/shop/sa/web"),
            "--svid-dir",
            "web",
            "--ttl",
            "1h",
        ],
        dir,
    ));
    let web = dir.join("web");
    let web = web.to_str().unwrap();

    let (passed, report) = run_check(
        &nets,
        &ns,
        &[
            "--policy",
            policy,
            "--sidecar-config",
            sidecar,
            "--svid-dir",
            web,
        ],
    );
    assert!(passed, "{report:#}");
    for check in [
        "kernel",
        "nft",
        "host table",
        "redirect table",
        "landlock",
        "seccomp",
        "policy",
        "policy table",
        "sidecar config",
        "certificate",
    ] {
        let (status, detail) = status(&report, check);
        // Landlock may be partial on an older kernel: a warning, never a failure.
        assert!(
            status == "ok" || (check == "landlock" && status == "warn"),
            "{check}: {status} {detail}"
        );
    }
    assert!(status(&report, "certificate").1.contains("/ns/shop/sa/web"));

    // Broken inputs, one at a time: each fails its own check, with the reason.
    let bad_config = dir.join("bad-sidecar.yaml");
    std::fs::write(&bad_config, "identity:\n  cert: a\n  bogus: 1\n").unwrap();
    let bad_policy = dir.join("bad-policy.yaml");
    std::fs::write(
        &bad_policy,
        "version: 1\ntrust_domain: example.org\nsegments: [\n",
    )
    .unwrap();
    ok(palisade(
        &[
            "cert",
            "issue",
            "--ca-dir",
            ca.issuer().to_str().unwrap(),
            "--spiffe-id",
            &format!("spiffe://{TD}/ns/shop/sa/old"),
            "--svid-dir",
            "old",
            "--ttl",
            "2s",
        ],
        dir,
    ));
    let old = dir.join("old");
    assert!(wait_until(Duration::from_secs(10), || {
        std::thread::sleep(Duration::from_millis(500));
        !run_check(&nets, &ns, &["--svid-dir", old.to_str().unwrap()]).0
    }));
    // A key that is not the certificate's.
    let mixed = dir.join("mixed");
    std::fs::create_dir(&mixed).unwrap();
    for (file, from) in [
        ("cert.pem", "web"),
        ("bundle.pem", "web"),
        ("key.pem", "old"),
    ] {
        std::fs::copy(dir.join(from).join(file), mixed.join(file)).unwrap();
    }
    for (args, check, says) in [
        (
            vec!["--svid-dir", mixed.to_str().unwrap()],
            "certificate",
            "key",
        ),
        (
            vec!["--sidecar-config", bad_config.to_str().unwrap()],
            "sidecar config",
            "bad-sidecar.yaml:3:3: identity: unknown field `bogus`",
        ),
        (
            vec!["--policy", bad_policy.to_str().unwrap()],
            "policy",
            "bad-policy.yaml:4:",
        ),
        (
            vec!["--svid-dir", old.to_str().unwrap()],
            "certificate",
            "expired",
        ),
    ] {
        let (passed, report) = run_check(&nets, &ns, &args);
        assert!(!passed, "{args:?}: {report:#}");
        let (status, detail) = status(&report, check);
        assert_eq!(status, "fail", "{args:?}: {detail}");
        assert!(detail.contains(says), "{args:?}: {detail}");
    }

    // The CA, in the namespace too: reachable and authenticated by its SPIFFE ID, then gone.
    let issuer = ca.issuer();
    let server = nets
        .spawn(
            &ns,
            &[
                BIN,
                "ca",
                "serve",
                "--ca-dir",
                issuer.to_str().unwrap(),
                "--listen",
                "127.0.0.1:8443",
                "--admin",
                "127.0.0.1:9092",
            ],
        )
        .id();
    let bundle = ca.bundle();
    let bundle = bundle.to_str().unwrap();
    let url = "https://127.0.0.1:8443";
    let up = wait_until(Duration::from_secs(10), || {
        status(
            &run_check(&nets, &ns, &["--ca", url, "--bundle", bundle]).1,
            "ca",
        )
        .0 == "ok"
    });
    assert!(up, "the CA check did not pass against a running CA");
    // Pinned to another ID: the CA's certificate does not name it.
    let other = format!("spiffe://{TD}/not/the/ca");
    let (_, report) = run_check(
        &nets,
        &ns,
        &["--ca", url, "--bundle", bundle, "--ca-id", &other],
    );
    assert_eq!(status(&report, "ca").0, "fail", "{report:#}");
    let stopped = std::process::Command::new("kill")
        .arg(server.to_string())
        .status()
        .unwrap();
    assert!(stopped.success());
    let gone = wait_until(Duration::from_secs(10), || {
        status(
            &run_check(&nets, &ns, &["--ca", url, "--bundle", bundle]).1,
            "ca",
        )
        .0 == "fail"
    });
    assert!(gone, "the CA check still passed with the CA stopped");
}
