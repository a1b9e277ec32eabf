//! `palisade install` and `palisade config sidecar`, checked as a user's tools would check them:
//!
//! - every object validates against Kubernetes 1.30 and 1.37 (kubernetes-validate, strict);
//! - checkov (PyPI; `scripts/test` installs it in `target/checkov-venv`) fails no check but those
//!   `install/checkov-skips.txt` lists with a reason, and that list excuses nothing about
//!   privileges, capabilities, root, host namespaces, the read-only root file system or resource
//!   limits but for the node agent (its NET_ADMIN and host network); a manifest made worse on
//!   purpose is caught, so the check can fail;
//! - `--uninstall` names every object install makes, the namespace last;
//! - the flags reach the objects (image, pull policy, namespace, trust domain);
//! - the generated sidecar ConfigMap holds a sidecar.yaml that `palisade check` loads, and the
//!   name inject mounts.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::kubernetes::{problems, validator};
use common::*;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn policy() -> String {
    root()
        .join("examples/policy/shop.yaml")
        .to_string_lossy()
        .into_owned()
}

fn stdout_of(args: &[&str], cwd: &Path) -> String {
    ok(palisade(args, cwd))
}

fn documents(text: &str) -> Vec<serde_json::Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &serde_yaml::Value| !v.is_null())
        .map(|v| serde_json::to_value(v).unwrap())
        .collect()
}

