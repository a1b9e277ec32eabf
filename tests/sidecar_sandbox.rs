//! Least privilege: the sidecar runs as a UID of its own with no capabilities, and restricts
//! itself with Landlock to reading its own files, binding its own ports and connecting to the
//! ports it forwards to. Shown with the real binary: the capability sets read from
//! /proc/<pid>/status, a symlink swap that points the policy file outside its directory (the
//! read is refused, the last good policy stays), and `sidecar check-sandbox`, which applies the
//! same sandbox and tries to read, write, bind and connect where it must not.

mod common;

use std::time::Duration;

use common::*;

const PROXY_UID: &str = "1337";

#[test]
#[ignore = "needs root: starts the sidecar as another UID"]
fn the_sidecar_runs_without_capabilities_and_cannot_read_outside_its_files() {
    require_root("starts the sidecar as another UID");
    if !(have("setpriv") && have("curl")) {
        return;
    }
    let pki = Pki::new();
    pki.issue("payments", "payments", &["--dns", "payments.test"]);
    pki.issue("frontend", "frontend", &[]);
    // The policy lives in a directory of its own, as a Kubernetes ConfigMap mount does.
    let policies = pki.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    let policy = |admitted: &str| {
        format!(
            "version: 1\ntrust_domain: {TD}\nsegments:\n  pay: {{ identities: [spiffe://{TD}/payments] }}\n  front: {{ identities: [spiffe://{TD}/{admitted}] }}\nrules:\n  - {{ name: r, from: front, to: pay, protocol: tcp, ports: [8443] }}\n"
        )
    };
    std::fs::write(policies.join("policy.yaml"), policy("frontend")).unwrap();
    // A file outside every path of the configuration, readable by the proxy UID as far as file
    // permissions go: only the sandbox keeps the sidecar from it.
    let elsewhere = pki.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("policy.yaml"), policy("nobody")).unwrap();
    chown_recursive(pki.path(), PROXY_UID);

    let app = spawn_app(http_ok);
    let config = format!(
        "{}inbound:\n  - name: api\n    listen: 127.0.0.1:0\n    forward_to: {app}\n    policy: {{ file: policies/policy.yaml, port: 8443 }}\nadmin:\n  listen: 127.0.0.1:0\nsandbox:\n  landlock: required\n",
        pki.identity_yaml("payments"),
    );
    let sidecar = SidecarProcess::start_under(
        &[
            "setpriv",
            "--reuid",
            PROXY_UID,
            "--regid",
            PROXY_UID,
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ],
        pki.path(),
        "payments.yaml",
        &config,
        &["api"],
    );
    let pid = sidecar.child.id();
    for field in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(proc_status_field(pid, field), "0000000000000000", "{field}");
    }
    assert_eq!(
        proc_status_field(pid, "Uid").split_whitespace().next(),
        Some(PROXY_UID)
    );
    // Landlock sets no_new_privs: nothing the sidecar could execute would gain privileges.
    assert_eq!(proc_status_field(pid, "NoNewPrivs"), "1");
    // 2: a seccomp filter (the allow-list) is installed.
    assert_eq!(proc_status_field(pid, "Seccomp"), "2");
    // The allow-list, and the filter that answers clone3 with ENOSYS.
    assert_eq!(proc_status_field(pid, "Seccomp_filters"), "2");
    assert!(
        sidecar.logged("sandbox: Landlock enforced"),
        "{}",
        sidecar.log_text()
    );
    let port = sidecar.addr("api").port();
    assert!(curl_as(&pki, "frontend", port), "{}", sidecar.log_text());

    // The policy file becomes a symlink to a file outside its directory: the sidecar may not
    // read it, keeps the last good policy, and counts the failure.
    let link = policies.join("policy.yaml.new");
    std::os::unix::fs::symlink(elsewhere.join("policy.yaml"), &link).unwrap();
    std::fs::rename(&link, policies.join("policy.yaml")).unwrap();
    let failures = || {
        sidecar.metric(
            "palisade_sidecar_reloads_total",
            &[("files", "policy"), ("result", "failure")],
        )
    };
    assert!(
        wait_until(Duration::from_secs(5), || failures() >= 1.0),
        "{}",
        sidecar.log_text()
    );
    assert!(
        sidecar.logged("Permission denied"),
        "{}",
        sidecar.log_text()
    );
    assert!(
        curl_as(&pki, "frontend", port),
        "the last good policy stays"
    );
}

