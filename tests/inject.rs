//! `palisade inject` over manifests shaped like real ones (examples/kubernetes/inject/input/):
//! the output equals the golden file beside it (which tests/kubernetes_manifests.rs validates
//! against the Kubernetes schemas, like every manifest under examples/kubernetes/); injecting
//! twice equals injecting once; uninjecting gives back the input, value for value.
//! `PALISADE_BLESS=1` rewrites the golden files.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/kubernetes/inject")
}

/// Runs palisade with `args` and `stdin`; its output.
fn palisade_with_stdin(args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Runs palisade, which must succeed; its stdout.
fn run(args: &[&str], stdin: &str) -> String {
    let out = palisade_with_stdin(args, stdin);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn values(text: &str) -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &serde_yaml::Value| !v.is_null())
        .collect()
}

fn inputs() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir().join("input"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 2);
    files
}

fn golden(input: &Path) -> PathBuf {
    dir().join(input.file_name().unwrap())
}

#[test]
fn inject_output_equals_the_golden_files() {
    for input in inputs() {
        let text = std::fs::read_to_string(&input).unwrap();
        let injected = run(&["inject", "-f", "-"], &text);
        let golden = golden(&input);
        if std::env::var("PALISADE_BLESS").is_ok_and(|v| v == "1") {
            std::fs::write(&golden, &injected).unwrap();
        }
        assert_eq!(
            injected,
            std::fs::read_to_string(&golden).unwrap(),
            "{} differs from {} (PALISADE_BLESS=1 rewrites it)",
            input.display(),
            golden.display()
        );
    }
}

#[test]
fn twice_equals_once_and_uninject_restores_the_input() {
    for input in inputs() {
        let text = std::fs::read_to_string(&input).unwrap();
        let once = run(&["inject", "-f", "-"], &text);
        let twice = run(&["inject", "-f", "-"], &once);
        assert_eq!(
            once,
            twice,
            "{}: injecting twice differs from once",
            input.display()
        );
        let back = run(&["inject", "-f", "-", "--uninject"], &once);
        assert_eq!(
            values(&back),
            values(&text),
            "{}: uninject did not restore it",
            input.display()
        );
    }
}

#[test]
fn what_inject_adds_and_what_it_leaves() {
    let shop = values(&std::fs::read_to_string(dir().join("shop.yaml")).unwrap());
    let web = &shop[1]["spec"]["template"]["spec"];
    let init: Vec<&str> = web["initContainers"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    // The redirect, then the native sidecar, then the app's own init containers.
    assert_eq!(init, ["palisade-redirect", "palisade-sidecar", "migrate"]);
    let sidecar = &web["initContainers"][1];
    assert_eq!(sidecar["restartPolicy"], "Always");
    assert_eq!(sidecar["securityContext"]["runAsUser"], 1337);
    assert_eq!(sidecar["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert!(sidecar["securityContext"]["capabilities"]
        .get("add")
        .is_none());
    let redirect = &web["initContainers"][0];
    let caps = &redirect["securityContext"]["capabilities"]["add"];
    assert_eq!(caps.as_sequence().unwrap().len(), 2);
    let args: Vec<&str> = redirect["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    // The kubelet's probe ports (a named port resolved) and the admin port bypass the redirect;
    // the annotation's outbound port too.
    let at = |flag: &str| args[args.iter().position(|a| *a == flag).unwrap() + 1];
    // A port only the probes use (9901) bypasses; the served port 8080, probed too, stays behind
    // mTLS (excluding it would let any plaintext peer reach the app there).
    assert_eq!(at("--exclude-inbound-ports"), "9901,15000");
    // DNS (53) always bypasses: TCP answers go straight to the resolver, in no segment.
    assert_eq!(at("--exclude-outbound-ports"), "53,5432");
    // A string that YAML 1.1 reads as a boolean stays a string.
    assert_eq!(shop[0]["data"]["CACHE_ENABLED"], "yes");
    // Untouched: the Service, the ConfigMap, the opted-out Deployment, the host-network Pod.
    let input = values(&std::fs::read_to_string(dir().join("input/shop.yaml")).unwrap());
    for i in [0, 2, 3] {
        assert_eq!(shop[i], input[i]);
    }
    let batch = values(&std::fs::read_to_string(dir().join("batch.yaml")).unwrap());
    let batch_input = values(&std::fs::read_to_string(dir().join("input/batch.yaml")).unwrap());
    assert_eq!(batch[3], batch_input[3], "a hostNetwork pod is left alone");
    // The CronJob's pod, three levels down, is injected; the Job's annotation sets its port.
    let cron = &batch[0]["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(cron["initContainers"][1]["name"], "palisade-sidecar");
    let job_args = &batch[1]["spec"]["template"]["spec"]["initContainers"][0]["args"];
    assert_eq!(job_args[3], "16006");
}

#[test]
fn a_bad_annotation_is_refused_with_the_workload_named() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    palisade.io/inbound-port: eighty\nspec:\n  containers:\n  - name: c\n    image: i\n";
    let out = inject_stdin(text);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Pod p: annotation palisade.io/inbound-port"),
        "{err}"
    );
}

fn inject_stdin(text: &str) -> std::process::Output {
    palisade_with_stdin(&["inject", "-f", "-"], text)
}

#[test]
fn a_probe_on_a_served_port_is_warned_about_and_names_inject_would_add_are_refused() {
    let text = std::fs::read_to_string(dir().join("input/shop.yaml")).unwrap();
    let out = inject_stdin(&text);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Deployment web: a kubelet probe uses port 8080"),
        "{err}"
    );

    let taken = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  initContainers:\n  - name: palisade-sidecar\n    image: mine\n  containers:\n  - name: c\n    image: i\n";
    let out = inject_stdin(taken);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already has an init container or volume named palisade-sidecar"),
        "{err}"
    );
    // And uninject never removes what inject did not add.
    let back = run(&["inject", "-f", "-", "--uninject"], taken);
    assert_eq!(values(&back), values(taken));
}

/// A container running as the sidecar's UID would bypass the redirect (which exempts that UID):
/// refused, by the container's own runAsUser or the pod's; another UID is fine.
#[test]
fn a_container_running_as_the_proxy_uid_is_refused() {
    let own = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: app\n    image: i\n    securityContext:\n      runAsUser: 1337\n";
    let by_pod = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata:\n      labels: {a: b}\n    spec:\n      securityContext:\n        runAsUser: 1337\n      initContainers:\n      - name: setup\n        image: i\n        securityContext:\n          runAsUser: 1000\n      containers:\n      - name: worker\n        image: i\n";
    for (text, expected) in [
        (own, "Pod p: container app runs as UID 1337"),
        (by_pod, "Deployment d: container worker runs as UID 1337"),
    ] {
        let out = inject_stdin(text);
        assert!(!out.status.success(), "{expected}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{err}");
    }
    let other = own.replace("1337", "1000");
    assert!(inject_stdin(&other).status.success());
}