fn kind_and_name(doc: &serde_json::Value) -> (String, String) {
    (
        doc["kind"].as_str().unwrap().to_owned(),
        doc["metadata"]["name"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn install_prints_valid_objects_that_carry_the_flags_and_uninstall_names_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let policy = policy();
    ok(palisade(
        &[
            "ca",
            "init",
            "--ca-dir",
            "root",
            "--trust-domain",
            "example.org",
        ],
        dir.path(),
    ));
    let text = stdout_of(
        &[
            "install",
            "--trust-domain",
            "example.org",
            "--policy",
            &policy,
            "--bundle",
            "root/bundle.pem",
            "--namespace",
            "mesh-system",
            "--image",
            "registry.example/palisade:0.1.0",
            "--image-pull-policy",
            "Always",
            "--jwt-issuer",
            "https://oidc.example/cluster-7",
        ],
        dir.path(),
    );
    let docs = documents(&text);
    let kinds: Vec<(String, String)> = docs.iter().map(kind_and_name).collect();
    for wanted in [
        ("Namespace", "mesh-system"),
        ("ConfigMap", "palisade-policy"),
        ("Deployment", "palisade-ca"),
        ("Service", "palisade-ca"),
        ("PodDisruptionBudget", "palisade-ca"),
        ("DaemonSet", "palisade-sync"),
        ("Deployment", "palisade-inject"),
        ("MutatingWebhookConfiguration", "palisade-inject"),
    ] {
        assert!(
            kinds.iter().any(|(k, n)| k == wanted.0 && n == wanted.1),
            "no {wanted:?} in {kinds:?}"
        );
    }
    assert_eq!(kinds[0], ("Namespace".to_owned(), "mesh-system".to_owned()));
    let cluster_scoped = ["MutatingWebhookConfiguration", "ClusterRoleBinding"];
    for doc in docs[1..]
        .iter()
        .filter(|d| !cluster_scoped.contains(&d["kind"].as_str().unwrap_or("")))
    {
        assert_eq!(doc["metadata"]["namespace"], "mesh-system", "{doc}");
    }
    // The CA checks tokens of the issuer given, with keys fetched from the API server, which
    // exactly the built-in discovery role allows, for its own account in this namespace.
    let ca = docs
        .iter()
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "palisade-ca")
        .unwrap();
    let ca_args: Vec<&str> = ca["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for pair in [
        ["--jwt-issuer", "https://oidc.example/cluster-7"],
        [
            "--jwks-url",
            "https://kubernetes.default.svc/openid/v1/jwks",
        ],
    ] {
        assert!(
            ca_args.windows(2).any(|w| w == pair),
            "{pair:?} not in {ca_args:?}"
        );
    }
    let binding = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRoleBinding")
        .unwrap();
    assert_eq!(
        binding["roleRef"]["name"],
        "system:service-account-issuer-discovery"
    );
    assert_eq!(binding["subjects"][0]["name"], "palisade-ca");
    assert_eq!(binding["subjects"][0]["namespace"], "mesh-system");
    // The webhook's caBundle is the roots given, and it calls the Service install makes.
    let webhooks = docs
        .iter()
        .find(|d| d["kind"] == "MutatingWebhookConfiguration")
        .unwrap();
    for hook in webhooks["webhooks"].as_array().unwrap() {
        use base64::Engine;
        let bundle = base64::engine::general_purpose::STANDARD
            .decode(hook["clientConfig"]["caBundle"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            bundle,
            std::fs::read(dir.path().join("root/bundle.pem")).unwrap()
        );
        assert_eq!(hook["clientConfig"]["service"]["name"], "palisade-inject");
        assert_eq!(hook["clientConfig"]["service"]["namespace"], "mesh-system");
        assert_eq!(hook["failurePolicy"], "Fail");
    }
    // The policy goes in as it is; the image and pull policy into every container.
    let config = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    assert_eq!(
        config["data"]["policy.yaml"].as_str().unwrap(),
        std::fs::read_to_string(&policy).unwrap()
    );
    for doc in docs
        .iter()
        .filter(|d| d["kind"] == "Deployment" || d["kind"] == "DaemonSet")
    {
        for c in doc["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
        {
            assert_eq!(c["image"], "registry.example/palisade:0.1.0", "{doc}");
            assert_eq!(c["imagePullPolicy"], "Always", "{doc}");
        }
    }
    assert!(
        text.contains("spiffe://example.org/"),
        "the trust domain is used"
    );
    assert!(!text.contains("${"), "a placeholder is left: {text}");

    // --uninstall: the same objects, by name only, the namespace last.
    let gone = documents(&stdout_of(
        &["install", "--uninstall", "--namespace", "mesh-system"],
        dir.path(),
    ));
    let mut expected = kinds.clone();
    expected.reverse();
    assert_eq!(gone.iter().map(kind_and_name).collect::<Vec<_>>(), expected);
    assert!(gone
        .iter()
        .all(|d| d.get("spec").is_none() && d.get("data").is_none()));

    // Bad input: one sentence, no output (each case with the flags it changes; the rest valid).
    let td = "example.org";
    for (args, says) in [
        (
            vec!["--trust-domain", td, "--namespace", "Mesh_System"],
            "is not a Kubernetes name",
        ),
        (
            vec!["--trust-domain", td, "--namespace", "on"],
            "would be read as a boolean, null or number",
        ),
        (
            vec!["--trust-domain", td, "--namespace", "123"],
            "would be read as a boolean, null or number",
        ),
        (
            vec!["--trust-domain", td, "--namespace", "kube-system"],
            "needs a namespace of its own",
        ),
        (
            vec!["--trust-domain", td, "--image", "bad image"],
            "is not an image reference",
        ),
        (
            vec!["--trust-domain", td, "--jwt-issuer", "http://\"x"],
            "is not an https URL",
        ),
        (
            vec!["--trust-domain", "Not A Domain"],
            "--trust-domain \"Not A Domain\"",
        ),
        (
            vec!["--trust-domain", "example.org/x"],
            "give the bare name",
        ),
        (
            vec!["--trust-domain", "other.example"],
            "its trust domain is example.org, --trust-domain says other.example",
        ),
    ] {
        let mut all = vec![
            "install",
            "--policy",
            &policy,
            "--bundle",
            "root/bundle.pem",
        ];
        all.extend(args);
        let out = palisade(&all, dir.path());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{all:?}: {err}");
        assert!(err.contains(says), "{all:?}: {err}");
        assert!(out.stdout.is_empty());
    }

    if let Some(validator) = validator() {
        let file = dir.path().join("install.yaml");
        std::fs::write(&file, &text).unwrap();
        let found = problems(&validator, &file);
        assert!(
            found.is_empty(),
            "install's objects do not validate:\n{}",
            found.join("\n")
        );
    }
}

/// checkov's failed checks for `file`: (check id, resource).
fn checkov_failures(checkov: &Path, file: &Path) -> (usize, Vec<(String, String)>) {
    let mut cmd = Command::new(checkov);
    cmd.arg("-f").arg(file).args([
        "--framework",
        "kubernetes",
        "-o",
        "json",
        "--quiet",
        "--skip-download",
    ]);
    let (out, timed_out) = run_bounded(&mut cmd, b"", Duration::from_secs(300));
    assert!(!timed_out, "checkov took more than 300 s");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "checkov printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let report = if report.is_array() {
        report[0].clone()
    } else {
        report
    };
    let passed = report["summary"]["passed"].as_u64().unwrap_or(0) as usize;
    let failed = report["results"]["failed_checks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["check_id"].as_str().unwrap().to_owned(),
                c["resource"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    (passed, failed)
}

/// checkov's checks about privileges, capabilities, root, host namespaces, the read-only root
/// file system and resource requests and limits: what only the node agent may be excused from.
const PRIVILEGE_CHECKS: [&str; 17] = [
    "CKV_K8S_10",
    "CKV_K8S_11",
    "CKV_K8S_12",
    "CKV_K8S_13", // CPU and memory requests and limits
    "CKV_K8S_16", // privileged
    "CKV_K8S_17",
    "CKV_K8S_18",
    "CKV_K8S_19", // host PID, IPC, network
    "CKV_K8S_20", // allowPrivilegeEscalation
    "CKV_K8S_22", // read-only root file system
    "CKV_K8S_23",
    "CKV_K8S_40", // root, a high UID
    "CKV_K8S_25",
    "CKV_K8S_28",
    "CKV_K8S_37",
    "CKV_K8S_39", // capabilities
    "CKV_K8S_6",  // runAsNonRoot
];

/// Whether `install/checkov-skips.txt` excuses (check, resource). checkov names a resource
/// `Kind.namespace.name[.labels]`; its pod-level checks name the pods a workload makes `Pod`, so
/// those match the workload by name.
fn excused(skips: &[(String, String)], check: &str, resource: &str) -> bool {
    let mut parts = resource.splitn(4, '.');
    let kind = parts.next().unwrap_or("");
    let _namespace = parts.next();
    let name = parts.next().unwrap_or("");
    skips.iter().any(|(id, object)| {
        id == check
            && (object == "*"
                || object
                    .split_once('/')
                    .is_some_and(|(k, n)| n == name && (k == kind || kind == "Pod")))
    })
}

#[test]
fn checkov_finds_nothing_in_install_but_what_is_excused_with_a_reason() {
    // (The bundle is made below, in the test's directory.)
    let checkov = root().join("target/checkov-venv/bin/checkov");
    if !checkov.exists() {
        skipping("target/checkov-venv has no checkov (scripts/test makes it)");
        return;
    }
    let skips: Vec<(String, String)> =
        std::fs::read_to_string(root().join("install/checkov-skips.txt"))
            .unwrap()
            .lines()
            .map(|line| {
                let mut words = line.splitn(3, ' ');
                let id = words.next().unwrap().to_owned();
                let object = words.next().unwrap_or("").to_owned();
                let reason = words.next().unwrap_or("");
                assert!(reason.len() > 20, "{line}: a skip needs its reason");
                (id, object)
            })
            .collect();
    for (id, object) in &skips {
        if PRIVILEGE_CHECKS.contains(&id.as_str()) {
            assert_eq!(
                object, "DaemonSet/palisade-sync",
                "{id}: only the node agent may be excused from a privilege check"
            );
        }
    }

    let dir = tempfile::tempdir().unwrap();
    ok(palisade(
        &[
            "ca",
            "init",
            "--ca-dir",
            "root",
            "--trust-domain",
            "example.org",
        ],
        dir.path(),
    ));
    let text = stdout_of(
        &[
            "install",
            "--trust-domain",
            "example.org",
            "--policy",
            &policy(),
            "--bundle",
            "root/bundle.pem",
        ],
        dir.path(),
    );
    let file = dir.path().join("install.yaml");
    std::fs::write(&file, &text).unwrap();
    let (passed, failed) = checkov_failures(&checkov, &file);
    assert!(
        passed > 100,
        "checkov passed only {passed} checks: did it read the objects?"
    );
    let unexcused: Vec<&(String, String)> = failed
        .iter()
        .filter(|(c, r)| !excused(&skips, c, r))
        .collect();
    assert!(
        unexcused.is_empty(),
        "checkov fails, without a listed reason: {unexcused:?}"
    );
    // Every listed skip is still needed (a fixed finding leaves no stale excuse behind).
    let used: BTreeSet<&String> = failed.iter().map(|(c, _)| c).collect();
    for (id, object) in &skips {
        assert!(
            used.contains(id),
            "{id} {object} is listed but checkov no longer fails it"
        );
    }

    // The control: the CA made writable and privileged is caught.
    let worse = text
        .replacen(
            "readOnlyRootFilesystem: true",
            "readOnlyRootFilesystem: false",
            1,
        )
        .replacen(
            "allowPrivilegeEscalation: false",
            "allowPrivilegeEscalation: true",
            1,
        );
    assert_ne!(worse, text);
    std::fs::write(&file, &worse).unwrap();
    let (_, failed) = checkov_failures(&checkov, &file);
    let caught: Vec<&String> = failed
        .iter()
        .filter(|(c, r)| !excused(&skips, c, r))
        .map(|(c, _)| c)
        .collect();
    assert!(
        caught
            .iter()
            .any(|c| *c == "CKV_K8S_22" || *c == "CKV_K8S_20"),
        "checkov did not catch a writable root or privilege escalation: {failed:?}"
    );
}

#[test]
fn config_sidecar_prints_the_configmap_inject_mounts_with_a_sidecar_yaml_that_loads() {
    let dir = tempfile::tempdir().unwrap();
    ok(palisade(
        &[
            "ca",
            "init",
            "--ca-dir",
            "root",
            "--trust-domain",
            "example.org",
        ],
        dir.path(),
    ));
    let policy = policy();
    let text = stdout_of(
        &[
            "config",
            "sidecar",
            "--namespace",
            "shop",
            "--bundle",
            "root/bundle.pem",
            "--policy",
            &policy,
            "--mode",
            "permissive",
        ],
        dir.path(),
    );
    let docs = documents(&text);
    assert_eq!(docs.len(), 1);
    let map = &docs[0];
    // The name and keys inject mounts (its --config-map default, its volume's files).
    assert_eq!(
        kind_and_name(map),
        ("ConfigMap".into(), "palisade-sidecar".into())
    );
    assert_eq!(map["metadata"]["namespace"], "shop");
    let injected = stdout_of(
        &[
            "inject",
            &root()
                .join("examples/kubernetes/inject/input/shop.yaml")
                .to_string_lossy(),
        ],
        dir.path(),
    );
    assert!(
        injected.contains("\"name\": \"palisade-sidecar\"\n"),
        "inject mounts another name"
    );
    assert_eq!(
        map["data"]["bundle.pem"].as_str().unwrap(),
        std::fs::read_to_string(dir.path().join("root/bundle.pem")).unwrap()
    );
    assert_eq!(
        map["data"]["policy.yaml"].as_str().unwrap(),
        std::fs::read_to_string(&policy).unwrap()
    );
    let sidecar = map["data"]["sidecar.yaml"].as_str().unwrap();
    assert!(sidecar.contains("  mode: permissive\n"), "{sidecar}");
    assert!(sidecar.contains("https://palisade-ca.palisade-system.svc:8443"));
    assert!(sidecar.contains("spiffe://example.org/"));
    // It loads, as `sidecar run` would load it.
    std::fs::write(dir.path().join("sidecar.yaml"), sidecar).unwrap();
    let check = palisade(
        &["check", "--sidecar-config", "sidecar.yaml", "-o", "json"],
        dir.path(),
    );
    let report: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    let entry = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "sidecar config")
        .unwrap();
    assert_eq!(entry["status"], "ok", "{entry}");

    if let Some(validator) = validator() {
        let file = dir.path().join("configmap.yaml");
        std::fs::write(&file, &text).unwrap();
        let found = problems(&validator, &file);
        assert!(found.is_empty(), "{}", found.join("\n"));
    }

    // A policy of another trust domain than the bundle's: refused, with both named.
    let other = dir.path().join("other.yaml");
    std::fs::write(
        &other,
        std::fs::read_to_string(&policy)
            .unwrap()
            .replace("example.org", "other.example"),
    )
    .unwrap();
    let out = palisade(
        &[
            "config",
            "sidecar",
            "--namespace",
            "shop",
            "--bundle",
            "root/bundle.pem",
            "--policy",
            other.to_str().unwrap(),
        ],
        dir.path(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("other.example") && err.contains("example.org"),
        "{err}"
    );
}