/// `palisade sidecar check-sandbox --config FILE`: its exit code and its JSON line (stderr added
/// to the panic when the line does not parse).
fn check_sandbox(pki: &Pki, file: &std::path::Path) -> (Option<i32>, serde_json::Value) {
    let out = palisade(
        &[
            "sidecar",
            "check-sandbox",
            "--config",
            file.to_str().unwrap(),
            "-o",
            "json",
        ],
        pki.path(),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{e}: {text}{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code(), report)
}

#[test]
fn check_sandbox_tries_what_the_sidecar_must_not_do_and_each_is_refused() {
    let pki = Pki::new();
    pki.issue("payments", "payments", &[]);
    let config = format!(
        "{}inbound:\n  - name: api\n    listen: 127.0.0.1:0\n    forward_to: 127.0.0.1:9\n    allow: [spiffe://{TD}/frontend]\noutbound:\n  - name: out\n    listen: 127.0.0.1:0\n    connect_to: localhost:8443\n    expect: [spiffe://{TD}/ledger]\nadmin:\n  listen: 127.0.0.1:0\nsandbox:\n  landlock: required\n",
        pki.identity_yaml("payments"),
    );
    let file = pki.path().join("sidecar.yaml");
    std::fs::write(&file, config).unwrap();
    let (code, report) = check_sandbox(&pki, &file);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["landlock"], "fully enforced", "{report}");
    assert_eq!(
        report["allowed"]["bind"],
        serde_json::json!([0]),
        "{report}"
    );
    assert_eq!(
        report["allowed"]["connect"],
        // forward_to, connect_to, and DNS over TCP since connect_to names a host.
        serde_json::json!([9, 53, 8443]),
        "{report}"
    );
    assert_eq!(report["seccomp"], "enforce", "{report}");
    let tries: Vec<&str> = report["tried"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["try"].as_str().unwrap().split(' ').next().unwrap())
        .collect();
    assert_eq!(
        tries,
        [
            "read", "write", "bind", "connect", "connect", "connect", "send", "connect", "run",
            "chown"
        ],
        "{report}"
    );
    // Everything refused but UDP, which this configuration needs: connect_to names a host, and
    // the resolver asks over UDP.
    for t in report["tried"].as_array().unwrap() {
        let what = t["try"].as_str().unwrap();
        let wanted = !what.starts_with("send UDP");
        assert_eq!(t["refused"], wanted, "{what}: {report}");
    }
    assert!(
        report["tried"].as_array().unwrap().iter().any(|t| t["try"]
            .as_str()
            .unwrap()
            .contains("allowed: this service looks names up")),
        "{report}"
    );

    // With transparent listeners any destination port is possible: connections stay open.
    let transparent = format!(
        "{}transparent:\n  inbound: \"127.0.0.1:0\"\n  outbound: \"127.0.0.1:0\"\n  policy: p.yaml\nadmin:\n  listen: 127.0.0.1:0\n",
        pki.identity_yaml("payments"),
    );
    std::fs::write(
        pki.path().join("p.yaml"),
        "version: 1\ntrust_domain: example.org\nsegments:\n  a: { addresses: [10.0.0.0/8] }\n",
    )
    .unwrap();
    std::fs::write(&file, transparent).unwrap();
    let (code, report) = check_sandbox(&pki, &file);
    assert_eq!(
        report["allowed"]["connect"],
        serde_json::Value::Null,
        "{report}"
    );
    assert_eq!(code, Some(0), "{report}");

    // The system call filter bites on its own: with Landlock off, running a program and a no-op chown
    // are still refused; with both off, any user may do both (and the check, which expects
    // nothing to be refused then, passes).
    let check = |landlock: &str, seccomp: &str| {
        std::fs::write(
            &file,
            format!(
                "{}inbound:\n  - name: api\n    listen: 127.0.0.1:0\n    forward_to: 127.0.0.1:9\n    allow: [spiffe://{TD}/frontend]\nadmin:\n  listen: 127.0.0.1:0\nsandbox: {{ landlock: {landlock}, seccomp: {seccomp} }}\n",
                pki.identity_yaml("payments"),
            ),
        )
        .unwrap();
        let (code, report) = check_sandbox(&pki, &file);
        let refused = |what: &str| {
            report["tried"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["try"].as_str().unwrap().starts_with(what))
                .unwrap_or_else(|| panic!("no {what} in {report}"))["refused"]
                == true
        };
        let refusals = [
            "run /bin/sh",
            "chown",
            "connect over MPTCP",
            "connect with TCP Fast Open",
            "send UDP",
            "connect to a Unix socket",
        ]
        .map(refused);
        (code, refusals, report.clone())
    };
    // No name to resolve here: UDP is refused too. MPTCP, UDP and Unix sockets are the filter's
    // to refuse (Landlock's port rules cover plain TCP only), so Landlock off changes nothing.
    let (code, refusals, report) = check("off", "enforce");
    assert_eq!((code, refusals), (Some(0), [true; 6]), "{report}");
    assert_eq!(report["landlock"], "not enforced", "{report}");
    let (code, refusals, report) = check("off", "off");
    assert_eq!((code, refusals), (Some(0), [false; 6]), "{report}");
}
